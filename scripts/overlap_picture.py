#!/usr/bin/env python3
"""docs/img/overlap-seams.png: a zero-padded fully-convolutional model served over the
Landsat 8 sample in 128 px tiles, without and with OVERLAP=16, each shown as its distance
from the model run once on the whole image (white: equal; dark: off).

    python3 scripts/overlap_picture.py [output.png]
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
RGB = ROOT / "data" / "landsat8" / "LC08_224078_20200518_rgb_crop.tif"


def main(target: Path) -> None:
    import numpy as np
    import rasterio

    from otbtf_plugin.models.runtimes import import_tensorflow

    import_tensorflow()
    import keras
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from otbtf_plugin.serving import ServeOptions, ServeSource, serve

    keras.utils.set_random_seed(4)
    inp = keras.Input((None, None, 3), name="x")
    h = keras.layers.Conv2D(8, 5, padding="same", activation="relu")(keras.layers.Rescaling(1 / 5000.0)(inp))
    h = keras.layers.Conv2D(8, 5, padding="same", activation="relu")(h)
    model = keras.Model(inp, keras.layers.Conv2D(1, 5, padding="same", name="y")(h))
    with tempfile.TemporaryDirectory() as folder, rasterio.open(RGB) as src:
        image = src.read().astype("float32")
        whole = np.asarray(model(image.transpose(1, 2, 0)[None], training=False))[0, :, :, 0]
        model.save(Path(folder) / "same.keras")
        maps = {}
        for overlap in (0, 16):
            out = Path(folder) / f"served_{overlap}.tif"
            serve(
                [ServeSource(RGB)],
                Path(folder) / "same.keras",
                out,
                ServeOptions(fully_conv=True, tile_px=128, overlap=overlap),
            )
            with rasterio.open(out) as served:
                maps[overlap] = np.abs(served.read(1) - whole)
    scale = max(m.max() for m in maps.values())
    figure = Figure(figsize=(8, 5.6))
    FigureCanvasAgg(figure)
    for axis, (overlap, error) in zip(figure.subplots(1, 2), maps.items(), strict=True):
        axis.imshow(error[:512, :384], cmap="Greys", vmin=0, vmax=scale / 4)
        axis.set_title(f"OVERLAP={overlap}: largest difference {error.max():.3g}")
        axis.set_xticks([])
        axis.set_yticks([])
    figure.suptitle("A zero-padded model in 128 px tiles: distance from one call on the whole image")
    figure.tight_layout(rect=(0, 0, 1, 0.94))
    figure.savefig(target, dpi=80)


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "docs" / "img" / "overlap-seams.png")
