"""Training TensorFlow models from patches images (ours or otbtf's).

Data are streamed: each batch is read from the patches images with windowed reads
(a training set larger than memory works), shuffled every epoch with the seed, and
no sample is dropped (the last batch may be smaller).

Built-in architecture (more to come): ``cnn``, a small patch classifier: one
convolutional branch per source, global pooling, a softmax over the classes. Its
receptive field is the patch size, its expression field 1. The band normalisation,
computed from the training patches, is the model's first layer, so the SavedModel
is self-contained. The model has two outputs: ``prob`` (class probabilities) and
``class`` (the class code with the highest probability, as written in the labels),
so serving ``class`` gives a class map.

The model folder holds ``savedmodel/`` (signature ``serving_default``),
``model.keras`` and ``otbtf_model.json`` (what serving reads: input names, receptive
fields, expression field, scale, class codes and names, band statistics, history).
"""

from __future__ import annotations

import base64
import datetime
import html
import io
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

import numpy as np

from . import __version__, deps, reports
from .errors import Cancelled, InputError
from .metrics import classification_html, confusion_matrix, regression_report, report
from .model_metadata import (
    METADATA_FILE,
    BandStatistics,
    ModelClass,
    ModelInput,
    ModelMetadata,
    Task,
    write_metadata,
)
from .outputs import Output, StagedOutputs, check_paths
from .patches_image import PatchesImage
from .progress import NullProgress, Progress

ARCHITECTURES = ("cnn", "unet", "regressor")
TASKS = ("auto", "classification", "regression")
READ_CHUNK = 256  # patches per read when computing statistics or predicting


@dataclass
class TrainConfig:
    train_patches: list  # one patches image per source
    train_labels: str | Path
    output_model: str | Path
    valid_patches: list | None = None
    valid_labels: str | Path | None = None
    output_report: str | Path | None = None
    architecture: str = "cnn"
    epochs: int = 20
    batch_size: int = 32
    seed: int = 0
    learning_rate: float = 1e-3
    class_weights: bool = True
    valid_fraction: float = 0.2  # held out of the training patches when no validation set is given
    tensorboard_dir: str | Path | None = None
    class_names: dict = field(default_factory=dict)  # code -> name (default: from the labels' metadata)
    initial_model: str | Path | None = None  # fine-tune: a model folder of ours or a .keras file
    freeze_layers: int = 0  # fine-tune: keep the weights of the first N layers (those with weights)
    augment: bool = False  # random flips and 90-degree rotations of the training patches
    task: str = "auto"  # auto (labels decide), classification, regression


@dataclass
class TrainResult:
    model_folder: Path
    report: dict
    report_html: Path | None
    history: dict


class _Sources:
    """Patches images of every source and their labels, checked against each other."""

    def __init__(self, patches: list, labels, what: str):
        if not patches:
            raise InputError(f"no {what} patches image given")
        self.images = [PatchesImage(p) for p in patches]
        self.labels = PatchesImage(labels)
        counts = {len(self.labels)} | {len(i) for i in self.images}
        if len(counts) != 1:
            raise InputError(f"{what} patches images and labels hold different numbers of patches: "
                             + ", ".join(f"{Path(i.path).name}: {len(i)}" for i in [*self.images, self.labels]))
        first = self.images[0]
        label_size = (self.labels.patch_width, self.labels.patch_height)
        if self.labels.bands != 1:
            raise InputError(f"{Path(self.labels.path).name}: a labels image has 1 band, not {self.labels.bands}")
        if label_size == (1, 1):
            self.task = "classification"
        elif label_size == (first.patch_width, first.patch_height):
            self.task = "segmentation"
        else:
            raise InputError(
                f"{Path(self.labels.path).name}: label patches of {label_size[0]} x {label_size[1]} px match "
                f"neither one class per patch (1 x 1) nor the patches of source 1 "
                f"({first.patch_width} x {first.patch_height}, for segmentation)")
        self.count = len(self.labels)

    def read(self, indices: np.ndarray) -> tuple[list[np.ndarray], np.ndarray]:
        """Patches of every source and labels for ``indices`` (any order)."""
        order = np.argsort(indices)
        sorted_idx = indices[order]
        runs = np.split(sorted_idx, np.flatnonzero(np.diff(sorted_idx) != 1) + 1)
        def gather(image):
            parts = [image.read(int(run[0]), int(run[-1]) + 1) for run in runs if len(run)]
            data = np.concatenate(parts) if parts else np.zeros((0,), np.float32)
            out = np.empty_like(data)
            out[order] = data
            return out
        labels = gather(self.labels)
        labels = labels.reshape(len(indices)) if self.task == "classification" else labels[..., 0]
        return [gather(i) for i in self.images], labels

    def close(self) -> None:
        for image in [*self.images, self.labels]:
            image.close()


