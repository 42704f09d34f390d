"""Faults: a process killed mid-write leaves its temporaries, which the next run
in the same folder removes; a second run after the kill succeeds."""

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import rasterio

from common import POLYGONS, RGB, ROOT
from otbtf_plugin import scratch


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_only_temporaries_of_dead_processes_of_this_host_are_removed(tmp_path):
    dead, alive = _dead_pid(), os.getpid()
    names = {
        "dead_file": f".out.partial-{scratch.HOST}-{dead}-0123abcd.tif",
        "dead_aux": f".out.partial-{scratch.HOST}-{dead}-0123abcd.tif.aux.xml",
        "dead_dir": f".model.partial-{scratch.HOST}-{dead}-89abcdef",
        "alive_file": f".out.partial-{scratch.HOST}-{alive}-0123abcd.tif",
        "other_host": f".out.partial-otherhost-{dead}-0123abcd.tif",
        "user_file": "out.partial-x-1-0123abcd.tif",  # not hidden: not one of ours
        "output": "out.tif",
    }
    for key, name in names.items():
        if key == "dead_dir":
            (tmp_path / name).mkdir()
            (tmp_path / name / "saved_model.pb").write_bytes(b"x")
        else:
            (tmp_path / name).write_bytes(b"x")
    removed = scratch.clean_stale(tmp_path)
    assert sorted(p.name for p in removed) == sorted([names["dead_file"], names["dead_aux"], names["dead_dir"]])
    left = sorted(p.name for p in tmp_path.iterdir())
    assert left == sorted([names["alive_file"], names["other_host"], names["user_file"], names["output"]])


def test_names_keep_the_suffix_and_are_recognised():
    path = scratch.partial_path("/data/out put/carte é.tif")
    assert path.suffix == ".tif" and path.name.startswith(".carte é.partial-")
    assert scratch._NAME.match(path.name)["pid"] == str(os.getpid())


SLOW = """class Slow:  # reports each step, then dawdles: time to kill the process mid-run
    def step(self, done, total):
        print("STEP", done, flush=True)
        time.sleep(0.5)
    def cancelled(self):
        return False
    def info(self, message):
        pass
"""

SLOW_SERVE = """
import sys, time
sys.path.insert(0, {root!r})
from otbtf_plugin.models.runtimes import import_tensorflow
import_tensorflow()
import keras
inp = keras.Input((None, None, 3), name="x")
keras.Model(inp, keras.layers.Conv2D(4, 3, name="y")(inp)).save({model!r})
from otbtf_plugin.serving import ServeOptions, ServeSource, serve
{slow}serve([ServeSource({rgb!r})], {model!r}, {out!r}, ServeOptions(fully_conv=True, tile_px=128), progress=Slow())
"""

SLOW_EXTRACT = """
import sys, time
sys.path.insert(0, {root!r})
from otbtf_plugin.extraction import PatchSource, extract_patches
from otbtf_plugin.selection import sample_selection
points = sample_selection({rgb!r}, {polygons!r}, "name", strategy="all").write_gpkg({points!r})
{slow}extract_patches([PatchSource({rgb!r}, 16)], {points!r}, [{out!r}], group_px=64, progress=Slow())
"""


def _kill_after_first_step(code: str) -> None:
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            line = child.stdout.readline()
            if line.startswith("STEP") or not line:
                break
        assert line.startswith("STEP"), child.stderr.read()
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()


def test_serving_killed_mid_run_then_run_again(tmp_path):
    pytest.importorskip("keras")
    from otbtf_plugin.serving import ServeOptions, ServeSource, serve

    model, out = tmp_path / "model.keras", tmp_path / "served.tif"
    _kill_after_first_step(SLOW_SERVE.format(root=str(ROOT), rgb=str(RGB), model=str(model), out=str(out), slow=SLOW))
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.startswith(".served.partial-")]
    assert len(leftovers) == 1 and not out.exists()

    serve([ServeSource(RGB)], model, out, ServeOptions(fully_conv=True))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.keras", "served.tif"]
    with rasterio.open(out) as ds, rasterio.open(RGB) as src:
        assert (ds.width, ds.height) == (src.width - 2, src.height - 2)
        assert np.isfinite(ds.read(1, window=((0, 64), (0, 64)))).all()


def test_extraction_killed_mid_run_then_run_again(tmp_path):
    from otbtf_plugin.extraction import PatchSource, extract_patches

    points, out = tmp_path / "points.gpkg", tmp_path / "patches.tif"
    _kill_after_first_step(
        SLOW_EXTRACT.format(
            root=str(ROOT), rgb=str(RGB), polygons=str(POLYGONS), points=str(points), out=str(out), slow=SLOW
        )
    )
    leftovers = sorted(p.name.split(".partial-")[0] for p in tmp_path.iterdir() if ".partial-" in p.name)
    assert leftovers == [".otbtf-extraction"] and not out.exists()

    result = extract_patches([PatchSource(RGB, 16)], points, [out])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["patches.tif", "points.gpkg"]
    with rasterio.open(out) as ds:
        assert ds.height == 16 * result.accepted
