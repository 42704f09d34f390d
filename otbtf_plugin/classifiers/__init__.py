"""Classical classifiers (scikit-learn) with Orfeo ToolBox's names, and their files.

=========  ======================================================  ============
name       scikit-learn estimator (our defaults)                   standardised
=========  ======================================================  ============
``rf``     RandomForestClassifier(n_estimators=100, max_depth=5,   no
           min_samples_split=10): OTB's defaults
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
(numbers, ``True``, ``None``, ``(64, 32)``) or plain words (``gini``); ``auto`` searches
a small grid by cross-validation grouped by polygon (``search``).

The rooms: ``registry`` (names, estimators, parameters), ``fitting`` (fit on training
polygons, score on held-out ones, refit on all), ``search`` (grouped cross-validation:
``auto`` and ``FOLDS``), ``decisions`` (rows -> classes, exact shortcuts for trees),
``files`` (skops files, loaded without unpickling), ``report``.
"""

from .decisions import (
    Decisions,
    ParallelDecisions,
    ThresholdCells,
    decision_function,
    probability_function,
    threshold_cells,
)
from .files import load, save
from .fitting import TrainedClassifier, split_by_group, train
from .registry import CLASSIFIER_NAMES, make_classifier, parse_params, single_threaded, sklearn
from .report import write_report

__all__ = [
    "CLASSIFIER_NAMES",
    "Decisions",
    "ParallelDecisions",
    "ThresholdCells",
    "TrainedClassifier",
    "decision_function",
    "load",
    "make_classifier",
    "parse_params",
    "probability_function",
    "save",
    "single_threaded",
    "sklearn",
    "split_by_group",
    "threshold_cells",
    "train",
    "write_report",
]
