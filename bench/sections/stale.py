"""Section ``stale``: a ``RangeDaily`` in ``reload_changed`` mode over a year of loaded dates whose S3 objects
have not changed, next to the same command without the mode.

Each date gets one small object in S3 and a marker row that lists exactly it (key, size, ETag), inserted
directly, so every date is loaded and fresh. The mode then costs one S3 listing per date on top of the
marker query; the probe times ``bulk_complete`` in-process with and without it, and ``luigi-pipelines backfill``
is timed with and without ``--reload-changed``, its ListObjects requests counted in the S3 server's log.
"""
from __future__ import annotations

import datetime
import json
from pathlib import Path

from psycopg2 import sql

from luigi_pipelines import sql as q
from luigi_pipelines.partitions import TableName

from ..context import Bench
from ..data import object_key
from ..measure import BenchError, ProcessRun, median
from ..methods import load_range
from ..report import Section, SectionResult, Table
from ..stack import BUCKET, MARKER, PIPELINE_MODULE, SCHEMA
from .noop import check_noop

TARGET = TableName(SCHEMA, "stale")
MODE = {"reload_changed": True}

_INSERT_MARKER = sql.SQL(
    "INSERT INTO {} (target_table, partition_date, task_family, task_id, rows_loaded, bytes_loaded, source_objects,"
    " started_at, finished_at, host) VALUES (%s, %s, 'LoadTransactions', %s, 1, %s, %s, now(), now(), 'bench')"
)


def seed_fresh(bench: Bench, dates: list[datetime.date]) -> None:
    """One object per date in S3 and a marker row listing exactly it: every date loaded, nothing changed since."""
    client, rows = bench.stack.s3_client, []
    for date in dates:
        key, body = object_key(date), f"id,txn_date\n1,{date}\n".encode()
        etag = client.put_object(Bucket=BUCKET, Key=key, Body=body)["ETag"].strip('"')
        sources = json.dumps([{"key": key, "size": len(body), "etag": etag, "rows": 1}])
        rows.append((str(TARGET), date, f"LoadTransactions(date={date})", len(body), sources))
    bench.stack.execute(q.create_schema(MARKER.schema))
    bench.stack.execute(q.create_marker_table(MARKER))
    with bench.stack.connect() as conn, conn, conn.cursor() as cur:
        cur.executemany(_INSERT_MARKER.format(q.table_ident(MARKER)), rows)


def run(bench: Bench) -> SectionResult:
    dates = bench.new_dates(bench.options.stale_days)
    bench.log(f"{len(dates)} loaded, unchanged dates: one object and one marker row each")
    seed_fresh(bench, dates)
    config = bench.stack.config_file("stale", str(TARGET))
    args = load_range(dates[0], len(dates), local_scheduler=True)
    plain: list[ProcessRun] = []
    mode: list[ProcessRun] = []
    for _ in range(bench.options.noop_repeat):
        plain.append(check_noop(bench.stack.luigi(args, config, bench.options.timeout_s)))
        mode.append(check_noop(bench.stack.luigi(load_range(dates[0], len(dates), local_scheduler=True,
                                                            of_params=MODE), config, bench.options.timeout_s)))
    probe = run_probe(bench, config, dates)
    backfills = run_backfills(bench, config, dates)
    result = SectionResult("stale", data={"days": len(dates), "plain_s": [r.wall_s for r in plain],
                                          "mode_s": [r.wall_s for r in mode], "probe": probe, "backfill": backfills})
    result.tables = [stale_table(len(dates), plain, mode, probe), backfill_table(len(dates), backfills)]
    return result


def run_backfills(bench: Bench, config: Path, dates: list[datetime.date]) -> dict[str, dict[str, float]]:
    """``luigi-pipelines backfill`` of the fresh dates without and with ``--reload-changed``: the median wall time
    of ``noop_repeat`` runs each, and the ListObjects requests one run made (from the S3 server's log)."""
    stop = dates[-1] + datetime.timedelta(days=1)
    args = ["-m", "luigi_pipelines.cli", "backfill", "--module", PIPELINE_MODULE, "--task", "LoadTransactions",
            "--start", dates[0].isoformat(), "--stop", stop.isoformat(), "--now", f"{stop}T05:00:00Z",
            "--local-scheduler"]
    found = {}
    for name, extra in (("plain", []), ("mode", ["--reload-changed"])):
        runs, listings = [], 0
        for _ in range(bench.options.noop_repeat):
            mark = len(bench.stack.s3.output())
            runs.append(check_noop(bench.stack.python([*args, *extra], config, bench.options.timeout_s)))
            listings = sum(bench.stack.s3.listings(BUCKET, mark).values())
        found[name] = {"wall_s": median([r.wall_s for r in runs]), "listings": listings}
    return found


def backfill_table(days: int, found: dict[str, dict[str, float]]) -> Table:
    plain, mode = found["plain"], found["mode"]
    table = Table(f"`luigi-pipelines backfill` of {days} loaded dates, all fresh, without / with --reload-changed",
                  ["what", "dates", "seconds", "ms per date", "S3 listings"])
    table.rows = [["backfill", days, plain["wall_s"], None, plain["listings"]],
                  ["backfill --reload-changed", days, mode["wall_s"], 1000 * (mode["wall_s"] - plain["wall_s"]) / days,
                   mode["listings"]]]
    table.notes = ["'ms per date' is the time above the plain backfill; listings are ListObjects requests of one run"]
    return table


def run_probe(bench: Bench, config: Path, dates: list[datetime.date]) -> dict[str, float]:
    args = ["-m", "bench.probe", "--start", dates[0].isoformat(), "--days", str(len(dates)), "--loop-days", "0",
            "--reload-changed"]
    probe = bench.stack.python(args, config, bench.options.timeout_s)
    found: dict[str, float] = json.loads(probe.stdout.strip().splitlines()[-1])
    if found["bulk_complete_done"] != len(dates) or found["plain_done"] != len(dates):
        raise BenchError(f"the probe did not find every date complete and fresh: {found}")
    return found


def stale_table(days: int, plain: list[ProcessRun], mode: list[ProcessRun], probe: dict[str, float]) -> Table:
    plain_s, mode_s = median([r.wall_s for r in plain]), median([r.wall_s for r in mode])
    table = Table(f"Stale check of {days} loaded dates, all fresh (reload_changed mode) vs the plain marker check",
                  ["what", "dates", "seconds", "ms per date"])
    table.rows = [
        ["`luigi RangeDaily`, no-op rerun", days, plain_s, None],
        ["`luigi RangeDaily --of-params '{\"reload_changed\": true}'`, no-op rerun", days, mode_s,
         1000 * (mode_s - plain_s) / days],
        ["bulk_complete(), in-process, one query", days, probe["plain_s"], 1000 * probe["plain_s"] / days],
        ["bulk_complete() in the mode: one query + one listing per date", days, probe["bulk_complete_s"],
         1000 * probe["bulk_complete_s"] / days],
    ]
    table.notes = [f"commands: median of {len(plain)} run(s) each, whole processes, local scheduler; 'ms per date' "
                   "of the mode's rerun is its time above the plain rerun. S3 is the local moto server: a listing "
                   "against AWS costs a round trip more"]
    return table


SECTION = Section("stale", "reload_changed mode: the stale check of a year of fresh dates (one listing per date)", run)
