"""The installer of the Python packages the plugin needs beyond Debian's.

The pinned packages of ``requirements.txt`` (TensorFlow and its closure) are installed
with pip into a folder the plugin owns, one per Python version:

* system-wide (``make setup`` as root): ``/usr/local/lib/otbtf/python3.X``;
* per user (the plugin's "Install dependencies" action):
  ``$XDG_DATA_HOME/otbtf/python3.X`` (``~/.local/share/otbtf/python3.X``).

Only the plugin's own processes see that folder: no ``.pth`` puts it on every Python's path
(Debian's own Python programs keep importing Debian's packages). Inside QGIS the plugin's
entry point puts it on ``sys.path``, before the site-packages folders, when QGIS imports the
plugin (:func:`activate`); ``make`` puts it on ``PYTHONPATH`` for the commands it runs
(``python3 -m plugin.installer folders`` prints it); a script of yours does the same. An
``otbtf-deps.pth`` written by earlier versions is removed when the installer runs.

Not part of the engine (which only checks, in ``otbtf_plugin.packages``) and free of QGIS:
the desktop plugin's button and ``make setup`` run the same code. Command line, from the
plugin's folder::

    python3 -m plugin.installer check
    python3 -m plugin.installer folders
    python3 -m plugin.installer install [--system]
    python3 -m plugin.installer install --requirements requirements-dev.txt --target .devdeps/python3.11
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import importlib
import os
import platform
import queue
import shutil
import signal
import site
import subprocess  # nosec B404
import sys
import threading
from collections.abc import Callable
from pathlib import Path

from otbtf_plugin import packages
from otbtf_plugin.errors import Cancelled, DependencyError
from otbtf_plugin.packages import PYVER, REQUIREMENTS, parse_requirements, problems, python_executable
from otbtf_plugin.scratch import scratch_dir

PTH_NAME = "otbtf-deps.pth"
STAMP_NAME = ".otbtf-requirements.sha256"
SYSTEM_ROOT = Path("/usr/local/lib/otbtf")


def user_root() -> Path:
    data_home = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(data_home) / "otbtf"


def target_dir(system: bool) -> Path:
    """The folder the plugin owns for this Python's packages."""
    return (SYSTEM_ROOT if system else user_root()) / PYVER


def pth_dir(system: bool) -> Path:
    """The site folder where earlier versions wrote their ``.pth``."""
    if system:
        return Path(site.getsitepackages()[0])
    return Path(site.getusersitepackages())


# What each part installs: everything (about 2 GB installed), or what ONNX models need (about 160 MB
# on Debian 12, 80 MB where Debian's numpy is used): onnxruntime and its closure, numpy where Debian's is too old.
PARTS: dict[str, tuple[str, tuple[str, ...] | None]] = {
    "all": ("TensorFlow, ONNX models, classical classifiers, Dask clusters, the ONNX export", None),
    "onnx": ("ONNX models only", ("onnxruntime", "flatbuffers", "packaging", "protobuf", "numpy")),
}


# The GPU build of onnxruntime and the CUDA libraries it loads (see the file's header): where they
# exist, they replace the CPU onnxruntime of any part.
GPU_REQUIREMENTS = REQUIREMENTS.with_name("requirements-gpu.txt")


def _name(line: str) -> str:
    return line.split("#", 1)[0].split("==", 1)[0].strip()


def part_requirements(requirements: Path, part: str, gpu: bool = False) -> str:
    """The lines of the lock that ``part`` installs; with ``gpu``, onnxruntime's GPU build and
    its CUDA libraries instead of its CPU build."""
    names = PARTS[part][1]
    lines = requirements.read_text(encoding="utf-8").splitlines()
    if names is not None:
        lines = [line for line in lines if _name(line) in names]
    if gpu:
        lines = [line for line in lines if _name(line) != "onnxruntime"]
        lines += GPU_REQUIREMENTS.read_text(encoding="utf-8").splitlines()
    return "\n".join(lines) + "\n"


def requirements_digest(requirements: Path = REQUIREMENTS, part: str = "all", gpu: bool = False) -> str:
    text = part_requirements(requirements, part, gpu)
    pinned = "\n".join(f"{p.name}=={p.version}" for p in parse_requirements(text))
    return hashlib.sha256(f"{sys.version_info[:2]}\n{pinned}".encode()).hexdigest()


