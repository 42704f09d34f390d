"""A toy Deepness-style ONNX detector of the Landsat 8 sample, for the README's screenshot.

    python3 scripts/detector_example.py OUTPUT.onnx

Not a trained model: each 4 x 4 px cell (120 m) of a 64 px tile proposes itself as an object,
scored by how bright the cell is over the three bands (a sigmoid of their mean after
Deepness' ``x / 255`` and ``(x - 33) / 1``), with an Ultralytics head (``[1, 4 + 1, N]``) and
Deepness' metadata: model_type Detector, det_type YOLO_Ultralytics, class_names, tiles_size 64,
tiles_overlap 25, det_conf 0.5, det_iou_thresh 0.4, resolution 3000 cm. What it shows is the
workflow: a detector file in, one polygon per object out.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
TILE, CELL = 64, 4


def cell_detector(onnx, body: list, inits: list, score_logits: str, tile: int, cell: int, metadata: dict):
    """A detector whose every ``cell`` px cell of a ``tile`` px tile proposes itself as an object
    (an Ultralytics head, ``[1, 4 + 1, N]``), scored by the sigmoid of ``score_logits`` (one
    channel, ``tile`` px) averaged over the cell; ``body`` computes it from the input ``images``
    (``[1, 3, tile, tile]``). ``metadata``: Deepness' keys, written as JSON."""
    helper, numpy_helper, tensor = onnx.helper, onnx.numpy_helper, onnx.TensorProto
    n = (tile // cell) ** 2
    centres = (np.arange(tile // cell) + 0.5) * cell
    cy, cx = np.meshgrid(centres, centres, indexing="ij")
    boxes = np.stack([cx.ravel(), cy.ravel(), np.full(n, cell), np.full(n, cell)]).astype("float32")[None]
    inits = [
        *inits,
        numpy_helper.from_array(boxes, "boxes"),
        numpy_helper.from_array(np.array([1, 1, n], "int64"), "shape"),
    ]
    nodes = [
        *body,
        helper.make_node("AveragePool", [score_logits], ["cells"], kernel_shape=[cell, cell], strides=[cell, cell]),
        helper.make_node("Sigmoid", ["cells"], ["score"]),
        helper.make_node("Reshape", ["score", "shape"], ["scores"]),
        helper.make_node("Concat", ["boxes", "scores"], ["detections"], axis=1),
    ]
    graph = helper.make_graph(
        nodes,
        "cell_detector",
        [helper.make_tensor_value_info("images", tensor.FLOAT, [1, 3, tile, tile])],
        [helper.make_tensor_value_info("detections", tensor.FLOAT, [1, 5, n])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    for key, value in metadata.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, json.dumps(value)
    onnx.checker.check_model(model)
    return model


def main(output: str) -> None:
    from otbtf_plugin.models.runtimes import import_onnx

    onnx = import_onnx()
    numpy_helper, helper = onnx.numpy_helper, onnx.helper
    inits = [
        numpy_helper.from_array(np.full((1, 3, 1, 1), 3.0 / 3, "float32"), "mean_weights"),  # 3 x the mean
        numpy_helper.from_array(np.array([-6.0], "float32"), "offset"),  # brighter than 2 (x / 255 > 35)
    ]
    body = [
        helper.make_node("Conv", ["images", "mean_weights"], ["brightness"], kernel_shape=[1, 1]),
        helper.make_node("Add", ["brightness", "offset"], ["logits"]),
    ]
    metadata = {
        "model_type": "Detector",
        "det_type": "YOLO_Ultralytics",
        "class_names": {"0": "bright cell"},
        "tiles_size": TILE,
        "tiles_overlap": 25,
        "standardization_mean": [33.0] * 3,
        "standardization_std": [1.0] * 3,
        "det_conf": 0.5,
        "det_iou_thresh": 0.4,
        "resolution": 3000,
    }
    onnx.save(cell_detector(onnx, body, inits, "logits", TILE, CELL, metadata), output)
    print(f"wrote {output}")


if __name__ == "__main__":
    main(sys.argv[1])
