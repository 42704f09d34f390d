"""Which samples validate a model: whole groups held out, never samples that share one.

Samples taken from one polygon (or one small area) look alike; a model scored on samples
from polygons it was trained on is scored on what it has already seen, and the score
flatters it (on a real scene: 0.995 reported, 0.47 on independent ground truth). So
every split here is by *group*: a polygon (``originfid`` of our sample points), a spatial
block of the patch centres when the polygon is unknown, or a run of consecutive patches
when nothing but the order is known (points made by sample selection follow their
polygons). No group gives samples to both sides.

Pure numpy: the classical classifiers and the networks use the same rules.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .errors import InputError

MIN_VALID_GROUPS = 2  # fewer held-out groups of a class than this, and its scores rest on one area


@dataclass
class GroupSplit:
    """A hold-out: the validation mask and what the report says about it."""

    validation: np.ndarray  # bool per sample
    method: str  # how the groups were made, in words
    groups_per_class: dict[int, tuple[int, int]]  # code -> (training groups, validation groups)
    warnings: list[str] = field(default_factory=list)

    def describe(self, names: dict[int, str] | None = None) -> list[str]:
        """One line per class: its groups on each side."""
        names = names or {}
        return [
            f"{names.get(code, code)}: {train} group(s) for training, {valid} held out"
            for code, (train, valid) in sorted(self.groups_per_class.items())
        ]

    def as_dict(self, names: dict[int, str] | None = None) -> dict:
        names = names or {}
        return {
            "method": self.method,
            "training_samples": int((~self.validation).sum()),
            "validation_samples": int(self.validation.sum()),
            "groups": {
                str(names.get(c, c)): {"training": t, "validation": v}
                for c, (t, v) in sorted(self.groups_per_class.items())
            },
            "warnings": list(self.warnings),
        }


def check_fraction(fraction: float, name: str = "VALIDATION") -> None:
    if not 0 <= fraction < 1:
        raise InputError(f"{name}={fraction:g}: give the share of the polygons to hold out, in [0, 1), e.g. 0.3")


def hold_out_groups(
    codes: np.ndarray,
    groups: np.ndarray,
    fraction: float,
    seed: int,
    names: dict[int, str] | None = None,
    method: str = "by polygon",
    units: dict[int, str] | None = None,
) -> GroupSplit:
    """Whole groups drawn at random (``seed``) until each class has about ``fraction`` of its
    samples held out. A group holding several classes (a spatial block) goes whole to one
    side. At least one group of every class stays for training: a class found in one group
    only is not held out, and the split says the report cannot assess it. ``units`` names
    the groups of a class in the warnings when they are not the method's ("spatial block")."""
    check_fraction(fraction)
    codes = np.asarray(codes)
    groups = np.asarray(groups)
    validation: np.ndarray = np.zeros(len(codes), dtype=bool)
    ids, inverse = np.unique(groups, return_inverse=True)
    classes = np.unique(codes)
    class_index = np.searchsorted(classes, codes)
    # counts[g, c]: samples of class c in group g
    counts = np.zeros((len(ids), len(classes)), dtype=np.int64)
    np.add.at(counts, (inverse, class_index), 1)
    present = counts > 0
    groups_left = present.sum(axis=0)  # per class, groups still on the training side
    wanted = fraction * counts.sum(axis=0)
    held = np.zeros(len(classes), dtype=np.int64)
    taken = np.zeros(len(ids), dtype=bool)
    if fraction > 0:
        order = np.random.default_rng(seed).permutation(len(ids))
        # First pass: no group that would hold out more than twice a class's share; second
        # pass: any group, for the classes still short (all their groups are large).
        for cap in (2 * wanted + 1, np.full(len(classes), np.inf)):
            for g in order:
                mine = present[g]
                if (
                    not taken[g]
                    and (held[mine] < wanted[mine]).any()
                    and (groups_left[mine] > 1).all()
                    and (held + counts[g] <= cap)[mine].all()
                ):
                    taken[g] = True
                    held += counts[g]
                    groups_left -= mine
        validation = taken[inverse]
    names = names or {}
    per_class = {int(code): (int(groups_left[k]), int(present[taken, k].sum())) for k, code in enumerate(classes)}
    # (kind, unit) -> classes, in class order: 300 classes of one polygon give a line, not 300
    found: dict[tuple[str, str], list] = {}
    if fraction > 0:
        for code, (_, valid) in per_class.items():
            unit = (units or {}).get(code, _singular(method))
            if valid < MIN_VALID_GROUPS:
                found.setdefault(("none" if valid == 0 else "one", unit), []).append(names.get(code, code))
    warnings = []
    for (kind, unit), labels in found.items():
        if kind == "none":
            warnings.append(
                f"class {labels[0]} comes from one {unit} only: none of it is held out, the report "
                "cannot assess that class"
                if len(labels) == 1
                else f"classes {listed(labels)} each come from one {unit} only: none of them is held out, "
                "the report cannot assess these classes"
            )
        else:
            warnings.append(
                f"class {labels[0]}: one {unit} held out; its scores rest on that area alone (give more "
                "polygons of that class)"
                if len(labels) == 1
                else f"classes {listed(labels)}: one {unit} each held out; their scores rest on those areas "
                "alone (give more polygons of these classes)"
            )
    return GroupSplit(validation, method, per_class, warnings)


