"""otbtf:trainclassifierfromdeepfeatures, otbtf:imageclassifierfromdeepfeatures,
otbtf:sampleextractionfromdeepfeatures: classical classifiers on the features of sources (their
bands, or a model's outputs)."""

from dataclasses import replace

from qgis.core import (
    QgsProcessing,
    QgsProcessingParameterEnum,
    QgsProcessingParameterFeatureSource,
    QgsProcessingParameterField,
    QgsProcessingParameterFile,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterDestination,
    QgsProcessingParameterRasterLayer,
    QgsProcessingParameterString,
    QgsProcessingParameterVectorDestination,
)

from otbtf_plugin.classifier_training import sample_extraction, train_from_features
from otbtf_plugin.features import FeatureSource, FeatureSpec
from otbtf_plugin.image_classification import classify_image
from otbtf_plugin.selection import STRATEGIES
from otbtf_plugin.serving import COMPRESSIONS, parse_output_names

from .classical import (
    CLASSIFIER_HELP,
    ClassicalMLAlgorithm,
    add_classifier_outputs,
    add_classifier_parameters,
    classifier_args,
    training_results,
)
from .common import (
    add_advanced,
    add_device_parameter,
    add_source_parameters,
    allow_lambda_parameter,
    compression_parameter,
    device,
    executor,
    memory_parameter,
    optional_number,
    raster_path,
    scheduler_parameter,
    vector_path,
)

MAX_SOURCES = 4
FEATURES_HELP = (
    "Features: with MODEL empty, the bands of the sources at the pixel (several sources are "
    "concatenated in order; a coarser source gives the pixel that contains the reference pixel). "
    "With a MODEL, the outputs named in OUTPUT_NAMES (one value per pixel, e.g. 'features' of a "
    "cnn trained by otbtf:tensorflowmodeltrain, or an inner layer your model exports) of the "
    "model applied to the receptive field centred on the pixel, exactly as "
    "otbtf:tensorflowmodelserve computes them. RFIELDn: 0 reads it from the model.\n\n"
)


def add_feature_parameters(algorithm) -> None:
    add_source_parameters(
        algorithm,
        MAX_SOURCES,
        "RFIELD",
        "Receptive field of source {n} (pixels; 0: from the model, 1 without a model)",
        0,
        0,
    )
    algorithm.addParameter(
        QgsProcessingParameterFile(
            "MODEL",
            "Model (empty: the bands of the sources are the features)",
            behavior=QgsProcessingParameterFile.Folder,
            optional=True,
        )
    )
    algorithm.addParameter(
        QgsProcessingParameterString(
            "OUTPUT_NAMES", "Model outputs used as features (comma-separated, e.g. features)", optional=True
        )
    )
    add_advanced(
        algorithm,
        [
            memory_parameter(),
            allow_lambda_parameter(),
        ],
    )


def feature_spec(algorithm, parameters, context) -> FeatureSpec:
    sources = []
    for n in range(1, MAX_SOURCES + 1):
        path = raster_path(algorithm, parameters, f"SOURCE{n}", context, required=n == 1)
        if path is not None:
            sources.append(
                FeatureSource(
                    path,
                    algorithm.parameterAsInt(parameters, f"RFIELD{n}", context),
                    optional_number(algorithm, parameters, f"NODATA{n}", context),
                )
            )
    model = algorithm.parameterAsFile(parameters, "MODEL", context) or None
    return FeatureSpec(
        sources,
        model,
        parse_output_names(algorithm.parameterAsString(parameters, "OUTPUT_NAMES", context)),
        algorithm.parameterAsBool(parameters, "ALLOW_LAMBDA", context),
        algorithm.parameterAsInt(parameters, "MEMORY_MB", context),
    )


class TrainClassifierFromDeepFeatures(ClassicalMLAlgorithm):
    NAME = "trainclassifierfromdeepfeatures"
    DISPLAY_NAME = "Train classifier from deep features"
    HELP = (
        "Trains a classical classifier on the features of the pixels under the ground truth.\n\n"
        "VECTOR: polygons (samples are selected from their pixels on SOURCE1 with STRATEGY, as "
        "otbtf:sampleselection does) or points (e.g. the output of otbtf:sampleselection; its "
        "originfid field keeps the samples of one polygon together for validation). FIELD: the "
        "class (integer or text).\n\n"
        + FEATURES_HELP
        + CLASSIFIER_HELP
        + "\n\nExample: SOURCE1 a Landsat image, MODEL empty, VECTOR land-cover polygons, FIELD "
        "name, CLASSIFIER rf: a pixel classification like OTB's TrainImagesClassifier."
    )

    def initAlgorithm(self, config=None):
        add_feature_parameters(self)
        self.addParameter(
            QgsProcessingParameterFeatureSource(
                "VECTOR",
                "Ground truth (polygons or points)",
                [QgsProcessing.TypeVectorPolygon, QgsProcessing.TypeVectorPoint],
            )
        )
        self.addParameter(
            QgsProcessingParameterField(
                "FIELD", "Class field", parentLayerParameterName="VECTOR", type=QgsProcessingParameterField.Any
            )
        )
        add_classifier_parameters(self)
        add_advanced(
            self,
            [
                QgsProcessingParameterEnum(
                    "STRATEGY",
                    "Sample selection in polygons",
                    options=list(STRATEGIES),
                    defaultValue=list(STRATEGIES).index("all"),
                ),
                QgsProcessingParameterNumber(
                    "STRATEGY_VALUE",
                    "Strategy value (constant / percent / total)",
                    type=QgsProcessingParameterNumber.Double,
                    optional=True,
                ),
            ],
        )
        add_classifier_outputs(self)

    def processAlgorithm(self, parameters, context, feedback):
        spec = feature_spec(self, parameters, context)
        vector, layer = vector_path(self, parameters, "VECTOR", context, feedback)
        result = self.run_engine(
            train_from_features,
            feedback,
            spec,
            vector,
            self.parameterAsString(parameters, "FIELD", context),
            self.parameterAsFileOutput(parameters, "OUTPUT_CLASSIFIER", context),
            self.parameterAsFileOutput(parameters, "OUTPUT_REPORT", context) or None,
            strategy=list(STRATEGIES)[self.parameterAsEnum(parameters, "STRATEGY", context)],
            value=optional_number(self, parameters, "STRATEGY_VALUE", context),
            layer=layer,
            **classifier_args(self, parameters, context),
        )
        return training_results(self, result, feedback)


