"""otbtf:patchesselection"""

from qgis.core import (
    QgsProcessing,
    QgsProcessingParameterEnum,
    QgsProcessingParameterFeatureSink,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterLayer,
)

from otbtf_plugin.patches_selection import SET_NAMES, STRATEGIES, patches_selection

from .base import OtbtfAlgorithm
from .common import add_advanced, optional_number, raster_path, write_points_output

OUTPUTS = {"train": "OUTPUT_TRAIN", "valid": "OUTPUT_VALID", "test": "OUTPUT_TEST"}


class PatchesSelection(OtbtfAlgorithm):
    INPUT = "INPUT"
    PATCH_SIZE = "PATCH_SIZE"
    GRID_STEP = "GRID_STEP"

    NAME = "patchesselection"
    DISPLAY_NAME = "Patches selection"
    GROUP = "Patches"
    GROUP_ID = "patches"
    HELP = (
        "For semantic segmentation: lays a regular grid of patches over the reference raster "
        "(patch k starts at k x GRID_STEP pixels), keeps the patches that hold no nodata value "
        "and lie inside the mask, and splits them into training, validation and test point "
        "layers (each point is a patch centre: give the same PATCH_SIZE to "
        "otbtf:patchesextraction). No patch of one set shares a pixel with a patch of another: "
        "patches that would overlap another set are dropped, and the log says how many.\n\n"
        "STRATEGY: split (squares of grid cells shuffled with SEED and cut in the fractions "
        "TRAIN_FRACTION, VALID_FRACTION, TEST_FRACTION), chessboard (cells alternate training "
        "and validation), all (every patch for training), balanced (as split, after keeping as "
        "many patches for each class of the LABELS raster).\n\n"
        "Example: INPUT = an image, PATCH_SIZE = 64, GRID_STEP = 64 (no overlap), STRATEGY = split."
    )

    def initAlgorithm(self, config=None):
        self.addParameter(QgsProcessingParameterRasterLayer(self.INPUT, "Reference raster"))
        self.addParameter(
            QgsProcessingParameterNumber(
                self.PATCH_SIZE,
                "Patch size (pixels)",
                type=QgsProcessingParameterNumber.Integer,
                defaultValue=64,
                minValue=1,
            )
        )
        self.addParameter(
            QgsProcessingParameterNumber(
                self.GRID_STEP,
                "Grid step (pixels)",
                type=QgsProcessingParameterNumber.Integer,
                defaultValue=64,
                minValue=1,
            )
        )
        self.addParameter(QgsProcessingParameterEnum("STRATEGY", "Strategy", options=list(STRATEGIES), defaultValue=0))
        for name, label, default in (
            ("TRAIN_FRACTION", "Training fraction", 0.7),
            ("VALID_FRACTION", "Validation fraction", 0.15),
            ("TEST_FRACTION", "Test fraction", 0.15),
        ):
            self.addParameter(
                QgsProcessingParameterNumber(
                    name,
                    label,
                    type=QgsProcessingParameterNumber.Double,
                    defaultValue=default,
                    minValue=0.0,
                    maxValue=1.0,
                )
            )
        self.addParameter(QgsProcessingParameterRasterLayer("MASK", "Mask (0 = not usable)", optional=True))
        self.addParameter(
            QgsProcessingParameterRasterLayer("LABELS", "Label raster (strategy balanced)", optional=True)
        )
        self.addParameter(
            QgsProcessingParameterNumber(
                "SEED", "Random seed", type=QgsProcessingParameterNumber.Integer, defaultValue=0, minValue=0
            )
        )
        add_advanced(
            self,
            [
                QgsProcessingParameterNumber(
                    "NODATA",
                    "Nodata value (empty: the raster's own)",
                    type=QgsProcessingParameterNumber.Double,
                    optional=True,
                ),
                QgsProcessingParameterNumber(
                    "CELL",
                    "Cell size, in grid positions (empty: 4 patch widths)",
                    type=QgsProcessingParameterNumber.Integer,
                    optional=True,
                    minValue=1,
                ),
            ],
        )
        for set_name, output in OUTPUTS.items():
            self.addParameter(
                QgsProcessingParameterFeatureSink(
                    output, f"Patch centres: {set_name}", QgsProcessing.TypeVectorPoint, optional=set_name != "train"
                )
            )

    def processAlgorithm(self, parameters, context, feedback):
        fractions = tuple(
            self.parameterAsDouble(parameters, name, context)
            for name in ("TRAIN_FRACTION", "VALID_FRACTION", "TEST_FRACTION")
        )
        cell = optional_number(self, parameters, "CELL", context)
        result = self.run_engine(
            patches_selection,
            feedback,
            raster_path(self, parameters, self.INPUT, context),
            self.parameterAsInt(parameters, self.PATCH_SIZE, context),
            self.parameterAsInt(parameters, self.GRID_STEP, context),
            strategy=STRATEGIES[self.parameterAsEnum(parameters, "STRATEGY", context)],
            fractions=fractions,
            mask=raster_path(self, parameters, "MASK", context, required=False),
            nodata=optional_number(self, parameters, "NODATA", context),
            labels=raster_path(self, parameters, "LABELS", context, required=False),
            cell=int(cell) if cell else None,
            seed=self.parameterAsInt(parameters, "SEED", context),
        )
        crs = self.parameterAsRasterLayer(parameters, self.INPUT, context).crs()
        answer = {"COUNTS": result.counts(), "DROPPED_FOR_OVERLAP": result.dropped_for_overlap}
        for set_name in SET_NAMES:
            output = OUTPUTS[set_name]
            if parameters.get(output) is None and set_name != "train":
                continue
            x, y = result.points(set_name)
            answer[output] = write_points_output(
                self, parameters, output, context, crs, x, y, {"set": ([set_name] * len(x), "String")}
            )
        for set_name, n in result.counts().items():
            feedback.pushInfo(f"{set_name}: {n} patches")
        return answer
