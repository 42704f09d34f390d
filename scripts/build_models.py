#!/usr/bin/env python3
"""Writes the example graphical models of resources/models/ (run it after changing them):

    QT_QPA_PLATFORM=offscreen python3 scripts/build_models.py

sampling_and_patches.model3: sample selection, then patches extraction from its points.
"""

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def sampling_and_patches():
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

    model = QgsProcessingModelAlgorithm("Sampling and patches", "otbtf examples", "otbtfsamplingandpatches")
    model.setHelpContent({"ALG_DESC": "Selects samples in the ground truth polygons (strategy smallest), "
                                      "then extracts one patch per sample: the first half of the otbtf workflow."})

    def add_input(parameter, x):
        model.addModelParameter(parameter, QgsProcessingModelParameter(parameter.name()))
        model.parameterComponent(parameter.name()).setPosition(QPointF(x, 60))

    add_input(QgsProcessingParameterRasterLayer("image", "Image"), 120)
    add_input(QgsProcessingParameterVectorLayer("ground_truth", "Ground truth polygons"), 340)
    add_input(QgsProcessingParameterField("class_field", "Class field", parentLayerParameterName="ground_truth"),
              560)
    add_input(QgsProcessingParameterNumber("patch_size", "Patch size (pixels)",
                                           type=QgsProcessingParameterNumber.Integer, defaultValue=16), 780)
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
    for name, child_output, text in (("patches", "OUTPUT1", "Patches image"),
                                     ("labels", "OUTPUT_LABELS", "Labels image")):
        output = QgsProcessingModelOutput(name, text)
        output.setChildId("extract")
        output.setChildOutputName(child_output)
        outputs[name] = output
    extract.setModelOutputs(outputs)
    model.addChildAlgorithm(extract)
    return model


def main() -> int:
    from qgis.core import QgsApplication

    app = QgsApplication([], False)
    app.initQgis()
    target = ROOT / "resources" / "models" / "sampling_and_patches.model3"
    if not sampling_and_patches().toFile(str(target)):
        raise SystemExit(f"could not write {target}")
    print(target)
    app.exitQgis()
    return 0


if __name__ == "__main__":
    sys.exit(main())
