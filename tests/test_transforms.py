"""Pure transforms, and the transform task that writes a partition from one (sharing the load's transaction)."""
from __future__ import annotations

import copy
import datetime
from decimal import Decimal

import pytest
from luigi.execution_summary import LuigiStatusCode
from psycopg2 import sql

from luigi_pipelines.transforms import daily_account_totals
from tests.conftest import run_task

D1 = datetime.date(2019, 2, 1)


def test_daily_account_totals_is_pure_and_deterministic():
    rows = (("a", "EUR", Decimal("1.50")), ("b", "USD", Decimal("2")), ("a", "EUR", None), ("a", "EUR", Decimal("3")))
    frozen = copy.deepcopy(rows)
    listed = [list(r) for r in rows]
    result = daily_account_totals(rows, D1)
    assert result == [(D1, "a", "EUR", 3, Decimal("4.50")), (D1, "b", "USD", 1, Decimal("2"))]
    assert rows == frozen
    assert daily_account_totals(listed, D1) == result and listed == [list(r) for r in frozen]
    assert daily_account_totals(reversed(rows), D1) == result  # order of input does not matter
    assert daily_account_totals((), D1) == []


@pytest.mark.postgres
@pytest.mark.s3
def test_summarize_transactions_end_to_end(stack):
    from luigi_pipelines.devstack.sample import csv_bytes, transaction_lines
    from luigi_pipelines.pipelines.transactions import SummarizeTransactions

    lines = transaction_lines(D1, first_id=1, count=137)
    stack.put(f"transactions/{D1}/part-0000.csv", csv_bytes(lines[:100]))
    stack.put(f"transactions/{D1}/part-0001.csv.gz", csv_bytes(lines[100:], compress=True))
    stack.set_config("transactions", "totals_table", f"{stack.schema}.totals")
    assert run_task(SummarizeTransactions(date=D1)).status == LuigiStatusCode.SUCCESS
    assert stack.markers(f"{stack.schema}.transaction")[D1][0] == len(lines)
    expected = stack.query(
        f"SELECT txn_date, account, currency, count(*), sum(coalesce(amount, 0)) FROM {stack.schema}.transaction "
        "GROUP BY 1, 2, 3 ORDER BY 2, 3")
    got = stack.query(f"SELECT * FROM {stack.schema}.totals ORDER BY 2, 3")
    assert got == expected and len(got) > 10
    marker = stack.markers(f"{stack.schema}.totals")[D1]
    assert marker[0] == len(got)
    assert marker[2] == [{"upstream": f"{stack.schema}.transaction", "rows_read": len(lines), "upstream_loads": {
        f"{stack.schema}.transaction": _marker(stack, f"{stack.schema}.transaction")["load_id"]}}]

    before = stack.markers(f"{stack.schema}.totals")
    assert run_task(SummarizeTransactions(date=D1)).status == LuigiStatusCode.SUCCESS
    assert stack.markers(f"{stack.schema}.totals") == before  # rerun: a no-op
    assert stack.temp_files() == []


def _upstream(make_task, **attrs):
    """A load task of table ``t (id bigint, day date, v text)`` (``make_task``'s default), as an upstream."""
    return make_task(**attrs)


def _transform_task(stack, upstream, base=None, **attrs):
    from luigi_pipelines import TransformPartition

    declared = {"upstream": upstream, "source_columns": ["id", "v"], "table": f"{stack.schema}.derived",
                "date_column": "day", "columns": [("day", "date"), ("id", "bigint"), ("v", "text")],
                "__module__": __name__}
    declared.update(attrs)
    return type(attrs.pop("__name__", "DeriveT"), (base or TransformPartition,), declared)


def _backend_query(stack) -> str:
    """What the loading connection (this test's own application_name) is running or ran last: another test suite
    using the same server at the same time has sessions of its own, under other names."""
    found = stack.query("SELECT query FROM pg_stat_activity WHERE application_name = %s "
                        "AND pid <> pg_backend_pid() AND state <> 'idle'", (_application_name(stack),))
    return found[0][0] if found else ""


def _application_name(stack) -> str:
    return f"lp_test_{stack.schema}"[:63]


