"""Turn a results file into a Markdown report with one table and one accuracy-vs-throughput plot per task."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

from benchmarks.claims import Claim, claims_section
from benchmarks.registry import discover_tasks
from benchmarks.results import read_records
from effinfer_core.atomic import write_atomic

# (cost key, column title, format); a column is shown when any record of the task has the key.
COST_COLUMNS = [
    ("samples_per_s", "samples/s", "{:.4g}"),
    ("tokens_per_s", "tokens/s", "{:.4g}"),
    ("latency_p50_ms", "p50 ms", "{:.3g}"),
    ("latency_p90_ms", "p90 ms", "{:.3g}"),
    ("latency_max_ms", "max ms", "{:.3g}"),
    ("peak_mem_mb", "peak MiB", "{:.4g}"),
    ("flops_per_sample", "GFLOP/sample", "{:.4g}"),
    ("params", "params (M)", "{:.4g}"),
    ("frac_of_peak", "% of peak", "{:.2%}"),
    ("dtype", "dtype", "{}"),
]
_SCALE = {"flops_per_sample": 1e-9, "params": 1e-6}
# (extra key, column title, format): what a method records beside quality and cost that a reader must see, shown
# when any record of the task has it (Puzzle: measured speed-up against its target, and the cost model's error)
EXTRA_COLUMNS = [
    ("speedup", "speed-up", "{:.3f}x"),
    ("target_speedup", "target", "{:.3g}x"),
    ("predicted_over_measured", "pred/meas", "{:.3f}"),
    ("missed_target", "missed target", "{}"),
]


def latest_records(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Keep the newest record per (task, variant, data, device): a rerun replaces, it does not duplicate."""
    latest: dict[tuple, dict[str, Any]] = {}
    for r in records:
        latest[(r["task"], r["variant"], r["data"], r["device"].get("name"))] = r
    return list(latest.values())


def pareto_front(points: list[tuple[float, float]], higher_is_better: bool = True) -> list[int]:
    """Indices of points not dominated in (throughput up, quality up or down per ``higher_is_better``)."""
    sign = 1 if higher_is_better else -1
    front = []
    for i, (x, y) in enumerate(points):
        dominated = any(
            xo >= x and sign * yo >= sign * y and (xo > x or sign * yo > sign * y)
            for j, (xo, yo) in enumerate(points)
            if j != i
        )
        if not dominated:
            front.append(i)
    return front


def _fmt(value: Any, fmt: str, key: str) -> str:
    if value is None:
        return ""
    if isinstance(value, int | float) and key in _SCALE:
        value = value * _SCALE[key]
    try:
        return fmt.format(value)
    except (ValueError, TypeError):
        return str(value)


