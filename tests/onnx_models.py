"""Small ONNX models built in the tests with onnx's helper, and their numpy references.

Every model is channels first (``[n, bands, rows, cols]``, PyTorch's convention) unless
said otherwise; the references take and give channels-first arrays of one image."""

import json
from pathlib import Path

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from otbtf_plugin.models.runtimes import import_onnx

onnx = import_onnx()
helper, TensorProto, numpy_helper = onnx.helper, onnx.TensorProto, onnx.numpy_helper
OPSET = 17


def _weights(seed: int, out: int, bands: int, kernel: int):
    rng = np.random.default_rng(seed)
    return (
        rng.normal(0, 0.5, (out, bands, kernel, kernel)).astype(np.float32),
        rng.normal(0, 0.1, out).astype(np.float32),
    )


def save(model, path: Path, metadata: dict | None = None) -> Path:
    for key, value in (metadata or {}).items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, json.dumps(value)  # JSON texts, as Deepness documents
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def conv_model(
    bands=3, out=2, kernel=3, seed=0, size=None, pad=False, softmax=False, nhwc=False, extra_input=False, batch=None
):
    """Conv (valid, or zero-padded to keep the size with ``pad``) + ReLU (+ softmax over the
    channels). ``size``: a fixed input size (else any). ``nhwc``: the model takes and gives
    channels last (transposes inside). ``extra_input``: a scalar input ``gain`` multiplies
    the output. ``batch``: a fixed batch size (many exports have 1)."""
    w, b = _weights(seed, out, bands, kernel)
    p = kernel // 2 if pad else 0
    x_name = "x_nhwc" if nhwc else "x"
    nodes = []
    if nhwc:
        nodes.append(helper.make_node("Transpose", ["x_nhwc"], ["x"], perm=[0, 3, 1, 2]))
    nodes += [
        helper.make_node("Conv", ["x", "w", "b"], ["c"], kernel_shape=[kernel, kernel], pads=[p] * 4),
        helper.make_node("Relu", ["c"], ["r"]),
    ]
    last = "r"
    if softmax:
        nodes.append(helper.make_node("Softmax", [last], ["s"], axis=1))
        last = "s"
    if extra_input:
        nodes.append(helper.make_node("Mul", [last, "gain"], ["g"]))
        last = "g"
    if nhwc:
        nodes.append(helper.make_node("Transpose", [last], ["y"], perm=[0, 2, 3, 1]))
    else:
        nodes.append(helper.make_node("Identity", [last], ["y"]))
    h = size if size else "h"
    out_h = (size - kernel + 1 + 2 * p) if size else "oh"
    in_shape = ["n", h, h, bands] if nhwc else ["n", bands, h, h]
    out_shape = ["n", out_h, out_h, out] if nhwc else ["n", out, out_h, out_h]
    if not size:
        in_shape = ["n", "h", "w", bands] if nhwc else ["n", bands, "h", "w"]
        out_shape = ["n", "oh", "ow", out] if nhwc else ["n", out, "oh", "ow"]
    if batch:
        in_shape, out_shape = [batch, *in_shape[1:]], [batch, *out_shape[1:]]
    inputs = [helper.make_tensor_value_info(x_name, TensorProto.FLOAT, in_shape)]
    if extra_input:
        inputs.append(helper.make_tensor_value_info("gain", TensorProto.FLOAT, [1]))
    graph = helper.make_graph(
        nodes,
        "conv",
        inputs,
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, out_shape)],
        [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])


def conv_reference(image, bands=3, out=2, kernel=3, seed=0, pad=False, softmax=False, gain=1.0):
    """``conv_model``'s output for ``image`` ``(bands, h, w)``, computed with numpy."""
    w, b = _weights(seed, out, bands, kernel)
    x = image.astype(np.float64)
    if pad:
        p = kernel // 2
        x = np.pad(x, ((0, 0), (p, p), (p, p)))
    windows = sliding_window_view(x, (kernel, kernel), axis=(1, 2))  # (bands, oh, ow, k, k)
    y = np.einsum("cijuv,ocuv->oij", windows, w.astype(np.float64)) + b[:, None, None]
    y = np.maximum(y, 0)
    if softmax:
        e = np.exp(y - y.max(axis=0))
        y = e / e.sum(axis=0)
    return y * gain


