"""Plugins > otbtf > Apply a model to a layer: a small dialog (model, raster layer,
output) that serves the model in the background through the task manager.

What was read from the model (its metadata, or what an ONNX file says: inputs,
layout, tile size, classes) is shown before anything runs; the work is otbtf:tensorflowmodelserve in a
QgsProcessingAlgRunnerTask, so progress and cancel are the task manager's.
"""

from __future__ import annotations

from pathlib import Path

from qgis.core import (
    QgsApplication,
    QgsMapLayerProxyModel,
    QgsProcessingAlgRunnerTask,
    QgsProcessingContext,
    QgsProcessingFeedback,
    QgsProject,
    QgsRasterLayer,
    QgsVectorLayer,
)
from qgis.gui import QgsFileWidget, QgsMapLayerComboBox
from qgis.PyQt.QtWidgets import (
    QCheckBox,
    QDialog,
    QDialogButtonBox,
    QFormLayout,
    QLabel,
    QLineEdit,
    QVBoxLayout,
)

from otbtf_plugin.detection import is_detector, load_detector
from otbtf_plugin.errors import EngineError
from otbtf_plugin.models.loading import load_model, model_path_problem
from otbtf_plugin.models.metadata import METADATA_FILE, MetadataError, read_metadata

ALGORITHM = "otbtf:tensorflowmodelserve"
DETECTION = "otbtf:objectdetection"  # for an ONNX detector: objects as polygons


def model_location(path: str) -> str:
    """The model a chosen file stands for: an ``.onnx`` or ``.keras`` file itself; the folder of
    a SavedModel's ``saved_model.pb`` or of our ``otbtf_model.json`` (our folder, when the
    SavedModel is its ``savedmodel/``)."""
    chosen = Path(path)
    if chosen.name == METADATA_FILE:
        return str(chosen.parent)
    if chosen.name == "saved_model.pb":
        folder = chosen.parent
        ours = folder.name == "savedmodel" and (folder.parent / METADATA_FILE).is_file()
        return str(folder.parent if ours else folder)
    return path


def detector_file(path: str) -> bool:
    """Whether ``path`` is a Deepness detector (a file that cannot be read is not)."""
    try:
        return bool(path) and is_detector(path)
    except EngineError:
        return False


def describe_model(path: str, detector: bool | None = None) -> str:
    """What the dialog says about a model before running it: for an ONNX file, what was read
    from it (inputs, layout, tile size, classes); for a folder, its metadata."""
    if not path:
        return "Choose a model: an .onnx file, a .keras file, or a model folder (pick its saved_model.pb)."
    problem = model_path_problem(path)
    if problem:
        return problem
    if Path(path).suffix.lower() == ".onnx":
        try:
            if detector_file(path) if detector is None else detector:
                return load_detector(path).describe() + ". Objects are written as polygons (a GeoPackage)."
            model = load_model(path)
        except EngineError as err:
            return str(err)
        meta = model.metadata
        classes = ", ".join(f"{c.code} {c.name}" for c in meta.classes) if meta else ""
        return model.describe() + (f". Classes: {classes}." if classes and "classes:" not in model.describe() else ".")
    try:
        meta = read_metadata(path) if Path(path).is_dir() else None
    except MetadataError as err:
        return str(err)
    if meta is None:
        return (
            "No otbtf metadata: the receptive field and expression field are read from the model's "
            "input sizes, or measured, when it runs."
        )
    fields = ", ".join(f"{i.name}: {i.rfield or '?'} px" for i in meta.inputs) or "?"
    classes = ", ".join(c.name for c in meta.classes)
    text = f"Receptive field {fields}; expression field {meta.efield or '?'} px; scale {meta.scale or 1}."
    if classes:
        text += f" Classes: {classes}."
    return text


