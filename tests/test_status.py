"""``luigi-pipelines status`` against the real PostgreSQL and S3: a calendar of loaded, failed and missing dates
(and rows rejected), the same missing dates as ``backfill``'s check, stale dates with ``--check-sources``, JSON,
and the HTML page in a real browser."""
from __future__ import annotations

import datetime
import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from luigi.execution_summary import LuigiStatusCode

from luigi_pipelines.backfill import incomplete
from luigi_pipelines.devstack.demo import seed_bucket
from luigi_pipelines.devstack.sample import csv_bytes, transaction_lines
from tests.browser_support import Elements, dump_dom, png_colours, screenshot
from tests.conftest import ROOT, run_task
from tests.scheduling_support import listings_since, s3_log_mark

pytestmark = [pytest.mark.postgres, pytest.mark.s3]
D = datetime.date
MODULE = "luigi_pipelines.pipelines.transactions"
WINDOW = ["--start", "2019-02-01", "--stop", "2019-02-09"]
FAILED_RED, LOADED_GREEN, REJECTS_AMBER = (0xD6, 0x45, 0x41), (0x2E, 0x9E, 0x5B), (0xE0, 0xA5, 0x26)
STALE_PURPLE = (0x7D, 0x4C, 0xC2)
STALE_KEY = "transactions/2019-02-03/part-0000.csv"


def bad_object(day: D, bad_lines: int) -> bytes:
    """A day's transactions with ``bad_lines`` lines whose id is not a number."""
    lines = transaction_lines(day, day.toordinal() * 100_000, 30)
    for n in range(bad_lines):
        lines[5 + n] = "x" + lines[5 + n]
    return csv_bytes(lines)


@pytest.fixture
def seeded(stack, tmp_path) -> Path:
    """Feb 1-3 loaded (Feb 3's file then replaced: stale, seen with --check-sources only); Feb 4 loaded, then a
    --force reload failed (kept); Feb 5 failed; Feb 6 loaded with 2 rows rejected; Feb 7-8 no data. Returns a
    config file for child processes."""
    from luigi_pipelines.pipelines.transactions import LoadTransactions

    seed_bucket(stack.s3.endpoint_url, stack.s3.env, bucket=stack.bucket, start=D(2019, 2, 1), days=4)
    for day in (D(2019, 2, 1), D(2019, 2, 2), D(2019, 2, 3), D(2019, 2, 4)):
        assert run_task(LoadTransactions(date=day)).status == LuigiStatusCode.SUCCESS
    stack.put(STALE_KEY, csv_bytes(transaction_lines(D(2019, 2, 3), 920_000_000, 9)))
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
    assert status(stack, seeded, "--start", "2019-02-01", "--stop", "2019-02-04").returncode == 0  # unchecked
    assert status(stack, seeded, "--start", "2019-02-01", "--stop", "2019-02-04", "--check-sources").returncode == 22
    assert status(stack, seeded, "--start", "2019-02-03", "--stop", "2019-02-09", "--check-sources").returncode == 30
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
    result = status(stack, seeded, *WINDOW, "--check-sources", "--html", str(page))
    assert result.returncode == 30 and f"wrote {page}" in result.stderr  # failed wins over stale

    dom = Elements(dump_dom(page, tmp_path / "profile"))
    assert dom.cells() == {
        "2019-02-01": "loaded", "2019-02-02": "loaded", "2019-02-03": "stale", "2019-02-04": "failed",
        "2019-02-05": "failed", "2019-02-06": "loaded", "2019-02-07": "missing", "2019-02-08": "missing"}
    rejects = [a for t, a in dom.tags if t == "td" and a.get("data-date") == "2019-02-06"][0]
    assert "rejects" in rejects["class"] and "2 rows rejected" in rejects["title"]
    reload = [a for t, a in dom.tags if a.get("data-date") == "2019-02-04"][0]
    assert "line 7 column id" in reload["title"] and "the previous load is kept" in reload["title"]
    assert reload["class"].split() == ["day", "failed", "kept"]
    stale = [a for t, a in dom.tags if t == "td" and a.get("data-date") == "2019-02-03"][0]
    assert stale["class"].split() == ["day", "stale"]
    assert f"stale: sources changed since the load: 1 replaced ({STALE_KEY})" in stale["title"]
    # the script ran: it opened the latest failed date in the detail panel
    detail = [a for t, a in dom.tags if a.get("id") == "detail-0"][0]
    assert detail["data-date"] == "2019-02-05"
    assert "error: BadInputError: s3://" in dom.text_of["detail-0"]
    assert "object: transactions/2019-02-05/part-0000.csv" in dom.text_of["detail-0"]
    assert not [a for t, a in dom.tags if t in ("img", "link", "iframe") or (t == "script" and a.get("src"))]

    shot = screenshot(page, tmp_path / "status.png", tmp_path / "profile")
    colours = png_colours(shot)
    # 28x24 px cells: 2 red (failed), 2 green (loaded), 1 amber (rejects), 1 purple (stale), plus the legend's swatches
    assert colours[FAILED_RED] > 2 * 500 and colours[LOADED_GREEN] > 2 * 500 and colours[REJECTS_AMBER] > 500
    assert colours[STALE_PURPLE] > 500
    print(f"screenshot: {shot}")


