"""GDAL's block cache is one per process: a thread reading one dataset may write out the
dirty blocks of another dataset that a second thread is writing, and that block is lost
(GDAL issue 2011). With the writes in this process (``dataset.write`` where
``WrittenRaster.write`` is called below), the stress test loses pixels within its 20 trials
(5 runs of 5 on GDAL 3.6, at the first to ninth trial). The engine writes every raster in
the writer process (``raster_writer``): this process only reads, and reads never wait."""

import os
import subprocess
import sys
import threading

import numpy as np
import pytest
import rasterio
from rasterio.windows import Window

from otbtf_plugin import raster_writer
from otbtf_plugin.raster import read
from otbtf_plugin.raster_writer import WriterError, WrittenRaster


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
            profile = {"driver": "GTiff", "width": 1024, "height": 1024, "count": 3, "dtype": "uint16"}
            written = WrittenRaster(out, profile | {"compress": "deflate", **blocks})
            try:
                for row in range(0, 1024, 100):
                    for col in range(0, 1024, 100):
                        h, w = min(100, 1024 - row), min(100, 1024 - col)
                        written.write(expected[:, row : row + h, col : col + w], window=Window(col, row, w, h))
            finally:
                written.close()
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


@pytest.fixture(params=["shared memory", "pipe"])
def handover(request, monkeypatch, tmp_path):
    """A new writer process that takes arrays through shared memory, or through its pipe (as
    where there is no /dev/shm)."""
    if request.param == "pipe":
        monkeypatch.setattr(raster_writer, "SHARED_FOLDER", tmp_path / "no shared memory here")
    made: list[str] = []  # the shared files this writer makes (other processes make their own)
    mkstemp = raster_writer.tempfile.mkstemp

    def recorded(*args, **kwargs):
        fd, path = mkstemp(*args, **kwargs)
        made.append(path)
        return fd, path

    monkeypatch.setattr(raster_writer.tempfile, "mkstemp", recorded)
    raster_writer._stop_writer()
    monkeypatch.setattr(raster_writer, "_writer", None)
    yield request.param, made
    raster_writer._stop_writer()


def test_written_raster_is_the_array_with_its_profile_bands_and_tags(tmp_path, handover):
    handover, made = handover
    """What the writer process writes equals what a direct rasterio write gives: pixels (whole
    bands, one band, windows as Window objects and as row and column ranges), georeferencing,
    descriptions, tags; the shared memory grows for a larger array and leaves no file."""
    rng = np.random.default_rng(1)
    values = rng.normal(size=(2, 70, 90)).astype("float32")
    profile = {
        "driver": "GTiff",
        "width": 90,
        "height": 70,
        "count": 2,
        "dtype": "float32",
        "crs": "EPSG:32631",
        "transform": rasterio.Affine(10, 0, 500000, 0, -10, 4000000),
        "nodata": -1.0,
    }
    out = WrittenRaster(tmp_path / "out.tif", profile, ["a", "b"], {"KEY": "value"})
    assert (out.count, out.dtypes) == (2, ("float32", "float32"))
    out.write(values[:, :40], window=Window(0, 0, 90, 40))
    out.write(values[0, 40:], 1, window=Window(0, 40, 90, 30))
    out.write(values[1:, 40:], [2], window=((40, 70), (0, 90)))
    big = rng.normal(size=(2, 1200, 900)).astype("float32")  # 8.6 MB: more than the first MiB
    wide = WrittenRaster(tmp_path / "big.tif", profile | {"width": 900, "height": 1200})
    wide.write(big)
    wide.close()
    out.write(values[:, 10:20], window=Window(0, 10, 90, 10))  # the smaller array after the larger
    shared = raster_writer._the_writer().shared
    assert (shared is not None and len(shared) == 9 << 20) == (handover == "shared memory")
    out.close()
    assert raster_writer._the_writer().shared is None  # no raster open: the shared memory given back
    if handover == "shared memory":  # two shared files were made (1 MiB, then 9), and are gone
        assert len(made) == 2 and not [path for path in made if os.path.exists(path)]
    with rasterio.open(tmp_path / "big.tif") as ds:
        assert np.array_equal(ds.read(), big)
    out.close()  # a second close does nothing
    with rasterio.open(tmp_path / "out.tif") as ds:
        assert np.array_equal(ds.read(), values)
        assert (ds.crs.to_epsg(), ds.transform, ds.nodata) == (32631, profile["transform"], -1.0)
        assert ds.descriptions == ("a", "b") and ds.tags()["KEY"] == "value"
    with pytest.raises(ValueError, match="closed"):
        out.write(values)


