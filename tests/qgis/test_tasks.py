"""Background work in real QGIS: the "Apply a model to a layer" dialog and its
QgsProcessingAlgRunnerTask: progress reaches 100, cancel ends the task and leaves
nothing, two tasks at once give the single-run result."""

import time

import models
import numpy as np
import pytest
import rasterio
from qgis.core import QgsApplication, QgsProject, QgsRasterLayer
from qgis.PyQt.QtCore import QCoreApplication

from common import DATA, RGB

keras = pytest.importorskip("keras")
pytestmark = pytest.mark.usefixtures("provider_loaded")

B2_30 = DATA / "landsat8" / "LC08_224077_20200518_B2_30m_crop.tif"


def plugin_module(name):
    import importlib

    return importlib.import_module(f"otbtf.plugin.{name}")


@pytest.fixture(scope="module")
def fcn(tmp_path_factory):
    """A fully-convolutional model folder with otbtf metadata (receptive field 5)."""
    model = models.fcn(bands=1, kernels=(3, 3), filters=(4, 2), seed=0, name="x1")
    return models.model_folder(
        model,
        tmp_path_factory.mktemp("fcn") / "model",
        {
            "inputs": [{"name": "x1", "rfield": 5}],
            "efield": 1,
            "scale": 1,
            "classes": [{"code": 1, "name": "water"}, {"code": 2, "name": "land"}],
        },
    )


@pytest.fixture(scope="module")
def patch16(tmp_path_factory):
    return models.saved(models.patch_classifier(16, scale=1e-4), tmp_path_factory.mktemp("patch") / "patch16.keras")


def start(task):
    """Add to the task manager; the returned list gets "complete" or "terminated" (the
    manager deletes the task object when it ends)."""
    ended = []
    task.taskCompleted.connect(lambda: ended.append("complete"))
    task.taskTerminated.connect(lambda: ended.append("terminated"))
    QgsApplication.taskManager().addTask(task)
    return ended


def wait_for(ended, timeout=240):
    deadline = time.monotonic() + timeout
    while not ended and time.monotonic() < deadline:
        QCoreApplication.processEvents()
        time.sleep(0.02)
    for _ in range(20):  # let the other signals (executed) arrive
        QCoreApplication.processEvents()
    return ended[0] if ended else "timeout"


def test_the_dialog_reads_the_model_geometry(fcn, tmp_path):
    dialogs = plugin_module("apply_model")
    layer = QgsRasterLayer(str(B2_30), "B2")
    QgsProject.instance().addMapLayer(layer)
    try:
        dialog = dialogs.ApplyModelDialog()
        dialog.model.setFilePath(str(fcn))
        assert dialog.geometry.text() == (
            "Receptive field x1: 5 px; expression field 1 px; scale 1. Classes: water, land."
        )
        dialog.output.setFilePath(str(tmp_path / "out.tif"))
        dialog.fully_conv.setChecked(True)
        assert dialog.parameters() == {
            "SOURCE1": str(B2_30),
            "MODEL": str(fcn),
            "OUTPUT_NAMES": "",
            "FULLYCONV": True,
            "OUTPUT": str(tmp_path / "out.tif"),
        }
        dialog.model.setFilePath(str(tmp_path))
        assert "is not a model" in dialog.geometry.text()
    finally:
        QgsProject.instance().removeMapLayer(layer.id())


def test_task_progress_reaches_100_and_the_result_is_the_engine_s(fcn, tmp_path):
    dialogs = plugin_module("apply_model")
    done, progress = [], []
    task = dialogs.ServeTask(
        {
            "SOURCE1": str(B2_30),
            "MODEL": str(fcn),
            "FULLYCONV": True,
            "TILE_SIZE": 64,
            "OUTPUT": str(tmp_path / "out.tif"),
        },
        lambda ok, results, log: done.append((ok, results)),
    )
    task.progressChanged.connect(progress.append)
    assert wait_for(start(task)) == "complete"
    assert done and done[0][0] and done[0][1]["TILES"] == 7 * 7  # 396 x 396 px in 64 px tiles
    assert progress[-1] == 100 and progress == sorted(progress) and len(progress) > 5
    engine = __import__("otbtf_plugin.serving", fromlist=["serve"])
    reference = engine.serve(
        [engine.ServeSource(B2_30)], fcn, tmp_path / "reference.tif", engine.ServeOptions(fully_conv=True)
    )
    with rasterio.open(tmp_path / "out.tif") as a, rasterio.open(reference.output) as b:
        assert np.array_equal(a.read(), b.read())


