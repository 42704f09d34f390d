"""Computing tiles into raster outputs: the one path of serving and image classification.

A run hands an executor its tiles and a :class:`TileWork`: how to build the run's state
(open the sources, load the model: once per process), read a tile's input, compute its
result, and tell an all-nodata tile. :class:`LocalThreads` runs it on this machine: a
reader thread reads ahead, this thread computes, a writer thread writes, through bounded
queues, so that computing overlaps I/O. ``cluster.DaskExecutor`` runs the same work on a
Dask cluster. No executor knows what the work is, and the work does not know which
executor runs it. :func:`raster_outputs` opens the outputs under temporary names and
renames them together once every tile is written.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import rasterio

from ..errors import InputError
from ..grid import Window
from ..outputs import PathLike, StagedOutputs
from ..progress import Progress, check_cancelled
from ..raster import close_written


def absolute(path) -> str:
    """A path as a work's ``build`` takes it: absolute, since cluster workers do not share
    this process' working directory."""
    return str(Path(path).resolve())


@dataclass(frozen=True)
class TileWork:
    """A run's tiles as functions that run anywhere. Each is a module-level function (or a
    ``functools.partial`` of one) so that a cluster can ship it to its workers:

    - ``build(stack)``: the run's state (sources opened into ``stack``, model loaded);
    - ``read(state, tile)``: a tile's input: every pixel read of the tile happens here, with
      ``raster.read`` (which takes the process' GDAL read access);
    - ``compute(state, item, progress)``: its result;
    - ``empty(item)``: True when the tile was all nodata (counted, not an error).
    """

    build: Callable[[ExitStack], Any]
    read: Callable[[Any, Window], Any]
    compute: Callable[[Any, Any, Progress], Any]
    empty: Callable[[Any], bool]


class Executor(Protocol):
    #: True when tiles are computed in this process (the caller may prepare its state for it).
    local: bool

    def run(self, work: TileWork, tiles: list[Window], write: Callable[[Window, Any], None],
            progress: Progress, state: Any = None) -> int:
        """Compute every tile and hand its result to ``write(tile, result)`` (in one thread at a
        time; it writes with ``raster.write``); return the number of all-nodata tiles.
        ``state``: the run's state, when the caller has built it already."""


_DONE = object()


def _put(target: queue.Queue, item, consumer: threading.Thread) -> bool:
    """Put unless the consumer thread has died (then the queue may never drain)."""
    while consumer.is_alive():
        try:
            target.put(item, timeout=0.2)
            return True
        except queue.Full:
            continue
    return False


class LocalThreads:
    """Reader thread -> compute (the calling thread) -> writer thread, through queues of two
    tiles: at most a few tiles are in memory whatever the image size."""

    local = True

    def run(self, work: TileWork, tiles: list[Window], write: Callable[[Window, Any], None],
            progress: Progress, state: Any = None) -> int:
        with ExitStack() as stack:
            if state is None:
                state = work.build(stack)
            return self._run(work, state, tiles, write, progress)

    @staticmethod
    def _run(work: TileWork, state, tiles, write, progress: Progress) -> int:  # noqa: C901
        inputs: queue.Queue = queue.Queue(maxsize=2)
        results: queue.Queue = queue.Queue(maxsize=2)
        stop = threading.Event()
        errors: list[BaseException] = []

        def read_all():
            try:
                for tile in tiles:
                    if stop.is_set():
                        break
                    item = work.read(state, tile)
                    while not stop.is_set():
                        try:
                            inputs.put((tile, item), timeout=0.2)
                            break
                        except queue.Full:
                            continue
            except BaseException as err:  # handed to the calling thread
                errors.append(err)
            finally:
                inputs.put(_DONE)

        def write_all():
            try:
                while True:
                    item = results.get()
                    if item is _DONE:
                        break
                    write(*item)
            except BaseException as err:  # handed to the calling thread
                errors.append(err)
                stop.set()

        reader = threading.Thread(target=read_all, name="otbtf-tiles-read", daemon=True)
        writer = threading.Thread(target=write_all, name="otbtf-tiles-write", daemon=True)
        reader.start()
        writer.start()
        done = skipped = 0
        try:
            while True:
                if progress.cancelled():
                    stop.set()
                    check_cancelled(progress, "the run")
                try:
                    item = inputs.get(timeout=0.2)
                except queue.Empty:
                    if errors:
                        break
                    continue
                if item is _DONE or errors:
                    break
                tile, tile_input = item
                skipped += bool(work.empty(tile_input))
                if not _put(results, (tile, work.compute(state, tile_input, progress)), writer):
                    break
                done += 1
                progress.step(done, len(tiles))
        finally:
            stop.set()
            _put(results, _DONE, writer)
            writer.join()
            while reader.is_alive():
                with suppress(queue.Empty):
                    inputs.get(timeout=0.1)
            reader.join()
        if errors:
            raise errors[0]
        if done != len(tiles):
            raise InputError(f"the run stopped after {done} of {len(tiles)} tiles")
        return skipped


@dataclass
class OpenRasters:
    """Outputs being written: their writers, and the group they are renamed with (add
    styles to it before the block ends)."""

    staged: StagedOutputs
    writers: list


@contextmanager
def raster_outputs(outputs: list[tuple[PathLike, dict, list[str]]]) -> Iterator[OpenRasters]:
    """Open ``(path, creation profile, band names)`` GeoTIFFs under temporary names; when the
    block ends without error they are closed and renamed together, otherwise removed."""
    with StagedOutputs() as staged, ExitStack() as files:
        writers = []
        for path, profile, names in outputs:
            writer = rasterio.open(staged.file(path), "w", **profile)
            files.callback(close_written, writer)
            for band, name in enumerate(names, 1):
                writer.set_band_description(band, name)
            writers.append(writer)
        yield OpenRasters(staged, writers)
        for writer in writers:
            close_written(writer)
        staged.commit()
