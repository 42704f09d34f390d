"""PATIENCE and CHECKPOINT_DIR: the best epoch is kept, and a killed run resumes to the
model an uninterrupted run gives."""

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from common import NC_IMAGE, NC_POLYGONS, POLYGONS, RGB, CancelAfter, Log

tf = pytest.importorskip("tensorflow")

from otbtf_plugin.errors import Cancelled, InputError  # noqa: E402
from otbtf_plugin.extraction import PatchSource, extract_patches  # noqa: E402
from otbtf_plugin.patches_image import PatchesImage  # noqa: E402
from otbtf_plugin.selection import sample_selection  # noqa: E402
from otbtf_plugin.training import TrainConfig, train  # noqa: E402
from otbtf_plugin.training.architectures import keras_module  # noqa: E402
from otbtf_plugin.training.data import TrainingSet, hold_out  # noqa: E402
from otbtf_plugin.training.schedule import Checkpoints, ScheduleState, schedule_callback  # noqa: E402

pytestmark = pytest.mark.slow  # real training runs, several per test

ROOT = Path(__file__).resolve().parents[2]


class FakeOptimizer:
    def __init__(self):
        self.learning_rate = 1.0
        self.variables = []


def run_schedule(losses, patience):
    """The schedule fed ``losses`` as validation losses; the model's weights are the epoch's number."""
    keras = keras_module()
    state, optimizer = ScheduleState(learning_rate=1.0), FakeOptimizer()
    callback = schedule_callback(keras, patience, Checkpoints(None, ""), state, optimizer, lambda: False)

    class Model:
        def __init__(self):
            self.stop_training = False
            self.weights = [np.zeros(1)]

        def get_weights(self):
            return [w.copy() for w in self.weights]

        def set_weights(self, weights):
            self.weights = weights

    model = Model()
    callback.set_model(model)
    for epoch, loss in enumerate(losses):
        model.weights = [np.array([epoch + 1.0])]
        callback.on_epoch_end(epoch, {"loss": 1.0, "val_loss": loss})
        if model.stop_training:
            break
    callback.on_train_end()
    return state, model.weights[0][0], optimizer.learning_rate


def test_early_stopping_keeps_the_best_epoch():
    # Lowest at epoch 3, then 3 epochs without improvement: stop after epoch 6, keep epoch 3.
    state, kept, lr = run_schedule([1.0, 0.8, 0.5, 0.6, 0.55, 0.7, 0.4, 0.3], patience=3)
    assert (state.epochs_done, state.best_epoch + 1, state.stopped, kept) == (6, 3, True, 3.0)
    assert state.history["val_loss"] == [1.0, 0.8, 0.5, 0.6, 0.55, 0.7]
    # The learning rate was halved once, after max(1, 3 // 2) = 1 epoch without improvement,
    # then again after the next one.
    assert lr == pytest.approx(0.125)
    # An improvement smaller than 1e-4 is none.
    state, kept, _ = run_schedule([1.0, 0.99995, 0.99991], patience=2)
    assert (state.best_epoch + 1, state.stopped, kept) == (1, True, 1.0)
    # Without patience every epoch runs and the last weights stay.
    state, kept, lr = run_schedule([1.0, 0.5, 0.9], patience=0)
    assert (state.epochs_done, state.stopped, kept, lr) == (3, False, 3.0, 1.0)


@pytest.fixture(scope="module")
def patches(tmp_path_factory):
    folder = tmp_path_factory.mktemp("patches")
    out = {}
    for name, seed, value in (("train", 0, 40), ("valid", 7, 20)):
        samples = sample_selection(RGB, POLYGONS, "name", strategy="constant", value=value, sampler="random", seed=seed)
        points = samples.write_gpkg(folder / f"{name}.gpkg")
        extract_patches(
            [PatchSource(RGB, 16)], points, [folder / f"{name}_x.tif"], "name", labels_output=folder / f"{name}_y.tif"
        )
        out[name] = (folder / f"{name}_x.tif", folder / f"{name}_y.tif")
    return out


def config(patches, output, **options):
    (tp, ty), (vp, vy) = patches["train"], patches["valid"]
    return TrainConfig(
        [tp],
        ty,
        output,
        valid_patches=[vp],
        valid_labels=vy,
        batch_size=16,
        seed=5,
        learning_rate=0.01,
        augment=True,
        **options,
    )


def scores(model_folder, patches_image):
    function = tf.saved_model.load(str(model_folder / "savedmodel")).signatures["serving_default"]
    with PatchesImage(patches_image) as images:
        return function(x1=tf.constant(images.read(0, len(images)).astype("float32")))["prob"].numpy()


