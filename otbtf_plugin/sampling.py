"""Class statistics of vector ground truth over a raster.

A polygon counts the pixels whose centre lies inside it; a point counts the
pixel that contains it; a line counts the pixels it crosses. Only pixels of
the raster that hold no nodata value (in any band) and, when a mask is given,
whose mask value is > 0 are counted. Overlapping polygons each count their
own pixels (as the Orfeo ToolBox does).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from affine import Affine
from rasterio import features as rio_features

from .errors import InputError
from .grid import Grid, Window, intersection, tiles
from .progress import NullProgress, Progress, check_cancelled
from .raster import AlignedMask, atomic_output, crs_wkt, grid_of, nodata_values, open_raster, valid_pixels
from .vector import Features, read_features

BLOCK_PX = 1024


@dataclass
class ClassStatistics:
    field: str
    class_names: dict[int, str]  # code -> class as written in the vector
    string_classes: bool
    counts: dict[int, int]  # code -> pixels
    feature_counts: dict[int, int]  # fid -> pixels
    outside: int  # features with no pixel in the raster
    skipped: dict[str, int] = field(default_factory=dict)

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
    is_point = np.zeros(len(feats), dtype=bool)
    for i, geom in enumerate(feats.geometries):
        if geom.geom_type in ("Point", "MultiPoint"):
            is_point[i] = True
            continue
        win = grid.window_of_bounds(*geom.bounds)
        if geom.geom_type not in ("Polygon", "MultiPolygon"):
            # Lines burn every pixel they cross, whose centre may lie outside the box.
            win = intersection(Window(win.col_off - 1, win.row_off - 1, win.width + 2, win.height + 2),
                               grid.window)
        boxes[i] = (win.col_off, win.row_off, win.col_end, win.row_end)
    return boxes, is_point


def class_statistics(raster, vector, field_name: str, mask=None, nodata: float | None = None,
                     layer: str | None = None, block_px: int = BLOCK_PX,
                     progress: Progress | None = None) -> ClassStatistics:
    """Count, per class and per feature, the valid raster pixels the features cover."""
    progress = progress or NullProgress()
    with open_raster(raster) as dataset:
        grid = grid_of(dataset)
        feats = read_features(vector, field_name, crs_wkt(dataset), layer)
        if len(feats) == 0:
            raise InputError(
                f"the vector {str(vector)!r} has no feature with a geometry"
                + (f" and a class in field {field_name!r}" if field_name else "")
                + (f" ({', '.join(f'{n} {r}' for r, n in feats.skipped.items())})" if feats.skipped else "")
            )
        nodata_list = nodata_values(dataset, nodata)
        aligned = AlignedMask(mask, dataset) if mask else None
        try:
            per_feature, inside = _count(dataset, grid, feats, nodata_list, aligned, block_px, progress)
        finally:
            if aligned is not None:
                aligned.close()
    counts = dict.fromkeys(feats.class_names, 0)
    for code, n in zip(feats.codes, per_feature, strict=True):
        counts[int(code)] += int(n)
    stats = ClassStatistics(
        field=field_name, class_names=feats.class_names, string_classes=feats.string_classes,
        counts=counts, feature_counts={int(f): int(n) for f, n in zip(feats.fids, per_feature, strict=True)},
        outside=int((~inside).sum()), skipped=feats.skipped,
    )
    if stats.outside:
        progress.info(f"{stats.outside} of {len(feats)} features lie outside the raster")
    return stats


def _count(dataset, grid: Grid, feats: Features, nodata, mask, block_px: int,
           progress: Progress) -> tuple[np.ndarray, np.ndarray]:
    """Valid pixels per feature, and whether each feature reaches the raster at all."""
    boxes, is_point = _feature_windows(grid, feats)
    per_feature = np.zeros(len(feats), dtype=np.int64)
    # Points (and multi-points): the pixels that contain them.
    point_index, point_col, point_row = [], [], []
    for i in np.flatnonzero(is_point):
        geom = feats.geometries[i]
        parts = getattr(geom, "geoms", [geom])
        cols, rows = grid.pixel_of([p.x for p in parts], [p.y for p in parts])
        point_index.extend([i] * len(parts))
        point_col.extend(cols.tolist())
        point_row.extend(rows.tolist())
    point_index = np.asarray(point_index, dtype=np.int64)
    point_col = np.asarray(point_col, dtype=np.int64)
    point_row = np.asarray(point_row, dtype=np.int64)
    blocks = tiles(grid.width, grid.height, block_px)
    areal = ~is_point & (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
    inside = areal.copy()
    np.logical_or.at(inside, point_index, grid.contains(point_col, point_row))
    for done, blk in enumerate(blocks, 1):
        check_cancelled(progress, "class statistics")
        touches = areal & (boxes[:, 0] < blk.col_end) & (boxes[:, 2] > blk.col_off) \
            & (boxes[:, 1] < blk.row_end) & (boxes[:, 3] > blk.row_off)
        in_block = (point_col >= blk.col_off) & (point_col < blk.col_end) \
            & (point_row >= blk.row_off) & (point_row < blk.row_end)
        if touches.any() or in_block.any():
            valid = valid_pixels(dataset, blk, nodata, mask)
            for i in np.flatnonzero(touches):
                box = Window(boxes[i, 0], boxes[i, 1], boxes[i, 2] - boxes[i, 0], boxes[i, 3] - boxes[i, 1])
                sub = intersection(box, blk)
                covered = rio_features.geometry_mask(
                    [feats.geometries[i]], out_shape=(sub.height, sub.width),
                    transform=Affine(*grid.window_transform(sub)), all_touched=False, invert=True,
                )
                rows, cols = sub.relative_to(blk).slices()
                per_feature[i] += int(np.count_nonzero(covered & valid[rows, cols]))
            if in_block.any():
                ok = valid[point_row[in_block] - blk.row_off, point_col[in_block] - blk.col_off]
                np.add.at(per_feature, point_index[in_block], ok.astype(np.int64))
        progress.step(done, len(blocks))
    return per_feature, inside
