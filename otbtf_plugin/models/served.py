"""What serving sees of a model, whatever runs it (TensorFlow or onnxruntime): its tensors,
channels last, and one call.

The engine works channels last (``[batch, rows, cols, bands]``). A channels-first model
(``[batch, bands, rows, cols]``: PyTorch's exports, Deepness' zoo) is wrapped by
:func:`channels_last`, which turns its tensors' shapes and every call's arrays around at the
model's door, so that planning, tiles, TTA and blending never know.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

import numpy as np

from ..errors import InputError
from .metadata import ModelMetadata

Layout = Literal["auto", "NHWC", "NCHW"]
LAYOUTS: tuple[str, ...] = ("auto", "NHWC", "NCHW")


class ModelError(InputError):
    """A model that cannot be used as asked; the message says what would work."""


@dataclass(frozen=True)
class TensorInfo:
    name: str
    dtype: str  # numpy dtype name
    shape: tuple  # None for unknown dimensions; batch first

    def describe(self) -> str:
        dims = ", ".join("?" if d is None else str(d) for d in self.shape)
        return f"{self.name} [{dims}] {self.dtype}"


@dataclass
class ServedModel:
    path: Path
    kind: str  # "savedmodel", "keras", "onnx"
    inputs: list[TensorInfo]
    outputs: list[TensorInfo]
    metadata: ModelMetadata | None = None  # from otbtf_model.json, or read from the ONNX file
    _call: Callable[[dict], dict] | None = None
    _keep: object = None  # what the call needs alive (a loaded SavedModel, an onnxruntime session)
    layout: Literal["NHWC", "NCHW"] = "NHWC"  # of the model itself; inputs and outputs here are always channels last
    notes: list[str] = field(default_factory=list)  # what was read from the file, for the log and the dialog
    device: str = "CPU"  # where it runs, as the log says it (models.devices)

    def input(self, name: str) -> TensorInfo:
        for tensor in self.inputs:
            if tensor.name == name:
                return tensor
        raise ModelError(
            f"the model has no input {name!r}; its inputs: " + ", ".join(t.describe() for t in self.inputs)
        )

    def output(self, name: str) -> TensorInfo:
        for tensor in self.outputs:
            if tensor.name == name:
                return tensor
        raise ModelError(
            f"the model has no output {name!r}; its outputs: " + ", ".join(t.describe() for t in self.outputs)
        )

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run the model on a batch; ``feeds`` holds every input, by name (images channels
        last). A model whose inputs have a fixed batch size (``[1, 3, 64, 64]``, as many
        exports have) is called on batches of that size, the last one padded with zeros and
        its padding dropped from the outputs: the result does not depend on the batch size."""
        if self._call is None:
            raise ModelError(f"{self.path}: this model cannot be run")
        fixed = self.fixed_batch()
        count = max((len(value) for value in feeds.values() if np.ndim(value) > 0), default=0)
        if fixed is None or count in (0, fixed):
            return self._call(feeds)
        parts = []
        for start in range(0, count, fixed):
            size = min(fixed, count - start)
            chunk = {
                name: _batch_slice(value, start, size, fixed) if np.ndim(value) > 0 and len(value) == count else value
                for name, value in feeds.items()
            }
            parts.append({name: value[:size] for name, value in self._call(chunk).items()})
        return {name: np.concatenate([part[name] for part in parts]) for name in parts[0]}

    def fixed_batch(self) -> int | None:
        """The batch size the model's image inputs require, or None when they take any."""
        sizes = {int(t.shape[0]) for t in self.inputs if len(t.shape) == 4 and t.shape[0] is not None}
        return min(sizes) if sizes else None

    def describe(self) -> str:
        """One paragraph: what the model takes and gives (the log, the Apply dialog)."""
        text = (
            f"{self.kind} model, {self.layout}; inputs: "
            + ", ".join(t.describe() for t in self.inputs)
            + "; outputs: "
            + ", ".join(t.describe() for t in self.outputs)
        )
        return text + "".join(f"; {note}" for note in self.notes)


