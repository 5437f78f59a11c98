"""`puzzle` command line: one subcommand per pipeline stage, `run` for all of them, `bench` for the harness tasks,
and three tools that read a run folder or a config.

    puzzle run configs/quick.yaml --run-dir runs/quick          # every stage; a rerun skips finished ones
    puzzle score --run-dir runs/quick                           # one stage (config read from the run folder)
    puzzle bench --profile quick                                # benchmark records (benchmarks.runner)
    puzzle gkd-scaling runs/quick puzzle-1.5x --tokens 524288   # held-out quality along one child's GKD
    puzzle child-quality runs/quick puzzle-1.5x --time          # some children now, before evaluate
    puzzle cost-model-check configs/quick.yaml --children 8     # both cost models against random timed children

Bad input (a parent that is not Llama-family, a search space that does not fit it, an unreachable throughput
target, a run folder of another parent, a malformed config, a text source that cannot be used) prints `error: ...` to stderr and exits with 2.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from effinfer_core.trainer import parse_devices
from puzzle.config import ConfigError, load_config, run_config_path
from puzzle.pipeline import STAGES, Pipeline, StageNotReadyError

if TYPE_CHECKING:
    from benchmarks.registry import Task

STAGE_HELP = {
    "library": "build the block library (every variant of every layer, initialised from the parent)",
    "bld": "blockwise local distillation of every library variant (Lightning)",
    "score": "replace-1-block scores (KL to the parent, LM loss, top-1 agreement) on held-out text (Persuasion, "
    "or data.score_on's score half)",
    "measure": "measure every subblock variant's prefill/decode time, params and memory for the scenario",
    "search": "MIP per throughput target, plus the uniform-shrink and ShortGPT baselines",
    "realize": "assemble each chosen architecture into a heterogeneous child model",
    "gkd": "global knowledge distillation of each child from the parent (Lightning)",
    "evaluate": "held-out perplexity / KL / top-1 and measured throughput of parent and children",
    "export": "write each child as a Nemotron-NAS (DeciLM) checkpoint loadable with trust_remote_code",
}


# tool subcommand -> its module (add_arguments, main) and help
TOOLS = {
    "gkd-scaling": ("puzzle.gkd_scaling", "held-out quality of one realised child as its GKD goes on"),
    "child-quality": (
        "puzzle.child_quality",
        "held-out quality (and with --time speed) of some children now",
    ),
    "cost-model-check": ("puzzle.cost_model_check", "both cost models against random children, timed"),
}


def _common(p: argparse.ArgumentParser, *, config_required: bool) -> None:
    if config_required:
        p.add_argument("config", help="run config, YAML or JSON (see configs/quick.yaml)")
    else:
        p.add_argument(
            "--config", help="run config (default: the config.json the run folder was started with)"
        )
    p.add_argument("--run-dir", help="run folder for artifacts (default: runs/<config name>)")
    p.add_argument(
        "--parent", help="parent HF folder (overrides the config; default: SmolLM2-135M from benchmarks.data)"
    )
    p.add_argument(
        "--data-dir", help="data root of benchmarks.data (default: $EFFINFER_DATA or ~/.cache/effinfer)"
    )
    p.add_argument(
        "--device", default=None, help="device for scoring, measuring and evaluation (auto|cpu|cuda)"
    )
    p.add_argument(
        "--threads", type=int, default=None, help="CPU threads for torch (timings need a fixed count)"
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    g = p.add_argument_group("Lightning (BLD and GKD)")
    g.add_argument("--accelerator", default=None, help="Lightning accelerator (auto|cpu|gpu)")
    g.add_argument(
        "--devices", type=parse_devices, default=None, help="Lightning devices (auto, a count, or 0,1)"
    )
    g.add_argument("--strategy", default=None, help="Lightning strategy (auto|ddp|fsdp|...)")
    g.add_argument("--num-nodes", type=int, default=None, help="Lightning number of nodes")
    g.add_argument(
        "--precision",
        default=None,
        help="Lightning precision (32-true|bf16-mixed|...), or auto: bf16-mixed on a bf16 GPU or an AMX CPU, "
        "32-true elsewhere",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="puzzle",
        description="Puzzle: distillation-based NAS for "
        "inference-optimised LLMs (block library, BLD, MIP search, GKD).",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser(
        "run",
        help="run every stage (finished stages are skipped)",
        description="Run the whole pipeline; a killed run resumes when run again.",
    )
    _common(run, config_required=True)
    run.add_argument("--until", choices=STAGES, help="stop after this stage")
    for stage in STAGES:
        p = sub.add_parser(stage, help=STAGE_HELP[stage], description=STAGE_HELP[stage])
        _common(p, config_required=False)
        if stage == "gkd":
            p.add_argument(
                "--children",
                nargs="+",
                metavar="CHILD",
                help="distil only these children now (e.g. one per machine); the stage is done when a "
                "later `puzzle gkd` finds every child distilled",
            )
        if stage == "search":
            p.add_argument(
                "--sweep",
                action="store_true",
                help="instead of the stage: the Pareto front over a range of runtime budgets (needs score and "
                "measure; writes search/sweep.json, search/pareto.md, search/pareto.png; marks nothing done)",
            )
            p.add_argument(
                "--budgets",
                default="0.40:0.90:0.02",
                metavar="START:STOP:STEP",
                help="with --sweep: runtime budgets as fractions of the parent's measured runtime (STOP included)",
            )
    for name, (module, help_text) in TOOLS.items():
        tool = importlib.import_module(module)
        p = sub.add_parser(name, help=help_text, description=(tool.__doc__ or help_text).split("\n")[0])
        tool.add_arguments(p)
    from benchmarks.bench_command import add_bench_command
    from puzzle.bench import TASK_NAMES

    bench = add_bench_command(
        sub,
        "puzzle",
        _bench_tasks,
        "The Puzzle tasks of the benchmark harness: results, report and a summary.",
        list(TASK_NAMES),
    )
    bench.add_argument(
        "--config",
        type=Path,
        default=None,
        help="run config for puzzle.austen instead of configs/<profile>.yaml (e.g. configs/cpu-long.yaml)",
    )
    return parser


def _pipeline(args: argparse.Namespace) -> Pipeline:
    run_dir = Path(args.run_dir) if args.run_dir else None
    config_path = run_config_path(run_dir, getattr(args, "config", None))
    if run_dir is None:
        run_dir = Path("runs") / Path(config_path).stem
    trainer = {k: getattr(args, k) for k in ("accelerator", "devices", "strategy", "num_nodes", "precision")}
    overrides = {
        "parent": args.parent,
        "data_dir": args.data_dir,
        "trainer": {k: v for k, v in trainer.items() if v is not None} or None,
    }
    config = load_config(config_path, **overrides)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    pipe = Pipeline(config, run_dir, device=args.device, progress=not args.no_progress)
    if pipe.is_main:  # the other ranks of a multi-process run write nothing
        pipe.run.write_json("config.json", config)
    return pipe


def _bench_tasks(args: argparse.Namespace) -> list[Task]:
    """The Puzzle tasks, with ``--config`` in place of configs/<profile>.yaml for puzzle.austen."""
    from puzzle.bench import tasks

    if args.config is not None and not args.config.exists():
        raise FileNotFoundError(f"--config {args.config} does not exist")
    return tasks(args.config)


def _known_errors() -> tuple[type[BaseException], ...]:
    from benchmarks.data import SourceMissingError
    from effinfer_core.run_folder import RunFolderMismatchError
    from puzzle.parent import NotLlamaFamilyError
    from puzzle.search import InfeasibleTargetError
    from puzzle.timing import MachineBusyError

    return (
        ConfigError,
        NotLlamaFamilyError,
        RunFolderMismatchError,
        InfeasibleTargetError,
        MachineBusyError,
        StageNotReadyError,
        SourceMissingError,
        FileNotFoundError,
        ValueError,
    )


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "bench":
            return args.func(args)
        if args.command in TOOLS:
            return importlib.import_module(TOOLS[args.command][0]).main(args)
        if getattr(args, "sweep", False):  # a bad range fails before the run folder is opened
            from puzzle.pareto import parse_budgets

            parse_budgets(args.budgets)
        pipe = _pipeline(args)
        if args.command == "run":
            stages = STAGES[: STAGES.index(args.until) + 1] if args.until else STAGES
            pipe.run_all(stages)
            if "evaluate" in stages:
                print(json.dumps(pipe.run.read_json("evaluate/evaluate.json"), indent=2))
        elif getattr(args, "children", None):
            pipe.require("gkd")
            from puzzle.stages.gkd import distil

            distil(pipe, args.children)
        elif getattr(args, "sweep", False):
            from puzzle.pareto import main as sweep_main

            sweep_main(pipe, args.budgets)
        else:
            pipe.run_stage(args.command)
    except _known_errors() as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
