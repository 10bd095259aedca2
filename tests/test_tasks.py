"""The load task against a real PostgreSQL and moto's S3 server: exactly-once, atomic, clean."""
from __future__ import annotations

import datetime
import functools
import gzip

import psycopg2
import psycopg2.extensions
import pytest
from luigi.execution_summary import LuigiStatusCode

import luigi_pipelines.db as db
from luigi_pipelines import BadInputError, CsvFormat, LoadError
from luigi_pipelines.config import database_settings, s3_settings
from tests.conftest import forget_process_state, run_task

pytestmark = [pytest.mark.postgres, pytest.mark.s3]
SUCCESS = LuigiStatusCode.SUCCESS

D1 = datetime.date(2019, 2, 1)


def csv(*rows: str, header: str = "id,day,v") -> str:
    return "\n".join([header, *rows]) + "\n"


class CountingCursor(psycopg2.extensions.cursor):
    """Counts statements and COPYs on real connections."""

    executed: list[str] = []
    copies = 0

    def execute(self, query, vars=None):  # noqa: A002 - psycopg2's own signature
        CountingCursor.executed.append(query.as_string(self) if hasattr(query, "as_string") else str(query))
        return super().execute(query, vars)

    def copy_expert(self, sql, file, size=8192):
        CountingCursor.copies += 1
        return super().copy_expert(sql, file, size)


@pytest.fixture
def counting(monkeypatch):
    """Count connections, statements and COPYs made by luigi_pipelines.db."""
    real_connect = psycopg2.connect
    stats = {"connections": 0}

    def connect(*args, **kwargs):
        stats["connections"] += 1
        return real_connect(*args, cursor_factory=CountingCursor, **kwargs)

    CountingCursor.executed = []
    CountingCursor.copies = 0
    monkeypatch.setattr(psycopg2, "connect", connect)  # luigi_pipelines.db.session calls psycopg2.connect
    stats["cursor"] = CountingCursor
    return stats


def test_first_load_exact_rows_and_marker(stack, make_task):
    stack.put("d/2019-02-01/a.csv", csv("1,2019-02-01,x", "2,2019-02-01,y"))
    task = make_task()(date=D1)
    assert run_task(task).status == SUCCESS
    assert stack.query(f"SELECT id, day, v FROM {stack.schema}.t ORDER BY id") == [(1, D1, "x"), (2, D1, "y")]
    marker = stack.markers(f"{stack.schema}.t")[D1]
    rows, size, sources, _ = marker
    assert rows == 2 and size == len(csv("1,2019-02-01,x", "2,2019-02-01,y"))
    assert [s["key"] for s in sources] == ["d/2019-02-01/a.csv"] and sources[0]["etag"] and sources[0]["rows"] == 2
    assert task.complete()



def test_a_new_process_checks_the_declared_types_in_one_statement(stack, make_task, counting):
    """A process's first load checks every declared type (``to_regtype``) with one statement, in one transaction,
    not one each: each is a round trip (three with its transaction) that every command pays."""
    stack.put("d/2019-02-01/a.csv", csv("1,2019-02-01,x"))
    assert run_task(make_task()(date=D1)).status == SUCCESS  # bigint, date, text
    assert sum("to_regtype" in s for s in counting["cursor"].executed) == 1
    assert stack.query(f"SELECT id, day, v FROM {stack.schema}.t") == [(1, D1, "x")]


def test_a_new_process_reads_each_tables_columns_once(stack, make_task, counting):
    """On tables made earlier, a process's first load reads the marker table's columns (to add those added
    since) in one catalog read, and the target table's in one: two reads of ``pg_attribute``, not one per
    column."""
    stack.put("d/2019-02-01/a.csv", csv("1,2019-02-01,x"))
    stack.put("d/2019-02-02/a.csv", csv("2,2019-02-02,y"))
    cls = make_task()
    assert run_task(cls(date=D1)).status == SUCCESS
    forget_process_state()  # what a new process starts with
    counting["cursor"].executed.clear()
    assert run_task(cls(date=datetime.date(2019, 2, 2))).status == SUCCESS
    assert sum("pg_catalog.pg_attribute" in s for s in counting["cursor"].executed) == 2
    assert len(stack.markers(f"{stack.schema}.t")) == 2

def test_rerun_is_a_noop(stack, make_task, counting):
    stack.put("d/2019-02-01/a.csv", csv("1,2019-02-01,x"))
    cls = make_task()
    assert run_task(cls(date=D1)).status == SUCCESS
    before = stack.markers(f"{stack.schema}.t")
    copies = counting["cursor"].copies
    assert copies == 1
    stack.put("d/2019-02-01/b.csv", csv("2,2019-02-01,late"))  # a rerun must not pick this up
    result = run_task(cls(date=D1))
    assert result.status == SUCCESS
    assert counting["cursor"].copies == copies  # no COPY
    assert stack.query(f"SELECT count(*) FROM {stack.schema}.t")[0][0] == 1
    assert stack.markers(f"{stack.schema}.t") == before


