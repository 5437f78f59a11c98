"""The Puzzle pipeline: nine stages, each reading the artifacts of earlier ones from a run folder.

    measure   per-block costs from probe models                    measure/costs.json
    library   block library initialised from the parent            library/lib/            (BlockLibrary.save)
    bld       blockwise local distillation of every variant        bld/lib/, bld/bld.json
    score     replace-1-block KL/LM loss/agreement per candidate   score/blocks/*.json, score/scores.json,
              + ShortGPT block influence of the parent             score/block_influence.json
    search    MIP per throughput target + the two baselines       search/problem.json, search/solutions.json
              (+ a Puzzle twin at each baseline's runtime)
    realize   one heterogeneous child per solution                realize/<child>/ (HF folder, DeciLM)
    gkd       global distillation of each child                   gkd/<child>/ (HF folder) + gkd/<child>/gkd.json
    evaluate  parent and children side by side                     evaluate/evaluate.json
    export    Nemotron-NAS checkpoints for engines                 export/<child>/ (trust_remote_code folder)

A stage's inputs hash covers its config section and the inputs hashes of the stages it reads (`STAGE_INPUTS`), so
changing e.g. the BLD budget re-runs bld and everything after it, and nothing before. The `measure` hash also holds
the device name (and the CPU thread count): costs measured on other hardware are re-measured. Trainer settings
(devices, strategy) are not part of any hash. Long stages cache per item (score: per candidate; gkd: per child +
Lightning checkpoints), so a killed stage resumes inside itself too.

Several processes (Lightning's DDP/FSDP: Lightning starts one more process per extra device by running the same
command again; torchrun or SLURM start them all): every process runs the pipeline, but only rank 0 runs the stages
other than BLD and GKD, writes artifacts and logs. The other ranks join the BLD and GKD fits and, at every other
stage, wait until rank 0 has marked it done.

Config (YAML or JSON; everything optional except what differs from `DEFAULTS`): see configs/quick.yaml; a file
may start from another with `extends: cpu.yaml` (see configs/cpu-long.yaml).
Targets: "1.5x" = 1.5 times the parent's measured tokens/s in the scenario; a number = absolute tokens/s.
"""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from lightning.fabric.utilities.rank_zero import rank_zero_only

from benchmarks.yardstick import device_name, select_device
from effinfer_core.run_folder import RunFolder, inputs_hash
from effinfer_core.trainer import training_precision
from puzzle.block_config import AttentionConfig, BlockConfig, FFNConfig
from puzzle.costs import PROBES, CostTable, Scenario, build_cost_table
from puzzle.data import AustenDataModule
from puzzle.scoring import Candidate, score_candidates
from puzzle.search import InfeasibleTargetError, SearchProblem, Solution

# measure runs first, before training has run in the process: timings taken at the end of a long BLD + GKD process
# proved unreliable (one SmolLM2 child read 1.34x there, 1.48-1.53x in fresh processes), which is also why evaluate
# times its models in a subprocess.
STAGES = ("measure", "library", "bld", "score", "search", "realize", "gkd", "evaluate", "export")
TRAINING_STAGES = ("bld", "gkd")  # Lightning fits: every process of a multi-process run takes part

# stage -> the stages whose artifacts it reads (their inputs hashes are part of its own)
STAGE_INPUTS: dict[str, tuple[str, ...]] = {
    "library": (),
    "bld": ("library",),
    "score": ("bld",),
    "measure": (),
    "search": ("score", "measure"),
    "realize": ("search", "bld"),
    "gkd": ("realize",),
    "evaluate": ("gkd", "measure"),
    "export": ("gkd",),
}

# the config sections (or "section.key") each stage's result depends on; the score stage computes every metric, so
# which one the MIP minimises (score.objective) belongs to the search, and a new objective does not re-score
STAGE_CONFIG: dict[str, tuple[str, ...]] = {
    "library": ("search_space", "library", "data", "seed"),
    "bld": ("bld", "data", "seed"),
    "score": ("score.tokens", "data"),
    "measure": ("search_space", "scenario", "measure"),
    "search": ("targets", "search", "baselines", "score.objective"),
    "realize": (),
    "gkd": ("gkd", "data", "seed"),
    "evaluate": ("evaluate", "scenario", "data"),
    "export": (),
}
# Keys of those sections that change how a stage runs, not what it writes, so they stay out of its hash: a killed run
# resumed with more frequent checkpoints is the same run. (gkd.checkpoint_every predates this and stays hashed, so
# that run folders distilled before keep their children.)
UNHASHED = ("bld.checkpoint_every",)

