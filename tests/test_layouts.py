"""Real source layouts (issue 9): the date from the path or from file columns, and what an existing table must have."""
from __future__ import annotations

import datetime
import gzip
import io

import psycopg2
import pytest
from luigi.execution_summary import LuigiStatusCode

import luigi_pipelines as lp
from luigi_pipelines import BadInputError, ConfigurationError, layouts
from luigi_pipelines import sql as q
from luigi_pipelines.files import SourceReader
from luigi_pipelines.objects import CsvDecoder
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
                   "(current_setting('luigi_pipelines.day', true))::date")
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


# -- lineage columns and the marker's load_id ---------------------------------------------------------

LINEAGE = lp.Lineage(key="source_key", load_id="load_id", loaded_at="loaded_at")


def _marker(stack, table: str = "t") -> dict:
    rows = stack.query(f"SELECT partition_date, load_id, started_at, finished_at FROM {stack.marker_schema}."
                       f"partition_marker WHERE target_table = %s", (f"{stack.schema}.{table}",))
    return {r[0]: r[1:] for r in rows}


def test_lineage_columns_say_which_object_and_which_load_wrote_each_row(stack, make_task):
    stack.put("d/2019-02-01/a.csv", "id,day,v\n1,2019-02-01,x\n2,2019-02-01,y\n")
    stack.put("d/2019-02-01/b.csv", "id,day,v\n3,2019-02-01,z\nfour,2019-02-01,bad\n5,2019-02-01,w\n")
    load = make_task(lineage=LINEAGE, max_bad_rows=1)  # b.csv's good rows take the quarantine path
    assert run_task(load(date=D1)).status == SUCCESS
    rows = stack.query(f"SELECT id, source_key, load_id::text, loaded_at FROM {stack.schema}.t ORDER BY id")
    assert [(r[0], r[1]) for r in rows] == [(1, "d/2019-02-01/a.csv"), (2, "d/2019-02-01/a.csv"),
                                            (3, "d/2019-02-01/b.csv"), (5, "d/2019-02-01/b.csv")]
    load_id, started, finished = _marker(stack)[D1]
    assert {r[2] for r in rows} == {load_id} and len(load_id) == 36
    assert len({r[3] for r in rows}) == 1 and started <= rows[0][3] <= finished  # the transaction's start
    which_file = stack.query(  # the README's query: a row's object, as the marker describes it
        f"SELECT t.source_key, m.partition_date, o->>'etag', (o->>'rows')::int FROM {stack.schema}.t t "
        f"JOIN {stack.marker_schema}.partition_marker m ON m.load_id = t.load_id "
        f"CROSS JOIN jsonb_array_elements(m.source_objects) o WHERE t.id = 5 AND o->>'key' = t.source_key")
    etag = stack.s3_client.head_object(Bucket=stack.bucket, Key="d/2019-02-01/b.csv")["ETag"].strip('"')
    assert which_file == [("d/2019-02-01/b.csv", D1, etag, 2)]

    stack.put("d/2019-02-01/a.csv", "id,day,v\n1,2019-02-01,x\n")
    assert run_task(load(date=D1, force=True)).status == SUCCESS
    new_id = _marker(stack)[D1][0]
    assert new_id != load_id
    assert stack.query(f"SELECT DISTINCT load_id::text FROM {stack.schema}.t") == [(new_id,)]


def test_with_a_lineage_key_rows_of_another_date_name_their_object_exactly(stack, make_task):
    stack.put("d/2019-02-01/a.csv", "id,day,v\n1,2019-02-01,x\n")
    stack.put("d/2019-02-01/b.csv", "id,day,v\n2,2019-02-02,y\n3,2019-02-03,z\n4,2019-02-01,w\n")
    stack.put("d/2019-02-01/c.csv", "id,day,v\n5,2019-02-01,x\n")
    # quarantine mode keeps the count after the COPY (rows of another date are no bad rows to set aside)
    with pytest.raises(BadInputError, match=r": 2 of 5 rows copied from s3://\S+/d/2019-02-01/b.csv \(2\) have day "
                                             r"other than 2019-02-01$"):
        make_task(lineage=lp.Lineage(key="source_key"))(date=D1, max_bad_rows=1).run()
    with pytest.raises(BadInputError, match=r"declare lineage = Lineage\(key=...\) to see which objects hold them$"):
        make_task()(date=D1, max_bad_rows=1).run()
    # a COPY straight into the table refuses the first of them, on its line
    with pytest.raises(BadInputError, match=r"^s3://\S+/d/2019-02-01/b.csv line 2: day 2019-02-02 is not the "
                                             r"partition's date 2019-02-01$"):
        make_task(lineage=lp.Lineage(key="source_key"))(date=D1).run()
    assert stack.query(f"SELECT count(*) FROM {stack.schema}.t") == [(0,)]


