"""Is the machine free enough to time things on? Timings taken while other processes hold the cores that a
measurement needs come out wrong, not just noisy: on a 2-core VM with one core kept busy elsewhere, a model run with
two OpenMP threads measured 45x slower than on the idle machine (each parallel region waits for the descheduled
thread). `sample_load` says how many cores other processes keep busy right now; `MachineLoad.busy` says whether that
leaves too few for the threads a measurement will use.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

# other processes may keep this much of a core busy beyond the cores left free before timings count as distorted
# (a shell, an editor, the kernel's own threads)
SLACK_CORES = 0.35


@dataclass(frozen=True)
class MachineLoad:
    cores: int  # CPUs this process may run on
    threads: int  # threads the measurement will use
    others: float  # cores kept busy by other processes during the sample (load average - 1 where not sampled)
    how: str  # "sampled over 0.5 s" or "1-minute load average"

    @property
    def free(self) -> float:
        return max(0.0, self.cores - self.others)

    @property
    def busy(self) -> bool:
        """Other processes leave fewer free cores than `threads` (with `SLACK_CORES` to spare)."""
        return self.others > self.cores - self.threads + SLACK_CORES

    def describe(self) -> str:
        state = "busy" if self.busy else "free enough"
        return (
            f"machine {state}: other processes keep {self.others:.1f} of {self.cores} cores busy ({self.how}); "
            f"timings use {self.threads} thread{'s' * (self.threads != 1)}"
        )

    def advice(self) -> str:
        """What to do when `busy`."""
        fit = int(self.free + SLACK_CORES)
        fewer = f"run with --threads {fit} (what is free), " if 1 <= fit < self.threads else ""
        return f"{fewer}stop the other jobs, or measure on an idle machine"


def _cpu_jiffies() -> tuple[int, int] | None:
    """(busy jiffies of the whole machine, of this process) from /proc, or None where there is no /proc."""
    try:
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
        with open("/proc/self/stat") as f:
            own = f.read().rsplit(")", 1)[1].split()
    except (OSError, ValueError, IndexError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    guest = sum(fields[8:10]) if len(fields) > 9 else 0  # already counted in user/nice
    return sum(fields) - idle - guest, int(own[11]) + int(own[12])  # utime + stime


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def sample_load(threads: int, seconds: float = 0.5) -> MachineLoad:
    """How busy the other processes keep the machine now: /proc/stat's busy time minus this process's over
    `seconds` (Linux); elsewhere the 1-minute load average minus this process."""
    cores = available_cores()
    first = _cpu_jiffies()
    if first is None:
        try:
            others = max(0.0, os.getloadavg()[0] - 1.0)
        except OSError:
            others = 0.0
        return MachineLoad(cores, threads, others, "1-minute load average")
    start = time.monotonic()
    time.sleep(seconds)
    second = _cpu_jiffies()
    elapsed = time.monotonic() - start
    assert second is not None  # /proc was readable a moment ago
    hz = os.sysconf("SC_CLK_TCK")
    machine, own = second[0] - first[0], second[1] - first[1]
    # /proc/stat counts every CPU of the machine: scale to the CPUs this process may use
    share = cores / (os.cpu_count() or cores)
    others = max(0.0, (machine - own) / hz / elapsed) * share
    return MachineLoad(cores, threads, others, f"sampled over {seconds:g} s")
