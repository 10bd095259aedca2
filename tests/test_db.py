"""``luigi_pipelines.db`` against the real PostgreSQL, without luigi: settings objects in, effects out."""
from __future__ import annotations

import datetime
import io
import os

import psycopg2
import pytest

from luigi_pipelines import db
from luigi_pipelines import sql as q
from luigi_pipelines.errors import BadInputError, ConfigurationError, CopyAborted, LoadError
from luigi_pipelines.partitions import ScopedTable, TableName, lock_key, table_lock_key
from luigi_pipelines.settings import DatabaseSettings

pytestmark = pytest.mark.postgres

D1 = datetime.date(2019, 2, 1)
COLUMNS = q.columns_of([("id", "bigint"), ("day", "date"), ("v", "text")])


@pytest.fixture
def conn(pg_server, stack):
    settings = DatabaseSettings(dsn=pg_server.dsn)
    with db.connect(settings) as connection:
        yield connection


@pytest.fixture
def tables(conn, stack):
    target, marker = TableName(stack.schema, "t"), TableName(stack.marker_schema, "partition_marker")
    db.ensure_marker_table(conn, marker, TableName(stack.marker_schema, "rejected_rows"),
                           TableName(stack.marker_schema, "partition_failure"))
    db.ensure_table(conn, target, [q.create_table(target, COLUMNS, [q.Column("region", "text")])])
    return target, marker


def test_connect_kwargs_keep_the_users_options_and_add_keepalives(monkeypatch):
    monkeypatch.setenv("PGOPTIONS", "-c search_path=x")
    kwargs = db.connect_kwargs(DatabaseSettings(host="h", keepalives_idle=5, keepalives_interval=2, keepalives_count=4))
    assert kwargs["host"] == "h" and "port" not in kwargs  # unset values are left to libpq
    assert kwargs["options"].startswith("-c search_path=x ") and "-c tcp_user_timeout=13000" in kwargs["options"]
    assert kwargs["tcp_user_timeout"] == 13000
    from_dsn = db.connect_kwargs(DatabaseSettings(dsn="host=h options='-c work_mem=1MB'"))
    assert from_dsn["options"].startswith("-c work_mem=1MB ")


def test_a_malformed_dsn_is_reported_without_its_text():
    with pytest.raises(ConfigurationError) as caught, db.connect(DatabaseSettings(dsn="host=h password=s3cret x")):
        pass
    assert "s3cret" not in str(caught.value)


def test_completed_dates_without_a_marker_table_is_empty(conn, stack):
    missing = TableName(stack.marker_schema, "never_created")
    assert db.completed_dates(conn, missing, ScopedTable.of(TableName("s", "t")), [D1]) == {}


def test_a_partition_transaction_commits_once_or_not_at_all(conn, tables):
    target, marker = tables
    key = ScopedTable.of(target)
    statement = q.copy_from_stdin(target, COLUMNS, q.CsvFormat(header=False))
    with pytest.raises(RuntimeError), db.partition_transaction(conn, marker, key, D1) as tx:
        db.copy_stream(tx, statement, io.BytesIO(b"9,2019-02-01,gone\n"), "src", 1024)
        db.write_marker(tx, marker, "LoadT", "LoadT(2019-02-01)")
        raise RuntimeError("boom")
    assert db.completed_dates(conn, marker, key, [D1]) == {}
    with db.partition_transaction(conn, marker, key, D1) as tx:
        assert not tx.done
        rows = db.copy_stream(tx, statement, io.BytesIO(b"1,2019-02-01,a\n2,2019-02-01,b\n"), "src", 1024)
        tx.add({"key": "src"}, rows, 30)
        db.write_marker(tx, marker, "LoadT", "LoadT(2019-02-01)")
    assert db.completed_dates(conn, marker, key, [D1, D1 + datetime.timedelta(1)]) == {D1: "LoadT"}
    with db.partition_transaction(conn, marker, key, D1) as tx:
        assert tx.done and tx.previous["rows_loaded"] == 2 and tx.previous["source_objects"] == [{"key": "src"}]
        assert db.count_partition(tx, "day") == 2


def test_copy_errors_name_the_source_line_and_column(conn, tables):
    target, marker = tables
    statement = q.copy_from_stdin(target, COLUMNS, q.CsvFormat(header=False))
    with db.partition_transaction(conn, marker, ScopedTable.of(target), D1) as tx:
        outcome = db.copy_in_savepoint(tx, statement, io.BytesIO(b"1,2019-02-01,a\nx,2019-02-01,b\n"), "s3://b/k", 64)
        assert isinstance(outcome, BadInputError)
        assert str(outcome) == 's3://b/k line 2 column id: invalid input syntax for type bigint: "x"'
        assert (outcome.line, outcome.column) == (2, "id")
        assert db.count_partition(tx, "day") == 0  # the savepoint undid only that COPY

        class Broken:
            def read(self, size=-1):
                raise OSError("disk gone")

        with pytest.raises(CopyAborted, match="s3://b/k: COPY cancelled"):
            db.copy_stream(tx, statement, Broken(), "s3://b/k", 64)


