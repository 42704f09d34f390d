"""Sample selection: choose, per class, which covered pixels become samples.

Two streamed passes over the raster (see :class:`~otbtf_plugin.class_statistics.PixelScan`):
the first counts the valid pixels of each class, the second keeps those whose
rank within their class was chosen. Memory holds the chosen samples only.

Strategies (how many per class, from the available count ``N_c``):

* ``smallest``: every class gets the count of the smallest non-empty class;
* ``constant``: ``value`` per class, capped at ``N_c`` (with a warning);
* ``percent``: ``round(value * N_c)`` with ``0 < value <= 1``;
* ``total``: ``value`` samples split in the classes' proportions (largest
  remainder rounding, so they add up to ``value``);
* ``all``: ``N_c``.

Samplers (which ranks ``0 .. N_c - 1``): ``periodic`` takes
``floor((k + 0.5) * N_c / n)`` for ``k = 0 .. n - 1`` (evenly spread,
deterministic); ``random`` draws without replacement from a generator seeded
with ``seed`` (classes in code order), so a seed always gives the same samples.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, cast, get_args

import numpy as np

from .class_statistics import BLOCK_PX, ClassStatistics, PixelScan, open_inputs, statistics_from
from .errors import InputError
from .progress import NullProgress, Progress, ScaledProgress, warn
from .raster import crs_wkt
from .vector import write_points

Strategy = Literal["smallest", "constant", "percent", "total", "all"]
Sampler = Literal["periodic", "random"]
STRATEGIES: tuple[Strategy, ...] = get_args(Strategy)
SAMPLERS: tuple[Sampler, ...] = get_args(Sampler)


def requested_counts(  # noqa: C901
    available: dict[int, int],
    strategy: str,
    value: float | None = None,
    names: dict[int, str] | None = None,
) -> tuple[dict[int, int], list[str]]:
    """Samples wanted per class code, and warnings for the user (naming classes by ``names``)."""
    names = names or {}

    def label(code: int) -> str:
        return repr(names.get(code, code))

    warnings: list[str] = []
    if strategy not in STRATEGIES:
        raise InputError(f"unknown strategy {strategy!r}; use one of: {', '.join(STRATEGIES)}")
    nonempty = {c: n for c, n in available.items() if n > 0}
    for code in sorted(set(available) - set(nonempty)):
        warnings.append(f"class {label(code)} has no valid pixel: it gets no sample")
    if not nonempty:
        raise InputError("no class has a valid pixel inside the raster: nothing to select")
    if strategy == "all":
        return dict(available), warnings
    if strategy == "smallest":
        n = min(nonempty.values())
        return {c: (n if c in nonempty else 0) for c in available}, warnings
    if value is None:
        raise InputError(f"strategy {strategy!r} needs STRATEGY_VALUE")
    if strategy == "constant":
        if value < 1 or value != int(value):
            raise InputError(f"strategy 'constant' needs a whole number of samples per class >= 1, not {value:g}")
        wanted = {c: min(int(value), n) for c, n in available.items()}
        capped = [c for c, n in nonempty.items() if n < value]
        if capped:
            warnings.append(
                f"{int(value)} samples per class requested; fewer pixels exist, all are kept, for "
                + ", ".join(f"class {label(c)} ({available[c]})" for c in capped)
            )
        return wanted, warnings
    if strategy == "percent":
        if not 0 < value <= 1:
            hint = f" (for {value:g} %, use {value / 100:g})" if 1 < value <= 100 else ""
            raise InputError(f"strategy 'percent' needs a fraction between 0 and 1, not {value:g}{hint}")
        return {c: math.floor(value * n + 0.5) for c, n in available.items()}, warnings
    # total
    if value < 1 or value != int(value):
        raise InputError(f"strategy 'total' needs a whole number of samples >= 1, not {value:g}")
    grand = sum(nonempty.values())
    total = int(value)
    if total >= grand:
        if total > grand:
            warnings.append(f"{total} samples requested but only {grand} valid pixels exist: all are taken")
        return dict(available), warnings
    exact = {c: total * n / grand for c, n in available.items()}
    wanted = {c: math.floor(x) for c, x in exact.items()}
    missing = total - sum(wanted.values())
    for c in sorted(exact, key=lambda c: (-(exact[c] - wanted[c]), c))[:missing]:
        wanted[c] += 1
    return wanted, warnings


def choose_ranks(available: int, wanted: int, sampler: str, rng: np.random.Generator) -> np.ndarray:
    """Sorted ranks in ``0 .. available - 1`` of the pixels to keep."""
    if sampler not in SAMPLERS:
        raise InputError(f"unknown sampler {sampler!r}; use one of: {', '.join(SAMPLERS)}")
    wanted = min(wanted, available)
    if wanted <= 0:
        return np.zeros(0, dtype=np.int64)
    if sampler == "periodic":
        return np.floor((np.arange(wanted) + 0.5) * available / wanted).astype(np.int64)
    return np.sort(rng.choice(available, size=wanted, replace=False)).astype(np.int64)


@dataclass
class Samples:
    """Selected samples: pixel indices, map coordinates of pixel centres, classes."""

    field: str
    class_names: dict[int, str]
    string_classes: bool
    codes: np.ndarray
    fids: np.ndarray
    cols: np.ndarray
    rows: np.ndarray
    x: np.ndarray
    y: np.ndarray
    crs_wkt: str | None
    available: dict[int, int]
    requested: dict[int, int]
    warnings: list[str] = dataclasses.field(default_factory=list)
    statistics: ClassStatistics | None = None

    def __len__(self) -> int:
        return len(self.codes)

    def by_class(self) -> dict[str, int]:
        counts = {self.class_names[c]: 0 for c in sorted(self.class_names)}
        for code, n in zip(*np.unique(self.codes, return_counts=True), strict=True):
            counts[self.class_names[int(code)]] = int(n)
        return counts

    def class_values(self) -> list:
        """The class of each sample as written in the input vector (text or integer)."""
        if self.string_classes:
            return [self.class_names[int(c)] for c in self.codes]
        return [int(c) for c in self.codes]

    def columns(self) -> dict[str, tuple[list, str]]:
        """The points' attributes: the class field and ``originfid`` (the polygon)."""
        return {
            self.field: (self.class_values(), "String" if self.string_classes else "Integer64"),
            "originfid": (cast("list[int]", self.fids.tolist()), "Integer64"),
        }

    def layer_metadata(self) -> dict[str, str] | None:
        """The class codes given to text classes, kept with the layer."""
        codes = ";".join(f"{name}={code}" for code, name in sorted(self.class_names.items()))
        return {"OTBTF_CLASS_CODES": codes} if self.string_classes else None

    def write_gpkg(self, path: str | Path, layer: str = "samples") -> Path:
        """Points at pixel centres with the class field and ``originfid``."""
        return write_points(path, layer, self.crs_wkt, self.x, self.y, self.columns(), self.layer_metadata())


