"""Dependency pins and their check (the engine's ``packages``), installation and activation
(``plugin/installer.py``; no network: pip is faked)."""

import importlib.metadata
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import rasterio

from common import ROOT, lock_with_tensorflow_everywhere
from otbtf_plugin import packages
from otbtf_plugin.errors import Cancelled, DependencyError
from otbtf_plugin.packages import REQUIREMENTS, parse_requirements
from plugin import installer


def test_requirements_are_a_lock_with_per_python_numpy():
    text = (ROOT / "requirements.txt").read_text()
    py311 = {p.name: p.version for p in packages.parse_requirements(text, (3, 11))}
    py313 = {p.name: p.version for p in packages.parse_requirements(text, (3, 13))}
    assert py311["tensorflow-cpu"] == py313["tensorflow-cpu"] == "2.21.0"
    # Debian 12: numpy 1.26 (< 2, so Debian's compiled rasterio/GDAL keep working).
    assert py311["numpy"] == "1.26.4"
    # Debian 13: Debian's numpy 2 is kept, so numpy is not installed.
    assert "numpy" not in py313
    assert py311["ml_dtypes"] == "0.5.4" and py313["ml_dtypes"] == "0.6.0"


def test_a_range_is_refused_with_the_line():
    with pytest.raises(DependencyError, match=r"line 2 'numpy>=1.26'"):
        packages.parse_requirements("keras==3.15.1\nnumpy>=1.26\n")
    with pytest.raises(DependencyError, match="unsupported marker"):
        packages.parse_requirements('keras==3.15.1 ; sys_platform == "linux"\n')


def test_this_machine_has_the_pinned_packages():
    """make setup installed exactly the lock (the numpy TensorFlow needs wins)."""
    for pin in packages.pins():
        assert importlib.metadata.version(pin.name) == pin.version, pin
    import numpy

    assert tuple(int(p) for p in numpy.__version__.split(".")[:2]) >= packages.MIN_NUMPY
    assert packages.problems() == []


def test_activate_puts_the_folders_before_site_packages_once(tmp_path, monkeypatch):
    folder = tmp_path / "deps"
    monkeypatch.setattr(installer, "installed_dirs", lambda: [folder])
    fake_path = ["/usr/lib/python3.11", "/home/u/.local/lib/python3.11/site-packages", "/usr/lib/python3/dist-packages"]
    monkeypatch.setattr(sys, "path", list(fake_path))
    assert installer.activate() == [folder]
    assert installer.activate() == []  # a second call adds nothing
    assert sys.path == ["/usr/lib/python3.11", str(folder), *fake_path[1:]]


