"""Patches extraction on real data: every patch equals the raster window read
directly with GDAL at a hand-computed position; otbtf's layout read back by a
reader that follows otbtf's own rule."""

import math

import numpy as np
import pytest
from osgeo import gdal, ogr

from common import DATA, OTB_COUNTS, POLYGONS, RGB, CancelAfter, write_points
from otbtf_plugin.errors import Cancelled, InputError
from otbtf_plugin.extraction import PatchSource, extract_patches
from otbtf_plugin.patches_image import PatchesImage, PatchesImageError, read_origins
from otbtf_plugin.selection import sample_selection

gdal.UseExceptions()
B2_30 = DATA / "landsat8" / "LC08_224077_20200518_B2_30m_crop.tif"
B2_60 = DATA / "landsat8" / "LC08_224077_20200518_B2_60m_crop.tif"
AMSTERDAM = DATA / "otbtf" / "amsterdam_patches_A_24.tif"
AMSTERDAM_LABELS = DATA / "otbtf" / "amsterdam_labels_A_24.tif"


def otbtf_rule_read(path):
    """Read a patches image the way otbtf's Python reader does: the patch size is
    the raster width, n = int(height / width), bands last."""
    ds = gdal.Open(str(path))
    buffer = ds.ReadAsArray()
    size = ds.RasterXSize
    if buffer.ndim == 3:
        buffer = np.transpose(buffer, (1, 2, 0))
    return buffer.reshape(int(ds.RasterYSize / size), size, size, ds.RasterCount)


