"""Merge loads (``MergePartition``): a date's objects upserted by key, snapshots, deleted flags, bad keys, order, kill -9."""
from __future__ import annotations

import datetime
import logging
import os
import signal
from typing import Any

import pytest
from luigi.execution_summary import LuigiStatusCode
from psycopg2 import sql

from luigi_pipelines import BadInputError, ConfigurationError, LoadError, MergePartition
from luigi_pipelines import sql as q
from luigi_pipelines.partitions import TableName
from tests.conftest import run_task

pytestmark = [pytest.mark.postgres, pytest.mark.s3]

D1, D2, D3 = datetime.date(2019, 2, 1), datetime.date(2019, 2, 2), datetime.date(2019, 2, 3)
SUCCESS = LuigiStatusCode.SUCCESS
HEADER = "customer_id,name,tier\n"


@pytest.fixture
def make_merge(stack) -> Any:
    """A ``MergePartition`` of ``c/<date>/*`` into ``<schema>.customers (customer_id bigint, name text, tier text)``."""
    def factory(**attrs: Any) -> type[MergePartition]:
        declared = {
            "bucket": stack.bucket,
            "key_prefix": "c/{date:%Y-%m-%d}/",
            "table": f"{stack.schema}.customers",
            "columns": [("customer_id", "bigint"), ("name", "text"), ("tier", "text")],
            "merge_key": ("customer_id",),
            "__module__": __name__,
        }
        declared.update(attrs)
        return type(attrs.pop("__name__", "MergeCustomers"), (MergePartition,), declared)

    return factory


def put(stack, day: datetime.date, name: str, *rows: str, header: str = HEADER) -> None:
    stack.put(f"c/{day}/{name}", header + "".join(r + "\n" for r in rows))


def customers(stack, *extra: str) -> list[tuple]:
    """The table's rows by key; ``extra`` system columns (xmin, xmax) after the values."""
    cols = ", ".join(("customer_id", "name", "tier", *(f"{c}::text" for c in extra)))
    return stack.query(f"SELECT {cols} FROM {stack.schema}.customers ORDER BY customer_id")


def merged(task: Any) -> None:
    assert run_task(task).status == SUCCESS


# -- the pure builders -------------------------------------------------------------------------------


def rendered(pg_server, statement: sql.Composable) -> str:
    import psycopg2
    with psycopg2.connect(pg_server.dsn) as conn:
        text = statement.as_string(conn)
    conn.close()
    return text


def test_merge_statement_compares_values_and_carries_lineage(pg_server):
    statement = q.merge_from_stage(TableName("s", "t"), ["id"], ["name", "tier"], ["load_id"], "is_deleted")
    assert rendered(pg_server, statement) == (
        'MERGE INTO "s"."t" AS t USING "pg_temp"."luigi_pipelines_merge" AS s ON "t"."id" = "s"."id" '
        'WHEN MATCHED AND "s"."is_deleted" THEN DELETE '
        'WHEN MATCHED AND ROW("t"."name", "t"."tier") IS DISTINCT FROM ROW("s"."name", "s"."tier") '
        'THEN UPDATE SET "name" = "s"."name", "tier" = "s"."tier", "load_id" = "s"."load_id" '
        'WHEN NOT MATCHED AND "s"."is_deleted" IS NOT TRUE '
        'THEN INSERT ("id", "name", "tier", "load_id") VALUES ("s"."id", "s"."name", "s"."tier", "s"."load_id")')


def test_a_key_only_table_has_no_update_clause(pg_server):
    assert rendered(pg_server, q.merge_from_stage(TableName("s", "t"), ["a", "b"], [])) == (
        'MERGE INTO "s"."t" AS t USING "pg_temp"."luigi_pipelines_merge" AS s ON "t"."a" = "s"."a" AND "t"."b" = "s"."b" '
        'WHEN NOT MATCHED THEN INSERT ("a", "b") VALUES ("s"."a", "s"."b")')


