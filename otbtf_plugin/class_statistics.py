"""Class statistics of vector ground truth over a raster.

A polygon counts the pixels whose centre lies inside it; a point counts the
pixel that contains it; a line counts the pixels it crosses. Only pixels of
the raster that hold no nodata value (in any band) and, when a mask is given,
whose mask value is > 0 are counted. Overlapping polygons each count their
own pixels (as the Orfeo ToolBox does).
"""

from __future__ import annotations

import csv
import dataclasses
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
from affine import Affine
from rasterio import features as rio_features

from .errors import InputError
from .grid import Grid, Window, intersection, tiles
from .outputs import atomic_output
from .progress import NullProgress, Progress, check_cancelled
from .raster import AlignedRaster, crs_wkt, grid_of, nodata_values, open_raster, valid_pixels
from .vector import Features, crs_name, read_features

BLOCK_PX = 1024


@dataclass
class ClassStatistics:
    field: str
    class_names: dict[int, str]  # code -> class as written in the vector
    string_classes: bool
    counts: dict[int, int]  # code -> pixels
    feature_counts: dict[int, int]  # fid -> pixels
    outside: int  # features with no pixel in the raster
    skipped: dict[str, int] = dataclasses.field(default_factory=dict)

    def by_class(self) -> dict[str, int]:
        """``{class as written: count}``, in class order."""
        return {self.class_names[code]: count for code, count in sorted(self.counts.items())}

    def write_csv(self, path: str | Path) -> Path:
        with atomic_output(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as out:
            writer = csv.writer(out)
            writer.writerow(["class", "count"])
            for name, count in self.by_class().items():
                writer.writerow([name, count])
        return Path(path)


def _feature_windows(grid: Grid, feats: Features) -> tuple[np.ndarray, np.ndarray]:
    """Per feature: ``[col0, row0, col1, row1]`` of the pixels it may count
    (empty when outside the grid), and whether it is a point."""
    boxes = np.zeros((len(feats), 4), dtype=np.int64)
    is_point = feats.is_point
    for i, geom in enumerate(feats.geometries):
        if geom is None:
            continue
        win = grid.window_of_bounds(*geom.bounds)
        if geom.geom_type not in ("Polygon", "MultiPolygon"):
            # Lines burn every pixel they cross, whose centre may lie outside the box.
            win = intersection(Window(win.col_off - 1, win.row_off - 1, win.width + 2, win.height + 2), grid.window)
        boxes[i] = (win.col_off, win.row_off, win.col_end, win.row_end)
    return boxes, is_point


class PixelScan:
    """Streams the valid pixels that each feature covers, block by block.

    In a block, areal features come by index, each row-major, then points in
    input order. Blocks go row by row, left to right, so the pixels of one
    feature on one image row always arrive left to right. Memory is one block
    of the raster at a time.
    """

    def __init__(self, dataset, feats: Features, nodata, mask, block_px: int = BLOCK_PX):
        self.dataset, self.feats, self.nodata, self.mask = dataset, feats, nodata, mask
        self.grid = grid_of(dataset)
        self.blocks = tiles(self.grid.width, self.grid.height, block_px)
        self.boxes, is_point = _feature_windows(self.grid, feats)
        self.point_index = feats.point_feature
        self.point_col, self.point_row = self.grid.pixel_of(feats.point_x, feats.point_y)
        self.areal = ~is_point & (self.boxes[:, 2] > self.boxes[:, 0]) & (self.boxes[:, 3] > self.boxes[:, 1])
        #: features with at least one pixel position inside the raster
        self.inside = self.areal.copy()
        np.logical_or.at(self.inside, self.point_index, self.grid.contains(self.point_col, self.point_row))

    def scan(self, progress: Progress, what: str):
        """Yield ``(feature_index, cols, rows, part)`` int64 arrays per block; ``part``
        is the point part's index in :attr:`point_index` (-1 for areal pixels)."""
        with rasterio.Env():  # one GDAL environment for the whole scan, not one per rasterize call
            yield from self._scan(progress, what)

    def _scan(self, progress: Progress, what: str):
        boxes, grid = self.boxes, self.grid
        for done, blk in enumerate(self.blocks, 1):
            check_cancelled(progress, what)
            touches = (
                self.areal
                & (boxes[:, 0] < blk.col_end)
                & (boxes[:, 2] > blk.col_off)
                & (boxes[:, 1] < blk.row_end)
                & (boxes[:, 3] > blk.row_off)
            )
            in_block = (
                (self.point_col >= blk.col_off)
                & (self.point_col < blk.col_end)
                & (self.point_row >= blk.row_off)
                & (self.point_row < blk.row_end)
            )
            if touches.any() or in_block.any():
                valid = valid_pixels(self.dataset, blk, self.nodata, self.mask)
                parts_i, parts_c, parts_r, parts_p = [], [], [], []
                for i in np.flatnonzero(touches):
                    box = Window(boxes[i, 0], boxes[i, 1], boxes[i, 2] - boxes[i, 0], boxes[i, 3] - boxes[i, 1])
                    sub = intersection(box, blk)
                    covered = rio_features.geometry_mask(
                        [self.feats.geometries[i]],
                        out_shape=(sub.height, sub.width),
                        transform=Affine(*grid.window_transform(sub)),
                        all_touched=False,
                        invert=True,
                    )
                    rows, cols = sub.relative_to(blk).slices()
                    r, c = np.nonzero(covered & valid[rows, cols])
                    parts_i.append(np.full(len(r), i, dtype=np.int64))
                    parts_c.append(c + sub.col_off)
                    parts_r.append(r + sub.row_off)
                    parts_p.append(np.full(len(r), -1, dtype=np.int64))
                if in_block.any():
                    pc, pr = self.point_col[in_block], self.point_row[in_block]
                    ok = valid[pr - blk.row_off, pc - blk.col_off]
                    parts_i.append(self.point_index[in_block][ok])
                    parts_c.append(pc[ok])
                    parts_r.append(pr[ok])
                    parts_p.append(np.flatnonzero(in_block)[ok])
                yield tuple(np.concatenate(p).astype(np.int64) for p in (parts_i, parts_c, parts_r, parts_p))
            progress.step(done, len(self.blocks))


@contextmanager
def open_inputs(raster, vector, field_name, mask, nodata, layer, block_px):
    with open_raster(raster) as dataset:
        feats = read_features(vector, field_name, crs_wkt(dataset), layer)
        if len(feats) == 0:
            raise InputError(
                f"the vector {str(vector)!r} has no feature with a geometry"
                + (f" and a class in field {field_name!r}" if field_name else "")
                + (f" ({', '.join(f'{n} {r}' for r, n in feats.skipped.items())})" if feats.skipped else "")
            )
        aligned = AlignedRaster(mask, dataset) if mask else None
        try:
            yield PixelScan(dataset, feats, nodata_values(dataset, nodata), aligned, block_px)
        finally:
            if aligned is not None:
                aligned.close()


def _statistics(scan: PixelScan, field_name: str, progress: Progress) -> ClassStatistics:
    per_feature = np.zeros(len(scan.feats), dtype=np.int64)
    for index, _, _, _ in scan.scan(progress, "class statistics"):
        per_feature += np.bincount(index, minlength=len(scan.feats))
    return statistics_from(scan, field_name, per_feature, progress)


def statistics_from(scan: PixelScan, field_name: str, per_feature: np.ndarray, progress: Progress) -> ClassStatistics:
    feats = scan.feats
    if not per_feature.any():
        raise InputError(_nothing_covered(scan))
    counts = dict.fromkeys(feats.class_names, 0)
    for code, n in zip(feats.codes, per_feature, strict=True):
        counts[int(code)] += int(n)
    stats = ClassStatistics(
        field=field_name,
        class_names=feats.class_names,
        string_classes=feats.string_classes,
        counts=counts,
        feature_counts={int(f): int(n) for f, n in zip(feats.fids, per_feature, strict=True)},
        outside=int((~scan.inside).sum()),
        skipped=feats.skipped,
    )
    if stats.outside:
        progress.info(f"{stats.outside} of {len(feats)} features lie outside the raster")
    for reason, n in feats.skipped.items():
        progress.info(f"{n} features skipped: {reason}")
    return stats


def _nothing_covered(scan: PixelScan) -> str:
    """Why no pixel counts, in one line: features outside, all nodata or masked, a missing CRS."""
    feats, dataset = scan.feats, scan.dataset
    raster_crs, vector_crs = crs_wkt(dataset), feats.layer_crs_wkt
    outside = int((~scan.inside).sum())
    if outside == len(feats):
        xmin, ymin, xmax, ymax = scan.grid.bounds
        why = (
            f"none of the {len(feats)} features lies inside the raster (x {xmin:.6g} .. {xmax:.6g}, "
            f"y {ymin:.6g} .. {ymax:.6g})"
        )
    else:
        why = (
            f"{len(feats) - outside} feature(s) lie inside the raster, but every pixel they cover holds the "
            "nodata value"
            + (" or is outside the mask" if scan.mask is not None else "")
            + "; check NODATA and the mask"
        )
    if bool(raster_crs) != bool(vector_crs):
        missing, other = ("raster", vector_crs) if vector_crs else ("vector", raster_crs)
        why += (
            f"; the {missing} has no CRS while the {'vector' if missing == 'raster' else 'raster'} is in "
            f"{crs_name(other)}, so their coordinates cannot be matched: give the {missing} its CRS "
            + (
                "(gdal_edit.py -a_srs EPSG:n FILE, or Layer Properties > Source in QGIS)"
                if missing == "raster"
                else "(Layer Properties > Source > Assigned CRS, then save it)"
            )
        )
    return f"no class has a valid pixel inside the raster: {why}"


def class_statistics(
    raster,
    vector,
    field_name: str,
    mask=None,
    nodata: float | None = None,
    layer: str | None = None,
    block_px: int = BLOCK_PX,
    progress: Progress | None = None,
) -> ClassStatistics:
    """Count, per class and per feature, the valid raster pixels the features cover."""
    progress = progress or NullProgress()
    with open_inputs(raster, vector, field_name, mask, nodata, layer, block_px) as scan:
        return _statistics(scan, field_name, progress)