def patch_classifier(bands=3, size=5, classes=3, seed=0):
    """Flatten + Gemm + Softmax over a ``size`` x ``size`` patch: ``[n, bands, s, s] -> [n, classes]``."""
    rng = np.random.default_rng(seed)
    w = rng.normal(0, 0.01, (bands * size * size, classes)).astype(np.float32)
    b = rng.normal(0, 0.1, classes).astype(np.float32)
    nodes = [
        helper.make_node("Flatten", ["x"], ["f"]),
        helper.make_node("Gemm", ["f", "w", "b"], ["g"]),
        helper.make_node("Softmax", ["g"], ["prob"], axis=1),
    ]
    graph = helper.make_graph(
        nodes,
        "patches",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", bands, size, size])],
        [helper.make_tensor_value_info("prob", TensorProto.FLOAT, ["n", classes])],
        [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)]), w, b


def with_operator(op: str, domain: str = "com.example.nothere"):
    """A model calling an operator nobody implements."""
    graph = helper.make_graph(
        [helper.make_node(op, ["x"], ["y"], domain=domain)],
        "odd",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3, "h", "w"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 3, "h", "w"])],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET), helper.make_opsetid(domain, 1)])


def vector_model():
    """Input ``[n, 3]``: not an image."""
    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])],
        "vec",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 3])],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])


# A Deepness segmentor's metadata (JSON texts, as Deepness documents them) and what
# Deepness computes with it.
DEEPNESS = {
    "model_type": "Segmentor",
    "class_names": {"0": "background", "1": "field", "2": "urban", "3": "water"},
    "tiles_size": 32,
    "tiles_overlap": 25,
    "standardization_mean": [0.4, 0.45, 0.5],
    "standardization_std": [0.2, 0.25, 0.3],
    "resolution": 3000,
    "seg_thresh": 0.4,
}


def deepness_reference(u8, tile=32, stride=24, mean=(0.4, 0.45, 0.5), std=(0.2, 0.25, 0.3), threshold=0.4):
    """What Deepness computes, written from its code: the raster's extent grown by half the
    overlap (zeros outside), tiles of ``tile`` px every ``stride`` px, each scaled to 0-1,
    standardised and scored, its central ``stride`` px kept; scores below the threshold set
    to 0, the class their argmax. Returns (scores, classes) over the whole raster."""
    bands, height, width = u8.shape
    cut = (tile - stride) // 2
    rows, cols = -(-height // stride), -(-width // stride)
    padded = np.zeros((bands, (rows - 1) * stride + tile, (cols - 1) * stride + tile), u8.dtype)
    padded[:, cut : cut + height, cut : cut + width] = u8
    scores = np.zeros((4, rows * stride, cols * stride))
    for r in range(rows):
        for c in range(cols):
            x = np.float32(padded[:, r * stride : r * stride + tile, c * stride : c * stride + tile] * (1.0 / 255.0))
            x = (x - np.float32(mean)[:, None, None]) / np.float32(std)[:, None, None]
            y = conv_reference(x, out=4, pad=True, softmax=True)
            scores[:, r * stride : (r + 1) * stride, c * stride : (c + 1) * stride] = y[
                :, cut : cut + stride, cut : cut + stride
            ]
    scores = scores[:, :height, :width]
    kept = np.where(scores < threshold, 0, scores)
    return scores, np.argmax(kept, axis=0)


def two_branch_model(seed=0):
    """Two image inputs of 3 and 1 bands (any size), two outputs: ``a`` = ReLU(conv3x3(x1) +
    conv3x3(x2)) (valid, 2 channels) and ``b`` = -a."""
    w1, b1 = _weights(seed, 2, 3, 3)
    w2, _ = _weights(seed + 1, 2, 1, 3)
    nodes = [
        helper.make_node("Conv", ["x1", "w1", "b1"], ["c1"], kernel_shape=[3, 3]),
        helper.make_node("Conv", ["x2", "w2"], ["c2"], kernel_shape=[3, 3]),
        helper.make_node("Add", ["c1", "c2"], ["s"]),
        helper.make_node("Relu", ["s"], ["a"]),
        helper.make_node("Neg", ["a"], ["b"]),
    ]
    graph = helper.make_graph(
        nodes,
        "two",
        [
            helper.make_tensor_value_info("x1", TensorProto.FLOAT, ["n", 3, "h", "w"]),
            helper.make_tensor_value_info("x2", TensorProto.FLOAT, ["n", 1, "h", "w"]),
        ],
        [
            helper.make_tensor_value_info("a", TensorProto.FLOAT, ["n", 2, "oh", "ow"]),
            helper.make_tensor_value_info("b", TensorProto.FLOAT, ["n", 2, "oh", "ow"]),
        ],
        [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(b1, "b1"), numpy_helper.from_array(w2, "w2")],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])


