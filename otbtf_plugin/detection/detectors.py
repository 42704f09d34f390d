"""An ONNX detector carrying Deepness' metadata: what it needs and how its input is made.

Deepness keeps a detector's settings in the file (each value JSON): ``model_type``
``Detector``, ``det_type`` (the output layout: :data:`LAYOUTS`), ``class_names``,
``det_conf``, ``det_iou_thresh``, ``tiles_size`` / ``tile_size``, ``tiles_overlap``
(percent), ``standardization_mean`` / ``_std``, ``resolution`` (cm). Its input is the first
bands of the raster, ``x / 255``, then ``(x - mean) / std``, channels first.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..models import deepness
from ..models.devices import Device
from ..models.onnx_backend import onnx_session
from ..models.served import ModelError, ServedModel
from .decoding import LAYOUTS, LayoutError, class_count

# Deepness' own defaults when a file has no det_conf / det_iou_thresh.
DEFAULT_CONFIDENCE = 0.5
DEFAULT_IOU = 0.4


@dataclass
class Detector:
    model: ServedModel  # tensors as the file has them: [1, bands, rows, cols] in
    input_name: str
    bands: int
    tile: int
    overlap: int  # px
    layout: str
    class_names: list[str]
    confidence: float
    iou: float
    mean: np.ndarray
    std: np.ndarray
    resolution_cm: float | None
    notes: list[str]

    def prepare(self, pixels: np.ndarray) -> np.ndarray:
        """``(bands, rows, cols)`` raster values as the model's ``[1, bands, rows, cols]`` input."""
        x = pixels[: self.bands].astype(np.float32) / np.float32(255)
        x = (x - self.mean[:, None, None]) / self.std[:, None, None]
        return x[None].astype(np.float32, copy=False)

    def run(self, pixels: np.ndarray) -> list[np.ndarray]:
        result = self.model.run({self.input_name: self.prepare(pixels)})
        return [np.asarray(result[t.name]) for t in self.model.outputs]

    def describe(self) -> str:
        return (
            f"Deepness detector ({self.layout}), {len(self.class_names)} classes "
            f"({', '.join(self.class_names[:6])}{'...' if len(self.class_names) > 6 else ''}); tiles of "
            f"{self.tile} px overlapping {self.overlap} px; confidence >= {self.confidence:g}, "
            f"suppression above IoU {self.iou:g}; device: {self.model.device}"
        )


def is_detector(path: str | Path) -> bool:
    """True when ``path`` is an ``.onnx`` file whose Deepness metadata names a Detector (the
    Apply dialog sends those to object detection)."""
    path = Path(path)
    if path.suffix.lower() != ".onnx" or not path.is_file():
        return False
    _, custom = onnx_session(path, "cpu")
    settings = deepness.read_settings(custom, path.name)
    return settings is not None and settings.model_type == "Detector"


def load_detector(path: str | Path, confidence: float = 0, iou: float = 0, device: Device = "auto") -> Detector:
    """The detector in ``path``; ``confidence`` / ``iou`` of 0 take the file's (else Deepness'
    defaults). A file that is not a usable detector is refused in one sentence."""
    path = Path(path)
    where = path.name
    if path.suffix.lower() != ".onnx":
        raise ModelError(f"{where}: object detection runs ONNX detectors (.onnx files with Deepness metadata)")
    model, custom = onnx_session(path, device)
    settings = deepness.read_settings(custom, where)
    if settings is None or settings.model_type != "Detector":
        kind = settings.model_type if settings and settings.model_type else "not a Deepness model"
        raise ModelError(
            f"{where} is {'a Deepness ' + kind + ' model' if settings and settings.model_type else kind}: object "
            'detection needs a detector (metadata model_type "Detector" and its det_type)'
        )
    if not settings.det_type:
        raise ModelError(
            f"{where}: a Deepness detector needs the metadata det_type, its output layout: one of {', '.join(LAYOUTS)}"
        )
    image = deepness.image_input(model, "a detector")
    _, bands, rows, cols = image.shape
    static = rows if rows is not None and rows == cols else None
    tile = static or settings.tile_size
    if not tile:
        raise ModelError(
            f"{where}: its input size is not fixed ({image.describe()}) and it has no tiles_size metadata: "
            "add tiles_size (the size it was trained on, e.g. 640)"
        )
    count = bands or len(settings.mean or settings.std or ()) or 3
    try:
        classes = class_count(settings.det_type, [t.shape for t in model.outputs])
    except LayoutError as err:
        raise ModelError(f"{where}: {err}") from err
    names = settings.class_names[0] if settings.class_names else [f"class {k}" for k in range(classes)]
    if len(names) != classes:
        raise ModelError(
            f"{where}: class_names names {len(names)} classes but its output holds {classes} class scores; "
            "fix class_names in the model's metadata"
        )
    mean = np.asarray(settings.mean if settings.mean is not None else [0.0] * count, dtype=np.float32)
    std = np.asarray(settings.std if settings.std is not None else [1.0] * count, dtype=np.float32)
    if len(mean) != count or len(std) != count:
        raise ModelError(
            f"{where}: standardization_mean / _std hold {len(mean)} / {len(std)} values for {count} input bands"
        )
    notes = []
    chosen_confidence = confidence or settings.det_conf or DEFAULT_CONFIDENCE
    chosen_iou = iou or settings.det_iou or DEFAULT_IOU
    if not confidence and settings.det_conf is None:
        notes.append(f"the model has no det_conf: confidence {DEFAULT_CONFIDENCE:g} (Deepness' default)")
    if not iou and settings.det_iou is None:
        notes.append(f"the model has no det_iou_thresh: IoU {DEFAULT_IOU:g} (Deepness' default)")
    return Detector(
        model=model,
        input_name=image.name,
        bands=count,
        tile=int(tile),
        overlap=settings.overlap_px(int(tile)),
        layout=settings.det_type,
        class_names=list(names),
        confidence=float(chosen_confidence),
        iou=float(chosen_iou),
        mean=mean,
        std=std,
        resolution_cm=settings.resolution_cm,
        notes=notes,
    )