def test_a_python_started_elsewhere_sees_none_of_our_packages():
    """make setup gives every other Python program of the machine nothing of ours: a plain
    python3 (no PYTHONPATH, as any Debian tool starts) imports Debian's packages, finds no
    TensorFlow, and no .pth of ours is left in a site folder."""
    code = (
        "import importlib.util as u, sys\n"
        "print(u.find_spec('tensorflow') is None)\n"
        "print(u.find_spec('numpy').origin)\n"
        "print([p for p in sys.path if '/otbtf/python3' in p])\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    no_tensorflow, numpy_origin, ours = out.stdout.splitlines()
    assert (no_tensorflow, ours) == ("True", "[]")
    assert numpy_origin.startswith("/usr/lib/python3/")
    for system in (False, True):
        assert not (installer.pth_dir(system) / installer.PTH_NAME).exists()
    # and the commands make runs do see them
    assert all(str(d) in os.environ.get("PYTHONPATH", "").split(os.pathsep) for d in installer.installed_dirs())


FAKE_PIP = textwrap.dedent("""\
    import sys, time, pathlib
    args = sys.argv[1:]
    target = pathlib.Path(args[args.index("--target") + 1])
    asked = pathlib.Path(args[args.index("-r") + 1]).read_text()
    mode = pathlib.Path(__file__).with_suffix(".mode").read_text()
    for name in ("alpha", "beta", "gamma"):
        print(f"Processing ./{name}.whl", flush=True)
        if mode == "slow":
            time.sleep(0.5)
    if mode == "fail":
        print("ERROR: no matching distribution", flush=True)
        sys.exit(1)
    if mode == "quiet":  # pip's install phase: a big temporary folder, then silence
        import os, tempfile
        unpack = pathlib.Path(tempfile.mkdtemp(prefix="pip-unpack-"))
        (unpack / "tensorflow.whl").write_bytes(b"x" * 1000)
        print("Installing collected packages: alpha, beta, gamma", flush=True)
        time.sleep(60)
    (target / "requirements.seen").write_text(asked)
    (target / "alpha").mkdir()
    (target / "alpha" / "__init__.py").write_text("VALUE = 42\\n")
""")


@pytest.fixture
def fake_env(tmp_path, monkeypatch):
    """A fake pip (a script standing in for 'python -m pip') and private folders."""
    script = tmp_path / "fakepip.py"
    script.write_text(FAKE_PIP)
    runner = tmp_path / "python"
    runner.write_text(f'#!/bin/sh\nshift 2\nexec {sys.executable} {script} "$@"\n')
    runner.chmod(0o755)
    requirements = tmp_path / "req.txt"
    requirements.write_text("alpha==1.0\nbeta==2.0\ngamma==3.0\n")
    monkeypatch.setattr(installer, "python_executable", lambda: str(runner))
    monkeypatch.setattr(installer, "REQUIREMENTS", requirements)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    monkeypatch.setattr(installer, "pth_dir", lambda system: tmp_path / "site")
    monkeypatch.setattr(sys, "path", list(sys.path))

    def set_mode(mode):
        script.with_suffix(".mode").write_text(mode)

    return tmp_path, set_mode


def test_install_writes_target_and_stamp_removes_an_old_pth_then_is_quick(fake_env):
    tmp_path, set_mode = fake_env
    set_mode("ok")
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / installer.PTH_NAME).write_text("import sys; ...\n")  # written by an earlier version
    steps = []
    target = installer.install(
        requirements=installer.REQUIREMENTS, log=lambda line: None, step=lambda d, t: steps.append((d, t))
    )
    assert target == tmp_path / "data" / "otbtf" / installer.PYVER
    assert (target / "alpha" / "__init__.py").is_file()
    digest = installer.requirements_digest(installer.REQUIREMENTS)
    assert (target / installer.STAMP_NAME).read_text().splitlines() == [digest, "part=all", "gpu=0"]
    assert not (tmp_path / "site" / installer.PTH_NAME).exists()  # the old one removed, none written
    assert steps[-1] == (3, 3)
    # Activated now: importable without restarting Python.
    assert str(target) in sys.path
    # Second call: nothing is run.
    set_mode("fail")
    assert installer.install(requirements=installer.REQUIREMENTS, log=lambda line: None) == target
    # Nothing left beside the target.
    assert sorted(p.name for p in target.parent.iterdir()) == [installer.PYVER]


def test_the_onnx_part_installs_what_onnx_models_need_and_never_shrinks_a_whole_install(fake_env, monkeypatch):
    _, set_mode = fake_env
    set_mode("ok")
    monkeypatch.setitem(installer.PARTS, "onnx", ("ONNX models only", ("beta",)))
    monkeypatch.setattr(installer.packages, "missing", lambda feature: ["onnxruntime >= 1.16 (not installed)"])
    quiet = {"requirements": installer.REQUIREMENTS, "log": lambda line: None}
    target = installer.install(**quiet, part="onnx")
    assert (target / "requirements.seen").read_text().split() == ["beta==2.0"]
    assert (target / installer.STAMP_NAME).read_text().splitlines()[1] == "part=onnx"
    installer.install(**quiet)  # everything afterwards: the whole lock
    assert (target / "requirements.seen").read_text().split() == ["alpha==1.0", "beta==2.0", "gamma==3.0"]
    set_mode("fail")  # the ONNX part over a whole install runs no pip: the whole one is kept as it is
    installer.install(**quiet, part="onnx")
    assert (target / "requirements.seen").read_text().split() == ["alpha==1.0", "beta==2.0", "gamma==3.0"]
    monkeypatch.setattr(installer.packages, "missing", lambda feature: [])
    lines: list[str] = []
    installer.install(requirements=installer.REQUIREMENTS, log=lines.append, part="onnx")
    assert lines == ["ONNX models only: what they need is installed already"]


