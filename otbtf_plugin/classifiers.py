"""Classical classifiers (scikit-learn) with Orfeo ToolBox's names, and their files.

=========  ======================================================  ============
name       scikit-learn estimator (our defaults)                   standardised
=========  ======================================================  ============
``rf``     RandomForestClassifier(n_estimators=100)                no
``svm``    SVC(kernel="rbf", C=1, gamma="scale"), probabilities    yes
           calibrated by CalibratedClassifierCV(ensemble=False)
``boost``  AdaBoostClassifier(n_estimators=100) on depth-1 trees   no
``dt``     DecisionTreeClassifier()                                no
``gbt``    HistGradientBoostingClassifier()                        no
``bayes``  QuadraticDiscriminantAnalysis(reg_param=1e-6): normal   no
           Bayes, one Gaussian with full covariance per class
``knn``    KNeighborsClassifier(n_neighbors=5)                     yes
``ann``    MLPClassifier(hidden_layer_sizes=(100,), max_iter=500)  yes
=========  ======================================================  ============

``CLASSIFIER_PARAMS`` is ``name=value;name=value`` with the estimator's own
parameter names (``n_estimators=300;max_depth=12``); values are Python literals
(numbers, ``True``, ``None``, ``(64, 32)``) or plain words (``gini``).

A classifier file is a skops file (https://skops.readthedocs.io) holding the
estimator and the recipe of its features. Loading it never unpickles: skops
rebuilds objects from a schema and refuses every type outside the short list
that our eight classifiers are made of.
"""

from __future__ import annotations

import ast
import html
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import reports
from .assignments import parse_assignments
from .errors import DependencyError, InputError
from .metrics import classification_html, confusion_matrix, report
from .outputs import StagedOutputs, staged_or_now

FORMAT = "otbtf-classifier"
VERSION = 1
CLASSIFIER_NAMES = ("rf", "svm", "boost", "dt", "gbt", "bayes", "knn", "ann")
STANDARDISED = {"svm", "knn", "ann"}
# Types of our classifiers that skops does not trust by itself: nothing else may load.
ALLOWED_TYPES = frozenset({
    "sklearn.tree._tree.Tree",
    "sklearn.calibration._CalibratedClassifier",
    "sklearn.calibration._SigmoidCalibration",
    "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
    "sklearn.metrics._dist_metrics.EuclideanDistance64",
    "sklearn.neighbors._kd_tree.KDTree",
    "sklearn.neighbors._ball_tree.BallTree",
    "sklearn.neural_network._stochastic_optimizers.AdamOptimizer",
    "sklearn.neural_network._stochastic_optimizers.SGDOptimizer",
})


def sklearn():
    """Import scikit-learn and skops, or say how to install them."""
    try:
        import sklearn as module
        import skops.io  # noqa: F401
    except ImportError as err:
        raise DependencyError(f"scikit-learn or skops is missing ({err}): use Plugins > otbtf > Install "
                              "dependencies, or `make setup`") from err
    return module


def _estimator(name: str, seed: int):
    sklearn()
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.discriminant_analysis import QuadraticDiscriminantAnalysis
    from sklearn.ensemble import AdaBoostClassifier, HistGradientBoostingClassifier, RandomForestClassifier
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.neural_network import MLPClassifier
    from sklearn.svm import SVC
    from sklearn.tree import DecisionTreeClassifier

    threads = max(1, os.cpu_count() or 1)
    if name == "rf":
        return RandomForestClassifier(n_estimators=100, n_jobs=threads, random_state=seed)
    if name == "svm":
        return CalibratedClassifierCV(SVC(kernel="rbf", C=1.0, gamma="scale", random_state=seed), ensemble=False)
    if name == "boost":
        return AdaBoostClassifier(n_estimators=100, random_state=seed)
    if name == "dt":
        return DecisionTreeClassifier(random_state=seed)
    if name == "gbt":
        return HistGradientBoostingClassifier(random_state=seed)
    if name == "bayes":
        return QuadraticDiscriminantAnalysis(reg_param=1e-6)
    if name == "knn":
        return KNeighborsClassifier(n_neighbors=5)
    if name == "ann":
        return MLPClassifier(hidden_layer_sizes=(100,), max_iter=500, random_state=seed)
    raise InputError(f"unknown classifier {name!r}; use one of: {', '.join(CLASSIFIER_NAMES)}")