DEFAULTS: dict[str, Any] = {
    "parent": None,  # a local HF Llama-family folder; None = benchmarks.data.smollm2_dir()
    "data_dir": None,
    "seed": 0,
    "data": {"seq_len": 256, "batch_size": 8},
    "search_space": {
        "kv_heads": [3, 1],
        "ffn_fractions": [1.0, 0.75, 0.5, 0.25],
        "attention_linear": True,
        "attention_no_op": True,
        "ffn_linear": True,
        "ffn_no_op": True,
        "kv_init": "mean_pool",
        "ffn_init": "activation",
        "linear_init": "product",
    },
    "library": {"calib_tokens": 65536},
    "bld": {"mode": "decoupled", "token_budget": 1_000_000, "lr": 1e-4, "checkpoint_every": 100},
    "score": {"tokens": 32768, "objective": "kl"},
    "scenario": {"batch": 1, "prefill": 128, "decode": 128, "dtype": "float32"},
    # warmup, iters: per whole-generation timing (skeleton, each probe, parent); probes: "subblocks" (each subblock
    # in its own probe, blocks added up) or "blocks" (each block of the space in its own probe; costs.py)
    "measure": {"warmup": 1, "iters": 5, "probes": "subblocks"},
    "targets": ["1.5x"],
    # match_baselines: also a Puzzle child at each baseline's throughput ("puzzle-1.5x-at-shortgpt"): the coarse
    # baselines rarely land on the target, so this is the comparison at equal throughput. match_by "predicted": at
    # the baseline's predicted runtime; "measured": then timed side by side with the baseline (fresh weights,
    # match_iters interleaved rounds) and searched again at its predicted runtime / the measured ratio, for up to
    # match_rounds timings or until the two are within match_tolerance; the closest is kept
    # exclude_blocks: glob patterns of blocks the Puzzle children may not use ("linear+*": linear attention with any
    # FFN), e.g. variants an inference engine lacks; the library keeps them, so the scores are reused
    "search": {
        "solver": "auto",
        "time_limit_s": 60,
        "match_baselines": True,
        "match_by": "predicted",
        "match_rounds": 3,
        "match_tolerance": 0.02,
        "match_iters": 10,
        "exclude_blocks": [],
    },
    "baselines": ["uniform", "shortgpt"],
    "gkd": {
        "token_budget": 1_000_000,
        "lr": 1e-4,
        "hidden": "per_layer",
        "cosine_weight": 1.0,
        "kl_weight": 1.0,
        "lm_weight": 0.0,
        "gradient_clip": 0.0,
        "checkpoint_every": 100,
    },  # gradient_clip: max grad norm, 0 = off
    "evaluate": {"tokens": 32768, "warmup": 1, "iters": 3},
    "trainer": {
        "accelerator": "auto",
        "devices": "auto",
        "strategy": "auto",
        "num_nodes": 1,
        "precision": None,
    },
}

OBJECTIVES = {"kl": "min", "lm_loss": "min", "top1_agreement": "max"}
MATCH_BY = ("predicted", "measured")  # search.match_by: how a Puzzle twin is put at a baseline's throughput


class ConfigError(ValueError):
    """The run config is malformed (unknown key, bad value)."""


class StageNotReadyError(RuntimeError):
    """A stage was asked for before the stages it reads were done for this config."""


# -- config ---------------------------------------------------------------------------------------------------------
def _merge(base: dict[str, Any], over: Mapping[str, Any], where: str = "") -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in over.items():
        if key not in base:
            raise ConfigError(f"unknown config key '{where}{key}'; known keys: {', '.join(sorted(base))}")
        if isinstance(base[key], dict) and key != "search_space":
            if not isinstance(value, Mapping):
                raise ConfigError(f"config key '{where}{key}' must be a mapping, got {value!r}")
            out[key] = _merge(base[key], value, f"{where}{key}.")
        elif key == "search_space" and isinstance(
            value, Mapping
        ):  # replaced whole; SearchSpace checks its keys
            out[key] = {k: _numbers_read(base[key].get(k), v, f"{where}{key}.{k}") for k, v in value.items()}
        else:
            out[key] = _numbers_read(base[key], value, f"{where}{key}")
    return out


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _numbers_read(default: Any, value: Any, name: str) -> Any:
    """`value` with text read as a number where the default is a number or a list of numbers."""
    if isinstance(value, str) and _is_number(default):
        return _number(value, type(default), name)
    if isinstance(value, list) and isinstance(default, list) and default and all(map(_is_number, default)):
        return [_numbers_read(default[0], v, name) for v in value]
    return copy.deepcopy(value)


def _number(text: str, kind: type, name: str) -> int | float:
    """A number that YAML left as text: YAML 1.1 (PyYAML) reads `5e-4` and `1e6` as strings, not floats."""
    try:
        value = float(text)
    except ValueError:
        raise ConfigError(f"config key '{name}' must be a number, got {text!r}") from None
    if kind is int:
        if not value.is_integer():
            raise ConfigError(f"config key '{name}' must be a whole number, got {text!r}")
        return int(value)
    return value


def _config_layers(path: Path, chain: tuple[Path, ...] = ()) -> list[Mapping[str, Any]]:
    """The mappings of a config file and of the files it `extends` (a path relative to it), base first."""
    path = path.resolve()
    if path in chain:
        raise ConfigError(
            f"config files extend each other in a cycle: {' -> '.join(map(str, (*chain, path)))}"
        )
    if not path.exists():
        raise FileNotFoundError(f"config file {path} does not exist")
    text = path.read_text()
    if path.suffix == ".json":
        user = json.loads(text)
    else:
        import yaml

        user = yaml.safe_load(text) or {}
    if not isinstance(user, Mapping):
        raise ConfigError(f"config file {path} must hold a mapping at the top level")
    user = dict(user)
    base = user.pop("extends", None)
    if base is None:
        return [user]
    if not isinstance(base, str):
        raise ConfigError(f"'extends' in {path} must be the path of another config file, got {base!r}")
    return [*_config_layers(path.parent / base, (*chain, path)), user]


