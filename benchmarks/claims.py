"""The claims page: one row per method -- the paper's claim, the baseline it is judged against, what was measured and
whether the claim holds -- generated from the results file, never written by hand.

A task states its claim (``Task.claim``): the claim and its baseline in words, and a ``judge`` that reads the task's
newest records (and those of the tasks it names in ``uses``) and returns a :class:`Verdict`. Ratios are taken between
records of one run (same device, same profile), so they are side by side, never across machines.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

Records = list[dict[str, Any]]
VERDICTS = ("holds", "holds with an exception", "does not hold", "not run at this profile")


@dataclass(frozen=True)
class Verdict:
    verdict: str  # one of VERDICTS
    method: str  # the variant that stands for the method
    baseline: str  # the variant it is judged against
    quality: tuple[float | None, float | None]  # (method, baseline), the task's quality metric
    throughput: tuple[float | None, float | None]  # (method, baseline), the task's throughput metric
    frac_of_peak: float | None = None  # the method's achieved FLOP/s over the device's GEMM peak
    memory_mb: float | None = None  # the method's peak memory
    note: str = ""  # the exception, the profile's limits, ...

    def __post_init__(self) -> None:
        if self.verdict not in VERDICTS:
            raise ValueError(f"verdict must be one of {VERDICTS}, got {self.verdict!r}")


@dataclass(frozen=True)
class Claim:
    text: str  # the claim in one line
    baseline: str  # what it is judged against, in words
    judge: Callable[[Records], Verdict]  # newest records of this task and of `uses`
    uses: tuple[str, ...] = field(default_factory=tuple)  # other tasks whose records the judge reads


def record(records: Records, variant: str) -> dict[str, Any] | None:
    """The record of ``variant`` (None when the run did not make it)."""
    return next((r for r in records if r["variant"] == variant), None)


def pair(
    method: dict[str, Any] | None, baseline: dict[str, Any] | None, quality_key: str, throughput_key: str
) -> dict[str, Any]:
    """Quality, throughput, fraction of peak and memory of a method record beside a baseline record, for Verdict."""

    def get(r: dict[str, Any] | None, section: str, key: str) -> float | None:
        return None if r is None else r[section].get(key)

    return {
        "method": method["variant"] if method else "-",
        "baseline": baseline["variant"] if baseline else "-",
        "quality": (get(method, "quality", quality_key), get(baseline, "quality", quality_key)),
        "throughput": (get(method, "cost", throughput_key), get(baseline, "cost", throughput_key)),
        "frac_of_peak": get(method, "cost", "frac_of_peak"),
        "memory_mb": get(method, "cost", "peak_mem_mb"),
    }


def _ratio(a: float | None, b: float | None) -> str:
    return f"{a / b:.3g}x" if a is not None and b else "-"


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"


def claims_section(tasks_claims: dict[str, Claim], records: dict[str, Records]) -> list[str]:
    """Markdown lines of the claims page, one row per claimed task; ``records[task]``: one run's newest records of
    the task and of the tasks its claim ``uses``."""
    if not tasks_claims:
        return []
    lines = [
        "## Claims",
        "",
        "Each paper's claim, judged on this run's records (ratios between records of the same run and device). "
        "Quality retained = method / baseline quality; speed-up = method / baseline throughput.",
        "",
        "| task | claim | baseline | method vs baseline | quality (method / baseline) | quality retained "
        "| speed-up | % of peak | peak MiB | verdict |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for task, claim in sorted(tasks_claims.items()):
        mine = records.get(task, [])
        if not any(r["task"] == task for r in mine):
            v = Verdict("not run at this profile", "-", "-", (None, None), (None, None), note="no records")
        else:
            v = claim.judge(mine)
        peak = "-" if v.frac_of_peak is None else f"{v.frac_of_peak:.1%}"
        note = f" ({v.note})" if v.note else ""
        lines.append(
            f"| [{task}](#{task.replace('.', '')}) | {claim.text} | {claim.baseline} | {v.method} vs {v.baseline} "
            f"| {_num(v.quality[0])} / {_num(v.quality[1])} | {_ratio(*v.quality)} | {_ratio(*v.throughput)} "
            f"| {peak} | {_num(v.memory_mb)} | **{v.verdict}**{note} |"
        )
    return [*lines, ""]
