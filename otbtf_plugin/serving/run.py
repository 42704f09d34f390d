"""Serving's workflow, ``serve()``: apply a model to rasters of any size, streamed tile by tile.

The output grid is the reference source's (source 1) grid, scaled by the spacing
scale and cropped where the receptive field does not fit (or padded, on request);
see the worked example in :mod:`otbtf_plugin.grid`. Everything about geometry is
resolved and checked against the model *before* any pixel is read: a wrong
receptive field fails at once with the values that would work.

Execution follows the model:

* ``pixels`` (patch-based, expression field 1): each output pixel gets, from each
  source, the patch centred on the source pixel containing the output pixel's
  centre, as patches extraction cuts them; patches are batched.
* ``blocks`` (models with a fixed input size): an ``efield x efield`` output block
  per ``rfield x rfield`` input, batched.
* ``regions`` (fully-convolutional models accepting any size): one call per tile
  on the tile's input region.

The tiles are computed by an executor (:mod:`pipeline`: this machine's reader, inference
and writer threads, or a Dask cluster); only the inference step touches the model.
Results never depend on the tile or batch size, nor on the executor. Tiles whose sources
hold only nodata are not computed, and output pixels whose centre input pixel is nodata
get the background value.
"""

from __future__ import annotations

from contextlib import ExitStack
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path

import numpy as np
import rasterio

from .. import grid
from ..errors import InputError
from ..execution.pipeline import READERS, Executor, LocalThreads, TileWork, absolute, decoding_threads, raster_outputs
from ..grid import Window
from ..models.loading import ServedModel, load_model
from ..outputs import check_paths, geotiff
from ..progress import NullProgress, Progress, tell, warn
from ..raster import PerThread, invalid_pixels, read, resolution_warning
from ..raster_writer import start_writer
from ..styles import write_class_style
from .blending import Blender
from .inference import ServingState, build_state, compute_tile, open_sources, read_tile, tile_is_empty
from .options import ServeOptions, ServeSource
from .output import band_names, check_nodata, output_dtype, output_profile
from .planning import Plan, plan_serving
from .superresolution import serve_superresolution


def scale_warnings(plan: Plan, model: ServedModel, datasets, windows: int = 4, side: int = 64) -> list[str]:
    """A line per source whose values are far from those the model was trained on (its
    metadata keeps the training bands' mean and std): an 8-bit image given to a model of
    16-bit data gives a one-class map without any error. Reads ``windows`` x ``windows``
    small windows spread over each source: a bounded cost whatever its size."""
    statistics = {i.name: i.band_statistics for i in (model.metadata.inputs if model.metadata else [])}
    lines = []
    for k, (sp, ds) in enumerate(zip(plan.sources, datasets, strict=True), 1):
        entry = statistics.get(sp.name)
        if entry is None or len(entry.mean) != ds.count:
            continue
        trained_mean, trained_std = np.asarray(entry.mean, float), np.asarray(entry.std, float)
        sums, counts = np.zeros(ds.count), np.zeros(ds.count)
        w, h = min(side, ds.width), min(side, ds.height)
        for row in np.linspace(0, ds.height - h, windows).astype(int):
            for col in np.linspace(0, ds.width - w, windows).astype(int):
                block = read(ds, window=Window(int(col), int(row), w, h).to_rasterio()).astype(float)
                valid = ~invalid_pixels(block, sp.nodata)
                sums += (block * valid).sum(axis=(1, 2))
                counts += valid.sum()
        if not counts.any():
            continue
        mean = sums / np.maximum(counts, 1)
        distance = np.abs(mean - trained_mean) / np.maximum(trained_std, 1e-6 * np.abs(trained_mean) + 1e-12)
        band = int(np.argmax(distance))
        if distance[band] > 5:
            lines.append(
                f"warning: source {k} ({Path(ds.name).name}) band {band + 1} averages {mean[band]:.4g} here; "
                f"the model was trained on values averaging {trained_mean[band]:.4g} (std "
                f"{trained_std[band]:.3g}): is this the same kind of data (8 or 16 bits, reflectance or "
                "digital numbers, same bands)? Otherwise the map may be meaningless"
            )
    return lines


def resolution_warnings(model: ServedModel, datasets) -> list[str]:
    """:func:`raster.resolution_warning` for a model and its reference source."""
    line = resolution_warning(model.metadata.resolution_cm if model.metadata else None, datasets[0])
    return [line] if line else []


