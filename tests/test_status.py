"""``luigi-pipelines status`` against the real PostgreSQL and S3: a calendar of loaded, failed and missing dates
(and rows rejected), the same missing dates as ``backfill``'s check, JSON, and the HTML page in a real browser."""
from __future__ import annotations

import datetime
import json
import subprocess
import sys
from pathlib import Path

import pytest
from luigi.execution_summary import LuigiStatusCode

from luigi_pipelines.backfill import incomplete
from luigi_pipelines.demo import seed_bucket
from luigi_pipelines.sample import csv_bytes, transaction_lines
from tests.browser_support import Elements, dump_dom, png_colours, screenshot
from tests.conftest import ROOT, run_task

pytestmark = [pytest.mark.postgres, pytest.mark.s3]
D = datetime.date
MODULE = "luigi_pipelines.pipelines.transactions"
WINDOW = ["--start", "2019-02-01", "--stop", "2019-02-09"]
FAILED_RED, LOADED_GREEN, REJECTS_AMBER = (0xD6, 0x45, 0x41), (0x2E, 0x9E, 0x5B), (0xE0, 0xA5, 0x26)


def bad_object(day: D, bad_lines: int) -> bytes:
    """A day's transactions with ``bad_lines`` lines whose id is not a number."""
    lines = transaction_lines(day, day.toordinal() * 100_000, 30)
    for n in range(bad_lines):
        lines[5 + n] = "x" + lines[5 + n]
    return csv_bytes(lines)


@pytest.fixture
def seeded(stack, tmp_path) -> Path:
    """Feb 1-3 loaded; Feb 4 loaded, then a --force reload failed (kept); Feb 5 failed; Feb 6 loaded with 2 rows
    rejected; Feb 7-8 no data. Returns a config file for child processes."""
    from luigi_pipelines.pipelines.transactions import LoadTransactions

    seed_bucket(stack.s3.endpoint_url, stack.s3.env, bucket=stack.bucket, start=D(2019, 2, 1), days=4)
    for day in (D(2019, 2, 1), D(2019, 2, 2), D(2019, 2, 3), D(2019, 2, 4)):
        assert run_task(LoadTransactions(date=day)).status == LuigiStatusCode.SUCCESS
    stack.put("transactions/2019-02-04/part-0003.csv", bad_object(D(2019, 2, 4), 1))
    assert run_task(LoadTransactions(date=D(2019, 2, 4), force=True)).status == LuigiStatusCode.FAILED
    stack.put("transactions/2019-02-05/part-0000.csv", bad_object(D(2019, 2, 5), 1))
    assert run_task(LoadTransactions(date=D(2019, 2, 5))).status == LuigiStatusCode.FAILED
    stack.put("transactions/2019-02-06/part-0000.csv", bad_object(D(2019, 2, 6), 2))
    assert run_task(LoadTransactions(date=D(2019, 2, 6), max_bad_rows=5)).status == LuigiStatusCode.SUCCESS
    return stack.write_config(tmp_path / "status.cfg")


def status(stack, cfg: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "luigi_pipelines.cli", "status", *args], cwd=ROOT,
                          env=stack.env(cfg), capture_output=True, text=True, timeout=120)


def test_calendar_in_the_terminal(stack, seeded):
    result = status(stack, seeded, *WINDOW)
    assert result.returncode == 30, result.stderr  # a date's last attempt failed
    lines = result.stdout.splitlines()
    assert lines[0] == f"LoadTransactions  {stack.schema}.transaction  [2019-02-01, 2019-02-09)"
    assert lines[3] == "2019-02  ###XXR.."
    assert "\x1b[" not in result.stdout  # not a terminal: no colour
    assert lines[5].startswith("  8 dates: 4 loaded (1 with 2 rows rejected), 2 failed, 2 missing; ")
    at = lines.index(next(line for line in lines if line.startswith("  failed")))
    assert lines[at].startswith("  failed  2019-02-04  BadInputError on ")
    assert lines[at].endswith(", 1 attempt; the previous load is kept")
    assert lines[at + 1].startswith(f"          s3://{stack.bucket}/transactions/2019-02-04/part-0003.csv line 7 "
                                    "column id: invalid input syntax for type bigint")
    assert lines[at + 2].startswith("  failed  2019-02-05  BadInputError on ") and lines[at + 2].endswith("1 attempt")
    assert lines[-1] == "  missing 2: 2019-02-07, 2019-02-08"
    painted = status(stack, seeded, *WINDOW, "--color", "always")
    assert "\x1b[1;31mX\x1b[0m" in painted.stdout and painted.returncode == 30


