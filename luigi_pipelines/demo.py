"""The embedded demo: a local PostgreSQL and S3, 30 days of sample data, a RangeDaily backfill and its no-op rerun."""
from __future__ import annotations

import contextlib
import datetime
import os
import subprocess
from pathlib import Path

import boto3
import psycopg2

from . import db
from . import sql as q
from .backfill import Scheduler, Window, luigi_command
from .local import LocalPostgres, LocalS3
from .partitions import TableName, date_range
from .sample import day_objects

BUCKET = "example-transactions"
TABLE = "public.transaction"  # the example pipeline's defaults, which the demo does not change
MARKER_SCHEMA = "luigi_pipelines"
START = datetime.date(2019, 2, 1)
DAYS = 30


def seed_bucket(endpoint_url: str, env: dict[str, str], bucket: str = BUCKET, start: datetime.date = START,
                days: int = DAYS) -> int:
    """Upload ``days`` days of sample transactions; returns the number of objects."""
    client = boto3.client("s3", endpoint_url=endpoint_url, aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
                          aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"], region_name=env["AWS_DEFAULT_REGION"])
    client.create_bucket(Bucket=bucket)
    count = 0
    for day in date_range(start, start + datetime.timedelta(days=days)):
        for key, body in day_objects(day, rows=500 + 20 * day.day, parts=1 + day.day % 3).items():
            client.put_object(Bucket=bucket, Key=key, Body=body)
            count += 1
    return count


def backfill_command(start: datetime.date, stop: datetime.date, now: datetime.datetime, workers: int = 2) -> list[str]:
    """luigi's RangeDaily of the example pipeline over ``[start, stop)``, as ``luigi-pipelines backfill`` builds it."""
    return luigi_command("luigi_pipelines.pipelines.transactions", "LoadTransactions", Window(start, stop, now),
                         Scheduler(local=True), workers)


def show_loaded(dsn: str, per_date: bool = True) -> None:
    """The marker rows of the demo's table next to the rows actually in it, per date."""
    table, marker = TableName.parse(TABLE), TableName(MARKER_SCHEMA, "partition_marker")
    with contextlib.closing(psycopg2.connect(dsn)) as conn:
        markers = db.marker_summary(conn, marker, table)
        with conn, conn.cursor() as cur:
            cur.execute(q.count_by_date(table, "txn_date"))
            in_table = dict(cur.fetchall())
    if per_date:
        print(f"{'date':<12}{'objects':>8}{'bytes':>10}{'marker rows':>13}{'table rows':>12}")
        for day, loaded, size, objects, _, _ in markers:
            print(f"{day.isoformat():<12}{objects:>8}{size:>10}{loaded:>13}{in_table.get(day, 0):>12}")
    print(f"{len(markers)} partitions, {sum(m[1] for m in markers)} rows in the marker, "
          f"{sum(in_table.values())} in the table")


def run(project_dir: Path | None = None) -> int:
    """The whole demo; returns a process exit code."""
    stop = START + datetime.timedelta(days=DAYS)
    with LocalPostgres() as pg, LocalS3() as s3:
        env = {**os.environ, **pg.env, **s3.env}
        print(f"local PostgreSQL on socket {pg.socket_dir}, local S3 on {s3.endpoint_url}")
        print(f"seeded {seed_bucket(s3.endpoint_url, s3.env)} objects for {DAYS} days from {START}")
        cmd = backfill_command(START, stop, datetime.datetime.now(datetime.timezone.utc))
        print("\n$ luigi " + " ".join(cmd[3:]))
        first = subprocess.run(cmd, env=env, cwd=project_dir, capture_output=True, text=True)
        print(_summary(first.stderr) or first.stderr[-3000:])
        print(f"exit code {first.returncode}\n")
        show_loaded(pg.dsn)
        print("\n$ the same command again (every date is done: nothing runs)")
        second = subprocess.run(cmd, env=env, cwd=project_dir, capture_output=True, text=True)
        print(_summary(second.stderr) or second.stderr[-3000:])
        print(f"exit code {second.returncode}")
        show_loaded(pg.dsn, per_date=False)
    print("stopped the local PostgreSQL and S3")
    return first.returncode or second.returncode


def _summary(log: str) -> str:
    """luigi's execution summary, the block between its ===== lines."""
    lines = log.splitlines()
    marks = [i for i, line in enumerate(lines) if line.startswith("=====")]
    return "\n".join(lines[marks[0]: marks[-1] + 1]) if len(marks) >= 2 else ""