@dataclass
class ServeResult:
    output: Path
    plan: Plan | None  # None for a super-resolution model, served on its own finer grid
    tiles: int
    skipped_tiles: int
    style: Path | None = None  # a .qml beside a class map
    upscale: int = 1  # output pixels per input pixel along each axis (super-resolution)


def serve(
    sources: list[ServeSource],
    model_path,
    output,
    options: ServeOptions | None = None,
    progress: Progress | None = None,
    model: ServedModel | None = None,
    executor: Executor | None = None,
) -> ServeResult:
    """Serve ``model_path`` over ``sources`` into the GeoTIFF ``output`` (see module doc), with
    ``executor`` computing the tiles (default: this machine, :class:`pipeline.LocalThreads`)."""
    options = options or ServeOptions()
    progress = progress or NullProgress()
    executor = executor or LocalThreads(readers=READERS)
    if not sources:
        raise InputError("no source raster given")
    check_paths(
        {**{f"SOURCE{n}": s.path for n, s in enumerate(sources, 1)}, "MODEL": model_path}, {"OUTPUT": geotiff(output)}
    )
    start_writer()  # its imports overlap the model's loading
    model = model or load_model(
        model_path, allow_lambda=options.allow_lambda, layout=options.layout, device=options.device
    )
    if model.metadata is not None and model.metadata.task == "superresolution":
        tiles, _ = serve_superresolution(sources, model, output, options, progress)
        return ServeResult(Path(output), None, tiles, 0, None, upscale=model.metadata.upscale or 1)
    with ExitStack() as stack:
        # GDAL's block cache defaults to 5 % of the RAM and would fill with written
        # blocks: bound it by the budget, so memory does not grow with the image.
        stack.enter_context(rasterio.Env(GDAL_CACHEMAX=max(16, min(128, options.memory_mb // 8))))
        open_here = partial(open_sources, [s.path for s in sources], decoding_threads(executor))
        datasets = open_here(stack)
        plan = plan_serving(sources, model, options, datasets)
        if model.notes:  # what was read from the file (layout, Deepness settings)
            progress.info(f"model: {model.describe()}")
        progress.info(f"device: {model.device}")
        progress.info(plan.describe())
        for note in plan.notes + scale_warnings(plan, model, datasets) + resolution_warnings(model, datasets):
            tell(progress, note)
        plan_tiles = grid.tiles(plan.grid.width, plan.grid.height, plan.tile)
        profile = output_profile(plan, datasets[0].crs, plan.bands, output_dtype(plan), options.compress)
        # nodata where sources have it, or where the user asked for padding (a Deepness model's
        # own padding gives real values: no nodata, so that no class is hidden)
        if any(any(v is not None for v in sp.nodata) for sp in plan.sources) or options.pad:
            check_nodata(plan.background, profile["dtype"])
            profile["nodata"] = plan.background
            codes = {c.code for c in model.metadata.classes} if model.metadata else set()
            if "class" in {o.name for o in plan.outputs} and plan.background in codes:
                warn(
                    progress,
                    f"BACKGROUND_VALUE {plan.background:g} is also a class code: pixels of that "
                    "class will show as nodata; give a BACKGROUND_VALUE that is not a class (e.g. 255)",
                )
        # Elsewhere (a cluster worker), the run's state is built from absolute paths and this plan.
        work = TileWork(
            build=partial(
                build_state, [replace(s, path=absolute(s.path)) for s in sources], absolute(model_path), options, plan
            ),
            read=read_tile,
            compute=compute_tile,
            empty=tile_is_empty,
        )
        with raster_outputs([(output, profile, band_names(plan))]) as out:
            writer = out.writers[0]
            dtype = writer.dtypes[0]

            def write_tile(tile: Window, values: np.ndarray) -> None:
                writer.write(values.astype(dtype, copy=False), window=tile.to_rasterio())

            state = ServingState(plan, PerThread(open_here, stack, first=datasets), model)
            if plan.overlap:  # grown tiles computed, each output tile written once blended
                blender = Blender(plan_tiles, plan.overlap, plan.grid.window, write_tile)
                skipped = executor.run(work, blender.tiles, blender.add, progress, state)
            else:
                skipped = executor.run(work, plan_tiles, write_tile, progress, state)
            style = None
            classes = model.metadata.class_dicts() if model.metadata else []
            if classes and [o.name for o in plan.outputs] == ["class"]:
                style = write_class_style(output, classes, out.staged)
    return ServeResult(Path(output), plan, len(plan_tiles), skipped, style)
