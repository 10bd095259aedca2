"""Section ``workers``: a daily backfill under a real luigid with 1, 2, 4 workers, and luigid handed a
3,650-task range at once (time to schedule it, luigid's memory).

Each worker count gets a fresh luigid (no state carried over), a fresh table and the same S3 objects.
The time each partition spent inside its transaction comes from the marker rows (``finished_at -
started_at``); whatever the workers spent outside transactions is scheduling and per-task overhead.
"""
from __future__ import annotations

import concurrent.futures
import datetime
import os
import time
from collections import Counter
from dataclasses import asdict, dataclass

from psycopg2 import sql

from luigi_pipelines import sql as q
from luigi_pipelines.partitions import TableName

from ..context import Bench
from ..data import MIB, Dataset
from ..measure import MB, BenchError
from ..methods import load_range
from ..report import Section, SectionResult, Table, Target
from ..stack import MARKER, SCHEMA

NO_DATA_START = datetime.date(1990, 1, 1)  # no objects exist for these dates: every load waits on missing data
MISSING_DATA_RC = 20  # luigi.cfg [retcode] missing_data

_MARKER_TOTALS = sql.SQL(
    "SELECT count(*), coalesce(sum(rows_loaded), 0), coalesce(sum(bytes_loaded), 0),"
    " coalesce(sum(extract(epoch FROM finished_at - started_at)), 0)::float8 FROM {} WHERE target_table = %s"
)


@dataclass(frozen=True)
class Backfill:
    """One backfill run: its wall time and what the marker rows say was done."""

    workers: int
    wall_s: float
    empty_s: float  # the same command over an empty range, against the same luigid
    partitions: int
    rows: int
    bytes: int
    in_transaction_s: float  # sum over partitions of finished_at - started_at
    worker_cpu_s: float  # CPU seconds of the luigi command and the worker processes it forked
    processes: int = 1  # separate `luigi` commands sharing the range (workers = processes x workers each)

    @property
    def label(self) -> str:
        return str(self.workers) if self.processes == 1 else f"{self.processes} processes x 1"

    @property
    def mb_s(self) -> float:
        return self.bytes / MB / self.wall_s

    @property
    def overhead_per_partition_s(self) -> float:
        """Worker-seconds per partition spent outside partition transactions (beyond one empty command)."""
        return max((self.wall_s - self.empty_s) * self.workers - self.in_transaction_s, 0.0) / self.partitions


def backfill(bench: Bench, workers: int, data: list[Dataset]) -> Backfill:
    stack, timeout = bench.stack, bench.options.timeout_s
    table = stack.create_transaction_table(f"backfill_w{workers}")
    config = stack.config_file(f"backfill-w{workers}", str(table))
    start, days = data[0].date, len(data)
    bench.log(f"backfill of {days} partitions with {workers} worker(s) under luigid")
    with stack.luigid() as luigid:
        empty = stack.luigi([*load_range(start, 0), *luigid.scheduler_args], config, timeout)
        full = stack.luigi([*load_range(start, days, workers=workers), *luigid.scheduler_args],
                           config, timeout)
    return _result(bench, table, data, workers, full.wall_s, empty.wall_s, full.cpu_s, full.tail())


def backfill_processes(bench: Bench, processes: int, data: list[Dataset]) -> Backfill:
    """The same backfill by ``processes`` separate `luigi` commands of one worker each (what `make workers N=`
    runs): no fork per task, each process builds its S3 client once."""
    stack, timeout = bench.stack, bench.options.timeout_s
    table = stack.create_transaction_table(f"backfill_p{processes}")
    config = stack.config_file(f"backfill-p{processes}", str(table))
    start, days = data[0].date, len(data)
    bench.log(f"backfill of {days} partitions by {processes} processes of 1 worker under luigid")
    with stack.luigid() as luigid:
        empty = stack.luigi([*load_range(start, 0), *luigid.scheduler_args], config, timeout)
        argv = [*load_range(start, days), *luigid.scheduler_args]
        started = time.monotonic()
        with concurrent.futures.ThreadPoolExecutor(processes) as pool:
            # a process whose dates all ran elsewhere exits 25 or 10 (luigi's not_run / already_running)
            runs = list(pool.map(lambda _: stack.luigi(argv, config, timeout, ok_codes=(0, 10, 25)), range(processes)))
        wall = time.monotonic() - started
    return _result(bench, table, data, processes, wall, empty.wall_s, sum(r.cpu_s for r in runs),
                   runs[-1].tail(), processes=processes)