def parse_params(text: str | None) -> dict[str, object]:
    """``"a=1;b=gini"`` -> ``{"a": 1, "b": "gini"}``."""
    params: dict[str, object] = {}
    for name, raw in parse_assignments(text, "CLASSIFIER_PARAMS", "n_estimators=200").items():
        try:
            value = ast.literal_eval(raw)
        except (ValueError, SyntaxError):
            value = {"true": True, "false": False, "none": None}.get(raw.lower(), raw)
        params[name] = value
    return params


def _as_params(params: str | dict | None) -> dict[str, object]:
    return parse_params(params) if isinstance(params, str) or params is None else dict(params)


def single_threaded(estimator):
    """Set ``n_jobs=1`` on the estimator (and the steps of a pipeline): callers that run
    it on threads of their own (one pool per run, a cluster worker) do the parallelism."""
    for part in [estimator, *(step for _, step in getattr(estimator, "steps", []))]:
        if hasattr(part, "n_jobs"):
            part.n_jobs = 1
    return estimator


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
        return (np.concatenate([n["feature_idx"] for n in split]).astype(np.int64),
                np.concatenate([n["num_threshold"] for n in split]).astype(np.float64), np.float64)
    else:
        return None
    inner = [tree.children_left != -1 for tree in trees]
    return (np.concatenate([t.feature[i] for t, i in zip(trees, inner, strict=True)]).astype(np.int64),
            np.concatenate([t.threshold[i] for t, i in zip(trees, inner, strict=True)]).astype(np.float64), np.float32)


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
    if count >= 2 ** 62:
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


def make_classifier(name: str, params: str | dict | None = None, seed: int = 0):
    """The estimator (a pipeline with a scaler where needed), parameters checked."""
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    estimator = _estimator(name, seed)
    params = _as_params(params)
    target = estimator.estimator if name == "svm" else estimator  # svm: the SVC inside the calibration
    known = target.get_params(deep=False)
    unknown = sorted(set(params) - set(known))
    if unknown:
        raise InputError(f"CLASSIFIER_PARAMS: {', '.join(unknown)} is not a parameter of {name} "
                         f"({type(target).__name__}); its parameters: {', '.join(sorted(known))}")
    try:
        target.set_params(**params)
        target._validate_params()  # scikit-learn's own checks of types and ranges
    except (ValueError, TypeError) as err:
        raise InputError(f"CLASSIFIER_PARAMS for {name}: {err}") from err
    return make_pipeline(StandardScaler(), estimator) if name in STANDARDISED else estimator


def split_by_group(codes: np.ndarray, groups: np.ndarray, fraction: float, seed: int,
                   names: dict[int, str] | None = None) -> tuple[np.ndarray, list[str]]:
    """``validation`` mask: whole groups (polygons) drawn per class until about ``fraction``
    of the class's samples; a class with a single group keeps it for training."""
    if not 0 <= fraction < 1:
        raise InputError(f"VALIDATION={fraction:g}: give a fraction of the polygons in [0, 1), e.g. 0.3")
    rng = np.random.default_rng(seed)
    validation = np.zeros(len(codes), dtype=bool)
    warnings: list[str] = []
    if fraction == 0:
        return validation, warnings
    for code in np.unique(codes):
        members = codes == code
        ids, counts = np.unique(groups[members], return_counts=True)
        if len(ids) < 2:
            label = (names or {}).get(int(code), int(code))
            warnings.append(f"class {label} has samples from one polygon only: none of it is held out, "
                            "the report cannot assess that class")
            continue
        order = rng.permutation(len(ids))
        taken: list[int] = []
        total = counts.sum()
        for k in order:
            if counts[taken].sum() >= fraction * total or len(taken) == len(ids) - 1:
                break
            taken.append(k)
        validation |= members & np.isin(groups, ids[taken])
    return validation, warnings


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

    @property
    def codes(self) -> np.ndarray:
        return np.asarray([c["code"] for c in self.classes], dtype=np.int64)


