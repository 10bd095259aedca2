"""Section ``merge``: a merge of 1 M rows of which 10 % changed next to a plain replace load of the same file
(goal: the merge in at most 2x the replace's time), and the peak RSS of each.

One file of the transactions (``A``) and a copy with every tenth row's amount changed (``B``). The replace
table holds ``A``'s date, replaced by ``B`` (``LoadTransactions --force``: a DELETE of the date's rows and a
COPY). The merge table holds ``A``, merged by id (``MergeTransactions``); ``B`` is merged over it as the next
date, so that a tenth of the rows are updated and the rest compared and left untouched. Before each timed
merge ``A``'s date is merged again (untimed, ``--force``) to put the changed rows back. A third command
merges ``B`` again over itself: what a merge costs when nothing changed.
"""
from __future__ import annotations

import datetime
from dataclasses import asdict
from pathlib import Path

from psycopg2 import sql

from luigi_pipelines import sql as q
from luigi_pipelines.partitions import TableName, key_prefix

from ..contention import server_cpu_s
from ..context import Bench
from ..data import MIB, CsvFile, upload, write_csv_rows
from ..measure import MB, BenchError, median
from ..methods import LoadRun, load_one, summarise
from ..pipeline import MERGE_PREFIX
from ..report import Section, SectionResult, Table, Target
from ..stack import BUCKET, PIPELINE_MODULE, SCHEMA

GOAL = 2.0
CHANGED_EVERY = 10  # every tenth row of B differs from A
REPLACED = TableName(SCHEMA, "merge_replaced")
MERGED = TableName(SCHEMA, "merge_merged")
LABELS = {
    "replace": "LoadTransactions --force: DELETE the date's rows, COPY the file",
    "merge": f"MergeTransactions: the file merged by id, 1 row in {CHANGED_EVERY} changed",
    "merge again": "MergeTransactions --force of the same file: nothing changed",
}


def changed_copy(source: CsvFile, path: Path) -> CsvFile:
    """``source`` with the amount of every tenth data row raised by 1.00 (the first four fields hold no comma)."""
    with open(source.path, "rb") as src, open(path, "wb") as dst:
        dst.write(src.readline())
        for n, line in enumerate(src):
            if n % CHANGED_EVERY == 0:
                fields = line.split(b",", 4)
                fields[3] = b"%.2f" % (float(fields[3]) + 1)
                line = b",".join(fields)
            dst.write(line)
    return CsvFile(source.date, path, path.stat().st_size, source.rows)


def timed(bench: Bench, label: str, task: str, date: datetime.date, table: TableName, *extra: str) -> LoadRun:
    """One ``luigi`` command of ``task`` for ``date`` into ``table`` after a CHECKPOINT: wall time, peak RSS, the
    server's CPU."""
    stack = bench.stack
    stack.checkpoint()
    bench.log(f"({label}) {task} {date} {' '.join(extra)}".rstrip())
    config = stack.config_file(f"merge-{table.name}", str(table))
    args = ["--module", PIPELINE_MODULE, task, "--date", date.isoformat(), "--local-scheduler", *extra]
    before = server_cpu_s(stack.pg.pid)
    run_ = stack.luigi(args, config, bench.options.timeout_s)
    return LoadRun(label, run_.wall_s, 0, bench.options.merge_rows, run_.max_rss_bytes, run_.cpu_s,
                   {"server_cpu_s": server_cpu_s(stack.pg.pid) - before})


def same_rows(bench: Bench) -> int:
    """How many rows the merged and the replaced table disagree on (both must hold B)."""
    differ = sql.SQL("SELECT count(*) FROM ((TABLE {0} EXCEPT ALL TABLE {1}) UNION ALL (TABLE {1} EXCEPT ALL TABLE {0})) d")
    return int(bench.stack.query(differ.format(q.table_ident(MERGED), q.table_ident(REPLACED)))[0][0])