@pytest.fixture
def holder(pg_server):
    """A second connection, in a transaction, to hold advisory locks a load then waits for."""
    with db.connect(DatabaseSettings(dsn=pg_server.dsn)) as other, other, other.cursor() as cur:
        yield cur


def test_a_lock_that_ran_out_says_whose_lock_it_was(conn, tables, holder):
    target, marker = tables
    key = ScopedTable.of(target, {"region": "eu"})
    holder.execute(q.advisory_xact_lock(), lock_key(key, D1))  # another load of the same partition
    with pytest.raises(LoadError) as e, db.describe_errors(key, D1, 1), db.partition_transaction(conn, marker, key, D1, 1):
        pass
    assert str(e.value) == (f"{key} {D1}: another load of this partition holds its lock, and [load] lock_timeout_s = 1 "
                            f"ran out: it is being loaded now; rerun later")
    holder.execute(q.advisory_xact_lock(), table_lock_key(key))  # a merge of another date of the same rows
    with pytest.raises(LoadError) as e, db.describe_errors(key, D1 + datetime.timedelta(1), 1), db.partition_transaction(
            conn, marker, key, D1 + datetime.timedelta(1), 1) as tx:
        db.lock_table(tx)
    assert str(e.value) == (f"{key.describe()} {tx.date}: another merge of {key.describe()} holds the table's lock, and "
                            f"[load] lock_timeout_s ran out: a merge of another date is running; rerun later")


def test_a_bad_value_keeps_postgresqls_detail_and_a_staged_insert_says_it_has_no_line(conn, tables):
    target, marker = tables
    with db.partition_transaction(conn, marker, ScopedTable.of(target), D1) as tx:
        stage = (q.Column("v", "jsonb"),)
        db.execute(tx, q.create_stage(stage))
        statement = q.copy_from_stdin(q.STAGE, stage, q.CsvFormat(header=False))
        outcome = db.attempt(tx, lambda: db.copy_stream(tx, statement, io.BytesIO(b'"{""a"": }"\n'), "s3://b/k", 64))
        assert isinstance(outcome, BadInputError) and (outcome.line, outcome.column) == (1, "v")
        assert outcome.reason == "invalid input syntax for type json" and outcome.detail == 'Expected JSON value, but found "}".'
        with pytest.raises(BadInputError) as e, db.translating("s3://b/k", db.BAD_DATA, note="in the INSERT"):
            db.execute(tx, q.sql.SQL("INSERT INTO {} (id) VALUES (%s)").format(q.table_ident(target)), ("x",))
        assert str(e.value) == 's3://b/k: invalid input syntax for type bigint: "x" (in the INSERT)'
        assert e.value.line is None


def test_scoped_partitions_delete_and_count_only_their_rows(conn, tables):
    target, marker = tables
    eu, us = ScopedTable.of(target, {"region": "eu"}), ScopedTable.of(target, {"region": "us"})
    statement = q.copy_from_stdin(target, COLUMNS, q.CsvFormat(header=False))
    for key, body in ((eu, b"1,2019-02-01,a\n2,2019-02-01,b\n"), (us, b"3,2019-02-01,c\n")):
        with db.partition_transaction(conn, marker, key, D1) as tx:
            db.fill_columns(tx, dict(key.scope))
            db.copy_stream(tx, statement, io.BytesIO(body), "src", 1024)
            db.write_marker(tx, marker, f"Load{key.scope[0][1]}", "id")
    with db.partition_transaction(conn, marker, us, D1) as tx:
        assert db.count_partition(tx, "day") == 1
        assert db.keys_of_date(tx, marker) == {eu: "Loadeu", us: "Loadus"}
        assert db.delete_partition(tx, "day") == 1
    with conn.cursor() as cur:
        cur.execute(q.sql.SQL("SELECT region, count(*) FROM {} GROUP BY 1 ORDER BY 1").format(q.table_ident(target)))
        assert cur.fetchall() == [("eu", 2)]
    conn.rollback()


def test_column_info_tells_a_filled_column_from_a_plain_and_a_generated_one(conn, tables, stack):
    target, _ = tables
    assert "luigi_pipelines.region" in db.column_info(conn, target, "region").default
    assert db.column_info(conn, target, "v") == db.ColumnInfo("", False)
    assert db.column_info(conn, target, "nope") is None
    stack.execute(f"ALTER TABLE {stack.schema}.t ADD COLUMN g date GENERATED ALWAYS AS (day + 1) STORED")
    assert db.column_info(conn, target, "g").generated