def test_superseded_rows_and_snapshot_deletes_join_on_the_whole_key(pg_server):
    assert rendered(pg_server, q.delete_superseded(["r", "id"])) == (
        'DELETE FROM "pg_temp"."luigi_pipelines_merge" AS s USING (SELECT "r", "id", max("luigi_pipelines_ord") AS '
        '"luigi_pipelines_last" FROM "pg_temp"."luigi_pipelines_merge" GROUP BY "r", "id" HAVING count(*) > 1) AS d '
        'WHERE "s"."r" = "d"."r" AND "s"."id" = "d"."id" AND "s"."luigi_pipelines_ord" < "d"."luigi_pipelines_last"')
    assert rendered(pg_server, q.delete_absent(TableName("s", "t"), ["r", "id"], ["r"])) == (
        'DELETE FROM "s"."t" AS t WHERE "t"."r" = %s AND NOT EXISTS (SELECT 1 FROM "pg_temp"."luigi_pipelines_merge" '
        'AS s WHERE "t"."r" = "s"."r" AND "t"."id" = "s"."id")')


# -- inserts, updates, snapshots, flags ---------------------------------------------------------------


def test_new_keys_inserted_changed_rows_updated_unchanged_rows_untouched(stack, make_merge):
    task = make_merge()
    put(stack, D1, "a.csv", "1,Ann,gold", "2,Bob,silver", "3,Cy,")
    merged(task(date=D1))
    before = {r[0]: r[3:] for r in customers(stack, "xmin", "xmax")}
    assert [r[:3] for r in customers(stack)] == [(1, "Ann", "gold"), (2, "Bob", "silver"), (3, "Cy", None)]

    put(stack, D2, "a.csv", "1,Ann,gold", "2,Bob,gold", "3,Cy,", "4,Dee,bronze")  # a change set: 2 changed, 4 new
    merged(task(date=D2))
    after = customers(stack, "xmin", "xmax")
    assert [r[:3] for r in after] == [(1, "Ann", "gold"), (2, "Bob", "gold"), (3, "Cy", None), (4, "Dee", "bronze")]
    by_key = {r[0]: r[3:] for r in after}
    assert by_key[1] == before[1] and by_key[3] == before[3]  # same xmin, and xmax 0: not written, not even locked
    assert by_key[1][1] == "0" and by_key[2][0] != before[2][0]
    markers = stack.markers(f"{stack.schema}.customers")
    assert sorted(markers) == [D1, D2] and markers[D2][0] == 4  # rows_loaded: the rows of the date's objects


def test_json_lines_merge_through_both_stages_and_the_last_line_of_a_key_wins(stack, make_merge, json_lines_reader):
    """A JSON-lines change set: lines staged as jsonb, mapped into the merge stage, merged by key."""
    from luigi_pipelines import JsonLinesDecoder
    task = make_merge(decoder=JsonLinesDecoder(), snapshot=True)
    stack.put(f"c/{D1}/a.jsonl", '{"customer_id": 1, "name": "Ann", "tier": "gold"}\n'
                                 '{"tier": "silver", "customer_id": 2, "name": "Bob", "unknown": [1]}\n')
    merged(task(date=D1))
    stack.put(f"c/{D2}/a.jsonl", '{"customer_id": 2, "name": "Bob", "tier": "gold"}\n'
                                 '{"customer_id": 3, "name": "Cy"}\n'
                                 '{"customer_id": 2, "name": "Bob", "tier": "platinum"}\n')
    merged(task(date=D2))
    assert customers(stack) == [(2, "Bob", "platinum"), (3, "Cy", None)]  # 1 absent from the snapshot: deleted

    stack.put(f"c/{D3}/a.jsonl", '{"customer_id": 4, "name": "Dee"}\n{"name": "nobody"}\n')
    with pytest.raises(BadInputError, match=rf"c/{D3}/a.jsonl.* line 2"):
        task(date=D3).run()
    assert customers(stack) == [(2, "Bob", "platinum"), (3, "Cy", None)]  # nothing of D3 kept


