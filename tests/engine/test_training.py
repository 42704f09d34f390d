"""Training on real Landsat 8 patches: the report against an independent computation,
the served model against the trained one, determinism, fine-tuning, cancel."""

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import rasterio

from common import POLYGONS, RGB, CancelAfter, Log

tf = pytest.importorskip("tensorflow")

from otbtf_plugin.errors import Cancelled, InputError  # noqa: E402
from otbtf_plugin.extraction import PatchSource, extract_patches  # noqa: E402
from otbtf_plugin.patches_image import PatchesImage  # noqa: E402
from otbtf_plugin.selection import sample_selection  # noqa: E402
from otbtf_plugin.serving import ServeOptions, ServeSource, serve  # noqa: E402
from otbtf_plugin.training import TrainConfig, train  # noqa: E402

pytestmark = pytest.mark.slow  # real training runs (a fixture trains for ~30 s) and serving


def extract(folder, sampler, seed, strategy="constant", value=40):
    samples = sample_selection(RGB, POLYGONS, "name", strategy=strategy, value=value, sampler=sampler, seed=seed)
    points = samples.write_gpkg(folder / f"points_{sampler}_{seed}.gpkg")
    result = extract_patches(
        [PatchSource(RGB, 16)],
        points,
        [folder / f"p_{sampler}_{seed}.tif"],
        "name",
        labels_output=folder / f"y_{sampler}_{seed}.tif",
    )
    return folder / f"p_{sampler}_{seed}.tif", folder / f"y_{sampler}_{seed}.tif", result


@pytest.fixture(scope="module")
def patches(tmp_path_factory):
    folder = tmp_path_factory.mktemp("patches")
    return {"train": extract(folder, "periodic", 0), "valid": extract(folder, "random", 7, value=20), "folder": folder}


@pytest.fixture(scope="module")
def trained(patches, tmp_path_factory):
    out = tmp_path_factory.mktemp("trained")
    (tp, ty, _), (vp, vy, _) = patches["train"], patches["valid"]
    config = TrainConfig(
        [tp],
        ty,
        out / "model",
        valid_patches=[vp],
        valid_labels=vy,
        output_report=out / "report.html",
        epochs=4,
        batch_size=16,
        seed=1,
        tensorboard_dir=out / "tb",
    )
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
    assert any(p.name.startswith("events.out.tfevents") for p in (out / "tb" / "train").rglob("*"))
    # the confusion matrix and the validation scores, read back from the event file
    tags = {}  # TensorBoard merges every event file of a run: Keras' callback writes there too
    for events in (out / "tb" / "validation").glob("events.out.tfevents*"):
        for event in tf.compat.v1.train.summary_iterator(str(events)):
            for value in event.summary.value:
                if value.HasField("tensor"):
                    tags[value.tag] = tf.make_ndarray(value.tensor)
    assert tags["validation/overall_accuracy"] == pytest.approx(result.report["overall_accuracy"])
    table = tags["validation/confusion_matrix"].item().decode()
    assert table.splitlines()[2] == "| crop | " + " | ".join(str(v) for v in matrix[0]) + " |"


def test_model_folder_and_metadata(trained):
    _, config, out = trained
    folder = out / "model"
    assert sorted(p.name for p in folder.iterdir()) == ["model.keras", "otbtf_model.json", "savedmodel"]
    meta = json.loads((folder / "otbtf_model.json").read_text())
    assert meta["inputs"][0]["name"] == "x1" and meta["inputs"][0]["rfield"] == 16
    assert (meta["efield"], meta["scale"], meta["task"]) == (1, 1, "classification")
    assert meta["classes"] == [
        {"code": 1, "name": "crop"},
        {"code": 2, "name": "developed"},
        {"code": 3, "name": "tree"},
        {"code": 4, "name": "water"},
    ]
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


@pytest.fixture(scope="module")
def strip(tmp_path_factory):
    """A 40 px strip across the scene (water, town, forest): 45,600 px to serve, not 912,000."""
    path = tmp_path_factory.mktemp("strip") / "strip.tif"
    with rasterio.open(RGB) as src:
        window = ((0, src.height), (380, 420))
        profile = {**src.profile, "width": 40, "height": src.height, "transform": src.window_transform(window)}
        with rasterio.open(path, "w", **profile) as dst:
            dst.write(src.read(window=window))
    return path