def test_an_existing_table_without_lineage_columns_gets_the_statements(stack, make_task):
    stack.execute(f"CREATE SCHEMA {stack.schema}; CREATE TABLE {stack.schema}.t (id bigint, day date, v text, "
                  f"loaded_at timestamptz)")
    stack.put("d/2019-02-01/a.csv", "id,day,v\n1,2019-02-01,x\n")
    load = make_task(lineage=LINEAGE)
    with pytest.raises(ConfigurationError, match=r"3 problems: .*which each load fills.*by each load through its "
                                                 r"default; run once: ") as e:
        load(date=D1).run()  # all three at once (it took three fix-and-rerun rounds)
    fix = str(e.value).split("run once: ")[1]
    assert fix == (
        f'ALTER TABLE "{stack.schema}"."t" ADD COLUMN "source_key" text DEFAULT '
        "(current_setting('luigi_pipelines.source_key', true))::text, "
        'ADD COLUMN "load_id" uuid DEFAULT '
        "(current_setting('luigi_pipelines.load_id', true))::uuid, "
        'ALTER COLUMN "loaded_at" SET DEFAULT now()')
    stack.execute(fix)
    assert run_task(load(date=D1)).status == SUCCESS
    assert stack.query(f"SELECT source_key, load_id IS NOT NULL, loaded_at IS NOT NULL FROM {stack.schema}.t") == [
        ("d/2019-02-01/a.csv", True, True)]


def test_a_table_with_more_columns_than_the_files_fills_them_from_their_defaults(stack, make_task):
    stack.execute(f"CREATE SCHEMA {stack.schema}; CREATE TABLE {stack.schema}.t (serial_id bigserial, id bigint, "
                  f"day date, v text, loaded_at timestamptz DEFAULT now(), note text)")
    stack.put("d/2019-02-01/a.csv", "id,day,v\n1,2019-02-01,x\n2,2019-02-01,y\n")
    assert run_task(make_task(create_table=False)(date=D1)).status == SUCCESS
    assert stack.query(f"SELECT serial_id, id, loaded_at IS NOT NULL, note FROM {stack.schema}.t ORDER BY id") == [
        (1, 1, True, None), (2, 2, True, None)]


def test_a_marker_table_from_before_load_ids_keeps_working(stack, make_task):
    marker = f"{stack.marker_schema}.partition_marker"
    stack.execute(f"CREATE SCHEMA {stack.marker_schema}")
    old_shape = q.create_marker_table(TableName(stack.marker_schema, "partition_marker"))
    with psycopg2.connect(stack.pg.dsn) as conn, conn.cursor() as cur:
        cur.execute(old_shape)
        cur.execute(f"ALTER TABLE {marker} DROP COLUMN load_id")  # the table as the previous release made it
        cur.execute(f"INSERT INTO {marker} VALUES (%s, %s, 'LoadT', 'LoadT(date=2019-02-01)', 1, 0, 9, '[]', now(), "
                    f"now(), 'h')", (f"{stack.schema}.t", D1))
    conn.close()
    load = make_task()
    assert load(date=D1).complete() and load.bulk_complete([D1, D2]) == [D1]
    stack.put("d/2019-02-02/a.csv", "id,day,v\n1,2019-02-02,x\n")
    assert run_task(load(date=D2)).status == SUCCESS
    assert {d: m[0] is not None for d, m in _marker(stack).items()} == {D1: False, D2: True}


# -- columns by the header's names ---------------------------------------------------------------------

BY_NAME = lp.CsvFormat(by_name=True)


