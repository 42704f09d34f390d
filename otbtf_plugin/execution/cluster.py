"""The Dask executor: a run's tiles computed on a Dask cluster (``DaskExecutor(address)``,
e.g. ``tcp://host:8786``), for any :class:`pipeline.TileWork`.

The client plans the run exactly as on one machine, opens the outputs and submits one task
per tile. Each worker process builds the run's state once (opens the sources, loads the
model: kept per run in that process), reads its tiles from the shared file system and
returns the computed values; the client writes them as they arrive. A tile's values come
from the same functions as on one machine and results do not depend on tiling, so the
output is identical, bit for bit, to the single-machine run.

A worker lost mid-run (its process killed) loses nothing: the scheduler gives its tiles to
the other workers. A cluster left with no worker at all ends the run after
``WORKERLESS_TIMEOUT`` seconds, with what to do (it used to wait for ever). Cancel cancels the
tasks still queued or running, also while no result comes. At most a few tiles
per worker are in flight, so the client's memory stays bounded whatever the image size.

Workers must import this engine under the same name as the client: the folder that holds
it (the repository, or the QGIS plugins folder for ``otbtf``) goes on the workers'
PYTHONPATH, and every worker reads the sources and the model at the same paths as the
client (the work gives absolute paths).
"""

from __future__ import annotations

import asyncio
import re
import socket
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, suppress
from typing import Any

from ..errors import Cancelled, InputError
from ..grid import Window
from ..progress import NullProgress, Progress

IN_FLIGHT_PER_WORKER = 4
CONNECT_TIMEOUT = 10.0  # seconds
WORKERLESS_TIMEOUT = 60.0  # seconds a run waits for tiles on a cluster that has no worker left
_POLL = 0.05  # seconds between looks for a result, a cancel, or workers
_RUNS: dict[str, tuple] = {}  # per worker process: run id -> (state, ExitStack)
_KEEP_RUNS = 2


_RUNS_LOCK = threading.Lock()  # a worker started with --nthreads > 1 runs tasks on several threads


def _run_state(run: str, build):
    """This worker's state for ``run``, built once by ``build(stack)``; its threads read at
    once, each with its own datasets (see ``TileWork.read``)."""
    with _RUNS_LOCK:
        if run not in _RUNS:
            while len(_RUNS) >= _KEEP_RUNS:  # an older run of this worker: release it
                _RUNS.pop(next(iter(_RUNS)))[1].close()
            stack = ExitStack()
            _RUNS[run] = (build(stack), stack)
        return _RUNS[run][0]


def _compute_on_worker(run: str, work, tile: tuple[int, int, int, int]):
    """On a worker: ``(tile, result, all nodata)`` of one tile of ``work``."""
    state = _run_state(run, work.build)
    item = work.read(state, Window(*tile))
    return tile, work.compute(state, item, NullProgress()), bool(work.empty(item))


_ADDRESS = re.compile(r"^(?:(?P<scheme>[a-z]+)://)?(?P<host>\[[0-9a-fA-F:]+\]|[^:/\s]+)(?::(?P<port>[^/\s]*))?/?$")


def scheduler_address(text: str) -> str:
    """``tcp://host:port`` from what a user typed (``host:port`` too), or an error saying the form."""
    text = text.strip()
    match = _ADDRESS.match(text)
    form = "give it as tcp://HOST:PORT (Dask's default port is 8786), e.g. tcp://192.0.2.10:8786"
    if not match:
        raise InputError(f"SCHEDULER {text!r} is not an address: {form}")
    scheme = match["scheme"] or "tcp"
    if scheme not in ("tcp", "tls"):
        raise InputError(f"SCHEDULER {text!r}: the scheme {scheme}:// is not Dask's; {form}")
    if not match["port"]:
        raise InputError(f"SCHEDULER {text!r} has no port: {form}")
    if not match["port"].isdigit() or not 0 < int(match["port"]) < 65536:
        raise InputError(f"SCHEDULER {text!r}: port {match['port']!r} is not a number from 1 to 65535; {form}")
    return f"{scheme}://{match['host']}:{int(match['port'])}"


def _unreachable(address: str, why: str) -> InputError:
    return InputError(
        f"cannot reach the Dask scheduler at {address!r} ({why}); start one with "
        "`dask scheduler` and workers with `dask worker ADDRESS`, or leave SCHEDULER "
        "empty to serve on this machine"
    )


def _refused(address: str, timeout: float) -> None:
    """Nothing listens there (refused, no route, unknown host): said at once, where Dask's
    client would retry until its timeout."""
    if not address.startswith("tcp://"):
        return
    host, port = address[len("tcp://") :].rsplit(":", 1)
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as err:
        raise _unreachable(address, err.strerror or str(err)) from err


async def _greet(address: str, timeout: float, progress: Progress) -> None:
    """Dask's own asynchronous client connects once, within ``timeout``, and gives up at once
    on cancel: asyncio cancels the handshake (the blocking client can wait for ever on a
    service that accepts and says nothing)."""
    from distributed import Client

    client = Client(address, asynchronous=True, timeout=timeout, set_as_default=False)

    async def cancel_asked():
        while not progress.cancelled():
            await asyncio.sleep(0.1)

    connecting = asyncio.ensure_future(asyncio.wait_for(client, timeout))
    watching = asyncio.ensure_future(cancel_asked())
    try:
        await asyncio.wait({connecting, watching}, return_when=asyncio.FIRST_COMPLETED)
        if not connecting.done():
            raise Cancelled("cancelled while connecting to the Dask scheduler")
        connecting.result()
    finally:
        connecting.cancel()
        watching.cancel()
        with suppress(Exception):
            await asyncio.wait_for(client.close(), 2)


