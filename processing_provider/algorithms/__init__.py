"""The algorithms the provider registers. An algorithm is listed here only
once it works end to end (no stubs)."""

from .classstatistics import PolygonClassStatistics
from .deepfeatures import (
    ImageClassifierFromDeepFeatures,
    SampleExtractionFromDeepFeatures,
    TrainClassifierFromDeepFeatures,
)
from .objectdetection import ObjectDetection
from .patchesextraction import PatchesExtraction
from .patchesselection import PatchesSelection
from .sampleselection import SampleSelection
from .serve import TensorflowModelServe
from .train import TensorflowModelTrain
from .vectorclassifier import TrainVectorClassifier

ALGORITHMS = [
    PolygonClassStatistics,
    SampleSelection,
    PatchesSelection,
    PatchesExtraction,
    TensorflowModelTrain,
    TensorflowModelServe,
    ObjectDetection,
    TrainClassifierFromDeepFeatures,
    ImageClassifierFromDeepFeatures,
    SampleExtractionFromDeepFeatures,
    TrainVectorClassifier,
]
