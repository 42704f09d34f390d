"""ONNX models carrying Deepness' metadata, served as Deepness serves them.

Deepness (a QGIS plugin for ONNX models, and its model zoo) keeps a model's settings in
the ONNX file's metadata, each value a JSON text: ``model_type``, ``class_names``,
``resolution`` (cm per pixel), ``tile_size`` (its documentation says ``tiles_size``),
``tiles_overlap`` (percent of the tile), ``standardization_mean`` / ``_std``,
``seg_thresh``, ``reg_output_scaling``. What Deepness does with them, and we do too:

* input: the first bands of the raster, ``x / 255``, then ``(x - mean) / std``: here one
  normalisation, ``(x - 255 mean) / (255 std)``;
* tiles of ``tile_size`` px overlapping by ``tiles_overlap`` percent, of which the central
  part is kept: here a fixed-size model whose output is that central part (blocks mode:
  exact, whatever our own tiles);
* segmentation: scores below ``seg_thresh`` (default 0.5) count as 0, the class is the
  highest score (one sigmoid score: the class where it passes the threshold), named by
  ``class_names``: our output ``class``, styled;
* regression: outputs multiplied by ``reg_output_scaling``.

Not done: Deepness resamples the raster to the model's resolution (we serve on the
raster's own grid and warn when they differ), and cleans class maps of small segments.
Detectors are run by :mod:`otbtf_plugin.detection`; recognition and super-resolution models
are refused with what is supported.
"""

from __future__ import annotations

import ast
import json
import math
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from .metadata import BandStatistics, ModelClass, ModelInput, ModelMetadata
from .served import ModelError, ServedModel, TensorInfo, classes_of_scores

KEYS = (
    "model_type",
    "class_names",
    "names",
    "resolution",
    "tile_size",
    "tiles_size",
    "tiles_overlap",
    "standardization_mean",
    "standardization_std",
    "seg_thresh",
    "seg_small_segment",
    "reg_output_scaling",
    "det_conf",
    "det_iou_thresh",
    "det_type",
)
SERVED_TYPES = ("Segmentor", "Regressor", "Superresolution")
CLASS_OUTPUT = "class"


@dataclass(frozen=True)
class DeepnessSettings:
    """The Deepness keys of one ONNX file, typed."""

    model_type: str | None = None
    class_names: list[list[str]] = field(default_factory=list)  # per output, by class index
    resolution_cm: float | None = None
    tile_size: int | None = None
    overlap_percent: float = 0.0
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    threshold: float = 0.5
    output_scaling: float = 1.0
    det_type: str | None = None  # a Detector's output layout (Deepness' names)
    det_conf: float | None = None  # a Detector's confidence threshold
    det_iou: float | None = None  # a Detector's suppression threshold (IoU)

    def overlap_px(self, tile: int) -> int:
        """Deepness' own rounding of the overlap, in pixels of a ``tile`` px tile."""
        return int(tile * self.overlap_percent / 100 * 2) // 2


def _value(raw: str) -> Any:
    """A metadata value: JSON (Deepness' documented form), a Python literal (which Deepness
    also accepts for class names), else the text itself (``Segmentor`` without quotes)."""
    try:
        return json.loads(raw)
    except (ValueError, RecursionError):
        try:
            return ast.literal_eval(raw)
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            return raw


def _class_names(value: Any, where: str) -> list[list[str]]:
    tables = [value] if isinstance(value, dict) else value
    if not isinstance(tables, list) or not all(isinstance(t, dict) for t in tables):
        raise ModelError(f"{where}: metadata 'class_names' must be {{index: name}} (or a list of them, one per output)")
    names = []
    for table in tables:
        try:
            ordered = sorted((int(k), str(v)) for k, v in table.items())
        except (TypeError, ValueError) as err:
            raise ModelError(
                f"{where}: metadata 'class_names' must number the classes 0, 1, 2...; found the keys {list(table)[:5]}"
            ) from err
        if [k for k, _ in ordered] != list(range(len(ordered))):
            raise ModelError(
                f"{where}: metadata 'class_names' must number the classes 0, 1, 2... without gaps; "
                f"found {[k for k, _ in ordered]}"
            )
        names.append([v for _, v in ordered])
    return names