def _run_coroutine(coroutine) -> None:
    """Run it to its end here, or in a thread of its own where this thread already runs an
    event loop (a notebook)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        asyncio.run(coroutine)
        return
    with ThreadPoolExecutor(1, thread_name_prefix="otbtf-dask-connect") as thread:
        thread.submit(asyncio.run, coroutine).result()


def connect(address: str, timeout: float | None = None, progress: Progress | None = None):
    """A ``distributed.Client`` for ``address``, or an error that says what to check;
    never longer than the timeout, and cancel stops the wait."""
    progress = progress or NullProgress()
    timeout = timeout or CONNECT_TIMEOUT
    address = scheduler_address(address)
    try:
        from distributed import Client
    except ImportError as err:
        raise InputError(
            f"Dask distributed is not installed ({err}): use Plugins > otbtf > Install dependencies, or `make setup`"
        ) from err
    _refused(address, timeout)
    check = "check the port (Dask's default is 8786), or leave SCHEDULER empty"
    try:
        _run_coroutine(_greet(address, timeout, progress))
    except Cancelled:
        raise
    except TimeoutError as err:
        raise InputError(
            f"the service at {address!r} gave no Dask answer within {timeout:g} s: is it a Dask scheduler? {check}"
        ) from err
    except Exception as err:  # what a service that is not Dask makes the handshake raise
        raise InputError(
            f"the service at {address!r} did not answer as a Dask scheduler ({type(err).__name__}: "
            f"{str(err)[:80]}): {check}"
        ) from err
    return Client(address, timeout=timeout, set_as_default=False)


class _WorkersWatch:
    """Whether the cluster still has a worker, asked at most once a second: a run whose cluster
    has had none for ``WORKERLESS_TIMEOUT`` seconds ends with what to do."""

    def __init__(self, address: str):
        self.address = address
        self.asked = 0.0
        self.none_since: float | None = None

    def check(self, client) -> None:
        now = time.monotonic()
        if now - self.asked < 1.0:
            return
        self.asked = now
        if client.scheduler_info().get("workers"):
            self.none_since = None
            return
        self.none_since = self.none_since or now
        if now - self.none_since >= WORKERLESS_TIMEOUT:
            raise InputError(
                f"the Dask scheduler at {self.address!r} has had no worker for {WORKERLESS_TIMEOUT:g} s while "
                f"tiles wait (its workers stopped or were lost): start some with `dask worker {self.address}` "
                "and run again"
            )


class DaskExecutor:
    """Runs a :class:`pipeline.TileWork` on the Dask cluster at ``address``; a malformed
    address is refused here, before any work."""

    local = False

    def __init__(self, address: str):
        self.address = scheduler_address(address)

    def run(self, work, tiles, write, progress: Progress | None = None, state=None) -> int:
        """Every tile on the cluster, ``write(tile, result)`` on this thread as results arrive;
        returns the number of all-nodata tiles. ``state`` (the client's own) is not used:
        workers build theirs."""
        from distributed import as_completed

        progress = progress or NullProgress()
        run = uuid.uuid4().hex
        client = connect(self.address, progress=progress)
        futures = set()
        try:
            workers = len(client.scheduler_info().get("workers", {}))
            if not workers:
                raise InputError(
                    f"the Dask scheduler at {self.address!r} has no worker: start some with "
                    f"`dask worker {self.address}`"
                )
            queue = iter(tiles)

            def submit_next():
                tile = next(queue, None)
                if tile is None:
                    return None
                future = client.submit(
                    _compute_on_worker, run, work, (tile.col_off, tile.row_off, tile.width, tile.height), pure=False
                )
                futures.add(future)
                return future

            first = [f for f in (submit_next() for _ in range(IN_FLIGHT_PER_WORKER * workers)) if f is not None]
            # with_results: a result is fetched before it counts as ready, so that this thread never
            # blocks on one (a result held by a worker that then left is computed again, or never)
            results = as_completed(first, loop=client.loop, with_results=True, raise_errors=False)
            skipped = done = 0
            watch = _WorkersWatch(self.address)
            value: Any
            while not results.is_empty():
                if progress.cancelled():
                    raise Cancelled("cancelled: the cluster's tasks were cancelled")
                future, value = next(results) if results.has_ready() else (None, None)
                if future is not None and future.status in ("lost", "pending"):
                    results.add(future)  # its worker left first: computed again, once a worker can
                    future = None
                if future is None:  # no result yet: cancel and lost workers are still seen
                    watch.check(client)
                    time.sleep(_POLL)
                    continue
                done += 1
                futures.discard(future)
                if future.status == "error":
                    error = value[1]
                    raise InputError(f"a worker failed on a tile: {type(error).__name__}: {error}") from error
                if future.status != "finished":
                    raise InputError(f"a tile's task was {future.status} on the Dask cluster at {self.address!r}")
                tile, result, empty = value
                write(Window(*tile), result)
                skipped += bool(empty)
                progress.step(done, len(tiles))
                following = submit_next()
                if following is not None:
                    results.add(following)
            return skipped
        finally:
            if futures:
                client.cancel(list(futures))
            client.close()


def executor_for(address: str) -> DaskExecutor | None:
    """The executor for a SCHEDULER value: None (this machine) when empty."""
    return DaskExecutor(address) if address.strip() else None