CHANGED_WINDOW = ["--start", "2019-02-01", "--stop", "2019-02-06"]
ADDED, REPLACED, REMOVED = ("transactions/2019-02-01/part-0009.csv", "transactions/2019-02-02/part-0002.csv",
                            "transactions/2019-02-04/part-0001.csv.gz")


@pytest.fixture
def changed(stack, tmp_path) -> Path:
    """Feb 1-5 loaded and summarized; then a file added on Feb 1, replaced on Feb 2, removed on Feb 4 (Feb 3 and
    5 untouched). Returns a config file for child processes."""
    from luigi_pipelines.pipelines.transactions import LoadTransactions, SummarizeTransactions

    seed_bucket(stack.s3.endpoint_url, stack.s3.env, bucket=stack.bucket, start=D(2019, 2, 1), days=5)
    for n in range(1, 6):
        assert run_task(SummarizeTransactions(date=D(2019, 2, n))).status == LuigiStatusCode.SUCCESS
        assert stack.markers(f"{stack.schema}.transaction")[D(2019, 2, n)]  # the load ran first
    stack.put(ADDED, csv_bytes(transaction_lines(D(2019, 2, 1), 900_000_000, 5)))
    stack.put(REPLACED, csv_bytes(transaction_lines(D(2019, 2, 2), 910_000_000, 7)))
    stack.s3_client.delete_object(Bucket=stack.bucket, Key=REMOVED)
    assert LoadTransactions(date=D(2019, 2, 3)).complete()
    return stack.write_config(tmp_path / "changed.cfg")


def test_check_sources_shows_a_date_whose_files_changed_as_stale(stack, changed):
    result = status(stack, changed, *CHANGED_WINDOW, "--check-sources")
    assert result.returncode == 22, result.stderr  # stale: loaded dates a reload_changed run would load again
    lines = result.stdout.splitlines()
    assert lines[3] == "2019-02  SS#S#"
    assert "S stale (sources changed since the load)" in lines[4]
    assert lines[5].startswith("  5 dates: 2 loaded, 3 stale, 0 failed, 0 missing; ")
    assert lines[6:] == [f"  stale   2019-02-01  1 added ({ADDED})", f"  stale   2019-02-02  1 replaced ({REPLACED})",
                         f"  stale   2019-02-04  1 removed ({REMOVED})"]
    painted = status(stack, changed, *CHANGED_WINDOW, "--check-sources", "--color", "always")
    assert "\x1b[35mS\x1b[0m" in painted.stdout and painted.returncode == 22


def test_without_check_sources_stale_is_not_checked_and_says_so(stack, changed):
    result = status(stack, changed, *CHANGED_WINDOW)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[3] == "2019-02  #####" and "S stale not checked (--check-sources)" in lines[4]
    assert lines[5].startswith("  5 dates: 5 loaded, 0 failed, 0 missing; ")
    [pipeline] = json.loads(status(stack, changed, *CHANGED_WINDOW, "--json").stdout)["pipelines"]
    assert pipeline["sources_checked"] is False and pipeline["totals"]["stale"] is None
    assert {d["state"] for d in pipeline["dates"]} == {"loaded"}


