"""The staged pipeline on a tiny parent: complete run, skipping, resuming after a kill, parent binding."""

from __future__ import annotations

import importlib
import json
import re
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from effinfer_core.run_folder import RunFolder, RunFolderMismatchError, file_hash
from puzzle import stages
from puzzle.config import ConfigError, load_config, parse_target, run_config_path
from puzzle.pipeline import STAGES, UNHASHED, Pipeline, StageNotReadyError
from puzzle.stages.gkd import distil
from puzzle.stages.measure import cost_table
from puzzle.stages.search import problem as search_problem
from puzzle.stages.search import solve_with_config

DETERMINISTIC = ("library", "bld", "score")  # stages whose artifacts depend on no timing


@pytest.fixture(scope="module")
def clean_run(tmp_path_factory, tiny_parent, tiny_run_config, austen_texts):
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("clean")
    messages: list[str] = []
    pipe = Pipeline(
        load_config(tiny_run_config(tiny_parent)),
        root,
        texts=austen_texts,
        progress=False,
        log=messages.append,
    )
    pipe.run_all()
    pipe.test_messages = messages  # what the stages logged, for the progress test
    return pipe


@pytest.fixture
def copy_of_clean_run(clean_run, tiny_parent, tiny_run_config, austen_texts, tmp_path):
    """Factory: a Pipeline of the tiny config with `over` applied, on a copy of the clean run's folder."""
    import shutil

    root = tmp_path / "copy"
    shutil.copytree(clean_run.run.root, root)

    def make(log=lambda m: None, **over):
        return Pipeline(
            load_config(tiny_run_config(tiny_parent, **over)),
            root,
            texts=austen_texts,
            progress=False,
            log=log,
        )

    return make


def _stage(name):
    return importlib.import_module(f"puzzle.stages.{name}")


def _artifacts(root, stages):
    return {rel: h for stage in stages for rel, h in RunFolder(root).stage_entry(stage)["artifacts"].items()}


def test_complete_run_writes_every_stage(clean_run):
    run = clean_run.run
    manifest = run.manifest()
    assert set(manifest["stages"]) == set(STAGES)
    for entry in manifest["stages"].values():  # every recorded artifact is on disk with the recorded hash
        for rel, digest in entry["artifacts"].items():
            assert file_hash(run.path(rel)) == digest
    results = run.read_json("evaluate/evaluate.json")
    parent = results["parent"]
    assert parent["kl"] == pytest.approx(0.0, abs=1e-5) and parent["top1_agreement"] == 1.0
    children = [k for k in results if k != "parent"]
    assert any(k.startswith("puzzle-") for k in children)
    for name in children:
        r = results[name]
        assert r["measured_tokens_per_s"] > 0 and r["predicted_runtime_ms"] > 0
        assert (run.path("export") / name / "modeling_decilm.py").exists()
    solutions = run.read_json("search/solutions.json")
    puzzle = next(v for k, v in solutions.items() if k.startswith("puzzle-"))
    assert puzzle["predicted"]["tokens_per_s"] >= puzzle["target_tokens_per_s"] * (1 - 1e-9)
    assert len(puzzle["blocks"]) == 4


def test_training_stages_log_progress_when_no_bar_is_drawn(clean_run):
    for prefix in ["[bld]", *(f"[gkd] {name}" for name in clean_run.solutions())]:
        lines = [m for m in clean_run.test_messages if m.startswith(f"{prefix} step ")]
        assert lines, f"no progress lines from {prefix}"
        assert re.match(rf"{re.escape(prefix)} step (\d+)/\1 \(100%\), loss \d", lines[-1]), lines[-1]


