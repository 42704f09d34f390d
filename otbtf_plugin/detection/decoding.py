"""A detector's raw outputs for one tile as candidate objects, and their suppression.

Pure numpy (and shapely's polygons for turned boxes). The layouts are those Deepness reads, named by its
``det_type`` metadata; every box is ``(cx, cy, w, h)`` in pixels of the model's input, whose
``(0, 0)`` is the top-left *corner* of the tile's first pixel (a box centred on pixel ``i``
has ``cx = i + 0.5``), as YOLO models give them:

========================================  ==================================================
``YOLO_v5_or_v7_default``                 ``[1, N, 4 + 1 + C]``: box, objectness, class scores;
                                          kept where objectness >= the threshold, which is
                                          also the confidence (Deepness' rule)
``YOLO_v6``                               the same; objectness ignored: the confidence is the
                                          best class score
``YOLO_v9``, ``YOLO_Ultralytics``         ``[1, 4 + C, N]``: box, class scores
``YOLO_Ultralytics_segmentation``         ``[1, 4 + C + M, N]`` and mask prototypes
                                          ``[1, M, H/4, W/4]``: each object's mask is
                                          ``sigmoid(coefficients . prototypes)`` inside its box
``YOLO_Ultralytics_obb``                  ``[1, 4 + C + 1, N]``: box, class scores, angle
                                          (radians, clockwise on screen)
========================================  ==================================================
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

import numpy as np

from ..grid import rotated_box_corners

LAYOUTS = (
    "YOLO_v5_or_v7_default",
    "YOLO_v6",
    "YOLO_v9",
    "YOLO_Ultralytics",
    "YOLO_Ultralytics_segmentation",
    "YOLO_Ultralytics_obb",
)
MASKS, TURNED = "YOLO_Ultralytics_segmentation", "YOLO_Ultralytics_obb"


class LayoutError(ValueError):
    """Outputs that do not have the layout the model's ``det_type`` names."""


@dataclass
class Candidates:
    """Objects of one tile: boxes ``(x1, y1, x2, y2)`` (turned boxes: the box before turning),
    confidence, class index; ``angle`` for turned boxes; ``coefficients`` of the mask
    prototypes for instance masks."""

    boxes: np.ndarray
    scores: np.ndarray
    classes: np.ndarray
    angles: np.ndarray | None = None
    coefficients: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.scores)

    def take(self, keep) -> Candidates:
        return Candidates(
            self.boxes[keep],
            self.scores[keep],
            self.classes[keep],
            None if self.angles is None else self.angles[keep],
            None if self.coefficients is None else self.coefficients[keep],
        )


def class_count(layout: str, shapes: list[tuple]) -> int:
    """How many classes outputs of these shapes hold (a layout the shapes do not fit says so)."""
    if layout not in LAYOUTS:
        raise LayoutError(f"unknown det_type {layout!r}; known: {', '.join(LAYOUTS)}")
    wanted = 2 if layout == MASKS else 1
    if len(shapes) != wanted or len(shapes[0]) != 3 or shapes[0][0] not in (1, None):
        described = ", ".join(str(list(s)) for s in shapes)
        need = (
            "[1, values, boxes] and mask prototypes [1, M, rows, cols]" if layout == MASKS else "one [1, ., .] output"
        )
        raise LayoutError(f"det_type {layout} gives {need}; this model gives {described}")
    first = shapes[0]
    values = first[2] if layout in ("YOLO_v5_or_v7_default", "YOLO_v6") else first[1]
    if values is None:
        raise LayoutError(f"det_type {layout}: the number of values per box is not fixed in the model ({list(first)})")
    masks = (shapes[1][1] or 0) if layout == MASKS else 0
    extra = {"YOLO_v5_or_v7_default": 5, "YOLO_v6": 5, TURNED: 5}.get(layout, 4) + masks
    if values <= extra:
        raise LayoutError(f"det_type {layout}: {values} values per box leave no class score ({list(first)})")
    return values - extra


