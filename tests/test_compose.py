"""Every grain with every source and write mode (``tests/compose_tasks.py``), on real PostgreSQL and S3, run by the
real ``luigi`` command line: hourly merges, hourly transforms in Python and SQL, a daily transform of hours, monthly
loads and a daily transform of a month, scoped snapshot merges, a transform of a merged table."""
from __future__ import annotations

import datetime

import pytest

from luigi_pipelines import ConfigurationError
from luigi_pipelines.grains import DAILY, HOURLY, MONTHLY
from tests.conftest import run_task

pytestmark = [pytest.mark.postgres, pytest.mark.s3]

D1 = datetime.date(2019, 2, 1)
NOW = ["--now", str(int(datetime.datetime(2019, 4, 1, tzinfo=datetime.timezone.utc).timestamp()))]


@pytest.fixture
def compose(stack, tmp_path):
    """The stack with ``[compose_test] schema`` set, and a function running ``luigi --module tests.compose_tasks``."""
    stack.set_config("compose_test", "schema", stack.schema)
    cfg = stack.write_config(tmp_path / "compose.cfg")

    def luigi(*args: str) -> None:
        done = stack.luigi("--module", "tests.compose_tasks", *args, "--local-scheduler", config_file=cfg)
        assert done.returncode == 0 and "This progress looks :)" in done.stderr, done.stderr[-3000:]

    return luigi


def rows(stack, statement: str) -> list[tuple]:
    return stack.query(statement.format(s=stack.schema))


def markers(stack, table: str) -> list[tuple]:
    """(key, date, rows) of each marker of ``table``'s partitions, by date then key."""
    return stack.query(f"SELECT target_table, partition_date, rows_loaded FROM {stack.marker_schema}.partition_marker "
                       "WHERE target_table LIKE %s ORDER BY 2, 1", (f"{stack.schema}.{table}%",))


def test_grains_map_values_to_dates_keys_and_spans():
    hour = datetime.datetime(2019, 2, 1, 13)
    assert (HOURLY.date_of(hour), HOURLY.stop_of(hour), HOURLY.key_scope(hour)) == (D1, D1 + datetime.timedelta(1),
                                                                                 {"hour": "13"})
    assert (MONTHLY.date_of(datetime.date(2019, 2, 1)), MONTHLY.stop_of(datetime.date(2019, 2, 1))) == \
        (D1, datetime.date(2019, 3, 1))
    assert MONTHLY.covering(datetime.date(2019, 2, 10), datetime.date(2019, 2, 11)) == [D1]
    assert MONTHLY.values_between(datetime.date(2019, 1, 15), datetime.date(2019, 4, 1)) == [D1, datetime.date(2019, 3, 1)]
    assert len(HOURLY.covering(D1, D1 + datetime.timedelta(1))) == 24 and DAILY.covering(D1, D1) == []
    assert [g.describe(v) for g, v in ((DAILY, D1), (HOURLY, hour), (MONTHLY, D1))] == ["2019-02-01", "2019-02-01T13",
                                                                                     "2019-02"]
    assert HOURLY.prefixes_apart("e/{date:%Y/%m/%d/%H}/") and not HOURLY.prefixes_apart("e/{date:%Y/%m/%d}/")
    assert MONTHLY.prefixes_apart("m/{date:%Y-%m}/") and not DAILY.prefixes_apart("m/{date:%Y-%m}/")


