"""Which device runs a model: ``DEVICE`` (auto, cpu, gpu) against what the installed runtime
sees. ``auto`` takes a GPU when the runtime has one, else the CPU; ``gpu`` without a usable
GPU fails before any work, saying why and what to install; the log names the device used.

onnxruntime: its GPU execution providers, in this order: CUDA (the ``onnxruntime-gpu`` wheel,
Linux and Windows x86_64 with NVIDIA), ROCm (AMD), DirectML (Windows), CoreML (macOS). A
provider that is listed but cannot start (its CUDA or cuDNN libraries missing) makes
onnxruntime fall back to the CPU: that is read back from the session, not assumed.
TensorFlow: the GPUs it lists (the CUDA build, ``tensorflow[and-cuda]``, on Linux x86_64;
the plugin installs ``tensorflow-cpu``, which lists none).

Results do not depend on the device beyond float rounding (a GPU's kernels round differently).
"""

from __future__ import annotations

from typing import Literal, get_args

from ..errors import InputError

Device = Literal["auto", "cpu", "gpu"]
DEVICES: tuple[Device, ...] = get_args(Device)
GPU_PROVIDERS = ("CUDAExecutionProvider", "ROCMExecutionProvider", "DmlExecutionProvider", "CoreMLExecutionProvider")
CPU_PROVIDER = "CPUExecutionProvider"
ONNX_GPU_HELP = (
    "install onnxruntime-gpu (Linux or Windows x86_64 with an NVIDIA GPU, CUDA 12 and cuDNN 9) in place of "
    "onnxruntime, or use DEVICE auto or cpu"
)
TENSORFLOW_GPU_HELP = (
    "the plugin installs tensorflow-cpu; TensorFlow's GPU build is tensorflow[and-cuda] on Linux x86_64 with an "
    "NVIDIA GPU, or use DEVICE auto or cpu"
)


def check_device(device: str) -> Device:
    """``device`` if it is one of :data:`DEVICES`, else one line saying which are."""
    if device not in DEVICES:
        raise InputError(f"DEVICE {device!r} is not a device: use one of {', '.join(DEVICES)}")
    return device  # type: ignore[return-value]  # checked just above


def onnx_providers(available: list[str], device: Device) -> list[str]:
    """The execution providers to ask onnxruntime for, from those it has (``available``)."""
    gpus = [p for p in GPU_PROVIDERS if p in available]
    if device == "cpu" or (device == "auto" and not gpus):
        return [CPU_PROVIDER]
    if not gpus:
        raise InputError(
            f"DEVICE gpu: onnxruntime here has no GPU execution provider (it has {', '.join(available)}): "
            + ONNX_GPU_HELP
        )
    return [gpus[0], CPU_PROVIDER]


def onnx_device(asked: list[str], used: list[str], device: Device) -> str:
    """What the log says of the device a session runs on (``used``: ``session.get_providers()``);
    a GPU asked with ``gpu`` that did not start is an error."""
    gpu = asked[0] if asked[0] != CPU_PROVIDER else None
    if gpu is None:
        return "CPU"
    if gpu in used:
        return f"GPU ({gpu})"
    if device == "gpu":
        raise InputError(
            f"DEVICE gpu: onnxruntime lists {gpu} but could not start it (its libraries: CUDA, cuDNN for "
            "CUDAExecutionProvider); check them, or use DEVICE auto or cpu"
        )
    return f"CPU ({gpu} is listed but did not start)"


def tensorflow_device(gpus: list, device: Device) -> tuple[str, str]:
    """TensorFlow's device name to run under (``tf.device``) and what the log says, from the
    GPUs it lists (``tf.config.list_physical_devices("GPU")``)."""
    if device == "cpu" or (device == "auto" and not gpus):
        return "/CPU:0", "CPU"
    if not gpus:
        raise InputError("DEVICE gpu: TensorFlow here sees no GPU: " + TENSORFLOW_GPU_HELP)
    return "/GPU:0", f"GPU ({getattr(gpus[0], 'name', gpus[0])})"
