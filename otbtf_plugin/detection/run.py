"""Object detection over a raster of any size: tiles in, polygons out.

The raster is cut into the detector's square tiles, overlapping as its metadata says
(:func:`grid.overlapping_tiles`); tiles are read, run and decoded on the tile pipeline
(:class:`execution.pipeline.LocalThreads`: reads ahead on threads, the model in this thread);
each tile keeps its candidates above the confidence after suppression within the tile, as a
few numbers per object (and an outline for instance masks). At the end, suppression runs
again per class over the whole raster, so that an object that several tiles saw is one
feature, and the objects are written at once as polygons in the raster's CRS.

Coordinates: a box ``(x1, y1, x2, y2)`` of the model, in pixels of a tile whose top-left
corner is raster pixel ``(col, row)``, is the rectangle from ``(col + x1, row + y1)`` to
``(col + x2, row + y2)`` in raster pixel *corner* coordinates (pixel ``(i, j)`` spans ``i``
to ``i + 1``), mapped through the geotransform (:meth:`grid.Grid.to_map`).
"""

from __future__ import annotations

from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

import numpy as np

from .. import grid
from ..errors import InputError
from ..execution.pipeline import READERS, LocalThreads, TileWork, decoding_threads, tiles_in_flight
from ..grid import Window
from ..models.devices import Device
from ..outputs import PathLike, check_paths
from ..progress import NullProgress, Progress, tell
from ..raster import (
    PerThread,
    check_tile_memory,
    close_with,
    crs_wkt,
    grid_of,
    invalid_pixels,
    nodata_values,
    open_raster,
    read_padded,
    resolution_warning,
)
from ..vector import VECTOR_DRIVERS, write_polygons
from .decoding import MASKS as MASK_LAYOUT
from .decoding import Candidates, corners, decode, instance_masks, suppress
from .detectors import Detector, load_detector

LAYER = "objects"
MASKS_AT_ONCE = 16  # instance masks computed together (float64, a tile's size each)


@dataclass(frozen=True)
class DetectOptions:
    confidence: float = 0.0  # 0: the model's det_conf
    iou: float = 0.0  # 0: the model's det_iou_thresh
    device: Device = "auto"
    nodata: float | None = None  # the raster's own when None
    memory_mb: int = 512  # a quarter of it may hold the objects found until the end


@dataclass
class Objects:
    """Objects in raster pixel coordinates: boxes (before turning), scores, classes, angles
    (turned boxes) and outlines (instance masks: ``(k, 2)`` rings)."""

    boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 4)))
    scores: np.ndarray = field(default_factory=lambda: np.zeros(0))
    classes: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    angles: np.ndarray | None = None
    outlines: list[np.ndarray] | None = None

    def __len__(self) -> int:
        return len(self.scores)

    @property
    def nbytes(self) -> int:
        arrays = [self.boxes, self.scores, self.classes] + ([self.angles] if self.angles is not None else [])
        return sum(a.nbytes for a in arrays) + sum(ring.nbytes + 112 for ring in self.outlines or [])


class ObjectsKept:
    """The objects of every tile until the end, within a share of the memory budget: past it,
    the run stops with what would work (a higher confidence threshold, or more memory)."""

    def __init__(self, memory_mb: int, confidence: float):
        self.limit = max(1, memory_mb) * 2**20 // 4
        self.confidence = confidence
        self.parts: list[Objects] = []
        self.bytes = self.count = 0

    def add(self, tile: Window, objects: Objects) -> None:
        self.parts.append(objects)
        self.bytes += objects.nbytes
        self.count += len(objects)
        if self.bytes > self.limit:
            raise InputError(
                f"more than {self.count} objects score at least {self.confidence:g} ({self.bytes / 2**20:.1f} MiB "
                f"so far), more than a quarter of MEMORY_MB {self.limit * 4 // 2**20} holds until they are merged: "
                "raise CONFIDENCE (a detector's own det_conf is often 0.25 to 0.5) or MEMORY_MB"
            )


@dataclass
class DetectResult:
    output: Path
    objects: int
    tiles: int
    skipped_tiles: int
    detector: Detector