def _result(bench: Bench, table: TableName, data: list[Dataset], workers: int, wall: float, empty: float,
            cpu: float, tail: str, processes: int = 1) -> Backfill:
    stack = bench.stack
    count, rows, size, busy = stack.query(_MARKER_TOTALS.format(q.table_ident(MARKER)), (str(table),))[0]
    stack.drop_table(table)
    if count != len(data) or rows != sum(d.rows for d in data):
        raise BenchError(f"backfill with {workers} workers: {count} partitions, {rows} rows:\n{tail}")
    return Backfill(workers, wall, empty, int(count), int(rows), int(size), float(busy), cpu, processes)


@dataclass(frozen=True)
class Scheduling:
    """luigid handed one RangeDaily of ``days`` incomplete dates whose S3 data is missing."""

    days: int
    measured: bool  # False: extrapolated from a smaller measured range
    wall_s: float
    empty_s: float
    pending: dict[str, int]
    luigid_rss_before_kib: int
    luigid_rss_after_kib: int
    luigid_peak_kib: int
    worker_peak_rss_bytes: int

    @property
    def scheduling_s(self) -> float:
        return self.wall_s - self.empty_s

    def extrapolated(self, days: int) -> Scheduling:
        """The same costs scaled linearly to ``days`` dates (time and luigid's growth per task)."""
        scale = days / self.days
        growth = (self.luigid_rss_after_kib - self.luigid_rss_before_kib) * scale
        return Scheduling(days, False, self.empty_s + self.scheduling_s * scale, self.empty_s,
                          {k: round(v * scale) if v > 1 else v for k, v in self.pending.items()},
                          self.luigid_rss_before_kib, round(self.luigid_rss_before_kib + growth),
                          round(self.luigid_rss_before_kib + growth), self.worker_peak_rss_bytes)


def schedule_range(bench: Bench, start: datetime.date, days: int) -> Scheduling:
    """Hand luigid ``days`` loads at once. None can run (their S3 data is missing), so the command measures
    scheduling alone: per date a complete() check, the S3 probe of its dependency, and the RPCs."""
    stack, timeout = bench.stack, bench.options.timeout_s
    config = stack.config_file("schedule", f"{SCHEMA}.schedule")
    bench.log(f"luigid: scheduling a {days}-day RangeDaily whose data is missing")
    with stack.luigid() as luigid:
        empty = stack.luigi([*load_range(start, 0), *luigid.scheduler_args], config, timeout)
        before = luigid.memory_kib()
        run = stack.luigi([*load_range(start, days), *luigid.scheduler_args], config, timeout,
                          ok_codes=(MISSING_DATA_RC,))
        after = luigid.memory_kib()
        pending = dict(Counter(t["name"] for t in luigid.tasks("PENDING").values()))
    if pending.get("LoadTransactions") != days:
        raise BenchError(f"luigid holds {pending} pending tasks, expected {days} LoadTransactions:\n{run.tail()}")
    return Scheduling(days, True, run.wall_s, empty.wall_s, pending, before.get("VmRSS", 0), after.get("VmRSS", 0),
                      after.get("VmHWM", 0), run.max_rss_bytes)


def scheduling_runs(bench: Bench) -> list[Scheduling]:
    """A pilot range, then the full range if the pilot says it fits ``scheduler_budget_s`` (else extrapolated)."""
    o = bench.options
    pilot = schedule_range(bench, NO_DATA_START, min(o.scheduler_pilot_days, o.scheduler_range_days))
    if pilot.days == o.scheduler_range_days:
        return [pilot]
    projected_s = pilot.scheduling_s * o.scheduler_range_days / pilot.days
    if 0 < o.scheduler_budget_s < projected_s:
        bench.log(f"luigid: {o.scheduler_range_days} dates would take ~{projected_s:.0f} s, over the "
                  f"{o.scheduler_budget_s:.0f} s budget (--scheduler-budget): extrapolating from {pilot.days}")
        return [pilot, pilot.extrapolated(o.scheduler_range_days)]
    later = NO_DATA_START + datetime.timedelta(days=pilot.days)
    return [pilot, schedule_range(bench, later, o.scheduler_range_days)]


def make_data(bench: Bench) -> list[Dataset]:
    days, size = bench.options.backfill_days, bench.options.backfill_mib
    bench.log(f"generating and uploading {days} partitions of {size:g} MiB")
    return [bench.new_dataset(date, size, quiet=True) for date in bench.new_dates(days)]


