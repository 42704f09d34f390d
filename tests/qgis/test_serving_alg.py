"""otbtf:tensorflowmodelserve through processing.run, TensorFlow inside the QGIS process."""

import importlib

import numpy as np
import processing
import pytest
import rasterio
from models import patch_classifier, saved
from qgis.core import QgsApplication, QgsProcessingContext, QgsProcessingException, QgsRasterLayer

from common import DATA, RGB

keras = pytest.importorskip("keras")
pytestmark = pytest.mark.usefixtures("provider_loaded")

B2_30 = DATA / "landsat8" / "LC08_224077_20200518_B2_30m_crop.tif"


@pytest.fixture(scope="module")
def patch_model(tmp_path_factory):
    model = patch_classifier(16, bands=1, name="x1")
    return model, saved(model, tmp_path_factory.mktemp("model") / "patch16.keras")


def test_serve_a_keras_patch_classifier(tmp_path, patch_model):
    model, path = patch_model
    result = processing.run(
        "otbtf:tensorflowmodelserve",
        {
            "SOURCE1": str(B2_30),
            "MODEL": str(path),
            "OUTPUT": str(tmp_path / "served.tif"),
        },
    )
    assert (result["MODE"], result["RFIELD"], result["EFIELD"], result["SPCSCALE"]) == ("pixels", 16, 1, 1)
    layer = QgsRasterLayer(result["OUTPUT"], "served")
    assert (layer.width(), layer.height(), layer.bandCount()) == (385, 385, 2)
    assert layer.crs().authid() == "EPSG:32621"
    with rasterio.open(result["OUTPUT"]) as out, rasterio.open(B2_30) as src:
        served = out.read()
        band = src.read(1).astype("float32")
    # Output pixel (r, c) is the patch of source pixel (r + 8, c + 8): rows r .. r + 15.
    for r, c in ((0, 0), (100, 250), (384, 384)):
        expected = model.predict(band[r : r + 16, c : c + 16][None, ..., None], verbose=0)[0]
        assert np.abs(served[:, r, c] - expected).max() <= 1e-5


def test_wrong_receptive_field_is_explained(tmp_path, patch_model):
    _, path = patch_model
    with pytest.raises(QgsProcessingException, match="use RFIELD1=16"):
        processing.run(
            "otbtf:tensorflowmodelserve",
            {
                "SOURCE1": str(B2_30),
                "RFIELD1": 12,
                "MODEL": str(path),
                "OUTPUT": str(tmp_path / "o.tif"),
            },
        )
    assert list(tmp_path.iterdir()) == []


def test_dialog_check_catches_a_path_that_is_not_a_model(tmp_path):
    algorithm = QgsApplication.processingRegistry().createAlgorithmById("otbtf:tensorflowmodelserve")
    (tmp_path / "empty").mkdir()
    ok, message = algorithm.checkParameterValues(
        {"SOURCE1": str(B2_30), "MODEL": str(tmp_path / "empty"), "OUTPUT": str(tmp_path / "o.tif")},
        QgsProcessingContext(),
    )
    assert not ok and "is not a model" in message


def test_missing_tensorflow_is_one_line_with_the_fix(tmp_path, patch_model, monkeypatch):
    _, path = patch_model
    packages = importlib.import_module("otbtf_plugin.packages")
    lacking = "tensorflow-cpu >= 2.16, < 3 (not installed)"
    monkeypatch.setattr(packages, "missing", lambda feature: [lacking] if feature == "tensorflow" else [])
    missing = f"TensorFlow models and training need {lacking}"
    algorithm = QgsApplication.processingRegistry().createAlgorithmById("otbtf:tensorflowmodelserve")
    parameters = {"SOURCE1": str(B2_30), "MODEL": str(path), "OUTPUT": str(tmp_path / "o.tif")}
    ok, message = algorithm.checkParameterValues(parameters, QgsProcessingContext())
    assert not ok and message.startswith(missing)
    assert "\n" not in message and "Install dependencies" in message and "make setup" in message
    with pytest.raises(QgsProcessingException, match="TensorFlow models and training need tensorflow-cpu"):
        processing.run("otbtf:tensorflowmodelserve", parameters)
    assert list(tmp_path.iterdir()) == []


