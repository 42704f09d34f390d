"""Sample selection: strategy arithmetic by hand, selected points checked with a
shapely reference on real Landsat 8 data, and OTB's SampleSelection side by side."""

import shutil
import subprocess

import geopandas
import numpy as np
import pytest
from osgeo import ogr
from reference import covered_pixels

from common import OTB_COUNTS, POLYGONS, RGB
from otbtf_plugin.errors import InputError
from otbtf_plugin.selection import choose_ranks, requested_counts, sample_selection

AVAILABLE = {1: 192, 2: 81, 3: 198, 4: 212}


@pytest.mark.parametrize(
    "strategy, value, expected",
    [
        ("smallest", None, {1: 81, 2: 81, 3: 81, 4: 81}),
        ("all", None, AVAILABLE),
        ("constant", 100, {1: 100, 2: 81, 3: 100, 4: 100}),
        ("percent", 0.5, {1: 96, 2: 41, 3: 99, 4: 106}),  # 40.5 -> 41 (half up)
        # 300 * (192, 81, 198, 212) / 683 = 84.33, 35.58, 86.97, 93.12 -> floors 84, 35, 86, 93
        # (298); the 2 missing go to the largest remainders: 86.97 and 35.58.
        ("total", 300, {1: 84, 2: 36, 3: 87, 4: 93}),
        ("total", 10_000, AVAILABLE),
    ],
)
def test_requested_counts(strategy, value, expected):
    wanted, _ = requested_counts(AVAILABLE, strategy, value)
    assert wanted == expected
    if strategy == "total" and value < sum(AVAILABLE.values()):
        assert sum(wanted.values()) == value


def test_capped_and_empty_classes_are_reported_by_name():
    wanted, warnings = requested_counts({1: 5, 2: 0, 3: 50}, "constant", 10, {1: "a", 2: "b", 3: "c"})
    assert wanted == {1: 5, 2: 0, 3: 10}
    assert warnings == [
        "class 'b' has no valid pixel: it gets no sample",
        "10 samples per class requested; fewer pixels exist, all are kept, for class 'a' (5)",
    ]


@pytest.mark.parametrize(
    "strategy, value, message",
    [
        ("percent", 50, r"fraction between 0 and 1, not 50 \(for 50 %, use 0.5\)"),
        ("percent", 0, "fraction between 0 and 1"),
        ("constant", 0, "whole number of samples per class >= 1, not 0"),
        ("total", 2.5, "whole number of samples >= 1, not 2.5"),
        ("constant", None, "needs STRATEGY_VALUE"),
        ("byclass", 1, "unknown strategy 'byclass'; use one of: smallest, constant, percent, total, all"),
    ],
)
def test_bad_strategy_values_say_what_would_work(strategy, value, message):
    with pytest.raises(InputError, match=message):
        requested_counts(AVAILABLE, strategy, value)


def test_periodic_ranks_hand_checked():
    rng = np.random.default_rng(0)
    # N = 10, n = 3: floor((0.5, 1.5, 2.5) * 10 / 3) = floor(1.67, 5, 8.33)
    assert choose_ranks(10, 3, "periodic", rng).tolist() == [1, 5, 8]
    assert choose_ranks(4, 4, "periodic", rng).tolist() == [0, 1, 2, 3]
    assert choose_ranks(4, 0, "periodic", rng).tolist() == []


def test_random_ranks_are_seeded_sorted_and_distinct():
    a = choose_ranks(1000, 50, "random", np.random.default_rng(7))
    b = choose_ranks(1000, 50, "random", np.random.default_rng(7))
    c = choose_ranks(1000, 50, "random", np.random.default_rng(8))
    assert a.tolist() == b.tolist() != c.tolist()
    assert len(set(a.tolist())) == 50 and a.tolist() == sorted(a.tolist())
    assert a.min() >= 0 and a.max() < 1000


@pytest.fixture(scope="module")
def polygons():
    return geopandas.read_file(POLYGONS)


def test_all_selects_exactly_the_covered_pixels(polygons):
    samples = sample_selection(RGB, POLYGONS, "name", strategy="all")
    assert samples.by_class() == OTB_COUNTS
    for fid, (name, geom) in zip(range(1, 5), zip(polygons["name"], polygons.geometry, strict=True), strict=True):
        mine = samples.fids == fid
        got = set(zip(samples.cols[mine].tolist(), samples.rows[mine].tolist(), strict=True))
        assert got == covered_pixels(RGB, geom)
        assert {samples.class_names[int(c)] for c in samples.codes[mine]} == {name}


