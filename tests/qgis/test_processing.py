"""Algorithms run through processing.run, as from the PyQGIS console."""

import csv

import processing
import pytest
from qgis.core import QgsFeatureRequest, QgsProcessingException, QgsVectorLayer

from common import OTB_COUNTS, POINTS, POLYGONS, RGB

pytestmark = pytest.mark.usefixtures("provider_loaded")


def test_polygon_class_statistics(tmp_path):
    out = tmp_path / "stats.csv"
    result = processing.run("otbtf:polygonclassstatistics", {
        "INPUT": str(RGB), "VECTOR": str(POLYGONS), "FIELD": "name", "OUTPUT": str(out),
    })
    assert result["COUNTS"] == OTB_COUNTS
    assert result["OUTSIDE"] == 0
    assert result["FEATURE_COUNTS"] == {"1": 212, "2": 192, "3": 198, "4": 81}
    with open(result["OUTPUT"], newline="") as f:
        rows = list(csv.DictReader(f))
    assert {r["class"]: int(r["count"]) for r in rows} == OTB_COUNTS


def test_memory_layer_and_points(tmp_path):
    layer = QgsVectorLayer(str(POINTS), "points", "ogr")
    memory = layer.materialize(QgsFeatureRequest())
    assert memory.providerType() == "memory"
    result = processing.run("otbtf:polygonclassstatistics", {
        "INPUT": str(RGB), "VECTOR": memory, "FIELD": "name", "OUTPUT": str(tmp_path / "p.csv"),
    })
    assert result["COUNTS"] == {"crop": 1, "developed": 1, "tree": 2, "water": 2}


def test_bad_field_is_a_clear_error_and_leaves_no_output(tmp_path):
    out = tmp_path / "stats.csv"
    with pytest.raises(QgsProcessingException, match="no field 'nope'; its fields: name"):
        processing.run("otbtf:polygonclassstatistics", {
            "INPUT": str(RGB), "VECTOR": str(POLYGONS), "FIELD": "nope", "OUTPUT": str(out),
        })
    assert list(tmp_path.iterdir()) == []
