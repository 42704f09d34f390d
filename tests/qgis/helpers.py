"""Running qgis_process as a user does."""

import os
import shutil
import subprocess
from pathlib import Path

import pytest


def qgis_process_binary() -> str:
    # Debian 12's /usr/bin/qgis_process wrapper passes --noversioncheck, which
    # its qgis_process.bin refuses: call the binary itself where it exists.
    for name in ("qgis_process.bin", "qgis_process"):
        found = shutil.which(name) or (f"/usr/bin/{name}" if Path(f"/usr/bin/{name}").exists() else None)
        if found:
            return found
    pytest.fail("qgis_process not found: run make setup (Debian package qgis)")


def qgis_process_env(config_root: Path) -> dict:
    """The user's environment (no test tools) with the given QGIS profile folder."""
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen", QGIS_CUSTOM_CONFIG_PATH=str(config_root))
    env.pop("PYTHONPATH", None)
    return env


def run_qgis_process(config_root: Path, *args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [qgis_process_binary(), *args],
        capture_output=True,
        text=True,
        env=qgis_process_env(config_root),
        timeout=timeout,
    )