def band_statistics(image: PatchesImage, indices: np.ndarray) -> tuple[list[float], list[float]]:
    """Mean and standard deviation per band over the given patches (streamed)."""
    total = np.zeros(image.bands)
    squares = np.zeros(image.bands)
    n = 0
    for first in range(0, len(indices), READ_CHUNK):
        chunk = np.sort(indices[first:first + READ_CHUNK])
        for run in np.split(chunk, np.flatnonzero(np.diff(chunk) != 1) + 1):
            data = image.read(int(run[0]), int(run[-1]) + 1).astype(np.float64).reshape(-1, image.bands)
            total += data.sum(axis=0)
            squares += (data ** 2).sum(axis=0)
            n += len(data)
    mean = total / max(n, 1)
    std = np.sqrt(np.maximum(squares / max(n, 1) - mean ** 2, 0))
    return [float(v) for v in mean], [float(v) for v in np.where(std > 0, std, 1.0)]


def _keras():
    deps.import_tensorflow()
    import keras

    return keras


def _class_code_layer(keras):
    @keras.saving.register_keras_serializable(package="otbtf")
    class ClassCode(keras.layers.Layer):
        """argmax of the probabilities, mapped to the class codes of the labels."""

        def __init__(self, codes, **kwargs):
            super().__init__(**kwargs)
            self.codes = [int(c) for c in codes]

        def call(self, probabilities):
            table = keras.ops.convert_to_tensor(self.codes, dtype="int32")
            return keras.ops.take(table, keras.ops.argmax(probabilities, axis=-1))

        def get_config(self):
            return {**super().get_config(), "codes": self.codes}

    return ClassCode


def _head(keras, features, n_classes, codes, target, spatial):
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


def build_cnn(keras, sources: list[dict], n_classes: int, codes: list[int], target=None):
    """The ``cnn`` patch classifier (or, with ``target`` = (mean, std), a patch regressor);
    returns (training model, served model)."""
    inputs, features = [], []
    for k, src in enumerate(sources):
        size = src["patch"]
        if size < 5:
            raise InputError(f"source {k + 1}: patches of {size} px are too small for the cnn architecture "
                             "(at least 5 px)")
        inp = keras.Input((size, size, src["bands"]), name=src["name"])
        h = keras.layers.Normalization(mean=src["mean"], variance=np.square(src["std"]).tolist(),
                                       name=f"normalise_{k + 1}")(inp)
        h = keras.layers.Conv2D(16, 3, activation="relu", name=f"conv{k + 1}_1")(h)
        h = keras.layers.Conv2D(32, 3, activation="relu", name=f"conv{k + 1}_2")(h)
        if size >= 12:
            h = keras.layers.MaxPooling2D(2, name=f"pool{k + 1}")(h)
        h = keras.layers.Conv2D(64, 3, activation="relu", padding="same", name=f"conv{k + 1}_3")(h)
        features.append(keras.layers.GlobalAveragePooling2D(name=f"features{k + 1}")(h))
        inputs.append(inp)
    deep = features[0] if len(features) == 1 else keras.layers.Concatenate(name="features")(features)
    merged = keras.layers.Dropout(0.2, name="dropout")(deep)
    probabilities, regression = _head(keras, merged, n_classes, codes, target, spatial=False)
    # "features" (the 64 values per source before the head) is served on request
    # (OUTPUT_NAMES=features): deep features for classical classifiers.
    if regression:
        return keras.Model(inputs, probabilities, name="otbtf_regressor"), \
            keras.Model(inputs, {**regression, "features": deep})
    training_model = keras.Model(inputs, probabilities, name="otbtf_cnn")
    class_code = _class_code_layer(keras)(codes, name="class")(probabilities)
    served = keras.Model(inputs, {"prob": probabilities, "class": class_code, "features": deep},
                         name="otbtf_cnn_served")
    return training_model, served


