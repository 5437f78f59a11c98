"""The Puzzle pipeline: nine stages (`puzzle/stages/`), each reading the artifacts of earlier ones from a run folder.

    measure   per-block costs from probe models                    measure/costs.json
    library   block library initialised from the parent            library/lib/            (BlockLibrary.save)
    bld       blockwise local distillation of every variant        bld/lib/, bld/bld.json
    score     replace-1-block KL/LM loss/agreement per candidate   score/blocks/*.json, score/scores.json,
              + ShortGPT block influence of the parent             score/block_influence.json
    search    MIP per throughput target + the two baselines       search/problem.json, search/solutions.json
    realize   one heterogeneous child per solution                realize/<child>/ (HF folder, DeciLM)
    gkd       global distillation of each child                   gkd/<child>/ (HF folder) + gkd/<child>/gkd.json
    evaluate  parent and children side by side                     evaluate/evaluate.json
    export    Nemotron-NAS checkpoints for engines                 export/<child>/ (trust_remote_code folder)

A stage's inputs hash covers its config section, the content hash of the user's text sources when it reads data, and
the inputs hashes of the stages it reads (`STAGE_INPUTS`), so
changing e.g. the BLD budget re-runs bld and everything after it, and nothing before. The `measure` hash also holds
the device name (and the CPU thread count). Trainer settings are in no hash. Long stages cache per item, so a killed
stage resumes inside itself too. In a multi-process run (DDP/FSDP) every process runs the pipeline; only rank 0 runs
the stages other than BLD and GKD and writes; the other ranks join the fits and wait for rank 0 at the other stages.
"""

from __future__ import annotations

import importlib
import os
import time
from collections.abc import Sequence
from typing import Any

import torch

from benchmarks.yardstick import device_name
from effinfer_core.run_folder import inputs_hash
from puzzle.run_inputs import RunInputs, lightning_rank

# measure runs first: timings taken at the end of a long BLD + GKD process proved unreliable (one SmolLM2 child read
# 1.34x there, 1.48-1.53x in fresh processes), which is also why evaluate times its models in a subprocess
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
# the config sections (or "section.key") each stage's result depends on; which metric the MIP minimises belongs to
# the search, so a new objective does not re-score
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
# how a stage runs, not what it writes: a killed run resumed with more frequent checkpoints is the same run, and the
# machine checks only decide whether measure may finish (gkd.checkpoint_every predates this and stays hashed, so that
# distilled run folders keep their children)
UNHASHED = ("bld.checkpoint_every", "measure.check_machine", "measure.max_spread")


class StageNotReadyError(RuntimeError):
    """A stage was asked for before the stages it reads were done for this config."""


class Pipeline(RunInputs):
    """Runs the stages of one config in one run folder (module docstring); the shared inputs are `RunInputs`'."""

    # -- stage bookkeeping ---------------------------------------------------------------------------------------
    def inputs(self, stage: str, threads: int | None = None) -> dict[str, Any]:
        """Everything `stage`'s artifacts depend on (hashed into its manifest entry); `threads` stands in for this
        process's CPU thread count."""
        out: dict[str, Any] = {
            "parent": self.fingerprint,
            "config": self.stage_config(stage),
            "upstream": {s: self.inputs_hash(s) for s in STAGE_INPUTS[stage]},
        }
        if self.data_fingerprint is not None and "data" in STAGE_CONFIG[stage]:
            out["data"] = self.data_fingerprint  # the user's text by content: an edited file is new input
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
        from puzzle.stages.measure import threads_hint

        for up in STAGE_INPUTS[stage]:
            if not self.run.is_done(up, self.inputs_hash(up)):
                raise StageNotReadyError(
                    f"stage {stage!r} needs stage {up!r} done for this config; "
                    f"run `puzzle {up}` (or `puzzle run`) first{threads_hint(self)}"
                )

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
        start = time.perf_counter()
        self.log(f"[{stage}] running ({h}), {_elapsed(start - self.started)} into this run")
        # looked up at each call: a stage is the `run` function of its module in puzzle.stages
        info = importlib.import_module(f"puzzle.stages.{stage}").run(self, h) or {}
        if self.is_main:
            self.run.mark_done(stage, h, **info)
        self.log(f"[{stage}] done in {_elapsed(time.perf_counter() - start)}")
        return h

    def wait_for_rank_zero(self, stage: str, h: str, poll_s: float = 2.0) -> None:
        """Rank > 0: block until rank 0 has marked `stage` done with inputs hash `h`."""
        launcher = os.getppid()
        while not self.run.is_done(stage, h):
            if os.getppid() != launcher:  # rank 0 (Lightning's launcher) or torchrun's agent has exited
                raise RuntimeError(f"rank {lightning_rank()}: rank 0 stopped before stage {stage!r} was done")
            time.sleep(poll_s)

    def run_all(self, stages: Sequence[str] = STAGES) -> None:
        for stage in stages:
            self.run_stage(stage)


def _elapsed(seconds: float) -> str:
    return f"{seconds:.1f} s" if seconds < 90 else f"{seconds / 60:.1f} min"
