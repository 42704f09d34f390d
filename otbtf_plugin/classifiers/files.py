"""Classifier files: a skops file holding the estimator and the recipe of its features.
Loading never unpickles: skops rebuilds objects from a schema and refuses every type
outside the short list that our eight classifiers are made of."""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import InputError
from ..outputs import StagedOutputs, staged_or_now
from .fitting import TrainedClassifier
from .registry import sklearn

FORMAT = "otbtf-classifier"


VERSION = 1


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