def test_the_gpu_packages_replace_the_cpu_onnxruntime_and_stay_through_updates(fake_env, monkeypatch):
    tmp_path, set_mode = fake_env
    set_mode("ok")
    installer.REQUIREMENTS.write_text("alpha==1.0\nonnxruntime==1.32.0\ngamma==3.0\n")
    gpu_lock = tmp_path / "req-gpu.txt"
    gpu_lock.write_text("# CUDA\nonnxruntime-gpu==1.31.1\nnvidia-cudnn-cu13==9.28.1.4\n")
    monkeypatch.setattr(installer, "GPU_REQUIREMENTS", gpu_lock)
    monkeypatch.setattr(installer, "gpu_problem", lambda: None)
    quiet = {"requirements": installer.REQUIREMENTS, "log": lambda line: None}
    target = installer.install(**quiet, gpu=True)
    seen = ["alpha", "gamma", "onnxruntime-gpu", "nvidia-cudnn-cu13"]
    assert [p.name for p in parse_requirements((target / "requirements.seen").read_text())] == seen
    assert (target / installer.STAMP_NAME).read_text().splitlines()[1:] == ["part=all", "gpu=1"]
    set_mode("fail")
    installer.install(**quiet)  # an update without --gpu keeps them: nothing to do
    set_mode("ok")
    lines: list[str] = []
    monkeypatch.setattr(installer, "gpu_problem", lambda: "no NVIDIA driver is loaded on this machine")
    installer.install(requirements=installer.REQUIREMENTS, log=lines.append)  # the driver is gone
    assert "The GPU packages are left out of this update: no NVIDIA driver is loaded on this machine" in lines
    assert (target / "requirements.seen").read_text().split() == ["alpha==1.0", "onnxruntime==1.32.0", "gamma==3.0"]
    set_mode("fail")
    with pytest.raises(installer.DependencyError, match=r"^Nothing was installed: no NVIDIA driver"):
        installer.install(**quiet, gpu=True)  # asked for where they cannot run: refused before pip


def test_where_the_gpu_packages_exist(tmp_path):
    driver = tmp_path / "version"
    assert "Linux x86_64 only, and this machine is Darwin arm64" in installer.gpu_problem("Darwin", "arm64", driver)
    assert "Linux x86_64 only" in installer.gpu_problem("Linux", "aarch64", driver)
    assert "no NVIDIA driver is loaded" in installer.gpu_problem("Linux", "x86_64", driver)
    driver.write_text("NVRM version: NVIDIA UNIX x86_64 Kernel Module  580.65.06\n")
    assert installer.gpu_problem("Linux", "x86_64", driver) is None


def test_the_gpu_lock_swaps_onnxruntime_and_repins_nothing_else():
    """requirements-gpu.txt holds onnxruntime's GPU build and the CUDA libraries only: the
    packages they share with the lock (numpy, protobuf...) keep the lock's versions."""
    for version in ((3, 11), (3, 13)):
        main = {p.name for p in parse_requirements(REQUIREMENTS.read_text(), version)}
        gpu = [p.name for p in parse_requirements(installer.GPU_REQUIREMENTS.read_text(), version)]
        assert "onnxruntime-gpu" in gpu and not main & set(gpu), main & set(gpu)
        both = parse_requirements(installer.part_requirements(REQUIREMENTS, "all", gpu=True), version)
        assert "onnxruntime" not in {p.name for p in both} and len(both) == len(main) - 1 + len(gpu)


def test_failed_install_keeps_the_previous_one_and_says_why(fake_env):
    _, set_mode = fake_env
    set_mode("ok")
    target = installer.install(requirements=installer.REQUIREMENTS, log=lambda line: None)
    set_mode("fail")
    with pytest.raises(DependencyError, match="no matching distribution"):
        installer.install(requirements=installer.REQUIREMENTS, log=lambda line: None, force=True)
    assert (target / "alpha" / "__init__.py").is_file()
    assert sorted(p.name for p in target.parent.iterdir()) == [installer.PYVER]


def test_cancelled_install_changes_nothing(fake_env):
    tmp_path, set_mode = fake_env
    set_mode("slow")
    lines = []
    with pytest.raises(Cancelled):
        installer.install(requirements=installer.REQUIREMENTS, log=lines.append, cancelled=lambda: len(lines) >= 2)
    root = tmp_path / "data" / "otbtf"
    assert list(root.iterdir()) == []
    assert not (tmp_path / "site").exists()


def test_cancel_while_pip_is_silent_ends_at_once_and_leaves_no_temporary(fake_env, monkeypatch):
    """pip prints nothing while it installs (13 s for TensorFlow): cancel must not wait for its
    next line, and pip's temporary folders (in the temp directory) must go too."""
    tmp_path, set_mode = fake_env
    set_mode("quiet")
    system_tmp = tmp_path / "system-tmp"
    system_tmp.mkdir()
    monkeypatch.setenv("TMPDIR", str(system_tmp))
    lines, start = [], {}

    def cancelled():
        if any(line.startswith("Installing collected packages") for line in lines):
            start.setdefault("at", time.monotonic())
            return time.monotonic() - start["at"] > 0.5
        return False

    with pytest.raises(Cancelled):
        installer.install(requirements=installer.REQUIREMENTS, log=lines.append, cancelled=cancelled)
    assert time.monotonic() - start["at"] < 3
    assert list(system_tmp.iterdir()) == []
    assert list((tmp_path / "data" / "otbtf").iterdir()) == []


