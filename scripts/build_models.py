#!/usr/bin/env python3
"""Writes the example graphical models of resources/models/ (run it after changing them):

    QT_QPA_PLATFORM=offscreen python3 scripts/build_models.py

sampling_and_patches.model3: sample selection, then patches extraction from its points.
workflow.model3: the whole otbtf workflow: sample selection, patches extraction,
training a cnn, serving its class map over the image.
"""

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def sampling_and_patches(model=None):
    """Sample selection then patches extraction, added to ``model`` (a new one by default)."""
    from qgis.core import (
        QgsProcessingModelAlgorithm,
        QgsProcessingModelChildAlgorithm,
        QgsProcessingModelChildParameterSource,
        QgsProcessingModelOutput,
        QgsProcessingModelParameter,
        QgsProcessingParameterField,
        QgsProcessingParameterNumber,
        QgsProcessingParameterRasterLayer,
        QgsProcessingParameterVectorLayer,
    )
    from qgis.PyQt.QtCore import QPointF

    if model is None:
        model = QgsProcessingModelAlgorithm("Sampling and patches", "otbtf examples", "otbtfsamplingandpatches")
    model.setHelpContent(
        {
            "ALG_DESC": "Selects samples in the ground truth polygons (strategy smallest), "
            "then extracts one patch per sample: the first half of the otbtf workflow."
        }
    )

    def add_input(parameter, x):
        model.addModelParameter(parameter, QgsProcessingModelParameter(parameter.name()))
        model.parameterComponent(parameter.name()).setPosition(QPointF(x, 60))

    add_input(QgsProcessingParameterRasterLayer("image", "Image"), 120)
    add_input(QgsProcessingParameterVectorLayer("ground_truth", "Ground truth polygons"), 340)
    add_input(QgsProcessingParameterField("class_field", "Class field", parentLayerParameterName="ground_truth"), 560)
    add_input(
        QgsProcessingParameterNumber(
            "patch_size", "Patch size (pixels)", type=QgsProcessingParameterNumber.Integer, defaultValue=16
        ),
        780,
    )
    source = QgsProcessingModelChildParameterSource

    select = QgsProcessingModelChildAlgorithm("otbtf:sampleselection")
    select.setChildId("select")
    select.setDescription("Sample selection")
    select.setPosition(QPointF(340, 220))
    select.addParameterSources("INPUT", [source.fromModelParameter("image")])
    select.addParameterSources("VECTOR", [source.fromModelParameter("ground_truth")])
    select.addParameterSources("FIELD", [source.fromModelParameter("class_field")])
    select.addParameterSources("STRATEGY", [source.fromStaticValue(0)])
    select.addParameterSources("SAMPLER", [source.fromStaticValue(0)])
    select.addParameterSources("SEED", [source.fromStaticValue(0)])
    samples = QgsProcessingModelOutput("samples", "Samples")
    samples.setChildId("select")
    samples.setChildOutputName("OUTPUT")
    select.setModelOutputs({"samples": samples})
    model.addChildAlgorithm(select)

    extract = QgsProcessingModelChildAlgorithm("otbtf:patchesextraction")
    extract.setChildId("extract")
    extract.setDescription("Patches extraction")
    extract.setPosition(QPointF(340, 380))
    extract.addParameterSources("SOURCE1", [source.fromModelParameter("image")])
    extract.addParameterSources("PATCH_SIZE1", [source.fromModelParameter("patch_size")])
    extract.addParameterSources("VECTOR", [source.fromChildOutput("select", "OUTPUT")])
    extract.addParameterSources("FIELD", [source.fromModelParameter("class_field")])
    outputs = {}
    for name, child_output, text in (
        ("patches", "OUTPUT1", "Patches image"),
        ("labels", "OUTPUT_LABELS", "Labels image"),
    ):
        output = QgsProcessingModelOutput(name, text)
        output.setChildId("extract")
        output.setChildOutputName(child_output)
        outputs[name] = output
    extract.setModelOutputs(outputs)
    model.addChildAlgorithm(extract)
    return model