@pytest.mark.postgres
@pytest.mark.s3
def test_transform_reads_the_upstream_partition_in_batches_and_streams_its_result(stack, make_task):
    """The function gets a one-pass iterator that a server-side cursor fills batch by batch, and may yield."""
    n = 2_500
    stack.put("d/2019-02-01/a.csv", "id,day,v\n" + "".join(f"{i},2019-02-01,v{i}\n" for i in range(n)))
    stack.put("d/2019-02-02/a.csv", "id,day,v\n1,2019-02-02,other day\n")
    seen: dict[str, object] = {"fetches": []}

    def upper(rows, date):
        seen["type"] = type(rows)
        for n_read, (id_, v) in enumerate(rows):
            if n_read % 1000 == 0:
                seen["fetches"].append(_backend_query(stack))  # type: ignore[union-attr]
            yield (date, id_, v.upper())

    stack.set_config("database", "application_name", _application_name(stack))
    upstream = _upstream(make_task)
    assert run_task(upstream(date=datetime.date(2019, 2, 2))).status == LuigiStatusCode.SUCCESS
    task = _transform_task(stack, upstream, transform=staticmethod(upper), read_batch_rows=300)
    assert run_task(task(date=D1)).status == LuigiStatusCode.SUCCESS

    assert not hasattr(seen["type"], "__len__")  # an iterator, not a list held in memory
    assert seen["fetches"] and all(q == 'FETCH FORWARD 300 FROM "luigi_pipelines_upstream"' for q in seen["fetches"])
    got = stack.query(f"SELECT day, id, v FROM {stack.schema}.derived ORDER BY id")
    assert got == [(D1, i, f"V{i}") for i in sorted(range(n))]  # 2019-02-02's row is not read
    marker = stack.markers(f"{stack.schema}.derived")[D1]
    loads = {f"{stack.schema}.t": _marker(stack, f"{stack.schema}.t")["load_id"]}
    assert marker[0] == n and marker[2] == [{"upstream": f"{stack.schema}.t", "rows_read": n, "upstream_loads": loads}]
    assert stack.temp_files() == []


@pytest.mark.postgres
@pytest.mark.s3
def test_a_failing_transform_rolls_back_and_keeps_the_previous_partition(stack, make_task):
    stack.put("d/2019-02-01/a.csv", "id,day,v\n1,2019-02-01,x\n2,2019-02-01,y\n")
    upstream = _upstream(make_task)

    def copy_rows(rows, date):
        return [(date, id_, v) for id_, v in rows]

    def half_then_fail(rows, date):
        for id_, _ in rows:
            yield (date, id_, "new")
            raise ValueError("transform failed half way")

    assert run_task(_transform_task(stack, upstream, transform=staticmethod(copy_rows))(date=D1)).status \
        == LuigiStatusCode.SUCCESS
    before = stack.query(f"SELECT * FROM {stack.schema}.derived ORDER BY id")
    failing = _transform_task(stack, upstream, transform=staticmethod(half_then_fail))(date=D1, force=True)
    with pytest.raises(ValueError, match="half way"):
        failing.run()
    assert stack.query(f"SELECT * FROM {stack.schema}.derived ORDER BY id") == before == [(D1, 1, "x"), (D1, 2, "y")]
    assert stack.temp_files() == []


SUMMARY = sql.SQL("SELECT {date}, v, count(*), sum(id) FROM upstream GROUP BY v").format(date=sql.Placeholder("date"))


def _summary_in_python(rows, date):
    totals: dict[str, tuple[int, int]] = {}
    for id_, v in rows:
        count, total = totals.get(v, (0, 0))
        totals[v] = (count + 1, total + id_)
    return [(date, v, count, total) for v, (count, total) in sorted(totals.items())]


SUMMARY_COLUMNS = [("day", "date"), ("v", "text"), ("n", "bigint"), ("total", "numeric")]