def test_json_names_the_stale_dates_and_what_changed(stack, changed):
    result = status(stack, changed, *CHANGED_WINDOW, "--check-sources", "--json")
    assert result.returncode == 22, result.stderr
    out = json.loads(result.stdout)
    assert out["exit_code"] == 22 and out["meaning"] == "loaded dates are stale (sources changed)"
    [pipeline] = out["pipelines"]
    assert pipeline["sources_checked"] is True and pipeline["totals"]["stale"] == 3
    by_date = {d["date"]: d for d in pipeline["dates"]}
    assert {d: (v["state"], v.get("change")) for d, v in by_date.items()} == {
        "2019-02-01": ("stale", f"1 added ({ADDED})"), "2019-02-02": ("stale", f"1 replaced ({REPLACED})"),
        "2019-02-03": ("loaded", None), "2019-02-04": ("stale", f"1 removed ({REMOVED})"),
        "2019-02-05": ("loaded", None)}
    assert by_date["2019-02-04"]["rows"] == 580 and by_date["2019-02-04"]["objects"] == 2  # what the table holds
    # the dates status calls stale are those backfill --reload-changed would load again
    dates = [D(2019, 2, n) for n in range(1, 6)]
    assert {d.isoformat() for d in incomplete(MODULE, "LoadTransactions", dates, reload_changed=True)} == {
        d for d, v in by_date.items() if v["state"] == "stale"}


def test_a_transform_is_stale_when_its_upstream_is(stack, changed):
    result = status(stack, changed, *CHANGED_WINDOW, "--task", "SummarizeTransactions", "--check-sources", "--json")
    assert result.returncode == 22, result.stderr
    [pipeline] = json.loads(result.stdout)["pipelines"]
    assert {d["date"]: d["state"] for d in pipeline["dates"]} == {
        "2019-02-01": "stale", "2019-02-02": "stale", "2019-02-03": "loaded", "2019-02-04": "stale",
        "2019-02-05": "loaded"}
    assert pipeline["dates"][0]["change"] == f"upstream LoadTransactions 2019-02-01 is stale: 1 added ({ADDED})"
    assert pipeline["dates"][3]["change"] == f"upstream LoadTransactions 2019-02-04 is stale: 1 removed ({REMOVED})"


def test_a_transform_names_the_upstream_partition_reloaded_since(stack, changed):
    from luigi_pipelines.pipelines.transactions import LoadTransactions

    assert run_task(LoadTransactions(date=D(2019, 2, 2), reload_changed=True)).status == LuigiStatusCode.SUCCESS
    result = status(stack, changed, *CHANGED_WINDOW, "--task", "SummarizeTransactions", "--check-sources", "--json")
    [pipeline] = json.loads(result.stdout)["pipelines"]
    assert pipeline["dates"][1]["change"] == \
        f"upstream LoadTransactions 2019-02-02 was reloaded since ({stack.schema}.transaction)"


def test_check_sources_lists_each_date_once_for_a_load_and_its_transform(stack, changed):
    """`status --check-sources` of a load and its transform lists each date's prefix once, as the S3 server saw
    it (the transform's check asked the load's again: twice)."""
    mark = s3_log_mark(stack)
    result = status(stack, changed, *CHANGED_WINDOW, "--task", "LoadTransactions", "--task", "SummarizeTransactions",
                    "--check-sources", "--json")
    assert result.returncode == 22, result.stderr
    assert [p["totals"]["stale"] for p in json.loads(result.stdout)["pipelines"]] == [3, 3]
    assert listings_since(stack, mark) == Counter({f"transactions/2019-02-0{n}/": 1 for n in range(1, 6)})


def test_a_stale_date_reloaded_in_the_mode_is_loaded_again(stack, changed):
    from luigi_pipelines.pipelines.transactions import LoadTransactions

    assert run_task(LoadTransactions(date=D(2019, 2, 1), reload_changed=True)).status == LuigiStatusCode.SUCCESS
    result = status(stack, changed, *CHANGED_WINDOW, "--check-sources")
    assert result.returncode == 22 and result.stdout.splitlines()[3] == "2019-02  #S#S#"