def test_points_sit_at_pixel_centres_inside_their_polygon(polygons):
    samples = sample_selection(RGB, POLYGONS, "name", strategy="smallest")
    assert samples.by_class() == dict.fromkeys(OTB_COUNTS, 81)
    # Pixel centres of 30 m pixels whose grid starts at a multiple of 15 m.
    assert np.allclose((samples.x - 735645.0 - 15.0) % 30.0, 0.0)
    assert np.allclose((samples.y + 2794695.0 + 15.0) % 30.0, 0.0)
    geometry_of = dict(zip(range(1, 5), polygons.geometry, strict=True))
    from shapely.geometry import Point

    for fid, x, y in zip(samples.fids, samples.x, samples.y, strict=True):
        assert geometry_of[int(fid)].contains(Point(x, y))


@pytest.mark.parametrize("sampler", ["periodic", "random"])
def test_selection_is_deterministic_and_independent_of_block_size(sampler):
    runs = [
        sample_selection(RGB, POLYGONS, "name", strategy="constant", value=50, sampler=sampler, seed=3, block_px=block)
        for block in (1024, 37, 200)
    ]
    first = list(zip(runs[0].cols.tolist(), runs[0].rows.tolist(), strict=True))
    assert len(set(first)) == 4 * 50
    for other in runs[1:]:  # same samples, in the same order
        assert list(zip(other.cols.tolist(), other.rows.tolist(), strict=True)) == first
    if sampler == "random":
        again = sample_selection(RGB, POLYGONS, "name", strategy="constant", value=50, sampler="random", seed=4)
        assert list(zip(again.cols.tolist(), again.rows.tolist(), strict=True)) != first