def load_config(source: str | Path | Mapping[str, Any] | None = None, **overrides: Any) -> dict[str, Any]:
    """DEFAULTS updated by a YAML/JSON file (or mapping) and then by `overrides` (None values ignored).

    A file may name a base config with `extends: other.yaml`; its own keys override the base's (mappings merge key
    by key, as over DEFAULTS).
    """
    layers: list[Mapping[str, Any]] = []
    if isinstance(source, Mapping):
        layers = [source]
    elif source is not None:
        layers = _config_layers(Path(source))
    config = copy.deepcopy(DEFAULTS)
    for layer in layers:
        config = _merge(config, layer)
    config = _merge(config, {k: v for k, v in overrides.items() if v is not None})
    if not config["targets"]:
        raise ConfigError("targets is empty: give at least one throughput target, e.g. ['1.5x'] or [250]")
    if config["bld"]["mode"] not in ("decoupled", "coupled"):
        raise ConfigError(f"bld.mode must be 'decoupled' or 'coupled', got {config['bld']['mode']!r}")
    if config["measure"]["probes"] not in PROBES:
        raise ConfigError(
            f"measure.probes must be one of {list(PROBES)}, got {config['measure']['probes']!r}"
        )
    if config["score"]["objective"] not in OBJECTIVES:
        raise ConfigError(
            f"score.objective must be one of {sorted(OBJECTIVES)}, got {config['score']['objective']!r}"
        )
    unknown = set(config["baselines"]) - {"uniform", "shortgpt"}
    if unknown:
        raise ConfigError(f"unknown baselines {sorted(unknown)}; choose from 'uniform', 'shortgpt'")
    exclude = config["search"]["exclude_blocks"]
    if not isinstance(exclude, list) or not all(isinstance(x, str) for x in exclude):
        raise ConfigError(
            f"search.exclude_blocks must be a list of block-name patterns such as 'linear+*', got {exclude!r}"
        )
    search = config["search"]
    if search["match_by"] not in MATCH_BY:
        raise ConfigError(f"search.match_by must be one of {list(MATCH_BY)}, got {search['match_by']!r}")
    if search["match_rounds"] < 1 or search["match_iters"] < 1 or not search["match_tolerance"] >= 0:
        raise ConfigError(
            f"search.match_rounds and match_iters must be >= 1 and match_tolerance >= 0, got "
            f"{search['match_rounds']}, {search['match_iters']}, {search['match_tolerance']}"
        )
    if not config["gkd"]["gradient_clip"] >= 0:
        raise ConfigError(
            f"gkd.gradient_clip must be a gradient norm >= 0 (0 = no clipping), "
            f"got {config['gkd']['gradient_clip']!r}"
        )
    Scenario(**config["scenario"])  # validates
    for t in config["targets"]:
        parse_target(t)
    return config


def run_config_path(run_dir: str | Path | None, config_path: str | Path | None = None) -> Path:
    """`config_path` when given, else the config.json that `puzzle run` and `puzzle bench` write into their run folder."""
    if config_path is not None:
        return Path(config_path)
    if run_dir is not None and (Path(run_dir) / "config.json").exists():
        return Path(run_dir) / "config.json"
    where = "no --run-dir given" if run_dir is None else f"run folder {run_dir} has no config.json"
    raise ConfigError(
        f"{where}: give --config CONFIG, or the folder of a run started with `puzzle run` or `puzzle bench`"
    )


def parse_target(target: str | float | int) -> tuple[str, float, bool]:
    """'1.5x' -> ('1.5x', 1.5, relative); 300 -> ('300tps', 300.0, absolute tokens/s)."""
    if isinstance(target, str):
        m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*x\s*", target)
        if m:
            return f"{float(m.group(1)):g}x", float(m.group(1)), True
        try:
            target = float(target)
        except ValueError:
            raise ConfigError(
                f"target {target!r} is neither a throughput multiple like '1.5x' nor tokens/s"
            ) from None
    if not target > 0:
        raise ConfigError(f"a throughput target must be positive, got {target}")
    return f"{float(target):g}tps", float(target), False