def test_hourly_loads_and_their_hourly_and_daily_transforms_in_python_and_sql(stack, compose):
    for h, kinds in ((10, "a,a,b"), (11, "b"), (23, "c,a")):
        stack.put(f"e/2019/02/01/{h:02d}/part.csv", "id,kind\n" + "".join(
            f"{h * 10 + n},{k}\n" for n, k in enumerate(kinds.split(","))))
    compose("RangeHourly", "--of", "HourlyKinds", "--start", "2019-02-01T10", "--stop", "2019-02-01T12", *NOW)
    compose("RangeHourly", "--of", "HourlyKindsSql", "--start", "2019-02-01T10", "--stop", "2019-02-01T12", *NOW)
    assert rows(stack, "SELECT day, hour, kind, n FROM {s}.kinds_hourly ORDER BY 2, 3") == [
        (D1, 10, "a", 2), (D1, 10, "b", 1), (D1, 11, "b", 1)]
    assert rows(stack, "SELECT day, hour, kind, n FROM {s}.kinds_hourly_sql ORDER BY 2, 3") == [
        (D1, 10, "a", 2), (D1, 10, "b", 1), (D1, 11, "b", 1)]  # the hour filled from the key, like a load's
    assert [m[0].rsplit("/", 1)[1] for m in markers(stack, "kinds_hourly_sql")] == ["hour=10", "hour=11"]

    # A daily transform needs all 24 hours of its date: the hours without objects are missing data.
    for h in range(24):
        if h not in (10, 11, 23):
            stack.put(f"e/2019/02/01/{h:02d}/part.csv", "id,kind\n")
    compose("DailyKinds", "--date", "2019-02-01")
    assert rows(stack, "SELECT kind, n FROM {s}.kinds_daily ORDER BY 1") == [("a", 3), ("b", 2), ("c", 1)]
    assert len(markers(stack, "events")) == 24


def test_the_partitions_of_a_date_are_those_of_its_grain(stack):
    from tests.compose_tasks import HourlyEvents, MonthlySales

    hours = HourlyEvents.partitions_of_date(D1, reload_changed=True)
    assert [t.date_hour.hour for t in hours] == list(range(24)) and all(t.reload_changed for t in hours)
    assert [t.month for t in MonthlySales.partitions_of_date(datetime.date(2019, 2, 14))] == [D1]


def test_a_transform_of_an_hour_from_a_daily_table_is_refused(stack):
    import luigi_pipelines as lp
    from tests.compose_tasks import MonthlySales

    class HourOfMonth(lp.SqlTransformPartition):
        grain = lp.HOURLY
        upstream = MonthlySales
        source_columns = ["amount"]
        date_column = "day"
        columns = [("day", "date"), ("n", "bigint")]
        table = f"{stack.schema}.x"

    with pytest.raises(ConfigurationError, match="HourOfMonth is hourly and its upstream MonthlySales is monthly"):
        HourOfMonth(date_hour=datetime.datetime(2019, 2, 1, 3)).requires()


def test_hourly_merges_apply_hour_by_hour_in_order(stack, compose):
    stack.put("a/2019/02/01/09/a.csv", "account,tier,gone\nx,gold,false\ny,basic,false\n")
    stack.put("a/2019/02/01/10/a.csv", "account,tier,gone\nx,silver,false\ny,basic,true\nz,gold,false\n")
    compose("RangeHourly", "--of", "HourlyAccounts", "--start", "2019-02-01T09", "--stop", "2019-02-01T11", *NOW)
    assert rows(stack, "SELECT account, tier FROM {s}.accounts_hourly ORDER BY 1") == [("x", "silver"), ("z", "gold")]
    assert [m[0].rsplit("/", 1)[1] for m in markers(stack, "accounts_hourly")] == ["hour=09", "hour=10"]
    assert "hour" not in [c for (c,) in rows(stack, "SELECT column_name FROM information_schema.columns WHERE "
                                              "table_schema = '{s}' AND table_name = 'accounts_hourly'")]

    # An hour older than the newest merged one would put older values over newer ones: refused unless forced.
    from luigi_pipelines import LoadError
    from tests.compose_tasks import HourlyAccounts

    stack.put("a/2019/02/01/08/a.csv", "account,tier,gone\nx,bronze,false\n")
    with pytest.raises(LoadError, match=r"2019-02-01 \(.*hour = '10'\) is merged already, and merges apply in date order"):
        HourlyAccounts(date_hour=datetime.datetime(2019, 2, 1, 8)).write_once()
    assert rows(stack, "SELECT tier FROM {s}.accounts_hourly WHERE account = 'x'") == [("silver",)]
    assert HourlyAccounts(date_hour=datetime.datetime(2019, 2, 1, 9)).priority > \
        HourlyAccounts(date_hour=datetime.datetime(2019, 2, 1, 10)).priority  # older hours first

    # A daily transform of the merged table reads all its rows (it has no dates), after the hours of its date.
    for h in range(24):
        if h not in (9, 10):
            stack.put(f"a/2019/02/01/{h:02d}/a.csv", "account,tier,gone\n")
    for h in range(24):  # the date again, oldest first
        HourlyAccounts(date_hour=datetime.datetime(2019, 2, 1, h), force=True).write_once()
    compose("TiersOfMerged", "--date", "2019-02-01")
    assert rows(stack, "SELECT day, tier, n FROM {s}.tiers ORDER BY 2") == [(D1, "gold", 1), (D1, "silver", 1)]


