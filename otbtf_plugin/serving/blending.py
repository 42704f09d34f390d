"""Blended tiles (OVERLAP): each tile is computed over itself grown by OVERLAP output pixels
on each side, weighted by ``grid.blend_weights`` (falling smoothly to zero at its edges, 1 at
the image's edges), and every output tile is written once, as the weighted mean of the grown
tiles that cover it, when the last of them has arrived. A model whose output does not depend
on the tiling gives the same result; a zero-padded one loses its seams.

Only fully-convolutional serving (regions) has seams to blend: patch and block models answer
for each patch or block alone, whatever the tiles.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from ..grid import Window, blend_weights, expanded, intersection


class Blender:
    """Accumulates the results of grown tiles into the output tiles ``cores`` (``grid.tiles``
    of ``bounds``, row by row) and hands each finished output tile to
    ``write(tile, values)``. Memory: the output tiles still waiting for a neighbour, about one
    row of tiles (the plan sizes the tiles for it)."""

    def __init__(self, cores: list[Window], margin: int, bounds: Window, write: Callable[[Window, np.ndarray], None]):
        self.cores, self.margin, self.bounds, self.write = cores, margin, bounds, write
        columns = sum(1 for core in cores if core.row_off == cores[0].row_off)
        self.grown = [expanded(core, margin, bounds) for core in cores]
        self.index = {window: k for k, window in enumerate(self.grown)}
        if len(self.index) != len(cores):
            raise ValueError("two tiles grow into the same window")
        rows = -(-len(cores) // columns)
        # A grown tile reaches only its 8 neighbours: tiles are at least 2 x OVERLAP wide.
        self.covers = [
            [
                r * columns + c
                for r in range(max(k // columns - 1, 0), min(k // columns + 2, rows))
                for c in range(max(k % columns - 1, 0), min(k % columns + 2, columns))
                if r * columns + c < len(cores) and not intersection(self.grown[k], cores[r * columns + c]).is_empty()
            ]
            for k in range(len(cores))
        ]
        self.waiting = [0] * len(cores)
        for reached in self.covers:
            for j in reached:
                self.waiting[j] += 1
        self.sums: dict[int, np.ndarray] = {}
        self.weights: dict[int, np.ndarray] = {}

    @property
    def tiles(self) -> list[Window]:
        """The windows to compute: every output tile grown by the margin."""
        return self.grown

    def add(self, window: Window, values: np.ndarray) -> None:
        """The result ``(bands, h, w)`` of the grown tile ``window``."""
        k = self.index[window]
        weights = blend_weights(window, self.margin, self.bounds)
        for j in self.covers[k]:
            core = self.cores[j]
            shared = intersection(window, core)
            rows, cols = shared.relative_to(window).slices()
            at_rows, at_cols = shared.relative_to(core).slices()
            if j not in self.sums:
                self.sums[j] = np.zeros((values.shape[0], core.height, core.width))
                self.weights[j] = np.zeros((core.height, core.width))
            part = weights[rows, cols]
            self.sums[j][:, at_rows, at_cols] += values[:, rows, cols] * part
            self.weights[j][at_rows, at_cols] += part
            self.waiting[j] -= 1
            if not self.waiting[j]:
                total, weight = self.sums.pop(j), self.weights.pop(j)
                self.write(core, (total / weight).astype(np.float32))