def test_train_then_serve_from_processing(tmp_path):
    """The toolbox chain: sample selection, patches extraction, training, serving the class map."""
    from common import POLYGONS, RGB

    samples = processing.run(
        "otbtf:sampleselection",
        {"INPUT": str(RGB), "VECTOR": str(POLYGONS), "FIELD": "name", "OUTPUT": str(tmp_path / "s.gpkg")},
    )["OUTPUT"]
    patches = processing.run(
        "otbtf:patchesextraction",
        {
            "SOURCE1": str(RGB),
            "PATCH_SIZE1": 16,
            "VECTOR": samples,
            "FIELD": "name",
            "OUTPUT1": str(tmp_path / "p.tif"),
            "OUTPUT_LABELS": str(tmp_path / "y.tif"),
        },
    )
    trained = processing.run(
        "otbtf:tensorflowmodeltrain",
        {
            "TRAIN_PATCHES1": patches["OUTPUT1"],
            "TRAIN_LABELS": patches["OUTPUT_LABELS"],
            "EPOCHS": 2,
            "BATCH_SIZE": 16,
            "OUTPUT_MODEL": str(tmp_path / "model"),
            "OUTPUT_REPORT": str(tmp_path / "report.html"),
            "OUTPUT_ONNX": str(tmp_path / "model.onnx"),
        },
    )
    assert 0.0 <= trained["OVERALL_ACCURACY"] <= 1.0
    assert set(trained["CLASSES"]) == {"crop", "developed", "tree", "water"}
    assert (tmp_path / "report.html").is_file() and (tmp_path / "report.json").is_file()
    served = processing.run(
        "otbtf:tensorflowmodelserve",
        {
            "SOURCE1": str(RGB),
            "MODEL": trained["OUTPUT_MODEL"],
            "OUTPUT_NAMES": "class",
            "OUTPUT": str(tmp_path / "classes.tif"),
        },
    )
    layer = QgsRasterLayer(served["OUTPUT"], "classes")
    assert (layer.width(), layer.height(), layer.bandCount()) == (785, 1125, 1)
    # the same model as ONNX (OUTPUT_ONNX), served with nothing typed: the same class map
    assert trained["OUTPUT_ONNX"] == str(tmp_path / "model.onnx")
    from_onnx = processing.run(
        "otbtf:tensorflowmodelserve",
        {"SOURCE1": str(RGB), "MODEL": trained["OUTPUT_ONNX"], "OUTPUT": str(tmp_path / "onnx_classes.tif")},
    )
    with rasterio.open(served["OUTPUT"]) as a, rasterio.open(from_onnx["OUTPUT"]) as b:
        assert np.array_equal(a.read(), b.read())


def test_serving_on_a_dask_cluster_from_processing(tmp_path, patch_model, plugin_path, monkeypatch):
    """SCHEDULER from the toolbox: workers import the engine by its one name (otbtf_plugin,
    from the plugin's folder on their PYTHONPATH); the result is the local one."""
    distributed = pytest.importorskip("distributed")
    _, path = patch_model
    monkeypatch.setenv("PYTHONPATH", str(plugin_path / "otbtf"))
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        parameters = {"SOURCE1": str(B2_30), "MODEL": str(path), "TILE_SIZE": 96}
        cluster_run = processing.run(
            "otbtf:tensorflowmodelserve",
            {**parameters, "SCHEDULER": cluster.scheduler_address, "OUTPUT": str(tmp_path / "cluster.tif")},
        )
    local_run = processing.run("otbtf:tensorflowmodelserve", {**parameters, "OUTPUT": str(tmp_path / "local.tif")})
    assert cluster_run["TILES"] == local_run["TILES"] == 25
    with rasterio.open(cluster_run["OUTPUT"]) as a, rasterio.open(local_run["OUTPUT"]) as b:
        assert np.array_equal(a.read(), b.read())


