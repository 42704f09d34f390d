"""Training TensorFlow models from patches images (ours or otbtf's).

The face of the package: what scripts and the provider call. The workflow, ``train()``,
is in :mod:`.run`, in named steps; behind it: data (reads, batches, hold-out), targets
(what the labels ask; pure), architectures, schedule (early stopping, checkpoints) and
report. The workflow is imported when first asked for: importing ``training.targets``
loads no network code.
"""

from __future__ import annotations

import importlib
from typing import Any

from .targets import TASKS

__all__ = ["ARCHITECTURES", "TASKS", "TrainConfig", "TrainResult", "train"]
_LATER = {"train": ".run", "TrainConfig": ".run", "TrainResult": ".run", "ARCHITECTURES": ".architectures"}


def __getattr__(name: str) -> Any:  # PEP 562: the workflow's names, imported on first use
    if name in _LATER:
        return getattr(importlib.import_module(_LATER[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
