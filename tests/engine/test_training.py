"""Training on real Landsat 8 patches: the report against an independent computation,
the served model against the trained one, determinism, fine-tuning, cancel."""

import hashlib
import json

import numpy as np
import pytest
import rasterio

from common import POLYGONS, RGB, CancelAfter

tf = pytest.importorskip("tensorflow")

from otbtf_plugin.errors import Cancelled, InputError  # noqa: E402
from otbtf_plugin.extraction import PatchSource, extract_patches  # noqa: E402
from otbtf_plugin.patches_image import PatchesImage  # noqa: E402
from otbtf_plugin.selection import sample_selection  # noqa: E402
from otbtf_plugin.serving import ServeOptions, ServeSource, serve  # noqa: E402
from otbtf_plugin.training import TrainConfig, train  # noqa: E402


def extract(folder, sampler, seed, strategy="constant", value=40):
    samples = sample_selection(RGB, POLYGONS, "name", strategy=strategy, value=value, sampler=sampler, seed=seed)
    points = samples.write_gpkg(folder / f"points_{sampler}_{seed}.gpkg")
    result = extract_patches([PatchSource(RGB, 16)], points, [folder / f"p_{sampler}_{seed}.tif"], "name",
                             labels_output=folder / f"y_{sampler}_{seed}.tif")
    return folder / f"p_{sampler}_{seed}.tif", folder / f"y_{sampler}_{seed}.tif", result


@pytest.fixture(scope="module")
def patches(tmp_path_factory):
    folder = tmp_path_factory.mktemp("patches")
    return {"train": extract(folder, "periodic", 0), "valid": extract(folder, "random", 7, value=20),
            "folder": folder}


@pytest.fixture(scope="module")
def trained(patches, tmp_path_factory):
    out = tmp_path_factory.mktemp("trained")
    (tp, ty, _), (vp, vy, _) = patches["train"], patches["valid"]
    config = TrainConfig([tp], ty, out / "model", valid_patches=[vp], valid_labels=vy,
                         output_report=out / "report.html", epochs=4, batch_size=16, seed=1,
                         tensorboard_dir=out / "tb")
    return train(config), config, out


def test_report_equals_an_independent_computation(trained, patches):
    result, config, out = trained
    _, vy, _ = patches["valid"]
    with PatchesImage(config.valid_patches[0]) as images, PatchesImage(vy) as labels:
        x = images.read(0, len(images)).astype("float32")
        truth = labels.read(0, len(labels)).ravel().astype(int)
    function = tf.saved_model.load(str(out / "model" / "savedmodel")).signatures["serving_default"]
    outputs = function(x1=tf.constant(x))
    predicted = outputs["class"].numpy()
    assert np.array_equal(predicted, np.array([1, 2, 3, 4])[np.argmax(outputs["prob"].numpy(), axis=1)])
    matrix = np.zeros((4, 4), dtype=int)
    for t, p in zip(truth, predicted, strict=True):
        matrix[t - 1, p - 1] += 1
    assert result.report["confusion_matrix"] == matrix.tolist()
    assert result.report["overall_accuracy"] == pytest.approx(np.trace(matrix) / matrix.sum())
    saved = json.loads((out / "report.json").read_text())
    assert saved["validation"]["confusion_matrix"] == matrix.tolist()
    page = (out / "report.html").read_text()
    assert "Cohen's kappa" in page and "data:image/png;base64," in page and "developed" in page
    assert [c["name"] for c in result.report["classes"]] == ["crop", "developed", "tree", "water"]
    assert any(p.name.startswith("events.out.tfevents") for p in (out / "tb").rglob("*"))


def test_model_folder_and_metadata(trained):
    _, config, out = trained
    folder = out / "model"
    assert sorted(p.name for p in folder.iterdir()) == ["model.keras", "otbtf_model.json", "savedmodel"]
    meta = json.loads((folder / "otbtf_model.json").read_text())
    assert meta["inputs"][0]["name"] == "x1" and meta["inputs"][0]["rfield"] == 16
    assert (meta["efield"], meta["scale"], meta["task"]) == (1, 1, "classification")
    assert meta["classes"] == [{"code": 1, "name": "crop"}, {"code": 2, "name": "developed"},
                               {"code": 3, "name": "tree"}, {"code": 4, "name": "water"}]
    # band statistics: the training patches' mean per band, computed here independently
    with PatchesImage(config.train_patches[0]) as image:
        mean = image.read(0, len(image)).reshape(-1, 3).mean(axis=0)
    assert np.allclose(meta["inputs"][0]["band_statistics"]["mean"], mean, rtol=1e-6)
    assert len(meta["history"]["loss"]) == 4
    assert not [p for p in out.iterdir() if ".partial" in p.name]