# -- the pipeline ---------------------------------------------------------------------------------------------------
class Pipeline:
    """Runs stages of one config in one run folder (see module docstring)."""

    def __init__(
        self,
        config: Mapping[str, Any],
        run_dir: str | Path,
        *,
        device: str | None = None,
        progress: bool = True,
        log: Callable[[str], None] | None = None,
        texts: Mapping[str, str] | None = None,
    ):
        self.config = dict(config)
        self.texts = texts  # title -> text; None = benchmarks.data.load_austen(data_dir)
        self.run = RunFolder(run_dir)
        self.device = select_device(device)
        self.progress = progress
        if not progress:
            from transformers.utils import logging as hf_logging

            hf_logging.disable_progress_bar()
        # rank 0 of a multi-process run, or the only process (Lightning's rank, read from the launcher's environment)
        self.is_main = rank_zero_only.rank == 0
        self.log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
        if not self.is_main:  # rank 0 reports for all
            self.log = lambda msg: None
        self._parent: tuple[Any, Any] | None = None
        self._datamodule: AustenDataModule | None = None
        self.parent_path = (
            Path(self.config["parent"]) if self.config["parent"] else _default_parent(self.config["data_dir"])
        )
        from puzzle.parent import decilm_config_from_parent, parent_fingerprint

        self.parent_config = decilm_config_from_parent(self.parent_path)  # NotLlamaFamilyError early
        self.space = _search_space(self.config["search_space"])
        self.space.validate(self.parent_config)  # SearchSpaceError early
        self.fingerprint = parent_fingerprint(self.parent_path)
        if self.is_main:
            self.run.bind("parent", self.parent_path, self.fingerprint)

    # -- shared inputs ---------------------------------------------------------------------------------------------
    def parent(self) -> tuple[Any, Any]:
        """(parent model on the device, tokenizer), loaded once."""
        if self._parent is None:
            from puzzle.parent import load_parent

            model, tokenizer = load_parent(self.parent_path)
            if tokenizer is None:
                raise FileNotFoundError(f"parent folder {self.parent_path} has no tokenizer files")
            self._parent = (model.to(self.device).eval(), tokenizer)
        return self._parent

    def datamodule(self) -> AustenDataModule:
        if self._datamodule is None:
            _, tokenizer = self.parent()
            data = self.config["data"]
            self._datamodule = AustenDataModule(
                tokenizer,
                seq_len=data["seq_len"],
                batch_size=data["batch_size"],
                texts=self.texts,
                data_dir=self.config["data_dir"],
                cache_dir=self.run.stage_dir("tokens"),
                seed=self.config["seed"],
            )
            self._datamodule.setup()
        return self._datamodule

    def trainer_kwargs(self, progress_prefix: str | None = None) -> dict[str, Any]:
        """Lightning Trainer settings; without progress bars, log lines of progress headed `progress_prefix`."""
        kwargs: dict[str, Any] = {k: v for k, v in self.config["trainer"].items() if v is not None}
        if kwargs.get("precision") == "auto":
            kwargs["precision"] = training_precision(str(kwargs.get("accelerator", "auto")))
        if not self.progress:
            from effinfer_core.progress import LogProgress

            kwargs["enable_progress_bar"] = False
            if progress_prefix:
                kwargs["callbacks"] = [LogProgress(self.log, progress_prefix)]
        return kwargs

    def scenario(self) -> Scenario:
        return Scenario(**self.config["scenario"])

    def attention_variants(self) -> list[AttentionConfig]:
        return list(self.space.attention_variants(self.parent_config))

    def ffn_variants(self) -> list[FFNConfig]:
        return list(self.space.ffn_variants(self.parent_config))

    def parent_block(self) -> BlockConfig:
        return self.parent_config.parent_block_config()

    # -- stage bookkeeping -----------------------------------------------------------------------------------------
    def inputs(self, stage: str, threads: int | None = None) -> dict[str, Any]:
        """Everything `stage`'s artifacts depend on (hashed into its manifest entry); `threads` stands in for this
        process's CPU thread count."""
        out: dict[str, Any] = {
            "parent": self.fingerprint,
            "config": self.stage_config(stage),
            "upstream": {s: self.inputs_hash(s) for s in STAGE_INPUTS[stage]},
        }
        if stage == "measure":  # timings belong to the hardware and, on a CPU, to the thread count
            out["device"] = device_name(self.device)
            if self.device.type == "cpu":
                out["threads"] = threads or torch.get_num_threads()
        return out

    def inputs_hash(self, stage: str) -> str:
        return inputs_hash(self.inputs(stage))

    def stage_config(self, stage: str) -> dict[str, Any]:
        """The parts of the config that `stage`'s result depends on (STAGE_CONFIG)."""
        out = {}
        for name in STAGE_CONFIG[stage]:
            section, _, key = name.partition(".")
            value = self.config[section][key] if key else self.config[section]
            if isinstance(value, dict):
                value = {k: v for k, v in value.items() if f"{name}.{k}" not in UNHASHED}
            out[name] = value
        return out

    def require(self, stage: str) -> None:
        for up in STAGE_INPUTS[stage]:
            if not self.run.is_done(up, self.inputs_hash(up)):
                raise StageNotReadyError(
                    f"stage {stage!r} needs stage {up!r} done for this config; "
                    f"run `puzzle {up}` (or `puzzle run`) first{self._threads_hint()}"
                )

    def _threads_hint(self) -> str:
        """Why a finished run looks undone from here when only the CPU thread count differs from its measure
        stage's (that count is in measure's hash, so in every later stage's)."""
        entry = self.run.stage_entry("measure")
        now = torch.get_num_threads()
        if (
            entry is None
            or self.device.type != "cpu"
            or self.run.is_done("measure", self.inputs_hash("measure"))
        ):
            return ""
        for n in range(1, max(os.cpu_count() or 1, now) + 1):
            if inputs_hash(self.inputs("measure", threads=n)) == entry["inputs_hash"]:
                return (
                    f" (this run folder's costs were measured with {n} CPU threads and this process has {now}: "
                    f"pass --threads {n}, or measure again with {now})"
                )
        return ""

    def run_stage(self, stage: str) -> str:
        if stage not in STAGES:
            raise ValueError(f"unknown stage {stage!r}; stages: {', '.join(STAGES)}")
        h = self.inputs_hash(stage)
        if not self.is_main and stage not in TRAINING_STAGES:
            self.wait_for_rank_zero(stage, h)
            return h
        if self.run.is_done(stage, h):
            self.log(f"[{stage}] done already ({h}), skipping")
            return h
        self.require(stage)
        self.log(f"[{stage}] running ({h})")
        info = getattr(self, f"stage_{stage}")(h) or {}
        if self.is_main:
            self.run.mark_done(stage, h, **info)
        self.log(f"[{stage}] done")
        return h

    def wait_for_rank_zero(self, stage: str, h: str, poll_s: float = 2.0) -> None:
        """Rank > 0: block until rank 0 has marked `stage` done with inputs hash `h`."""
        launcher = os.getppid()
        while not self.run.is_done(stage, h):
            if os.getppid() != launcher:  # rank 0 (Lightning's launcher) or torchrun's agent has exited
                raise RuntimeError(
                    f"rank {rank_zero_only.rank}: rank 0 stopped before stage {stage!r} was done"
                )
            time.sleep(poll_s)

    def run_all(self, stages: Sequence[str] = STAGES) -> None:
        for stage in stages:
            self.run_stage(stage)

    # -- stages ----------------------------------------------------------------------------------------------------
    def stage_library(self, h: str) -> dict[str, Any]:
        from puzzle.library import build_library

        parent, _ = self.parent()
        dm = self.datamodule()
        torch.manual_seed(self.config["seed"])
        calib = list(dm.train_batches(self.config["library"]["calib_tokens"]))
        build_library(parent, self.space, calib).save(self.run.path("library/lib"))  # save() is atomic
        return {"calib_tokens": len(calib) * dm.tokens_per_batch}

    def library(self, stage: str = "bld") -> Any:
        from puzzle.library import BlockLibrary

        parent, _ = self.parent()
        return BlockLibrary.load(self.run.path(f"{stage}/lib"), parent)

    def stage_bld(self, h: str) -> dict[str, Any]:
        from puzzle.bld import run_bld

        parent, _ = self.parent()
        cfg = dict(self.config["bld"])
        mode, budget, every = cfg.pop("mode"), cfg.pop("token_budget"), cfg.pop("checkpoint_every")
        library = self.library("library")
        library, metrics = run_bld(
            parent,
            library,
            self.datamodule(),
            mode=mode,
            token_budget=budget,
            ckpt_dir=self.run.stage_dir("bld") / f"ckpt-{h}",
            ckpt_every=every,
            trainer_kwargs=self.trainer_kwargs("[bld]"),
            **cfg,
        )
        if self.is_main:  # every rank holds the same trained library
            library.save(self.run.path("bld/lib"))
            self.run.write_json("bld/bld.json", metrics)
            shutil.rmtree(
                self.run.path(f"bld/ckpt-{h}"), ignore_errors=True
            )  # the library is saved; free the disk
        return {}

    def candidates(self, library: Any) -> list[Candidate]:
        """Replace-1-block candidates: per layer, every non-parent subblock (decoupled) or block (coupled)."""
        pa = self.parent_block()
        out = []
        for i in range(self.parent_config.num_hidden_layers):
            if self.config["bld"]["mode"] == "decoupled":
                out += [
                    Candidate(i, "attention", a.name, attention=(a, library.attention_block(i, a.name)))
                    for a in self.attention_variants()
                    if a != pa.attention
                ]
                out += [
                    Candidate(i, "ffn", f.name, ffn=(f, library.ffn_block(i, f.name)))
                    for f in self.ffn_variants()
                    if f != pa.ffn
                ]
                continue
            for a in self.attention_variants():
                for f in self.ffn_variants():
                    block = BlockConfig(a, f)
                    if block != pa:
                        attn, ffn = library.block(i, block)
                        out.append(Candidate(i, "block", block.name, attention=(a, attn), ffn=(f, ffn)))
        return out

    def stage_score(self, h: str) -> dict[str, Any]:
        from puzzle.baselines import block_influence

        parent, _ = self.parent()
        batches = self.datamodule().heldout_batches("score", self.config["score"]["tokens"])
        scores = score_candidates(
            parent,
            self.candidates(self.library()),
            batches,
            device=self.device,
            cache_dir=self.run.stage_dir("score") / "blocks",
            cache_tag=h,
            progress=self.progress,
        )
        self.run.write_json("score/scores.json", scores)
        # ShortGPT's block influence needs the parent's hidden states on the same batches; the last entry of HF's
        # hidden_states is after the final norm, so the last layer's raw output is taken from a hook instead.
        bi, tokens, last = 0.0, 0, []
        hook = parent.model.layers[-1].register_forward_hook(lambda module, args, out: last.append(out))
        try:
            with torch.inference_mode():
                for ids in batches:
                    out = parent(input_ids=ids.to(self.device), use_cache=False, output_hidden_states=True)
                    bi = bi + block_influence([*out.hidden_states[:-1], last.pop()]) * ids.numel()
                    tokens += ids.numel()
        finally:
            hook.remove()
        self.run.write_json("score/block_influence.json", (bi / tokens).tolist())
        return {"candidates": len(scores), "score_tokens": tokens}

    def stage_measure(self, h: str) -> dict[str, Any]:
        from puzzle.modeling_decilm import build_attention_block, build_ffn_block
        from puzzle.parent import load_parent

        parent, _ = load_parent(self.parent_path)  # a fresh copy: measuring casts it to the scenario dtype
        mcfg = self.config["measure"]
        table = build_cost_table(
            parent,
            self.attention_variants(),
            self.ffn_variants(),
            self.scenario(),
            build_attention=build_attention_block,
            build_ffn=build_ffn_block,
            device=self.device,
            probes=mcfg["probes"],
            warmup=mcfg["warmup"],
            iters=mcfg["iters"],
            progress=self.progress,
        )
        self.run.write_json(
            "measure/costs.json", {**table.to_dict(), "device_name": device_name(self.device)}
        )
        cal = table.calibration
        notes = [
            f"parent {cal['parent_measured']['tokens_per_s']:.1f} tokens/s measured",
            f"skeleton (all blocks no-op) {table.skeleton['tokens_per_s']:.1f} tokens/s",
            f"{len(table.blocks)} blocks from {mcfg['probes']} probes",
        ]
        if "sum_of_parts_over_measured" in cal:
            notes.append(
                f"sum of the parent's lone subblocks = {cal['sum_of_parts_over_measured']:.3f} x measured"
            )
        if mcfg["probes"] == "blocks" and cal["additivity"]:
            notes.append(
                "block time / its two subblocks' alone: "
                + ", ".join(f"{name} {r:.3f}" for name, r in cal["additivity"].items())
            )
        self.log("[measure] " + "; ".join(notes))
        return {}

    def cost_table(self) -> CostTable:
        d = self.run.read_json("measure/costs.json")
        d.pop("device_name", None)
        return CostTable.from_dict(d)

    def problem(self) -> SearchProblem:
        """The MIP's input: per layer, every (attention, FFN) block with its score and measured costs."""
        scores = self.run.read_json("score/scores.json")
        return build_problem(
            scores,
            self.cost_table(),
            self.attention_variants(),
            self.ffn_variants(),
            self.parent_block(),
            self.parent_config.num_hidden_layers,
            mode=self.config["bld"]["mode"],
            objective=self.config["score"]["objective"],
        )

    def stage_search(self, h: str) -> dict[str, Any]:
        full = self.problem()
        table = self.cost_table()
        self.run.write_json("search/problem.json", full.to_dict())
        try:  # the baselines follow their own rules on the full library; the Puzzle children on what is allowed
            problem = full.without(self.config["search"]["exclude_blocks"])
        except ValueError as e:
            raise ConfigError(f"search.exclude_blocks: {e}") from None
        parent_tps = table.calibration["parent_measured"]["tokens_per_s"]
        match_baselines = self.config["search"]["match_baselines"]
        blocks = {
            BlockConfig(a, f).name: BlockConfig(a, f)
            for a in self.attention_variants()
            for f in self.ffn_variants()
        }
        solutions: dict[str, dict[str, Any]] = {}
        skipped: dict[str, str] = {}
        for target in self.config["targets"]:
            label, value, relative = parse_target(target)
            tps = value * parent_tps if relative else value
            budget = {"runtime_ms": table.scenario.runtime_budget_ms(tps)}
            try:
                sol = self._solve(problem, budget)
            except InfeasibleTargetError as e:
                raise InfeasibleTargetError(_infeasible_in_tps(str(e), problem, table, label, tps)) from None
            solutions[f"puzzle-{label}"] = _solution_record(sol, blocks, "puzzle", label, tps, table)
            for method in self.config["baselines"]:
                try:
                    sol = self._baseline(method, full, budget)
                except (
                    InfeasibleTargetError
                ) as e:  # a coarse baseline missing the target must not stop the run
                    skipped[f"{method}-{label}"] = str(e)
                    self.log(f"[search] {method}-{label} skipped: {e}")
                    continue
                solutions[f"{method}-{label}"] = _solution_record(sol, blocks, method, label, tps, table)
                if not match_baselines:
                    continue
                try:
                    self._match_baseline(problem, sol, method, label, blocks, table, solutions)
                except (
                    InfeasibleTargetError
                ) as e:  # only when search.exclude_blocks took the baseline's blocks
                    skipped[f"puzzle-{label}-at-{method}"] = str(e)
                    self.log(f"[search] puzzle-{label}-at-{method} skipped: {e}")
        for name, rec in solutions.items():
            self.log(
                f"[search] {name}: predicted {rec['predicted']['tokens_per_s']:.1f} tokens/s "
                f"(target {rec['target_tokens_per_s']:.1f}), objective {rec['objective']:.4f}"
            )
        self.run.write_json("search/solutions.json", solutions)
        self.run.write_json("search/skipped.json", skipped)
        return {"children": sorted(solutions)}

    def _solve(self, problem: SearchProblem, budget: dict[str, float]) -> Solution:
        """The MIP's best solution within `budget`, with the config's solver settings."""
        from puzzle.search import solve

        scfg = self.config["search"]
        return solve(problem, budgets=budget, solver=scfg["solver"], time_limit_s=scfg["time_limit_s"])[0]

    def _match_baseline(
        self,
        problem: SearchProblem,
        baseline: Solution,
        method: str,
        label: str,
        blocks: Mapping[str, BlockConfig],
        table: CostTable,
        solutions: dict[str, Any],
    ) -> None:
        """Puzzle at the baseline's predicted (or measured, search.match_by) runtime, unless that child is already
        in `solutions`."""
        runtime = baseline.costs["runtime_ms"]
        sol = self._solve(
            problem, {"runtime_ms": runtime}
        )  # the baseline meets it, unless its blocks are excluded
        match: dict[str, Any] = {"by": "predicted"}
        if self.config["search"]["match_by"] == "measured":
            sol, match = self._match_measured(problem, baseline, sol, f"{method}-{label}", blocks)
            runtime = match["runtime_budget_ms"]
        same = next(
            (k for k, v in solutions.items() if v["method"] == "puzzle" and v["choice"] == sol.choice), None
        )
        if same is not None:
            self.log(f"[search] puzzle at {method}-{label}'s runtime is {same}")
            return
        solutions[f"puzzle-{label}-at-{method}"] = {
            **_solution_record(sol, blocks, "puzzle", label, table.scenario.tokens_per_s(runtime), table),
            "matched": f"{method}-{label}",
            "match": match,
        }

    def _match_measured(
        self,
        problem: SearchProblem,
        baseline: Solution,
        twin: Solution,
        name: str,
        blocks: Mapping[str, BlockConfig],
    ) -> tuple[Solution, dict[str, Any]]:
        """The Puzzle child whose *measured* runtime is closest to the baseline's: the cost model's error differs
        between architectures (on the AMD VMs, twins without attention in many layers ran 6-16% faster than
        ShortGPT's child of the same prediction), so equal predictions are not equal speeds. Each round times the
        twin beside the baseline and solves again at the twin's predicted runtime / (its measured runtime / the
        baseline's)."""
        from puzzle.costs import measure_generations, runtime_ratio, with_blocks
        from puzzle.modeling_decilm import build_attention_block, build_ffn_block

        scfg = self.config["search"]
        parent, _ = self.parent()

        def model(sol: Solution) -> torch.nn.Module:
            return with_blocks(parent, [blocks[n] for n in sol.names], build_attention_block, build_ffn_block)

        reference = model(baseline)
        rounds: list[dict[str, Any]] = []
        twins: list[Solution] = []
        budget = baseline.costs["runtime_ms"]
        for _ in range(scfg["match_rounds"]):
            measured = measure_generations(
                {"baseline": reference, "twin": model(twin)},
                self.scenario(),
                device=self.device,
                warmup=1,
                iters=scfg["match_iters"],
            )
            ratio = runtime_ratio(measured, "twin", "baseline")
            rounds.append(
                {
                    "runtime_budget_ms": budget,
                    "predicted_runtime_ms": twin.costs["runtime_ms"],
                    "measured_over_baseline": ratio,
                }
            )
            twins.append(twin)
            self.log(
                f"[search] twin of {name} at {budget:.1f} ms predicted budget: measured {ratio:.3f}x the "
                f"baseline's runtime"
            )
            if abs(ratio - 1) <= scfg["match_tolerance"]:
                break
            budget = twin.costs["runtime_ms"] / ratio  # where the twin should measure the baseline's runtime
            try:
                nxt = self._solve(problem, {"runtime_ms": budget})
            except InfeasibleTargetError:  # faster than any child of the space: keep the closest so far
                break
            if nxt.choice == twin.choice:
                break
            twin = nxt
        best = min(range(len(rounds)), key=lambda i: abs(rounds[i]["measured_over_baseline"] - 1))
        return twins[best], {"by": "measured", **rounds[best], "rounds": rounds}

    def _baseline(self, method: str, problem: SearchProblem, budget: dict[str, float]) -> Solution:
        """Uniform shrink (GQA x SwiGLU widths only) or ShortGPT layer dropping, by P-search's selection."""
        from puzzle.baselines import shortgpt_choice, uniform_choice

        if method == "uniform":
            allowed = {
                n for row in problem.variant_names for n in row if "linear" not in n and "no_op" not in n
            }
            return uniform_choice(problem, budget, allowed_variants=sorted(allowed))
        bi = np.asarray(self.run.read_json("score/block_influence.json"))
        no_op = BlockConfig(AttentionConfig(no_op=True), FFNConfig(no_op=True)).name
        return shortgpt_choice(
            problem, bi, budget, parent_variant=self.parent_block().name, drop_variant=no_op
        )

    def solutions(self) -> dict[str, dict[str, Any]]:
        return self.run.read_json("search/solutions.json")

    def block_configs(self, record: Mapping[str, Any]) -> list[BlockConfig]:
        c = self.parent_config
        return [
            BlockConfig.from_dict(d, hidden_size=c.hidden_size, num_attention_heads=c.num_attention_heads)
            for d in record["blocks"]
        ]

    def stage_realize(self, h: str) -> dict[str, Any]:
        from puzzle.realize import realize

        parent, _ = self.parent()
        library = self.library()
        for name, rec in self.solutions().items():
            key = self.child_key(rec)
            marker = f"realize/{name}/realize.json"
            if self.run.path(marker).exists() and self.run.read_json(marker).get("child_key") == key:
                self.log(f"[realize] {name}: done already")
                continue
            child = realize(parent, self.block_configs(rec), library)
            with self.run.atomic_dir(f"realize/{name}") as tmp:
                child.save_pretrained(tmp)
                (tmp / "realize.json").write_text(json.dumps({"child_key": key}, indent=2))
            self.log(f"[realize] {name}: {sum(p.numel() for p in child.parameters()) / 1e6:.2f} M parameters")
        return {}

    def child_key(self, record: Mapping[str, Any]) -> str:
        """What a realised child depends on: the BLD-trained library and the child's blocks. Keyed per child (not by
        the stage's inputs) so that a changed search, one more target or baseline, realises and distils only the
        children that are new or different."""
        return inputs_hash({"bld": self.inputs_hash("bld"), "blocks": record["blocks"]})

    def gkd_key(self, record: Mapping[str, Any]) -> str:
        """What a distilled child depends on: the realised child and the GKD settings."""
        return inputs_hash({"child": self.child_key(record), "config": self.stage_config("gkd")})

    def load_child(self, stage: str, name: str) -> Any:
        from puzzle.modeling_decilm import DeciLMForCausalLM

        return DeciLMForCausalLM.from_pretrained(self.run.path(f"{stage}/{name}"))

    def stage_gkd(self, h: str) -> dict[str, Any]:
        self.distil(list(self.solutions()), h)
        return {}

    def distil(self, names: Sequence[str], h: str | None = None) -> None:
        """GKD of the children `names` (those not distilled already). `puzzle gkd --children` calls it for some
        children: the one that decides a comparison first, or one child per machine on a shared run folder; the
        stage is done when a later `puzzle gkd` finds every child distilled."""
        from puzzle.gkd import run_gkd

        h = h or self.inputs_hash("gkd")
        solutions = self.solutions()
        unknown = [n for n in names if n not in solutions]
        if unknown:
            raise ConfigError(
                f"no child {unknown} in search/solutions.json; children: {', '.join(solutions)}"
            )
        parent, _ = self.parent()
        cfg = dict(self.config["gkd"])
        budget, every = cfg.pop("token_budget"), cfg.pop("checkpoint_every")
        for name in names:
            rec = solutions[name]
            key = self.gkd_key(rec)
            marker = f"gkd/{name}/gkd.json"
            done = self.run.read_json(marker) if self.run.path(marker).exists() else {}
            # inputs_hash: a child distilled by a run from before per-child keys, under this stage's exact inputs
            if done.get("child_key") == key or done.get("inputs_hash") == h:
                self.log(f"[gkd] {name}: done already")
                continue
            student = self.load_child("realize", name)
            ckpt_dir = self.run.stage_dir("gkd") / f".ckpt-{name}-{key}"
            metrics = run_gkd(
                student,
                parent,
                self.datamodule(),
                token_budget=budget,
                ckpt_dir=ckpt_dir,
                checkpoint_every=every,
                seed=self.config["seed"],
                trainer_kwargs=self.trainer_kwargs(f"[gkd] {name}"),
                **cfg,
            )
            if not self.is_main:  # every rank holds the same trained child; rank 0 saves it
                continue
            with self.run.atomic_dir(f"gkd/{name}") as tmp:
                student.cpu().save_pretrained(tmp)
                (tmp / "gkd.json").write_text(json.dumps({"child_key": key, **metrics}, indent=2))
            shutil.rmtree(ckpt_dir, ignore_errors=True)  # the trained child is saved; checkpoints are large
            self.log(
                f"[gkd] {name}: loss {metrics.get('first_loss', float('nan')):.4f} -> "
                f"{metrics.get('last_loss', float('nan')):.4f} in {metrics['steps']} steps"
            )

    def predicted_runtimes(self) -> dict[str, float]:
        """The search's predicted runtime (ms) of every child, and the parent's as timed by the measure stage."""
        predicted = {name: rec["predicted"]["runtime_ms"] for name, rec in self.solutions().items()}
        predicted["parent"] = self.cost_table().calibration["parent_measured"]["runtime_ms"]
        return predicted

    def evaluate_children(self, stage: str, names: Sequence[str]) -> dict[str, dict[str, Any]]:
        """The parent and the children RUN_DIR/<stage>/<name> side by side: held-out quality, speed timed in a fresh
        process (the config's scenario, warm-up and iterations) and the search's predicted runtime over the measured
        one. The evaluate stage and scripts/child_quality.py both read their figures from here."""
        from puzzle.evaluate import evaluate_models, measure_in_fresh_process

        parent, _ = self.parent()
        ecfg = self.config["evaluate"]
        batches = self.datamodule().heldout_batches("test", ecfg["tokens"])
        self.log("[evaluate] timing the parent and the children in a fresh process")
        costs = measure_in_fresh_process(
            self.parent_path,
            {name: self.run.path(f"{stage}/{name}") for name in names},
            self.scenario(),
            device=self.device,
            warmup=ecfg["warmup"],
            iters=ecfg["iters"],
        )
        children = {name: self.load_child(stage, name) for name in names}
        return evaluate_models(
            children,
            parent,
            batches,
            self.scenario(),
            device=self.device,
            predicted_runtime_ms=self.predicted_runtimes(),
            progress=self.progress,
            costs=costs,
        )

    def stage_evaluate(self, h: str) -> dict[str, Any]:
        solutions = self.solutions()
        results = self.evaluate_children("gkd", list(solutions))
        for name, rec in solutions.items():
            results[name].update(
                {
                    "method": rec["method"],
                    "target": rec["target"],
                    "target_tokens_per_s": rec["target_tokens_per_s"],
                }
            )
        self.run.write_json("evaluate/evaluate.json", results)
        self.log(format_results(results))
        return {}

    def stage_export(self, h: str) -> dict[str, Any]:
        from puzzle.export import export_child

        _, tokenizer = self.parent()
        for name in self.solutions():
            export_child(self.load_child("gkd", name), tokenizer, self.run.path(f"export/{name}"))  # atomic
        return {}


