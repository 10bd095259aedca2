"""The embedded demo: a local PostgreSQL and S3, 30 days of sample data, a RangeDaily backfill and its no-op rerun,
two late days (one with bad rows, one broken), the same days' refunds from JSON lines, daily summaries, and the
status calendar (terminal and HTML)."""
from __future__ import annotations

import contextlib
import datetime
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import boto3
import psycopg2
from psycopg2 import sql

from .. import db
from .. import sql as q
from ..backfill import Scheduler, Window, luigi_command
from ..partitions import TableName, date_range
from .local import LocalS3
from .postgres import LocalPostgres
from .sample import HEADER, account_lines, accounts_csv, csv_bytes, day_objects, refund_objects, transaction_lines

BUCKET = "example-transactions"
TABLE = "public.transaction"  # the example pipeline's defaults, which the demo does not change
ACCOUNTS_TABLE = "public.account"
REFUNDS = "public.refund"
MARKER_SCHEMA = "luigi_pipelines"
START = datetime.date(2019, 2, 1)
DAYS = 30
LATE = (START + datetime.timedelta(days=DAYS), START + datetime.timedelta(days=DAYS + 1))  # rows rejected; broken
RESENT = START + datetime.timedelta(days=13)  # a date whose producer sends one more object after its load: stale
SHOWN_DAYS = DAYS + 4  # the status window: the two late days, then two days without data
PIPELINE = "luigi_pipelines.pipelines.transactions"
HTML = Path("demo-status.html")  # written in the current directory


