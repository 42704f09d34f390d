"""Paths and reference values shared by the tests."""

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "data"
LANDSAT = DATA / "landsat8"
RGB = LANDSAT / "LC08_224078_20200518_rgb_crop.tif"
POLYGONS = LANDSAT / "LC08_224078_20200518_polygons.gpkg"
POINTS = LANDSAT / "LC08_224078_20200518_points.gpkg"
NC = DATA / "nc_landsat7"  # real, hard: 34 polygons, 7 classes (data/README.md)
NC_IMAGE = NC / "landsat_multiband.tif"
NC_POLYGONS = NC / "landsat96_polygons.gpkg"

# Class counts of otbcli_PolygonClassStatistics (Orfeo ToolBox, Debian 12) on the
# full scene LC08_224078_20200518_rgb.tif with the polygons, field "name".
OTB_COUNTS = {"crop": 192, "developed": 81, "tree": 198, "water": 212}

# Engine tests import ``otbtf_plugin`` from the repository root.
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# Tests import keras/TensorFlow directly: every such import takes the plugin's safe path
# (otbtf_plugin.models.runtimes, as inside QGIS), so that it cannot clash with QGIS' libraries. It is
# loaded by the tests that need it (pytest.importorskip), not by every test process: a test
# of the geometry starts in a second, not in the 8 s TensorFlow takes to load.
from otbtf_plugin.models.runtimes import protect_tensorflow_imports  # noqa: E402

protect_tensorflow_imports()

from otbtf_plugin import packages  # noqa: E402

# TensorFlow has no release for some Pythons (3.14: QGIS 3.44 on Debian unstable). There the tests
# of what needs it are skipped, saying why; elsewhere a missing TensorFlow fails them (make setup
# installs it).
needs_tensorflow = pytest.mark.skipif(
    packages.no_release("tensorflow") is not None,
    reason=f"TensorFlow has no release for Python {sys.version_info.major}.{sys.version_info.minor}",
)


def lock_with_tensorflow_everywhere(folder: Path) -> Path:
    """``requirements.txt`` with TensorFlow's packages pinned for every Python, 3.14 included,
    written into ``folder``: a test of what the plugin says of a missing TensorFlow gives the
    same on every Python when ``packages.REQUIREMENTS`` is set to it."""
    lock = folder / "requirements.txt"
    lock.write_text(packages.REQUIREMENTS.read_text(encoding="utf-8").replace(' ; python_version < "3.14"', ""))
    return lock


class CancelAfter:
    """A progress object that asks to stop once ``steps`` steps were reported
    (``steps=0``: at once), for the cancel tests."""

    def __init__(self, steps: int = 0):
        self.steps, self.done = steps, 0

    def step(self, done, total):
        self.done = done

    def cancelled(self):
        return self.done >= self.steps

    def info(self, message):
        pass


class Log(CancelAfter):
    """A progress object that keeps the log lines (``info``) and is never cancelled."""

    def __init__(self):
        super().__init__(10**9)
        self.lines: list[str] = []

    def info(self, message):
        self.lines.append(message)

    def warn(self, message):
        self.lines.append("warning: " + message)


def write_points(path, xy, classes=None, epsg=32621, wkt=None, field="cls", kind="Integer"):
    """Points in a GeoPackage, with ``classes`` in ``field`` of OGR type ``kind`` (Integer,
    Integer64, Real), in the CRS ``wkt`` or ``epsg``."""
    from osgeo import ogr, osr

    ds = ogr.GetDriverByName("GPKG").CreateDataSource(str(path))
    srs = osr.SpatialReference()
    if wkt:
        srs.ImportFromWkt(wkt)
    else:
        srs.ImportFromEPSG(epsg)
    layer = ds.CreateLayer("points", srs, ogr.wkbPoint)
    layer.CreateField(ogr.FieldDefn(field, getattr(ogr, f"OFT{kind}")))
    cast = float if kind == "Real" else int
    for k, (x, y) in enumerate(xy):
        feature = ogr.Feature(layer.GetLayerDefn())
        feature.SetField(field, cast(classes[k]) if classes is not None else 0)
        point = ogr.Geometry(ogr.wkbPoint)
        point.AddPoint_2D(float(x), float(y))
        feature.SetGeometry(point)
        layer.CreateFeature(feature)
    ds = None
    return path


def fake_model_folder(path, *extra):
    """A model folder as training writes it (looked at, never loaded), plus the user's
    ``extra`` files."""
    path.mkdir()
    (path / "otbtf_model.json").write_text('{"format": "otbtf-qgis model 1"}')
    (path / "savedmodel").mkdir()
    (path / "savedmodel" / "saved_model.pb").write_bytes(b"pb")
    (path / "model.keras").write_bytes(b"keras")
    for name in extra:
        (path / name).write_text("the user's\n")
    return path
