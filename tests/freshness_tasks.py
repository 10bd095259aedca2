"""Feeds that declare ``freshness``, for ``tests/test_freshness.py`` and ``tests/test_metrics.py``:
``luigi-pipelines status --module tests.freshness_tasks --task DailyFeedA --task DailyFeedB --task HourlyFeed``.

Two daily feeds share the stack's ``[transactions]`` table, each its own scope (``feed = a``, ``feed = b``) and
prefix; the hourly one has a table of its own. Objects are CSV with a header ``id,day,v``.
"""
from __future__ import annotations

import datetime
from collections.abc import Callable
from typing import Any

from luigi.tools.range import RangeDaily, RangeHourly  # noqa: F401 - registers them with [core] autoload_range=false

import luigi_pipelines as lp
from luigi_pipelines.pipelines.transactions import transactions

COLUMNS = [("id", "bigint"), ("day", "date"), ("v", "text")]


class DailyFeedA(lp.LoadPartition):
    """Daily, due 26 hours after its day ends (yesterday's by 02:00 UTC)."""

    key_prefix = "a/{date:%Y-%m-%d}/"
    scope = {"feed": "a"}
    freshness = "26h"
    date_column = "day"
    columns = COLUMNS
    bucket = property(lambda self: transactions().bucket)
    table = property(lambda self: transactions().table)


class DailyFeedB(lp.LoadPartition):
    """The same table's other feed; its freshness a ``timedelta``."""

    key_prefix = "b/{date:%Y-%m-%d}/"
    scope = {"feed": "b"}
    freshness = datetime.timedelta(hours=26)
    date_column = "day"
    columns = COLUMNS
    bucket = property(lambda self: transactions().bucket)
    table = property(lambda self: transactions().table)


class HourlyFeed(lp.LoadPartition):
    """Hourly, due 3 hours after its hour ends; a table of its own."""

    grain = lp.HOURLY
    key_prefix = "h/{date:%Y/%m/%d/%H}/"
    freshness = "3h"
    date_column = "day"
    columns = COLUMNS
    bucket = property(lambda self: transactions().bucket)
    table = property(lambda self: transactions().table + "_hourly")


class BadFreshness(DailyFeedA):
    freshness = "a day or so"


# -- the range of tests/test_freshness.py and tests/test_metrics.py ---------------------------------------------

D = datetime.date
H = datetime.datetime
NOW = "2019-02-07T12:00:00Z"
WINDOW = ["--start", "2019-02-01", "--stop", "2019-02-07"]
TASKS = ["--module", __name__, "--task", "DailyFeedA", "--task", "DailyFeedB", "--task", "HourlyFeed"]
LOADED_A = [D(2019, 2, d) for d in (1, 2, 3)]
FAILED_A = D(2019, 2, 4)
LOADED_B = [D(2019, 2, d) for d in range(1, 7)]
LOADED_HOURS = [H(2019, 2, 6, h) for h in range(9)]


def csv(day: D, *ids: str) -> bytes:
    return ("id,day,v\n" + "".join(f"{i},{day},x\n" for i in ids)).encode()


def seed_feeds(stack: Any, run: Callable[[Any], Any]) -> None:
    """Feed A: Feb 1-3 loaded, Feb 4 failed (a bad id), Feb 5-6 no data: late at ``NOW`` (its newest partition
    ended Feb 4, 3.5 days before). Feed B: Feb 1-6 loaded, fresh. The hourly feed: Feb 6 00:00-08:00 loaded,
    the rest of the window missing: late (its newest hour ended 27 hours before). ``run`` runs a task in-process."""
    for n, day in enumerate(LOADED_A):
        stack.put(f"a/{day}/x.csv", csv(day, *(str(100 * n + k) for k in range(n + 2))))
    stack.put(f"a/{FAILED_A}/x.csv", csv(FAILED_A, "7", "x8"))
    for n, day in enumerate(LOADED_B):
        stack.put(f"b/{day}/x.csv", csv(day, *(str(10_000 + 100 * n + k) for k in range(3))))
    for hour in LOADED_HOURS:
        stack.put(f"h/{hour:%Y/%m/%d/%H}/x.csv", csv(hour.date(), str(hour.hour)))
    outcomes = [run(DailyFeedA(date=d)) for d in [*LOADED_A, FAILED_A]] + [run(DailyFeedB(date=d)) for d in LOADED_B]
    outcomes += [run(HourlyFeed(date_hour=h)) for h in LOADED_HOURS]
    assert [o.status.name for o in outcomes] == ["SUCCESS"] * 3 + ["FAILED"] + ["SUCCESS"] * 15
