"""The partition-swap write mode (``partitioned = True``) on real PostgreSQL and S3: a child table per partition,
built frozen and swapped in; rows of another date refused; retention; tables that do not match refused with their
migration; readers that wait for the swap only; a kill -9 loop."""
from __future__ import annotations

import datetime
import itertools
import os
import random
import select
import signal
import threading
import time

import psycopg2
import pytest
from luigi.execution_summary import LuigiStatusCode

from luigi_pipelines import ConfigurationError, CsvFormat, Lineage, db, native
from luigi_pipelines.native import bound_text, child_name, value_of_child
from luigi_pipelines.partitions import ScopedTable, TableName, lock_key
from luigi_pipelines.sql import swap as swap_sql
from tests.conftest import forget_process_state, run_task
from tests.test_faults import wait_for

pytestmark = [pytest.mark.postgres, pytest.mark.s3]

D1, D2, D3 = datetime.date(2019, 2, 1), datetime.date(2019, 2, 2), datetime.date(2019, 2, 3)
SUCCESS, FAILED = LuigiStatusCode.SUCCESS, LuigiStatusCode.FAILED


def csv(*lines: str) -> str:
    return "id,day,v\n" + "".join(f"{line}\n" for line in lines)


def children(stack, table: str = "t") -> list[str]:
    return [r[0] for r in stack.query(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
        "WHERE i.inhparent = to_regclass(%s) ORDER BY 1", (f"{stack.schema}.{table}",))]


def tables_like(stack, pattern: str) -> list[str]:
    return [r[0] for r in stack.query("SELECT relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                                      "WHERE n.nspname = %s AND relname LIKE %s AND relkind IN ('r', 'p') ORDER BY 1",
                                      (stack.schema, pattern))]


def prepare(task) -> None:
    """The task's checks before its transaction, on a connection of its own."""
    with db.connect(task.database()) as conn:
        task.prepare(conn)


def rows(stack, table: str = "t") -> list[tuple]:
    return stack.query(f"SELECT id, day, v FROM {stack.schema}.{table} ORDER BY id")


def test_child_names_and_bounds_by_grain():
    table = TableName("s", "t")
    hour = datetime.datetime(2019, 2, 1, 23)
    assert [child_name(table, u, v) for u, v in (("day", D1), ("hour", hour), ("month", D1))] == [
        "t_p20190201", "t_p2019020123", "t_p201902"]
    assert value_of_child(table, "hour", "t_p2019020123") == hour and value_of_child(table, "day", "t_p201902") is None
    assert value_of_child(table, "day", "u_p20190201") is None and value_of_child(table, "day", "t_p20190230") is None
    assert bound_text("hour", hour) == "FOR VALUES FROM ('2019-02-01', 23) TO ('2019-02-01', 24)"
    assert bound_text("month", D1) == "FOR VALUES FROM ('2019-02-01') TO ('2019-03-01')"
    with pytest.raises(ConfigurationError, match="too long"):
        child_name(TableName("s", "x" * 50), "day", D1)


def test_a_load_creates_the_partitioned_table_and_a_frozen_child_per_date(stack, make_task):
    stack.put("d/2019-02-01/a.csv", csv("1,2019-02-01,x", "2,2019-02-01,y"))
    stack.put("d/2019-02-02/a.csv", csv("3,2019-02-02,z"))
    cls = make_task(partitioned=True)
    assert run_task(cls(date=D1)).status == SUCCESS and run_task(cls(date=D2)).status == SUCCESS
    assert stack.query("SELECT relkind::text FROM pg_class WHERE oid = to_regclass(%s)", (f"{stack.schema}.t",)) == [("p",)]
    assert children(stack) == ["t_p20190201", "t_p20190202"]
    assert rows(stack) == [(1, D1, "x"), (2, D1, "y"), (3, D2, "z")]
    # COPY ... FREEZE marks the pages all-frozen in the visibility map as it writes them (a plain COPY writes no map:
    # vacuum makes it later, rewriting the pages' hint bits)
    assert stack.query("SELECT pg_relation_size(%s, 'vm') > 0", (f"{stack.schema}.t_p20190201",)) == [(True,)]
    # the parent's index was built on each child, so ATTACH built none
    assert stack.query("SELECT count(*) FROM pg_indexes WHERE schemaname = %s AND tablename = 't_p20190201'",
                       (stack.schema,)) == [(1,)]
    assert stack.markers(f"{stack.schema}.t")[D1][0] == 2