def test_check_time_zone(conn):
    assert db.check_time_zone(conn, "America/New_York") and db.check_time_zone(conn, "UTC")
    assert not db.check_time_zone(conn, "Mars/Olympus_Mons")


def test_concurrent_ensure_table_calls_all_succeed(pg_server, stack):
    import concurrent.futures

    target = TableName(stack.schema, "raced")

    def create(_):
        with db.connect(DatabaseSettings(dsn=pg_server.dsn)) as c:
            db.ensure_table(c, target, [q.create_table(target, COLUMNS)])
        return True

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        assert all(pool.map(create, range(16)))
    with psycopg2.connect(pg_server.dsn) as c, c.cursor() as cur:
        cur.execute("SELECT to_regclass(%s) IS NOT NULL", (str(target),))
        assert cur.fetchone() == (True,)
    c.close()


def test_an_old_marker_table_the_user_may_not_alter_gets_the_statement_for_its_owner(conn, stack, pg_server):
    marker, rejects = TableName(stack.marker_schema, "partition_marker"), TableName(stack.marker_schema, "rejected_rows")
    failures = TableName(stack.marker_schema, "partition_failure")
    role = f"lp_loader_{stack.marker_schema[5:]}"
    stack.execute(f"CREATE SCHEMA {stack.marker_schema}")
    with conn, conn.cursor() as cur:
        cur.execute(q.create_marker_table(marker))
        cur.execute(q.create_rejects_table(rejects))
        cur.execute(q.create_failures_table(failures))
        # as earlier releases made it
        cur.execute(f"ALTER TABLE {marker} DROP COLUMN load_id, DROP COLUMN skipped_keys, DROP COLUMN checks")
        cur.execute(f"CREATE ROLE {role} LOGIN")
        cur.execute(f"GRANT USAGE ON SCHEMA {stack.marker_schema} TO {role}")
        cur.execute(f"GRANT ALL ON ALL TABLES IN SCHEMA {stack.marker_schema} TO {role}")
    try:
        with db.connect(DatabaseSettings(dsn=pg_server.dsn, user=role)) as loader, pytest.raises(ConfigurationError) as e:
            db.ensure_marker_table(loader, marker, rejects, failures)
        assert str(e.value) == (f"the marker table {marker} predates load_id and this user may not add it: must be owner "
                                f"of table partition_marker: its owner "
                                f'runs once: ALTER TABLE "{marker.schema}"."partition_marker" ADD COLUMN IF NOT EXISTS '
                                f'"load_id" uuid')
        db.ensure_marker_table(conn, marker, rejects, failures)  # the owner (here) adds them
        assert db.column_info(conn, marker, "load_id") is not None
        assert db.column_info(conn, marker, "skipped_keys") is not None
        assert db.column_info(conn, marker, "checks") is not None
    finally:
        stack.execute(f"DROP OWNED BY {role}; DROP ROLE {role}")


# -- one reused connection per process (db.session) ------------------------------------------------------------


def _backend(conn: psycopg2.extensions.connection) -> int:
    with conn, conn.cursor() as cur:
        cur.execute("SELECT pg_backend_pid()")
        return int(cur.fetchone()[0])


def _wait_gone(stack, pid: int) -> None:
    """Until the backend ``pid`` has ended (a moment after pg_terminate_backend)."""
    from luigi_pipelines.devstack.local import wait_until
    wait_until(lambda: not stack.query("SELECT 1 FROM pg_stat_activity WHERE pid = %s", (pid,)), 10,
               f"backend {pid} to end")


def test_a_reused_connection_is_reset_between_uses(pg_server, stack):
    """What one use leaves in the session (an open transaction, a session setting, a temporary table, a session
    advisory lock) is gone when the next use gets the same connection."""
    settings = DatabaseSettings(dsn=pg_server.dsn)
    with db.session(settings) as first:
        pid = _backend(first)
        with first.cursor() as cur:
            cur.execute("CREATE TEMPORARY TABLE leftover (x int)")
            cur.execute("SELECT set_config('application_name', 'changed by a task', false)")
            cur.execute("SELECT pg_advisory_lock(4242)")
            cur.execute("SELECT 1")  # ... and the transaction is left open
    with db.session(settings) as second:
        assert second is first and second.info.transaction_status == psycopg2.extensions.TRANSACTION_STATUS_IDLE
        with second, second.cursor() as cur:
            cur.execute("SELECT pg_backend_pid(), to_regclass('pg_temp.leftover'), current_setting('application_name'),"
                        " (SELECT count(*) FROM pg_locks WHERE pid = pg_backend_pid() AND locktype = 'advisory')")
            assert cur.fetchone() == (pid, None, "luigi_pipelines", 0)
            cur.execute("SET LOCAL statement_timeout = '1s'")
        with second, second.cursor() as cur:
            cur.execute("SELECT current_setting('statement_timeout')")
            assert cur.fetchone()[0] == "0"