def test_matched_children_cost_no_more_and_score_no_worse_than_their_baselines(clean_run):
    solutions = clean_run.solutions()
    matched = {k: v for k, v in solutions.items() if "matched" in v}
    baselines = [k for k, v in solutions.items() if v["method"] != "puzzle"]
    assert baselines
    for name in baselines:  # each baseline has its Puzzle twin: a matched child or an identical main one
        twin = next((v for v in matched.values() if v["matched"] == name), None)
        if twin is None:
            budget = solutions[name]["predicted"]["runtime_ms"]
            assert any(
                v["method"] == "puzzle" and v["predicted"]["runtime_ms"] <= budget * (1 + 1e-9)
                for v in solutions.values()
            )
            continue
        base = solutions[name]
        assert twin["method"] == "puzzle" and twin["target"] == base["target"]
        assert twin["predicted"]["runtime_ms"] <= base["predicted"]["runtime_ms"] * (1 + 1e-9)
        assert twin["objective"] <= base["objective"] + 1e-9  # the baseline is one feasible point of the MIP
    results = clean_run.run.read_json("evaluate/evaluate.json")
    assert set(solutions) <= set(results)


def test_rerun_skips_every_stage(clean_run, monkeypatch):
    for stage in STAGES:
        monkeypatch.setattr(_stage(stage), "run", lambda pipe, h, s=stage: pytest.fail(f"{s} re-ran"))
    before = clean_run.run.manifest_path.read_bytes()
    clean_run.run_all()
    assert clean_run.run.manifest_path.read_bytes() == before


def test_killed_run_resumes_with_the_same_artifacts(
    clean_run, tmp_path, tiny_parent, tiny_run_config, austen_texts, monkeypatch
):
    config = load_config(tiny_run_config(tiny_parent))
    real_gkd = stages.gkd.run

    def killed(pipe, h):
        raise KeyboardInterrupt("killed in gkd")

    monkeypatch.setattr(stages.gkd, "run", killed)
    pipe = Pipeline(config, tmp_path, texts=austen_texts, progress=False, log=lambda m: None)
    with pytest.raises(KeyboardInterrupt):
        pipe.run_all()
    done = set(pipe.run.manifest()["stages"])
    assert done == {"library", "bld", "score", "measure", "search", "realize"}
    before_kill = _artifacts(tmp_path, done)

    monkeypatch.setattr(stages.gkd, "run", real_gkd)
    ran = []
    for stage in done:  # the resumed run must not redo finished stages
        monkeypatch.setattr(_stage(stage), "run", lambda pipe, h, s=stage: ran.append(s))
    resumed = Pipeline(config, tmp_path, texts=austen_texts, progress=False, log=lambda m: None)
    resumed.run_all()
    assert ran == []
    assert set(resumed.run.manifest()["stages"]) == set(STAGES)
    assert _artifacts(tmp_path, done) == before_kill
    # what depends on no timing is byte-identical to an uninterrupted run
    assert _artifacts(tmp_path, DETERMINISTIC) == _artifacts(clean_run.run.root, DETERMINISTIC)


def test_changed_config_reruns_only_downstream(copy_of_clean_run):
    pipe = copy_of_clean_run(gkd={"lr": 5e-4})
    redo = [s for s in STAGES if not pipe.run.is_done(s, pipe.inputs_hash(s))]
    assert redo == ["gkd", "evaluate", "export"]
    with pytest.raises(StageNotReadyError, match="gkd"):
        pipe.run_stage("evaluate")


def test_bld_checkpoint_cadence_is_not_part_of_the_bld_hash(copy_of_clean_run):
    pipe = copy_of_clean_run(
        bld={"checkpoint_every": 1}
    )  # a killed BLD resumed with more frequent checkpoints
    assert all(pipe.run.is_done(s, pipe.inputs_hash(s)) for s in STAGES)
    pipe = copy_of_clean_run(bld={"lr": 5e-4})
    assert not pipe.run.is_done("bld", pipe.inputs_hash("bld"))


def test_block_probes_measure_again_and_search_on_them(copy_of_clean_run):
    pipe = copy_of_clean_run(measure={"probes": "blocks"})
    redo = [s for s in STAGES if not pipe.run.is_done(s, pipe.inputs_hash(s))]
    assert redo == ["measure", "search", "realize", "gkd", "evaluate", "export"]  # library, BLD, scores kept
    pipe.run_all(["measure", "search"])
    costs = pipe.run.read_json("measure/costs.json")
    n_blocks = len(pipe.attention_variants()) * len(pipe.ffn_variants())
    assert costs["calibration"]["probes"] == "blocks"
    assert len(costs["calibration"]["probe_times"]) == len(costs["blocks"]) == n_blocks  # each block probed
    problem = search_problem(pipe)
    j = problem.variant_names[0].index("linear+no_op")
    assert problem.costs["runtime_ms"][1, j] == costs["blocks"]["linear+no_op"]["runtime_ms"]


