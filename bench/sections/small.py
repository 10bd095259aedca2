"""Section ``small``: a year of small daily partitions (two gzip CSV objects of ~10 KB a date) loaded by
``luigi-pipelines backfill`` with 1 worker, with ``--processes 2``, and under luigid with 1 worker, ``--workers 2``
and 1 worker with ``--block-days 7`` and ``30``, next to one ``psql`` session running the same ``\\copy`` commands (issue 11).

The psql baseline first GETs every object to a local file with one boto3 client (as method (a2) does for
one file), then runs one ``psql`` session of one ``\\copy ... FROM PROGRAM 'gzip -dc <file>'`` per object:
psql decompresses through a ``gzip`` child per object, as our loader decompresses in Python. psql has no
per-date transaction, delete, marker or completion check: it is the floor, not an equal.
"""
from __future__ import annotations

import datetime
import os
import re
from dataclasses import asdict, dataclass
from pathlib import Path

from psycopg2 import sql

from luigi_pipelines import sql as q
from luigi_pipelines.devstack.sample import csv_bytes, transaction_lines
from luigi_pipelines.partitions import TableName

from ..context import Bench
from ..data import MIB, object_key
from ..measure import MB, BenchError, Stopwatch
from ..methods import copy_statement, empty_luigi_runs
from ..report import Section, SectionResult, Table, Target
from ..stack import BUCKET, MARKER, PIPELINE_MODULE

PARTS = 2  # objects per date
GOAL_RATIO = 3.0  # issue 11: a year of small partitions at most 3x one psql session
GOAL_OVERHEAD_MS = {1: 15.0}  # worker-ms per partition outside its transaction; 25 for any multi-worker run
GOAL_OVERHEAD_MANY_MS = 25.0
BLOCK_DAYS = (7, 30)  # luigid, 1 worker, the dates handed over in blocks of N days (``backfill --block-days``)

_MARKER_SUMS = sql.SQL(
    "SELECT count(*), coalesce(sum(rows_loaded), 0),"
    " coalesce(sum(extract(epoch FROM finished_at - started_at)), 0)::float8 FROM {} WHERE target_table = %s"
)


@dataclass(frozen=True)
class SmallObject:
    date: datetime.date
    key: str
    size_bytes: int
    rows: int


@dataclass(frozen=True)
class SmallData:
    dates: list[datetime.date]
    objects: list[SmallObject]

    @property
    def rows(self) -> int:
        return sum(o.rows for o in self.objects)

    @property
    def size_bytes(self) -> int:
        return sum(o.size_bytes for o in self.objects)


@dataclass(frozen=True)
class SmallRun:
    """One way of loading every object: its wall time, client CPU and (for ours) the time inside transactions."""

    method: str
    wall_s: float
    parallel: int  # processes or workers loading at once
    cpu_s: float | None = None
    in_transaction_s: float | None = None
    download_s: float | None = None  # psql: the GETs before the session


def rows_per_object(kib: float) -> int:
    """Rows of sample transactions whose gzip CSV is about ``kib`` KiB (measured on 400 rows)."""
    probe = csv_bytes(transaction_lines(datetime.date(2020, 1, 1), 0, 400), compress=True)
    return max(1, round(kib * 1024 * 400 / len(probe)))


def make_data(bench: Bench) -> SmallData:
    days, kib = bench.options.small_days, bench.options.small_kib
    rows = rows_per_object(kib)
    bench.log(f"generating and uploading {days} dates x {PARTS} gzip objects of ~{kib:g} KiB ({rows} rows each)")
    client, objects = bench.stack.s3_client, []
    dates = bench.new_dates(days)
    for date in dates:
        for part in range(PARTS):
            body = csv_bytes(transaction_lines(date, date.toordinal() * 100_000 + part * rows, rows), compress=True)
            key = object_key(date, f"part-{part:04d}.csv.gz")
            client.put_object(Bucket=BUCKET, Key=key, Body=body)
            objects.append(SmallObject(date, key, len(body), rows))
    return SmallData(dates, objects)