def test_a_use_that_raises_drops_the_connection_and_what_was_checked_on_it(pg_server):
    settings = DatabaseSettings(dsn=pg_server.dsn)
    with pytest.raises(ValueError), db.session(settings) as first:
        db.checks_of(first).add("a table exists")
        raise ValueError("a failed load")
    assert first.closed
    with db.session(settings) as second:
        assert second is not first and not db.checks_of(second)


def test_a_nested_use_gets_a_connection_of_its_own(pg_server):
    settings = DatabaseSettings(dsn=pg_server.dsn)
    with db.session(settings) as outer, db.session(settings) as inner:
        assert inner is not outer and _backend(inner) != _backend(outer)
    assert inner.closed and not outer.closed


def test_a_terminated_connection_is_replaced_on_the_next_use(pg_server, stack):
    settings = DatabaseSettings(dsn=pg_server.dsn)
    with db.session(settings) as first:
        pid = _backend(first)
    stack.execute("SELECT pg_terminate_backend(%s)", (pid,))
    _wait_gone(stack, pid)
    with db.session(settings) as second:
        assert second is not first and _backend(second) != pid


def test_a_forked_child_never_uses_or_ends_its_parents_connection(pg_server):
    """The child connects on its own; its copy of the parent's connection is closed without ending the
    parent's session (libpq's goodbye goes to /dev/null, not to the shared socket)."""
    settings = DatabaseSettings(dsn=pg_server.dsn)
    with db.session(settings) as parent:
        pid = _backend(parent)
    read, write = os.pipe()
    child = os.fork()
    if child == 0:  # the child: report its backend, then end as a normal process would, closing everything
        try:
            with db.session(settings) as conn:
                os.write(write, str(_backend(conn)).encode())
            db.close_sessions()
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read) as reader:
        child_pid = int(reader.read() or 0)
    assert os.waitpid(child, 0)[1] == 0
    assert child_pid and child_pid != pid
    with db.session(settings) as again:
        assert again is parent and _backend(again) == pid


GUARDED = q.columns_of([("id", "bigint"), ("day", "date"), ("region", "text"), ("hour", "smallint")])
CANDIDATES = [(day, region, hour) for day in ("2019-02-01", "2019-02-28", "2019-03-01", "2019-01-31", "")
              for region in ("us", "eu", "") for hour in ("13", "14", "")]  # "": NULL


@pytest.mark.parametrize("scope, stop", [({"region": "us", "hour": "13"}, None), ({}, datetime.date(2019, 3, 1))])
def test_the_partition_guard_refuses_exactly_the_rows_the_count_leaves_out(conn, tables, stack, scope, stop):
    """Row by row, a COPY under the guard fails where the count after an unguarded COPY finds the row outside."""
    target, marker = TableName(stack.schema, "g"), tables[1]
    db.ensure_table(conn, target, [q.create_table(target, GUARDED)])
    statement = q.copy_from_stdin(target, GUARDED, q.CsvFormat(header=False))
    with db.partition_transaction(conn, marker, ScopedTable.of(target, scope), D1, stop=stop) as tx:
        db.guard_copies(tx, "day")
        assert tx.guard is not None and tx.guard.columns == {"day", *scope}
        refused = []
        for n, row in enumerate(CANDIDATES):
            line = f"{n},{','.join(row)}\n".encode()
            guarded = db.attempt(tx, lambda line=line: db.copy_stream(tx, statement, io.BytesIO(line), "s3://b/k", 64,
                                                                      tx.guard.where), keep=False)
            counted = db.attempt(tx, lambda line=line: db.copy_stream(tx, statement, io.BytesIO(line), "s3://b/k", 64)
                                 and db.count_partition(tx, "day"), keep=False)
            assert isinstance(guarded, BadInputError) == (counted == 0), row
            refused += [str(guarded)] if isinstance(guarded, BadInputError) else []
    day = "is not the partition's date 2019-02-01" if stop is None else \
        "is outside the partition's dates [2019-02-01, 2019-03-01)"
    assert f"s3://b/k line 1: day 2019-03-01 {day}" in refused
    assert f"s3://b/k line 1: day NULL {day}" in refused
    if scope:
        assert len(refused) == len(CANDIDATES) - 1
        assert "s3://b/k line 1: region 'eu' is not the partition's region 'us'" in refused
        assert "s3://b/k line 1: region NULL is not the partition's region 'us'" in refused
        assert "s3://b/k line 1: hour '14' is not the partition's hour '13'" in refused
        assert "s3://b/k line 1: hour NULL is not the partition's hour '13'" in refused
    else:
        assert len(refused) == len(CANDIDATES) - 2 * 9  # 2019-02-01 and 2019-02-28, any region and hour
