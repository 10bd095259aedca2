"""Section ``overhead``: where a tiny partition's time goes, phase by phase, in a backfill with one worker.

A backfill of many dates of a few small gzip objects each is run in-process under ``bench/phases.py``,
once with the local scheduler and once under a fresh luigid, then luigid is handed a range whose data is
missing (scheduling alone). Each phase's wall and CPU time is divided by the partitions: scheduling
(luigi itself), luigid RPCs, completeness (marker checks), the S3 existence check of the dependency,
connect, DDL checks (``prepare``), the load's S3 LIST, and the rest of the transaction (lock, marker,
delete, GETs, COPY, marker write, commit).
"""
from __future__ import annotations

import datetime
import gzip
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from luigi_pipelines.devstack.sample import HEADER, transaction_lines

from ..context import Bench
from ..measure import MB, BenchError
from ..methods import load_range
from ..report import Section, SectionResult, Table, Target
from ..stack import BUCKET, SCHEMA
from .workers import MISSING_DATA_RC, NO_DATA_START

GOAL_LUIGID_MS = 15.0  # issue 11: worker-seconds per partition outside its transaction, luigid, 1 worker
GOAL_SCHEDULING_MS = 4.0  # issue 11: luigid scheduling per date
# The phases of ``bench/phases.py`` as shown, in order.
LABELS = {
    "scheduling": "scheduling (luigi: tasks, scheduler, worker loop)",
    "luigid_rpc": "luigid RPCs",
    "completeness": "completeness (marker checks)",
    "s3_exists": "S3 existence check (dependency)",
    "connect": "connect",
    "ddl": "DDL checks (prepare)",
    "s3_list": "S3 LIST (load)",
    "transaction": "transaction (lock, marker, delete, COPY, commit)",
}


@dataclass(frozen=True)
class PhaseRun:
    """One probed command: per phase wall and CPU seconds, and how many partitions it covered."""

    label: str
    partitions: int
    wall_s: float
    process_cpu_s: float
    phases: dict[str, dict[str, float]]
    luigid_rss_kib: tuple[int, int] | None = None  # before, after

    def per_partition_ms(self, phase: str, what: str = "wall_s") -> float:
        return 1000 * self.phases[phase][what] / self.partitions

    @property
    def outside_ms(self) -> float:
        """Wall ms per partition outside its transaction (everything but ``transaction`` and the load's LIST,
        which runs under the partition's lock)."""
        inside = sum(self.phases[p]["wall_s"] for p in ("transaction", "s3_list"))
        return 1000 * (self.wall_s - inside) / self.partitions


def small_objects(bench: Bench, dates: Sequence[datetime.date], objects: int, rows: int) -> int:
    """``objects`` gzip CSV objects of ``rows`` rows per date under the transactions prefix; returns their bytes."""
    client, total = bench.stack.s3_client, 0
    for date in dates:
        lines = transaction_lines(date, 0, rows * objects)
        for n in range(objects):
            body = gzip.compress(("\n".join([HEADER, *lines[n * rows:(n + 1) * rows]]) + "\n").encode())
            client.put_object(Bucket=BUCKET, Key=f"transactions/{date.isoformat()}/part-{n:04d}.csv.gz", Body=body)
            total += len(body)
    return total


def probe(bench: Bench, label: str, table: str, argv: list[str], partitions: int, ok_codes: Sequence[int] = (0,),
          luigid: Any = None) -> PhaseRun:
    stack = bench.stack
    config = stack.config_file(f"overhead-{label}", table)
    before = luigid.memory_kib().get("VmRSS", 0) if luigid else 0
    run = stack.python(["-m", "bench.phases", "--", *argv], config, bench.options.timeout_s)
    found: dict[str, Any] = json.loads(run.stdout.strip().splitlines()[-1])
    if found["status"] not in ok_status(ok_codes):
        raise BenchError(f"{label}: luigi said {found['status']}:\n{run.tail()}")
    rss = (before, luigid.memory_kib().get("VmRSS", 0)) if luigid else None
    return PhaseRun(label, partitions, found["wall_s"], found["process_cpu_s"], found["phases"], rss)


def ok_status(codes: Sequence[int]) -> set[str]:
    return {"SUCCESS", "SUCCESS_WITH_RETRY"} | ({"MISSING_EXT"} if MISSING_DATA_RC in codes else set())


