"""What a training run learns, decided from the labels before any model is built: the task
(classification, segmentation or regression), the architecture that fits it, the class
codes and names (or the labels' mean and spread for a regressor), and the class weights.
Pure: numpy only, testable without TensorFlow."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

import numpy as np

from ..errors import InputError
from ..models.metadata import Task
from ..raster import CLASS_CODE_RANGE

TaskChoice = Literal["auto", "classification", "regression"]  # what a user asks for; "auto": the labels decide
TASKS: tuple[TaskChoice, ...] = get_args(TaskChoice)


@dataclass(frozen=True)
class Target:
    task: Task
    architecture: str
    codes: list[int]  # class codes in the model's class order (empty for a regressor)
    names: dict[int, str]  # code -> name
    statistics: tuple[float, float] | None = None  # regression: mean and std of the labels

    @property
    def regression(self) -> bool:
        return self.task == "regression"

    def label_index(self) -> ClassIndex | None:
        """Class code -> the model's class index (-1: not a class); None for a regressor."""
        return None if self.regression else ClassIndex(self.codes)


class ClassIndex:
    """Class codes -> the model's class indices (0..n-1, in the order of ``codes``; -1 for a
    code that is not a class), by a search in the sorted codes: memory follows the number of
    classes, not the largest code (a code of 1e9 or a negative code costs nothing more)."""

    def __init__(self, codes: list[int]):
        self.codes = np.asarray(codes, dtype=np.int64)
        self.order = np.argsort(self.codes, kind="stable")
        self.sorted = self.codes[self.order]

    def __getitem__(self, labels) -> np.ndarray:
        labels = np.asarray(labels, dtype=np.int64)
        where = np.clip(np.searchsorted(self.sorted, labels), 0, max(len(self.sorted) - 1, 0))
        found = self.sorted[where] == labels
        return np.where(found, self.order[where], -1).astype(np.int64)


def decide_target(
    asked: str, architecture: str, layout: str, labels: np.ndarray, fine_tuning: bool, names: dict[int, str]
) -> Target:
    """The target of a run: ``asked`` is the TASK option, ``layout`` the labels' layout
    (one label per patch: classification; label patches: segmentation), ``labels`` the
    training labels, ``names`` the class names known (code -> name; codes default to names)."""
    if asked not in TASKS:
        raise InputError(f"unknown task {asked!r}; use one of: {', '.join(TASKS)}")
    whole = bool(np.all(np.equal(np.mod(labels, 1), 0)))
    regression = asked == "regression" or (asked == "auto" and (architecture == "regressor" or not whole))
    if regression and fine_tuning:
        raise InputError("fine-tuning a regressor is not supported yet: train it anew")
    if layout == "segmentation" and architecture != "unet" and not fine_tuning:
        if not (regression and architecture == "regressor"):
            raise InputError("the labels are patches (semantic segmentation): use ARCHITECTURE unet")
        architecture = "unet"  # a pixel regressor is the unet body with a linear output
    if layout == "classification" and architecture == "unet" and not fine_tuning:
        raise InputError("the labels are one class per patch: use ARCHITECTURE cnn (unet is for label patches)")
    if regression:
        return Target("regression", architecture, [], {}, (float(labels.mean()), float(labels.std()) or 1.0))
    codes = sorted({int(c) for c in np.unique(labels)})
    low, high = CLASS_CODE_RANGE
    if codes and not (low <= codes[0] and codes[-1] <= high):
        raise InputError(
            f"the training labels hold the class code {codes[0] if codes[0] < low else codes[-1]}, "
            f"which a class map cannot hold (32-bit: {low} .. {high}): recode the classes with smaller "
            "numbers"
        )
    if len(codes) < 2:
        raise InputError(
            f"the training labels hold a single class ({codes[0] if codes else 'none'}): "
            "there is nothing to learn; give labels with at least two classes"
        )
    task: Task = "segmentation" if layout == "segmentation" else "classification"
    return Target(task, architecture, codes, {c: names.get(c) or str(c) for c in codes})


def class_weights(target: Target, labels: np.ndarray) -> np.ndarray:
    """Per class (model order): ``total / (classes * count)``, so that every class weighs the
    same in the loss (a class absent from ``labels`` counts as one sample)."""
    index = target.label_index()
    if index is None:
        raise ValueError("class weights are for classifiers, not regressors")
    counts = np.bincount(index[labels.astype(np.int64)].ravel(), minlength=len(target.codes))
    return np.array([counts.sum() / (len(target.codes) * max(n, 1)) for n in counts], dtype=np.float32)
