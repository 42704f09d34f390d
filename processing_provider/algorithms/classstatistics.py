"""otbtf:polygonclassstatistics"""

from qgis.core import QgsProcessingParameterFileDestination

from otbtf_plugin.class_statistics import class_statistics

from .base import OtbtfAlgorithm
from .common import add_ground_truth_parameters, ground_truth


class PolygonClassStatistics(OtbtfAlgorithm):
    OUTPUT = "OUTPUT"

    NAME = "polygonclassstatistics"
    DISPLAY_NAME = "Polygon class statistics"
    GROUP = "Sampling"
    GROUP_ID = "sampling"
    HELP = (
        "Counts, per class and per feature, the raster pixels that the ground truth covers: "
        "a polygon counts the pixels whose centre lies inside it, a point the pixel that "
        "contains it. Pixels holding the raster's nodata value in any band, or outside the "
        "mask (mask value 0), are not counted. The vector is reprojected to the raster's CRS "
        "if needed; the class field may hold integers or text.\n\n"
        "Output: a CSV table with columns class,count. The results also give the counts per "
        "class (COUNTS), per feature id (FEATURE_COUNTS) and the number of features that lie "
        "outside the raster (OUTSIDE).\n\n"
        "Example: INPUT = a Landsat 8 scene, VECTOR = land cover polygons, FIELD = name "
        "gives water 212, crop 192, tree 198, developed 81. Use these counts to choose the "
        "sample selection strategy."
    )

    def initAlgorithm(self, config=None):
        add_ground_truth_parameters(self)
        self.addParameter(
            QgsProcessingParameterFileDestination(
                self.OUTPUT,
                "Class statistics",
                "CSV files (*.csv)",
            )
        )

    def processAlgorithm(self, parameters, context, feedback):
        truth = ground_truth(self, parameters, context, feedback)
        output = self.parameterAsFileOutput(parameters, self.OUTPUT, context)
        stats = self.run_engine(class_statistics, feedback, *truth.engine_args(), **truth.engine_kwargs())
        stats_csv = self.run_engine(lambda progress: stats.write_csv(output), feedback)
        for name, count in stats.by_class().items():
            feedback.pushInfo(f"{name}: {count}")
        return {
            self.OUTPUT: str(stats_csv),
            "COUNTS": stats.by_class(),
            "FEATURE_COUNTS": {str(fid): n for fid, n in stats.feature_counts.items()},
            "OUTSIDE": stats.outside,
        }
