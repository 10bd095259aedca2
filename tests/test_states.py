"""The pure status layers: each date's state (``states``) and its renderings (``views``), without a database."""
from __future__ import annotations

import datetime
import json
import re
import subprocess
import sys

import pytest

from luigi_pipelines import states, views
from luigi_pipelines.states import FAILED, LOADED, MISSING, STALE, Calendar, date_states, with_stale

D = datetime.date
UTC = datetime.timezone.utc
T0 = datetime.datetime(2019, 3, 1, 2, 0, tzinfo=UTC)


def marker(day: datetime.date, finished: datetime.datetime = T0, rows: int = 100, rejected: int = 0) -> dict:
    return {"partition_date": day, "rows_loaded": rows, "rows_rejected": rejected, "bytes_loaded": 3 * 2**20,
            "objects": 2, "seconds": 1.5, "finished_at": finished, "host": "w1", "task_family": "LoadT", "skipped": 0,
            "skipped_keys": []}


def failure(day: datetime.date, failed: datetime.datetime = T0, message: str = "s3://b/k.csv line 3: bad") -> dict:
    return {"partition_date": day, "task_family": "LoadT", "error_class": "BadInputError", "message": message,
            "s3_key": "k.csv", "host": "w2", "failed_at": failed, "attempts": 2}


HOUR = datetime.timedelta(hours=1)
DATES = [D(2019, 2, d) for d in range(1, 8)]
MARKERS = [marker(D(2019, 2, 1)), marker(D(2019, 2, 2), rejected=3), marker(D(2019, 2, 4)), marker(D(2019, 2, 5))]
FAILURES = [failure(D(2019, 2, 3)),                        # never loaded, last attempt failed
            failure(D(2019, 2, 4), T0 + HOUR),             # a reload that failed after the load: kept
            failure(D(2019, 2, 5), T0 - HOUR)]             # failed before another attempt succeeded: history
NOT_LOADED = [D(2019, 2, 3), D(2019, 2, 6), D(2019, 2, 7)]


def calendar_of(**overrides) -> Calendar:
    args = {"dates": DATES, "not_loaded": NOT_LOADED, "markers": MARKERS, "failures": FAILURES} | overrides
    return Calendar("LoadT", "s.t", D(2019, 2, 1), D(2019, 2, 8), date_states(**args))


def test_each_date_gets_the_state_of_its_last_attempt():
    days = {d.date.day: d for d in calendar_of().days}
    assert {n: d.state for n, d in days.items()} == {
        1: LOADED, 2: LOADED, 3: FAILED, 4: FAILED, 5: LOADED, 6: MISSING, 7: MISSING}
    assert days[2].rejected == 3 and views.kind(days[2]) == "rejects"
    assert days[3].rows is None and not days[3].kept_previous and days[3].s3_key == "k.csv"
    assert days[4].kept_previous and days[4].rows == 100 and days[4].error_class == "BadInputError"
    assert days[5].error is None  # a failure older than the marker is not the state
    assert days[6].rows is None and days[6].error is None


def test_not_loaded_decides_over_the_marker_rows():
    """The dates bulk_complete finds not loaded are not loaded, whatever rows were read beside it."""
    days = {d.date.day: d for d in calendar_of(not_loaded=[D(2019, 2, 1)], failures=[]).days}
    assert days[1].state == MISSING and days[1].rows is None
    assert days[6].state == LOADED  # no marker row read: loaded per bulk_complete, without details


def test_totals_and_exit_codes():
    cal = calendar_of()
    assert cal.totals == states.Totals(dates=7, loaded=3, stale=0, failed=2, missing=2, with_rejects=1, rejected=3,
                                       rows=300, bytes=9 * 2**20)
    assert states.exit_code([cal]) == states.EXIT_FAILED == 30
    assert states.exit_code([calendar_of(failures=[])]) == states.EXIT_MISSING == 21
    loaded = calendar_of(dates=DATES[:2], failures=[])
    assert states.exit_code([loaded]) == 0
    assert states.exit_code([loaded, cal]) == 30  # any pipeline