def two_branch_reference(x1, x2, seed=0):
    w1, b1 = _weights(seed, 2, 3, 3)
    w2, _ = _weights(seed + 1, 2, 1, 3)
    conv = [
        np.einsum(
            "cijuv,ocuv->oij", sliding_window_view(x.astype(np.float64), (3, 3), axis=(1, 2)), w.astype(np.float64)
        )
        for x, w in ((x1, w1), (x2, w2))
    ]
    a = np.maximum(conv[0] + conv[1] + b1[:, None, None], 0)
    return a, -a


def strided_model(bands=3, seed=0):
    """A 4 x 4 convolution with stride 2 (valid): spacing scale 2."""
    w, b = _weights(seed, 2, bands, 4)
    conv = helper.make_node("Conv", ["x", "w", "b"], ["y"], kernel_shape=[4, 4], strides=[2, 2])
    graph = helper.make_graph(
        [conv],
        "strided",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", bands, "h", "w"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 2, "oh", "ow"])],
        [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])


def strided_reference(image, bands=3, seed=0):
    w, b = _weights(seed, 2, bands, 4)
    windows = sliding_window_view(image.astype(np.float64), (4, 4), axis=(1, 2))[:, ::2, ::2]
    return np.einsum("cijuv,ocuv->oij", windows, w.astype(np.float64)) + b[:, None, None]