def build_unet(keras, sources: list[dict], n_classes: int, codes: list[int], target=None):
    """The ``unet`` segmenter for one source of P x P px patches (P a multiple of 4):
    an encoder-decoder with skip connections whose output is cropped to the central
    P/2 x P/2 px, away from the patch edges (receptive field P, expression field P/2:
    served block by block, tile seams cannot show)."""
    if len(sources) != 1:
        raise InputError(f"the unet architecture takes one source, not {len(sources)}")
    src = sources[0]
    size = src["patch"]
    if size % 4 or size < 16:
        raise InputError(f"the unet architecture needs patches of at least 16 px and a multiple of 4, not {size}; "
                         f"use {max(16, size // 4 * 4)}")
    crop = size // 4

    def block(h, filters, name):
        h = keras.layers.Conv2D(filters, 3, padding="same", activation="relu", name=f"{name}_a")(h)
        return keras.layers.Conv2D(filters, 3, padding="same", activation="relu", name=f"{name}_b")(h)

    inp = keras.Input((size, size, src["bands"]), name=src["name"])
    h = keras.layers.Normalization(mean=src["mean"], variance=np.square(src["std"]).tolist(), name="normalise_1")(inp)
    e1 = block(h, 16, "enc1")
    e2 = block(keras.layers.MaxPooling2D(2, name="pool1")(e1), 32, "enc2")
    bottom = block(keras.layers.MaxPooling2D(2, name="pool2")(e2), 64, "bottom")
    d2 = block(keras.layers.Concatenate(name="skip2")([keras.layers.UpSampling2D(2, name="up2")(bottom), e2]),
               32, "dec2")
    d1 = block(keras.layers.Concatenate(name="skip1")([keras.layers.UpSampling2D(2, name="up1")(d2), e1]),
               16, "dec1")
    scores, regression = _head(keras, d1, n_classes, codes, target, spatial=True)
    if regression:
        value = keras.layers.Cropping2D(crop, name="value_crop")(scores)
        return keras.Model(inp, value, name="otbtf_unet_regressor"), keras.Model(inp, {"value": value})
    probabilities = keras.layers.Cropping2D(crop, name="prob")(scores)
    training_model = keras.Model(inp, probabilities, name="otbtf_unet")
    class_code = _class_code_layer(keras)(codes, name="class")(probabilities)
    served = keras.Model(inp, {"prob": probabilities, "class": class_code}, name="otbtf_unet_served")
    return training_model, served


BUILDERS = {"cnn": build_cnn, "unet": build_unet, "regressor": build_cnn}


def dihedral(array: np.ndarray, transform: int) -> np.ndarray:
    """One of the 8 flips / 90-degree rotations of ``(h, w, ...)``: ``transform`` in 0..7."""
    turned = np.rot90(array, transform % 4, axes=(0, 1))
    return turned[:, ::-1] if transform >= 4 else turned


def _sequence(keras, sources: _Sources, indices, batch, names, label_index, seed, shuffle, crop=0,
              pixel_weights=None, augment=False):
    class Batches(keras.utils.PyDataset):
        def __init__(self):
            super().__init__(workers=1, use_multiprocessing=False)
            self.rng = np.random.default_rng(seed)
            self.augment_rng = np.random.default_rng(seed + 1)
            self.order = self.rng.permutation(indices) if shuffle else np.asarray(indices)

        def __len__(self):
            return math.ceil(len(self.order) / batch)

        def __getitem__(self, i):
            chunk = self.order[i * batch:(i + 1) * batch]
            patches, labels = sources.read(chunk)
            if augment:  # the same transform for every source's patch and its label patch
                transforms = self.augment_rng.integers(0, 8, len(chunk))
                patches = [np.stack([dihedral(p, t) for p, t in zip(ps, transforms, strict=True)]) for ps in patches]
                if labels.ndim == 3:
                    labels = np.stack([dihedral(lab, t) for lab, t in zip(labels, transforms, strict=True)])
            x = _model_inputs([p.astype(np.float32) for p in patches])
            if crop:
                labels = labels[:, crop:-crop, crop:-crop]
            y = labels.astype(np.float32) if label_index is None else label_index[labels.astype(np.int64)]
            if pixel_weights is None:
                return x, y
            return x, y, pixel_weights[y]

        def on_epoch_end(self):
            if shuffle:
                self.order = self.rng.permutation(indices)

    return Batches()


