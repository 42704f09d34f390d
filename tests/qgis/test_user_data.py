"""The user's files survive every mistake: outputs that are inputs, two outputs at one
path, a folder that is not a model, read-only targets. Each case goes through
processing.run (the check of every algorithm, read from its parameter definitions)
and the user's files are compared byte for byte afterwards."""

import re
import shutil

import processing
import pytest
from qgis.core import QgsApplication, QgsProcessingContext, QgsProcessingException

from common import POLYGONS, RGB, fake_model_folder
from snapshot import assert_untouched, snapshot

pytestmark = pytest.mark.usefixtures("provider_loaded")


@pytest.fixture
def user_folder(tmp_path):
    """A user's project folder: the sample raster and polygons, a note, a sub-folder."""
    folder = tmp_path / "project"
    folder.mkdir()
    shutil.copy(RGB, folder / "scene.tif")
    shutil.copy(POLYGONS, folder / "truth.gpkg")
    (folder / "notes.txt").write_text("field notes\n")
    (folder / "old").mkdir()
    (folder / "old" / "map.tif").write_bytes(b"not really a map")
    return folder


def _refused(algorithm, parameters, message):
    with pytest.raises(QgsProcessingException, match=message):
        processing.run(algorithm, parameters)


def test_training_into_a_folder_that_is_not_a_model_deletes_nothing(user_folder):
    before = snapshot(user_folder)
    _refused(
        "otbtf:tensorflowmodeltrain",
        {
            "TRAIN_PATCHES1": str(user_folder / "scene.tif"),
            "TRAIN_LABELS": str(user_folder / "scene.tif"),
            "OUTPUT_MODEL": str(user_folder),
            "OUTPUT_REPORT": str(user_folder.parent / "r.html"),
        },
        r"OUTPUT_MODEL '.*project' (holds the input|is an existing folder that is not an otbtf model)",
    )
    assert_untouched(before, user_folder)
    # The engine refuses it too (scripts), and says what would work.
    from otbtf_plugin.errors import InputError
    from otbtf_plugin.outputs import Output, check_paths

    with pytest.raises(InputError, match=r"not an otbtf model .*choose a new or empty folder"):
        check_paths({}, {"OUTPUT_MODEL": Output(user_folder / "old", "folder", marker="otbtf_model.json")})
    assert_untouched(before, user_folder)


def test_serving_over_its_own_source_is_refused(user_folder, tmp_path):
    before = snapshot(user_folder)
    model = tmp_path / "model.keras"
    model.write_bytes(b"x")
    _refused(
        "otbtf:tensorflowmodelserve",
        {
            "SOURCE1": str(user_folder / "scene.tif"),
            "MODEL": str(model),
            "OUTPUT": str(user_folder / "." / "scene.tif"),
        },
        "OUTPUT '.*scene.tif' is the same file as the input SOURCE1: choose another output path",
    )
    assert_untouched(before, user_folder)


def test_extraction_over_its_source_or_two_outputs_at_one_path_is_refused(user_folder):
    before = snapshot(user_folder)
    base = {
        "SOURCE1": str(user_folder / "scene.tif"),
        "PATCH_SIZE1": 16,
        "VECTOR": str(user_folder / "truth.gpkg"),
        "FIELD": "name",
    }
    _refused(
        "otbtf:patchesextraction",
        {**base, "OUTPUT1": str(user_folder / "scene.tif"), "OUTPUT_LABELS": str(user_folder / "labels.tif")},
        "OUTPUT1 .* is the same file as the input SOURCE1",
    )
    _refused(
        "otbtf:patchesextraction",
        {**base, "OUTPUT1": str(user_folder / "p.tif"), "OUTPUT_LABELS": str(user_folder / "p.tif")},
        "OUTPUT_LABELS .* is the same path as the output OUTPUT1",
    )
    assert_untouched(before, user_folder)


def test_sample_selection_over_its_ground_truth_is_refused(user_folder):
    before = snapshot(user_folder)
    for target in (str(user_folder / "truth.gpkg"), f"ogr:dbname='{user_folder / 'truth.gpkg'}' table=\"s\""):
        _refused(
            "otbtf:sampleselection",
            {
                "INPUT": str(user_folder / "scene.tif"),
                "VECTOR": str(user_folder / "truth.gpkg"),
                "FIELD": "name",
                "OUTPUT": target,
            },
            "OUTPUT .* is the same file as the input VECTOR",
        )
    assert_untouched(before, user_folder)


