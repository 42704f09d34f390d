"""TensorFlow inside a QGIS process must not crash QGIS (regression: TensorFlow's
bundled SQLite, loaded RTLD_GLOBAL, made QgsAuthManager crash on exit)."""

import os
import subprocess
import sys

import pytest

from common import ROOT, needs_tensorflow

pytestmark = needs_tensorflow

SCRIPT = f"""
import sys
sys.path.insert(0, {str(ROOT)!r})
from qgis.core import QgsApplication
app = QgsApplication([], False)
app.initQgis()
from otbtf_plugin.models.loading import tensorflow
tf = tensorflow()
print(float(tf.reduce_sum(tf.ones(3))))
app.exitQgis()
print("exited")
"""


def test_qgis_exits_cleanly_after_tensorflow(tmp_path):
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen", QGIS_CUSTOM_CONFIG_PATH=str(tmp_path))
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split()[-2:] == ["3.0", "exited"]


DESKTOP_CODE = """
import traceback
from pathlib import Path
from qgis.PyQt.QtCore import QTimer
from qgis.core import QgsApplication
result = Path({result!r})
try:
    import qgis.utils
    assert "otbtf" in qgis.utils.active_plugins, qgis.utils.active_plugins
    import tensorflow as tf  # as a user types it in the Python console
    result.write_text("sum %s" % float(tf.reduce_sum(tf.ones(3))))
except BaseException:
    result.write_text(traceback.format_exc())
QTimer.singleShot(0, QgsApplication.instance().quit)
"""


def test_a_plain_import_tensorflow_in_qgis_desktop_does_not_abort_it(tmp_path):
    """In the qgis executable (which links protobuf and SQLite globally), a plain
    ``import tensorflow`` aborted QGIS (exit 134) before the plugin made every import of it
    take the safe path. Runs QGIS desktop under Xvfb with the plugin installed and enabled."""
    import shutil

    sys.path.insert(0, str(ROOT / "scripts"))
    import plugin_files

    if not shutil.which("xvfb-run") or not shutil.which("qgis"):
        pytest.fail("QGIS desktop and xvfb-run are needed: run make setup")
    config = tmp_path / "config"
    plugin_files.install(config)
    code, result = tmp_path / "code.py", tmp_path / "result.txt"
    code.write_text(DESKTOP_CODE.format(result=str(result)))
    env = dict(os.environ, QGIS_CUSTOM_CONFIG_PATH=str(config))
    env.pop("PYTHONPATH", None)
    env.pop("QT_QPA_PLATFORM", None)
    out = subprocess.run(
        ["xvfb-run", "-a", "qgis", "--noversioncheck", "--nologo", "--code", str(code)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert result.read_text() == "sum 3.0"
