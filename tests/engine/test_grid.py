"""Pixel/map geometry: hand-checked examples and properties."""

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from otbtf_plugin.grid import Grid, GridError, Window, intersection, patch_window, tiles

SIZE = st.integers(1, 400)
TILE = st.integers(2, 300)
OFF = st.integers(-50, 50)
LEN = st.integers(0, 60)

LANDSAT_GRID = Grid(735645.0, -2794695.0, 30.0, -30.0, 800, 1140)


def test_patch_window_follows_the_api_rule():
    # P = 16 centred on column 100: 8 pixels before, 7 after.
    assert patch_window(100, 50, 16) == Window(92, 42, 16, 16)
    # Odd size: symmetric.
    assert patch_window(100, 50, 5) == Window(98, 48, 5, 5)
    # Non-square: each axis on its own.
    assert patch_window(10, 10, 4, 3) == Window(8, 9, 4, 3)


def test_pixel_of_hand_checked():
    # 45 m east of the origin in 30 m pixels is pixel 1 (1.5 floored); 1 m south is row 0.
    assert LANDSAT_GRID.pixel_of(735645 + 45, -2794695 - 1) == (1, 0)
    # On a pixel edge the point belongs to the pixel to the right / below.
    assert LANDSAT_GRID.pixel_of(735645 + 60, -2794695 - 30) == (2, 1)
    # West of the origin: negative column (outside).
    assert LANDSAT_GRID.pixel_of(735645 - 0.001, -2794695 - 1) == (-1, 0)


def test_pixel_of_vectorised_matches_scalar():
    xs = np.array([735645 + 45, 735645 + 12000.5, 700000.0])
    ys = np.array([-2794695 - 1, -2794695 - 9000.0, -2794695 - 1.0])
    cols, rows = LANDSAT_GRID.pixel_of(xs, ys)
    assert [(int(c), int(r)) for c, r in zip(cols, rows, strict=True)] == [
        LANDSAT_GRID.pixel_of(x, y) for x, y in zip(xs, ys, strict=True)
    ]
    assert LANDSAT_GRID.contains(cols, rows).tolist() == [True, True, False]


def test_bounds_and_to_map():
    assert LANDSAT_GRID.bounds == (735645.0, -2794695.0 - 1140 * 30, 735645.0 + 800 * 30, -2794695.0)
    # Centre of pixel (0, 0).
    assert LANDSAT_GRID.to_map(0.5, 0.5) == (735660.0, -2794710.0)


def test_window_of_bounds_takes_pixels_whose_centre_is_inside():
    # A box from x = 15.1 m to 75 m holds the centres at 45 and 75 (cols 1 and 2);
    # the centre at 15 (col 0) is just outside.
    g = Grid(0.0, 0.0, 30.0, -30.0, 10, 10)
    assert g.window_of_bounds(15.1, -75.0, 75.0, -15.1) == Window(1, 1, 2, 2)
    # Entirely outside: empty.
    assert g.window_of_bounds(400, -50, 500, -10).is_empty()
    # Covering everything: clipped to the grid.
    assert g.window_of_bounds(-1000, -1000, 1000, 1000) == Window(0, 0, 10, 10)


def test_rotated_transform_is_refused_with_a_fix():
    with pytest.raises(GridError, match="gdalwarp"):
        Grid.from_transform((30, 1, 0, 0, -30, 0), 10, 10)
    with pytest.raises(GridError, match="north-up"):
        Grid(0, 0, 30, 30, 10, 10)


def test_from_transform_reads_gdal_order():
    g = Grid.from_transform((30.0, 0.0, 735645.0, 0.0, -30.0, -2794695.0), 800, 1140)
    assert g == LANDSAT_GRID


def test_one_pixel_tiles():
    assert tiles(3, 2, 1) == [Window(c, r, 1, 1) for r in range(2) for c in range(3)]


def test_tile_size_must_be_positive():
    with pytest.raises(GridError, match="at least 1"):
        tiles(10, 10, 0)