def test_periodic_spreads_samples_over_the_polygon():
    samples = sample_selection(RGB, POLYGONS, "name", strategy="constant", value=10)
    water = samples.fids == 1
    rows = np.sort(samples.rows[water])
    all_rows = sorted(r for _, r in covered_pixels(RGB, geopandas.read_file(POLYGONS).geometry[0]))
    # Evenly spread over the 212 ranks (row-major): first and last picks near the ends.
    assert rows[0] <= all_rows[len(all_rows) // 10] and rows[-1] >= all_rows[-len(all_rows) // 10 - 1]


def test_written_geopackage(tmp_path):
    samples = sample_selection(RGB, POLYGONS, "name", strategy="smallest")
    path = samples.write_gpkg(tmp_path / "samples.gpkg")
    ds = ogr.Open(str(path))
    layer = ds.GetLayer(0)
    assert layer.GetFeatureCount() == 4 * 81
    assert [layer.GetLayerDefn().GetFieldDefn(i).GetName() for i in range(2)] == ["name", "originfid"]
    assert layer.GetMetadataItem("OTBTF_CLASS_CODES") == "crop=1;developed=2;tree=3;water=4"
    assert layer.GetSpatialRef().GetAuthorityCode(None) == "32621"
    first = layer.GetNextFeature()
    assert first.GetField("name") in OTB_COUNTS and 1 <= first.GetField("originfid") <= 4
    ds = None
    assert sorted(p.name for p in tmp_path.iterdir()) == ["samples.gpkg"]


@pytest.mark.skipif(
    shutil.which("otbcli_SampleSelection") is None,
    reason="Orfeo ToolBox (otb-bin) not installed; make setup installs it",
)
@pytest.mark.parametrize(
    "strategy, otb_args, value",
    [
        ("smallest", [], None),
        ("constant", ["-strategy.constant.nb", "100"], 100),
        ("all", [], None),
    ],
)
def test_counts_agree_with_otb_sample_selection(tmp_path, strategy, otb_args, value):
    stats = tmp_path / "stats.xml"
    subprocess.run(
        ["otbcli_PolygonClassStatistics", "-in", str(RGB), "-vec", str(POLYGONS), "-field", "name", "-out", str(stats)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    out = tmp_path / "otb_samples.sqlite"
    subprocess.run(
        [
            "otbcli_SampleSelection",
            "-in",
            str(RGB),
            "-vec",
            str(POLYGONS),
            "-field",
            "name",
            "-instats",
            str(stats),
            "-strategy",
            strategy,
            *otb_args,
            "-out",
            str(out),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    ds = ogr.Open(str(out))
    layer = ds.GetLayer(0)
    otb = {}
    for feature in layer:
        otb[feature.GetField("name")] = otb.get(feature.GetField("name"), 0) + 1
    ds = None
    ours = sample_selection(RGB, POLYGONS, "name", strategy=strategy, value=value).by_class()
    assert ours == otb


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    """97 x 83 px raster with scattered nodata; overlapping polygons of 3 classes
    and multi-point features whose parts lie in different blocks."""
    import rasterio
    from rasterio.transform import from_origin

    folder = tmp_path_factory.mktemp("synthetic")
    raster = folder / "img.tif"
    rng = np.random.default_rng(0)
    data = rng.integers(1, 100, (2, 83, 97)).astype("int16")
    data[0][rng.random((83, 97)) < 0.1] = -1
    with rasterio.open(
        raster,
        "w",
        driver="GTiff",
        width=97,
        height=83,
        count=2,
        dtype="int16",
        crs="EPSG:32631",
        transform=from_origin(500000, 4000000, 10, 10),
        nodata=-1,
    ) as dst:
        dst.write(data)
    vector = folder / "truth.gpkg"
    ds = ogr.GetDriverByName("GPKG").CreateDataSource(str(vector))
    srs = ogr.osr.SpatialReference()
    srs.ImportFromEPSG(32631)
    layer = ds.CreateLayer("truth", srs, ogr.wkbUnknown)
    layer.CreateField(ogr.FieldDefn("cls", ogr.OFTInteger))
    shapes = [
        (1, "POLYGON ((500020 3999980, 500900 3999950, 500700 3999300, 500050 3999400, 500020 3999980))"),
        (2, "POLYGON ((500300 3999700, 500960 3999700, 500960 3999180, 500300 3999180, 500300 3999700))"),
        (
            1,
            "MULTIPOLYGON (((500100 3999250, 500200 3999250, 500200 3999200, 500100 3999250)),"
            " ((500800 3999900, 500950 3999900, 500950 3999850, 500800 3999900)))",
        ),
        (3, "MULTIPOINT ((500005 3999995), (500955 3999175), (500505 3999505), (500015 3999985))"),
        (3, "POINT (500405 3999605)"),
    ]
    for cls, wkt in shapes:
        feature = ogr.Feature(layer.GetLayerDefn())
        feature.SetField("cls", cls)
        feature.SetGeometry(ogr.CreateGeometryFromWkt(wkt))
        layer.CreateFeature(feature)
    ds = None
    return raster, vector


from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


@pytest.mark.slow
@settings(max_examples=25, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    block=st.integers(3, 120),
    strategy=st.sampled_from(["smallest", "constant", "percent", "all"]),
    sampler=st.sampled_from(["periodic", "random"]),
    seed=st.integers(0, 5),
)
def test_property_selection_never_depends_on_block_size(synthetic, block, strategy, sampler, seed):
    raster, vector = synthetic
    value = {"constant": 7, "percent": 0.3}.get(strategy)

    def run(block_px):
        s = sample_selection(
            raster, vector, "cls", strategy=strategy, value=value, sampler=sampler, seed=seed, block_px=block_px
        )
        return list(zip(s.fids.tolist(), s.cols.tolist(), s.rows.tolist(), strict=True))

    assert run(block) == run(10_000)


def test_overlapping_polygons_of_different_classes_are_reported(tmp_path):
    """Two squares of different classes overlap; a third, of the first class, overlaps the
    first (same class: no conflict). The pixels covered by both classes are counted against
    an independent rasterisation of each polygon (shapely pixel centres)."""
    import rasterio
    from shapely.geometry import box

    with rasterio.open(RGB) as src:
        left, top, wkt = src.bounds.left, src.bounds.top, src.crs.to_wkt()
    squares = [
        ("water", box(left + 3000, top - 6000, left + 6000, top - 3000)),
        ("crop", box(left + 4500, top - 7500, left + 7500, top - 4500)),
        ("water", box(left + 3600, top - 5400, left + 5400, top - 3600)),
    ]
    frame = geopandas.GeoDataFrame({"name": [n for n, _ in squares]}, geometry=[g for _, g in squares], crs=wkt)
    path = tmp_path / "overlap.gpkg"
    frame.to_file(path, driver="GPKG")
    pixels = [covered_pixels(RGB, g) for _, g in squares]
    both = (pixels[0] | pixels[2]) & pixels[1]
    assert len(both) > 100
    samples = sample_selection(RGB, path, "name", strategy="all")
    expected = (
        f"{len(both)} pixel(s) lie in polygons of different classes (crop and water: {len(both)}): such a "
        "pixel is sampled for each of its classes"
    )
    assert [w for w in samples.warnings if w.startswith(expected)], samples.warnings
    clean = sample_selection(RGB, POLYGONS, "name", strategy="all")
    assert not [w for w in clean.warnings if "polygons of different classes" in w]
