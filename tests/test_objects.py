"""The per-object pipeline (``luigi_pipelines.objects``): what each object contributes, the hooks, and the
checks that COPY took everything an object holds, against the real PostgreSQL and moto's S3 server."""
from __future__ import annotations

import datetime
import gzip
import io

import pytest
from luigi.execution_summary import LuigiStatusCode

from luigi_pipelines import LoadError
from luigi_pipelines.files import EndMarkerGuard
from tests.conftest import run_task

pytestmark = [pytest.mark.postgres, pytest.mark.s3]

D1 = datetime.date(2019, 2, 1)
SUCCESS = LuigiStatusCode.SUCCESS
MARKER_REPRO = b"id,day,v\n4,2019-02-01,d\n\\.\n5,2019-02-01,e\n6,2019-02-01,f\n"


def server_version(stack) -> int:
    return int(stack.query("SHOW server_version_num")[0][0])


def rows(stack, table: str = "t") -> list[tuple]:
    return stack.query(f"SELECT * FROM {stack.schema}.{table} ORDER BY 1")


def test_a_backslash_dot_line_is_data_in_a_one_column_table(pg_server):
    """PostgreSQL 18 reads a line "\\." as the value \\.; before 18 it ended the data. Now: data on every version."""
    import psycopg2

    with psycopg2.connect(pg_server.dsn) as conn, conn.cursor() as cur:
        cur.execute("CREATE TEMP TABLE one (v text)")
        cur.copy_expert("COPY one (v) FROM STDIN WITH (FORMAT csv, HEADER true)",
                        EndMarkerGuard(io.BytesIO(b"v\nfirst\n\\.\nlast\n")))
        cur.execute("SELECT v FROM one")
        assert [r[0] for r in cur.fetchall()] == ["first", "\\.", "last"]
    conn.close()


def test_backslash_dot_line_in_quarantine_mode_is_one_reject(stack, make_task):
    """The issue's repro: 1 row loaded before; now the \\. line is a bad row and the rows after it load."""
    stack.put("d/2019-02-01/b.csv", MARKER_REPRO)
    assert run_task(make_task()(date=D1, max_bad_rows=1)).status == SUCCESS
    assert [r[0] for r in rows(stack)] == [4, 5, 6]
    rejected = stack.query(f"SELECT line_number, raw_line FROM {stack.marker_schema}.rejected_rows")
    assert rejected == [(3, "\\.")]
    assert stack.markers(f"{stack.schema}.t")[D1][0] == 3


def test_quoted_backslash_dot_inside_a_multiline_field_keeps_its_value(stack, make_task):
    body = b'id,day,v\n1,2019-02-01,"two\n\\.\nlines"\n2,2019-02-01,b\n'
    stack.put("d/2019-02-01/a.csv", body)
    assert run_task(make_task()(date=D1)).status == SUCCESS
    assert [r[2] for r in rows(stack)] == ["two\n\\.\nlines", "b"]


def test_a_copy_that_ends_before_the_object_does_fails(stack, make_task):
    """Defence in depth: whatever ends COPY early, the load fails and nothing is kept."""
    stack.put("d/2019-02-01/a.csv", b"id,day,v\n" + b"".join(b"%d,2019-02-01,x\n" % n for n in range(150_000)))

    class FirstReadOnly:  # hands COPY the whole lines of its first read, then says "end"
        def __init__(self, stream):
            self.stream, self.calls = stream, 0

        def read(self, size=-1):
            self.calls += 1
            data = self.stream.read(size) if self.calls == 1 else b""
            return data[: data.rfind(b"\n") + 1]

    cls = make_task(source_stream=lambda self, obj, stream: FirstReadOnly(stream))
    with pytest.raises(LoadError, match=r"a\.csv: COPY ended before the end of the object"):
        cls(date=D1).run()
    assert stack.markers(f"{stack.schema}.t") == {}


def test_a_server_side_early_end_is_caught_by_the_line_count(stack, make_task, monkeypatch):
    """Without the \\. guard, PostgreSQL before 18 stops at the line and reports 1 row: the count check fails it."""
    monkeypatch.setattr(EndMarkerGuard, "_quote", lambda self, data, pattern: data)
    stack.put("d/2019-02-01/b.csv", MARKER_REPRO)
    with pytest.raises(LoadError) as caught:
        make_task()(date=D1).run()
    if server_version(stack) < 180000:
        assert "b.csv: COPY took 1 rows but the object holds 4 data lines" in str(caught.value)
    else:  # PostgreSQL 18 reads the line as data itself
        assert "b.csv line 3" in str(caught.value)
    assert stack.markers(f"{stack.schema}.t") == {}