def train(config: TrainConfig, progress: Progress | None = None) -> TrainResult:
    """Train a model on patches images and write the model folder and the report."""
    progress = progress or NullProgress()
    if config.architecture not in ARCHITECTURES:
        raise InputError(f"unknown architecture {config.architecture!r}; use one of: {', '.join(ARCHITECTURES)}")
    if config.epochs < 1 or config.batch_size < 1:
        raise InputError(f"EPOCHS ({config.epochs}) and BATCH_SIZE ({config.batch_size}) must be at least 1")
    output = Path(config.output_model)
    if not output.parent.is_dir():
        raise InputError(f"output folder {str(output.parent)!r} does not exist")
    check_paths({"TRAIN_PATCHES": config.train_patches, "TRAIN_LABELS": config.train_labels,
                 "VALID_PATCHES": config.valid_patches, "VALID_LABELS": config.valid_labels,
                 "MODEL": config.initial_model},
                {"OUTPUT_MODEL": Output(output, "folder", marker=METADATA_FILE),
                 "OUTPUT_REPORT": Output(config.output_report, companions=(".json",))
                 if config.output_report else None})
    keras = _keras()
    import tensorflow as tf

    train_data = _Sources(config.train_patches, config.train_labels, "training")
    valid_data = None
    try:
        _, all_labels = train_data.read(np.arange(train_data.count))
        if config.valid_patches:
            if len(config.valid_patches) != len(config.train_patches):
                raise InputError(f"{len(config.train_patches)} training sources but {len(config.valid_patches)} "
                                 "validation sources: give one validation patches image per source")
            valid_data = _Sources(config.valid_patches, config.valid_labels, "validation")
            train_idx: np.ndarray = np.arange(train_data.count)
            valid_idx: np.ndarray = np.arange(valid_data.count)
            valid_source = valid_data
        else:
            order = np.random.default_rng(config.seed).permutation(train_data.count)
            n_valid = round(config.valid_fraction * train_data.count)
            if n_valid < 1 or n_valid >= train_data.count:
                raise InputError(f"{train_data.count} training patches: too few to hold out a validation set; "
                                 "give VALID_PATCHES1 and VALID_LABELS")
            train_idx, valid_idx = np.sort(order[n_valid:]), np.sort(order[:n_valid])
            valid_source = train_data
        layout = train_data.task  # classification: one label per patch; segmentation: label patches
        if valid_data is not None and valid_data.task != layout:
            raise InputError(f"training labels are for {layout}, validation labels for {valid_data.task}")
        if config.task not in TASKS:
            raise InputError(f"unknown task {config.task!r}; use one of: {', '.join(TASKS)}")
        values = all_labels[train_idx]
        whole = bool(np.all(np.equal(np.mod(values, 1), 0)))
        regression = config.task == "regression" or (
            config.task == "auto" and (config.architecture == "regressor" or not whole))
        if regression and config.initial_model:
            raise InputError("fine-tuning a regressor is not supported yet: train it anew")
        architecture = config.architecture
        if layout == "segmentation" and architecture != "unet" and not config.initial_model:
            if not (regression and architecture == "regressor"):
                raise InputError("the labels are patches (semantic segmentation): use ARCHITECTURE unet")
            architecture = "unet"  # a pixel regressor is the unet body with a linear output
        if layout == "classification" and architecture == "unet" and not config.initial_model:
            raise InputError("the labels are one class per patch: use ARCHITECTURE cnn (unet is for label patches)")
        task = "regression" if regression else layout
        target = None
        if regression:
            codes, names, label_index = [], {}, None
            target = (float(values.mean()), float(values.std()) or 1.0)
        else:
            codes = sorted({int(c) for c in np.unique(values)})
            if len(codes) < 2:
                raise InputError(f"the training labels hold a single class ({codes[0] if codes else 'none'}): "
                                 "there is nothing to learn; give labels with at least two classes")
            names = _class_names(config, train_data, codes)
            label_index = np.full(int(max(codes)) + 1, -1, dtype=np.int64)
            for k, code in enumerate(codes):
                label_index[code] = k
        sources = []
        for name, image in zip([f"x{k + 1}" for k in range(len(train_data.images))], train_data.images, strict=True):
            if image.patch_width != image.patch_height:
                raise InputError(f"{Path(image.path).name}: the {config.architecture} architecture needs square "
                                 "patches")
            mean, std = band_statistics(image, train_idx)
            sources.append({"name": name, "patch": image.patch_width, "bands": image.bands, "mean": mean, "std": std})
        keras.utils.set_random_seed(config.seed)
        tf.config.experimental.enable_op_determinism()
        if config.initial_model:
            training_model, served = _fine_tune_start(keras, config.initial_model, sources, codes)
            frozen = [layer for layer in training_model.layers if layer.weights][:config.freeze_layers]
            for layer in frozen:
                layer.trainable = False
            if frozen:
                progress.info("frozen: " + ", ".join(layer.name for layer in frozen))
        else:
            training_model, served = BUILDERS[architecture](keras, sources, len(codes), codes, target=target)
        efield = int(training_model.output.shape[1]) if layout == "segmentation" else 1
        crop = (sources[0]["patch"] - efield) // 2 if layout == "segmentation" else 0
        input_names = [s["name"] for s in sources]
        training_model.compile(optimizer=keras.optimizers.Adam(config.learning_rate),
                               loss="mse" if regression else "sparse_categorical_crossentropy",
                               metrics=["mae"] if regression else ["accuracy"])
        valid_labels = valid_source.read(valid_idx)[1]
        unknown = [] if regression else sorted(set(np.unique(valid_labels).tolist()) - set(codes))
        if unknown:
            raise InputError(f"validation labels hold classes absent from training: {unknown}")
        weights = pixel_weights = None
        if config.class_weights and not regression and label_index is not None:
            counts = np.bincount(label_index[all_labels[train_idx].astype(np.int64)].ravel(), minlength=len(codes))
            per_class = np.array([counts.sum() / (len(codes) * max(n, 1)) for n in counts], dtype=np.float32)
            if task == "segmentation":  # Keras' class_weight is for one label per sample: weight pixels
                pixel_weights = per_class
            else:
                weights = {k: float(w) for k, w in enumerate(per_class)}
        batches = _sequence(keras, train_data, train_idx, config.batch_size, input_names, label_index,
                            config.seed, shuffle=True, crop=crop, pixel_weights=pixel_weights,
                            augment=config.augment)
        validation = _sequence(keras, valid_source, valid_idx, config.batch_size, input_names, label_index,
                               config.seed, shuffle=False, crop=crop)
        callbacks = [_progress_callback(keras, progress, config.epochs * len(batches))]
        if config.tensorboard_dir:
            callbacks.append(keras.callbacks.TensorBoard(log_dir=str(config.tensorboard_dir)))
        fit = training_model.fit(batches, validation_data=validation, epochs=config.epochs, class_weight=weights,
                                 callbacks=callbacks, verbose=0)
        if progress.cancelled():
            raise Cancelled("training cancelled: no model was written")
        history = {key: [float(v) for v in values] for key, values in fit.history.items()}
        predicted = _predict(training_model, valid_source, valid_idx, input_names, regression)
        if crop:
            valid_labels = valid_labels[:, crop:-crop, crop:-crop]
        if regression:
            metrics = regression_report(valid_labels, predicted)
        else:
            matrix = confusion_matrix(valid_labels.astype(np.int64), np.asarray(codes)[predicted], codes)
            metrics = report(matrix, [names[c] for c in codes])
        metadata = ModelMetadata(
            created=datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            otbtf_plugin=__version__, task=cast(Task, task), architecture=architecture,
            inputs=[ModelInput(s["name"], rfield=s["patch"], bands=s["bands"],
                               band_statistics=BandStatistics(tuple(s["mean"]), tuple(s["std"]))) for s in sources],
            efield=efield, scale=1,
            outputs={"value": "predicted value, in the labels' units"} if regression else
            {"prob": "class probabilities, in the order of classes", "class": "class code"},
            # Served only when named in OUTPUT_NAMES.
            extra_outputs={"features": "deep features: the network's values before its head"}
            if isinstance(served.output, dict) and "features" in served.output else {},
            target_statistics={"mean": target[0], "std": target[1]} if target is not None else None,
            classes=[ModelClass(c, names[c]) for c in codes],
            training={"patches": len(train_idx), "validation_patches": len(valid_idx),
                      "epochs": config.epochs, "batch_size": config.batch_size, "seed": config.seed,
                      "learning_rate": config.learning_rate, "augment": config.augment,
                      "fine_tuned_from": str(config.initial_model) if config.initial_model else None,
                      "frozen_layers": config.freeze_layers if config.initial_model else 0},
            history=history,
        )
        if config.tensorboard_dir:
            _tensorboard_validation(tf, Path(config.tensorboard_dir), metrics, config.epochs)
        report_html = None
        with StagedOutputs() as staged:
            _write_model_folder(staged.folder(output, METADATA_FILE), served, metadata)
            if config.output_report:
                report_html = write_report(config.output_report, metrics, history, metadata, staged)
            staged.commit()
    finally:
        train_data.close()
        if valid_data is not None:
            valid_data.close()
    if regression:
        progress.info(f"validation: RMSE {metrics['rmse']:.4g}, MAE {metrics['mae']:.4g}, R2 {metrics['r2']:.3f}")
    else:
        progress.info(f"validation: overall accuracy {metrics['overall_accuracy']:.3f}, kappa {metrics['kappa']:.3f}")
    return TrainResult(output, metrics, report_html, history)


