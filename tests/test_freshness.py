"""Freshness: a task's ``freshness`` declaration, the end of its newest partition by its grain, and ``status`` showing
a late table (terminal, JSON, HTML) with exit 28; the pure parts alone, then the command against PostgreSQL and S3
(``tests/freshness_tasks.py``)."""
from __future__ import annotations

import datetime
import json
import subprocess
import sys
from pathlib import Path

import pytest

from luigi_pipelines import states, views
from luigi_pipelines.freshness import Freshness, duration, parse_allowance, partition_end
from luigi_pipelines.grains import DAILY, HOURLY, MONTHLY
from luigi_pipelines.states import FAILED, LOADED, MISSING, STALE, Calendar, DateState
from tests.conftest import ROOT, run_task
from tests.freshness_tasks import NOW, TASKS, WINDOW, seed_feeds

D = datetime.date
UTC = datetime.timezone.utc
T = datetime.timedelta


def at(text: str) -> datetime.datetime:
    return datetime.datetime.fromisoformat(text).replace(tzinfo=UTC)


# -- pure ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("declared, allowed", [
    ("26h", T(hours=26)), ("1d 2h", T(hours=26)), ("90m", T(minutes=90)), ("1.5h", T(minutes=90)), (" 2w ", T(weeks=2)),
    ("45s", T(seconds=45)), (T(hours=26), T(hours=26)), (None, None), ("", None)])
def test_a_declared_freshness_is_a_duration(declared, allowed):
    assert parse_allowance(declared) == allowed


@pytest.mark.parametrize("declared", ["a day", "26", "26 hours", "h", "0h", T(0), -T(hours=1), 26, "1d-2h"])
def test_a_freshness_that_is_not_a_duration_is_refused(declared):
    with pytest.raises(ValueError, match="freshness"):
        parse_allowance(declared)


@pytest.mark.parametrize("grain, value, end", [
    (DAILY, D(2019, 2, 28), "2019-03-01T00:00:00"),
    (HOURLY, datetime.datetime(2019, 2, 1, 13), "2019-02-01T14:00:00"),
    (HOURLY, datetime.datetime(2019, 2, 28, 23), "2019-03-01T00:00:00"),
    (MONTHLY, D(2019, 12, 1), "2020-01-01T00:00:00")])
def test_a_partition_ends_where_the_grain_s_next_one_starts(grain, value, end):
    assert partition_end(grain, value) == at(end)


def test_a_daily_feed_with_26_hours_is_late_when_yesterday_is_not_in_by_two():
    """Newest loaded: Feb 5 (ends Feb 6 00:00). At Feb 7 02:00 it is 26 h old: still fresh; a second later, late."""
    fresh = Freshness.of(DAILY, D(2019, 2, 5), at("2019-02-07T02:00:00"), T(hours=26))
    assert (fresh.late, fresh.lateness, fresh.age, fresh.verdict()) == (False, T(0), T(hours=26), "fresh")
    late = Freshness.of(DAILY, D(2019, 2, 5), at("2019-02-07T02:00:01"), T(hours=26))
    assert (late.late, late.lateness, late.verdict()) == (True, T(seconds=1), "late by 1 s")
    assert late.describe() == "newest loaded 2019-02-05, ended 1 d 2 h ago; freshness allows 1 d 2 h"
    assert late.as_json() == {"newest": "2019-02-05", "newest_start": "2019-02-05T00:00:00+00:00",
                              "newest_end": "2019-02-06T00:00:00+00:00", "age_s": 93601.0, "allowed_s": 93600.0,
                              "late": True, "lateness_s": 1.0}


def test_nothing_loaded_is_late_by_an_unknown_amount_and_without_a_declaration_nothing_is_late():
    never = Freshness.of(HOURLY, None, at("2019-02-07T00:00:00"), T(hours=3))
    assert (never.late, never.lateness, never.verdict(), never.describe()) == (
        True, None, "late", "nothing loaded yet; freshness allows 3 h")
    undeclared = Freshness.of(DAILY, D(2000, 1, 1), at("2019-02-07T00:00:00"), None)
    assert (undeclared.late, undeclared.lateness, undeclared.verdict()) == (False, None, "")


def test_durations_are_said_in_their_two_largest_units():
    assert [duration(d) for d in (T(hours=26), T(days=2, hours=4, minutes=5), T(minutes=5, seconds=3), T(0), None)] == [
        "1 d 2 h", "2 d 4 h", "5 min 3 s", "0 s", "?"]


def calendar(states_: list[str], freshness: Freshness | None) -> Calendar:
    days = tuple(DateState(D(2019, 2, 1) + T(days=n), s) for n, s in enumerate(states_))
    return Calendar("LoadT", "s.t", D(2019, 2, 1), D(2019, 2, 1) + T(days=len(days)), days, freshness=freshness)


LATE = Freshness.of(DAILY, D(2019, 2, 1), at("2019-02-04T00:00:00"), T(hours=26))
FRESH = Freshness.of(DAILY, D(2019, 2, 1), at("2019-02-02T01:00:00"), T(hours=26))


@pytest.mark.parametrize("days, freshness, code", [
    ([LOADED, MISSING], LATE, 28),              # late beats missing
    ([LOADED, STALE], LATE, 28),                # and stale
    ([LOADED, FAILED], LATE, 30),               # failed beats late
    ([LOADED, MISSING], FRESH, 21),
    ([LOADED, LOADED], FRESH, 0),
    ([LOADED, LOADED], Freshness.of(DAILY, D(2019, 2, 1), at("2030-01-01T00:00:00"), None), 0),  # none declared
])
def test_a_late_table_has_its_own_exit_code(days, freshness, code):
    assert states.exit_code([calendar(days, freshness)]) == code
    assert states.exit_code([calendar([LOADED], None), calendar(days, freshness)]) == code