def test_changed_search_realises_and_distils_only_new_children(clean_run, copy_of_clean_run):
    before = clean_run.solutions()
    messages: list[str] = []
    pipe = copy_of_clean_run(log=messages.append, targets=["1.3x", "1.5x"])
    root = pipe.run.root
    pipe.run_all()
    after = pipe.solutions()
    changed = {name for name, rec in after.items() if before.get(name, {}).get("blocks") != rec["blocks"]}
    assert changed and changed != set(after)  # the 1.3x children are new, the 1.5x ones are kept
    for stage, finished in (("realize", r": [\d.]+ M parameters$"), ("gkd", r": loss ")):
        redone = {
            m.group(1) for m in (re.match(rf"\[{stage}\] (\S+){finished}", line) for line in messages) if m
        }
        assert redone == changed, stage
    for name in set(after) - changed:  # the kept children's weights are those of the first run
        assert file_hash(root / "gkd" / name / "model.safetensors") == file_hash(
            clean_run.run.path("gkd") / name / "model.safetensors"
        )


def test_gkd_of_some_children_then_of_the_rest(copy_of_clean_run):
    messages: list[str] = []
    pipe = copy_of_clean_run(log=messages.append, gkd={"lr": 5e-4})
    names = list(pipe.solutions())
    distil(pipe, names[:1])
    trained = [m.split()[1].rstrip(":") for m in messages if re.match(r"\[gkd\] \S+: loss ", m)]
    assert trained == names[:1] and not pipe.run.is_done("gkd", pipe.inputs_hash("gkd"))
    messages.clear()
    pipe.run_stage("gkd")
    trained = [m.split()[1].rstrip(":") for m in messages if re.match(r"\[gkd\] \S+: loss ", m)]
    assert trained == names[1:] and pipe.run.is_done("gkd", pipe.inputs_hash("gkd"))
    with pytest.raises(ConfigError, match="no child \\['nope'\\]"):
        distil(pipe, ["nope"])


def test_excluded_blocks_leave_the_puzzle_children_and_not_the_baselines(clean_run, copy_of_clean_run):
    from collections import Counter

    before = clean_run.solutions()
    # a block the Puzzle children use (which one rides on timing noise), one a baseline uses too if there is such
    parent_block = clean_run.parent_block().name
    used = Counter(
        n for rec in before.values() if rec["method"] == "puzzle" for n in rec["names"] if n != parent_block
    )
    by_baselines = {n for rec in before.values() if rec["method"] != "puzzle" for n in rec["names"]}
    dropped = max(used, key=lambda n: (n in by_baselines, used[n]))
    pipe = copy_of_clean_run(search={"exclude_blocks": [dropped]})
    pipe.run_stage("search")
    after = pipe.solutions()
    assert {rec["method"] for rec in after.values()} == {rec["method"] for rec in before.values()}
    for name, rec in after.items():
        if rec["method"] == "puzzle":
            assert dropped not in rec["names"], name
        else:
            assert rec["names"] == before[name]["names"]
    with pytest.raises(ConfigError, match="exclude_blocks: exclusion pattern 'gqa_kv7\\+\\*' matches none"):
        copy_of_clean_run(search={"exclude_blocks": ["gqa_kv7+*"]}).run_stage("search")
    with pytest.raises(ConfigError, match="list of block-name patterns"):
        load_config({"search": {"exclude_blocks": "linear+*"}})


def test_measured_match_times_each_twin_beside_its_baseline(copy_of_clean_run):
    pipe = copy_of_clean_run(search={"match_by": "measured", "match_rounds": 2, "match_iters": 2})
    assert not pipe.run.is_done("search", pipe.inputs_hash("search"))  # match_by belongs to the search
    pipe.run_stage("search")
    twins = [rec for rec in pipe.solutions().values() if "matched" in rec]
    assert twins
    for rec in twins:
        match = rec["match"]
        assert match["by"] == "measured" and 1 <= len(match["rounds"]) <= 2
        assert all(r["measured_over_baseline"] > 0 for r in match["rounds"])
        assert match["measured_over_baseline"] == min(
            (r["measured_over_baseline"] for r in match["rounds"]), key=lambda x: abs(x - 1)
        )


