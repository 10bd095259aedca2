"""Real source layouts (issue 9): the date from the path or from file columns, and what an existing table must have."""
from __future__ import annotations

import datetime

import psycopg2
import pytest
from luigi.execution_summary import LuigiStatusCode

import luigi_pipelines as lp
from luigi_pipelines import BadInputError, ConfigurationError, layouts
from luigi_pipelines import sql as q
from luigi_pipelines.partitions import TableName
from tests.conftest import run_task

pytestmark = [pytest.mark.postgres, pytest.mark.s3]

D1, D2 = datetime.date(2019, 2, 1), datetime.date(2019, 2, 2)
SUCCESS = LuigiStatusCode.SUCCESS
FILE_COLUMNS = [("id", "bigint"), ("v", "text")]
YMD_COLUMNS = [("year", "smallint"), ("month", "smallint"), ("day", "smallint"), ("id", "bigint")]


def _rows(stack, columns: str = "day, id, v") -> list[tuple]:
    return stack.query(f"SELECT {columns} FROM {stack.schema}.t ORDER BY 1, 2")


# -- pure: what the declarations build -------------------------------------------------------------


def test_make_date_and_local_date_build_immutable_expressions(pg_server):
    columns = {c.name: c for c in q.columns_of([*YMD_COLUMNS, ("ts", "timestamptz"), ("naive", "timestamp")])}
    with psycopg2.connect(pg_server.dsn) as conn:
        assert lp.make_date("year", "month", "day").expression(columns).as_string(conn) == (
            'make_date(("year")::integer, ("month")::integer, ("day")::integer)')
        assert lp.local_date("ts", "America/New_York").expression(columns).as_string(conn) == (
            "((\"ts\" AT TIME ZONE 'America/New_York'))::date")
        assert lp.local_date("naive", "Europe/Paris").expression(columns).as_string(conn) == (
            "(((\"naive\" AT TIME ZONE 'UTC') AT TIME ZONE 'Europe/Paris'))::date")
    conn.close()
    with pytest.raises(ValueError, match=r"make_date\('year', 'month', 'dd'\): 'dd' not among columns"):
        lp.make_date("year", "month", "dd").expression(columns)
    with pytest.raises(ValueError, match="column 'year' is smallint, not a timestamptz or timestamp"):
        lp.local_date("year", "UTC").expression(columns)
    for zone in ("UTC'; DROP TABLE x; --", "", "a b"):
        with pytest.raises(ValueError, match="is not a time zone name"):
            lp.local_date("ts", zone)
    with pytest.raises(ValueError, match="not a valid SQL identifier"):
        lp.make_date('year"; --', "month", "day")


def test_a_layout_refuses_a_date_column_in_the_wrong_place_and_columns_declared_twice():
    table, files = TableName("s", "t"), q.columns_of([("id", "bigint"), ("day", "date")])
    with pytest.raises(ValueError, match=r"date_column 'day' comes from partition_date\(\): leave it out of columns"):
        layouts.TableLayout.of(table, "day", files, lp.partition_date())
    with pytest.raises(ValueError, match="date_column 'dt' is not among columns"):
        layouts.TableLayout.of(table, "dt", files, layouts.FILES)
    with pytest.raises(ValueError, match=r"columns \['id'\] are declared twice"):
        layouts.TableLayout.of(table, "dt", files, lp.partition_date(), lineage=lp.Lineage(key="id"))


# -- the date from the path (the task's date) ------------------------------------------------------


