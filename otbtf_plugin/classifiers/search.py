"""Cross-validation grouped by polygon (no polygon gives samples to both sides of a fold):
``CLASSIFIER_PARAMS=auto``'s search of a small grid of settings per classifier (the best is
refit by the caller), and ``FOLDS``' scores of one setting.

The grids are short on purpose (at most 6 candidates, 4 folds: at most 24 fits, a few
times one training), and hold the defaults, so that ``auto`` never does worse than the
defaults on the folds. Deterministic with the seed: the folds and the estimators use it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import InputError
from ..metrics import confusion_matrix, fold_summary, report
from ..validation import group_folds
from .registry import make_classifier

MAX_FOLDS = 4
# A candidate replaces the defaults only when its pooled overall accuracy is higher by this
# much, and its gain fold by fold exceeds two standard errors: with tens of polygons,
# smaller differences are the folds' noise (scripts/measure_accuracy.py).
MARGIN = 0.02

GRIDS: dict[str, list[dict]] = {
    "rf": [
        {},
        {"max_depth": None, "min_samples_split": 2},
        {"max_depth": None, "min_samples_leaf": 5},
        {"max_depth": 10, "min_samples_leaf": 5},
        {"max_depth": 3},
        {"max_features": None},
    ],
    "svm": [{}, {"C": 0.1}, {"C": 10.0}, {"C": 100.0}, {"C": 10.0, "gamma": 0.1}, {"C": 100.0, "gamma": 0.01}],
    "boost": [{}, {"learning_rate": 0.5}, {"n_estimators": 300}],
    "dt": [{}, {"max_depth": 5}, {"max_depth": 10}, {"min_samples_leaf": 10}],
    "gbt": [{}, {"learning_rate": 0.05}, {"max_depth": 3}, {"max_leaf_nodes": 7, "l2_regularization": 1.0}],
    "bayes": [{}, {"reg_param": 1e-3}, {"reg_param": 0.1}, {"reg_param": 0.5}],
    "knn": [{}, {"n_neighbors": 11}, {"n_neighbors": 25}, {"n_neighbors": 11, "weights": "distance"}],
    "ann": [{}, {"alpha": 0.01}, {"hidden_layer_sizes": (32,)}, {"hidden_layer_sizes": (64, 32), "alpha": 0.01}],
}


@dataclass
class Candidate:
    params: dict
    overall_accuracy: float
    kappa: float

    def as_dict(self) -> dict:
        return {
            "params": {k: repr(v) for k, v in self.params.items()},
            "overall_accuracy": self.overall_accuracy,
            "kappa": self.kappa,
        }


def cross_validate(
    name: str, params, features: np.ndarray, codes: np.ndarray, groups: np.ndarray, folds: int, seed: int
) -> dict:
    """Grouped k-fold cross-validation (FOLDS): each fold's overall accuracy, kappa and mean F1
    over the classes present in it, their mean and standard deviation, and the scores pooled
    over all folds."""
    fold = group_folds(codes, groups, folds, seed)
    classes = sorted(np.unique(codes).tolist())
    names = [str(c) for c in classes]
    per_fold, truth, predicted = [], [], []
    for k in range(folds):
        train = fold != k
        estimator = make_classifier(name, params, seed)
        estimator.fit(features[train], codes[train])
        truth.append(codes[~train])
        predicted.append(estimator.predict(features[~train]))
        per_fold.append(report(confusion_matrix(truth[-1], predicted[-1], classes), names))
    return fold_summary(
        per_fold, report(confusion_matrix(np.concatenate(truth), np.concatenate(predicted), classes), names)
    )


def search(
    name: str, features: np.ndarray, codes: np.ndarray, groups: np.ndarray, seed: int
) -> tuple[dict, list[Candidate], int]:
    """(chosen parameters, every candidate's pooled scores, folds): the overall accuracy pooled
    over the held-out folds decides (the earlier candidate on a tie); the defaults (the
    first) stay unless clearly beaten (:func:`_choice`)."""
    if name not in GRIDS:
        raise InputError(f"CLASSIFIER_PARAMS=auto: no search for {name!r}")
    folds = min(MAX_FOLDS, len(np.unique(groups)))
    if folds < 2:
        raise InputError(
            "CLASSIFIER_PARAMS=auto needs samples from at least 2 polygons to cross-validate; give parameters instead"
        )
    fold = group_folds(codes, groups, folds, seed)
    classes = sorted(np.unique(codes).tolist())
    candidates, per_fold = [], []
    for params in GRIDS[name]:
        truth, predicted, accuracies = [], [], []
        for k in range(folds):
            train = fold != k
            if len(np.unique(codes[train])) < 2:
                continue
            estimator = make_classifier(name, params, seed)
            estimator.fit(features[train], codes[train])
            truth.append(codes[~train])
            predicted.append(estimator.predict(features[~train]))
            accuracies.append(float(np.mean(predicted[-1] == truth[-1])))
        scores = report(
            confusion_matrix(np.concatenate(truth), np.concatenate(predicted), classes), [str(c) for c in classes]
        )
        candidates.append(Candidate(params, float(scores["overall_accuracy"]), float(scores["kappa"])))
        per_fold.append(np.asarray(accuracies))
    return candidates[_choice(candidates, per_fold)].params, candidates, folds


def _choice(candidates: list[Candidate], per_fold: list[np.ndarray]) -> int:
    """The best candidate by pooled overall accuracy if it beats the defaults (the first) by
    ``MARGIN`` and fold by fold beyond the folds' noise (mean gain over two standard errors
    of the gains); else the defaults."""
    best = max(range(len(candidates)), key=lambda i: (candidates[i].overall_accuracy, -i))
    gains = per_fold[best] - per_fold[0]
    noise = 2 * float(np.std(gains, ddof=1)) / np.sqrt(len(gains)) if len(gains) > 1 else 0.0
    if candidates[best].overall_accuracy < candidates[0].overall_accuracy + MARGIN or gains.mean() <= noise:
        return 0
    return best