def test_scoped_snapshot_merges_share_a_table_and_delete_only_their_scope(stack, compose):
    stack.put("r/eu/2019-02-01/a.csv", "account,tier\nx,gold\ny,basic\n")
    stack.put("r/us/2019-02-01/a.csv", "account,tier\nx,silver\n")
    stack.put("r/eu/2019-02-02/a.csv", "account,tier\nx,gold\n")  # y left the eu snapshot
    compose("RangeDaily", "--of", "EuAccounts", "--start", "2019-02-01", "--stop", "2019-02-03", *NOW)
    compose("UsAccounts", "--date", "2019-02-01")
    assert rows(stack, "SELECT region, account, tier FROM {s}.accounts_by_region ORDER BY 1, 2") == [
        ("eu", "x", "gold"), ("us", "x", "silver")]
    assert [m[0].rsplit("/", 1)[1] for m in markers(stack, "accounts_by_region")] == [
        "region=eu", "region=us", "region=eu"]


def test_monthly_loads_replace_a_month_and_a_daily_transform_reads_its_dates(stack, compose):
    stack.put("m/2019-02/a.csv", "id,day,amount\n1,2019-02-01,1.50\n2,2019-02-01,2.00\n3,2019-02-28,5.00\n")
    stack.put("m/2019-03/a.csv", "id,day,amount\n4,2019-03-02,7.00\n")
    compose("RangeMonthly", "--of", "MonthlySales", "--start", "2019-02", "--stop", "2019-04", *NOW)
    assert [(m[1], m[2]) for m in markers(stack, "sales")] == [(D1, 3), (datetime.date(2019, 3, 1), 1)]
    compose("DailySales", "--date", "2019-02-01")
    assert rows(stack, "SELECT day, total FROM {s}.sales_daily") == [(D1, 3.5)]

    # A reload replaces its month only; a row dated outside the month is a bad row, and nothing changes.
    stack.put("m/2019-02/a.csv", "id,day,amount\n1,2019-02-01,9.00\n")
    compose("MonthlySales", "--month", "2019-02", "--force")
    assert rows(stack, "SELECT id, day FROM {s}.sales ORDER BY 1") == [(1, D1), (4, datetime.date(2019, 3, 2))]
    from luigi_pipelines import BadInputError
    from tests.compose_tasks import MonthlySales

    stack.put("m/2019-02/a.csv", "id,day,amount\n1,2019-02-01,9.00\n5,2019-03-01,1.00\n")
    with pytest.raises(BadInputError, match=r"m/2019-02/a\.csv line 3: day 2019-03-01 is outside the partition's dates "
                                             r"\[2019-02-01, 2019-03-01\)$"):
        MonthlySales(month=D1, force=True).write_once()
    assert rows(stack, "SELECT id FROM {s}.sales ORDER BY 1") == [(1,), (4,)]
    assert run_task(MonthlySales(month=D1)).status.name == "SUCCESS"  # complete: a no-op


