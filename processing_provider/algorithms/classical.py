"""What the classical-ML algorithms share: the classifier parameters, their help, the
dependency check and the results of a training."""

from qgis.core import (
    QgsProcessingParameterEnum,
    QgsProcessingParameterFileDestination,
    QgsProcessingParameterNumber,
    QgsProcessingParameterString,
)

from otbtf_plugin import packages
from otbtf_plugin.classifiers import CLASSIFIER_NAMES
from otbtf_plugin.models.loading import model_feature, model_path_problem

from .base import OtbtfAlgorithm
from .common import add_advanced, folds_parameter

CLASSIFIER_LABELS = [
    "rf: random forest",
    "svm: support vector machine",
    "boost: AdaBoost",
    "dt: decision tree",
    "gbt: gradient boosted trees",
    "bayes: normal Bayes",
    "knn: k nearest neighbours",
    "ann: multilayer perceptron",
]

CLASSIFIER_HELP = (
    "CLASSIFIER: rf, svm, boost, dt, gbt, bayes, knn, ann (scikit-learn; features standardised "
    "for svm, knn and ann). CLASSIFIER_PARAMS: the estimator's own parameter names, e.g. "
    "'n_estimators=300;max_depth=12' for rf, 'C=10;gamma=0.1' for svm, 'n_neighbors=15' for knn, "
    "'hidden_layer_sizes=(64, 32)' for ann; rf's defaults are Orfeo ToolBox's (max_depth=5, "
    "min_samples_split=10: on a few polygons, fully grown trees learn the polygons rather than the "
    "classes; max_depth=None grows them). CLASSIFIER_PARAMS=auto: a small grid of settings per "
    "classifier (the defaults and 3 to 5 others) scored by 4-fold cross-validation grouped by polygon "
    "on the training polygons; the defaults stay unless another setting is 2 points better and "
    "better fold by fold beyond noise; about "
    "20 fits, so a few times one training; the report lists every candidate and its scores. "
    "VALIDATION: the share of each class's polygons held out, whole, for the report (a class with one "
    "polygon cannot be held out; the report says so); the saved classifier is then trained again on "
    "every polygon. FOLDS (advanced, 0 = none): k-fold cross-validation grouped by polygon over all the "
    "polygons besides, in the report (each fold, mean and spread of overall accuracy, kappa, mean F1) "
    "and in the results (CV_OVERALL_ACCURACY, CV_KAPPA: means).\n\n"
    "OUTPUT_CLASSIFIER is a .skops file: loading it never runs code from it. It records how its "
    "features were made, and classification refuses sources or a model that differ."
)


def check_dependencies(algorithm, parameters, context, needs_model: bool = True):
    problems = []
    model = algorithm.parameterAsFile(parameters, "MODEL", context) if needs_model else ""
    missing = packages.requirement_message("classifiers", *([model_feature(model)] if model else []))
    if missing:
        problems.append(missing)
    if needs_model:
        problem = model_path_problem(model) if model else None
        if problem:
            problems.append(problem)
    return (False, "; ".join(problems)) if problems else (True, "")


def add_classifier_parameters(algorithm) -> None:
    algorithm.addParameter(
        QgsProcessingParameterEnum("CLASSIFIER", "Classifier", options=CLASSIFIER_LABELS, defaultValue=0)
    )
    algorithm.addParameter(
        QgsProcessingParameterString(
            "CLASSIFIER_PARAMS", "Classifier parameters (name=value;..., e.g. n_estimators=300)", optional=True
        )
    )
    algorithm.addParameter(
        QgsProcessingParameterNumber(
            "VALIDATION",
            "Fraction of polygons held out for validation",
            type=QgsProcessingParameterNumber.Double,
            defaultValue=0.3,
            minValue=0.0,
            maxValue=0.95,
        )
    )
    algorithm.addParameter(
        QgsProcessingParameterNumber(
            "SEED", "Random seed", type=QgsProcessingParameterNumber.Integer, defaultValue=0, minValue=0
        )
    )
    add_advanced(
        algorithm,
        [folds_parameter()],
    )


def classifier_args(algorithm, parameters, context) -> dict:
    return {
        "classifier": CLASSIFIER_NAMES[algorithm.parameterAsEnum(parameters, "CLASSIFIER", context)],
        "params": algorithm.parameterAsString(parameters, "CLASSIFIER_PARAMS", context),
        "seed": algorithm.parameterAsInt(parameters, "SEED", context),
        "validation": algorithm.parameterAsDouble(parameters, "VALIDATION", context),
        "folds": algorithm.parameterAsInt(parameters, "FOLDS", context),
    }


def add_classifier_outputs(algorithm) -> None:
    algorithm.addParameter(
        QgsProcessingParameterFileDestination("OUTPUT_CLASSIFIER", "Classifier", fileFilter="Classifier (*.skops)")
    )
    algorithm.addParameter(
        QgsProcessingParameterFileDestination(
            "OUTPUT_REPORT", "Validation report", fileFilter="HTML (*.html)", optional=True, createByDefault=True
        )
    )


def training_results(algorithm, result, feedback) -> dict:
    trained = result.trained
    for message in result.messages:
        feedback.pushWarning(message)
    if trained.metrics:
        feedback.pushInfo(
            f"Validation on {trained.validation_samples} held-out samples: overall accuracy "
            f"{trained.metrics['overall_accuracy']:.4f}, kappa {trained.metrics['kappa']:.4f}"
        )
    validated = trained.cross_validation
    if validated:
        accuracy = validated["summary"]["overall_accuracy"]
        feedback.pushInfo(
            f"Cross-validation grouped by polygon, {validated['folds']} folds: overall accuracy "
            f"{accuracy['mean']:.4f} +- {accuracy['std']:.4f} (pooled "
            f"{validated['pooled']['overall_accuracy']:.4f})"
        )
    return {
        "OUTPUT_CLASSIFIER": str(result.classifier),
        "OUTPUT_REPORT": str(result.report) if result.report else None,
        "OVERALL_ACCURACY": trained.metrics["overall_accuracy"] if trained.metrics else None,
        "KAPPA": trained.metrics["kappa"] if trained.metrics else None,
        "TRAINING_SAMPLES": trained.training_samples,
        "VALIDATION_SAMPLES": trained.validation_samples,
        "CV_OVERALL_ACCURACY": validated["summary"]["overall_accuracy"]["mean"] if validated else None,
        "CV_KAPPA": validated["summary"]["kappa"]["mean"] if validated else None,
    }


class ClassicalMLAlgorithm(OtbtfAlgorithm):
    GROUP = "Classical ML"
    GROUP_ID = "classicalml"
    NEEDS_MODEL = True  # MODEL is one of its parameters

    def checkParameterValues(self, parameters, context):
        ok, message = super().checkParameterValues(parameters, context)
        return check_dependencies(self, parameters, context, self.NEEDS_MODEL) if ok else (ok, message)
