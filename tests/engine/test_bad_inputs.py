"""The catalogue of bad inputs: each gives an error in plain words, naming what was
wrong and what would work, and leaves no output behind."""

import os
import re
import shutil
import subprocess
import sys

import models
import numpy as np
import pytest
import rasterio
from osgeo import gdal, ogr, osr

from common import POINTS, POLYGONS, RGB, ROOT, write_points
from otbtf_plugin import classifiers
from otbtf_plugin.class_statistics import class_statistics
from otbtf_plugin.classifier_training import train_from_features
from otbtf_plugin.errors import InputError
from otbtf_plugin.extraction import PatchSource, extract_patches
from otbtf_plugin.features import FeatureSource, FeatureSpec
from otbtf_plugin.image_classification import classify_image
from otbtf_plugin.patches_image import PatchesImage
from otbtf_plugin.raster import open_raster
from otbtf_plugin.selection import sample_selection
from otbtf_plugin.serving import ServeOptions, ServeSource, serve

gdal.UseExceptions()
DATA = ROOT / "data"
B2_30 = DATA / "landsat8" / "LC08_224077_20200518_B2_30m_crop.tif"


def vector(path, srs_wkt, features):
    ds = ogr.GetDriverByName("GPKG").CreateDataSource(str(path))
    srs = None
    if srs_wkt:
        srs = osr.SpatialReference()
        srs.SetFromUserInput(srs_wkt)  # WKT or EPSG:n
    layer = ds.CreateLayer("v", srs, ogr.wkbUnknown)
    layer.CreateField(ogr.FieldDefn("name", ogr.OFTString))
    for wkt, name in features:
        feature = ogr.Feature(layer.GetLayerDefn())
        feature.SetGeometry(ogr.CreateGeometryFromWkt(wkt))
        if name is not None:
            feature.SetField("name", name)
        layer.CreateFeature(feature)
    ds = None
    return path


def truncated(tmp):
    path = tmp / "truncated.tif"
    shutil.copy(RGB, path)
    os.truncate(path, 1_500_000)
    return path


def no_georeferencing(tmp):
    """The sample's pixels with no geotransform and no CRS (a scan, a screenshot)."""
    tmp.mkdir(exist_ok=True)
    with rasterio.open(RGB) as src:
        data = src.read(window=((0, 64), (0, 64)))
    with rasterio.open(tmp / "plain.tif", "w", driver="GTiff", width=64, height=64, count=3, dtype=data.dtype) as dst:
        dst.write(data)
    return tmp / "plain.tif"


def vrt_without_source(tmp):
    """A VRT over a copy of the sample, whose copy was then moved away."""
    tmp.mkdir(exist_ok=True)
    shutil.copy(RGB, tmp / "copy.tif")
    gdal.BuildVRT(str(tmp / "moved.vrt"), [str(tmp / "copy.tif")]).FlushCache()
    (tmp / "copy.tif").rename(tmp / "elsewhere.tif")
    return tmp / "moved.vrt"


def patch_model(tmp):
    """A 16 px patch classifier with input ``x`` and output ``prob`` (.keras)."""
    return models.saved(models.patch_classifier(16, as_dict=True), tmp / "model.keras")


def rgb_classifier(tmp):
    """A decision tree trained on the raw bands of the RGB crop."""
    pytest.importorskip("sklearn")
    path = tmp / "tree.skops"
    train_vector = sample_selection(RGB, POLYGONS, "name", strategy="constant", value=10)
    with open_raster(RGB) as ds:
        values = np.stack([ds.read(b)[train_vector.rows, train_vector.cols] for b in (1, 2, 3)], axis=1)
    recipe = {
        "model": None,
        "output_names": [],
        "sources": [{"bands": 3, "rfield": 1, "dtype": "uint16"}],
        "features": ["source1_band1", "source1_band2", "source1_band3"],
    }
    trained = classifiers.train(
        values,
        train_vector.codes,
        np.arange(len(values)),
        train_vector.class_names,
        recipe,
        classifier="dt",
        validation=0,
    )
    return classifiers.save(trained, path)


def complex_raster(tmp):
    """The RGB crop as SAR-like complex pixels (CInt16)."""
    path = tmp / "complex.tif"
    gdal.Translate(str(path), str(RGB), outputType=gdal.GDT_CInt16)
    return path


