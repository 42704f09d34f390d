"""Object detection: ONNX detectors with Deepness metadata over rasters of any size, objects
written as polygons (see :mod:`.run`)."""

from .detectors import Detector, is_detector, load_detector
from .run import DetectOptions, DetectResult, detect

__all__ = ["DetectOptions", "DetectResult", "Detector", "detect", "is_detector", "load_detector"]
