"""Computing one tile: its input read from every source (patches gathered, normalised) and
the model's outputs for it; the run's state and the functions an executor runs."""

from __future__ import annotations

import math
from contextlib import ExitStack
from dataclasses import dataclass
from functools import partial

import numpy as np

from ..grid import Window, cut_patches, dihedral, input_window, intersection, undo_dihedral
from ..models.loading import ModelError, ServedModel, load_model
from ..models.served import classes_of_scores
from ..progress import Progress, check_cancelled
from ..raster import PerThread, close_with, invalid_pixels, open_raster, read
from .options import ServeOptions, ServeSource
from .planning import Plan, SourcePlan


def _read_window(dataset, window: Window, fill: float, bands: int) -> np.ndarray:
    """``(bands, h, w)`` of the first ``bands`` bands; parts outside the raster are ``fill``."""
    indexes = list(range(1, bands + 1)) if bands < dataset.count else None
    inside = intersection(window, Window(0, 0, dataset.width, dataset.height))
    if inside == window:
        return read(dataset, indexes, window=window.to_rasterio())
    out = np.full((bands, window.height, window.width), fill, dtype=dataset.dtypes[0])
    if not inside.is_empty():
        rows, cols = inside.relative_to(window).slices()
        out[:, rows, cols] = read(dataset, indexes, window=inside.to_rasterio())
    return out


@dataclass
class TileInput:
    tile: Window  # in output pixels
    arrays: list | None  # per source (bands, h, w); None when the tile is all nodata
    windows: list  # per source Window (source pixels)
    background: np.ndarray | None  # (h, w) bool: output pixels to set to background
    batches: list | None = None  # pixels mode: model feeds, batch by batch (built by the reader thread)


def tile_input(plan: Plan, datasets, tile: Window) -> TileInput:
    cols = np.arange(tile.col_off, tile.col_end) + plan.first[0]
    rows = np.arange(tile.row_off, tile.row_end) + plan.first[1]
    arrays, windows = [], []
    background = np.zeros((tile.height, tile.width), dtype=bool)
    all_nodata = True
    for sp, ds in zip(plan.sources, datasets, strict=True):
        window = input_window(sp.x, sp.y, tile, plan.first, plan.mode, plan.geometry.efield)
        has_nodata = any(v is not None for v in sp.nodata)
        fill = next((v for v in sp.nodata if v is not None), 0)
        array = _read_window(ds, window, fill, sp.bands)
        windows.append(window)
        arrays.append(array)
        if has_nodata:
            bad = invalid_pixels(array, sp.nodata)
            if not bad.all():
                all_nodata = False
            # the centre input pixel of each output pixel
            cc = sp.x.centre_pixels(cols) - window.col_off
            rr = sp.y.centre_pixels(rows) - window.row_off
            inside_c = (cc >= 0) & (cc < window.width)
            inside_r = (rr >= 0) & (rr < window.height)
            centre_bad = np.ones((len(rr), len(cc)), dtype=bool)
            sub = bad[np.clip(rr, 0, window.height - 1)][:, np.clip(cc, 0, window.width - 1)]
            centre_bad[np.ix_(inside_r, inside_c)] = sub[np.ix_(inside_r, inside_c)]
            background |= centre_bad
        else:
            all_nodata = False
    if all_nodata:
        return TileInput(tile, None, windows, None)
    item = TileInput(tile, arrays, windows, background if background.any() else None)
    if plan.mode == "pixels":
        item.batches = _pixel_batches(plan, item, cols, rows)
    return item


