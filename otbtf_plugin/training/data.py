"""The training data: patches images of every source and their labels, read in batches.

Data are streamed: each batch is read from the patches images with windowed reads (a
training set larger than memory works), shuffled every epoch with the seed, and no sample
is dropped (the last batch may be smaller).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from ..errors import InputError
from ..grid import dihedral
from ..patches_image import PatchesImage, read_origins
from ..validation import GroupSplit, consecutive_runs, hold_out_groups, listed, spatial_blocks
from .targets import ClassIndex

READ_CHUNK = 256  # patches per read when computing statistics or predicting
BLOCK_PATCHES = 4  # spatial blocks (points without originfid) are this many patch widths wide
MIN_BLOCK_PX = 64
LONE_POLYGON_BLOCKS = 4  # a class of one polygon is cut into at least this many blocks when it can be
MAX_STRATA = 1000  # more distinct whole-number labels than this: values to regress, not classes

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
            raise InputError(
                f"{what} patches images and labels hold different numbers of patches: "
                + ", ".join(f"{Path(i.path).name}: {len(i)}" for i in [*self.images, self.labels])
            )
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
                f"({first.patch_width} x {first.patch_height}, for segmentation)"
            )
        self.count = len(self.labels)
        self.recode: dict[int, int] = {}  # this set's class code -> the training set's (see align_classes)
        self._recode_lookup: tuple[ClassIndex, np.ndarray] | None = None  # built once, used per batch

    def set_recode(self, recode: dict[int, int]) -> None:
        self.recode = dict(recode)
        codes = sorted(recode)
        self._recode_lookup = (
            (ClassIndex(codes), np.asarray([recode[c] for c in codes], dtype=np.int64)) if codes else None
        )

    def _recoded(self, labels: np.ndarray) -> np.ndarray:
        if self._recode_lookup is None:
            return labels
        index, target = self._recode_lookup
        found = index[labels]
        return np.where(found >= 0, target[np.maximum(found, 0)], labels).astype(labels.dtype)

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

        labels = self._recoded(gather(self.labels))
        labels = labels.reshape(len(indices)) if self.layout == "classification" else labels[..., 0]
        return [gather(i) for i in self.images], labels

    def read_labels(self, indices: np.ndarray) -> np.ndarray:
        """The labels of ``indices`` (sorted), without reading the patches."""
        parts = [self.labels.read(int(run[0]), int(run[-1]) + 1) for run in _runs(indices) if len(run)]
        labels = self._recoded(np.concatenate(parts) if parts else np.zeros((0, 1, 1, 1), np.float32))
        return labels.reshape(len(indices)) if self.layout == "classification" else labels[..., 0]

    def class_names(self) -> dict[int, str]:
        """Class names written in the labels' metadata: code -> name."""
        return {int(code): name for name, code in self.labels.class_codes.items()}

    def close(self) -> None:
        for image in [*self.images, self.labels]:
            image.close()


def align_classes(train: TrainingSet, valid: TrainingSet) -> str | None:
    """Give ``valid`` the class codes of ``train`` through the class names both labels images
    carry (text classes are coded 1, 2... in alphabetical order of the classes each
    extraction saw, so a class missing from one extraction shifts the codes of the other).
    Returns a note for the log when codes were changed; refuses sets that cannot be matched."""
    train_names, valid_names = train.class_names(), valid.class_names()
    if not train_names and not valid_names:
        return None  # whole-number classes: the codes are the user's own
    where = f"{Path(valid.labels.path).name} and {Path(train.labels.path).name}"
    if not train_names or not valid_names:
        named = Path((train if train_names else valid).labels.path).name
        raise InputError(
            f"{where}: only {named} names its classes, so the codes cannot be matched; extract the "
            "training and validation patches from the same class field"
        )
    code_of = {name: code for code, name in train_names.items()}
    unknown = sorted(name for name in valid_names.values() if name not in code_of)
    if unknown:
        raise InputError(f"the validation labels hold classes absent from training: {', '.join(unknown)}")
    valid.set_recode({code: code_of[name] for code, name in valid_names.items() if code_of[name] != code})
    if not valid.recode:
        return None
    return "validation labels re-coded by class name to the training codes: " + ", ".join(
        f"{valid_names[c]} {c} -> {t}" for c, t in sorted(valid.recode.items())
    )


