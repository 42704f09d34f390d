"""Classification metrics: confusion matrix, per-class precision / recall / F1,
overall accuracy and Cohen's kappa. Pure numpy.

Conventions: ``matrix[i, j]`` counts samples of true class ``i`` predicted as class
``j``. A class with no prediction has precision 0 (not NaN), one with no sample
recall 0; F1 is 0 when precision + recall is 0.
"""

from __future__ import annotations

import numpy as np


def confusion_matrix(truth, predicted, classes) -> np.ndarray:
    """``(len(classes), len(classes))`` counts, rows = truth, columns = prediction."""
    classes = list(classes)
    index = {c: k for k, c in enumerate(classes)}
    truth, predicted = np.asarray(truth).ravel(), np.asarray(predicted).ravel()
    if truth.shape != predicted.shape:
        raise ValueError(f"{truth.size} true labels but {predicted.size} predictions")
    t = np.array([index[v] for v in truth.tolist()], dtype=np.int64)
    p = np.array([index.get(v, -1) for v in predicted.tolist()], dtype=np.int64)
    if (p < 0).any():
        raise ValueError(f"predicted classes outside {classes}: {sorted(set(predicted[p < 0].tolist()))}")
    matrix = np.zeros((len(classes), len(classes)), dtype=np.int64)
    np.add.at(matrix, (t, p), 1)
    return matrix


def report(matrix: np.ndarray, names: list[str]) -> dict:
    """Per-class precision, recall, F1 and support; overall accuracy; kappa."""
    matrix = np.asarray(matrix, dtype=np.float64)
    total = matrix.sum()
    diagonal = np.diag(matrix)
    predicted = matrix.sum(axis=0)
    actual = matrix.sum(axis=1)
    precision = np.divide(diagonal, predicted, out=np.zeros_like(diagonal), where=predicted > 0)
    recall = np.divide(diagonal, actual, out=np.zeros_like(diagonal), where=actual > 0)
    denominator = precision + recall
    f1 = np.divide(2 * precision * recall, denominator, out=np.zeros_like(diagonal), where=denominator > 0)
    accuracy = float(diagonal.sum() / total) if total else 0.0
    expected = float((predicted * actual).sum() / total**2) if total else 0.0
    kappa = (accuracy - expected) / (1 - expected) if expected < 1 else 0.0
    return {
        "classes": [
            {"name": name, "precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
            for name, p, r, f, s in zip(names, precision, recall, f1, actual, strict=True)
        ],
        "overall_accuracy": accuracy,
        "kappa": float(kappa),
        "confusion_matrix": matrix.astype(np.int64).tolist(),
        "samples": int(total),
    }


def regression_report(truth, predicted) -> dict:
    """RMSE, MAE, bias (mean of predicted - truth) and R^2 (1 - SSE / SST)."""
    truth = np.asarray(truth, dtype=np.float64).ravel()
    predicted = np.asarray(predicted, dtype=np.float64).ravel()
    if truth.shape != predicted.shape:
        raise ValueError(f"{truth.size} true values but {predicted.size} predictions")
    error = predicted - truth
    total = float(((truth - truth.mean()) ** 2).sum()) if truth.size else 0.0
    return {
        "rmse": float(np.sqrt((error**2).mean())) if truth.size else 0.0,
        "mae": float(np.abs(error).mean()) if truth.size else 0.0,
        "bias": float(error.mean()) if truth.size else 0.0,
        "r2": float(1 - (error**2).sum() / total) if total > 0 else 0.0,
        "samples": int(truth.size),
    }


FOLD_KEYS = {"classification": ("overall_accuracy", "kappa", "mean_f1"), "regression": ("rmse", "mae", "r2")}


def fold_summary(per_fold: list[dict], pooled: dict) -> dict:
    """Cross-validation in the reports' form: each fold's scores (``report`` or
    ``regression_report`` dicts; classification adds the mean F1 of the classes present in
    the fold), their mean and standard deviation, and the ``pooled`` scores of all folds."""
    keys = FOLD_KEYS["regression" if "rmse" in pooled else "classification"]
    rows = []
    for scores in per_fold:
        row = {key: float(scores[key]) for key in keys if key in scores}
        if "classes" in scores:
            row["mean_f1"] = float(np.mean([c["f1"] for c in scores["classes"] if c["support"]]))
        rows.append({**row, "samples": int(scores["samples"])})
    return {
        "folds": len(rows),
        "per_fold": rows,
        "summary": {
            key: {"mean": float(np.mean([r[key] for r in rows])), "std": float(np.std([r[key] for r in rows]))}
            for key in keys
        },
        "pooled": {key: float(pooled[key]) for key in keys if key in pooled},
    }