def test_a_forced_reload_swaps_the_child_and_leaves_no_dead_rows(stack, make_task):
    stack.put("d/2019-02-01/a.csv", csv("1,2019-02-01,x", "2,2019-02-01,y"))
    cls = make_task(partitioned=True)
    assert run_task(cls(date=D1)).status == SUCCESS
    first = stack.query(f"SELECT '{stack.schema}.t_p20190201'::regclass::oid")[0][0]
    stack.put("d/2019-02-01/a.csv", csv("1,2019-02-01,new"))
    assert run_task(cls(date=D1, force=True)).status == SUCCESS
    assert rows(stack) == [(1, D1, "new")]
    assert children(stack) == ["t_p20190201"] and tables_like(stack, "t_p%_new") == []
    assert stack.query(f"SELECT '{stack.schema}.t_p20190201'::regclass::oid")[0][0] != first  # a new table
    assert stack.query("SELECT n_dead_tup FROM pg_stat_user_tables WHERE relid = to_regclass(%s)",
                       (f"{stack.schema}.t_p20190201",)) == [(0,)]


def test_rows_of_another_date_cannot_enter_the_child(stack, make_task, monkeypatch):
    """The new child's CHECK of its bound refuses them, naming the line: no partition guard on the COPY (each row
    would be checked twice) and no count after it."""
    guards, counted = [], []
    copy_stream, count_partition = db.copy_stream, db.count_partition
    monkeypatch.setattr(db, "copy_stream", lambda *a: guards.append(a[5:]) or copy_stream(*a))
    monkeypatch.setattr(db, "count_partition", lambda *a: counted.append(a) or count_partition(*a))
    stack.put("d/2019-02-01/a.csv", csv("1,2019-02-01,x"))
    cls = make_task(partitioned=True)
    assert run_task(cls(date=D1)).status == SUCCESS
    assert guards == [(None,)] and counted == []
    stack.put("d/2019-02-01/a.csv", csv("1,2019-02-01,x", "2,2019-02-02,wrong"))
    task = cls(date=D1, force=True)
    assert run_task(task).status == FAILED
    message = stack.query(f"SELECT message, s3_key FROM {stack.marker_schema}.partition_failure")[0]
    assert "line 3" in message[0] and "partition_bound" in message[0] and message[1] == "d/2019-02-01/a.csv"
    assert rows(stack) == [(1, D1, "x")]  # the old child, untouched
    assert tables_like(stack, "t_p%_new") == []


def test_quarantine_and_staged_columns_write_into_the_child(stack, make_task):
    """Quarantine mode copies in savepoints (not frozen: PostgreSQL refuses FREEZE there), a row of another date
    is set aside like any bad row; columns by the header's names with an undeclared one go through the stage."""
    stack.put("d/2019-02-01/a.csv", csv("1,2019-02-01,x", "x2,2019-02-01,bad", "3,2019-02-02,other date", "4,2019-02-01,y"))
    cls = make_task(partitioned=True)
    assert run_task(cls(date=D1, max_bad_rows=5)).status == SUCCESS
    assert rows(stack) == [(1, D1, "x"), (4, D1, "y")]
    rejects = stack.query(f"SELECT line_number, error FROM {stack.marker_schema}.rejected_rows ORDER BY 1")
    assert [r[0] for r in rejects] == [3, 4] and "partition_bound" in rejects[1][1]
    assert stack.query(f"SELECT rows_loaded, rows_rejected FROM {stack.marker_schema}.partition_marker") == [(2, 2)]

    stack.put("d/2019-02-02/a.csv", "note,v,day,id\nn,z,2019-02-02,7\n")
    staged = make_task(partitioned=True, csv=CsvFormat(by_name=True))
    assert run_task(staged(date=D2)).status == SUCCESS
    assert rows(stack)[-1] == (7, D2, "z") and children(stack) == ["t_p20190201", "t_p20190202"]