def test_loser_of_a_race_is_a_noop_without_download(stack, make_task, counting):
    """run() on a partition that completed meanwhile (the lock path) deletes and copies nothing."""
    stack.put("d/2019-02-01/a.csv", csv("1,2019-02-01,x"))
    cls = make_task()
    loser = cls(date=D1)  # scheduled while incomplete ...
    assert run_task(cls(date=D1)).status == SUCCESS  # ... then someone else finished it
    statements = len(counting["cursor"].executed)
    stack.s3_client.delete_object(Bucket=stack.bucket, Key="d/2019-02-01/a.csv")  # a download would fail now
    loser.run()
    new = counting["cursor"].executed[statements:]
    assert not any(s.startswith(("DELETE", "COPY", "INSERT")) for s in new)
    assert stack.query(f"SELECT count(*) FROM {stack.schema}.t")[0][0] == 1


def test_force_reload_replaces_atomically(stack, make_task):
    stack.put("d/2019-02-01/a.csv", csv("1,2019-02-01,old", "2,2019-02-01,old"))
    cls = make_task()
    assert run_task(cls(date=D1)).status == SUCCESS
    stack.put("d/2019-02-01/a.csv", csv("1,2019-02-01,new", "3,2019-02-01,new", "4,2019-02-01,new"))
    assert cls(date=D1, force=True).complete() is False
    assert run_task(cls(date=D1, force=True)).status == SUCCESS
    assert stack.query(f"SELECT id, v FROM {stack.schema}.t ORDER BY id") == [(1, "new"), (3, "new"), (4, "new")]
    assert stack.markers(f"{stack.schema}.t")[D1][0] == 3


def test_failure_after_delete_leaves_old_rows_and_marker(stack, make_task, monkeypatch):
    stack.put("d/2019-02-01/a.csv", csv("1,2019-02-01,old"))
    cls = make_task()
    assert run_task(cls(date=D1)).status == SUCCESS
    before = stack.markers(f"{stack.schema}.t")
    stack.put("d/2019-02-01/a.csv", csv("1,2019-02-01,new", "2,2019-02-01,new"))

    def boom(*args, **kwargs):
        raise RuntimeError("injected failure before commit")

    monkeypatch.setattr(db, "write_marker", boom)  # runs after the delete and the COPY
    with pytest.raises(RuntimeError, match="injected"):
        cls(date=D1, force=True).run()
    assert stack.query(f"SELECT id, v FROM {stack.schema}.t")[0] == (1, "old")
    assert stack.query(f"SELECT count(*) FROM {stack.schema}.t")[0][0] == 1
    assert stack.markers(f"{stack.schema}.t") == before
    assert stack.temp_files() == []


def test_multi_object_gzip_partition(stack, make_task):
    stack.put("d/2019-02-01/part-0.csv.gz", gzip.compress(csv("1,2019-02-01,a", "2,2019-02-01,b").encode()))
    stack.put("d/2019-02-01/part-1.csv", csv("3,2019-02-01,c"))
    stack.put("d/2019-02-01/part-2.csv.gz", gzip.compress(csv("4,2019-02-01,d").encode()))
    stack.put("d/2019-02-02/other-day.csv", csv("9,2019-02-02,z"))
    assert run_task(make_task()(date=D1)).status == SUCCESS
    assert [r[0] for r in stack.query(f"SELECT id FROM {stack.schema}.t ORDER BY id")] == [1, 2, 3, 4]
    sources = stack.markers(f"{stack.schema}.t")[D1][2]
    assert [(s["key"].rsplit("/", 1)[1], s["rows"]) for s in sources] == [
        ("part-0.csv.gz", 2), ("part-1.csv", 1), ("part-2.csv.gz", 1)]


def test_nulls_and_quoted_empty_strings(stack, make_task):
    stack.put("d/2019-02-01/a.csv", csv("1,2019-02-01,", '2,2019-02-01,""', "3,2019-02-01,x"))
    assert run_task(make_task()(date=D1)).status == SUCCESS
    assert stack.query(f"SELECT id, v FROM {stack.schema}.t ORDER BY id") == [(1, None), (2, ""), (3, "x")]


def test_custom_csv_options(stack, make_task):
    body = "1;2019-02-01;a\\N\n2;2019-02-01;NULL\n3;2019-02-01;'x;y'\n"
    cls = make_task(csv=CsvFormat(delimiter=";", header=False, quote="'", escape="'", null="NULL"))
    stack.put("d/2019-02-01/a.txt", body)
    assert run_task(cls(date=D1)).status == SUCCESS
    assert stack.query(f"SELECT id, v FROM {stack.schema}.t ORDER BY id") == [(1, "a\\N"), (2, None), (3, "x;y")]


