"""What training decides from the labels before building a network (pure: no TensorFlow),
and the training set's reads against whole-image reads."""

import shutil

import numpy as np
import pytest
import rasterio

from common import NC_IMAGE, NC_POLYGONS, write_points
from otbtf_plugin.errors import InputError
from otbtf_plugin.extraction import PatchSource, extract_patches
from otbtf_plugin.grid import ModelGeometry
from otbtf_plugin.patches_image import read_origins, write_origins
from otbtf_plugin.selection import sample_selection
from otbtf_plugin.training.data import TrainingSet, hold_out
from otbtf_plugin.training.targets import class_weights, decide_target
from otbtf_plugin.validation import spatial_blocks


def test_whole_labels_make_a_classifier_with_names_and_a_code_index():
    target = decide_target("auto", "cnn", "classification", np.array([3.0, 7, 7, 3, 9]), False, {7: "water"})
    assert (target.task, target.architecture, target.codes) == ("classification", "cnn", [3, 7, 9])
    assert target.names == {3: "3", 7: "water", 9: "9"}
    index = target.label_index()
    assert index is not None and index[[3, 7, 9]].tolist() == [0, 1, 2] and index[[0, 4, 8]].tolist() == [-1, -1, -1]


def test_large_and_negative_codes_index_in_the_space_of_the_classes():
    """A code of 1e9 used to allocate a table of 1e9 entries (8 GB); -1 wrapped to the last
    entry. The index now follows the number of classes."""
    labels = np.array([10**9, -1, 5, 5, -1, 10**9, 10**9])
    target = decide_target("auto", "cnn", "classification", labels, False, {})
    assert target.codes == [-1, 5, 10**9]
    index = target.label_index()
    assert index is not None
    assert index[labels].tolist() == [2, 0, 1, 1, 0, 2, 2]
    assert index[[0, 4, 10**9 + 1, -(2**40), 2**40]].tolist() == [-1] * 5
    assert class_weights(target, labels).tolist() == pytest.approx([7 / 6, 7 / 6, 7 / 9])
    for code in (2**31, -(2**31) - 1, 2**40):
        with pytest.raises(
            InputError,
            match=rf"^the training labels hold the class code {code}, which a class map "
            r"cannot hold \(32-bit: -2147483648 .. 2147483647\)",
        ):
            decide_target("auto", "cnn", "classification", np.array([1, code]), False, {})


def test_fractional_labels_or_the_regressor_make_a_regression_in_the_labels_units():
    values = np.array([0.5, 1.5, 2.5, 3.5])
    target = decide_target("auto", "cnn", "classification", values, False, {})
    assert target.regression and target.codes == [] and target.label_index() is None
    assert target.statistics == pytest.approx((2.0, float(np.std(values))))
    assert decide_target("auto", "regressor", "classification", np.array([1.0, 2.0]), False, {}).regression
    # label patches with the regressor architecture: the unet body with a linear output
    assert decide_target("regression", "regressor", "segmentation", values, False, {}).architecture == "unet"


@pytest.mark.parametrize(
    ("asked", "architecture", "layout", "labels", "fine", "message"),
    [
        ("auto", "cnn", "segmentation", [0, 1], False, "use ARCHITECTURE unet"),
        ("auto", "unet", "classification", [0, 1], False, "use ARCHITECTURE cnn"),
        ("auto", "cnn", "classification", [4, 4], False, r"single class \(4\)"),
        ("regression", "cnn", "classification", [0, 1], True, "fine-tuning a regressor"),
        ("guess", "cnn", "classification", [0, 1], False, "unknown task 'guess'"),
    ],
)
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


@pytest.fixture(scope="module")
def nc_patches(tmp_path_factory):
    """8 px patches of every polygon pixel of the North Carolina scene, with their origins."""
    folder = tmp_path_factory.mktemp("nc")
    points = sample_selection(NC_IMAGE, NC_POLYGONS, "id", strategy="all").write_gpkg(folder / "points.gpkg")
    extract_patches([PatchSource(NC_IMAGE, 8)], points, [folder / "x.tif"], "id", labels_output=folder / "y.tif")
    return folder