def test_measured_match_searches_again_where_the_twin_measures_the_baselines_speed(
    copy_of_clean_run, monkeypatch
):
    import puzzle.timing

    pipe = copy_of_clean_run(search={"match_by": "measured", "match_rounds": 4, "match_tolerance": 0.01})
    table = cost_table(pipe)
    slow = 1.3  # this machine runs the baseline 30% slower than the cost table predicts, every other child as predicted

    def predicted_ms(model) -> float:
        return table.predict([(b.attention.name, b.ffn.name) for b in model.block_configs])["runtime_ms"]

    def fake_generations(models, scenario, *, device, warmup=1, iters=5):
        return {
            name: {"rounds_ms": [predicted_ms(m) * (slow if name == "baseline" else 1.0)] * iters}
            for name, m in models.items()
        }

    monkeypatch.setattr(puzzle.timing, "measure_generations", fake_generations)
    pipe.run_stage("search")
    solutions = pipe.solutions()
    twins = [rec for rec in solutions.values() if "matched" in rec]
    assert twins
    for rec in twins:
        rounds = rec["match"]["rounds"]
        base = solutions[rec["matched"]]["predicted"]["runtime_ms"]
        assert rounds[0]["runtime_budget_ms"] == pytest.approx(
            base
        )  # first at the baseline's predicted runtime
        assert rounds[0]["measured_over_baseline"] == pytest.approx(
            rounds[0]["predicted_runtime_ms"] / base / slow
        )
        if (
            len(rounds) == 1
        ):  # 30% off, so searched again at a larger budget, unless that gives the same child
            larger = rounds[0]["predicted_runtime_ms"] / rounds[0]["measured_over_baseline"]
            assert (
                solve_with_config(pipe, search_problem(pipe), {"runtime_ms": larger}).choice == rec["choice"]
            )
            continue
        for before, after in zip(
            rounds, rounds[1:], strict=False
        ):  # each where the last twin measures the baseline's
            assert after["runtime_budget_ms"] == pytest.approx(
                before["predicted_runtime_ms"] / before["measured_over_baseline"]
            )
        best = min(rounds, key=lambda r: abs(r["measured_over_baseline"] - 1))
        assert rec["match"]["measured_over_baseline"] == best["measured_over_baseline"]
        assert rec["predicted"]["runtime_ms"] == pytest.approx(best["predicted_runtime_ms"])
        assert rec["predicted"]["runtime_ms"] <= best["runtime_budget_ms"] * (1 + 1e-9)
        assert rec["predicted"]["runtime_ms"] > base  # the kept twin is the slower one, as the machine asked
        assert abs(best["measured_over_baseline"] - 1) < abs(rounds[0]["measured_over_baseline"] - 1)


def test_another_objective_searches_again_without_rescoring(clean_run, copy_of_clean_run):
    pipe = copy_of_clean_run(score={"objective": "top1_agreement"})
    assert pipe.run.is_done("score", pipe.inputs_hash("score"))  # every metric is scored already
    assert not pipe.run.is_done("search", pipe.inputs_hash("search"))
    pipe.run_stage("search")
    problem = search_problem(pipe)
    assert problem.score_sense == "max"
    # A baseline's twin is left out where it is a child already listed, so which twins exist can differ between the
    # two objectives (the run's measured costs decide it); the targets' children exist under both.
    before, after = clean_run.solutions(), pipe.solutions()
    assert {"puzzle-1.2x", "puzzle-1.5x"} <= before.keys() & after.keys()
    for name, rec in after.items():  # objective = summed top-1 agreement of the chosen blocks
        assert rec["objective"] == pytest.approx(problem.solution_for(rec["choice"]).objective), name
        if name in before:
            assert rec["objective"] != pytest.approx(before[name]["objective"]), name


