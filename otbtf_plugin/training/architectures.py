"""The built-in networks, and the start of a fine-tuning run.

Every builder returns two Keras models on the same layers: the *training* model (one
output, what the loss sees) and the *served* model (named outputs: ``prob`` and ``class``
for classifiers, ``value`` for regressors, ``features`` on request). The band normalisation,
computed from the training patches, is the first layer, so the SavedModel is self-contained.

- ``cnn``: a small patch classifier: a convolutional branch per source, global pooling,
  a softmax over the classes. Receptive field: the patch; expression field 1.
- ``regressor``: the cnn body with one linear output in the labels' units.
- ``unet``: an encoder-decoder for label patches whose output is the central half of the
  patch (expression field P/2: served block by block, tile seams cannot show).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Literal, get_args

import numpy as np

from ..errors import InputError
from ..models.keras_layers import class_code_layer, keras_module
from ..models.metadata import ModelInput

__all__ = [
    "ARCHITECTURES",
    "BUILDERS",
    "build_cnn",
    "build_unet",
    "class_code_layer",
    "fine_tune_start",
    "keras_module",
]

Architecture = Literal["cnn", "unet", "regressor"]
ARCHITECTURES: tuple[Architecture, ...] = get_args(Architecture)


def _normalise(keras, inp, source: ModelInput, name: str):
    stats = source.band_statistics
    if stats is None:
        raise ValueError(f"input {source.name}: a network is built with the band statistics of its training data")
    return keras.layers.Normalization(mean=list(stats.mean), variance=np.square(stats.std).tolist(), name=name)(inp)


def _head(keras, features, n_classes, target, spatial):
    """Classification: softmax ``prob`` and the ``class`` code; regression: ``value`` in
    the labels' units (the network predicts standardised targets)."""
    if target is not None:  # regression
        mean, std = target
        layer = keras.layers.Conv2D(1, 1, name="raw") if spatial else keras.layers.Dense(1, name="raw")
        raw = layer(features)
        value = keras.layers.Rescaling(std, offset=mean, name="value")(raw)
        return value, {"value": value}
    if spatial:
        probabilities = keras.layers.Conv2D(n_classes, 1, activation="softmax", name="scores")(features)
    else:
        probabilities = keras.layers.Dense(n_classes, activation="softmax", name="prob")(features)
    return probabilities, None


def build_cnn(keras, sources: list[ModelInput], n_classes: int, codes: list[int], target=None):
    """The ``cnn`` patch classifier (or, with ``target`` = (mean, std), a patch regressor);
    returns (training model, served model)."""
    inputs, features = [], []
    for k, src in enumerate(sources):
        size = int(src.rfield or 0)
        if size < 5:
            raise InputError(
                f"source {k + 1}: patches of {size} px are too small for the cnn architecture (at least 5 px)"
            )
        inp = keras.Input((size, size, src.bands), name=src.name)
        h = _normalise(keras, inp, src, f"normalise_{k + 1}")
        h = keras.layers.Conv2D(16, 3, activation="relu", name=f"conv{k + 1}_1")(h)
        h = keras.layers.Conv2D(32, 3, activation="relu", name=f"conv{k + 1}_2")(h)
        if size >= 12:
            h = keras.layers.MaxPooling2D(2, name=f"pool{k + 1}")(h)
        h = keras.layers.Conv2D(64, 3, activation="relu", padding="same", name=f"conv{k + 1}_3")(h)
        features.append(keras.layers.GlobalAveragePooling2D(name=f"features{k + 1}")(h))
        inputs.append(inp)
    deep = features[0] if len(features) == 1 else keras.layers.Concatenate(name="features")(features)
    # Half of the features dropped while training: on held-out polygons of nc_landsat7 the cnn
    # scored 0.730 against 0.710 with 0.2 (README, scripts/measure_accuracy.py).
    merged = keras.layers.Dropout(0.5, name="dropout")(deep)
    probabilities, regression = _head(keras, merged, n_classes, target, spatial=False)
    # "features" (the 64 values per source before the head) is served on request
    # (OUTPUT_NAMES=features): deep features for classical classifiers.
    if regression:
        return keras.Model(inputs, probabilities, name="otbtf_regressor"), keras.Model(
            inputs, {**regression, "features": deep}
        )
    training_model = keras.Model(inputs, probabilities, name="otbtf_cnn")
    class_code = class_code_layer(keras)(codes, name="class")(probabilities)
    served = keras.Model(
        inputs, {"prob": probabilities, "class": class_code, "features": deep}, name="otbtf_cnn_served"
    )
    return training_model, served