def test_problems_name_the_missing_pieces(monkeypatch, tmp_path):
    monkeypatch.setattr(packages, "REQUIREMENTS", lock_with_tensorflow_everywhere(tmp_path))
    versions = {
        "tensorflow-cpu": None,
        "tensorflow": None,
        "numpy": "1.24.2",
        "scikit-learn": "1.9.1",
        "skops": "0.16.0",
        "distributed": "2026.8.0",
        "onnxruntime": "1.32.0",
        "onnx": "1.23.2",
        "tf2onnx": "1.17.0",
    }

    def fake_version(name):
        if versions.get(name) is None:
            raise importlib.metadata.PackageNotFoundError(name)
        return versions[name]

    monkeypatch.setattr(importlib.metadata, "version", fake_version)
    monkeypatch.delitem(sys.modules, "numpy", raising=False)
    found = packages.problems()
    assert found == [
        "TensorFlow models and training need tensorflow-cpu >= 2.16, < 3 (not installed), numpy >= 1.26 "
        "(numpy 1.24.2 is installed)"
    ]
    # Each feature is checked alone: ONNX models and classifiers are usable without TensorFlow.
    assert packages.requirement_message("onnx") is None and packages.requirement_message("classifiers") is None
    with pytest.raises(DependencyError, match=r"^TensorFlow models .*\. Install them with .*Install dependencies"):
        packages.require("tensorflow")
    packages.require("onnx", "cluster")
    # An install made by an older plugin version: TensorFlow fine, later packages missing or too old.
    versions.update({"tensorflow-cpu": "2.21.0", "numpy": "1.26.4", "scikit-learn": None, "distributed": "2023.1.0"})
    assert packages.problems() == [
        "classical classifiers need scikit-learn >= 1.3 (not installed)",
        "Dask clusters need distributed >= 2024.1 (distributed 2023.1.0 is installed)",
    ]
    # The GPU build of onnxruntime counts; a major version the code was not written for does not.
    versions.update({"onnxruntime": None, "onnxruntime-gpu": "1.32.0", "tensorflow-cpu": None, "tensorflow": "3.0.1"})
    assert packages.missing("onnx") == []
    assert packages.missing("tensorflow") == ["tensorflow-cpu >= 2.16, < 3 (tensorflow 3.0.1 is installed)"]


def test_features_without_a_release_for_this_python(monkeypatch, tmp_path):
    """Python 3.14 (QGIS 3.44 on Debian unstable): TensorFlow has no release for it, so the lock
    leaves out TensorFlow's packages there; what needs them says so in one line, without the
    install advice that cannot help, and the rest works."""
    lock = (packages.REQUIREMENTS).read_text(encoding="utf-8")
    names = {
        version: {pin.name for pin in packages.parse_requirements(lock, version)}
        for version in ((3, 11), (3, 13), (3, 14))
    }
    assert {"tensorflow-cpu", "keras", "h5py", "tf2onnx"} <= names[(3, 11)] & names[(3, 13)]
    assert not {"tensorflow-cpu", "keras", "h5py", "tensorboard", "tf2onnx", "grpcio"} & names[(3, 14)]
    assert {"onnxruntime", "onnx", "scikit-learn", "skops", "distributed", "jinja2", "scipy"} <= names[(3, 14)]

    here = f"{sys.version_info.major}.{sys.version_info.minor}"
    fake_lock = tmp_path / "requirements.txt"
    fake_lock.write_text(
        lock.replace(
            'tensorflow-cpu==2.21.0 ; python_version < "3.14"', f'tensorflow-cpu==2.21.0 ; python_version < "{here}"'
        ).replace('tf2onnx==1.17.0 ; python_version < "3.14"', f'tf2onnx==1.17.0 ; python_version < "{here}"')
    )
    monkeypatch.setattr(packages, "REQUIREMENTS", fake_lock)
    real_version = importlib.metadata.version

    def fake_version(name):
        if name in ("tensorflow-cpu", "tensorflow", "tf2onnx"):
            raise importlib.metadata.PackageNotFoundError(name)
        return real_version(name)

    monkeypatch.setattr(importlib.metadata, "version", fake_version)
    assert packages.problems() == []  # nothing that an install would fix
    assert packages.unavailable() == [
        f"TensorFlow models and training need tensorflow-cpu, which is not available for Python {here} (the "
        "Python this QGIS runs; TensorFlow has no release for it): serve the model's ONNX export instead "
        "(python3 -m otbtf_plugin.onnx_export, or TRAIN's ONNX output, where TensorFlow runs), or use a QGIS on "
        "Python 3.13 or older (Debian 12 or 13)",
        f"ONNX exports of TensorFlow models need tf2onnx, which is not available for Python {here} (the Python "
        "this QGIS runs; TensorFlow has no release for it): export the model where TensorFlow runs (Debian 12 or 13)",
    ]
    with pytest.raises(DependencyError) as raised:
        packages.require("tensorflow", "export")
    assert str(raised.value) == packages.unavailable()[0] and "Install" not in str(raised.value)
    packages.require("onnx", "classifiers", "cluster")
    assert installer.main(["check"]) == 0