def test_run_folder_refuses_another_parent(
    clean_run, tmp_path, make_tiny_parent, tiny_run_config, austen_texts
):
    other = make_tiny_parent(tmp_path / "other", seed=1, layers=3)
    with pytest.raises(RunFolderMismatchError, match="different parent|belongs to parent"):
        Pipeline(load_config(tiny_run_config(other)), clean_run.run.root, texts=austen_texts, progress=False)
    manifest = json.loads(clean_run.run.manifest_path.read_text())
    assert manifest["parent"]["fingerprint"] == clean_run.fingerprint


def test_config_validation():
    with pytest.raises(ConfigError, match="unknown config key 'gkd.lrr'"):
        load_config({"gkd": {"lrr": 1}})
    with pytest.raises(ConfigError, match="gkd.gradient_clip must be a gradient norm >= 0"):
        load_config({"gkd": {"gradient_clip": -1}})
    with pytest.raises(ConfigError, match="targets"):
        load_config({"targets": []})
    with pytest.raises(ConfigError, match="measure.probes must be one of \\['subblocks', 'blocks'\\]"):
        load_config({"measure": {"probes": "layers"}})
    with pytest.raises(ConfigError, match="search.match_by must be one of \\['predicted', 'measured'\\]"):
        load_config({"search": {"match_by": "timed"}})
    with pytest.raises(ConfigError, match="match_rounds and match_iters must be >= 1"):
        load_config({"search": {"match_rounds": 0}})
    with pytest.raises(ConfigError, match="1.5 times|multiple"):
        load_config({"targets": ["fast"]})
    with pytest.raises(ConfigError, match="'gkd.lr' must be a number"):
        load_config({"gkd": {"lr": "fast"}})
    with pytest.raises(ConfigError, match="'bld.token_budget' must be a whole number"):
        load_config({"bld": {"token_budget": "2.5"}})
    with pytest.raises(ConfigError, match="'search_space.ffn_fractions' must be a number, got 'half'"):
        load_config({"search_space": {"kv_heads": [1], "ffn_fractions": ["half"]}})
    assert parse_target("1.5x") == ("1.5x", 1.5, True)
    assert parse_target(250) == ("250tps", 250.0, False)


def test_trainer_precision_auto_resolves_for_the_device(tmp_path, tiny_parent, tiny_run_config, monkeypatch):
    config = load_config(tiny_run_config(tiny_parent, trainer={"accelerator": "cpu", "precision": "auto"}))
    for amx, precision in ((True, "bf16-mixed"), (False, "32-true")):
        monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda amx=amx: amx, raising=False)
        assert Pipeline(config, tmp_path, progress=False).trainer_kwargs()["precision"] == precision
    explicit = load_config(
        tiny_run_config(tiny_parent, trainer={"accelerator": "cpu", "precision": "bf16-mixed"})
    )
    assert Pipeline(explicit, tmp_path, progress=False).trainer_kwargs()["precision"] == "bf16-mixed"


def test_fits_log_as_many_progress_lines_as_asked(tmp_path, tiny_parent, tiny_run_config):
    config = load_config(tiny_run_config(tiny_parent))
    for lines in (20, 4):  # the harness asks for 4, so that a task's output fits on a screen
        pipe = Pipeline(config, tmp_path, progress=False, log=lambda m: None, progress_lines=lines)
        (callback,) = pipe.trainer_kwargs("[bld]")["callbacks"]
        assert callback.lines == lines and callback.prefix == "[bld]"


def test_stage_lines_carry_elapsed_time(clean_run):
    for stage in STAGES:
        assert any(
            re.fullmatch(rf"\[{stage}\] running \(\w+\), [\d.]+ (s|min) into this run", m)
            for m in clean_run.test_messages
        ), stage
        assert any(
            re.fullmatch(rf"\[{stage}\] done in [\d.]+ (s|min)", m) for m in clean_run.test_messages
        ), stage


def test_run_config_path_prefers_the_given_config_then_the_run_folders(tmp_path):
    with pytest.raises(ConfigError, match="has no config.json: give --config"):
        run_config_path(tmp_path)
    (tmp_path / "config.json").write_text("{}")
    assert run_config_path(tmp_path) == tmp_path / "config.json"
    assert run_config_path(tmp_path, "other.yaml") == Path("other.yaml")


