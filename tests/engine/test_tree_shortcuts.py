"""The shortcuts of image classification with tree models, against scikit-learn's
``predict_proba`` row by row on the pixels of the sample image: predictions by
threshold cell (remembered across tiles, in a dense table or a sorted index, and
with a full cache), the forest's own probability loop, and classes without
confidence where a forest stops a row's trees once its leading class is decided."""

import numpy as np
import pytest
import rasterio

from common import RGB

pytest.importorskip("sklearn")

from otbtf_plugin import classifiers
from otbtf_plugin.classifiers import Decisions

TREE_MODELS = ("rf", "dt", "boost", "gbt")
SMALL = {
    "rf": "n_estimators=20;max_depth=5",
    "dt": "max_depth=7",
    "boost": "n_estimators=30",
    "gbt": "max_iter=10;max_depth=3",
}  # few thresholds: a dense table of cells


@pytest.fixture(scope="module")
def pixels():
    """Every pixel of the sample image, and classes made by a rule of their values with
    15 % of the labels flipped (impure leaves, deep trees, votes that can tie)."""
    with rasterio.open(RGB) as src:
        table = src.read().reshape(src.count, -1).T.astype(np.float32)
    blue, green, red = table.T
    labels = (red > np.median(red)).astype(int) + 2 * (blue > np.percentile(blue, 70)) + (green > red)
    rng = np.random.default_rng(0)
    flipped = rng.random(len(labels)) < 0.15
    labels[flipped] = rng.integers(0, 4, flipped.sum())
    return table, labels, rng.choice(len(table), 4000, replace=False)


def fitted(name, pixels, params=None):
    """A fitted estimator whose predict_proba, the reference, runs on one thread: scikit-learn's
    threads add a forest's trees in the order they finish, which changes the last bits of
    fractional probabilities (depth-limited trees); ours adds them in order, as one thread does."""
    table, labels, train = pixels
    estimator = classifiers.make_classifier(name, params, seed=0).fit(table[train], labels[train])
    return classifiers.single_threaded(estimator)


def edge_rows(cells: classifiers.ThresholdCells, table: np.ndarray) -> np.ndarray:
    """Rows of real pixels with one feature set to a threshold, or to the float32 just
    below or above it: the values where a cell's boundary is decided."""
    rows = []
    for feature, cuts in zip(cells.features, cells.cuts, strict=True):
        values = cuts.astype(np.float32)
        for candidate in (values, np.nextafter(values, -np.inf), np.nextafter(values, np.inf)):
            row = table[np.arange(len(candidate)) % len(table)].copy()
            row[:, feature] = candidate
            rows.append(row)
    return np.concatenate(rows)


def expected(estimator, table):
    probabilities = estimator.predict_proba(table)
    best = probabilities.argmax(axis=1)
    return best, probabilities[np.arange(len(best)), best].astype(np.float32)


@pytest.mark.parametrize("mode", ["dense table", "sorted index", "full cache"])
@pytest.mark.parametrize("name", TREE_MODELS)
def test_decisions_by_cell_equal_predict_proba(name, mode, pixels, monkeypatch):
    table = pixels[0]
    estimator = fitted(name, pixels, SMALL[name])
    cells = classifiers.threshold_cells(estimator)
    assert cells is not None and cells.count == np.prod([len(c) + 1 for c in cells.cuts])
    assert cells.count <= Decisions.DENSE_CELLS
    if mode == "sorted index":
        monkeypatch.setattr(Decisions, "DENSE_CELLS", 0)
    elif mode == "full cache":
        monkeypatch.setattr(Decisions, "CACHE_CELLS", 40)
    decisions = Decisions(estimator)
    predicted = []
    inner = decisions.rows
    decisions.rows = lambda rows: predicted.append(len(rows)) or inner(rows)
    tiles = [*np.array_split(table, 6), edge_rows(cells, table), table[:5000]]  # the last: seen before
    for tile in tiles:
        before = sum(predicted)
        best, confidence = decisions(tile)
        want_best, want_confidence = expected(estimator, tile)
        assert np.array_equal(best, want_best)
        assert np.array_equal(confidence, want_confidence)
    assert decisions.calls == len(tiles)  # the cells were used on every tile
    assert (decisions.table is None) == (mode == "sorted index")
    if mode != "full cache":
        assert sum(predicted) == before == len(decisions.best)  # each cell once; none new in the last tile
        assert sum(predicted) < len(table) / 5
    else:
        assert len(decisions.best) <= 40 and sum(predicted) > before