def _pixel_batches(plan: Plan, item: TileInput, cols, rows) -> list[dict]:
    """The model feeds of a tile in pixels mode, batch by batch (on the reader thread,
    so that gathering patches overlaps with inference)."""
    views, starts = [], []
    for sp, window, array in zip(plan.sources, item.windows, item.arrays or [], strict=True):
        c0 = sp.x.patch_starts(cols) - window.col_off
        r0 = sp.y.patch_starts(rows) - window.row_off
        rr, cc = np.meshgrid(r0, c0, indexing="ij")
        starts.append((rr.ravel(), cc.ravel()))
        # The window once as contiguous (rows, cols, bands) in the model's dtype; every
        # patch is then a view (start row, start col) -> (rfield, rfield, bands), and a
        # batch is one gathering copy.
        hwc = np.ascontiguousarray(_prepare(sp, array.transpose(1, 2, 0), sp.dtype))
        # numpy's stubs say axis is one int; it takes a tuple of them
        views.append(
            np.lib.stride_tricks.sliding_window_view(hwc, (sp.rfield, sp.rfield), axis=(0, 1)).transpose(0, 1, 3, 4, 2)  # type: ignore[call-overload]
        )
    n = len(cols) * len(rows)
    batches = []
    for first in range(0, n, plan.batch):
        feeds = dict(plan.feeds)
        for sp, view, (rr, cc) in zip(plan.sources, views, starts, strict=True):
            feeds[sp.name] = view[rr[first : first + plan.batch], cc[first : first + plan.batch]]
        batches.append(feeds)
    return batches


def _prepare(sp: SourcePlan, array: np.ndarray, dtype) -> np.ndarray:
    """``(..., bands)`` input in the model's dtype, normalised when the model says so."""
    data = array.astype(np.float32) if sp.normalisation is not None else array
    if sp.normalisation is not None:
        mean, std = sp.normalisation
        data = (data - mean) / std
    return data.astype(dtype, copy=False)


def _predict(plan: Plan, model: ServedModel, feeds: dict) -> dict:
    """The model's outputs for ``feeds``. With test-time augmentation, the mean over the 8
    flips and 90-degree rotations T of T^-1(model(T(input))): every image input turned in
    its rows and columns, every spatial output turned back (a class output: the class of
    the mean scores)."""
    if not plan.tta:
        return model.run(feeds)
    derived = plan.class_from_scores
    wanted = [o.name for o in plan.outputs if derived is None or o.name != derived.output]
    if derived is not None and derived.scores not in wanted:
        wanted.append(derived.scores)
    images = [sp.name for sp in plan.sources]
    totals: dict[str, np.ndarray] = {}
    for transform in range(8):
        result = model.run({**feeds, **{name: dihedral(feeds[name], transform, (1, 2)) for name in images}})
        for name in wanted:
            value = np.asarray(result[name], dtype=np.float64)
            if value.ndim >= 3:  # [n, y, x(, c)]: back to the input's orientation
                value = undo_dihedral(value, transform, (1, 2))
            totals[name] = totals[name] + value if name in totals else value.copy()
    means = {name: (total / 8).astype(np.float32) for name, total in totals.items()}
    if derived is not None:
        scores = means[derived.scores]
        means[derived.output] = classes_of_scores(
            scores[..., None] if scores.ndim == 3 else scores, derived.codes, derived.threshold
        )
    return means