@pytest.mark.parametrize("body", [gzip.compress(b""), b"\xef\xbb\xbf", b""], ids=["empty-gzip", "bom-only", "0-bytes"])
def test_objects_without_data_after_decoding_add_no_rows(stack, make_task, body, caplog):
    key = "d/2019-02-01/b.csv.gz" if body.startswith(b"\x1f\x8b") else "d/2019-02-01/b.csv"
    stack.put("d/2019-02-01/a.csv", b"id,day,v\n1,2019-02-01,x\n")
    stack.put(key, body)
    assert run_task(make_task()(date=D1)).status == SUCCESS
    assert [r[0] for r in rows(stack)] == [1]
    sources = stack.markers(f"{stack.schema}.t")[D1][2]
    assert [(s["key"], s["rows"]) for s in sources] == [("d/2019-02-01/a.csv", 1), (key, 0)]
    assert "it adds no rows" in caplog.text


def test_each_object_is_accounted_once_in_the_marker(stack, make_task):
    stack.put("d/2019-02-01/a.csv", b"id,day,v\n1,2019-02-01,x\n2,2019-02-01,y\n")
    stack.put("d/2019-02-01/b.csv.gz", gzip.compress(b"id,day,v\n3,2019-02-01,z\nbad,2019-02-01,w\n"))
    assert run_task(make_task()(date=D1, max_bad_rows=1)).status == SUCCESS
    rows_loaded, bytes_loaded, sources, _ = stack.markers(f"{stack.schema}.t")[D1]
    assert [(s["key"], s["rows"], s["rejected"]) for s in sources] == [
        ("d/2019-02-01/a.csv", 2, 0), ("d/2019-02-01/b.csv.gz", 1, 1)]
    assert rows_loaded == 3 and bytes_loaded == sum(s["size"] for s in sources)
    assert all(s["download_s"] >= 0 and s["copy_s"] > 0 and s["etag"] for s in sources)


def test_hooks_run_in_order_inside_the_transaction(stack, make_task):
    calls: list[str] = []

    def note(name):
        def hook(self, *args):
            tx = args[0] if args and hasattr(args[0], "cursor") else None
            if tx is not None:
                tx.cursor.execute("SELECT txid_current_if_assigned() IS NOT NULL")  # inside the open transaction
            calls.append(name if not args or tx is not None else f"{name}:{args[0].key.rsplit('/', 1)[1]}")
        return hook

    def source_stream(self, obj, stream):
        calls.append(f"source_stream:{obj.key.rsplit('/', 1)[1]}")
        return stream

    stack.put("d/2019-02-01/a.csv", b"id,day,v\n1,2019-02-01,x\n")
    stack.put("d/2019-02-01/b.csv", b"id,day,v\n2,2019-02-01,y\n")
    cls = make_task(before_copy=note("before_copy"), before_object=lambda self, tx, obj: calls.append(
        f"before_object:{obj.key.rsplit('/', 1)[1]}"), source_stream=source_stream,
        after_object=lambda self, tx, record: calls.append(f"after_object:{record.rows}"),
        after_copy=note("after_copy"), before_commit=note("before_commit"))
    assert run_task(cls(date=D1)).status == SUCCESS
    assert calls == ["before_copy", "before_object:a.csv", "source_stream:a.csv", "after_object:1",
                     "before_object:b.csv", "source_stream:b.csv", "after_object:1", "after_copy", "before_commit"]


def test_raising_in_before_commit_rolls_everything_back(stack, make_task):
    stack.put("d/2019-02-01/a.csv", b"id,day,v\n1,2019-02-01,x\n")

    def refuse(self, tx):
        raise LoadError("refused by a check")

    with pytest.raises(LoadError, match="refused by a check"):
        make_task(before_commit=refuse)(date=D1).run()
    assert stack.markers(f"{stack.schema}.t") == {} and rows(stack) == []


@pytest.mark.parametrize("size", [1, 2, 3, 5, 64, -1])
def test_end_marker_guard_quotes_only_whole_backslash_dot_lines(size):
    cases = {
        b"a\n\\.\nb\n": b'a\n"\\."\nb\n',
        b"\\.\n": b'"\\."\n',
        b"a\n\\.": b'a\n"\\."',
        b"a\n\\.\r\nb": b'a\n"\\."\r\nb',
        b"x\n\\.\n\\.\n": b'x\n"\\."\n"\\."\n',
        b"a\\.\nb\\.c\n\\.x\n": b"a\\.\nb\\.c\n\\.x\n",
        b"no marker at all\n": b"no marker at all\n",
    }
    for data, expected in cases.items():
        guard, out = EndMarkerGuard(io.BytesIO(data)), b""
        while chunk := guard.read(size):
            out += chunk
        assert out == expected, (data, size)


@pytest.mark.parametrize("body", [
    b"id,day,v\r1,2019-02-01,x\r2,2019-02-01,y\r",      # old Mac line ends
    b"id,day,v\r\n1,2019-02-01,x\r\n2,2019-02-01,y",    # CRLF, no final line end
    b"id,day,v\n1,2019-02-01,x\n2,2019-02-01,y\n",
], ids=["cr", "crlf-unterminated", "lf"])
def test_the_line_count_check_agrees_with_every_line_ending(stack, make_task, body):
    stack.put("d/2019-02-01/a.csv", body)
    assert run_task(make_task()(date=D1)).status == SUCCESS
    assert [r[0] for r in rows(stack)] == [1, 2]