def test_terminal_calendar_a_line_per_month_a_mark_per_day():
    cal = Calendar("LoadT", "s.t", D(2019, 1, 30), D(2019, 3, 2), date_states(
        [D(2019, 1, 30) + datetime.timedelta(days=n) for n in range(31)],
        [D(2019, 2, 3), D(2019, 2, 6)], [marker(D(2019, 1, 30)), marker(D(2019, 2, 2), rejected=1)],
        [failure(D(2019, 2, 3))]))
    lines = views.text([cal]).splitlines()
    assert lines[0] == "LoadT  s.t  [2019-01-30, 2019-03-02)"
    assert lines[1] == "                  1         2         3"
    assert lines[2] == "         1234567890123456789012345678901"
    assert lines[3] == "2019-01  " + " " * 29 + "##"
    assert lines[4] == "2019-02  #RX##." + "#" * 22
    assert lines[5] == "2019-03  #"
    assert "# loaded" in lines[6] and "R loaded, rows rejected" in lines[6] and "X failed" in lines[6]
    assert lines[7] == "  31 dates: 29 loaded (1 with 1 rows rejected), 1 failed, 1 missing; 200 rows, 6.0 MiB loaded"
    assert lines[8] == "  failed  2019-02-03  BadInputError on w2, 2019-03-01 02:00:00 UTC, 2 attempts"
    assert lines[9] == "          s3://b/k.csv line 3: bad"  # names the object: no line of its own
    assert lines[10] == "  missing 1: 2019-02-06"
    assert "\x1b[" not in "\n".join(lines)
    colored = views.text([cal], color=True)
    assert "\x1b[1;31mX\x1b[0m" in colored and "\x1b[32m#\x1b[0m" in colored
    assert re.sub(r"\x1b\[[0-9;]*m", "", colored) == "\n".join(lines)  # the same text, only painted


def test_json_has_every_date_and_the_meaning_of_the_code():
    out = views.as_json([calendar_of()], 30)
    json.dumps(out)  # serialisable as is
    assert out["exit_code"] == 30 and out["meaning"] == "a date's last attempt failed"
    [pipeline] = out["pipelines"]
    assert pipeline["totals"]["failed"] == 2 and [d["state"] for d in pipeline["dates"]] == [
        "loaded", "loaded", "failed", "failed", "loaded", "missing", "missing"]
    assert pipeline["dates"][3]["kept_previous"] is True and pipeline["dates"][3]["failed_at"] == "2019-03-01T03:00:00+00:00"


HOSTILE = '</script><script>document.title="pwned"</script><img src=x onerror=alert(1)> & "quotes"'


def test_html_page_is_self_contained_and_escapes_every_value():
    generated = datetime.datetime(2019, 3, 2, tzinfo=UTC)
    plain = views.page([calendar_of()], 30, generated)
    assert not re.search(r"""(?i)(src|href)\s*=|<link|@import|url\(|https?://""", plain)  # fetches nothing
    page = views.page([calendar_of(failures=[failure(D(2019, 2, 3), message=HOSTILE)])], 30, generated)
    assert HOSTILE not in page and "<img" not in page and page.count("<script") == 2
    assert "&lt;/script&gt;&lt;script&gt;" in page  # in the title attribute and the failed list, as text
    assert '\\u003c/script\\u003e' in page  # in the embedded JSON
    assert page.count('<td class="day failed"') == 1 and page.count('<td class="day ') == 7