@given(w=SIZE, h=SIZE, tw=TILE, th=TILE)
def test_tiles_cover_every_pixel_once(w, h, tw, th):
    plan = tiles(w, h, tw, th)
    assert len(plan) == math.ceil(w / tw) * math.ceil(h / th)
    cover = np.zeros((h, w), dtype=np.int32)
    for win in plan:
        assert 0 < win.width <= tw and 0 < win.height <= th
        cover[win.slices()] += 1
    assert (cover == 1).all()


@given(a=st.tuples(OFF, OFF, LEN, LEN), b=st.tuples(OFF, OFF, LEN, LEN))
def test_intersection_is_the_set_intersection(a, b):
    wa, wb = Window(*a), Window(*b)
    got = intersection(wa, wb)

    def cells(win):
        return {(x, y) for x in range(win.col_off, win.col_end) for y in range(win.row_off, win.row_end)}

    assert cells(got) == cells(wa) & cells(wb)
    assert got == intersection(wb, wa)


@given(center=st.integers(-1000, 1000), size=st.integers(1, 256))
def test_patch_contains_its_centre_with_floor_half_before(center, size):
    win = patch_window(center, center, size)
    assert win.col_off <= center < win.col_end
    assert center - win.col_off == size // 2
    assert win.col_end - 1 - center == size - 1 - size // 2


@given(col=st.integers(0, 799), row=st.integers(0, 1139), fx=st.floats(0, 0.999), fy=st.floats(0, 0.999))
def test_pixel_of_inverts_to_map(col, row, fx, fy):
    x, y = LANDSAT_GRID.to_map(col + fx, row + fy)
    assert LANDSAT_GRID.pixel_of(x, y) == (col, row)


@given(c=OFF, r=OFF, w=LEN, h=LEN)
def test_window_transform_origin_is_the_window_corner(c, r, w, h):
    win = Window(c, r, w, h)
    a, b, x, d, e, y = LANDSAT_GRID.window_transform(win)
    assert (a, b, d, e) == (30.0, 0.0, 0.0, -30.0)
    assert (x, y) == LANDSAT_GRID.to_map(c, r)


def test_grid_positions_hand_checked():
    from otbtf_plugin.grid import grid_positions, overlap_reach, position_centre

    assert grid_positions(100, 16, 10) == 9  # starts 0, 10, ..., 80 (80 + 16 <= 100)
    assert grid_positions(16, 16, 5) == 1
    assert grid_positions(15, 16, 5) == 0
    assert position_centre(3, 16, 10) == 38  # start 30, 8 pixels before the centre
    assert overlap_reach(16, 16) == 0 and overlap_reach(16, 8) == 1 and overlap_reach(64, 20) == 3


@given(size=st.integers(1, 300), patch=st.integers(1, 64), step=st.integers(1, 64))
def test_grid_positions_fit_and_are_maximal(size, patch, step):
    from otbtf_plugin.grid import grid_positions, overlap_reach, patch_window, position_centre

    n = grid_positions(size, patch, step)
    for i in range(n):
        win = patch_window(position_centre(i, patch, step), 0, patch)
        assert win.col_off == i * step and win.col_end <= size
    assert n * step + patch > size  # one more would not fit
    d = overlap_reach(patch, step)
    assert d * step < patch <= (d + 1) * step


def test_serving_margins_worked_examples():
    from otbtf_plugin.grid import ModelGeometry, margins_px

    # Patch-based, rfield 16: 8 before, 7 after (the patch rule).
    assert margins_px(16, 1) == (8, 7)
    assert margins_px(5, 1) == (2, 2)
    # otbtf's tutorial FCN: rfield 64 = efield 32 + 2 x 16.
    assert margins_px(64, 32) == (16, 16)
    # Strided: rfield 16, 4 output pixels of 2 input pixels each: 8 - 4 = 4 before.
    assert margins_px(16, 4, 2) == (4, 4)
    assert ModelGeometry(16, 4, 2).context == 8


