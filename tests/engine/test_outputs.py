"""The rules that keep the user's files: no output equal to an input or to another output
(however the path is spelled), sidecars of inputs kept, folders replaced only when ours,
read-only targets refused even for root, a group of outputs renamed together or not at all."""

import os

import pytest

from common import fake_model_folder
from otbtf_plugin.errors import InputError
from otbtf_plugin.models.metadata import model_folder_output
from otbtf_plugin.outputs import Output, StagedOutputs, check_paths
from snapshot import snapshot


@pytest.fixture
def folder(tmp_path):
    (tmp_path / "in.tif").write_bytes(b"raster")
    (tmp_path / "sub").mkdir()
    return tmp_path


@pytest.mark.parametrize("spelling", ["in.tif", "./in.tif", "sub/../in.tif", "link.tif", "hard.tif"])
def test_an_output_equal_to_an_input_however_spelled(folder, spelling, monkeypatch):
    (folder / "link.tif").symlink_to(folder / "in.tif")
    os.link(folder / "in.tif", folder / "hard.tif")
    monkeypatch.chdir(folder)
    with pytest.raises(
        InputError,
        match=rf"OUTPUT '{spelling}' is the same file as the input SOURCE1: "
        "choose another output path",
    ):
        check_paths({"SOURCE1": str(folder / "in.tif")}, {"OUTPUT": spelling})


def test_two_outputs_at_one_path_and_companions(folder):
    with pytest.raises(InputError, match=r"OUTPUT_LABELS .* is the same path as the output OUTPUT1"):
        check_paths({}, {"OUTPUT1": folder / "p.tif", "OUTPUT_LABELS": folder / "sub" / ".." / "p.tif"})
    # a report's .json beside it is the other output's path
    with pytest.raises(InputError, match=r"OUTPUT_REPORT .* is the same path as the output OUTPUT"):
        check_paths(
            {}, {"OUTPUT": folder / "r.json", "OUTPUT_REPORT": Output(folder / "r.html", companions=(".json",))}
        )
    check_paths({"SOURCE1": folder / "in.tif"}, {"OUTPUT": folder / "out.tif", "OUTPUT_CONFIDENCE": folder / "c.tif"})


def test_sidecars_of_inputs_are_kept_only_if_they_exist(folder):
    styled = Output(folder / "in.tiff", companions=(".qml",))
    check_paths({"SOURCE1": folder / "in.tif"}, {"OUTPUT": styled})  # no in.qml: nothing to lose
    (folder / "in.qml").write_text("<qgis/>")
    with pytest.raises(InputError, match=r"would replace 'in.qml', which belongs to the input SOURCE1"):
        check_paths({"SOURCE1": folder / "in.tif"}, {"OUTPUT": styled})


def test_folders_replaced_only_when_ours_or_empty(folder):
    model = Output(folder / "sub", "folder", marker="otbtf_model.json")
    check_paths({}, {"OUTPUT_MODEL": model})  # empty
    (folder / "sub" / "x.txt").write_text("mine")
    with pytest.raises(
        InputError,
        match=r"'.*sub' is an existing folder that is not an otbtf model "
        r"\(no otbtf_model.json\); it would be replaced",
    ):
        check_paths({}, {"OUTPUT_MODEL": model})
    (folder / "sub" / "otbtf_model.json").write_text("{}")
    check_paths({}, {"OUTPUT_MODEL": model})
    with pytest.raises(InputError, match=r"holds the input SOURCE1"):
        check_paths({"SOURCE1": folder / "sub" / "x.txt"}, {"OUTPUT_MODEL": model})
    with pytest.raises(InputError, match=r"is a file, not a folder"):
        check_paths({}, {"OUTPUT_MODEL": Output(folder / "in.tif", "folder", marker="m")})
    # a folder written into (TensorBoard logs) keeps what it holds: no marker needed
    check_paths({}, {"TENSORBOARD_DIR": Output(folder, "into")})