def listed(items: list, most: int = 8) -> str:
    """``a, b, c`` or ``a, b, ... and 12 more``: a list for one line of a message."""
    shown = ", ".join(str(item) for item in items[:most])
    return shown + (f" and {len(items) - most} more" if len(items) > most else "")


def _singular(method: str) -> str:
    return {
        "by polygon": "polygon",
        "by spatial block": "spatial block",
        "by runs of consecutive patches": "run of patches",
    }.get(method, "group")


def group_folds(codes: np.ndarray, groups: np.ndarray, folds: int, seed: int) -> np.ndarray:
    """Fold number (0 .. folds - 1) of every sample: each group goes whole to one fold, and
    the folds get about equal shares of every class (largest groups first, each to the fold
    holding the least of its classes; ties broken with ``seed``)."""
    if folds < 2:
        raise InputError(f"{folds} folds: cross-validation needs at least 2")
    codes = np.asarray(codes)
    ids, inverse = np.unique(np.asarray(groups), return_inverse=True)
    if len(ids) < folds:
        raise InputError(
            f"{len(ids)} polygons (or blocks) cannot fill {folds} cross-validation folds: "
            f"use FOLDS of at most {len(ids)}"
        )
    classes = np.unique(codes)
    counts = np.zeros((len(ids), len(classes)), dtype=np.int64)
    np.add.at(counts, (inverse, np.searchsorted(classes, codes)), 1)
    rng = np.random.default_rng(seed)
    shuffled = rng.permutation(len(ids))
    order = shuffled[np.argsort(-counts[shuffled].sum(axis=1), kind="stable")]  # largest first, ties shuffled
    filled = np.zeros((folds, len(classes)), dtype=np.int64)
    fold_of = np.zeros(len(ids), dtype=np.int64)
    for g in order:
        mine = counts[g] > 0
        load = filled[:, mine].sum(axis=1) + 1e-6 * filled.sum(axis=1)
        best = np.flatnonzero(load == load.min())
        fold_of[g] = best[rng.integers(len(best))]
        filled[fold_of[g]] += counts[g]
    return fold_of[inverse]


def spatial_blocks(col: np.ndarray, row: np.ndarray, side: int) -> np.ndarray:
    """Group of every sample: the square block of ``side`` pixels holding its centre pixel."""
    if side < 1:
        raise InputError(f"spatial blocks of {side} px: give at least 1")
    bx = np.floor_divide(np.asarray(col, dtype=np.int64), side)
    by = np.floor_divide(np.asarray(row, dtype=np.int64), side)
    return by * (int(bx.max(initial=0)) + 1) + bx


def consecutive_runs(count: int, runs: int = 50) -> np.ndarray:
    """Group of every sample when only their order is known: ``runs`` runs of consecutive samples."""
    length = max(1, -(-count // max(runs, 1)))
    return np.arange(count) // length
