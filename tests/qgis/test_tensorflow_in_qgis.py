"""TensorFlow inside a QGIS process must not crash QGIS (regression: TensorFlow's
bundled SQLite, loaded RTLD_GLOBAL, made QgsAuthManager crash on exit)."""

import os
import subprocess
import sys

from common import ROOT

SCRIPT = f"""
import sys
sys.path.insert(0, {str(ROOT)!r})
from qgis.core import QgsApplication
app = QgsApplication([], False)
app.initQgis()
from otbtf_plugin.model import tensorflow
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
