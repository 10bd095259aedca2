"""Tasks made of every grain × source × write mode, for ``tests/test_compose.py`` and its ``luigi`` command lines.

Their bucket comes from the test stack's ``[transactions]`` section and their schema from ``[compose_test]``.
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator
from typing import Any

import luigi
from luigi.tools.range import RangeDaily, RangeHourly, RangeMonthly  # noqa: F401 - registered for the command line
from psycopg2 import sql

import luigi_pipelines as lp
from luigi_pipelines.pipelines.transactions import transactions


class compose_test(luigi.Config):  # noqa: N801 - the [compose_test] section
    schema = luigi.Parameter(default="public")


def _table(name: str) -> Any:
    return property(lambda self: f"{compose_test().schema}.{name}")


_BUCKET = property(lambda self: transactions().bucket)


class HourlyEvents(lp.LoadPartition):
    """Events by the hour: ``e/YYYY/MM/DD/HH/*.csv`` of ``id,kind``; the hour and the date come from the key."""

    grain = lp.HOURLY
    key_prefix = "e/{date:%Y/%m/%d/%H}/"
    date_column = "day"
    date_from = lp.partition_date()
    columns = [("id", "bigint"), ("kind", "text")]
    bucket = _BUCKET
    table = _table("events")


class HourlyKinds(lp.TransformPartition):
    """Events per kind, hour by hour, from the same hour of ``HourlyEvents`` (a Python function)."""

    grain = lp.HOURLY
    upstream = HourlyEvents
    source_columns = ["kind"]
    date_column = "day"
    columns = [("day", "date"), ("hour", "smallint"), ("kind", "text"), ("n", "bigint")]
    table = _table("kinds_hourly")

    @staticmethod
    def transform(rows: Iterator[tuple[Any, ...]], hour: Any) -> Iterable[tuple[Any, ...]]:
        counts = Counter(kind for (kind,) in rows)
        return [(hour.date(), hour.hour, kind, n) for kind, n in sorted(counts.items())]


class HourlyKindsSql(lp.SqlTransformPartition):
    """The same counts in the server: the hour's rows of the upstream (its key names the hour)."""

    grain = lp.HOURLY
    upstream = HourlyEvents
    source_columns = ["kind"]
    date_column = "day"
    columns = [("day", "date"), ("kind", "text"), ("n", "bigint")]
    query = sql.SQL("SELECT {}, kind, count(*) FROM upstream GROUP BY kind").format(sql.Placeholder("date"))
    table = _table("kinds_hourly_sql")


class DailyKinds(lp.SqlTransformPartition):
    """A daily SQL transform of the hourly load: all 24 hours of the date."""

    upstream = HourlyEvents
    source_columns = ["kind"]
    date_column = "day"
    columns = [("day", "date"), ("kind", "text"), ("n", "bigint")]
    query = sql.SQL("SELECT {}, kind, count(*) FROM upstream GROUP BY kind").format(sql.Placeholder("date"))
    table = _table("kinds_daily")


class HourlyAccounts(lp.MergePartition):
    """Accounts merged hour by hour (``a/YYYY/MM/DD/HH/``): each hour's changes by key, a deleted flag."""

    grain = lp.HOURLY
    key_prefix = "a/{date:%Y/%m/%d/%H}/"
    columns = [("account", "text"), ("tier", "text"), ("gone", "boolean")]
    merge_key = ("account",)
    deleted_flag = "gone"
    bucket = _BUCKET
    table = _table("accounts_hourly")


class EuAccounts(lp.MergePartition):
    """Daily snapshots of one region's accounts, merged by (region, account) into a table two regions share."""

    key_prefix = "r/eu/{date:%Y-%m-%d}/"
    scope = {"region": "eu"}
    columns = [("account", "text"), ("tier", "text")]
    merge_key = ("region", "account")
    snapshot = True
    bucket = _BUCKET
    table = _table("accounts_by_region")


class UsAccounts(EuAccounts):
    key_prefix = "r/us/{date:%Y-%m-%d}/"
    scope = {"region": "us"}


class TiersOfMerged(lp.SqlTransformPartition):
    """A daily count of the merged accounts per tier (a transform of a merged table reads all its rows)."""

    upstream = HourlyAccounts
    source_columns = ["tier"]
    date_column = "day"
    columns = [("day", "date"), ("tier", "text"), ("n", "bigint")]
    query = sql.SQL("SELECT {}, tier, count(*) FROM upstream GROUP BY tier").format(sql.Placeholder("date"))
    table = _table("tiers")


class MonthlySales(lp.LoadPartition):
    """Sales by the month: ``m/YYYY-MM/*.csv`` of ``id,day,amount``, each row's date a date of its month."""

    grain = lp.MONTHLY
    key_prefix = "m/{date:%Y-%m}/"
    date_column = "day"
    columns = [("id", "bigint"), ("day", "date"), ("amount", "numeric(12,2)")]
    bucket = _BUCKET
    table = _table("sales")


class DailySales(lp.SqlTransformPartition):
    """A daily transform of the monthly load: the date's rows of its month's partition."""

    upstream = MonthlySales
    source_columns = ["amount"]
    date_column = "day"
    columns = [("day", "date"), ("total", "numeric(14,2)")]
    query = sql.SQL("SELECT {}, sum(amount) FROM upstream HAVING count(*) > 0").format(sql.Placeholder("date"))
    table = _table("sales_daily")


# -- the same compositions in swap mode (partitioned = True): a child table per hour, date or month -------------


class HourlyEventsSwapped(HourlyEvents):
    partitioned = True
    table = _table("events_swapped")


class HourlyKindsSwapped(HourlyKinds):
    """A Python transform of a swapped hour into a swapped hour."""

    upstream = HourlyEventsSwapped
    partitioned = True
    table = _table("kinds_hourly_swapped")


class DailyKindsSwapped(DailyKinds):
    """A SQL transform of a date's 24 swapped hours into a swapped date, keeping two dates."""

    upstream = HourlyEventsSwapped
    partitioned = True
    keep = 2
    table = _table("kinds_daily_swapped")


class MonthlySalesSwapped(MonthlySales):
    partitioned = True
    table = _table("sales_swapped")


class DailySalesSwapped(DailySales):
    upstream = MonthlySalesSwapped
    partitioned = True
    table = _table("sales_daily_swapped")
