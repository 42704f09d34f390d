"""Serving on a Dask cluster: a LocalCluster of two worker processes on this machine
serves the sample; the output equals the single-machine run bit for bit, also when a
worker is killed mid-run; cancel and an unreachable scheduler are clean."""

import os
import signal
import threading
import time
from contextlib import contextmanager

import numpy as np
import pytest
import rasterio
from models import fcn, model_folder, patch_classifier, saved

from common import RGB, ROOT, CancelAfter

keras = pytest.importorskip("keras")
distributed = pytest.importorskip("distributed")

from otbtf_plugin.errors import Cancelled, InputError  # noqa: E402
from otbtf_plugin.execution import cluster as cluster_serving  # noqa: E402
from otbtf_plugin.execution.cluster import DaskExecutor  # noqa: E402
from otbtf_plugin.serving import ServeOptions, ServeSource, serve  # noqa: E402

pytestmark = pytest.mark.slow  # Dask clusters of worker processes, each loading TensorFlow


@contextmanager
def local_cluster(workers: int, threads: int):
    # Worker processes import the engine as the client does: from the repository.
    previous = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), previous) if p)
    try:
        with distributed.LocalCluster(
            n_workers=workers, threads_per_worker=threads, processes=True, dashboard_address=None
        ) as local:
            yield local
    finally:
        if previous is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = previous


@pytest.fixture(scope="module")
def cluster():
    # Two threads per worker: they read tiles at once, each with its own datasets (no lock).
    with local_cluster(2, 2) as local:
        yield local


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    folder = tmp_path_factory.mktemp("models")
    model_folder(fcn(filters=(8, 3), seed=0, scale=1e-4), folder / "fcn")
    saved(patch_classifier(16, scale=1e-4), folder / "patch.keras")
    import onnx_models

    onnx_models.save(
        onnx_models.conv_model(out=4, pad=True, softmax=True, size=32), folder / "seg.onnx", onnx_models.DEEPNESS
    )
    onnx_models.save(onnx_models.conv_model(pad=True), folder / "conv.onnx")
    return folder


def same(a, b) -> bool:
    with rasterio.open(a) as x, rasterio.open(b) as y:
        return x.profile == y.profile and np.array_equal(x.read(), y.read())


@pytest.mark.parametrize(
    ("kind", "extra"),
    [
        ("fcn", {}),
        ("patch.keras", {}),
        ("fcn", {"overlap": 8}),
        ("patch.keras", {"tta": True}),
        ("seg.onnx", {}),
        ("conv.onnx", {"overlap": 8}),
    ],
)
def test_cluster_output_is_the_single_machine_output(cluster, models, tmp_path, kind, extra):
    options = {"fully_conv": kind in ("fcn", "conv.onnx"), "tile_px": 128, **extra}
    local = serve([ServeSource(RGB)], models / kind, tmp_path / "local.tif", ServeOptions(**options))
    served = serve(
        [ServeSource(RGB)],
        models / kind,
        tmp_path / "cluster.tif",
        ServeOptions(**options),
        executor=DaskExecutor(cluster.scheduler_address),
    )
    assert served.tiles == local.tiles > 1
    assert same(tmp_path / "local.tif", tmp_path / "cluster.tif")


def test_a_worker_killed_mid_run_loses_nothing(cluster, models, tmp_path):
    options = ServeOptions(tile_px=64)
    serve([ServeSource(RGB)], models / "patch.keras", tmp_path / "local.tif", options)
    client = distributed.Client(cluster.scheduler_address, set_as_default=False)
    pids = list(client.run(os.getpid).values())
    steps, errors = [], []

    class Watch:
        def step(self, done, total):
            steps.append(done)

        def cancelled(self):
            return False

        def info(self, message):
            pass

    def run():
        try:
            serve(
                [ServeSource(RGB)],
                models / "patch.keras",
                tmp_path / "cluster.tif",
                ServeOptions(tile_px=64),
                executor=DaskExecutor(cluster.scheduler_address),
                progress=Watch(),
            )
        except Exception as err:  # handed to the test
            errors.append(err)

    worker = threading.Thread(target=run)
    worker.start()
    deadline = time.monotonic() + 120
    while len(steps) < 10 and worker.is_alive() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(steps) >= 10, errors
    os.kill(pids[0], signal.SIGKILL)
    worker.join(300)
    client.close()
    assert not errors, errors
    assert steps[-1] == len(steps) and len(steps) > 10  # every tile written once
    assert same(tmp_path / "local.tif", tmp_path / "cluster.tif")