def _batch_slice(value: np.ndarray, start: int, size: int, fixed: int) -> np.ndarray:
    """``size`` items of ``value`` from ``start``, padded with zeros to ``fixed`` items."""
    part = value[start : start + size]
    if size == fixed:
        return part
    return np.concatenate([part, np.zeros((fixed - size, *part.shape[1:]), part.dtype)])


def _is_image(info: TensorInfo) -> bool:
    return len(info.shape) == 4


def guess_channels_first(shape: tuple) -> bool | None:
    """Whether a 4-D tensor ``shape`` reads ``[n, bands, rows, cols]`` (True) or ``[n, rows,
    cols, bands]`` (False), from what is known of it: one known size beside two unknown ones
    is the bands; of three known sizes, the two equal ones are rows and columns (square
    inputs). None when it cannot tell."""
    _, a, b, c = shape
    if b is None and c is None and a is not None:
        return True
    if a is None and b is None and c is not None:
        return False
    if None not in (a, b, c):
        if b == c != a:
            return True
        if a == b != c:
            return False
    return None


def resolve_layout(model: ServedModel, asked: str, default: str, guess: bool) -> tuple[str, str]:
    """The model's layout and how it was decided: ``asked`` (NHWC, NCHW), else (``guess``)
    read from its image inputs' sizes, else ``default``."""
    if asked not in LAYOUTS:
        raise InputError(f"LAYOUT {asked!r}: use one of {', '.join(LAYOUTS)}")
    if asked != "auto":
        return asked, "as asked (LAYOUT)"
    if not guess:
        return default, "the convention of its kind (set LAYOUT to change it)"
    if not any(_is_image(t) for t in model.inputs):
        return "NHWC", "no image input"
    guesses = {guess_channels_first(t.shape) for t in model.inputs if _is_image(t)} - {None}
    if len(guesses) == 1:
        return ("NCHW" if guesses.pop() else "NHWC"), "read from the inputs' sizes"
    if len(guesses) > 1:
        raise ModelError(
            f"{model.path.name}: some image inputs look channels-first and others channels-last ("
            + ", ".join(t.describe() for t in model.inputs)
            + "); say which with LAYOUT"
        )
    return default, "assumed (the inputs' sizes cannot tell; set LAYOUT to change it)"


def _to_last(info: TensorInfo) -> TensorInfo:
    n, c, h, w = info.shape
    return replace(info, shape=(n, h, w, c))


def channels_last(model: ServedModel) -> ServedModel:
    """``model`` (channels first) seen channels last: 4-D inputs are turned ``[n, c, h, w]``
    before the call, 4-D outputs turned back to ``[n, h, w, c]`` after it."""
    first_inputs = {t.name for t in model.inputs if _is_image(t)}
    first_outputs = {t.name for t in model.outputs if _is_image(t)}
    call = model.run

    def run(feeds: dict) -> dict:
        turned = {
            name: np.ascontiguousarray(np.asarray(value).transpose(0, 3, 1, 2))
            if name in first_inputs and np.ndim(value) == 4
            else value
            for name, value in feeds.items()
        }
        result = call(turned)
        return {
            name: np.asarray(value).transpose(0, 2, 3, 1) if name in first_outputs and np.ndim(value) == 4 else value
            for name, value in result.items()
        }

    return replace(
        model,
        inputs=[_to_last(t) if t.name in first_inputs else t for t in model.inputs],
        outputs=[_to_last(t) if t.name in first_outputs else t for t in model.outputs],
        _call=run,
        layout="NCHW",
        notes=list(model.notes),
    )


def classes_of_scores(scores: np.ndarray, codes, threshold: float | None = None) -> np.ndarray:
    """Class codes of scores ``[..., k]``: the code of the highest score. With ``threshold``
    (Deepness' rule), scores below it count as 0 first, so that a pixel with no score
    above it gets the first code (background). A single score (a sigmoid) gives the second
    code where it is at least ``threshold`` (0.5 if None) and not 0, else the first."""
    codes = np.asarray(codes)
    if scores.shape[-1] == 1:
        limit = 0.5 if threshold is None else threshold
        return codes[((scores[..., 0] >= limit) & (scores[..., 0] != 0)).astype(np.intp)]
    if threshold is not None:
        scores = np.where(scores < threshold, 0, scores)
    return codes[np.argmax(scores, axis=-1)]