def gpu_problem(system: str | None = None, machine: str | None = None, driver: Path | None = None) -> str | None:
    """Why the GPU packages cannot be installed here (one sentence), or None where they can:
    they exist for Linux x86_64, and need an NVIDIA driver."""
    system = system or platform.system()
    machine = (machine or platform.machine()).lower()
    driver = driver or Path("/proc/driver/nvidia/version")
    where = "ONNX models run on the CPU here (and TensorFlow: its CUDA build is not installed by the plugin)"
    if system != "Linux" or machine not in ("x86_64", "amd64"):
        return (
            f"the GPU packages (onnxruntime-gpu with the CUDA libraries) exist for Linux x86_64 only, and this "
            f"machine is {system} {machine}: {where}"
        )
    if not driver.exists():
        return (
            "no NVIDIA driver is loaded on this machine (no /proc/driver/nvidia/version), so CUDA cannot run: "
            f"install the driver first (Debian: nvidia-driver); until then {where}"
        )
    return None


def installed_dirs() -> list[Path]:
    """Complete installations for this Python, per-user first."""
    found = []
    for system in (False, True):
        folder = target_dir(system)
        if (folder / STAMP_NAME).is_file():
            found.append(folder)
    return found


def activate() -> list[Path]:
    """Make the installed folders importable, before the site-packages folders (so that the
    numpy TensorFlow needs wins over Debian's): the plugin's entry point calls it when QGIS
    imports the plugin, and the installer after installing.

    Returns the folders that were added to ``sys.path``.
    """
    added = []
    for folder in reversed(installed_dirs()):
        entry = str(folder)
        if entry in sys.path:
            continue
        site_positions = [i for i, p in enumerate(sys.path) if p.endswith("-packages")]
        sys.path.insert(min([*site_positions, len(sys.path)]), entry)
        added.append(folder)
    if added:
        importlib.invalidate_caches()
    return added


