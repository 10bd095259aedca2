"""Several sources feeding one table: scopes, and two tasks that declare the same table (issue: silent loss)."""
from __future__ import annotations

import datetime
import io

import pytest
from luigi.execution_summary import LuigiStatusCode

from luigi_pipelines import BadInputError, ConfigurationError, CsvFormat, JsonLinesDecoder, ParquetDecoder
from luigi_pipelines.partitions import ScopedTable, TableName
from tests.conftest import run_task

pytestmark = [pytest.mark.postgres, pytest.mark.s3]

D1 = datetime.date(2019, 2, 1)
SUCCESS = LuigiStatusCode.SUCCESS


def feed(make_task, region: str, scoped: bool = True, **attrs):
    return make_task(__name__=f"Load{region.upper()}", key_prefix=region + "/{date:%Y-%m-%d}/",
                     **({"scope": {"region": region}} if scoped else {}), **attrs)


def table(stack) -> list[tuple]:
    return stack.query(f"SELECT id, v, region FROM {stack.schema}.t ORDER BY id")


def put_feeds(stack) -> None:
    stack.put("eu/2019-02-01/a.csv", "id,day,v\n1,2019-02-01,eu1\n2,2019-02-01,eu2\n")
    stack.put("us/2019-02-01/a.csv", "id,day,v\n10,2019-02-01,us1\n")


def test_two_scoped_feeds_share_a_table_and_reload_independently(stack, make_task):
    put_feeds(stack)
    load_eu, load_us = feed(make_task, "eu"), feed(make_task, "us")
    assert run_task(load_eu(date=D1)).status == SUCCESS
    assert run_task(load_us(date=D1)).status == SUCCESS
    assert table(stack) == [(1, "eu1", "eu"), (2, "eu2", "eu"), (10, "us1", "us")]
    markers = stack.query(f"SELECT target_table, rows_loaded FROM {stack.marker_schema}.partition_marker ORDER BY 1")
    assert markers == [(f"{stack.schema}.t/region=eu", 2), (f"{stack.schema}.t/region=us", 1)]

    stack.put("us/2019-02-01/a.csv", "id,day,v\n11,2019-02-01,us2\n12,2019-02-01,us3\n")
    assert run_task(load_us(date=D1, force=True)).status == SUCCESS  # replaces the US rows only
    assert table(stack) == [(1, "eu1", "eu"), (2, "eu2", "eu"), (11, "us2", "us"), (12, "us3", "us")]
    assert run_task(load_eu(date=D1)).status == SUCCESS  # a rerun is a no-op
    assert len(table(stack)) == 4


def test_two_tasks_on_one_table_without_scopes_are_refused_naming_both(stack, make_task):
    """Before: LoadUS was "complete" after LoadEU (exit 0, US rows never loaded), and --force deleted the EU rows."""
    put_feeds(stack)
    load_eu, load_us = feed(make_task, "eu", scoped=False), feed(make_task, "us", scoped=False)
    assert run_task(load_eu(date=D1)).status == SUCCESS
    result = run_task(load_us(date=D1))
    assert result.status == LuigiStatusCode.SCHEDULING_FAILED
    with pytest.raises(ConfigurationError, match=r"LoadUS and LoadEU both load lp_t_\w+\.t: LoadEU loaded 2019-02-01"):
        load_us(date=D1).complete()
    with pytest.raises(ConfigurationError, match="LoadUS and LoadEU both load"):
        load_us(date=D1, force=True).run()
    with pytest.raises(ConfigurationError, match="LoadUS and LoadEU both load"):
        load_us.bulk_complete([D1])
    assert stack.query(f"SELECT id, v FROM {stack.schema}.t ORDER BY id") == [(1, "eu1"), (2, "eu2")]


def test_an_unscoped_load_next_to_scoped_ones_is_refused(stack, make_task):
    put_feeds(stack)
    assert run_task(feed(make_task, "eu")(date=D1)).status == SUCCESS
    everything = make_task(__name__="LoadAll", key_prefix="us/{date:%Y-%m-%d}/",
                           columns=[("id", "bigint"), ("day", "date"), ("v", "text")])
    with pytest.raises(ConfigurationError, match=r"LoadAll loads lp_t_\w+\.t for 2019-02-01, but LoadEU already "
                                                 r"loaded lp_t_\w+\.t where region = 'eu'"):
        everything(date=D1).run()
    assert [r[0] for r in table(stack)] == [1, 2]


