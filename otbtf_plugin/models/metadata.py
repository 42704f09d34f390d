"""The model folder's contract: what otbtf:tensorflowmodeltrain writes in ``otbtf_model.json``
and what serving, features and the *Apply a model* dialog read from it.

One typed definition for both sides. Reading is tolerant: a key that is missing takes its
default (older folders, folders written by hand: a receptive field and a normalisation
are enough), a key we do not know is kept and written back; a value of the wrong kind is
one plain error naming the file and the key.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

from ..errors import InputError
from ..outputs import Output, PathLike
from ..raster import CLASS_CODE_RANGE

METADATA_FILE = "otbtf_model.json"
MAX_PIXELS = 1 << 20  # a receptive or expression field, a scale: larger values are no model's
# What training writes in a model folder: an existing folder holding anything else is refused
# as OUTPUT_MODEL (replacing it would delete the rest).
MODEL_FOLDER_ENTRIES = (METADATA_FILE, "savedmodel", "model.keras")
FORMAT = "otbtf-qgis model 1"

Task = Literal["classification", "segmentation", "regression", "superresolution"]
TASKS: tuple[str, ...] = get_args(Task)


def model_folder_output(path: PathLike) -> Output:
    """A model folder as a run's output: replaced whole, when absent, empty or only ours."""
    return Output(path, "folder", marker=METADATA_FILE, owned=MODEL_FOLDER_ENTRIES)


class MetadataError(InputError):
    """An ``otbtf_model.json`` that cannot be read; the message names the file and the key."""


@dataclass(frozen=True)
class BandStatistics:
    """Mean and standard deviation per band."""

    mean: tuple[float, ...]
    std: tuple[float, ...]

    def to_json(self) -> dict:
        return {"mean": list(self.mean), "std": list(self.std)}


@dataclass(frozen=True)
class ModelInput:
    """An image input of the model and the source that feeds it."""

    name: str
    rfield: int | None = None  # receptive field, in pixels of its source
    bands: int | None = None
    band_statistics: BandStatistics | None = None  # of the training data (for warnings)
    normalisation: BandStatistics | None = None  # applied by the server before the model (not built in)

    def to_json(self) -> dict:
        data: dict[str, Any] = {"name": self.name}
        for key in ("rfield", "bands"):
            if getattr(self, key) is not None:
                data[key] = getattr(self, key)
        for key in ("band_statistics", "normalisation"):
            value = getattr(self, key)
            if value is not None:
                data[key] = value.to_json()
        return data


@dataclass(frozen=True)
class ModelClass:
    code: int
    name: str

    def to_json(self) -> dict:
        return {"code": self.code, "name": self.name}


@dataclass
class ModelMetadata:
    inputs: list[ModelInput] = field(default_factory=list)
    efield: int | None = None  # expression field, output pixels per receptive field
    scale: int | None = None  # spacing scale
    task: Task | None = None
    architecture: str | None = None
    outputs: dict[str, str] = field(default_factory=dict)  # the model's outputs: name -> what it is
    extra_outputs: dict[str, str] = field(default_factory=dict)  # served when named (deep features)
    default_outputs: list[str] = field(default_factory=list)  # served without OUTPUT_NAMES (empty: all outputs)
    classes: list[ModelClass] = field(default_factory=list)
    scores_output: str | None = None  # the output whose highest score gives the class (None: "prob")
    class_threshold: float | None = None  # scores below it count as 0 when taking the class (Deepness)
    resolution_cm: float | None = None  # the pixel size the model was made for (Deepness' resolution)
    upscale: int | None = None  # super-resolution: output pixels per input pixel along each axis
    covers_raster: bool = False  # served over the whole raster, its edges padded (as Deepness serves)
    first_bands: bool = False  # a source with more bands than an input takes gives its first ones
    target_statistics: dict | None = None  # regression: mean and std of the labels
    training: dict = field(default_factory=dict)  # the run's record (patches, epochs, seed...)
    history: dict[str, list[float]] = field(default_factory=dict)
    format: str = FORMAT
    created: str | None = None
    otbtf_plugin: str | None = None  # version that wrote it
    others: dict = field(default_factory=dict)  # keys this version does not know, kept as they are

    def input(self, name: str) -> ModelInput | None:
        return next((i for i in self.inputs if i.name == name), None)

    def class_dicts(self) -> list[dict]:
        return [c.to_json() for c in self.classes]

    def to_json(self) -> dict:
        data: dict[str, Any] = {"format": self.format}
        for key in ("created", "otbtf_plugin", "task", "architecture"):
            if getattr(self, key) is not None:
                data[key] = getattr(self, key)
        data["inputs"] = [i.to_json() for i in self.inputs]
        for key in ("efield", "scale", "scores_output", "class_threshold", "resolution_cm", "upscale"):
            if getattr(self, key) is not None:
                data[key] = getattr(self, key)
        for key in ("covers_raster", "first_bands"):
            if getattr(self, key):
                data[key] = True
        data.update(
            {
                "outputs": self.outputs,
                "extra_outputs": self.extra_outputs,
                "default_outputs": self.default_outputs,
                "target_statistics": self.target_statistics,
                "classes": self.class_dicts(),
                "training": self.training,
                "history": self.history,
            }
        )
        return {**data, **self.others}

    @classmethod
    def from_json(cls, data: Any, where: str = METADATA_FILE) -> ModelMetadata:
        if not isinstance(data, dict):
            raise MetadataError(f"{where}: expected a JSON object, found {type(data).__name__}")
        known = {f for f in cls.__dataclass_fields__ if f != "others"}
        task = data.get("task")
        if task is not None and task not in TASKS:
            raise MetadataError(f"{where}: task {task!r} is not one of {', '.join(TASKS)}")
        return cls(
            inputs=[_input(entry, where) for entry in _list(data, "inputs", where)],
            efield=_int(data, "efield", where),
            scale=_int(data, "scale", where),
            task=task,
            architecture=data.get("architecture"),
            outputs=_dict(data, "outputs", where),
            extra_outputs=_dict(data, "extra_outputs", where),
            default_outputs=[str(n) for n in _list(data, "default_outputs", where)],
            classes=[ModelClass(_code(c, where), str(_get(c, "name", where))) for c in _list(data, "classes", where)],
            scores_output=None if data.get("scores_output") is None else str(data["scores_output"]),
            class_threshold=_float(data, "class_threshold", where),
            resolution_cm=_float(data, "resolution_cm", where),
            upscale=_int(data, "upscale", where),
            covers_raster=bool(data.get("covers_raster", False)),
            first_bands=bool(data.get("first_bands", False)),
            target_statistics=_target_statistics(data, where),
            training=_dict(data, "training", where),
            history=_history(data, where),
            format=str(data.get("format", FORMAT)),
            created=data.get("created"),
            otbtf_plugin=data.get("otbtf_plugin"),
            others={k: v for k, v in data.items() if k not in known},
        )