def test_efield_larger_than_rfield_says_what_works():
    from otbtf_plugin.grid import ModelGeometry

    with pytest.raises(GridError, match="use an expression field of at most 8"):
        ModelGeometry(16, 9, 2)


@given(rf=st.integers(1, 256), ef=st.integers(1, 256), s=st.integers(1, 4))
def test_margins_add_up(rf, ef, s):
    from hypothesis import assume

    from otbtf_plugin.grid import margins_px

    assume(ef * s <= rf)
    before, after = margins_px(rf, ef, s)
    assert before >= 0 and after >= 0 and before + ef * s + after == rf


def test_patch_starts_match_the_extraction_rule():
    from otbtf_plugin.grid import AxisMap, patch_starts

    same = AxisMap.between(0.0, 30.0, 0.0, 30.0)
    # Output pixel i at offset 8: centre pixel 8 + i, patch starts 8 + i - 8 = i.
    assert patch_starts(np.arange(3), same, 8, 1, 16).tolist() == [0, 1, 2]
    # A 60 m source under a 30 m reference (same origin): 30 m pixel p lies in 60 m
    # pixel p // 2; an 8 px patch starts 4 before it.
    coarse = AxisMap.between(0.0, 30.0, 0.0, 60.0)
    assert patch_starts(np.arange(4), coarse, 10, 1, 8).tolist() == [1, 1, 2, 2]
    # The y axis (negative resolutions) works the same way.
    y_axis = AxisMap.between(-100.0, -30.0, -100.0, -60.0)
    assert patch_starts(np.array([0, 1]), y_axis, 10, 1, 8).tolist() == [1, 1]


def test_block_starts_and_alignment():
    from otbtf_plugin.grid import AxisMap, block_starts

    coarse = AxisMap.between(0.0, 30.0, 0.0, 60.0)
    # Blocks of 4 output px at scale 1 = 2 px of the 60 m source; its rfield 8, efield 2:
    # starts 4 - 1 = 3 before the block.
    assert block_starts(np.array([0, 4, 8]), coarse, 16, 1, 8, 2).tolist() == [5, 7, 9]
    shifted = AxisMap.between(0.0, 30.0, 15.0, 60.0)
    with pytest.raises(GridError, match="not aligned"):
        block_starts(np.array([1]), shifted, 16, 1, 8, 2)


def test_patch_helpers_hand_checked():
    from otbtf_plugin.grid import block_index, patch_centre, patch_fits, patch_start, patches_window

    # a 16 px patch centred on pixel 8 starts at 0; its centre is 8 again
    assert patch_start(8, 16) == 0 and patch_centre(0, 16) == 8 and patch_centre(patch_start(5, 5), 5) == 5
    # on a 20 px axis a 16 px patch may start at 0..4
    assert patch_fits(np.array([-1, 0, 4, 5]), 16, 20).tolist() == [False, True, True, False]
    # patches of 3 x 2 starting at (1, 5) and (4, 2): columns 1..6, rows 2..6
    assert patches_window(np.array([1, 4]), np.array([5, 2]), 3, 2) == Window(1, 2, 6, 5)
    # 512 px blocks on a 1100 px wide grid: 3 blocks a row
    assert block_index(np.array([0, 511, 512, 1099, 0]), np.array([0, 0, 0, 511, 512]), 512, 1100).tolist() == [
        0,
        0,
        1,
        2,
        3,
    ]


def test_cut_patches_equals_slicing_each_patch():
    from otbtf_plugin.grid import cut_patches

    block = np.arange(2 * 7 * 9).reshape(2, 7, 9)
    col0, row0 = np.array([0, 6, 3]), np.array([4, 0, 2])
    patches = cut_patches(block, col0, row0, 3, 3)
    assert patches.shape == (3, 2, 3, 3)
    for k in range(3):
        assert np.array_equal(patches[k], block[:, row0[k] : row0[k] + 3, col0[k] : col0[k] + 3])


