"""What every otbtf algorithm shares: grouping, icon, and the one place where
engine errors become QgsProcessingException."""

from __future__ import annotations

from pathlib import Path

from qgis.core import QgsProcessingAlgorithm, QgsProcessingException
from qgis.PyQt.QtGui import QIcon

from ...otbtf_plugin.errors import EngineError
from ..feedback import FeedbackProgress

ICON = Path(__file__).resolve().parent.parent.parent / "resources" / "icon.svg"


class OtbtfAlgorithm(QgsProcessingAlgorithm):
    GROUP = ""
    GROUP_ID = ""
    NAME = ""
    DISPLAY_NAME = ""
    HELP = ""

    def createInstance(self):
        return type(self)()

    def name(self) -> str:
        return self.NAME

    def displayName(self) -> str:
        return self.DISPLAY_NAME

    def group(self) -> str:
        return self.GROUP

    def groupId(self) -> str:
        return self.GROUP_ID

    def shortHelpString(self) -> str:
        return self.HELP

    def icon(self) -> QIcon:
        return QIcon(str(ICON))

    def run_engine(self, function, feedback, *args, **kwargs):
        """Call an engine function with progress/cancel; convert its errors once."""
        try:
            return function(*args, progress=FeedbackProgress(feedback), **kwargs)
        except EngineError as err:
            raise QgsProcessingException(str(err)) from err
