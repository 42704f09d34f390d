"""Patches selection: grid validity against brute force, sets that never share a
pixel, and points that patches extraction turns into exactly the grid windows."""

import numpy as np
import pytest
import rasterio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from osgeo import ogr
from rasterio.transform import from_origin

from common import DATA
from otbtf_plugin.errors import InputError
from otbtf_plugin.extraction import PatchSource, extract_patches
from otbtf_plugin.patches_image import PatchesImage
from otbtf_plugin.patches_selection import SET_NAMES, patches_selection

B2_30 = DATA / "landsat8" / "LC08_224077_20200518_B2_30m_crop.tif"


TRANSFORM = from_origin(600000, 5000000, 10, 10)


def write_raster(path, data, nodata=None, transform=TRANSFORM):
    data = np.asarray(data)
    if data.ndim == 2:
        data = data[None]
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        width=data.shape[2],
        height=data.shape[1],
        count=data.shape[0],
        dtype=data.dtype,
        crs="EPSG:32631",
        transform=transform,
        nodata=nodata,
    ) as dst:
        dst.write(data)
    return path


@pytest.fixture(scope="module")
def holes(tmp_path_factory):
    """A 2-band 90 x 70 raster with nodata holes in either band, and a mask."""
    folder = tmp_path_factory.mktemp("holes")
    rng = np.random.default_rng(2)
    data = rng.integers(1, 50, (2, 70, 90)).astype("int16")
    data[0, 10:14, 20:25] = -9
    data[1, 40, 60] = -9
    data[1, 5, 5] = -9
    mask = np.ones((70, 90), dtype="uint8")
    mask[50:, :30] = 0
    return (write_raster(folder / "img.tif", data, nodata=-9), write_raster(folder / "mask.tif", mask), data, mask)


def brute_force_valid(data, mask, patch, step, nodata=-9):
    bad = (data == nodata).any(axis=0) | (mask == 0)
    ny, nx = (bad.shape[0] - patch) // step + 1, (bad.shape[1] - patch) // step + 1
    return np.array(
        [
            [not bad[j * step : j * step + patch, i * step : i * step + patch].any() for i in range(nx)]
            for j in range(ny)
        ]
    )


def coverage(result, height, width):
    """How many sets cover each pixel."""
    count = np.zeros((height, width), dtype=int)
    for k in range(3):
        cover = np.zeros((height, width), dtype=bool)
        for j, i in zip(*np.nonzero(result.sets == k), strict=True):
            cover[
                j * result.step_px : j * result.step_px + result.patch_px,
                i * result.step_px : i * result.step_px + result.patch_px,
            ] = True
        count += cover
    return count


@pytest.mark.parametrize("patch, step", [(8, 8), (8, 3), (5, 7), (16, 5)])
def test_valid_positions_match_brute_force(holes, patch, step):
    img, mask_path, data, mask = holes
    result = patches_selection(img, patch, step, strategy="all", mask=mask_path)
    assert np.array_equal(result.valid, brute_force_valid(data, mask, patch, step))
    assert np.array_equal(result.sets == 0, result.valid)


@settings(max_examples=30, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    patch=st.integers(3, 20),
    step=st.integers(1, 20),
    seed=st.integers(0, 9),
    strategy=st.sampled_from(["split", "chessboard"]),
)
def test_property_sets_never_share_a_pixel(holes, patch, step, seed, strategy):
    img, mask_path, _data, _mask = holes
    result = patches_selection(img, patch, step, strategy=strategy, mask=mask_path, seed=seed, cell=2)
    assert coverage(result, 70, 90).max() <= 1
    assert not (result.sets >= 0)[~result.valid].any()