def _fine_tune_start(keras, path, sources: list[dict], codes: list[int]):
    """The training and served models, starting from an existing model's weights."""
    path = Path(path)
    keras_file = path / "model.keras" if path.is_dir() else path
    if keras_file.suffix != ".keras" or not keras_file.is_file():
        raise InputError(f"MODEL {str(path)!r}: fine-tuning starts from a .keras file or a model folder written by "
                         "otbtf:tensorflowmodeltrain (which holds model.keras)")
    _class_code_layer(keras)  # registered, so that safe mode can load it
    try:
        loaded = keras.saving.load_model(str(keras_file), safe_mode=True, compile=False)
    except ValueError as err:
        raise InputError(f"MODEL {str(path)!r}: cannot load it for fine-tuning ({err})") from err
    outputs = loaded.output
    probabilities = outputs["prob"] if isinstance(outputs, dict) else outputs
    if probabilities.shape[-1] != len(codes):
        raise InputError(f"MODEL {str(path)!r} predicts {probabilities.shape[-1]} classes, the labels hold "
                         f"{len(codes)}: fine-tune on the same classes")
    names = [t.name.split(":")[0] for t in loaded.inputs]
    for src, tensor, name in zip(sources, loaded.inputs, names, strict=False):
        if tuple(tensor.shape[1:]) != (src["patch"], src["patch"], src["bands"]):
            raise InputError(f"MODEL input {name} takes {tuple(tensor.shape[1:])}, the patches of {src['name']} are "
                             f"{(src['patch'], src['patch'], src['bands'])}")
    if len(names) != len(sources):
        raise InputError(f"MODEL has {len(names)} inputs, {len(sources)} sources were given")
    for src, name in zip(sources, names, strict=True):
        src["name"] = name
    training_model = keras.Model(loaded.inputs, probabilities, name="otbtf_fine_tuned")
    class_code = _class_code_layer(keras)(codes, name="class")(probabilities)
    extra = {"features": outputs["features"]} if isinstance(outputs, dict) and "features" in outputs else {}
    return training_model, keras.Model(loaded.inputs, {"prob": probabilities, "class": class_code, **extra})


