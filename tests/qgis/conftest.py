"""QGIS tests: the plugin is loaded as the package ``otbtf`` through QGIS' own
plugin machinery, from a plugins folder holding a link to this repository."""

import os
import sys

import pytest
import qgis.utils

from common import ROOT

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
PLUGIN = "otbtf"


@pytest.fixture(scope="session")
def plugin_path(tmp_path_factory):
    root = tmp_path_factory.mktemp("plugins")
    (root / PLUGIN).symlink_to(ROOT, target_is_directory=True)
    qgis.utils.plugin_paths.insert(0, str(root))
    sys.path.insert(0, str(root))
    qgis.utils.updateAvailablePlugins()
    yield root
    sys.path.remove(str(root))
    qgis.utils.plugin_paths.remove(str(root))


@pytest.fixture(autouse=True)
def repository_stays_on_sys_path():
    """QGIS' unloadPlugin takes the ``__path__`` of every package it unloads off ``sys.path``;
    here the plugins folder links to the repository, so the repository went too, and the Dask
    workers a later test spawned (they copy the parent's ``sys.path``) could not import the
    engine (seen on QGIS 3.40). Put back what a test's unloading took."""
    yield
    keep_repository_on_sys_path()


def keep_repository_on_sys_path() -> None:
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))


@pytest.fixture
def unload_after():
    yield
    if PLUGIN in qgis.utils.active_plugins:
        qgis.utils.unloadPlugin(PLUGIN)


@pytest.fixture(scope="module")
def provider_loaded(plugin_path, qgis_processing):
    """The plugin started headless (as qgis_process does), for processing.run tests."""
    assert qgis.utils.loadPlugin(PLUGIN)
    assert qgis.utils.startProcessingPlugin(PLUGIN)
    yield
    qgis.utils.unloadPlugin(PLUGIN)
    keep_repository_on_sys_path()
