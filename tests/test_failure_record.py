"""Failed attempts on record: written outside the rolled-back transaction, never in the load's way, and
cleared by the next success inside its own transaction (``luigi_pipelines.partition_failure``)."""
from __future__ import annotations

import datetime
import json
import logging
import socket
import subprocess
import sys
import time
from pathlib import Path

import psycopg2
import pytest
from luigi.execution_summary import LuigiStatusCode

from luigi_pipelines import BadInputError, db
from luigi_pipelines.config import database_settings
from luigi_pipelines.devstack.local import free_port
from luigi_pipelines.partitions import ScopedTable, TableName
from tests.conftest import ROOT, run_task

pytestmark = [pytest.mark.postgres, pytest.mark.s3]
D1 = datetime.date(2019, 2, 1)
GOOD = "id,day,v\n1,2019-02-01,x\n"
BAD = "id,day,v\n1,2019-02-01,x\nfour,2019-02-01,y\n"


def failures(stack) -> list[tuple]:
    if not stack.has_table(stack.marker_schema, "partition_failure"):
        return []
    return stack.query(f"SELECT target_table, partition_date, task_family, error_class, message, s3_key, host, "
                       f"failed_at, attempts FROM {stack.marker_schema}.partition_failure")


def test_a_failed_load_is_on_record_and_the_next_success_clears_it(stack, make_task):
    stack.put("d/2019-02-01/a.csv", GOOD)
    stack.put("d/2019-02-01/b.csv", BAD)
    cls = make_task()
    before = stack.query("SELECT clock_timestamp()")[0][0]
    assert run_task(cls(date=D1)).status == LuigiStatusCode.FAILED

    [(key, day, family, error_class, message, s3_key, host, failed_at, attempts)] = failures(stack)
    assert (key, day, family, error_class, s3_key, host, attempts) == (
        f"{stack.schema}.t", D1, "LoadT", "BadInputError", "d/2019-02-01/b.csv", socket.gethostname(), 1)
    assert message == f"s3://{stack.bucket}/d/2019-02-01/b.csv line 3 column id: invalid input syntax for type " \
                      'bigint: "four"'
    assert before < failed_at < stack.query("SELECT clock_timestamp()")[0][0]
    assert stack.markers(f"{stack.schema}.t") == {}  # the load itself rolled back
    assert stack.query(f"SELECT count(*) FROM {stack.schema}.t") == [(0,)]

    assert run_task(cls(date=D1)).status == LuigiStatusCode.FAILED
    assert [r[-1] for r in failures(stack)] == [2]  # attempts since the last success

    stack.put("d/2019-02-01/b.csv", "id,day,v\n2,2019-02-01,y\n")
    assert run_task(cls(date=D1)).status == LuigiStatusCode.SUCCESS
    assert failures(stack) == []
    assert stack.markers(f"{stack.schema}.t")[D1][0] == 2


def test_the_record_is_cleared_inside_the_success_transaction(stack, make_task):
    """Until the commit, another session still sees the failure; a success that fails at the last moment
    leaves the record (now of its own failure)."""
    stack.put("d/2019-02-01/a.csv", BAD)
    cls = make_task()
    assert run_task(cls(date=D1)).status == LuigiStatusCode.FAILED
    stack.put("d/2019-02-01/a.csv", GOOD)
    seen = {}

    def look_then_fail(self, tx):
        tx.cursor.execute(f"SELECT count(*) FROM {stack.marker_schema}.partition_failure")
        seen["inside"] = tx.cursor.fetchone()[0]
        seen["outside"] = len(failures(stack))
        raise RuntimeError("before_commit refuses")

    with pytest.raises(RuntimeError, match="refuses"):
        make_task(before_commit=look_then_fail)(date=D1).run()
    assert seen == {"inside": 0, "outside": 1}
    [row] = failures(stack)
    assert row[3:5] == ("RuntimeError", "before_commit refuses") and row[5] is None and row[-1] == 2
    assert stack.markers(f"{stack.schema}.t") == {}


def test_recording_never_blocks_nor_hides_the_error(stack, make_task, caplog):
    """The failures table locked by someone else: the record gives up after its 2 s lock timeout, says so in
    the log, and the load's own error is what the caller gets."""
    stack.put("d/2019-02-01/a.csv", BAD)
    cls = make_task()
    assert run_task(cls(date=D1)).status == LuigiStatusCode.FAILED  # creates the tables, one record
    locker = psycopg2.connect(stack.pg.dsn)
    try:
        with locker.cursor() as cur:
            cur.execute(f"LOCK TABLE {stack.marker_schema}.partition_failure IN ACCESS EXCLUSIVE MODE")
        started = time.monotonic()
        with caplog.at_level(logging.WARNING), pytest.raises(BadInputError, match="line 3 column id"):
            cls(date=D1).run()
        took = time.monotonic() - started
    finally:
        locker.rollback()
        locker.close()
    assert took < 10, took
    assert "could not record the failed attempt" in caplog.text and "lock timeout" in caplog.text
    assert [r[-1] for r in failures(stack)] == [1]  # the second attempt is not on record, and nothing broke