def test_bulk_complete_is_one_query_for_3650_dates(stack, make_task, counting):
    cls = make_task()
    days = [datetime.date(2010, 1, 1) + datetime.timedelta(days=n) for n in range(3650)]
    # Mark every other date done directly, then ask about all 3,650 dates.
    cls(date=days[0]).prepare(psycopg2.connect(stack.pg.dsn))
    stack.execute(
        f"INSERT INTO {stack.marker_schema}.partition_marker (target_table, partition_date, task_family, task_id,"
        " rows_loaded, bytes_loaded, source_objects, started_at, finished_at, host)"
        " SELECT %s, d, 'LoadT', 'X', 0, 0, '[]', now(), now(), 'h' FROM unnest(%s::date[]) d", (f"{stack.schema}.t", days[::2]))
    counting["connections"] = 0
    counting["cursor"].executed = []
    done = cls.bulk_complete(days)
    assert done == days[::2]
    assert counting["connections"] == 1
    assert len(counting["cursor"].executed) == 1


def test_bulk_complete_without_marker_table_is_empty(stack, make_task):
    assert make_task().bulk_complete([D1, D1 + datetime.timedelta(days=1)]) == []


def test_temp_files_removed_after_success_and_failure(stack, make_task):
    stack.put("d/2019-02-01/a.csv", csv("1,2019-02-01,x"))
    stack.put("d/2019-02-02/a.csv", csv("1,2019-02-02,x"))
    stack.put("d/2019-02-02/b.csv", csv("2,2019-02-02,not-a-number-below", "x,2019-02-02,y"))
    cls = make_task()
    assert run_task(cls(date=D1)).status == SUCCESS
    assert stack.temp_files() == []
    with pytest.raises(LoadError, match=r"d/2019-02-02/b.csv line 3 column id"):
        cls(date=D1 + datetime.timedelta(days=1)).run()
    assert stack.temp_files() == []
    assert stack.query(f"SELECT count(*) FROM {stack.schema}.t WHERE day = '2019-02-02'")[0][0] == 0


def test_rows_of_another_date_are_refused(stack, make_task):
    stack.put("d/2019-02-01/a.csv", csv("1,2019-02-01,x", "2,2019-02-03,wrong-day"))
    with pytest.raises(BadInputError, match=r"^s3://\S+/d/2019-02-01/a.csv line 3: day 2019-02-03 is not the "
                                             r"partition's date 2019-02-01$") as caught:
        make_task()(date=D1).run()
    assert caught.value.line == 3
    assert stack.query(f"SELECT count(*) FROM {stack.schema}.t")[0][0] == 0


def test_a_row_without_a_date_is_refused_on_its_line(stack, make_task):
    stack.put("d/2019-02-01/a.csv", csv("1,2019-02-01,x", "2,,no-day", "3,2019-02-01,y"))
    with pytest.raises(BadInputError, match=r"^s3://\S+/d/2019-02-01/a.csv line 3: day NULL is not the partition's "
                                             r"date 2019-02-01$"):
        make_task()(date=D1).run()
    assert stack.query(f"SELECT count(*) FROM {stack.schema}.t")[0][0] == 0
    assert stack.markers(f"{stack.schema}.t") == {}


def test_a_copy_straight_into_the_table_is_not_counted_after(stack, make_task, monkeypatch):
    """The COPY refuses rows of another date as it reads them: no count of the partition's rows after it (a scan of
    pages the COPY's ring buffer left out of shared buffers); quarantine mode still counts."""
    counted = []
    real = db.count_partition
    monkeypatch.setattr(db, "count_partition", lambda tx, column: counted.append(column) or real(tx, column))
    stack.put("d/2019-02-01/a.csv", csv("1,2019-02-01,x", "2,2019-02-01,y"))
    cls = make_task()
    assert run_task(cls(date=D1)).status == SUCCESS
    assert counted == [] and stack.markers(f"{stack.schema}.t")[D1][0] == 2
    assert run_task(cls(date=D1, force=True, max_bad_rows=1)).status == SUCCESS
    assert counted == ["day"] and stack.markers(f"{stack.schema}.t")[D1][0] == 2


def test_a_row_trigger_that_moves_rows_to_another_date_is_caught_by_the_count(stack, make_task):
    """A BEFORE INSERT trigger changes a row after the COPY's guard has read it: on a table with row triggers the
    load counts the partition's rows after the COPY instead, and refuses what the trigger moved. (A connection notes
    a table found without triggers: one created later is seen by the next connection.)"""
    stack.put("d/2019-02-01/a.csv", csv("1,2019-02-01,x", "2,2019-02-01,move-me"))
    cls = make_task()
    assert run_task(cls(date=D1)).status == SUCCESS  # creates the table
    stack.execute(f"""CREATE FUNCTION {stack.schema}.shift() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN IF NEW.v = 'move-me' THEN NEW.day := NEW.day + 1; END IF; RETURN NEW; END $$""")
    stack.execute(f"CREATE TRIGGER shift BEFORE INSERT ON {stack.schema}.t FOR EACH ROW EXECUTE FUNCTION "
                  f"{stack.schema}.shift()")
    forget_process_state()  # as a new process: the first load's connection noted the table as without triggers
    with pytest.raises(BadInputError, match="1 of 2 rows copied from .* have day other than 2019-02-01"):
        cls(date=D1, force=True).run()
    assert stack.query(f"SELECT id, day FROM {stack.schema}.t ORDER BY id") == [(1, D1), (2, D1)]