# -- helpers --------------------------------------------------------------------------------------------------------
def _default_parent(data_dir: str | None) -> Path:
    from benchmarks.data import smollm2_dir

    return smollm2_dir(data_dir)


def _search_space(d: Mapping[str, Any]) -> Any:
    from puzzle.library import SearchSpace

    return SearchSpace.from_dict(dict(d))


def build_problem(
    scores: Mapping[str, Mapping[str, float]],
    table: CostTable,
    attention: Sequence[AttentionConfig],
    ffn: Sequence[FFNConfig],
    parent_block: BlockConfig,
    num_layers: int,
    *,
    mode: str,
    objective: str = "kl",
) -> SearchProblem:
    """SearchProblem with one row per layer and one column per (attention, FFN) block.

    Costs of a block: from the measure stage (`costs.measure_blocks`), the same in every layer. Scores: coupled mode
    scores every block; decoupled mode scores subblocks alone and a block's score is the sum of its two subblocks'
    scores (each relative to the parent's own score, `scores["parent"]`), i.e. their effects are taken as additive.
    Unscored candidates are NaN (unavailable to the MIP).
    """
    sense = OBJECTIVES[objective]
    blocks = [BlockConfig(a, f) for a in attention for f in ffn]
    names = [[b.name for b in blocks] for _ in range(num_layers)]
    base = scores["parent"][objective]
    score = np.full((num_layers, len(blocks)), np.nan)
    for i in range(num_layers):
        for j, b in enumerate(blocks):
            if b == parent_block:
                score[i, j] = base
            elif mode == "coupled":
                m = scores.get(f"{i:03d}-block-{b.name}")
                score[i, j] = m[objective] if m else np.nan
            else:
                total = base
                for kind, sub, par in (
                    ("attention", b.attention, parent_block.attention),
                    ("ffn", b.ffn, parent_block.ffn),
                ):
                    if sub != par:
                        m = scores.get(f"{i:03d}-{kind}-{sub.name}")
                        total += (m[objective] - base) if m else np.nan
                score[i, j] = total
    costs = {
        k: np.array([[table.block(b.attention.name, b.ffn.name)[k] for b in blocks]] * num_layers)
        for k in ("runtime_ms", "memory_mib", "params")
    }
    fixed = table.fixed()
    return SearchProblem(names, score, costs, {k: fixed[k] for k in costs}, sense)