def decode(layout: str, outputs: list[np.ndarray], classes: int, confidence: float) -> Candidates:
    """The candidates of one tile's outputs whose confidence reaches ``confidence``."""
    raw = np.asarray(outputs[0], dtype=np.float64)[0]
    if layout in ("YOLO_v5_or_v7_default", "YOLO_v6"):
        rows = raw
        scores_of = rows[:, 5 : 5 + classes]
        score = rows[:, 4] if layout == "YOLO_v5_or_v7_default" else scores_of.max(axis=1, initial=-np.inf)
    else:
        rows = raw.T
        scores_of = rows[:, 4 : 4 + classes]
        score = scores_of.max(axis=1, initial=-np.inf)
    kept = score >= confidence
    rows, scores_of, score = rows[kept], scores_of[kept], score[kept]
    cx, cy, w, h = rows[:, 0], rows[:, 1], rows[:, 2], rows[:, 3]
    boxes = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1)
    found = Candidates(boxes, score, scores_of.argmax(axis=1).astype(np.int64) if len(rows) else np.zeros(0, np.int64))
    if layout == TURNED:
        found.angles = rows[:, 4 + classes]
    elif layout == MASKS:
        found.coefficients = rows[:, 4 + classes :]
    return found


def corners(found: Candidates) -> np.ndarray:
    """``(n, 4, 2)`` corners of each candidate's box (turned where it has an angle)."""
    b = found.boxes
    angle = np.zeros(len(b)) if found.angles is None else found.angles
    return rotated_box_corners(
        (b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2, b[:, 2] - b[:, 0], b[:, 3] - b[:, 1], angle
    )


def suppress(found: Candidates, iou: float) -> np.ndarray:
    """Indices kept by greedy non-maximum suppression within each class: the best score first,
    then every other box of its class that overlaps it by more than ``iou`` (intersection over
    union; of the turned boxes for oriented detectors) is dropped. Ties: the earlier first.

    Only boxes that overlap can suppress each other, so the overlapping pairs are found first
    (:func:`overlapping_pairs`: boxes hashed into cells of the largest box's size) and the
    greedy pass visits only boxes that have one: a million boxes take seconds, not hours."""
    n = len(found)
    if not n:
        return np.zeros(0, dtype=np.int64)
    first, second = overlapping_pairs(found)
    if len(first):
        if found.angles is None:
            overlap = _pair_iou(found.boxes[first], found.boxes[second])
        else:
            overlap = _turned_pair_iou(corners(found), first, second)
        close = overlap > iou
        first, second = first[close], second[close]
    suppressed = np.zeros(n, dtype=bool)
    if len(first):
        # both directions, grouped by box: the neighbours a kept box drops
        a, b = np.concatenate([first, second]), np.concatenate([second, first])
        by_box = np.argsort(a, kind="stable")
        a, b = a[by_box], b[by_box]
        starts = np.searchsorted(a, np.arange(n + 1))
        involved = np.unique(a)
        order = involved[np.lexsort((involved, -found.scores[involved]))]
        for box in order.tolist():
            if not suppressed[box]:
                suppressed[b[starts[box] : starts[box + 1]]] = True
    return np.flatnonzero(~suppressed)


def overlapping_pairs(found: Candidates) -> tuple[np.ndarray, np.ndarray]:
    """Pairs ``(i, j)``, ``i < j``, of boxes of one class whose extents (of the turned boxes for
    oriented ones) overlap: each box goes into the cell of a grid, of the largest box's size,
    holding its centre, and only boxes of the same or neighbouring cells can overlap."""
    if found.angles is None:
        x1, y1, x2, y2 = found.boxes.T
    else:
        ring = corners(found)
        x1, y1 = ring[..., 0].min(axis=1), ring[..., 1].min(axis=1)
        x2, y2 = ring[..., 0].max(axis=1), ring[..., 1].max(axis=1)
    size = max(float(np.max(x2 - x1)), float(np.max(y2 - y1)), 1e-9)
    col = np.floor((x1 + x2) / 2 / size).astype(np.int64)
    row = np.floor((y1 + y2) / 2 / size).astype(np.int64)
    col -= col.min()
    row -= row.min()
    span = int(row.max()) + 3
    columns = int(col.max()) + 3
    key = (found.classes.astype(np.int64) * columns + col) * span + row
    order = np.argsort(key, kind="stable")
    sorted_key = key[order]
    firsts, seconds = [], []
    for d_col, d_row in ((0, 0), (0, 1), (1, -1), (1, 0), (1, 1)):  # each neighbouring cell once
        wanted = key + d_col * span + d_row
        low = np.searchsorted(sorted_key, wanted, side="left")
        high = np.searchsorted(sorted_key, wanted, side="right")
        counts = high - low
        i = np.repeat(np.arange(len(key)), counts)
        j = order[np.repeat(low - np.cumsum(counts) + counts, counts) + np.arange(counts.sum())]
        if d_col == 0 and d_row == 0:
            keep = i < j
            i, j = i[keep], j[keep]
        firsts.append(i)
        seconds.append(j)
    i, j = np.concatenate(firsts), np.concatenate(seconds)
    touching = (np.minimum(x2[i], x2[j]) > np.maximum(x1[i], x1[j])) & (
        np.minimum(y2[i], y2[j]) > np.maximum(y1[i], y1[j])
    )
    i, j = i[touching], j[touching]
    return np.minimum(i, j), np.maximum(i, j)


def _pair_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    width = np.clip(np.minimum(a[:, 2], b[:, 2]) - np.maximum(a[:, 0], b[:, 0]), 0, None)
    height = np.clip(np.minimum(a[:, 3], b[:, 3]) - np.maximum(a[:, 1], b[:, 1]), 0, None)
    inter = width * height
    union = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1]) + (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1]) - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def _turned_pair_iou(rings: np.ndarray, first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """IoU of turned boxes, pair by pair (shapely's polygons, 1.8 and 2)."""
    from shapely.geometry import Polygon

    polygons: dict[int, Polygon] = {}

    def polygon(k: int) -> Polygon:
        if k not in polygons:
            polygons[k] = Polygon(rings[k])
        return polygons[k]

    result = np.zeros(len(first))
    for n, (i, j) in enumerate(zip(cast("list[int]", first.tolist()), cast("list[int]", second.tolist()), strict=True)):
        p, q = polygon(i), polygon(j)
        inter = p.intersection(q).area
        union = p.area + q.area - inter
        result[n] = inter / union if union > 0 else 0.0
    return result


def instance_masks(prototypes: np.ndarray, found: Candidates, size: tuple[int, int]) -> np.ndarray:
    """``(n, rows, cols)`` bool masks at the input's ``size``: ``sigmoid(coefficients .
    prototypes)`` kept inside each box (in prototype pixels), enlarged bilinearly (pixel
    centres aligned, as OpenCV's ``INTER_LINEAR``), then >= 0.5."""
    assert found.coefficients is not None  # noqa: S101  # nosec B101
    protos = np.asarray(prototypes, dtype=np.float64)[0]
    m, mh, mw = protos.shape
    logits = found.coefficients @ protos.reshape(m, -1)
    masks = (1.0 / (1.0 + np.exp(-logits))).reshape(-1, mh, mw)
    rows, cols = size
    scale = np.array([mw / cols, mh / rows, mw / cols, mh / rows])
    small = found.boxes * scale
    r = np.arange(mh)[None, :, None] + 0.5
    c = np.arange(mw)[None, None, :] + 0.5
    inside = (c >= small[:, 0, None, None]) & (c < small[:, 2, None, None])
    inside = inside & (r >= small[:, 1, None, None]) & (r < small[:, 3, None, None])
    masks = masks * inside
    return _bilinear(masks, rows, cols) >= 0.5


def _bilinear(images: np.ndarray, rows: int, cols: int) -> np.ndarray:
    """``(n, h, w)`` resized to ``(n, rows, cols)``, pixel centres aligned."""

    def axis(out: int, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        position = np.clip((np.arange(out) + 0.5) * size / out - 0.5, 0, size - 1)
        low = np.floor(position).astype(np.int64)
        high = np.minimum(low + 1, size - 1)
        return low, high, position - low

    r0, r1, fr = axis(rows, images.shape[1])
    c0, c1, fc = axis(cols, images.shape[2])
    top = images[:, r0][:, :, c0] * (1 - fc) + images[:, r0][:, :, c1] * fc
    bottom = images[:, r1][:, :, c0] * (1 - fc) + images[:, r1][:, :, c1] * fc
    return top * (1 - fr)[None, :, None] + bottom * fr[None, :, None]
