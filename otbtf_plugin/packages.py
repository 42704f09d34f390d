"""The Python packages the engine needs beyond Debian's, and whether they are here.

``requirements.txt`` is the lock the installer (``plugin/installer.py``) installs into a
folder the plugin owns. This module only reads it and asks ``importlib.metadata`` what is
installed: a few file-system look-ups, nothing imported. Each feature needs its own packages
(:data:`FEATURES`, version ranges that work); one that lacks a package says so in one line
(:func:`require`), with the way to install it.
"""

from __future__ import annotations

import importlib.metadata
import re
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from .errors import DependencyError

PLUGIN_ROOT = Path(__file__).resolve().parent.parent
REQUIREMENTS = PLUGIN_ROOT / "requirements.txt"
MIN_NUMPY = (1, 26)
PYVER = f"python{sys.version_info.major}.{sys.version_info.minor}"

_MARKER = re.compile(r'^python_version\s*(<=|>=|==|!=|<|>)\s*"(\d+)\.(\d+)"$')


@dataclass(frozen=True)
class Pin:
    name: str
    version: str


def _marker_holds(marker: str, version: tuple[int, int]) -> bool:
    match = _MARKER.match(marker.strip())
    if not match:
        raise DependencyError(
            f"{REQUIREMENTS}: unsupported marker {marker!r}; "
            'only python_version comparisons like python_version < "3.12" are allowed'
        )
    op, major, minor = match.group(1), int(match.group(2)), int(match.group(3))
    other = (major, minor)
    return {
        "<": version < other,
        "<=": version <= other,
        ">": version > other,
        ">=": version >= other,
        "==": version == other,
        "!=": version != other,
    }[op]


def parse_requirements(text: str, version: tuple[int, int] | None = None) -> list[Pin]:
    """Pins of a requirements text that apply to a Python ``version``.

    Only ``name==version`` lines, optionally with a ``python_version`` marker,
    are accepted: the file is a lock, not a set of ranges.
    """
    version = version or sys.version_info[:2]
    pins = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        spec, _, marker = line.partition(";")
        name, sep, pinned = spec.strip().partition("==")
        if not sep or not name or not pinned:
            raise DependencyError(f"requirements line {number} {raw.strip()!r} is not of the form name==version")
        if marker and not _marker_holds(marker, version):
            continue
        pins.append(Pin(name.strip(), pinned.strip()))
    return pins


def pins(requirements: Path | None = None) -> list[Pin]:
    """The lock's pins for this Python."""
    return parse_requirements((requirements or REQUIREMENTS).read_text(encoding="utf-8"))