def test_a_column_the_parent_lacks_is_refused_with_the_fix_and_reaches_every_child(stack, make_task):
    stack.put("d/2019-02-01/a.csv", csv("1,2019-02-01,x"))
    assert run_task(make_task(partitioned=True)(date=D1)).status == SUCCESS
    forget_process_state()
    stack.put("d/2019-02-02/a.csv", "id,day,v,w\n2,2019-02-02,y,9\n")
    wider = make_task(partitioned=True, columns=[("id", "bigint"), ("day", "date"), ("v", "text"), ("w", "int")])
    with pytest.raises(ConfigurationError, match="has no column 'w'") as refused:
        prepare(wider(date=D2))
    stack.execute(str(refused.value).split("run once: ", 1)[1])
    forget_process_state()
    assert run_task(wider(date=D2)).status == SUCCESS
    assert stack.query(f"SELECT id, w FROM {stack.schema}.t ORDER BY 1") == [(1, None), (2, 9)]


def test_a_plain_table_where_partitioned_is_declared_is_refused_with_its_migration(stack, make_task):
    stack.put("d/2019-02-01/a.csv", csv("1,2019-02-01,x"))
    stack.put("d/2019-02-02/a.csv", csv("2,2019-02-02,y"))
    assert run_task(make_task()(date=D1)).status == SUCCESS  # a plain table, as loads made it before
    forget_process_state()
    cls = make_task(partitioned=True)
    with pytest.raises(ConfigurationError, match="is a plain table.*partitioned = True") as refused:
        prepare(cls(date=D2))
    assert stack.query("SELECT relkind::text FROM pg_class WHERE oid = to_regclass(%s)", (f"{stack.schema}.t",)) == [("r",)]
    statements = str(refused.value).split("one transaction (see docs/partitions.md): ", 1)[1]
    stack.execute(statements)  # the migration it gives, run as given
    forget_process_state()
    assert children(stack) == ["t_p20190201"] and rows(stack) == [(1, D1, "x")]
    assert run_task(cls(date=D2)).status == SUCCESS and run_task(cls(date=D1)).status == SUCCESS  # D1: done already
    assert rows(stack) == [(1, D1, "x"), (2, D2, "y")] and children(stack) == ["t_p20190201", "t_p20190202"]


@pytest.mark.parametrize("unit, columns, values, expected", [
    ("hour", ("day", "hour"), "('2019-02-01', 13), ('2019-02-01', 13), ('2019-02-02', 0)", ["m_p2019020113", "m_p2019020200"]),
    ("month", ("day",), "('2019-02-01', 1), ('2019-02-28', 2), ('2019-03-05', 3)", ["m_p201902", "m_p201903"]),
], ids=["hourly", "monthly"])
def test_the_migration_of_an_hourly_and_a_monthly_table(stack, unit, columns, values, expected):
    stack.execute(f"CREATE SCHEMA {stack.schema}; CREATE TABLE {stack.schema}.m (day date, hour smallint); "
                  f"INSERT INTO {stack.schema}.m VALUES {values}")
    table = TableName(stack.schema, "m")
    conn = psycopg2.connect(stack.pg.dsn)
    try:
        stack.execute("; ".join(s.as_string(conn) for s in swap_sql.migrate_to_partitioned(table, columns, unit)))
        native.check_shape(conn, table, columns, unit, "Migrated")
        native.check_children(conn, table, unit, "Migrated")  # every child is one partition value's
    finally:
        conn.close()
    assert children(stack, "m") == expected and stack.query(f"SELECT count(*) FROM {stack.schema}.m") == [(3,)]


def test_a_partitioned_table_where_plain_is_declared_and_a_foreign_child_are_refused(stack, make_task):
    stack.put("d/2019-02-01/a.csv", csv("1,2019-02-01,x"))
    assert run_task(make_task(partitioned=True)(date=D1)).status == SUCCESS
    forget_process_state()
    plain = make_task()
    with pytest.raises(ConfigurationError, match="is partitioned, but the task declares a plain table") as refused:
        prepare(plain(date=D1))
    assert "INSERT INTO" in str(refused.value)
    forget_process_state()
    stack.execute(f"CREATE TABLE {stack.schema}.t_feb PARTITION OF {stack.schema}.t FOR VALUES FROM ('2019-02-02') "
                  f"TO ('2019-03-01')")
    cls = make_task(partitioned=True)
    with pytest.raises(ConfigurationError, match="t_feb .FOR VALUES FROM .'2019-02-02'. TO .'2019-03-01'..: its rows") \
            as refused:
        prepare(cls(date=D1))
    assert "DETACH PARTITION" in str(refused.value)