def test_swap_mode_with_every_grain_a_transform_of_each_and_retention(stack, compose):
    """Hourly loads, their hourly Python and daily SQL transforms, monthly loads and their daily transform, all
    partitioned: a child per hour, date or month; a reload swaps the upstream hour's child, and the stale check
    sees it; the daily transform keeps two dates."""
    def children(table: str) -> list[str]:
        return [r[0] for r in rows(stack, "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
                                          "WHERE i.inhparent = '{s}." + table + "'::regclass ORDER BY 1")]

    for day in (1, 2, 3):
        for h in range(24):
            stack.put(f"e/2019/02/0{day}/{h:02d}/part.csv", "id,kind\n" + (f"{h},a\n{h + 100},b\n" if h == 10 else ""))
    compose("RangeHourly", "--of", "HourlyKindsSwapped", "--start", "2019-02-01T10", "--stop", "2019-02-01T12", *NOW)
    assert children("events_swapped") == ["events_swapped_p2019020110", "events_swapped_p2019020111"]
    assert rows(stack, "SELECT hour, kind, n FROM {s}.kinds_hourly_swapped ORDER BY 1, 2") == [(10, "a", 1), (10, "b", 1)]
    assert children("kinds_hourly_swapped") == ["kinds_hourly_swapped_p2019020110", "kinds_hourly_swapped_p2019020111"]

    compose("RangeDaily", "--of", "DailyKindsSwapped", "--start", "2019-02-01", "--stop", "2019-02-04", *NOW)
    assert rows(stack, "SELECT day, kind, n FROM {s}.kinds_daily_swapped ORDER BY 1, 2") == [
        (datetime.date(2019, 2, d), k, 1) for d in (2, 3) for k in "ab"]  # keep = 2: Feb 1 expired
    assert [m[1] for m in markers(stack, "kinds_daily_swapped")] == [datetime.date(2019, 2, 2), datetime.date(2019, 2, 3)]
    compose("RangeDaily", "--of", "DailyKindsSwapped", "--start", "2019-02-01", "--stop", "2019-02-04", *NOW)  # no-op
    from luigi_pipelines import states, views
    from luigi_pipelines.status import calendar_of

    calendar = calendar_of("tests.compose_tasks", "DailyKindsSwapped", D1, datetime.date(2019, 2, 4))
    assert [d.state for d in calendar.days] == [states.EXPIRED, states.LOADED, states.LOADED]
    assert states.exit_code([calendar]) == 0 and "2019-02  -##" in views.text([calendar])
    assert "3 dates: 2 loaded, 0 failed, 0 missing, 1 expired;" in views.text([calendar])

    # A reload of an upstream hour swaps its child; the transform of that hour is stale and reloads.
    stack.put("e/2019/02/01/10/part.csv", "id,kind\n1,a\n2,a\n3,c\n")
    compose("HourlyEventsSwapped", "--date-hour", "2019-02-01T10", "--force")
    compose("RangeHourly", "--of", "HourlyKindsSwapped", "--start", "2019-02-01T10", "--stop", "2019-02-01T12",
            "--HourlyKindsSwapped-reload-changed", *NOW)
    assert rows(stack, "SELECT hour, kind, n FROM {s}.kinds_hourly_swapped ORDER BY 1, 2") == [(10, "a", 2), (10, "c", 1)]

    stack.put("m/2019-02/a.csv", "id,day,amount\n1,2019-02-01,1.50\n2,2019-02-01,2.00\n3,2019-02-28,5.00\n")
    compose("DailySalesSwapped", "--date", "2019-02-01")
    assert children("sales_swapped") == ["sales_swapped_p201902"] and children("sales_daily_swapped") == [
        "sales_daily_swapped_p20190201"]
    assert rows(stack, "SELECT day, total FROM {s}.sales_daily_swapped") == [(D1, 3.5)]
    from luigi_pipelines import BadInputError
    from tests.compose_tasks import MonthlySalesSwapped

    stack.put("m/2019-02/a.csv", "id,day,amount\n1,2019-02-01,9.00\n5,2019-03-01,1.00\n")
    with pytest.raises(BadInputError, match=r"m/2019-02/a.csv.*line 3.*partition_bound"):
        MonthlySalesSwapped(month=D1, force=True).write_once()
    assert rows(stack, "SELECT id FROM {s}.sales_swapped ORDER BY 1") == [(1,), (2,), (3,)]


