"""Windowed raster reads with rasterio.

Rasters are never read whole: callers read windows of a bounded size. This process only
reads raster pixels; they are written by the writer process (:mod:`raster_writer`), so
that GDAL's block cache here never holds a dirty block that another thread could flush.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from rasterio.enums import Resampling
from rasterio.vrt import WarpedVRT

from .errors import InputError
from .grid import Grid, Window

# Integer pixel types for class codes, smallest first (GeoTIFF reads them all).
CLASS_CODE_TYPES = (
    ("uint8", 0, 2**8 - 1),
    ("uint16", 0, 2**16 - 1),
    ("int16", -(2**15), 2**15 - 1),
    ("int32", -(2**31), 2**31 - 1),
    ("int64", -(2**63), 2**63 - 1),
)


# Class codes are written in 32-bit class maps (GeoTIFF Int32, the models' class output): a
# code outside this range would wrap there, so it is refused where classes are read.
CLASS_CODE_RANGE = (-(2**31), 2**31 - 1)


def class_code_types(low: int, high: int) -> list[tuple[str, int, int]]:
    """The integer types that hold every code from ``low`` to ``high``, smallest first: the one
    rule for labels images and class maps."""
    return [(dtype, lo, hi) for dtype, lo, hi in CLASS_CODE_TYPES if lo <= low and high <= hi]


def cpu_cores() -> int:
    """The cores this process may run on (``taskset`` and container limits included)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def open_raster(path: str | Path, threads: int = 1):
    """Open a raster for reading, with an error that names the file; complex pixels are refused.
    ``threads`` > 1: a compressed GeoTIFF decodes the blocks of one read with that many
    threads (GDAL's NUM_THREADS; the pixels are the same)."""
    try:
        dataset = rasterio.open(str(path))
        if threads > 1 and dataset.driver == "GTiff" and dataset.compression is not None:
            dataset.close()
            dataset = rasterio.open(str(path), NUM_THREADS=str(threads))
    except rasterio.errors.RasterioIOError as err:
        raise InputError(f"cannot open raster {str(path)!r}: {err}") from err
    refuse_complex(dataset, str(path))
    return dataset


def close_with(stack: ExitStack, dataset):
    """``dataset``, closed when ``stack`` closes, from whichever thread closes it. Not
    ``stack.enter_context(dataset)``: rasterio 1.5 (Debian unstable, QGIS 3.44) ties a dataset
    entered as a context to a GDAL environment of the thread that entered it, and closing it from
    another thread fails ("No GDAL environment exists"); reader threads open their own datasets
    (:class:`PerThread`) and the run's thread closes them."""
    stack.callback(dataset.close)
    return dataset


class PerThread:
    """One object per thread, made on a thread's first :meth:`get` by ``make(stack)``, for what
    several threads must not share, such as GDAL datasets (a dataset is not thread-safe; several
    datasets of one file are). The thread that builds it may give its own (``first``). What was
    made is closed with ``stack``, once the threads are done."""

    def __init__(self, make: Callable[[ExitStack], Any], stack: ExitStack, first: Any = None):
        self._make, self._stack = make, stack
        self._local = threading.local()
        self._lock = threading.Lock()  # an ExitStack is not thread-safe
        if first is not None:
            self._local.value = first

    def get(self) -> Any:
        value = getattr(self._local, "value", None)
        if value is None:
            with self._lock:
                value = self._make(self._stack)
            self._local.value = value
        return value


_GDAL_COMPLEX = {
    "complex_int16": "CInt16",
    "complex_int32": "CInt32",
    "complex64": "CFloat32",
    "complex128": "CFloat64",
}


def refuse_complex(dataset, name: str) -> None:
    """Complex pixels (SAR: CInt16, CFloat32...) have no single real value to learn from:
    refused the same way everywhere, with the command that makes a usable raster."""
    complex_types = sorted({_GDAL_COMPLEX.get(t, t) for t in dataset.dtypes if t.startswith("complex")})
    if complex_types:
        dataset.close()
        raise InputError(
            f"{Path(name).name} has complex pixels ({', '.join(complex_types)}), which otbtf does not "
            "read: make a raster of their magnitude first, e.g. gdal_calc.py -A "
            f'{Path(name).name} --calc="abs(A)" --type=Float32 --outfile=magnitude.tif '
            '(or Raster Calculator: abs("layer@1"))'
        )


def read(dataset, *args, **kwargs) -> np.ndarray:
    """``dataset.read`` with an error that names the file and says what to do."""
    try:
        return dataset.read(*args, **kwargs)
    except rasterio.errors.RasterioIOError as err:
        if dataset.driver == "VRT" or "No such file" in str(err):
            raise InputError(
                f"cannot read the pixels of {dataset.name}: a file it refers to is missing or unreadable "
                f"({err}); check the paths inside it, or build it again"
            ) from err
        raise InputError(
            f"cannot read the pixels of {dataset.name}: the file is truncated or corrupt ({err}); "
            "re-create or copy it again"
        ) from err