class ImageClassifierFromDeepFeatures(ClassicalMLAlgorithm):
    NAME = "imageclassifierfromdeepfeatures"
    DISPLAY_NAME = "Image classifier from deep features"
    HELP = (
        "Classifies every pixel of SOURCE1 (its grid, cropped where the receptive field does not "
        "fit) with a classifier from otbtf:trainclassifierfromdeepfeatures, streaming tiles through "
        "the serving engine. Give the same sources (bands, order), MODEL and OUTPUT_NAMES as at "
        "training: the classifier checks them and says what differs.\n\n"
        + FEATURES_HELP
        + "OUTPUT: class codes in the smallest integer type, styled with the class names (nodata where "
        "a source is nodata or MASK is 0). OUTPUT_CONFIDENCE: the probability of the chosen class "
        "(a random forest without it is faster: it stops a pixel's trees once its class is decided; "
        "the class map is the same).\n\n"
        "SCHEDULER (advanced): the address of a Dask scheduler whose workers classify the tiles "
        "(same result as on this machine)."
    )

    def initAlgorithm(self, config=None):
        add_feature_parameters(self)
        self.addParameter(QgsProcessingParameterFile("CLASSIFIER", "Classifier (.skops)", extension="skops"))
        self.addParameter(
            QgsProcessingParameterRasterLayer("MASK", "Mask (pixels with value 0 are not classified)", optional=True)
        )
        add_device_parameter(self)
        add_advanced(
            self,
            [
                compression_parameter(),
                scheduler_parameter(),
            ],
        )
        self.addParameter(QgsProcessingParameterRasterDestination("OUTPUT", "Class map"))
        self.addParameter(
            QgsProcessingParameterRasterDestination(
                "OUTPUT_CONFIDENCE", "Confidence", optional=True, createByDefault=False
            )
        )

    def processAlgorithm(self, parameters, context, feedback):
        spec = replace(feature_spec(self, parameters, context), device=device(self, parameters, context))
        confidence = self.parameterAsOutputLayer(parameters, "OUTPUT_CONFIDENCE", context) or None
        result = self.run_engine(
            classify_image,
            feedback,
            spec,
            self.parameterAsFile(parameters, "CLASSIFIER", context),
            self.parameterAsOutputLayer(parameters, "OUTPUT", context),
            confidence,
            raster_path(self, parameters, "MASK", context, required=False),
            compress=COMPRESSIONS[self.parameterAsEnum(parameters, "COMPRESSION", context)],
            executor=executor(self, parameters, context, feedback),
        )
        return {
            "OUTPUT": str(result.output),
            "OUTPUT_CONFIDENCE": str(result.confidence) if confidence else None,
            "TILES": result.tiles,
            "SKIPPED_TILES": result.skipped_tiles,
        }


class SampleExtractionFromDeepFeatures(ClassicalMLAlgorithm):
    NAME = "sampleextractionfromdeepfeatures"
    DISPLAY_NAME = "Sample extraction from deep features"
    HELP = (
        "Writes the features of the pixel under each point as numeric fields (source1_band1, ... "
        "without a model; <output>_<k> with one). FIELD (optional) copies the class; originfid "
        "names the feature each point came from. The layer remembers how its features were made, "
        "so otbtf:trainvectorclassifier on all of them gives a classifier that can classify "
        "images.\n\n"
        + FEATURES_HELP
        + "Points whose receptive field is not inside the sources, or on nodata, are skipped and counted."
    )

    def initAlgorithm(self, config=None):
        add_feature_parameters(self)
        self.addParameter(QgsProcessingParameterFeatureSource("VECTOR", "Points", [QgsProcessing.TypeVectorPoint]))
        self.addParameter(
            QgsProcessingParameterField(
                "FIELD",
                "Class field to copy",
                parentLayerParameterName="VECTOR",
                type=QgsProcessingParameterField.Any,
                optional=True,
            )
        )
        self.addParameter(
            QgsProcessingParameterVectorDestination("OUTPUT", "Points with features", QgsProcessing.TypeVectorPoint)
        )

    def processAlgorithm(self, parameters, context, feedback):
        spec = feature_spec(self, parameters, context)
        vector, layer = vector_path(self, parameters, "VECTOR", context, feedback)
        path, count, rejected = self.run_engine(
            sample_extraction,
            feedback,
            spec,
            vector,
            self.parameterAsOutputLayer(parameters, "OUTPUT", context),
            self.parameterAsString(parameters, "FIELD", context) or None,
            layer=layer,
        )
        return {"OUTPUT": str(path), "POINTS": count, "REJECTED": rejected}