def test_a_failed_write_says_why_and_the_writer_goes_on(tmp_path):
    """A GDAL failure comes back as an OSError (as rasterio's own), with GDAL's words; a bad
    request as another error; the writer process serves the next file."""
    profile = {"driver": "GTiff", "width": 8, "height": 8, "count": 1, "dtype": "uint8"}
    with pytest.raises(WriterError, match=r"No such file or directory|does not exist"):
        WrittenRaster(tmp_path / "missing" / "out.tif", profile)
    out = WrittenRaster(tmp_path / "out.tif", profile)
    with pytest.raises(RuntimeError, match=r"the raster writer process: .*"):
        out.write(np.zeros((2, 8, 8), "uint8"), 5)  # no band 5
    out.write(np.full((1, 8, 8), 7, "uint8"))
    out.close()
    with rasterio.open(tmp_path / "out.tif") as ds:
        assert (ds.read() == 7).all()


def test_a_writer_that_died_is_said_and_the_next_file_gets_a_new_one(tmp_path):
    profile = {"driver": "GTiff", "width": 8, "height": 8, "count": 1, "dtype": "uint8"}
    out = WrittenRaster(tmp_path / "a.tif", profile)
    writer = raster_writer._the_writer()
    assert writer.process.pid != os.getpid()  # the pixels are written in another process
    writer.process.kill()
    writer.process.wait()
    with pytest.raises(WriterError, match=r"the raster writer process stopped \(it ended with exit code -9\)"):
        out.write(np.zeros((1, 8, 8), "uint8"))
    out.discard()  # on an error path: never raises
    again = WrittenRaster(tmp_path / "b.tif", profile)
    again.write(np.ones((1, 8, 8), "uint8"))
    again.close()
    with rasterio.open(tmp_path / "b.tif") as ds:
        assert (ds.read() == 1).all()


def test_the_writer_ends_with_its_owner(tmp_path):
    """However the owner ends (here SIGKILL, which runs no clean-up), its writer reads the end of
    its requests and exits: no process is left behind."""
    code = (
        "import os, sys, numpy as np\n"
        f"sys.path.insert(0, {str(raster_writer.PLUGIN_ROOT)!r})\n"
        "from otbtf_plugin import raster_writer\n"
        "profile = dict(driver='GTiff', width=8, height=8, count=1, dtype='uint8')\n"
        "out = raster_writer.WrittenRaster(sys.argv[1], profile)\n"
        "print(raster_writer._the_writer().process.pid, flush=True)\n"
        "os.kill(os.getpid(), 9)\n"
    )
    owner = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "x.tif")],
        capture_output=True,
        text=True,
        timeout=60,
        env=os.environ,
    )
    assert owner.returncode == -9, owner.stderr
    child = int(owner.stdout.split()[0])
    for _ in range(100):
        if not os.path.exists(f"/proc/{child}") or "zombie" in _state(child):
            break
        threading.Event().wait(0.05)
    else:
        raise AssertionError(f"the writer process {child} outlived its owner")


def _state(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/status") as status:
            return status.read()
    except FileNotFoundError:
        return "zombie"


def test_the_writers_peak_memory_is_its_own(monkeypatch):
    """The benches add the writer's peak to the run's: it must not count what this process held
    when it started the writer (getrusage's maximum survives fork and exec)."""
    raster_writer._stop_writer()
    monkeypatch.setattr(raster_writer, "_writer", None)
    held = np.ones(400 << 20, dtype=np.uint8)  # 400 MiB resident here
    raster_writer._the_writer()
    peak = raster_writer.writer_peak_rss_mib()
    del held
    raster_writer._stop_writer()
    assert peak is not None and 20 < peak < 300, peak