def test_read_only_targets_are_refused_even_for_root(folder):
    target = folder / "out.tif"
    target.write_bytes(b"kept")
    target.chmod(0o444)
    with pytest.raises(InputError, match=r"out.tif' exists and is read-only: choose another name"):
        check_paths({}, {"OUTPUT": target})
    with pytest.raises(InputError, match=r"read-only"), StagedOutputs() as staged:
        staged.file(target)
    assert target.read_bytes() == b"kept"
    (folder / "style.qml").write_text("x")
    (folder / "style.qml").chmod(0o444)
    with pytest.raises(InputError, match=r"style.qml' exists and is read-only"):
        check_paths({}, {"OUTPUT": Output(folder / "style.tif", companions=(".qml",))})
    with pytest.raises(InputError, match=r"is a folder: give a file name"):
        check_paths({}, {"OUTPUT": folder / "sub"})


def test_a_group_appears_whole_or_not_at_all(folder):
    (folder / "a.tif").write_bytes(b"old a")
    before = snapshot(folder)
    with pytest.raises(RuntimeError), StagedOutputs() as staged:
        staged.file(folder / "a.tif").write_bytes(b"new a")
        staged.file(folder / "b.tif").write_bytes(b"new b")
        raise RuntimeError("the run failed before the end")
    assert snapshot(folder) == before  # no temporary left, a.tif untouched, no b.tif
    with StagedOutputs() as staged:
        staged.file(folder / "a.tif").write_bytes(b"new a")
        staged.file(folder / "b.tif").write_bytes(b"new b")
        model = staged.folder(model_folder_output(folder / "model"))
        (model / "otbtf_model.json").write_text("{}")
        assert not (folder / "b.tif").exists() and (folder / "a.tif").read_bytes() == b"old a"
        staged.commit()
    assert (folder / "a.tif").read_bytes() == b"new a" and (folder / "b.tif").read_bytes() == b"new b"
    assert sorted(p.name for p in folder.iterdir()) == ["a.tif", "b.tif", "in.tif", "model", "sub"]


def test_a_folder_that_became_foreign_during_the_run_is_not_replaced(folder):
    with pytest.raises(InputError, match=r"not an otbtf model"), StagedOutputs() as staged:
        staged.folder(model_folder_output(folder / "sub"))
        (folder / "sub" / "user.txt").write_text("written while the run worked")
        staged.commit()
    assert (folder / "sub" / "user.txt").read_text() == "written while the run worked"
    assert sorted(p.name for p in folder.iterdir()) == ["in.tif", "sub"]


@pytest.mark.parametrize("order", ["model first", "logs first"])
def test_an_output_inside_a_replaced_folder_is_refused_in_any_order(folder, order):
    model = ("OUTPUT_MODEL", Output(folder / "model", "folder", marker="otbtf_model.json"))
    logs = ("TENSORBOARD_DIR", Output(folder / "model" / "logs", "into"))
    outputs = dict([model, logs] if order == "model first" else [logs, model])
    with pytest.raises(InputError, match="lie one inside the other, and the folder is replaced at the end"):
        check_paths({}, outputs)


def test_an_output_in_a_folder_that_does_not_exist(folder):
    with pytest.raises(
        InputError,
        match=r"OUTPUT '.*nofolder/s.gpkg': the folder '.*nofolder' does not exist; "
        "create it or choose another",
    ):
        check_paths({}, {"OUTPUT": folder / "nofolder" / "s.gpkg"})


def test_an_output_inside_an_input_folder_is_refused(folder):
    """A report beside a fine-tuned model's metadata would replace it (its .json companion)."""
    model = fake_model_folder(folder / "model")
    before = snapshot(folder)
    report = Output(model / "otbtf_model.html", companions=(".json",))
    with pytest.raises(
        InputError,
        match=r"^OUTPUT_REPORT '.*model/otbtf_model.html' lies inside the input folder "
        r"MODEL \('.*model'\), which the run reads: choose another output path$",
    ):
        check_paths({"MODEL": model}, {"OUTPUT_MODEL": model_folder_output(folder / "new"), "OUTPUT_REPORT": report})
    with pytest.raises(InputError, match=r"lies inside the input folder MODEL"):
        check_paths({"MODEL": str(model)}, {"OUTPUT": model / "savedmodel" / "map.tif"})
    assert snapshot(folder) == before
    check_paths({"MODEL": model}, {"OUTPUT_REPORT": Output(folder / "otbtf_model.html", companions=(".json",))})


