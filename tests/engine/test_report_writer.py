"""The report page: values from the template, escaped whatever they hold."""

import json
import re

from markupsafe import Markup

from otbtf_plugin.metrics import confusion_matrix, fold_summary, regression_report, report
from otbtf_plugin.report_writer import Report, render, write_report

HOSTILE = '<script>alert("x")</script> & Co\'s'


def cells(page: str, row_head: str) -> list[str]:
    """The cells of the table row whose first cell is ``row_head``."""
    row = re.search(rf"<tr><t[dh][^>]*>{re.escape(row_head)}</t[dh]>(.*?)</tr>", page, re.S)
    assert row, row_head
    return re.findall(r"<td[^>]*>(.*?)</td>", row.group(1), re.S)


def test_names_and_notes_are_shown_as_typed_never_run():
    metrics = report(confusion_matrix([1, 1, 2, 2], [1, 2, 2, 2], [1, 2]), [HOSTILE, "water"])
    page = render(
        Report(
            title=HOSTILE,
            intro=[Markup("Classifier <b>{}</b>.").format(HOSTILE)],
            notes=[HOSTILE],
            scores=metrics,
            held_out={
                "method": "by polygon",
                "validation_samples": 4,
                "groups": {HOSTILE: {"training": 3, "validation": 1}},
                "warnings": [HOSTILE],
            },
        )
    )
    assert "<script>" not in page
    escaped = "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt; &amp; Co&#39;s"
    # title, heading, intro, note, groups row, warning, scores row, the matrix's column and row heads
    assert page.count(escaped) == 9
    assert "<b>" + escaped + "</b>" in page  # the intro's own markup stays markup


def test_the_numbers_are_those_of_the_metrics():
    metrics = report(confusion_matrix([1, 1, 1, 2, 2, 3], [1, 1, 2, 2, 3, 3], [1, 2, 3]), ["a", "b", "c"])
    page = render(Report(title="t", scores=metrics))
    assert "Overall accuracy <b>0.6667</b>" in page  # 4 of 6, by hand
    assert cells(page, "a") == ["1.000", "0.667", "0.800", "3"]  # precision 2/2, recall 2/3, F1 0.8
    matrix = page[page.index("Confusion matrix") :]
    assert cells(matrix, "a") == ["2", "1", "0"] and cells(matrix, "c") == ["0", "0", "1"]


def test_regression_and_cross_validation():
    scores = regression_report([1.0, 2.0, 3.0], [1.5, 2.0, 2.5])
    folds = fold_summary([regression_report([1.0, 2.0], [1.0, 3.0]), regression_report([1.0, 2.0], [1.0, 2.0])], scores)
    page = render(Report(title="t", scores=scores, cross_validation=folds))
    assert "RMSE <b>0.408248</b>" in page  # sqrt((0.25 + 0 + 0.25) / 3)
    assert cells(page, "1")[:3] == ["2", "0.707", "0.500"]  # fold 1: rmse sqrt(1/2), mae 1/2
    assert cells(page, "mean ± sd")[1] == "0.354 ± 0.354"


def test_write_report_puts_the_numbers_beside_the_page(tmp_path):
    path = write_report(tmp_path / "r.html", Report(title="t", no_scores="none"), {"x": [1, 2]})
    assert json.loads((tmp_path / "r.json").read_text()) == {"x": [1, 2]}
    assert "<p>none</p>" in path.read_text()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.html", "r.json"]