def test_config_extends_a_base_file(tmp_path):
    # 5e-4 and 1e6 without a dot are strings to YAML 1.1 (PyYAML); the config reads them as the numbers they mean
    (tmp_path / "base.yaml").write_text(
        "targets: ['1.25x']\ngkd:\n  lr: 1e-3\n  token_budget: 64\nbld:\n  token_budget: 1e6\n"
        "search_space:\n  kv_heads: [1]\n  ffn_fractions: [5e-1, 0.25]\n"
    )
    (tmp_path / "runs").mkdir()
    child = tmp_path / "runs" / "child.yaml"
    child.write_text("extends: ../base.yaml\ngkd:\n  token_budget: 128\n")
    config = load_config(child)
    assert config["targets"] == ["1.25x"]  # from the base
    assert config["gkd"]["lr"] == 0.001 and config["gkd"]["token_budget"] == 128  # merged key by key
    assert config["bld"]["token_budget"] == 1_000_000 and isinstance(config["bld"]["token_budget"], int)
    assert config["search_space"] == {"kv_heads": [1], "ffn_fractions": [0.5, 0.25]}  # list items too
    assert config["gkd"]["hidden"] == load_config()["gkd"]["hidden"]  # untouched keys keep the defaults
    (tmp_path / "a.yaml").write_text("extends: b.yaml\n")
    (tmp_path / "b.yaml").write_text("extends: a.yaml\n")
    with pytest.raises(ConfigError, match="cycle"):
        load_config(tmp_path / "a.yaml")
    (tmp_path / "c.yaml").write_text("extends: missing.yaml\n")
    with pytest.raises(FileNotFoundError, match="missing.yaml"):
        load_config(tmp_path / "c.yaml")


def test_shipped_configs_load():
    configs = Path(__file__).resolve().parents[2] / "packages" / "puzzle" / "configs"
    loaded = {path.stem: load_config(path) for path in sorted(configs.glob("*.yaml"))}
    assert {"quick", "cpu", "full", "cpu-long", "cpu-long-prompt", "cpu-long-coupled"} <= set(loaded)
    # cpu-long is the cpu profile's 1.5x point with a finer FFN grid, more scoring tokens and a larger GKD budget
    same = ("library", "bld", "scenario", "measure", "data", "seed")
    assert all(loaded["cpu-long"][k] == loaded["cpu"][k] for k in same)
    assert loaded["cpu-long"]["score"]["tokens"] > loaded["cpu"]["score"]["tokens"]
    assert loaded["cpu-long"]["score"]["objective"] == loaded["cpu"]["score"]["objective"]
    long_space, cpu_space = loaded["cpu-long"]["search_space"], loaded["cpu"]["search_space"]
    assert set(cpu_space["ffn_fractions"]) < set(long_space["ffn_fractions"])
    assert {k: v for k, v in long_space.items() if k != "ffn_fractions"} == {
        k: v for k, v in cpu_space.items() if k != "ffn_fractions"
    }
    assert loaded["cpu-long"]["gkd"]["token_budget"] > loaded["cpu"]["gkd"]["token_budget"]
    # cpu-long-prompt changes only the deployment, so a copy of a cpu-long run folder keeps its library, BLD and scores
    prompt = loaded["cpu-long-prompt"]
    assert {k: v for k, v in prompt.items() if k != "scenario"} == {
        k: v for k, v in loaded["cpu-long"].items() if k != "scenario"
    }
    assert prompt["scenario"]["prefill"] > loaded["cpu-long"]["scenario"]["prefill"]
    # cpu-long-coupled changes only the BLD mode, the space (a subset of cpu-long's) and how twins are matched
    coupled = loaded["cpu-long-coupled"]
    # checkpoint_every is outside BLD's hash (pipeline.UNHASHED), so it may differ without changing the BLD stage
    unhashed = {key.split(".", 1)[1] for key in UNHASHED if key.startswith("bld.")}
    assert {k: v for k, v in coupled["bld"].items() if k not in unhashed} == {
        **{k: v for k, v in loaded["cpu-long"]["bld"].items() if k not in unhashed},
        "mode": "coupled",
    }
    assert coupled["search"] == {**loaded["cpu-long"]["search"], "match_by": "measured"}
    assert {k: v for k, v in coupled.items() if k not in ("bld", "search_space", "search")} == {
        k: v for k, v in loaded["cpu-long"].items() if k not in ("bld", "search_space", "search")
    }
    assert set(coupled["search_space"]["ffn_fractions"]) < set(long_space["ffn_fractions"])


