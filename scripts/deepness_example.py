"""A Deepness-style ONNX segmentor of the Landsat 8 sample, for the README and the screenshots.

    python3 scripts/deepness_example.py OUTPUT.onnx

A per-pixel classifier (multinomial logistic regression on the three bands, fitted on the
pixels inside the sample's polygons) written as an ONNX graph, 1 x 1 convolution then
softmax over the classes, channels first, with Deepness' metadata: model_type Segmentor,
class_names, tiles_size 256, tiles_overlap 10, seg_thresh 0, standardization_mean / _std
(after Deepness' x / 255) and resolution (3000 cm). Deepness can load it, and otbtf:tensorflowmodelserve
serves it with SOURCE1 and MODEL only. Small on purpose: what it shows is the metadata.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import rasterio
import rasterio.features
from osgeo import ogr

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
IMAGE = ROOT / "data" / "landsat8" / "LC08_224078_20200518_rgb_crop.tif"
POLYGONS = ROOT / "data" / "landsat8" / "LC08_224078_20200518_polygons.gpkg"


def training_pixels() -> tuple[np.ndarray, np.ndarray, list[str]]:
    """The bands of every pixel whose centre is inside a polygon, and its class index."""
    source = ogr.Open(str(POLYGONS))
    layer = source.GetLayer(0)
    shapes = [(f.GetGeometryRef().ExportToJson(), f.GetField("name")) for f in layer]
    names = sorted({name for _, name in shapes})
    with rasterio.open(IMAGE) as src:
        bands = src.read().astype("float64")
        burnt = rasterio.features.rasterize(
            ((json.loads(g), names.index(n) + 1) for g, n in shapes),
            out_shape=(src.height, src.width),
            transform=src.transform,
            fill=0,
        )
    inside = burnt > 0
    return bands[:, inside].T, burnt[inside] - 1, names


def main(argv: list[str]) -> int:
    from sklearn.linear_model import LogisticRegression

    from otbtf_plugin.models.runtimes import import_onnx
    from otbtf_plugin.onnx_export import write_onnx

    output = Path(argv[0])
    x, y, names = training_pixels()
    mean, std = x.mean(axis=0), x.std(axis=0)
    fitted = LogisticRegression(max_iter=2000).fit((x - mean) / std, y)
    onnx = import_onnx()
    helper = onnx.helper
    weights = fitted.coef_.astype(np.float32)[:, :, None, None]  # (classes, bands, 1, 1)
    graph = helper.make_graph(
        [
            helper.make_node("Conv", ["x", "w", "b"], ["logits"], kernel_shape=[1, 1]),
            helper.make_node("Softmax", ["logits"], ["scores"], axis=1),
        ],
        "landcover",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["n", 3, 256, 256])],
        [helper.make_tensor_value_info("scores", onnx.TensorProto.FLOAT, ["n", len(names), 256, 256])],
        [
            onnx.numpy_helper.from_array(weights, "w"),
            onnx.numpy_helper.from_array(fitted.intercept_.astype(np.float32), "b"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    write_onnx(
        model,
        output,
        {
            "model_type": "Segmentor",
            "class_names": {str(k): n for k, n in enumerate(names)},
            "tiles_size": 256,
            "tiles_overlap": 10,
            "resolution": 3000,
            # Deepness' default threshold (0.5) would send every uncertain pixel to class 0, here
            # a land-cover class, not a background: the class of the highest score instead
            "seg_thresh": 0,
            # Deepness divides by 255 first, then standardises: the training statistics, / 255
            "standardization_mean": (mean / 255).tolist(),
            "standardization_std": (std / 255).tolist(),
        },
    )
    print(f"{output}: {len(names)} classes ({', '.join(names)}), fitted on {len(y)} pixels")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
