"""Metrics against a hand-computed example."""

import numpy as np
import pytest

from otbtf_plugin.metrics import confusion_matrix, report


def test_hand_computed_example():
    # truth:      a a a a b b b c c c
    # prediction: a a a b b b a c c b
    truth = list("aaaabbbccc")
    predicted = list("aaabbbaccb")
    matrix = confusion_matrix(truth, predicted, ["a", "b", "c"])
    assert matrix.tolist() == [[3, 1, 0], [1, 2, 0], [0, 1, 2]]
    result = report(matrix, ["a", "b", "c"])
    a, b, c = result["classes"]
    assert (a["precision"], a["recall"]) == (3 / 4, 3 / 4)
    assert (b["precision"], b["recall"]) == (2 / 4, 2 / 3)
    assert (c["precision"], c["recall"]) == (1.0, 2 / 3)
    assert b["f1"] == pytest.approx(2 * 0.5 * (2 / 3) / (0.5 + 2 / 3))
    assert result["overall_accuracy"] == 0.7
    # expected agreement: (4*4 + 3*4 + 3*2) / 100 = 0.34; kappa = (0.7 - 0.34) / 0.66
    assert result["kappa"] == pytest.approx(0.36 / 0.66)
    assert [x["support"] for x in result["classes"]] == [4, 3, 3]


def test_class_never_predicted_or_absent():
    matrix = confusion_matrix([1, 1, 2], [1, 1, 1], [1, 2, 3])
    result = report(matrix, ["one", "two", "three"])
    assert result["classes"][1] == {"name": "two", "precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}
    assert result["classes"][2]["support"] == 0
    assert result["kappa"] == 0.0


def test_unknown_predicted_class_is_an_error():
    with pytest.raises(ValueError, match=r"outside \[1, 2\]: \[7\]"):
        confusion_matrix(np.array([1, 2]), np.array([1, 7]), [1, 2])


def test_regression_report_hand_computed():
    from otbtf_plugin.metrics import regression_report

    # errors: +1, -1, +2, 0 -> mse 6/4, mae 1, bias 0.5; truth mean 2.5, sst 5
    result = regression_report([1, 2, 3, 4], [2, 1, 5, 4])
    assert result["rmse"] == pytest.approx(np.sqrt(1.5))
    assert (result["mae"], result["bias"], result["samples"]) == (1.0, 0.5, 4)
    assert result["r2"] == pytest.approx(1 - 6 / 5)