def test_retention_drops_old_children_with_their_markers_and_status_shows_them_expired(stack, make_task):
    for n in range(1, 6):
        stack.put(f"d/2019-02-0{n}/a.csv", csv(f"{n},2019-02-0{n},x"))
    cls = make_task(partitioned=True, keep=2)
    for n in (1, 2, 3):
        assert run_task(cls(date=datetime.date(2019, 2, n))).status == SUCCESS
    assert children(stack) == ["t_p20190202", "t_p20190203"]
    assert sorted(stack.markers(f"{stack.schema}.t")) == [D2, D3]
    # an expired date is refused to a load, and counted done by bulk_complete (a backfill skips it)
    assert run_task(cls(date=D1, force=True)).status == FAILED
    assert "expired: keep = 2" in stack.query(f"SELECT message FROM {stack.marker_schema}.partition_failure")[0][0]
    days = [datetime.date(2019, 2, n) for n in range(1, 6)]
    assert cls.bulk_complete(days) == [D1, D2, D3]
    assert children(stack) == ["t_p20190202", "t_p20190203"]


def test_readers_of_another_date_do_not_wait_for_the_copy(stack, make_task):
    """A reload holds the COPY open (a hook waits on an event): a reader of another date and of the reloaded one
    answer meanwhile, without waiting; the reloaded date reads the old rows until the commit."""
    stack.put("d/2019-02-01/a.csv", csv("1,2019-02-01,x"))
    stack.put("d/2019-02-02/a.csv", csv("2,2019-02-02,y"))
    copying, release = threading.Event(), threading.Event()

    def before_object(self, tx, obj):
        copying.set()
        assert release.wait(60)

    cls = make_task(partitioned=True)
    assert run_task(cls(date=D1)).status == SUCCESS and run_task(cls(date=D2)).status == SUCCESS
    slow = make_task(partitioned=True, before_object=before_object)
    result: list = []
    loader = threading.Thread(target=lambda: result.append(slow(date=D1, force=True).run()))
    loader.start()
    try:
        assert copying.wait(60)
        with psycopg2.connect(stack.pg.dsn) as conn, conn.cursor() as cur:
            cur.execute("SET lock_timeout = '2s'")  # a reader that would wait for the loader fails here instead
            cur.execute(f"SELECT count(*) FROM {stack.schema}.t WHERE day = %s", (D2,))
            assert cur.fetchone() == (1,)
            cur.execute(f"SELECT v FROM {stack.schema}.t WHERE day = %s", (D1,))
            assert cur.fetchall() == [("x",)]
        conn.close()
    finally:
        release.set()
        loader.join(60)
    assert result == [None] and rows(stack) == [(1, D1, "x"), (2, D2, "y")]


def test_builders_render_the_swap_statements(stack):
    with psycopg2.connect(stack.pg.dsn) as conn:
        parent, child = TableName("s", "t"), TableName("s", "t_p20190201")
        assert swap_sql.attach_partition(parent, child, (D1,), (D2,)).as_string(conn) == (
            '''ALTER TABLE "s"."t" ATTACH PARTITION "s"."t_p20190201" FOR VALUES FROM ('2019-02-01'::date) '''
            '''TO ('2019-02-02'::date)''')
        assert swap_sql.bound_condition(("day", "hour"), (D1, 13), (D1, 14)).as_string(conn) == (
            '''("day", "hour") >= ('2019-02-01'::date, 13) AND ("day", "hour") < ('2019-02-01'::date, 14) AND '''
            '''"day" IS NOT NULL AND "hour" IS NOT NULL''')
    conn.close()