def test_cancel_ends_the_task_and_leaves_nothing(patch16, tmp_path):
    dialogs = plugin_module("apply_model")
    task = dialogs.ServeTask(
        {"SOURCE1": str(RGB), "MODEL": str(patch16), "TILE_SIZE": 32, "OUTPUT": str(tmp_path / "out.tif")}
    )
    progress = []
    task.progressChanged.connect(progress.append)
    ended = start(task)
    deadline = time.monotonic() + 120
    while not progress and time.monotonic() < deadline:
        QCoreApplication.processEvents()
        time.sleep(0.01)
    started = time.monotonic()
    task.cancel()
    assert wait_for(ended) == "terminated"
    assert time.monotonic() - started < 5  # honoured within seconds
    assert 0 < progress[-1] < 100
    assert list(tmp_path.iterdir()) == []


def test_two_tasks_at_once(fcn, tmp_path):
    dialogs = plugin_module("apply_model")
    tasks = [
        dialogs.ServeTask(
            {
                "SOURCE1": str(B2_30),
                "MODEL": str(fcn),
                "FULLYCONV": True,
                "TILE_SIZE": 64,
                "OUTPUT": str(tmp_path / f"out{k}.tif"),
            }
        )
        for k in (1, 2)
    ]
    ended = [start(task) for task in tasks]
    assert [wait_for(e) for e in ended] == ["complete", "complete"]
    with rasterio.open(tmp_path / "out1.tif") as a, rasterio.open(tmp_path / "out2.tif") as b:
        assert np.array_equal(a.read(), b.read()) and a.read().std() > 0


def test_the_dialog_shows_what_an_onnx_file_says(tmp_path):
    """An ONNX file with Deepness metadata: the dialog lists its input, layout, tiles and
    classes before anything runs; a SavedModel is picked by its saved_model.pb."""
    onnx_models = pytest.importorskip("onnx_models")
    dialogs = plugin_module("apply_model")
    path = onnx_models.save(
        onnx_models.conv_model(out=4, pad=True, softmax=True, size=32), tmp_path / "seg.onnx", onnx_models.DEEPNESS
    )
    dialog = dialogs.ApplyModelDialog()
    dialog.model.setFilePath(str(path))
    text = dialog.geometry.text()
    for part in ("onnx model, NCHW", "x [?, 32, 32, 3]", "tiles of 32 px overlapping 25 %", "2 urban", "input x / 255"):
        assert part in text, text
    assert dialog.parameters()["MODEL"] == str(path)
    folder = tmp_path / "ours"
    (folder / "savedmodel").mkdir(parents=True)
    (folder / "otbtf_model.json").write_text("{}")
    (folder / "savedmodel" / "saved_model.pb").write_bytes(b"")
    assert dialogs.model_location(str(folder / "savedmodel" / "saved_model.pb")) == str(folder)
    assert dialogs.model_location(str(folder / "otbtf_model.json")) == str(folder)
    truncated = tmp_path / "truncated.onnx"
    truncated.write_bytes(path.read_bytes()[:100])
    dialog.model.setFilePath(str(truncated))
    assert dialog.geometry.text().startswith("truncated.onnx: not a usable ONNX model")


def test_the_dialog_sends_a_detector_to_object_detection(tmp_path):
    """An ONNX detector (Deepness metadata model_type Detector): the dialog says what it finds,
    and the task runs otbtf:objectdetection into a GeoPackage beside the chosen name."""
    onnx_models = pytest.importorskip("onnx_models")
    dialogs = plugin_module("apply_model")
    meta = {"model_type": "Detector", "det_type": "YOLO_Ultralytics", "class_names": {"0": "car"}}
    path = onnx_models.save(onnx_models.grid_detector(), tmp_path / "cars.onnx", meta)
    layer = QgsRasterLayer(str(RGB), "RGB")
    QgsProject.instance().addMapLayer(layer)
    try:
        dialog = dialogs.ApplyModelDialog()
        dialog.model.setFilePath(str(path))
        assert "Deepness detector (YOLO_Ultralytics), 1 classes (car)" in dialog.geometry.text()
        assert "written as polygons" in dialog.geometry.text()
        dialog.output.setFilePath(str(tmp_path / "cars.tif"))
        parameters = dialog.parameters()
        assert parameters == {
            "ALGORITHM": "otbtf:objectdetection",
            "SOURCE1": str(RGB),
            "MODEL": str(path),
            "OUTPUT": str(tmp_path / "cars.gpkg"),
        }
    finally:
        QgsProject.instance().removeMapLayer(layer.id())
    done = []
    task = dialogs.ServeTask(parameters, lambda ok, results, log: done.append((ok, results)))
    assert wait_for(start(task)) == "complete"
    assert done and done[0][0] and done[0][1]["OUTPUT"] == str(tmp_path / "cars.gpkg")
    assert (tmp_path / "cars.gpkg").is_file() and done[0][1]["TILES"] > 1