@pytest.mark.postgres
@pytest.mark.s3
def test_sql_transform_equals_the_python_one_and_reads_only_its_scope(stack, make_task):
    """INSERT ... SELECT over the upstream partition: the same rows as the pure function, of the upstream's
    scope and date only, in one transaction with the marker."""
    from luigi_pipelines import SqlTransformPartition

    stack.put("eu/2019-02-01/a.csv", "id,day,v\n1,2019-02-01,a\n2,2019-02-01,a\n3,2019-02-01,b\n")
    stack.put("us/2019-02-01/a.csv", "id,day,v\n10,2019-02-01,a\n")
    stack.put("eu/2019-02-02/a.csv", "id,day,v\n20,2019-02-02,a\n")
    eu = _upstream(make_task, __name__="LoadEu", key_prefix="eu/{date:%Y-%m-%d}/", scope={"region": "eu"})
    us = _upstream(make_task, __name__="LoadUs", key_prefix="us/{date:%Y-%m-%d}/", scope={"region": "us"})
    for task in (us(date=D1), eu(date=datetime.date(2019, 2, 2))):
        assert run_task(task).status == LuigiStatusCode.SUCCESS

    in_sql = _transform_task(stack, eu, SqlTransformPartition, __name__="SumInSql", query=SUMMARY,
                             table=f"{stack.schema}.sums_sql", columns=SUMMARY_COLUMNS)
    in_python = _transform_task(stack, eu, __name__="SumInPython", transform=staticmethod(_summary_in_python),
                                table=f"{stack.schema}.sums_py", columns=SUMMARY_COLUMNS)
    assert run_task(in_sql(date=D1)).status == LuigiStatusCode.SUCCESS  # runs the eu upstream first
    assert run_task(in_python(date=D1)).status == LuigiStatusCode.SUCCESS

    got = stack.query(f"SELECT * FROM {stack.schema}.sums_sql ORDER BY v")
    assert got == [(D1, "a", 2, 3), (D1, "b", 1, 3)]  # not the us row (10), not 2019-02-02's (20)
    assert got == stack.query(f"SELECT * FROM {stack.schema}.sums_py ORDER BY v")
    key = f"{stack.schema}.t/region=eu"
    marker = stack.markers(f"{stack.schema}.sums_sql")[D1]
    assert marker[0] == 2 and marker[2] == [{"upstream": key, "query": True,
                                             "upstream_loads": {key: _marker(stack, key)["load_id"]}}]
    before = stack.markers(f"{stack.schema}.sums_sql")
    assert run_task(in_sql(date=D1)).status == LuigiStatusCode.SUCCESS
    assert stack.markers(f"{stack.schema}.sums_sql") == before  # rerun: a no-op


@pytest.mark.postgres
@pytest.mark.s3
def test_sql_transform_values_are_parameters_and_a_text_query_is_refused(stack, make_task):
    from luigi_pipelines import ConfigurationError, SqlTransformPartition

    stack.put("d/2019-02-01/a.csv", "id,day,v\n1,2019-02-01,a\n")
    upstream = _upstream(make_task)
    hostile = "x'); DROP TABLE upstream; --"
    labelled = sql.SQL("SELECT {}, {} || v, id FROM upstream").format(sql.Placeholder("date"), sql.Placeholder("label"))
    task = _transform_task(stack, upstream, SqlTransformPartition, query=labelled,
                           columns=[("day", "date"), ("v", "text"), ("id", "bigint")],
                           query_parameters=lambda self: {"label": hostile})
    assert run_task(task(date=D1)).status == LuigiStatusCode.SUCCESS
    assert stack.query(f"SELECT v FROM {stack.schema}.derived") == [(hostile + "a",)]  # data, not SQL

    as_text = _transform_task(stack, upstream, SqlTransformPartition, __name__="AsText",
                              query="SELECT %(date)s, v, id FROM upstream", table=f"{stack.schema}.other",
                              columns=[("day", "date"), ("v", "text"), ("id", "bigint")])
    with pytest.raises(ConfigurationError, match="query must be a psycopg2.sql.Composable"):
        as_text(date=D1).run()
    assert stack.markers(f"{stack.schema}.other") == {}


@pytest.mark.postgres
@pytest.mark.s3
def test_sql_transform_rows_of_another_date_roll_back(stack, make_task):
    from luigi_pipelines import LoadError, SqlTransformPartition

    stack.put("d/2019-02-01/a.csv", "id,day,v\n1,2019-02-01,a\n")
    wrong_day = sql.SQL("SELECT {} + 1, v, id FROM upstream").format(sql.Placeholder("date"))
    task = _transform_task(stack, _upstream(make_task), SqlTransformPartition, query=wrong_day,
                           columns=[("day", "date"), ("v", "text"), ("id", "bigint")])
    assert run_task(task(date=D1)).status == LuigiStatusCode.FAILED
    with pytest.raises(LoadError, match="day is not 2019-02-01"):
        task(date=D1).run()
    assert stack.query(f"SELECT count(*) FROM {stack.schema}.derived") == [(0,)]
    assert stack.markers(f"{stack.schema}.derived") == {}


def _marker(stack, table: str, date=D1) -> dict:
    """The marker row's load id, times and sources of ``table``'s partition of ``date``."""
    rows = stack.query(f"SELECT load_id::text, started_at, finished_at, source_objects FROM "
                       f"{stack.marker_schema}.partition_marker WHERE target_table = %s AND partition_date = %s",
                       (table, date))
    return dict(zip(("load_id", "started_at", "finished_at", "sources"), rows[0], strict=True)) if rows else {}


def _copy_rows(rows, date):
    return [(date, id_, v) for id_, v in rows]