@pytest.mark.slow
def test_fully_grown_models_on_real_pixels(pixels):
    """Deep trees on noisy labels: cells of 62 bits, a sorted index; classes and
    confidence still those of predict_proba (whether the cells pay or are given up)."""
    table = pixels[0]
    for name in TREE_MODELS:
        estimator = fitted(name, pixels)
        decisions = Decisions(estimator)
        for tile in np.array_split(table[::3], 6):
            best, confidence = decisions(tile)
            want_best, want_confidence = expected(estimator, tile)
            assert np.array_equal(best, want_best) and np.array_equal(confidence, want_confidence)


def counting_rows(tree) -> list[int]:
    """Make ``tree.predict_proba`` record how many rows it is given."""
    rows, evaluate = [], tree.predict_proba
    tree.predict_proba = lambda x, check_input=True: rows.append(len(x)) or evaluate(x, check_input)
    return rows


@pytest.mark.slow
def test_classes_only_from_a_forest_equal_predict_proba_and_stop_early(pixels):
    table = pixels[0]
    for trees in (4, 9, 100):  # 4: votes tie; 9: checks at every tree from the 5th
        forest = fitted("rf", pixels, f"n_estimators={trees}")
        rows_at_last = counting_rows(forest.estimators_[-1])
        best, confidence = classifiers.decision_function(forest, confidence=False)(table)
        del forest.estimators_[-1].predict_proba
        assert confidence is None
        assert np.array_equal(best, forest.predict_proba(table).argmax(axis=1))
        if trees > 4:
            assert rows_at_last[0] < len(table) / 2  # most rows were decided before the last tree


def test_the_forest_probability_loop_is_predict_proba(pixels):
    forest = fitted("rf", pixels, "n_estimators=30")
    table = pixels[0][::7]
    assert np.array_equal(classifiers.probability_function(forest)(table), forest.predict_proba(table))
    assert np.array_equal(
        classifiers.probability_function(forest)(table.astype(np.float64)), forest.predict_proba(table)
    )


def test_models_without_cells(pixels):
    for name in ("svm", "knn", "ann", "bayes"):
        assert classifiers.threshold_cells(fitted(name, pixels, "max_iter=50" if name == "ann" else None)) is None
    # 40 features of fine thresholds: more cells than 62 bits can number
    rng = np.random.default_rng(1)
    x = rng.normal(size=(3000, 40)).astype(np.float32)
    tree = classifiers.make_classifier("dt").fit(x, rng.integers(0, 3, len(x)))
    assert classifiers.threshold_cells(tree) is None


def test_cells_are_given_up_when_every_row_is_new(pixels):
    """One feature, random labels: a threshold between most pairs of values. Rows at
    the middles between thresholds are each alone in their cell: after four such tiles,
    rows are predicted directly (and still right)."""
    rng = np.random.default_rng(2)
    x = rng.permutation(4000).astype(np.float32)[:, None]
    tree = classifiers.make_classifier("dt").fit(x, rng.integers(0, 3, len(x)))
    cells = classifiers.threshold_cells(tree)
    middles = ((cells.cuts[0][:-1] + cells.cuts[0][1:]) / 2).astype(np.float32)[:, None]
    decisions = Decisions(tree)
    for tile in np.array_split(middles[:600], 6):
        best, _ = decisions(tile)
        assert np.array_equal(best, expected(tree, tile)[0])
    assert decisions.calls == 4 and decisions.cells_new == decisions.rows_seen
