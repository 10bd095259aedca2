"""The four ways of loading one CSV file that the benchmark compares, each into a fresh logged table.

(a) ``psql \\copy`` of the local file; (a2) one plain boto3 GET to a file, then (a); (b) our
``LoadTransactions`` task end to end through the real ``luigi`` command; (c) luigi's own
``contrib.postgres.CopyToTable`` reading the local file. Every method runs after a CHECKPOINT, the
row count is checked afterwards (a wrong count is a broken measurement), and the table is dropped.
"""
from __future__ import annotations

import dataclasses
import datetime
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from luigi_pipelines import sql as q
from luigi_pipelines.backfill import range_daily_args
from luigi_pipelines.partitions import TableName
from luigi_pipelines.pipelines.transactions import LoadTransactions

from .context import Bench
from .data import MIB, Dataset
from .measure import BenchError, ProcessRun, Stopwatch
from .stack import MARKER, PIPELINE_MODULE, SHIPPED_MODULE


@dataclass(frozen=True)
class LoadRun:
    """One timed load: the seconds it took, the peak RSS of its loading process, and its parts."""

    method: str
    seconds: float
    size_bytes: int
    rows: int
    max_rss_bytes: int | None = None
    cpu_s: float | None = None  # CPU time of the loading client process (not of the server)
    parts: dict[str, float] = field(default_factory=dict)


def copy_statement(bench: Bench, table: TableName, path: Path) -> str:
    """psql's ``\\copy`` of ``path`` with exactly the COPY options the load task uses."""
    statement = bench.stack.as_string(q.copy_from_stdin(table, q.columns_of(LoadTransactions.columns),
                                                         LoadTransactions.csv))
    head, sep, options = statement.partition(" FROM STDIN ")
    if not sep or not head.startswith("COPY "):
        raise BenchError(f"unexpected COPY statement: {statement}")
    return f"\\copy {head[len('COPY '):]} FROM '{path}' {options}"


def psql_copy(bench: Bench, data: Dataset, table: TableName, path: Path | None = None) -> ProcessRun:
    return bench.stack.psql(["-c", copy_statement(bench, table, path or data.csv.path)], bench.options.timeout_s)


def method_a(bench: Bench, data: Dataset, table: TableName) -> LoadRun:
    run = psql_copy(bench, data, table)
    return LoadRun("a", run.wall_s, data.size_bytes, data.rows, run.max_rss_bytes, run.cpu_s)


def method_a2(bench: Bench, data: Dataset, table: TableName) -> LoadRun:
    """One plain GET streamed to a file (the client is made before the clock starts), then (a).

    The download's CPU time is the benchmark process's own (``process_time``) over the GET.
    """
    client = bench.stack.s3_client
    target = bench.stack.work / "downloads" / f"a2-{data.date.isoformat()}.csv"
    watch, cpu0 = Stopwatch.start(), time.process_time()
    body = client.get_object(Bucket=data.bucket, Key=data.key)["Body"]
    with body, open(target, "wb") as f:
        for chunk in body.iter_chunks(MIB):
            f.write(chunk)
    download_s, download_cpu_s = watch.elapsed, time.process_time() - cpu0
    try:
        run = psql_copy(bench, data, table, target)
    finally:
        target.unlink()
    parts = {"download_s": download_s, "copy_s": run.wall_s}
    return LoadRun("a2", download_s + run.wall_s, data.size_bytes, data.rows, run.max_rss_bytes,
                   download_cpu_s + run.cpu_s, parts)


def method_b(bench: Bench, data: Dataset, table: TableName) -> LoadRun:
    """``luigi --module luigi_pipelines.pipelines.transactions LoadTransactions --date D --local-scheduler`` in a fresh
    process (of the children's interpreter: ``make bench`` gives an install of the package alone)."""
    config = bench.stack.config_file(f"b-{table.name}", str(table))
    run = bench.stack.luigi(load_one(data.date), config, bench.options.timeout_s)
    return LoadRun("b", run.wall_s, data.size_bytes, data.rows, run.max_rss_bytes, run.cpu_s,
                   task_parts(bench, table, data.date, run))