def test_the_keras_file_of_a_model_folder_serves_as_the_folder(trained, tmp_path, strip):
    """model.keras holds our ClassCode layer: serving it alone (no metadata: the receptive
    field from its input size) gives the folder's class map."""
    _, _, out = trained
    maps = []
    for model in (out / "model", out / "model" / "model.keras"):
        target = tmp_path / f"{model.name}.tif"
        result = serve([ServeSource(strip)], model, target, ServeOptions(output_names=["class"]))
        assert result.plan.geometry.rfield == 16 and result.plan.mode == "pixels"
        with rasterio.open(target) as src:
            maps.append(src.read(1))
    assert np.array_equal(maps[0], maps[1]) and len(np.unique(maps[0])) > 1


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


AMSTERDAM = RGB.parent.parent / "otbtf"
A_PATCHES, A_LABELS = AMSTERDAM / "amsterdam_patches_A_24.tif", AMSTERDAM / "amsterdam_labels_A_24.tif"


def test_inputs_that_do_not_match(patches, tmp_path):
    (tp, ty, _), (vp, _, _) = patches["train"], patches["valid"]
    with pytest.raises(InputError, match=r"different numbers of patches"):
        train(TrainConfig([tp], patches["valid"][1], tmp_path / "m"))
    with pytest.raises(InputError, match=r"labels are patches \(semantic segmentation\): use ARCHITECTURE unet"):
        train(TrainConfig([A_PATCHES], A_LABELS, tmp_path / "m"))
    with pytest.raises(InputError, match=r"one class per patch: use ARCHITECTURE cnn"):
        train(TrainConfig([tp], ty, tmp_path / "m", architecture="unet"))
    with pytest.raises(InputError, match=r"give one validation patches image per source"):
        train(TrainConfig([tp], ty, tmp_path / "m", valid_patches=[vp, vp], valid_labels=ty))


def test_class_map_gets_a_paletted_style(trained, tmp_path, strip):
    import xml.etree.ElementTree as ET

    _, _, out = trained
    result = serve([ServeSource(strip)], out / "model", tmp_path / "classes.tif", ServeOptions(output_names=["class"]))
    entries = ET.parse(result.style).getroot().findall(".//paletteEntry")
    assert [(e.get("value"), e.get("label"), e.get("color")) for e in entries] == [
        ("1", "crop", "#e6c229"),
        ("2", "developed", "#d7301f"),
        ("3", "tree", "#1b7837"),
        ("4", "water", "#2c7fb8"),
    ]
    probabilities = serve(
        [ServeSource(strip)], out / "model", tmp_path / "prob.tif", ServeOptions(output_names=["prob"])
    )
    assert probabilities.style is None


def test_a_classifier_serves_its_class_map_unless_told_otherwise(trained, tmp_path, strip):
    _, _, out = trained
    log = Log()
    default = serve([ServeSource(strip)], out / "model", tmp_path / "default.tif", progress=log)
    named = serve([ServeSource(strip)], out / "model", tmp_path / "named.tif", ServeOptions(output_names=["class"]))
    assert [o.name for o in default.plan.outputs] == ["class"] and default.style is not None
    with rasterio.open(tmp_path / "default.tif") as a, rasterio.open(tmp_path / "named.tif") as b:
        assert a.count == 1 and a.descriptions == ("class",) and np.array_equal(a.read(), b.read())
    assert any("serving class (1 band); also available (OUTPUT_NAMES): features, prob" in line for line in log.lines), (
        log.lines
    )
    meta = json.loads((out / "model" / "otbtf_model.json").read_text())
    assert meta["default_outputs"] == ["class"] and named.plan.other_outputs == ["features", "prob"]


