"""Super-resolution models (Deepness' ``Superresolution``): an output ``upscale`` times finer
than the input, written on the finer grid.

The raster is cut into the model's square tiles overlapping as its metadata says
(:func:`grid.overlapping_tiles`; a raster smaller than a tile is padded with 0). Each pixel of
the raster is taken from one tile: along each axis, neighbouring tiles split their overlap in
its middle, so that every kept pixel lies at least half the overlap from a tile's edge, where
a convolution's zero padding would show. The output grid has the raster's origin and pixels
``upscale`` times smaller; input pixel ``(i, j)`` becomes output pixels ``upscale * i`` to
``upscale * (i + 1) - 1`` (and the same for rows).
"""

from __future__ import annotations

import itertools
from contextlib import ExitStack
from functools import partial
from pathlib import Path

import numpy as np
import rasterio

from .. import grid
from ..execution.pipeline import READERS, LocalThreads, TileWork, raster_outputs, tiles_in_flight
from ..grid import Window
from ..models.served import ServedModel
from ..progress import Progress, tell
from ..raster import PerThread, check_tile_memory, close_with, grid_of, open_raster, read_padded, resolution_warning
from .options import ServeOptions, ServeSource
from .output import compression_options


def kept_ranges(size: int, tile: int, overlap: int) -> list[tuple[int, int, int]]:
    """``(start, keep_from, keep_to)`` of each tile along an axis of ``size`` px: the tiles of
    :func:`grid.overlapping_tiles`, each keeping ``[keep_from, keep_to)``; together they cover
    ``[0, size)`` once. Neighbours split their overlap in its middle."""
    starts = sorted({w.col_off for w in grid.overlapping_tiles(size, 1, tile, overlap)})
    bounds = [0] + [(a + tile + b) // 2 for a, b in itertools.pairwise(starts)] + [size]
    return [(start, bounds[k], bounds[k + 1]) for k, start in enumerate(starts)]


def _read(dataset_of: PerThread, bands: int, tile: Window):
    return tile, read_padded(dataset_of.get()[0], bands, tile)


def _compute(model: ServedModel, name: str, output: str, state, item, progress: Progress):
    _tile, pixels = item
    x = np.moveaxis(pixels.astype(np.float32) / np.float32(255), 0, -1)[None]
    return np.moveaxis(np.asarray(model.run({name: x})[output])[0], -1, 0)  # (bands, rows, cols)


def serve_superresolution(
    sources: list[ServeSource], model: ServedModel, output, options: ServeOptions, progress: Progress
) -> tuple[int, int]:
    """Serve ``model`` (a super-resolution model: ``metadata.upscale``) over source 1 into the
    GeoTIFF ``output``; returns (tiles, output bands)."""
    meta = model.metadata
    assert meta is not None and meta.upscale  # noqa: S101  # nosec B101
    scale, tile = meta.upscale, int(meta.inputs[0].rfield or 0)
    overlap = tile - int(meta.efield or tile)
    name, out_name = meta.inputs[0].name, model.outputs[0].name
    executor = LocalThreads(readers=READERS)
    if len(sources) > 1:
        tell(progress, "warning: a super-resolution model reads source 1 only; the other sources are not used")
    with ExitStack() as stack:

        def open_source(stack: ExitStack) -> list:
            return [close_with(stack, open_raster(sources[0].path))]

        datasets = open_source(stack)
        dataset = datasets[0]
        bands = meta.inputs[0].bands or 3
        if dataset.count < bands:
            raise_bands(sources[0].path, dataset.count, bands)
        source_grid = grid_of(dataset)
        warning = resolution_warning(meta.resolution_cm, dataset)
        if warning:
            tell(progress, warning)
        columns = kept_ranges(dataset.width, tile, overlap)
        rows = kept_ranges(dataset.height, tile, overlap)
        keep = {
            Window(c0, r0, tile, tile): (c1 - c0, c2 - c0, r1 - r0, r2 - r0, c1, r1)
            for r0, r1, r2 in rows
            for c0, c1, c2 in columns
        }
        tiles = list(keep)
        progress.info(f"{model.describe()}; {len(tiles)} tiles of {tile} px, output {scale} times finer")
        channels = model.outputs[0].shape[3] or 1
        # a tile as read and as float32, and its output, float32, upscale^2 times larger
        tile_bytes = tile * tile * (bands * (np.dtype(dataset.dtypes[0]).itemsize + 4) + channels * 4 * scale * scale)
        check_tile_memory(
            tile_bytes, tiles_in_flight(executor), options.memory_mb, f"the super-resolution model's {tile} px tiles"
        )
        profile = {
            "driver": "GTiff",
            "width": dataset.width * scale,
            "height": dataset.height * scale,
            "count": channels,
            "dtype": "float32",
            "crs": dataset.crs,
            "transform": rasterio.Affine(
                source_grid.res_x / scale, 0, source_grid.x0, 0, source_grid.res_y / scale, source_grid.y0
            ),
            "tiled": True,
            "blockxsize": 256,
            "blockysize": 256,
            "BIGTIFF": "IF_SAFER",
            **compression_options(options.compress, "float32"),
        }
        names = [f"{out_name}[{c}]" for c in range(channels)] if channels > 1 else [out_name]
        work = TileWork(
            build=_unavailable,
            read=lambda state, t: _read(state, bands, t),
            compute=partial(_compute, model, name, out_name),
            empty=lambda item: False,
        )
        with raster_outputs([(output, profile, names)]) as out:
            writer = out.writers[0]

            def write(t: Window, values: np.ndarray) -> None:
                left, right, top, bottom, col, row = keep[t]
                part = values[:, top * scale : bottom * scale, left * scale : right * scale]
                window = Window(col * scale, row * scale, part.shape[2], part.shape[1])
                writer.write(np.ascontiguousarray(part, dtype=np.float32), window=window.to_rasterio())

            executor.run(work, tiles, write, progress, PerThread(open_source, stack, datasets))
    return len(tiles), channels


def raise_bands(path, count: int, bands: int) -> None:
    from ..errors import InputError

    raise InputError(
        f"{Path(path).name} has {count} bands and the model reads {bands}: give a raster with at least that many"
    )


def _unavailable(stack: ExitStack):
    raise NotImplementedError("super-resolution runs on this machine only")
