"""Loading models to serve, and asking them about their tensors.

Accepted: an ONNX file (run with onnxruntime: :mod:`onnx_model`), a TensorFlow SavedModel
folder (signature ``serving_default``; otbtf's and Keras' ``model.export()`` ones
included), a Keras ``.keras`` file (loaded in safe mode: a Lambda layer is refused unless
``allow_lambda``), and a model folder of ours: a SavedModel plus ``otbtf_model.json``
(written by training), whose metadata gives receptive fields, expression field, scale,
input names, band normalisation and class names, so that nobody has to type them. Every
model is seen channels last (:mod:`served_model`).

TensorFlow and onnxruntime are imported on first use, after checking that they are installed.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from ..packages import Feature
from . import runtimes
from .devices import Device, check_device, tensorflow_device
from .keras_layers import class_code_layer, keras_module
from .metadata import METADATA_FILE, read_metadata
from .served import LAYOUTS, Layout, ModelError, ServedModel, TensorInfo, channels_last, resolve_layout

__all__ = ["LAYOUTS", "ModelError", "ServedModel", "TensorInfo", "load_model", "model_path_problem", "tensorflow"]


def tensorflow():
    """The ``tensorflow`` module, or a :class:`~otbtf_plugin.errors.DependencyError` with the fix."""
    return runtimes.import_tensorflow()


def _spec_info(name: str, spec) -> TensorInfo:
    shape = (
        tuple(None if d is None else int(d) for d in spec.shape.as_list()) if spec.shape.rank is not None else (None,)
    )
    return TensorInfo(name, np.dtype(spec.dtype.as_numpy_dtype).name, shape)


def _load_savedmodel(path: Path) -> ServedModel:
    tf = tensorflow()
    try:
        loaded = tf.saved_model.load(str(path))
    except (OSError, ValueError, RuntimeError) as err:
        raise ModelError(f"{path}: not a loadable TensorFlow SavedModel ({err})") from err
    signatures = getattr(loaded, "signatures", {})
    if "serving_default" not in signatures:
        raise ModelError(
            f"{path}: the SavedModel has no 'serving_default' signature; it has: "
            f"{', '.join(signatures) or 'none'}. Export it with one (Keras: model.export(path))"
        )
    function = signatures["serving_default"]
    _, kwargs = function.structured_input_signature
    inputs = [_spec_info(name, spec) for name, spec in kwargs.items()]
    # By name: the signature's dict comes back in no fixed order, and band order must not vary.
    outputs = [_spec_info(name, spec) for name, spec in sorted(function.structured_outputs.items())]
    input_dtypes = {t.name: t.dtype for t in inputs}

    def call(feeds):
        result = function(**{name: tf.constant(value, dtype=input_dtypes[name]) for name, value in feeds.items()})
        return {name: value.numpy() for name, value in result.items()}

    model = ServedModel(path, "savedmodel", inputs, outputs, _call=call)
    model._keep = loaded  # the concrete function needs its object alive
    return model


def _load_keras(path: Path, allow_lambda: bool) -> ServedModel:
    keras = keras_module()
    class_code_layer(keras)  # the layer our training's model.keras holds, registered for safe mode
    if not zipfile.is_zipfile(path):
        raise ModelError(
            f"{path}: not a Keras 3 model file (a .keras file is a zip archive; this one is damaged, "
            "empty or of another format): save the model again with model.save('name.keras')"
        )
    try:
        model = keras.saving.load_model(str(path), safe_mode=not allow_lambda)
    except (ValueError, TypeError, KeyError, OSError, zipfile.BadZipFile) as err:
        if "Lambda" in str(err) or "safe_mode" in str(err):
            raise ModelError(
                f"{path}: the model holds a Lambda layer, whose Python code would run when loading it; "
                "this is refused unless you trust the file and allow it (ALLOW_LAMBDA)"
            ) from err
        raise ModelError(
            f"{path}: not a loadable Keras model ({str(err).splitlines()[0] if str(err) else err!r})"
        ) from err
    inputs = [TensorInfo(t.name.split(":")[0], np.dtype(t.dtype).name, tuple(t.shape)) for t in model.inputs]
    structure = model.output
    if isinstance(structure, dict):  # built with named outputs: the call returns that dict
        names, tensors = list(structure), list(structure.values())
    else:
        tensors = list(structure) if isinstance(structure, (list, tuple)) else [structure]
        names = list(getattr(model, "output_names", None) or [f"output_{k}" for k in range(len(tensors))])
    outputs = [TensorInfo(name, np.dtype(t.dtype).name, tuple(t.shape)) for name, t in zip(names, tensors, strict=True)]
    input_names = [t.name for t in inputs]

    def call(feeds):
        args = [feeds[name] for name in input_names]
        result = model(args if len(args) > 1 else args[0], training=False)
        if isinstance(result, dict):
            return {name: np.asarray(value) for name, value in result.items()}
        if not isinstance(result, (list, tuple)):
            result = [result]
        return {name: np.asarray(value) for name, value in zip(names, result, strict=True)}

    return ServedModel(path, "keras", inputs, outputs, _call=call)


def load_model(
    path: str | Path, allow_lambda: bool = False, layout: Layout = "auto", device: Device = "auto"
) -> ServedModel:
    """Load an ONNX file, a SavedModel folder, a model folder of ours, or a ``.keras`` file;
    seen channels last whatever its own layout (``layout``: auto, NHWC or NCHW), run on
    ``device`` (see :mod:`.devices`)."""
    path = Path(path)
    check_device(device)
    if path.is_file() and path.suffix.lower() == ".onnx":
        from .onnx_backend import load_onnx

        return load_onnx(path, layout, device)
    if path.is_file() and path.suffix == ".keras":
        model = _load_keras(path, allow_lambda)
    elif path.is_dir() and (path / "saved_model.pb").is_file():
        model = _load_savedmodel(path)
    elif path.is_dir() and (path / METADATA_FILE).is_file() and (path / "savedmodel" / "saved_model.pb").is_file():
        model = _load_savedmodel(path / "savedmodel")
        model.path = path
    else:
        raise ModelError(
            f"{path} is not a model: give an ONNX file (.onnx), a TensorFlow SavedModel folder (with "
            "saved_model.pb), a model folder written by otbtf:tensorflowmodeltrain, or a .keras file"
        )
    model.metadata = read_metadata(path) if path.is_dir() else None
    model = _on_device(model, device)
    found, how = resolve_layout(model, layout, "NHWC", guess=False)
    if found == "NCHW":
        model = channels_last(model)
        model.notes.append(f"channels first (NCHW), {how}")
    return model


def _on_device(model: ServedModel, device: Device) -> ServedModel:
    """A TensorFlow model's calls placed on the device chosen from the GPUs TensorFlow lists."""
    tf = tensorflow()
    name, said = tensorflow_device(tf.config.list_physical_devices("GPU"), device)
    call = model._call
    assert call is not None  # noqa: S101  # both TensorFlow loaders give one

    def placed(feeds: dict) -> dict:
        with tf.device(name):
            return call(feeds)

    model._call, model.device = placed, said
    return model


def model_feature(path: str | Path) -> Feature:
    """The packages a model needs (``packages.FEATURES``): an ``.onnx`` file onnxruntime alone,
    anything else TensorFlow."""
    return "onnx" if str(path).lower().endswith(".onnx") else "tensorflow"


def model_path_problem(path: str | Path) -> str | None:
    """Why ``path`` cannot be a model, without loading it (cheap: for dialogs)."""
    path = Path(path)
    if not path.exists():
        return f"the model {str(path)!r} does not exist"
    if path.is_file():
        return (
            None
            if path.suffix.lower() in (".keras", ".onnx")
            else f"{path.name}: a model file must be an .onnx or a .keras file (or give a SavedModel folder)"
        )
    if (path / "saved_model.pb").is_file() or (path / "savedmodel" / "saved_model.pb").is_file():
        return None
    return (
        f"{str(path)!r} is not a model: give an ONNX file (.onnx), a TensorFlow SavedModel folder (with "
        "saved_model.pb), a model folder written by otbtf:tensorflowmodeltrain, or a .keras file"
    )
