"""Section ``checks``: what data checks cost in the load's transaction: ``not_null("id")``, ``unique("id")``,
``between("amount", ...)`` and ``row_count(min=1)`` on a 1 M-row partition (goal: at most 15 % of the partition's
load time), and what an index on the unique column changes.

The same file is loaded into a fresh table by ``LoadTransactions`` (no checks) and ``LoadTransactionsChecked``
(the four checks), each also into a table with a btree index on ``id``: whole ``luigi`` commands after a
CHECKPOINT, interleaved, the median of each. The checks alone are then timed on each loaded partition: the same
``db.run_checks`` the load runs, in a transaction rolled back afterwards.
"""
from __future__ import annotations

import datetime
from dataclasses import asdict

from psycopg2 import sql

from luigi_pipelines import db
from luigi_pipelines import sql as q
from luigi_pipelines.partitions import ScopedTable, TableName

from ..context import Bench
from ..data import MIB, CsvFile, upload, write_csv_rows
from ..measure import BenchError, Stopwatch, median
from ..methods import LoadRun, summarise, task_parts
from ..pipeline import LoadTransactionsChecked
from ..report import Section, SectionResult, Table, Target
from ..stack import BUCKET, MARKER, MARKER_SCHEMA, PIPELINE_MODULE

GOAL = 0.15
VARIANTS = {  # label: (task, index on id)
    "no checks": ("LoadTransactions", False),
    "checks": ("LoadTransactionsChecked", False),
    "no checks, index on id": ("LoadTransactions", True),
    "checks, index on id": ("LoadTransactionsChecked", True),
}


def load(bench: Bench, label: str, csv: CsvFile, attempt: int) -> tuple[LoadRun, float | None]:
    """One variant's load into a fresh table, then (with checks) the checks alone on what it loaded."""
    stack = bench.stack
    task, indexed = VARIANTS[label]
    table = stack.create_transaction_table(f"checks_{'ix_' if indexed else ''}{task.lower()}")
    if indexed:
        stack.execute(sql.SQL("CREATE INDEX ON {} (id)").format(q.table_ident(table)))
    stack.checkpoint()
    bench.log(f"({label}) {task} {csv.date}, attempt {attempt + 1}")
    try:
        config = stack.config_file(f"checks-{table.name}", str(table))
        args = ["--module", PIPELINE_MODULE, task, "--date", csv.date.isoformat(), "--local-scheduler"]
        run = stack.luigi(args, config, bench.options.timeout_s)
        if stack.count_rows(table) != csv.rows:
            raise BenchError(f"({label}) loaded {stack.count_rows(table)} rows, the file has {csv.rows}")
        parts = task_parts(bench, table, csv.date, run)
        alone = checks_alone(bench, table, csv) if task == "LoadTransactionsChecked" else None
    finally:
        stack.drop_table(table)
    return LoadRun(label, run.wall_s, csv.size_bytes, csv.rows, run.max_rss_bytes, run.cpu_s, parts), alone


def checks_alone(bench: Bench, table: TableName, csv: CsvFile) -> float:
    """The seconds of ``db.run_checks`` with the task's checks on the loaded partition, rolled back."""
    with bench.stack.connect() as conn, conn.cursor() as cur:
        tx = db.PartitionTransaction(cur, ScopedTable.of(table, {}), csv.date, None,
                                     datetime.datetime.now(datetime.timezone.utc), rows=csv.rows)
        where = db.CheckedRows.replaced(tx, "txn_date", marker=MARKER, rejects=TableName(MARKER_SCHEMA, "rejected_rows"),
                                        family="bench")
        watch = Stopwatch.start()
        results = db.run_checks(tx, LoadTransactionsChecked.checks, where)
        elapsed = watch.elapsed
        conn.rollback()
    if any(not r.passed or r.rows != csv.rows for r in results):
        raise BenchError(f"the checks did not pass on {table}: {[r.record() for r in results]}")
    return elapsed


def run(bench: Bench) -> SectionResult:
    stack, rows = bench.stack, bench.options.merge_rows
    day = bench.new_dates(1)[0]
    bench.log(f"generating {rows:,} transactions for {day}")
    csv = write_csv_rows(stack.work / f"checks-{day}.csv", day, rows)
    upload(stack.s3_client, BUCKET, csv)
    runs: dict[str, list[LoadRun]] = {label: [] for label in VARIANTS}
    alone: dict[str, list[float]] = {label: [] for label in VARIANTS if VARIANTS[label][0] == "LoadTransactionsChecked"}
    for attempt in range(bench.options.repeat):  # interleaved, so drift affects every variant alike
        for label in VARIANTS:
            measured, checks_s = load(bench, label, csv, attempt)
            runs[label].append(measured)
            if checks_s is not None:
                alone[label].append(checks_s)
    best = {label: summarise(rs) for label, rs in runs.items()}
    return result(bench, csv, best, {label: median(values) for label, values in alone.items()})


def result(bench: Bench, csv: CsvFile, best: dict[str, LoadRun], checks_s: dict[str, float]) -> SectionResult:
    base = best["no checks"].seconds
    table = Table(f"Data checks on a partition of {csv.rows:,} rows ({csv.size_bytes / MIB:.0f} MiB): not_null(id), "
                  "unique(id), between(amount), row_count", ["load", "seconds", "vs no checks", "COPY s",
                                                             "rest of tx s", "checks alone s", "checks / load"])
    for label, r in best.items():
        alone = checks_s.get(label)
        table.rows.append([label, r.seconds, f"{r.seconds / base:.2f}x", r.parts["copy_s"], r.parts["tx_other_s"],
                           alone, f"{alone / base:.1%}" if alone is not None else None])
    table.notes = [
        f"median of {bench.options.repeat} interleaved run(s), each a whole `luigi` process into a fresh table after a "
        "CHECKPOINT; PostgreSQL durable (fsync on)",
        "COPY s: the objects' COPY (with their download); rest of tx s: the rest of the transaction (the DELETE, the "
        "partition's count, the checks, the marker, the commit), from the marker",
        "checks alone: db.run_checks on the loaded partition in a transaction rolled back (the statements the load "
        "runs: one scan, a FILTER per row check and a count(DISTINCT) for unique); checks / load: of the load "
        "without checks",
        "the index on id is a plain btree, maintained by COPY",
    ]
    cost = checks_s["checks"] / base
    return SectionResult(
        "checks", tables=[table],
        targets=[Target(f"not_null + unique + between + row_count on {csv.rows:,} rows vs the load", f"<= {GOAL:.0%}",
                        f"{cost:.1%}", cost <= GOAL)],
        data={"rows": csv.rows, "size_bytes": csv.size_bytes, "median": {k: asdict(v) for k, v in best.items()},
              "checks_alone_s": checks_s, "checks_vs_load": cost},
    )


SECTION = Section("checks", f"not_null + unique + between + row_count on a 1 M-row partition vs its load (goal "
                  f"<= {GOAL:.0%}), and with an index on the unique column", run)