def prepare(bench: Bench) -> tuple[datetime.date, datetime.date, CsvFile]:
    """The files, their objects, and both tables holding A: returns the merge's two dates and B."""
    stack, rows = bench.stack, bench.options.merge_rows
    day, first, second = bench.new_dates(3)
    bench.log(f"generating {rows:,} transactions for {day} and a copy with 1 row in {CHANGED_EVERY} changed")
    a = write_csv_rows(stack.work / f"merge-a-{day}.csv", day, rows)
    b = changed_copy(a, stack.work / f"merge-b-{day}.csv")
    upload(stack.s3_client, BUCKET, a, key_prefix(MERGE_PREFIX, first) + "part-0000.csv")
    upload(stack.s3_client, BUCKET, b, key_prefix(MERGE_PREFIX, second) + "part-0000.csv")
    upload(stack.s3_client, BUCKET, a)  # the replace table's date holds A first
    for table in (REPLACED, MERGED):
        stack.drop_table(table)
        stack.forget_partitions(table)
    stack.luigi(load_one(day), stack.config_file(f"merge-{REPLACED.name}", str(REPLACED)), bench.options.timeout_s)
    upload(stack.s3_client, BUCKET, b)  # ... and is then replaced by B
    return first, second, b


def run(bench: Bench) -> SectionResult:
    first, second, b = prepare(bench)
    initial = timed(bench, "first merge", "MergeTransactions", first, MERGED)  # into an empty table: all inserts
    runs: dict[str, list[LoadRun]] = {label: [] for label in LABELS}
    try:
        for attempt in range(bench.options.repeat):  # interleaved, so drift affects both alike
            runs["replace"].append(timed(bench, "replace", "LoadTransactions", b.date, REPLACED, "--force"))
            if attempt:
                timed(bench, "undo", "MergeTransactions", first, MERGED, "--force")  # A again: B's changes undone
            runs["merge"].append(timed(bench, "merge", "MergeTransactions", second, MERGED, *(["--force"] if attempt else [])))
            runs["merge again"].append(timed(bench, "merge again", "MergeTransactions", second, MERGED, "--force"))
        if same_rows(bench) or bench.stack.count_rows(MERGED) != b.rows:
            raise BenchError(f"the merged table differs from the replaced one in {same_rows(bench)} rows")
    finally:
        for table in (REPLACED, MERGED):
            bench.stack.drop_table(table)
    best = {label: summarise(rs) for label, rs in runs.items()}
    cpu = {label: median([r.parts["server_cpu_s"] for r in rs]) for label, rs in runs.items()}
    return result(bench, best, cpu, initial, b)


def result(bench: Bench, best: dict[str, LoadRun], cpu: dict[str, float], initial: LoadRun, b: CsvFile) -> SectionResult:
    base = best["replace"]
    table = Table(f"Merge vs replace: {b.rows:,} rows ({b.size_bytes / MIB:.0f} MiB), 1 in {CHANGED_EVERY} changed, "
                  f"into a table of {b.rows:,} rows", ["load", "what", "seconds", "rows/s", "time vs replace",
                                                       "PostgreSQL CPU s", "peak RSS MB"])
    for label, r in best.items():
        table.rows.append([label, LABELS[label], r.seconds, r.rows / r.seconds, f"{r.seconds / base.seconds:.2f}x",
                           cpu[label], r.max_rss_bytes / MB if r.max_rss_bytes else None])
    table.rows.append(["first merge", "MergeTransactions into an empty table: every row inserted (one run)",
                       initial.seconds, initial.rows / initial.seconds, f"{initial.seconds / base.seconds:.2f}x",
                       initial.parts["server_cpu_s"], initial.max_rss_bytes / MB if initial.max_rss_bytes else None])
    table.notes = [
        f"median of {bench.options.repeat} interleaved run(s), each a whole `luigi` process after a CHECKPOINT; "
        "PostgreSQL durable (fsync on); MB = 10^6 bytes",
        "the replace deletes and copies every row of the date; the merge stages every row (a temporary table, "
        "no WAL), compares each with the table's row by id, and writes only the changed ones",
        "after the runs, the merged table and the replaced one hold the same rows (checked)",
    ]
    ratio = best["merge"].seconds / base.seconds
    return SectionResult(
        "merge", tables=[table],
        targets=[Target(f"merge of {b.rows:,} rows, 1 in {CHANGED_EVERY} changed, vs a replace load", f"<= {GOAL}x",
                        f"{ratio:.2f}x", ratio <= GOAL)],
        data={"rows": b.rows, "size_bytes": b.size_bytes, "median": {k: asdict(v) for k, v in best.items()},
              "server_cpu_s": cpu, "first_merge": asdict(initial), "merge_vs_replace": ratio},
    )


SECTION = Section("merge", f"a merge of 1 M rows, 10 % changed, vs a replace load of the same file (goal <= {GOAL}x)", run)
