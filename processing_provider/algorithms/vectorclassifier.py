"""otbtf:trainvectorclassifier: a classical classifier on numeric fields of a vector layer."""

from qgis.core import QgsProcessingParameterFeatureSource, QgsProcessingParameterField

from otbtf_plugin.classifier_training import train_vector_classifier

from .classical import (
    CLASSIFIER_HELP,
    ClassicalMLAlgorithm,
    add_classifier_outputs,
    add_classifier_parameters,
    classifier_args,
    training_results,
)
from .common import field_names, vector_path


class TrainVectorClassifier(ClassicalMLAlgorithm):
    NEEDS_MODEL = False
    NAME = "trainvectorclassifier"
    DISPLAY_NAME = "Train vector classifier"
    HELP = (
        "Trains a classifier from numeric fields of a vector layer (FEATURES), e.g. the output of "
        "otbtf:sampleextractionfromdeepfeatures, with the class in FIELD. Features with a NULL "
        "value are skipped and counted. Validation holds out whole polygons when the layer has an "
        "originfid field (points from otbtf:sampleselection), else single features.\n\n" + CLASSIFIER_HELP
    )

    def initAlgorithm(self, config=None):
        self.addParameter(QgsProcessingParameterFeatureSource("VECTOR", "Vector with features"))
        self.addParameter(
            QgsProcessingParameterField(
                "FEATURES",
                "Feature fields",
                parentLayerParameterName="VECTOR",
                type=QgsProcessingParameterField.Numeric,
                allowMultiple=True,
            )
        )
        self.addParameter(
            QgsProcessingParameterField(
                "FIELD", "Class field", parentLayerParameterName="VECTOR", type=QgsProcessingParameterField.Any
            )
        )
        add_classifier_parameters(self)
        add_classifier_outputs(self)

    def processAlgorithm(self, parameters, context, feedback):
        vector, layer = vector_path(self, parameters, "VECTOR", context, feedback)
        result = self.run_engine(
            train_vector_classifier,
            feedback,
            vector,
            field_names(self, parameters, "FEATURES", context),
            self.parameterAsString(parameters, "FIELD", context),
            self.parameterAsFileOutput(parameters, "OUTPUT_CLASSIFIER", context),
            self.parameterAsFileOutput(parameters, "OUTPUT_REPORT", context) or None,
            layer=layer,
            **classifier_args(self, parameters, context),
        )
        return training_results(self, result, feedback)