def test_a_hive_layout_without_a_date_column_gets_the_partitions_date(stack, make_task):
    stack.put("events/dt=2019-02-01/part-0.csv", "id,v\n1,a\n2,b\n")
    stack.put("events/dt=2019-02-02/part-0.csv", "id,v\n3,c\n")
    load = make_task(key_prefix="events/dt={date:%Y-%m-%d}/", columns=FILE_COLUMNS, date_from=lp.partition_date())
    for day in (D1, D2):
        assert run_task(load(date=day)).status == SUCCESS
    assert _rows(stack) == [(D1, 1, "a"), (D1, 2, "b"), (D2, 3, "c")]
    assert {d: m[0] for d, m in stack.markers(f"{stack.schema}.t").items()} == {D1: 2, D2: 1}
    stack.put("events/dt=2019-02-01/part-0.csv", "id,v\n4,d\n")
    assert run_task(load(date=D1, force=True)).status == SUCCESS  # a reload replaces that date only
    assert _rows(stack) == [(D1, 4, "d"), (D2, 3, "c")]
    default = stack.query("SELECT column_default FROM information_schema.columns WHERE table_schema = %s AND "
                          "column_name = 'day'", (stack.schema,))[0][0]
    assert "current_setting('luigi_pipelines.day'" in default
    assert stack.query(f"INSERT INTO {stack.schema}.t (id) VALUES (9) RETURNING day") == [(None,)]  # outside a load


def test_a_key_prefix_that_does_not_tell_the_dates_apart_is_refused_with_a_path_date(stack, make_task):
    stack.put("m/2019-02/a.csv", "id,v\n1,a\n")
    load = make_task(key_prefix="m/{date:%Y-%m}/", columns=FILE_COLUMNS, date_from=lp.partition_date())
    with pytest.raises(ConfigurationError, match=r"key_prefix 'm/\{date:%Y-%m\}/' does not give every date a prefix "
                                                 r"of its own"):
        load(date=D1).run()
    assert stack.markers(f"{stack.schema}.t") == {}


def test_an_existing_table_with_a_plain_date_column_gets_the_statement_for_a_path_date(stack, make_task):
    stack.execute(f"CREATE SCHEMA {stack.schema}; CREATE TABLE {stack.schema}.t (id bigint, day date, v text)")
    stack.put("d/2019-02-01/a.csv", "id,v\n1,a\n")
    load = make_task(columns=FILE_COLUMNS, date_from=lp.partition_date())
    with pytest.raises(ConfigurationError) as caught:
        load(date=D1).run()
    fix = str(caught.value).split("run once: ")[1]
    assert fix == (f'ALTER TABLE "{stack.schema}"."t" ALTER COLUMN "day" SET DEFAULT '
                   "(NULLIF(current_setting('luigi_pipelines.day', true), ''))::date")
    stack.execute(fix)
    assert run_task(load(date=D1)).status == SUCCESS
    assert _rows(stack) == [(D1, 1, "a")]


# -- the date from file columns: generated columns ---------------------------------------------------


def test_make_date_of_year_month_day_columns(stack, make_task):
    stack.put("d/2019-02-01/a.csv", "year,month,day,id\n2019,2,1,1\n2019,2,1,2\n")
    stack.put("d/2019-02-02/a.csv", "year,month,day,id\n2019,2,2,3\n")
    load = make_task(columns=YMD_COLUMNS, date_column="flight_date", date_from=lp.make_date("year", "month", "day"))
    for day in (D1, D2):
        assert run_task(load(date=day)).status == SUCCESS
    assert stack.query(f"SELECT flight_date, count(*) FROM {stack.schema}.t GROUP BY 1 ORDER BY 1") == [(D1, 2), (D2, 1)]
    assert stack.query("SELECT indexdef LIKE '%%(flight_date)' FROM pg_indexes WHERE schemaname = %s",
                       (stack.schema,)) == [(True,)]


def test_rows_of_another_derived_date_fail_the_load_naming_the_object(stack, make_task):
    stack.put("d/2019-02-01/a.csv", "year,month,day,id\n2019,2,1,1\n")
    stack.put("d/2019-02-01/b.csv", "year,month,day,id\n2019,2,1,2\n2019,2,2,3\n")
    load = make_task(columns=YMD_COLUMNS, date_column="flight_date", date_from=lp.make_date("year", "month", "day"))
    with pytest.raises(BadInputError, match=r"1 of 3 rows copied from s3://\S+/ \(d/2019-02-01/a.csv, "
                                             r"d/2019-02-01/b.csv\) have flight_date other than 2019-02-01"):
        load(date=D1).run()
    assert stack.query(f"SELECT count(*) FROM {stack.schema}.t") == [(0,)]