def test_a_late_table_shows_in_the_terminal_in_json_and_on_the_page():
    cal = calendar([LOADED, MISSING], LATE)
    lines = views.text([cal]).splitlines()
    assert lines[5:7] == ["  2 dates: 1 loaded, 0 failed, 1 missing; 0 rows, 0.0 MiB loaded",
                          "  late    by 22 h: newest loaded 2019-02-01, ended 2 d ago; freshness allows 1 d 2 h"]
    assert "\x1b[" not in views.text([cal]) and "  \x1b[1;31mlate    by 22 h: " in views.text([cal], color=True)
    assert views.text([calendar([LOADED], FRESH)]).splitlines()[6] == (
        "  fresh   newest loaded 2019-02-01, ended 1 h ago; freshness allows 1 d 2 h")
    [pipeline] = views.as_json([cal], 28)["pipelines"]
    assert pipeline["freshness"]["late"] is True and pipeline["freshness"]["lateness_s"] == 22 * 3600
    assert views.as_json([cal], 28)["meaning"].startswith("a table is late")
    page = views.page([cal], 28, at("2019-02-04T00:00:00"))
    assert '<p class="freshness late">late by 22 h: newest loaded 2019-02-01, ended 2 d ago;' in page
    assert "freshness" not in views.text([calendar([LOADED], None)])  # none declared: nothing said


# -- the command, against PostgreSQL and S3 -------------------------------------------------------------------------


def status(stack, cfg: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "luigi_pipelines.cli", "status", *args], cwd=ROOT,
                          env=stack.env(cfg), capture_output=True, text=True, timeout=180)


@pytest.fixture
def feeds(stack, tmp_path) -> Path:
    seed_feeds(stack, run_task)
    return stack.write_config(tmp_path / "feeds.cfg")


@pytest.mark.postgres
@pytest.mark.s3
def test_status_shows_the_late_tables(stack, feeds):
    result = status(stack, feeds, *TASKS, *WINDOW, "--now", NOW)
    assert result.returncode == 30, result.stderr  # feed A's Feb 4 failed: that is worse than late
    said = [line for line in result.stdout.splitlines() if line.startswith(("  late", "  fresh"))]
    assert said == ["  late    by 2 d 10 h: newest loaded 2019-02-03, ended 3 d 12 h ago; freshness allows 1 d 2 h",
                    "  fresh   newest loaded 2019-02-06, ended 12 h ago; freshness allows 1 d 2 h",
                    "  late    by 1 d: newest loaded 2019-02-06T08, ended 1 d 3 h ago; freshness allows 3 h"]
    out = json.loads(status(stack, feeds, *TASKS, *WINDOW, "--now", NOW, "--json").stdout)
    assert [(p["task"], p["freshness"]["newest"], p["freshness"]["late"]) for p in out["pipelines"]] == [
        ("DailyFeedA", "2019-02-03", True), ("DailyFeedB", "2019-02-06", False), ("HourlyFeed", "2019-02-06T08", True)]
    # without the failed feed: late is what is left, exit 28, whatever is missing
    late = status(stack, feeds, "--module", "tests.freshness_tasks", "--task", "HourlyFeed", "--task", "DailyFeedB",
                  *WINDOW, "--now", NOW, "--html", str(feeds.parent / "late.html"))
    assert late.returncode == 28, late.stderr
    assert '<p class="freshness late">late by 1 d: newest loaded 2019-02-06T08' in (feeds.parent / "late.html").read_text()


# (task, window, now, exit code); the newest partition is judged whatever the window: of the hours, Feb 6 08:00
# (Feb 5's hours are missing); of feed A, Feb 3 when Feb 1 alone is in the window
EDGES = [
    ("DailyFeedA", ["--start", "2019-02-01", "--stop", "2019-02-04"], "2019-02-05T02:00:00Z", 0),   # 26 h after Feb 4
    ("DailyFeedA", ["--start", "2019-02-01", "--stop", "2019-02-04"], "2019-02-05T02:00:01Z", 28),
    ("HourlyFeed", ["--start", "2019-02-05", "--stop", "2019-02-06"], "2019-02-06T12:00:00Z", 21),  # 3 h after 09:00
    ("HourlyFeed", ["--start", "2019-02-05", "--stop", "2019-02-06"], "2019-02-06T12:00:01Z", 28),
    ("DailyFeedA", ["--start", "2019-02-01", "--stop", "2019-02-02"], "2019-02-05T02:00:01Z", 28),
    ("DailyFeedA", ["--start", "2019-02-01", "--stop", "2019-02-02"], "2019-02-05T01:00:00Z", 0),
]


@pytest.mark.postgres
@pytest.mark.s3
def test_late_from_the_end_of_the_newest_partition_by_the_grain(stack, feeds):
    codes = [status(stack, feeds, "--module", "tests.freshness_tasks", "--task", task, *window, "--now", now).returncode
             for task, window, now, _ in EDGES]
    assert codes == [code for *_, code in EDGES]


@pytest.mark.postgres
def test_a_freshness_that_is_not_a_duration_is_one_line_and_exit_2(stack, tmp_path):
    cfg = stack.write_config(tmp_path / "bad.cfg")
    result = status(stack, cfg, "--module", "tests.freshness_tasks", "--task", "BadFreshness", *WINDOW)
    assert result.returncode == 2
    assert result.stderr.strip() == ("luigi-pipelines status: BadFreshness: freshness 'a day or so': give a "
                                     "datetime.timedelta or a duration such as '26h', '1d 2h', '90m': exit 2")
