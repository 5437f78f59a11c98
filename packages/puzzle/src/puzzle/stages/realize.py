"""realize: one heterogeneous child per solution of the search -> realize/<child>/ (HF folder, DeciLM)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from effinfer_core.run_folder import inputs_hash
from puzzle.block_config import BlockConfig
from puzzle.stages.library import load_library

if TYPE_CHECKING:
    from puzzle.pipeline import Pipeline


def run(pipe: Pipeline, h: str) -> dict[str, Any]:
    from puzzle.realize import realize

    parent, _ = pipe.parent()
    library = load_library(pipe)
    for name, rec in pipe.solutions().items():
        key = child_key(pipe, rec)
        marker = f"realize/{name}/realize.json"
        if pipe.run.path(marker).exists() and pipe.run.read_json(marker).get("child_key") == key:
            pipe.log(f"[realize] {name}: done already")
            continue
        child = realize(parent, block_configs(pipe, rec), library)
        with pipe.run.atomic_dir(f"realize/{name}") as tmp:
            child.save_pretrained(tmp)
            (tmp / "realize.json").write_text(json.dumps({"child_key": key}, indent=2))
        pipe.log(f"[realize] {name}: {sum(p.numel() for p in child.parameters()) / 1e6:.2f} M parameters")
    return {}


def block_configs(pipe: Pipeline, record: Mapping[str, Any]) -> list[BlockConfig]:
    """The blocks of a solution record of search/solutions.json."""
    c = pipe.parent_config
    return [
        BlockConfig.from_dict(d, hidden_size=c.hidden_size, num_attention_heads=c.num_attention_heads)
        for d in record["blocks"]
    ]


def child_key(pipe: Pipeline, record: Mapping[str, Any]) -> str:
    """What a realised child depends on: the BLD-trained library and the child's blocks. Keyed per child (not by the
    stage's inputs) so that a changed search, one more target or baseline, realises and distils only the children
    that are new or different."""
    return inputs_hash({"bld": pipe.inputs_hash("bld"), "blocks": record["blocks"]})