def _runs(sorted_indices: np.ndarray) -> list[np.ndarray]:
    """Consecutive runs of sorted indices: each is one windowed read."""
    return np.split(sorted_indices, np.flatnonzero(np.diff(sorted_indices) != 1) + 1)


@dataclass
class PatchGroups:
    """What validation holds out whole: the group of every patch, the class it counts for
    (``strata``: zeros for values to regress), and what to tell the user."""

    groups: np.ndarray
    strata: np.ndarray
    method: str
    notes: list[str]
    units: dict[int, str]  # classes whose groups are not the method's own (spatial blocks)


def patch_groups(data: TrainingSet, labels_path: str | Path) -> PatchGroups:
    """The groups of the training patches: the polygons of the origins table beside the labels
    image (a class of a single polygon cut into spatial blocks), else spatial blocks of its
    patch centres, else (otbtf's patches) runs of consecutive patches."""
    origins, why = read_origins(labels_path, data.count)
    if origins is None:
        groups, method = consecutive_runs(data.count), "by runs of consecutive patches"
        notes = [
            f"where the patches come from is unknown ({why}): validation holds out runs of "
            "consecutive patches, which follow their polygons when the points came from sample "
            "selection; extract patches with otbtf:patchesextraction to hold out whole polygons"
        ]
    elif origins.polygon is None:
        side = _block_side(data)
        groups, method = spatial_blocks(origins.col, origins.row, side), "by spatial block"
        notes = [f"the points carry no originfid: validation holds out blocks of {side} x {side} px of source 1"]
    else:
        groups, method, notes = origins.polygon, "by polygon", []
    labels = data.read_labels(np.arange(data.count))
    if labels.ndim == 3:  # label patches: a patch counts for its centre pixel's class
        labels = labels[:, labels.shape[1] // 2, labels.shape[2] // 2]
    whole = np.issubdtype(labels.dtype, np.integer) or bool(np.all(np.mod(labels, 1) == 0))
    strata = labels.astype(np.int64) if whole and len(np.unique(labels)) <= MAX_STRATA else np.zeros(len(labels))
    sides: dict[int, int] = {}
    if origins is not None and origins.polygon is not None:
        groups, sides = _blocks_of_lone_polygons(strata, groups, origins, data.images[0].patch_width)
        names = data.class_names()
        if len(sides) == 1:
            ((c, side),) = sides.items()
            notes.append(
                f"class {names.get(c, c)} comes from one polygon: validation holds out blocks of {side} x "
                f"{side} px of it, which look like their neighbours, so its scores flatter it (give more "
                "polygons of that class)"
            )
        elif sides:
            notes.append(
                f"classes {listed([names.get(c, c) for c in sides])} each come from one polygon: validation "
                "holds out spatial blocks of them, which look like their neighbours, so their scores "
                "flatter them (give more polygons of these classes)"
            )
    return PatchGroups(groups, strata, method, notes, dict.fromkeys(sides, "spatial block"))


def hold_out(data: TrainingSet, labels_path: str | Path, fraction: float, seed: int) -> GroupSplit:
    """Validation patches held out of the training set by whole group (:func:`patch_groups`):
    classes (the centre label of a label patch) get about ``fraction`` of their patches each;
    values to regress, of all."""
    found = patch_groups(data, labels_path)
    split = hold_out_groups(found.strata, found.groups, fraction, seed, data.class_names(), found.method, found.units)
    split.warnings[:0] = found.notes
    if not split.validation.any():
        raise InputError(
            f"{data.count} training patches from {len(np.unique(found.groups))} group(s) "
            f"({found.method}): too few to hold out whole polygons for validation; give "
            "VALID_PATCHES1 and VALID_LABELS, or more polygons"
        )
    return split


def _block_side(data: TrainingSet) -> int:
    """Spatial blocks' side in pixels of source 1: a few patch widths."""
    return max(BLOCK_PATCHES * data.images[0].patch_width, MIN_BLOCK_PX)


def _blocks_of_lone_polygons(strata: np.ndarray, polygons: np.ndarray, origins, patch: int):
    """Groups where a class drawn from a single polygon is cut into spatial blocks (nothing
    else could be held out of it): the widest of 4, 2 and 1 patch widths that gives the class
    at least ``LONE_POLYGON_BLOCKS`` blocks. Returns the groups and, per such class, its block side."""
    groups = polygons.copy()
    sides: dict[int, int] = {}
    for code in np.unique(strata):
        members = strata == code
        if len(np.unique(polygons[members])) > 1:
            continue
        for side in (BLOCK_PATCHES * patch, 2 * patch, patch):
            blocks = spatial_blocks(origins.col[members], origins.row[members], side)
            if len(np.unique(blocks)) >= LONE_POLYGON_BLOCKS:
                break
        groups[members] = -1 - blocks  # negative: never equal to a polygon's fid
        sides[int(code)] = side
    return groups, sides


def band_statistics(image: PatchesImage, indices: np.ndarray) -> tuple[list[float], list[float]]:
    """Mean and standard deviation per band over the given patches (streamed)."""
    total = np.zeros(image.bands)
    squares = np.zeros(image.bands)
    n = 0
    for first in range(0, len(indices), READ_CHUNK):
        for run in _runs(np.sort(indices[first : first + READ_CHUNK])):
            data = image.read(int(run[0]), int(run[-1]) + 1).astype(np.float64).reshape(-1, image.bands)
            total += data.sum(axis=0)
            squares += (data**2).sum(axis=0)
            n += len(data)
    mean = total / max(n, 1)
    std = np.sqrt(np.maximum(squares / max(n, 1) - mean**2, 0))
    return [float(v) for v in mean], [float(v) for v in np.where(std > 0, std, 1.0)]


def model_inputs(arrays: list):
    """Keras wants a single-input model fed an array, a multi-input one a list (input order)."""
    return arrays[0] if len(arrays) == 1 else arrays


def batches(
    keras,
    data: TrainingSet,
    indices,
    batch: int,
    label_index,
    seed: int,
    shuffle: bool,
    label_span: slice | None = None,
    pixel_weights=None,
    augment: bool = False,
    first_epoch: int = 0,
    epochs: int = 1,
):
    """A Keras dataset of (inputs, labels[, pixel weights]) batches of the patches ``indices``:
    the batches of ``epochs`` epochs from ``first_epoch`` on, one after the other (fit it with
    ``steps_per_epoch=batches_per_epoch(...)``).

    ``label_index`` maps class codes to the model's class indices (None: regression values);
    ``label_span`` cuts label patches to the model's output block (rows and columns);
    ``augment`` applies one random flip/rotation to a patch of every source and its label patch.
    Batch ``j`` is a function of ``seed`` and ``j`` alone (epoch ``first_epoch + j // n``, its
    order and transforms drawn from the seed and the epoch), never of the order Keras asks
    for batches or of epoch callbacks, which race with its prefetching: a run resumed at
    ``first_epoch`` sees what an uninterrupted run sees."""
    per_epoch = batches_per_epoch(len(indices), batch)

    class Batches(keras.utils.PyDataset):
        def __init__(self):
            super().__init__(workers=1, use_multiprocessing=False)
            self.orders: dict[int, np.ndarray] = {}

        def _order(self, epoch: int) -> np.ndarray:
            if epoch not in self.orders:
                self.orders = {
                    epoch: np.random.default_rng([seed, epoch]).permutation(indices) if shuffle else np.asarray(indices)
                }
            return self.orders[epoch]

        def __len__(self):
            return per_epoch * epochs

        def __getitem__(self, j):
            epoch, i = first_epoch + j // per_epoch, j % per_epoch
            chunk = self._order(epoch)[i * batch : (i + 1) * batch]
            patches, labels = data.read(chunk)
            if augment:  # the same transform for every source's patch and its label patch
                transforms = np.random.default_rng([seed, epoch, i, 1]).integers(0, 8, len(chunk))
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

    return Batches()


def batches_per_epoch(count: int, batch: int) -> int:
    return max(1, math.ceil(count / batch))


def predict(model, data: TrainingSet, indices, regression: bool = False) -> np.ndarray:
    """Class indices (or values, for a regressor) of the patches ``indices``."""
    predictions = []
    for first in range(0, len(indices), READ_CHUNK):
        patches, _ = data.read(indices[first : first + READ_CHUNK])
        output = model.predict(model_inputs([p.astype(np.float32) for p in patches]), verbose=0)
        predictions.append(output[..., 0] if regression else np.argmax(output, axis=-1))
    return np.concatenate(predictions) if predictions else np.zeros(0, np.int64)