def test_columns_by_header_name_in_any_order_with_extra_file_columns(stack, make_task):
    stack.put("d/2019-02-01/a.csv", "v,day,id\nx,2019-02-01,1\n")  # only declared columns: straight COPY
    stack.put("d/2019-02-01/b.csv", "extra,v,id,day,more\n?,y,2,2019-02-01,!\n??,\"z,1\",3,2019-02-01,!!\n")
    stack.put("d/2019-02-01/c.csv.gz", gzip.compress(b"\xef\xbb\xbfid,other,day,v\r\n4,o,2019-02-01,w\r\n"))
    assert run_task(make_task(csv=BY_NAME)(date=D1)).status == SUCCESS
    assert _rows(stack, "id, day, v") == [(1, D1, "x"), (2, D1, "y"), (3, D1, "z,1"), (4, D1, "w")]
    sources = stack.markers(f"{stack.schema}.t")[D1][2]
    assert [(s["key"], s["rows"]) for s in sources] == [("d/2019-02-01/a.csv", 1), ("d/2019-02-01/b.csv", 2),
                                                        ("d/2019-02-01/c.csv.gz", 1)]
    assert stack.query("SELECT count(*) FROM pg_class WHERE relname = 'luigi_pipelines_stage'") == [(0,)]


def test_a_declared_column_missing_from_the_header_is_named(stack, make_task):
    stack.put("d/2019-02-01/a.csv", "v,day,id\nx,2019-02-01,1\n")
    stack.put("d/2019-02-01/b.csv", "ID,day,value\n2,2019-02-01,y\n")
    with pytest.raises(BadInputError, match=r"^s3://\S+/d/2019-02-01/b.csv: the header lacks the declared columns "
                                             r"'id', 'v' \(it has 'ID', 'day', 'value'\)$"):
        make_task(csv=BY_NAME)(date=D1).run()
    stack.put("d/2019-02-01/b.csv", "id,day,v,id\n2,2019-02-01,y,3\n")
    with pytest.raises(BadInputError, match=r"b.csv: the header names 'id' more than once$"):
        make_task(csv=BY_NAME)(date=D1).run()
    assert stack.query(f"SELECT count(*) FROM {stack.schema}.t") == [(0,)]


def test_bad_rows_of_a_staged_object_keep_their_line_and_column(stack, make_task):
    stack.put("d/2019-02-01/a.csv", "note,id,day,v\nn,1,2019-02-01,x\nn,two,2019-02-01,y\nn,3,2019-02-01,z\n")
    with pytest.raises(BadInputError, match=r"a.csv line 3 column id: invalid input syntax for type bigint: \"two\""):
        make_task(csv=BY_NAME)(date=D1).run()
    assert run_task(make_task(csv=BY_NAME)(date=D1, max_bad_rows=1)).status == SUCCESS
    assert _rows(stack) == [(D1, 1, "x"), (D1, 3, "z")]
    assert stack.query(f"SELECT line_number, raw_line FROM {stack.marker_schema}.rejected_rows") == [
        (3, "n,two,2019-02-01,y")]


def test_a_table_constraint_broken_by_a_staged_object_names_it(stack, make_task):
    stack.execute(f"CREATE SCHEMA {stack.schema}; CREATE TABLE {stack.schema}.t (id bigint, day date, "
                  f"v text NOT NULL)")
    stack.put("d/2019-02-01/a.csv", "note,id,day,v\nn,1,2019-02-01,\n")
    with pytest.raises(BadInputError, match=r'a.csv: null value in column "v" of relation "t" violates not-null '
                                             r"constraint \(in the INSERT from the staging table: no line number\)$"):
        make_task(csv=BY_NAME)(date=D1).run()


def test_by_name_needs_a_header():
    with pytest.raises(ValueError, match=r"by_name=True\) needs header=True"):
        lp.CsvFormat(by_name=True, header=False)


def test_the_header_is_read_with_the_files_delimiter_quote_and_escape():
    def names(data: bytes, **fmt) -> list[str]:
        reader = SourceReader(io.BytesIO(data), "s3://b/k.csv", None, strip_bom=True)
        return CsvDecoder(lp.CsvFormat(**fmt)).header(reader)

    assert names(b'\xef\xbb\xbfa;"b;c";d\r\n1;2;3\n', delimiter=";") == ["a", "b;c", "d"]
    assert names(b"'x\\'y',z\n", quote="'", escape="\\") == ["x'y", "z"]
    assert names(b"only,a,header") == ["only", "a", "header"]
    with pytest.raises(BadInputError, match="k.csv: the first line is longer than 1024 KiB: not a header"):
        names(b"x" * (1024 * 1024 + 1) + b"\n")
    columns, extra = layouts.columns_by_header(["b", "x y", "a"], q.columns_of([("a", "text"), ("b", "int")]))
    assert [(c.name, c.type) for c in columns] == [("b", "int"), ("luigi_pipelines_extra_2", "text"), ("a", "text")]
    assert extra


