"""Algorithms run through processing.run, as from the PyQGIS console."""

import csv

import processing
import pytest
from qgis.core import QgsFeatureRequest, QgsProcessingException, QgsRasterLayer, QgsVectorLayer

from common import OTB_COUNTS, POINTS, POLYGONS, RGB, needs_tensorflow

pytestmark = pytest.mark.usefixtures("provider_loaded")


def test_polygon_class_statistics(tmp_path):
    out = tmp_path / "stats.csv"
    result = processing.run(
        "otbtf:polygonclassstatistics",
        {
            "INPUT": str(RGB),
            "VECTOR": str(POLYGONS),
            "FIELD": "name",
            "OUTPUT": str(out),
        },
    )
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
    result = processing.run(
        "otbtf:polygonclassstatistics",
        {
            "INPUT": str(RGB),
            "VECTOR": memory,
            "FIELD": "name",
            "OUTPUT": str(tmp_path / "p.csv"),
        },
    )
    assert result["COUNTS"] == {"crop": 1, "developed": 1, "tree": 2, "water": 2}


def test_bad_field_is_a_clear_error_and_leaves_no_output(tmp_path):
    out = tmp_path / "stats.csv"
    with pytest.raises(QgsProcessingException, match="no field 'nope'; its fields: name"):
        processing.run(
            "otbtf:polygonclassstatistics",
            {
                "INPUT": str(RGB),
                "VECTOR": str(POLYGONS),
                "FIELD": "nope",
                "OUTPUT": str(out),
            },
        )
    assert list(tmp_path.iterdir()) == []


def test_sample_selection_smallest_periodic(tmp_path):
    out = tmp_path / "samples.gpkg"
    result = processing.run(
        "otbtf:sampleselection",
        {
            "INPUT": str(RGB),
            "VECTOR": str(POLYGONS),
            "FIELD": "name",
            "STRATEGY": 0,
            "SAMPLER": 0,
            "OUTPUT": str(out),
        },
    )
    assert result["COUNTS"] == dict.fromkeys(OTB_COUNTS, 81)
    assert result["AVAILABLE"] == OTB_COUNTS
    assert result["CLASS_CODES"] == {"crop": 1, "developed": 2, "tree": 3, "water": 4}
    layer = QgsVectorLayer(result["OUTPUT"], "samples", "ogr")
    assert layer.featureCount() == 4 * 81
    assert [f.name() for f in layer.fields()][-2:] == ["name", "originfid"]
    assert layer.crs().authid() == "EPSG:32621"
    names = {}
    for feature in layer.getFeatures():
        names[feature["name"]] = names.get(feature["name"], 0) + 1
        point = feature.geometry().asPoint()
        assert (point.x() - 735645.0) % 30.0 == 15.0  # a pixel centre
    assert names == dict.fromkeys(OTB_COUNTS, 81)


def test_sample_selection_engine_error_reaches_the_user(tmp_path):
    with pytest.raises(QgsProcessingException, match=r"for 50 %, use 0.5"):
        processing.run(
            "otbtf:sampleselection",
            {
                "INPUT": str(RGB),
                "VECTOR": str(POLYGONS),
                "FIELD": "name",
                "STRATEGY": 2,
                "STRATEGY_VALUE": 50,
                "OUTPUT": str(tmp_path / "s.gpkg"),
            },
        )
    assert not (tmp_path / "s.gpkg").exists()


def test_sample_selection_random_total_to_memory():
    result = processing.run(
        "otbtf:sampleselection",
        {
            "INPUT": str(RGB),
            "VECTOR": str(POLYGONS),
            "FIELD": "name",
            "STRATEGY": 3,
            "STRATEGY_VALUE": 300,
            "SAMPLER": 1,
            "SEED": 5,
            "OUTPUT": "memory:",
        },
    )
    assert result["COUNTS"] == {"crop": 84, "developed": 36, "tree": 87, "water": 93}
    assert result["OUTPUT"].featureCount() == 300


def test_patches_extraction_chain_from_sample_selection(tmp_path):
    """The toolbox chain: sample selection, then patches extraction from its output."""
    samples = processing.run(
        "otbtf:sampleselection",
        {
            "INPUT": str(RGB),
            "VECTOR": str(POLYGONS),
            "FIELD": "name",
            "OUTPUT": str(tmp_path / "s.gpkg"),
        },
    )["OUTPUT"]
    result = processing.run(
        "otbtf:patchesextraction",
        {
            "SOURCE1": str(RGB),
            "PATCH_SIZE1": 16,
            "VECTOR": samples,
            "FIELD": "name",
            "OUTPUT1": str(tmp_path / "patches.tif"),
            "OUTPUT_LABELS": str(tmp_path / "labels.tif"),
            "OUTPUT_POINTS": str(tmp_path / "kept.gpkg"),
        },
    )
    assert result["ACCEPTED"] == 4 * 81 and result["REJECTED"] == {}
    assert result["CLASS_CODES"] == {"crop": 1, "developed": 2, "tree": 3, "water": 4}
    patches = QgsRasterLayer(result["OUTPUT1"], "patches")
    assert (patches.width(), patches.height(), patches.bandCount()) == (16, 16 * 324, 3)
    labels = QgsRasterLayer(result["OUTPUT_LABELS"], "labels")
    assert (labels.width(), labels.height()) == (1, 324)
    kept = QgsVectorLayer(result["OUTPUT_POINTS"], "kept", "ogr")
    assert kept.featureCount() == 324
    assert sorted(f["patch_index"] for f in kept.getFeatures()) == list(range(324))