def test_scoped_tasks_get_a_list_partition_per_scope_and_a_child_per_scope_and_date(stack, make_task):
    """Two feeds of one table, by region: ``t`` is partitioned by list on region, ``t_us`` and ``t_eu`` by range on
    the date; a reload of one region's date swaps that child only, under that region's parent's lock: a reader
    of the other region does not wait for it."""
    stack.put("us/2019-02-01/a.csv", csv("1,2019-02-01,x"))
    stack.put("eu/2019-02-01/a.csv", csv("2,2019-02-01,y"))
    us = make_task(__name__="LoadUs", partitioned=True, scope={"region": "us"}, key_prefix="us/{date:%Y-%m-%d}/")
    eu = make_task(__name__="LoadEu", partitioned=True, scope={"region": "eu"}, key_prefix="eu/{date:%Y-%m-%d}/",
                   keep=1)
    assert run_task(us(date=D1)).status == SUCCESS and run_task(eu(date=D1)).status == SUCCESS
    assert children(stack) == ["t_eu", "t_us"]
    assert children(stack, "t_us") == ["t_us_p20190201"] and children(stack, "t_eu") == ["t_eu_p20190201"]
    assert stack.query(f"SELECT id, region FROM {stack.schema}.t ORDER BY 1") == [(1, "us"), (2, "eu")]

    stack.put("us/2019-02-01/a.csv", csv("3,2019-02-01,z"))
    stack.set_config("load", "lock_timeout_s", "5")  # were it to wait, the reload would fail, not hang
    held = psycopg2.connect(stack.pg.dsn)  # a reader of eu's rows holds eu's parent: us's swap does not wait for it
    held.cursor().execute(f"SELECT count(*) FROM {stack.schema}.t WHERE region = 'eu'")
    try:
        assert run_task(us(date=D1, force=True)).status == SUCCESS
    finally:
        held.close()
    assert stack.query(f"SELECT id, region FROM {stack.schema}.t ORDER BY 1") == [(2, "eu"), (3, "us")]

    stack.put("eu/2019-02-02/a.csv", csv("4,2019-02-02,w"))  # keep = 1: eu's Feb 1 expires, us's stays
    assert run_task(eu(date=D2)).status == SUCCESS
    assert children(stack, "t_eu") == ["t_eu_p20190202"] and children(stack, "t_us") == ["t_us_p20190201"]
    assert sorted(m[0] for m in stack.query(f"SELECT target_table, partition_date FROM "
                                             f"{stack.marker_schema}.partition_marker")) == [
        f"{stack.schema}.t/region=eu", f"{stack.schema}.t/region=us"]


# -- kill -9 at random points of swap-mode reloads ----------------------------------------------------------

KILL_DATES = (D1, D2, D3)
KILLS = 44  # every 4th in the swap itself (the parent's lock held, marker written, not committed), every 4th
# while the swap waits for the parent's lock (a reader holds it), the others at a random moment of a reload loop


def _reloads(cls, held: int) -> None:
    """A forked child: forced reloads of the dates, round and round, until killed; with ``held`` (a pipe's write
    end), the first one that reaches its commit says so and waits there."""
    try:
        for n in itertools.count():
            cls(date=KILL_DATES[n % len(KILL_DATES)], force=True).write_once()
    finally:
        os._exit(1)


def _hold_before_commit(state: dict):
    def before_commit(self, tx) -> None:
        if state.get("held") is not None:
            os.write(state["held"], b"x")
            select.select([], [], [], 120)  # waits here, the swap done and its lock held, until killed
    return before_commit


def _consistent(stack, cls) -> None:
    """Every date old or new: all its rows of one load, the one its marker names; a child per marked date, no
    other table; no lock of the table's or of its partitions' held."""
    marker = {d: (str(load), n) for d, load, n in stack.query(
        f"SELECT partition_date, load_id, rows_loaded FROM {stack.marker_schema}.partition_marker")}
    for day in KILL_DATES:
        loads = stack.query(f"SELECT load_id::text, count(*) FROM {stack.schema}.t WHERE day = %s GROUP BY 1", (day,))
        assert loads == ([marker[day]] if day in marker else []), (day, loads, marker.get(day))
    assert children(stack) == [f"t_p{d:%Y%m%d}" for d in sorted(marker)]
    assert tables_like(stack, "t%") == ["t", *children(stack)]  # no orphan: no t_p..._new, nothing else


