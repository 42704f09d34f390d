"""Computing tiles into raster outputs: the one path of serving and image classification.

A run hands an executor its tiles and a :class:`TileWork`: how to build the run's state
(open the sources, load the model: once per process), read a tile's input, compute its
result, and tell an all-nodata tile. :class:`LocalThreads` runs it on this machine: reader
threads read ahead, this thread computes, a writer thread writes (``concurrent.futures``,
a bounded number of tiles in flight), so that computing overlaps I/O. ``cluster.DaskExecutor`` runs the same work on a
Dask cluster. No executor knows what the work is, and the work does not know which
executor runs it. :func:`raster_outputs` opens the outputs under temporary names and
renames them together once every tile is written.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from ..grid import Window
from ..outputs import PathLike, StagedOutputs
from ..progress import Progress, check_cancelled
from ..raster import cpu_cores
from ..raster_writer import WrittenRaster


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
      ``raster.read``. Several threads read at
      once (this machine's readers, a worker's threads): what the state holds that is not
      thread-safe, such as GDAL datasets, it opens once per thread (``raster.PerThread``);
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

    def run(
        self,
        work: TileWork,
        tiles: list[Window],
        write: Callable[[Window, Any], None],
        progress: Progress,
        state: Any = None,
    ) -> int:
        """Compute every tile and hand its result to ``write(tile, result)`` (in one thread at a
        time; it writes to :func:`raster_outputs`' writers); return the number of all-nodata tiles.
        ``state``: the run's state, when the caller has built it already."""


POLL_S = 0.2  # how often a wait looks at cancel


def _wait(future: Future, progress: Progress):
    """A future's result, looking at cancel while it is not there."""
    while True:
        check_cancelled(progress, "the run")
        try:
            return future.result(timeout=POLL_S)
        except FutureTimeout:
            continue


# Reader threads of a local run: two keep the model fed on 2 cores; on more cores, GDAL's own
# threads decode each read (see decoding_threads), within the same tiles in flight.
READERS = min(2, cpu_cores())


class LocalThreads:
    """Tiles on this machine: reads run ahead in a pool of ``readers`` threads, the calling
    thread computes, one writer thread writes, in tile order. Besides the tile computed, at
    most ``ahead`` tiles are being read or wait, and ``ahead`` results wait to be written: a
    few tiles are in memory whatever the image size. A failed read or write, or cancel, ends the run: tiles
    not started are dropped, those under way finish first (a thread cannot be killed)."""

    local = True

    def __init__(self, readers: int = 1, ahead: int = 2):
        if readers < 1 or ahead < readers:
            raise ValueError(f"readers {readers} and ahead {ahead}: need 1 <= readers <= ahead")
        self.readers = readers
        self.ahead = ahead

    def run(
        self,
        work: TileWork,
        tiles: list[Window],
        write: Callable[[Window, Any], None],
        progress: Progress,
        state: Any = None,
    ) -> int:
        with ExitStack() as stack:
            if state is None:
                state = work.build(stack)
            reading = stack.enter_context(_pool(self.readers, "otbtf-tiles-read"))
            writing = stack.enter_context(_pool(1, "otbtf-tiles-write"))
            return self._run(work, state, tiles, write, progress, reading, writing)

    def _run(
        self,
        work: TileWork,
        state,
        tiles: list[Window],
        write,
        progress: Progress,
        reading: ThreadPoolExecutor,
        writing: ThreadPoolExecutor,
    ) -> int:
        upcoming = iter(tiles)
        reads: deque[tuple[Window, Future]] = deque()
        writes: deque[Future] = deque()
        done = skipped = 0
        write_failed = threading.Event()

        def write_in_order(tile: Window, result) -> None:
            """``write``, unless an earlier write failed: the writes queued behind it are dropped
            (this thread sees the failure only when it waits for that write)."""
            if write_failed.is_set():
                return
            try:
                write(tile, result)
            except BaseException:
                write_failed.set()
                raise

        def read_ahead():
            while len(reads) < self.ahead and (tile := next(upcoming, None)) is not None:
                reads.append((tile, reading.submit(work.read, state, tile)))

        read_ahead()
        while reads:
            tile, future = reads.popleft()
            read_ahead()  # the next reads run while this tile waits and computes
            tile_input = _wait(future, progress)
            skipped += bool(work.empty(tile_input))
            result = work.compute(state, tile_input, progress)
            del tile_input
            while writes and (len(writes) >= self.ahead or writes[0].done()):
                _wait(writes.popleft(), progress)  # raises a failed write's error
            writes.append(writing.submit(write_in_order, tile, result))
            done += 1
            progress.step(done, len(tiles))
        while writes:
            _wait(writes.popleft(), progress)
        return skipped


def tiles_in_flight(executor: LocalThreads) -> int:
    """Tiles a local run holds at once at most: ``ahead`` read or being read, one computed,
    ``ahead`` results waiting to be written, one being written."""
    return 2 * executor.ahead + 2


def decoding_threads(executor: Executor) -> int:
    """GDAL's decoding threads per read: on this machine, the cores its reader threads leave;
    elsewhere (a cluster worker, whose threads are its parallelism) one."""
    if isinstance(executor, LocalThreads):
        return max(1, cpu_cores() // executor.readers)
    return 1


@contextmanager
def _pool(threads: int, name: str) -> Iterator[ThreadPoolExecutor]:
    """A thread pool that, however the block ends, drops the tasks not started and waits for
    those under way (they hold datasets the caller closes next)."""
    pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix=name)
    try:
        yield pool
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


@dataclass
class OpenRasters:
    """Outputs being written: their writers (:class:`raster_writer.WrittenRaster`), and the
    group they are renamed with (add styles to it before the block ends)."""

    staged: StagedOutputs
    writers: list[WrittenRaster]


@contextmanager
def raster_outputs(outputs: list[tuple[PathLike, dict, list[str]]]) -> Iterator[OpenRasters]:
    """Open ``(path, creation profile, band names)`` GeoTIFFs under temporary names, written by
    the writer process; when the block ends without error they are closed and renamed
    together, otherwise discarded and removed."""
    with StagedOutputs() as staged:
        writers: list[WrittenRaster] = []
        try:
            for path, profile, names in outputs:
                writers.append(WrittenRaster(staged.file(path), profile, names))
            yield OpenRasters(staged, writers)
        except BaseException:
            for writer in writers:
                writer.discard()
            raise
        for writer in writers:
            writer.close()
        staged.commit()