def test_a_change_set_keeps_absent_keys_and_a_snapshot_deletes_them(stack, make_merge):
    put(stack, D1, "a.csv", "1,Ann,gold", "2,Bob,silver", "3,Cy,")
    put(stack, D2, "a.csv", "1,Ann,gold", "3,Cy,tin")
    changes = make_merge()
    merged(changes(date=D1))
    merged(changes(date=D2))
    assert [r[:3] for r in customers(stack)] == [(1, "Ann", "gold"), (2, "Bob", "silver"), (3, "Cy", "tin")]

    stack.execute(f"DROP TABLE {stack.schema}.customers")
    stack.execute(f"DELETE FROM {stack.marker_schema}.partition_marker")
    snapshots = make_merge(snapshot=True)
    with pytest.raises(LoadError, match="customers does not exist .dropped while this process ran"):
        snapshots(date=D1).run()  # this process's connection had checked the table: the drop is refused, not hidden
    merged(snapshots(date=D1))  # the next attempt creates it again
    merged(snapshots(date=D2))
    assert [r[:3] for r in customers(stack)] == [(1, "Ann", "gold"), (3, "Cy", "tin")]


def test_an_empty_snapshot_is_refused(stack, make_merge):
    snapshots = make_merge(snapshot=True)
    put(stack, D1, "a.csv", "1,Ann,gold")
    merged(snapshots(date=D1))
    put(stack, D2, "a.csv")
    with pytest.raises(BadInputError, match=r"the snapshot has no rows: merging it would delete every row"):
        snapshots(date=D2).run()
    assert [r[:3] for r in customers(stack)] == [(1, "Ann", "gold")]


def test_deleted_flag_turns_a_change_row_into_a_delete(stack, make_merge):
    task = make_merge(columns=[("customer_id", "bigint"), ("name", "text"), ("tier", "text"), ("gone", "boolean")],
                      deleted_flag="gone")
    header = "customer_id,name,tier,gone\n"
    put(stack, D1, "a.csv", "1,Ann,gold,false", "2,Bob,silver,", "3,Cy,tin,f", header=header)
    merged(task(date=D1))
    put(stack, D2, "a.csv", "2,Bob,silver,true", "3,Cy,gold,false", "9,Zed,gold,t", header=header)
    merged(task(date=D2))
    assert [r[:3] for r in customers(stack)] == [(1, "Ann", "gold"), (3, "Cy", "gold")]  # 9: a delete of nothing
    columns = stack.query("SELECT column_name FROM information_schema.columns WHERE table_schema = %s AND "
                          "table_name = 'customers' ORDER BY ordinal_position", (stack.schema,))
    assert columns == [("customer_id",), ("name",), ("tier",)]  # the flag is not stored


def test_last_occurrence_wins_by_object_then_line(stack, make_merge, caplog):
    task = make_merge(snapshot=True)
    put(stack, D1, "a.csv", "1,Ann,first", "2,Bob,a", "1,Ann,second")
    put(stack, D1, "b.csv", "1,Ann,third", "3,Cy,b")
    put(stack, D1, "c.csv", "2,Bob,c", "2,Bob,last")
    with caplog.at_level(logging.INFO, logger="luigi-interface.luigi_pipelines"):
        merged(task(date=D1))
    assert [r[:3] for r in customers(stack)] == [(1, "Ann", "third"), (2, "Bob", "last"), (3, "Cy", "b")]
    assert "merged 7 rows: 4 superseded by a later row of the same key, 3 rows inserted, updated or deleted" in caplog.text


# -- bad input and declarations ----------------------------------------------------------------------


def test_a_null_key_fails_naming_the_object_and_line_and_keeps_nothing(stack, make_merge):
    task = make_merge()
    put(stack, D1, "a.csv", "1,Ann,gold")
    merged(task(date=D1))
    put(stack, D2, "a.csv", "1,Ann,platinum")
    put(stack, D2, "b.csv", "2,Bob,gold", ",Nobody,tin")
    with pytest.raises(BadInputError) as failed:
        task(date=D2).run()
    assert str(failed.value) == (f"s3://{stack.bucket}/c/2019-02-02/b.csv line 3: null value in column \"customer_id\" "
                                 f"of relation \"luigi_pipelines_merge\" violates not-null constraint")
    assert [r[:3] for r in customers(stack)] == [(1, "Ann", "gold")] and D2 not in stack.markers(f"{stack.schema}.customers")


