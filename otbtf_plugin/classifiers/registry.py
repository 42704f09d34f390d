"""The eight classifiers under Orfeo ToolBox's names, their scikit-learn estimators and
defaults, and CLASSIFIER_PARAMS checked against the estimator before any work."""

from __future__ import annotations

import ast
import os

from .. import packages
from ..assignments import parse_assignments
from ..errors import DependencyError, InputError

CLASSIFIER_NAMES = ("rf", "svm", "boost", "dt", "gbt", "bayes", "knn", "ann")
AUTO = "auto"


STANDARDISED = {"svm", "knn", "ann"}


def sklearn():
    """Import scikit-learn and skops, or say how to install them."""
    packages.require("classifiers")
    try:
        import sklearn as module
        import skops.io  # noqa: F401
    except ImportError as err:  # installed, yet not importable: say what Python said
        raise DependencyError(
            f"scikit-learn or skops cannot be imported ({err}): use Plugins > otbtf > Install dependencies, or "
            + packages.install_command()
        ) from err
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
        # Orfeo ToolBox's defaults (depth 5, 10 samples to split a node): on few polygons, fully
        # grown trees learn the polygons, not the classes (README: grouped cross-validation).
        return RandomForestClassifier(
            n_estimators=100, max_depth=5, min_samples_split=10, n_jobs=threads, random_state=seed
        )
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


def as_params(params: str | dict | None) -> dict[str, object]:
    return parse_params(params) if isinstance(params, str) or params is None else dict(params)


def single_threaded(estimator):
    """Set ``n_jobs=1`` on the estimator (and the steps of a pipeline): callers that run
    it on threads of their own (one pool per run, a cluster worker) do the parallelism."""
    for part in [estimator, *(step for _, step in getattr(estimator, "steps", []))]:
        if hasattr(part, "n_jobs"):
            part.n_jobs = 1
    return estimator


def is_auto(params) -> bool:
    """CLASSIFIER_PARAMS=auto: the settings are chosen by a grouped cross-validation (``search``)."""
    return isinstance(params, str) and params.strip().lower() == AUTO


def make_classifier(name: str, params: str | dict | None = None, seed: int = 0):
    """The estimator (a pipeline with a scaler where needed), parameters checked."""
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    estimator = _estimator(name, seed)
    params = {} if is_auto(params) else as_params(params)  # auto: a search (fitting.train) from the defaults
    target = estimator.estimator if name == "svm" else estimator  # svm: the SVC inside the calibration
    known = target.get_params(deep=False)
    unknown = sorted(set(params) - set(known))
    if unknown:
        raise InputError(
            f"CLASSIFIER_PARAMS: {', '.join(unknown)} is not a parameter of {name} "
            f"({type(target).__name__}); its parameters: {', '.join(sorted(known))}"
        )
    try:
        target.set_params(**params)
        target._validate_params()  # scikit-learn's own checks of types and ranges
    except (ValueError, TypeError) as err:
        raise InputError(f"CLASSIFIER_PARAMS for {name}: {err}") from err
    return make_pipeline(StandardScaler(), estimator) if name in STANDARDISED else estimator