def task_parts(bench: Bench, table: TableName, date: datetime.date, run: ProcessRun) -> dict[str, float]:
    """Where the task's time went, from its marker row: download, COPY, the rest of the transaction.

    The marker records each object's download and COPY seconds and the transaction's start and
    finish. The task downloads and COPYs at once (COPY reads the temp file as it grows): an object's
    COPY time spans both, so the download is shown as a part of it, not next to it.
    """
    found = bench.stack.query(q.select_marker(MARKER), (str(table), date))
    if not found:
        raise BenchError(f"no marker row for {table} {date}:\n{run.tail()}")
    marker = dict(zip(q.MARKER_FIELDS, found[0], strict=True))
    sources = marker["source_objects"]
    download, both = sum(s["download_s"] for s in sources), sum(s["copy_s"] for s in sources)
    tx = (marker["finished_at"] - marker["started_at"]).total_seconds()
    return {"download_s": download, "copy_s": both, "tx_other_s": max(tx - both, 0.0),
            "outside_tx_s": max(run.wall_s - tx, 0.0)}


def method_c(bench: Bench, data: Dataset, table: TableName) -> LoadRun:
    """luigi's CopyToTable over a csv reader of the local file, in a fresh ``luigi`` process."""
    config = bench.stack.config_file(f"c-{table.name}", str(table))
    args = ["--module", PIPELINE_MODULE, "CopyTransactions", "--csv-path", str(data.csv.path), "--target-table", str(table),
            "--local-scheduler"]
    run = bench.stack.luigi(args, config, bench.options.timeout_s)
    return LoadRun("c", run.wall_s, data.size_bytes, data.rows, run.max_rss_bytes, run.cpu_s)


Method = Callable[[Bench, Dataset, TableName], LoadRun]
METHODS: dict[str, Method] = {"a": method_a, "a2": method_a2, "b": method_b, "c": method_c}
DESCRIPTIONS = {
    "a": "psql \\copy of the local file",
    "a2": "boto3 GET to a file + psql \\copy",
    "b": "LoadTransactions via `luigi` command",
    "c": "luigi CopyToTable, csv rows()",
}


def measure(bench: Bench, method: str, data: Dataset, label: str = "") -> LoadRun:
    """Run ``method`` once on a fresh table after a checkpoint; check the rows; drop the table."""
    stack = bench.stack
    table = stack.create_transaction_table(f"{method}_{data.date:%Y%m%d}{label}")
    stack.checkpoint()
    bench.log(f"({method}) {DESCRIPTIONS[method]}: {data.size_bytes / MIB:.0f} MiB {label}".rstrip())
    try:
        result = METHODS[method](bench, data, table)
        loaded = stack.count_rows(table)
        if loaded != data.rows:
            raise BenchError(f"({method}) loaded {loaded} rows, the file has {data.rows}")
    finally:
        stack.drop_table(table)
    return result


def load_one(date: datetime.date, *extra: str) -> list[str]:
    """``LoadTransactions`` of the shipped module for one ``date``, local scheduler, plus ``extra`` arguments."""
    return ["--module", SHIPPED_MODULE, "LoadTransactions", "--date", date.isoformat(), "--local-scheduler", *extra]


def load_range(start: datetime.date, days: int, **options: Any) -> list[str]:
    """``RangeDaily --of LoadTransactions`` of the shipped module over ``days`` dates from ``start`` (0: an
    empty range), with ``range_daily_args``'s ``options``."""
    return range_daily_args(SHIPPED_MODULE, "LoadTransactions", start, start + datetime.timedelta(days=days), **options)


def empty_luigi_run(bench: Bench) -> ProcessRun:
    """The load command's fixed cost: ``RangeDaily`` over an empty range (start == stop), local scheduler.

    Interpreter start, imports of luigi, boto3, psycopg2 and the pipeline, config parsing, an empty
    scheduling round: what every ``luigi`` command pays before its first partition.
    """
    config = bench.stack.config_file("empty", "bench.empty")
    return bench.stack.luigi(load_range(datetime.date(2000, 1, 1), 0, local_scheduler=True), config,
                             bench.options.timeout_s)


def empty_luigi_runs(bench: Bench) -> list[ProcessRun]:
    """Runs of ``empty_luigi_run``: those the load section took next to its loads, or one taken now."""
    return bench.shared("empty_luigi_runs", lambda: [empty_luigi_run(bench)])


def summarise(runs: list[LoadRun]) -> LoadRun:
    """The run of median time among repeated runs of one method (its parts add up), with the highest peak
    RSS of all of them (a peak is a maximum, not a typical value)."""
    middle = sorted(runs, key=lambda r: r.seconds)[len(runs) // 2]
    peaks = [r.max_rss_bytes for r in runs if r.max_rss_bytes is not None]
    return dataclasses.replace(middle, max_rss_bytes=max(peaks) if peaks else None)


def task_runs(bench: Bench, data: Dataset) -> list[LoadRun]:
    """Runs of (b) on ``data``: those the load section took, or one taken now."""
    return bench.shared(("task_runs", data.key), lambda: [measure(bench, "b", data)])