def test_datamodule_split_budget_and_token_cache(tmp_path, tiny_parent, austen_texts, monkeypatch):
    from transformers import AutoTokenizer

    from puzzle import data
    from puzzle.data import AustenDataModule, BatchStream

    tok = AutoTokenizer.from_pretrained(tiny_parent)
    dm = AustenDataModule(tok, seq_len=8, batch_size=2, texts=austen_texts, cache_dir=tmp_path, seed=1)
    dm.setup()
    assert len(list(tmp_path.glob("*.npy"))) == 2
    persuasion = tok(austen_texts["Persuasion"], add_special_tokens=False)["input_ids"]
    score, test = dm.heldout_batches("score"), dm.heldout_batches("test")
    held = torch.cat([b.flatten() for b in score]).tolist()
    assert held == persuasion[: len(held)]  # the held-out novel, in order, and nothing else
    assert not set(map(tuple, torch.cat(score).tolist())) & set(map(tuple, torch.cat(test).tolist()))
    assert dm.num_batches(17) == 2 and len(dm.heldout_batches("test", tokens=16)) == 1
    # a budget beyond one pass cycles through the text again, in another order
    per_pass = len(dm.train_chunks) // 2
    batches = list(dm.train_batches(tokens=(per_pass + 3) * 16))
    assert len(batches) == per_pass + 3 and all(b.shape == (2, 8) for b in batches)
    assert torch.equal(torch.stack(batches[5:9]), torch.stack(list(dm.train_batches(9 * 16, start=5))))
    ranks = [list(BatchStream(dm, 6 * 16, rank=r, world_size=2)) for r in (0, 1)]
    assert [len(r) for r in ranks] == [3, 3] and torch.equal(ranks[1][0], batches[1])
    # what BLD and GKD train on: rank 1 of two, resumed after 2 steps of 2 accumulated batches per rank (8 seen)
    trainer = SimpleNamespace(global_step=2, accumulate_grad_batches=2, world_size=2, global_rank=1)
    rest = list(dm.train_stream(12 * 16, trainer))
    assert len(rest) == 2 and all(torch.equal(a, b) for a, b in zip(rest, batches[9:12:2], strict=True))

    def no_tokenising(*args):
        raise AssertionError("tokenised again despite the cache")

    monkeypatch.setattr(data, "_tokenise", no_tokenising)
    again = AustenDataModule(tok, seq_len=8, batch_size=2, texts=austen_texts, cache_dir=tmp_path, seed=1)
    again.setup()
    assert np_equal(again.train_chunks, dm.train_chunks)
    other = AustenDataModule(tok, seq_len=8, batch_size=2, texts=austen_texts, cache_dir=tmp_path, seed=2)
    other.setup()  # another seed reuses the tokens but shuffles the training chunks differently
    assert not np_equal(other.train_chunks, dm.train_chunks)


def np_equal(a, b) -> bool:
    return a.shape == b.shape and bool((a == b).all())


def test_coupled_mode_scores_whole_blocks(tmp_path, tiny_parent, tiny_run_config, austen_texts):
    config = load_config(tiny_run_config(tiny_parent, bld={"mode": "coupled"}, baselines=[]))
    pipe = Pipeline(config, tmp_path, texts=austen_texts, progress=False, log=lambda m: None)
    pipe.run_all(["library", "bld", "score", "measure", "search"])
    scores = pipe.run.read_json("score/scores.json")
    n_blocks = len(pipe.attention_variants()) * len(pipe.ffn_variants())
    assert len([k for k in scores if "-block-" in k]) == 4 * (
        n_blocks - 1
    )  # every non-parent block, every layer
    problem = search_problem(pipe)
    assert problem.available.all() and problem.scores.shape == (4, n_blocks)
    no_op = problem.variant_names[0].index("no_op+no_op")
    assert problem.scores[2, no_op] == scores["002-block-no_op+no_op"]["kl"]
    assert list(pipe.solutions()) == ["puzzle-1.2x", "puzzle-1.5x"]
