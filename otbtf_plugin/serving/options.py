"""Serving's parameters: the sources, the options, and the text forms users type
(USER_PLACEHOLDERS, OUTPUT_NAMES)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, get_args

from ..assignments import parse_assignments
from ..errors import InputError
from ..models.devices import Device
from ..models.served import Layout

Compression = Literal["zstd", "deflate", "lzw", "none"]
COMPRESSIONS: tuple[Compression, ...] = get_args(Compression)


@dataclass
class ServeSource:
    """One input raster and how it feeds the model."""

    path: str | Path
    rfield: int = 0  # receptive field in this source's pixels (0: from the model)
    placeholder: str = ""  # model input name ("": from the model)
    nodata: float | None = None  # overrides the raster's own


@dataclass
class ServeOptions:
    output_names: list[str] = field(default_factory=list)  # empty: every model output
    user_placeholders: dict[str, object] = field(default_factory=dict)
    fully_conv: bool = False
    efield: int = 0  # 0: from the model
    scale: int = 0  # 0: from the model (1 if it cannot say)
    background: float = 0.0
    pad: bool = False  # cover the whole reference extent (inputs padded with nodata or 0)
    tile_px: int = 0  # output tile size (0: from the memory budget)
    batch_size: int = 0  # patches per model call (0: from the memory budget)
    memory_mb: int = 512
    allow_lambda: bool = False
    compress: Compression = "zstd"  # zstd (fast), deflate (read by any GeoTIFF software), lzw, none
    tta: bool = False  # test-time augmentation: the mean over the 8 flips / 90-degree rotations
    overlap: int = 0  # output pixels shared by neighbouring tiles, blended (fully-convolutional serving)
    layout: Layout = "auto"  # the model's own layout: auto (read from an ONNX model's sizes), NHWC or NCHW
    device: Device = "auto"  # auto (a GPU the runtime sees, else the CPU), cpu, gpu (models.devices)


def parse_user_placeholders(text: str) -> dict[str, object]:
    """``"dropout=0.1;training=false;w=[0.2,0.5]"`` -> ``{"dropout": 0.1, ...}``."""
    return {
        name: _parse_value(name, raw)
        for name, raw in parse_assignments(text, "USER_PLACEHOLDERS", "dropout=0.1").items()
    }


def _parse_value(name: str, raw: str):
    lowered = raw.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if raw.startswith("[") and raw.endswith("]"):
        return [_parse_value(name, part.strip()) for part in raw[1:-1].split(",") if part.strip()]
    try:
        return int(raw)
    except ValueError:
        pass
    try:
        return float(raw)
    except ValueError:
        raise InputError(
            f"user placeholder {name}: {raw!r} is not a number, a boolean (true/false) or a list like [0.2,0.5]"
        ) from None


def parse_output_names(text: str) -> list[str]:
    return [name.strip() for name in (text or "").split(",") if name.strip()]