def test_cancel_stops_the_cluster_work_and_leaves_nothing(cluster, models, tmp_path):
    with pytest.raises(Cancelled):
        serve(
            [ServeSource(RGB)],
            models / "patch.keras",
            tmp_path / "out.tif",
            ServeOptions(tile_px=64),
            executor=DaskExecutor(cluster.scheduler_address),
            progress=CancelAfter(3),
        )
    assert list(tmp_path.iterdir()) == []
    client = distributed.Client(cluster.scheduler_address, set_as_default=False)
    deadline = time.monotonic() + 30
    while any(client.processing().values()) and time.monotonic() < deadline:
        time.sleep(0.1)
    busy = client.processing()
    client.close()
    assert not any(busy.values()), busy


def test_an_unreachable_scheduler_is_a_clear_error(models, tmp_path, monkeypatch):
    monkeypatch.setattr(cluster_serving, "CONNECT_TIMEOUT", 2.0)
    with pytest.raises(InputError, match=r"cannot reach the Dask scheduler at 'tcp://127.0.0.1:9' .* `dask scheduler`"):
        serve(
            [ServeSource(RGB)],
            models / "fcn",
            tmp_path / "out.tif",
            ServeOptions(fully_conv=True),
            executor=DaskExecutor("tcp://127.0.0.1:9"),
        )
    assert list(tmp_path.iterdir()) == []


def test_image_classification_on_the_cluster_is_the_local_one(cluster, tmp_path):
    """Random forest on raw bands, with a mask: class map and confidence identical."""
    pytest.importorskip("sklearn")
    from common import POLYGONS
    from otbtf_plugin import classifier_training as dc
    from otbtf_plugin import image_classification as ic
    from otbtf_plugin.features import FeatureSource, FeatureSpec

    spec = FeatureSpec([FeatureSource(RGB)])
    trained = dc.train_from_features(
        spec, POLYGONS, "name", tmp_path / "rf.skops", strategy="constant", value=40, params="n_estimators=20"
    )
    mask = tmp_path / "mask.tif"
    with rasterio.open(RGB) as src:
        profile = dict(src.profile, count=1, dtype="uint8")
        keep = np.ones((src.height, src.width), dtype="uint8")
        keep[300:500, 200:600] = 0
    with rasterio.open(mask, "w", **profile) as m:
        m.write(keep, 1)
    outputs = {}
    for where, scheduler in (("local", ""), ("cluster", cluster.scheduler_address)):
        done = ic.classify_image(
            spec,
            trained.classifier,
            tmp_path / f"{where}.tif",
            tmp_path / f"{where}_conf.tif",
            mask=mask,
            executor=DaskExecutor(scheduler) if scheduler else None,
        )
        outputs[where] = done
    assert same(tmp_path / "local.tif", tmp_path / "cluster.tif")
    assert same(tmp_path / "local_conf.tif", tmp_path / "cluster_conf.tif")
    with rasterio.open(tmp_path / "cluster.tif") as cm:
        assert (cm.read(1)[300:500, 200:600] == cm.nodata).all()
    # Classes only (the workers' forests stop early): the same class map.
    ic.classify_image(
        spec, trained.classifier, tmp_path / "classes.tif", mask=mask, executor=DaskExecutor(cluster.scheduler_address)
    )
    assert same(tmp_path / "local.tif", tmp_path / "classes.tif")


@pytest.mark.parametrize(
    ("typed", "message"),
    [
        ("localhost", "SCHEDULER 'localhost' has no port: give it as tcp://HOST:PORT"),
        ("http://127.0.0.1:8786", "the scheme http:// is not Dask's"),
        ("tcp://host:port", "port 'port' is not a number from 1 to 65535"),
        ("tcp://host:99999", "port '99999' is not a number"),
        ("tcp://a b:1", "is not an address"),
    ],
)
def test_a_malformed_scheduler_is_one_line_before_any_work(typed, message):
    with pytest.raises(InputError, match=message):
        DaskExecutor(typed)  # made before serving starts
    assert cluster_serving.scheduler_address("127.0.0.1:8786") == "tcp://127.0.0.1:8786"


@pytest.fixture
def other_service():
    """A TCP service on the loopback that is not Dask: it accepts, then says ``banner`` (or nothing)."""
    import socket

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    server.settimeout(0.2)
    state = {"banner": b"", "stop": False, "open": []}

    def accept():
        while not state["stop"]:
            try:
                connection, _ = server.accept()
            except OSError:
                continue
            state["open"].append(connection)
            if state["banner"]:
                connection.sendall(state["banner"])

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"tcp://127.0.0.1:{server.getsockname()[1]}", state
    state["stop"] = True
    thread.join()
    for connection in state["open"]:
        connection.close()
    server.close()