@pytest.fixture(scope="module")
def nc_patches(tmp_path_factory):
    """8 px patches of every polygon pixel of the hard North Carolina scene."""
    folder = tmp_path_factory.mktemp("nc")
    points = sample_selection(NC_IMAGE, NC_POLYGONS, "id", strategy="all").write_gpkg(folder / "points.gpkg")
    extract_patches([PatchSource(NC_IMAGE, 8)], points, [folder / "x.tif"], "id", labels_output=folder / "y.tif")
    return folder / "x.tif", folder / "y.tif"


def test_the_kept_weights_are_those_of_the_lowest_validation_loss(nc_patches, tmp_path):
    x, y = nc_patches
    log = Log()
    result = train(
        TrainConfig(
            [x],
            y,
            tmp_path / "m",
            epochs=15,
            patience=3,
            batch_size=32,
            seed=2,
            learning_rate=0.003,
            class_weights=False,
        ),
        progress=log,
    )
    losses = result.history["val_loss"]
    kept = result.training["kept_epoch"]
    best, expected = math.inf, 0
    for epoch, loss in enumerate(losses, 1):  # lower by at least 1e-4: an improvement
        if loss < best - 1e-4:
            best, expected = loss, epoch
    assert kept == expected and result.training["epochs_run"] == len(losses)
    # The served model's cross-entropy on the held-out patches, computed here, is that epoch's.
    data = TrainingSet([x], y, "training")
    try:
        valid = np.flatnonzero(hold_out(data, y, 0.2, seed=2).validation)
        patches, labels = data.read(valid)
    finally:
        data.close()
    function = tf.saved_model.load(str(tmp_path / "m" / "savedmodel")).signatures["serving_default"]
    prob = function(x1=tf.constant(patches[0].astype("float32")))["prob"].numpy()
    codes = [c["code"] for c in json.loads((tmp_path / "m" / "otbtf_model.json").read_text())["classes"]]
    truth = np.searchsorted(codes, labels.astype(int))
    assert -np.mean(np.log(prob[np.arange(len(truth)), truth])) == pytest.approx(losses[kept - 1], rel=1e-4)
    assert any(line.startswith(f"kept epoch {kept} of {len(losses)}") for line in log.lines)


TRAIN_CHILD = """
import json, sys
sys.path[:0] = [sys.argv[1], sys.argv[1] + "/tests"]
import common  # noqa: F401  (TensorFlow the plugin's way)
from otbtf_plugin.training import TrainConfig, train
train(TrainConfig(**json.loads(sys.argv[2])))
"""


def test_a_killed_run_resumes_to_the_uninterrupted_model(patches, tmp_path):
    whole = train(config(patches, tmp_path / "whole", epochs=6, patience=4, checkpoint_dir=tmp_path / "c1"))
    # The same run in another process, killed (SIGKILL: no cleanup at all) once 3 epochs are saved.
    settings = config(patches, tmp_path / "resumed", epochs=6, patience=4, checkpoint_dir=tmp_path / "c2")
    arguments = {
        k: (str(v) if isinstance(v, Path) else [str(p) for p in v] if isinstance(v, list) else v)
        for k, v in vars(settings).items()
    }
    child = subprocess.Popen(
        [sys.executable, "-c", TRAIN_CHILD, str(ROOT), json.dumps(arguments)],
        env={**os.environ, "CUDA_VISIBLE_DEVICES": ""},
    )
    state = tmp_path / "c2" / "checkpoint.json"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and child.poll() is None:
        if state.is_file() and json.loads(state.read_text())["state"]["epochs_done"] >= 3:
            break
        time.sleep(0.05)
    assert child.poll() is None, "the child finished before it could be killed"
    child.send_signal(signal.SIGKILL)
    child.wait()
    assert not (tmp_path / "resumed").exists()
    done = json.loads(state.read_text())["state"]["epochs_done"]
    assert 3 <= done < 6
    log = Log()
    resumed = train(settings, progress=log)
    assert any(
        line.startswith(f"resuming from the checkpoint in {tmp_path / 'c2'} after epoch {done}") for line in log.lines
    )
    assert resumed.history == whole.history
    assert resumed.training["kept_epoch"] == whole.training["kept_epoch"]
    assert np.array_equal(
        scores(tmp_path / "resumed", patches["valid"][0]), scores(tmp_path / "whole", patches["valid"][0])
    )
    # Only the files the checkpoint names are left: no partial file of the killed write.
    saved = json.loads(state.read_text())
    assert sorted(p.name for p in (tmp_path / "c2").iterdir()) == sorted(["checkpoint.json", *saved["files"].values()])