def test_a_table_without_a_unique_key_is_refused_with_the_fix(stack, make_merge):
    stack.execute(f"CREATE SCHEMA {stack.schema}; CREATE TABLE {stack.schema}.customers "
                  "(customer_id bigint, name text, tier text)")
    put(stack, D1, "a.csv", "1,Ann,gold")
    with pytest.raises(ConfigurationError) as refused:
        make_merge()(date=D1).run()
    assert str(refused.value) == (
        f"MergeCustomers: {stack.schema}.customers has no primary key or unique constraint on merge_key (customer_id), "
        f"which a merge needs (one row per key, found through its index); run once: ALTER TABLE \"{stack.schema}\"."
        f"\"customers\" ADD PRIMARY KEY (\"customer_id\") (ADD UNIQUE (...) if the table has another primary key)")
    stack.execute(f"ALTER TABLE {stack.schema}.customers ADD UNIQUE (customer_id)")  # the fix, as a unique constraint
    merged(make_merge()(date=D1))
    assert [r[:3] for r in customers(stack)] == [(1, "Ann", "gold")]


def test_quarantine_sets_a_bad_change_row_aside_and_merges_the_rest(stack, make_merge):
    task = make_merge()
    put(stack, D1, "a.csv", "1,Ann,gold", "2,Bob,gold", ",Nobody,tin", "x,Bad,tin", "3,Cy,tin")
    merged(task(date=D1, max_bad_rows=2))
    assert [r[:3] for r in customers(stack)] == [(1, "Ann", "gold"), (2, "Bob", "gold"), (3, "Cy", "tin")]
    rejects = stack.query(f"SELECT line_number, raw_line FROM {stack.marker_schema}.rejected_rows ORDER BY 1")
    assert rejects == [(4, ",Nobody,tin"), (5, "x,Bad,tin")]
    with pytest.raises(ConfigurationError, match="max_bad_rows with snapshot = True: a row set aside would be absent"):
        make_merge(snapshot=True)(date=D2, max_bad_rows=1).run()


def test_columns_by_name_with_an_undeclared_column_go_through_both_stages(stack, make_merge):
    from luigi_pipelines import CsvFormat
    task = make_merge(csv=CsvFormat(by_name=True))
    put(stack, D1, "a.csv", "gold,x,1,Ann", "tin,y,2,Bob", "silver,z,1,Ann", header="tier,extra,customer_id,name\n")
    merged(task(date=D1))
    assert [r[:3] for r in customers(stack)] == [(1, "Ann", "silver"), (2, "Bob", "tin")]


def test_a_column_type_without_equality_is_refused_naming_it(stack, make_merge):
    task = make_merge(columns=[("customer_id", "bigint"), ("name", "text"), ("tier", "json")])
    put(stack, D1, "a.csv", '1,Ann,"{""a"": 1}"')
    with pytest.raises(ConfigurationError, match=r"a merge compares each column with the table's value, and operator "
                                                 r"does not exist: json = json: declare a comparable type"):
        task(date=D1).run()
    assert customers(stack) == []


@pytest.mark.parametrize("attrs, message", [
    ({"merge_key": ()}, "merge_key must name the key's columns"),
    ({"merge_key": "customer_id"}, "merge_key must name the key's columns"),
    ({"merge_key": ("id",)}, "merge_key 'id' not among columns"),
    ({"date_column": "day"}, "a merged table keeps its rows by key, not by date"),
    ({"deleted_flag": "tier"}, "deleted_flag 'tier' must be a boolean column"),
    ({"scope": {"region": "eu"}}, r"scope columns \['region'\] must be part of merge_key"),
])
def test_declarations_are_checked(stack, make_merge, attrs, message):
    with pytest.raises(ConfigurationError, match=message):
        make_merge(**attrs)(date=D1).run()


