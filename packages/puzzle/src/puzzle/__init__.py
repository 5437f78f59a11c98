"""Puzzle (NVIDIA, 2024): distillation-based NAS for inference-optimised LLMs.

A parent Llama-family model becomes a heterogeneous child: a library of cheaper block variants per layer, trained by
blockwise local distillation (BLD), scored by replacing one block at a time, costed by measurement, chosen by a MIP
per throughput target, assembled, distilled globally (GKD) and exported as a Nemotron-NAS (DeciLM) checkpoint.

    from puzzle import Pipeline, load_config
    Pipeline(load_config("packages/puzzle/configs/quick.yaml"), "runs/quick").run_all()

The names below are imported on first use (PEP 562), so ``import puzzle`` does not load torch or Lightning.
"""

from __future__ import annotations

import importlib
from typing import Any

# public name -> the module that defines it
_API = {
    # configs and the pipeline
    "DEFAULTS": "puzzle.config",
    "ConfigError": "puzzle.config",
    "load_config": "puzzle.config",
    "parse_target": "puzzle.config",
    "Pipeline": "puzzle.pipeline",
    "STAGES": "puzzle.pipeline",
    "StageNotReadyError": "puzzle.pipeline",
    # the model and its blocks
    "AttentionConfig": "puzzle.block_config",
    "BlockConfig": "puzzle.block_config",
    "FFNConfig": "puzzle.block_config",
    "DeciLMConfig": "puzzle.configuration_decilm",
    "DeciLMForCausalLM": "puzzle.modeling_decilm",
    "NotLlamaFamilyError": "puzzle.parent",
    "load_parent": "puzzle.parent",
    # the steps, usable on their own (`realize` stays in puzzle.realize: the name is that module's too)
    "SearchSpace": "puzzle.library",
    "BlockLibrary": "puzzle.library",
    "build_library": "puzzle.library",
    "run_bld": "puzzle.bld",
    "score_candidates": "puzzle.scoring",
    "Scenario": "puzzle.costs",
    "CostTable": "puzzle.costs",
    "build_cost_table": "puzzle.probes",
    "SearchProblem": "puzzle.search",
    "Solution": "puzzle.search",
    "InfeasibleTargetError": "puzzle.search",
    "solve": "puzzle.search",
    "run_gkd": "puzzle.gkd",
    "evaluate_models": "puzzle.evaluate",
    "export_child": "puzzle.export",
}

__all__ = sorted(_API)


def __getattr__(name: str) -> Any:
    module = _API.get(name)
    if module is None:
        raise AttributeError(f"module 'puzzle' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_API})