def test_tta_class_is_the_class_of_the_mean_scores(trained, tmp_path, strip):
    _, _, out = trained
    options = ServeOptions(output_names=["class", "prob"], tta=True, tile_px=64)
    served = serve([ServeSource(strip)], out / "model", tmp_path / "tta.tif", options)
    assert served.plan.class_from_scores is not None
    plain = serve([ServeSource(strip)], out / "model", tmp_path / "plain.tif", ServeOptions(output_names=["prob"]))
    with rasterio.open(served.output) as tta, rasterio.open(plain.output) as once:
        classes, scores, scores_once = tta.read(1), tta.read([2, 3, 4, 5]), once.read()
    assert np.array_equal(classes, np.array([1, 2, 3, 4])[np.argmax(scores, axis=0)])
    assert np.abs(scores - scores_once).max() > 1e-3  # the augmentation is applied


def test_unet_segmentation_report_and_served_blocks(tmp_path):
    """otbtf's Amsterdam patches (64 px, 4 bands, label patches 0/1): the report equals a
    per-pixel confusion computed from the SavedModel; served block by block over a
    georeferenced mosaic of 4 patches, the class map equals the model's predictions."""
    result = train(
        TrainConfig(
            [A_PATCHES],
            A_LABELS,
            tmp_path / "unet",
            architecture="unet",
            epochs=2,
            batch_size=4,
            valid_patches=[A_PATCHES],
            valid_labels=A_LABELS,
        )
    )
    meta = json.loads((tmp_path / "unet" / "otbtf_model.json").read_text())
    assert (meta["task"], meta["inputs"][0]["rfield"], meta["efield"]) == ("segmentation", 64, 32)
    function = tf.saved_model.load(str(tmp_path / "unet" / "savedmodel")).signatures["serving_default"]
    with PatchesImage(A_PATCHES) as images, PatchesImage(A_LABELS) as labels:
        x = images.read(0, 24).astype("float32")
        truth = labels.read(0, 24)[:, 16:48, 16:48, 0].astype(int)
    predicted = function(x1=tf.constant(x))["class"].numpy()
    assert predicted.shape == (24, 32, 32)
    matrix = np.zeros((2, 2), dtype=int)
    np.add.at(matrix, (truth.ravel(), predicted.ravel()), 1)
    assert result.report["confusion_matrix"] == matrix.tolist() and result.report["samples"] == 24 * 32 * 32

    mosaic = np.zeros((4, 128, 128), dtype="float32")
    for k, (r, c) in enumerate(((0, 0), (0, 64), (64, 0), (64, 64))):
        mosaic[:, r : r + 64, c : c + 64] = x[k + 6].transpose(2, 0, 1)
    path = tmp_path / "mosaic.tif"
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        width=128,
        height=128,
        count=4,
        dtype="float32",
        crs="EPSG:32631",
        transform=rasterio.transform.from_origin(600000, 5800000, 1, 1),
    ) as dst:
        dst.write(mosaic)
    served = serve([ServeSource(path)], tmp_path / "unet", tmp_path / "map.tif", ServeOptions(output_names=["class"]))
    assert served.plan.mode == "blocks"
    with rasterio.open(tmp_path / "map.tif") as src:
        got = src.read(1)
        assert src.transform.c == 600016  # 64 // 2 - 32 // 2 = 16 px in
    # 128 - 32 = 96 px: 3 x 3 whole blocks of 32 px; block (i, j) from mosaic[32 i: 32 i + 64, ...]
    windows = np.stack(
        [mosaic[:, 32 * i : 32 * i + 64, 32 * j : 32 * j + 64].transpose(1, 2, 0) for i in range(3) for j in range(3)]
    )
    blocks = function(x1=tf.constant(windows))["class"].numpy()
    expected = blocks.reshape(3, 3, 32, 32).transpose(0, 2, 1, 3).reshape(96, 96)
    assert np.array_equal(got, expected)


def test_single_class_labels_are_refused(tmp_path):
    only_background = tmp_path / "y.tif"
    with rasterio.open(A_LABELS) as src:
        profile, data = src.profile, src.read()
    with rasterio.open(only_background, "w", **profile) as dst:
        dst.write(np.zeros_like(data))
    with pytest.raises(InputError, match=r"single class \(0\): there is nothing to learn"):
        train(TrainConfig([A_PATCHES], only_background, tmp_path / "m", architecture="unet"))


