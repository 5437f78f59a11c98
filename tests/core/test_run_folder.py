"""The run folder: a step is done only for the inputs it was computed from; a folder keeps to one parent/data set."""

import json

import pytest

from effinfer_core.run_folder import RunFolder, RunFolderMismatchError, inputs_hash


def test_a_step_is_done_only_for_the_inputs_it_was_computed_with(tmp_path):
    run = RunFolder(tmp_path / "run")
    inputs = {"transforms": "4", "seed": 0}
    assert not run.is_done("fit", inputs_hash(inputs))
    run.write_json("fit/metrics.json", {"auroc": 0.9})
    key = run.mark_done("fit", inputs, seconds=1.5)
    assert (
        key == inputs_hash(inputs) == inputs_hash({"seed": 0, "transforms": "4"})
    )  # key order does not matter
    assert run.is_done("fit", key)
    assert not run.is_done("fit", inputs_hash({**inputs, "transforms": "72"}))  # a changed setting: not done
    entry = run.stage_entry("fit")
    assert entry["inputs"] == inputs and entry["seconds"] == 1.5
    assert list(entry["artifacts"]) == ["fit/metrics.json"]  # the step's folder, hashed
    # the manifest is read afresh: another RunFolder object on the same folder sees the same state
    assert RunFolder(tmp_path / "run").is_done("fit", key)
    run.forget("fit")
    assert not run.is_done("fit", key)


def test_a_folder_bound_to_one_data_set_refuses_another(tmp_path):
    run = RunFolder(tmp_path)
    run.bind("dataset", "fashion-mnist", "abc")
    run.bind("dataset", "fashion-mnist", "abc")  # the same: fine
    with pytest.raises(RunFolderMismatchError, match="belongs to dataset fashion-mnist"):
        run.bind("dataset", "cifar10", "def")
    assert json.loads((tmp_path / "manifest.json").read_text())["dataset"]["fingerprint"] == "abc"


def test_a_refusal_names_the_settings_that_differ(tmp_path):
    run = RunFolder(tmp_path)
    run.bind("run", "r", "h1", details={"train": {"lr": 0.1, "seed": 0}, "data": {"size": 128}})
    with pytest.raises(RunFolderMismatchError, match=r"which differs in data.size, train.lr;"):
        run.bind("run", "r", "h2", details={"train": {"lr": 0.2, "seed": 0}, "data": {"size": 64}})


def test_a_failed_write_leaves_no_artifact_and_no_entry(tmp_path):
    run = RunFolder(tmp_path)
    with pytest.raises(RuntimeError), run.atomic_dir("child") as tmp:
        (tmp / "weights.bin").write_bytes(b"half")
        raise RuntimeError("killed")
    assert not (tmp_path / "child").exists() and run.stage_entry("child") is None
