"""Importing TensorFlow and onnxruntime the way QGIS can live with (otbtf_plugin.models.runtimes)."""

import os
import re
import subprocess
import sys
import textwrap

import pytest

from common import ROOT
from otbtf_plugin.models import runtimes


def test_a_plain_import_of_tensorflow_takes_the_safe_path(monkeypatch):
    """Once protected, a plain ``import tensorflow`` runs TensorFlow's loader with the dlopen
    flags of import_tensorflow (RTLD_LOCAL | RTLD_DEEPBIND), whoever imports it."""
    import importlib.machinery

    seen = {}

    class Loader:
        def create_module(self, spec):
            return None

        def exec_module(self, module):
            seen["flags"] = sys.getdlopenflags()
            seen["global_flags_module_blocked"] = sys.modules.get(runtimes.TF_GLOBAL_FLAGS_MODULE, "absent") is None

    class Finder:
        def find_spec(self, name, path=None, target=None):
            return importlib.machinery.ModuleSpec(name, Loader()) if name == "tensorflow" else None

    others = [f for f in sys.meta_path if not isinstance(f, runtimes.SafeTensorflowImport)]  # tests/common.py's
    monkeypatch.setattr(sys, "meta_path", [Finder(), *others])
    monkeypatch.delitem(sys.modules, "tensorflow", raising=False)
    monkeypatch.delitem(sys.modules, runtimes.TF_GLOBAL_FLAGS_MODULE, raising=False)
    before = sys.getdlopenflags()
    runtimes.protect_tensorflow_imports()
    runtimes.protect_tensorflow_imports()  # once only
    assert sum(isinstance(f, runtimes.SafeTensorflowImport) for f in sys.meta_path) == 1
    try:
        import tensorflow  # noqa: F401
    finally:
        runtimes.unprotect_tensorflow_imports()
        sys.modules.pop("tensorflow", None)
    assert seen["flags"] & os.RTLD_LOCAL == os.RTLD_LOCAL and seen["flags"] & os.RTLD_DEEPBIND
    assert seen["global_flags_module_blocked"]
    assert sys.getdlopenflags() == before
    assert not any(isinstance(f, runtimes.SafeTensorflowImport) for f in sys.meta_path)


QUIET_RUN = textwrap.dedent("""\
    import sys
    sys.path.insert(0, {root!r})
    print("before", file=sys.stderr, flush=True)
    from otbtf_plugin.models.runtimes import import_tensorflow
    import_tensorflow()
    import keras, numpy as np
    class Batches(keras.utils.PyDataset):
        def __len__(self):
            return 2
        def __getitem__(self, i):
            return np.zeros((4, 8, 8, 3), "float32"), np.zeros(4, "int64")
    inp = keras.Input((8, 8, 3))
    model = keras.Model(inp, keras.layers.Dense(2, activation="softmax")(keras.layers.Flatten()(inp)))
    model.compile("adam", "sparse_categorical_crossentropy")
    model.fit(Batches(), epochs=1, verbose=0)
    import os
    print("level", os.environ.get("TF_CPP_MIN_LOG_LEVEL"), file=sys.stderr)
    print("after", file=sys.stderr)
""")

# What TensorFlow's C++ side prints at TF_CPP_MIN_LOG_LEVEL 0 on every x86-64 processor: lines
# in absl's format (I/W/E + month-day, "I0000 00:00:..."), and absl's note that logging is not
# initialised. Which notices come (oneDNN's on Intel, generator_dataset_op's on AMD EPYC)
# depends on the processor, so none is named.
TF_LOG_LINE = re.compile(r"^[IWEF]\d{4} \d\d:\d\d:\d\d|absl::InitializeLog")


@pytest.mark.parametrize("level", [None, "0"])
def test_tensorflow_stays_quiet_unless_asked(level):
    """Importing TensorFlow and training print nothing of TensorFlow's own (its load notices,
    info lines); other stderr lines pass. TF_CPP_MIN_LOG_LEVEL set by the user: all of it."""
    pytest.importorskip("tensorflow")
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    if level is not None:
        env["TF_CPP_MIN_LOG_LEVEL"] = level
    err = subprocess.run(
        [sys.executable, "-c", QUIET_RUN.format(root=str(ROOT))], capture_output=True, text=True, check=True, env=env
    ).stderr
    lines = [line for line in err.splitlines() if line.strip()]
    if level is None:
        assert lines == ["before", "level 3", "after"], lines
    else:
        assert lines[0] == "before" and lines[-2:] == ["level 0", "after"], lines
        assert any(TF_LOG_LINE.search(line) for line in lines[1:-2]), lines