def test_missing_objects_are_missing_external_data(stack, make_task):
    result = run_task(make_task()(date=D1))
    assert result.status == LuigiStatusCode.MISSING_EXT
    assert stack.markers(f"{stack.schema}.t") == {}


def test_empty_partition_ok_loads_an_empty_partition(stack, make_task):
    assert run_task(make_task(empty_partition_ok=True)(date=D1)).status == SUCCESS
    assert stack.markers(f"{stack.schema}.t")[D1][0] == 0


def test_concurrent_first_runs_create_tables_without_error(stack, make_task):
    """Many processes creating the marker and target tables at once all succeed."""
    import concurrent.futures

    cls = make_task()

    def prepare(_):
        with db.connect(database_settings()) as conn:
            cls(date=D1).prepare(conn)
        return True

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        assert all(pool.map(prepare, range(16)))


def test_stale_download_files_of_dead_processes_are_swept(stack, make_task):
    """kill -9 leaves a NamedTemporaryFile behind; the next load on the host removes it (and only it)."""
    import socket
    import subprocess
    import sys

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    host = socket.gethostname()
    stale = stack.temp_dir / f"luigi_pipelines-{host}-{int(dead.stdout)}-x1.part"
    other_host = stack.temp_dir / f"luigi_pipelines-elsewhere-{int(dead.stdout)}-x2.part"
    unrelated = stack.temp_dir / "notes.txt"
    for path in (stale, other_host, unrelated):
        path.write_bytes(b"left over")
    stack.put("d/2019-02-01/a.csv", csv("1,2019-02-01,x"))
    assert run_task(make_task()(date=D1)).status == SUCCESS
    assert stack.temp_files() == sorted([other_host, unrelated])


def test_failure_explanation_is_the_short_message(stack, make_task):
    stack.put("d/2019-02-01/a.csv", csv("1,2019-02-01," + "y" * 100, "x" * 1_000_000 + ",2019-02-01,v"))
    task = make_task()(date=D1)
    with pytest.raises(LoadError) as caught:
        task.run()
    explanation = task.on_failure(caught.value)
    lines = explanation.splitlines()
    assert lines[0] == (f"BadInputError: {stack.schema}.t 2019-02-01 not loaded; rolled back: nothing kept; the "
                        "partition is as before")
    assert lines[1] == f"  object:  s3://{stack.bucket}/d/2019-02-01/a.csv"
    assert lines[2] == "  where:   line 3, column id"
    assert lines[3].startswith('  reason:  invalid input syntax for type bigint: "xxxxx') and len(lines[3]) == 88
    assert lines[-3].endswith("xxx…")  # the 1 MB value, cut
    assert lines[-2:] == ["  to do:   fix or replace the object in S3 and rerun (with --force if the date was",
                          "           loaded before), or let max_bad_rows set bad rows aside"]
    assert len(explanation) < 2100 and max(len(line) for line in lines[1:]) <= 88


def test_shared_s3_client_follows_settings(stack):
    from luigi_pipelines.s3 import S3Client

    first = S3Client.shared(s3_settings())
    assert S3Client.shared(s3_settings()) is first
    stack.set_config("s3", "read_timeout", "7")
    changed = S3Client.shared(s3_settings())
    assert changed is not first and changed.settings.read_timeout == 7


def big_csv(n: int, day: str = "2019-02-01") -> str:
    return "id,day,v\n" + "".join(f"{i},{day},{'x' * 40}\n" for i in range(n))


def test_managed_download_mode_loads_multipart_objects(stack, make_task):
    """boto3's ranged GETs (the default against AWS) write out of order; the load is still exact."""
    stack.set_config("s3", "download_mode", "managed")
    stack.set_config("s3", "multipart_threshold_mb", "1")
    stack.set_config("s3", "multipart_chunksize_mb", "1")
    body = big_csv(60_000)
    assert len(body) > 3 * 2**20
    stack.put("d/2019-02-01/a.csv", body)
    assert run_task(make_task()(date=D1)).status == SUCCESS
    assert stack.query(f"SELECT count(*), count(DISTINCT id) FROM {stack.schema}.t")[0] == (60_000, 60_000)


@pytest.mark.parametrize("mode", ["single", "managed"])
def test_object_replaced_after_listing_fails_in_both_modes(stack, make_task, mode):
    from luigi_pipelines import SourceError

    stack.set_config("s3", "download_mode", mode)
    stack.set_config("s3", "multipart_threshold_mb", "1")
    stack.set_config("s3", "multipart_chunksize_mb", "1")
    stack.put("d/2019-02-01/a.csv", big_csv(30_000) + "1,2019-02-01,old\n")

    def replace_then_copy(self, tx, obj):
        stack.put(obj.key, big_csv(30_000) + "1,2019-02-01,new\n")  # same size: only the ETag tells

    with pytest.raises(SourceError, match="replaced after it was listed"):
        make_task(before_object=replace_then_copy)(date=D1).run()
    assert stack.markers(f"{stack.schema}.t") == {}


