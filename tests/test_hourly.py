"""Hourly partitions: LoadHourlyPartition with luigi's RangeHourly, markers keyed by the hour, daily tasks on 24 hours."""
from __future__ import annotations

import datetime
import io

import pytest
from luigi.execution_summary import LuigiStatusCode
from luigi.tools.range import RangeHourly

import luigi_pipelines as lp
from luigi_pipelines import BadInputError, ConfigurationError, db
from tests.conftest import run_task

pytestmark = [pytest.mark.postgres, pytest.mark.s3]

D1 = datetime.date(2019, 2, 1)
SUCCESS = LuigiStatusCode.SUCCESS
NOW = int(datetime.datetime(2019, 3, 1, tzinfo=datetime.timezone.utc).timestamp())


def hour(h: int, day: datetime.date = D1) -> datetime.datetime:
    return datetime.datetime.combine(day, datetime.time(h))


@pytest.fixture
def make_hourly(stack):
    """A LoadHourlyPartition subclass bound to this test's schema and bucket: ``h/YYYY/MM/DD/HH/`` of ``id,v``."""

    def factory(**attrs):
        declared = {
            "bucket": stack.bucket,
            "key_prefix": "h/{date:%Y/%m/%d/%H}/",
            "table": f"{stack.schema}.t",
            "date_column": "day",
            "date_from": lp.partition_date(),
            "columns": [("id", "bigint"), ("v", "text")],
            "__module__": __name__,
        }
        declared.update(attrs)
        return type(attrs.pop("__name__", "LoadHourly"), (lp.LoadHourlyPartition,), declared)

    return factory


def put_hours(stack, hours, rows_per_hour: int = 2) -> None:
    for h in hours:
        body = "id,v\n" + "".join(f"{h.hour * 100 + n},h{h.hour}\n" for n in range(rows_per_hour))
        stack.put(f"h/{h:%Y/%m/%d/%H}/part-0.csv", body)


@pytest.mark.filterwarnings('ignore:Parameter "param_name" with value "None"')
def test_range_hourly_loads_each_hour_once_with_markers_keyed_by_the_hour(stack, make_hourly, monkeypatch):
    put_hours(stack, [hour(12), hour(13), hour(14)])
    load = make_hourly()
    checks = []
    real = db.completed_partitions
    monkeypatch.setattr(db, "completed_partitions", lambda *a: checks.append(len(a[2])) or real(*a))
    backfill = RangeHourly(of=load, start=hour(12), stop=hour(15), now=NOW)
    assert run_task(backfill).status == SUCCESS
    assert checks[0] == 3  # every hour of the range in one query
    assert stack.query(f"SELECT day, hour, count(*) FROM {stack.schema}.t GROUP BY 1, 2 ORDER BY 2") == [
        (D1, 12, 2), (D1, 13, 2), (D1, 14, 2)]
    markers = stack.query(f"SELECT target_table, partition_date, rows_loaded FROM {stack.marker_schema}.partition_marker "
                          f"ORDER BY 1")
    assert markers == [(f"{stack.schema}.t/hour={h}", D1, 2) for h in ("12", "13", "14")]
    assert load.bulk_complete([hour(h) for h in range(10, 16)]) == [hour(12), hour(13), hour(14)]
    assert load(date_hour=hour(13)).complete() and not load(date_hour=hour(15)).complete()
    checks.clear()
    rerun = RangeHourly(of=load, start=hour(12), stop=hour(15), now=NOW + 1)  # a new instance: no cached requires
    assert run_task(rerun).status == SUCCESS  # nothing to do
    assert checks == [3] and stack.query(f"SELECT count(*) FROM {stack.schema}.t") == [(6,)]


def test_a_forced_reload_of_one_hour_replaces_that_hour_only(stack, make_hourly):
    put_hours(stack, [hour(0), hour(23)])
    load = make_hourly()
    for h in (0, 23):
        assert run_task(load(date_hour=hour(h))).status == SUCCESS
    stack.put("h/2019/02/01/23/part-0.csv", "id,v\n9,new\n")
    assert run_task(load(date_hour=hour(23), force=True)).status == SUCCESS
    assert stack.query(f"SELECT hour, id, v FROM {stack.schema}.t ORDER BY 1, 2") == [
        (0, 0, "h0"), (0, 1, "h0"), (23, 9, "new")]


def test_rows_of_another_hour_in_the_files_fail_the_load(stack, make_hourly):
    stack.put("h/2019/02/01/13/a.csv", "id,day,hour\n1,2019-02-01,13\n2,2019-02-01,14\n")
    load = make_hourly(columns=[("id", "bigint"), ("day", "date"), ("hour", "smallint")], date_from=lp.file_column())
    with pytest.raises(BadInputError, match=r"13/a\.csv line 3: hour is not '13', the value of the task's scope"):
        load(date_hour=hour(13)).run()
    assert stack.query(f"SELECT count(*) FROM {stack.schema}.t") == [(0,)]