def run(bench: Bench) -> SectionResult:
    data = make_data(bench)
    runs = [backfill(bench, w, data) for w in bench.options.worker_counts]
    runs.append(backfill_processes(bench, 2, data))
    scheduling = scheduling_runs(bench)
    result = SectionResult("workers", data={
        "backfill": {"days": len(data), "mib_per_partition": bench.options.backfill_mib,
                     "runs": [asdict(r) for r in runs]},
        "scheduling": [asdict(s) for s in scheduling],
    })
    result.tables = [backfill_table(runs, bench.options.backfill_mib), scheduling_table(scheduling)]
    result.targets = worker_targets(runs)
    return result


def worker_targets(runs: list[Backfill]) -> list[Target]:
    """The issue's goals: 2 workers >= 1.6x the aggregate rate of 1; < 50 ms overhead per partition."""
    targets = []
    one = runs[0]
    for two in (r for r in runs if r.workers == 2):
        if one.workers == 1:
            speedup = one.wall_s / two.wall_s
            targets.append(Target(f"2 workers ({two.label}) vs 1, aggregate rate", ">= 1.6x", f"{speedup:.2f}x",
                                  speedup >= 1.6))
    for r in runs:
        ms = 1000 * r.overhead_per_partition_s
        targets.append(Target(f"overhead per partition, {r.label} worker(s)", "< 50 ms", f"{ms:.0f} ms", ms < 50))
    return targets


def backfill_table(runs: list[Backfill], mib: float) -> Table:
    one = runs[0]
    table = Table(f"Backfill of {one.partitions} daily partitions of {mib:g} MiB under luigid",
                  ["workers", "seconds", "MB/s", "speed-up", "in-tx s (sum)", "overhead s/partition",
                   "worker CPU s/partition"])
    for r in runs:
        table.rows.append([r.label, r.wall_s, r.mb_s, f"{one.wall_s / r.wall_s:.2f}x", r.in_transaction_s,
                           r.overhead_per_partition_s, r.worker_cpu_s / r.partitions])
    table.notes = [
        f"{one.bytes / MIB:.0f} MiB in total, one object per partition; speed-up is over {one.workers} worker(s); "
        f"{os.cpu_count()} CPUs shared by the workers, PostgreSQL, moto and luigid; with more than one worker "
        "luigi runs each task in a forked process",
        "in-tx s: sum over partitions of the marker's finished_at - started_at (lock, delete, download, COPY, check)",
        "overhead s/partition: ((wall - empty command) x workers - in-tx s) / partitions, i.e. worker-seconds per "
        "partition outside its transaction: scheduling RPCs, complete() and S3 checks, fork, connect, commit",
        "worker CPU: user + system seconds of the luigi command and its forked workers (not PostgreSQL, moto, luigid)",
        f"the empty command (start == stop) against luigid took {one.empty_s:.2f} s",
    ]
    return table


def scheduling_table(runs: list[Scheduling]) -> Table:
    table = Table("luigid handed a whole RangeDaily at once (no S3 data yet, so nothing runs: scheduling alone)",
                  ["dates", "how", "command s", "scheduling s", "ms per date", "luigid RSS before MB",
                   "luigid RSS after MB", "luigid peak MB", "worker peak MB"])
    for s in runs:
        table.rows.append([s.days, "measured" if s.measured else "extrapolated", s.wall_s, s.scheduling_s,
                           1000 * s.scheduling_s / s.days, s.luigid_rss_before_kib * 1024 / MB,
                           s.luigid_rss_after_kib * 1024 / MB, s.luigid_peak_kib * 1024 / MB,
                           s.worker_peak_rss_bytes / MB if s.measured else None])
    last = runs[-1]
    table.notes = [
        "tasks pending in luigid: " + ", ".join(f"{n} {family}" for family, n in sorted(last.pending.items())),
        "one worker; per date it checks the load's marker (one connection), the S3 prefix of its dependency "
        "(one LIST) and sends both tasks to luigid; 'scheduling s' is above an empty command",
    ]
    if not last.measured:
        table.notes.append("extrapolated linearly (time and luigid's RSS growth per task) from the measured row; "
                           "--scheduler-budget 0 measures it")
    return table


SECTION = Section("workers", "luigid backfill with 1, 2, 4 workers; luigid scheduling a 3,650-task range", run)