# -- reruns and order --------------------------------------------------------------------------------


def test_a_second_family_merging_into_the_same_rows_is_refused_on_any_date(stack, make_merge):
    put(stack, D1, "a.csv", "1,Ann,gold")
    put(stack, D2, "a.csv", "2,Bob,silver")
    merged(make_merge()(date=D1))
    other = make_merge(__name__="OtherCustomers", snapshot=True)
    with pytest.raises(ConfigurationError, match="OtherCustomers merges into .*customers, but MergeCustomers has loaded"):
        other(date=D2).run()  # a snapshot of D2 would have deleted Ann, merged by the other task on D1
    assert customers(stack) == [(1, "Ann", "gold")]


def test_rerun_is_a_noop_and_a_forced_rerun_writes_nothing(stack, make_merge):
    task = make_merge(snapshot=True)
    put(stack, D1, "a.csv", "1,Ann,gold", "2,Bob,silver")
    merged(task(date=D1))
    before = customers(stack, "xmin", "xmax")
    marker = stack.markers(f"{stack.schema}.customers")[D1]
    merged(task(date=D1))
    assert stack.markers(f"{stack.schema}.customers")[D1] == marker  # not run at all
    merged(task(date=D1, force=True))
    assert customers(stack, "xmin", "xmax") == before  # the same table, not a row written
    assert stack.markers(f"{stack.schema}.customers")[D1][3] > marker[3]  # a new marker


def test_reload_changed_merges_a_replaced_object_again(stack, make_merge):
    task = make_merge()
    put(stack, D1, "a.csv", "1,Ann,gold", "2,Bob,gold")
    merged(task(date=D1))
    before = customers(stack, "xmin")
    put(stack, D1, "a.csv", "1,Ann,gold", "2,Bob,tin")  # the producer replaced the date's file
    assert task(date=D1).complete() and not task(date=D1, reload_changed=True).complete()
    merged(task(date=D1, reload_changed=True))
    after = customers(stack, "xmin")
    assert [r[:3] for r in after] == [(1, "Ann", "gold"), (2, "Bob", "tin")] and after[0] == before[0]


def test_an_older_date_after_a_newer_one_is_refused_unless_forced(stack, make_merge, caplog):
    task = make_merge()
    put(stack, D1, "a.csv", "1,Ann,old")
    put(stack, D2, "a.csv", "1,Ann,new")
    merged(task(date=D2))
    with pytest.raises(LoadError, match=r"2019-02-01: 2019-02-02 is merged already, and merges apply in date order"):
        task(date=D1).run()
    assert [r[:3] for r in customers(stack)] == [(1, "Ann", "new")]
    merged(task(date=D1, force=True))  # applied as asked, with a warning: then the later dates again, in order
    assert "merging over 2019-02-02, a newer date (forced)" in caplog.text
    merged(task(date=D2, force=True))
    assert [r[:3] for r in customers(stack)] == [(1, "Ann", "new")]


def test_scoped_snapshots_delete_only_their_scope(stack, make_merge):
    columns = [("customer_id", "bigint"), ("name", "text"), ("tier", "text")]
    eu = make_merge(__name__="MergeEU", key_prefix="eu/{date:%Y-%m-%d}/", scope={"region": "eu"}, snapshot=True,
                    merge_key=("region", "customer_id"), columns=columns)
    us = make_merge(__name__="MergeUS", key_prefix="us/{date:%Y-%m-%d}/", scope={"region": "us"}, snapshot=True,
                    merge_key=("region", "customer_id"), columns=columns)
    stack.put("eu/2019-02-01/a.csv", HEADER + "1,Ann,gold\n2,Bob,gold\n")
    stack.put("us/2019-02-01/a.csv", HEADER + "1,Al,tin\n")
    merged(eu(date=D1))
    merged(us(date=D1))
    stack.put("eu/2019-02-02/a.csv", HEADER + "2,Bob,tin\n")  # Ann left the EU snapshot; the US rows stay
    merged(eu(date=D2))
    rows = stack.query(f"SELECT region, customer_id, name, tier FROM {stack.schema}.customers ORDER BY 1, 2")
    assert rows == [("eu", 2, "Bob", "tin"), ("us", 1, "Al", "tin")]


