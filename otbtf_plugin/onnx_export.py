"""A model folder of ours written as one ONNX file, for onnxruntime, Deepness and others.

The conversion is tf2onnx's (``from_function`` on the Keras model, opset 17). The file is
channels first (``[n, bands, rows, cols]``, ONNX' convention) and carries:

* ``otbtf_model``: our ``otbtf_model.json`` (receptive field, classes with their codes...),
  so that serving the file here gives what serving the folder gives;
* for a ``unet`` classifier, Deepness' keys, so that Deepness serves it too: its only output
  is the scores of the whole P x P px tile, and ``tiles_overlap`` 50 % makes Deepness keep
  the central P/2 px, which is what the folder's model keeps; ``standardization_std``
  1/255 undoes Deepness' ``x / 255`` (the band normalisation is inside the model), and
  ``seg_thresh`` 0 makes the class the highest score's, as the folder's ``class``.

Patch classifiers (``cnn``, ``regressor``) give one value per patch, which Deepness cannot
serve: their file carries our metadata only, with ``prob``, ``class`` and ``features``.

Command line: ``python3 -m otbtf_plugin.onnx_export MODEL_FOLDER OUTPUT.onnx``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import sys
from pathlib import Path

import numpy as np

from . import packages
from .errors import InputError
from .models import runtimes
from .models.metadata import METADATA_FILE, ModelMetadata, read_metadata
from .models.onnx_backend import METADATA_KEY
from .outputs import Output, StagedOutputs, check_paths, staged_or_now

OPSET = 17


def _load_keras(folder: Path):
    from .models.keras_layers import class_code_layer, keras_module

    keras = keras_module()
    class_code_layer(keras)  # registered, so that safe mode can load it
    return keras, keras.saving.load_model(str(folder / "model.keras"), safe_mode=True, compile=False)


def _import_tf2onnx():
    runtimes.import_tensorflow()
    packages.require("export")
    runtimes.import_onnx()
    import tf2onnx

    return tf2onnx


def _class_nodes(onnx, codes: list[int], scores: str, axis: int):
    """``class`` = codes[argmax(scores, axis)] (int32), as ONNX nodes and their constant."""
    helper = onnx.helper
    table = onnx.numpy_helper.from_array(np.asarray(codes, dtype=np.int32), "otbtf_class_codes")
    nodes = [
        helper.make_node("ArgMax", [scores], ["otbtf_class_index"], axis=axis, keepdims=0),
        helper.make_node("Gather", ["otbtf_class_codes", "otbtf_class_index"], ["class"], axis=0),
    ]
    return nodes, table


@contextlib.contextmanager
def _quiet(tf):
    loggers = [tf.get_logger(), logging.getLogger("tf2onnx")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


def _rename(proto, names: dict[str, str]) -> None:
    """Tensors renamed in place (TensorFlow's ``x1:0``, ``Identity_1:0`` -> ``x1``, ``prob``)."""
    graph = proto.graph
    for node in graph.node:
        node.input[:] = [names.get(n, n) for n in node.input]
        node.output[:] = [names.get(n, n) for n in node.output]
    for value in [*graph.input, *graph.output]:
        value.name = names.get(value.name, value.name)


def _deepness_keys(meta: ModelMetadata, size: int, bands: int) -> dict:
    return {
        "model_type": "Segmentor",
        "class_names": {str(k): c.name for k, c in enumerate(meta.classes)},
        "tiles_size": size,
        "tiles_overlap": 50,
        "seg_thresh": 0,
        "standardization_mean": [0.0] * bands,
        "standardization_std": [1 / 255] * bands,
    }


def keras_to_onnx(served, where: str) -> tuple:
    """A Keras model as an ONNX model, channels first (its image inputs and outputs: one
    layout for the whole file, as readers expect), tensors named as the Keras model's inputs
    and output keys, without a ``class`` output (Keras 3's argmax does not convert). Returns
    the ONNX model and the Keras model's output structure."""
    tf, tf2onnx = runtimes.import_tensorflow(), _import_tf2onnx()
    names = [t.name.split(":")[0] for t in served.inputs]
    signature = [
        tf.TensorSpec([None, *t.shape[1:]], tf.float32, name=n) for t, n in zip(served.inputs, names, strict=True)
    ]
    structure = served.output if isinstance(served.output, dict) else {"output": served.output}
    keep = [k for k in structure if k != "class"]

    @tf.function(input_signature=signature)
    def call(*inputs):
        result = served(list(inputs) if len(inputs) > 1 else inputs[0], training=False)
        result = result if isinstance(result, dict) else {"output": result}
        return {k: result[k] for k in keep}

    # Frozen first: from_function would leave the normalisation's variables as graph inputs.
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    with _quiet(tf):  # TensorFlow's "deprecated API" notes and tf2onnx's info lines: not for the user
        frozen = convert_variables_to_constants_v2(call.get_concrete_function())
    graph_def = frozen.graph.as_graph_def()
    inputs = [t.name for t in frozen.inputs if t.dtype != tf.resource]
    outputs = {name: tensor.name for name, tensor in zip(sorted(keep), frozen.outputs, strict=True)}
    images = [tensor.name for tensor in frozen.outputs if tensor.shape.rank == 4]
    try:
        with _quiet(tf):
            proto, _ = tf2onnx.convert.from_graph_def(
                graph_def,
                input_names=inputs,
                output_names=list(outputs.values()),
                opset=OPSET,
                inputs_as_nchw=[t.name for t in frozen.inputs if t.dtype != tf.resource and t.shape.rank == 4],
                outputs_as_nchw=images,
            )
    except Exception as err:  # tf2onnx's own errors: one line
        raise InputError(f"{where}: tf2onnx could not convert the model ({str(err).splitlines()[0][:300]})") from err
    _rename(proto, {**{v: k for k, v in outputs.items()}, **dict(zip(inputs, names, strict=True))})
    return proto, structure


def export_onnx(folder: str | Path, output: str | Path) -> Path:
    """Write the model folder ``folder`` (written by otbtf:tensorflowmodeltrain) as ``output``."""
    folder, output = Path(folder), Path(output)
    meta = read_metadata(folder)
    if meta is None or not (folder / "model.keras").is_file():
        raise InputError(
            f"{folder}: not a model folder written by otbtf:tensorflowmodeltrain (it needs "
            f"{METADATA_FILE} and model.keras)"
        )
    check_paths({"MODEL": folder}, {"OUTPUT": Output(output, suffixes=(".onnx",))})
    keras, served = _load_keras(folder)
    write_model(keras, served, meta, output, where=str(folder))
    return output


def write_model(
    keras, served, meta: ModelMetadata, output: Path, staged: StagedOutputs | None = None, where: str = "the model"
) -> None:
    """The served Keras model of a model folder (``meta`` its metadata) as the ONNX file
    ``output`` (in ``staged``: written with the run's other outputs)."""
    onnx = runtimes.import_onnx()
    size, bands = int(meta.inputs[0].rfield or served.inputs[0].shape[1]), int(served.inputs[0].shape[-1])
    spatial = meta.architecture == "unet" and meta.task != "regression"
    if spatial:  # the whole tile's scores, before the model's own crop: Deepness keeps the centre
        served = keras.Model(served.inputs, {"prob": served.get_layer("scores").output})
    proto, structure = keras_to_onnx(served, where)
    graph = proto.graph
    if not spatial and "prob" in structure and meta.classes and "class" in structure:
        nodes, table = _class_nodes(onnx, [c.code for c in meta.classes], "prob", axis=1)
        graph.node.extend(nodes)
        graph.initializer.append(table)
        graph.output.append(onnx.helper.make_tensor_value_info("class", onnx.TensorProto.INT32, ["n"]))
    props = {METADATA_KEY: meta.to_json(), "layout": "NCHW"}
    if spatial:
        props.update(_deepness_keys(meta, size, bands))
    write_onnx(proto, output, props, staged)


def write_onnx(proto, output: Path, props: dict, staged: StagedOutputs | None = None) -> None:
    """``proto`` with ``props`` (JSON texts, as Deepness reads them), checked, written whole or
    not at all (with ``staged``'s other outputs, or alone)."""
    onnx = runtimes.import_onnx()
    del proto.metadata_props[:]
    for key, value in props.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, json.dumps(value)
    onnx.checker.check_model(proto)
    with staged_or_now(staged) as group:
        group.file(output).write_bytes(proto.SerializeToString())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python3 -m otbtf_plugin.onnx_export", description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path, help="a model folder written by otbtf:tensorflowmodeltrain")
    parser.add_argument("output", type=Path, help="the .onnx file to write")
    args = parser.parse_args(argv)
    try:
        print(export_onnx(args.model, args.output))
    except InputError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