def test_validation_holds_out_whole_polygons_of_real_patches(nc_patches):
    data = TrainingSet([nc_patches / "x.tif"], nc_patches / "y.tif", "training")
    try:
        split = hold_out(data, nc_patches / "y.tif", 0.3, seed=0)
        labels = data.read_labels(np.arange(data.count)).astype(int)
    finally:
        data.close()
    origins, _ = read_origins(nc_patches / "y.tif", len(labels))
    polygons = origins.polygon
    assert split.method == "by polygon"
    for fid in np.unique(polygons[labels != 2]):  # no polygon on both sides
        assert len(set(split.validation[polygons == fid].tolist())) == 1
    # Agriculture (2) has one polygon of 46 px (9 x 8 px): cut into blocks of source 1, the widest
    # of 32, 16 and 8 px that gives at least 4 blocks (here 8), whole blocks held out.
    agriculture = labels == 2
    counts = {
        side: len(np.unique(spatial_blocks(origins.col[agriculture], origins.row[agriculture], side)))
        for side in (32, 16, 8)
    }
    assert counts[32] < 4 and counts[16] < 4 and counts[8] >= 4
    blocks = spatial_blocks(origins.col, origins.row, 8)[agriculture]
    for block in np.unique(blocks):
        assert len(set(split.validation[labels == 2][blocks == block].tolist())) == 1
    assert split.validation[labels == 2].any() and not split.validation[labels == 2].all()
    assert any(
        w.startswith("class 2 comes from one polygon: validation holds out blocks of 8 x 8 px") for w in split.warnings
    )
    for code in (1, 3, 4, 5, 6, 7):  # every other class: whole polygons on each side
        members = labels == code
        assert split.groups_per_class[code] == (
            len(np.unique(polygons[members & ~split.validation])),
            len(np.unique(polygons[members & split.validation])),
        )
        assert split.groups_per_class[code][1] >= 1
    again = TrainingSet([nc_patches / "x.tif"], nc_patches / "y.tif", "training")
    try:
        assert np.array_equal(hold_out(again, nc_patches / "y.tif", 0.3, seed=0).validation, split.validation)
    finally:
        again.close()


def test_without_polygons_validation_holds_out_blocks_then_runs(nc_patches, tmp_path):
    rows = (nc_patches / "y.origins.csv").read_text().splitlines()
    origins, _ = read_origins(nc_patches / "y.tif", len(rows) - 1)
    for name in ("x.tif", "y.tif"):
        shutil.copy(nc_patches / name, tmp_path / name)
    # Points without originfid: the table holds their pixels only.
    write_origins(tmp_path / "y.origins.csv", None, origins.col, origins.row)
    data = TrainingSet([tmp_path / "x.tif"], tmp_path / "y.tif", "training")
    try:
        blocks = hold_out(data, tmp_path / "y.tif", 0.3, seed=0)
        (tmp_path / "y.origins.csv").unlink()  # otbtf's patches: only their order is known
        runs = hold_out(data, tmp_path / "y.tif", 0.3, seed=0)
    finally:
        data.close()
    assert blocks.method == "by spatial block" and "blocks of 64 x 64 px" in blocks.warnings[0]
    cells = spatial_blocks(origins.col, origins.row, 64)
    for cell in np.unique(cells):
        assert len(set(blocks.validation[cells == cell].tolist())) == 1
    assert runs.method == "by runs of consecutive patches" and "no y.origins.csv" in runs.warnings[0]
    assert 0.2 < runs.validation.mean() < 0.45


def test_too_few_groups_to_hold_out_is_one_line(tmp_path):
    with rasterio.open(NC_IMAGE) as ds:  # two pixels side by side: one spatial block
        xy = [ds.xy(100, 100), ds.xy(100, 101)]
    write_points(tmp_path / "p.gpkg", xy, [1, 1], epsg=32119)
    extract_patches(
        [PatchSource(NC_IMAGE, 8)], tmp_path / "p.gpkg", [tmp_path / "x.tif"], "cls", labels_output=tmp_path / "y.tif"
    )
    data = TrainingSet([tmp_path / "x.tif"], tmp_path / "y.tif", "training")
    try:
        with pytest.raises(InputError, match="too few to hold out whole polygons"):
            hold_out(data, tmp_path / "y.tif", 0.2, seed=0)
    finally:
        data.close()


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
        assert np.array_equal(labels[0], whole[23 * 64 : 24 * 64])
    finally:
        data.close()