SCOPED = [("id", "bigint"), ("day", "date"), ("v", "text"), ("region", "text")]


@pytest.mark.parametrize("declared", [True, False], ids=["declared", "undeclared"])
def test_a_csv_scope_column_with_another_value_is_a_bad_row_named_by_line(stack, make_task, declared):
    """Before: undeclared, the rows were relabelled "us", exit 0; declared, an error with no line."""
    stack.put("us/2019-02-01/a.csv", "id,day,v,region\n10,2019-02-01,a,us\n11,2019-02-01,b,eu\n")
    load_us = feed(make_task, "us", **({"columns": SCOPED} if declared else {}), csv=CsvFormat(by_name=True))
    with pytest.raises(BadInputError, match=r"us/2019-02-01/a\.csv line 3: region is not 'us', the value of the "
                                            r"task's scope \(a row labelled for another scope\)$"):
        load_us(date=D1).run()
    assert run_task(load_us(date=D1, max_bad_rows=1)).status == SUCCESS  # quarantine mode sets the row aside
    assert table(stack) == [(10, "a", "us")]
    assert stack.query(f"SELECT line_number, raw_line FROM {stack.marker_schema}.rejected_rows") == [
        (3, "11,2019-02-01,b,eu")]
    stack.put("us/2019-02-01/a.csv", "id,day,v,region\n10,2019-02-01,a,us\n")
    assert run_task(load_us(date=D1, force=True)).status == SUCCESS
    assert table(stack) == [(10, "a", "us")]


def test_a_csv_scope_column_by_position_is_checked_by_line(stack, make_task):
    stack.put("us/2019-02-01/a.csv", "id,day,v,region\n10,2019-02-01,a,us\n11,2019-02-01,b,\n")
    with pytest.raises(BadInputError, match=r"a\.csv line 3: region is not 'us'"):
        feed(make_task, "us", columns=SCOPED)(date=D1).run()


@pytest.mark.parametrize("declared", [True, False], ids=["declared", "undeclared"])
def test_a_json_key_with_the_scopes_name_and_another_value_is_a_bad_row(stack, make_task, declared, json_lines_reader):
    """Before: ``"region": "us"`` (not declared) loaded as ``eu``, exit 0."""
    body = b'{"id": 1, "day": "2019-02-01", "region": "eu"}\n{"id": 2, "day": "2019-02-01", "region": "us"}\n'
    stack.put("eu/2019-02-01/a.jsonl", body + b'{"id": 3, "day": "2019-02-01"}\n')
    load_eu = feed(make_task, "eu", decoder=JsonLinesDecoder(), **({"columns": SCOPED} if declared else {}))
    with pytest.raises(BadInputError, match=r'eu/2019-02-01/a\.jsonl line 2: key "region" is "us", not "eu", the '
                                            r"value of the task's scope \(a row labelled for another scope\)$"):
        load_eu(date=D1).run()
    if declared:  # a declared scope key is a column of the files: each line must carry it
        stack.put("eu/2019-02-01/a.jsonl", body.replace(b'"us"', b'"eu"') + b'{"id": 3, "day": "2019-02-01", '
                                                                           b'"region": "eu"}\n')
    assert run_task(load_eu(date=D1, max_bad_rows=1)).status == SUCCESS
    assert table(stack) == ([(1, None, "eu"), (2, None, "eu"), (3, None, "eu")] if declared else
                            [(1, None, "eu"), (3, None, "eu")])