def test_split_fractions_and_chessboard_on_real_data():
    split = patches_selection(B2_30, 32, 32, strategy="split", fractions=(0.6, 0.2, 0.2), cell=1)
    counts = split.counts()
    # 12 x 12 = 144 non-overlapping patches: cells of one patch, cut 86 / 29 / 29.
    assert sum(counts.values()) == 144 and split.dropped_for_overlap == {}
    assert counts == {"train": 86, "valid": 29, "test": 29}
    board = patches_selection(B2_30, 32, 32, strategy="chessboard", cell=3)
    rows, cols = np.indices(board.sets.shape)
    assert np.array_equal(board.sets, ((rows // 3 + cols // 3) % 2).astype(np.int8))
    assert board.counts()["test"] == 0


def test_points_give_exactly_the_grid_windows(tmp_path):
    result = patches_selection(B2_30, 16, 24, strategy="split", seed=1)
    path = result.write_gpkg("valid", tmp_path / "valid.gpkg")
    extraction = extract_patches([PatchSource(B2_30, 16)], path, [tmp_path / "p.tif"])
    assert extraction.accepted == result.counts()["valid"]
    with rasterio.open(B2_30) as src:
        band = src.read(1)
    rows, cols = np.nonzero(result.sets == SET_NAMES.index("valid"))
    with PatchesImage(tmp_path / "p.tif") as patches:
        got = patches.read(0, len(patches))[..., 0]
    for k, (j, i) in enumerate(zip(rows, cols, strict=True)):
        assert np.array_equal(got[k], band[j * 24 : j * 24 + 16, i * 24 : i * 24 + 16])
    ds = ogr.Open(str(path))
    assert ds.GetLayer(0).GetSpatialRef().GetAuthorityCode(None) == "32621"


def test_balanced_keeps_as_many_patches_per_class(tmp_path):
    # Labels from the real blue band: 3 classes by brightness (water is dark).
    with rasterio.open(B2_30) as src:
        band = src.read(1).astype(float)
        profile = src.profile
    labels = np.digitize(band, np.percentile(band, [60, 90])).astype("uint8") + 1
    label_path = tmp_path / "labels.tif"
    with rasterio.open(label_path, "w", **(profile | {"dtype": "uint8", "nodata": None})) as dst:
        dst.write(labels, 1)
    result = patches_selection(B2_30, 16, 16, strategy="balanced", labels=label_path, cell=1, seed=3)
    kept = result.sets >= 0
    totals = np.array([(labels == c).sum() for c in (1, 2, 3)], dtype=float)
    shares = np.stack(
        [
            np.array(
                [
                    [((labels[j * 16 : j * 16 + 16, i * 16 : i * 16 + 16]) == c).sum() for i in range(25)]
                    for j in range(25)
                ]
            )
            / totals[c - 1]
            for c in (1, 2, 3)
        ]
    )
    patch_class = np.argmax(shares, axis=0)
    per_class = [int((kept & (patch_class == k)).sum()) for k in range(3)]
    assert per_class[0] == per_class[1] == per_class[2] > 0
    assert set(result.class_pixels) == {"train", "valid", "test"}


def test_errors_say_what_would_work(holes):
    img, _, _, _ = holes
    with pytest.raises(InputError, match=r"larger than the raster .*use at most 70"):
        patches_selection(img, 80, 10)
    with pytest.raises(InputError, match="needs a label raster"):
        patches_selection(img, 8, 8, strategy="balanced")
    with pytest.raises(InputError, match="unknown strategy 'random'; use one of: split, chessboard, all, balanced"):
        patches_selection(img, 8, 8, strategy="random")
    with pytest.raises(InputError, match=r"e\.g\. 0\.7, 0\.15, 0\.15"):
        patches_selection(img, 8, 8, fractions=(0, 0, 0))


@pytest.mark.parametrize(
    ("fractions", "message"),
    [
        (
            (0.8, 0.3, 0.15),
            r"fractions 0.8, 0.3, 0.15 add up to 1.25; they share the positions, so they must add up "
            r"to 1: for the same proportions use 0.64, 0.24, 0.12",
        ),
        ((70, 15, 15), r"add up to 100; .* use 0.7, 0.15, 0.15"),
        ((0.5, 0.2, 0.1), r"add up to 0.8; .* use 0.625, 0.25, 0.125"),
    ],
)
def test_fractions_that_do_not_add_up_to_one_are_refused(fractions, message):
    with pytest.raises(InputError, match=message):
        patches_selection(B2_30, 32, 32, fractions=fractions)


def test_memory_per_grid_position_is_a_few_bytes(tmp_path):
    """Grid positions at step 1: the engine's peak grows by less than 8 bytes per position
    (29 before; a tile's work is a fixed cost, cancelled by comparing two sizes); the points
    stream in chunks that equal the whole list."""
    import tracemalloc

    import rasterio
    from rasterio.transform import from_origin

    def peak_of(side):
        path = tmp_path / f"big{side}.tif"
        values = (np.random.default_rng(0).random((side, side)) * 200).astype("uint8")
        values[100:140, 300:900] = 255  # nodata
        with rasterio.open(
            path,
            "w",
            driver="GTiff",
            width=side,
            height=side,
            count=1,
            dtype="uint8",
            nodata=255,
            crs="EPSG:32631",
            transform=from_origin(0, 0, 10, 10),
            tiled=True,
        ) as dst:
            dst.write(values, 1)
        patches_selection(path, 8, 1)  # imports (scipy) before measuring
        tracemalloc.start()
        try:
            result = patches_selection(path, 8, 1)
            return result, tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    (small, small_peak), (large, large_peak) = peak_of(1200), peak_of(2400)
    per_position = (large_peak - small_peak) / (large.sets.size - small.sets.size)
    assert per_position < 8, per_position
    x, y = small.points("valid")
    chunks = list(small.iter_points("valid", positions=50_000))
    assert len(chunks) > 10
    assert np.array_equal(np.concatenate([c[0] for c in chunks]), x)
    assert np.array_equal(np.concatenate([c[1] for c in chunks]), y)