def _s3(endpoint_url: str, env: dict[str, str]) -> Any:
    """A boto3 client of the local S3 server (``LocalS3.env`` has its credentials)."""
    return boto3.client("s3", endpoint_url=endpoint_url, aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
                        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"], region_name=env["AWS_DEFAULT_REGION"])


def seed_bucket(endpoint_url: str, env: dict[str, str], bucket: str = BUCKET, start: datetime.date = START,
                days: int = DAYS) -> int:
    """Upload ``days`` days of sample transactions; returns the number of objects."""
    client = _s3(endpoint_url, env)
    client.create_bucket(Bucket=bucket)
    count = 0
    for day in date_range(start, start + datetime.timedelta(days=days)):
        for key, body in day_objects(day, rows=500 + 20 * day.day, parts=1 + day.day % 3).items():
            client.put_object(Bucket=bucket, Key=key, Body=body)
            count += 1
    return count


def seed_accounts(endpoint_url: str, env: dict[str, str], bucket: str = BUCKET, start: datetime.date = START,
                  days: int = DAYS) -> None:
    """Upload a snapshot of the accounts for each of ``days`` days (``accounts/<date>/accounts.csv``)."""
    client = _s3(endpoint_url, env)
    for day in date_range(start, start + datetime.timedelta(days=days)):
        client.put_object(Bucket=bucket, Key=f"accounts/{day}/accounts.csv", Body=accounts_csv(day))


def show_accounts(dsn: str, last: datetime.date) -> None:
    """The merged accounts next to the last snapshot: the same accounts, the same tiers."""
    with contextlib.closing(psycopg2.connect(dsn)) as conn, conn, conn.cursor() as cur:
        cur.execute(q.select_columns(TableName.parse(ACCOUNTS_TABLE), ["account", "name", "tier"]))
        merged = {",".join(row) for row in cur.fetchall()}
    same = merged == set(account_lines(last))
    print(f"{ACCOUNTS_TABLE}: {len(merged)} accounts, {'the same as' if same else 'NOT the same as'} the {last} snapshot")


def seed_refunds(endpoint_url: str, env: dict[str, str], bucket: str = BUCKET, start: datetime.date = START,
                 days: int = DAYS) -> int:
    """Upload ``days`` days of sample refunds, one gzipped JSON-lines object a day; returns the number of refunds."""
    client = _s3(endpoint_url, env)
    count = 0
    for day in date_range(start, start + datetime.timedelta(days=days)):
        for key, body in refund_objects(day, rows=20 + day.day).items():
            client.put_object(Bucket=bucket, Key=key, Body=body)
        count += 20 + day.day
    return count


def show_refunds(dsn: str) -> None:
    """How many refunds the JSON lines gave, and how many kept keys that no column takes."""
    with contextlib.closing(psycopg2.connect(dsn)) as conn, conn, conn.cursor() as cur:
        cur.execute(sql.SQL("SELECT count(*), count(DISTINCT refund_date), count(attributes) FROM {}").format(
            q.table_ident(TableName.parse(REFUNDS))))
        rows, days, kept = cur.fetchone()
    print(f"{rows} refunds in {REFUNDS} over {days} dates; {kept} kept keys no column takes in attributes")


def resend_day(endpoint_url: str, env: dict[str, str], bucket: str = BUCKET, day: datetime.date = RESENT) -> str:
    """The producer sends ``day`` again after its load, one more object of rows: the date is stale; returns its key."""
    client = _s3(endpoint_url, env)
    key = f"transactions/{day}/part-0009.csv"
    client.put_object(Bucket=bucket, Key=key, Body=csv_bytes(transaction_lines(day, day.toordinal() * 100_000 + 90_000, 40)))
    return key


def seed_late_days(endpoint_url: str, env: dict[str, str], bucket: str = BUCKET) -> None:
    """The two late days: the first with 2 bad rows among good ones, the second with a header that does not match."""
    client = _s3(endpoint_url, env)
    rejects, broken = LATE
    lines = transaction_lines(rejects, rejects.toordinal() * 100_000, 600)
    lines[100], lines[400] = "x" + lines[100], lines[400].replace(",EUR,", ",EUR,extra,").replace(",USD,", ",USD,extra,")
    client.put_object(Bucket=bucket, Key=f"transactions/{rejects}/part-0000.csv", Body=csv_bytes(lines))
    body = csv_bytes(transaction_lines(broken, broken.toordinal() * 100_000, 600), header=False)
    client.put_object(Bucket=bucket, Key=f"transactions/{broken}/part-0000.csv",
                      Body=HEADER.replace("account", "acct").encode() + b"\n" + body)


def backfill_command(start: datetime.date, stop: datetime.date, now: datetime.datetime, workers: int = 2,
                     task: str = "LoadTransactions", extra: Sequence[str] = ()) -> list[str]:
    """luigi's RangeDaily of the example pipeline over ``[start, stop)``, as ``luigi-pipelines backfill`` builds it."""
    return luigi_command(PIPELINE, task, Window(start, stop, now), Scheduler(local=True), workers, extra=extra)


def status_command(start: datetime.date, stop: datetime.date, html: Path) -> list[str]:
    """``luigi-pipelines status`` of the load and the summary over ``[start, stop)``, writing ``html``."""
    return [sys.executable, "-m", "luigi_pipelines.cli", "status", "--module", PIPELINE, "--task", "LoadTransactions",
            "--task", "SummarizeTransactions", "--start", start.isoformat(), "--stop", stop.isoformat(),
            "--check-sources", "--html", str(html)]


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


def run(project_dir: Path | None = None, html: Path = HTML) -> int:
    """The whole demo; returns a process exit code: 0 when every step ended as the demo expects."""
    stop = START + datetime.timedelta(days=DAYS)
    now = datetime.datetime.now(datetime.timezone.utc)
    with LocalPostgres() as pg, LocalS3() as s3:
        env = {**os.environ, **pg.env, **s3.env}
        print(f"local PostgreSQL on socket {pg.socket_dir}, local S3 on {s3.endpoint_url}")
        print(f"seeded {seed_bucket(s3.endpoint_url, s3.env)} objects for {DAYS} days from {START}")
        codes = [_luigi("", backfill_command(START, stop, now), env, project_dir)]
        show_loaded(pg.dsn)
        codes.append(_luigi("the same command again (every date is done: nothing runs)",
                            backfill_command(START, stop, now), env, project_dir))
        show_loaded(pg.dsn, per_date=False)
        seed_accounts(s3.endpoint_url, s3.env)
        codes.append(_luigi("the accounts dimension (MergeAccounts): each day's snapshot merged by account, the oldest "
                            "date first", backfill_command(START, stop, now, task="MergeAccounts"), env, project_dir))
        show_accounts(pg.dsn, stop - datetime.timedelta(days=1))
        seed_late_days(s3.endpoint_url, s3.env)
        late = _luigi(f"two late days: {LATE[0]} with 2 bad rows (up to 5 may be set aside), {LATE[1]} with a "
                      f"header that does not match (expected to fail: exit 30)",
                      backfill_command(LATE[0], LATE[1] + datetime.timedelta(days=1), now,
                                       extra=["--LoadTransactions-max-bad-rows", "5"]), env, project_dir)
        print(f"seeded {seed_refunds(s3.endpoint_url, s3.env)} refunds as JSON lines (refunds/<date>/part-0000.jsonl.gz)")
        codes.append(_luigi("JSON lines: the same days' refunds (LoadRefunds: each column from the key of its name)",
                            backfill_command(START, stop, now, task="LoadRefunds"), env, project_dir))
        show_refunds(pg.dsn)
        codes.append(_luigi("daily totals per account of the loaded days (SummarizeTransactions)",
                            backfill_command(START, LATE[1], now, task="SummarizeTransactions"), env, project_dir))
        print(f"\nthe producer sent {RESENT} again after its load: s3://{BUCKET}/{resend_day(s3.endpoint_url, s3.env)} "
              f"(status --check-sources shows the date stale; backfill --reload-changed would reload it)")
        shown_stop = START + datetime.timedelta(days=SHOWN_DAYS)
        print(f"\n$ luigi-pipelines status --check-sources ... --start {START} --stop {shown_stop}"
              f" --html {html}  (exit 30 expected: {LATE[1]} failed)", flush=True)
        shown = subprocess.run(status_command(START, shown_stop, html), env=env, cwd=project_dir)
        print(f"exit code {shown.returncode}")
    print("stopped the local PostgreSQL and S3")
    expected = not any(codes) and late == 30 and shown.returncode == 30
    return 0 if expected else 1


def _luigi(title: str, cmd: list[str], env: dict[str, str], cwd: Path | None) -> int:
    """Run one luigi command, print its execution summary and exit code; return the code."""
    if title:
        print(f"\n$ {title}")
    print("$ luigi " + " ".join(cmd[3:]))
    result = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True)
    print(_summary(result.stderr) or result.stderr[-3000:])
    print(f"exit code {result.returncode}\n", flush=True)
    return result.returncode


def _summary(log: str) -> str:
    """luigi's execution summary, the block between its ===== lines."""
    lines = log.splitlines()
    marks = [i for i, line in enumerate(lines) if line.startswith("=====")]
    return "\n".join(lines[marks[0]: marks[-1] + 1]) if len(marks) >= 2 else ""
