"""What training decides from the labels before building a network (pure: no TensorFlow),
and the training set's reads against whole-image reads."""

import numpy as np
import pytest
import rasterio

from otbtf_plugin.errors import InputError
from otbtf_plugin.grid import ModelGeometry
from otbtf_plugin.training.data import hold_out
from otbtf_plugin.training.targets import class_weights, decide_target


def test_whole_labels_make_a_classifier_with_names_and_a_code_index():
    target = decide_target("auto", "cnn", "classification", np.array([3.0, 7, 7, 3, 9]), False, {7: "water"})
    assert (target.task, target.architecture, target.codes) == ("classification", "cnn", [3, 7, 9])
    assert target.names == {3: "3", 7: "water", 9: "9"}
    index = target.label_index()
    assert index is not None and index[[3, 7, 9]].tolist() == [0, 1, 2] and index[[0, 4, 8]].tolist() == [-1, -1, -1]


def test_fractional_labels_or_the_regressor_make_a_regression_in_the_labels_units():
    values = np.array([0.5, 1.5, 2.5, 3.5])
    target = decide_target("auto", "cnn", "classification", values, False, {})
    assert target.regression and target.codes == [] and target.label_index() is None
    assert target.statistics == pytest.approx((2.0, float(np.std(values))))
    assert decide_target("auto", "regressor", "classification", np.array([1.0, 2.0]), False, {}).regression
    # label patches with the regressor architecture: the unet body with a linear output
    assert decide_target("regression", "regressor", "segmentation", values, False, {}).architecture == "unet"


@pytest.mark.parametrize(("asked", "architecture", "layout", "labels", "fine", "message"), [
    ("auto", "cnn", "segmentation", [0, 1], False, "use ARCHITECTURE unet"),
    ("auto", "unet", "classification", [0, 1], False, "use ARCHITECTURE cnn"),
    ("auto", "cnn", "classification", [4, 4], False, r"single class \(4\)"),
    ("regression", "cnn", "classification", [0, 1], True, "fine-tuning a regressor"),
    ("guess", "cnn", "classification", [0, 1], False, "unknown task 'guess'"),
])
def test_what_cannot_be_learnt_is_one_line(asked, architecture, layout, labels, fine, message):
    with pytest.raises(InputError, match=message):
        decide_target(asked, architecture, layout, np.array(labels, float), fine, {})


def test_class_weights_make_every_class_weigh_the_same():
    labels = np.array([1] * 6 + [5] * 2 + [9] * 2)
    target = decide_target("classification", "cnn", "classification", labels, False, {})
    weights = class_weights(target, labels)
    # total / (classes * count): 10 / (3 * 6), 10 / (3 * 2), 10 / (3 * 2)
    assert weights.tolist() == pytest.approx([10 / 18, 10 / 6, 10 / 6])
    per_class_total = [w * n for w, n in zip(weights, (6, 2, 2), strict=True)]
    assert per_class_total == pytest.approx([per_class_total[0]] * 3)


def test_hold_out_is_seeded_disjoint_and_complete():
    train, valid = hold_out(50, 0.2, seed=3)
    assert len(valid) == 10 and len(train) == 40
    assert sorted(np.concatenate([train, valid]).tolist()) == list(range(50))
    again = hold_out(50, 0.2, seed=3)
    assert np.array_equal(again[1], valid) and not np.array_equal(hold_out(50, 0.2, seed=4)[1], valid)
    with pytest.raises(InputError, match="too few to hold out"):
        hold_out(3, 0.1, seed=0)


def test_label_patches_are_cut_to_the_block_serving_writes():
    # a 16 px label patch and an 8 px output block: rows and columns 4..11 (centres coincide)
    assert ModelGeometry(16, 8).output_span == slice(4, 12)
    assert ModelGeometry(17, 1).output_span == slice(8, 9)  # a patch classifier: its centre pixel


def test_labels_alone_are_the_labels_of_a_full_read():
    from common import DATA
    from otbtf_plugin.training.data import TrainingSet

    folder = DATA / "otbtf"
    data = TrainingSet([folder / "amsterdam_patches_A_24.tif"], folder / "amsterdam_labels_A_24.tif", "training")
    try:
        indices = np.array([0, 1, 2, 7, 9, 10, 23])
        _, labels = data.read(indices[::-1].copy())
        assert data.layout == "segmentation" and labels.shape == (7, 64, 64)
        assert np.array_equal(data.read_labels(indices), labels[::-1])
        with rasterio.open(folder / "amsterdam_labels_A_24.tif") as src:  # patches stacked down the image
            whole = src.read(1)
        assert np.array_equal(labels[0], whole[23 * 64:24 * 64])
    finally:
        data.close()