def test_lineage_columns_follow_the_load_that_last_changed_a_row(stack, make_merge):
    from luigi_pipelines import Lineage
    task = make_merge(lineage=Lineage(key="source_key", load_id="load_id"))
    put(stack, D1, "a.csv", "1,Ann,gold", "2,Bob,gold")
    merged(task(date=D1))
    put(stack, D2, "b.csv", "1,Ann,gold", "2,Bob,tin")
    merged(task(date=D2))
    rows = stack.query(f"SELECT customer_id, source_key, m.partition_date FROM {stack.schema}.customers c JOIN "
                       f"{stack.marker_schema}.partition_marker m USING (load_id) ORDER BY 1")
    assert rows == [(1, "c/2019-02-01/a.csv", D1), (2, "c/2019-02-02/b.csv", D2)]


def test_a_merge_waits_for_another_merge_of_the_table_and_says_so_when_it_gives_up(stack, make_merge):
    import psycopg2

    from luigi_pipelines.partitions import ScopedTable, table_lock_key
    task = make_merge()
    put(stack, D1, "a.csv", "1,Ann,gold")
    stack.set_config("load", "lock_timeout_s", "1")
    key = table_lock_key(ScopedTable.of(TableName(stack.schema, "customers"), {}))
    holder = psycopg2.connect(stack.pg.dsn)
    try:
        with holder.cursor() as cur:
            cur.execute("SELECT pg_advisory_xact_lock(%s, %s)", key)  # another date's merge, in its transaction
            with pytest.raises(LoadError, match=r"customers 2019-02-01: another merge of \S+customers holds the "
                                                r"table's lock, and \[load\] lock_timeout_s ran out"):
                task(date=D1).run()
    finally:
        holder.close()
    merged(task(date=D1))
    assert [r[:3] for r in customers(stack)] == [(1, "Ann", "gold")]


@pytest.mark.parametrize("workers", ["1", "3"])
def test_a_backfill_merges_the_dates_in_order(stack, make_merge, tmp_path, workers):
    """luigi alone ran 2019-02-01, 02-03, then 02-02 (refused) with one worker: priorities and a resource order them."""
    for n, day in enumerate((D1, D2, D3)):
        put(stack, day, "a.csv", f"1,Ann,v{n}", f"{n + 2},New{n},x")
    stack.set_config("merge_test", "bucket", stack.bucket)
    stack.set_config("merge_test", "schema", stack.schema)
    config = stack.write_config(tmp_path / "merge.cfg")
    result = stack.luigi("--module", "tests.merge_tasks", "RangeDaily", "--of", "MergeCustomers",
                         "--start", str(D1), "--stop", str(D3 + datetime.timedelta(days=1)), "--workers", workers,
                         "--local-scheduler", config_file=config)
    assert result.returncode == 0, result.stderr[-3000:]
    assert [r[:3] for r in customers(stack)] == [(1, "Ann", "v2"), (2, "New0", "x"), (3, "New1", "x"), (4, "New2", "x")]


# -- kill -9 in the middle of a merge ----------------------------------------------------------------


def _in_stage_copy(loader: Any) -> None:
    from tests.test_faults import _observe_copy
    _observe_copy(loader, 0)


def _merged_not_committed(loader: Any) -> None:
    [(_, state, query, wrote)] = loader.backends()
    assert state == "idle in transaction" and wrote and query.startswith("MERGE INTO"), (state, query)


@pytest.mark.slow
@pytest.mark.parametrize("phase, observe", [("copy", _in_stage_copy), ("merge", _merged_not_committed)],
                         ids=["in the stage's COPY", "after the MERGE"])
