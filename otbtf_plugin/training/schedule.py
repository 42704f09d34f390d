"""When training stops, which epoch is kept, and how a killed run resumes.

- ``PATIENCE`` > 0: training stops once the validation loss has not improved for that
  many epochs, and the best epoch's weights are kept (``EPOCHS`` is a maximum). The
  learning rate is halved when the validation loss has not improved for half of it.
- ``CHECKPOINT_DIR``: after every epoch the whole state of the run (weights, random seed
  states, optimizer state, the schedule's counters, the history) is written there, and the
  best epoch's weights after each improvement. A run given the same folder and the same
  data and settings resumes after the last epoch written, and ends with the model an
  uninterrupted run gives (the shuffle of epoch e depends on the seed and e only). A
  folder holding another run's checkpoint is refused; ``EPOCHS`` may grow between runs.

Files in the folder: ``checkpoint.json`` (written last, by a rename: the files it names are
complete), ``state.<epoch>.npz`` and ``best.<epoch>.npz``; nothing else there is touched.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError
from ..outputs import Output, PathLike

STATE_FILE = "checkpoint.json"
LR_FACTOR = 0.5  # learning rate multiplied by this on a plateau
MIN_DELTA = 1e-4  # a validation loss lower by less than this is no improvement


def checkpoint_output(path: PathLike) -> Output:
    """A checkpoint folder as a run's output: written into (the user's other files there are
    kept: only our own stray checkpoint files are removed); no other output may lie in it."""
    return Output(path, "into")


@dataclass
class ScheduleState:
    """Counters of the schedule, saved with each checkpoint."""

    epochs_done: int = 0
    best_loss: float = math.inf
    best_epoch: int = -1  # 0-based; -1: none yet
    since_best: int = 0
    since_lr_cut: int = 0
    learning_rate: float = 0.0
    stopped: bool = False
    history: dict[str, list[float]] = field(default_factory=dict)


def fingerprint(settings: dict, files: list[str | Path]) -> str:
    """What a checkpoint must match to be resumed: the settings that shape the run and the
    content of the training and validation files."""
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode())
    for path in files:
        with open(path, "rb") as data:
            for chunk in iter(lambda: data.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()


class Checkpoints:
    """The checkpoint folder of a run (or none)."""

    def __init__(self, folder: str | Path | None, key: str):
        self.folder = Path(folder) if folder else None
        self.key = key
        self.files: dict[str, str] = {}  # the checkpoint's files: "state", "best"

    def load(self, model, optimizer) -> ScheduleState | None:
        """The saved state, put back into ``model`` and ``optimizer``; None without a checkpoint."""
        if self.folder is None or not (self.folder / STATE_FILE).is_file():
            return None
        try:
            saved = json.loads((self.folder / STATE_FILE).read_text(encoding="utf-8"))
            if saved.get("key") != self.key:
                raise InputError(
                    f"CHECKPOINT_DIR {str(self.folder)!r} holds the checkpoint of another training run "
                    "(other data or settings): choose an empty folder, or the run's own settings"
                )
            state = ScheduleState(**saved["state"])
            with np.load(self.folder / saved["files"]["state"]) as arrays:
                _assign(model.variables, arrays, "model")
                optimizer.build(model.trainable_variables)
                _assign(optimizer.variables, arrays, "optimizer")
            self.files = saved["files"]
            self._remove_strays()
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise InputError(
                f"CHECKPOINT_DIR {str(self.folder)!r}: the checkpoint cannot be read ({err}); "
                "choose an empty folder to start again"
            ) from err
        return state

    def _remove_strays(self) -> None:
        """Files of ours that the checkpoint does not name: written by a run killed before it
        renamed ``checkpoint.json``, or its temporaries."""
        if self.folder is None:
            return
        named = set(self.files.values())
        for pattern in (
            "state.*.npz",
            "best.*.npz",
            ".state.*.npz.partial",
            ".best.*.npz.partial",
            f".{STATE_FILE}.partial",
        ):
            for path in self.folder.glob(pattern):
                if path.name not in named:
                    path.unlink(missing_ok=True)

    def best_weights(self) -> list[np.ndarray] | None:
        name = self.files.get("best")
        if self.folder is None or not name:
            return None
        with np.load(self.folder / name) as arrays:
            return [arrays[f"w{k}"] for k in range(len(arrays.files))]

    def save(self, model, optimizer, state: ScheduleState, best: list[np.ndarray] | None) -> None:
        """The state after an epoch (and the best weights when they changed) in new files, then
        ``checkpoint.json`` naming them, replaced by a rename; then the files it no longer
        names are removed. A kill at any moment leaves the previous checkpoint whole."""
        if self.folder is None:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        files = dict(self.files)
        files["state"] = f"state.{state.epochs_done}.npz"
        arrays: dict[str, Any] = {f"model{k}": np.asarray(v) for k, v in enumerate(model.variables)}
        arrays.update({f"optimizer{k}": np.asarray(v) for k, v in enumerate(optimizer.variables)})
        _replace(self.folder / files["state"], lambda f: np.savez(f, **arrays))
        if best is not None:
            files["best"] = f"best.{state.best_epoch + 1}.npz"
            weights: dict[str, Any] = {f"w{k}": w for k, w in enumerate(best)}
            _replace(self.folder / files["best"], lambda f: np.savez(f, **weights))
        text = json.dumps({"key": self.key, "files": files, "state": asdict(state)}, indent=1)
        _replace(self.folder / STATE_FILE, lambda f: f.write(text.encode()))
        for old in set(self.files.values()) - set(files.values()):
            (self.folder / old).unlink(missing_ok=True)
        self.files = files


def _assign(variables, arrays, prefix: str) -> None:
    count = sum(1 for name in arrays.files if name.startswith(prefix))
    if count != len(variables):
        raise ValueError(f"{count} saved {prefix} variables, {len(variables)} expected")
    for k, variable in enumerate(variables):
        variable.assign(arrays[f"{prefix}{k}"])


def _replace(path: Path, write) -> None:
    temporary = path.with_name(f".{path.name}.partial")
    try:
        with open(temporary, "wb") as out:
            write(out)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def schedule_callback(  # noqa: C901
    keras,
    patience: int,
    checkpoints: Checkpoints,
    state: ScheduleState,
    optimizer,
    cancelled,
):
    """A Keras callback: early stopping with the best epoch kept, the learning rate halved on
    plateaus (both only with ``patience`` > 0), a checkpoint after every epoch. An epoch
    interrupted by ``cancelled()`` is not counted (Keras still ends it)."""

    class Schedule(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.best = checkpoints.best_weights()
            self.diverged: str | None = None  # where the loss stopped being a finite number
            self.epoch = 0

        def on_epoch_begin(self, epoch, logs=None):
            self.epoch = epoch

        def on_train_batch_end(self, batch, logs=None):
            loss = (logs or {}).get("loss")
            if loss is not None and not math.isfinite(float(loss)) and self.diverged is None:
                self.diverged = f"the training loss became {float(loss)} in epoch {self.epoch + 1}, batch {batch + 1}"
                self.model.stop_training = True

        def on_epoch_end(self, epoch, logs=None):
            if cancelled() or self.diverged:
                return
            logs = logs or {}
            if not all(math.isfinite(float(value)) for key, value in logs.items() if key.endswith("loss")):
                loss = float(logs.get("val_loss", math.nan))
                self.diverged = f"the validation loss became {loss} in epoch {epoch + 1}"
                self.model.stop_training = True
                return
            for key, value in logs.items():
                if key != "learning_rate":
                    state.history.setdefault(key, []).append(float(value))
            loss = float(logs.get("val_loss", math.nan))
            state.epochs_done = epoch + 1
            improved = loss < state.best_loss - MIN_DELTA
            if improved:
                state.best_loss, state.best_epoch, state.since_best, state.since_lr_cut = loss, epoch, 0, 0
                self.best = [np.asarray(w) for w in self.model.get_weights()]
            else:
                state.since_best += 1
                state.since_lr_cut += 1
            if patience > 0 and state.since_lr_cut >= max(1, patience // 2):
                optimizer.learning_rate = float(optimizer.learning_rate) * LR_FACTOR
                state.since_lr_cut = 0
            state.learning_rate = float(optimizer.learning_rate)
            if patience > 0 and state.since_best >= patience:
                state.stopped = True
                self.model.stop_training = True
            checkpoints.save(self.model, optimizer, state, self.best if improved else None)

        def on_train_end(self, logs=None):
            if patience > 0 and self.best is not None and not self.diverged:
                self.model.set_weights(self.best)

    return Schedule()