def grid_detector(tile=64, layout="YOLO_Ultralytics", classes=1, cell=8, angle=0.0, objectness=None):
    """A detector whose objects are known by construction: the tile is cut into ``cell`` px
    cells, and each cell proposes one box, the cell itself (centre at the cell's centre, size
    ``cell``), scored for class ``k`` by the mean of band ``k + 1`` over the cell (/ 255, as
    Deepness prepares the input). Outputs in ``layout`` (Deepness' det_type): Ultralytics and
    v9 ``[1, 4 + C, N]``; v5/v7 and v6 ``[1, N, 5 + C]`` (objectness: the best class score,
    or ``objectness`` everywhere); oriented ``[1, 4 + C + 1, N]`` with ``angle``;
    segmentation ``[1, 4 + C + 1, N]`` (one coefficient, 10) and prototypes ``[1, 1, T/4,
    T/4]`` of 10: each mask is its box. Cells are numbered row by row."""
    n = (tile // cell) ** 2
    centres = (np.arange(tile // cell) + 0.5) * cell
    cy, cx = np.meshgrid(centres, centres, indexing="ij")
    boxes = np.stack([cx.ravel(), cy.ravel(), np.full(n, cell), np.full(n, cell)]).astype(np.float32)[None]
    inits = [numpy_helper.from_array(boxes, "boxes"), numpy_helper.from_array(np.array([1, 1, n], np.int64), "shape")]
    nodes = []
    scores = []
    for k in range(classes):
        inits.append(numpy_helper.from_array(np.array([k], np.int64), f"b{k}"))
        inits.append(numpy_helper.from_array(np.array([k + 1], np.int64), f"e{k}"))
        inits.append(numpy_helper.from_array(np.array([1], np.int64), f"axis{k}"))
        nodes += [
            helper.make_node("Slice", ["x", f"b{k}", f"e{k}", f"axis{k}"], [f"band{k}"]),
            helper.make_node(
                "AveragePool", [f"band{k}"], [f"pool{k}"], kernel_shape=[cell, cell], strides=[cell, cell]
            ),
            helper.make_node("Reshape", [f"pool{k}", "shape"], [f"score{k}"]),
        ]
        scores.append(f"score{k}")
    pieces = ["boxes"]
    extra_outputs = []
    if layout in ("YOLO_v5_or_v7_default", "YOLO_v6"):
        if objectness is None:
            nodes.append(helper.make_node("Max", scores, ["objectness"]))
        else:
            inits.append(numpy_helper.from_array(np.full((1, 1, n), objectness, np.float32), "objectness"))
        pieces.append("objectness")
    pieces += scores
    if layout == "YOLO_Ultralytics_obb":
        inits.append(numpy_helper.from_array(np.full((1, 1, n), angle, np.float32), "angle"))
        pieces.append("angle")
    if layout == "YOLO_Ultralytics_segmentation":
        inits.append(numpy_helper.from_array(np.full((1, 1, n), 10.0, np.float32), "coefficient"))
        pieces.append("coefficient")
        inits.append(numpy_helper.from_array(np.array([0.0], np.float32), "zero"))
        inits.append(numpy_helper.from_array(np.array([10.0], np.float32), "ten"))
        nodes += [
            helper.make_node("AveragePool", ["band0"], ["small"], kernel_shape=[4, 4], strides=[4, 4]),
            helper.make_node("Mul", ["small", "zero"], ["nothing"]),
            helper.make_node("Add", ["nothing", "ten"], ["protos"]),
        ]
        extra_outputs.append(helper.make_tensor_value_info("protos", TensorProto.FLOAT, [1, 1, tile // 4, tile // 4]))
    nodes.append(helper.make_node("Concat", pieces, ["rows"], axis=1))
    width = 4 + (1 if layout in ("YOLO_v5_or_v7_default", "YOLO_v6") else 0) + classes
    width += 1 if layout in ("YOLO_Ultralytics_obb", "YOLO_Ultralytics_segmentation") else 0
    if layout in ("YOLO_v5_or_v7_default", "YOLO_v6"):
        nodes.append(helper.make_node("Transpose", ["rows"], ["detections"], perm=[0, 2, 1]))
        shape = [1, n, width]
    else:
        nodes.append(helper.make_node("Identity", ["rows"], ["detections"]))
        shape = [1, width, n]
    graph = helper.make_graph(
        nodes,
        "grid_detector",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, tile, tile])],
        [helper.make_tensor_value_info("detections", TensorProto.FLOAT, shape), *extra_outputs],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])


def superresolution_model(bands=3, upscale=2, size=32, seed=0):
    """Conv 3 x 3 (zero-padded, 3 channels) + ReLU, then each pixel repeated ``upscale`` times
    along each axis (Resize, nearest): a super-resolution model whose output is known."""
    w, b = _weights(seed, 3, bands, 3)
    nodes = [
        helper.make_node("Conv", ["x", "w", "b"], ["c"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("Resize", ["r", "", "scales"], ["y"], mode="nearest"),
    ]
    inits = [
        numpy_helper.from_array(w, "w"),
        numpy_helper.from_array(b, "b"),
        numpy_helper.from_array(np.array([1, 1, upscale, upscale], np.float32), "scales"),
    ]
    graph = helper.make_graph(
        nodes,
        "superresolution",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, bands, size, size])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, size * upscale, size * upscale])],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
