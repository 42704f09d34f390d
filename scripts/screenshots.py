"""Screenshots of the plugin in QGIS desktop, for the README (run by scripts/screenshots.sh).

Runs inside QGIS (``qgis --code scripts/screenshots.py``) with the plugin installed
in the profile and ``demo-output/`` present (``make demo``). Writes docs/img/*.png
and docs/img/qgis-log.txt (every message QGIS logged while loading the plugin and
running), then quits QGIS.
"""

import os
from pathlib import Path

import processing
from qgis.core import Qgis, QgsApplication, QgsFillSymbol, QgsProject, QgsRasterLayer, QgsVectorLayer
from qgis.PyQt.QtCore import QSize, QTimer
from qgis.PyQt.QtWidgets import QDockWidget, QTabWidget
from qgis.utils import iface, plugins

ROOT = Path(os.environ["OTBTF_ROOT"])
OUT = ROOT / "docs" / "img"
DEMO = ROOT / "demo-output"
RGB = ROOT / "data" / "landsat8" / "LC08_224078_20200518_rgb_crop.tif"
LOG = []
LEVELS = {Qgis.Info: "info", Qgis.Warning: "warning", Qgis.Critical: "critical"}


def remember(message, tag, level):
    LOG.append(f"[{LEVELS.get(level, level)}] {tag}: {message}")


def log_panel() -> list[str]:
    """Everything QGIS' Log Messages panel holds (messages from start-up included), per tab."""
    lines = []
    for tabs in iface.mainWindow().findChildren(QTabWidget):
        if tabs.parent() is None or tabs.parent().metaObject().className() != "QgsMessageLogViewer":
            continue
        for k in range(tabs.count()):
            widget = tabs.widget(k)
            text = widget.toPlainText() if hasattr(widget, "toPlainText") else ""
            lines += [f"[{tabs.tabText(k)}] {line}" for line in text.splitlines() if line.strip()]
    return lines


def toolbox():
    dock = next(
        (d for d in iface.mainWindow().findChildren(QDockWidget) if d.objectName() == "ProcessingToolbox"), None
    )
    dock.show()
    dock.searchBox.setText("otbtf")
    return dock


def step_main_window():
    OUT.mkdir(parents=True, exist_ok=True)
    project = QgsProject.instance()
    scene = QgsRasterLayer(str(RGB), "Landsat 8 (sample)")
    classes = QgsRasterLayer(str(DEMO / "forest_classes.tif"), "random forest on deep features")
    project.addMapLayer(scene)
    project.addMapLayer(classes)
    iface.mapCanvas().setExtent(scene.extent())
    toolbox()
    iface.mainWindow().resize(QSize(1400, 860))
    QTimer.singleShot(3000, grab_main_window)


def grab_main_window():
    iface.mapCanvas().refreshAllLayers()
    iface.mainWindow().grab().save(str(OUT / "qgis-main-window.png"))
    dialog = processing.createAlgorithmDialog(
        "otbtf:imageclassifierfromdeepfeatures",
        {
            "SOURCE1": str(RGB),
            "MODEL": str(DEMO / "model"),
            "OUTPUT_NAMES": "features",
            "CLASSIFIER": str(DEMO / "forest.skops"),
        },
    )
    dialog.resize(QSize(900, 760))
    dialog.show()
    QTimer.singleShot(1500, lambda: grab_dialog(dialog))


def grab_dialog(dialog):
    dialog.grab().save(str(OUT / "algorithm-dialog.png"))
    dialog.close()
    from otbtf.plugin.apply_model import ApplyModelDialog

    apply = ApplyModelDialog(iface.mainWindow())
    apply.model.setFilePath(str(DEMO / "model"))
    apply.outputs.setText("class")
    apply.resize(QSize(640, 300))
    apply.show()
    QTimer.singleShot(1000, lambda: grab_apply(apply))