def psql_session(bench: Bench, data: SmallData) -> SmallRun:
    """GET every object to a file (one boto3 client, made before the clock starts), then one psql session of
    one ``\\copy ... FROM PROGRAM 'gzip -dc <file>'`` per object."""
    stack = bench.stack
    table = stack.create_transaction_table("small_psql")
    folder = stack.work / "small-psql"
    folder.mkdir(exist_ok=True)
    client, files = stack.s3_client, []
    stack.checkpoint()
    bench.log(f"(0) psql: {len(data.objects)} GETs, then one session of {len(data.objects)} \\copy")
    watch = Stopwatch.start()
    for n, obj in enumerate(data.objects):  # one plain GET each, as (a2): no HEAD first, as download_file does
        files.append(folder / f"{n:05d}.csv.gz")
        files[-1].write_bytes(client.get_object(Bucket=BUCKET, Key=obj.key)["Body"].read())
    download_s = watch.elapsed
    script = folder / "copy.sql"
    script.write_text("".join(_copy_from_gzip(bench, table, f) + "\n" for f in files))
    run = stack.psql(["-f", str(script)], bench.options.timeout_s)
    _check_rows(bench, table, data, "psql")
    return SmallRun("psql", download_s + run.wall_s, 1, run.cpu_s, download_s=download_s)


def _copy_from_gzip(bench: Bench, table: TableName, path: Path) -> str:
    plain = copy_statement(bench, table, path)
    return plain.replace(f"FROM '{path}'", f"FROM PROGRAM 'gzip -dc {path}'", 1)


def _check_rows(bench: Bench, table: TableName, data: SmallData, method: str) -> None:
    loaded = bench.stack.count_rows(table)
    bench.stack.drop_table(table)
    if loaded != data.rows:
        raise BenchError(f"({method}) loaded {loaded} rows, the objects hold {data.rows}")


def backfill(bench: Bench, data: SmallData, method: str, parallel: int, *options: str, luigid: bool = False) -> SmallRun:
    """``luigi-pipelines backfill`` of every date with ``options``, on a fresh table; against a fresh luigid
    (started before the clock) if ``luigid``. The marker rows must show every date with all its rows."""
    stack = bench.stack
    table = stack.create_transaction_table("small_" + re.sub(r"[^a-z0-9]+", "_", method).strip("_"))
    config = stack.config_file(f"small-{table.name}", str(table))
    stop = data.dates[-1] + datetime.timedelta(days=1)
    args = ["-m", "luigi_pipelines.cli", "backfill", "--module", PIPELINE_MODULE, "--task", "LoadTransactions",
            "--start", data.dates[0].isoformat(), "--stop", stop.isoformat(), *options]
    stack.checkpoint()
    bench.log(f"({method}) {len(data.dates)} dates")
    if luigid:
        with stack.luigid() as server:
            run = stack.python([*args, *server.scheduler_args], config, bench.options.timeout_s)
    else:
        run = stack.python([*args, "--local-scheduler"], config, bench.options.timeout_s)
    count, rows, busy = stack.query(_MARKER_SUMS.format(q.table_ident(MARKER)), (str(table),))[0]
    _check_rows(bench, table, data, method)
    if count != len(data.dates) or rows != data.rows:
        raise BenchError(f"({method}) {count} markers, {rows} rows:\n{run.tail()}")
    return SmallRun(method, run.wall_s, parallel, run.cpu_s, float(busy))


def run(bench: Bench) -> SectionResult:
    data = make_data(bench)
    empty_s = empty_luigi_runs(bench)[0].wall_s
    runs = [
        psql_session(bench, data),
        backfill(bench, data, "backfill, 1 worker", 1),
        backfill(bench, data, "backfill --processes 2", 2, "--processes", "2"),
        backfill(bench, data, "luigid, 1 worker", 1, luigid=True),
        backfill(bench, data, "luigid, --workers 2", 2, "--workers", "2", luigid=True),
        *(backfill(bench, data, f"luigid, 1 worker, --block-days {n}", 1, "--block-days", str(n), luigid=True)
          for n in BLOCK_DAYS),
    ]
    result = SectionResult("small", data={"days": len(data.dates), "objects": len(data.objects), "rows": data.rows,
                                          "bytes": data.size_bytes, "empty_command_s": empty_s,
                                          "runs": [asdict(r) for r in runs]})
    result.tables = [small_table(data, runs, empty_s)]
    result.targets = small_targets(data, runs, empty_s)
    return result


