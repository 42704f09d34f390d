"""The QGIS plugin object: registers the Processing provider, adds the menu,
checks the Python dependencies and offers to install them."""

from __future__ import annotations

from pathlib import Path

from qgis.core import Qgis, QgsApplication, QgsMessageLog, QgsTask
from qgis.PyQt.QtCore import QUrl
from qgis.PyQt.QtGui import QDesktopServices, QIcon
from qgis.PyQt.QtWidgets import QPushButton

try:  # Qt 6 (QGIS 4) moved QAction to QtGui
    from qgis.PyQt.QtGui import QAction
except ImportError:  # Qt 5
    from qgis.PyQt.QtWidgets import QAction

from otbtf_plugin import packages
from otbtf_plugin.errors import EngineError
from otbtf_plugin.models import runtimes

# "from package import module": QGIS' import hook records both, and unloads both.
from ..processing_provider import provider
from . import installer

PLUGIN_DIR = Path(__file__).resolve().parent.parent
MENU = "&otbtf"
LOG_TAG = "otbtf"
DOCS_URL = "https://github.com/otbtf-qgis/otbtf-qgis#readme"


class InstallDependenciesTask(QgsTask):
    """Installs the pinned packages (all, or a part: ``installer.PARTS``) for this user with pip,
    in the background."""

    def __init__(self, on_done=None, part: str = "all", gpu: bool = False):
        what = installer.PARTS[part][0] + (", on an NVIDIA GPU" if gpu else "")
        super().__init__(f"Install otbtf dependencies ({what})", QgsTask.CanCancel)
        self.on_done = on_done
        self.part = part
        self.gpu = gpu
        self.error: str | None = None
        self.target: Path | None = None

    def run(self) -> bool:
        try:
            self.target = installer.install(
                system=False,
                log=lambda line: QgsMessageLog.logMessage(line, LOG_TAG, Qgis.Info),
                step=lambda done, total: self.setProgress(100.0 * done / max(total, 1)),
                cancelled=self.isCanceled,
                part=self.part,
                gpu=self.gpu,
            )
        except EngineError as err:
            self.error = str(err)
            return False
        return True

    def finished(self, result: bool) -> None:
        if self.on_done is not None:
            self.on_done(result, self.error)


