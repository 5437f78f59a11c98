"""The one ``bench`` command: ``python -m benchmarks run``, ``geoad bench`` and ``puzzle bench`` are all this.

Task selection rejects a name that matches nothing (a typo runs nothing, loudly), a failing task is reported and the
others still run, the report is written whatever happened, and the last lines say where the report is and what it
found. Exit status: 0 all tasks ran, 1 a task (or a package's task list) failed, 2 bad arguments.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from benchmarks.registry import PROFILES, Task, select_tasks
from benchmarks.report import summary_lines, write_report
from benchmarks.runner import DEFAULT_RESULTS, TasksFailed, run_tasks

PROFILE_HELP = (
    "quick: minutes on a CPU (the main job); cpu: about 1.5 hours of larger CPU budgets (tasks without cpu budgets "
    "run quick); full: the papers' protocols, for GPU runners"
)


def add_bench_arguments(parser: argparse.ArgumentParser, task_names: list[str] | None = None) -> None:
    """The bench command's options; ``task_names`` (when known) go into ``--only``'s help."""
    known = f" ({', '.join(task_names)})" if task_names else ""
    parser.add_argument("--profile", choices=list(PROFILES), default="quick", help=PROFILE_HELP)
    parser.add_argument(
        "--only",
        nargs="+",
        default=None,
        metavar="TASK",
        help=f"task names or methods to run{known}; default all",
    )
    parser.add_argument("--results", type=Path, default=DEFAULT_RESULTS, help="JSONL results file (appended)")
    parser.add_argument(
        "--report-dir", type=Path, default=None, help="report.md and plots (default: beside results)"
    )
    parser.add_argument(
        "--work-root",
        type=Path,
        default=None,
        help="task artifacts (default: <results folder>/work/<profile>)",
    )
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="data cache (default: $EFFINFER_DATA or ~/.cache/effinfer)",
    )
    parser.add_argument(
        "--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda if present, else cpu)"
    )
    parser.add_argument(
        "--threads", type=int, default=None, help="CPU threads for torch (default: torch's choice)"
    )


def add_bench_command(
    sub: argparse._SubParsersAction,
    package: str,
    tasks: str | Callable[[argparse.Namespace], list[Task]],
    description: str,
    task_names: list[str] | None = None,
) -> argparse.ArgumentParser:
    """A package CLI's ``bench`` subcommand. ``tasks``: the module whose ``tasks()`` lists the package's tasks
    (imported when the command runs, so the CLI starts fast), or a function of the parsed arguments for a package
    whose tasks depend on its own options. Returns the parser, for those options."""
    parser = sub.add_parser(
        "bench",
        help=f"run {package}'s benchmark tasks with the repo's harness",
        description=f"{description} Same as `python -m benchmarks run --only {package}`.",
    )
    add_bench_arguments(parser, task_names)

    def listed(args: argparse.Namespace) -> list[Task]:
        return importlib.import_module(tasks).tasks() if isinstance(tasks, str) else tasks(args)

    parser.set_defaults(func=lambda args: run_bench(args, listed(args)))
    return parser


def run_bench(args: argparse.Namespace, tasks: list[Task], load_errors: Sequence[str] = ()) -> int:
    """Run the tasks ``args.only`` picks from ``tasks``, write the report, print a summary; the exit status."""
    try:
        chosen = select_tasks(tasks, args.only)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for message in load_errors:
        print(f"error: {message}", file=sys.stderr)
    status = 1 if load_errors else 0
    try:
        run_tasks(
            chosen,
            profile=args.profile,
            device=args.device,
            results_path=args.results,
            data_dir=args.data_dir,
            work_root=args.work_root,
            threads=args.threads,
        )
    except TasksFailed as err:
        print(f"error: {err}", file=sys.stderr)
        status = 1
    report = write_report(args.results, args.report_dir or args.results.parent)
    for line in summary_lines(args.results, [t.name for t in chosen]):
        print(line, file=sys.stderr)
    print(f"report: {report}")
    return status