def test_a_derived_date_that_does_not_exist_is_a_bad_row_with_its_line(stack, make_task):
    stack.put("d/2019-02-01/a.csv", "year,month,day,id\n2019,2,1,1\n2019,2,30,2\n2019,2,1,3\n")
    load = make_task(columns=YMD_COLUMNS, date_column="flight_date", date_from=lp.make_date("year", "month", "day"))
    with pytest.raises(BadInputError, match=r"s3://\S+/d/2019-02-01/a.csv line 3: date field value out of range: "
                                             r"2019-02-30"):
        load(date=D1).run()
    assert run_task(load(date=D1, max_bad_rows=1)).status == SUCCESS  # quarantine mode sets it aside
    assert stack.query(f"SELECT id FROM {stack.schema}.t ORDER BY 1") == [(1,), (3,)]
    assert stack.query(f"SELECT line_number, raw_line FROM {stack.marker_schema}.rejected_rows") == [(3, "2019,2,30,2")]


def test_local_date_of_a_utc_timestamp(stack, make_task):
    # 23:30 in New York on Feb 1st is 04:30 UTC on Feb 2nd: the folder holds New York's day.
    stack.put("d/2019-02-01/a.csv", "id,ts\n1,2019-02-01T05:00:00Z\n2,2019-02-02T04:30:00Z\n")
    stack.put("d/2019-02-02/a.csv", "id,ts\n3,2019-02-02T05:00:00Z\n")
    load = make_task(columns=[("id", "bigint"), ("ts", "timestamptz")],
                     date_from=lp.local_date("ts", "America/New_York"))
    for day in (D1, D2):
        assert run_task(load(date=day)).status == SUCCESS
    assert stack.query(f"SELECT day, id FROM {stack.schema}.t ORDER BY id") == [(D1, 1), (D1, 2), (D2, 3)]


def test_local_date_in_a_zone_postgresql_does_not_know(stack, make_task):
    stack.put("d/2019-02-01/a.csv", "id,ts\n1,2019-02-01T05:00:00Z\n")
    load = make_task(columns=[("id", "bigint"), ("ts", "timestamptz")], date_from=lp.local_date("ts", "Mars/Olympus"))
    with pytest.raises(ConfigurationError, match="PostgreSQL does not know the time zone 'Mars/Olympus'"):
        load(date=D1).run()


def test_a_generated_date_column_of_the_users_own_ddl(stack, make_task):
    stack.put("d/2019-02-01/a.csv", "id,at\n1,2019-02-01 10:00\n")
    load = make_task(columns=[("id", "bigint"), ("at", "timestamp")], date_from=lp.generated_column())
    with pytest.raises(ConfigurationError, match=r"does not exist and date_from = generated_column\(\): create it"):
        load(date=D1).run()
    stack.execute(f"CREATE SCHEMA {stack.schema}; CREATE TABLE {stack.schema}.t (id bigint, at timestamp, "
                  f"day date GENERATED ALWAYS AS (at::date) STORED)")
    assert run_task(load(date=D1)).status == SUCCESS
    assert _rows(stack, "day, id") == [(D1, 1)]


def test_an_existing_table_with_a_plain_date_column_for_a_derived_date(stack, make_task):
    stack.execute(f"CREATE SCHEMA {stack.schema}; CREATE TABLE {stack.schema}.t (year int, month int, day int, "
                  f"id bigint)")
    stack.put("d/2019-02-01/a.csv", "year,month,day,id\n2019,2,1,1\n")
    load = make_task(columns=YMD_COLUMNS, date_column="flight_date", date_from=lp.make_date("year", "month", "day"))
    with pytest.raises(ConfigurationError) as caught:
        load(date=D1).run()
    assert "has no column 'flight_date', but date_from = make_date('year', 'month', 'day') needs a generated" in str(
        caught.value)
    stack.execute(str(caught.value).split("run once: ")[1])
    assert run_task(load(date=D1)).status == SUCCESS
    assert stack.query(f"SELECT flight_date, id FROM {stack.schema}.t") == [(D1, 1)]