def complex_patches(tmp):
    path = tmp / "complex_patches.tif"
    gdal.Translate(str(path), str(DATA / "otbtf" / "amsterdam_patches_A_24.tif"), outputType=gdal.GDT_CFloat32)
    return path


def all_nodata(tmp):
    """The RGB crop with every pixel at its nodata value."""
    path = tmp / "nodata.tif"
    with rasterio.open(RGB) as src:
        profile = src.profile | {"nodata": 0}
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(np.zeros((3, profile["height"], profile["width"]), dtype=profile["dtype"]))
    return path


def without_crs(tmp):
    """The RGB crop moved to pixel coordinates, with no CRS (a scan, a photo)."""
    path = tmp / "nocrs.tif"
    with rasterio.open(RGB) as src:
        data, profile = src.read(), src.profile
    profile.update(crs=None, transform=rasterio.Affine(1, 0, 0, 0, -1, 0))
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
    return path


COMPLEX = (
    r"complex.tif has complex pixels \(CInt16\), which otbtf does not read: make a raster of their "
    r"magnitude first, e.g. gdal_calc.py -A complex.tif --calc=\"abs\(A\)\""
)

CASES = {
    "an output named .png": (
        lambda t: serve([ServeSource(RGB)], patch_model(t), t / "map.png"),
        r"^OUTPUT '.*map.png' ends in '.png', but it is written as GeoTIFF: give a name ending in .tif or .tiff "
        r"\(convert it afterwards with gdal_translate if you need another format\)$",
    ),
    "an output with no extension": (
        lambda t: extract_patches([PatchSource(RGB, 16)], POINTS, [t / "patches"]),
        r"^OUTPUT1 '.*patches' has no extension, but it is written as GeoTIFF",
    ),
    "complex pixels, class statistics": (lambda t: class_statistics(complex_raster(t), POLYGONS, "name"), COMPLEX),
    "complex pixels, extraction": (
        lambda t: extract_patches([PatchSource(complex_raster(t), 16)], POINTS, [t / "p.tif"]),
        COMPLEX,
    ),
    "complex pixels, serving": (
        lambda t: serve([ServeSource(complex_raster(t))], patch_model(t), t / "out.tif"),
        COMPLEX,
    ),
    "complex pixels, features": (
        lambda t: classify_image(FeatureSpec([FeatureSource(complex_raster(t))]), rgb_classifier(t), t / "out.tif"),
        COMPLEX,
    ),
    "complex pixels, patches image": (
        lambda t: PatchesImage(complex_patches(t)),
        r"complex_patches.tif has complex pixels \(CFloat32\)",
    ),
    "statistics on a raster that is all nodata": (
        lambda t: class_statistics(all_nodata(t), POLYGONS, "name"),
        r"^no class has a valid pixel inside the raster: 4 feature\(s\) lie inside the raster, but every pixel "
        r"they cover holds the nodata value; check NODATA and the mask$",
    ),
    "statistics on a raster without CRS and a vector with one": (
        lambda t: class_statistics(without_crs(t), POLYGONS, "name"),
        r"^no class has a valid pixel inside the raster: none of the 4 features lies inside the raster "
        r"\(x 0 .. 800, y -1140 .. 0\); the raster has no CRS while the vector is in WGS 84 / UTM zone 21N, so "
        r"their coordinates cannot be matched: give the raster its CRS \(gdal_edit.py -a_srs EPSG:n FILE",
    ),
    "sources that do not overlap": (
        lambda t: extract_patches([PatchSource(B2_30, 16), PatchSource(RGB, 16)], POINTS, [t / "a.tif", t / "b.tif"]),
        r"the sources do not overlap \(source 1 covers .* source 2 covers",
    ),
    "a CRS that cannot be transformed": (
        lambda t: class_statistics(
            RGB, vector(t / "local.gpkg", 'LOCAL_CS["site grid",UNIT["metre",1]]', [("POINT (10 10)", "water")]), "name"
        ),
        r"^cannot transform the vector's CRS \(site grid\) to the raster's \(WGS 84 / UTM zone 21N\): "
        r"Cannot find coordinate operations; reproject the vector to the raster's CRS first$",
    ),
    "an empty vector": (
        lambda t: class_statistics(RGB, vector(t / "empty.gpkg", "EPSG:32621", []), "name"),
        r"has no feature with a geometry",
    ),
    "no feature inside the raster": (
        lambda t: sample_selection(RGB, vector(t / "far.gpkg", "EPSG:32621", [("POINT (100 -100)", "water")]), "name"),
        r"no class has a valid pixel inside the raster",
    ),
    "a missing class field": (
        lambda t: class_statistics(RGB, POLYGONS, "label"),
        r"no field 'label'; its fields: name",
    ),
    "classes that are all NULL": (
        lambda t: class_statistics(
            RGB, vector(t / "null.gpkg", "EPSG:32621", [("POINT (740000 -2800000)", None)]), "name"
        ),
        r"no feature with a geometry and a class in field 'name' \(1 NULL class\)",
    ),
    "a patch size larger than the raster": (
        lambda t: extract_patches([PatchSource(B2_30, 500)], POINTS, [t / "p.tif"]),
        r"patch size 500 x 500 px is larger than the raster \(400 x 400 px\); use at most 400",
    ),
    "polygons where points are needed": (
        lambda t: extract_patches([PatchSource(RGB, 16)], POLYGONS, [t / "p.tif"]),
        r"must hold points, not Polygon; make points from polygons with otbtf:sampleselection",
    ),
    "a corrupt or truncated GeoTIFF": (
        lambda t: class_statistics(truncated(t), POLYGONS, "name", nodata=0),
        r"cannot read the pixels of .*truncated.tif: the file is truncated or corrupt .* re-create",
    ),
    "a raster that is not a raster": (
        lambda t: class_statistics(POLYGONS, POLYGONS, "name"),
        r"cannot open raster .*polygons.gpkg",
    ),
    "a receptive field that disagrees with the model": (
        lambda t: serve([ServeSource(RGB, rfield=12)], patch_model(t), t / "out.tif"),
        r"RFIELD1=12 but model input x takes 16 x 16 px: use RFIELD1=16 \(or 0, from the model\)",
    ),
    "an output name the model does not have": (
        lambda t: serve([ServeSource(RGB)], patch_model(t), t / "out.tif", ServeOptions(output_names=["logits"])),
        r"the model has no output 'logits'; its outputs: prob",
    ),
    "an output named twice": (
        lambda t: serve([ServeSource(RGB)], patch_model(t), t / "out.tif", ServeOptions(output_names=["prob", "prob"])),
        r"OUTPUT_NAMES names 'prob' more than once: give each output once",
    ),
    "a raster with no georeferencing": (
        lambda t: serve([ServeSource(no_georeferencing(t))], patch_model(t), t / "out.tif"),
        r"^plain.tif has no georeferencing \(no geotransform, no CRS\): georeference it first",
    ),
    "a VRT whose source is missing": (
        lambda t: serve([ServeSource(vrt_without_source(t))], patch_model(t), t / "out.tif"),
        r"cannot read the pixels of .*moved.vrt: a file it refers to is missing or unreadable",
    ),
    "a placeholder the model does not have": (
        lambda t: serve([ServeSource(RGB, placeholder="image")], patch_model(t), t / "out.tif"),
        r"the model has no input 'image'; its inputs: x \[\?, 16, 16, 3\]",
    ),
    "a path that is not a model": (
        lambda t: serve([ServeSource(RGB)], t.mkdir(exist_ok=True) or (t / "m").mkdir() or t / "m", t / "out.tif"),
        r"is not a model: give an ONNX file \(.onnx\), a TensorFlow SavedModel folder",
    ),
    "a classifier applied to other sources": (
        lambda t: classify_image(FeatureSpec([FeatureSource(B2_30)]), rgb_classifier(t), t / "out.tif"),
        r"does not match these inputs: source 1 had 3 band\(s\) at training; the one given has 1",
    ),
    "a file that is not a classifier": (
        lambda t: classify_image(FeatureSpec([FeatureSource(RGB)]), POLYGONS, t / "out.tif"),
        r"polygons.gpkg is not a classifier file",
    ),
    "a strategy value in percent": (
        lambda t: sample_selection(RGB, POLYGONS, "name", strategy="percent", value=30),
        r"for 30 %, use 0.3",
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_is_explained_and_leaves_nothing(case, tmp_path):
    run, message = CASES[case]
    inputs = {p.name for p in tmp_path.iterdir()}
    with pytest.raises(InputError, match=message):
        run(tmp_path)
    # the cases' own inputs: files of those kinds, and folders (a model folder) not named as temporaries
    created = {p.name for p in tmp_path.iterdir() if not p.is_dir() or "partial" in p.name} - inputs
    leftovers = {
        name
        for name in created
        if not name.endswith((".gpkg", ".tif", ".keras", ".skops", ".vrt"))
        or "partial" in name
        or name in ("a.tif", "b.tif", "p.tif", "out.tif")
    }
    assert not leftovers, leftovers


def test_nan_as_nodata_is_not_counted(tmp_path):
    path = tmp_path / "float.tif"
    with rasterio.open(RGB) as src:
        data = src.read().astype("float32")
        profile = src.profile | {"dtype": "float32", "nodata": float("nan")}
    data[1, :, :400] = np.nan  # the left half, in one band
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
    full = class_statistics(RGB, POLYGONS, "name").feature_counts
    assert sum(full.values()) == 683
    # The polygons lie in columns ~63..251 (left half): all their pixels are now NaN.
    with pytest.raises(InputError, match="every pixel they cover holds the nodata value"):
        class_statistics(path, POLYGONS, "name")


def test_paths_with_spaces_and_non_ascii_characters(tmp_path):
    folder = tmp_path / "données été 2020"
    folder.mkdir()
    raster, polygons = folder / "scène Landsat.tif", folder / "vérité terrain.gpkg"
    shutil.copy(RGB, raster)
    shutil.copy(POLYGONS, polygons)
    out = folder / "statistiques de classes.csv"
    class_statistics(raster, polygons, "name").write_csv(out)
    assert out.read_text().splitlines()[1] == "crop,192"
    samples = sample_selection(raster, polygons, "name").write_gpkg(folder / "échantillons.gpkg")
    result = extract_patches(
        [PatchSource(raster, 16)],
        samples,
        [folder / "imagettes été.tif"],
        "name",
        labels_output=folder / "étiquettes.tif",
    )
    assert result.accepted == 4 * 81


def test_read_only_output_folder(tmp_path, monkeypatch):
    """As root, a folder cannot be made read-only with chmod: the check itself is exercised."""
    real_access = os.access
    monkeypatch.setattr(
        os, "access", lambda path, mode: False if str(path) == str(tmp_path) else real_access(path, mode)
    )
    with pytest.raises(InputError, match=r"output folder .* is not writable; choose another folder"):
        class_statistics(RGB, POLYGONS, "name").write_csv(tmp_path / "stats.csv")
    assert list(tmp_path.iterdir()) == []


DISK_FULL = """
import resource, signal, sys
sys.path.insert(0, {root!r})
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes fail with EFBIG instead of killing the process
resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, 200_000))
from otbtf_plugin import classifiers
from otbtf_plugin.image_classification import classify_image
from otbtf_plugin.errors import InputError
from otbtf_plugin.extraction import PatchSource, extract_patches
from otbtf_plugin.features import FeatureSource, FeatureSpec
from otbtf_plugin.patches_image import PatchesImage
from otbtf_plugin.raster import open_raster
from otbtf_plugin.selection import sample_selection
points = sample_selection({rgb!r}, {polygons!r}, "name", strategy="all").write_gpkg({out!r} + "/points.gpkg")
try:
    extract_patches([PatchSource({rgb!r}, 32)], points, [{out!r} + "/patches.tif"])
except InputError as err:
    print("INPUT_ERROR", err)
"""


def test_a_disk_that_fills_up_while_writing(tmp_path):
    """A 200 kB file-size limit stands for a full disk: 683 patches of 32 x 32 x 3 uint16
    need 4 MB. The run fails with a clear message and leaves only its input behind."""
    code = DISK_FULL.format(root=str(ROOT), rgb=str(RGB), polygons=str(POLYGONS), out=str(tmp_path))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert "INPUT_ERROR no room for the 4.0 MiB of temporary patches" in out.stdout, out.stdout + out.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["points.gpkg"]


SERVE_DISK_FULL = """
import resource, signal, sys
sys.path.insert(0, {root!r})
from otbtf_plugin.models.runtimes import import_tensorflow
import_tensorflow()
import keras
inp = keras.Input((None, None, 3), name="x")
keras.Model(inp, keras.layers.Conv2D(8, 3, name="y")(inp)).save({out!r} + "/model.keras")
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20))
from otbtf_plugin import classifiers
from otbtf_plugin.image_classification import classify_image
from otbtf_plugin.errors import InputError
from otbtf_plugin.serving import ServeOptions, ServeSource, serve
try:
    serve([ServeSource({rgb!r})], {out!r} + "/model.keras", {out!r} + "/served.tif",
          ServeOptions(fully_conv=True, compress="none"))
except InputError as err:
    print("INPUT_ERROR", err)
"""


def test_a_disk_that_fills_up_while_serving(tmp_path):
    """Serving writes ~29 MB; with 1 MB allowed, the GeoTIFF write fails: clear message, no
    partial file at the target or beside it."""
    pytest.importorskip("keras")
    code = SERVE_DISK_FULL.format(root=str(ROOT), rgb=str(RGB), out=str(tmp_path))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert "INPUT_ERROR could not write" in out.stdout and "Is the disk full" in out.stdout, out.stdout + out.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.keras"]


POINTS_DISK_FULL = """
import hashlib, resource, signal, sys
sys.path.insert(0, {root!r})
from otbtf_plugin.errors import InputError
from otbtf_plugin.selection import sample_selection
samples = sample_selection({rgb!r}, {polygons!r}, "name", strategy="all")
few = sample_selection({rgb!r}, {polygons!r}, "name", strategy="constant", value=2)
few.write_gpkg({out!r} + "/points.gpkg")
before = hashlib.sha256(open({out!r} + "/points.gpkg", "rb").read()).hexdigest()
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (150_000, 150_000))
for name in ("points.gpkg", "new.gpkg"):
    try:
        samples.write_gpkg({out!r} + "/" + name)
    except InputError as err:
        print("INPUT_ERROR", err)
print("KEPT", hashlib.sha256(open({out!r} + "/points.gpkg", "rb").read()).hexdigest() == before, len(samples.x))
"""


def test_points_on_a_disk_that_fills_up(tmp_path):
    """Sample selection's GeoPackage used to be left with no layer (and the run said nothing).
    Now the layer is read back before the file is renamed into place: the previous file stays
    whole, a new one is not created, and the message says which."""
    code = POINTS_DISK_FULL.format(root=str(ROOT), rgb=str(RGB), polygons=str(POLYGONS), out=str(tmp_path))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    lines = [line for line in out.stdout.splitlines() if line.startswith(("INPUT_ERROR", "KEPT"))]
    assert len(lines) == 3, out.stdout + out.stderr
    assert re.match(
        r"INPUT_ERROR could not write .*points.gpkg \(.*\)\. Is the disk full or the folder read-only\? "
        r"The previous points.gpkg is as it was\.$",
        lines[0],
    ), lines[0]
    assert re.match(r"INPUT_ERROR could not write .*new.gpkg .*Nothing was written at .*new.gpkg\.$", lines[1])
    assert lines[2].startswith("KEPT True")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["points.gpkg"]


@pytest.mark.parametrize("code", [3_000_000_000, -(2**31) - 1, 2**40])
def test_class_codes_that_a_class_map_cannot_hold_are_refused_where_they_are_read(tmp_path, code):
    """3e9 used to wrap to -1294967296 in a class map; the classes are read by one function
    (selection, extraction, classical classifiers), which refuses them in one line."""
    with rasterio.open(RGB) as src:
        left, top, wkt = src.bounds.left, src.bounds.top, src.crs.to_wkt()
    xy = [(left + 1000 + 600 * k, top - 1000 - 600 * k) for k in range(4)]
    path = str(write_points(tmp_path / "points.gpkg", xy, [code, 1, 1, code], wkt=wkt, kind="Integer64"))
    message = (
        rf"^the class field 'cls' holds the code {code}, which a class map cannot hold \(32-bit: "
        r"-2147483648 .. 2147483647\): recode the classes with smaller numbers$"
    )
    with pytest.raises(InputError, match=message):
        extract_patches([PatchSource(RGB, 16)], path, [tmp_path / "x.tif"], "cls", labels_output=tmp_path / "y.tif")
    with pytest.raises(InputError, match=message):
        train_from_features(FeatureSpec([FeatureSource(RGB)]), path, "cls", tmp_path / "c.skops")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["points.gpkg"]
