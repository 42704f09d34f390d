"""The small Keras models tests serve, built one way everywhere: seeded, inputs named, the
input rescaled to about 0..1 first. Engine and QGIS tests import it (``from models import
...``); tests whose expected values come from the model itself (``model.predict`` on the
whole image) do not depend on the weights."""

import json
from pathlib import Path

import pytest


def _keras():
    return pytest.importorskip("keras")


def patch_classifier(
    size: int = 16,
    bands: int = 3,
    classes: int = 2,
    name: str = "x",
    seed: int = 0,
    conv: int = 0,
    scale: float = 1 / 5000.0,
    as_dict: bool = False,
):
    """A patch classifier: ``size`` x ``size`` x ``bands`` -> softmax ``prob`` over ``classes``
    (a Conv2D of ``conv`` 3 x 3 filters first when ``conv``); ``as_dict``: outputs ``{"prob": ...}``."""
    keras = _keras()
    keras.utils.set_random_seed(seed)
    inp = keras.Input((size, size, bands), name=name)
    h = keras.layers.Rescaling(scale)(inp)
    if conv:
        h = keras.layers.Conv2D(conv, 3, activation="relu")(h)
    out = keras.layers.Dense(classes, activation="softmax", name="prob")(keras.layers.Flatten()(h))
    return keras.Model(inp, {"prob": out} if as_dict else out)


def fcn(
    bands: int = 3,
    kernels: tuple[int, int] = (5, 3),
    filters: tuple[int, int] = (5, 2),
    stride: int = 1,
    seed: int = 1,
    name: str = "x",
    scale: float = 1 / 5000.0,
    features: bool = False,
):
    """A fully-convolutional model: conv ``kernels[0]`` (``stride``, relu, layer ``c1``) then conv
    ``kernels[1]`` (output ``y``): context ``kernels[0] - 1 + (kernels[1] - 1) * stride``.
    ``features``: outputs ``{"y": ..., "feat": c1}``."""
    keras = _keras()
    keras.utils.set_random_seed(seed)
    inp = keras.Input((None, None, bands), name=name)
    h = keras.layers.Rescaling(scale)(inp)
    h = keras.layers.Conv2D(filters[0], kernels[0], strides=stride, activation="relu", name="c1")(h)
    y = keras.layers.Conv2D(filters[1], kernels[1], name="y")(h)
    return keras.Model(inp, {"y": y, "feat": h} if features else y)


def block_model(seed: int = 8):
    """A fixed-size model: 16 x 16 px in, the central 8 x 8 px block out ('same' convolutions,
    then a crop of 4 px each side), output ``y`` of 2 channels."""
    keras = _keras()
    keras.utils.set_random_seed(seed)
    inp = keras.Input((16, 16, 3), name="x")
    h = keras.layers.Conv2D(4, 3, padding="same", activation="relu")(keras.layers.Rescaling(1 / 5000.0)(inp))
    h = keras.layers.Conv2D(2, 3, padding="same")(h)
    return keras.Model(inp, keras.layers.Cropping2D(4, name="y")(h))


def saved(model, path: Path) -> Path:
    """The model as a ``.keras`` file."""
    model.save(path)
    return path


def model_folder(model, folder: Path, metadata: dict | None = None) -> Path:
    """The model as a SavedModel folder (``savedmodel/`` and, when given, ``otbtf_model.json``
    beside it; without metadata the folder is the SavedModel itself)."""
    folder.mkdir(parents=True, exist_ok=True)
    if metadata is None:
        model.export(str(folder), verbose=False)
        return folder
    model.export(str(folder / "savedmodel"), verbose=False)
    (folder / "otbtf_model.json").write_text(json.dumps(metadata))
    return folder
