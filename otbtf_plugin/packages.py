"""The Python packages the engine needs beyond Debian's, and whether they are here.

``requirements.txt`` is the lock the installer (``plugin/installer.py``) installs into a
folder the plugin owns. This module only reads it and asks ``importlib.metadata`` what is
installed: a few file-system look-ups, nothing imported. A feature that lacks a package
says so in one line (:func:`require`), with the way to install it.
"""

from __future__ import annotations

import importlib.metadata
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from .errors import DependencyError

PLUGIN_ROOT = Path(__file__).resolve().parent.parent
REQUIREMENTS = PLUGIN_ROOT / "requirements.txt"
MIN_NUMPY = (1, 26)

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


def pins(requirements: Path = REQUIREMENTS) -> list[Pin]:
    return parse_requirements(requirements.read_text(encoding="utf-8"))


def _version_tuple(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", text)[:3])


def _installed_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


# The packages behind the other features; a plugin upgraded over an older install lacks them.
FEATURE_PACKAGES = {
    "scikit-learn": "classical classifiers",
    "skops": "classifier files",
    "distributed": "Dask clusters",
    "onnxruntime": "ONNX models",
    "onnx": "ONNX files",
    "tf2onnx": "ONNX export",
}


def problems() -> list[str]:
    """What is missing or wrong, as sentences; empty when everything is usable."""
    found = []
    tf_pin = next(p for p in pins() if p.name == "tensorflow-cpu")
    tf_version = _installed_version("tensorflow-cpu") or _installed_version("tensorflow")
    if tf_version is None:
        found.append(f"TensorFlow is not installed (the plugin needs tensorflow-cpu {tf_pin.version})")
    elif _version_tuple(tf_version)[:2] != _version_tuple(tf_pin.version)[:2]:
        found.append(f"TensorFlow {tf_version} is installed; the plugin needs {tf_pin.version}")
    for name, needed_by in FEATURE_PACKAGES.items():  # pinned like TensorFlow, added in later versions
        pin = next((p for p in pins() if p.name == name), None)
        version = _installed_version(name)
        if pin is not None and (version is None or _version_tuple(version)[:2] != _version_tuple(pin.version)[:2]):
            found.append(
                f"{name} {pin.version} (for {needed_by}) is "
                + ("not installed" if version is None else f"at version {version}")
            )
    loaded = sys.modules.get("numpy")
    numpy_version = getattr(loaded, "__version__", None) or _installed_version("numpy")
    if numpy_version is None:
        found.append("numpy is not installed")
    elif _version_tuple(numpy_version)[:2] < MIN_NUMPY:
        where = "already loaded in this session" if loaded else "installed"
        found.append(
            f"numpy {numpy_version} is {where}; TensorFlow needs numpy >= "
            f"{MIN_NUMPY[0]}.{MIN_NUMPY[1]}" + (" (restart QGIS to load the newer one)" if loaded else "")
        )
    return found


def install_command() -> str:
    """What a user types to install the packages without the plugin's button."""
    return f"make setup (as root), or in the plugin's folder {PLUGIN_ROOT}: python3 -m plugin.installer install"


def requirement_message() -> str | None:
    """One line: what is missing and how to install it; None when nothing is."""
    found = problems()
    if not found:
        return None
    return (
        "; ".join(found) + ". Install the pinned packages with the plugin's "
        f"'Install dependencies' action (Plugins > otbtf), or run {install_command()}"
    )


def require() -> None:
    """Raise :class:`DependencyError` with the fix when something is missing."""
    message = requirement_message()
    if message:
        raise DependencyError(message)