def test_served_model_agrees_with_the_trained_model(trained, patches, tmp_path):
    """Serving the folder over the scene gives, at each validation point, the class the
    model predicts for that point's extracted patch: same geometry, same normalisation."""
    _, config, out = trained
    served = tmp_path / "classes.tif"
    result = serve([ServeSource(RGB)], out / "model", served, ServeOptions(output_names=["class"]))
    assert result.plan.geometry.rfield == 16 and result.plan.mode == "pixels"
    _, _, extraction = patches["valid"]
    function = tf.saved_model.load(str(out / "model" / "savedmodel")).signatures["serving_default"]
    with PatchesImage(config.valid_patches[0]) as images:
        expected = function(x1=tf.constant(images.read(0, len(images)).astype("float32")))["class"].numpy()
    with rasterio.open(served) as src:
        assert src.dtypes[0] == "int32"
        values = np.array([v[0] for v in src.sample(zip(extraction.x, extraction.y, strict=True))])
    assert np.array_equal(values, expected)


def test_same_seed_same_weights(patches, tmp_path):
    (tp, ty, _) = patches["train"]
    runs = []
    for k in range(2):
        result = train(TrainConfig([tp], ty, tmp_path / f"m{k}", epochs=2, batch_size=16, seed=3))
        runs.append(result)
    a = tf.saved_model.load(str(tmp_path / "m0" / "savedmodel")).signatures["serving_default"]
    b = tf.saved_model.load(str(tmp_path / "m1" / "savedmodel")).signatures["serving_default"]
    with PatchesImage(tp) as images:
        x = tf.constant(images.read(0, 32).astype("float32"))
    assert np.array_equal(a(x1=x)["prob"].numpy(), b(x1=x)["prob"].numpy())
    assert runs[0].history == runs[1].history


def test_fine_tuning_leaves_the_original_untouched(trained, patches, tmp_path):
    _, _, out = trained
    (tp, ty, _) = patches["train"]
    before = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in (out / "model").rglob("*") if p.is_file()}
    result = train(TrainConfig([tp], ty, tmp_path / "tuned", epochs=1, batch_size=16, initial_model=out / "model"))
    after = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in (out / "model").rglob("*") if p.is_file()}
    assert before == after
    assert (tmp_path / "tuned" / "savedmodel" / "saved_model.pb").is_file()
    assert len(result.history["loss"]) == 1


def test_cancel_writes_no_model(patches, tmp_path):
    (tp, ty, _) = patches["train"]

    with pytest.raises(Cancelled):
        train(TrainConfig([tp], ty, tmp_path / "model", epochs=5, batch_size=8), progress=CancelAfter(3))
    assert list(tmp_path.iterdir()) == []


def test_inputs_that_do_not_match(patches, tmp_path):
    (tp, ty, _), (vp, _, _) = patches["train"], patches["valid"]
    with pytest.raises(InputError, match="different numbers of patches"):
        train(TrainConfig([tp], patches["valid"][1], tmp_path / "m"))
    amsterdam = RGB.parent.parent / "otbtf"
    with pytest.raises(InputError, match="segmentation labels are not supported yet"):
        train(TrainConfig([amsterdam / "amsterdam_patches_A_16.tif"], amsterdam / "amsterdam_labels_A_16.tif",
                          tmp_path / "m"))
    with pytest.raises(InputError, match="give one validation patches image per source"):
        train(TrainConfig([tp], ty, tmp_path / "m", valid_patches=[vp, vp], valid_labels=ty))


def test_class_map_gets_a_paletted_style(trained, tmp_path):
    import xml.etree.ElementTree as ET

    _, _, out = trained
    result = serve([ServeSource(RGB)], out / "model", tmp_path / "classes.tif", ServeOptions(output_names=["class"]))
    entries = ET.parse(result.style).getroot().findall(".//paletteEntry")
    assert [(e.get("value"), e.get("label"), e.get("color")) for e in entries] == [
        ("1", "crop", "#e6c229"), ("2", "developed", "#d7301f"), ("3", "tree", "#1b7837"), ("4", "water", "#2c7fb8")]
    probabilities = serve([ServeSource(RGB)], out / "model", tmp_path / "prob.tif", ServeOptions(output_names=["prob"]))
    assert probabilities.style is None