def test_engine_imports_no_qgis():
    code = (
        "import sys, pkgutil, importlib, otbtf_plugin\n"
        "for m in pkgutil.iter_modules(otbtf_plugin.__path__):\n"
        "    importlib.import_module('otbtf_plugin.' + m.name)\n"
        "bad = sorted(n for n in sys.modules if n.split('.')[0] in ('qgis', 'PyQt5', 'PyQt6'))\n"
        "print(bad)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_python_executable_is_a_python(monkeypatch):
    monkeypatch.setattr(sys, "executable", "/usr/bin/qgis")
    assert Path(installer.python_executable()).name.startswith("python")


ONNX_ALONE = textwrap.dedent("""\
    import sys
    sys.path[:0] = sys.argv[1:3]
    sys.path.append("/usr/lib/python3/dist-packages")  # Debian's numpy, GDAL, rasterio
    from otbtf_plugin import packages
    from otbtf_plugin.serving import ServeOptions, ServeSource, serve
    result = serve([ServeSource(sys.argv[3])], sys.argv[4], sys.argv[5], ServeOptions(fully_conv=True))
    heavy = [m for m in ("tensorflow", "keras", "sklearn", "distributed", "onnx", "tf2onnx") if m in sys.modules]
    print(result.tiles, heavy)
    print(packages.requirement_message("tensorflow"))
""")


def _linked(folder: Path, module: str) -> None:
    """``module``, its metadata and bundled libraries linked into ``folder`` from where this
    Python finds it (nothing when it is Debian's: that folder is on the path anyway)."""
    import importlib.util

    package = Path(importlib.util.find_spec(module).origin).parent
    if str(package).startswith("/usr/lib/python3/"):
        return
    for entry in package.parent.iterdir():
        if entry.name == module or entry.name.startswith((f"{module}-", f"{module}.libs")):
            (folder / entry.name).symlink_to(entry)


def test_onnx_models_serve_with_onnxruntime_alone(tmp_path):
    """A Deepness user installs onnxruntime, not TensorFlow: in a Python that sees Debian's
    packages and onnxruntime (with its numpy) only, no .pth read (-S), an ONNX model serves,
    nothing heavy is imported, nothing is printed on stderr, and asking for TensorFlow says
    in one line what is missing."""
    import onnx_models

    from common import RGB

    only = tmp_path / "only"
    only.mkdir()
    for module in ("onnxruntime", "numpy"):
        _linked(only, module)
    model = onnx_models.save(onnx_models.conv_model(), tmp_path / "conv.onnx")
    script = tmp_path / "alone.py"
    script.write_text(ONNX_ALONE)
    out = subprocess.run(
        [sys.executable, "-S", str(script), str(only), str(ROOT), str(RGB), str(model), str(tmp_path / "o.tif")],
        capture_output=True, text=True, check=False, env={"PATH": os.environ["PATH"]},
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    served, message = out.stdout.splitlines()[-2:]
    assert served.endswith(" []"), out.stdout  # tiles served, and no heavy module imported
    assert out.stderr == ""
    if "tensorflow-cpu" in {pin.name for pin in packages.pins()}:
        assert message.startswith("TensorFlow models and training need tensorflow-cpu >= 2.16, < 3 (not installed)")
        assert "Install dependencies" in message
    else:  # Python 3.14: no TensorFlow release, no install advice
        assert message.startswith("TensorFlow models and training need tensorflow-cpu, which is not available for")
    with rasterio.open(tmp_path / "o.tif") as served:
        assert served.count == 2 and served.read().any()
