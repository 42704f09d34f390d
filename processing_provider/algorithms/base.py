"""What every otbtf algorithm shares: grouping, icon, and the one place where
engine errors become QgsProcessingException."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import ClassVar

from qgis.core import QgsProcessingAlgorithm, QgsProcessingException
from qgis.PyQt.QtGui import QIcon

from otbtf_plugin.errors import EngineError
from otbtf_plugin.outputs import Output, check_paths
from otbtf_plugin.progress import sigterm_cancels

from ..feedback import FeedbackProgress
from ..paths import invalid_value_message, non_finite_message, run_inputs, run_outputs

ICON = Path(__file__).resolve().parent.parent.parent / "resources" / "icon.svg"


class OtbtfAlgorithm(QgsProcessingAlgorithm):
    GROUP = ""
    GROUP_ID = ""
    NAME = ""
    DISPLAY_NAME = ""
    HELP = ""
    # Folder outputs with a rule of the engine's (replaced whole, or only ours), by parameter.
    FOLDER_OUTPUTS: ClassVar[dict[str, Callable[[str], Output]]] = {}

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

    def paths_problem(self, parameters, context) -> str | None:
        """Why the run's outputs would lose the user's data (an output equal to an input or
        to another output, a folder that is not ours, a read-only file), or None."""
        try:
            check_paths(
                run_inputs(self, parameters, context), run_outputs(self, parameters, context, self.FOLDER_OUTPUTS)
            )
        except EngineError as err:
            return str(err)
        except OSError as err:  # the file system refused to look at a path: still one line, never an abort
            return f"cannot check {err.filename or 'a path'}: {err.strerror}; choose another path"
        return None

    def checkParameterValues(self, parameters, context):
        """Dialogs and ``processing.run``: refused before the run starts."""
        ok, message = super().checkParameterValues(parameters, context)
        if not ok:
            message = invalid_value_message(self, parameters, context) or message
        problem = self.values_problem(parameters, context) if ok else None
        return (False, problem) if problem else (ok, message)

    def values_problem(self, parameters, context) -> str | None:
        """A number that is nan or infinite, or outputs that would lose the user's data."""
        return non_finite_message(self, parameters, context) or self.paths_problem(parameters, context)

    def prepareAlgorithm(self, parameters, context, feedback):
        """Every run (model children and ``qgis_process`` too) checks its values and paths once more."""
        problem = self.values_problem(parameters, context)
        if problem:
            raise QgsProcessingException(problem)
        return True

    def run_engine(self, function, feedback, *args, **kwargs):
        """Call an engine function with progress/cancel; convert its errors once."""
        try:
            with sigterm_cancels():
                return function(*args, progress=FeedbackProgress(feedback), **kwargs)
        except EngineError as err:
            raise QgsProcessingException(str(err)) from err
