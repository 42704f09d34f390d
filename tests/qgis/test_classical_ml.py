"""The four classical-ML algorithms through processing.run, chained as a user would:
sample selection -> sample extraction -> vector classifier -> image classification."""

import numpy as np
import processing
import pytest
import rasterio
from qgis.core import QgsProcessingException, QgsRasterLayer, QgsVectorLayer

from common import OTB_COUNTS, POLYGONS, RGB

pytestmark = pytest.mark.usefixtures("provider_loaded")
pytest.importorskip("sklearn")


def test_points_features_vector_classifier_then_class_map(tmp_path):
    samples = processing.run(
        "otbtf:sampleselection",
        {
            "INPUT": str(RGB),
            "VECTOR": str(POLYGONS),
            "FIELD": "name",
            "STRATEGY": 1,
            "STRATEGY_VALUE": 50,
            "OUTPUT": str(tmp_path / "samples.gpkg"),
        },
    )["OUTPUT"]
    extracted = processing.run(
        "otbtf:sampleextractionfromdeepfeatures",
        {"SOURCE1": str(RGB), "VECTOR": samples, "FIELD": "name", "OUTPUT": str(tmp_path / "features.gpkg")},
    )
    assert extracted["POINTS"] == 200 and extracted["REJECTED"] == {}
    layer = QgsVectorLayer(extracted["OUTPUT"], "features", "ogr")
    names = [f.name() for f in layer.fields()]
    assert names[-3:] == ["source1_band1", "source1_band2", "source1_band3"] and "originfid" in names
    trained = processing.run(
        "otbtf:trainvectorclassifier",
        {
            "VECTOR": extracted["OUTPUT"],
            "FEATURES": names[-3:],
            "FIELD": "name",
            "CLASSIFIER": 0,
            "CLASSIFIER_PARAMS": "n_estimators=50",
            "VALIDATION": 0,
            "SEED": 1,
            "OUTPUT_CLASSIFIER": str(tmp_path / "rf.skops"),
            "OUTPUT_REPORT": str(tmp_path / "rf.html"),
        },
    )
    assert trained["TRAINING_SAMPLES"] == 200 and trained["OVERALL_ACCURACY"] is None
    result = processing.run(
        "otbtf:imageclassifierfromdeepfeatures",
        {
            "SOURCE1": str(RGB),
            "CLASSIFIER": trained["OUTPUT_CLASSIFIER"],
            "OUTPUT": str(tmp_path / "map.tif"),
            "OUTPUT_CONFIDENCE": str(tmp_path / "confidence.tif"),
        },
    )
    classes = QgsRasterLayer(result["OUTPUT"], "classes")
    assert classes.isValid() and classes.renderer().type() == "paletted"  # the .qml beside it
    assert [c.label for c in classes.renderer().classes()] == ["crop", "developed", "tree", "water"]
    assert QgsRasterLayer(result["OUTPUT_CONFIDENCE"], "confidence").renderer().type() == "singlebandpseudocolor"
    with rasterio.open(result["OUTPUT"]) as cm, rasterio.open(result["OUTPUT_CONFIDENCE"]) as cf:
        values, confidence = cm.read(1), cf.read(1)
    assert set(np.unique(values)) <= {1, 2, 3, 4} and (confidence > 0.2).all() and (confidence <= 1).all()


def test_polygons_with_a_classifier_and_its_parameters(tmp_path):
    common = {
        "SOURCE1": str(RGB),
        "VECTOR": str(POLYGONS),
        "FIELD": "name",
        "OUTPUT_CLASSIFIER": str(tmp_path / "c.skops"),
        "OUTPUT_REPORT": str(tmp_path / "c.html"),
    }
    with pytest.raises(QgsProcessingException, match="n_trees is not a parameter of rf"):
        processing.run("otbtf:trainclassifierfromdeepfeatures", {**common, "CLASSIFIER_PARAMS": "n_trees=3"})
    assert list(tmp_path.iterdir()) == []
    result = processing.run("otbtf:trainclassifierfromdeepfeatures", {**common, "CLASSIFIER": 5, "FOLDS": 2})  # bayes
    assert result["TRAINING_SAMPLES"] == sum(OTB_COUNTS.values())  # STRATEGY all: every polygon pixel
    # Two folds of two polygons each (one per class: a class is missing from each training side).
    assert 0 <= result["CV_OVERALL_ACCURACY"] <= 0.5 and result["CV_KAPPA"] <= 0.5
    assert "Cross-validation grouped by polygon (2 folds)" in (tmp_path / "c.html").read_text()
    assert (tmp_path / "c.html").is_file() and (tmp_path / "c.json").is_file()
    with pytest.raises(QgsProcessingException, match="does not match these inputs: source 1 had 3 band"):
        processing.run(
            "otbtf:imageclassifierfromdeepfeatures",
            {
                "SOURCE1": str(RGB.parent / "LC08_224077_20200518_B2_30m_crop.tif"),
                "CLASSIFIER": result["OUTPUT_CLASSIFIER"],
                "OUTPUT": str(tmp_path / "map.tif"),
            },
        )
    assert not (tmp_path / "map.tif").exists()