def _get(entry: Any, key: str, where: str):
    if not isinstance(entry, dict) or key not in entry:
        raise MetadataError(f"{where}: an entry has no {key!r}: {entry!r}")
    return entry[key]


def _list(data: dict, key: str, where: str) -> list:
    value = data.get(key) or []
    if not isinstance(value, list):
        raise MetadataError(f"{where}: {key!r} must be a list, found {type(value).__name__}")
    return value


def _dict(data: dict, key: str, where: str) -> dict:
    value = data.get(key) or {}
    if not isinstance(value, dict):
        raise MetadataError(f"{where}: {key!r} must be an object ({{name: ...}}), found {_shown(value)}")
    return dict(value)


def _number(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, int | float) and math.isfinite(value)


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _int(data: dict, key: str, where: str) -> int | None:
    value = data.get(key)
    if value in (None, 0):
        return None
    if not _number(value) or value != int(value) or not 0 < value <= MAX_PIXELS:
        raise MetadataError(
            f"{where}: {key!r} must be a whole number of pixels (1 to {MAX_PIXELS}), found {_shown(value)}"
        )
    return int(value)


def _float(data: dict, key: str, where: str) -> float | None:
    value = data.get(key)
    if value is None:
        return None
    if not _number(value):
        raise MetadataError(f"{where}: {key!r} must be a finite number, found {_shown(value)}")
    return float(value)


def _code(entry: Any, where: str) -> int:
    code = _get(entry, "code", where)
    low, high = CLASS_CODE_RANGE
    if not _number(code) or code != int(code) or not low <= code <= high:
        raise MetadataError(f"{where}: a class code must be a whole number from {low} to {high}, found {_shown(code)}")
    return int(code)


def _numbers(value: Any, what: str, where: str) -> list[float]:
    """A number or a list of numbers (a nested list flattened, one level of nesting per band row)."""
    flat: list[float] = []
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, list) and len(flat) + len(stack) < 1 << 16:
            stack.extend(reversed(item))
        elif _number(item):
            flat.append(float(item))
        else:
            raise MetadataError(f"{where}: {what} must hold finite numbers, found {_shown(item)}")
    return flat


def _target_statistics(data: dict, where: str) -> dict | None:
    value = data.get("target_statistics")
    if value is None:
        return None
    if not isinstance(value, dict) or not all(_number(value.get(k)) for k in ("mean", "std")):
        raise MetadataError(
            f'{where}: \'target_statistics\' must be {{"mean": number, "std": number}}, found {_shown(value)}'
        )
    return {"mean": float(value["mean"]), "std": float(value["std"])}


def _history(data: dict, where: str) -> dict[str, list[float]]:
    history = _dict(data, "history", where)
    return {str(k): _numbers(values, f"'history' {k!r}", where) for k, values in history.items()}


def _statistics(entry: dict, key: str, where: str) -> BandStatistics | None:
    value = entry.get(key)
    if value is None:
        return None
    if not isinstance(value, dict) or "mean" not in value:
        raise MetadataError(f"{where}: {key!r} of input {entry.get('name')!r} needs 'mean' (and 'std')")
    what = f"{key!r} of input {entry.get('name')!r}"
    mean = tuple(_numbers(value["mean"], what, where))
    std = tuple(_numbers(value.get("std", [1.0] * len(mean)), what, where))
    if len(std) != len(mean):
        raise MetadataError(f"{where}: {what} has {len(mean)} means but {len(std)} standard deviations")
    return BandStatistics(mean, std)


def _input(entry: Any, where: str) -> ModelInput:
    name = _get(entry, "name", where)
    return ModelInput(
        name=str(name),
        rfield=_int(entry, "rfield", where),
        bands=_int(entry, "bands", where),
        band_statistics=_statistics(entry, "band_statistics", where),
        normalisation=_statistics(entry, "normalisation", where),
    )


def read_metadata(folder: str | Path) -> ModelMetadata | None:
    """The metadata of a model folder, or None when it has none."""
    path = Path(folder) / METADATA_FILE
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise MetadataError(f"{path}: not valid JSON ({err})") from err
    except RecursionError as err:
        raise MetadataError(f"{path}: nested too deeply to be a model's metadata") from err
    return ModelMetadata.from_json(data, str(path))


def write_metadata(folder: str | Path, metadata: ModelMetadata) -> Path:
    path = Path(folder) / METADATA_FILE
    path.write_text(json.dumps(metadata.to_json(), indent=2), encoding="utf-8")
    return path