def test_versioned_bucket_records_version_ids(stack, make_task):
    stack.s3_client.put_bucket_versioning(Bucket=stack.bucket, VersioningConfiguration={"Status": "Enabled"})
    stack.put("d/2019-02-01/a.csv", csv("1,2019-02-01,x"))
    assert run_task(make_task()(date=D1)).status == SUCCESS
    version = stack.s3_client.head_object(Bucket=stack.bucket, Key="d/2019-02-01/a.csv")["VersionId"]
    assert stack.markers(f"{stack.schema}.t")[D1][2][0]["version_id"] == version


def test_a_folder_key_alone_is_missing_data(stack, make_task):
    stack.put("d/2019-02-01/", b"")  # what the AWS console's "Create folder" makes
    assert run_task(make_task()(date=D1)).status == LuigiStatusCode.MISSING_EXT


def test_server_options_of_the_user_are_kept(stack, monkeypatch):
    """Our keepalive options are added to PGOPTIONS (or the DSN's options), not put in their place."""
    monkeypatch.setenv("PGOPTIONS", "-c statement_timeout=4321")
    with db.connect(database_settings()) as conn, conn.cursor() as cur:
        cur.execute("SELECT current_setting('statement_timeout')")
        assert cur.fetchone() == ("4321ms",)
    options = db.connect_kwargs(database_settings())["options"]  # (a Unix socket shows no TCP settings, so read them here)
    assert options.startswith("-c statement_timeout=4321 ") and "-c tcp_keepalives_idle=30" in options


def test_ready_key_holds_a_date_until_the_producer_is_done(stack, make_task):
    cls = make_task(ready_key="_SUCCESS")
    stack.put("d/2019-02-01/a.csv", csv("1,2019-02-01,x"))
    assert run_task(cls(date=D1)).status == LuigiStatusCode.MISSING_EXT  # a file, but no _SUCCESS yet
    assert stack.markers(f"{stack.schema}.t") == {}
    stack.put("d/2019-02-01/b.csv", csv("2,2019-02-01,y"))
    stack.put("d/2019-02-01/_SUCCESS", b"")
    assert run_task(cls(date=D1)).status == SUCCESS
    assert [r[0] for r in stack.query(f"SELECT id FROM {stack.schema}.t ORDER BY id")] == [1, 2]
    keys = [s["key"] for s in stack.markers(f"{stack.schema}.t")[D1][2]]
    assert keys == ["d/2019-02-01/a.csv", "d/2019-02-01/b.csv"]  # the ready key itself is not data


def loaded_keys(stack) -> list[str]:
    return [s["key"] for s in stack.markers(f"{stack.schema}.t")[D1][2]]


def test_a_key_prefix_cut_inside_a_name_needs_keys(stack, make_task):
    from luigi_pipelines import ConfigurationError

    stack.put("logs/2019-02-01.csv", csv("1,2019-02-01,x"))
    stack.put("logs/2019-02-01_old.csv", csv("2,2019-02-01,old"))
    task = make_task(key_prefix="logs/{date:%Y-%m-%d}")(date=D1)
    with pytest.raises(ConfigurationError, match=r"key_prefix 'logs/\{date:%Y-%m-%d\}' gives 'logs/2019-02-01', "
                                                 r"which does not end at '/', so it also lists keys such as "
                                                 r"logs/2019-02-01_old.csv"):
        task.requires()
    assert run_task(task).status == LuigiStatusCode.SCHEDULING_FAILED
    assert stack.markers(f"{stack.schema}.t") == {}


def test_keys_take_the_date_s_files_not_its_prefix_siblings(stack, make_task):
    stack.put("logs/2019-02-01.csv", csv("1,2019-02-01,x"))
    stack.put("logs/2019-02-01_old.csv", csv("2,2019-02-01,old"))
    stack.put("logs/2019-02-01.csv.bak", csv("3,2019-02-01,bak"))
    stack.put("logs/2019-02-02.csv", csv("4,2019-02-02,next"))
    cls = make_task(key_prefix="logs/{date:%Y-%m-%d}", keys=(".csv", ".csv.gz"))
    assert run_task(cls(date=D1)).status == SUCCESS
    assert stack.query(f"SELECT id, v FROM {stack.schema}.t") == [(1, "x")]
    assert loaded_keys(stack) == ["logs/2019-02-01.csv"]