def read_padded(dataset, bands: int, window: Window) -> np.ndarray:
    """The first ``bands`` bands of ``window``; past the raster's edge, 0 (as Deepness pads).
    Only a window that passes the edge is read boundless: rasterio's boundless reads go through
    a VRT, which cost detection a sixth of its time when every tile took that path."""
    indexes = list(range(1, bands + 1))
    if window.col_end <= dataset.width and window.row_end <= dataset.height:
        return read(dataset, indexes, window=window.to_rasterio())
    return read(dataset, indexes, window=window.to_rasterio(), boundless=True, fill_value=0)


def check_tile_memory(tile_bytes: int, in_flight: int, memory_mb: int, what: str) -> None:
    """Refuse a run whose tiles, fixed by the model's file, would pass ``MEMORY_MB`` with
    ``in_flight`` of them in memory at once: one line, with the budget that would work."""
    needed = tile_bytes * in_flight
    if needed > memory_mb * 2**20:
        raise InputError(
            f"{what} need about {needed / 2**20:.0f} MiB for its tiles ({in_flight} in memory at once, "
            f"{tile_bytes / 2**20:.0f} MiB each) and MEMORY_MB is {memory_mb}: give MEMORY_MB "
            f"{-(-needed // 2**20)} or more"
        )


def grid_of(dataset) -> Grid:
    """The dataset's pixel grid; a raster with no georeferencing at all is said so (GDAL gives
    it a unit transform whose rows go up, which would read as 'not north-up')."""
    if dataset.transform.is_identity and dataset.crs is None and not dataset.gcps[0]:
        raise InputError(
            f"{Path(dataset.name).name} has no georeferencing (no geotransform, no CRS): georeference it "
            "first (QGIS' Georeferencer, or gdal_translate -a_ullr ... -a_srs ...)"
        )
    return Grid.from_transform(dataset.transform, dataset.width, dataset.height)


def resolution_warning(wanted_cm: float | None, dataset, tolerance: float = 1.5) -> str | None:
    """A line when the raster's pixels are far (more than ``tolerance`` times) from those a
    model was made for (Deepness' ``resolution``, cm): Deepness resamples the raster to it; we
    keep the raster's grid, so the user should."""
    crs = dataset.crs
    if not wanted_cm or crs is None or not crs.is_projected:
        return None
    metres = abs(dataset.res[0]) * (crs.linear_units_factor[1] if crs.linear_units_factor else 1.0)
    if 1 / tolerance <= metres * 100 / wanted_cm <= tolerance:
        return None
    return (
        f"warning: the model was made for {wanted_cm:g} cm pixels and source 1 has {metres * 100:g} cm pixels; "
        f"resample it to {wanted_cm / 100:g} m (Raster > Projections > Warp, or gdalwarp -tr) or expect a poor map"
    )


def crs_wkt(dataset) -> str | None:
    return dataset.crs.to_wkt() if dataset.crs else None


def nodata_values(dataset, nodata: float | None = None) -> list[float | None]:
    """Per-band nodata: ``nodata`` when given, else the raster's own."""
    if nodata is not None:
        return [nodata] * dataset.count
    return list(dataset.nodatavals)


def invalid_pixels(block: np.ndarray, nodata: list[float | None]) -> np.ndarray:
    """``(rows, cols)`` bool: True where any band holds its nodata value (NaN-aware)."""
    bad = np.zeros(block.shape[1:], dtype=bool)
    for band, value in zip(block, nodata, strict=True):
        if value is None:
            continue
        bad |= np.isnan(band) if np.isnan(value) else band == value
    return bad


class AlignedRaster:
    """A single-band raster (mask, labels) resampled (nearest) onto a reference grid."""

    def __init__(self, path: str | Path, reference):
        self.dataset = open_raster(path)
        same_grid = (
            self.dataset.crs == reference.crs
            and self.dataset.transform == reference.transform
            and self.dataset.shape == reference.shape
        )
        self.source = (
            self.dataset
            if same_grid
            else WarpedVRT(
                self.dataset,
                crs=reference.crs,
                transform=reference.transform,
                width=reference.width,
                height=reference.height,
                resampling=Resampling.nearest,
            )
        )

    def read_values(self, window: Window) -> np.ndarray:
        return read(self.source, 1, window=window.to_rasterio())

    def read_mask(self, window: Window) -> np.ndarray:
        """True where the value is > 0 (a valid pixel of a mask)."""
        return self.read_values(window) > 0

    def close(self) -> None:
        if self.source is not self.dataset:
            self.source.close()
        self.dataset.close()


def valid_pixels(dataset, window: Window, nodata: list[float | None], mask: AlignedRaster | None) -> np.ndarray:
    """``(rows, cols)`` bool for a window: not nodata in any band, and inside the mask."""
    if all(value is None for value in nodata):
        valid = np.ones((window.height, window.width), dtype=bool)
    else:
        valid = ~invalid_pixels(read(dataset, window=window.to_rasterio()), nodata)
    if mask is not None:
        valid &= mask.read_mask(window)
    return valid
