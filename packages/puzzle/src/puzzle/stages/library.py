"""library: every variant of every layer, initialised from the parent -> library/lib/."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from puzzle.library import BlockLibrary
    from puzzle.pipeline import Pipeline


def run(pipe: Pipeline, h: str) -> dict[str, Any]:
    from puzzle.library import build_library

    parent, _ = pipe.parent()
    dm = pipe.datamodule()
    torch.manual_seed(pipe.config["seed"])
    calib = list(dm.train_batches(pipe.config["library"]["calib_tokens"]))
    build_library(parent, pipe.space, calib).save(pipe.run.path("library/lib"))  # save() is atomic
    return {"calib_tokens": len(calib) * dm.tokens_per_batch}


def load_library(pipe: Pipeline, stage: str = "bld") -> BlockLibrary:
    """The library as the `stage` stage left it ("library": initialised, "bld": trained)."""
    from puzzle.library import BlockLibrary

    parent, _ = pipe.parent()
    return BlockLibrary.load(pipe.run.path(f"{stage}/lib"), parent)