def test_tta_through_processing(tmp_path, patch_model):
    """TTA=true: each output pixel is the mean of the model over its patch's 8 flips and
    rotations (checked at three pixels against the model run by hand)."""
    model, path = patch_model
    result = processing.run(
        "otbtf:tensorflowmodelserve",
        {
            "SOURCE1": str(B2_30),
            "MODEL": str(path),
            "TTA": True,
            "OUTPUT": str(tmp_path / "tta.tif"),
        },
    )
    with rasterio.open(result["OUTPUT"]) as out, rasterio.open(B2_30) as src:
        served = out.read()
        band = src.read(1).astype("float32")
    for r, c in ((0, 0), (100, 250), (384, 384)):
        patch = band[r : r + 16, c : c + 16]
        turned = [np.rot90(patch, k) for k in range(4)]
        turned += [t[:, ::-1] for t in turned]
        expected = model.predict(np.stack(turned)[..., None], verbose=0).mean(axis=0)
        assert np.abs(served[:, r, c] - expected).max() <= 1e-5


def _rgb8(path):
    """The Landsat 8 RGB sample stretched to 8 bits: what Deepness models take."""
    with rasterio.open(RGB) as src:
        data = src.read(window=((300, 430), (200, 350))).astype("float32")
        profile = {
            "driver": "GTiff",
            "width": 150,
            "height": 130,
            "count": 3,
            "dtype": "uint8",
            "crs": src.crs,
            "transform": src.window_transform(((300, 430), (200, 350))),
        }
    lo, hi = data.min(axis=(1, 2), keepdims=True), data.max(axis=(1, 2), keepdims=True)
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(np.round((data - lo) / (hi - lo) * 255).astype("uint8"))
    return path


def test_serve_a_deepness_onnx_model_with_nothing_typed(tmp_path):
    """An ONNX segmentor with Deepness metadata: SOURCE1 and MODEL only give its class map,
    styled with its class names, on 32 px tiles keeping their central 24 px (blocks)."""
    onnx_models = pytest.importorskip("onnx_models")
    image = _rgb8(tmp_path / "rgb8.tif")
    model = onnx_models.save(
        onnx_models.conv_model(out=4, pad=True, softmax=True, size=32), tmp_path / "seg.onnx", onnx_models.DEEPNESS
    )
    result = processing.run(
        "otbtf:tensorflowmodelserve",
        {"SOURCE1": str(image), "MODEL": str(model), "OUTPUT": str(tmp_path / "classes.tif")},
    )
    assert (result["MODE"], result["RFIELD"], result["EFIELD"]) == ("blocks", 32, 24)
    layer = QgsRasterLayer(result["OUTPUT"], "classes")
    assert layer.isValid() and layer.bandCount() == 1
    assert "urban" in (tmp_path / "classes.qml").read_text()
    with rasterio.open(image) as src:
        _, classes = onnx_models.deepness_reference(src.read())
    with rasterio.open(result["OUTPUT"]) as out:
        served = out.read(1)
    assert served.shape == classes.shape and (served == classes).mean() > 0.99


def test_layout_parameter_reaches_the_onnx_model(tmp_path):
    onnx_models = pytest.importorskip("onnx_models")
    image = _rgb8(tmp_path / "rgb8.tif")
    model = onnx_models.save(onnx_models.conv_model(kernel=1, out=2, nhwc=True), tmp_path / "nhwc.onnx")
    runs = {}
    for layout in (0, 2):  # auto (read from the sizes: NHWC here); NCHW forced: the model refuses, in one line
        params = {
            "SOURCE1": str(image),
            "MODEL": str(model),
            "FULLYCONV": True,
            "LAYOUT": layout,
            "OUTPUT": str(tmp_path / f"o{layout}.tif"),
        }
        if layout == 2:
            with pytest.raises(QgsProcessingException, match=r"could not run .*Expected: 3"):
                processing.run("otbtf:tensorflowmodelserve", params)
            continue
        runs[layout] = processing.run("otbtf:tensorflowmodelserve", params)
    with rasterio.open(runs[0]["OUTPUT"]) as out, rasterio.open(image) as src:
        expected = onnx_models.conv_reference(src.read().astype("float32"), kernel=1, out=2)
        assert np.abs(out.read() - expected).max() < 1e-4
