"""Importing the heavy runtimes (TensorFlow, onnxruntime, onnx) the way QGIS can live with.

QGIS' executables put the system's libprotobuf-lite and libsqlite3 in the global symbol
scope; libraries that bundle their own copies (TensorFlow, onnx) must bind to theirs:
they are loaded RTLD_LOCAL | RTLD_DEEPBIND. TensorFlow is also kept quiet (its C++ log
and load notices stay off the terminal and the QGIS log). Each runtime is imported on
first use, after :func:`packages.require` said the packages of that feature are there.
"""

from __future__ import annotations

import contextlib
import importlib.abc
import os
import re
import sys
import threading

from .. import packages

TF_GLOBAL_FLAGS_MODULE = "tensorflow.python.pywrap_dlopen_global_flags"


def isolate_tensorflow_symbols() -> bool:
    """Make TensorFlow load its shared libraries with RTLD_LOCAL.

    The tensorflow-cpu wheel asks for RTLD_GLOBAL (through the module above), which
    puts the SQLite copy bundled in libtensorflow_cc into the process' global symbol
    scope: Qt's SQLite driver then calls it on QGIS' own databases, and QGIS crashes
    on exit (QgsAuthManager closing its database). When that module cannot be
    imported, TensorFlow loads RTLD_LOCAL and works the same. Returns False when
    TensorFlow was already imported the global way (by another plugin): too late.
    """
    if "tensorflow" in sys.modules:
        return sys.modules.get(TF_GLOBAL_FLAGS_MODULE) is None
    sys.modules[TF_GLOBAL_FLAGS_MODULE] = None  # type: ignore[assignment]  # its import now fails: TensorFlow stays local
    return True


def import_tensorflow():
    """Import TensorFlow the way QGIS can live with, and return the module.

    QGIS' executables link the system's libprotobuf-lite and libsqlite3, which are in
    the global symbol scope: TensorFlow's bundled protobuf and SQLite would bind to
    them ("File already exists in database" abort at import, crashes on exit). So
    TensorFlow is imported with RTLD_LOCAL (see :func:`isolate_tensorflow_symbols`)
    and RTLD_DEEPBIND: its libraries use their own symbols first.
    """
    packages.require("tensorflow")
    if "tensorflow" not in sys.modules:
        isolate_tensorflow_symbols()
        with _local_deep_binding(), quiet_tensorflow():
            import tensorflow  # noqa: F401  (heavy and optional: imported here only)
    return sys.modules["tensorflow"]


# What TensorFlow's libraries print while they load, before its log level applies: notices
# about oneDNN and CPU instructions, and absl's note that logging is not initialised.
TF_LOAD_NOTICES = re.compile(
    r"oneDNN custom operations are on|cpu_feature_guard|To enable the following "
    r"instructions|rebuild TensorFlow with the appropriate|before absl::InitializeLog"
)
TF_LOG_LEVEL = "TF_CPP_MIN_LOG_LEVEL"


@contextlib.contextmanager
def quiet_tensorflow():
    """TensorFlow's C++ log kept off the terminal and the QGIS log: its level is set to errors
    the user can act on only (3: its harmless "NodeDef mentions attribute" errors, info and
    warnings are dropped; real failures reach the user as Python exceptions), and the notices
    its libraries print while loading are filtered out of the process' stderr. A user who
    set ``TF_CPP_MIN_LOG_LEVEL`` asked for TensorFlow's log: nothing is changed or filtered.
    Every other line written to stderr meanwhile goes through at once."""
    if TF_LOG_LEVEL in os.environ:
        yield
        return
    os.environ[TF_LOG_LEVEL] = "3"  # read by TensorFlow only, when it logs
    with _filtered_stderr(TF_LOAD_NOTICES):
        yield


@contextlib.contextmanager
def _filtered_stderr(noise: re.Pattern):
    """File descriptor 2 (where C++ libraries write) through a pipe: lines matching ``noise``
    are dropped, the others written to the real stderr as they come."""
    try:
        sys.stderr.flush()
        real = os.dup(2)
    except (OSError, ValueError, AttributeError):  # no stderr at all: nothing to filter
        yield
        return
    read_end, write_end = os.pipe()

    def forward():
        with os.fdopen(read_end, "rb") as lines:
            for line in lines:
                if not noise.search(line.decode("utf-8", "replace")):
                    os.write(real, line)

    thread = threading.Thread(target=forward, name="otbtf-stderr", daemon=True)
    thread.start()
    os.dup2(write_end, 2)
    os.close(write_end)
    try:
        yield
    finally:
        with contextlib.suppress(OSError, ValueError, AttributeError):
            sys.stderr.flush()
        os.dup2(real, 2)  # the pipe's last writer is gone: the thread reads to its end
        thread.join(5)
        if not thread.is_alive():  # else a child still holds the pipe: the thread keeps writing to ``real``
            os.close(real)


@contextlib.contextmanager
def _local_deep_binding():
    """Shared libraries loaded inside the block bind RTLD_LOCAL | RTLD_DEEPBIND."""
    flags = sys.getdlopenflags()
    sys.setdlopenflags(flags | os.RTLD_LOCAL | getattr(os, "RTLD_DEEPBIND", 0))
    try:
        yield
    finally:
        sys.setdlopenflags(flags)


class _SafeTensorflowLoader:
    """Runs TensorFlow's own loader with :func:`import_tensorflow`'s dlopen flags."""

    def __init__(self, loader):
        self.loader = loader

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module):
        # "tensorflow" is in sys.modules already (the import system puts it there first)
        sys.modules.setdefault(TF_GLOBAL_FLAGS_MODULE, None)  # type: ignore[arg-type]  # None blocks that import
        with _local_deep_binding(), quiet_tensorflow():
            self.loader.exec_module(module)


class SafeTensorflowImport(importlib.abc.MetaPathFinder):
    """A finder that makes a plain ``import tensorflow`` (or ``import keras``, which imports
    it) take the safe path of :func:`import_tensorflow`: inside QGIS, the default path
    aborts the whole application (protobuf's "File already exists in database")."""

    def find_spec(self, name, path=None, target=None):
        if name != "tensorflow":
            return None
        others = [f for f in sys.meta_path if f is not self]
        for finder in others:
            find = getattr(finder, "find_spec", None)
            spec = find(name, path, target) if find else None
            if spec is not None:
                if spec.loader is not None and hasattr(spec.loader, "exec_module"):
                    spec.loader = _SafeTensorflowLoader(spec.loader)
                return spec
        return None


def protect_tensorflow_imports() -> None:
    """From now on, every import of TensorFlow in this process takes the safe path (the
    QGIS plugin calls this when it loads; :func:`unprotect_tensorflow_imports` on unload)."""
    if not any(isinstance(f, SafeTensorflowImport) for f in sys.meta_path):
        sys.meta_path.insert(0, SafeTensorflowImport())


def unprotect_tensorflow_imports() -> None:
    sys.meta_path[:] = [f for f in sys.meta_path if not isinstance(f, SafeTensorflowImport)]


def import_onnxruntime():
    """The ``onnxruntime`` module (its libraries bound to their own symbols)."""
    packages.require("onnx")
    if "onnxruntime" not in sys.modules:
        with _local_deep_binding():
            import onnxruntime  # noqa: F401  (optional: imported here only)
    return sys.modules["onnxruntime"]


def import_onnx():
    """The ``onnx`` module, which bundles its own protobuf (bound to its own symbols)."""
    packages.require("onnx_files")
    if "onnx" not in sys.modules:
        with _local_deep_binding():
            import onnx  # noqa: F401  (optional: imported here only)
    return sys.modules["onnx"]