def test_patches_extraction_without_field_and_bad_points(tmp_path):
    result = processing.run(
        "otbtf:patchesextraction",
        {
            "SOURCE1": str(RGB),
            "PATCH_SIZE1": 8,
            "VECTOR": str(POINTS),
            "OUTPUT1": str(tmp_path / "p.tif"),
        },
    )
    assert result["ACCEPTED"] == 6 and "OUTPUT_LABELS" not in result
    with pytest.raises(QgsProcessingException, match="larger than the raster"):
        processing.run(
            "otbtf:patchesextraction",
            {
                "SOURCE1": str(RGB),
                "PATCH_SIZE1": 5000,
                "VECTOR": str(POINTS),
                "OUTPUT1": str(tmp_path / "q.tif"),
            },
        )
    assert not (tmp_path / "q.tif").exists()


def test_patches_selection_sets(tmp_path):
    b2 = RGB.parent / "LC08_224077_20200518_B2_30m_crop.tif"
    result = processing.run(
        "otbtf:patchesselection",
        {
            "INPUT": str(b2),
            "PATCH_SIZE": 32,
            "GRID_STEP": 32,
            "STRATEGY": 0,
            "CELL": 1,
            "TRAIN_FRACTION": 0.6,
            "VALID_FRACTION": 0.2,
            "TEST_FRACTION": 0.2,
            "OUTPUT_TRAIN": str(tmp_path / "train.gpkg"),
            "OUTPUT_VALID": str(tmp_path / "valid.gpkg"),
            "OUTPUT_TEST": str(tmp_path / "test.gpkg"),
        },
    )
    assert result["COUNTS"] == {"train": 86, "valid": 29, "test": 29}
    for name, n in result["COUNTS"].items():
        layer = QgsVectorLayer(result[f"OUTPUT_{name.upper()}"], name, "ogr")
        assert layer.featureCount() == n
        assert layer.crs().authid() == "EPSG:32621"


def test_the_example_graphical_model_runs(tmp_path):
    """resources/models/sampling_and_patches.model3, as a user opens it in the modeler."""
    from qgis.core import QgsProcessingModelAlgorithm

    from common import ROOT

    model = QgsProcessingModelAlgorithm()
    assert model.fromFile(str(ROOT / "resources" / "models" / "sampling_and_patches.model3"))
    ok, errors = model.validate()
    assert ok, errors
    result = processing.run(
        model,
        {
            "image": str(RGB),
            "ground_truth": str(POLYGONS),
            "class_field": "name",
            "patch_size": 16,
            "select:samples": str(tmp_path / "samples.gpkg"),
            "extract:patches": str(tmp_path / "patches.tif"),
            "extract:labels": str(tmp_path / "labels.tif"),
        },
    )
    patches = QgsRasterLayer(result["extract:patches"], "patches")
    assert (patches.width(), patches.height()) == (16, 16 * 4 * 81)
    assert QgsVectorLayer(result["select:samples"], "s", "ogr").featureCount() == 4 * 81


@needs_tensorflow
def test_the_workflow_graphical_model_chains_training_and_serving(tmp_path):
    """resources/models/workflow.model3: selection -> extraction -> training -> serving."""
    from qgis.core import QgsProcessingModelAlgorithm

    from common import ROOT

    model = QgsProcessingModelAlgorithm()
    assert model.fromFile(str(ROOT / "resources" / "models" / "workflow.model3"))
    ok, errors = model.validate()
    assert ok, errors
    result = processing.run(
        model,
        {
            "image": str(RGB),
            "ground_truth": str(POLYGONS),
            "class_field": "name",
            "patch_size": 16,
            "epochs": 2,
            "select:samples": str(tmp_path / "samples.gpkg"),
            "extract:patches": str(tmp_path / "patches.tif"),
            "extract:labels": str(tmp_path / "labels.tif"),
            "train:model": str(tmp_path / "model"),
            "train:report": str(tmp_path / "report.html"),
            "serve:classes": str(tmp_path / "classes.tif"),
        },
    )
    classes = QgsRasterLayer(result["serve:classes"], "classes")
    assert classes.isValid() and (classes.width(), classes.height()) == (800 - 15, 1140 - 15)
    assert classes.renderer().type() == "paletted"  # styled with the class names
    assert (tmp_path / "model" / "otbtf_model.json").is_file() and (tmp_path / "report.html").is_file()


