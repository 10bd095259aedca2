"""``luigi-pipelines backfill`` and ``status`` for every grain, through the real command lines against PostgreSQL and
S3: an hourly task's backfill and its reload of a changed hour, its status as days of hours (terminal, JSON, HTML),
a monthly task's backfill and status as months (``tests/hourly_tasks.py``, ``tests/compose_tasks.py``)."""
from __future__ import annotations

import datetime
import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.browser_support import Elements, dump_dom
from tests.conftest import ROOT

pytestmark = [pytest.mark.postgres, pytest.mark.s3]
HOURLY = ["--module", "tests.hourly_tasks", "--task", "LoadHourlyEvents"]
MONTHLY = ["--module", "tests.compose_tasks", "--task", "MonthlySales"]
TWO_DAYS = ["--start", "2019-02-01", "--stop", "2019-02-03", "--now", "2019-02-05T05:00:00Z"]


def cli(stack, cfg: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "luigi_pipelines.cli", *args], cwd=ROOT, env=stack.env(cfg),
                          capture_output=True, text=True, timeout=300)


def put_hour(stack, hour: datetime.datetime, body: str | None = None) -> None:
    stack.put(f"events/{hour:%Y/%m/%d/%H}/a.csv", body or f"id,kind\n{hour.day * 100 + hour.hour},k\n")


def markers(stack) -> dict[tuple[str, datetime.date], tuple]:
    return {(key, day): rest for key, day, *rest in stack.query(
        f"SELECT target_table, partition_date, rows_loaded, load_id FROM {stack.marker_schema}.partition_marker")}


@pytest.fixture
def two_days_of_hours(stack, tmp_path) -> Path:
    """Feb 1-2 by the hour: Feb 1 22:00 holds a bad row (its load fails), Feb 1 23:00 has no data yet, the other 46
    hours load (backfill exits 30). Returns the config file of the child processes."""
    for day in (1, 2):
        for h in range(24):
            hour = datetime.datetime(2019, 2, day, h)
            if (day, h) == (1, 22):
                put_hour(stack, hour, "id,kind\nx22,k\n")
            elif (day, h) != (1, 23):
                put_hour(stack, hour)
    cfg = stack.write_config(tmp_path / "run.cfg")
    loaded = cli(stack, cfg, "backfill", *HOURLY, *TWO_DAYS, "--local-scheduler")
    assert loaded.returncode == 30, loaded.stderr[-3000:]
    assert loaded.stderr.splitlines()[-1] == ("luigi-pipelines backfill: luigi exited 30 and hours asked for are not "
                                              "loaded: 2 (2019-02-01T22, 2019-02-01T23): exit 30")
    return cfg


def test_hourly_status_in_the_terminal(stack, two_days_of_hours):
    result = cli(stack, two_days_of_hours, "status", *HOURLY, "--start", "2019-02-01", "--stop", "2019-02-03")
    assert result.returncode == 30, result.stderr[-3000:]
    lines = result.stdout.splitlines()
    assert lines[:5] == [
        f"LoadHourlyEvents  {stack.schema}.transaction  [2019-02-01, 2019-02-03)  by the hour",
        "            0         1         2",
        "            012345678901234567890123",
        "2019-02-01  ######################X.  22 loaded, 1 failed, 1 missing",
        "2019-02-02  ########################  24 loaded"]
    assert lines[6].startswith("  48 hours: 46 loaded, 1 failed, 1 missing; 46 rows, ")
    assert lines[7].startswith("  failed  2019-02-01T22  BadInputError on ")
    assert lines[-1] == "  missing 1: 2019-02-01T23"


def test_hourly_status_as_json_per_hour(stack, two_days_of_hours):
    result = cli(stack, two_days_of_hours, "status", *HOURLY, "--start", "2019-02-01", "--stop", "2019-02-03", "--json")
    assert result.returncode == 30, result.stderr[-3000:]
    [pipeline] = json.loads(result.stdout)["pipelines"]
    assert pipeline["unit"] == "hour" and pipeline["totals"]["dates"] == 48
    states = {d["partition"]: (d["date"], d["state"]) for d in pipeline["dates"]}
    assert len(states) == 48 and states["2019-02-02T05"] == ("2019-02-02", "loaded")
    assert states["2019-02-01T22"] == ("2019-02-01", "failed") and states["2019-02-01T23"] == ("2019-02-01", "missing")
    assert {s for p, (_, s) in states.items() if p not in ("2019-02-01T22", "2019-02-01T23")} == {"loaded"}