def test_pure_status_modules_import_no_effects():
    code = ("import sys; import luigi_pipelines.states, luigi_pipelines.views; "
            "print(','.join(m for m in ('boto3', 'botocore', 'luigi', 'psycopg2') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == ""


@pytest.mark.parametrize("rejected, mark", [(0, "#"), (5, "R")])
def test_rejects_have_their_own_mark(rejected, mark):
    cal = Calendar("T", "k", D(2019, 2, 1), D(2019, 2, 2),
                   date_states([D(2019, 2, 1)], [], [marker(D(2019, 2, 1), rejected=rejected)], []))
    assert views.text([cal]).splitlines()[3] == f"2019-02  {mark}"


CHANGED = {D(2019, 2, 1): "1 added (t/2019-02-01/b.csv)", D(2019, 2, 4): "1 removed (t/2019-02-04/a.csv)",
           D(2019, 2, 6): "1 replaced (t/2019-02-06/a.csv)"}


def checked(changes=CHANGED, **overrides) -> Calendar:
    cal = calendar_of(**overrides)
    return Calendar(cal.task, cal.key, cal.start, cal.stop, with_stale(cal.days, changes), sources_checked=True)


def test_a_loaded_date_whose_sources_changed_is_stale_and_the_others_keep_their_state():
    days = {d.date.day: d for d in checked().days}
    assert {n: d.state for n, d in days.items()} == {
        1: STALE, 2: LOADED, 3: FAILED, 4: FAILED, 5: LOADED, 6: MISSING, 7: MISSING}
    assert days[1].change == "1 added (t/2019-02-01/b.csv)" and days[1].rows == 100  # still in the table
    assert days[4].change is None and days[2].change is None  # a failed reload says more than its sources
    totals = checked().totals
    assert (totals.loaded, totals.stale, totals.rows) == (2, 1, 300)  # its rows are in the table: counted


def test_a_failed_reload_whose_sources_match_the_kept_load_is_loaded_once_checked():
    """Feb 4's reload failed and the previous load is kept: checked and unchanged, it is loaded (the check
    superseded its failure record); checked and changed, it stays failed; Feb 3 (never loaded) stays failed."""
    cal = calendar_of()
    fresh = with_stale(cal.days, {}, checked=[D(2019, 2, 1), D(2019, 2, 3), D(2019, 2, 4)])
    days = {d.date.day: d for d in fresh}
    assert (days[4].state, days[4].rows, days[4].error_class, days[4].kept_previous) == (LOADED, 100, None, False)
    assert days[3].state == FAILED and days[3].error_class == "BadInputError"
    still = {d.date.day: d for d in with_stale(cal.days, {D(2019, 2, 4): "1 replaced (k.csv)"}, checked=[D(2019, 2, 4)])}
    assert still[4].state == FAILED and still[4].kept_previous
    assert states.exit_code([Calendar("LoadT", "s.t", D(2019, 2, 4), D(2019, 2, 5), (days[4],))]) == 0


def test_exit_code_stale_is_22_between_missing_and_failed():
    assert states.exit_code([checked(failures=[], not_loaded=[])]) == states.EXIT_STALE == 22
    assert states.exit_code([checked(failures=[])]) == 22  # stale and missing: the higher, stale
    assert states.exit_code([checked()]) == 30  # and failed: failed
    assert states.exit_code([checked(changes={}, failures=[], not_loaded=[])]) == 0


def test_stale_in_the_terminal_json_and_page_and_not_checked_is_said():
    cal = checked(failures=[], not_loaded=[])
    lines = views.text([cal]).splitlines()
    assert lines[3] == "2019-02  SR#S#S#"
    assert "S stale (sources changed since the load)" in lines[4]
    assert lines[5].startswith("  7 dates: 4 loaded (1 with 3 rows rejected), 3 stale, 0 failed, 0 missing; ")
    assert lines[6:] == ["  stale   2019-02-01  1 added (t/2019-02-01/b.csv)",
                         "  stale   2019-02-04  1 removed (t/2019-02-04/a.csv)",
                         "  stale   2019-02-06  1 replaced (t/2019-02-06/a.csv)"]
    assert "\x1b[35mS\x1b[0m" in views.text([cal], color=True)
    unchecked = views.text([calendar_of(failures=[], not_loaded=[])]).splitlines()
    assert unchecked[3] == "2019-02  #R#####" and "S stale not checked (--check-sources)" in unchecked[4]
    assert " stale" not in unchecked[5]  # no count of what was not checked

    out = views.as_json([cal], 22)
    [pipeline] = out["pipelines"]
    assert out["meaning"] == "loaded dates are stale (sources changed)" and pipeline["sources_checked"] is True
    assert pipeline["dates"][0] == pipeline["dates"][0] | {"state": "stale", "change": "1 added (t/2019-02-01/b.csv)"}
    assert pipeline["totals"]["stale"] == 3
    [plain] = views.as_json([calendar_of()], 30)["pipelines"]
    assert plain["sources_checked"] is False and plain["totals"]["stale"] is None  # unknown, not 0

    page = views.page([cal], 22, datetime.datetime(2019, 3, 2, tzinfo=UTC))
    assert page.count('<td class="day stale"') == 3 and "stale: sources changed since the load: 1 added" in page
    assert "<h3>Stale</h3>" in page and "exit code 22: loaded dates are stale" in page
