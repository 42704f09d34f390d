"""The engine changes nothing process-wide in the program that uses it (QGIS, a script):
GDAL/OGR/OSR exception modes, matplotlib's backend, signal handlers and import hooks are
as they were after importing every module and running the parts that use them."""

import subprocess
import sys

from common import POLYGONS, RGB, ROOT

CODE = f"""
import importlib, json, pkgutil, signal, sys
sys.path.insert(0, {str(ROOT)!r})
import matplotlib
from osgeo import gdal, ogr, osr

def state():
    return {{"gdal": gdal.GetUseExceptions(), "ogr": ogr.GetUseExceptions(), "osr": osr.GetUseExceptions(),
             "backend": matplotlib.get_backend(), "sigterm": str(signal.getsignal(signal.SIGTERM)),
             "our import hooks": [repr(f) for f in sys.meta_path if "otbtf" in type(f).__module__]}}

before = state()
import otbtf_plugin
for module in pkgutil.iter_modules(otbtf_plugin.__path__):
    importlib.import_module("otbtf_plugin." + module.name)
imported = state()
from otbtf_plugin.class_statistics import class_statistics
from otbtf_plugin.training.report import curves_png
class_statistics({str(RGB)!r}, {str(POLYGONS)!r}, "name")
curves_png({{"loss": [1.0, 0.5], "accuracy": [0.5, 0.9]}})
print(json.dumps([before, imported, state()]))
"""


def test_importing_and_running_the_engine_changes_no_process_wide_setting():
    out = subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    import json

    before, imported, after = json.loads(out.stdout.strip().splitlines()[-1])
    assert imported == before
    assert after == before