def build_unet(keras, sources: list[ModelInput], n_classes: int, codes: list[int], target=None):
    """The ``unet`` segmenter for one source of P x P px patches (P a multiple of 4):
    an encoder-decoder with skip connections whose output is cropped to the central
    P/2 x P/2 px, away from the patch edges (receptive field P, expression field P/2)."""
    if len(sources) != 1:
        raise InputError(f"the unet architecture takes one source, not {len(sources)}")
    src = sources[0]
    size = int(src.rfield or 0)
    if size % 4 or size < 16:
        raise InputError(
            f"the unet architecture needs patches of at least 16 px and a multiple of 4, not {size}; "
            f"use {max(16, size // 4 * 4)}"
        )
    crop = size // 4

    def block(h, filters, name):
        h = keras.layers.Conv2D(filters, 3, padding="same", activation="relu", name=f"{name}_a")(h)
        return keras.layers.Conv2D(filters, 3, padding="same", activation="relu", name=f"{name}_b")(h)

    inp = keras.Input((size, size, src.bands), name=src.name)
    h = _normalise(keras, inp, src, "normalise_1")
    e1 = block(h, 16, "enc1")
    e2 = block(keras.layers.MaxPooling2D(2, name="pool1")(e1), 32, "enc2")
    bottom = block(keras.layers.MaxPooling2D(2, name="pool2")(e2), 64, "bottom")
    d2 = block(
        keras.layers.Concatenate(name="skip2")([keras.layers.UpSampling2D(2, name="up2")(bottom), e2]), 32, "dec2"
    )
    d1 = block(keras.layers.Concatenate(name="skip1")([keras.layers.UpSampling2D(2, name="up1")(d2), e1]), 16, "dec1")
    scores, regression = _head(keras, d1, n_classes, target, spatial=True)
    if regression:
        value = keras.layers.Cropping2D(crop, name="value_crop")(scores)
        return keras.Model(inp, value, name="otbtf_unet_regressor"), keras.Model(inp, {"value": value})
    probabilities = keras.layers.Cropping2D(crop, name="prob")(scores)
    training_model = keras.Model(inp, probabilities, name="otbtf_unet")
    class_code = class_code_layer(keras)(codes, name="class")(probabilities)
    served = keras.Model(inp, {"prob": probabilities, "class": class_code}, name="otbtf_unet_served")
    return training_model, served


BUILDERS = {"cnn": build_cnn, "unet": build_unet, "regressor": build_cnn}


def fine_tune_start(keras, path, sources: list[ModelInput], codes: list[int]):
    """(training model, served model, sources named as the model's inputs), starting from an
    existing model's weights."""
    path = Path(path)
    keras_file = path / "model.keras" if path.is_dir() else path
    if keras_file.suffix != ".keras" or not keras_file.is_file():
        raise InputError(
            f"MODEL {str(path)!r}: fine-tuning starts from a .keras file or a model folder written by "
            "otbtf:tensorflowmodeltrain (which holds model.keras)"
        )
    class_code_layer(keras)  # registered, so that safe mode can load it
    try:
        loaded = keras.saving.load_model(str(keras_file), safe_mode=True, compile=False)
    except ValueError as err:
        raise InputError(f"MODEL {str(path)!r}: cannot load it for fine-tuning ({err})") from err
    outputs = loaded.output
    probabilities = outputs["prob"] if isinstance(outputs, dict) else outputs
    if probabilities.shape[-1] != len(codes):
        raise InputError(
            f"MODEL {str(path)!r} predicts {probabilities.shape[-1]} classes, the labels hold "
            f"{len(codes)}: fine-tune on the same classes"
        )
    names = [t.name.split(":")[0] for t in loaded.inputs]
    for src, tensor, name in zip(sources, loaded.inputs, names, strict=False):
        if tuple(tensor.shape[1:]) != (src.rfield, src.rfield, src.bands):
            raise InputError(
                f"MODEL input {name} takes {tuple(tensor.shape[1:])}, the patches of {src.name} are "
                f"{(src.rfield, src.rfield, src.bands)}"
            )
    if len(names) != len(sources):
        raise InputError(f"MODEL has {len(names)} inputs, {len(sources)} sources were given")
    renamed = [replace(src, name=name) for src, name in zip(sources, names, strict=True)]
    training_model = keras.Model(loaded.inputs, probabilities, name="otbtf_fine_tuned")
    class_code = class_code_layer(keras)(codes, name="class")(probabilities)
    extra = {"features": outputs["features"]} if isinstance(outputs, dict) and "features" in outputs else {}
    served = keras.Model(loaded.inputs, {"prob": probabilities, "class": class_code, **extra})
    return training_model, served, renamed
