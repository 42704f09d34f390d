"""The model folder's contract (otbtf_model.json): typed, tolerant of what is missing,
keeping what it does not know, and one plain line for what is wrong."""

import json

import pytest

from otbtf_plugin.models.metadata import (
    BandStatistics,
    MetadataError,
    ModelClass,
    ModelInput,
    ModelMetadata,
    read_metadata,
    write_metadata,
)


def test_a_hand_written_file_needs_only_what_serving_uses(tmp_path):
    (tmp_path / "otbtf_model.json").write_text(
        json.dumps(
            {
                "inputs": [{"name": "image", "rfield": 9, "normalisation": {"mean": [7000, 6500], "std": [500, 400]}}],
                "efield": 1,
            }
        )
    )
    meta = read_metadata(tmp_path)
    assert meta.inputs == [
        ModelInput("image", rfield=9, normalisation=BandStatistics((7000.0, 6500.0), (500.0, 400.0)))
    ]
    assert (meta.efield, meta.scale, meta.task, meta.classes, meta.extra_outputs) == (1, None, None, [], {})
    assert meta.input("image").rfield == 9 and meta.input("other") is None
    assert read_metadata(tmp_path / "nothing here") is None


def test_round_trip_keeps_every_key_including_unknown_ones(tmp_path):
    meta = ModelMetadata(
        inputs=[ModelInput("x1", 16, 3, BandStatistics((1.0, 2.0, 3.0), (0.5, 0.5, 0.5)))],
        efield=1,
        scale=1,
        task="classification",
        architecture="cnn",
        outputs={"class": "class code"},
        classes=[ModelClass(1, "crop"), ModelClass(4, "water")],
        training={"epochs": 3},
        history={"loss": [0.9, 0.5]},
        created="2026-11-30T12:00:00+00:00",
        otbtf_plugin="0.9",
        others={"written_by_a_newer_version": {"tta": True}},
    )
    write_metadata(tmp_path, meta)
    data = json.loads((tmp_path / "otbtf_model.json").read_text())
    assert list(data)[:5] == ["format", "created", "otbtf_plugin", "task", "architecture"]
    assert data["classes"] == [{"code": 1, "name": "crop"}, {"code": 4, "name": "water"}]
    assert data["inputs"][0] == {
        "name": "x1",
        "rfield": 16,
        "bands": 3,
        "band_statistics": {"mean": [1.0, 2.0, 3.0], "std": [0.5, 0.5, 0.5]},
    }
    assert data["written_by_a_newer_version"] == {"tta": True}
    assert read_metadata(tmp_path) == meta
    assert not {"scores_output", "class_threshold", "resolution_cm", "covers_raster", "first_bands"} & set(data)


def test_how_a_model_is_served_round_trips(tmp_path):
    """What an ONNX file's Deepness metadata tells serving (class scores and threshold, the
    resolution, whole-raster coverage, first bands) is typed, and kept through the file."""
    meta = ModelMetadata(
        inputs=[ModelInput("x", 512, 3)],
        scores_output="scores",
        class_threshold=0.5,
        resolution_cm=10.0,
        covers_raster=True,
        first_bands=True,
    )
    write_metadata(tmp_path, meta)
    data = json.loads((tmp_path / "otbtf_model.json").read_text())
    assert (
        data["scores_output"],
        data["class_threshold"],
        data["resolution_cm"],
        data["covers_raster"],
        data["first_bands"],
    ) == ("scores", 0.5, 10.0, True, True)
    assert read_metadata(tmp_path) == meta


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("[1, 2]", r"otbtf_model.json: expected a JSON object, found list"),
        (
            '{"efield": "large"}',
            r"otbtf_model.json: 'efield' must be a whole number of pixels \(1 to 1048576\), found "
            r"'large'",
        ),
        ('{"inputs": [{"name": "x", "rfield": Infinity}]}', r"'rfield' must be a whole number of pixels .*found inf"),
        ('{"inputs": [{"name": "x", "rfield": NaN}]}', r"'rfield' must be a whole number of pixels .*found nan"),
        ('{"scale": 1e300}', r"'scale' must be a whole number of pixels \(1 to 1048576\), found 1e\+300"),
        ('{"class_threshold": NaN}', r"'class_threshold' must be a finite number, found nan"),
        (
            '{"classes": [{"code": "abc", "name": "x"}]}',
            r"a class code must be a whole number from -2147483648 to "
            r"2147483647, found 'abc'",
        ),
        ('{"classes": [{"code": null, "name": "x"}]}', r"a class code must be a whole number .*found None"),
        ('{"classes": [{"code": 3000000000, "name": "x"}]}', r"a class code must be a whole number .*found 3000000000"),
        ('{"outputs": "abc"}', r"'outputs' must be an object \(\{name: ...\}\), found 'abc'"),
        ('{"training": [1]}', r"'training' must be an object"),
        ('{"history": "loss"}', r"'history' must be an object"),
        ('{"history": {"loss": "high"}}', r"'history' 'loss' must hold finite numbers, found 'high'"),
        ('{"target_statistics": {"mean": "a"}}', r"'target_statistics' must be \{\"mean\": number"),
        (
            '{"inputs": [{"name": "x", "band_statistics": {"mean": ["a"]}}]}',
            r"'band_statistics' of input 'x' must hold finite numbers, found 'a'",
        ),
        (
            '{"inputs": [{"name": "x", "normalisation": {"mean": [1, 2], "std": [1]}}]}',
            r"'normalisation' of input 'x' has 2 means but 1 standard deviations",
        ),
        ("[" * 100000 + "]" * 100000, r"otbtf_model.json: (nested too deeply|not valid JSON)"),
        ('{"inputs": {"name": "x"}}', r"otbtf_model.json: 'inputs' must be a list, found dict"),
        ('{"inputs": [{"rfield": 3}]}', r"otbtf_model.json: an entry has no 'name'"),
        ('{"task": "detection"}', r"task 'detection' is not one of classification, segmentation, regression"),
        ('{"inputs": [{"name": "x", "normalisation": [1, 2]}]}', r"'normalisation' of input 'x' needs 'mean'"),
        ("{not json", r"otbtf_model.json: not valid JSON"),
    ],
)
def test_what_is_wrong_is_one_line_naming_file_and_key(tmp_path, content, message):
    (tmp_path / "otbtf_model.json").write_text(content)
    with pytest.raises(MetadataError, match=message) as err:
        read_metadata(tmp_path)
    assert "\n" not in str(err.value) and len(str(err.value)) < 400