def _no_lock_held(stack) -> None:
    """Wait (bounded) until the killed backend is gone: no lock on the schema's tables, no advisory lock of the
    partitions."""
    keys = [lock_key(ScopedTable.parse(f"{stack.schema}.t"), d) for d in KILL_DATES]

    def held() -> int:
        return stack.query(
            "SELECT count(*) FROM pg_locks l LEFT JOIN pg_class c ON c.oid = l.relation WHERE l.pid <> "
            "pg_backend_pid() AND (c.relnamespace = %s::regnamespace OR (l.locktype = 'advisory' AND "
            "(l.classid::int, l.objid::int) IN (SELECT * FROM unnest(%s::int[], %s::int[]))))",
            (stack.schema, [k[0] for k in keys], [k[1] for k in keys]))[0][0]
    wait_for(lambda: held() == 0, "the killed load's locks released")


@pytest.mark.slow
def test_kill_9_at_random_points_of_swap_reloads_leaves_every_date_old_or_new(stack, make_task):
    for day in KILL_DATES:
        stack.put(f"d/{day}/a.csv", csv(*(f"{n},{day},v{n}" for n in range(2000))))
    state: dict = {}
    cls = make_task(partitioned=True, lineage_columns=lambda self: Lineage(load_id="load_id"),
                    before_commit=_hold_before_commit(state))
    for day in KILL_DATES:
        assert run_task(cls(date=day)).status == SUCCESS
    rng, outcomes = random.Random(19), {"swap": 0, "lock wait": 0, "random": 0}
    for n in range(KILLS):
        kind = "swap" if n % 4 == 0 else "lock wait" if n % 4 == 1 else "random"
        read, write = os.pipe()
        state["held"] = write if kind == "swap" else None
        forget_process_state()  # the child makes its own connections
        reader = psycopg2.connect(stack.pg.dsn) if kind == "lock wait" else None
        if reader is not None:  # a long query on the parent: the swap waits for its lock
            reader.cursor().execute(f"SELECT count(*) FROM {stack.schema}.t")
        pid = os.fork()
        if pid == 0:
            _reloads(cls, write)
        os.close(write)
        if kind == "swap":
            assert select.select([read], [], [], 60)[0], "the reload reached its commit"
        elif kind == "lock wait":
            wait_for(lambda: stack.query("SELECT count(*) FROM pg_locks WHERE relation = %s::regclass AND NOT granted",
                                         (f"{stack.schema}.t",))[0][0] > 0, "a swap waiting for the parent's lock")
        else:
            time.sleep(rng.uniform(0.0, 0.5))  # a random point: the kill's moment is the experiment, not a wait
        os.kill(pid, signal.SIGKILL)
        assert os.waitpid(pid, 0)[1] != 0
        os.close(read)
        if reader is not None:
            reader.close()
        outcomes[kind] += 1
        _no_lock_held(stack)
        _consistent(stack, cls)
    assert outcomes == {"swap": 11, "lock wait": 11, "random": 22}
    state["held"] = None
    assert run_task(cls(date=D1, force=True)).status == SUCCESS  # the next load: as after any load
    _consistent(stack, cls)


def test_loads_of_two_dates_copy_side_by_side_and_swap_one_after_the_other(stack, make_task):
    """Two loads of different dates of one parent: both are inside their COPY at once (neither holds the parent
    meanwhile), then both swap and commit: no deadlock, whichever asks for the parent's lock first."""
    for day in (D1, D2, D3):
        stack.put(f"d/{day}/a.csv", csv(f"{day.day},{day},x"))
    both_copying = threading.Barrier(2, timeout=60)

    def before_object(self, tx, obj):
        both_copying.wait()

    assert run_task(make_task(partitioned=True)(date=D3)).status == SUCCESS  # the parent exists
    stack.set_config("load", "lock_timeout_s", "20")
    cls = make_task(partitioned=True, before_object=before_object)
    errors: list = []

    def load(day: datetime.date) -> None:
        try:
            cls(date=day).run()
        except Exception as exc:  # noqa: BLE001 - what the test reads
            errors.append(exc)

    loaders = [threading.Thread(target=load, args=(day,)) for day in (D1, D2)]
    for loader in loaders:
        loader.start()
    for loader in loaders:
        loader.join(120)
    assert errors == [] and not both_copying.broken
    assert children(stack) == ["t_p20190201", "t_p20190202", "t_p20190203"] and len(rows(stack)) == 3