def test_kill_9_mid_merge_leaves_the_table_exact(stack, tmp_path, phase, observe):
    from tests.test_faults import make_loader
    stack.set_config("merge_test", "bucket", stack.bucket)
    stack.set_config("merge_test", "schema", stack.schema)
    loader = make_loader(stack, tmp_path)
    task = ["--module", "tests.merge_tasks", "MergeCustomers", "--local-scheduler"]
    put(stack, D1, "a.csv", *(f"{n},name{n},gold" for n in range(1, 1001)))
    assert loader.run(*task, "--date", str(D1)).returncode == 0
    before = customers(stack, "xmin")
    put(stack, D2, "a.csv", *(f"{n},name{n},{'tin' if n % 10 == 0 else 'gold'}" for n in range(1, 1201)))
    run = loader.start(phase, *task, "--date", str(D2))
    try:
        pid = run.reached()
        observe(loader)
        assert customers(stack, "xmin") == before  # what the merge did is in its transaction, invisible outside it
        os.kill(pid, signal.SIGKILL)
        assert run.process.wait(30) == -signal.SIGKILL
    finally:
        run.process.kill()
    loader.wait_no_backend()
    assert customers(stack, "xmin") == before and D2 not in stack.markers(f"{stack.schema}.customers")
    assert loader.run(*task, "--date", str(D2)).returncode == 0
    expected = [(n, f"name{n}", "tin" if n % 10 == 0 else "gold") for n in range(1, 1201)]
    assert [r[:3] for r in customers(stack)] == expected
    assert stack.markers(f"{stack.schema}.customers")[D2][0] == 1200


# -- the example pipeline's dimension table -----------------------------------------------------------


def test_the_example_accounts_dimension_follows_the_daily_snapshots(stack):
    from luigi_pipelines.devstack.sample import account_lines, accounts_csv
    from luigi_pipelines.pipelines.transactions import MergeAccounts
    stack.set_config("transactions", "accounts_table", f"{stack.schema}.account")
    days = [D1 + datetime.timedelta(days=n) for n in range(4)]
    for day in days:
        stack.put(f"accounts/{day}/accounts.csv", accounts_csv(day))
    for day in days:
        merged(MergeAccounts(date=day))
        rows = stack.query(f"SELECT account, name, tier FROM {stack.schema}.account")
        assert sorted(",".join(r) for r in rows) == sorted(account_lines(day)) and len(rows) == 980
    previous, last = set(account_lines(days[-2])), set(account_lines(days[-1]))
    assert previous != last  # tiers moved and other accounts closed: the last merge changed rows


