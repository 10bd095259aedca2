"""Section ``noop``: rerunning a ``RangeDaily`` whose dates are all done, next to an empty range.

The marker rows of every date are inserted directly, so the rerun finds them all complete through
``bulk_complete`` (one query). For comparison the probe times a per-date ``complete()`` loop.
"""
from __future__ import annotations

import datetime
import json
from pathlib import Path

from psycopg2 import sql

from luigi_pipelines import sql as q
from luigi_pipelines.partitions import TableName

from ..context import Bench
from ..measure import BenchError, ProcessRun, median
from ..methods import load_range
from ..report import Section, SectionResult, Table, Target
from ..stack import MARKER, SCHEMA

START = datetime.date(2000, 1, 1)
TARGET = TableName(SCHEMA, "noop")
MAX_RATIO = 1.5

_INSERT_MARKERS = sql.SQL(
    "INSERT INTO {} (target_table, partition_date, task_family, task_id, rows_loaded, bytes_loaded, source_objects,"
    " started_at, finished_at, host)"
    " SELECT %(target)s, d::date, 'LoadTransactions', 'LoadTransactions(date=' || d::date || ')', 0, 0, '[]',"
    " now(), now(), 'bench' FROM generate_series(%(start)s::date, %(last)s::date, interval '1 day') AS d"
    " ON CONFLICT DO NOTHING"
)


def mark_done(bench: Bench, target: TableName, start: datetime.date, days: int) -> None:
    """Marker rows for ``days`` dates from ``start``, as if every partition had been loaded."""
    stack = bench.stack
    stack.execute(q.create_schema(MARKER.schema))
    stack.execute(q.create_marker_table(MARKER))
    last = start + datetime.timedelta(days=days - 1)
    stack.execute(_INSERT_MARKERS.format(q.table_ident(MARKER)), {"target": str(target), "start": start, "last": last})


def run(bench: Bench) -> SectionResult:
    days, timeout = bench.options.range_days, bench.options.timeout_s
    mark_done(bench, TARGET, START, days)
    config = bench.stack.config_file("noop", str(TARGET))
    noop: list[ProcessRun] = []
    empty: list[ProcessRun] = []
    bench.log(f"no-op RangeDaily over {days} done dates and an empty range, {bench.options.noop_repeat} time(s) each")
    for _ in range(bench.options.noop_repeat):
        noop.append(check_noop(bench.stack.luigi(load_range(START, days, local_scheduler=True), config, timeout)))
        empty.append(bench.stack.luigi(load_range(START, 0, local_scheduler=True), config, timeout))
    bench.log(f"probe: bulk_complete over {days} dates, complete() loop over {bench.options.complete_loop_days}")
    probe = run_probe(bench, config, days)
    noop_s, empty_s = median([r.wall_s for r in noop]), median([r.wall_s for r in empty])
    result = SectionResult("noop", data={
        "days": days, "noop_s": [r.wall_s for r in noop], "empty_s": [r.wall_s for r in empty], "probe": probe,
    })
    result.tables = [noop_table(days, noop, empty, probe)]
    result.targets = [Target(f"no-op {days}-day RangeDaily vs empty range", f"<= {MAX_RATIO}x",
                             f"{noop_s / empty_s:.2f}x", noop_s / empty_s <= MAX_RATIO)]
    return result


def check_noop(run: ProcessRun) -> ProcessRun:
    """A no-op rerun must not have run a load: luigi says so in its execution summary."""
    if "Did not run any tasks" not in run.stderr:
        raise BenchError(f"the rerun over done dates ran something:\n{run.tail()}")
    return run


def run_probe(bench: Bench, config: Path, days: int) -> dict[str, float]:
    loop_days = min(bench.options.complete_loop_days, days)
    args = ["-m", "bench.probe", "--start", START.isoformat(), "--days", str(days), "--loop-days", str(loop_days)]
    probe = bench.stack.python(args, config, bench.options.timeout_s)
    found: dict[str, float] = json.loads(probe.stdout.strip().splitlines()[-1])
    if found["bulk_complete_done"] != days or found["loop_done"] != loop_days:
        raise BenchError(f"the probe did not find every date complete: {found}")
    return found


def noop_table(days: int, noop: list[ProcessRun], empty: list[ProcessRun], probe: dict[str, float]) -> Table:
    noop_s, empty_s = median([r.wall_s for r in noop]), median([r.wall_s for r in empty])
    per_date_loop = probe["loop_s"] / probe["loop_dates"]
    table = Table(f"No-op rerun of a {days}-day RangeDaily (every date complete) vs an empty range",
                  ["what", "dates", "seconds", "ms per date", "vs empty"])
    table.rows = [
        ["`luigi RangeDaily` empty range (start == stop)", 0, empty_s, None, "1.00x"],
        ["`luigi RangeDaily` no-op rerun, all dates done", days, noop_s, 1000 * (noop_s - empty_s) / days,
         f"{noop_s / empty_s:.2f}x"],
        ["bulk_complete(), in-process, one query", days, probe["bulk_complete_s"],
         1000 * probe["bulk_complete_s"] / days, None],
        [f"complete() per date, in-process (measured on {probe['loop_dates']:.0f})", probe["loop_dates"],
         probe["loop_s"], 1000 * per_date_loop, None],
        [f"complete() per date, extrapolated to {days}", days, per_date_loop * days, 1000 * per_date_loop, None],
    ]
    table.notes = [
        f"commands: median of {len(noop)} run(s) each, whole processes, local scheduler; "
        "'ms per date' of the rerun is its time above the empty range",
        "each complete() opens its own connection and runs one marker query; bulk_complete uses one of each",
    ]
    return table


SECTION = Section("noop", "no-op RangeDaily rerun over thousands of done dates vs an empty range", run)
