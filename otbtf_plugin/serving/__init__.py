"""Serving: apply a model to rasters of any size, streamed tile by tile.

The face of the package: what scripts and the provider call. The workflow, ``serve()``,
is in :mod:`.run`; behind it: options, planning (geometry, no pixel read), inference (a
tile's input, the model, TTA), blending (OVERLAP) and output (the GeoTIFF's profile). The workflow is
imported when first asked for, so that importing ``serving.planning`` loads no tiles,
pipeline or writer.
"""

from __future__ import annotations

import importlib
from typing import Any

from .options import COMPRESSIONS, ServeOptions, ServeSource, parse_output_names, parse_user_placeholders

__all__ = [
    "COMPRESSIONS",
    "ServeOptions",
    "ServeResult",
    "ServeSource",
    "parse_output_names",
    "parse_user_placeholders",
    "scale_warnings",
    "serve",
]
_LATER = {"serve": ".run", "ServeResult": ".run", "scale_warnings": ".run"}


def __getattr__(name: str) -> Any:  # PEP 562: the workflow's names, imported on first use
    if name in _LATER:
        return getattr(importlib.import_module(_LATER[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