def read_settings(custom: dict[str, str], where: str) -> DeepnessSettings | None:
    """The Deepness settings in an ONNX file's metadata map, or None when it has none."""
    if not any(k in custom for k in KEYS):
        return None
    values = {k: _value(v) for k, v in custom.items() if k in KEYS}

    def number(key: str, kind=float, low: float = -math.inf, high: float = math.inf, what: str = "a number"):
        value = values.get(key)
        if value is None:
            return None
        try:
            found = float(value)
        except (TypeError, ValueError, OverflowError):
            found = math.nan
        if not (math.isfinite(found) and low <= found <= high) or (kind is int and found != int(found)):
            raise ModelError(
                f"{where}: metadata {key!r} = {value!r} is not {what}; fix the key in the model's "
                "metadata (Deepness writes JSON values)"
            )
        return kind(found)

    def floats(key: str) -> tuple[float, ...] | None:
        value = values.get(key)
        if value is None:
            return None
        value = value if isinstance(value, list) else [value]
        try:
            found = tuple(float(v) for v in value)
        except (TypeError, ValueError, OverflowError) as err:
            raise ModelError(f"{where}: metadata {key!r} must be a list of numbers, found {value!r}") from err
        if not all(math.isfinite(v) for v in found) or (key.endswith("std") and not all(v > 0 for v in found)):
            raise ModelError(
                f"{where}: metadata {key!r} = {value!r} must hold finite numbers"
                + (" above 0" if key.endswith("std") else "")
            )
        return found

    names = values.get("class_names", values.get("names"))
    threshold = number("seg_thresh", low=0, high=1, what="a threshold from 0 to 1")
    return DeepnessSettings(
        model_type=str(values["model_type"]).capitalize() if "model_type" in values else None,
        class_names=_class_names(names, where) if names is not None else [],
        resolution_cm=number("resolution", low=1e-9, what="a resolution in cm above 0"),
        tile_size=number("tile_size", int, 1, 2**20, "a tile size in pixels (a whole number, at least 1)")
        or number("tiles_size", int, 1, 2**20, "a tile size in pixels (a whole number, at least 1)"),
        overlap_percent=number("tiles_overlap", low=0, high=99, what="a percentage from 0 to 99") or 0.0,
        mean=floats("standardization_mean"),
        std=floats("standardization_std"),
        threshold=0.5 if threshold is None else threshold,
        output_scaling=number("reg_output_scaling") or 1.0,
        det_type=str(values["det_type"]) if values.get("det_type") is not None else None,
        det_conf=number("det_conf", low=0, high=1, what="a confidence from 0 to 1"),
        det_iou=number("det_iou_thresh", low=0, high=1, what="an IoU threshold from 0 to 1"),
    )


def _crop(value: np.ndarray, before: int, after: int) -> np.ndarray:
    """``[n, h, w(, c)]`` without ``before`` rows/cols at the start and ``after`` at the end."""
    return value[:, before : value.shape[1] - after, before : value.shape[2] - after]


def image_input(model: ServedModel, what: str) -> TensorInfo:
    """A Deepness model's one input, an image ``[n, bands, rows, cols]`` (``[n, rows, cols,
    bands]`` once channels last): anything else is refused, naming ``what`` it is."""
    images = [t for t in model.inputs if len(t.shape) == 4]
    if len(model.inputs) != 1 or len(images) != 1:
        raise ModelError(
            f"{model.path.name}: {what} has one image input [n, bands, rows, cols]; this one has: "
            + ", ".join(t.describe() for t in model.inputs)
        )
    return images[0]


