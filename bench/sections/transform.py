"""Section ``transform``: peak RSS and time of transforms over one upstream partition of 1 M rows (goal < 150 MB).

The upstream partition is loaded once by ``LoadTransactions``; then each transform runs in a fresh
``luigi`` process into a fresh table: the shipped ``SummarizeTransactions`` (a pure function that keeps
one entry per account and currency), the same summary as a ``SqlTransformPartition``, a row-for-row
transform that yields as many rows as it reads, and (the control, showing what the measurement can
see) that transform holding its whole input first, as the task itself did before it streamed.
"""
from __future__ import annotations

import datetime
from pathlib import Path

from psycopg2 import sql

from luigi_pipelines import sql as q
from luigi_pipelines.partitions import TableName

from ..context import Bench
from ..data import upload, write_csv_rows
from ..measure import MB, BenchError, ProcessRun
from ..methods import empty_luigi_runs, load_one
from ..report import Section, SectionResult, Table, Target
from ..stack import MARKER_SCHEMA, PIPELINE_MODULE, SCHEMA

LIMIT_MB = 150
UPSTREAM = TableName(SCHEMA, "transform_upstream")
TOTALS = TableName(SCHEMA, "transform_totals")
# (task, its table, streamed: judged against the goal, what it is)
TRANSFORMS = (
    ("SummarizeTransactions", TOTALS, True, "pure function, one entry per (account, currency)"),
    ("SummarizeTransactionsInSql", TableName(SCHEMA, "transform_totals_sql"), True, "the same as INSERT ... SELECT"),
    ("CentsTransactions", TableName(SCHEMA, "transform_cents"), True, "row for row, yielded"),
    ("CentsTransactionsHeld", TableName(SCHEMA, "transform_cents_held"), False,
     "control: row for row after tuple(rows)"),
)


def run(bench: Bench) -> SectionResult:
    stack = bench.stack
    rows = bench.options.transform_rows
    date = bench.new_dates(1)[0]
    bench.log(f"generating {rows:,} transactions for {date}, loading them as the upstream partition")
    csv = write_csv_rows(stack.work / f"transform-{date.isoformat()}.csv", date, rows)
    upload(stack.s3_client, "bench-transactions", csv)
    for table_name in (UPSTREAM, TOTALS):
        stack.drop_table(table_name)
        stack.forget_partitions(table_name)
    config = stack.config_file("transform", str(UPSTREAM), extra=f"totals_table = {TOTALS}\n")
    stack.luigi(load_one(date), config, bench.options.timeout_s)
    if stack.count_rows(UPSTREAM) != rows:
        raise BenchError(f"the upstream partition has {stack.count_rows(UPSTREAM)} rows, expected {rows}")
    csv.path.unlink()

    try:
        runs = {task: _transform(bench, task, table, date, config) for task, table, _, _ in TRANSFORMS}
        _check_same_rows(bench, TOTALS, TRANSFORMS[1][1])
    finally:
        for table_name in (UPSTREAM, *(t for _, t, _, _ in TRANSFORMS)):
            stack.drop_table(table_name)
    startup = max(r.max_rss_bytes for r in empty_luigi_runs(bench))
    table = Table(f"Transforms of one upstream partition of {rows:,} rows ({csv.size_bytes / 2**20:.0f} MiB as CSV), "
                  f"each a whole `luigi` process", ["task", "what", "rows out", "seconds", "peak RSS MB"])
    for task, _, _, what in TRANSFORMS:
        run_, out = runs[task]
        table.rows.append([task, what, out, run_.wall_s, run_.max_rss_bytes / MB])
    table.notes = [f"an empty `luigi` command peaks at {startup / MB:.1f} MB; MB = 10^6 bytes",
                   "the SQL and Python summaries were checked to hold the same rows"]
    streamed = [runs[t][0].max_rss_bytes / MB for t, _, judged, _ in TRANSFORMS if judged]
    return SectionResult(
        "transform",
        tables=[table],
        targets=[Target(f"streamed transforms of {rows:,} rows: peak RSS", f"< {LIMIT_MB} MB", f"{max(streamed):.1f} MB",
                        max(streamed) < LIMIT_MB)],
        data={"rows": rows, "csv_bytes": csv.size_bytes, "empty_luigi_command_max_rss_bytes": startup,
              "runs": {t: {"wall_s": r.wall_s, "max_rss_bytes": r.max_rss_bytes, "cpu_s": r.cpu_s, "rows_out": out}
                       for t, (r, out) in runs.items()}},
    )


def _transform(bench: Bench, task: str, table: TableName, date: datetime.date, config: Path) -> tuple[ProcessRun, int]:
    """One transform task into a fresh table, in a fresh ``luigi`` process; its run and its rows."""
    stack = bench.stack
    stack.drop_table(table)
    stack.forget_partitions(table)
    stack.checkpoint()
    bench.log(f"{task} of {date}")
    args = ["--module", PIPELINE_MODULE, task, "--date", date.isoformat(), "--local-scheduler"]
    run_ = stack.luigi(args, config, bench.options.timeout_s)
    marker = stack.query(q.select_marker(TableName(MARKER_SCHEMA, "partition_marker")), (str(table), date))
    if not marker:
        raise BenchError(f"{task}: no marker row for {table} {date}:\n{run_.tail()}")
    return run_, stack.count_rows(table)


def _check_same_rows(bench: Bench, a: TableName, b: TableName) -> None:
    """The two tables hold the same rows (a broken transform would make its measurement meaningless)."""
    differ = sql.SQL("SELECT count(*) FROM ((TABLE {0} EXCEPT ALL TABLE {1}) UNION ALL (TABLE {1} EXCEPT ALL TABLE {0})) d")
    count = bench.stack.query(differ.format(q.table_ident(a), q.table_ident(b)))[0][0]
    if count or not bench.stack.count_rows(a):
        raise BenchError(f"{a} and {b} differ in {count} rows (or are empty)")


SECTION = Section("transform", f"peak RSS of transforms over a 1 M-row partition (goal < {LIMIT_MB} MB)", run)
