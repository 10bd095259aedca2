"""How much CPU other processes used while a section ran: the machine may be shared, and a busy neighbour
makes every timing of that section slower. Linux only (``/proc``); elsewhere nothing is reported.

Ours = this process and every child it has reaped (the measured commands, psql, luigid), plus the
PostgreSQL server (postmaster, its live children and those it reaped) and the moto server.
Theirs = all CPU time the machine spent busy, minus ours.
"""
from __future__ import annotations

import os
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
_MIN_SECONDS = 3.0  # shorter intervals are dominated by tick rounding and by server children exiting in between


@dataclass(frozen=True)
class CpuSample:
    at: float  # monotonic seconds
    machine_busy_s: float
    ours_s: float


def _machine_busy_s() -> float:
    """Busy CPU seconds of the whole machine since boot (all CPUs; idle and iowait excluded)."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (fields + [0] * 8)[:8]
    return (user + nice + system + irq + softirq + steal) / _TICK


def _process_s(pid: int, with_children: bool = True) -> float:
    """CPU seconds of ``pid`` (and of the children it has reaped); 0 if it is gone."""
    try:
        rest = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0.0
    ticks = int(rest[11]) + int(rest[12]) + (int(rest[13]) + int(rest[14]) if with_children else 0)
    return ticks / _TICK


def _children_of(parent: int) -> Iterable[int]:
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if int(entry.joinpath("stat").read_text().rsplit(")", 1)[1].split()[1]) == parent:
                    yield int(entry.name)
            except (OSError, IndexError, ValueError):
                continue


def _server_s(pid: int | None) -> float:
    if pid is None:
        return 0.0
    return _process_s(pid) + sum(_process_s(child, with_children=False) for child in _children_of(pid))


def server_cpu_s(pid: int | None) -> float:
    """CPU seconds a server (PostgreSQL's postmaster) and its children, live or reaped, have used so far."""
    return _server_s(pid)


def sample(server_pids: Iterable[int | None]) -> CpuSample | None:
    """A snapshot of the machine's and our CPU time, or None where /proc is missing."""
    if not Path("/proc/stat").exists():
        return None
    mine = os.times()
    ours = mine.user + mine.system + mine.children_user + mine.children_system
    return CpuSample(time.monotonic(), _machine_busy_s(), ours + sum(_server_s(p) for p in server_pids))


def others_share(before: CpuSample | None, after: CpuSample | None) -> dict[str, float] | None:
    """Other processes' CPU seconds between two samples, and their share of the machine's capacity
    (None when unknown or when the interval is too short to tell)."""
    if before is None or after is None or after.at - before.at < _MIN_SECONDS:
        return None
    capacity = (after.at - before.at) * (os.cpu_count() or 1)
    others = min(max((after.machine_busy_s - before.machine_busy_s) - (after.ours_s - before.ours_s), 0.0), capacity)
    return {"others_cpu_s": others, "others_share": others / capacity}