def train(features: np.ndarray, codes: np.ndarray, groups: np.ndarray, class_names: dict[int, str],
          recipe: dict, classifier: str = "rf", params: str | None = None, seed: int = 0,
          validation: float = 0.3) -> TrainedClassifier:
    """Fit on the training groups (polygons) and score on the held-out ones."""
    features = np.asarray(features, dtype=np.float32)
    codes = np.asarray(codes, dtype=np.int64)
    if len(features) == 0:
        raise InputError("no sample to train on: check that the points or polygons lie on valid pixels")
    present = np.unique(codes)
    if len(present) < 2:
        raise InputError(f"the samples hold one class only ({class_names.get(int(present[0]), present[0])}): "
                         "a classifier needs at least two")
    if not np.isfinite(features).all():
        bad = int((~np.isfinite(features)).any(axis=1).sum())
        raise InputError(f"{bad} sample(s) have NaN or infinite features: set the sources' nodata value")
    estimator = make_classifier(classifier, params, seed)
    held_out, warnings = split_by_group(codes, np.asarray(groups), validation, seed, class_names)
    classes = [{"code": int(c), "name": str(class_names.get(int(c), int(c)))} for c in present]
    metrics = None
    try:
        # The file holds the classifier the report describes: fitted on the training polygons only.
        estimator.fit(features[~held_out], codes[~held_out])
        if held_out.any():
            predicted = estimator.predict(features[held_out])
            matrix = confusion_matrix(codes[held_out], predicted, [c["code"] for c in classes])
            metrics = report(matrix, [str(c["name"]) for c in classes])
    except ValueError as err:  # scikit-learn's complaints about the data (too few samples, ...)
        raise InputError(f"{classifier} could not be trained: {err}") from err
    return TrainedClassifier(estimator, recipe, classes, classifier, _as_params(params), metrics,
                             int((~held_out).sum()), int(held_out.sum()), warnings)


def save(trained: TrainedClassifier, path: str | Path, staged: StagedOutputs | None = None) -> Path:
    """Write the classifier file (skops), staged with ``staged`` or atomically now."""
    sklearn()
    import skops.io

    header = {"format": FORMAT, "version": VERSION, "classifier": trained.classifier,
              "params": {k: repr(v) for k, v in trained.params.items()}, "classes": trained.classes,
              "recipe": trained.recipe, "metrics": trained.metrics}
    path = Path(path)
    with staged_or_now(staged) as group:
        skops.io.dump({"otbtf": json.dumps(header), "estimator": trained.estimator}, group.file(path))
    return path


def load(path: str | Path) -> TrainedClassifier:
    """Read a classifier file, refusing any type outside :data:`ALLOWED_TYPES`."""
    sklearn()
    import skops.io

    path = Path(path)
    if not path.is_file():
        raise InputError(f"classifier file {str(path)!r} does not exist")
    data = path.read_bytes()
    try:
        untrusted = skops.io.get_untrusted_types(data=data)
    except Exception as err:  # not a zip, no schema, ...
        raise InputError(f"{path.name} is not a classifier file of otbtf:trainclassifierfromdeepfeatures "
                         f"or otbtf:trainvectorclassifier ({err})") from err
    refused = sorted(set(untrusted) - ALLOWED_TYPES)
    if refused:
        raise InputError(f"{path.name} holds objects of types {', '.join(refused)}, which a classifier of this "
                         "plugin never contains: refused without loading them")
    try:
        content = skops.io.loads(data, trusted=list(untrusted))
        header = json.loads(content["otbtf"])
        estimator = content["estimator"]
    except Exception as err:
        raise InputError(f"{path.name} is not a classifier file of this plugin ({err})") from err
    if header.get("format") != FORMAT or header.get("version") != VERSION:
        raise InputError(f"{path.name}: format {header.get('format')} version {header.get('version')}; this plugin "
                         f"reads {FORMAT} version {VERSION}")
    return TrainedClassifier(estimator, header["recipe"], header["classes"], header["classifier"],
                             header.get("params", {}), header.get("metrics"))


def write_report(path: str | Path, trained: TrainedClassifier, title: str,
                 staged: StagedOutputs | None = None) -> Path:
    """HTML report (and the same as JSON beside it), staged with ``staged`` or written now."""
    data = {"classifier": trained.classifier, "params": {k: repr(v) for k, v in trained.params.items()},
            "classes": trained.classes, "training_samples": trained.training_samples,
            "validation_samples": trained.validation_samples, "validation": trained.metrics,
            "warnings": trained.warnings, "features": trained.recipe.get("features")}
    scores = classification_html(trained.metrics) if trained.metrics else \
        "<p>No validation: no class had two polygons (or VALIDATION was 0).</p>"
    notes = "".join(f"<li>{html.escape(w)}</li>" for w in trained.warnings)
    params = ", ".join(f"{html.escape(k)}={html.escape(repr(v))}" for k, v in trained.params.items()) or "defaults"
    features = len(trained.recipe.get("features", []))
    body = f"""<p>Classifier <b>{html.escape(trained.classifier)}</b> ({params}); {features}
features; {trained.training_samples} training and {trained.validation_samples} validation samples
(validation polygons held out whole).</p>
{f'<ul>{notes}</ul>' if notes else ''}
<h2>Validation</h2>
{scores}"""
    return reports.write_report(path, title, body, data, staged)