@pytest.mark.parametrize("declared", [True, False], ids=["declared", "undeclared"])
def test_a_parquet_scope_column_with_another_value_is_a_bad_row_named_by_row(stack, make_task, declared):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    sink = io.BytesIO()
    regions = ["eu", "eu", "eu", "eu", None]
    pq.write_table(pa.table({"id": [1, 2, 3, 4, 5], "day": pa.array([D1] * 5, pa.date32()), "v": list("abcde"),
                             "region": regions}), sink, row_group_size=2)
    stack.put("eu/2019-02-01/a.parquet", sink.getvalue())
    load_eu = feed(make_task, "eu", decoder=ParquetDecoder(), **({"columns": SCOPED} if declared else {}))
    with pytest.raises(BadInputError, match=r"a\.parquet row group 3 row 1 \(row 5 of the file\): region is not "
                                            r"'eu', the value of the task's scope \(a row labelled for another scope\)$"):
        load_eu(date=D1).run()
    regions[4] = "eu"
    sink = io.BytesIO()
    pq.write_table(pa.table({"id": [1, 2, 3, 4, 5], "day": pa.array([D1] * 5, pa.date32()), "v": list("abcde"),
                             "region": regions}), sink, row_group_size=2)
    stack.put("eu/2019-02-01/a.parquet", sink.getvalue())
    assert run_task(load_eu(date=D1)).status == SUCCESS
    assert [r[0] for r in table(stack)] == [1, 2, 3, 4, 5]


def test_messages_of_a_task_without_a_scope_have_no_scope_prefix(stack, make_task):
    """Before: ``LoadT: scope {}: 'my-table' is not a valid SQL identifier``."""
    for step in ("complete", "run"):
        with pytest.raises(ConfigurationError) as caught:
            getattr(make_task(table="my-table")(date=D1), step)()
        assert str(caught.value) == "LoadT: 'my-table' is not a valid SQL identifier (letters, digits, _ and $; at most 63 bytes)"


def test_an_existing_table_without_the_fill_default_gets_the_statement_to_run(stack, make_task):
    stack.execute(f"CREATE SCHEMA {stack.schema}")
    stack.execute(f"CREATE TABLE {stack.schema}.t (id bigint, day date, v text, region text)")
    put_feeds(stack)
    load_eu = feed(make_task, "eu")
    with pytest.raises(ConfigurationError) as caught:
        load_eu(date=D1).run()
    fix = str(caught.value).split("run once: ")[1]
    assert fix == (f'ALTER TABLE "{stack.schema}"."t" ALTER COLUMN "region" SET DEFAULT '
                   "(current_setting('luigi_pipelines.region', true))::text")
    stack.execute(fix)
    assert run_task(load_eu(date=D1)).status == SUCCESS
    assert table(stack) == [(1, "eu1", "eu"), (2, "eu2", "eu")]


def test_an_existing_table_without_the_scope_column_gets_the_statement_to_run(stack, make_task):
    stack.execute(f"CREATE SCHEMA {stack.schema}")
    stack.execute(f"CREATE TABLE {stack.schema}.t (id bigint, day date, v text)")
    put_feeds(stack)
    with pytest.raises(ConfigurationError) as caught:
        feed(make_task, "eu")(date=D1).run()
    fix = str(caught.value).split("run once: ")[1]
    assert fix.startswith(f'ALTER TABLE "{stack.schema}"."t" ADD COLUMN "region" text DEFAULT ')
    stack.execute(fix)
    assert run_task(feed(make_task, "eu")(date=D1)).status == SUCCESS
    assert table(stack) == [(1, "eu1", "eu"), (2, "eu2", "eu")]


def test_scoped_table_keys_round_trip_and_overlap():
    t = TableName("s", "t")
    us, eu = ScopedTable.of(t, {"region": "us"}), ScopedTable.of(t, {"region": "e/u,=%"})
    assert str(ScopedTable.of(t)) == "s.t"  # the key of an unscoped table is what markers always held
    for key in (us, eu, ScopedTable.of(t), ScopedTable.of(t, {"a": "1", "b": "2"})):
        assert ScopedTable.parse(str(key)) == key
    assert not us.overlaps(eu) and not us.overlaps(us)
    assert us.overlaps(ScopedTable.of(t)) and ScopedTable.of(t).overlaps(us)
    assert us.overlaps(ScopedTable.of(t, {"customer": "x"}))
    assert not us.overlaps(ScopedTable.of(TableName("s", "other")))
