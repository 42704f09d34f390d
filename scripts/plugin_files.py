#!/usr/bin/env python3
"""Package the plugin, or install it into a QGIS profile.

    python3 scripts/plugin_files.py package [DIST_DIR]
    python3 scripts/plugin_files.py install [--config-root DIR] [--profile NAME]

Both ship the same files: what QGIS needs to run the plugin, no tests, caches
or build leftovers, under one top folder named ``otbtf``.
"""

from __future__ import annotations

import argparse
import configparser
import os
import shutil
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PLUGIN_NAME = "otbtf"
SHIPPED = [
    "metadata.txt",
    "__init__.py",
    "LICENSE",
    "README.md",
    "requirements.txt",
    "requirements-gpu.txt",
    "otbtf_plugin",
    "processing_provider",
    "plugin",
    "resources",
]
EXCLUDED_PARTS = {"__pycache__", ".pytest_cache", ".ruff_cache", ".hypothesis"}
EXCLUDED_SUFFIXES = {".pyc", ".pyo", ".orig", ".rej", ".swp"}


def plugin_files(root: Path = ROOT) -> list[Path]:
    """Paths relative to ``root`` of every file the plugin ships, sorted."""
    found = []
    for name in SHIPPED:
        path = root / name
        candidates = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
        for file in candidates:
            rel = file.relative_to(root)
            if EXCLUDED_PARTS.intersection(rel.parts) or file.suffix in EXCLUDED_SUFFIXES:
                continue
            if any(part.startswith(".") for part in rel.parts):
                continue
            found.append(rel)
    return sorted(found)


def version(root: Path = ROOT) -> str:
    parser = configparser.ConfigParser()
    parser.read(root / "metadata.txt", encoding="utf-8")
    return parser.get("general", "version")


def package(dist: Path) -> Path:
    dist.mkdir(parents=True, exist_ok=True)
    final = dist / f"{PLUGIN_NAME}-{version()}.zip"
    tmp = final.with_name(final.name + ".partial")
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as archive:
        for rel in plugin_files():
            archive.write(ROOT / rel, f"{PLUGIN_NAME}/{rel.as_posix()}")
    os.replace(tmp, final)
    return final


def default_config_root() -> Path:
    custom = os.environ.get("QGIS_CUSTOM_CONFIG_PATH")
    if custom:
        return Path(custom)
    data_home = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(data_home) / "QGIS" / "QGIS3"


def enable_plugin(profile_dir: Path) -> None:
    """Mark the plugin enabled in the profile's QGIS3.ini (as the Plugin Manager does)."""
    ini = profile_dir / "QGIS" / "QGIS3.ini"
    ini.parent.mkdir(parents=True, exist_ok=True)
    parser = configparser.RawConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # keys are case-sensitive for QSettings
    if ini.is_file():
        parser.read(ini, encoding="utf-8")
    if not parser.has_section("PythonPlugins"):
        parser.add_section("PythonPlugins")
    parser.set("PythonPlugins", PLUGIN_NAME, "true")
    with open(ini, "w", encoding="utf-8") as out:
        parser.write(out, space_around_delimiters=False)


def install(config_root: Path, profile: str = "default") -> Path:
    """Copy the plugin into ``<config_root>/profiles/<profile>/python/plugins/otbtf``
    (replacing an older copy) and enable it."""
    profile_dir = config_root / "profiles" / profile
    plugins = profile_dir / "python" / "plugins"
    plugins.mkdir(parents=True, exist_ok=True)
    target = plugins / PLUGIN_NAME
    staging = plugins / f".{PLUGIN_NAME}.partial-{os.getpid()}"
    aside = plugins / f".{PLUGIN_NAME}.old-{os.getpid()}"
    for leftover in plugins.glob(f".{PLUGIN_NAME}.partial-*"):  # an install killed half-way
        shutil.rmtree(leftover, ignore_errors=True)
    for rel in plugin_files():
        (staging / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / rel, staging / rel)
    # Two renames: a QGIS starting meanwhile finds the old plugin whole, or the new one whole
    # (or, for an instant, none), never a folder being deleted or filled.
    if target.is_symlink() or target.is_file():
        target.unlink()
    elif target.exists():
        target.rename(aside)
    staging.rename(target)
    shutil.rmtree(aside, ignore_errors=True)
    enable_plugin(profile_dir)
    return target


def start_from_repository() -> None:
    """In a running QGIS application: load this repository as the plugin ``otbtf``
    through QGIS' own plugin machinery (a plugins folder holding a link to it)."""
    import tempfile

    import qgis.utils

    plugins = Path(tempfile.mkdtemp(prefix="otbtf-plugins-"))
    (plugins / PLUGIN_NAME).symlink_to(ROOT, target_is_directory=True)
    sys.path.insert(0, str(plugins))
    qgis.utils.plugin_paths.insert(0, str(plugins))
    qgis.utils.updateAvailablePlugins()
    if not (qgis.utils.loadPlugin(PLUGIN_NAME) and qgis.utils.startProcessingPlugin(PLUGIN_NAME)):
        raise SystemExit("the otbtf plugin did not load (see the messages above)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    pkg = sub.add_parser("package", help="build dist/otbtf-VERSION.zip")
    pkg.add_argument("dist", nargs="?", type=Path, default=ROOT / "dist")
    inst = sub.add_parser("install", help="install into a QGIS profile and enable it")
    inst.add_argument("--config-root", type=Path, default=None)
    inst.add_argument("--profile", default="default")
    args = parser.parse_args(argv)
    if args.command == "package":
        print(package(args.dist))
    else:
        print(install(args.config_root or default_config_root(), args.profile))
    return 0


if __name__ == "__main__":
    sys.exit(main())