def install(
    system: bool = False,
    log: Callable[[str], None] = print,
    step: Callable[[int, int], None] = lambda done, total: None,
    cancelled: Callable[[], bool] = lambda: False,
    force: bool = False,
    requirements: Path = REQUIREMENTS,
    target: Path | None = None,
    part: str = "all",
    gpu: bool = False,
) -> Path:
    """Install the pinned packages into :func:`target_dir` and activate them.

    pip writes into a temporary folder beside the target, which replaces the
    target only when pip succeeded: a failed or cancelled install leaves the
    previous one intact. Quick when the same pins are already installed.
    With an explicit ``target`` (development tools), nothing is activated: the caller puts it
    on PYTHONPATH. ``part`` (:data:`PARTS`): ``onnx`` installs what ONNX models need, and
    nothing when they can run already (a full install includes it). ``gpu``: onnxruntime's GPU
    build and the CUDA libraries instead of its CPU build (:func:`gpu_problem` says where they
    cannot be installed); an install with them keeps them.
    """
    owned = target is None
    target = target_dir(system) if target is None else Path(target).resolve()
    stamp = target / STAMP_NAME
    if gpu and (problem := gpu_problem()):
        raise DependencyError(f"Nothing was installed: {problem}")
    if not gpu and _stamped_gpu(stamp):  # an update keeps the GPU packages, where they still run
        problem = gpu_problem()
        if problem:
            log(f"The GPU packages are left out of this update: {problem}")
        gpu = problem is None
    if part != "all" and owned:
        activate()
        if not gpu and not packages.missing("onnx"):
            log(f"{PARTS[part][0]}: what they need is installed already")
            return target
        if _stamped_part(stamp) == "all":  # a whole install from an older lock: never shrink it
            log("An install of everything is there: it is brought up to date whole")
            part = "all"
    digest = requirements_digest(requirements, part, gpu)
    if not force and stamp.is_file() and stamp.read_text().split("\n", 1)[0].strip() == digest:
        log(f"Already installed in {target}")
        if owned:
            _remove_pth()
            activate()
        return target
    text = part_requirements(requirements, part, gpu)
    total = len(parse_requirements(text))
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = scratch_dir(target.parent, target.name)
    pip_scratch = scratch_dir(target.parent, "pip-tmp")
    command = [
        python_executable(),
        "-m",
        "pip",
        "install",
        "--no-deps",
        "--no-input",
        "--disable-pip-version-check",
        "--progress-bar",
        "off",
        "--target",
        str(staging),
        "-r",
        str(pip_scratch / "requirements.txt"),
    ]
    log("Running: " + " ".join(command))
    try:
        (pip_scratch / "requirements.txt").write_text(text, encoding="utf-8")
        _run_pip(command, total, log, step, cancelled, pip_scratch)
        (staging / STAMP_NAME).write_text(f"{digest}\npart={part}\ngpu={int(gpu)}\n")
        old = target.with_name(f".{target.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        if target.exists():
            target.rename(old)
        staging.rename(target)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        shutil.rmtree(pip_scratch, ignore_errors=True)
    if owned:
        _remove_pth()
        activate()
    step(total, total)
    log(f"Installed in {target}")
    return target


def _run_pip(command, total, log, step, cancelled, scratch: Path) -> None:
    """Run pip; cancel ends it within a fraction of a second whatever it is doing (it says
    nothing for many seconds while it installs), with every file it made: its temporary
    folders go to ``scratch`` (removed by the caller), its cache is not used."""
    env = dict(
        os.environ,
        PIP_BREAK_SYSTEM_PACKAGES="1",
        PYTHONNOUSERSITE="1",
        PIP_NO_CACHE_DIR="1",
        TMPDIR=str(scratch),
        TEMP=str(scratch),
        TMP=str(scratch),
    )
    # pip with a fixed argument list, never through a shell; in its own process group, so that
    # cancel ends it and anything it started.
    proc = subprocess.Popen(  # noqa: S603  # nosec B603
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, start_new_session=True
    )
    lines: queue.Queue = queue.Queue()

    def read_output():
        for line in proc.stdout or ():
            lines.put(line.rstrip())
        lines.put(None)

    threading.Thread(target=read_output, name="otbtf-pip-output", daemon=True).start()
    done = 0
    tail: list[str] = []
    while True:
        if cancelled():
            _stop(proc)
            raise Cancelled("dependency installation cancelled; nothing was changed")
        try:
            line = lines.get(timeout=0.1)
        except queue.Empty:
            continue
        if line is None:
            break
        tail = [*tail, line][-20:]
        if line.startswith(("Collecting", "Processing")):
            done += 1
            step(min(done, total - 1), total)
        log(line)
    if proc.wait() != 0:
        raise DependencyError(
            f"pip failed (exit code {proc.returncode}); nothing was changed. Its last lines:\n" + "\n".join(tail)
        )


def _stop(proc: subprocess.Popen) -> None:
    """End pip's process group: SIGTERM, then SIGKILL if it is still there after 5 s."""
    for sig, wait in ((signal.SIGTERM, 5), (signal.SIGKILL, 30)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def _stamped_part(stamp: Path) -> str | None:
    """The part an existing install holds (installs before parts existed held everything)."""
    if not stamp.is_file():
        return None
    lines = stamp.read_text().splitlines()
    return next((line.split("=", 1)[1] for line in lines[1:] if line.startswith("part=")), "all")


def _stamped_gpu(stamp: Path) -> bool:
    """Whether an existing install holds the GPU packages (an update keeps them)."""
    return stamp.is_file() and "gpu=1" in stamp.read_text().splitlines()[1:]


def _remove_pth() -> None:
    """Remove the ``otbtf-deps.pth`` of earlier versions (it put our folder on every Python's
    path): the user's, and the system's when this process may."""
    for system in (False, True):
        with contextlib.suppress(OSError):
            (pth_dir(system) / PTH_NAME).unlink(missing_ok=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python3 -m plugin.installer", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("check", help="say what is missing; exit 1 if an install would fix something")
    sub.add_parser("folders", help="the installed folders, as PYTHONPATH takes them")
    inst = sub.add_parser("install", help="install the pinned packages")
    inst.add_argument("--system", action="store_true", help=f"into {SYSTEM_ROOT} (as root)")
    inst.add_argument("--force", action="store_true", help="reinstall even if up to date")
    inst.add_argument("--part", choices=sorted(PARTS), default="all", help="what to install (default: all)")
    inst.add_argument(
        "--gpu", action="store_true", help="onnxruntime's GPU build and the CUDA libraries (Linux x86_64, NVIDIA)"
    )
    inst.add_argument("--requirements", type=Path, default=REQUIREMENTS)
    inst.add_argument(
        "--target", type=Path, default=None, help="install into this folder (development tools; not activated)"
    )
    args = parser.parse_args(argv)
    if args.command == "folders":
        print(os.pathsep.join(str(folder) for folder in installed_dirs()))
        return 0
    if args.command == "check":
        activate()
        found = problems()
        for line in found:
            print(line)
        for line in packages.unavailable():
            print(f"not available here: {line}")
        print("dependencies: OK" if not found else "dependencies: missing")
        print(f"GPU packages: {gpu_problem() or 'they can be installed here (install --gpu)'}")
        return 1 if found else 0
    try:
        install(
            system=args.system,
            force=args.force,
            requirements=args.requirements,
            target=args.target,
            part=args.part,
            gpu=args.gpu,
        )
    except DependencyError as err:
        print(err, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