def _class_names(config, data: _Sources, codes) -> dict:
    names = {int(k): str(v) for k, v in config.class_names.items()}
    from_labels = {int(code): name for name, code in data.labels.class_codes.items()}
    return {c: names.get(c) or from_labels.get(c) or str(c) for c in codes}


def _model_inputs(arrays: list):
    """Keras wants a single-input model fed an array, a multi-input one a list (input order)."""
    return arrays[0] if len(arrays) == 1 else arrays


def _predict(model, data: _Sources, indices, names, regression=False) -> np.ndarray:
    """Class indices (or values, for a regressor) of the patches ``indices``."""
    predictions = []
    for first in range(0, len(indices), READ_CHUNK):
        patches, _ = data.read(indices[first:first + READ_CHUNK])
        feeds = _model_inputs([p.astype(np.float32) for p in patches])
        output = model.predict(feeds, verbose=0)
        predictions.append(output[..., 0] if regression else np.argmax(output, axis=-1))
    return np.concatenate(predictions) if predictions else np.zeros(0, np.int64)


def _progress_callback(keras, progress: Progress, total: int):
    """A Keras callback reporting each batch and stopping after the batch when cancelled."""

    class ProgressCallback(keras.callbacks.Callback):
        done = 0

        def on_train_batch_end(self, batch, logs=None):
            self.done += 1
            progress.step(self.done, total)
            if progress.cancelled():
                self.model.stop_training = True

        def on_epoch_end(self, epoch, logs=None):
            text = ", ".join(f"{k} {v:.4f}" for k, v in (logs or {}).items())
            progress.info(f"epoch {epoch + 1}: {text}")

    return ProgressCallback()

