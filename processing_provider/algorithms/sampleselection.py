"""otbtf:sampleselection"""

from qgis.core import (
    QgsProcessing,
    QgsProcessingParameterEnum,
    QgsProcessingParameterFeatureSink,
    QgsProcessingParameterNumber,
)

from otbtf_plugin.selection import SAMPLERS, STRATEGIES, sample_selection

from .base import OtbtfAlgorithm
from .common import add_ground_truth_parameters, ground_truth, optional_number, write_points_output


class SampleSelection(OtbtfAlgorithm):
    OUTPUT = "OUTPUT"
    STRATEGY = "STRATEGY"
    STRATEGY_VALUE = "STRATEGY_VALUE"
    SAMPLER = "SAMPLER"
    SEED = "SEED"

    NAME = "sampleselection"
    DISPLAY_NAME = "Sample selection"
    GROUP = "Sampling"
    GROUP_ID = "sampling"
    HELP = (
        "Chooses sample positions (pixel centres) per class inside the ground truth, for "
        "patches extraction or for classical classifiers.\n\n"
        "STRATEGY says how many samples per class: smallest (every class gets the count of "
        "the smallest class, the default), constant (STRATEGY_VALUE per class, capped at what "
        "exists), percent (STRATEGY_VALUE is a fraction: 0.5 keeps half of each class), total "
        "(STRATEGY_VALUE samples split in the classes' proportions), all.\n"
        "SAMPLER says which: periodic (evenly spread, deterministic) or random (SEED).\n\n"
        "Only pixels with no nodata value and inside the mask are candidates; overlapping "
        "polygons each give their own samples. The result never depends on tile size.\n\n"
        "Output: points at pixel centres, in the raster's CRS, with the class field and "
        "originfid (the id of the feature they come from). The results give the counts per "
        "class (COUNTS) and the pixels available per class (AVAILABLE).\n\n"
        "Example: on the Landsat 8 sample with FIELD = name, STRATEGY = smallest gives 81 "
        "samples in each of water, crop, tree and developed."
    )

    def initAlgorithm(self, config=None):
        add_ground_truth_parameters(self)
        self.addParameter(
            QgsProcessingParameterEnum(
                self.STRATEGY,
                "Strategy",
                options=list(STRATEGIES),
                defaultValue=0,
            )
        )
        self.addParameter(
            QgsProcessingParameterNumber(
                self.STRATEGY_VALUE,
                "Strategy value (constant: per class; percent: fraction 0-1; total: count)",
                type=QgsProcessingParameterNumber.Double,
                optional=True,
                minValue=0.0,
            )
        )
        self.addParameter(
            QgsProcessingParameterEnum(
                self.SAMPLER,
                "Sampler",
                options=list(SAMPLERS),
                defaultValue=0,
            )
        )
        self.addParameter(
            QgsProcessingParameterNumber(
                self.SEED,
                "Random seed (random sampler)",
                type=QgsProcessingParameterNumber.Integer,
                defaultValue=0,
                minValue=0,
            )
        )
        self.addParameter(
            QgsProcessingParameterFeatureSink(
                self.OUTPUT,
                "Samples",
                QgsProcessing.TypeVectorPoint,
            )
        )

    def processAlgorithm(self, parameters, context, feedback):
        truth = ground_truth(self, parameters, context, feedback)
        samples = self.run_engine(
            sample_selection,
            feedback,
            *truth.engine_args(),
            **truth.engine_kwargs(),
            strategy=STRATEGIES[self.parameterAsEnum(parameters, self.STRATEGY, context)],
            value=optional_number(self, parameters, self.STRATEGY_VALUE, context),
            sampler=SAMPLERS[self.parameterAsEnum(parameters, self.SAMPLER, context)],
            seed=self.parameterAsInt(parameters, self.SEED, context),
        )
        dest_id = write_points_output(
            self,
            parameters,
            self.OUTPUT,
            context,
            truth.crs,
            samples.x,
            samples.y,
            samples.columns(),
            samples.layer_metadata(),
        )
        available = {samples.class_names[c]: n for c, n in sorted(samples.available.items())}
        for name, count in samples.by_class().items():
            feedback.pushInfo(f"{name}: {count} samples of {available[name]} pixels")
        result = {self.OUTPUT: dest_id, "COUNTS": samples.by_class(), "AVAILABLE": available}
        if samples.string_classes:
            result["CLASS_CODES"] = {name: code for code, name in sorted(samples.class_names.items())}
        return result
