"""The example pipeline through the real ``luigi`` command line, and two luigi traps it avoids."""
from __future__ import annotations

import datetime
import os
import subprocess
import sys
from typing import Any

import pytest

from luigi_pipelines.backfill import range_daily_args
from luigi_pipelines.devstack.demo import seed_bucket
from tests.conftest import ROOT
from tests.scheduling_support import csv_data_rows

pytestmark = [pytest.mark.postgres, pytest.mark.s3]

# luigi's own defaults (what a project without a [retcode] section gets)
_LUIGI_DEFAULT_RETCODES = "[retcode]\n" + "".join(
    f"{name} = 0\n" for name in ("already_running", "missing_data", "not_run", "task_failed", "scheduling_error"))
D = datetime.date


def range_daily(start: D, stop: D, module: str = "luigi_pipelines.pipelines.transactions",
                task: str = "LoadTransactions", **options: Any) -> list[str]:
    return range_daily_args(module, task, start, stop, local_scheduler=True, **options)


def partition_counts(stack) -> dict[datetime.date, int]:
    rows = stack.query(f"SELECT txn_date, count(*) FROM {stack.schema}.transaction GROUP BY 1")
    return dict(rows)


def rows_in_bucket(stack, bucket: str) -> dict[datetime.date, int]:
    """The data rows per date of the objects ``transactions/<date>/...`` in ``bucket``, read back from S3."""
    client, rows = stack.s3_client, {}
    for obj in client.list_objects_v2(Bucket=bucket)["Contents"]:
        day = datetime.date.fromisoformat(obj["Key"].split("/")[1])
        body = client.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read()
        rows[day] = rows.get(day, 0) + csv_data_rows(body)
    return rows


def test_example_pipeline_backfill_then_noop(stack, tmp_path):
    objects = seed_bucket(stack.s3.endpoint_url, stack.s3.env, bucket=stack.bucket + "-x",
                          start=datetime.date(2019, 2, 1), days=5)
    assert objects > 5
    stack.set_config("transactions", "bucket", stack.bucket + "-x")
    cfg = stack.write_config(tmp_path / "test.cfg")

    first = stack.luigi(*range_daily(D(2019, 2, 1), D(2019, 2, 6), workers=2), config_file=cfg)
    assert first.returncode == 0, first.stderr[-3000:]
    assert "5 LoadTransactions" in first.stderr
    counts = partition_counts(stack)
    markers = stack.markers(f"{stack.schema}.transaction")
    assert sorted(counts) == [datetime.date(2019, 2, d) for d in range(1, 6)]
    assert counts == {day: m[0] for day, m in markers.items()}
    assert counts == rows_in_bucket(stack, stack.bucket + "-x")

    second = stack.luigi(*range_daily(D(2019, 2, 1), D(2019, 2, 6)), config_file=cfg)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "Did not run any tasks" in second.stderr
    assert partition_counts(stack) == counts
    assert stack.markers(f"{stack.schema}.transaction") == markers

    status = subprocess.run([sys.executable, "-m", "luigi_pipelines.cli", "status", "--start", "2019-02-01",
                             "--stop", "2019-02-08"], cwd=ROOT, env=stack.env(cfg), capture_output=True, text=True)
    assert status.returncode == 21, status.stderr  # two of the seven dates are not loaded
    assert "2019-02  #####.." in status.stdout
    assert "7 dates: 5 loaded, 0 failed, 2 missing" in status.stdout
    assert "missing 2: 2019-02-06, 2019-02-07" in status.stdout


def test_missing_data_exits_nonzero(stack, tmp_path):
    """A date without objects is missing external data: nothing is written and cron sees exit 20."""
    cfg = stack.write_config(tmp_path / "test.cfg")
    result = stack.luigi(*range_daily(D(2019, 2, 1), D(2019, 2, 2)), config_file=cfg)
    assert result.returncode == 20, result.stderr[-2000:]
    assert "does not exist (yet?)" in result.stderr
    assert stack.markers(f"{stack.schema}.transaction") == {}


def test_days_back_trap_old_dates_are_not_dropped(stack, tmp_path):
    """luigi's RangeDaily ignores dates more than days_back (default 100) before now; our luigi.cfg lifts it."""
    seed_bucket(stack.s3.endpoint_url, stack.s3.env, bucket=stack.bucket + "-x", start=datetime.date(2019, 2, 1), days=3)
    stack.set_config("transactions", "bucket", stack.bucket + "-x")
    cfg = stack.write_config(tmp_path / "test.cfg")
    now = datetime.datetime(2019, 9, 1, tzinfo=datetime.timezone.utc)  # > 200 days after the range

    dropped = stack.luigi(*range_daily(D(2019, 2, 1), D(2019, 2, 4), now=now, days_back=100), config_file=cfg)
    assert dropped.returncode == 0 and "Empty range" in dropped.stderr  # luigi's default: silently nothing
    assert stack.markers(f"{stack.schema}.transaction") == {}

    loaded = stack.luigi(*range_daily(D(2019, 2, 1), D(2019, 2, 4), now=now), config_file=cfg)
    assert loaded.returncode == 0, loaded.stderr[-2000:]
    assert sorted(stack.markers(f"{stack.schema}.transaction")) == [datetime.date(2019, 2, d) for d in (1, 2, 3)]