def grab_apply(apply):
    apply.grab().save(str(OUT / "apply-model-dialog.png"))
    apply.close()
    # A Deepness-style ONNX segmentor (scripts/deepness_example.py): what the dialog reads from
    # it, then its class map served with SOURCE1 and MODEL only, in the main window.
    from otbtf.plugin.apply_model import ApplyModelDialog

    onnx_file = DEMO / "landcover_deepness.onnx"
    apply = ApplyModelDialog(iface.mainWindow())
    apply.model.setFilePath(str(onnx_file))
    apply.resize(QSize(640, 330))
    apply.show()
    QTimer.singleShot(1000, lambda: grab_onnx(apply, onnx_file))


def run_on_the_sample(algorithm: str, model: Path, output: str):
    """``algorithm`` with ``model`` over the Landsat sample into ``demo-output/output``, on a map
    holding only the sample: (project, results, the sample's layer)."""
    project = QgsProject.instance()
    project.removeAllMapLayers()
    result = processing.run(algorithm, {"SOURCE1": str(RGB), "MODEL": str(model), "OUTPUT": str(DEMO / output)})
    return project, result, project.addMapLayer(QgsRasterLayer(str(RGB), "Landsat 8 (sample)"))


def grab_onnx(apply, onnx_file):
    apply.grab().save(str(OUT / "apply-onnx-dialog.png"))
    apply.close()
    project, result, scene = run_on_the_sample("otbtf:tensorflowmodelserve", onnx_file, "landcover_classes.tif")
    classes = QgsRasterLayer(result["OUTPUT"], "Deepness-style ONNX segmentor")
    classes.loadNamedStyle(str(DEMO / "landcover_classes.qml"))
    project.addMapLayer(classes)
    project.layerTreeRoot().findLayer(scene.id()).setExpanded(False)
    project.layerTreeRoot().findLayer(classes.id()).setExpanded(True)  # the legend: class names
    iface.mapCanvas().setExtent(classes.extent())
    QTimer.singleShot(3000, grab_deepness)


def grab_deepness():
    iface.mapCanvas().refreshAllLayers()
    iface.mainWindow().grab().save(str(OUT / "qgis-onnx-deepness.png"))
    # A toy Deepness-style detector (scripts/detector_example.py): its objects as polygons.
    import importlib.util

    spec = importlib.util.spec_from_file_location("detector_example", ROOT / "scripts" / "detector_example.py")
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    detector = DEMO / "bright_cells_detector.onnx"
    example.main(str(detector))
    project, result, scene = run_on_the_sample("otbtf:objectdetection", detector, "bright_cells.gpkg")
    objects = QgsVectorLayer(result["OUTPUT"], f"objectdetection: {result['OBJECTS']} objects", "ogr")
    symbol = QgsFillSymbol.createSimple({"color": "255,0,0,40", "outline_color": "255,0,0", "outline_width": "0.6"})
    objects.renderer().setSymbol(symbol)
    project.addMapLayer(objects)
    project.layerTreeRoot().findLayer(scene.id()).setExpanded(False)
    iface.mapCanvas().setExtent(scene.extent())
    QTimer.singleShot(3000, finish)


def finish():
    iface.mapCanvas().refreshAllLayers()
    iface.mainWindow().grab().save(str(OUT / "qgis-object-detection.png"))
    LOG.append(f"provider loaded: {QgsApplication.processingRegistry().providerById('otbtf') is not None}")
    LOG.append(f"plugin started: {'otbtf' in plugins}")
    panel = log_panel()
    (OUT / "qgis-log.txt").write_text(
        "\n".join(["# Log Messages panel", *panel, "# while the script ran", *LOG]) + "\n", encoding="utf-8"
    )
    QgsProject.instance().clear()
    QTimer.singleShot(500, iface.actionExit().trigger)


QgsApplication.messageLog().messageReceived.connect(remember)
QTimer.singleShot(2000, step_main_window)
