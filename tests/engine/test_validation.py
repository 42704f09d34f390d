"""Grouped hold-out and folds: no group on both sides, classes shared out, same seed same split."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from otbtf_plugin.errors import InputError
from otbtf_plugin.validation import consecutive_runs, group_folds, hold_out_groups, spatial_blocks

# Samples as (class, group) pairs; a group may hold several classes (a spatial block).
samples = st.lists(st.tuples(st.integers(1, 4), st.integers(0, 12)), min_size=1, max_size=300)


def _arrays(pairs):
    codes, groups = (np.asarray(v) for v in zip(*pairs, strict=True))
    return codes, groups


@settings(max_examples=200, deadline=None)
@given(samples, st.floats(0, 0.95), st.integers(0, 2**31))
def test_no_group_gives_samples_to_both_sides(pairs, fraction, seed):
    codes, groups = _arrays(pairs)
    split = hold_out_groups(codes, groups, fraction, seed)
    for g in np.unique(groups):
        assert len(set(split.validation[groups == g].tolist())) == 1
    # Every class keeps training samples; a class of one group is never held out.
    for code in np.unique(codes):
        members = codes == code
        assert (~split.validation & members).any()
        if len(np.unique(groups[members])) == 1:
            assert not (split.validation & members).any()
    # The counts the report prints are the split's own.
    for code, (train, valid) in split.groups_per_class.items():
        members = codes == code
        assert valid == len(np.unique(groups[members & split.validation]))
        assert train == len(np.unique(groups[members & ~split.validation]))
    again = hold_out_groups(codes, groups, fraction, seed)
    assert np.array_equal(split.validation, again.validation)


def test_each_class_gets_about_its_share_of_polygons():
    rng = np.random.default_rng(3)
    sizes = rng.integers(20, 60, 60)  # 60 polygons, 3 classes of 20
    codes = np.repeat(np.arange(60) % 3 + 1, sizes)
    groups = np.repeat(np.arange(60), sizes)
    split = hold_out_groups(codes, groups, 0.3, seed=1)
    for code in (1, 2, 3):
        share = split.validation[codes == code].mean()
        assert 0.25 <= share <= 0.4, share
        assert split.groups_per_class[code][1] >= 5
    assert split.warnings == []


def test_one_large_polygon_is_not_drawn_while_smaller_ones_fit():
    """A class of one 900-sample polygon and five of 20: holding out the large one would
    take 90 % of the class, so whatever the seed the small ones are held out instead."""
    codes = np.ones(1000, dtype=int)
    groups = np.repeat([0, 1, 2, 3, 4, 5], [900, 20, 20, 20, 20, 20])
    for seed in range(20):
        split = hold_out_groups(codes, groups, 0.1, seed)
        assert not split.validation[:900].any()
        assert split.validation.sum() == 100


def test_warnings_name_the_classes_that_cannot_be_assessed():
    codes = np.repeat([1, 1, 1, 1, 2, 2, 3], 10)
    groups = np.repeat([10, 11, 12, 13, 20, 21, 30], 10)
    split = hold_out_groups(codes, groups, 0.5, seed=0, names={2: "crop", 3: "water"})
    assert split.warnings == [
        "class crop: one polygon held out; its scores rest on that area alone (give more polygons of that class)",
        "class water comes from one polygon only: none of it is held out, the report cannot assess that class",
    ]
    assert split.describe({3: "water"})[-1] == "water: 1 group(s) for training, 0 held out"
    with pytest.raises(InputError, match="VALIDATION=1: give the share"):
        hold_out_groups(codes, groups, 1, 0)


@settings(max_examples=100, deadline=None)
@given(samples, st.integers(2, 5), st.integers(0, 2**31))
def test_folds_keep_groups_whole_and_share_out_classes(pairs, folds, seed):
    codes, groups = _arrays(pairs)
    if len(np.unique(groups)) < folds:
        with pytest.raises(InputError, match="cannot fill"):
            group_folds(codes, groups, folds, seed)
        return
    fold = group_folds(codes, groups, folds, seed)
    assert set(fold.tolist()) <= set(range(folds))
    for g in np.unique(groups):
        assert len(set(fold[groups == g].tolist())) == 1
    assert np.array_equal(fold, group_folds(codes, groups, folds, seed))


def test_folds_balance_classes_of_equal_polygons():
    codes = np.repeat(np.arange(30) % 3, 10)
    groups = np.repeat(np.arange(30), 10)
    fold = group_folds(codes, groups, 5, seed=0)
    for k in range(5):
        assert [int(((fold == k) & (codes == c)).sum()) for c in range(3)] == [20, 20, 20]


def test_spatial_blocks_and_runs():
    col = np.array([0, 63, 64, 0, 130])
    row = np.array([0, 0, 0, 64, 200])
    blocks = spatial_blocks(col, row, 64)
    assert blocks[0] == blocks[1] != blocks[2]
    assert len({int(b) for b in blocks}) == 4
    assert consecutive_runs(10, 3).tolist() == [0, 0, 0, 0, 1, 1, 1, 1, 2, 2]


def test_many_classes_of_one_polygon_make_one_line_not_one_each():
    """300 classes of one polygon each gave 300 lines (600 with the blocks' notes)."""
    from otbtf_plugin.validation import hold_out_groups

    codes = np.repeat(np.arange(300), 4)
    groups = np.repeat(np.arange(300), 4)  # one polygon per class
    split = hold_out_groups(codes, groups, 0.2, 0)
    assert len(split.warnings) == 1
    assert split.warnings[0].startswith(
        "classes 0, 1, 2, 3, 4, 5, 6, 7 and 292 more each come from one polygon only: none of them is held out"
    )
    single = hold_out_groups(np.array([1, 1, 2, 2, 2, 2]), np.array([1, 1, 2, 3, 4, 5]), 0.3, 0, {1: "water"})
    assert single.warnings[0] == (
        "class water comes from one polygon only: none of it is held out, the report cannot assess that class"
    )
