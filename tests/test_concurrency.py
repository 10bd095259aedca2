"""Independent runs of the same partitions at once: each date ends loaded exactly once, and every run succeeds.

luigid deduplicates tasks among its own workers only; here nothing does but the partition lock:
separate ``--local-scheduler`` processes racing from one instant, and cron runs overlapping a
manual backfill on luigid.
"""
from __future__ import annotations

import datetime
import sys
from collections import Counter

import boto3
import pytest

from luigi_pipelines.backfill import range_daily_args
from luigi_pipelines.devstack.local import LocalS3, Luigid, wait_until
from luigi_pipelines.partitions import TableName, lock_key
from tests.scheduling_support import (
    HOOKED_MODULE,
    HOOKED_TASK,
    assert_exactly_once,
    backfill_command,
    describe,
    luigid_config,
    read_runs,
    sample_while,
    seed_days,
    start,
    table_counts,
    wait_all,
    worker_settings,
)

pytestmark = [pytest.mark.slow, pytest.mark.postgres, pytest.mark.s3]

START = datetime.date(2019, 2, 1)


def _advisory_waiters(cur, crc: int) -> int:
    """Sessions waiting right now for one of this test's partition locks (pg_locks shows key 1 as an oid)."""
    cur.execute("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted AND objsubid = 2"
                " AND classid::bigint = %s", (crc % (1 << 32),))
    return cur.fetchone()[0]


def test_eight_processes_same_range_load_each_date_once(stack, tmp_path):
    """8 processes start the same 30-day RangeDaily at one instant: every date loaded once with exact rows,
    every process exits 0, the losers waited on the partition lock and never downloaded a byte."""
    with LocalS3(log=tmp_path / "moto.log") as s3:
        client = boto3.client("s3", endpoint_url=s3.endpoint_url, region_name="us-east-1",
                              aws_access_key_id="k", aws_secret_access_key="s")
        client.create_bucket(Bucket=stack.bucket)
        expected = seed_days(stack, START, 30, put=lambda k, b: client.put_object(Bucket=stack.bucket, Key=k, Body=b))
        objects = [o["Key"] for o in client.list_objects_v2(Bucket=stack.bucket)["Contents"]]
        stack.set_config("s3", "endpoint_url", s3.endpoint_url)  # this test's S3 counts the downloads
        cfg = stack.write_config(tmp_path / "race.cfg")
        hooks = tmp_path / "hooks"
        hooks.mkdir()
        go = tmp_path / "go"
        env = {**stack.env(cfg), "LP_HOOK_DIR": str(hooks), "LP_HOOK_HOLD_S": "0.05"}
        luigi_args = range_daily_args(HOOKED_MODULE, HOOKED_TASK, START, START + datetime.timedelta(days=30),
                                      local_scheduler=True)
        procs = [start(f"p{n}", [sys.executable, "tests/start_together.py", str(go), *luigi_args], env, tmp_path)
                 for n in range(8)]
        crc = lock_key(TableName(stack.schema, "transaction"), START)[0]
        try:
            wait_until(lambda: len(list(tmp_path.glob("go.ready.*"))) == 8, 120, "8 processes ready to start")
            go.touch()
            waiters = sample_while(procs, lambda cur: _advisory_waiters(cur, crc), stack.pg.dsn, 240)
            codes = wait_all(procs, 240)
        finally:
            for p in procs:
                p.kill()
        gets = s3.object_gets(stack.bucket)

    assert codes == {f"p{n}": 0 for n in range(8)}, describe(procs)
    assert_exactly_once(stack, expected)
    assert Counter(gets) == Counter(objects)  # each object downloaded once: by the winner, after the lock
    assert max(waiters) >= 1  # losers did wait on a partition lock
    runs = read_runs(hooks)
    assert all(r.end is not None for r in runs)
    assert len(runs) > 30  # dates were run by more than one process; all but one run of each were no-ops


def test_cron_runs_overlapping_a_manual_backfill(stack, tmp_path):
    """A manual backfill on luigid (2 workers) and three cron runs of the last 10 days (two with their own
    scheduler, one on the same luigid) start together: exact data, every run exits 0, today is not loaded."""
    today = START + datetime.timedelta(days=20)  # 2019-02-21: the cron runs fire at 02:15 UTC that day
    expected = seed_days(stack, START, 21)  # data for today exists too, but the day is not over
    worker_settings(stack)
    cfg = stack.write_config(tmp_path / "worker.cfg")
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    env = {**stack.env(cfg), "LP_HOOK_DIR": str(hooks), "LP_HOOK_HOLD_S": "0.05"}
    cron = ["--days-back", "10", "--now", f"{today}T02:15:00Z"]
    directory = tmp_path / "luigid"
    directory.mkdir()
    overrides = {"scheduler": {"worker_disconnect_delay": 2, "retry_delay": 0.5}}

    with Luigid(directory, luigid_config(directory / "luigid.cfg", overrides)) as luigid:
        manual = ["--start", START.isoformat(), "--stop", today.isoformat(), "--now", f"{today}T09:00:00Z"]
        procs = [
            start("manual1", backfill_command(*manual, *luigid.scheduler_args), env, tmp_path),
            start("manual2", backfill_command(*manual, *luigid.scheduler_args), env, tmp_path),
            start("cron_local1", backfill_command(*cron, "--local-scheduler"), env, tmp_path),
            start("cron_local2", backfill_command(*cron, "--local-scheduler"), env, tmp_path),
            start("cron_luigid", backfill_command(*cron, *luigid.scheduler_args), env, tmp_path),
        ]
        codes = wait_all(procs, 240)

    assert set(codes.values()) == {0}, describe(procs)
    del expected[today]
    assert_exactly_once(stack, expected)
    assert today not in table_counts(stack)
    window = [d.isoformat() for d in sorted(expected)[-10:]]
    assert all(f"[{window[0]}, {today})" in p.output() for p in procs if p.name.startswith("cron"))
    assert all(r.end is not None for r in read_runs(hooks))