def test_an_unreachable_database_is_logged_not_raised(stack, caplog):
    failure = db.Failure(ScopedTable.of(TableName(stack.schema, "t")), D1, "LoadT", "LoadT(2019-02-01)", "LoadError",
                         "boom")
    closed = database_settings().__class__(host="127.0.0.1", port=str(free_port()), dbname="test", user="postgres")
    started = time.monotonic()
    with caplog.at_level(logging.WARNING):
        assert db.record_failure(closed, TableName(stack.marker_schema, "partition_failure"), failure) is False
    assert time.monotonic() - started < 10
    assert "could not record the failed attempt" in caplog.text and "Connection refused" in caplog.text


def _cli(stack, cfg, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "luigi_pipelines.cli", *args], cwd=ROOT, env=stack.env(cfg),
                          capture_output=True, text=True, timeout=300)


def _state(stack, cfg, *args: str) -> tuple[int, dict[str, str]]:
    """``status --json`` of Feb 1-2: its exit code and each date's state."""
    result = _cli(stack, cfg, "status", "--start", "2019-02-01", "--stop", "2019-02-03", "--json", *args)
    [pipeline] = json.loads(result.stdout)["pipelines"]
    return result.returncode, {d["date"]: d["state"] for d in pipeline["dates"]}


WINDOW = ["--module", "luigi_pipelines.pipelines.transactions", "--task", "LoadTransactions",
          "--start", "2019-02-01", "--stop", "2019-02-02", "--local-scheduler"]
RESTORED = "transactions/2019-02-01/part-0000.csv"


@pytest.fixture
def loaded(stack, tmp_path) -> tuple[Path, bytes]:
    """Feb 1 loaded by a real backfill, then its object replaced with bad bytes (the first data line's id is no
    longer a number). Returns the config file for child processes and the bytes that were loaded."""
    from luigi_pipelines.devstack.demo import seed_bucket

    seed_bucket(stack.s3.endpoint_url, stack.s3.env, bucket=stack.bucket, start=D1, days=1)
    cfg = stack.write_config(tmp_path / "kept.cfg")
    assert _cli(stack, cfg, "backfill", *WINDOW).returncode == 0
    body = stack.s3_client.get_object(Bucket=stack.bucket, Key=RESTORED)["Body"].read()
    stack.put(RESTORED, body.replace(b"\n", b"\nx", 1))
    return cfg, body


def test_a_failed_reload_of_bytes_restored_since_is_superseded_by_the_next_check(stack, loaded):
    """Load, replace an object with bad bytes, a failing reload (--reload-changed), restore the loaded bytes: the
    date's data is what S3 holds again. The next check of its sources (status --check-sources, or a backfill in
    the reload_changed mode) supersedes the failure record, so status stops exiting 30; a date that never loaded
    (Feb 2) stays failed."""
    cfg, body = loaded
    rows = stack.query(f"SELECT count(*) FROM {stack.schema}.transaction")
    assert _cli(stack, cfg, "backfill", *WINDOW, "--reload-changed").returncode == 30
    stack.put(RESTORED, body)  # the bytes that were loaded, as they were
    stack.put("transactions/2019-02-02/part-0000.csv", b"not,a,transaction\n")
    assert _cli(stack, cfg, "backfill", *WINDOW[:4], "--start", "2019-02-02", "--stop", "2019-02-03",
                "--local-scheduler").returncode == 30

    assert _state(stack, cfg) == (30, {"2019-02-01": "failed", "2019-02-02": "failed"})  # not checked: not known
    assert _state(stack, cfg, "--check-sources") == (30, {"2019-02-01": "loaded", "2019-02-02": "failed"})
    assert _state(stack, cfg) == (30, {"2019-02-01": "loaded", "2019-02-02": "failed"})  # superseded for good
    assert [(r[1], r[-1]) for r in failures(stack)] == [(datetime.date(2019, 2, 2), 1)]
    assert stack.query(f"SELECT count(*) FROM {stack.schema}.transaction") == rows  # the load kept throughout
    one_day = ["status", "--start", "2019-02-01", "--stop", "2019-02-02"]
    assert _cli(stack, cfg, *one_day).returncode == 0


def test_a_backfill_in_the_reload_changed_mode_supersedes_it_too(stack, loaded):
    cfg, body = loaded
    forced = subprocess.run([sys.executable, "-m", "luigi", "--module", "luigi_pipelines.pipelines.transactions",
                             "LoadTransactions", "--date", "2019-02-01", "--force", "--local-scheduler"],
                            cwd=ROOT, env=stack.env(cfg), capture_output=True, text=True, timeout=300)
    assert forced.returncode == 30, forced.stderr[-2000:]
    stack.put(RESTORED, body)
    assert _state(stack, cfg)[1]["2019-02-01"] == "failed"
    rerun = _cli(stack, cfg, "backfill", *WINDOW, "--reload-changed")
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert failures(stack) == []
    assert "the failed attempt on record (BadInputError" in rerun.stderr and "is superseded" in rerun.stderr
    assert _cli(stack, cfg, "status", "--start", "2019-02-01", "--stop", "2019-02-02").returncode == 0