def test_augmentation_applies_one_dihedral_transform_to_patch_and_labels():
    from otbtf_plugin.training.architectures import keras_module
    from otbtf_plugin.training.data import TrainingSet, batches, dihedral

    keras = keras_module()
    data = TrainingSet([A_PATCHES], A_LABELS, "training")
    label_index = np.array([0, 1])
    plain = batches(keras, data, np.arange(24), 8, label_index, 0, shuffle=False)
    augmented = batches(keras, data, np.arange(24), 8, label_index, 0, shuffle=False, augment=True)
    x0, y0 = plain[1]
    x1, y1 = augmented[1]
    changed = 0
    for k in range(8):
        matches = [t for t in range(8) if np.array_equal(dihedral(x0[k], t), x1[k])]
        assert matches, k  # the augmented patch is a flip / rotation of the original...
        assert any(np.array_equal(dihedral(y0[k], t), y1[k]) for t in matches)  # ...and its labels the same one
        changed += not np.array_equal(x0[k], x1[k])
    assert changed > 0
    again = batches(keras, data, np.arange(24), 8, label_index, 0, shuffle=False, augment=True)
    assert np.array_equal(again[1][0], x1)  # seeded
    data.close()


def test_fine_tuning_can_freeze_the_first_layers(trained, patches, tmp_path):
    import keras

    from otbtf_plugin.training.architectures import class_code_layer

    _, _, out = trained
    (tp, ty, _) = patches["train"]
    train(
        TrainConfig(
            [tp],
            ty,
            tmp_path / "tuned",
            epochs=1,
            batch_size=16,
            initial_model=out / "model",
            freeze_layers=2,
            augment=True,
        )
    )
    class_code_layer(keras)
    before = keras.saving.load_model(out / "model" / "model.keras")
    after = keras.saving.load_model(tmp_path / "tuned" / "model.keras")
    with_weights = [(a, b) for a, b in zip(before.layers, after.layers, strict=True) if a.weights]
    for k, (a, b) in enumerate(with_weights):
        same = all(np.array_equal(u, v) for u, v in zip(a.get_weights(), b.get_weights(), strict=True))
        assert same == (k < 2), (k, a.name)
    meta = json.loads((tmp_path / "tuned" / "otbtf_model.json").read_text())
    assert meta["training"]["frozen_layers"] == 2 and meta["training"]["augment"] is True


def test_patch_regressor(patches, tmp_path):
    from otbtf_plugin.patches_image import PatchesWriter

    def targets(path, out):
        with PatchesImage(path) as images:
            values = images.read(0, len(images))[:, 6:10, 6:10, 2].mean(axis=(1, 2)).astype("float32") / 100.0
        with PatchesWriter(out, len(values), 1, 1, 1, "float32") as writer:
            writer.write(values.reshape(-1, 1, 1, 1))
        return values

    (tp, _, _), (vp, _, extraction) = patches["train"], patches["valid"]
    targets(tp, tmp_path / "t.tif")
    truth = targets(vp, tmp_path / "v.tif")
    result = train(
        TrainConfig(
            [tp],
            tmp_path / "t.tif",
            tmp_path / "reg",
            architecture="regressor",
            epochs=30,
            batch_size=16,
            valid_patches=[vp],
            valid_labels=tmp_path / "v.tif",
            output_report=tmp_path / "reg.html",
        )
    )
    meta = json.loads((tmp_path / "reg" / "otbtf_model.json").read_text())
    assert (meta["task"], list(meta["outputs"])) == ("regression", ["value"])
    function = tf.saved_model.load(str(tmp_path / "reg" / "savedmodel")).signatures["serving_default"]
    with PatchesImage(vp) as images:
        predicted = function(x1=tf.constant(images.read(0, len(images)).astype("float32")))["value"].numpy().ravel()
    error = predicted - truth
    assert result.report["rmse"] == pytest.approx(np.sqrt((error**2).mean()), rel=1e-5)
    assert result.report["r2"] == pytest.approx(1 - (error**2).sum() / ((truth - truth.mean()) ** 2).sum(), rel=1e-5)
    assert result.report["r2"] > 0.5  # it learnt something real
    assert "RMSE" in (tmp_path / "reg.html").read_text()
    served = serve([ServeSource(RGB)], tmp_path / "reg", tmp_path / "values.tif")
    assert [o.name for o in served.plan.outputs] == ["value"]
    with rasterio.open(tmp_path / "values.tif") as src:
        values = np.array([v[0] for v in src.sample(zip(extraction.x, extraction.y, strict=True))])
    assert np.abs(values - predicted).max() <= 1e-3


