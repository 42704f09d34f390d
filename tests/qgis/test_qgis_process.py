"""qgis_process, as a user runs it, against isolated QGIS profiles."""

import json
import sys
import zipfile

import pytest
from models import fcn, patch_classifier, saved

from common import OTB_COUNTS, POLYGONS, RGB, ROOT, needs_tensorflow
from helpers import qgis_process_binary, run_qgis_process

sys.path.insert(0, str(ROOT / "scripts"))
import plugin_files


@pytest.fixture(scope="module")
def installed_profile(tmp_path_factory):
    config_root = tmp_path_factory.mktemp("qgis-config")
    plugin_files.install(config_root)
    return config_root


def test_list_shows_the_provider(installed_profile):
    out = run_qgis_process(installed_profile, "list")
    assert out.returncode == 0, out.stderr
    assert "OTBTF" in out.stdout
    for algorithm in (
        "otbtf:polygonclassstatistics",
        "otbtf:sampleselection",
        "otbtf:patchesselection",
        "otbtf:patchesextraction",
        "otbtf:tensorflowmodeltrain",
        "otbtf:tensorflowmodelserve",
        "otbtf:trainclassifierfromdeepfeatures",
        "otbtf:imageclassifierfromdeepfeatures",
        "otbtf:sampleextractionfromdeepfeatures",
        "otbtf:trainvectorclassifier",
        "otbtf:objectdetection",
    ):
        assert algorithm in out.stdout


def test_help_describes_the_algorithm(installed_profile):
    out = run_qgis_process(installed_profile, "help", "otbtf:polygonclassstatistics")
    assert out.returncode == 0, out.stderr
    for text in ("Polygon class statistics", "INPUT", "VECTOR", "FIELD", "MASK", "OUTPUT"):
        assert text in out.stdout


def test_run_gives_the_counts(installed_profile, tmp_path):
    out = run_qgis_process(
        installed_profile,
        "run",
        "otbtf:polygonclassstatistics",
        "--json",
        f"--INPUT={RGB}",
        f"--VECTOR={POLYGONS}",
        "--FIELD=name",
        f"--OUTPUT={tmp_path / 'stats.csv'}",
    )
    assert out.returncode == 0, out.stderr
    results = json.loads(out.stdout)["results"]
    assert results["COUNTS"] == OTB_COUNTS
    assert (tmp_path / "stats.csv").read_text().startswith("class,count\n")


def test_the_zip_installs_in_a_fresh_profile(tmp_path):
    archive = plugin_files.package(tmp_path / "dist")
    config_root = tmp_path / "config"
    plugins = config_root / "profiles" / "default" / "python" / "plugins"
    plugins.mkdir(parents=True)
    with zipfile.ZipFile(archive) as z:
        z.extractall(plugins)
    plugin_files.enable_plugin(config_root / "profiles" / "default")
    out = run_qgis_process(config_root, "list")
    assert out.returncode == 0, out.stderr
    assert "otbtf:polygonclassstatistics" in out.stdout