def test_the_existence_check_applies_the_same_keys(stack, make_task):
    """Only a sibling that keys does not take: the date's data is missing, as the listing would say."""
    stack.put("logs/2019-02-01_old.csv", csv("2,2019-02-01,old"))
    stack.put("d/2019-02-01/notes.txt", "not a csv")
    for cls in (make_task(key_prefix="logs/{date:%Y-%m-%d}", keys=(".csv",)), make_task(keys=("*.csv",))):
        assert run_task(cls(date=D1)).status == LuigiStatusCode.MISSING_EXT
    assert stack.markers(f"{stack.schema}.t") == {}


CONVENTIONAL = {  # what Hadoop/Spark writers leave beside the data, each of which would fail the load
    "_SUCCESS": b"",
    "_temporary/0/part-00001.csv": b"half written,",
    ".part-00000.csv.crc": b"\x00crc",
    "part-00000.csv.crc": b"\x00crc",
    "_metadata": b"\x01\x02",
}


def test_conventional_non_data_keys_are_skipped_and_logged(stack, make_task, caplog):
    import logging

    for key, body in CONVENTIONAL.items():
        stack.put("d/2019-02-01/" + key, body)
    stack.put("d/2019-02-01/part-00000.csv", csv("1,2019-02-01,x"))
    with caplog.at_level(logging.DEBUG, logger="luigi-interface.luigi_pipelines.s3"):
        assert run_task(make_task()(date=D1)).status == SUCCESS
    assert loaded_keys(stack) == ["d/2019-02-01/part-00000.csv"]
    messages = [r.getMessage() for r in caplog.records]
    prefix = f"s3://{stack.bucket}/d/2019-02-01/"
    assert f"{prefix}_temporary/0/part-00001.csv: not data, skipped: its name '_temporary' matches '_*'" in messages
    assert f"{prefix}part-00000.csv.crc: not data, skipped: its name 'part-00000.csv.crc' matches '*.crc'" in messages
    assert f"{prefix}: 5 listed keys are not data (folder markers, _*, .*, *.crc) and were skipped" in messages


def test_only_conventional_keys_is_missing_data_and_skip_keys_can_take_them(stack, make_task):
    stack.put("d/2019-02-01/_SUCCESS", b"")
    stack.put("d/2019-02-01/_temporary/0/_part.csv", csv("1,2019-02-01,x"))
    assert run_task(make_task()(date=D1)).status == LuigiStatusCode.MISSING_EXT
    assert run_task(make_task(skip_keys=("_SUCCESS",))(date=D1)).status == SUCCESS
    assert loaded_keys(stack) == ["d/2019-02-01/_temporary/0/_part.csv"]


# -- reload_changed: a loaded date whose S3 objects changed since --------------------------------------

def _change_sources(stack, change: str) -> list[int]:
    """Change D1's objects after its load (a.csv: ids 1, 2; b.csv: id 3); the ids a reload must give."""
    if change == "added":
        stack.put("d/2019-02-01/c.csv", csv("4,2019-02-01,late"))
        return [1, 2, 3, 4]
    if change == "replaced":  # same key, other bytes
        stack.put("d/2019-02-01/b.csv", csv("3,2019-02-01,fixed", "5,2019-02-01,fixed"))
        return [1, 2, 3, 5]
    stack.s3_client.delete_object(Bucket=stack.bucket, Key="d/2019-02-01/b.csv")
    return [1, 2]


def in_mode(cls, dates):
    """``bulk_complete`` in the mode, as ``RangeDaily --of-params '{"reload_changed": true}'`` calls it."""
    return cls.bulk_complete.__func__(functools.partial(cls, reload_changed=True), dates)


def _loaded_ids(stack) -> list[int]:
    return [r[0] for r in stack.query(f"SELECT id FROM {stack.schema}.t ORDER BY id")]


@pytest.mark.parametrize("change", ["added", "replaced", "removed"])
def test_changed_sources_are_a_noop_without_the_mode_and_reloaded_with_it(stack, make_task, counting, change):
    stack.put("d/2019-02-01/a.csv", csv("1,2019-02-01,x", "2,2019-02-01,y"))
    stack.put("d/2019-02-01/b.csv", csv("3,2019-02-01,z"))
    cls = make_task()
    assert run_task(cls(date=D1)).status == SUCCESS
    fresh = cls(date=D1, reload_changed=True)
    assert fresh.complete() and in_mode(cls, [D1]) == [D1]
    before, copies = stack.markers(f"{stack.schema}.t"), counting["cursor"].copies
    expected = _change_sources(stack, change)

    assert cls(date=D1).complete()  # without the mode: done, as before
    assert run_task(cls(date=D1)).status == SUCCESS
    assert counting["cursor"].copies == copies and _loaded_ids(stack) == [1, 2, 3]
    assert stack.markers(f"{stack.schema}.t") == before

    stale = cls(date=D1, reload_changed=True)
    assert not stale.complete()
    assert in_mode(cls, [D1]) == []
    assert run_task(stale).status == SUCCESS
    assert _loaded_ids(stack) == expected
    listed = stack.s3_client.list_objects_v2(Bucket=stack.bucket, Prefix="d/2019-02-01/")["Contents"]
    assert sorted((s["key"], s["size"], s["etag"]) for s in stack.markers(f"{stack.schema}.t")[D1][2]) == \
        sorted((o["Key"], o["Size"], o["ETag"].strip('"')) for o in listed)
    assert stack.markers(f"{stack.schema}.t")[D1][0] == len(expected)
    assert stale.complete()  # the new marker matches S3: fresh again