def test_a_model_folder_is_replaced_only_if_it_is_ours(patches, tmp_path):
    """An existing model of ours is replaced (the old one is gone, nothing left beside it);
    a folder that is not a model, a model folder that also holds the user's files, or a
    folder that holds an input, is refused and kept byte for byte."""
    from snapshot import assert_untouched, snapshot

    (tp, ty, _) = patches["train"]
    config = TrainConfig([tp], ty, tmp_path / "model", epochs=1, batch_size=16, output_report=tmp_path / "r.html")
    first = train(config)
    (tmp_path / "model" / "map.tif").write_text("served into the model folder")
    kept = snapshot(tmp_path / "model")
    with pytest.raises(InputError, match=r"OUTPUT_MODEL '.*model' holds 'map.tif', which otbtf did not write there"):
        train(config)
    assert_untouched(kept, tmp_path / "model")
    (tmp_path / "model" / "map.tif").unlink()
    train(config)
    assert snapshot(tmp_path / "model") != kept
    assert (tmp_path / "model" / "otbtf_model.json").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model", "r.html", "r.json"]
    assert first.model_folder == tmp_path / "model"

    project = tmp_path / "project"
    project.mkdir()
    (project / "notes.txt").write_text("mine")
    before = snapshot(project)
    with pytest.raises(InputError, match=r"is an existing folder that is not an otbtf model"):
        train(TrainConfig([tp], ty, project, epochs=1))
    with pytest.raises(InputError, match=r"OUTPUT_MODEL .* holds the input TRAIN_PATCHES"):
        train(TrainConfig([tp], ty, tp.parent, epochs=1))
    with pytest.raises(InputError, match=r"OUTPUT_MODEL .* is the same file as the input MODEL"):
        train(TrainConfig([tp], ty, tmp_path / "model", epochs=1, initial_model=tmp_path / "model"))
    assert_untouched(before, project)


def test_a_failed_style_leaves_the_previous_output(trained, tmp_path, monkeypatch, strip):
    """The class map and its .qml are renamed together: a failure writing the style
    keeps the previous map and style byte for byte, and leaves no temporary."""
    from otbtf_plugin.serving import run as serving
    from snapshot import snapshot

    _, _, out = trained
    target = tmp_path / "classes.tif"
    serve([ServeSource(strip)], out / "model", target, ServeOptions(output_names=["class"]))
    before = snapshot(tmp_path)
    assert sorted(before) == ["classes.qml", "classes.tif"]

    def broken_style(raster, classes, staged=None):
        staged.file(Path(raster).with_suffix(".qml"))
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(serving, "write_class_style", broken_style)
    with pytest.raises(InputError, match=r"could not write .*classes.tif.*No space left on device"):
        serve([ServeSource(strip)], out / "model", target, ServeOptions(output_names=["class"]))
    assert snapshot(tmp_path) == before


def test_serving_8_bit_data_to_a_model_of_16_bit_data_warns(trained, tmp_path, strip):
    """The model folder keeps the training bands' statistics: values far from them are said."""
    _, _, out = trained
    with rasterio.open(strip) as src:
        profile, data = src.profile, src.read()
    eight_bit = tmp_path / "rgb8.tif"
    with rasterio.open(eight_bit, "w", **(profile | {"dtype": "uint8"})) as dst:
        dst.write(np.clip(data / 64, 0, 255).astype("uint8"))

    same, other = Log(), Log()
    serve([ServeSource(strip)], out / "model", tmp_path / "a.tif", ServeOptions(output_names=["class"]), same)
    serve([ServeSource(eight_bit)], out / "model", tmp_path / "b.tif", ServeOptions(output_names=["class"]), other)
    assert not [line for line in same.lines if line.startswith("warning")]
    warnings = [line for line in other.lines if line.startswith("warning")]
    assert len(warnings) == 1 and warnings[0].startswith("warning: source 1 (rgb8.tif) band ")
    assert "the model was trained on values averaging" in warnings[0]