class _CanonicalRanks:
    """Rank of each covered pixel within its class, in an order that does not
    depend on how the raster is cut into blocks: features by index; inside an
    areal feature, raster order (row, then column); inside a point feature,
    part order. Built from a first scan (per feature and image row counts)."""

    def __init__(self, scan: PixelScan, progress: Progress):
        feats, boxes = scan.feats, scan.boxes
        self.per_feature = np.zeros(len(feats), dtype=np.int64)
        self.row0 = boxes[:, 1].copy()
        row_counts = [np.zeros(max(int(b[3] - b[1]), 0), dtype=np.int64) for b in boxes]
        part_valid = np.zeros(len(scan.point_index), dtype=bool)
        for index, _, rows, parts in scan.scan(progress, "class statistics"):
            self.per_feature += np.bincount(index, minlength=len(feats))
            areal = parts < 0
            part_valid[parts[~areal]] = True
            for i in np.unique(index[areal]):
                np.add.at(row_counts[i], rows[areal & (index == i)] - self.row0[i], 1)
        # Offset of each feature within its class, features in index order.
        self.feature_offset = np.zeros(len(feats), dtype=np.int64)
        running: dict[int, int] = {}
        for i, code in enumerate(int(c) for c in feats.codes):
            self.feature_offset[i] = running.get(code, 0)
            running[code] = running.get(code, 0) + int(self.per_feature[i])
        self.row_offset = [np.concatenate(([0], np.cumsum(c)[:-1])) if len(c) else c for c in row_counts]
        self.seen_in_row = [np.zeros_like(c) for c in row_counts]
        # Rank of each valid point part among its feature's valid parts.
        self.part_rank = np.zeros(len(scan.point_index), dtype=np.int64)
        for i in np.unique(scan.point_index):
            members = np.flatnonzero(scan.point_index == i)
            self.part_rank[members] = np.cumsum(part_valid[members]) - 1

    def ranks(self, index: np.ndarray, rows: np.ndarray, parts: np.ndarray) -> np.ndarray:
        """Ranks for one block of :meth:`PixelScan.scan` output (blocks in scan order)."""
        ranks = np.empty(len(index), dtype=np.int64)
        point = parts >= 0
        ranks[point] = self.feature_offset[index[point]] + self.part_rank[parts[point]]
        for i in np.unique(index[~point]):
            members = np.flatnonzero(~point & (index == i))  # row-major within this block
            rel = rows[members] - self.row0[i]
            rows_here, first, counts = np.unique(rel, return_index=True, return_counts=True)
            within = np.arange(len(members)) - np.repeat(first, counts)
            ranks[members] = self.feature_offset[i] + self.row_offset[i][rel] + self.seen_in_row[i][rel] + within
            self.seen_in_row[i][rows_here] += counts
        return ranks


