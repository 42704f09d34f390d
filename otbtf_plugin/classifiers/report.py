"""The validation report of a classifier (HTML, and JSON beside it)."""

from __future__ import annotations

import html
from pathlib import Path

from .. import reports
from ..metrics import classification_html
from ..outputs import StagedOutputs
from .fitting import TrainedClassifier


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