def overhead_ms(data: SmallData, r: SmallRun, empty_s: float) -> float | None:
    """Worker-ms per partition outside its transaction, beyond one empty command (as section ``workers``)."""
    if r.in_transaction_s is None:
        return None
    return 1000 * max((r.wall_s - empty_s) * r.parallel - r.in_transaction_s, 0.0) / len(data.dates)


def small_table(data: SmallData, runs: list[SmallRun], empty_s: float) -> Table:
    base = runs[0]
    table = Table(f"A year of small partitions: {len(data.dates)} dates x {PARTS} gzip objects "
                  f"({data.size_bytes / len(data.objects) / 1024:.1f} KiB each, {data.rows:,} rows, "
                  f"{data.size_bytes / MIB:.1f} MiB in all)",
                  ["method", "seconds", "x psql", "x psql session alone", "ms per date", "in-tx s (sum)",
                   "overhead ms/partition", "client CPU s"])
    session_s = base.wall_s - (base.download_s or 0.0)
    for r in runs:
        table.rows.append([r.method, r.wall_s, f"{r.wall_s / base.wall_s:.2f}x", f"{r.wall_s / session_s:.2f}x",
                           1000 * r.wall_s / len(data.dates), r.in_transaction_s, overhead_ms(data, r, empty_s), r.cpu_s])
    table.notes = [
        f"psql: {len(data.objects)} plain GETs to files ({base.download_s:.2f} s, one boto3 client), then one "
        f"`psql -f` session of {len(data.objects)} `\\copy ... FROM PROGRAM 'gzip -dc <file>'` ({session_s:.2f} s, "
        "autocommit each); no delete, marker or completion check. 'x psql' is against both (our loads GET too); "
        "'x psql session alone' against the session on files already downloaded",
        "backfill: `luigi-pipelines backfill --start --stop` of the bench pipeline's LoadTransactions (one transaction "
        "per date: lock, delete, 2 COPYs, marker), --local-scheduler, --processes 2, or a fresh luigid (started before "
        "the clock); --block-days N: luigid gets one task per N dates (blocks.PartitionDayBlock), each date still in "
        "its own transaction",
        f"overhead: ((seconds - {empty_s:.2f} s, an empty `luigi` command) x processes or workers - in-tx s) / dates, "
        "i.e. worker-seconds per partition outside its transaction, as in section `workers`",
        f"client CPU: user + system seconds of the command and its children; {os.cpu_count()} CPUs shared with "
        f"PostgreSQL and moto; {data.size_bytes / MB:.2f} MB of gzip objects",
    ]
    return table


def small_targets(data: SmallData, runs: list[SmallRun], empty_s: float) -> list[Target]:
    base, targets = runs[0], []
    baselines = {"GETs + one psql session": base.wall_s,
                 "one psql session alone": base.wall_s - (base.download_s or 0.0)}
    for against, seconds in baselines.items():
        for r in runs[1:]:
            ratio = r.wall_s / seconds
            targets.append(Target(f"small: {r.method} vs {against}", f"<= {GOAL_RATIO:g}x", f"{ratio:.2f}x",
                                  ratio <= GOAL_RATIO))
    for r in runs[1:]:
        ms = overhead_ms(data, r, empty_s)
        goal = GOAL_OVERHEAD_MS.get(r.parallel, GOAL_OVERHEAD_MANY_MS)
        if ms is not None:
            targets.append(Target(f"small: {r.method}, worker-ms per partition outside its tx",
                                  f"<= {goal:g} ms", f"{ms:.0f} ms", ms <= goal))
    return targets


SECTION = Section("small", "a year of small daily partitions (2 gzip objects of ~10 KB a date): backfill with 1 "
                  "worker, --processes 2, luigid 1 and 2 workers, luigid 1 worker with --block-days 7 and 30, vs one "
                  "psql session", run)