def test_a_swap_that_waits_for_a_long_query_lets_new_readers_through_and_gives_up_at_lock_timeout(stack, make_task):
    """A long query holds the parent: the swap waits for its lock, in short requests, so a new reader is not queued
    behind it for the long query's duration; past [load] lock_timeout_s the load fails, the old child kept."""
    stack.put("d/2019-02-01/a.csv", csv("1,2019-02-01,x"))
    stack.put("d/2019-02-02/a.csv", csv("2,2019-02-02,y"))
    cls = make_task(partitioned=True)
    assert run_task(cls(date=D1)).status == SUCCESS and run_task(cls(date=D2)).status == SUCCESS
    stack.set_config("load", "lock_timeout_s", "5")
    long_query = psycopg2.connect(stack.pg.dsn)
    long_query.cursor().execute(f"SELECT count(*) FROM {stack.schema}.t")  # its transaction stays open
    outcome: list = []

    def reload() -> None:
        try:
            cls(date=D1, force=True).run()
        except Exception as exc:  # noqa: BLE001 - what the test reads
            outcome.append(exc)

    loader = threading.Thread(target=reload)
    loader.start()
    try:
        wait_for(lambda: stack.query("SELECT count(*) FROM pg_locks WHERE relation = %s::regclass AND NOT granted",
                                     (f"{stack.schema}.t",))[0][0] > 0, "the swap waiting for the parent's lock")
        with psycopg2.connect(stack.pg.dsn) as conn, conn.cursor() as cur:
            cur.execute("SET lock_timeout = '3s'")  # queued behind the swap's request until the long query ends: fails
            for _ in range(5):
                cur.execute(f"SELECT count(*) FROM {stack.schema}.t WHERE day = %s", (D2,))
                assert cur.fetchone() == (1,)
        conn.close()
    finally:
        loader.join(60)
        long_query.close()
    assert len(outcome) == 1 and "the swap waited" in str(outcome[0]) and "lock_timeout_s = 5" in str(outcome[0])
    assert rows(stack) == [(1, D1, "x"), (2, D2, "y")] and tables_like(stack, "t_p%_new") == []


def test_swap_with_data_checks_and_an_evolving_contract(stack, make_task):
    """The swap with the rest of the write: a data check runs on the new child before the swap (a failed one keeps
    the old child and its marker); under contract = "evolve" a column the files gained is added to the parent in
    the load's transaction and reaches the swapped-in child, older children NULL."""
    import luigi_pipelines as lp

    stack.put("d/2019-02-01/a.csv", csv("1,2019-02-01,x", "2,2019-02-01,y"))
    checked = make_task(partitioned=True, checks=(lp.unique("id"), lp.row_count(min=2)))
    assert run_task(checked(date=D1)).status == SUCCESS
    stack.put("d/2019-02-01/a.csv", csv("1,2019-02-01,new"))  # one row: row_count(min=2) fails
    assert run_task(checked(date=D1, force=True)).status == FAILED
    message = stack.query(f"SELECT message FROM {stack.marker_schema}.partition_failure")[0][0]
    assert "row_count" in message
    assert rows(stack) == [(1, D1, "x"), (2, D1, "y")]  # the old child stays
    assert children(stack) == ["t_p20190201"] and tables_like(stack, "t_p%_new") == []
    stack.put("d/2019-02-01/a.csv", csv("1,2019-02-01,n1", "2,2019-02-01,n2"))
    assert run_task(checked(date=D1, force=True)).status == SUCCESS
    checks = stack.query(f"SELECT checks FROM {stack.marker_schema}.partition_marker")[0][0]
    assert {c["check"] for c in checks} >= {"unique(id)"} and all(c["passed"] for c in checks)

    forget_process_state()
    stack.put("d/2019-02-02/a.csv", "id,day,v,w\n3,2019-02-02,z,9\n")
    wider = make_task(partitioned=True, contract="evolve", csv=CsvFormat(by_name=True),
                      columns=[("id", "bigint"), ("day", "date"), ("v", "text"), ("w", "int")])
    assert run_task(wider(date=D2)).status == SUCCESS
    assert stack.query(f"SELECT id, w FROM {stack.schema}.t ORDER BY 1") == [(1, None), (2, None), (3, 9)]
    assert children(stack) == ["t_p20190201", "t_p20190202"]