def test_a_fresh_partition_in_the_mode_downloads_nothing(stack, make_task, counting, monkeypatch):
    """Not stale: complete() and run() only list; no GET, no DELETE, no COPY."""
    from luigi_pipelines.s3 import S3Client

    stack.put("d/2019-02-01/a.csv", csv("1,2019-02-01,x"))
    cls = make_task()
    assert run_task(cls(date=D1)).status == SUCCESS
    downloads: list[str] = []
    monkeypatch.setattr(S3Client, "download", lambda self, obj, *a, **k: downloads.append(obj.key))
    statements = len(counting["cursor"].executed)
    task = cls(date=D1, reload_changed=True)
    assert task.complete()
    task.run()  # as if scheduled: the check under the lock finds it fresh
    new = counting["cursor"].executed[statements:]
    # the one DELETE is of failure records that the fresh check supersedes (none here), never of the table's rows
    assert [s for s in new if s.startswith(("DELETE", "COPY", "INSERT"))] == [
        s for s in new if s.startswith(f'DELETE FROM "{stack.marker_schema}"."partition_failure"')]
    assert downloads == []


def test_two_runs_that_both_saw_it_stale_reload_it_once(stack, make_task, counting):
    """The check is made again under the lock: the second run finds the first's new marker matching S3."""
    stack.put("d/2019-02-01/a.csv", csv("1,2019-02-01,x"))
    cls = make_task()
    assert run_task(cls(date=D1)).status == SUCCESS
    stack.put("d/2019-02-01/b.csv", csv("2,2019-02-01,late"))
    first, second = cls(date=D1, reload_changed=True), cls(date=D1, reload_changed=True, max_bad_rows=1)
    assert first is not second and not first.complete() and not second.complete()  # both scheduled it
    first.run()
    after_first = stack.markers(f"{stack.schema}.t")
    statements = len(counting["cursor"].executed)
    second.run()
    assert not any(s.startswith(("DELETE", "COPY", "INSERT")) for s in counting["cursor"].executed[statements:])
    assert stack.markers(f"{stack.schema}.t") == after_first and _loaded_ids(stack) == [1, 2]


# -- one connection per worker process, tables checked once on it ----------------------------------------------

D2, D3 = datetime.date(2019, 2, 2), datetime.date(2019, 2, 3)


def _put_dates(stack, *dates: datetime.date) -> None:
    for n, day in enumerate(dates):
        stack.put(f"d/{day}/a.csv", csv(f"{n},{day},x{n}"))


def _pooled_backend(stack) -> int:
    with db.session(database_settings()) as conn, conn, conn.cursor() as cur:
        cur.execute("SELECT pg_backend_pid()")
        return int(cur.fetchone()[0])


def test_loads_in_one_process_share_one_connection_and_check_the_tables_once(stack, make_task, counting):
    _put_dates(stack, D1, D2, D3)
    cls = make_task()

    def catalog_reads() -> int:
        return sum("pg_catalog" in s for s in counting["cursor"].executed)

    assert run_task(cls(date=D1)).status == SUCCESS
    first = catalog_reads()
    assert first >= 3  # the marker tables, the marker's load_id column, the target table
    for day in (D2, D3):
        assert run_task(cls(date=day)).status == SUCCESS
    assert counting["connections"] == 1 and catalog_reads() == first
    assert sorted(stack.markers(f"{stack.schema}.t")) == [D1, D2, D3]


def test_a_connection_terminated_between_loads_is_replaced_and_the_next_load_succeeds(stack, make_task):
    _put_dates(stack, D1, D2)
    cls = make_task()
    assert run_task(cls(date=D1)).status == SUCCESS
    pid = _pooled_backend(stack)
    stack.execute("SELECT pg_terminate_backend(%s)", (pid,))
    from tests.test_db import _wait_gone
    _wait_gone(stack, pid)
    assert run_task(cls(date=D2)).status == SUCCESS
    assert stack.query(f"SELECT id, day FROM {stack.schema}.t ORDER BY id") == [(0, D1), (1, D2)]
    assert _pooled_backend(stack) != pid


def test_a_table_dropped_between_loads_fails_the_next_load_loudly_and_the_one_after_creates_it(stack, make_task):
    """The table was checked on the reused connection; dropped behind its back, the next load does not write
    anywhere else or record a marker: it fails naming the table, and the retry checks and creates it again."""
    _put_dates(stack, D1, D2)
    cls = make_task()
    assert run_task(cls(date=D1)).status == SUCCESS
    stack.execute(f"DROP TABLE {stack.schema}.t")
    with pytest.raises(psycopg2.errors.UndefinedTable, match=f'"{stack.schema}.t" does not exist'):
        cls(date=D2).run()
    assert D2 not in stack.markers(f"{stack.schema}.t")
    assert run_task(cls(date=D2)).status == SUCCESS
    assert stack.query(f"SELECT id, day FROM {stack.schema}.t") == [(1, D2)]


