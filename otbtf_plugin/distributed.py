"""Serving on a Dask cluster (``ServeOptions.scheduler``, e.g. ``tcp://host:8786``).

The client plans the run exactly as on one machine, opens the output and submits
one task per tile. Each worker process loads the model and opens the sources once
(kept per run in that process), reads its tiles from the shared file system and
returns the computed values; the client writes them as they arrive. A tile's
values come from the same code as local serving (``tile_input`` then
``infer_tile``), and results do not depend on tiling, so the output is
identical, bit for bit, to the single-machine run.

A worker lost mid-run (its process killed) loses nothing: the scheduler gives its
tiles to the other workers. Cancel cancels the tasks still queued or running.
At most a few tiles per worker are in flight, so the client's memory stays bounded
whatever the image size.

Workers must import this engine under the same name as the client: the folder
that holds it (the repository, or the QGIS plugins folder for ``otbtf``) goes on
the workers' PYTHONPATH, and every worker reads the sources and the model at the
same paths as the client.
"""

from __future__ import annotations

import uuid
from contextlib import ExitStack

import numpy as np

from .errors import Cancelled, InputError
from .grid import Window
from .model import load_model
from .progress import NullProgress, Progress
from .raster import open_raster

IN_FLIGHT_PER_WORKER = 4
CONNECT_TIMEOUT = 10.0  # seconds
_RUNS: dict[str, tuple] = {}  # per worker process: run id -> (model, datasets, plan, stack)
_KEEP_RUNS = 2


def _run_state(run: str, sources, model_path: str, options):
    from .serving import plan_serving

    state = _RUNS.get(run)
    if state is None:
        while len(_RUNS) >= _KEEP_RUNS:  # an older run of this worker: release it
            _RUNS.pop(next(iter(_RUNS)))[3].close()
        stack = ExitStack()
        model = load_model(model_path, allow_lambda=options.allow_lambda)
        datasets = [stack.enter_context(open_raster(s.path)) for s in sources]
        state = _RUNS[run] = (model, datasets, plan_serving(sources, model, options, datasets), stack)
    return state


def compute_tile(run: str, sources, model_path: str, options, tile: tuple[int, int, int, int]):
    """On a worker: ``(tile, values (bands, h, w) float32, all nodata)`` of one output tile."""
    from .serving import infer_tile, tile_input

    model, datasets, plan, _ = _run_state(run, sources, model_path, options)
    item = tile_input(plan, datasets, Window(*tile))
    return tile, infer_tile(plan, model, item, NullProgress()), item.arrays is None


def connect(address: str, timeout: float | None = None):
    """A ``distributed.Client`` for ``address``, or an error that says what to check."""
    try:
        from distributed import Client
    except ImportError as err:
        raise InputError(f"Dask distributed is not installed ({err}): use Plugins > otbtf > Install "
                         "dependencies, or `make setup`") from err
    try:
        return Client(address, timeout=timeout or CONNECT_TIMEOUT, set_as_default=False)
    except (OSError, TimeoutError) as err:
        raise InputError(f"cannot reach the Dask scheduler at {address!r} ({err}); start one with "
                         "`dask scheduler` and workers with `dask worker ADDRESS`, or leave SCHEDULER "
                         "empty to serve on this machine") from err


def run_on_cluster(address: str, sources, model_path, options, plan, plan_tiles, write,
                   progress: Progress | None = None) -> int:
    """Compute ``plan_tiles`` on the cluster, calling ``write(tile, values)`` on this
    thread as results arrive; returns the number of all-nodata tiles."""
    from dataclasses import replace

    from distributed import as_completed

    progress = progress or NullProgress()
    # Workers plan with the client's tile and batch sizes: the same plan, whatever their memory.
    worker_options = replace(options, scheduler="", tile_px=plan.tile, batch_size=plan.batch)
    run = uuid.uuid4().hex
    client = connect(address)
    futures = set()
    try:
        workers = max(1, len(client.scheduler_info().get("workers", {})))
        if not client.scheduler_info().get("workers"):
            raise InputError(f"the Dask scheduler at {address!r} has no worker: start some with "
                             f"`dask worker {address}`")
        queue = iter(plan_tiles)

        def submit_next():
            tile = next(queue, None)
            if tile is None:
                return None
            future = client.submit(compute_tile, run, sources, str(model_path), worker_options,
                                   (tile.col_off, tile.row_off, tile.width, tile.height), pure=False)
            futures.add(future)
            return future

        first = [f for f in (submit_next() for _ in range(IN_FLIGHT_PER_WORKER * workers)) if f is not None]
        results = as_completed(first, loop=client.loop)
        skipped = 0
        for done, future in enumerate(results, 1):
            futures.discard(future)
            if progress.cancelled():
                raise Cancelled("serving cancelled: the cluster's tasks were cancelled")
            if future.status == "error":
                error = future.exception()
                raise InputError(f"a worker failed on a tile: {type(error).__name__}: {error}") from error
            tile, values, empty = future.result()
            write(Window(*tile), np.asarray(values))
            skipped += bool(empty)
            progress.step(done, len(plan_tiles))
            following = submit_next()
            if following is not None:
                results.add(following)
        return skipped
    finally:
        if futures:
            client.cancel(list(futures))
        client.close()