def _version_tuple(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", text)[:3])


def _installed_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


Feature = Literal["tensorflow", "onnx", "classifiers", "cluster", "onnx_files", "export"]


@dataclass(frozen=True)
class Need:
    """A package a feature needs: any of ``names`` (a CPU and a GPU build), at least ``minimum``
    and below ``below`` (versions that work; the lock pins the tested ones for the installer)."""

    names: tuple[str, ...]
    minimum: tuple[int, ...]
    below: tuple[int, ...] = (10_000,)

    def problem(self) -> str | None:
        found = next(((n, v) for n in self.names if (v := _installed_version(n)) is not None), None)
        wanted = f"{self.names[0]} >= {'.'.join(map(str, self.minimum))}"
        if self.below != (10_000,):
            wanted += f", < {'.'.join(map(str, self.below))}"
        if found is None:
            return f"{wanted} (not installed)"
        name, version = found
        if not self.minimum <= _version_tuple(version)[: len(self.minimum)] < self.below:
            return f"{wanted} ({name} {version} is installed)"
        return None


# What each feature needs beyond Debian's numpy, GDAL and rasterio. ONNX models need onnxruntime
# alone: a Deepness user does not install TensorFlow.
FEATURES: dict[Feature, tuple[str, tuple[Need, ...]]] = {
    "tensorflow": ("TensorFlow models and training", (Need(("tensorflow-cpu", "tensorflow"), (2, 16), (3,)),)),
    "onnx": ("ONNX models", (Need(("onnxruntime", "onnxruntime-gpu"), (1, 16), (2,)),)),
    "classifiers": ("classical classifiers", (Need(("scikit-learn",), (1, 3)), Need(("skops",), (0, 10)))),
    "cluster": ("Dask clusters", (Need(("distributed",), (2024, 1)),)),
    "onnx_files": ("reading and writing .onnx files", (Need(("onnx",), (1, 14)),)),
    "export": ("ONNX exports of TensorFlow models", (Need(("onnx",), (1, 14)), Need(("tf2onnx",), (1, 16)))),
}


def missing(feature: Feature) -> list[str]:
    """What ``feature`` lacks, as phrases; empty when it is usable."""
    found = [problem for need in FEATURES[feature][1] if (problem := need.problem())]
    if feature == "tensorflow":
        loaded = sys.modules.get("numpy")
        numpy_version = getattr(loaded, "__version__", None) or _installed_version("numpy")
        if numpy_version is None:
            found.append("numpy (not installed)")
        elif _version_tuple(numpy_version)[:2] < MIN_NUMPY:
            where = "already loaded in this session" if loaded else "installed"
            found.append(
                f"numpy >= {MIN_NUMPY[0]}.{MIN_NUMPY[1]} (numpy {numpy_version} is {where}"
                + ("; restart QGIS to load the newer one)" if loaded else ")")
            )
    return found


def _unpinned(feature: Feature) -> str | None:
    """The package ``feature`` needs of which the lock pins no build for this Python (TensorFlow
    has no release for Python 3.14, the Python of QGIS 3.44 on Debian unstable), or None."""
    locked = {pin.name for pin in pins()}
    return next((need.names[0] for need in FEATURES[feature][1] if not locked.intersection(need.names)), None)


def no_release(feature: Feature) -> str | None:
    """The package ``feature`` needs that cannot be installed for this Python, when it is not
    installed either; None otherwise. Installing cannot help."""
    return _unpinned(feature) if missing(feature) else None


# What a user does where a feature cannot run at all.
ALTERNATIVES: dict[Feature, str] = {
    "tensorflow": (
        "serve the model's ONNX export instead (python3 -m otbtf_plugin.onnx_export, or TRAIN's ONNX output, "
        "where TensorFlow runs), or use a QGIS on Python 3.13 or older (Debian 12 or 13)"
    ),
    "export": "export the model where TensorFlow runs (Debian 12 or 13)",
}


def _python() -> str:
    return f"Python {sys.version_info.major}.{sys.version_info.minor}"


def _no_release_sentence(feature: Feature, package: str) -> str:
    return (
        f"{FEATURES[feature][0]} need {package}, which is not available for {_python()} (the Python this QGIS "
        f"runs; TensorFlow has no release for it): {ALTERNATIVES.get(feature, 'use a QGIS on an older Python')}"
    )


def unavailable() -> list[str]:
    """One sentence per feature that cannot run with this Python whatever is installed."""
    return [_no_release_sentence(f, package) for f in FEATURES if (package := no_release(f))]


def problems() -> list[str]:
    """What an install would fix, one sentence per feature that lacks something; empty when every
    feature is usable or cannot be (:func:`unavailable`)."""
    return [f"{FEATURES[f][0]} need {', '.join(found)}" for f in FEATURES if (found := missing(f)) and not _unpinned(f)]


def install_command() -> str:
    """What a user types to install the packages without the plugin's button."""
    return f"make setup (as root), or in the plugin's folder {PLUGIN_ROOT}: python3 -m plugin.installer install"


def requirement_message(*features: Feature) -> str | None:
    """One line: what ``features`` (every feature when none is named) lack and how to install
    it; None when nothing is missing."""
    features = features or tuple(FEATURES)
    impossible = [(f, package) for f in features if (package := no_release(f))]
    if impossible:  # installing cannot help: say that alone
        return _no_release_sentence(*impossible[0])
    found = [f"{FEATURES[f][0]} need {', '.join(lack)}" for f in features if (lack := missing(f))]
    if not found:
        return None
    return (
        "; ".join(found) + ". Install them with the plugin's 'Install dependencies' action "
        f"(Plugins > otbtf), or run {install_command()}"
    )


def require(*features: Feature) -> None:
    """Raise :class:`DependencyError` with the fix when ``features`` lack something."""
    message = requirement_message(*features)
    if message:
        raise DependencyError(message)


def python_executable() -> str:
    """This Python's interpreter, to start a Python process with (pip, the raster writer);
    inside QGIS, ``sys.executable`` is QGIS itself."""
    if Path(sys.executable).name.startswith("python"):
        return sys.executable
    for candidate in (Path(sys.base_prefix) / "bin" / PYVER, Path(sys.base_prefix) / "bin" / "python3"):
        if candidate.is_file():
            return str(candidate)
    found = shutil.which(PYVER) or shutil.which("python3")
    if not found:
        raise DependencyError(f"no {PYVER} interpreter found beside this Python ({sys.executable})")
    return found