@dataclass
class _State:
    detector: Detector
    datasets: PerThread
    nodata: list[float | None]


def _read_tile(state: _State, tile: Window):
    """The tile's first bands (past the raster's edge: 0, as Deepness pads) and where they are
    nodata."""
    pixels = read_padded(state.datasets.get()[0], state.detector.bands, tile)
    invalid = invalid_pixels(pixels, state.nodata[: state.detector.bands])
    pixels[:, invalid] = 0
    return tile, pixels, invalid


def _empty(item) -> bool:
    return bool(item[2].all())


def _detect_tile(state: _State, item, progress: Progress) -> Objects:
    tile, pixels, invalid = item
    if invalid.all():
        return Objects()
    detector = state.detector
    outputs = detector.run(pixels)
    found = decode(detector.layout, outputs, len(detector.class_names), detector.confidence)
    found = found.take(suppress(found, detector.iou))
    outlines: list[np.ndarray] | None = None
    if found.coefficients is not None:  # masks a few at a time: a tile's full size each
        rings = [
            _outline(mask)
            for start in range(0, len(found), MASKS_AT_ONCE)
            for mask in instance_masks(
                outputs[1], found.take(np.arange(start, min(start + MASKS_AT_ONCE, len(found)))), (detector.tile,) * 2
            )
        ]
        kept = [k for k, ring in enumerate(rings) if ring is not None]
        found = found.take(np.asarray(kept, dtype=np.int64))
        shift = np.array([tile.col_off, tile.row_off], dtype=np.float64)
        outlines = [ring + shift for ring in rings if ring is not None]
    offset = np.array([tile.col_off, tile.row_off, tile.col_off, tile.row_off], dtype=np.float64)
    return Objects(found.boxes + offset, found.scores, found.classes, found.angles, outlines)


def _outline(mask: np.ndarray) -> np.ndarray | None:
    """The exterior ring (pixel corner coordinates) of a mask's largest part; None when empty."""
    from rasterio import features

    shapes = [geometry for geometry, value in features.shapes(mask.astype(np.uint8), mask=mask) if value]
    if not shapes:
        return None
    rings = [np.asarray(s["coordinates"][0], dtype=np.float64) for s in shapes]
    return max(rings, key=_ring_area)


def _ring_area(ring: np.ndarray) -> float:
    x, y = ring[:, 0], ring[:, 1]
    return abs(float(np.dot(x, np.roll(y, 1)) - np.dot(y, np.roll(x, 1)))) / 2


def merge(parts: list[Objects], iou: float) -> Objects:
    """Every tile's objects, with suppression per class over all of them: an object several
    tiles saw is kept once (its best-scoring view)."""
    parts = [p for p in parts if len(p)]
    if not parts:
        return Objects()
    turned = parts[0].angles is not None
    masked = parts[0].outlines is not None
    every = Candidates(
        np.concatenate([p.boxes for p in parts]),
        np.concatenate([p.scores for p in parts]),
        np.concatenate([p.classes for p in parts]),
        np.concatenate([p.angles for p in parts if p.angles is not None]) if turned else None,
    )
    keep = suppress(every, iou)
    kept = every.take(keep)
    outlines = [ring for p in parts for ring in (p.outlines or [])] if masked else None
    return Objects(
        kept.boxes, kept.scores, kept.classes, kept.angles, [outlines[k] for k in keep] if outlines else None
    )


def polygons_wkt(objects: Objects, raster_grid: grid.Grid) -> list[str]:
    """Each object as a polygon in map coordinates (see the module's text)."""
    if objects.outlines is not None:
        rings = objects.outlines
    else:
        found = Candidates(objects.boxes, objects.scores, objects.classes, objects.angles)
        rings = list(corners(found))
    wkt = []
    for ring in rings:
        x, y = raster_grid.to_map(ring[:, 0], ring[:, 1])
        points = [*zip(x.tolist(), y.tolist(), strict=True)]
        if points[0] != points[-1]:
            points.append(points[0])
        wkt.append("POLYGON ((" + ", ".join(f"{px!r} {py!r}" for px, py in points) + "))")
    return wkt


