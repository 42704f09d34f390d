"""Serving's output: the GeoTIFF's pixel type, compression, band names and creation profile."""

from __future__ import annotations

import numpy as np
import rasterio

from ..errors import InputError
from ..grid import Window
from ..raster import cpu_cores
from .options import COMPRESSIONS, Compression
from .planning import Plan


def output_dtype(plan: Plan) -> str:
    """float32 when any output is not whole numbers; else the smallest of uint8, int16, uint16
    and int32 that holds every output (class maps: usually one byte) and the background."""
    dtypes = [np.dtype("uint8") if o.dtype == "bool" else np.dtype(o.dtype) for o in plan.outputs]
    if any(d.kind not in "iu" for d in dtypes):
        return "float32"
    common = np.result_type(*dtypes)
    for small in ("uint8", "int16", "uint16"):
        limits = np.iinfo(small)
        if (
            np.can_cast(common, small)
            and float(plan.background).is_integer()
            and limits.min <= plan.background <= limits.max
        ):
            return small
    return "int32"


def check_nodata(background: float, dtype: str) -> None:
    """BACKGROUND_VALUE is the output's nodata: an integer output (a class map) needs a whole
    number its type holds (GDAL would refuse 1e20 or nan with a traceback)."""
    if np.dtype(dtype).kind not in "iu":
        return
    limits = np.iinfo(dtype)
    if not (np.isfinite(background) and float(background).is_integer() and limits.min <= background <= limits.max):
        raise InputError(
            f"BACKGROUND_VALUE {background:g} cannot be the nodata value of this {dtype} output (a class "
            f"map): give a whole number from {limits.min} to {limits.max} that is not a class, e.g. 255 "
            "or -1"
        )


def compression_options(name: str, dtype: str) -> dict:
    """GeoTIFF creation options. ZSTD (the default) is for speed: level 1, horizontal
    differencing (predictor 2) even for floats: writing 2 float32 bands of 73 Mpx took 0.96 s
    against 1.7-2.4 s with the floating-point predictor (3), for a file 16 % larger (422 vs
    363 MiB), and serving an FCN over them went from 7.2 s to 6.5 s on 2 cores. DEFLATE and
    LZW (for software without ZSTD) keep predictor 3 for floats: the smaller file."""
    if name not in COMPRESSIONS:
        raise InputError(f"unknown compression {name!r}; use one of: {', '.join(COMPRESSIONS)}")
    if name == "none":
        return {}
    options: dict[str, str | int] = {
        "compress": name,
        "predictor": 3 if dtype.startswith("float") and name != "zstd" else 2,
    }
    if cpu_cores() > 1:  # blocks compressed by GDAL's threads as they are flushed: the same bytes per block
        options["num_threads"] = str(cpu_cores())
    if name == "zstd":
        options["zstd_level"] = 1
    return options


def band_names(plan: Plan, channel: str = "{name}[{c}]") -> list[str]:
    """One name per output band: the output's name, or ``channel`` for each of its channels."""
    names = []
    for o in plan.outputs:
        names.extend([o.name] if o.channels == 1 else [channel.format(name=o.name, c=c) for c in range(o.channels)])
    return names


def output_profile(plan: Plan, crs, count: int, dtype: str, compress: Compression) -> dict:
    """The creation profile of a tiled GeoTIFF on the plan's output grid."""
    return {
        "driver": "GTiff",
        "width": plan.grid.width,
        "height": plan.grid.height,
        "count": count,
        "dtype": dtype,
        "crs": crs,
        "transform": rasterio.Affine(*plan.grid.window_transform(Window(0, 0, 0, 0))),
        "tiled": True,
        "blockxsize": 256,
        "blockysize": 256,
        "BIGTIFF": "IF_SAFER",
        **compression_options(compress, dtype),
    }
