"""The validation report of a classifier (HTML, and JSON beside it)."""

from __future__ import annotations

from pathlib import Path

from markupsafe import Markup

from .. import report_writer
from ..outputs import StagedOutputs
from .fitting import TrainedClassifier


def write_report(path: str | Path, trained: TrainedClassifier, title: str, staged: StagedOutputs | None = None) -> Path:
    """HTML report (and the same as JSON beside it), staged with ``staged`` or written now."""
    data = {
        "classifier": trained.classifier,
        "params": {k: repr(v) for k, v in trained.params.items()},
        "classes": trained.classes,
        "training_samples": trained.training_samples,
        "validation_samples": trained.validation_samples,
        "validation": trained.metrics,
        "warnings": trained.warnings,
        "features": trained.recipe.get("features"),
        "held_out": trained.held_out,
        "refit": trained.refit,
        "search": trained.search,
        "cross_validation": trained.cross_validation,
    }
    params = ", ".join(f"{k}={v!r}" for k, v in trained.params.items()) or "defaults"
    features = len(trained.recipe.get("features", []))
    refit = (
        f"The scores below are those of the classifier trained without the held-out polygons; the file "
        f"holds it trained again on every sample ({trained.training_samples}), which maps at least as "
        "well."
        if trained.refit
        else ""
    )
    report = report_writer.Report(
        title=title,
        intro=[
            Markup("Classifier <b>{}</b> ({}); {} features; {}.").format(
                trained.classifier, params, features, _samples_text(trained)
            )
        ],
        notes=list(trained.warnings),
        search=_search_rows(trained.search),
        held_out={**trained.held_out, "warnings": []} if trained.held_out else {},
        refit_note=refit,
        scores=trained.metrics or {},
        no_scores="No validation: no class had two polygons (or VALIDATION was 0).",
        cross_validation=trained.cross_validation or {},
    )
    return report_writer.write_report(path, report, data, staged)


def _search_rows(search: dict) -> dict:
    """CLASSIFIER_PARAMS=auto: every candidate and its scores, the chosen one marked."""
    if not search:
        return {}
    rows = [
        {
            "text": ", ".join(f"{k}={v}" for k, v in c["params"].items()) or "defaults",
            "chosen": c["params"] == search["chosen"],
            "overall_accuracy": c["overall_accuracy"],
            "kappa": c["kappa"],
        }
        for c in search["candidates"]
    ]
    return {"folds": search["folds"], "rows": rows}


def _samples_text(trained: TrainedClassifier) -> str:
    if trained.refit:
        return (
            f"{trained.validation_samples} samples of held-out polygons scored a classifier trained on the "
            f"{trained.training_samples - trained.validation_samples} others; the file's classifier is "
            f"trained on all {trained.training_samples}"
        )
    return (
        f"{trained.training_samples} training and {trained.validation_samples} validation samples "
        "(validation polygons held out whole)"
    )