def infer_tile(plan: Plan, model: ServedModel, item: TileInput, progress: Progress) -> np.ndarray:  # noqa: C901
    """``(bands, h, w)`` float32 model outputs of one tile; background where the input is nodata."""
    tile = item.tile
    out = np.empty((plan.bands, tile.height, tile.width), dtype=np.float32)
    if item.arrays is None:
        out[:] = plan.background
        return out
    dtypes = {sp.name: model.input(sp.name).dtype for sp in plan.sources}
    if plan.mode == "regions":
        feeds = dict(plan.feeds)
        for sp, array in zip(plan.sources, item.arrays, strict=True):
            feeds[sp.name] = _prepare(sp, array.transpose(1, 2, 0)[None], dtypes[sp.name])
        result = _predict(plan, model, feeds)
        band = 0
        for o in plan.outputs:
            value = np.asarray(result[o.name])[0]
            if value.ndim == 2:
                value = value[..., None]
            block = value[o.crop : o.crop + tile.height, o.crop : o.crop + tile.width]
            if block.shape[:2] != (tile.height, tile.width):
                raise ModelError(
                    f"output {o.name} gave {value.shape[0]} x {value.shape[1]} px for a "
                    f"{tile.width} x {tile.height} px tile; expected at least "
                    f"{tile.height + o.crop} px"
                )
            out[band : band + o.channels] = block.transpose(2, 0, 1)
            band += o.channels
    elif plan.mode == "pixels":
        n = tile.width * tile.height
        flat = np.empty((plan.bands, n), dtype=np.float32)
        for k, feeds in enumerate(item.batches or []):
            check_cancelled(progress, "serving")
            first, last = k * plan.batch, min((k + 1) * plan.batch, n)
            result = _predict(plan, model, feeds)
            band = 0
            for o in plan.outputs:
                value = np.asarray(result[o.name]).reshape(last - first, -1)
                flat[band : band + o.channels, first:last] = value.T
                band += o.channels
        out[:] = flat.reshape(plan.bands, tile.height, tile.width)
    else:  # blocks
        e = plan.geometry.efield
        nb_r, nb_c = math.ceil(tile.height / e), math.ceil(tile.width / e)
        full = np.empty((plan.bands, nb_r * e, nb_c * e), dtype=np.float32)
        index = [(br, bc) for br in range(nb_r) for bc in range(nb_c)]
        for first in range(0, len(index), plan.batch):
            check_cancelled(progress, "serving")
            chunk = index[first : first + plan.batch]
            feeds = dict(plan.feeds)
            block_rows, block_cols = np.array(chunk).T
            for sp, array in zip(plan.sources, item.arrays, strict=True):
                patches = cut_patches(array, block_cols * sp.efield, block_rows * sp.efield, sp.rfield, sp.rfield)
                feeds[sp.name] = _prepare(sp, patches.transpose(0, 2, 3, 1), dtypes[sp.name])
            result = _predict(plan, model, feeds)
            band = 0
            for o in plan.outputs:
                value = np.asarray(result[o.name]).reshape(len(chunk), e, e, -1)
                for k, (br, bc) in enumerate(chunk):
                    full[band : band + o.channels, br * e : (br + 1) * e, bc * e : (bc + 1) * e] = value[k].transpose(
                        2, 0, 1
                    )
                band += o.channels
        out[:] = full[:, : tile.height, : tile.width]
    if item.background is not None:
        out[:, item.background] = plan.background
    return out


@dataclass
class ServingState:
    """What computing a tile needs: the plan, the sources open (once per reading thread), the
    model loaded."""

    plan: Plan
    datasets: PerThread
    model: ServedModel


def open_sources(paths: list, threads: int, stack: ExitStack) -> list:
    """The sources open for reading, closed with ``stack``; ``threads``: GDAL's decoding threads
    per read (see :func:`raster.open_raster`)."""
    return [close_with(stack, open_raster(path, threads)) for path in paths]


def build_state(
    sources: list[ServeSource], model_path: str, options: ServeOptions, plan: Plan, stack: ExitStack
) -> ServingState:
    """A run's state where the tiles are computed (a cluster worker): the sources opened and
    the model loaded there, the client's plan used as it is (not planned again: no second
    probe of the model, the same sizes whatever the worker's memory)."""
    model = load_model(model_path, allow_lambda=options.allow_lambda, layout=options.layout, device=options.device)
    # a worker's threads are its parallelism: one decoding thread per read
    return ServingState(plan, PerThread(partial(open_sources, [s.path for s in sources], 1), stack), model)


def read_tile(state, tile: Window) -> TileInput:
    """A tile's input, read with this thread's own datasets of the sources."""
    return tile_input(state.plan, state.datasets.get(), tile)


def compute_tile(state: ServingState, item: TileInput, progress: Progress) -> np.ndarray:
    return infer_tile(state.plan, state.model, item, progress)


def tile_is_empty(item: TileInput) -> bool:
    return item.arrays is None
