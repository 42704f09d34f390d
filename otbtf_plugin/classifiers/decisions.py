"""Rows of features -> decisions (class index and confidence), exact and fast.

Tree models decide by thresholds: rows in the same cell of the thresholds get the same
answer (:class:`ThresholdCells`), so :class:`Decisions` predicts each cell once per run; a
random forest asked for classes only stops once a row's class cannot change; a run's own
threads share the rows (:class:`ParallelDecisions`). Every shortcut gives the bits of
``predict_proba`` row by row (tests/engine/test_tree_shortcuts.py).
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ThresholdCells:
    """The cells of a tree ensemble's feature space.

    Every node of a tree compares one feature with a threshold, so pixels whose
    features lie between the same two consecutive thresholds of every feature
    (the same *cell*) follow the same path in every tree and get the same
    prediction, bit for bit. A forest on a few bands has far fewer cells in a
    tile than pixels: predicting once per distinct cell is exact and cheaper.
    """

    features: tuple[int, ...]  # the features some node tests
    cuts: tuple[np.ndarray, ...]  # their sorted distinct thresholds (float64)
    dtype: type  # what the trees compare: float32 (scikit-learn trees) or float64 (histogram boosting)
    count: int  # number of cells; keys are 0 .. count - 1

    def keys(self, table: np.ndarray) -> np.ndarray:
        """One integer per row of ``table`` (finite values), the same for rows of the same cell."""
        keys = np.zeros(len(table), dtype=np.int64)
        for feature, cuts in zip(self.features, self.cuts, strict=True):
            values = table[:, feature].astype(self.dtype, copy=False).astype(np.float64)
            keys *= len(cuts) + 1
            # the number of thresholds below the value: the same count, the same side of every test
            keys += np.searchsorted(cuts, values, side="left")
        return keys


def _threshold_tests(estimator) -> tuple[np.ndarray, np.ndarray, type] | None:
    """(feature, threshold) of every node of a tree model whose predictions depend on
    nothing else; None for other models."""
    if hasattr(estimator, "tree_"):
        trees = [estimator.tree_]
    elif isinstance(getattr(estimator, "estimators_", None), list):  # random forest, AdaBoost
        trees = [getattr(part, "tree_", None) for part in estimator.estimators_]
        if not trees or any(tree is None for tree in trees):
            return None
    elif hasattr(estimator, "_predictors"):  # histogram gradient boosting on numeric features
        if getattr(estimator, "_preprocessor", None) is not None:
            return None
        nodes = [predictor.nodes for stage in estimator._predictors for predictor in stage]
        if any(node["is_categorical"].any() for node in nodes):
            return None
        split = [node[node["is_leaf"] == 0] for node in nodes]
        return (
            np.concatenate([n["feature_idx"] for n in split]).astype(np.int64),
            np.concatenate([n["num_threshold"] for n in split]).astype(np.float64),
            np.float64,
        )
    else:
        return None
    inner = [tree.children_left != -1 for tree in trees]
    return (
        np.concatenate([t.feature[i] for t, i in zip(trees, inner, strict=True)]).astype(np.int64),
        np.concatenate([t.threshold[i] for t, i in zip(trees, inner, strict=True)]).astype(np.float64),
        np.float32,
    )


def threshold_cells(estimator) -> ThresholdCells | None:
    """The cells of a tree model (rf, dt, boost, gbt), or None for other models and
    for ensembles with too many thresholds to number their cells in 62 bits."""
    tests = _threshold_tests(estimator)
    if tests is None:
        return None
    feature, threshold, dtype = tests
    features = tuple(int(f) for f in np.unique(feature))
    cuts = tuple(np.unique(threshold[feature == f]) for f in features)
    count = 1
    for values in cuts:
        count *= len(values) + 1
    if count >= 2**62:
        return None
    return ThresholdCells(features, cuts, dtype, count)


def _is_forest(estimator) -> bool:
    """A single-output scikit-learn random forest (whose trees we may evaluate ourselves)."""
    return type(estimator).__name__ == "RandomForestClassifier" and getattr(estimator, "n_outputs_", 1) == 1


def probability_function(estimator):
    """``estimator.predict_proba``; for a random forest, the same mean of its trees'
    probabilities (same order, same bits) without joblib's per-call set-up, which
    costs more than the trees on the small tables of cells never seen before."""
    if not _is_forest(estimator):
        return estimator.predict_proba
    trees, classes = list(estimator.estimators_), int(estimator.n_classes_)

    def predict_proba(table: np.ndarray) -> np.ndarray:
        table = np.ascontiguousarray(table, dtype=np.float32)
        total = np.zeros((len(table), classes), dtype=np.float64)
        for tree in trees:
            total += tree.predict_proba(table, check_input=False)
        total /= len(trees)
        return total

    return predict_proba


def decision_function(estimator, confidence: bool = True):
    """``rows -> (index of the most probable class (int32), its probability (float32), or
    None without confidence)``: the argmax of ``predict_proba``. A random forest asked
    for classes only stops evaluating a row's trees once its leading class cannot be
    caught up (each remaining tree adds at most 1 to a class): the same classes."""
    if confidence or not _is_forest(estimator):
        predict = probability_function(estimator)

        def decide(table: np.ndarray):
            probabilities = predict(table)
            best = probabilities.argmax(axis=1)
            score = probabilities[np.arange(len(best)), best].astype(np.float32) if confidence else None
            return best.astype(np.int32), score

        return decide
    trees, classes = list(estimator.estimators_), int(estimator.n_classes_)
    step = max(1, len(trees) // 20)
    checks = set(range(len(trees) // 2 + 1, len(trees), step))

    def forest_classes(table: np.ndarray):
        table = np.ascontiguousarray(table, dtype=np.float32)
        best = np.empty(len(table), dtype=np.int32)
        rows: np.ndarray = np.arange(len(table))
        total: np.ndarray = np.zeros((len(table), classes), dtype=np.float64)
        for done_trees, tree in enumerate(trees, 1):
            total += tree.predict_proba(table, check_input=False)
            if done_trees in checks and len(rows):
                top = np.partition(total, classes - 2, axis=1)
                decided = top[:, -1] - top[:, -2] > len(trees) - done_trees + 1e-9
                best[rows[decided]] = total[decided].argmax(axis=1)
                undecided = ~decided
                rows, total = rows[undecided], total[undecided]
                table = np.ascontiguousarray(table[undecided])
        best[rows] = (total / len(trees)).argmax(axis=1)  # as predict_proba: the mean, then argmax
        return best, None

    return forest_classes


class ParallelDecisions:
    """A decision function (see :func:`decision_function`) over chunks on a
    pool of this run's threads (scikit-learn's trees and neighbours release the GIL).
    joblib's own threading starts a pool per call and polls it, which cost more than
    the prediction on every tile."""

    def __init__(self, decide):
        self.decide = decide
        self.workers = max(1, os.cpu_count() or 1)
        self.pool = ThreadPoolExecutor(self.workers, thread_name_prefix="otbtf-classify")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.pool.shutdown(wait=True)

    def __call__(self, table: np.ndarray):
        if len(table) < 4096 or self.workers == 1:
            return self.decide(table)
        parts = list(self.pool.map(self.decide, np.array_split(table, self.workers)))
        best = np.concatenate([part[0] for part in parts])
        return best, None if parts[0][1] is None else np.concatenate([part[1] for part in parts])


class Decisions:
    """Rows of features -> (index of the most probable class, its probability or None
    when the confidence is not wanted).

    For tree models the prediction of a row depends only on its cell (see
    :class:`ThresholdCells`): each cell is predicted once per run and
    remembered (up to :attr:`CACHE_CELLS` cells), so a tile costs the numbering of
    its cells, a lookup and the prediction of cells never seen before. Cells are
    looked up in a table indexed by cell when the model has at most
    :attr:`DENSE_CELLS` of them, else by binary search in the sorted cells seen.
    When, after four tiles, new cells are more than three quarters of the rows seen
    (deep features, fine thresholds), rows are predicted as they come. Exact either
    way: the classes and probabilities of ``predict_proba`` row by row.
    """

    CACHE_CELLS = 1 << 22  # decisions remembered: 8 bytes each (+ 12 for the sorted index), 80 MiB at most
    DENSE_CELLS = 1 << 22  # a table of 4 bytes per cell: 16 MiB at most

    def __init__(self, estimator, confidence: bool = True):
        self.rows = decision_function(estimator, confidence)  # a local run makes it parallel
        self.cells = threshold_cells(estimator)
        self.lock = threading.Lock()
        self.rows_seen = self.cells_new = self.calls = 0  # to give up the cells when they do not pay
        self.best: np.ndarray = np.zeros(0, dtype=np.int32)  # decisions of the cells seen, in the order first seen
        self.confidence: np.ndarray | None = np.zeros(0, dtype=np.float32) if confidence else None
        self.table: np.ndarray | None = None  # dense: cell -> decision, -1 when not seen
        # otherwise: the cells seen, sorted, and their decisions
        self.sorted_keys: np.ndarray = np.zeros(0, dtype=np.int64)
        self.sorted_slots: np.ndarray = np.zeros(0, dtype=np.int32)

    def __call__(self, table: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        if self.cells is None or (self.calls >= 4 and 4 * self.cells_new > 3 * self.rows_seen):
            return self.rows(table)
        keys = self.cells.keys(table)
        with self.lock:
            self.calls += 1
            self.rows_seen += len(keys)
            slots = self._slots(keys)
            missing = np.flatnonzero(slots < 0)
            if not len(missing):
                return self.best[slots], None if self.confidence is None else self.confidence[slots]
            new, first, inverse = np.unique(keys[missing], return_index=True, return_inverse=True)
            self.cells_new += len(new)
            best, confidence = self.rows(table[missing[first]])
            result = self._merge(slots, missing, inverse.ravel(), best, confidence)
            if len(self.best) + len(new) <= self.CACHE_CELLS:  # else: decided for this tile only
                self._remember(new, best, confidence)
            return result

    def _merge(self, slots, missing, inverse, best, confidence):
        """Known cells from the cache, the others from this tile's new predictions."""
        found = np.flatnonzero(slots >= 0)
        all_best = np.empty(len(slots), dtype=np.int32)
        all_best[found], all_best[missing] = self.best[slots[found]], best[inverse]
        if confidence is None or self.confidence is None:  # both kept when confidences are asked for
            return all_best, None
        all_confidence = np.empty(len(slots), dtype=np.float32)
        all_confidence[found], all_confidence[missing] = self.confidence[slots[found]], confidence[inverse]
        return all_best, all_confidence

    def _slots(self, keys: np.ndarray) -> np.ndarray:
        cells = self.cells
        if cells is None:  # not a tree model: nothing is remembered
            return np.full(len(keys), -1, dtype=np.int32)
        if cells.count <= self.DENSE_CELLS:
            if self.table is None:
                self.table = np.full(cells.count, -1, dtype=np.int32)
            return self.table[keys]
        if not len(self.sorted_keys):
            return np.full(len(keys), -1, dtype=np.int32)
        where = np.minimum(np.searchsorted(self.sorted_keys, keys), len(self.sorted_keys) - 1)
        slots = self.sorted_slots[where]
        slots[self.sorted_keys[where] != keys] = -1
        return slots

    def _remember(self, new: np.ndarray, best: np.ndarray, confidence: np.ndarray | None) -> None:
        numbers = np.arange(len(self.best), len(self.best) + len(new), dtype=np.int32)
        self.best = np.concatenate([self.best, best])
        if self.confidence is not None:
            self.confidence = np.concatenate([self.confidence, confidence])
        if self.table is not None:
            self.table[new] = numbers
        else:
            at = np.searchsorted(self.sorted_keys, new)
            self.sorted_keys = np.insert(self.sorted_keys, at, new)
            self.sorted_slots = np.insert(self.sorted_slots, at, numbers)
