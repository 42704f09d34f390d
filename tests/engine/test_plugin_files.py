"""The plugin zip and metadata, as the QGIS plugin repository requires them."""

import configparser
import sys
import zipfile
from pathlib import Path

from common import ROOT

sys.path.insert(0, str(ROOT / "scripts"))
import plugin_files

REQUIRED_METADATA = [
    "name",
    "qgisMinimumVersion",
    "description",
    "about",
    "version",
    "author",
    "email",
    "repository",
    "tracker",
    "homepage",
    "category",
    "tags",
    "icon",
    "hasProcessingProvider",
]


def test_metadata_is_complete():
    parser = configparser.ConfigParser()
    parser.read(ROOT / "metadata.txt", encoding="utf-8")
    general = parser["general"]
    for key in REQUIRED_METADATA:
        assert general.get(key, "").strip(), key
    assert general["qgisMinimumVersion"] == "3.22"
    assert general["hasProcessingProvider"] == "yes"
    assert (ROOT / general["icon"]).is_file()
    import otbtf_plugin

    assert general["version"] == otbtf_plugin.__version__


def test_zip_has_one_top_folder_and_no_leftovers(tmp_path):
    (ROOT / "otbtf_plugin" / "__pycache__").mkdir(exist_ok=True)  # must not be shipped
    path = plugin_files.package(tmp_path)
    assert path.name == f"otbtf-{plugin_files.version()}.zip"
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
        assert archive.testzip() is None
    assert {n.split("/")[0] for n in names} == {"otbtf"}
    for required in (
        "otbtf/metadata.txt",
        "otbtf/__init__.py",
        "otbtf/LICENSE",
        "otbtf/requirements.txt",
        "otbtf/resources/icon.png",
        "otbtf/otbtf_plugin/grid.py",
        "otbtf/processing_provider/provider.py",
    ):
        assert required in names
    for name in names:
        parts = name.split("/")
        assert "tests" not in parts and "__pycache__" not in parts and parts[1] != "data", name
        assert not name.endswith((".pyc", ".partial")), name
        assert not any(p.startswith(".") for p in parts), name
        # the plugin repository refuses binaries: no compiled code, no model weights
        assert not name.lower().endswith((".so", ".pyd", ".dll", ".dylib", ".exe", ".onnx", ".keras", ".h5")), name
    assert "otbtf/requirements-gpu.txt" in names
    assert path.stat().st_size < 20 * 2**20  # the repository's limit is 25 MB
    assert [p.name for p in tmp_path.iterdir()] == [path.name]


def test_enable_plugin_keeps_other_settings(tmp_path):
    ini = tmp_path / "QGIS" / "QGIS3.ini"
    ini.parent.mkdir()
    ini.write_text("[PythonPlugins]\nprocessing=true\n\n[locale]\nuserLocale=fr\n")
    plugin_files.enable_plugin(tmp_path)
    parser = configparser.RawConfigParser()
    parser.optionxform = str
    parser.read(ini)
    assert parser["PythonPlugins"]["otbtf"] == "true"
    assert parser["PythonPlugins"]["processing"] == "true"
    assert parser["locale"]["userLocale"] == "fr"


def test_install_swaps_whole_plugins(tmp_path, monkeypatch):
    """make install used to delete the installed plugin file by file before moving the new
    one in: a QGIS starting then saw half a plugin. The old copy is now renamed aside whole,
    and only then deleted."""
    first = plugin_files.install(tmp_path)
    (first / "stale.py").write_text("from an older version\n")
    deleted: list[str] = []
    real_rmtree = plugin_files.shutil.rmtree

    def watched(path, *args, **kwargs):
        deleted.append(Path(path).name)
        assert Path(path) != first, "the installed plugin was deleted in place"
        return real_rmtree(path, *args, **kwargs)

    monkeypatch.setattr(plugin_files.shutil, "rmtree", watched)
    second = plugin_files.install(tmp_path)
    assert second == first and not (second / "stale.py").exists() and (second / "__init__.py").is_file()
    assert [name for name in deleted if name.startswith(".otbtf.old-")]
    assert sorted(p.name for p in second.parent.iterdir()) == ["otbtf"]
