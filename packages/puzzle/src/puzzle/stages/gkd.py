"""gkd: global distillation of each child from the parent (Lightning) -> gkd/<child>/ (HF folder + gkd.json)."""

from __future__ import annotations

import json
import shutil
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from effinfer_core.run_folder import inputs_hash
from puzzle.config import ConfigError
from puzzle.stages.realize import child_key

if TYPE_CHECKING:
    from puzzle.pipeline import Pipeline


def run(pipe: Pipeline, h: str) -> dict[str, Any]:
    distil(pipe, list(pipe.solutions()), h)
    return {}


def gkd_key(pipe: Pipeline, record: Mapping[str, Any]) -> str:
    """What a distilled child depends on: the realised child and the GKD settings."""
    return inputs_hash({"child": child_key(pipe, record), "config": pipe.stage_config("gkd")})


def distil(pipe: Pipeline, names: Sequence[str], h: str | None = None) -> None:
    """GKD of the children `names` (those not distilled already). `puzzle gkd --children` calls it for some
    children: the one that decides a comparison first, or one child per machine on a shared run folder; the stage
    is done when a later `puzzle gkd` finds every child distilled."""
    from puzzle.gkd import run_gkd

    h = h or pipe.inputs_hash("gkd")
    solutions = pipe.solutions()
    unknown = [n for n in names if n not in solutions]
    if unknown:
        raise ConfigError(f"no child {unknown} in search/solutions.json; children: {', '.join(solutions)}")
    parent, _ = pipe.parent()
    cfg = dict(pipe.config["gkd"])
    budget, every = cfg.pop("token_budget"), cfg.pop("checkpoint_every")
    for name in names:
        key = gkd_key(pipe, solutions[name])
        marker = f"gkd/{name}/gkd.json"
        done = pipe.run.read_json(marker) if pipe.run.path(marker).exists() else {}
        # inputs_hash: a child distilled by a run from before per-child keys, under this stage's exact inputs
        if done.get("child_key") == key or done.get("inputs_hash") == h:
            pipe.log(f"[gkd] {name}: done already")
            continue
        student = pipe.load_child("realize", name)
        ckpt_dir = pipe.run.stage_dir("gkd") / f".ckpt-{name}-{key}"
        metrics = run_gkd(
            student,
            parent,
            pipe.datamodule(),
            token_budget=budget,
            ckpt_dir=ckpt_dir,
            checkpoint_every=every,
            seed=pipe.config["seed"],
            trainer_kwargs=pipe.trainer_kwargs(f"[gkd] {name}"),
            **cfg,
        )
        if not pipe.is_main:  # every rank holds the same trained child; rank 0 saves it
            continue
        with pipe.run.atomic_dir(f"gkd/{name}") as tmp:
            student.cpu().save_pretrained(tmp)
            (tmp / "gkd.json").write_text(json.dumps({"child_key": key, **metrics}, indent=2))
        shutil.rmtree(ckpt_dir, ignore_errors=True)  # the trained child is saved; checkpoints are large
        pipe.log(
            f"[gkd] {name}: loss {metrics.get('first_loss', float('nan')):.4f} -> "
            f"{metrics.get('last_loss', float('nan')):.4f} in {metrics['steps']} steps"
        )
