"""Classifier files: a skops file holding the estimator and the recipe of its features.
Loading never unpickles: skops rebuilds objects from a schema and refuses every type
outside the short list that our eight classifiers are made of."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..errors import InputError
from ..outputs import StagedOutputs, staged_or_now
from ..raster import CLASS_CODE_RANGE
from .fitting import TrainedClassifier
from .registry import sklearn

FORMAT = "otbtf-classifier"


VERSION = 1


# Types of our classifiers that skops does not trust by itself: nothing else may load.
ALLOWED_TYPES = frozenset(
    {
        "sklearn.tree._tree.Tree",
        "sklearn.calibration._CalibratedClassifier",
        "sklearn.calibration._SigmoidCalibration",
        "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
        "sklearn.metrics._dist_metrics.EuclideanDistance64",
        "sklearn.neighbors._kd_tree.KDTree",
        "sklearn.neighbors._ball_tree.BallTree",
        "sklearn.neural_network._stochastic_optimizers.AdamOptimizer",
        "sklearn.neural_network._stochastic_optimizers.SGDOptimizer",
    }
)


def save(trained: TrainedClassifier, path: str | Path, staged: StagedOutputs | None = None) -> Path:
    """Write the classifier file (skops), staged with ``staged`` or atomically now."""
    sklearn()
    import skops.io

    header = {
        "format": FORMAT,
        "version": VERSION,
        "classifier": trained.classifier,
        "params": {k: repr(v) for k, v in trained.params.items()},
        "classes": trained.classes,
        "recipe": trained.recipe,
        "metrics": trained.metrics,
    }
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
        raise InputError(
            f"{path.name} is not a classifier file of otbtf:trainclassifierfromdeepfeatures "
            f"or otbtf:trainvectorclassifier ({err})"
        ) from err
    refused = sorted(set(untrusted) - ALLOWED_TYPES)
    if refused:
        raise InputError(
            f"{path.name} holds objects of types {', '.join(refused)}, which a classifier of this "
            "plugin never contains: refused without loading them"
        )
    try:
        content = skops.io.loads(data, trusted=list(untrusted))
        header = json.loads(content["otbtf"])
        estimator = content["estimator"]
    except Exception as err:
        raise InputError(f"{path.name} is not a classifier file of this plugin ({err})") from err
    if not isinstance(header, dict):
        raise InputError(f"{path.name}: its header is not an object of this plugin; train the classifier again")
    if header.get("format") != FORMAT or header.get("version") != VERSION:
        raise InputError(
            f"{path.name}: format {header.get('format')} version {header.get('version')}; this plugin "
            f"reads {FORMAT} version {VERSION}"
        )
    return TrainedClassifier(
        estimator,
        _header(header, "recipe", dict, path),
        _classes(header, path),
        _header(header, "classifier", str, path),
        _header(header, "params", dict, path, {}),
        _header(header, "metrics", dict, path, None),
    )


def _header(header: dict, key: str, kind: type, path: Path, default: Any = ...) -> Any:
    """A value of the file's header, of the type the plugin wrote, or one line naming it."""
    if key not in header and default is not ...:
        return default
    value = header.get(key)
    if value is None and default is None:
        return None
    if not isinstance(value, kind):
        raise InputError(
            f"{path.name}: its header's {key!r} should be {'text' if kind is str else 'an object'}, "
            f"found {type(value).__name__}: the file was not written by this plugin, or was edited; "
            "train the classifier again"
        )
    return value


def _classes(header: dict, path: Path) -> list[dict]:
    """The classes of the header: [{"code": whole number of a class map, "name": text}, ...]."""
    classes = header.get("classes")
    low, high = CLASS_CODE_RANGE
    ok = (
        isinstance(classes, list)
        and classes
        and all(
            isinstance(c, dict)
            and isinstance(c.get("code"), int)
            and not isinstance(c.get("code"), bool)
            and low <= c["code"] <= high
            and isinstance(c.get("name"), str)
            for c in classes
        )
    )
    if not ok:
        raise InputError(
            f"{path.name}: its header's 'classes' should list {{\"code\": a whole number from {low} to "
            f'{high}, "name": text}}, found {str(classes)[:60]!r}: train the classifier again'
        )
    return list(classes or [])
