"""bld: blockwise local distillation of every library variant (Lightning) -> bld/lib/, bld/bld.json."""

from __future__ import annotations

import shutil
from typing import TYPE_CHECKING, Any

from puzzle.stages.library import load_library

if TYPE_CHECKING:
    from puzzle.pipeline import Pipeline


def run(pipe: Pipeline, h: str) -> dict[str, Any]:
    from puzzle.bld import run_bld

    parent, _ = pipe.parent()
    cfg = dict(pipe.config["bld"])
    mode, budget, every = cfg.pop("mode"), cfg.pop("token_budget"), cfg.pop("checkpoint_every")
    library, metrics = run_bld(
        parent,
        load_library(pipe, "library"),
        pipe.datamodule(),
        mode=mode,
        token_budget=budget,
        ckpt_dir=pipe.run.stage_dir("bld") / f"ckpt-{h}",
        ckpt_every=every,
        trainer_kwargs=pipe.trainer_kwargs("[bld]"),
        **cfg,
    )
    if pipe.is_main:  # every rank holds the same trained library
        library.save(pipe.run.path("bld/lib"))
        pipe.run.write_json("bld/bld.json", metrics)
        # the library is saved; free the disk
        shutil.rmtree(pipe.run.path(f"bld/ckpt-{h}"), ignore_errors=True)
    return {}
