"""otbtf:patchesextraction"""

from typing import Any

from qgis.core import (
    QgsProcessing,
    QgsProcessingException,
    QgsProcessingParameterFeatureSink,
    QgsProcessingParameterFeatureSource,
    QgsProcessingParameterField,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterDestination,
    QgsProcessingUtils,
)

from otbtf_plugin.extraction import PatchSource, extract_patches

from .base import OtbtfAlgorithm
from .common import add_source_parameters, optional_number, raster_path, vector_path, write_points_output

MAX_SOURCES = 4


class PatchesExtraction(OtbtfAlgorithm):
    VECTOR = "VECTOR"
    FIELD = "FIELD"
    OUTPUT_LABELS = "OUTPUT_LABELS"
    OUTPUT_POINTS = "OUTPUT_POINTS"

    NAME = "patchesextraction"
    DISPLAY_NAME = "Patches extraction"
    GROUP = "Patches"
    GROUP_ID = "patches"
    HELP = (
        "Extracts one patch per point from each source raster, into patches images that "
        "otbtf and otbtf:tensorflowmodeltrain read: patches stacked in rows (width = patch "
        "width, height = number of patches x patch height), with the source's bands and pixel "
        "type.\n\n"
        "Each point gives, in each source, the patch centred on the pixel that contains it: for "
        "a patch of 16 px, 8 pixels before that pixel and 7 after. Sources may have different "
        "resolutions: give patch sizes in the ratio of their pixel sizes (16 px at 30 m with "
        "8 px at 60 m) to cover the same ground. A point is kept only if its patch lies entirely "
        "inside every source and holds no nodata value; the log and the REJECTED result count "
        "each reason.\n\n"
        "With FIELD, OUTPUT_LABELS is a labels image (one pixel per patch, the class value; text "
        "classes get codes 1, 2, ... in sorted order, given in CLASS_CODES; a real field gives its "
        "values as float32, targets for a regressor). OUTPUT_POINTS "
        "optionally gets the points that were kept, with their patch index.\n\n"
        "Example: SOURCE1 = the Landsat 8 sample, PATCH_SIZE1 = 16, VECTOR = the output of "
        "otbtf:sampleselection, FIELD = name."
    )

    def initAlgorithm(self, config=None):
        add_source_parameters(
            self,
            MAX_SOURCES,
            "PATCH_SIZE",
            "Patch size of source {n} (pixels)",
            16,
            1,
            lambda n: [
                QgsProcessingParameterNumber(
                    f"PATCH_HEIGHT{n}",
                    f"Patch height of source {n} (pixels; empty: square)",
                    type=QgsProcessingParameterNumber.Integer,
                    minValue=1,
                    optional=True,
                )
            ],
        )
        self.addParameter(
            QgsProcessingParameterFeatureSource(
                self.VECTOR,
                "Points (patch centres)",
                [QgsProcessing.TypeVectorPoint],
            )
        )
        self.addParameter(
            QgsProcessingParameterField(
                self.FIELD,
                "Class field, or a numeric field of values to regress (for the labels image)",
                parentLayerParameterName=self.VECTOR,
                type=QgsProcessingParameterField.Any,
                optional=True,
            )
        )
        for n in range(1, MAX_SOURCES + 1):
            self.addParameter(
                QgsProcessingParameterRasterDestination(
                    f"OUTPUT{n}",
                    f"Patches image of source {n}",
                    optional=n > 1,
                    createByDefault=n == 1,
                )
            )
        self.addParameter(
            QgsProcessingParameterRasterDestination(
                self.OUTPUT_LABELS,
                "Labels image",
                optional=True,
                createByDefault=True,
            )
        )
        self.addParameter(
            QgsProcessingParameterFeatureSink(
                self.OUTPUT_POINTS,
                "Points kept, with their patch index",
                QgsProcessing.TypeVectorPoint,
                optional=True,
                createByDefault=False,
            )
        )

    def processAlgorithm(self, parameters, context, feedback):
        sources, outputs, names = [], [], []
        for n in range(1, MAX_SOURCES + 1):
            path = raster_path(self, parameters, f"SOURCE{n}", context, required=n == 1)
            if path is None:
                continue
            size = self.parameterAsInt(parameters, f"PATCH_SIZE{n}", context)
            if size < 1:
                raise QgsProcessingException(f"PATCH_SIZE{n}: give the patch size of SOURCE{n} (e.g. 16)")
            height = optional_number(self, parameters, f"PATCH_HEIGHT{n}", context)
            sources.append(
                PatchSource(
                    path,
                    size,
                    int(height) if height else None,
                    optional_number(self, parameters, f"NODATA{n}", context),
                )
            )
            output = self.parameterAsOutputLayer(
                parameters, f"OUTPUT{n}", context
            ) or QgsProcessingUtils.generateTempFilename(f"patches{n}.tif")
            outputs.append(output)
            names.append(f"OUTPUT{n}")
        vector, layer = vector_path(self, parameters, self.VECTOR, context, feedback)
        field = self.parameterAsString(parameters, self.FIELD, context) or None
        labels = self.parameterAsOutputLayer(parameters, self.OUTPUT_LABELS, context) if field else None
        if field and not labels:
            labels = QgsProcessingUtils.generateTempFilename("labels.tif")
        result = self.run_engine(
            extract_patches, feedback, sources, vector, outputs, field, labels_output=labels, layer=layer
        )
        answer: dict[str, Any] = {name: str(path) for name, path in zip(names, result.outputs, strict=True)}
        if result.labels:
            answer[self.OUTPUT_LABELS] = str(result.labels)
        answer["ACCEPTED"] = result.accepted
        answer["REJECTED"] = dict(result.rejected)
        if result.string_classes:
            answer["CLASS_CODES"] = {name: code for code, name in sorted(result.class_names.items())}
        if parameters.get(self.OUTPUT_POINTS):
            answer[self.OUTPUT_POINTS] = self._write_points(parameters, context, result, sources)
        return answer

    def _write_points(self, parameters, context, result, sources):
        columns = {}
        if result.field:
            classes = [result.class_names[c] if result.string_classes else c for c in result.codes.tolist()]
            kind = "String" if result.string_classes else "Real" if result.codes.dtype.kind == "f" else "Integer64"
            columns[result.field] = (classes, kind)
        columns["originfid"] = (result.fids.tolist(), "Integer64")
        columns["patch_index"] = (list(range(len(result.fids))), "Integer64")
        crs = self.parameterAsRasterLayer(parameters, "SOURCE1", context).crs()
        return write_points_output(self, parameters, self.OUTPUT_POINTS, context, crs, result.x, result.y, columns)
