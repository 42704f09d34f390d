"""Pixel and map geometry, with no I/O.

Conventions used throughout the project:

* Grids are north-up. Pixel ``(col, row) = (0, 0)`` is the top-left pixel; its
  top-left *corner* is the map point ``(x0, y0)``. ``res_x > 0``, ``res_y < 0``.
* Windows are ``(col_off, row_off, width, height)`` in pixels, half-open:
  they hold columns ``col_off .. col_off + width - 1``.
* A map point samples the pixel that contains it: ``col = floor((x - x0) / res_x)``.
  A point on the boundary between two pixels belongs to the right/lower one.
* A patch of size ``P`` centred on pixel ``c`` spans
  ``c - P // 2 .. c - P // 2 + P - 1`` (P = 16: 8 pixels before ``c``, 7 after).

Example: a 30 m grid with ``x0 = 500000, y0 = -2900000``; the point
``(500045, -2900001)`` lies in pixel ``(1, 0)`` (45 / 30 = 1.5, floor 1);
the 16 px patch centred there starts at column ``1 - 8 = -7`` (outside).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np

from .errors import InputError


class GridError(InputError):
    """Inconsistent geometry; the message gives a value that would work."""


@dataclass(frozen=True)
class Window:
    """A rectangle of pixels: columns ``col_off .. col_off + width - 1``."""

    col_off: int
    row_off: int
    width: int
    height: int

    @property
    def col_end(self) -> int:
        return self.col_off + self.width

    @property
    def row_end(self) -> int:
        return self.row_off + self.height

    @property
    def size(self) -> int:
        return max(self.width, 0) * max(self.height, 0)

    def is_empty(self) -> bool:
        return self.width <= 0 or self.height <= 0

    def slices(self) -> tuple[slice, slice]:
        """``(rows, cols)`` slices, for indexing an array of the parent grid."""
        return slice(self.row_off, self.row_end), slice(self.col_off, self.col_end)

    def relative_to(self, outer: Window) -> Window:
        """The same pixels, counted from the top-left of ``outer``."""
        return Window(self.col_off - outer.col_off, self.row_off - outer.row_off, self.width, self.height)

    def to_rasterio(self) -> tuple[tuple[int, int], tuple[int, int]]:
        """``((row_start, row_stop), (col_start, col_stop))``, accepted by rasterio."""
        return (self.row_off, self.row_end), (self.col_off, self.col_end)


def intersection(a: Window, b: Window) -> Window:
    """The pixels in both windows; an empty window (width or height 0) if none."""
    col0, row0 = max(a.col_off, b.col_off), max(a.row_off, b.row_off)
    col1, row1 = min(a.col_end, b.col_end), min(a.row_end, b.row_end)
    return Window(col0, row0, max(col1 - col0, 0), max(row1 - row0, 0))


def tiles(width: int, height: int, tile_width: int, tile_height: int | None = None) -> list[Window]:
    """Windows of at most ``tile_width x tile_height`` covering a ``width x height``
    image exactly once, row by row; the last column/row of tiles may be smaller.

    ``len(tiles(w, h, t)) == ceil(w / t) * ceil(h / t)``.
    """
    tile_height = tile_width if tile_height is None else tile_height
    if tile_width < 1 or tile_height < 1:
        raise GridError(f"tile size {tile_width} x {tile_height} must be at least 1 x 1 pixel")
    return [
        Window(col, row, min(tile_width, width - col), min(tile_height, height - row))
        for row in range(0, height, tile_height)
        for col in range(0, width, tile_width)
    ]


def overlapping_tiles(width: int, height: int, tile: int, overlap: int) -> list[Window]:
    """Square windows of ``tile`` px whose starts step by ``tile - overlap``, row by row; the
    last of each row and column is moved back to end at the image's edge, so that every window
    lies inside an image at least one tile wide and each pixel is seen whole by some window.
    Along an axis shorter than a tile there is one window, at 0, reaching past the image
    (read padded). Detection's tiles: an object cut by one window's edge lies inside another's
    when it is at most ``overlap`` px long."""
    if tile < 1 or not 0 <= overlap < tile:
        raise GridError(f"tiles of {tile} px overlapping {overlap} px: need 0 <= overlap < tile")

    def starts(size: int) -> list[int]:
        if size <= tile:
            return [0]
        found = list(range(0, size - tile, tile - overlap))
        return [*found, size - tile]

    return [Window(col, row, tile, tile) for row in starts(height) for col in starts(width)]


def rotated_box_corners(cx, cy, width, height, angle) -> np.ndarray:
    """``(n, 4, 2)`` corners ``(x, y)`` of boxes of centre ``(cx, cy)``, size ``width x
    height`` turned by ``angle`` radians, in pixel coordinates (x right, y down: a positive
    angle turns clockwise on screen, as Ultralytics' oriented boxes do). Order: the corner at
    ``(+w/2, +h/2)`` before turning, then around."""
    cx, cy, w, h, a = (np.asarray(v, dtype=np.float64).reshape(-1) for v in (cx, cy, width, height, angle))
    cos, sin = np.cos(a), np.sin(a)
    corners = []
    for dx, dy in ((0.5, 0.5), (-0.5, 0.5), (-0.5, -0.5), (0.5, -0.5)):
        x, y = dx * w, dy * h
        corners.append(np.stack([cx + x * cos - y * sin, cy + x * sin + y * cos], axis=-1))
    return np.stack(corners, axis=1)


def expanded(window: Window, margin: int, bounds: Window) -> Window:
    """``window`` grown by ``margin`` pixels on each side, within ``bounds``."""
    grown = Window(
        window.col_off - margin, window.row_off - margin, window.width + 2 * margin, window.height + 2 * margin
    )
    return intersection(grown, bounds)


def _smooth_step(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3.0 - 2.0 * x)


def blend_weights(window: Window, margin: int, bounds: Window) -> np.ndarray:
    """``(h, w)`` weights of a tile computed over ``window`` (a tile grown by ``margin``, see
    :func:`expanded`): on each side that faces a neighbour they rise smoothly (3x^2 - 2x^3)
    from 0 at the edge to 1 at ``2 * margin`` pixels in; on a side on the edge of ``bounds``
    (the image) they stay 1. Across the ``2 * margin`` pixels two neighbours share, their
    weights sum to 1. Example: margin 2, a side facing a neighbour: 0.043, 0.316, 0.684,
    0.957, then 1."""

    def ramp(start: int, size: int, low: int, high: int) -> np.ndarray:
        centre = np.arange(size) + 0.5
        weights = np.ones(size)
        if margin and start > low:
            weights = np.minimum(weights, _smooth_step(centre / (2 * margin)))
        if margin and start + size < high:
            weights = np.minimum(weights, _smooth_step((size - centre) / (2 * margin)))
        return weights

    return np.outer(
        ramp(window.row_off, window.height, bounds.row_off, bounds.row_end),
        ramp(window.col_off, window.width, bounds.col_off, bounds.col_end),
    )


def patch_start(center, size: int):
    """First index of a patch of ``size`` pixels centred on index ``center`` (an int, or an
    integer array of centres)."""
    return center - size // 2


def patch_window(col: int, row: int, width: int, height: int | None = None) -> Window:
    """The window of a patch centred on pixel ``(col, row)`` (the interface's rule: docs/interface.md)."""
    height = width if height is None else height
    return Window(patch_start(col, width), patch_start(row, height), width, height)


def patch_centre(start, size: int):
    """The centre index of a patch of ``size`` pixels starting at ``start``: the inverse of
    :func:`patch_start`."""
    return start + size // 2


def patch_fits(start, size: int, axis_px: int):
    """Whether a patch of ``size`` pixels starting at ``start`` (an int or an array) lies
    entirely on an axis of ``axis_px`` pixels."""
    return (start >= 0) & (start + size <= axis_px)


def patches_window(col0, row0, width: int, height: int) -> Window:
    """The smallest window holding every ``width x height`` patch starting at ``(col0, row0)``
    (arrays, at least one patch)."""
    col, row = int(np.min(col0)), int(np.min(row0))
    return Window(col, row, int(np.max(col0)) - col + width, int(np.max(row0)) - row + height)


def cut_patches(block: np.ndarray, col0, row0, width: int, height: int) -> np.ndarray:
    """``(n, bands, height, width)`` patches of ``block`` (``(bands, rows, cols)``) starting at
    ``(col0, row0)``, counted from the block's top-left pixel."""
    rows = np.asarray(row0)[:, None, None] + np.arange(height)[None, :, None]
    cols = np.asarray(col0)[:, None, None] + np.arange(width)[None, None, :]
    return block[:, rows, cols].transpose(1, 0, 2, 3)


def block_index(col, row, block_px: int, width: int):
    """Row-major number of the ``block_px`` square block holding pixel ``(col, row)`` of a
    grid ``width`` pixels wide (ints or arrays). Sorting pixels by it groups them by block,
    blocks row by row."""
    columns = -(-width // block_px)
    return (np.asarray(row, dtype=np.int64) // block_px) * columns + np.asarray(col, dtype=np.int64) // block_px


def dihedral(array: np.ndarray, transform: int, axes: tuple[int, int] = (0, 1)) -> np.ndarray:
    """One of the 8 flips and 90-degree rotations of the plane of ``axes``: ``transform`` 0 is
    the identity, 1-3 turn by 90, 180, 270 degrees, 4-7 turn the same then flip the second
    axis. A view when numpy can make one."""
    turned = np.rot90(array, transform % 4, axes=axes)
    return np.flip(turned, axis=axes[1]) if transform >= 4 else turned


def undo_dihedral(array: np.ndarray, transform: int, axes: tuple[int, int] = (0, 1)) -> np.ndarray:
    """The inverse of :func:`dihedral`: ``undo_dihedral(dihedral(a, t), t)`` is ``a``."""
    if transform >= 4:
        array = np.flip(array, axis=axes[1])
    return np.rot90(array, -(transform % 4), axes=axes)


@dataclass(frozen=True)
class Grid:
    """A north-up raster grid: origin (top-left corner), pixel size, shape."""

    x0: float
    y0: float
    res_x: float
    res_y: float
    width: int
    height: int

    def __post_init__(self) -> None:
        if not (self.res_x > 0 and self.res_y < 0):
            raise GridError(
                f"pixel size ({self.res_x}, {self.res_y}) is not north-up; "
                "warp the raster to a north-up grid (e.g. with gdalwarp) first"
            )

    @classmethod
    def from_transform(cls, transform, width: int, height: int) -> Grid:
        """From an affine transform ``(a, b, c, d, e, f)`` (GDAL/rasterio order:
        ``x = a*col + b*row + c``, ``y = d*col + e*row + f``)."""
        a, b, c, d, e, f = (float(v) for v in tuple(transform)[:6])
        if b != 0 or d != 0:
            raise GridError(
                "the raster is rotated or sheared (its geotransform has non-zero rotation terms); "
                "warp it to a north-up grid (e.g. with gdalwarp) first"
            )
        return cls(c, f, a, e, int(width), int(height))

    @property
    def window(self) -> Window:
        return Window(0, 0, self.width, self.height)

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """``(xmin, ymin, xmax, ymax)`` in map units."""
        return (self.x0, self.y0 + self.height * self.res_y, self.x0 + self.width * self.res_x, self.y0)

    def to_map(self, col, row):
        """Map coordinates of a pixel position (use ``col + 0.5`` for a centre); scalars or
        numpy arrays."""
        return self.x0 + col * self.res_x, self.y0 + row * self.res_y

    def pixel_of(self, x, y):
        """Integer ``(col, row)`` of the pixel containing each map point
        (scalars or numpy arrays); may lie outside the grid."""
        col = np.floor((np.asarray(x, dtype=float) - self.x0) / self.res_x).astype(np.int64)
        row = np.floor((np.asarray(y, dtype=float) - self.y0) / self.res_y).astype(np.int64)
        if col.ndim == 0:
            return int(col), int(row)
        return col, row

    def contains(self, col, row):
        """Whether pixel indices lie inside the grid (vectorised)."""
        return (col >= 0) & (col < self.width) & (row >= 0) & (row < self.height)

    def window_of_bounds(self, xmin: float, ymin: float, xmax: float, ymax: float) -> Window:
        """The smallest window holding every pixel whose centre lies in the box,
        clipped to the grid (possibly empty)."""
        col0 = math.ceil((xmin - self.x0) / self.res_x - 0.5)
        col1 = math.floor((xmax - self.x0) / self.res_x - 0.5) + 1
        row0 = math.ceil((ymax - self.y0) / self.res_y - 0.5)
        row1 = math.floor((ymin - self.y0) / self.res_y - 0.5) + 1
        return intersection(Window(col0, row0, col1 - col0, row1 - row0), self.window)

    def coarser(self, col: int, row: int, scale: int, width: int, height: int) -> Grid:
        """The grid of ``scale x scale`` pixel blocks whose first block starts at pixel
        ``(col, row)`` of this grid (``scale`` 1: a window's grid)."""
        x, y = self.to_map(col, row)
        return Grid(x, y, self.res_x * scale, self.res_y * scale, width, height)

    def window_transform(self, window: Window) -> tuple[float, float, float, float, float, float]:
        """The affine ``(a, b, c, d, e, f)`` of a window's own pixel grid."""
        x, y = self.to_map(window.col_off, window.row_off)
        return (self.res_x, 0.0, x, 0.0, self.res_y, y)


def grid_positions(size_px: int, patch_px: int, step_px: int) -> int:
    """How many patches of ``patch_px`` fit along an axis of ``size_px`` pixels when
    their starts are ``0, step, 2*step, ...``: ``(size - patch) // step + 1`` (0 if
    the patch is larger than the axis). Example: 100 px, patch 16, step 10 -> 9."""
    if patch_px < 1 or step_px < 1:
        raise GridError(f"patch size {patch_px} and grid step {step_px} must be at least 1 pixel")
    return 0 if size_px < patch_px else (size_px - patch_px) // step_px + 1


def position_centre(index, patch_px: int, step_px: int):
    """Centre pixel of the patch at grid position ``index`` (its start is
    ``index * step``, so by the patch rule its centre is ``start + patch // 2``)."""
    return index * step_px + patch_px // 2


def overlap_reach(patch_px: int, step_px: int) -> int:
    """Largest position distance at which two patches still overlap:
    ``ceil(patch / step) - 1`` (patches at distance d overlap iff ``d * step < patch``)."""
    return -(-patch_px // step_px) - 1


# -- Serving geometry ------------------------------------------------------------------
#
# A model maps an input block of ``rfield`` pixels (receptive field, in pixels of the
# reference source, i.e. source 1) to ``efield`` output pixels (expression field),
# each output pixel ``scale`` reference pixels wide (spacing scale: 2 for a model that
# halves the resolution). Patch-based models have ``efield = 1``.
#
# Output pixel ``i`` covers reference pixels ``a + i*scale .. a + i*scale + scale - 1``,
# where ``a`` is the output grid's offset (reference pixels). Its input starts
# ``floor(rfield/2) - floor(efield*scale/2)`` reference pixels before its block, so that
# centres coincide (docs/interface.md). Worked example, single resolution, scale 1: a patch-based
# model with rfield 16 serves output pixel i from the patch starting 8 pixels before
# reference pixel a + i, where a = 8 (the first pixel whose patch fits); a 100 px wide
# source gives 100 - 16 + 1 = 85 output pixels, the output origin 8 pixels right of the
# source's. An FCN with rfield 64 and efield 32: inputs start 32 - 16 = 16 pixels before
# their output block; the output is 100 - (64 - 32) = 68 pixels wide, 16 pixels in.


@dataclass(frozen=True)
class ModelGeometry:
    """Receptive field, expression field and spacing scale of a model (see above)."""

    rfield: int
    efield: int = 1
    scale: int = 1

    def __post_init__(self) -> None:
        if self.rfield < 1 or self.efield < 1 or self.scale < 1:
            raise GridError(
                f"receptive field {self.rfield}, expression field {self.efield} and spacing "
                f"scale {self.scale} must all be at least 1"
            )
        if self.efield * self.scale > self.rfield:
            raise GridError(
                f"expression field {self.efield} x spacing scale {self.scale} = {self.efield * self.scale} px "
                f"exceeds the receptive field {self.rfield} px; use an expression field of at most "
                f"{self.rfield // self.scale}"
            )

    @property
    def context(self) -> int:
        """Input pixels beyond the block's own: ``rfield - efield * scale``."""
        return self.rfield - self.efield * self.scale

    @property
    def before(self) -> int:
        """Input pixels before the output block (centres coincide)."""
        return self.rfield // 2 - (self.efield * self.scale) // 2

    @property
    def after(self) -> int:
        return self.context - self.before

    @property
    def output_span(self) -> slice:
        """Where the output block lies in the model's input (reference pixels, either axis):
        ``before .. before + efield * scale``. Training cuts label patches to it."""
        return slice(self.before, self.before + self.efield * self.scale)


def margins_px(rfield: int, efield: int, scale: int = 1) -> tuple[int, int]:
    """``(before, after)``: input pixels before and after an output block."""
    geometry = ModelGeometry(rfield, efield, scale)
    return geometry.before, geometry.after


@dataclass(frozen=True)
class AxisMap:
    """Where the reference grid lies in a source's pixels, along one axis:
    reference pixel ``p`` starts at source pixel ``offset + p * ratio``."""

    offset: float  # source pixels
    ratio: float  # source pixels per reference pixel (0.5 for a 60 m source over 30 m)

    @classmethod
    def between(cls, reference_origin: float, reference_res: float, source_origin: float, source_res: float) -> AxisMap:
        return cls((reference_origin - source_origin) / source_res, reference_res / source_res)


def patch_starts(out_index, axis: AxisMap, offset_px: int, scale: int, rfield: int):
    """Patch mode: first source pixel of the patch of each output pixel.

    The patch is centred on the source pixel that contains the output pixel's
    centre (the extraction rule), so a model serves on the context it was trained on.
    """
    centre = axis.offset + (offset_px + np.asarray(out_index) * scale + scale / 2) * axis.ratio
    return np.floor(centre + 1e-9).astype(np.int64) - rfield // 2


def block_starts(out_index, axis: AxisMap, offset_px: int, scale: int, source_rfield: int, source_efield: int):
    """FCN mode: first source pixel of the input of the block starting at each
    output index. Raises :class:`GridError` when the grids are not aligned."""
    start = axis.offset + (offset_px + np.asarray(out_index) * scale) * axis.ratio
    rounded = np.round(start)
    if np.any(np.abs(start - rounded) > 1e-6):
        raise GridError(
            "the sources' grids are not aligned for fully-convolutional serving: an output block starts "
            f"at source pixel {float(np.ravel(start)[0]):.3f}; resample the sources on grids whose origins "
            "differ by whole pixels of the coarser one"
        )
    return rounded.astype(np.int64) - (source_rfield // 2 - source_efield // 2)


# -- One source, one axis, as serving reads it -----------------------------------------

Mode = Literal["pixels", "blocks", "regions"]
"""How a model is served: ``pixels`` (a patch per output pixel), ``blocks`` (a fixed-size
input per block of ``efield`` output pixels), ``regions`` (fully-convolutional: one input per
tile, any size)."""


@dataclass(frozen=True)
class SourceAxis:
    """Where the input of output index ``i`` lies in one source's pixels, along one axis.

    ``phase`` and ``scale``: output index ``i`` covers reference pixels
    ``phase + i * scale .. + scale - 1``; ``rfield`` and ``efield``: the model's receptive
    field and output block in this source's pixels (``efield`` 1 in pixels mode)."""

    map: AxisMap
    phase: int
    scale: int
    rfield: int
    efield: int = 1

    @property
    def ratio(self) -> float:
        return self.map.ratio

    def patch_starts(self, index):
        """Pixels mode: the first pixel of each output pixel's patch."""
        return patch_starts(index, self.map, self.phase, self.scale, self.rfield)

    def centre_pixels(self, index):
        """The source pixel holding each output pixel's centre."""
        return patch_starts(index, self.map, self.phase, self.scale, 0)

    def block_starts(self, index):
        """Blocks and regions: the first pixel of the input of the block starting at each index."""
        return block_starts(index, self.map, self.phase, self.scale, self.rfield, self.efield)

    def pixel_input(self, index, mode: Mode):
        """``(starts, length)``: the input of each output pixel alone (within its block)."""
        if mode == "pixels":
            return self.patch_starts(index), self.rfield
        return self.block_starts(index), self.rfield - self.efield + max(1, round(self.scale * self.ratio))

    def tile_input(self, first: int, count: int, mode: Mode, model_efield: int) -> tuple[int, int]:
        """``(start, length)``: the source pixels a run of ``count`` output pixels from index
        ``first`` reads (whole blocks of ``model_efield`` output pixels in blocks mode)."""
        if mode == "pixels":
            starts = self.patch_starts(np.arange(first, first + count))
            return int(starts.min()), int(starts.max() - starts.min()) + self.rfield
        start = int(self.block_starts(np.array([first]))[0])
        context = self.rfield - self.efield
        if mode == "blocks":
            return start, math.ceil(count / model_efield) * self.efield + context
        return start, round(count * self.scale * self.ratio) + context


def input_window(
    x: SourceAxis, y: SourceAxis, tile: Window, first: tuple[int, int], mode: Mode, model_efield: int
) -> Window:
    """The source window a tile of the output reads; ``first`` is the output index of the
    output grid's pixel 0."""
    col, width = x.tile_input(tile.col_off + first[0], tile.width, mode, model_efield)
    row, height = y.tile_input(tile.row_off + first[1], tile.height, mode, model_efield)
    return Window(col, row, width, height)


def output_range(
    size: int, phase: int, scale: int, axes: list[tuple[SourceAxis, int]], mode: Mode, pad: bool
) -> tuple[int, int]:
    """``(first index, count)`` of the output pixels along one axis of a reference of ``size``
    pixels: with ``pad``, every output pixel covering part of the reference; without, those
    whose input lies inside every source (``axes``: each source's axis and its size)."""
    index = np.arange(-1, math.ceil(size / scale) + 1)
    if pad:
        where = index[(phase + index * scale + scale > 0) & (phase + index * scale < size)]
        return int(where[0]), len(where)
    ok = np.ones(len(index), dtype=bool)
    for axis, limit in axes:
        starts, length = axis.pixel_input(index, mode)
        ok &= patch_fits(starts, length, limit)
    where = index[ok]
    return (int(where[0]), int(where[-1] - where[0] + 1)) if len(where) else (0, 0)
