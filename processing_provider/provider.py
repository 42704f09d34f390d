"""The ``otbtf`` Processing provider."""

from pathlib import Path

from qgis.core import QgsProcessingProvider
from qgis.PyQt.QtGui import QIcon

from .algorithms import ALGORITHMS

ICON = Path(__file__).resolve().parent.parent / "resources" / "icon.svg"


class OtbtfProvider(QgsProcessingProvider):
    def id(self) -> str:
        return "otbtf"

    def name(self) -> str:
        return "OTBTF"

    def longName(self) -> str:
        return "OTBTF: deep learning on rasters with TensorFlow"

    def icon(self) -> QIcon:
        return QIcon(str(ICON))

    def svgIconPath(self) -> str:
        return str(ICON)

    def supportedOutputRasterLayerExtensions(self) -> list[str]:
        """Rasters are written as GeoTIFF: the dialogs offer no other format."""
        return ["tif", "tiff"]

    def loadAlgorithms(self) -> None:
        for algorithm in ALGORITHMS:
            self.addAlgorithm(algorithm())