def run(bench: Bench) -> SectionResult:
    o = bench.options
    dates = bench.new_dates(o.overhead_days)
    bench.log(f"{len(dates)} dates of {o.overhead_objects} gzip objects of {o.overhead_rows} rows each")
    size = small_objects(bench, dates, o.overhead_objects, o.overhead_rows)
    stack, runs = bench.stack, []
    table = stack.create_transaction_table("overhead_local")
    runs.append(probe(bench, "local scheduler", str(table), load_range(dates[0], len(dates), local_scheduler=True),
                      len(dates)))
    check_loaded(bench, table, len(dates) * o.overhead_objects * o.overhead_rows)
    table = stack.create_transaction_table("overhead_luigid")
    with stack.luigid() as luigid:
        runs.append(probe(bench, "luigid", str(table), [*load_range(dates[0], len(dates)), *luigid.scheduler_args],
                          len(dates), luigid=luigid))
    check_loaded(bench, table, len(dates) * o.overhead_objects * o.overhead_rows)
    missing = o.overhead_schedule_days
    bench.log(f"luigid handed {missing} dates whose data is missing")
    with stack.luigid() as luigid:
        runs.append(probe(bench, "luigid, data missing", f"{SCHEMA}.overhead_missing",
                          [*load_range(NO_DATA_START, missing), *luigid.scheduler_args], missing, (MISSING_DATA_RC,),
                          luigid))
    result = SectionResult("overhead", data={"dates": len(dates), "objects_per_date": o.overhead_objects,
                                             "rows_per_object": o.overhead_rows, "bytes": size,
                                             "runs": [r.__dict__ for r in runs]})
    result.tables = [phase_table(runs, size / len(dates) / o.overhead_objects)]
    result.targets = targets(runs)
    return result


def check_loaded(bench: Bench, table: Any, rows: int) -> None:
    loaded = bench.stack.count_rows(table)
    bench.stack.drop_table(table)
    if loaded != rows:
        raise BenchError(f"{table}: {loaded} rows loaded, expected {rows}")


def phase_table(runs: list[PhaseRun], object_bytes: float) -> Table:
    headers = ["phase"] + [f"{r.label} ms/partition (CPU)" for r in runs]
    table = Table("Where a tiny partition's time goes, one worker (wall ms per partition, worker CPU ms in brackets)",
                  headers)
    for phase, label in LABELS.items():
        table.rows.append([label, *(f"{r.per_partition_ms(phase):.2f} ({r.per_partition_ms(phase, 'cpu_s'):.2f})"
                                    for r in runs)])
    table.rows.append(["all, per partition", *(f"{1000 * r.wall_s / r.partitions:.2f} "
                                               f"({1000 * r.process_cpu_s / r.partitions:.2f})" for r in runs)])
    table.rows.append(["outside the transaction", *(f"{r.outside_ms:.2f}" for r in runs)])
    table.rows.append(["luigid RSS before -> after, MB", *(
        f"{r.luigid_rss_kib[0] * 1024 / MB:.1f} -> {r.luigid_rss_kib[1] * 1024 / MB:.1f}" if r.luigid_rss_kib else "-"
        for r in runs)])
    table.notes = [
        f"partitions: {', '.join(f'{r.label} {r.partitions}' for r in runs)}; objects of ~{object_bytes / 1024:.1f} "
        "KiB gzip; each command runs in-process under bench/phases.py (not the `luigi` command: no interpreter start)",
        "phases are exclusive (a connect inside complete() counts as connect); 'scheduling' is luigi's own work: "
        "building tasks, its scheduler (in-process or luigid's replies), the worker loop; CPU is the worker's main "
        "thread, 'all' the whole worker process",
        "'transaction': lock, marker read, delete, the GETs (in a download thread beside COPY), COPY, checks, marker "
        "write, commit; the load's LIST also runs under the lock; 'outside the transaction' is everything else",
    ]
    return table


def targets(runs: list[PhaseRun]) -> list[Target]:
    found = []
    for r in runs:
        if r.label == "luigid":
            found.append(Target("tiny partitions, luigid, 1 worker: wall ms per partition outside its transaction",
                                f"<= {GOAL_LUIGID_MS:g} ms", f"{r.outside_ms:.1f} ms", r.outside_ms <= GOAL_LUIGID_MS))
        if r.label == "luigid, data missing":
            ms = 1000 * r.wall_s / r.partitions
            found.append(Target(f"luigid scheduling per date ({r.partitions} dates, in-process)",
                                f"<= {GOAL_SCHEDULING_MS:g} ms", f"{ms:.1f} ms", ms <= GOAL_SCHEDULING_MS))
    return found


SECTION = Section("overhead", "per-partition cost of tiny partitions, phase by phase (local scheduler, luigid)", run)
