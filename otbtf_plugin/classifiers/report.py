"""The validation report of a classifier (HTML, and JSON beside it)."""

from __future__ import annotations

import html
from pathlib import Path

from .. import report_writer
from ..metrics import classification_html
from ..outputs import StagedOutputs
from .fitting import TrainedClassifier


def write_report(path: str | Path, trained: TrainedClassifier, title: str,
                 staged: StagedOutputs | None = None) -> Path:
    """HTML report (and the same as JSON beside it), staged with ``staged`` or written now."""
    data = {"classifier": trained.classifier, "params": {k: repr(v) for k, v in trained.params.items()},
            "classes": trained.classes, "training_samples": trained.training_samples,
            "validation_samples": trained.validation_samples, "validation": trained.metrics,
            "warnings": trained.warnings, "features": trained.recipe.get("features"),
            "held_out": trained.held_out, "refit": trained.refit, "search": trained.search,
            "cross_validation": trained.cross_validation}
    scores = classification_html(trained.metrics) if trained.metrics else \
        "<p>No validation: no class had two polygons (or VALIDATION was 0).</p>"
    notes = "".join(f"<li>{html.escape(w)}</li>" for w in trained.warnings)
    params = ", ".join(f"{html.escape(k)}={html.escape(repr(v))}" for k, v in trained.params.items()) or "defaults"
    features = len(trained.recipe.get("features", []))
    refit = (f"<p>The scores below are those of the classifier trained without the held-out polygons; "
             f"the file holds it trained again on every sample ({trained.training_samples}), which maps "
             "at least as well.</p>" if trained.refit else "")
    body = f"""<p>Classifier <b>{html.escape(trained.classifier)}</b> ({params}); {features}
features; {_samples_text(trained)}.</p>
{f'<ul>{notes}</ul>' if notes else ''}
{_search_html(trained.search)}
<h2>Validation</h2>
{report_writer.validation_html({**trained.held_out, "warnings": []}) if trained.held_out else ""}
{refit}
{scores}
{report_writer.cross_validation_html(trained.cross_validation)}"""
    return report_writer.write_report(path, title, body, data, staged)



def _search_html(search: dict) -> str:
    """CLASSIFIER_PARAMS=auto: every candidate and its scores, the chosen one in bold."""
    if not search:
        return ""
    rows = []
    for candidate in search["candidates"]:
        text = ", ".join(f"{k}={v}" for k, v in candidate["params"].items()) or "defaults"
        chosen = candidate["params"] == search["chosen"]
        cell = f"<b>{html.escape(text)}</b>" if chosen else html.escape(text)
        rows.append(f"<tr><td style='text-align:left'>{cell}</td><td>{candidate['overall_accuracy']:.3f}</td>"
                    f"<td>{candidate['kappa']:.3f}</td></tr>")
    return (f"<h2>Parameters chosen (CLASSIFIER_PARAMS=auto)</h2><p>{search['folds']}-fold cross-validation "
            "grouped by polygon on the training polygons (the held-out ones are not used); overall "
            "accuracy pooled over the folds decides.</p><table><tr><th>parameters</th><th>overall accuracy</th>"
            f"<th>kappa</th></tr>{''.join(rows)}</table>")


def _samples_text(trained: TrainedClassifier) -> str:
    if trained.refit:
        return (f"{trained.validation_samples} samples of held-out polygons scored a classifier trained on the "
                f"{trained.training_samples - trained.validation_samples} others; the file's classifier is "
                f"trained on all {trained.training_samples}")
    return (f"{trained.training_samples} training and {trained.validation_samples} validation samples "
            "(validation polygons held out whole)")
