"""Rasters written by a process of their own, so that reads and writes never wait for each other.

GDAL's block cache is one per process. A thread that needs room in it may write out the
dirty (written, not yet flushed) blocks of *another* dataset while the thread that owns
that dataset works on it; that block is then lost or stale (GDAL issue 2011: a thread may
flush another thread's dataset when the cache is short of clean blocks). Our stress test
(``tests/engine/test_raster_writer.py``) loses pixels within a few trials when a reading
thread and a writing thread share one process' cache.

So the engine never writes raster pixels in the process that reads them. Every GeoTIFF it
writes (served images, class maps, patches images) is written by one *writer process*
per engine process, started on first use: this process hands it the arrays, it alone
holds dirty blocks, in a cache of its own, on one thread (GDAL's own threads compress
the blocks). In this process every thread only reads, which GDAL supports on separate
datasets, and reads run while tiles are written.

The writer is a child Python (pickle is safe here: the two processes talk only to each
other, over a pipe) started with this process' ``sys.path``; it reads requests on
its standard input (a length-prefixed pickle) and answers each on its standard output. An
array is copied once into memory both processes map (``/dev/shm``), or, where there is none,
sent through the pipe as a raw out-of-band buffer. It ends when its input closes,
which is also what happens when this process ends in any way.
"""

from __future__ import annotations

import atexit
import contextlib
import mmap
import os
import pickle  # nosec B403
import struct
import subprocess  # nosec B404
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

import numpy as np

from .packages import PLUGIN_ROOT, python_executable

# The writer's GDAL block cache, in MB: dirty blocks wait there until a tile row completes
# them, or they are flushed as the writer needs room (on its own thread, which is safe).
WRITER_CACHE_MB = 64

# Arrays are handed over in memory that both processes map, a file here (unlinked as soon as
# both have it); elsewhere through the pipe.
# (files made by mkstemp, unlinked at once)
SHARED_FOLDER = Path("/dev/shm")  # noqa: S108  # nosec B108

_HEADER = struct.Struct("<QI")  # pickle length, number of out-of-band buffers
_SIZE = struct.Struct("<Q")


class WriterError(OSError):
    """A write that failed in the writer (disk full, permissions): an OSError, as rasterio's
    own I/O errors are, so that callers report it the same way."""


def _send(stream, message: Any) -> None:
    buffers: list[pickle.PickleBuffer] = []
    meta = pickle.dumps(message, protocol=5, buffer_callback=buffers.append)
    raws = [buffer.raw() for buffer in buffers]
    stream.write(_HEADER.pack(len(meta), len(raws)) + b"".join(_SIZE.pack(raw.nbytes) for raw in raws) + meta)
    for raw in raws:
        stream.write(raw)
    stream.flush()


def _read_exactly(stream, size: int) -> bytearray:
    data = bytearray(size)
    view = memoryview(data)
    done = 0
    while done < size:
        got = stream.readinto(view[done:])
        if not got:
            raise EOFError
        done += got
    return data


def _receive(stream) -> Any:
    meta_size, count = _HEADER.unpack(_read_exactly(stream, _HEADER.size))
    sizes = [_SIZE.unpack(_read_exactly(stream, _SIZE.size))[0] for _ in range(count)]
    meta = _read_exactly(stream, meta_size)
    buffers = [_read_exactly(stream, size) for size in sizes]
    # our own process' message
    return pickle.loads(meta, buffers=buffers)  # noqa: S301  # nosec B301