def _table(records: list[dict[str, Any]]) -> list[str]:
    quality_keys = sorted({k for r in records for k in r["quality"]})
    cost_cols = [c for c in COST_COLUMNS if any(c[0] in r["cost"] for r in records)]
    extra_cols = [c for c in EXTRA_COLUMNS if any(r["extra"].get(c[0]) is not None for r in records)]
    head = [
        "variant",
        "data",
        *quality_keys,
        *[c[1] for c in cost_cols],
        *[c[1] for c in extra_cols],
        "device",
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in records:
        cells = [r["variant"], r["data"]]
        cells += [_fmt(r["quality"].get(k), "{:.4g}", k) for k in quality_keys]
        cells += [_fmt(r["cost"].get(key), fmt, key) for key, _, fmt in cost_cols]
        cells += [_extra_cell(r["extra"], key, fmt) for key, _, fmt in extra_cols]
        cells.append(f"{r['device'].get('name', '')} ({r['device'].get('threads', '?')} thr)")
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    return lines


def _extra_cell(extra: dict[str, Any], key: str, fmt: str) -> str:
    value = extra.get(key)
    if key == "missed_target" and value is not None:
        return "**MISSED**" if value else "no"
    return _fmt(value, fmt, key)


def missed_targets(records: list[dict[str, Any]]) -> list[str]:
    """One warning line per record whose measured speed-up fell short of its target beyond what its method's
    cost model promises (the method sets ``extra.missed_target``)."""
    return [
        f"**Warning: {r['variant']} missed its speed target**: measured {r['extra']['speedup']:.2f}x against "
        f"{r['extra']['target_speedup']:.2f}x (predicted/measured {r['extra'].get('predicted_over_measured', float('nan')):.2f}); "
        "its costs were probably timed on a busy machine. Do not take it for a child at its target."
        for r in records
        if r["extra"].get("missed_target")
    ]


def _axes(record: dict[str, Any]) -> tuple:
    a = record["extra"].get("axes", {})
    return a.get("quality_key"), a.get("throughput_key", "samples_per_s"), a.get("higher_is_better", True)


def _companions(
    task: str, records: list[dict[str, Any]], everything: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """Other tasks' records on the same axes, data and device (e.g. GeoAD beside its baselines on the same split),
    so one plot shows the whole accuracy-vs-cost picture; records of other splits never share a plot."""
    first = records[0]
    return [
        r
        for r in everything
        if r["task"] != task
        and r["data"] == first["data"]
        and _axes(r) == _axes(first)
        and r["device"].get("name") == first["device"].get("name")
    ]


def _plot(task: str, records: list[dict[str, Any]], out: Path, companions: list[dict[str, Any]]) -> bool:
    axes = records[0]["extra"].get("axes", {})
    qkey, tkey, higher = _axes(records[0])
    pts = [
        (r["cost"].get(tkey), r["quality"].get(qkey), r["variant"], r["task"]) for r in records + companions
    ]
    pts = [p for p in pts if p[0] is not None and p[1] is not None]
    if not qkey or not pts:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    front = set(pareto_front([(x, y) for x, y, _, _ in pts], higher))
    colours = {name: f"C{i}" for i, name in enumerate(dict.fromkeys(t for *_, t in pts))}
    fig, ax = plt.subplots(figsize=(6.5, 4.5), dpi=120)
    for name, colour in colours.items():
        mine = [(i, p) for i, p in enumerate(pts) if p[3] == name]
        ax.scatter([p[0] for _, p in mine], [p[1] for _, p in mine], s=35, color=colour, zorder=3, label=name)
        for _, (x, y, variant, _) in mine:
            ax.annotate(variant, (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7)
    fx = sorted((pts[i][0], pts[i][1]) for i in front)
    ax.plot(
        [p[0] for p in fx],
        [p[1] for p in fx],
        "--*",
        color="tab:red",
        lw=1,
        ms=10,
        zorder=4,
        label="Pareto front",
    )
    unit = "tokens/s" if tkey == "tokens_per_s" else "samples/s"
    ax.set_xscale("log")
    ax.set_xlabel(f"throughput ({unit}, log scale) — higher is faster")
    ax.set_ylabel(axes.get("quality_label", qkey) + ("" if higher else " (lower is better)"))
    device = records[0]["device"].get("name", "")
    ax.set_title(f"{task}\n{device}", fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    tmp = out.with_name(f".{out.name}.tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    tmp.replace(out)
    return True


def run_records(latest: list[dict[str, Any]], task: str) -> list[dict[str, Any]]:
    """The task's newest records that share the device and profile of its very newest one: one run's records, so
    that ratios between them are measured side by side."""
    mine = [r for r in latest if r["task"] == task]
    if not mine:
        return []
    newest = max(mine, key=lambda r: r["time"])
    same = (newest["device"].get("name"), newest["extra"].get("profile"))
    return [r for r in latest if (r["device"].get("name"), r["extra"].get("profile")) == same]


def _claims(latest: list[dict[str, Any]], claims: dict[str, Claim] | None) -> list[str]:
    if claims is None:
        # the tasks know their claims; the report knows only records
        claims = {t.name: t.claim for t in discover_tasks()[0] if t.claim is not None}
    present = {r["task"] for r in latest}
    claims = {task: claim for task, claim in claims.items() if task in present}
    return claims_section(
        claims,
        {
            task: [r for r in run_records(latest, task) if r["task"] in (task, *c.uses)]
            for task, c in claims.items()
        },
    )


def write_report(results_path: Path, out_dir: Path, claims: dict[str, Claim] | None = None) -> Path:
    """Write ``out_dir/report.md`` (the claims page first: ``claims`` by task name, default the installed tasks')
    and one ``<task>.png`` per task; returns the report's path."""
    records = read_records(results_path)
    if not records:
        raise ValueError(
            f"{results_path} holds no results; run `python -m benchmarks run --profile quick` first"
        )
    out_dir.mkdir(parents=True, exist_ok=True)
    latest = latest_records(records)
    by_task: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in latest:
        by_task[r["task"]].append(r)

    lines = ["# Benchmark report", "", f"Results: `{results_path}` ({len(records)} records).", ""]
    lines += _claims(latest, claims)
    calib = by_task.pop("calibration", [])
    if calib:
        lines += [
            "## Device calibration (measured square-GEMM peak)",
            "",
            "| device | threads | fp32 TFLOP/s | bf16 TFLOP/s | time |",
            "|---|---|---|---|---|",
        ]
        for r in calib:
            c = r["cost"]
            lines.append(
                f"| {c.get('device_name')} | {r['device'].get('threads', '')} | {c.get('fp32_tflops')} | "
                f"{c.get('bf16_tflops') or 'n/a'} | {r['time']} |"
            )
        lines.append("")
    for task, recs in sorted(by_task.items()):
        lines += [f"## {task}", ""]
        if _plot(task, recs, out_dir / f"{task}.png", _companions(task, recs, latest)):
            lines += [f"![{task}]({task}.png)", ""]
        lines += _table(recs) + [""]
        warnings = missed_targets(recs)
        if warnings:
            lines += [*warnings, ""]
    lines += [
        "How to read: each row is one variant measured with the shared yardstick (benchmarks/yardstick.py): "
        "latency is one synchronised call on one batch after warm-up; samples/s = batch x calls / time; "
        "% of peak = achieved FLOP/s over the device's GEMM peak measured in the same run. "
        "A task's plot also shows other tasks' records on the same axes, data and device (e.g. GeoAD beside its "
        "baselines on the same split); red stars joined by a dashed line are the Pareto front (nothing else is both faster and better).",
        "",
    ]
    report = out_dir / "report.md"
    write_atomic(report, "\n".join(lines) + "\n")
    return report


def summary_lines(results_path: Path, task_names: list[str]) -> list[str]:
    """What a run found, one line per task: its best and its fastest variant (newest record of each)."""
    latest = [r for r in latest_records(read_records(results_path)) if r["task"] in task_names]
    lines = []
    for task in task_names:
        recs = [r for r in latest if r["task"] == task]
        if not recs:
            lines.append(f"{task}: no records")
            continue
        qkey, tkey, higher = _axes(recs[0])
        rated = [r for r in recs if r["quality"].get(qkey) is not None]
        timed = [r for r in recs if r["cost"].get(tkey) is not None]
        parts = [f"{len(recs)} variants"]
        if rated:
            best = (max if higher else min)(rated, key=lambda r: r["quality"][qkey])
            parts.append(f"best {qkey} {best['quality'][qkey]:.4g} ({best['variant']})")
        if timed:
            fastest = max(timed, key=lambda r: r["cost"][tkey])
            parts.append(f"fastest {fastest['cost'][tkey]:.4g} {tkey} ({fastest['variant']})")
        lines.append(f"{task}: " + ", ".join(parts))
    return lines