def test_json_agrees_with_the_backfill_check(stack, seeded):
    result = status(stack, seeded, *WINDOW, "--json")
    assert result.returncode == 30, result.stderr
    out = json.loads(result.stdout)
    assert out["exit_code"] == 30
    [pipeline] = out["pipelines"]
    by_date = {d["date"]: d for d in pipeline["dates"]}
    assert {d: v["state"] for d, v in by_date.items()} == {
        "2019-02-01": "loaded", "2019-02-02": "loaded", "2019-02-03": "loaded", "2019-02-04": "failed",
        "2019-02-05": "failed", "2019-02-06": "loaded", "2019-02-07": "missing", "2019-02-08": "missing"}
    assert by_date["2019-02-06"]["rejected"] == 2 and by_date["2019-02-04"]["kept_previous"] is True
    assert by_date["2019-02-05"]["s3_key"] == "transactions/2019-02-05/part-0000.csv"
    assert by_date["2019-02-01"]["rows"] == 520 and by_date["2019-02-01"]["objects"] == 2
    # what status calls not loaded is what backfill would load: the task's one bulk_complete query
    dates = [D(2019, 2, 1) + datetime.timedelta(days=n) for n in range(8)]
    not_loaded = {d.isoformat() for d in incomplete(MODULE, "LoadTransactions", dates)}
    assert not_loaded == {d for d, v in by_date.items() if v["state"] == "missing" or
                          (v["state"] == "failed" and not v.get("kept_previous"))}


def test_exit_codes_and_the_default_window(stack, seeded):
    assert status(stack, seeded, "--start", "2019-02-01", "--stop", "2019-02-04").returncode == 0
    assert status(stack, seeded, "--start", "2019-02-06", "--stop", "2019-02-09").returncode == 21  # missing only
    recorded = status(stack, seeded)  # no window: from the first to the last date on record
    assert recorded.returncode == 30
    assert recorded.stdout.splitlines()[0].endswith("[2019-02-01, 2019-02-07)")
    days_back = status(stack, seeded, "--days-back", "8", "--now", "2019-02-09T12:00:00")  # the 8 days before today
    assert days_back.returncode == 30 and days_back.stdout.splitlines()[0].endswith("[2019-02-01, 2019-02-09)")
    bad = status(stack, seeded, "--stop", "2019-02-04")
    assert bad.returncode == 2 and "--stop needs --start" in bad.stderr


def test_html_page_in_a_real_browser(stack, seeded, tmp_path):
    """The page chromium renders: every date in its state, the script's detail panel, the colours on screen."""
    page = tmp_path / "status.html"
    result = status(stack, seeded, *WINDOW, "--html", str(page))
    assert result.returncode == 30 and f"wrote {page}" in result.stderr

    dom = Elements(dump_dom(page, tmp_path / "profile"))
    assert dom.cells() == {
        "2019-02-01": "loaded", "2019-02-02": "loaded", "2019-02-03": "loaded", "2019-02-04": "failed",
        "2019-02-05": "failed", "2019-02-06": "loaded", "2019-02-07": "missing", "2019-02-08": "missing"}
    rejects = [a for t, a in dom.tags if t == "td" and a.get("data-date") == "2019-02-06"][0]
    assert "rejects" in rejects["class"] and "2 rows rejected" in rejects["title"]
    reload = [a for t, a in dom.tags if a.get("data-date") == "2019-02-04"][0]
    assert "line 7 column id" in reload["title"] and "the previous load is kept" in reload["title"]
    assert reload["class"].split() == ["day", "failed", "kept"]
    # the script ran: it opened the latest failed date in the detail panel
    detail = [a for t, a in dom.tags if a.get("id") == "detail-0"][0]
    assert detail["data-date"] == "2019-02-05"
    assert "error: BadInputError: s3://" in dom.text_of["detail-0"]
    assert "object: transactions/2019-02-05/part-0000.csv" in dom.text_of["detail-0"]
    assert not [a for t, a in dom.tags if t in ("img", "link", "iframe") or (t == "script" and a.get("src"))]

    shot = screenshot(page, tmp_path / "status.png", tmp_path / "profile")
    colours = png_colours(shot)
    # 28x24 px cells: 2 red (failed), 4 green (loaded) of which 1 amber (rejects), plus the legend's swatches
    assert colours[FAILED_RED] > 2 * 500 and colours[LOADED_GREEN] > 3 * 500 and colours[REJECTS_AMBER] > 500
    print(f"screenshot: {shot}")