@needs_tensorflow
def test_run_the_example_model_and_patches_extraction(installed_profile, tmp_path):
    model = ROOT / "resources" / "models" / "sampling_and_patches.model3"
    out = run_qgis_process(
        installed_profile,
        "run",
        str(model),
        "--json",
        f"--image={RGB}",
        f"--ground_truth={POLYGONS}",
        "--class_field=name",
        "--patch_size=8",
        f"--select:samples={tmp_path / 's.gpkg'}",
        f"--extract:patches={tmp_path / 'p.tif'}",
        f"--extract:labels={tmp_path / 'y.tif'}",
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert (tmp_path / "p.tif").is_file() and (tmp_path / "y.tif").is_file()
    out = run_qgis_process(
        installed_profile,
        "run",
        "otbtf:patchesextraction",
        "--json",
        f"--SOURCE1={RGB}",
        "--PATCH_SIZE1=16",
        f"--VECTOR={tmp_path / 's.gpkg'}",
        "--FIELD=name",
        f"--OUTPUT1={tmp_path / 'p16.tif'}",
        f"--OUTPUT_LABELS={tmp_path / 'y16.tif'}",
    )
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["results"]["ACCEPTED"] == 4 * 81
    # Training without OUTPUT_REPORT (optional, as in the toolbox); a value out of range says the range.
    train = (
        "run",
        "otbtf:tensorflowmodeltrain",
        "--json",
        f"--TRAIN_PATCHES1={tmp_path / 'p16.tif'}",
        f"--TRAIN_LABELS={tmp_path / 'y16.tif'}",
        f"--OUTPUT_MODEL={tmp_path / 'model'}",
    )
    out = run_qgis_process(installed_profile, *train, "--EPOCHS=0")
    assert out.returncode != 0
    assert "EPOCHS = 0 is not accepted: give a whole number, at least 1" in out.stdout + out.stderr
    out = run_qgis_process(installed_profile, *train, "--EPOCHS=1")
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    assert (tmp_path / "model" / "otbtf_model.json").is_file()


def test_serve_a_model_from_the_command_line(installed_profile, tmp_path):
    saved(fcn(bands=1, kernels=(5, 1), filters=(4, 1)), tmp_path / "fcn.keras")
    b2 = ROOT / "data" / "landsat8" / "LC08_224077_20200518_B2_30m_crop.tif"
    out = run_qgis_process(
        installed_profile,
        "run",
        "otbtf:tensorflowmodelserve",
        "--json",
        f"--SOURCE1={b2}",
        f"--MODEL={tmp_path / 'fcn.keras'}",
        "--FULLYCONV=true",
        f"--OUTPUT={tmp_path / 'served.tif'}",
    )
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    results = json.loads(out.stdout)["results"]
    assert (results["MODE"], results["EFIELD"] > 0, results["SPCSCALE"]) == ("regions", True, 1)
    from osgeo import gdal

    ds = gdal.Open(str(tmp_path / "served.tif"))
    assert (ds.RasterXSize, ds.RasterYSize) == (396, 396)  # 400 - (5 - 1)


def test_sigterm_stops_a_run_and_leaves_nothing(installed_profile, tmp_path):
    """kill, timeout and batch schedulers send SIGTERM: the run stops as on Ctrl-C and removes
    its temporaries (the partial output appears, then nothing is left but the inputs)."""
    import signal
    import subprocess
    import time

    from helpers import qgis_process_env

    saved(patch_classifier(16, conv=16), tmp_path / "patch.keras")
    out = tmp_path / "out"
    out.mkdir()
    process = subprocess.Popen(
        [
            qgis_process_binary(),
            "run",
            "otbtf:tensorflowmodelserve",
            f"--SOURCE1={RGB}",
            f"--MODEL={tmp_path / 'patch.keras'}",
            "--TILE_SIZE=32",
            f"--OUTPUT={out / 'served.tif'}",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=qgis_process_env(installed_profile),
    )
    deadline = time.monotonic() + 120
    while not any(p.name.startswith(".served.partial-") for p in out.iterdir()):
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "the run never started writing"
        time.sleep(0.05)
    time.sleep(0.5)
    process.send_signal(signal.SIGTERM)
    stdout, stderr = process.communicate(timeout=60)
    assert process.returncode != 0
    assert "terminated (SIGTERM)" in stdout + stderr
    assert list(out.iterdir()) == []


def test_an_output_equal_to_an_input_is_refused_by_qgis_process(installed_profile, tmp_path):
    import shutil

    from snapshot import snapshot

    shutil.copy(POLYGONS, tmp_path / "truth.gpkg")
    before = snapshot(tmp_path / "truth.gpkg")
    out = run_qgis_process(
        installed_profile,
        "run",
        "otbtf:sampleselection",
        f"--INPUT={RGB}",
        f"--VECTOR={tmp_path / 'truth.gpkg'}",
        "--FIELD=name",
        f"--OUTPUT={tmp_path / 'truth.gpkg'}",
    )
    assert out.returncode != 0
    assert "OUTPUT" in out.stdout + out.stderr and "is the same file as the input VECTOR" in out.stdout + out.stderr
    assert snapshot(tmp_path / "truth.gpkg") == before


def test_serve_an_onnx_model_from_the_command_line(installed_profile, tmp_path):
    """onnxruntime inside qgis_process (its libraries beside QGIS' own): a channels-first
    model of any size served fully-convolutionally."""
    onnx_models = pytest.importorskip("onnx_models")
    model = onnx_models.save(onnx_models.conv_model(bands=1, kernel=5), tmp_path / "conv.onnx")
    b2 = ROOT / "data" / "landsat8" / "LC08_224077_20200518_B2_30m_crop.tif"
    out = run_qgis_process(
        installed_profile,
        "run",
        "otbtf:tensorflowmodelserve",
        "--json",
        f"--SOURCE1={b2}",
        f"--MODEL={model}",
        "--FULLYCONV=true",
        f"--OUTPUT={tmp_path / 'served.tif'}",
    )
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    assert json.loads(out.stdout)["results"]["MODE"] == "regions"
    from osgeo import gdal

    ds = gdal.Open(str(tmp_path / "served.tif"))
    assert (ds.RasterXSize, ds.RasterYSize, ds.RasterCount) == (396, 396, 2)


@pytest.mark.parametrize("length", [244, 250, 255, 300])
def test_a_name_too_long_for_the_file_system_is_one_line(installed_profile, tmp_path, length):
    """Names at or over NAME_MAX (or too long for the temporary beside them) used to abort
    qgis_process (rc 134, an OSError in checkParameterValues) or fail after the work."""
    output = tmp_path / ("s" * (length - 4) + ".csv")
    out = run_qgis_process(
        installed_profile,
        "run",
        "otbtf:polygonclassstatistics",
        f"--INPUT={RGB}",
        f"--VECTOR={POLYGONS}",
        "--FIELD=name",
        f"--OUTPUT={output}",
    )
    assert out.returncode == 1, (out.returncode, out.stderr)
    assert f"is {length} characters long" in out.stderr + out.stdout
    assert "Traceback" not in out.stderr + out.stdout
    assert sorted(tmp_path.iterdir()) == []


def test_object_detection_writes_one_polygon_per_object(installed_profile, tmp_path):
    """A detector whose objects are known (onnx_models.grid_detector: 8 px cells scored by band 1)
    over a raster with two bright squares, one across a seam of the 64 px tiles: two polygons,
    the squares' rectangles in the raster's CRS."""
    import numpy as np
    import rasterio
    from onnx_models import grid_detector, save
    from osgeo import ogr

    pixels = np.zeros((3, 104, 120), np.uint8)  # every tile start a multiple of 8: cells aligned
    pixels[0, 16:24, 56:64] = 255
    pixels[0, 80:88, 8:16] = 255
    profile = {"driver": "GTiff", "width": 120, "height": 104, "count": 3, "dtype": "uint8", "crs": "EPSG:32631"}
    with rasterio.open(
        tmp_path / "scene.tif", "w", transform=rasterio.Affine(0.5, 0, 500000, 0, -0.5, 4e6), **profile
    ) as dst:
        dst.write(pixels)
    meta = {"model_type": "Detector", "det_type": "YOLO_Ultralytics", "class_names": {"0": "car"}, "tiles_overlap": 25}
    save(grid_detector(), tmp_path / "det.onnx", meta)
    out = run_qgis_process(
        installed_profile,
        "run",
        "otbtf:objectdetection",
        "--json",
        f"--SOURCE1={tmp_path / 'scene.tif'}",
        f"--MODEL={tmp_path / 'det.onnx'}",
        f"--OUTPUT={tmp_path / 'cars.gpkg'}",
    )
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    assert json.loads(out.stdout)["results"]["OBJECTS"] == 2
    source = ogr.Open(str(tmp_path / "cars.gpkg"))
    envelopes = sorted(tuple(f.GetGeometryRef().GetEnvelope()) for f in source.GetLayer(0))
    assert envelopes == [(500004.0, 500008.0, 3999956.0, 3999960.0), (500028.0, 500032.0, 3999988.0, 3999992.0)]