def count_shared_pixels(
    cols: np.ndarray, rows: np.ndarray, codes: np.ndarray, shared: dict[tuple[int, int], int]
) -> None:
    """Add to ``shared`` the pixels of one scanned block that features of different classes
    cover (overlapping polygons), counted by (lowest, highest) class code among them."""
    if len(cols) < 2:
        return
    key = (rows.astype(np.int64) << 32) | cols.astype(np.int64)
    order = np.lexsort((codes, key))
    key, sorted_codes = key[order], codes[order]
    starts = np.flatnonzero(np.r_[True, key[1:] != key[:-1]])
    low, high = sorted_codes[starts], np.maximum.reduceat(sorted_codes, starts)
    for pair in zip(low[low != high].tolist(), high[low != high].tolist(), strict=True):
        shared[pair] = shared.get(pair, 0) + 1


def shared_pixels_warning(shared: dict[tuple[int, int], int], names: dict[int, str]) -> str:
    """What overlapping polygons of different classes mean for the samples, in one line."""
    pairs = sorted(shared.items(), key=lambda item: -item[1])
    listed = "; ".join(f"{names.get(a, a)} and {names.get(b, b)}: {n}" for (a, b), n in pairs[:5])
    return (
        f"{sum(shared.values())} pixel(s) lie in polygons of different classes ({listed}"
        f"{'; ...' if len(pairs) > 5 else ''}): such a pixel is sampled for each of its classes, as OTB "
        "does, so it may be taught with two labels and land in training and validation; fix the overlapping "
        "polygons"
    )


def sample_selection(
    raster,
    vector,
    field_name: str,
    mask=None,
    nodata: float | None = None,
    strategy: Strategy = "smallest",
    value: float | None = None,
    sampler: Sampler = "periodic",
    seed: int = 0,
    layer: str | None = None,
    block_px: int = BLOCK_PX,
    progress: Progress | None = None,
) -> Samples:
    """Select samples per class from the pixels the features cover (see module doc)."""
    progress = progress or NullProgress()
    if sampler not in SAMPLERS:
        raise InputError(f"unknown sampler {sampler!r}; use one of: {', '.join(SAMPLERS)}")
    with open_inputs(raster, vector, field_name, mask, nodata, layer, block_px) as scan:
        canonical = _CanonicalRanks(scan, ScaledProgress(progress, 0.0, 0.5))
        stats = statistics_from(scan, field_name, canonical.per_feature, progress)
        wanted, warnings = requested_counts(stats.counts, strategy, value, stats.class_names)
        for warning in warnings:
            warn(progress, warning)
        rng = np.random.default_rng(seed)
        chosen = {c: choose_ranks(stats.counts[c], wanted[c], sampler, rng) for c in sorted(stats.counts)}
        keep_i, keep_c, keep_r, keep_k = [], [], [], []
        shared: dict[tuple[int, int], int] = {}
        for index, cols, rows, parts in scan.scan(ScaledProgress(progress, 0.5, 0.5), "sample selection"):
            ranks = canonical.ranks(index, rows, parts)
            codes = scan.feats.codes[index]
            count_shared_pixels(cols, rows, codes, shared)
            hit = np.zeros(len(index), dtype=bool)
            for code in np.unique(codes):
                members = np.flatnonzero(codes == code)
                hit[members] = np.isin(ranks[members], chosen[int(code)])
            keep_i.append(index[hit])
            keep_c.append(cols[hit])
            keep_r.append(rows[hit])
            keep_k.append(ranks[hit])
        if shared:
            warnings = [*warnings, shared_pixels_warning(shared, stats.class_names)]
            warn(progress, warnings[-1])
        index, cols, rows, ranks = (
            np.concatenate(k) if k else np.zeros(0, np.int64) for k in (keep_i, keep_c, keep_r, keep_k)
        )
        # Canonical output order too: by feature, then rank (never by block).
        order = np.lexsort((ranks, index))
        index, cols, rows = index[order], cols[order], rows[order]
        x, y = scan.grid.to_map(cols + 0.5, rows + 0.5)
        return Samples(
            field=field_name,
            class_names=stats.class_names,
            string_classes=stats.string_classes,
            codes=scan.feats.codes[index],
            fids=scan.feats.fids[index],
            cols=cols,
            rows=rows,
            x=np.asarray(x, dtype=float),
            y=np.asarray(y, dtype=float),
            crs_wkt=crs_wkt(scan.dataset),
            available=stats.counts,
            requested=wanted,
            warnings=warnings,
            statistics=stats,
        )