def test_a_read_only_output_is_not_replaced(user_folder):
    target = user_folder / "stats.csv"
    target.write_text("class,count\nmine,1\n")
    target.chmod(0o444)
    before = snapshot(user_folder)
    _refused(
        "otbtf:polygonclassstatistics",
        {
            "INPUT": str(user_folder / "scene.tif"),
            "VECTOR": str(user_folder / "truth.gpkg"),
            "FIELD": "name",
            "OUTPUT": str(target),
        },
        "stats.csv' exists and is read-only: choose another name",
    )
    assert_untouched(before, user_folder)


def test_the_dialog_says_it_before_running(user_folder):
    algorithm = QgsApplication.processingRegistry().createAlgorithmById("otbtf:polygonclassstatistics")
    ok, message = algorithm.checkParameterValues(
        {
            "INPUT": str(user_folder / "scene.tif"),
            "VECTOR": str(user_folder / "truth.gpkg"),
            "FIELD": "name",
            "OUTPUT": str(user_folder / "scene.tif"),
        },
        QgsProcessingContext(),
    )
    assert not ok and "is the same file as the input INPUT" in message


def test_a_style_beside_an_input_is_not_replaced(user_folder, tmp_path):
    """Serving to scene.tiff would write scene.qml, the style the user keeps for scene.tif."""
    (user_folder / "scene.qml").write_text("<qgis/>")
    before = snapshot(user_folder)
    model = tmp_path / "model.keras"
    model.write_bytes(b"x")
    _refused(
        "otbtf:tensorflowmodelserve",
        {
            "SOURCE1": str(user_folder / "scene.tif"),
            "MODEL": str(model),
            "OUTPUT": str(user_folder / "scene.tiff"),
        },
        "would replace 'scene.qml', which belongs to the input SOURCE1",
    )
    assert_untouched(before, user_folder)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"EPOCHS": 0}, r"^EPOCHS = 0 is not accepted: give a whole number, at least 1$"),
        (
            {"VALID_FRACTION": 1.5},
            r"^VALID_FRACTION = 1.5 is not accepted: give a number, at least 0.01 and at most 0.9$",
        ),
        (
            {"ARCHITECTURE": 7},
            r"^ARCHITECTURE = 7 is not accepted: give one of 0 \(cnn\), 1 \(unet\), 2 \(regressor\)$",
        ),
    ],
)
def test_a_value_out_of_range_says_the_range(tmp_path, values, message):
    algorithm = QgsApplication.processingRegistry().createAlgorithmById("otbtf:tensorflowmodeltrain")
    ok, said = algorithm.checkParameterValues(
        {"TRAIN_PATCHES1": str(RGB), "TRAIN_LABELS": str(RGB), "OUTPUT_MODEL": str(tmp_path / "m"), **values},
        QgsProcessingContext(),
    )
    assert not ok
    assert re.match(message, said), said


def test_a_report_inside_the_model_it_reads_is_refused(user_folder):
    """OUTPUT_REPORT=MODEL/otbtf_model.html would replace the model's otbtf_model.json (the
    report's .json): fine-tuning, and a classifier on the model's deep features."""
    model = fake_model_folder(user_folder / "model")
    before = snapshot(user_folder)
    _refused(
        "otbtf:tensorflowmodeltrain",
        {
            "TRAIN_PATCHES1": str(user_folder / "scene.tif"),
            "TRAIN_LABELS": str(user_folder / "scene.tif"),
            "MODEL": str(model),
            "OUTPUT_MODEL": str(user_folder / "tuned"),
            "OUTPUT_REPORT": str(model / "otbtf_model.html"),
        },
        r"OUTPUT_REPORT '.*model/otbtf_model.html' lies inside the input folder MODEL",
    )
    _refused(
        "otbtf:trainclassifierfromdeepfeatures",
        {
            "SOURCE1": str(user_folder / "scene.tif"),
            "MODEL": str(model),
            "VECTOR": str(user_folder / "truth.gpkg"),
            "FIELD": "name",
            "OUTPUT_CLASSIFIER": str(user_folder / "rf.skops"),
            "OUTPUT_REPORT": str(model / "otbtf_model.html"),
        },
        r"OUTPUT_REPORT '.*model/otbtf_model.html' lies inside the input folder MODEL",
    )
    _refused(
        "otbtf:tensorflowmodelserve",
        {
            "SOURCE1": str(user_folder / "scene.tif"),
            "MODEL": str(model),
            "OUTPUT": str(model / "map.tif"),
        },
        r"OUTPUT '.*model/map.tif' lies inside the input folder MODEL",
    )
    assert_untouched(before, user_folder)