def _solution_record(
    sol: Solution, blocks: Mapping[str, BlockConfig], method: str, label: str, tps: float, table: CostTable
) -> dict[str, Any]:
    chosen = [blocks[n] for n in sol.names]
    predicted = table.predict([(b.attention.name, b.ffn.name) for b in chosen])
    return {
        "method": method,
        "target": label,
        "target_tokens_per_s": tps,
        "objective": sol.objective,
        "names": sol.names,
        "choice": sol.choice,
        "blocks": [b.to_dict() for b in chosen],
        "predicted": predicted,
        "solver": sol.solver,
        "optimal": sol.optimal,
        "solve_time_s": sol.solve_time_s,
    }


def _infeasible_in_tps(message: str, problem: SearchProblem, table: CostTable, label: str, tps: float) -> str:
    cheapest_ms, _ = problem.cost_range("runtime_ms")
    best = table.scenario.tokens_per_s(cheapest_ms)
    return (
        f"throughput target {label} = {tps:.1f} tokens/s is not reachable with this search space: the cheapest "
        f"achievable child runs at {best:.1f} tokens/s (runtime {cheapest_ms:.2f} ms for batch "
        f"{table.scenario.batch} x {table.scenario.decode} tokens).\n{message}"
    )


def format_results(results: Mapping[str, Mapping[str, float]]) -> str:
    """One line per model: quality and measured throughput."""
    head = (
        f"{'model':<22}{'top1 acc':>9}{'retain':>8}{'agree':>7}{'KL':>8}{'ppl':>9}{'tok/s':>9}{'speedup':>8}"
        f"{'pred/meas':>10}"
    )
    lines = [head]
    for name, r in results.items():
        lines.append(
            f"{name:<22}{r['top1_accuracy']:>9.4f}{r['top1_accuracy_retention']:>8.3f}"
            f"{r['top1_agreement']:>7.3f}{r['kl']:>8.4f}{r['perplexity']:>9.2f}"
            f"{r['measured_tokens_per_s']:>9.1f}{r['speedup']:>8.3f}"
            f"{r.get('predicted_over_measured', float('nan')):>10.3f}"
        )
    return "\n".join(lines)