def test_rows_of_another_date_in_an_hours_files_fail_the_load(stack, make_hourly):
    # the hour filled by the load, not a column of the COPY: the rows are counted after it, as before
    stack.put("h/2019/02/01/13/a.csv", "id,day\n1,2019-02-01\n2,2019-02-02\n")
    load = make_hourly(columns=[("id", "bigint"), ("day", "date")], date_from=lp.file_column())
    with pytest.raises(BadInputError, match=r": 1 of 2 rows copied from s3://\S+/ \(h/2019/02/01/13/a.csv\) have day "
                                             r"other than 2019-02-01 or hour other than '13'$"):
        load(date_hour=hour(13)).run()
    # the hour a column of a Parquet file, copied straight into the table: refused as the COPY reads the row
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    sink = io.BytesIO()
    pq.write_table(pa.table({"id": [1, 2, 3], "day": pa.array([D1, D1, D1 + datetime.timedelta(days=1)], pa.date32()),
                             "hour": pa.array([14, 14, 14], pa.int16())}), sink)
    stack.put("h/2019/02/01/14/a.parquet", sink.getvalue())
    load = make_hourly(columns=[("id", "bigint"), ("day", "date"), ("hour", "smallint")], date_from=lp.file_column(),
                       decoder=lp.ParquetDecoder())
    with pytest.raises(BadInputError, match=r"14/a\.parquet row group 1 row 3 \(row 3 of the file\): day 2019-02-02 "
                                            r"is not the partition's date 2019-02-01$"):
        load(date_hour=hour(14)).run()
    assert stack.query(f"SELECT count(*) FROM {stack.schema}.t") == [(0,)]


def test_a_key_prefix_without_the_hour_is_refused(stack, make_hourly):
    put_hours(stack, [hour(13)])
    with pytest.raises(ConfigurationError, match=r"key_prefix 'h/\{date:%Y/%m/%d\}/' does not give every hour a "
                                                 r"prefix of its own"):
        make_hourly(key_prefix="h/{date:%Y/%m/%d}/")(date_hour=hour(13)).run()


def hourly_counts(rows, date):
    """Rows of the hourly table (``hour``) to one row per hour: (date, hour, rows)."""
    counts: dict[int, int] = {}
    for (h,) in rows:
        counts[h] = counts.get(h, 0) + 1
    return [(date, h, n) for h, n in sorted(counts.items())]


def test_a_daily_task_depends_on_the_24_hours_of_its_date(stack, make_hourly):
    put_hours(stack, [hour(h) for h in range(24)], rows_per_hour=1)
    load = make_hourly()
    daily = type("SummarizeHours", (lp.TransformPartition,), {
        "__module__": __name__, "upstream": load, "source_columns": ["hour"],
        "transform": staticmethod(hourly_counts), "table": f"{stack.schema}.per_hour", "date_column": "day",
        "columns": [("day", "date"), ("hour", "smallint"), ("n", "bigint")]})
    task = daily(date=D1)
    assert len(task.requires()) == 24 and {t.date_hour for t in task.requires()} == {hour(h) for h in range(24)}
    assert run_task(task).status == SUCCESS
    assert stack.query(f"SELECT count(*) FROM {stack.marker_schema}.partition_marker") == [(25,)]
    assert stack.query(f"SELECT hour, n FROM {stack.schema}.per_hour ORDER BY 1") == [(h, 1) for h in range(24)]


def test_range_hourly_through_the_luigi_command_across_midnight(stack, tmp_path):
    """Hours older than luigi's 100-day hours_back and more than 50 of them: the package's [RangeHourly]
    defaults schedule them all; a missing hour is missing data (exit 20) until it arrives."""
    hours = [hour(22, datetime.date(2019, 1, 31)) + datetime.timedelta(hours=n) for n in range(60)]
    for h in hours[:-1]:
        stack.put(f"events/{h:%Y/%m/%d/%H}/a.csv", f"id,kind\n{h.day * 100 + h.hour},k\n")
    cfg = stack.write_config(tmp_path / "test.cfg")
    args = ["--module", "tests.hourly_tasks", "RangeHourly", "--of", "LoadHourlyEvents", "--start",
            f"{hours[0]:%Y-%m-%dT%H}", "--stop", f"{hours[-1] + datetime.timedelta(hours=1):%Y-%m-%dT%H}",
            "--local-scheduler"]
    first = stack.luigi(*args, config_file=cfg)
    assert first.returncode == 20, first.stderr[-3000:]  # the last hour has no objects yet
    table = f"{stack.schema}.transaction"
    assert stack.query(f"SELECT count(*), count(DISTINCT (day, hour)) FROM {table}") == [(59, 59)]
    assert stack.query(f"SELECT min(day), max(day) FROM {table}") == [(datetime.date(2019, 1, 31),
                                                                       datetime.date(2019, 2, 3))]
    stack.put(f"events/{hours[-1]:%Y/%m/%d/%H}/a.csv", "id,kind\n1,late\n")
    second = stack.luigi(*args, config_file=cfg)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "- 1 LoadHourlyEvents(date_hour=2019-02-03T09)" in second.stderr, second.stderr[-1500:]  # that hour only
    assert stack.query(f"SELECT count(*) FROM {table}") == [(60,)]
