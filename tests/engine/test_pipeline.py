"""The local executor on its own: toy tile work (no GDAL, no model), so that order, memory
bounds, errors and cancel are checked exactly and fast."""

import threading
import time
from contextlib import ExitStack

import pytest

from common import RGB
from otbtf_plugin.errors import Cancelled
from otbtf_plugin.execution.pipeline import LocalThreads, TileWork
from otbtf_plugin.grid import Window
from otbtf_plugin.progress import NullProgress
from otbtf_plugin.raster import close_with, open_raster

TILES = [Window(col, row, 4, 4) for row in range(0, 40, 4) for col in range(0, 24, 4)]


class Toy:
    """Counts what is alive at once and which thread did what."""

    def __init__(self, fail_read=None, fail_write=None, read_s=0.0):
        self.lock = threading.Lock()
        self.alive = self.most_alive = 0
        self.fail_read, self.fail_write, self.read_s = fail_read, fail_write, read_s
        self.written: list[tuple[Window, int]] = []
        self.compute_threads: set[str] = set()
        self.write_threads: set[str] = set()
        self.reads_started = 0

    def work(self) -> TileWork:
        return TileWork(build=lambda stack: self, read=Toy.read, compute=Toy.compute, empty=Toy.empty)

    @staticmethod
    def read(state, tile):
        with state.lock:
            state.reads_started += 1
            state.alive += 1
            state.most_alive = max(state.most_alive, state.alive)
        time.sleep(state.read_s)
        if tile == state.fail_read:
            raise OSError(f"cannot read {tile}")
        return tile.col_off * 1000 + tile.row_off

    @staticmethod
    def compute(state, item, progress):
        state.compute_threads.add(threading.current_thread().name)
        return item * 2

    @staticmethod
    def empty(item):
        return item == 0

    def write(self, tile, result):
        self.write_threads.add(threading.current_thread().name)
        if tile == self.fail_write:
            raise OSError(f"disk full at {tile}")
        self.written.append((tile, result))
        with self.lock:
            self.alive -= 1


class CancelAt(NullProgress):
    def __init__(self, steps):
        self.steps, self.done = steps, 0

    def step(self, done, total):
        self.done = done

    def cancelled(self):
        return self.done >= self.steps


@pytest.mark.parametrize(("readers", "ahead"), [(1, 1), (1, 2), (2, 2), (3, 5)])
def test_every_tile_is_written_once_in_order_by_one_thread(readers, ahead):
    toy = Toy(read_s=0.002)
    skipped = LocalThreads(readers, ahead).run(toy.work(), TILES, toy.write, NullProgress())
    assert toy.written == [(t, 2 * (t.col_off * 1000 + t.row_off)) for t in TILES]
    assert skipped == 1  # the tile at (0, 0) reads as 0: "empty"
    assert toy.compute_threads == {threading.current_thread().name}
    assert len(toy.write_threads) == 1
    # Tiles read and not yet written: the tile computed, ``ahead`` reads, ``ahead`` writes.
    assert toy.most_alive <= 2 * ahead + 1


def test_a_failed_read_ends_the_run_with_its_error():
    toy = Toy(fail_read=TILES[7])
    with pytest.raises(OSError, match=r"cannot read Window\(col_off=4, row_off=4"):
        LocalThreads().run(toy.work(), TILES, toy.write, NullProgress())
    assert [t for t, _ in toy.written] == TILES[: len(toy.written)] and len(toy.written) <= 7
    assert toy.reads_started <= 7 + 1 + 2  # no read is started long after the failure


def test_a_failed_write_ends_the_run_with_its_error():
    """The writes queued behind a failed one are dropped (it failed on Python 3.14 when the
    next write was already queued: the run sees a failure only when it waits for it)."""
    toy = Toy(fail_write=TILES[3])
    with pytest.raises(OSError, match="disk full"):
        LocalThreads().run(toy.work(), TILES, toy.write, NullProgress())
    assert [t for t, _ in toy.written] == TILES[:3]
    assert toy.reads_started <= 3 + 1 + 2 * 2 + 1


def test_cancel_stops_reading_and_writing():
    toy = Toy()
    with pytest.raises(Cancelled):
        LocalThreads().run(toy.work(), TILES, toy.write, CancelAt(5))
    assert len(toy.written) <= 5  # writes not started when cancel came are dropped
    assert toy.reads_started <= 5 + 1 + 2


def test_no_thread_outlives_the_run():
    before = {t.name for t in threading.enumerate()}
    LocalThreads(2, 3).run(Toy().work(), TILES, Toy().write, NullProgress())
    toy = Toy(fail_write=TILES[2])
    with pytest.raises(OSError):
        LocalThreads(2, 3).run(toy.work(), TILES, toy.write, NullProgress())
    toy = Toy()
    with pytest.raises(Cancelled):
        LocalThreads(2, 3).run(toy.work(), TILES, toy.write, CancelAt(3))
    assert {t.name for t in threading.enumerate()} == before


def test_state_built_by_the_caller_is_used_as_is():
    toy = Toy()
    work = TileWork(build=lambda stack: pytest.fail("built again"), read=Toy.read, compute=Toy.compute, empty=Toy.empty)
    LocalThreads().run(work, TILES[:3], toy.write, NullProgress(), state=toy)
    assert len(toy.written) == 3


def test_sizes_that_cannot_work_are_refused():
    with pytest.raises(ValueError, match="readers 2 and ahead 1"):
        LocalThreads(2, 1)


def test_each_thread_gets_its_own_object_closed_with_the_stack():
    from otbtf_plugin.raster import PerThread

    made, closed = [], []

    def make(stack):
        value = object()
        made.append(value)
        stack.callback(closed.append, value)
        return value

    mine = object()
    with ExitStack() as stack:
        objects = PerThread(make, stack, first=mine)
        seen = {}

        def look(name):
            seen[name] = (objects.get(), objects.get())

        threads = [threading.Thread(target=look, args=(n,)) for n in range(3)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert objects.get() is mine  # the building thread's own
        assert all(a is b for a, b in seen.values())  # one per thread, kept
        assert len({id(a) for a, _ in seen.values()}) == 3 and len(made) == 3
        assert not closed
    assert sorted(map(id, closed)) == sorted(map(id, made))  # closed with the stack; "first" is the caller's


def test_a_dataset_opened_by_a_reader_thread_closes_from_the_run_thread():
    """What rasterio 1.5 refused with stack.enter_context (No GDAL environment exists): the
    dataset a reader thread opened, closed by the thread that closes the run's stack."""
    with ExitStack() as stack:
        opened = []
        reader = threading.Thread(target=lambda: opened.append(close_with(stack, open_raster(RGB))))
        reader.start()
        reader.join()
        assert opened[0].read(1, window=((0, 4), (0, 4))).shape == (4, 4)
    assert opened[0].closed
