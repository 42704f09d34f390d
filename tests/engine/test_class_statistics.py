"""Class statistics on real Landsat 8 data, against independent computations:
a shapely point-in-polygon reference, and the Orfeo ToolBox."""

import shutil
import subprocess
import xml.etree.ElementTree as ET

import geopandas
import numpy as np
import pytest
import rasterio
from osgeo import gdal, ogr, osr
from reference import reference_counts

from common import OTB_COUNTS, POINTS, POLYGONS, RGB, CancelAfter
from otbtf_plugin.class_statistics import class_statistics
from otbtf_plugin.errors import Cancelled, InputError

gdal.UseExceptions()


@pytest.fixture(scope="module")
def polygons():
    return geopandas.read_file(POLYGONS)


def test_counts_match_the_orfeo_toolbox_and_a_shapely_reference(polygons):
    stats = class_statistics(RGB, POLYGONS, "name")
    assert stats.by_class() == OTB_COUNTS
    expected = reference_counts(RGB, polygons.geometry)
    assert list(stats.feature_counts.values()) == expected
    assert stats.outside == 0
    # Text classes get codes by sorted name.
    assert stats.string_classes
    assert stats.class_names == {1: "crop", 2: "developed", 3: "tree", 4: "water"}


@pytest.mark.skipif(
    shutil.which("otbcli_PolygonClassStatistics") is None,
    reason="Orfeo ToolBox (otb-bin) not installed; make setup installs it",
)
def test_agrees_with_otbcli_on_the_shipped_crop(tmp_path):
    out = tmp_path / "otb.xml"
    subprocess.run(
        ["otbcli_PolygonClassStatistics", "-in", str(RGB), "-vec", str(POLYGONS), "-field", "name", "-out", str(out)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    root = ET.parse(out).getroot()
    otb = {
        m.get("key"): int(m.get("value"))
        for s in root.iter("Statistic")
        if s.get("name") == "samplesPerClass"
        for m in s.iter("StatisticMap")
    }
    ours = class_statistics(RGB, POLYGONS, "name").by_class()
    assert set(otb) == set(ours)
    for name, count in otb.items():
        assert abs(ours[name] - count) <= 0.01 * count, (name, ours[name], count)


def test_result_does_not_depend_on_block_size():
    reference = class_statistics(RGB, POLYGONS, "name").feature_counts
    for block in (7, 64, 333):
        assert class_statistics(RGB, POLYGONS, "name", block_px=block).feature_counts == reference


def copy_vector(source, path, **options):
    gdal.VectorTranslate(str(path), str(source), format="GPKG", **options)
    return path


def add_feature(path, wkt, **fields):
    ds = ogr.Open(str(path), 1)
    layer = ds.GetLayer(0)
    feature = ogr.Feature(layer.GetLayerDefn())
    feature.SetGeometry(ogr.CreateGeometryFromWkt(wkt))
    for name, value in fields.items():
        feature.SetField(name, value)
    layer.CreateFeature(feature)
    ds = None


def test_points_count_the_pixel_they_fall_in(tmp_path):
    stats = class_statistics(RGB, POINTS, "name")
    assert sum(stats.by_class().values()) == 6
    assert stats.by_class() == {"crop": 1, "developed": 1, "tree": 2, "water": 2}
    # A point outside the raster is counted as outside, not as a sample.
    path = copy_vector(POINTS, tmp_path / "pts.gpkg")
    add_feature(path, "POINT (700000 -2700000)", name="water")
    stats = class_statistics(RGB, path, "name")
    assert stats.outside == 1
    assert stats.by_class()["water"] == 2


def _copy_with_nodata(tmp_path, value, pixels):
    path = tmp_path / "nodata.tif"
    with rasterio.open(RGB) as src:
        profile = src.profile | {"nodata": value}
        data = src.read()
    for row, col, band in pixels:
        data[band, row, col] = value
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
    return path, data


def test_nodata_pixels_are_not_counted(tmp_path, polygons):
    # Put nodata (one band only is enough) in the first 30 rows x 600 cols of
    # the water polygon's surroundings, then compare with the reference.
    ds = gdal.Open(str(RGB))
    x0, rx, _, y0, _, ry = ds.GetGeoTransform()
    xmin, _, _, ymax = polygons.geometry[0].bounds
    r0 = int((ymax - y0) / ry)
    c0 = int((xmin - x0) / rx)
    pixels = [(r, c, (r + c) % 3) for r in range(r0, r0 + 6) for c in range(c0, c0 + 600)]
    path, data = _copy_with_nodata(tmp_path, 0, pixels)
    valid = (data != 0).all(axis=0)
    stats = class_statistics(path, POLYGONS, "name")
    assert list(stats.feature_counts.values()) == reference_counts(path, polygons.geometry, valid)
    assert stats.by_class()["water"] < OTB_COUNTS["water"]


def test_mask_on_another_grid_is_resampled(tmp_path, polygons):
    # A 60 m mask (half resolution) that is 0 on its left half: nearest
    # resampling gives 30 m pixels whose centre falls in a valid mask pixel.
    with rasterio.open(RGB) as src:
        t = src.transform
        mask_transform = rasterio.Affine(60.0, 0, t.c, 0, -60.0, t.f)
        mask = np.ones((570, 400), dtype=np.uint8)
        mask[:, :80] = 0
        path = tmp_path / "mask.tif"
        with rasterio.open(
            path,
            "w",
            driver="GTiff",
            width=400,
            height=570,
            count=1,
            dtype="uint8",
            crs=src.crs,
            transform=mask_transform,
        ) as dst:
            dst.write(mask, 1)
    valid = np.ones((1140, 800), dtype=bool)
    valid[:, :160] = False  # 80 mask pixels of 60 m = 160 pixels of 30 m: the polygons lie in columns 63..251
    stats = class_statistics(RGB, POLYGONS, "name", mask=path)
    assert list(stats.feature_counts.values()) == reference_counts(RGB, polygons.geometry, valid)
    assert 0 < sum(stats.feature_counts.values()) < sum(OTB_COUNTS.values())


def test_vector_in_another_crs_is_reprojected(tmp_path):
    path = copy_vector(POLYGONS, tmp_path / "wgs84.gpkg", dstSRS="EPSG:4326")
    stats = class_statistics(RGB, path, "name")
    for name, count in OTB_COUNTS.items():
        # Reprojected vertices move by millimetres: pixel centres on an edge may flip.
        assert abs(stats.by_class()[name] - count) <= 2


def test_integer_classes_and_null_classes(tmp_path):
    path = copy_vector(
        POLYGONS,
        tmp_path / "int.gpkg",
        SQLStatement=(
            "SELECT *, CASE name WHEN 'water' THEN 10 WHEN 'tree' THEN 30 ELSE 20 END AS code FROM land_cover"
        ),
        SQLDialect="SQLite",
    )
    stats = class_statistics(RGB, path, "code")
    assert not stats.string_classes
    assert stats.by_class() == {"10": 212, "20": 192 + 81, "30": 198}
    # A NULL class is skipped and reported.
    ds = ogr.Open(str(path), 1)
    layer = ds.GetLayer(0)
    feature = layer.GetFeature(1)
    feature.SetFieldNull("code")
    layer.SetFeature(feature)
    ds = None
    stats = class_statistics(RGB, path, "code")
    assert stats.skipped == {"NULL class": 1}
    # fid 1 is the water polygon (code 10): class 10 no longer has a feature.
    assert stats.by_class() == {"20": 192 + 81, "30": 198}


def test_missing_field_names_the_fields_that_exist():
    with pytest.raises(InputError, match=r"no field 'label'.*name"):
        class_statistics(RGB, POLYGONS, "label")


def test_empty_vector_is_an_error(tmp_path):
    path = tmp_path / "empty.gpkg"
    driver = ogr.GetDriverByName("GPKG")
    ds = driver.CreateDataSource(str(path))
    srs = osr.SpatialReference()
    srs.ImportFromEPSG(32621)
    layer = ds.CreateLayer("empty", srs, ogr.wkbPolygon)
    layer.CreateField(ogr.FieldDefn("name", ogr.OFTString))
    ds = None
    with pytest.raises(InputError, match="no feature"):
        class_statistics(RGB, path, "name")


def test_cancel_stops_the_run():
    with pytest.raises(Cancelled):
        class_statistics(RGB, POLYGONS, "name", progress=CancelAfter(0))


def test_csv_output(tmp_path):
    out = tmp_path / "stats.csv"
    class_statistics(RGB, POLYGONS, "name").write_csv(out)
    assert out.read_text().splitlines() == ["class,count", "crop,192", "developed,81", "tree,198", "water,212"]
    assert [p.name for p in tmp_path.iterdir()] == ["stats.csv"]


def test_invalid_polygon_is_repaired(tmp_path):
    """A self-intersecting 'bow-tie' counts the pixels of its two triangles. (Its edges
    avoid pixel centres: on an edge, GDAL's rasterizer and OTB count some centres that
    shapely's contains() excludes.)"""
    from shapely import wkt
    from shapely.validation import make_valid

    x0, y0 = 735645.0, -2794695.0
    bowtie = (
        f"POLYGON (({x0 + 301} {y0 - 311}, {x0 + 903} {y0 - 887}, {x0 + 899} {y0 - 302}, "
        f"{x0 + 297} {y0 - 906}, {x0 + 301} {y0 - 311}))"
    )
    path = copy_vector(POLYGONS, tmp_path / "bowtie.gpkg", where="name = 'water'")
    add_feature(path, bowtie, name="crop")
    stats = class_statistics(RGB, path, "name")
    expected = reference_counts(RGB, [make_valid(wkt.loads(bowtie))])[0]
    assert expected > 100
    assert stats.by_class() == {"crop": expected, "water": OTB_COUNTS["water"]}
