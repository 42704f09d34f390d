"""The training data: patches images of every source and their labels, read in batches.

Data are streamed: each batch is read from the patches images with windowed reads (a
training set larger than memory works), shuffled every epoch with the seed, and no sample
is dropped (the last batch may be smaller).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Literal

import numpy as np

from ..errors import InputError
from ..grid import dihedral
from ..patches_image import PatchesImage

READ_CHUNK = 256  # patches per read when computing statistics or predicting

Layout = Literal["classification", "segmentation"]  # one label per patch, or label patches


class TrainingSet:
    """Patches images of every source and their labels, checked against each other."""

    layout: Layout

    def __init__(self, patches: list, labels, what: str):
        if not patches:
            raise InputError(f"no {what} patches image given")
        self.images = [PatchesImage(p) for p in patches]
        self.labels = PatchesImage(labels)
        counts = {len(self.labels)} | {len(i) for i in self.images}
        if len(counts) != 1:
            self.close()
            raise InputError(f"{what} patches images and labels hold different numbers of patches: "
                             + ", ".join(f"{Path(i.path).name}: {len(i)}" for i in [*self.images, self.labels]))
        first = self.images[0]
        label_size = (self.labels.patch_width, self.labels.patch_height)
        if self.labels.bands != 1:
            self.close()
            raise InputError(f"{Path(self.labels.path).name}: a labels image has 1 band, not {self.labels.bands}")
        if label_size == (1, 1):
            self.layout = "classification"
        elif label_size == (first.patch_width, first.patch_height):
            self.layout = "segmentation"
        else:
            self.close()
            raise InputError(
                f"{Path(self.labels.path).name}: label patches of {label_size[0]} x {label_size[1]} px match "
                f"neither one class per patch (1 x 1) nor the patches of source 1 "
                f"({first.patch_width} x {first.patch_height}, for segmentation)")
        self.count = len(self.labels)

    def read(self, indices: np.ndarray) -> tuple[list[np.ndarray], np.ndarray]:
        """Patches of every source and labels for ``indices`` (any order)."""
        order = np.argsort(indices)
        sorted_idx = indices[order]
        runs = _runs(sorted_idx)

        def gather(image):
            parts = [image.read(int(run[0]), int(run[-1]) + 1) for run in runs if len(run)]
            data = np.concatenate(parts) if parts else np.zeros((0,), np.float32)
            out = np.empty_like(data)
            out[order] = data
            return out

        labels = gather(self.labels)
        labels = labels.reshape(len(indices)) if self.layout == "classification" else labels[..., 0]
        return [gather(i) for i in self.images], labels

    def read_labels(self, indices: np.ndarray) -> np.ndarray:
        """The labels of ``indices`` (sorted), without reading the patches."""
        parts = [self.labels.read(int(run[0]), int(run[-1]) + 1) for run in _runs(indices) if len(run)]
        labels = np.concatenate(parts) if parts else np.zeros((0, 1, 1, 1), np.float32)
        return labels.reshape(len(indices)) if self.layout == "classification" else labels[..., 0]

    def class_names(self) -> dict[int, str]:
        """Class names written in the labels' metadata: code -> name."""
        return {int(code): name for name, code in self.labels.class_codes.items()}

    def close(self) -> None:
        for image in [*self.images, self.labels]:
            image.close()


def _runs(sorted_indices: np.ndarray) -> list[np.ndarray]:
    """Consecutive runs of sorted indices: each is one windowed read."""
    return np.split(sorted_indices, np.flatnonzero(np.diff(sorted_indices) != 1) + 1)


def hold_out(count: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(training, validation) indices: ``fraction`` of ``count`` patches drawn with ``seed``
    for validation, both sorted."""
    order = np.random.default_rng(seed).permutation(count)
    n_valid = round(fraction * count)
    if n_valid < 1 or n_valid >= count:
        raise InputError(f"{count} training patches: too few to hold out a validation set; "
                         "give VALID_PATCHES1 and VALID_LABELS")
    return np.sort(order[n_valid:]), np.sort(order[:n_valid])


def band_statistics(image: PatchesImage, indices: np.ndarray) -> tuple[list[float], list[float]]:
    """Mean and standard deviation per band over the given patches (streamed)."""
    total = np.zeros(image.bands)
    squares = np.zeros(image.bands)
    n = 0
    for first in range(0, len(indices), READ_CHUNK):
        for run in _runs(np.sort(indices[first:first + READ_CHUNK])):
            data = image.read(int(run[0]), int(run[-1]) + 1).astype(np.float64).reshape(-1, image.bands)
            total += data.sum(axis=0)
            squares += (data ** 2).sum(axis=0)
            n += len(data)
    mean = total / max(n, 1)
    std = np.sqrt(np.maximum(squares / max(n, 1) - mean ** 2, 0))
    return [float(v) for v in mean], [float(v) for v in np.where(std > 0, std, 1.0)]


def model_inputs(arrays: list):
    """Keras wants a single-input model fed an array, a multi-input one a list (input order)."""
    return arrays[0] if len(arrays) == 1 else arrays


def batches(keras, data: TrainingSet, indices, batch: int, label_index, seed: int, shuffle: bool,
            label_span: slice | None = None, pixel_weights=None, augment: bool = False):
    """A Keras dataset of (inputs, labels[, pixel weights]) batches of the patches ``indices``.

    ``label_index`` maps class codes to the model's class indices (None: regression values);
    ``label_span`` cuts label patches to the model's output block (rows and columns);
    ``augment`` applies one random flip/rotation to a patch of every source and its label patch."""

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
            patches, labels = data.read(chunk)
            if augment:  # the same transform for every source's patch and its label patch
                transforms = self.augment_rng.integers(0, 8, len(chunk))
                patches = [np.stack([dihedral(p, t) for p, t in zip(ps, transforms, strict=True)]) for ps in patches]
                if labels.ndim == 3:
                    labels = np.stack([dihedral(lab, t) for lab, t in zip(labels, transforms, strict=True)])
            x = model_inputs([p.astype(np.float32) for p in patches])
            if label_span is not None:
                labels = labels[:, label_span, label_span]
            y = labels.astype(np.float32) if label_index is None else label_index[labels.astype(np.int64)]
            if pixel_weights is None:
                return x, y
            return x, y, pixel_weights[y]

        def on_epoch_end(self):
            if shuffle:
                self.order = self.rng.permutation(indices)

    return Batches()


def predict(model, data: TrainingSet, indices, regression: bool = False) -> np.ndarray:
    """Class indices (or values, for a regressor) of the patches ``indices``."""
    predictions = []
    for first in range(0, len(indices), READ_CHUNK):
        patches, _ = data.read(indices[first:first + READ_CHUNK])
        output = model.predict(model_inputs([p.astype(np.float32) for p in patches]), verbose=0)
        predictions.append(output[..., 0] if regression else np.argmax(output, axis=-1))
    return np.concatenate(predictions) if predictions else np.zeros(0, np.int64)