def test_serving_axis_the_worked_examples_of_the_module():
    from otbtf_plugin.grid import AxisMap, SourceAxis, input_window, output_range

    same = AxisMap(0.0, 1.0)  # the reference itself
    # patch model, rfield 16, a 100 px source: 85 output pixels, the first at index 8
    patch = SourceAxis(same, phase=0, scale=1, rfield=16)
    assert output_range(100, 0, 1, [(patch, 100)], "pixels", pad=False) == (8, 85)
    assert output_range(100, 0, 1, [(patch, 100)], "pixels", pad=True) == (0, 100)
    # a tile of 10 x 5 output px from the first one reads columns 0..24 and rows 0..19
    assert input_window(patch, patch, Window(0, 0, 10, 5), (8, 8), "pixels", 1) == Window(0, 0, 25, 20)
    # FCN, rfield 64, efield 32: inputs start 16 px before their block; 68 output px, 16 in
    fcn = SourceAxis(same, phase=0, scale=1, rfield=64, efield=32)
    assert output_range(100, 0, 1, [(fcn, 100)], "regions", pad=False) == (16, 68)
    assert fcn.block_starts(np.array([16, 48])).tolist() == [0, 32]
    # regions: a 40 px tile reads 40 + 32 px of context; blocks: whole blocks, 2 x 32 + 32
    assert fcn.tile_input(16, 40, "regions", 32) == (0, 72)
    assert fcn.tile_input(16, 40, "blocks", 32) == (0, 96)
    # a second source at half the resolution (60 m over 30 m): patch of 8 px centred on the
    # 60 m pixel holding the output pixel's centre
    coarse = SourceAxis(AxisMap(0.0, 0.5), phase=0, scale=1, rfield=8)
    assert coarse.centre_pixels(np.array([0, 1, 2, 3])).tolist() == [0, 0, 1, 1]
    assert coarse.patch_starts(np.array([8, 9])).tolist() == [0, 0]
    # both sources must hold the input: a coarse source of 48 px (1440 m) holds the patch of
    # index i while floor((i + 0.5) / 2) - 4 + 8 <= 48, i.e. up to i = 89
    assert output_range(100, 0, 1, [(patch, 100), (coarse, 48)], "pixels", pad=False) == (8, 82)
    assert output_range(100, 0, 1, [(patch, 100), (coarse, 50)], "pixels", pad=False) == (8, 85)


def test_coarser_grid_origin_and_pixel_size():
    g = Grid(500000.0, 4000000.0, 30.0, -30.0, 100, 80)
    assert g.coarser(8, 4, 2, 46, 38) == Grid(500240.0, 3999880.0, 60.0, -60.0, 46, 38)


def test_overlapping_tiles_step_by_the_stride_and_end_at_the_edges():
    from otbtf_plugin.grid import overlapping_tiles

    tiles = overlapping_tiles(200, 168, 64, 16)
    assert sorted({t.col_off for t in tiles}) == [0, 48, 96, 136]  # 136 = 200 - 64: the last moved back
    assert sorted({t.row_off for t in tiles}) == [0, 48, 96, 104]
    assert {(t.width, t.height) for t in tiles} == {(64, 64)}
    assert [(t.col_off, t.row_off, t.width) for t in overlapping_tiles(40, 64, 64, 16)] == [(0, 0, 64)]  # padded
    with pytest.raises(GridError, match="need 0 <= overlap < tile"):
        overlapping_tiles(100, 100, 64, 64)


def test_rotated_box_corners_by_hand():
    from otbtf_plugin.grid import rotated_box_corners

    # a 4 x 2 box centred at (10, 20): unturned, then a quarter turn clockwise on screen (y down)
    assert rotated_box_corners(10, 20, 4, 2, 0).tolist() == [[[12, 21], [8, 21], [8, 19], [12, 19]]]
    turned = rotated_box_corners(10, 20, 4, 2, np.pi / 2)[0]
    assert turned.round(12).tolist() == [[9, 22], [9, 18], [11, 18], [11, 22]]