def test_the_marker_table_dropped_between_loads_fails_the_next_load_and_the_one_after_creates_it(stack, make_task):
    _put_dates(stack, D1, D2)
    cls = make_task()
    assert run_task(cls(date=D1)).status == SUCCESS
    stack.execute(f"DROP SCHEMA {stack.marker_schema} CASCADE")
    with pytest.raises(psycopg2.errors.UndefinedTable, match="partition_marker"):
        cls(date=D2).run()
    assert stack.query(f"SELECT id, day FROM {stack.schema}.t") == [(0, D1)]  # D2's rows rolled back
    assert run_task(cls(date=D2)).status == SUCCESS
    assert sorted(stack.markers(f"{stack.schema}.t")) == [D2]


def test_a_filled_columns_default_removed_between_loads_is_refused_not_left_null(stack, make_task):
    """What each load fills through a column default is checked before every load, also on a reused
    connection: without its default the rows would get NULL dates."""
    import luigi_pipelines as lp

    for day in (D1, D2):
        stack.put(f"p/{day}/a.csv", "id,v\n1,a\n")
    cls = make_task(key_prefix="p/{date:%Y-%m-%d}/", columns=[("id", "bigint"), ("v", "text")],
                    date_from=lp.partition_date())
    assert run_task(cls(date=D1)).status == SUCCESS
    stack.execute(f"ALTER TABLE {stack.schema}.t ALTER COLUMN day DROP DEFAULT")
    with pytest.raises(lp.ConfigurationError, match="is filled by each load through its default"):
        cls(date=D2).run()
    assert stack.query(f"SELECT day FROM {stack.schema}.t") == [(D1,)]


def test_complete_right_after_bulk_complete_asks_nothing_more_and_a_load_forgets_the_answer(stack, make_task, counting):
    """luigi calls complete() for every date ``RangeDaily``'s bulk_complete just found not loaded (twice): those
    answers come from bulk_complete's query. Only "not loaded" is remembered, each answer is used once, and a
    load forgets it."""
    _put_dates(stack, D1)
    cls = make_task()
    assert cls.bulk_complete([D1, D2]) == []
    statements = len(counting["cursor"].executed)
    assert not cls(date=D1).complete() and not cls(date=D2).complete()
    assert len(counting["cursor"].executed) == statements
    assert not cls(date=D2).complete() and len(counting["cursor"].executed) == statements + 1  # used once
    assert cls.bulk_complete([D1, D2]) == []
    assert run_task(cls(date=D1)).status == SUCCESS
    assert cls(date=D1).complete() and not cls(date=D2).complete()
    assert cls.bulk_complete([D1, D2]) == [D1]


def test_a_task_reads_its_config_once_per_load_and_anew_for_the_next(stack, make_task):
    """luigi hands back the same instance for the same parameters: what one load read is not its next one's."""
    _put_dates(stack, D1)
    task = make_task()(date=D1)
    assert run_task(task).status == SUCCESS
    first = task.marker_table
    with task.reading_config_once():
        assert task.marker_table == first
        stack.set_config("load", "marker_schema", stack.marker_schema + "_b")
        assert task.marker_table == first  # within one load: as read first
    assert task.marker_table.schema == stack.marker_schema + "_b"
    stack.execute(f'DROP SCHEMA IF EXISTS "{stack.marker_schema}_b" CASCADE')


def test_what_a_load_leaves_in_its_session_is_gone_for_the_next_load_on_the_same_connection(stack, make_task):
    """A hook that sets a session setting, keeps a temporary table past commit and takes a session advisory
    lock: the next load in the process gets the same backend, without any of it."""
    _put_dates(stack, D1, D2)
    seen: list[tuple] = []

    def before_copy(self, tx):
        tx.cursor.execute("SELECT pg_backend_pid(), to_regclass('pg_temp.left_behind'), current_setting('work_mem'),"
                          " (SELECT count(*) FROM pg_locks WHERE pid = pg_backend_pid() AND locktype = 'advisory'"
                          " AND objid = 777)")
        seen.append(tx.cursor.fetchone())
        tx.cursor.execute("CREATE TEMPORARY TABLE IF NOT EXISTS left_behind (x int) ON COMMIT PRESERVE ROWS")
        tx.cursor.execute("SET work_mem = '7MB'")
        tx.cursor.execute("SELECT pg_advisory_lock(777)")

    cls = make_task(before_copy=before_copy)
    for day in (D1, D2):
        assert run_task(cls(date=day)).status == SUCCESS
    (pid1, *first), (pid2, *second) = seen
    assert pid1 == pid2 and first == second == [None, first[1], 0] and first[1] != "7MB"
    assert not stack.query("SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND objid = 777")