def adapt(model: ServedModel, settings: DeepnessSettings, ours: ModelMetadata | None = None) -> ServedModel:  # noqa: C901
    """``model`` (channels last) served the Deepness way (see the module's text). A file of
    our export also holds its model folder's metadata, ``ours``: its classes (the labels'
    codes) replace the indices, and it is served as the folder is (the raster's edges left
    out, not padded as Deepness does)."""
    classes = ours.classes if ours is not None else None
    where = model.path.name
    kind = settings.model_type or ("Segmentor" if settings.class_names else None)
    if kind == "Detector":
        raise ModelError(
            f"{where} is a Deepness Detector model: run it with Object detection (otbtf:objectdetection), "
            "which writes its objects as polygons"
        )
    if kind == "Recognition":
        raise ModelError(
            f"{where} is a Deepness Recognition model: it turns an image into a vector to compare with "
            "others (image search), not into a map, so it is not served; serve Segmentor, Regressor, "
            "Superresolution or Detector models"
        )
    if kind is not None and kind not in SERVED_TYPES:
        raise ModelError(
            f"{where} is a Deepness {kind} model; served here: Segmentor, Regressor and Superresolution "
            "models (Detector: Object detection), and ONNX models without Deepness metadata, as plain tensors"
        )
    image = image_input(model, "a Deepness model")
    static = image.shape[1] if image.shape[1] is not None and image.shape[1] == image.shape[2] else None
    tile = static or settings.tile_size
    if kind == "Superresolution":
        return _superresolution(model, settings, image, tile)
    overlap = settings.overlap_px(tile) if tile else 0
    before, after = overlap // 2, overlap - overlap // 2
    bands = image.shape[3]
    count = bands or len(settings.mean or settings.std or ())
    mean = np.asarray(settings.mean if settings.mean is not None else [0.0] * count, dtype=np.float64)
    std = np.asarray(settings.std if settings.std is not None else [1.0] * count, dtype=np.float64)
    normalisation = BandStatistics(tuple(255 * mean), tuple(255 * std)) if count else None

    def listed(values) -> str:
        return "[" + ", ".join(f"{v:.4g}" for v in values) + "]"

    notes = [
        f"Deepness {kind or 'model'}: input x / 255"
        + (f", then (x - {listed(mean)}) / {listed(std)}" if settings.mean or settings.std else "")
    ]
    if tile:
        notes.append(
            f"tiles of {tile} px overlapping {settings.overlap_percent:g} % ({overlap} px): the central "
            f"{tile - overlap} px of each kept"
        )
    if settings.resolution_cm:
        notes.append(f"made for {settings.resolution_cm:g} cm pixels")
    spatial = {t.name for t in model.outputs if len(t.shape) in (3, 4)}
    inner = model.run
    scores_name, codes = None, []
    if kind == "Segmentor":
        scores = next((t for t in model.outputs if t.name in spatial), None)
        if scores is None:
            raise ModelError(
                f"{where}: a Deepness Segmentor gives [n, classes, rows, cols] scores; its outputs: "
                + ", ".join(t.describe() for t in model.outputs)
            )
        channels = scores.shape[3] if len(scores.shape) == 4 else 1
        names = settings.class_names[0] if settings.class_names else []
        if channels == 1:  # a sigmoid: background against its class (Deepness' rule)
            names = ["background", *(names[-1:] or ["class 1"])]
            channels = 2
        elif channels is not None and len(names) != channels:
            names = [f"class {k}" for k in range(channels)]
        scores_name = scores.name
        if not (classes and len(classes) == len(names)):
            classes = [ModelClass(k, n) for k, n in enumerate(names)]
        codes = [c.code for c in classes]
        notes.append(
            f"classes: {', '.join(f'{c.code} {c.name}' for c in classes) or 'as many as its scores'}; "
            f"scores below {settings.threshold:g} count as 0"
        )
    elif kind == "Regressor" and settings.output_scaling != 1:
        notes.append(f"outputs x {settings.output_scaling:g}")

    class_type = "uint8" if all(0 <= c <= 255 for c in codes) else "int32"

    def run(feeds: dict) -> dict:
        result = dict(inner(feeds))
        size = np.shape(feeds[image.name])[1:3]
        for name in spatial:
            value = np.asarray(result[name])
            if overlap and value.shape[1:3] == size:
                value = _crop(value, before, after)
            if kind == "Regressor" and settings.output_scaling != 1:
                value = value * np.float32(settings.output_scaling)
            result[name] = value
        if scores_name is not None:
            value = np.asarray(result[scores_name])
            value = value[..., None] if value.ndim == 3 else value
            result[CLASS_OUTPUT] = classes_of_scores(value, codes or range(value.shape[-1]), settings.threshold).astype(
                class_type
            )
        return result

    outputs = list(model.outputs)
    if scores_name is not None and CLASS_OUTPUT not in {t.name for t in outputs}:
        shape = model.output(scores_name).shape[:3]
        outputs.append(TensorInfo(CLASS_OUTPUT, class_type, shape))
    metadata = ModelMetadata(
        inputs=[ModelInput(image.name, rfield=tile, bands=bands, normalisation=normalisation)],
        efield=(tile - overlap) if tile and overlap else None,
        task="segmentation" if kind == "Segmentor" else "regression" if kind == "Regressor" else None,
        outputs={scores_name: "class scores", CLASS_OUTPUT: "class of the highest score"} if scores_name else {},
        default_outputs=[CLASS_OUTPUT] if scores_name else [],
        classes=(classes or []) if scores_name else [],
        scores_output=scores_name,
        class_threshold=settings.threshold if scores_name else None,
        resolution_cm=settings.resolution_cm,
        covers_raster=ours is None,
        first_bands=True,
    )
    return replace(model, outputs=outputs, _call=run, metadata=metadata, notes=[*model.notes, *notes])


