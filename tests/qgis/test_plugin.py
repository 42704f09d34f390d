"""The plugin loads and unloads through QGIS' own plugin machinery."""

import importlib
import sys
import time

import qgis.utils
from qgis.core import QgsApplication
from qgis.PyQt.QtWidgets import QPushButton

from common import lock_with_tensorflow_everywhere, packages

PLUGIN = "otbtf"
ALGORITHM = "otbtf:polygonclassstatistics"


def registry():
    return QgsApplication.processingRegistry()


def start_desktop(monkeypatch, iface):
    # Modules of the plugin that other tests of this process imported themselves (importlib, as
    # test_tasks does) bypass QGIS' import hook, so unloading cannot know them: start without
    # them, so that what is checked after unloading is what the plugin loaded.
    for name in [m for m in sys.modules if m.startswith(PLUGIN + ".")]:
        del sys.modules[name]
    menu = []
    monkeypatch.setattr(iface, "addPluginToMenu", lambda name, action: menu.append((name, action)))
    monkeypatch.setattr(iface, "removePluginMenu", lambda name, action: menu.remove((name, action)))
    monkeypatch.setattr(iface, "addToolBarIcon", lambda action: menu.append(("toolbar", action)))
    monkeypatch.setattr(iface, "removeToolBarIcon", lambda action: menu.remove(("toolbar", action)))
    assert qgis.utils.loadPlugin(PLUGIN)
    assert qgis.utils.startPlugin(PLUGIN)
    return menu


def test_the_engine_is_loaded_once_under_one_name(plugin_path, unload_after):
    """QGIS loads the plugin as ``otbtf``; its provider uses the engine as ``otbtf_plugin``, the
    same modules the tests, scripts and Dask workers import (one GDAL lock, one of each)."""
    assert qgis.utils.loadPlugin(PLUGIN)
    assert qgis.utils.startProcessingPlugin(PLUGIN)
    base = importlib.import_module(f"{PLUGIN}.processing_provider.algorithms.base")
    outputs = importlib.import_module("otbtf_plugin.outputs")
    assert base.check_paths is outputs.check_paths
    assert not [name for name in sys.modules if name.startswith(f"{PLUGIN}.otbtf_plugin")]
    # Only that name is exposed: the plugin folder's other packages stay inside the plugin.
    finder = next(f for f in sys.meta_path if type(f).__name__ == "EngineFinder")
    assert finder.find_spec("plugin") is None and finder.find_spec("processing_provider") is None
    assert finder.find_spec("otbtf_plugin") is not None


def test_desktop_load_registers_provider_and_menu_then_unloads_clean(
    plugin_path, qgis_iface, monkeypatch, unload_after
):
    menu = start_desktop(monkeypatch, qgis_iface)
    provider = registry().providerById("otbtf")
    assert provider is not None and provider.name() == "OTBTF"
    assert registry().algorithmById(ALGORITHM) is not None
    assert sorted(action.text() for name, action in menu if name == "&otbtf") == [
        "Apply a model to a layer…",
        "Install dependencies for ONNX models only…",
        "Install dependencies…",
        "Install the GPU packages for ONNX models (NVIDIA)…",
        "Open the documentation",
    ]
    assert [action.text() for name, action in menu if name == "toolbar"] == ["Apply a model to a layer…"]

    assert qgis.utils.unloadPlugin(PLUGIN)
    assert registry().providerById("otbtf") is None
    assert registry().algorithmById(ALGORITHM) is None
    assert menu == []
    assert not [m for m in sys.modules if m == PLUGIN or m.startswith(PLUGIN + ".")]

    # Reloading works.
    start_desktop(monkeypatch, qgis_iface)
    assert registry().algorithmById(ALGORITHM) is not None
    assert qgis.utils.unloadPlugin(PLUGIN)
    assert registry().providerById("otbtf") is None


def test_headless_start_without_iface(plugin_path, monkeypatch, unload_after):
    """qgis_process: classFactory(None), then initProcessing only."""
    monkeypatch.setattr(qgis.utils, "iface", None)
    assert qgis.utils.loadPlugin(PLUGIN)
    assert qgis.utils.startProcessingPlugin(PLUGIN)
    assert qgis.utils.plugins[PLUGIN].iface is None
    assert registry().algorithmById(ALGORITHM) is not None
    assert qgis.utils.unloadPlugin(PLUGIN)
    assert registry().algorithmById(ALGORITHM) is None