def test_a_diverging_training_fails_and_writes_nothing(patches, tmp_path):
    """LEARNING_RATE 1e6: the loss becomes NaN in the first epoch; the run stops there, names
    the learning rate and writes no model, no report and no checkpoint."""
    (tp, ty, _) = patches["train"]
    before = sorted(p.name for p in patches["folder"].iterdir())
    config = TrainConfig(
        [tp],
        ty,
        tmp_path / "model",
        output_report=tmp_path / "r.html",
        epochs=20,
        batch_size=16,
        learning_rate=1e6,
        checkpoint_dir=tmp_path / "ckpt",
    )
    with pytest.raises(
        InputError,
        match=r"^training diverged: the (training|validation) loss became (nan|inf) in "
        r"epoch 1.*no model was written. LEARNING_RATE 1e\+06 is probably too high",
    ):
        train(config)
    assert [p.name for p in tmp_path.iterdir() if p.name != "ckpt"] == []
    assert not (tmp_path / "ckpt" / "checkpoint.json").exists()
    assert sorted(p.name for p in patches["folder"].iterdir()) == before
    for rate in (float("nan"), float("inf"), 0.0):
        with pytest.raises(InputError, match=r"^LEARNING_RATE = \S+ is not accepted: give a number above 0"):
            train(TrainConfig([tp], ty, tmp_path / "model", learning_rate=rate))


def test_validation_labels_are_recoded_through_the_class_names(patches, tmp_path):
    """Validation patches extracted from polygons lacking 'crop' code their text classes on
    their own (developed=1 where training has crop=1): the report showed accuracy 0 and
    credited crop with the developed patches. Codes are now matched by name."""
    from osgeo import gdal

    from otbtf_plugin.training.data import TrainingSet, align_classes

    without_crop = tmp_path / "no_crop.gpkg"
    gdal.VectorTranslate(str(without_crop), str(POLYGONS), where="name <> 'crop'")
    samples = sample_selection(RGB, without_crop, "name", strategy="constant", value=20, sampler="random", seed=3)
    points = samples.write_gpkg(tmp_path / "points.gpkg")
    extract_patches([PatchSource(RGB, 16)], points, [tmp_path / "vp.tif"], "name", labels_output=tmp_path / "vy.tif")
    (tp, ty, _) = patches["train"]
    train_set, valid_set = (
        TrainingSet([tp], ty, "training"),
        TrainingSet([tmp_path / "vp.tif"], tmp_path / "vy.tif", "validation"),
    )
    try:
        assert train_set.class_names() == {1: "crop", 2: "developed", 3: "tree", 4: "water"}
        assert valid_set.class_names() == {1: "developed", 2: "tree", 3: "water"}
        raw = valid_set.read_labels(np.arange(valid_set.count)).astype(int)
        note = align_classes(train_set, valid_set)
        assert note == (
            "validation labels re-coded by class name to the training codes: developed 1 -> 2, "
            "tree 2 -> 3, water 3 -> 4"
        )
        assert np.array_equal(valid_set.read_labels(np.arange(valid_set.count)), raw + 1)
        _, labels = valid_set.read(np.arange(valid_set.count)[::-1])
        assert np.array_equal(labels, (raw + 1)[::-1])
    finally:
        train_set.close()
        valid_set.close()
    log = Log()
    result = train(
        TrainConfig(
            [tp],
            ty,
            tmp_path / "model",
            valid_patches=[tmp_path / "vp.tif"],
            valid_labels=tmp_path / "vy.tif",
            epochs=1,
            batch_size=16,
            seed=1,
        ),
        log,
    )
    support = {c["name"]: c["support"] for c in result.report["classes"]}
    names = {1: "developed", 2: "tree", 3: "water"}
    assert support == {"crop": 0, **{names[c]: int((raw == c).sum()) for c in names}}
    assert any(line.startswith("validation labels re-coded by class name") for line in log.lines)