def direct_patch(path, x, y, width, height=None):
    """The window of the patch centred on the pixel containing (x, y), read with GDAL."""
    height = height or width
    ds = gdal.Open(str(path))
    x0, rx, _, y0, _, ry = ds.GetGeoTransform()
    col, row = math.floor((x - x0) / rx), math.floor((y - y0) / ry)
    data = ds.ReadAsArray(col - width // 2, row - height // 2, width, height)
    return data.reshape(ds.RasterCount, height, width).transpose(1, 2, 0)


@pytest.fixture(scope="module")
def samples_all(tmp_path_factory):
    path = tmp_path_factory.mktemp("samples") / "all.gpkg"
    return sample_selection(RGB, POLYGONS, "name", strategy="all").write_gpkg(path)


def test_every_patch_equals_the_window_read_directly(tmp_path, samples_all):
    result = extract_patches(
        [PatchSource(RGB, 16)], samples_all, [tmp_path / "p.tif"], "name", labels_output=tmp_path / "labels.tif"
    )
    assert result.accepted == result.candidates == sum(OTB_COUNTS.values())
    with PatchesImage(tmp_path / "p.tif") as image, PatchesImage(tmp_path / "labels.tif") as labels:
        assert (len(image), image.patch_width, image.patch_height, image.bands) == (683, 16, 16, 3)
        assert image.dtype == np.uint16
        patches = image.read(0, len(image))
        label_values = labels.read(0, len(labels)).ravel()
        assert labels.class_codes == {"crop": "1", "developed": "2", "tree": "3", "water": "4"}
    origins, why = read_origins(tmp_path / "labels.tif", len(label_values))
    assert why == "" and origins.polygon is not None
    x0, rx, _, y0, _, ry = gdal.Open(str(RGB)).GetGeoTransform()
    ds = ogr.Open(str(samples_all))
    for k, feature in enumerate(ds.GetLayer(0)):
        point = feature.GetGeometryRef()
        assert np.array_equal(patches[k], direct_patch(RGB, point.GetX(), point.GetY(), 16)), k
        assert label_values[k] == int(labels.class_codes[feature.GetField("name")])
        # The origins table: the sample's polygon and the pixel that holds the point.
        assert origins.polygon[k] == feature.GetField("originfid")
        assert (origins.col[k], origins.row[k]) == (
            math.floor((point.GetX() - x0) / rx),
            math.floor((point.GetY() - y0) / ry),
        )
    assert len(set(origins.polygon.tolist())) == 4  # the sample's four polygons
    assert sorted(p.name for p in tmp_path.iterdir()) == ["labels.origins.csv", "labels.tif", "p.tif"]


def test_two_resolutions_and_the_otbtf_layout(tmp_path):
    """30 m and 60 m sources (aligned grids): 16 px and 8 px patches of the same ground."""
    ds = gdal.Open(str(B2_60))
    x0, rx, _, y0, _, ry = ds.GetGeoTransform()
    rng = np.random.default_rng(1)
    # Points across the whole 60 m extent, edges included: some patches stick out.
    xy = np.column_stack([x0 + rng.uniform(0, 200 * rx, 300), y0 - rng.uniform(0, 200 * -ry, 300)])
    points = write_points(tmp_path / "pts.gpkg", xy, classes=rng.integers(1, 4, 300))
    result = extract_patches(
        [PatchSource(B2_30, 16), PatchSource(B2_60, 8)],
        points,
        [tmp_path / "p30.tif", tmp_path / "p60.tif"],
        "cls",
        labels_output=tmp_path / "y.tif",
    )
    # Expected rejections, by hand: the 30 m patch needs its pixel 8 before / 7 after
    # the edges of the 400 px grid; the 60 m one 4 before / 3 after on 200 px.
    col30 = np.floor((xy[:, 0] - x0) / 30).astype(int)
    row30 = np.floor((xy[:, 1] - y0) / -30).astype(int)
    col60, row60 = col30 // 2, row30 // 2
    ok30 = (col30 >= 8) & (col30 <= 400 - 8) & (row30 >= 8) & (row30 <= 400 - 8)
    ok60 = (col60 >= 4) & (col60 <= 200 - 4) & (row60 >= 4) & (row60 <= 200 - 4)
    assert result.accepted == int((ok30 & ok60).sum())
    assert result.rejected.get("patch not entirely inside source 1", 0) == int((~ok30).sum())
    assert result.rejected.get("patch not entirely inside source 2", 0) == int((ok30 & ~ok60).sum())
    p30, p60, labels = (otbtf_rule_read(tmp_path / n) for n in ("p30.tif", "p60.tif", "y.tif"))
    assert p30.shape == (result.accepted, 16, 16, 1) and p60.shape == (result.accepted, 8, 8, 1)
    kept = np.flatnonzero(ok30 & ok60)
    for k, i in enumerate(kept):
        assert np.array_equal(p30[k], direct_patch(B2_30, *xy[i], 16))
        assert np.array_equal(p60[k], direct_patch(B2_60, *xy[i], 8))
    with PatchesImage(tmp_path / "p30.tif") as ours:
        assert np.array_equal(ours.read(0, len(ours)), p30)
    assert labels.shape == (result.accepted, 1, 1, 1)


def test_otbtf_patches_image_reads_back():
    with PatchesImage(AMSTERDAM) as image:
        assert (len(image), image.patch_width, image.patch_height, image.bands) == (24, 64, 64, 4)
        reference = otbtf_rule_read(AMSTERDAM)
        assert np.array_equal(image.read(0, 24), reference)
        assert np.array_equal(image.read(5), reference[5:6])
    with PatchesImage(AMSTERDAM_LABELS) as labels:
        assert len(labels) == 24 and set(np.unique(labels.read(0, 24))) == {0.0, 1.0}


def test_not_a_multiple_of_the_patch_size_is_explained(tmp_path):
    path = tmp_path / "cut.tif"
    gdal.Translate(str(path), str(AMSTERDAM), srcWin=[0, 0, 64, 1000])
    with pytest.raises(
        PatchesImageError,
        match=r"1000 rows is not a multiple of the patch height 64 .* "
        r"15 patches would need 960 rows",
    ):
        PatchesImage(path)
    with PatchesImage(AMSTERDAM) as image, pytest.raises(PatchesImageError, match="holds 24"):
        image.read(20, 25)


def test_nodata_patches_are_rejected_and_counted(tmp_path):
    # A copy of the 30 m band with nodata = 0 written in a 20 x 20 px square.
    src = tmp_path / "b2.tif"
    gdal.Translate(str(src), str(B2_30), noData=0)
    ds = gdal.Open(str(src), gdal.GA_Update)
    band = ds.GetRasterBand(1)
    band.WriteArray(np.zeros((20, 20), dtype=np.uint16), 200, 100)
    ds = None
    x0, y0 = 718005.0, -2784615.0
    cols = np.arange(20, 380, 7)
    xy = np.array([(x0 + (c + 0.5) * 30, y0 - (110 + 0.5) * 30) for c in cols])  # a row of points, row 110
    points = write_points(tmp_path / "pts.gpkg", xy)
    result = extract_patches([PatchSource(src, 16)], points, [tmp_path / "p.tif"])
    # Patches of row 110 span rows 102..117 (inside the square's rows 100..119); they
    # hold nodata when their columns c-8..c+7 meet the square's columns 200..219.
    hit = (cols + 7 >= 200) & (cols - 8 <= 219)
    assert result.rejected == {"nodata in source 1": int(hit.sum())}
    assert result.accepted == int((~hit).sum())


def test_no_patch_at_all_says_where_things_are(tmp_path):
    points = write_points(tmp_path / "far.gpkg", [(718005.0 + 15, -2784615.0 - 15)])  # pixel (0, 0)
    with pytest.raises(
        InputError,
        match=r"no patch could be extracted from the 1 points \(1 patch not entirely "
        r"inside source 1\).*needs its centre at least 8 px from the left",
    ):
        extract_patches([PatchSource(B2_30, 16)], points, [tmp_path / "p.tif"])
    assert [p.name for p in tmp_path.iterdir()] == ["far.gpkg"]


def test_sources_that_do_not_overlap(tmp_path):
    points = write_points(tmp_path / "p.gpkg", [(720000.0, -2790000.0)])
    with pytest.raises(InputError, match=r"the sources do not overlap .*source 1 covers .*source 2 covers"):
        extract_patches(
            [PatchSource(B2_30, 16), PatchSource(RGB, 16)], points, [tmp_path / "a.tif", tmp_path / "b.tif"]
        )


def test_polygons_are_refused_with_the_way_forward(tmp_path):
    with pytest.raises(
        InputError, match="must hold points, not Polygon; make points from polygons with otbtf:sampleselection"
    ):
        extract_patches([PatchSource(RGB, 16)], POLYGONS, [tmp_path / "p.tif"])


def test_patch_larger_than_the_raster(tmp_path, samples_all):
    with pytest.raises(InputError, match=r"larger than the raster .*use at most 200"):
        extract_patches([PatchSource(B2_60, 256)], samples_all, [tmp_path / "p.tif"])


def test_non_square_patches_and_group_size_do_not_change_the_result(tmp_path, samples_all):
    a = extract_patches([PatchSource(RGB, 5, 3)], samples_all, [tmp_path / "a.tif"], group_px=512)
    b = extract_patches([PatchSource(RGB, 5, 3)], samples_all, [tmp_path / "b.tif"], group_px=7)
    with PatchesImage(tmp_path / "a.tif") as pa, PatchesImage(tmp_path / "b.tif") as pb:
        assert (pa.patch_width, pa.patch_height) == (5, 3)
        assert np.array_equal(pa.read(0, len(pa)), pb.read(0, len(pb)))
    assert a.accepted == b.accepted == 683


def test_cancel_leaves_nothing(tmp_path, samples_all):
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(Cancelled):
        extract_patches(
            [PatchSource(RGB, 16)],
            samples_all,
            [out / "p.tif"],
            "name",
            labels_output=out / "y.tif",
            group_px=64,
            progress=CancelAfter(2),
        )
    assert list(out.iterdir()) == []


def test_reads_are_grouped_by_block_not_by_point(tmp_path, samples_all, monkeypatch):
    """683 points over an 800 x 1140 px raster: one windowed read per 512 px block
    holding patch centres (at most 2 x 3 = 6), not one per point."""
    import rasterio.io

    calls = []
    original = rasterio.io.DatasetReader.read

    def counting_read(self, *args, **kwargs):
        calls.append(kwargs.get("window"))
        return original(self, *args, **kwargs)

    monkeypatch.setattr(rasterio.io.DatasetReader, "read", counting_read)
    result = extract_patches([PatchSource(RGB, 16)], samples_all, [tmp_path / "p.tif"], group_px=512)
    assert result.accepted == 683
    assert 1 <= len(calls) <= 6


@pytest.mark.slow
def test_memory_per_point_is_bounded(tmp_path):
    """Extraction keeps a few arrays per point (the patches go to a scratch file): the peak
    grows by less than BYTES_PER_POINT + 8 per source (it was about 260 bytes and Python lists
    of every point); two sizes cancel the fixed costs."""
    import tracemalloc

    import rasterio
    from rasterio.transform import from_origin

    from otbtf_plugin.extraction import BYTES_PER_POINT
    from otbtf_plugin.vector import write_points

    raster = tmp_path / "r.tif"
    with rasterio.open(
        raster,
        "w",
        driver="GTiff",
        width=1000,
        height=1000,
        count=1,
        dtype="uint8",
        crs="EPSG:32631",
        transform=from_origin(0, 0, 10, 10),
        tiled=True,
    ) as dst:
        dst.write(np.random.default_rng(1).integers(0, 200, (1, 1000, 1000), dtype=np.uint8))
    rng = np.random.default_rng(0)

    def peak(n):
        points = tmp_path / f"p{n}.gpkg"
        write_points(
            points,
            "p",
            rasterio.open(raster).crs.to_wkt(),
            rng.uniform(50, 9950, n),
            -rng.uniform(50, 9950, n),
            {"label": ([int(v) for v in rng.integers(1, 5, n)], "Integer64")},
        )
        tracemalloc.start()
        try:
            result = extract_patches(
                [PatchSource(raster, 8)],
                points,
                [tmp_path / f"x{n}.tif"],
                "label",
                labels_output=tmp_path / f"y{n}.tif",
            )
            return result.accepted, tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    (small, small_peak), (large, large_peak) = peak(20_000), peak(220_000)
    assert (small, large) == (20_000, 220_000)
    per_point = (large_peak - small_peak) / (large - small)
    assert per_point < BYTES_PER_POINT + 8, per_point


def test_more_points_than_memory_allows_are_refused_before_any_work(tmp_path, monkeypatch):
    from otbtf_plugin import extraction

    samples = sample_selection(RGB, POLYGONS, "name", strategy="all").write_gpkg(tmp_path / "s.gpkg")
    monkeypatch.setattr(extraction, "physical_memory", lambda: 100_000)  # a machine of 100 kB
    message = r"^683 points would need about 139 KiB of working memory, more than half of this machine's 98 KiB"
    with pytest.raises(InputError, match=message + ": extract them in parts"):
        extract_patches([PatchSource(RGB, 16)], samples, [tmp_path / "p.tif"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.gpkg"]


def test_a_real_field_gives_values_to_regress(tmp_path):
    """FIELD may be a real field (regression targets): the labels image holds its values as
    float32, one per kept point, in the points' order; sample selection still wants classes."""
    raster = gdal.Open(str(RGB))
    x0, rx, _, y0, _, ry = raster.GetGeoTransform()
    wkt = raster.GetProjection()
    raster = None
    values = [12.25, 0.5, -3.125, 7.0, 1e-3]
    xy = [(x0 + (40 + 30 * k + 0.5) * rx, y0 + (50 + 20 * k + 0.5) * ry) for k in range(len(values))]
    path = str(write_points(tmp_path / "heights.gpkg", xy, values, wkt=wkt, field="height", kind="Real"))
    result = extract_patches(
        [PatchSource(RGB, 16)], path, [tmp_path / "x.tif"], "height", labels_output=tmp_path / "y.tif"
    )
    assert result.accepted == len(values)
    with PatchesImage(tmp_path / "y.tif") as labels:
        got = labels.read(0, len(labels)).ravel()
        assert labels.dtype == "float32" and labels.class_codes == {}
    assert got.tolist() == np.asarray(values, dtype=np.float32).tolist()
    with pytest.raises(
        InputError,
        match=r"class field 'height' is of type Real; use an integer or text field "
        r"\(values to regress are taken by otbtf:patchesextraction\)",
    ):
        sample_selection(RGB, path, "height")
