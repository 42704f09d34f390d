"""Patches selection for semantic segmentation: a regular grid of patches over a
reference raster, split into training / validation / test sets that share no pixel.

Grid: patch ``(i, j)`` starts at pixel ``(i * step, j * step)``; its centre pixel
is ``start + patch // 2`` (the patch rule), where the output point lies, so
otbtf:patchesextraction with the same patch size cuts exactly that window.
A position is kept when its whole patch lies in the raster, holds no nodata
value (any band) and, with a mask, only mask values > 0.

Sets are drawn per *cell*: a square of ``cell`` x ``cell`` grid positions
(default: 4 patch widths), so that most neighbours share a set. Strategies:
``split`` (cells shuffled with ``seed``, cut in the given fractions),
``chessboard`` (cells alternate training / validation), ``all`` (everything in
training), ``balanced`` (as ``split``, after keeping the same number of patches
for every class of a label raster; a patch counts for the class that is most
over-represented in it relative to the whole image). Finally, a validation
patch overlapping a training patch is dropped, and a test patch overlapping a
training or validation patch is dropped: the sets never share a pixel.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, get_args

import numpy as np
import rasterio

from .errors import InputError
from .grid import Window, grid_positions, overlap_reach, position_centre, tiles
from .progress import NullProgress, Progress, check_cancelled, mebibytes
from .raster import AlignedRaster, crs_wkt, grid_of, invalid_pixels, nodata_values, open_raster, read
from .selection import choose_ranks
from .vector import write_points

PatchStrategy = Literal["split", "chessboard", "all", "balanced"]
STRATEGIES: tuple[PatchStrategy, ...] = get_args(PatchStrategy)
SET_NAMES = ("train", "valid", "test")
TILE_POSITIONS_PX = 1024  # pixels of patch starts handled per tile


@dataclass
class PatchesSelection:
    """Grid positions per set, and their patch centres on the map."""

    patch_px: int
    step_px: int
    sets: np.ndarray  # (ny, nx) int8: -1 none, 0 train, 1 valid, 2 test
    valid: np.ndarray  # (ny, nx) bool: patch usable
    x0: float
    y0: float
    res_x: float
    res_y: float
    crs_wkt: str | None
    dropped_for_overlap: dict[str, int] = field(default_factory=dict)
    class_pixels: dict[str, dict[int, int]] = field(default_factory=dict)  # set -> class -> pixels

    def counts(self) -> dict[str, int]:
        return {name: int((self.sets == k).sum()) for k, name in enumerate(SET_NAMES)}

    def points(self, set_name: str) -> tuple[np.ndarray, np.ndarray]:
        """Map coordinates of the centre pixels' centres of a set's patches (row-major)."""
        chunks = list(self.iter_points(set_name))
        if not chunks:
            return np.zeros(0), np.zeros(0)
        return np.concatenate([x for x, _ in chunks]), np.concatenate([y for _, y in chunks])

    def iter_points(self, set_name: str, positions: int = 1 << 20):
        """:meth:`points` in chunks of about ``positions`` grid positions (rows of the grid),
        so that writing millions of points needs no more memory than one chunk."""
        code = SET_NAMES.index(set_name)
        rows_per_chunk = max(1, positions // max(1, self.sets.shape[1]))
        for start in range(0, self.sets.shape[0], rows_per_chunk):
            rows, cols = np.nonzero(self.sets[start : start + rows_per_chunk] == code)
            if len(rows):
                col = position_centre(cols, self.patch_px, self.step_px)
                row = position_centre(rows + start, self.patch_px, self.step_px)
                yield self.x0 + (col + 0.5) * self.res_x, self.y0 + (row + 0.5) * self.res_y

    def write_gpkg(self, set_name: str, path: str | Path) -> Path:
        x, y = self.points(set_name)
        return write_points(path, set_name, self.crs_wkt, x, y, {"set": ([set_name] * len(x), "String")})


def _window_sums(values: np.ndarray, patch: int, step: int, ny: int, nx: int) -> np.ndarray:
    """Sum of ``values`` over each patch whose start is ``(j*step, i*step)`` (summed-area table)."""
    table = np.zeros((values.shape[0] + 1, values.shape[1] + 1), dtype=np.int64)
    np.cumsum(np.cumsum(values, axis=0), axis=1, out=table[1:, 1:])
    r0 = (np.arange(ny) * step)[:, None]
    c0 = (np.arange(nx) * step)[None, :]
    return table[r0 + patch, c0 + patch] - table[r0, c0 + patch] - table[r0 + patch, c0] + table[r0, c0]


def _scan_positions(dataset, patch, step, nodata, mask, labels, classes, progress):
    """Per grid position: whether the patch is valid; per class, its label pixels."""
    grid = grid_of(dataset)
    nx, ny = grid_positions(grid.width, patch, step), grid_positions(grid.height, patch, step)
    valid = np.zeros((ny, nx), dtype=bool)
    per_class = np.zeros((len(classes), ny, nx), dtype=np.int32)  # label pixels of a patch: < 2**31
    per_tile = max(1, TILE_POSITIONS_PX // step)
    plan = tiles(nx, ny, per_tile)
    for done, tile in enumerate(plan, 1):  # a tile of positions, and the pixels their patches need
        check_cancelled(progress, "patches selection")
        pixels = Window(
            tile.col_off * step, tile.row_off * step, (tile.width - 1) * step + patch, (tile.height - 1) * step + patch
        )
        bad = np.zeros((pixels.height, pixels.width), dtype=bool)
        if any(v is not None for v in nodata):
            bad |= invalid_pixels(read(dataset, window=pixels.to_rasterio()), nodata)
        if mask is not None:
            bad |= ~mask.read_mask(pixels)
        rows, cols = tile.slices()
        valid[rows, cols] = _window_sums(bad, patch, step, tile.height, tile.width) == 0
        if labels is not None:
            values = labels.read_values(pixels)
            for k, value in enumerate(classes):
                per_class[k, rows, cols] = _window_sums(values == value, patch, step, tile.height, tile.width)
        progress.step(done, len(plan))
    return valid, per_class


def _dilate(mask: np.ndarray, reach: int) -> np.ndarray:
    """True where a True lies within ``reach`` positions on both axes (a square window);
    one byte per position (a separable maximum filter)."""
    if reach <= 0:
        return mask.copy()
    from scipy import ndimage

    return ndimage.maximum_filter(mask.view(np.uint8), size=2 * reach + 1, mode="constant", cval=0).view(bool)


def _assign(valid: np.ndarray, strategy: str, fractions, cell: int, seed: int) -> np.ndarray:
    """The set of every position (-1 none), drawn per cell of ``cell`` x ``cell`` positions.
    Works on the grid of cells, then expands it: one byte per position."""
    ny, nx = valid.shape
    if strategy == "all":
        return np.where(valid, 0, -1).astype(np.int8)
    cy, cx = -(-ny // cell), -(-nx // cell)
    if strategy == "chessboard":
        cell_set = ((np.arange(cy)[:, None] + np.arange(cx)[None, :]) % 2).astype(np.int8)
    else:
        has_valid = np.logical_or.reduceat(
            np.logical_or.reduceat(valid, np.arange(0, ny, cell), axis=0), np.arange(0, nx, cell), axis=1
        )
        ids = np.flatnonzero(has_valid)  # cell ids (row-major), ascending
        order = np.random.default_rng(seed).permutation(len(ids))
        bounds = np.floor(np.cumsum(fractions) / sum(fractions) * len(ids) + 0.5).astype(int)
        cell_set = np.full(cy * cx, -1, dtype=np.int8)
        start = 0
        for k, stop in enumerate(bounds):
            cell_set[ids[order[start:stop]]] = k
            start = stop
        cell_set = cell_set.reshape(cy, cx)
    sets = np.repeat(np.repeat(cell_set, cell, axis=0)[:ny], cell, axis=1)[:, :nx]
    sets[~valid] = -1
    return np.ascontiguousarray(sets)


def _balance(valid: np.ndarray, per_class: np.ndarray, classes: list, progress: Progress) -> np.ndarray:
    """Keep the same number of valid patches for each class (see module doc)."""
    totals = per_class.sum(axis=(1, 2), dtype=np.int64).astype(float)
    # label = the class most over-represented in the patch relative to the whole image (first on ties)
    best = np.full(valid.shape, -1.0)
    label = np.zeros(valid.shape, dtype=np.int16)
    for k in range(len(classes)):
        share = per_class[k] / totals[k] if totals[k] > 0 else np.full(valid.shape, -1.0)
        better = share > best
        best[better], label[better] = share[better], k
        del share, better
    counts = {k: int((valid & (label == k)).sum()) for k in range(len(classes))}
    nonempty = [k for k, n in counts.items() if n > 0]
    if not nonempty:
        raise InputError("no valid patch holds any class of the label raster")
    wanted = min(counts[k] for k in nonempty)
    progress.info(
        f"balanced: {wanted} patches per class, from " + ", ".join(f"class {classes[k]}: {counts[k]}" for k in nonempty)
    )
    keep = np.zeros_like(valid)
    for k in nonempty:
        members = np.flatnonzero((valid & (label == k)).ravel())
        picks = members[choose_ranks(len(members), wanted, "periodic", np.random.default_rng(0))]
        keep.ravel()[picks] = True
    return keep


def _check_fractions(fractions) -> None:
    """Training, validation and test fractions share the positions: each >= 0, adding up to 1."""
    typed = ", ".join(f"{f:g}" for f in fractions)
    total = sum(fractions)
    if any(f < 0 for f in fractions) or total <= 0:
        raise InputError(f"fractions {typed} must be >= 0 and not all 0, e.g. 0.7, 0.15, 0.15")
    if abs(total - 1) > 1e-6:
        same = ", ".join(f"{f / total:.4g}" for f in fractions)
        raise InputError(
            f"fractions {typed} add up to {total:g}; they share the positions, so they must add up "
            f"to 1: for the same proportions use {same}"
        )


def patches_selection(  # noqa: C901
    raster,
    patch_px: int,
    step_px: int,
    strategy: PatchStrategy = "split",
    fractions: tuple[float, float, float] = (0.7, 0.15, 0.15),
    mask=None,
    nodata: float | None = None,
    labels=None,
    cell: int | None = None,
    seed: int = 0,
    progress: Progress | None = None,
) -> PatchesSelection:
    """Select grid patches over ``raster`` and split them into sets (see module doc)."""
    progress = progress or NullProgress()
    if strategy not in STRATEGIES:
        raise InputError(f"unknown strategy {strategy!r}; use one of: {', '.join(STRATEGIES)}")
    if patch_px < 1 or step_px < 1:
        raise InputError(f"patch size {patch_px} and grid step {step_px} must be at least 1 pixel")
    if strategy in ("split", "balanced"):
        _check_fractions(fractions)
    if strategy == "balanced" and labels is None:
        raise InputError("strategy 'balanced' needs a label raster (LABELS)")
    with open_raster(raster) as dataset:
        grid = grid_of(dataset)
        if patch_px > min(grid.width, grid.height):
            raise InputError(
                f"patch size {patch_px} px is larger than the raster ({grid.width} x "
                f"{grid.height} px); use at most {min(grid.width, grid.height)}"
            )
        aligned_mask = AlignedRaster(mask, dataset) if mask else None
        aligned_labels = AlignedRaster(labels, dataset) if labels else None
        try:
            classes: list = []
            if aligned_labels is not None:
                classes = _label_classes(aligned_labels, grid)
            nx, ny = grid_positions(grid.width, patch_px, step_px), grid_positions(grid.height, patch_px, step_px)
            per_position = 3 + 4 * len(classes) + (10 if strategy == "balanced" else 0)
            progress.info(
                f"{nx * ny} grid positions ({nx} x {ny}): about {mebibytes(nx * ny * per_position)} "
                "of working memory (a larger GRID_STEP needs less)"
            )
            with rasterio.Env(GDAL_CACHEMAX=64):  # windows are read once: GDAL's cache need not grow
                valid, per_class = _scan_positions(
                    dataset,
                    patch_px,
                    step_px,
                    nodata_values(dataset, nodata),
                    aligned_mask,
                    aligned_labels,
                    classes,
                    progress,
                )
        finally:
            for aligned in (aligned_mask, aligned_labels):
                if aligned is not None:
                    aligned.close()
        wkt = crs_wkt(dataset)
    if not valid.any():
        raise InputError(
            f"no {patch_px} x {patch_px} px patch on the grid (step {step_px}) is free of "
            "nodata and inside the mask; try a smaller patch or step, or check the nodata value"
        )
    candidates = _balance(valid, per_class, classes, progress) if strategy == "balanced" else valid
    cell = cell or max(1, 4 * (overlap_reach(patch_px, step_px) + 1))
    sets = _assign(candidates, strategy, fractions, cell, seed)
    reach = overlap_reach(patch_px, step_px)
    dropped = {}
    earlier = sets == 0
    for k in (1, 2):
        clash = (sets == k) & _dilate(earlier, reach)
        if clash.any():
            dropped[SET_NAMES[k]] = int(clash.sum())
            sets[clash] = -1
        earlier |= sets == k
    for name, n in dropped.items():
        progress.info(f"{n} {name} patches dropped: they overlapped patches of another set")
    result = PatchesSelection(patch_px, step_px, sets, valid, grid.x0, grid.y0, grid.res_x, grid.res_y, wkt, dropped)
    if classes:
        result.class_pixels = {
            SET_NAMES[k]: {c: int(per_class[i][sets == k].sum()) for i, c in enumerate(classes)} for k in range(3)
        }
    return result


def _label_classes(labels: AlignedRaster, grid) -> list:
    """The distinct label values (read block by block)."""
    found: set = set()
    for block in tiles(grid.width, grid.height, 1024):
        found.update(np.unique(labels.read_values(block)).tolist())
    if len(found) > 256:
        raise InputError(f"the label raster holds {len(found)} distinct values; a class raster has at most 256")
    return sorted(found)
