"""ONNX models, run with onnxruntime on the CPU, behind the same :class:`ServedModel` as
TensorFlow's: every serving mode and option works unchanged.

Tensors are read from the file: unknown (symbolic) sizes are ``None``; a channels-first
model (PyTorch's exports, Deepness' zoo) is recognised from its inputs' sizes (or told
with ``layout``) and seen channels last. Deepness metadata, when the file has it, is
applied (:mod:`deepness`).
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import numpy as np

from ..raster import cpu_cores
from . import deepness, runtimes
from .devices import Device, onnx_device, onnx_providers
from .metadata import ModelMetadata
from .served import Layout, ModelError, ServedModel, TensorInfo, channels_last, resolve_layout

METADATA_KEY = "otbtf_model"  # our model folder's otbtf_model.json, in files written by onnx_export

# onnxruntime's tensor types -> numpy's
_TYPES = {
    "tensor(float)": "float32",
    "tensor(double)": "float64",
    "tensor(float16)": "float16",
    "tensor(uint8)": "uint8",
    "tensor(int8)": "int8",
    "tensor(uint16)": "uint16",
    "tensor(int16)": "int16",
    "tensor(int32)": "int32",
    "tensor(int64)": "int64",
    "tensor(bool)": "bool",
}


def _first_line(err: Exception) -> str:
    text = " ".join(str(err).split())
    # onnxruntime prefixes its messages with "[ONNXRuntimeError] : 2 : INVALID_ARGUMENT : "
    return text.split(" : ")[-1][:300] if "ONNXRuntimeError" in text else text[:300]


def _info(arg, where: str) -> TensorInfo:
    dtype = _TYPES.get(arg.type)
    if dtype is None:
        raise ModelError(
            f"{where}: tensor {arg.name} is of type {arg.type}, which serving does not handle "
            f"(numbers only: {', '.join(t[7:-1] for t in _TYPES)})"
        )
    shape = tuple(d if isinstance(d, int) and d > 0 else None for d in (arg.shape or []))
    return TensorInfo(arg.name, dtype, shape)


def _load_cuda_libraries(ort) -> None:
    """CUDA and cuDNN from the NVIDIA packages the installer put beside onnxruntime-gpu
    (``--gpu``): onnxruntime finds them only when loaded first. Where they are not, the CUDA
    libraries of the system are used, or onnxruntime runs on the CPU and the log says so."""
    preload = getattr(ort, "preload_dlls", None)  # onnxruntime-gpu >= 1.21
    if preload is not None:
        with contextlib.suppress(Exception):
            preload(directory="")  # the nvidia packages on sys.path, then the system's folders


def onnx_session(path: Path, device: Device = "auto") -> tuple[ServedModel, dict[str, str]]:
    """An ``.onnx`` file's session as a served model with its tensors as the file has them (no
    layout change), on ``device`` (see :mod:`.devices`), and the file's metadata map."""
    ort = runtimes.import_onnxruntime()
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3  # errors reach the user as exceptions; no warnings on the terminal
    options.intra_op_num_threads = cpu_cores()  # every core this process may use (taskset, containers)
    # its threads sleep between calls instead of spinning: the readers and the writer need those cores
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    try:
        providers = onnx_providers(ort.get_available_providers(), device)
        if "CUDAExecutionProvider" in providers:
            _load_cuda_libraries(ort)
        session = ort.InferenceSession(str(path), sess_options=options, providers=providers)
    except Exception as err:  # onnxruntime's own exception types: say it in one line
        raise ModelError(
            f"{path.name}: not a usable ONNX model ({_first_line(err)}); check that the file is "
            "complete and was exported with standard operators"
        ) from err
    where = path.name
    inputs = [_info(a, where) for a in session.get_inputs()]
    outputs = [_info(a, where) for a in session.get_outputs()]
    names = [t.name for t in outputs]
    types = {t.name: np.dtype(t.dtype) for t in inputs}

    def call(feeds: dict) -> dict:
        given = {name: np.ascontiguousarray(value, dtype=types[name]) for name, value in feeds.items() if name in types}
        try:
            values = session.run(names, given)
        except Exception as err:
            raise ModelError(f"{where}: onnxruntime could not run the model ({_first_line(err)})") from err
        return dict(zip(names, values, strict=True))

    model = ServedModel(path, "onnx", inputs, outputs, _call=call, _keep=session)
    model.device = onnx_device(providers, session.get_providers(), device)
    return model, dict(session.get_modelmeta().custom_metadata_map)


def load_onnx(path: Path, layout: Layout = "auto", device: Device = "auto") -> ServedModel:
    """An ``.onnx`` file as a served model (one onnxruntime session, on ``device``: see
    :mod:`.devices`), channels last, served the Deepness way when it carries Deepness' keys."""
    model, custom = onnx_session(path, device)
    where = path.name
    ours = _our_metadata(custom, where)
    written = _json_value(custom, "layout", where)  # written by our export
    if layout == "auto" and written in ("NCHW", "NHWC"):
        found, how = written, "as the file says"
    else:
        found, how = resolve_layout(model, layout, "NCHW", guess=True)
    if found == "NCHW":
        model = channels_last(model)
    model.notes.append(f"{'channels first (NCHW)' if found == 'NCHW' else 'channels last (NHWC)'}, {how}")
    settings = deepness.read_settings(custom, where)
    if settings is not None:
        model = deepness.adapt(model, settings, ours)
    elif ours is not None:
        model.metadata = ours
    return model


def _json_value(custom: dict, key: str, where: str):
    """A metadata value our export wrote (a JSON text), or None when the file has none."""
    text = custom.get(key)
    if text is None:
        return None
    try:
        return json.loads(text)
    except ValueError as err:
        raise ModelError(f"{where}: its {key!r} metadata is not JSON ({err})") from err


def _our_metadata(custom: dict, where: str) -> ModelMetadata | None:
    """The ``otbtf_model.json`` our export keeps in the file, if it does."""
    data = _json_value(custom, METADATA_KEY, where)
    return None if data is None else ModelMetadata.from_json(data, f"{where} ({METADATA_KEY})")