def test_hourly_status_page_opens_a_day_to_its_hours(stack, two_days_of_hours, tmp_path):
    page = tmp_path / "status.html"
    result = cli(stack, two_days_of_hours, "status", *HOURLY, "--start", "2019-02-01", "--stop", "2019-02-03",
                 "--html", str(page))
    assert result.returncode == 30, result.stderr[-3000:]
    dom = Elements(page.read_text())
    days = {a["data-date"]: a for t, a in dom.tags if t == "td" and a.get("data-hours")}
    assert {d: a["data-state"] for d, a in days.items()} == {"2019-02-01": "failed", "2019-02-02": "loaded"}
    assert days["2019-02-01"]["title"] == "2019-02-01: 24 hours: 22 loaded, 1 failed, 1 missing"
    hours = {a["data-date"]: a["data-state"] for t, a in dom.tags if t == "span" and "hour" in a.get("class", "")}
    assert len(hours) == 48 and hours["2019-02-01T22"] == "failed" and hours["2019-02-01T23"] == "missing"
    strips = [a for t, a in dom.tags if t == "div" and a.get("data-day")]
    assert [a["data-day"] for a in strips] == ["2019-02-01", "2019-02-02"] and all("hidden" in a for a in strips)

    shown = Elements(dump_dom(page, tmp_path / "profile"))  # skipped where chromium is not installed
    opened = [a["data-day"] for t, a in shown.tags if t == "div" and a.get("data-day") and "hidden" not in a]
    assert opened == ["2019-02-01"]  # the script opened the day with the failed hour, at that hour
    assert [a for t, a in shown.tags if a.get("id") == "detail-0"][0]["data-date"] == "2019-02-01T22"


def test_hourly_backfill_reload_changed_reloads_only_the_changed_hour(stack, tmp_path):
    for h in range(24):
        put_hour(stack, datetime.datetime(2019, 2, 1, h))
    cfg = stack.write_config(tmp_path / "run.cfg")
    window = ["--start", "2019-02-01", "--stop", "2019-02-02", "--now", "2019-02-05T05:00:00Z", "--local-scheduler"]
    assert cli(stack, cfg, "backfill", *HOURLY, *window).returncode == 0
    before = markers(stack)
    put_hour(stack, datetime.datetime(2019, 2, 1, 13), "id,kind\n113,k\n9913,late\n")
    changed = cli(stack, cfg, "backfill", *HOURLY, *window, "--reload-changed")
    assert changed.returncode == 0, changed.stderr[-3000:]
    assert "stale (loaded, sources changed since; reloaded by this run): 1 (2019-02-01T13: 1 replaced " \
        "(events/2019/02/01/13/a.csv))" in changed.stderr
    assert '"stale_known": {"2019-02-01T13": "' in changed.stderr
    after = markers(stack)
    thirteen = (f"{stack.schema}.transaction/hour=13", datetime.date(2019, 2, 1))
    assert after[thirteen][0] == 2 and after[thirteen][1] != before[thirteen][1]
    assert {k: v for k, v in after.items() if k != thirteen} == {k: v for k, v in before.items() if k != thirteen}
    assert stack.query(f"SELECT count(*) FROM {stack.schema}.transaction") == [(25,)]
    again = cli(stack, cfg, "backfill", *HOURLY, *window, "--reload-changed", "--processes", "2")
    assert again.returncode == 0 and markers(stack) == after, again.stderr[-3000:]


def test_monthly_backfill_and_status_by_the_month(stack, tmp_path):
    """A window of days runs RangeMonthly over the months it meets that are over (April, today's month, is not)."""
    stack.set_config("compose_test", "schema", stack.schema)
    cfg = stack.write_config(tmp_path / "run.cfg")
    stack.put("m/2019-02/a.csv", "id,day,amount\n1,2019-02-01,1.50\n2,2019-02-28,2.00\n")
    window = ["--start", "2019-01-15", "--stop", "2019-04-03", "--now", "2019-04-03T05:00:00Z"]
    first = cli(stack, cfg, "backfill", *MONTHLY, *window, "--local-scheduler")
    assert "RangeMonthly --of MonthlySales --start 2019-01 --stop 2019-04" in first.stderr, first.stderr[-3000:]
    assert first.returncode == 20, first.stderr[-3000:]  # January's and March's files are not there
    assert first.stderr.splitlines()[-1] == ("luigi-pipelines backfill: luigi exited 20 and months asked for are not "
                                             "loaded: 2 (2019-01, 2019-03): exit 20")
    status = cli(stack, cfg, "status", *MONTHLY, *window)
    assert status.returncode == 21, status.stderr[-3000:]
    assert status.stdout.splitlines()[:4] == [
        f"MonthlySales  {stack.schema}.sales  [2019-01-15, 2019-04-03)  by the month",
        "               1", "      123456789012", "2019  .#."]
    assert "  3 months: 1 loaded, 0 failed, 2 missing; 2 rows, " in status.stdout
    assert "  missing 2: 2019-01, 2019-03" in status.stdout

    stack.put("m/2019-01/a.csv", "id,day,amount\n3,2019-01-31,1.00\n")
    stack.put("m/2019-03/a.csv", "id,day,amount\n4,2019-03-02,7.00\n")
    second = cli(stack, cfg, "backfill", *MONTHLY, *window, "--processes", "2")
    assert second.returncode == 0, second.stderr[-3000:]
    assert "[1/2] 1 months, 2019-01 to 2019-01: luigi " in second.stderr
    assert second.stderr.splitlines()[-1] == ("luigi-pipelines backfill: every month asked for is loaded, 3 "
                                              "(2019-01, 2019-02 ...): exit 0")
    out = json.loads(cli(stack, cfg, "status", *MONTHLY, *window, "--json").stdout)
    assert [(d["partition"], d["date"], d["state"]) for d in out["pipelines"][0]["dates"]] == [
        ("2019-01", "2019-01-01", "loaded"), ("2019-02", "2019-02-01", "loaded"), ("2019-03", "2019-03-01", "loaded")]
    assert out["exit_code"] == 0