class _Writer:
    """The child process, seen from this one: one request at a time, each answered."""

    def __init__(self) -> None:
        env = dict(os.environ)
        # The child imports what this process imports: the engine, and the same numpy and rasterio.
        path = [str(PLUGIN_ROOT), *(entry for entry in sys.path if entry and Path(entry).is_dir())]
        env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(path))
        env["GDAL_CACHEMAX"] = str(WRITER_CACHE_MB)
        code = "from otbtf_plugin.raster_writer import main; main()"
        # our interpreter, our code
        self.process = subprocess.Popen(  # noqa: S603  # nosec B603
            [python_executable(), "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env
        )
        self.pid = os.getpid()  # a forked copy of this process starts its own writer
        self.lock = threading.Lock()
        self.next_key = 0
        self.share = True  # arrays through shared memory, while it works
        self.shared: mmap.mmap | None = None
        self.open = 0  # rasters open: when none is, the shared memory is given back

    def alive(self) -> bool:
        return self.pid == os.getpid() and self.process.poll() is None

    def call(self, *request: Any) -> Any:
        with self.lock:
            return self._exchange(request)

    def _exchange(self, request: tuple) -> Any:
        try:
            assert self.process.stdin is not None and self.process.stdout is not None  # noqa: S101  # nosec B101
            _send(self.process.stdin, request)
            status, value = _receive(self.process.stdout)
        except (OSError, EOFError) as err:
            code = self.process.poll()
            ended = f"it ended with exit code {code}" if code is not None else f"{type(err).__name__}: {err}"
            raise WriterError(f"the raster writer process stopped ({ended})") from err
        if status == "oserror":
            raise WriterError(value)
        if status == "error":
            raise RuntimeError(f"the raster writer process: {value}")
        return value

    def write(self, key: int, array: np.ndarray, indexes, window) -> None:
        """Hand ``array`` over: copied once into the memory both processes map, or (where there is
        none) through the pipe."""
        with self.lock:
            shared = self._shared(array.nbytes)
            if shared is None:
                self._exchange(("write", key, np.ascontiguousarray(array), indexes, window))
                return
            np.copyto(np.ndarray(array.shape, array.dtype, buffer=shared), array)
            self._exchange(("write_shared", key, array.shape, array.dtype.str, indexes, window))

    def _shared(self, size: int) -> mmap.mmap | None:
        """Memory shared with the writer, of at least ``size`` bytes; None where there is no
        shared memory folder or it has no room (then arrays go through the pipe)."""
        if self.shared is not None and len(self.shared) >= size:
            return self.shared
        if not self.share or not SHARED_FOLDER.is_dir():
            return None
        size = -(-size // (1 << 20)) << 20  # whole MiB
        fd, path = tempfile.mkstemp(prefix="otbtf-writer-", dir=SHARED_FOLDER)
        try:
            os.posix_fallocate(fd, 0, size)  # the room, now: a full tmpfs would kill on first touch
            shared = mmap.mmap(fd, size)
            self._exchange(("share", path, size))
        except OSError:
            self.share = False
            return None
        finally:
            os.close(fd)
            os.unlink(path)  # both map it: nothing is left in the folder, however either ends
        if self.shared is not None:
            self.shared.close()
        self.shared = shared
        return shared

    def opened(self, key: int, *request: Any) -> None:
        with self.lock:
            self._exchange(("open", key, *request))
            self.open += 1

    def closed(self, key: int) -> None:
        """``key`` closed (or given up): once no raster is open, both processes unmap the shared
        memory, which would otherwise hold the largest tile for as long as QGIS runs."""
        with self.lock:
            self.open -= 1
            try:
                self._exchange(("close", key))
            finally:
                if not self.open and self.shared is not None:
                    self.shared.close()
                    self.shared = None
                    with contextlib.suppress(OSError):
                        self._exchange(("unshare",))

    def new_key(self) -> int:
        with self.lock:
            self.next_key += 1
            return self.next_key

    def stop(self) -> None:
        if self.process.stdin is not None:
            with contextlib.suppress(OSError):
                self.process.stdin.close()
        try:
            self.process.wait(5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


_writer: _Writer | None = None
_writer_lock = threading.Lock()


def _the_writer() -> _Writer:
    global _writer
    with _writer_lock:
        if _writer is None or not _writer.alive():
            _writer = _Writer()
        return _writer


def start_writer() -> None:
    """Start the writer process now, if it is not running: it imports its libraries (about a
    third of a second) while the caller loads its model, instead of when the first output
    opens, in the way of the run."""
    _the_writer()


@atexit.register
def _stop_writer() -> None:
    with _writer_lock:
        if _writer is not None and _writer.pid == os.getpid():
            _writer.stop()


def writer_peak_rss_mib() -> float | None:
    """The writer process' peak resident memory so far (None: no writer was started)."""
    with _writer_lock:
        writer = _writer if _writer is not None and _writer.alive() else None
    return writer.call("peak_rss") / 1024 if writer else None


class WrittenRaster:
    """A raster being written by the writer process, with the part of a rasterio dataset that
    writing uses: ``write`` takes what rasterio's does (a ``Window``, or
    ``((row_start, row_stop), (col_start, col_stop))``). :meth:`close` returns once the file
    is complete; :meth:`discard` ends it on an error path and never raises."""

    def __init__(self, path: str | Path, profile: dict, descriptions=(), tags: dict[str, str] | None = None):
        self.name = str(path)
        self.profile = dict(profile)
        self.count = int(profile["count"])
        self.dtypes = (np.dtype(profile["dtype"]).name,) * self.count
        self.closed = False
        self._writer = _the_writer()
        self._key = self._writer.new_key()
        self._writer.opened(self._key, self.name, self.profile, list(descriptions), dict(tags or {}))

    def write(self, array: np.ndarray, indexes: int | list[int] | None = None, window=None) -> None:
        if self.closed:
            raise ValueError(f"{self.name} is closed")
        self._writer.write(self._key, np.asarray(array), indexes, window)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._writer.closed(self._key)

    def discard(self) -> None:
        """Close it without caring how (an error is under way, which this must not hide; its file is
        removed next)."""
        with contextlib.suppress(OSError, RuntimeError):
            self.close()


# ---- the writer process --------------------------------------------------------------


def _loaded_gdal():
    """The GDAL library rasterio loaded (a wheel's own copy or the system's)."""
    import ctypes
    import ctypes.util

    try:
        with open("/proc/self/maps", encoding="utf-8") as maps:
            paths = [line.split()[-1] for line in maps if "libgdal" in line.rsplit("/", 1)[-1]]
    except OSError:
        paths = []
    name = paths[0] if paths else ctypes.util.find_library("gdal")
    return ctypes.CDLL(name) if name else None


class _GdalErrors:
    """GDAL's failures, as they happen, on any thread. A block that cannot be written is often
    flushed by ``close`` (or a later write), and rasterio raises nothing for it: without this
    watch a full disk gave a truncated GeoTIFF and no error."""

    CE_FAILURE = 3

    def __init__(self) -> None:
        import ctypes

        self.messages: list[str] = []
        handler_type = ctypes.CFUNCTYPE(None, ctypes.c_int, ctypes.c_int, ctypes.c_char_p)

        def handler(error_class, number, message):
            if error_class >= self.CE_FAILURE:
                self.messages.append((message or b"").decode("utf-8", "replace"))

        self._handler = handler_type(handler)  # kept: GDAL holds a pointer to it
        gdal = _loaded_gdal()
        if gdal is None:
            raise RuntimeError("the GDAL library rasterio uses was not found: its write errors cannot be watched")
        gdal.CPLSetErrorHandler.restype = ctypes.c_void_p
        gdal.CPLSetErrorHandler(self._handler)

    def check(self) -> None:
        """Raise what failed since the last check."""
        failed, self.messages = self.messages, []
        if failed:
            raise OSError("; ".join(dict.fromkeys(failed)))


class _Files:
    """The writer's side: the rasters it has open, the memory it shares with its owner, and
    one method per request."""

    def __init__(self) -> None:
        self.datasets: dict[int, Any] = {}
        self.shared: mmap.mmap | None = None

    def open(self, key: int, path: str, profile: dict, descriptions: list, tags: dict) -> None:
        import warnings

        import rasterio
        from rasterio.errors import NotGeoreferencedWarning

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            dataset = rasterio.open(path, "w", **profile)
        self.datasets[key] = dataset
        for band, text in enumerate(descriptions, 1):
            if text:
                dataset.set_band_description(band, text)
        if tags:
            dataset.update_tags(**tags)

    def write(self, key: int, array: np.ndarray, indexes, window) -> None:
        self.datasets[key].write(array, indexes, window=window)

    def write_shared(self, key: int, shape: tuple, dtype: str, indexes, window) -> None:
        self.write(key, np.ndarray(shape, dtype, buffer=self.shared), indexes, window)

    def share(self, path: str, size: int) -> None:
        self.unshare()
        with open(path, "r+b") as file:
            self.shared = mmap.mmap(file.fileno(), size)

    def unshare(self) -> None:
        if self.shared is not None:
            self.shared.close()
            self.shared = None

    def close(self, key: int) -> None:
        self.datasets.pop(key).close()

    def peak_rss(self) -> int:
        """This process' peak resident memory in KiB: VmHWM, its own since it started
        (``getrusage``'s maximum would include what its parent held when it forked it)."""
        with open("/proc/self/status", encoding="ascii") as status:
            return next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))


def _serve_requests(requests, answers) -> None:
    files = _Files()
    errors = _GdalErrors()
    while True:
        try:
            kind, *args = _receive(requests)
        except EOFError:  # the owner is done, or gone: what is still open it removes (or its next run does)
            os._exit(0)
        try:
            if kind not in ("open", "write", "write_shared", "share", "unshare", "close", "peak_rss"):
                raise ValueError(f"unknown request {kind!r}")
            errors.check()  # a failure outside a request (a compression thread) is the next one's
            value = getattr(files, kind)(*args)
            errors.check()
            _send(answers, ("ok", value))
        except OSError as err:  # GDAL's own words (disk full, permissions)
            _send(answers, ("oserror", str(err)))
        except Exception as err:  # every failure goes back to the caller
            _send(answers, ("error", f"{type(err).__name__}: {err}"))


def main() -> None:
    """The writer process: requests on standard input, answers on a private copy of standard
    output (anything a library prints goes to standard error instead)."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is for the owner, which then closes its files
    answers = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    requests = os.fdopen(0, "rb", buffering=0)
    _serve_requests(requests, answers)