def test_every_algorithm_dialog_opens_and_reports_go_to_the_results_viewer(qgis_iface, monkeypatch):
    """The toolbox dialog of each algorithm builds (with its help); HTML reports are
    HTML outputs, which QGIS shows in its Results Viewer."""
    from qgis.core import QgsApplication
    from qgis.gui import QgsBrowserGuiModel

    browser = QgsBrowserGuiModel()  # pytest-qgis' iface has none; the dialogs ask for it
    monkeypatch.setattr(qgis_iface, "browserModel", lambda: browser, raising=False)

    provider = QgsApplication.processingRegistry().providerById("otbtf")
    algorithms = provider.algorithms()
    assert len(algorithms) == 11
    for algorithm in algorithms:
        dialog = processing.createAlgorithmDialog(algorithm.id())
        assert dialog is not None, algorithm.id()
        assert "Example" in algorithm.shortHelpString() or "e.g." in algorithm.shortHelpString(), algorithm.id()
        dialog.close()
        dialog.deleteLater()
    for algorithm_id in (
        "otbtf:tensorflowmodeltrain",
        "otbtf:trainclassifierfromdeepfeatures",
        "otbtf:trainvectorclassifier",
    ):
        algorithm = QgsApplication.processingRegistry().algorithmById(algorithm_id)
        assert algorithm.outputDefinition("OUTPUT_REPORT").type() == "outputHtml"


def _interface_table():
    """(algorithm id, parameter names) of the table of fixed parameters in docs/interface.md;
    a per-source name (``SOURCEn``) is checked for source 1."""
    import re

    from common import ROOT

    rows = []
    for line in (ROOT / "docs" / "interface.md").read_text(encoding="utf-8").splitlines():
        match = re.match(r"^\| `(otbtf:\w+)` \|(.*)$", line)
        if match:
            names = re.findall(r"`([A-Z][A-Z0-9_]*?)(n?)`", match[2])
            rows.append((match[1], sorted({name + ("1" if n else "") for name, n in names})))
    return rows


def test_every_fixed_id_and_parameter_of_the_interface_exists():
    """The contract of docs/interface.md, read from the document itself: every algorithm and
    every parameter it fixes is there, under that name."""
    from qgis.core import QgsApplication

    rows = _interface_table()
    assert len(rows) == 10
    registry = QgsApplication.processingRegistry()
    missing = []
    for algorithm_id, names in rows:
        algorithm = registry.algorithmById(algorithm_id)
        assert algorithm is not None, algorithm_id
        missing += [f"{algorithm_id} {name}" for name in names if algorithm.parameterDefinition(name) is None]
    assert missing == []


def test_device_is_offered_where_the_interface_fixes_it():
    """DEVICE (docs/interface.md, third round): an enum auto, cpu, gpu in that order, auto by
    default, on training, serving and image classification from deep features."""
    from qgis.core import QgsApplication

    registry = QgsApplication.processingRegistry()
    for algorithm_id in ("otbtf:tensorflowmodeltrain", "otbtf:tensorflowmodelserve",
                         "otbtf:imageclassifierfromdeepfeatures"):  # fmt: skip
        definition = registry.algorithmById(algorithm_id).parameterDefinition("DEVICE")
        assert definition is not None, algorithm_id
        assert (definition.options(), definition.defaultValue()) == (["auto", "cpu", "gpu"], 0), algorithm_id


def test_warnings_reach_qgis_as_warnings(tmp_path):
    """The engine's warnings (here: polygons of different classes that overlap) arrive through
    the feedback's pushWarning, which QGIS shows as warnings, not as plain log lines."""
    import geopandas
    import rasterio
    from qgis.core import QgsProcessingFeedback
    from shapely.geometry import box

    with rasterio.open(RGB) as src:
        left, top, wkt = src.bounds.left, src.bounds.top, src.crs.to_wkt()
    frame = geopandas.GeoDataFrame(
        {"name": ["water", "crop"]},
        crs=wkt,
        geometry=[
            box(left + 3000, top - 6000, left + 6000, top - 3000),
            box(left + 4500, top - 7500, left + 7500, top - 4500),
        ],
    )
    frame.to_file(tmp_path / "overlap.gpkg", driver="GPKG")

    class Feedback(QgsProcessingFeedback):
        def __init__(self):
            super().__init__()
            self.warnings, self.infos = [], []

        def pushWarning(self, warning):
            self.warnings.append(warning)

        def pushInfo(self, info):
            self.infos.append(info)

    feedback = Feedback()
    processing.run(
        "otbtf:sampleselection",
        {
            "INPUT": str(RGB),
            "VECTOR": str(tmp_path / "overlap.gpkg"),
            "FIELD": "name",
            "OUTPUT": str(tmp_path / "s.gpkg"),
        },
        feedback=feedback,
    )
    assert [w for w in feedback.warnings if "lie in polygons of different classes (crop and water" in w]
    assert not [i for i in feedback.infos if "polygons of different classes" in i]


