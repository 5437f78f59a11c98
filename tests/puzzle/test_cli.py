"""The `puzzle` CLI: help, and the clear `error: ...` / exit 2 of each kind of bad input."""

from __future__ import annotations

import json

import pytest
import torch

from puzzle.cli import main
from puzzle.config import load_config
from puzzle.pipeline import Pipeline


def _write(path, config):
    path.write_text(json.dumps(config))
    return str(path)


def _fails(capsys, argv, *needles):
    capsys.readouterr()  # drop what fixtures printed
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") or "\nerror: " in err, err  # progress lines may come before it
    err = err[err.index("error: ") :]
    for needle in needles:
        assert needle in err, err
    return err


@pytest.fixture(scope="module")
def measured_run(tmp_path_factory, tiny_parent, tiny_run_config, austen_texts):
    """A run folder with library .. measure done (the search inputs), for the target errors."""
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("cli_run")
    pipe = Pipeline(
        load_config(tiny_run_config(tiny_parent)),
        root,
        texts=austen_texts,
        progress=False,
        log=lambda m: None,
    )
    pipe.run_all(["library", "bld", "score", "measure"])
    return root


def test_help_lists_every_stage(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for stage in (
        "library",
        "bld",
        "score",
        "measure",
        "search",
        "realize",
        "gkd",
        "evaluate",
        "export",
        "run",
    ):
        assert stage in out


def test_not_llama_parent(tmp_path, capsys, make_tiny_parent, tiny_run_config):
    parent = make_tiny_parent(tmp_path / "gpt2", model_type="gpt2")
    cfg = _write(tmp_path / "c.json", tiny_run_config(parent))
    _fails(capsys, ["run", cfg, "--run-dir", str(tmp_path / "run")], "not a Llama-family", "gpt2")
    assert not (tmp_path / "run" / "manifest.json").exists()


def test_search_space_that_does_not_fit(tmp_path, capsys, tiny_parent, tiny_run_config):
    bad = tiny_run_config(tiny_parent, search_space={"kv_heads": [3], "ffn_fractions": [0.5]})
    cfg = _write(tmp_path / "c.json", bad)
    _fails(capsys, ["run", cfg, "--run-dir", str(tmp_path / "run")], "kv_heads entry 3", "valid options")


def test_malformed_config(tmp_path, capsys, tiny_parent, tiny_run_config):
    cfg = _write(tmp_path / "c.json", {**tiny_run_config(tiny_parent), "gkd": {"budget": 3}})
    _fails(capsys, ["run", cfg, "--run-dir", str(tmp_path / "run")], "unknown config key 'gkd.budget'")
    _fails(capsys, ["score", "--run-dir", str(tmp_path / "empty")], "--config")


def test_bench_with_a_missing_config(tmp_path, capsys):
    _fails(
        capsys,
        ["bench", "--config", str(tmp_path / "nope.yaml"), "--results", str(tmp_path / "r.jsonl")],
        "nope.yaml",
        "does not exist",
    )
    assert not (tmp_path / "r.jsonl").exists()


def test_infeasible_target_names_the_cheapest(measured_run, tmp_path, capsys, tiny_parent, tiny_run_config):
    cfg = _write(tmp_path / "c.json", tiny_run_config(tiny_parent, targets=["50x"]))
    err = _fails(
        capsys,
        ["search", "--config", cfg, "--run-dir", str(measured_run)],
        "50x",
        "cheapest achievable child runs at",
    )
    costs = json.loads((measured_run / "measure" / "costs.json").read_text())
    skeleton_tps = costs["skeleton"]["tokens_per_s"]
    assert f"{skeleton_tps:.1f}" in err or "tokens/s" in err
    assert not (measured_run / "search" / "solutions.json").exists()


def test_stage_before_its_inputs(measured_run, tmp_path, capsys, tiny_parent, tiny_run_config):
    cfg = _write(tmp_path / "c.json", tiny_run_config(tiny_parent))
    _fails(capsys, ["gkd", "--config", cfg, "--run-dir", str(measured_run)], "needs stage 'realize'")


def test_other_thread_count_than_the_measurement(
    measured_run, tmp_path, capsys, tiny_parent, tiny_run_config
):
    cfg = _write(tmp_path / "c.json", tiny_run_config(tiny_parent))
    measured = torch.get_num_threads()  # measured_run measured with this count
    try:
        _fails(
            capsys,
            ["search", "--config", cfg, "--run-dir", str(measured_run), "--threads", str(measured + 1)],
            "needs stage 'measure'",
            f"measured with {measured} CPU threads",
            f"pass --threads {measured}",
        )
    finally:
        torch.set_num_threads(measured)


def test_run_folder_of_another_parent(measured_run, tmp_path, capsys, make_tiny_parent, tiny_run_config):
    other = make_tiny_parent(tmp_path / "other", seed=3, layers=2)
    cfg = _write(tmp_path / "c.json", tiny_run_config(other))
    _fails(
        capsys,
        ["score", "--config", cfg, "--run-dir", str(measured_run)],
        "belongs to parent",
        "use another folder",
    )


def test_gkd_of_a_child_that_is_not_in_the_run(measured_run, tmp_path, capsys, tiny_parent, tiny_run_config):
    import shutil

    run = tmp_path / "run"  # a copy: the other tests need measured_run without its search
    shutil.copytree(measured_run, run)
    cfg = _write(tmp_path / "c.json", tiny_run_config(tiny_parent))
    assert main(["search", "--config", cfg, "--run-dir", str(run), "--no-progress"]) == 0
    assert main(["realize", "--config", cfg, "--run-dir", str(run), "--no-progress"]) == 0
    _fails(
        capsys,
        ["gkd", "--config", cfg, "--run-dir", str(run), "--children", "puzzle-9x"],
        "no child ['puzzle-9x']",
        "puzzle-1.5x",
    )


def test_bench_refuses_an_unknown_task_and_names_the_known_ones(tmp_path, capsys):
    results = tmp_path / "results.jsonl"
    assert main(["bench", "--only", "puzzle.typo", "--results", str(results)]) == 2
    err = capsys.readouterr().err
    assert "puzzle.typo" in err and "puzzle.austen" in err and "puzzle.mip_speed" in err, err
    assert not results.exists()  # nothing ran


def test_help_lists_the_tools(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    for tool in ("gkd-scaling", "child-quality", "cost-model-check", "bench"):
        assert tool in out
