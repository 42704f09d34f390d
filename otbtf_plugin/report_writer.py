"""Reports a person reads (HTML) with their numbers beside them (JSON, same name): the one
writer of training and classifier reports.

The page is one jinja2 template, ``templates/report.html``, autoescaped: callers hand values
(:class:`Report`), never HTML, so a class called ``<script>`` or a parameter with a quote is
shown as typed. Words that mark up values (a paragraph with a bold name) are built with
``markupsafe.Markup.format``, which escapes the values it is given.
"""

from __future__ import annotations

import base64
import json
from dataclasses import asdict, dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from .outputs import PathLike, StagedOutputs, staged_or_now

TEMPLATES = Path(__file__).with_name("templates")
CV_COLUMNS = {
    "overall_accuracy": "overall accuracy",
    "kappa": "kappa",
    "mean_f1": "mean F1",
    "rmse": "RMSE",
    "mae": "MAE",
    "r2": "R²",
}


@dataclass
class Report:
    """What a report page shows, in its order: ``intro`` paragraphs (text, or ``Markup``),
    ``notes``, the parameter ``search`` (``folds``, ``rows``: ``text``, ``chosen``,
    ``overall_accuracy``, ``kappa``), how validation samples were ``held_out``, a
    ``refit_note``, the validation ``scores`` (``metrics.report`` or
    ``metrics.regression_report``; ``no_scores`` said when empty), the ``cross_validation``
    (``metrics.fold_summary``) and the learning ``curves`` (PNG)."""

    title: str
    intro: list[Any] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    search: dict = field(default_factory=dict)
    held_out: dict = field(default_factory=dict)
    refit_note: str = ""
    scores: dict = field(default_factory=dict)
    no_scores: str = ""
    cross_validation: dict = field(default_factory=dict)
    curves: bytes = b""


@cache
def _template():
    import jinja2

    environment = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    environment.globals.update(zip=zip, cv_columns=CV_COLUMNS)
    return environment.get_template("report.html")


def render(report: Report) -> str:
    """The page of ``report``."""
    context = {**asdict(report), "curves": base64.b64encode(report.curves).decode()}
    return _template().render(context)


def write_report(path: PathLike, report: Report, data: dict, staged: StagedOutputs | None = None) -> Path:
    """``report`` as HTML at ``path``, and ``data`` as JSON beside it; both staged with
    ``staged`` (renamed with the run's other outputs) or written now."""
    path = Path(path)
    page = render(report)
    with staged_or_now(staged) as group:
        group.file(path.with_suffix(".json")).write_text(json.dumps(data, indent=2), encoding="utf-8")
        group.file(path).write_text(page, encoding="utf-8")
    return path