def _ids(stack, table: str) -> list[int]:
    return [r[0] for r in stack.query(f"SELECT id FROM {stack.schema}.{table} ORDER BY id")]


@pytest.mark.postgres
@pytest.mark.s3
def test_a_reloaded_upstream_makes_the_chain_of_transforms_stale(stack, make_task):
    """load → transform → transform. The load is reloaded (a new file); one run of the last task in the mode
    reloads the two transforms, in order, each recording the load of its upstream that it read. A change
    in S3 alone (nothing reloaded yet) is found through the chain and reloads all three."""
    stack.put("d/2019-02-01/a.csv", "id,day,v\n1,2019-02-01,x\n")
    load = _upstream(make_task)
    first = _transform_task(stack, load, __name__="DeriveFirst", transform=staticmethod(_copy_rows))
    second = _transform_task(stack, first, __name__="DeriveSecond", transform=staticmethod(_copy_rows),
                             table=f"{stack.schema}.derived2")
    t, d1, d2 = (f"{stack.schema}.{name}" for name in ("t", "derived", "derived2"))
    assert run_task(second(date=D1)).status == LuigiStatusCode.SUCCESS
    assert _marker(stack, d1)["sources"][0]["upstream_loads"] == {t: _marker(stack, t)["load_id"]}
    assert _marker(stack, d2)["sources"][0]["upstream_loads"] == {d1: _marker(stack, d1)["load_id"]}

    stack.put("d/2019-02-01/b.csv", "id,day,v\n2,2019-02-01,y\n")
    assert run_task(load(date=D1, reload_changed=True)).status == LuigiStatusCode.SUCCESS  # the load alone
    assert _ids(stack, "t") == [1, 2] and _ids(stack, "derived2") == [1]
    before = {table: _marker(stack, table) for table in (t, d1, d2)}
    assert second(date=D1).complete()  # without the mode: done, as documented
    assert run_task(second(date=D1)).status == LuigiStatusCode.SUCCESS
    assert {table: _marker(stack, table) for table in (t, d1, d2)} == before

    assert not second(date=D1, reload_changed=True).complete()
    assert run_task(second(date=D1, reload_changed=True)).status == LuigiStatusCode.SUCCESS
    assert _ids(stack, "derived") == _ids(stack, "derived2") == [1, 2]
    after = {table: _marker(stack, table) for table in (t, d1, d2)}
    assert after[t] == before[t]  # the load was current: not reloaded again
    assert after[d1]["load_id"] != before[d1]["load_id"] and after[d2]["load_id"] != before[d2]["load_id"]
    assert after[d1]["finished_at"] <= after[d2]["started_at"]  # in order
    assert after[d2]["sources"][0]["upstream_loads"] == {d1: after[d1]["load_id"]}
    assert second(date=D1, reload_changed=True).complete()

    stack.put("d/2019-02-01/c.csv", "id,day,v\n3,2019-02-01,z\n")  # only S3 changed: stale through the chain
    assert not second(date=D1, reload_changed=True).complete()
    assert run_task(second(date=D1, reload_changed=True)).status == LuigiStatusCode.SUCCESS
    assert _ids(stack, "t") == _ids(stack, "derived") == _ids(stack, "derived2") == [1, 2, 3]
    last = {table: _marker(stack, table) for table in (t, d1, d2)}
    assert last[t]["finished_at"] <= last[d1]["started_at"] and last[d1]["finished_at"] <= last[d2]["started_at"]


@pytest.mark.postgres
@pytest.mark.s3
def test_a_transform_marker_without_its_upstream_loads_is_stale_in_the_mode(stack, make_task):
    """A marker written before transforms recorded their upstream loads cannot be shown fresh: the mode rewrites it."""
    stack.put("d/2019-02-01/a.csv", "id,day,v\n1,2019-02-01,x\n")
    task = _transform_task(stack, _upstream(make_task), transform=staticmethod(_copy_rows))
    assert run_task(task(date=D1)).status == LuigiStatusCode.SUCCESS
    assert task(date=D1, reload_changed=True).complete()
    stack.execute(f"UPDATE {stack.marker_schema}.partition_marker SET source_objects = source_objects #- "
                  "'{0,upstream_loads}' WHERE target_table = %s", (f"{stack.schema}.derived",))
    assert task(date=D1).complete() and not task(date=D1, reload_changed=True).complete()
    assert run_task(task(date=D1, reload_changed=True)).status == LuigiStatusCode.SUCCESS
    assert "upstream_loads" in _marker(stack, f"{stack.schema}.derived")["sources"][0]