def detect(
    source: PathLike,
    model_path: PathLike,
    output: PathLike,
    options: DetectOptions | None = None,
    progress: Progress | None = None,
) -> DetectResult:
    """Find the objects of ``model_path`` (an ONNX detector with Deepness metadata) in the raster
    ``source``; write them as polygons (fields ``class``, ``class_id``, ``confidence``) to the
    vector file ``output`` (GeoPackage, Shapefile...: by its suffix)."""
    options = options or DetectOptions()
    progress = progress or NullProgress()
    executor = LocalThreads(readers=READERS)  # the state (the session) is built here, once
    if not 0 <= options.confidence <= 1 or not 0 <= options.iou <= 1:
        raise InputError(
            f"CONFIDENCE {options.confidence:g} and IOU {options.iou:g} must lie from 0 to 1 (0: the model's own)"
        )
    check_paths({"SOURCE1": source, "MODEL": model_path}, {"OUTPUT": output})
    if Path(output).suffix.lower() not in VECTOR_DRIVERS:  # said before the work, not after it
        raise InputError(
            f"OUTPUT {Path(output).name!r}: objects are written as a vector file; end its name with one "
            f"of {', '.join(VECTOR_DRIVERS)} (e.g. objects.gpkg)"
        )
    detector = load_detector(model_path, options.confidence, options.iou, options.device)
    progress.info(detector.describe())
    for note in detector.notes:
        progress.info(note)
    with ExitStack() as stack:

        def open_source(stack: ExitStack) -> list:
            return [close_with(stack, open_raster(source, decoding_threads(executor)))]

        datasets = open_source(stack)
        dataset = datasets[0]
        if dataset.count < detector.bands:
            raise InputError(
                f"{Path(source).name} has {dataset.count} bands and the detector reads {detector.bands}: "
                "give a raster with at least that many (e.g. RGB for a model of 3 bands)"
            )
        raster_grid = grid_of(dataset)
        # a tile's input as read, as float32, and its scores; masks: MASKS_AT_ONCE float64 planes
        t2 = detector.tile**2
        tile_bytes = t2 * detector.bands * (np.dtype(dataset.dtypes[0]).itemsize + 4)
        tile_bytes += sum(4 * int(np.prod([d or 1 for d in o.shape])) for o in detector.model.outputs)
        if detector.layout == MASK_LAYOUT:
            tile_bytes += 3 * 8 * MASKS_AT_ONCE * t2
        check_tile_memory(
            tile_bytes, tiles_in_flight(executor), options.memory_mb, f"the detector's {detector.tile} px tiles"
        )
        warning = resolution_warning(detector.resolution_cm, dataset)
        if warning:
            tell(progress, warning)
        tiles = grid.overlapping_tiles(dataset.width, dataset.height, detector.tile, detector.overlap)
        progress.info(f"{len(tiles)} tiles of {detector.tile} px")
        state = _State(detector, PerThread(open_source, stack, first=datasets), nodata_values(dataset, options.nodata))
        work = TileWork(build=_unavailable, read=_read_tile, compute=_detect_tile, empty=_empty)
        kept = ObjectsKept(options.memory_mb, detector.confidence)
        skipped = executor.run(work, tiles, kept.add, progress, state)
        objects = merge(kept.parts, detector.iou)
        wkt = polygons_wkt(objects, raster_grid)
        names = [detector.class_names[k] for k in cast("list[int]", objects.classes.tolist())]
        fields = {
            "class": (names, "String"),
            "class_id": (objects.classes.tolist(), "Integer64"),
            "confidence": ([round(float(s), 6) for s in objects.scores], "Real"),
        }
        write_polygons(output, LAYER, crs_wkt(dataset), wkt, fields)
    progress.info(f"{len(objects)} objects written to {Path(output).name}")
    return DetectResult(Path(output), len(objects), len(tiles), skipped, detector)


def _unavailable(stack: ExitStack):
    raise NotImplementedError("object detection runs on this machine only (its state is built here)")