def _tensorboard_validation(tf, folder: Path, metrics: dict, step: int) -> None:
    """The validation scores, and the confusion matrix as a table, for TensorBoard."""
    with tf.summary.create_file_writer(str(folder / "validation")).as_default():
        if "rmse" in metrics:
            for key in ("rmse", "mae", "bias", "r2"):
                tf.summary.scalar(f"validation/{key}", metrics[key], step=step)
            return
        tf.summary.scalar("validation/overall_accuracy", metrics["overall_accuracy"], step=step)
        tf.summary.scalar("validation/kappa", metrics["kappa"], step=step)
        names = [c["name"] for c in metrics["classes"]]
        rows = ["| truth \\ prediction | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
        rows += [f"| {name} | " + " | ".join(str(v) for v in row) + " |"
                 for name, row in zip(names, metrics["confusion_matrix"], strict=True)]
        tf.summary.text("validation/confusion_matrix", "\n".join(rows), step=step)


def _write_model_folder(folder: Path, served, metadata: ModelMetadata) -> None:
    """SavedModel, .keras and metadata into ``folder`` (a staged temporary folder)."""
    served.export(str(folder / "savedmodel"), verbose=False)
    served.save(folder / "model.keras")
    write_metadata(folder, metadata)


def _curves_png(history: dict) -> bytes:
    """Loss and accuracy (or MAE) per epoch, as PNG. Drawn on an Agg canvas of its own: no
    pyplot, no change of the process' matplotlib backend (QGIS has its own)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(9, 3.2))
    FigureCanvasAgg(figure)
    axes = figure.subplots(1, 2)
    second = "accuracy" if "accuracy" in history else "mae"
    for axis, key in zip(axes, ("loss", second), strict=True):
        for name, style in ((key, "-"), (f"val_{key}", "--")):
            if name in history:
                axis.plot(range(1, len(history[name]) + 1), history[name], style, label=name)
        axis.set_xlabel("epoch")
        axis.set_title(key)
        axis.legend()
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    return buffer.getvalue()


def write_report(path, metrics: dict, history: dict, metadata: ModelMetadata,
                 staged: StagedOutputs | None = None) -> Path:
    """The validation report as HTML (with the curves) and JSON beside it (same name, .json)."""
    if "rmse" in metrics:
        scores = (f"<p>RMSE <b>{metrics['rmse']:.6g}</b>, MAE <b>{metrics['mae']:.6g}</b>, bias "
                  f"{metrics['bias']:.6g}, R&sup2; <b>{metrics['r2']:.4f}</b> ({metrics['samples']} values).</p>")
    else:
        scores = classification_html(metrics)
    curves = base64.b64encode(_curves_png(history)).decode() if history else ""
    body = f"""<p>Task {html.escape(str(metadata.task))}, architecture {html.escape(str(metadata.architecture))};
{metadata.training['patches']} training and {metadata.training['validation_patches']} validation patches;
{metadata.training['epochs']} epochs.</p>
<h2>Validation</h2>
{scores}
<h2>Learning curves</h2><img alt="loss and accuracy per epoch" src="data:image/png;base64,{curves}">"""
    data = {"validation": metrics, "history": history, "task": metadata.task, "classes": metadata.class_dicts()}
    return reports.write_report(path, "Training report", body, data, staged)