def test_a_service_that_is_not_dask_ends_within_the_timeout(models, tmp_path, monkeypatch, other_service):
    address, state = other_service
    monkeypatch.setattr(cluster_serving, "CONNECT_TIMEOUT", 1.5)
    start = time.monotonic()
    silent = r"gave no Dask answer within 1.5 s: is it a Dask scheduler\? check the port \(Dask's default is 8786\)"
    with pytest.raises(InputError, match=silent):
        serve(
            [ServeSource(RGB)],
            models / "fcn",
            tmp_path / "out.tif",
            ServeOptions(fully_conv=True),
            executor=DaskExecutor(address),
        )
    assert time.monotonic() - start < 10
    state["banner"] = b"SSH-2.0-OpenSSH_9.2\r\n"
    other = r"(did not answer as a Dask scheduler|gave no Dask answer within 1.5 s).*check the port"
    with pytest.raises(InputError, match=other):
        serve(
            [ServeSource(RGB)],
            models / "fcn",
            tmp_path / "out.tif",
            ServeOptions(fully_conv=True),
            executor=DaskExecutor(address),
        )
    assert list(tmp_path.iterdir()) == []


def test_cancel_stops_the_wait_for_a_silent_scheduler(models, tmp_path, monkeypatch, other_service):
    address, _ = other_service
    monkeypatch.setattr(cluster_serving, "CONNECT_TIMEOUT", 60.0)

    class CancelSoon(CancelAfter):
        def __init__(self):
            super().__init__()
            self.start = time.monotonic()

        def cancelled(self):
            return time.monotonic() - self.start > 1.0

    start = time.monotonic()
    with pytest.raises(Cancelled):
        serve(
            [ServeSource(RGB)],
            models / "fcn",
            tmp_path / "out.tif",
            ServeOptions(fully_conv=True),
            executor=DaskExecutor(address),
            progress=CancelSoon(),
        )
    assert time.monotonic() - start < 5
    assert list(tmp_path.iterdir()) == []


@pytest.fixture
def lone_worker_cluster():
    """A cluster of one worker process that a test may take away (ONNX work: no TensorFlow)."""
    with local_cluster(1, 1) as local:
        yield local


class _TakeWorkersAway:
    """Progress that removes the cluster's workers after ``after`` tiles, then cancels once
    ``cancel_after`` seconds have passed without workers (None: never)."""

    def __init__(self, cluster, after=2, cancel_after=None):
        self.cluster, self.after, self.cancel_after = cluster, after, cancel_after
        self.gone_at = None

    def step(self, done, total):
        if done >= self.after and self.gone_at is None:
            self.cluster.scale(0)
            self.gone_at = time.monotonic()

    def cancelled(self):
        return (
            self.cancel_after is not None
            and self.gone_at is not None
            and (time.monotonic() - self.gone_at > self.cancel_after)
        )

    def info(self, message):
        pass


def _serve_onnx(cluster, models, tmp_path, progress) -> None:
    serve(
        [ServeSource(RGB)],
        models / "conv.onnx",
        tmp_path / "out.tif",
        ServeOptions(fully_conv=True, tile_px=64),
        executor=DaskExecutor(cluster.scheduler_address),
        progress=progress,
    )


def test_a_cluster_left_without_workers_ends_the_run_with_what_to_do(
    lone_worker_cluster, models, tmp_path, monkeypatch
):
    """The serving test on QGIS 3.40 once waited for ever on a cluster whose workers were gone.
    Now the run ends WORKERLESS_TIMEOUT seconds later, saying so, and leaves nothing."""
    monkeypatch.setattr(cluster_serving, "WORKERLESS_TIMEOUT", 3.0)
    watch = _TakeWorkersAway(lone_worker_cluster)
    started = time.monotonic()
    with pytest.raises(InputError, match=r"has had no worker for 3 s while tiles wait .* `dask worker tcp://"):
        _serve_onnx(lone_worker_cluster, models, tmp_path, watch)
    assert watch.gone_at is not None and time.monotonic() - watch.gone_at < 3.0 + 10
    assert time.monotonic() - started < 120
    assert list(tmp_path.iterdir()) == []


def test_cancel_is_seen_while_no_result_comes(lone_worker_cluster, models, tmp_path):
    """Cancel used to be looked at only when a tile came back."""
    watch = _TakeWorkersAway(lone_worker_cluster, cancel_after=1.0)
    with pytest.raises(Cancelled):
        _serve_onnx(lone_worker_cluster, models, tmp_path, watch)
    assert time.monotonic() - watch.gone_at < 1.0 + 5
    assert list(tmp_path.iterdir()) == []