WEEKLY_MODULE = """
import datetime
from dataclasses import dataclass
from typing import ClassVar

import luigi_pipelines as lp
from luigi_pipelines.grains import Grain


@dataclass(frozen=True)
class Weekly(Grain):
    name: ClassVar[str] = "weekly"
    parameter: ClassVar[str] = "week"
    parameter_type: ClassVar[str] = "DateParameter"
    range_task: ClassVar[str] = "RangeDaily"
    unit: ClassVar[str] = "week"
    text_format: ClassVar[str] = "%G-W%V"

    def date_of(self, value):
        return value - datetime.timedelta(days=value.weekday())

    def stop_of(self, value):
        return self.date_of(value) + datetime.timedelta(days=7)

    def values_between(self, start, stop):
        first = self.stop_of(start - datetime.timedelta(days=1))
        return [first + datetime.timedelta(weeks=n) for n in range(max(0, (stop - first).days // 7))]

    def containing(self, date):
        return self.date_of(date)

    def ordinal(self, value):
        return value.toordinal() // 7


class LoadWeek(lp.LoadPartition):
    grain = Weekly()
    bucket = "BUCKET"
    key_prefix = "w/{date:%G-W%V}/"
    table = "SCHEMA.weekly"
    date_column = "day"
    columns = [("id", "bigint"), ("day", "date")]
"""


def test_a_new_grain_is_one_small_class(stack, tmp_path):
    """A weekly grain, declared in one small class outside the package, loads through the same task, source and
    write mode: a week's objects replace its rows, a row dated outside the week is a bad row, and `status` shows
    its weeks (nothing in the package knows weeks)."""
    import importlib.util
    import json
    import subprocess
    import sys

    from luigi_pipelines import BadInputError

    module = tmp_path / "weekly_tasks.py"
    module.write_text(WEEKLY_MODULE.replace("BUCKET", stack.bucket).replace("SCHEMA", stack.schema))
    spec = importlib.util.spec_from_file_location("weekly_tasks", module)
    assert spec and spec.loader
    weekly = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(weekly)

    monday = datetime.date(2019, 2, 4)
    stack.put("w/2019-W06/a.csv", "id,day\n1,2019-02-04\n2,2019-02-10\n")
    assert run_task(weekly.LoadWeek(week=monday)).status.name == "SUCCESS"
    assert stack.query(f"SELECT id, day FROM {stack.schema}.weekly ORDER BY 1") == [
        (1, monday), (2, datetime.date(2019, 2, 10))]
    assert markers(stack, "weekly") == [(f"{stack.schema}.weekly", monday, 2)]
    stack.put("w/2019-W06/a.csv", "id,day\n1,2019-02-04\n3,2019-02-11\n")
    with pytest.raises(BadInputError, match=r"w/2019-W06/a\.csv line 3: day 2019-02-11 is outside the partition's "
                                             r"dates \[2019-02-04, 2019-02-11\)$"):
        weekly.LoadWeek(week=monday, force=True).run()  # run(): the failed attempt is put on record
    assert stack.query(f"SELECT count(*) FROM {stack.schema}.weekly") == [(2,)]

    env = {**stack.env(stack.write_config(tmp_path / "weekly.cfg")), "PYTHONPATH": f"{tmp_path}:{stack.env()['PYTHONPATH']}"}
    args = [sys.executable, "-m", "luigi_pipelines.cli", "status", "--module", "weekly_tasks", "--task", "LoadWeek",
            "--start", "2019-02-04", "--stop", "2019-02-18", "--now", "2019-03-01T00:00:00Z"]
    text = subprocess.run([*args, "--color", "never", "--html", str(tmp_path / "w.html")], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert text.returncode == 30, text.stderr  # the forced reload failed: on record
    assert "2019-W06  X" in text.stdout and "2019-W07  ." in text.stdout, text.stdout
    assert 'data-date="2019-W06"' in (tmp_path / "w.html").read_text()
    shown = json.loads(subprocess.run([*args, "--json"], env=env, cwd=tmp_path, capture_output=True, text=True,
                                      timeout=120).stdout)
    assert [(d["partition"], d["state"]) for d in shown["pipelines"][0]["dates"]] == [
        ("2019-W06", "failed"), ("2019-W07", "missing")]
