"""GDAL's block cache is one per process: a thread reading one dataset may write out the
dirty blocks of another dataset that a second thread is writing, and that block is lost
(GDAL issue 2011). Without any lock, the stress below loses pixels in about one trial of
seven on GDAL 3.6. Reads share the access, writes wait for them; every raster read and
write of the engine goes through raster.read / raster.write / close_written."""

import threading
import time

import numpy as np
import pytest
import rasterio
from rasterio.windows import Window

from otbtf_plugin.raster import GdalAccess, close_written, read, write


@pytest.mark.slow
def test_reads_run_together_and_a_write_runs_alone():
    access = GdalAccess()
    events: list[str] = []
    first_in, release_first = threading.Event(), threading.Event()

    def reader(name, entered, release):
        with access.reading():
            events.append(f"{name} in")
            entered.set()
            release.wait(5)
            events.append(f"{name} out")

    def writer():
        with access.writing():
            events.append("write")

    a = threading.Thread(target=reader, args=("a", first_in, release_first))
    a.start()
    first_in.wait(5)
    second_in = threading.Event()
    b = threading.Thread(target=reader, args=("b", second_in, threading.Event()))
    b.start()
    assert second_in.wait(5), "a second read waited for the first: reads must share the access"
    w = threading.Thread(target=writer)
    w.start()
    time.sleep(0.2)
    assert "write" not in events  # the write waits for both reads
    late_in = threading.Event()
    late = threading.Thread(target=reader, args=("late", late_in, threading.Event()))
    late.start()
    time.sleep(0.2)
    assert not late_in.is_set()  # a waiting write goes before new reads
    release_first.set()
    for thread in (a, b, w, late):
        thread.join(10)
    assert events.index("write") > events.index("a out") and events.index("write") > events.index("b out")
    assert events.index("late in") > events.index("write")


@pytest.mark.slow
def test_reads_of_one_dataset_while_another_is_written_lose_no_pixel(tmp_path):
    rng = np.random.default_rng(0)
    source = tmp_path / "source.tif"
    blocks = {"tiled": True, "blockxsize": 256, "blockysize": 256}
    with rasterio.open(source, "w", driver="GTiff", width=2048, height=2048, count=3, dtype="uint16", **blocks) as dst:
        dst.write(rng.integers(0, 60000, (3, 2048, 2048), dtype=np.uint16))
    with rasterio.Env(GDAL_CACHEMAX=2):  # a cache of 2 MB: blocks are evicted all the time
        for trial in range(20):
            stop = threading.Event()

            def reads(offset, stop=stop):
                with rasterio.open(source) as src:
                    k = offset
                    while not stop.is_set():
                        read(src, window=Window((k * 97) % 1800, (k * 193) % 1800, 240, 240))
                        k += 1

            readers = [threading.Thread(target=reads, args=(k * 1000,)) for k in range(2)]
            for thread in readers:
                thread.start()
            expected = rng.integers(0, 60000, (3, 1024, 1024), dtype=np.uint16)
            out = tmp_path / f"out{trial}.tif"
            written = rasterio.open(
                out, "w", driver="GTiff", width=1024, height=1024, count=3, dtype="uint16", compress="deflate", **blocks
            )
            try:
                for row in range(0, 1024, 100):
                    for col in range(0, 1024, 100):
                        h, w = min(100, 1024 - row), min(100, 1024 - col)
                        write(written, expected[:, row : row + h, col : col + w], window=Window(col, row, w, h))
            finally:
                close_written(written)
                stop.set()
                for thread in readers:
                    thread.join()
            with rasterio.open(out) as result:
                assert np.array_equal(result.read(), expected), f"trial {trial}: pixels lost"


@pytest.mark.slow
def test_two_serving_runs_at_once_write_what_each_writes_alone(tmp_path):
    """Two runs in one process (two QGIS tasks): their reads overlap, their writes take turns,
    and each output is the one it writes alone."""
    import pytest

    pytest.importorskip("keras")
    from models import fcn, patch_classifier, saved

    from common import RGB
    from otbtf_plugin.serving import ServeOptions, ServeSource, serve

    runs = {
        "fcn": (saved(fcn(), tmp_path / "fcn.keras"), ServeOptions(fully_conv=True, tile_px=64)),
        "patch": (saved(patch_classifier(16), tmp_path / "patch.keras"), ServeOptions(tile_px=48)),
    }
    for name, (model, options) in runs.items():
        serve([ServeSource(RGB)], model, tmp_path / f"{name}_alone.tif", options)
    errors: list[BaseException] = []

    def run(name):
        model, options = runs[name]
        try:
            serve([ServeSource(RGB)], model, tmp_path / f"{name}_together.tif", options)
        except BaseException as err:
            errors.append(err)

    with rasterio.Env(GDAL_CACHEMAX=2):
        threads = [threading.Thread(target=run, args=(name,)) for name in runs]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert not errors, errors
    for name in runs:
        with (
            rasterio.open(tmp_path / f"{name}_alone.tif") as alone,
            rasterio.open(tmp_path / f"{name}_together.tif") as together,
        ):
            assert np.array_equal(alone.read(), together.read()), name