def test_missing_tensorflow_gives_a_message_and_an_install_button(
    plugin_path, qgis_iface, monkeypatch, tmp_path, unload_after
):
    assert qgis.utils.loadPlugin(PLUGIN)
    installer = importlib.import_module(f"{PLUGIN}.plugin.installer")
    # Hide the installed packages: no folder to activate, none on sys.path.
    monkeypatch.setattr(installer, "SYSTEM_ROOT", tmp_path / "none")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "none"))
    monkeypatch.setattr(sys, "path", [p for p in sys.path if "/otbtf/python3" not in p])
    monkeypatch.setitem(sys.modules, "tensorflow", None)
    monkeypatch.setattr(packages, "REQUIREMENTS", lock_with_tensorflow_everywhere(tmp_path))  # as on Python 3.13
    bar = qgis_iface.messageBar()
    bar.clearWidgets()

    assert qgis.utils.startPlugin(PLUGIN)  # no exception escapes

    texts = [item.text() for item in bar.items()]
    assert any("TensorFlow models and training need tensorflow-cpu" in text for text in texts), texts
    buttons = [b for item in bar.items() for b in item.findChildren(QPushButton) if b.text() == "Install dependencies"]
    assert len(buttons) == 1
    onnx = [b for item in bar.items() for b in item.findChildren(QPushButton) if b.text() == "ONNX models only"]
    assert len(onnx) == 1 and "160 MB" in onnx[0].toolTip()
    # The algorithms that do not need TensorFlow still work.
    assert registry().algorithmById(ALGORITHM) is not None
    # After a successful install the warning is gone for good: the message bar is a stack, and it
    # used to come back when the success message timed out.
    plugin = qgis.utils.plugins[PLUGIN]
    monkeypatch.setattr(packages, "problems", lambda: [])
    plugin._installed(True, None)
    texts = [item.text() for item in bar.items()]
    assert not any("TensorFlow models and training need" in text for text in texts), texts
    if packages.no_release("tensorflow"):  # Python 3.14: what was installed, and what cannot be
        said = "Installed and ready, but TensorFlow models and training need tensorflow-cpu, which is not available"
        assert any(text.startswith(said) for text in bar.get_messages(0)), bar.messages
    else:
        assert any("ready" in text for text in bar.get_messages(3)), bar.messages


def test_install_action_runs_as_a_background_task(plugin_path, qgis_iface, monkeypatch, unload_after):
    assert qgis.utils.loadPlugin(PLUGIN)
    installer = importlib.import_module(f"{PLUGIN}.plugin.installer")
    calls = []

    def fake_install(system, log, step, cancelled, part, gpu):
        calls.append((system, part) + (("gpu",) if gpu else ()))
        for done in range(1, 4):
            step(done, 3)
        return plugin_path

    monkeypatch.setattr(installer, "install", fake_install)
    assert qgis.utils.startPlugin(PLUGIN)
    plugin = qgis.utils.plugins[PLUGIN]
    bar = qgis_iface.messageBar()
    plugin.install_dependencies()
    task = plugin.task
    assert task is not None
    deadline = time.monotonic() + 60
    while plugin.task is not None and time.monotonic() < deadline:
        QgsApplication.processEvents()
        time.sleep(0.01)
    assert plugin.task is None
    assert calls == [(False, "all")]  # per-user folder, not system-wide
    assert task.progress() == 100
    assert any("ready" in text for text in bar.get_messages(3)), bar.messages
    # The menu's ONNX entry (triggered as a user clicks it: Qt passes `checked`) installs that part.
    onnx = next(a for a in plugin.actions if a.text() == "Install dependencies for ONNX models only…")
    onnx.trigger()
    deadline = time.monotonic() + 60
    while plugin.task is not None and time.monotonic() < deadline:
        QgsApplication.processEvents()
        time.sleep(0.01)
    assert calls == [(False, "all"), (False, "onnx")]
    assert any("ONNX models are ready" in text for text in bar.get_messages(3)), bar.messages
    # The GPU entry: where the packages cannot run, it says why and installs nothing ...
    gpu = next(a for a in plugin.actions if a.text() == "Install the GPU packages for ONNX models (NVIDIA)…")
    monkeypatch.setattr(installer, "gpu_problem", lambda: "no NVIDIA driver is loaded on this machine")
    gpu.trigger()
    assert plugin.task is None and len(calls) == 2
    assert any("GPU packages were not installed: no NVIDIA driver" in text for text in bar.get_messages(1))
    # ... and where they can, installs them in the background
    monkeypatch.setattr(installer, "gpu_problem", lambda: None)
    gpu.trigger()
    deadline = time.monotonic() + 60
    while plugin.task is not None and time.monotonic() < deadline:
        QgsApplication.processEvents()
        time.sleep(0.01)
    assert calls[-1] == (False, "onnx", "gpu")
    assert any("GPU packages are installed" in text for text in bar.get_messages(3)), bar.messages