# -- the flights case: a public dataset's layout, loaded as delivered -----------------------------------

FLIGHTS_HEADER = ("year,month,day,dep_time,sched_dep_time,dep_delay,arr_time,sched_arr_time,arr_delay,carrier,"
                  "flight,tailnum,origin,dest,air_time,distance,hour,minute,time_hour")
FLIGHT_DAYS = {datetime.date(2013, 1, 1): 40, datetime.date(2013, 1, 2): 55, datetime.date(2013, 1, 3): 61}


def flights_csv(day: datetime.date, count: int) -> str:
    """One day of nycflights13-like rows (as readr writes them: NA for missing, time_hour in UTC with Z);
    every third flight leaves after 19:00 in New York, which is already the next day in UTC."""
    lines = [FLIGHTS_HEADER]
    for n in range(count):
        hour, minute = (19 + n % 5, 5 * (n % 12)) if n % 3 == 0 else (5 + n % 14, 5 * (n % 12))
        utc = datetime.datetime.combine(day, datetime.time(hour)) + datetime.timedelta(hours=5)  # EST is UTC-5
        delay = "NA" if n % 7 == 0 else str(n % 40 - 5)
        lines.append(f"{day.year},{day.month},{day.day},{hour * 100 + minute},{hour * 100 + minute},{delay},NA,"
                     f"{(hour + 2) % 24 * 100},NA,{'UA' if n % 2 else 'B6'},{1000 + n},N{n:04d}X,JFK,LAX,NA,2475,"
                     f"{hour},{minute},{utc:%Y-%m-%dT%H:00:00Z}")
    return "\n".join(lines) + "\n"


def flights_pipeline(make_task, stack, date_from: lp.DateSource):
    """The pipeline of the README: a dozen declarative lines (bucket and schema are the test's)."""
    return make_task(
        __name__="LoadFlights",
        bucket=stack.bucket,
        key_prefix="flights/{date:%Y/%m/%d}/",
        table=f"{stack.schema}.flights",
        date_column="flight_date",
        date_from=date_from,
        columns=[("year", "smallint"), ("month", "smallint"), ("day", "smallint"), ("carrier", "text"),
                 ("flight", "integer"), ("origin", "char(3)"), ("dest", "char(3)"), ("dep_delay", "integer"),
                 ("time_hour", "timestamptz")],
        csv=lp.CsvFormat(by_name=True, null="NA"),
        lineage=lp.Lineage(key="source_key", load_id="load_id"),
    )


@pytest.mark.filterwarnings('ignore:Parameter "param_name" with value "None"')
@pytest.mark.parametrize("date_from", [lp.make_date("year", "month", "day"), lp.local_date("time_hour", "America/New_York")],
                         ids=["make_date", "local_date"])
def test_flights_folder_per_day_load_as_delivered_with_exact_counts(stack, make_task, date_from):
    from luigi.tools.range import RangeDaily

    for day, count in FLIGHT_DAYS.items():
        stack.put(f"flights/{day:%Y/%m/%d}/flights.csv", flights_csv(day, count))
    load = flights_pipeline(make_task, stack, date_from)
    backfill = RangeDaily(of=load, start=datetime.date(2013, 1, 1), stop=datetime.date(2013, 1, 4), now=1_400_000_000)
    assert run_task(backfill).status == SUCCESS
    counts = stack.query(f"SELECT flight_date, count(*), count(dep_delay), count(DISTINCT source_key) "
                         f"FROM {stack.schema}.flights GROUP BY 1 ORDER BY 1")
    assert counts == [(d, n, n - len(range(0, n, 7)), 1) for d, n in FLIGHT_DAYS.items()]
    utc_dates = stack.query(f"SELECT count(*) FROM {stack.schema}.flights WHERE (time_hour AT TIME ZONE 'UTC')::date "
                            f"<> flight_date")
    assert utc_dates == [(sum(len(range(0, n, 3)) for n in FLIGHT_DAYS.values()),)]  # the evening flights
    assert {d: m[0] for d, m in stack.markers(f"{stack.schema}.flights").items()} == FLIGHT_DAYS
    assert load.bulk_complete(list(FLIGHT_DAYS)) == list(FLIGHT_DAYS)
    assert run_task(backfill).status == SUCCESS  # a rerun: nothing to do
    assert stack.query(f"SELECT count(*) FROM {stack.schema}.flights") == [(sum(FLIGHT_DAYS.values()),)]