def _superresolution(
    model: ServedModel, settings: DeepnessSettings, image: TensorInfo, tile: int | None
) -> ServedModel:
    """A Deepness super-resolution model: its output is finer than its input by a whole factor
    (``upscale``: the output's size over the input's, measured on one tile when the file does
    not fix it), served on the finer grid by :mod:`serving.superresolution`. Input ``x / 255``
    (Deepness applies no standardisation here); outputs times ``reg_output_scaling``."""
    where = model.path.name
    if not tile:
        raise ModelError(
            f"{where}: a Deepness Superresolution model needs a fixed input size or tiles_size metadata "
            f"(its input: {image.describe()})"
        )
    outputs = [t for t in model.outputs if len(t.shape) == 4]
    if len(outputs) != 1:
        raise ModelError(
            f"{where}: a Deepness Superresolution model has one image output [1, bands, rows, cols]; this one has: "
            + ", ".join(t.describe() for t in model.outputs)
        )
    bands = image.shape[3] or 3
    size = outputs[0].shape[1]
    if size is None:  # not fixed in the file: run it once
        probe = model.run({image.name: np.zeros((1, tile, tile, bands), dtype=np.float32)})
        size = int(np.shape(probe[outputs[0].name])[1])
    upscale = size // tile
    if upscale < 2 or size != upscale * tile:
        raise ModelError(
            f"{where}: a Superresolution model's output must be a whole multiple (2 or more) of its input; "
            f"it gives {size} px for {tile} px"
        )
    inner = model.run
    scaling = settings.output_scaling

    def run(feeds: dict) -> dict:
        result = dict(inner(feeds))
        if scaling != 1:
            result[outputs[0].name] = np.asarray(result[outputs[0].name]) * np.float32(scaling)
        return result

    overlap = settings.overlap_px(tile)
    metadata = ModelMetadata(
        inputs=[
            ModelInput(
                image.name,
                rfield=tile,
                bands=image.shape[3],
                normalisation=BandStatistics((0.0,) * bands, (255.0,) * bands),
            )
        ],
        efield=tile - overlap,
        task="superresolution",
        outputs={outputs[0].name: "the image, finer"},
        default_outputs=[outputs[0].name],
        resolution_cm=settings.resolution_cm,
        covers_raster=True,
        first_bands=True,
        upscale=upscale,
    )
    notes = [
        f"Deepness Superresolution: input x / 255; {upscale} times finer; tiles of {tile} px overlapping "
        f"{settings.overlap_percent:g} % ({overlap} px)" + (f"; outputs x {scaling:g}" if scaling != 1 else "")
    ]
    return replace(model, outputs=outputs, _call=run, metadata=metadata, notes=[*model.notes, *notes])