def test_a_cancelled_run_resumes_and_another_runs_checkpoint_is_refused(patches, tmp_path):
    settings = config(patches, tmp_path / "m", epochs=3, checkpoint_dir=tmp_path / "c")
    with pytest.raises(Cancelled, match=r"the checkpoint in .* resumes it"):
        train(settings, progress=CancelAfter(15))  # 10 batches per epoch: cancelled in epoch 2
    saved = json.loads((tmp_path / "c" / "checkpoint.json").read_text())
    assert saved["state"]["epochs_done"] == 1  # the interrupted epoch is not counted
    assert not (tmp_path / "m").exists()
    result = train(settings)
    assert len(result.history["loss"]) == 3
    other = config(patches, tmp_path / "m2", epochs=3, checkpoint_dir=tmp_path / "c")
    other.learning_rate = 0.02
    with pytest.raises(InputError, match="holds the checkpoint of another training run"):
        train(other)
    assert not math.isnan(result.report["overall_accuracy"])


def test_strays_of_a_killed_write_are_removed_and_others_files_kept(patches, tmp_path):
    settings = config(patches, tmp_path / "m", epochs=2, checkpoint_dir=tmp_path / "c")
    train(settings)
    folder = tmp_path / "c"
    named = json.loads((folder / "checkpoint.json").read_text())["files"]
    # What a kill between writing an epoch's state and renaming checkpoint.json leaves, and a user's file.
    (folder / "state.3.npz").write_bytes(b"x")
    (folder / ".state.3.npz.partial").write_bytes(b"x")
    (folder / "notes.txt").write_text("mine")
    settings.epochs = 3
    result = train(settings)
    assert len(result.history["loss"]) == 3
    names = json.loads((folder / "checkpoint.json").read_text())["files"]
    assert names["state"] == "state.3.npz" and names != named
    assert sorted(p.name for p in folder.iterdir()) == sorted(["checkpoint.json", "notes.txt", *names.values()])
    assert (folder / "notes.txt").read_text() == "mine"


def test_folds_cross_validate_networks_on_whole_polygons(nc_patches, tmp_path):
    """FOLDS=2: a network per fold scored on polygons it never saw; the model written is the
    one trained without FOLDS."""
    from otbtf_plugin.patches_image import read_origins
    from otbtf_plugin.training.data import patch_groups
    from otbtf_plugin.validation import group_folds

    x, y = nc_patches
    options = {"epochs": 3, "patience": 0, "batch_size": 64, "seed": 1}
    plain = train(TrainConfig([x], y, tmp_path / "plain", **options))
    log = Log()
    crossed = train(
        TrainConfig([x], y, tmp_path / "crossed", folds=2, output_report=tmp_path / "r.html", **options), progress=log
    )
    validated = crossed.training["cross_validation"]
    data = TrainingSet([x], y, "training")
    try:
        found = patch_groups(data, y)
    finally:
        data.close()
    fold = group_folds(found.strata, found.groups, 2, 1)
    origins, _ = read_origins(y, len(fold))
    whole = found.groups >= 0  # the single agriculture polygon is cut into blocks (negative groups)
    assert (~whole).any() and set(origins.polygon[~whole].tolist()) == {int(origins.polygon[~whole][0])}
    assert not set(origins.polygon[whole & (fold == 0)].tolist()) & set(origins.polygon[whole & (fold == 1)].tolist())
    assert [f["samples"] for f in validated["per_fold"]] == [int((fold == 0).sum()), int((fold == 1).sum())]
    accuracy = [f["overall_accuracy"] for f in validated["per_fold"]]
    assert validated["summary"]["overall_accuracy"]["mean"] == pytest.approx(np.mean(accuracy))
    assert validated["pooled"]["overall_accuracy"] == pytest.approx(
        sum(a * f["samples"] for a, f in zip(accuracy, validated["per_fold"], strict=True)) / len(fold)
    )
    assert sum(line.startswith("cross-validation fold") for line in log.lines) == 2
    assert "Cross-validation grouped by polygon (2 folds)" in (tmp_path / "r.html").read_text()
    # The model written does not depend on FOLDS.
    assert np.array_equal(scores(tmp_path / "plain", x), scores(tmp_path / "crossed", x))
    assert plain.history == crossed.history
    with pytest.raises(InputError, match="FOLDS=1: give 0"):
        train(TrainConfig([x], y, tmp_path / "m", folds=1))