def test_no_bulk_complete_trap_exits_nonzero(stack, tmp_path):
    """A task with a path-less output and no bulk_complete crashes RangeDaily; luigi alone exits 0, we don't."""
    cfg = stack.write_config(tmp_path / "test.cfg")
    trap = range_daily(D(2019, 2, 1), D(2019, 2, 3), "tests.trap_tasks", "NoBulkComplete")
    result = stack.luigi(*trap, config_file=cfg)
    assert result.returncode == 35, result.stderr[-2000:]  # [retcode] scheduling_error
    assert "path" in result.stderr  # the AttributeError about the target having no path

    plain = stack.luigi(*trap, config_file=stack.write_config(tmp_path / "plain.cfg", _LUIGI_DEFAULT_RETCODES))
    assert plain.returncode == 0  # the trap itself: without [retcode] the failure is invisible to cron


def test_load_transactions_bulk_complete_avoids_the_trap(stack):
    from luigi_pipelines.pipelines.transactions import LoadTransactions

    assert LoadTransactions.bulk_complete([datetime.date(2019, 2, 1)]) == []


# -- every command: a documented exit code and one line, never a traceback (issue 16, item 9) -------------------

def _cli(*args: str, env: dict[str, str], cwd: Any = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "luigi_pipelines.cli", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


def _one_line_ending(result: subprocess.CompletedProcess, code: int) -> str:
    """The command exited ``code`` with exactly one line on stderr, which ends with ``exit <code>``; that line."""
    lines = result.stderr.splitlines()
    assert result.returncode == code and len(lines) == 1, result.stderr[-3000:]
    assert "Traceback" not in result.stderr and lines[0].endswith(f": exit {code}"), lines
    return lines[0]


WINDOW = ("--start", "2019-02-01", "--stop", "2019-02-03")


def test_a_wrong_module_or_task_is_one_line_and_exit_2(stack, tmp_path):
    env = stack.env(stack.write_config(tmp_path / "test.cfg"))
    for command in ("status", "backfill"):
        extra = ("--local-scheduler",) if command == "backfill" else ()
        line = _one_line_ending(_cli(command, "--module", "mypipes.orders", "--task", "LoadOrders", *WINDOW, *extra,
                                     env=env, cwd=tmp_path), 2)
        assert f"luigi-pipelines {command}: --module mypipes.orders: no module named 'mypipes'" in line
        assert "PYTHONPATH" in line
        line = _one_line_ending(_cli(command, "--task", "LoadOrderz", *WINDOW, *extra, env=env, cwd=tmp_path), 2)
        assert "--task LoadOrderz: module luigi_pipelines.pipelines.transactions has no LoadOrderz" in line
        assert "LoadTransactions" in line  # the tasks it has
    assert stack.markers(f"{stack.schema}.transaction") == {}


def test_postgresql_down_is_one_line_and_exit_35(tmp_path):
    from luigi_pipelines.devstack.local import free_port

    env = {**os.environ, "PGHOST": "127.0.0.1", "PGPORT": str(free_port()), "PYTHONPATH": str(ROOT)}
    status = _one_line_ending(_cli("status", *WINDOW, env=env, cwd=tmp_path), 35)
    assert status.startswith("luigi-pipelines status: cannot reach PostgreSQL: ") and "Connection refused" in status
    backfill = _one_line_ending(_cli("backfill", *WINDOW, "--local-scheduler", env=env, cwd=tmp_path), 35)
    assert "checking which dates are loaded failed (" in backfill and "Connection refused" in backfill


def test_version_comes_from_the_installed_package(tmp_path):
    from importlib.metadata import version

    result = _cli("--version", env={**os.environ}, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"luigi-pipelines {version('luigi-pipelines')}"


def test_status_help_names_stale_and_exit_22(tmp_path):
    result = _cli("status", "--help", env={**os.environ}, cwd=tmp_path)
    assert result.returncode == 0
    text = " ".join(result.stdout.split())
    assert "stale" in text and "22: loaded dates are stale" in text
    overview = " ".join(_cli("--help", env={**os.environ}, cwd=tmp_path).stdout.split())
    assert "22 dates stale" in overview