class ApplyModelDialog(QDialog):
    def __init__(self, parent=None):
        super().__init__(parent)
        self.setWindowTitle("Apply a model to a layer")
        self.setObjectName("otbtf_apply_model_dialog")
        self.layer = QgsMapLayerComboBox()
        self.layer.setFilters(QgsMapLayerProxyModel.RasterLayer)
        self.model = QgsFileWidget()
        self.model.setStorageMode(QgsFileWidget.GetFile)
        self.model.setDialogTitle("Model: an ONNX or Keras file, or a model folder's saved_model.pb")
        self.model.setFilter(
            "Models (*.onnx *.keras saved_model.pb otbtf_model.json);;ONNX (*.onnx);;"
            "Keras (*.keras);;SavedModel (saved_model.pb)"
        )
        self.geometry = QLabel(describe_model(""))
        self.geometry.setWordWrap(True)
        self.outputs = QLineEdit()
        self.outputs.setPlaceholderText("empty: the model's outputs (e.g. class)")
        self.fully_conv = QCheckBox("Fully-convolutional (whole tiles at once)")
        self.output = QgsFileWidget()
        self.output.setStorageMode(QgsFileWidget.SaveFile)
        self.output.setFilter("GeoTIFF (*.tif)")
        self.detector = False  # the chosen file is a detector: decided once per choice (a session load)
        self.model.fileChanged.connect(self._model_changed)

        form = QFormLayout()
        form.addRow("Raster layer", self.layer)
        form.addRow("Model", self.model)
        form.addRow("", self.geometry)
        form.addRow("Outputs", self.outputs)
        form.addRow("", self.fully_conv)
        form.addRow("Output raster", self.output)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(buttons)

    def _model_changed(self, path: str) -> None:
        location = model_location(path)
        self.detector = detector_file(location)
        self.geometry.setText(describe_model(location, self.detector))

    def parameters(self) -> dict:
        """The algorithm's parameters; a detector's (``ALGORITHM`` names which) go to object
        detection, its output a GeoPackage beside the chosen name."""
        layer = self.layer.currentLayer()
        model = model_location(self.model.filePath())
        source = layer.source() if layer is not None else None
        output = self.output.filePath()
        if self.detector:
            vector = str(Path(output).with_suffix(".gpkg")) if output else "TEMPORARY_OUTPUT"
            return {"ALGORITHM": DETECTION, "SOURCE1": source, "MODEL": model, "OUTPUT": vector}
        return {
            "SOURCE1": source,
            "MODEL": model,
            "OUTPUT_NAMES": self.outputs.text().strip(),
            "FULLYCONV": self.fully_conv.isChecked(),
            "OUTPUT": output or "TEMPORARY_OUTPUT",
        }


class ServeTask(QgsProcessingAlgRunnerTask):
    """otbtf:tensorflowmodelserve in the task manager; ``on_done(ok, results, messages)``."""

    def __init__(self, parameters: dict, on_done=None):
        self.context = QgsProcessingContext()
        self.context.setProject(QgsProject.instance())
        self.feedback = QgsProcessingFeedback()
        parameters = dict(parameters)
        algorithm = QgsApplication.processingRegistry().algorithmById(parameters.pop("ALGORITHM", ALGORITHM))
        super().__init__(algorithm, parameters, self.context, self.feedback)
        self.setDescription(f"otbtf: apply {Path(parameters['MODEL']).name} to {Path(str(parameters['SOURCE1'])).name}")
        self.on_done = on_done
        self.executed.connect(self._executed)

    def _executed(self, ok: bool, results: dict) -> None:
        if self.on_done is not None:
            self.on_done(ok, results, self.feedback.textLog())


def apply_model(iface) -> ServeTask | None:
    """Show the dialog; on OK, start the task and add the result to the project."""
    dialog = ApplyModelDialog(iface.mainWindow() if iface is not None else None)
    if dialog.exec() != QDialog.DialogCode.Accepted:
        return None
    parameters = dialog.parameters()
    problem = model_path_problem(parameters["MODEL"]) if parameters["MODEL"] else "no model was chosen"
    if parameters["SOURCE1"] is None:
        problem = "no raster layer was chosen"
    if problem:
        iface.messageBar().pushWarning("otbtf", problem)
        return None

    def done(ok, results, log):
        if not ok:
            iface.messageBar().pushCritical(
                "otbtf",
                "Applying the model failed or was cancelled: " + (log.strip().splitlines() or ["see the log"])[-1],
            )
            return
        if "OBJECTS" in results:  # object detection
            objects = QgsVectorLayer(results["OUTPUT"], Path(results["OUTPUT"]).stem, "ogr")
            QgsProject.instance().addMapLayer(objects)
            iface.messageBar().pushSuccess("otbtf", f"{objects.name()}: {results['OBJECTS']} objects")
            return
        layer = QgsRasterLayer(results["OUTPUT"], Path(results["OUTPUT"]).stem)
        QgsProject.instance().addMapLayer(layer)
        iface.messageBar().pushSuccess("otbtf", f"{layer.name()}: {results['MODE']} mode, {results['TILES']} tiles")

    task = ServeTask(parameters, done)
    QgsApplication.taskManager().addTask(task)
    return task