def test_the_page_opens_the_latest_stale_date_when_none_failed(stack, changed, tmp_path):
    page = tmp_path / "status.html"
    assert status(stack, changed, *CHANGED_WINDOW, "--check-sources", "--html", str(page)).returncode == 22
    dom = Elements(dump_dom(page, tmp_path / "profile"))
    assert [a for t, a in dom.tags if a.get("id") == "detail-0"][0]["data-date"] == "2019-02-04"
    assert f"stale: sources changed since the load: 1 removed ({REMOVED})" in dom.text_of["detail-0"]


def test_objects_left_out_by_keys_are_shown_per_date(stack, tmp_path):
    """A date whose listing held an object that looks like data but that ``keys`` leave out: its count and names,
    in the terminal, in --json and in the page's tooltip. Nothing failed: exit 0."""
    import gzip

    from tests.merge_tasks import MergeCustomerCsvs

    stack.set_config("merge_test", "bucket", stack.bucket)
    stack.set_config("merge_test", "schema", stack.schema)
    for day in ("2019-02-01", "2019-02-02"):
        stack.put(f"c/{day}/a.csv", "customer_id,name,tier\n1,Ann,gold\n")
    stack.put("c/2019-02-01/b.csv.gz", gzip.compress(b"customer_id,name,tier\n2,Bob,gold\n"))
    for day in (D(2019, 2, 1), D(2019, 2, 2)):
        assert run_task(MergeCustomerCsvs(date=day)).status == LuigiStatusCode.SUCCESS
    cfg = stack.write_config(tmp_path / "skipped.cfg")
    args = ["--module", "tests.merge_tasks", "--task", "MergeCustomerCsvs", "--start", "2019-02-01", "--stop",
            "2019-02-03"]
    shown = status(stack, cfg, *args)
    assert shown.returncode == 0, shown.stderr
    assert "  skipped 2019-02-01  1 object left out by keys: c/2019-02-01/b.csv.gz" in shown.stdout.splitlines()
    [pipeline] = json.loads(status(stack, cfg, *args, "--json").stdout)["pipelines"]
    by_date = {d["date"]: d for d in pipeline["dates"]}
    assert (by_date["2019-02-01"]["skipped"], by_date["2019-02-01"]["skipped_keys"]) == (1, ["c/2019-02-01/b.csv.gz"])
    assert by_date["2019-02-02"]["skipped"] == 0 and "skipped_keys" not in by_date["2019-02-02"]
    page = tmp_path / "status.html"
    assert status(stack, cfg, *args, "--html", str(page)).returncode == 0
    assert "1 object left out by keys: c/2019-02-01/b.csv.gz" in page.read_text()


def test_a_merge_shows_the_rows_read_and_the_rows_its_table_holds(stack, tmp_path):
    """Three daily snapshots of the same 3 accounts: 9 rows were read and merged by key, the table holds 3. The
    totals used to say `9 rows ... loaded`, as if the table held every snapshot's rows."""
    from luigi_pipelines.pipelines.transactions import MergeAccounts

    stack.set_config("transactions", "accounts_table", f"{stack.schema}.account")
    for day in (D(2019, 2, 1), D(2019, 2, 2), D(2019, 2, 3)):
        stack.put(f"accounts/{day}/accounts.csv", f"account,name,tier\na1,Ann,gold\na2,Bo,{day}\na3,Cy,basic\n")
        assert run_task(MergeAccounts(date=day)).status == LuigiStatusCode.SUCCESS
    cfg = stack.write_config(tmp_path / "merge.cfg")
    window = ["--start", "2019-02-01", "--stop", "2019-02-04", "--task", "MergeAccounts"]

    text = status(stack, cfg, *window, "--color", "never")
    assert text.returncode == 0, text.stderr
    assert "3 dates: 3 loaded, 0 failed, 0 missing; 9 rows, 0.0 MiB read and merged by key; the table holds 3 rows" \
        in text.stdout
    totals = json.loads(status(stack, cfg, *window, "--json").stdout)["pipelines"][0]["totals"]
    assert (totals["rows"], totals["table_rows"]) == (9, 3)