class OtbtfPlugin:
    def __init__(self, iface=None):
        self.iface = iface
        self.provider: provider.OtbtfProvider | None = None
        self.actions: list[QAction] = []
        self.toolbar_actions: list[QAction] = []
        self.task: InstallDependenciesTask | None = None
        self.serve_tasks: list = []  # kept alive until they end
        # The entry point activated the installed folders when QGIS imported the plugin; a
        # folder installed since (another profile, a shell) is added here.
        installer.activate()
        # A plain "import tensorflow" (console, other plugins, scripts) would abort QGIS: from
        # now on every import of it takes the safe path.
        runtimes.protect_tensorflow_imports()
        self.missing_message = None  # the message bar entry offering the install
        if not runtimes.isolate_tensorflow_symbols():
            QgsMessageLog.logMessage(
                "TensorFlow was loaded before the otbtf plugin, with its symbols global: QGIS may crash "
                "when it closes. Disable the plugin that loads TensorFlow at start-up.",
                LOG_TAG,
                Qgis.Warning,
            )

    # -- Processing (also called alone by qgis_process) ---------------------
    def initProcessing(self) -> None:
        if self.provider is None:
            self.provider = provider.OtbtfProvider()
            QgsApplication.processingRegistry().addProvider(self.provider)

    # -- Desktop -------------------------------------------------------------
    def initGui(self) -> None:
        self.initProcessing()
        if self.iface is None:
            return
        icon = QIcon(str(PLUGIN_DIR / "resources" / "icon.svg"))
        apply = self._add_action(icon, "Apply a model to a layer…", self.apply_model)
        self.iface.addToolBarIcon(apply)
        self.toolbar_actions.append(apply)
        self._add_action(icon, "Install dependencies…", self.install_dependencies)
        self._add_action(icon, "Install dependencies for ONNX models only…", self.install_onnx_dependencies)
        self._add_action(icon, "Install the GPU packages for ONNX models (NVIDIA)…", self.install_gpu_dependencies)
        self._add_action(icon, "Open the documentation", self.open_documentation)
        for line in packages.unavailable():  # no install can help: the log says it, once per start
            QgsMessageLog.logMessage(line, LOG_TAG, Qgis.Info)
        problems = packages.problems()
        if problems:
            self.show_missing_dependencies(problems)

    def _add_action(self, icon: QIcon, text: str, slot) -> QAction:
        action = QAction(icon, text, self.iface.mainWindow())
        action.setObjectName("otbtf_" + "".join(c for c in text.lower() if c.isalnum()))
        action.triggered.connect(slot)
        self.iface.addPluginToMenu(MENU, action)
        self.actions.append(action)
        return action

    def unload(self) -> None:
        for action in self.toolbar_actions:
            if self.iface is not None:
                self.iface.removeToolBarIcon(action)
        self.toolbar_actions = []
        for action in self.actions:
            if self.iface is not None:
                self.iface.removePluginMenu(MENU, action)
            action.deleteLater()
        self.actions = []
        if self.provider is not None:
            QgsApplication.processingRegistry().removeProvider(self.provider)
            self.provider = None
        runtimes.unprotect_tensorflow_imports()

    # -- Dependencies --------------------------------------------------------
    def show_missing_dependencies(self, problems: list[str]) -> None:
        text = "; ".join(problems) + ". The deep learning algorithms need them."
        QgsMessageLog.logMessage(text, LOG_TAG, Qgis.Warning)
        if self.iface is None:
            return
        bar = self.iface.messageBar()
        widget = bar.createMessage("otbtf", text)
        button = QPushButton("Install dependencies")
        button.setObjectName("otbtf_install_button")
        button.setToolTip(installer.PARTS["all"][0] + " (about 2 GB installed)")
        button.clicked.connect(self.install_dependencies)
        widget.layout().addWidget(button)
        onnx = QPushButton("ONNX models only")
        onnx.setObjectName("otbtf_install_onnx_button")
        onnx.setToolTip("onnxruntime, about 160 MB installed: serving .onnx files (Deepness' models, PyTorch exports)")
        onnx.clicked.connect(self.install_onnx_dependencies)
        widget.layout().addWidget(onnx)
        bar.pushWidget(widget, Qgis.Warning)
        self.missing_message = widget

    def install_dependencies(self) -> None:
        """Everything (the menu entry and the message bar's button; no argument: Qt passes
        ``checked`` to slots that take one)."""
        self._install("all")

    def install_onnx_dependencies(self) -> None:
        self._install("onnx")

    def install_gpu_dependencies(self) -> None:
        """onnxruntime's CUDA build and the CUDA libraries (about 2 GB), instead of its CPU build,
        where they exist (Linux x86_64 with an NVIDIA driver); elsewhere, why not, plainly."""
        problem = installer.gpu_problem()
        if problem:
            self._notify(f"The GPU packages were not installed: {problem}.", Qgis.Warning)
            return
        self._install("onnx", gpu=True)  # a whole install stays whole, with the GPU build

    def _install(self, part: str, gpu: bool = False) -> None:
        if self.task is not None:
            return
        self.task = InstallDependenciesTask(
            on_done=lambda ok, error: self._installed(ok, error, part, gpu), part=part, gpu=gpu
        )
        QgsApplication.taskManager().addTask(self.task)
        what = installer.PARTS[part][0] + (" with the GPU packages" if gpu else "")
        self._notify(f"Installing {what} in the background (see the task manager)…", Qgis.Info)

    def _installed(self, ok: bool, error: str | None, part: str = "all", gpu: bool = False) -> None:
        self.task = None
        if not ok:
            self._notify(f"Installing the dependencies failed: {error}", Qgis.Critical)
            return
        if gpu:
            self._notify(
                "The GPU packages are installed: ONNX models run on the GPU with DEVICE auto or gpu (restart QGIS "
                "if a model already ran in this session; the log names the device of each run).",
                Qgis.Success,
            )
            return
        remaining = packages.problems() if part == "all" else packages.missing("onnx")
        if remaining:
            self._notify("; ".join(remaining), Qgis.Warning)
            return
        if part != "all":
            self._notify("ONNX models are ready; TensorFlow and the rest: Install dependencies.", Qgis.Success)
            return
        # The message bar is a stack: the warning would come back when the next message times out.
        if self.missing_message is not None and self.iface is not None:
            self.iface.messageBar().popWidget(self.missing_message)
        self.missing_message = None
        left_out = packages.unavailable()
        if left_out:
            self._notify("Installed and ready, but " + "; ".join(left_out), Qgis.Info)
            return
        self._notify("TensorFlow is installed and ready.", Qgis.Success)

    def _notify(self, text: str, level) -> None:
        QgsMessageLog.logMessage(text, LOG_TAG, level)
        if self.iface is not None:
            self.iface.messageBar().pushMessage("otbtf", text, level=level)

    def apply_model(self) -> None:
        from .apply_model import apply_model

        task = apply_model(self.iface)
        if task is not None:
            self.serve_tasks.append(task)
            task.executed.connect(lambda *_: self.serve_tasks.remove(task) if task in self.serve_tasks else None)

    def open_documentation(self) -> None:
        QDesktopServices.openUrl(QUrl(DOCS_URL))