def test_backfill_processes_merges_the_dates_in_order(stack, tmp_path):
    """``backfill --processes 2`` of a merge: the two runs' local schedulers know nothing of each other, so the
    later run merged its first date while the earlier run was still at its own, and the earlier dates were then
    refused ("merged already"). The dates of a merge go to one process, in order."""
    import subprocess
    import sys

    days = [D1 + datetime.timedelta(days=n) for n in range(6)]
    for n, day in enumerate(days):
        put(stack, day, "a.csv", f"1,Ann,v{n}", f"{n + 2},New{n},x")
    stack.set_config("merge_test", "bucket", stack.bucket)
    stack.set_config("merge_test", "schema", stack.schema)
    config = stack.write_config(tmp_path / "merge.cfg")
    result = subprocess.run(
        [sys.executable, "-m", "luigi_pipelines.cli", "backfill", "--module", "tests.merge_tasks", "--task",
         "MergeCustomers", "--start", str(days[0]), "--stop", str(days[-1] + datetime.timedelta(days=1)),
         "--now", "2019-02-08T05:00:00Z", "--processes", "2"],
        cwd=tmp_path, env=stack.env(config), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert [r[:3] for r in customers(stack)] == [(1, "Ann", "v5"), *((n + 2, f"New{n}", "x") for n in range(6))]


def test_a_table_name_with_capitals_is_merged(stack, make_merge):
    """The table's unique keys were looked up by its unquoted name (to_regclass folds it to lower case): a table
    named with capitals, made with its primary key by create_table, was refused as having no unique key."""
    put(stack, D1, "a.csv", "1,Ann,gold")
    merged(make_merge(table=f"{stack.schema}.Customers")(date=D1))
    assert stack.query(f'SELECT customer_id, name, tier FROM {stack.schema}."Customers"') == [(1, "Ann", "gold")]


# -- objects that keys leave out -------------------------------------------------------------------------


def put_beside(stack, day: datetime.date) -> None:
    """Beside ``a.csv``: ``b.csv.gz`` (Bob, gzipped: it looks like data), and keys that do not (a 0-byte object,
    a folder marker, ``_SUCCESS``)."""
    import gzip

    stack.put(f"c/{day}/b.csv.gz", gzip.compress((HEADER + "2,Bob,silver\n").encode()))
    for name in ("empty.txt", "sub/", "_SUCCESS"):
        stack.put(f"c/{day}/{name}", b"")


def test_a_snapshot_refuses_to_run_when_keys_leave_out_an_object_that_looks_like_data(stack, make_merge):
    """``keys = ("*.csv",)`` and a ``b.csv.gz`` beside ``a.csv``: the snapshot merge deleted Bob, whose row is in the
    object left out, with exit 0. Now it is refused before anything is written; declared not data (``skip_keys``)
    or matched by ``keys``, it merges."""
    from luigi_pipelines.partitions import CONVENTIONAL_SKIPS

    snapshots = make_merge(snapshot=True, keys=("*.csv",))
    put(stack, D1, "a.csv", "1,Ann,gold", "2,Bob,gold")
    merged(snapshots(date=D1))
    put(stack, D2, "a.csv", "1,Ann,gold")
    put_beside(stack, D2)
    with pytest.raises(ConfigurationError) as refused:
        snapshots(date=D2).run()
    assert str(refused.value) == (
        f"{stack.schema}.customers 2019-02-02: a snapshot merge deletes every key absent from the date's objects, "
        f"and keys ('*.csv',) leave out 1 object under s3://{stack.bucket}/c/2019-02-02/ that looks like data "
        f"(bytes, not a folder marker, not matched by skip_keys): c/2019-02-02/b.csv.gz; nothing was written. "
        f"Match it with keys to merge it, or declare it not data in skip_keys")
    assert customers(stack) == [(1, "Ann", "gold"), (2, "Bob", "gold")]
    assert sorted(stack.markers(f"{stack.schema}.customers")) == [D1]

    merged(make_merge(snapshot=True, keys=("*.csv", "*.csv.gz"))(date=D2))
    assert customers(stack) == [(1, "Ann", "gold"), (2, "Bob", "silver")]
    put(stack, D3, "a.csv", "1,Ann,gold")
    put_beside(stack, D3)
    merged(make_merge(snapshot=True, keys=("*.csv",), skip_keys=(*CONVENTIONAL_SKIPS, "*.gz"))(date=D3))
    assert customers(stack) == [(1, "Ann", "gold")]  # declared not data: the snapshot is a.csv alone


def test_objects_left_out_by_keys_are_in_the_marker_and_warned_once(stack, make_merge, caplog):
    """A change set (no snapshot) loads what keys match, names the rest in one WARNING per partition and
    records them in the marker's ``skipped_keys``; keys that do not look like data are not named."""
    task = make_merge(keys=("*.csv",))
    put(stack, D1, "a.csv", "1,Ann,gold")
    put_beside(stack, D1)
    stack.put(f"c/{D1}/notes.txt", b"hello")
    with caplog.at_level(logging.INFO):
        task(date=D1).run()
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warned == [f"{stack.schema}.customers 2019-02-01: 2 objects under s3://{stack.bucket}/c/2019-02-01/ "
                      f"look like data but are left out by keys ('*.csv',), not loaded: c/2019-02-01/b.csv.gz, "
                      f"c/2019-02-01/notes.txt (recorded in the marker's skipped_keys; declare them in keys to load "
                      f"them, or in skip_keys if they are not data)"]
    assert stack.query(f"SELECT skipped_keys FROM {stack.marker_schema}.partition_marker") == [
        (["c/2019-02-01/b.csv.gz", "c/2019-02-01/notes.txt"],)]
    assert customers(stack) == [(1, "Ann", "gold")]
