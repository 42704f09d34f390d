"""otbtf:objectdetection"""

from qgis.core import (
    QgsProcessing,
    QgsProcessingParameterFile,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterLayer,
    QgsProcessingParameterVectorDestination,
)

from otbtf_plugin import packages
from otbtf_plugin.detection import DetectOptions, detect

from .base import OtbtfAlgorithm
from .common import add_advanced, add_device_parameter, device, memory_parameter, raster_path


class ObjectDetection(OtbtfAlgorithm):
    SOURCE = "SOURCE1"
    MODEL = "MODEL"
    CONFIDENCE = "CONFIDENCE"
    IOU = "IOU"
    OUTPUT = "OUTPUT"

    NAME = "objectdetection"
    DISPLAY_NAME = "Object detection"
    GROUP = "Serving"
    GROUP_ID = "serving"
    HELP = (
        "Finds objects (buildings, cars, trees...) with an ONNX detector carrying Deepness metadata "
        "(model_type Detector; Deepness' model zoo, YOLO models exported to ONNX) over a raster of any "
        "size, and writes one polygon per object.\n\n"
        "The detector's metadata says how: det_type (its output layout: YOLO_v5_or_v7_default, YOLO_v6, "
        "YOLO_v9, YOLO_Ultralytics, YOLO_Ultralytics_segmentation, YOLO_Ultralytics_obb), class_names, "
        "tiles_size and tiles_overlap (the raster is read in tiles of that size, overlapping by that "
        "percentage), standardization_mean / _std, det_conf and det_iou_thresh.\n\n"
        "CONFIDENCE: detections scoring below it are dropped (0: the model's det_conf). IOU: of two "
        "detections of one class overlapping by more than this (intersection over union), the weaker "
        "is dropped (0: the model's det_iou_thresh). Suppression runs over the whole raster, so an "
        "object seen by two tiles is one feature.\n\n"
        "OUTPUT: polygons in the raster's CRS with the fields class (the class name), class_id and "
        "confidence (0-1): the box's rectangle (turned for oriented boxes, the mask's outline for "
        "instance segmentation), the model's pixel coordinates mapped through the raster's "
        "geotransform.\n\n"
        "MEMORY_MB (advanced): the objects found are kept until they are merged, within a quarter of "
        "it; past that the run stops and says so (raise CONFIDENCE, or MEMORY_MB).\n\n"
        "Example: SOURCE1 = an orthophoto at the model's resolution, MODEL = a car detector of "
        "Deepness' zoo, OUTPUT = cars.gpkg."
    )

    def initAlgorithm(self, config=None):
        self.addParameter(QgsProcessingParameterRasterLayer(self.SOURCE, "Source 1"))
        self.addParameter(
            QgsProcessingParameterFile(self.MODEL, "Detector (.onnx with Deepness metadata)", extension="onnx")
        )
        for name, label in (
            (self.CONFIDENCE, "Confidence threshold (0: the model's det_conf)"),
            (self.IOU, "Suppression threshold, intersection over union (0: the model's det_iou_thresh)"),
        ):
            self.addParameter(
                QgsProcessingParameterNumber(
                    name,
                    label,
                    type=QgsProcessingParameterNumber.Double,
                    defaultValue=0.0,
                    minValue=0.0,
                    maxValue=1.0,
                    optional=True,  # empty, as 0: the model's own
                )
            )
        add_device_parameter(self)
        add_advanced(self, [memory_parameter()])
        self.addParameter(
            QgsProcessingParameterVectorDestination(self.OUTPUT, "Objects", QgsProcessing.TypeVectorPolygon)
        )

    def checkParameterValues(self, parameters, context):
        ok, message = super().checkParameterValues(parameters, context)
        if not ok:
            return ok, message
        missing = packages.requirement_message("onnx")
        return (False, missing) if missing else (True, "")

    def processAlgorithm(self, parameters, context, feedback):
        output = self.parameterAsOutputLayer(parameters, self.OUTPUT, context)
        options = DetectOptions(
            confidence=self.parameterAsDouble(parameters, self.CONFIDENCE, context),
            iou=self.parameterAsDouble(parameters, self.IOU, context),
            device=device(self, parameters, context),
            memory_mb=self.parameterAsInt(parameters, "MEMORY_MB", context),
        )
        result = self.run_engine(
            detect,
            feedback,
            raster_path(self, parameters, self.SOURCE, context),
            self.parameterAsFile(parameters, self.MODEL, context),
            output,
            options,
        )
        return {self.OUTPUT: output, "OBJECTS": result.objects, "TILES": result.tiles}