def test_a_file_read_beside_an_input_is_kept(folder):
    """Training reads labels.origins.csv beside the labels image: no output may replace it."""
    (folder / "labels.tif").write_bytes(b"labels")
    (folder / "labels.origins.csv").write_text("patch,originfid,col,row\n")
    with pytest.raises(
        InputError,
        match=r"^OUTPUT_REPORT '.*labels.origins.csv' would replace 'labels.origins.csv', "
        r"which belongs to the input TRAIN_LABELS",
    ):
        check_paths({"TRAIN_LABELS": folder / "labels.tif"}, {"OUTPUT_REPORT": folder / "labels.origins.csv"})
    from otbtf_plugin.patches_image import ORIGINS_SUFFIX, origins_path

    assert origins_path(folder / "labels.tif").name == "labels" + ORIGINS_SUFFIX


def test_a_model_folder_is_replaced_only_when_it_holds_only_ours(folder):
    ours = fake_model_folder(folder / "ours")
    check_paths({}, {"OUTPUT_MODEL": model_folder_output(ours)})
    mixed = fake_model_folder(folder / "mixed", "map.tif", "map.qml", "notes.txt", "z.txt")
    before = snapshot(folder)
    with pytest.raises(
        InputError,
        match=r"^OUTPUT_MODEL '.*mixed' holds 'map.qml', 'map.tif', 'notes.txt' and 1 more, "
        r"which otbtf did not write there; it would be replaced: move them out, "
        r"or choose a new or empty folder$",
    ):
        check_paths({}, {"OUTPUT_MODEL": model_folder_output(mixed)})
    with pytest.raises(InputError, match=r"holds 'map.qml'"), StagedOutputs() as staged:
        staged.folder(model_folder_output(mixed))
    assert snapshot(folder) == before


def test_nothing_lies_inside_a_checkpoint_or_logs_folder(folder):
    from otbtf_plugin.training.schedule import checkpoint_output

    checkpoints = folder / "ckpt"
    checkpoints.mkdir()
    for name in ("checkpoint.json", "state.3.npz", "notes.txt"):
        (checkpoints / name).write_bytes(b"kept")
    check_paths({}, {"CHECKPOINT_DIR": checkpoint_output(checkpoints)})  # the user's notes stay
    # A report inside it would replace checkpoint.json (its .json companion)
    with pytest.raises(
        InputError,
        match=r"^OUTPUT_REPORT '.*ckpt/checkpoint.html' and the output CHECKPOINT_DIR lie "
        r"one inside the other, and the run writes files into that folder",
    ):
        check_paths(
            {},
            {
                "CHECKPOINT_DIR": checkpoint_output(checkpoints),
                "OUTPUT_REPORT": Output(checkpoints / "checkpoint.html", companions=(".json",)),
            },
        )
    (folder / "logs").mkdir()
    with pytest.raises(InputError, match=r"TENSORBOARD_DIR .* lie one inside the other"):
        check_paths(
            {},
            {"OUTPUT_REPORT": Output(folder / "logs" / "r.html"), "TENSORBOARD_DIR": Output(folder / "logs", "into")},
        )


@pytest.mark.parametrize("length", [200, 230, 247, 250, 255, 256, 300])
def test_names_too_long_for_the_file_system_are_refused_first(folder, length):
    """NAME_MAX is 255 bytes here; the temporary name beside an output is longer than the
    output's. A name over the limit makes every look-up raise (no OSError may escape)."""
    from otbtf_plugin.scratch import longest_temporary_name

    name = "m" * (length - 4) + ".tif"
    output = Output(folder / name, companions=(".qml", ".aux.xml"), suffixes=(".tif",))
    limit = os.pathconf(folder, "PC_NAME_MAX")
    extra = len(longest_temporary_name(folder / name)) + len(".aux.xml") - length
    if length + extra <= limit:
        check_paths({"SOURCE1": folder / "in.tif"}, {"OUTPUT": output})
        return
    with pytest.raises(
        InputError,
        match=rf"^OUTPUT: the name 'mmm.*mmm.tif' is {length} characters long; the file "
        rf"system of '.*' allows {limit} per name, and the run needs {extra} more for "
        rf"its temporary files: give a name of at most {limit - extra} characters$",
    ):
        check_paths({"SOURCE1": folder / "in.tif"}, {"OUTPUT": output})
    with pytest.raises(InputError, match=r"the name .* is \d+ characters long"):
        check_paths({}, {"OUTPUT_MODEL": model_folder_output(folder / ("d" * length))})
