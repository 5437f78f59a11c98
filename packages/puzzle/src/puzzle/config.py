"""A Puzzle run config: the defaults, the checks of every value, and the throughput targets.

Config (YAML or JSON; everything optional except what differs from `DEFAULTS`): see configs/quick.yaml; a file may
start from another with `extends: cpu.yaml` (see configs/cpu-long.yaml). Merging and the reading of YAML's numbers
are `effinfer_core.config`'s; `search_space` is taken whole from a file (`SearchSpace` checks its keys).
Targets: "1.5x" = 1.5 times the parent's measured tokens/s in the scenario; a number = absolute tokens/s.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from effinfer_core import config as core_config
from effinfer_core.config import ConfigError

if TYPE_CHECKING:
    from puzzle.search import ScoreSense

__all__ = [
    "DEFAULTS",
    "MATCH_BY",
    "OBJECTIVES",
    "ConfigError",
    "load_config",
    "parse_target",
    "run_config_path",
    "validate",
]

DEFAULTS: dict[str, Any] = {
    "parent": None,  # a local HF Llama-family folder; None = benchmarks.data.smollm2_dir()
    "data_dir": None,
    "seed": 0,
    # train / heldout: the user's text (text_sources.py); left out = Austen, and then left out of the config too, so
    # the stage hashes of Austen runs are what they were before these keys. score_on: the held-out set whose score
    # half the search scores on; null = the first one the file names (recorded by name: JSON sorts the keys)
    "data": {"seq_len": 256, "batch_size": 8, "train": None, "heldout": {}, "score_on": None},
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
    # in its own probe, blocks added up) or "blocks" (each block of the space in its own probe; probes.py).
    # check_machine: stop (stages/measure.py) when other processes hold the cores the timing threads need, or when
    # the parent's timings disagree: their upper quartile over their lower beyond max_spread
    "measure": {"warmup": 1, "iters": 5, "probes": "subblocks", "check_machine": True, "max_spread": 1.3},
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

OBJECTIVES: dict[str, ScoreSense] = {"kl": "min", "lm_loss": "min", "top1_agreement": "max"}
MATCH_BY = ("predicted", "measured")  # search.match_by: how a Puzzle twin is put at a baseline's throughput


REPLACE_WHOLE = (
    "search_space",
    "heldout",
)  # taken whole from the file that sets them (their owners check keys)


def load_config(source: str | Path | Mapping[str, Any] | None = None, **overrides: Any) -> dict[str, Any]:
    """DEFAULTS updated by a YAML/JSON file (or mapping) and then by `overrides` (None values ignored), checked.

    A file may name a base config with `extends: other.yaml`; its own keys override the base's (mappings merge key
    by key, as over DEFAULTS). The paths of `data.train` and `data.heldout` are made absolute: relative to the file
    that names them (to the working directory for a mapping), so a run folder's config.json works from anywhere.
    """
    if source is None or isinstance(source, Mapping):
        layers = [_absolute_sources(source or {}, Path.cwd())]
    else:
        layers = [_absolute_sources(layer, folder) for folder, layer in _file_layers(Path(source))]
    config = core_config.load_config(None, DEFAULTS)
    for layer in [*layers, {k: v for k, v in overrides.items() if v is not None}]:
        config = core_config.merge(config, layer, whole=frozenset(REPLACE_WHOLE))
    data = config["data"]
    if data["heldout"] and data["score_on"] is None and isinstance(data["heldout"], Mapping):
        data["score_on"] = next(iter(data["heldout"]))
    for key, empty in (("train", None), ("heldout", {}), ("score_on", None)):
        if data[key] == empty:
            del data[key]
    validate(config)
    return config


def _file_layers(path: Path) -> list[tuple[Path, Mapping[str, Any]]]:
    """(folder of the file, its keys) for a config file and each file it `extends`, base first."""
    layers = core_config.config_layers(path)  # reads, checks and detects cycles; the folders are found below
    folders, current = [], path.resolve()
    for _ in layers:
        folders.append(current.parent)
        text = current.read_text()
        own = json.loads(text) if current.suffix == ".json" else yaml.safe_load(text) or {}
        if own.get("extends") is None:
            break
        current = (current.parent / own["extends"]).resolve()
    return list(zip(reversed(folders), layers, strict=True))


def _absolute_sources(layer: Mapping[str, Any], folder: Path) -> Mapping[str, Any]:
    """`layer` with the relative paths of its data sources joined to `folder`."""
    data = layer.get("data")
    if not isinstance(data, Mapping):
        return layer

    def absolute(spec: Any) -> Any:
        if isinstance(spec, str):
            return str(folder / Path(spec).expanduser())
        if isinstance(spec, Mapping) and isinstance(spec.get("path"), str):
            return {**spec, "path": str(folder / Path(spec["path"]).expanduser())}
        return spec  # malformed: validate says what is wrong

    data = dict(data)
    if "train" in data:
        data["train"] = absolute(data["train"])
    if isinstance(data.get("heldout"), Mapping):
        data["heldout"] = {name: absolute(spec) for name, spec in data["heldout"].items()}
    return {**layer, "data": data}


def validate(config: Mapping[str, Any]) -> None:
    """Raise ConfigError for the first value a stage could not use (the keys were checked by the merge)."""
    from puzzle.costs import Scenario
    from puzzle.probes import PROBES

    if not config["targets"]:
        raise ConfigError("targets is empty: give at least one throughput target, e.g. ['1.5x'] or [250]")
    if config["bld"]["mode"] not in ("decoupled", "coupled"):
        raise ConfigError(f"bld.mode must be 'decoupled' or 'coupled', got {config['bld']['mode']!r}")
    if config["measure"]["probes"] not in PROBES:
        raise ConfigError(
            f"measure.probes must be one of {list(PROBES)}, got {config['measure']['probes']!r}"
        )
    if not config["measure"]["max_spread"] > 1:
        raise ConfigError(
            f"measure.max_spread must be > 1 (the parent's slow-quartile over fast-quartile timing), "
            f"got {config['measure']['max_spread']!r}"
        )
    if config["score"]["objective"] not in OBJECTIVES:
        raise ConfigError(
            f"score.objective must be one of {sorted(OBJECTIVES)}, got {config['score']['objective']!r}"
        )
    unknown = set(config["baselines"]) - {"uniform", "shortgpt"}
    if unknown:
        raise ConfigError(f"unknown baselines {sorted(unknown)}; choose from 'uniform', 'shortgpt'")
    search = config["search"]
    exclude = search["exclude_blocks"]
    if not isinstance(exclude, list) or not all(isinstance(x, str) for x in exclude):
        raise ConfigError(
            f"search.exclude_blocks must be a list of block-name patterns such as 'linear+*', got {exclude!r}"
        )
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
    from puzzle.text_sources import parse_sources

    parse_sources(config["data"])  # the shape of data.train / data.heldout; the files are read by RunInputs
    Scenario(**config["scenario"])  # validates
    for t in config["targets"]:
        parse_target(t)


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
