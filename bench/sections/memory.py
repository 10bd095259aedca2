"""Section ``memory``: the peak RSS of the load task (b) at two or more file sizes; it must not grow with them."""
from __future__ import annotations

from dataclasses import asdict

from .. import methods
from ..context import Bench
from ..measure import MB, rate_mb_s
from ..methods import LoadRun
from ..report import Section, SectionResult, Table, Target

LIMIT_MB = 150
SPREAD = 0.10


def run(bench: Bench) -> SectionResult:
    by_size: dict[int, LoadRun] = {}
    for size in bench.options.sizes_mib:
        data = bench.dataset(size)
        by_size[size] = methods.summarise(methods.task_runs(bench, data))
    startup_peak = max(r.max_rss_bytes for r in methods.empty_luigi_runs(bench))
    table = Table("Peak RSS of the load task (b), a whole `luigi` process, by file size",
                  ["file MiB", "rows", "seconds", "MB/s", "peak RSS MB"])
    for size, r in by_size.items():
        table.rows.append([size, r.rows, r.seconds, rate_mb_s(r.size_bytes, r.seconds), _mb(r)])
    table.notes = [
        f"an empty `luigi` command (imports and scheduling, no data) peaks at {startup_peak / MB:.1f} MB",
        "MB = 10^6 bytes; the measuring wrapper's floor is ~11 MB",
    ]
    peaks = [_mb(r) for r in by_size.values()]
    spread = (max(peaks) - min(peaks)) / min(peaks)
    return SectionResult(
        "memory",
        tables=[table],
        targets=[
            Target("(b) peak RSS spread across sizes", f"<= {SPREAD:.0%}", f"{spread:.1%}", spread <= SPREAD),
            Target("(b) peak RSS", f"< {LIMIT_MB} MB", f"{max(peaks):.1f} MB", max(peaks) < LIMIT_MB),
        ],
        data={"by_size_mib": {str(s): asdict(r) for s, r in by_size.items()}, "spread": spread,
              "empty_luigi_command_max_rss_bytes": startup_peak},
    )


def _mb(r: LoadRun) -> float:
    return (r.max_rss_bytes or 0) / MB


SECTION = Section("memory", "peak RSS of the load task at each of --sizes", run)