def workflow():
    """The whole workflow: sampling_and_patches, then training and serving."""
    from qgis.core import (
        QgsProcessingModelAlgorithm,
        QgsProcessingModelChildAlgorithm,
        QgsProcessingModelChildParameterSource,
        QgsProcessingModelOutput,
        QgsProcessingModelParameter,
        QgsProcessingParameterNumber,
    )
    from qgis.PyQt.QtCore import QPointF

    model = sampling_and_patches(QgsProcessingModelAlgorithm("otbtf workflow", "otbtf examples", "otbtfworkflow"))
    model.setHelpContent(
        {
            "ALG_DESC": "The whole otbtf workflow on one image and its ground truth polygons: "
            "sample selection (strategy smallest), patches extraction, training a "
            "cnn patch classifier, and serving its class map over the image."
        }
    )
    epochs = QgsProcessingParameterNumber(
        "epochs", "Training epochs", type=QgsProcessingParameterNumber.Integer, defaultValue=20, minValue=1
    )
    model.addModelParameter(epochs, QgsProcessingModelParameter("epochs"))
    model.parameterComponent("epochs").setPosition(QPointF(1000, 60))
    source = QgsProcessingModelChildParameterSource

    def output(child, name, child_output, text):
        out = QgsProcessingModelOutput(name, text)
        out.setChildId(child)
        out.setChildOutputName(child_output)
        return out

    train = QgsProcessingModelChildAlgorithm("otbtf:tensorflowmodeltrain")
    train.setChildId("train")
    train.setDescription("Training (cnn)")
    train.setPosition(QPointF(340, 540))
    train.addParameterSources("TRAIN_PATCHES1", [source.fromChildOutput("extract", "OUTPUT1")])
    train.addParameterSources("TRAIN_LABELS", [source.fromChildOutput("extract", "OUTPUT_LABELS")])
    train.addParameterSources("EPOCHS", [source.fromModelParameter("epochs")])
    train.addParameterSources("SEED", [source.fromStaticValue(0)])
    train.setModelOutputs(
        {
            "model": output("train", "model", "OUTPUT_MODEL", "Trained model"),
            "report": output("train", "report", "OUTPUT_REPORT", "Training report"),
        }
    )
    model.addChildAlgorithm(train)

    serve = QgsProcessingModelChildAlgorithm("otbtf:tensorflowmodelserve")
    serve.setChildId("serve")
    serve.setDescription("Serving (class map)")
    serve.setPosition(QPointF(340, 700))
    serve.addParameterSources("SOURCE1", [source.fromModelParameter("image")])
    serve.addParameterSources("MODEL", [source.fromChildOutput("train", "OUTPUT_MODEL")])
    serve.addParameterSources("OUTPUT_NAMES", [source.fromStaticValue("class")])
    serve.setModelOutputs({"classes": output("serve", "classes", "OUTPUT", "Class map")})
    model.addChildAlgorithm(serve)
    return model


def fill_defaults(model) -> None:
    """Give every mandatory parameter of every child its default, as the modeler does
    when a user drops an algorithm on the canvas."""
    from qgis.core import QgsApplication, QgsProcessingModelChildParameterSource, QgsProcessingParameterDefinition

    for child in model.childAlgorithms().values():
        algorithm = QgsApplication.processingRegistry().algorithmById(child.algorithmId())
        for parameter in algorithm.parameterDefinitions():
            if parameter.isDestination() or parameter.name() in child.parameterSources():
                continue
            if parameter.flags() & QgsProcessingParameterDefinition.FlagOptional or parameter.defaultValue() is None:
                continue
            child.addParameterSources(
                parameter.name(), [QgsProcessingModelChildParameterSource.fromStaticValue(parameter.defaultValue())]
            )
        model.setChildAlgorithm(child)


def main() -> int:
    from qgis.core import QgsApplication

    app = QgsApplication([], False)
    app.initQgis()
    from plugin_files import start_from_repository

    start_from_repository()  # children need the algorithms' parameters
    for name, build in (("sampling_and_patches", sampling_and_patches), ("workflow", workflow)):
        target = ROOT / "resources" / "models" / f"{name}.model3"
        model = build()
        if name == "workflow":
            fill_defaults(model)
        if not model.toFile(str(target)):
            raise SystemExit(f"could not write {target}")
        print(target)
    app.exitQgis()
    return 0


if __name__ == "__main__":
    sys.exit(main())