def test_point_fields_have_the_types_asked_on_this_qgis():
    """QgsField takes QMetaType types from QGIS 3.38 (Qt 6 has no QVariant types), QVariant ones
    before: either way, strings are text and the others numbers of the right kind."""
    from qgis.core import QgsField

    from processing_provider.algorithms.common import field_type

    text, real, whole = (QgsField(name, field_type(kind)) for name, kind in
                         (("t", "String"), ("r", "Real"), ("w", "Integer64")))  # fmt: skip
    assert not text.isNumeric() and real.isNumeric() and whole.isNumeric()
    # QVariant's types and QMetaType's share their numbers: QString 10, Double 6, LongLong 4
    assert [int(getattr(f.type(), "value", f.type())) for f in (text, real, whole)] == [10, 6, 4]


def test_object_detection_chains_in_a_graphical_model(tmp_path):
    """A graphical model as a user builds it in the modeler: otbtf:objectdetection, then QGIS'
    own centroids of its polygons; two squares give two points at their centres."""
    import numpy as np
    import rasterio
    from onnx_models import grid_detector, save
    from qgis.core import (
        QgsProcessingModelAlgorithm,
        QgsProcessingModelChildAlgorithm,
        QgsProcessingModelChildParameterSource,
        QgsProcessingModelOutput,
        QgsProcessingModelParameter,
        QgsProcessingParameterFile,
        QgsProcessingParameterRasterLayer,
    )

    pixels = np.zeros((3, 104, 120), np.uint8)
    pixels[0, 16:24, 56:64] = 255
    pixels[0, 80:88, 8:16] = 255
    profile = {"driver": "GTiff", "width": 120, "height": 104, "count": 3, "dtype": "uint8", "crs": "EPSG:32631"}
    transform = rasterio.Affine(0.5, 0, 500000, 0, -0.5, 4e6)
    with rasterio.open(tmp_path / "scene.tif", "w", transform=transform, **profile) as dst:
        dst.write(pixels)
    meta = {"model_type": "Detector", "det_type": "YOLO_Ultralytics", "class_names": {"0": "car"}, "tiles_overlap": 25}
    save(grid_detector(), tmp_path / "det.onnx", meta)

    model = QgsProcessingModelAlgorithm("detect and centre", "otbtf")
    model.addModelParameter(QgsProcessingParameterRasterLayer("image", "Image"), QgsProcessingModelParameter("image"))
    model.addModelParameter(QgsProcessingParameterFile("detector", "Detector"), QgsProcessingModelParameter("detector"))
    detect = QgsProcessingModelChildAlgorithm("otbtf:objectdetection")
    detect.setChildId("detect")
    detect.addParameterSources("SOURCE1", [QgsProcessingModelChildParameterSource.fromModelParameter("image")])
    detect.addParameterSources("MODEL", [QgsProcessingModelChildParameterSource.fromModelParameter("detector")])
    detect.addParameterSources("MEMORY_MB", [QgsProcessingModelChildParameterSource.fromStaticValue(512)])
    model.addChildAlgorithm(detect)
    centre = QgsProcessingModelChildAlgorithm("native:centroids")
    centre.setChildId("centre")
    centre.addParameterSources("INPUT", [QgsProcessingModelChildParameterSource.fromChildOutput("detect", "OUTPUT")])
    centre.addParameterSources("ALL_PARTS", [QgsProcessingModelChildParameterSource.fromStaticValue(False)])
    output = QgsProcessingModelOutput("centres")
    output.setChildOutputName("OUTPUT")
    centre.setModelOutputs({"centres": output})
    model.addChildAlgorithm(centre)
    ok, errors = model.validate()
    assert ok, errors
    result = processing.run(
        model,
        {
            "image": str(tmp_path / "scene.tif"),
            "detector": str(tmp_path / "det.onnx"),
            "centre:centres": str(tmp_path / "centres.gpkg"),
        },
    )
    layer = QgsVectorLayer(result["centre:centres"], "centres", "ogr")
    points = sorted((f.geometry().asPoint().x(), f.geometry().asPoint().y()) for f in layer.getFeatures())
    assert points == [(500006.0, 3999958.0), (500030.0, 3999990.0)]
