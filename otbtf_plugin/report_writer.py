"""Reports a person reads (HTML) with their numbers beside them (JSON, same name): the one
writer of training, classifier and validation reports."""

from __future__ import annotations

import html
import json
from pathlib import Path

from .outputs import PathLike, StagedOutputs, staged_or_now

STYLE = """body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}
td,th{border:1px solid #999;padding:4px 8px;text-align:right}"""


def write_report(path: PathLike, title: str, body: str, data: dict, staged: StagedOutputs | None = None) -> Path:
    """``body`` (HTML) under ``title`` at ``path``, and ``data`` as JSON beside it; both staged
    with ``staged`` (renamed with the run's other outputs) or written now."""
    path = Path(path)
    page = (f'<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>{html.escape(title)}</title>\n'
            f"<style>{STYLE}</style></head><body>\n<h1>{html.escape(title)}</h1>\n{body}\n</body></html>\n")
    with staged_or_now(staged) as group:
        group.file(path.with_suffix(".json")).write_text(json.dumps(data, indent=2), encoding="utf-8")
        group.file(path).write_text(page, encoding="utf-8")
    return path


def validation_html(held_out: dict) -> str:
    """How the validation samples were chosen: the method, the groups on each side per class,
    and the warnings (classes the scores cannot assess)."""
    if not held_out:
        return ""
    rows = "".join(f"<tr><td>{html.escape(name)}</td><td>{sides['training']}</td><td>{sides['validation']}</td></tr>"
                   for name, sides in held_out.get("groups", {}).items())
    table = (f"<table><tr><th>class</th><th>groups for training</th><th>groups held out</th></tr>{rows}</table>"
             if rows else "")
    warnings = "".join(f"<li>{html.escape(w)}</li>" for w in held_out.get("warnings", []))
    how = (f"held out {held_out['method']}: no group gives samples to both sides" if rows
           else str(held_out["method"]))
    return (f"<p>Validation samples: {held_out['validation_samples']}, {html.escape(how)}.</p>{table}"
            + (f"<ul class=warnings>{warnings}</ul>" if warnings else ""))


CV_COLUMNS = {"overall_accuracy": "overall accuracy", "kappa": "kappa", "mean_f1": "mean F1",
              "rmse": "RMSE", "mae": "MAE", "r2": "R&sup2;"}


def cross_validation_html(validated: dict) -> str:
    """FOLDS: the scores of each fold, their mean and standard deviation, and pooled."""
    if not validated:
        return ""
    keys = [key for key in CV_COLUMNS if key in validated["summary"]]
    head = "".join(f"<th>{CV_COLUMNS[key]}</th>" for key in keys)
    rows = "".join(f"<tr><td>{k + 1}</td><td>{fold['samples']}</td>"
                   + "".join(f"<td>{fold[key]:.3f}</td>" for key in keys) + "</tr>"
                   for k, fold in enumerate(validated["per_fold"]))
    summary = "".join(f"<td>{validated['summary'][key]['mean']:.3f} &plusmn; {validated['summary'][key]['std']:.3f}"
                      "</td>" for key in keys)
    pooled = "".join(f"<td>{validated['pooled'][key]:.3f}</td>" if key in validated["pooled"] else "<td></td>"
                     for key in keys)
    return (f"<h2>Cross-validation grouped by polygon ({validated['folds']} folds)</h2><p>Every polygon in one "
            "fold; each fold scored by a model trained on the others.</p><table><tr><th>fold</th>"
            f"<th>samples</th>{head}</tr>{rows}<tr><td>mean &plusmn; sd</td><td></td>{summary}</tr>"
            f"<tr><td>pooled</td><td></td>{pooled}</tr></table>")