def test_a_report_over_a_checkpoint_or_the_labels_table_is_refused(user_folder):
    checkpoints = user_folder / "ckpt"
    checkpoints.mkdir()
    (checkpoints / "checkpoint.json").write_text("{}")
    (checkpoints / "state.2.npz").write_bytes(b"state")
    shutil.copy(user_folder / "scene.tif", user_folder / "labels.tif")
    (user_folder / "labels.origins.csv").write_text("patch,originfid,col,row\n0,1,8,8\n")
    before = snapshot(user_folder)
    base = {
        "TRAIN_PATCHES1": str(user_folder / "scene.tif"),
        "TRAIN_LABELS": str(user_folder / "labels.tif"),
        "OUTPUT_MODEL": str(user_folder / "new_model"),
    }
    _refused(
        "otbtf:tensorflowmodeltrain",
        {
            **base,
            "CHECKPOINT_DIR": str(checkpoints),
            "OUTPUT_REPORT": str(checkpoints / "checkpoint.html"),
        },
        r"OUTPUT_REPORT '.*ckpt/checkpoint.html' and the output CHECKPOINT_DIR lie one inside the other",
    )
    _refused(
        "otbtf:tensorflowmodeltrain",
        {**base, "OUTPUT_REPORT": str(user_folder / "labels.origins.csv")},
        r"would replace 'labels.origins.csv', which belongs to the input TRAIN_LABELS",
    )
    assert_untouched(before, user_folder)


def test_retraining_into_a_model_folder_holding_the_users_files_is_refused(user_folder):
    """A map served into the model folder (an older version allowed it), then the folder
    given as OUTPUT_MODEL again: replacing it would delete the map, its style and a note."""
    model = fake_model_folder(user_folder / "model", "map.tif", "map.qml", "notes.txt")
    before = snapshot(user_folder)
    _refused(
        "otbtf:tensorflowmodeltrain",
        {
            "TRAIN_PATCHES1": str(user_folder / "scene.tif"),
            "TRAIN_LABELS": str(user_folder / "scene.tif"),
            "OUTPUT_MODEL": str(model),
        },
        r"OUTPUT_MODEL '.*model' holds 'map.qml', 'map.tif', 'notes.txt', which otbtf did not write there; it would "
        "be replaced: move them out, or choose a new or empty folder",
    )
    assert_untouched(before, user_folder)


@pytest.mark.parametrize(
    ("algorithm", "values"),
    [
        ("otbtf:tensorflowmodeltrain", {"LEARNING_RATE": "nan"}),
        ("otbtf:tensorflowmodeltrain", {"VALID_FRACTION": float("nan")}),
        ("otbtf:patchesselection", {"TRAIN_FRACTION": "nan"}),
        ("otbtf:patchesselection", {"CELL": float("inf")}),
        ("otbtf:trainclassifierfromdeepfeatures", {"STRATEGY_VALUE": "nan"}),
        ("otbtf:tensorflowmodelserve", {"BACKGROUND_VALUE": "-inf"}),
        ("otbtf:patchesextraction", {"PATCH_SIZE1": 2.5}),
        ("otbtf:tensorflowmodeltrain", {"EPOCHS": "3.5"}),
    ],
)
def test_nan_and_infinite_numbers_are_one_line(tmp_path, algorithm, values):
    """QGIS lets nan through a number's limits (every comparison with nan is false)."""
    registry = QgsApplication.processingRegistry()
    instance = registry.createAlgorithmById(algorithm)
    name = next(iter(values))
    parameters = {
        **{d.name(): d.defaultValue() for d in instance.parameterDefinitions() if d.defaultValue() is not None},
        **values,
    }
    ok, said = (
        instance.values_problem(parameters, QgsProcessingContext()) is None,
        instance.values_problem(parameters, QgsProcessingContext()),
    )
    assert not ok
    kind = "a whole number" if name in ("PATCH_SIZE1", "EPOCHS") else "a finite number"
    assert re.match(rf"^{name} = {values[name]} is not accepted: give {kind}", said), said
