"""Fitting a classifier on the training polygons and scoring it on the polygons held out
whole (never on samples that share a polygon with the training set)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..errors import InputError
from ..metrics import confusion_matrix, report
from ..validation import hold_out_groups
from .registry import as_params, is_auto, make_classifier
from .search import cross_validate, search


def split_by_group(
    codes: np.ndarray, groups: np.ndarray, fraction: float, seed: int, names: dict[int, str] | None = None
) -> tuple[np.ndarray, list[str]]:
    """``validation`` mask: whole groups (polygons) held out, about ``fraction`` of each
    class's samples (see :func:`validation.hold_out_groups`); and the warnings."""
    split = hold_out_groups(codes, groups, fraction, seed, names)
    return split.validation, split.warnings


@dataclass
class TrainedClassifier:
    estimator: object
    recipe: dict  # how the features are made (see features.py)
    classes: list[dict]  # [{"code": 1, "name": "water"}, ...]
    classifier: str
    params: dict
    metrics: dict | None = None
    training_samples: int = 0
    validation_samples: int = 0
    warnings: list[str] = field(default_factory=list)
    held_out: dict = field(default_factory=dict)  # how validation was held out (validation.GroupSplit.as_dict)
    refit: bool = False  # trained again on every sample after scoring
    search: dict = field(default_factory=dict)  # CLASSIFIER_PARAMS=auto: folds, candidates and scores, chosen
    cross_validation: dict = field(default_factory=dict)  # FOLDS: per fold, mean and spread, pooled

    @property
    def codes(self) -> np.ndarray:
        return np.asarray([c["code"] for c in self.classes], dtype=np.int64)


def train(
    features: np.ndarray,
    codes: np.ndarray,
    groups: np.ndarray,
    class_names: dict[int, str],
    recipe: dict,
    classifier: str = "rf",
    params: str | None = None,
    seed: int = 0,
    validation: float = 0.3,
    refit: bool = True,
    folds: int = 0,
) -> TrainedClassifier:
    """Score a classifier trained on the training groups (polygons) on the held-out ones;
    with ``refit``, the returned classifier is then trained again on every sample (more
    polygons: a better map; the report says its scores are those of the first).
    ``params="auto"``: the settings are chosen first by cross-validation grouped by polygon
    on the training polygons (``search``). ``folds`` > 1: the chosen classifier is also
    cross-validated over all the polygons in that many folds (``cross_validation``)."""
    features = np.asarray(features, dtype=np.float32)
    codes = np.asarray(codes, dtype=np.int64)
    groups = np.asarray(groups)
    if len(features) == 0:
        raise InputError("no sample to train on: check that the points or polygons lie on valid pixels")
    present = np.unique(codes)
    if len(present) < 2:
        raise InputError(
            f"the samples hold one class only ({class_names.get(int(present[0]), present[0])}): "
            "a classifier needs at least two"
        )
    if not np.isfinite(features).all():
        bad = int((~np.isfinite(features)).any(axis=1).sum())
        raise InputError(f"{bad} sample(s) have NaN or infinite features: set the sources' nodata value")
    make_classifier(classifier, params, seed)  # the parameters are checked before any fit
    split = hold_out_groups(codes, groups, validation, seed, class_names)
    held_out, warnings = split.validation, split.warnings
    classes = [{"code": int(c), "name": str(class_names.get(int(c), int(c)))} for c in present]
    metrics, searched = None, {}
    try:
        chosen: str | dict | None = params
        if is_auto(params):
            best, candidates, folds = search(classifier, features[~held_out], codes[~held_out], groups[~held_out], seed)
            searched = {
                "folds": folds,
                "candidates": [c.as_dict() for c in candidates],
                "chosen": {k: repr(v) for k, v in best.items()},
            }
            chosen = best
        estimator = make_classifier(classifier, chosen, seed)
        estimator.fit(features[~held_out], codes[~held_out])
        if held_out.any():
            predicted = estimator.predict(features[held_out])
            matrix = confusion_matrix(codes[held_out], predicted, [c["code"] for c in classes])
            metrics = report(matrix, [str(c["name"]) for c in classes])
            if refit:
                estimator = make_classifier(classifier, chosen, seed)
                estimator.fit(features, codes)
        validated = cross_validate(classifier, chosen, features, codes, groups, folds, seed) if folds > 1 else {}
    except ValueError as err:  # scikit-learn's complaints about the data (too few samples, ...)
        raise InputError(f"{classifier} could not be trained: {err}") from err
    refitted = refit and bool(held_out.any())
    trained = TrainedClassifier(
        estimator,
        recipe,
        classes,
        classifier,
        as_params(chosen),
        metrics,
        len(codes) if refitted else int((~held_out).sum()),
        int(held_out.sum()),
        warnings,
        split.as_dict(class_names),
    )
    trained.refit, trained.search, trained.cross_validation = refitted, searched, validated
    return trained
