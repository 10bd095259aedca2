"""Quarantine mode (max_bad_rows): good rows load, bad rows go to the rejects table, or the load fails whole."""
from __future__ import annotations

import datetime
import gzip
import io

import pytest
from luigi.execution_summary import LuigiStatusCode

from luigi_pipelines import BadInputError, CsvFormat
from luigi_pipelines.quarantine import LineFile, record_bounds
from tests.conftest import run_task

D1 = datetime.date(2019, 2, 1)


def rejects(stack) -> list[tuple]:
    return stack.query(
        f"SELECT s3_key, line_number, raw_line, error FROM {stack.marker_schema}.rejected_rows "
        "WHERE target_table = %s ORDER BY s3_key, line_number", (f"{stack.schema}.t",))


def ids(stack) -> list[int]:
    return [r[0] for r in stack.query(f"SELECT id FROM {stack.schema}.t ORDER BY id")]


MIXED = (
    "id,day,v\n"                      # 1
    "1,2019-02-01,a\n"                # 2
    "x2,2019-02-01,b\n"               # 3 bad: id not a number
    "3,2019-02-01,\"multi\nline\"\n"  # 4-5 good, spans two lines
    "4,2019-02-01\n"                  # 6 bad: missing column
    "5,2019-02-31,c\n"                # 7 bad: invalid date
    "6,2019-02-01,d,extra\n"          # 8 bad: extra column
    "7,2019-02-01,\"bad\nrecord\",z\n"  # 9-10 bad: extra column after a two-line field
    "8,2019-02-01,e\x00\n"            # 11 bad: NUL byte
    "9,2019-02-01,f\n"                # 12
)


@pytest.mark.postgres
@pytest.mark.s3
def test_good_rows_load_and_bad_rows_are_set_aside(stack, make_task):
    stack.put("d/2019-02-01/a.csv", MIXED)
    stack.put("d/2019-02-01/b.csv.gz", gzip.compress(b"id,day,v\n10,2019-02-01,g\nbad,2019-02-01,h\n"))
    task = make_task()(date=D1, max_bad_rows=10)
    assert run_task(task).status == LuigiStatusCode.SUCCESS
    assert ids(stack) == [1, 3, 9, 10]
    got = rejects(stack)
    assert [(k.rsplit("/", 1)[1], line) for k, line, _, _ in got] == [
        ("a.csv", 3), ("a.csv", 6), ("a.csv", 7), ("a.csv", 8), ("a.csv", 9), ("a.csv", 11), ("b.csv.gz", 3)]
    by_line = {line: (raw, err) for key, line, raw, err in got if key.endswith("a.csv")}
    assert by_line[3] == ("x2,2019-02-01,b", 'invalid input syntax for type bigint: "x2"')
    assert "missing data for column" in by_line[6][1]
    assert "date/time field value out of range" in by_line[7][1]
    assert by_line[9][0] == '7,2019-02-01,"bad\nrecord",z' and "extra data" in by_line[9][1]
    assert by_line[11][0] == "8,2019-02-01,e\\x00" and "0x00" in by_line[11][1]
    marker = stack.query(f"SELECT rows_loaded, rows_rejected, source_objects FROM {stack.marker_schema}.partition_marker")
    assert marker[0][:2] == (4, 7)
    assert [(s["rows"], s["rejected"]) for s in marker[0][2]] == [(3, 6), (1, 1)]


@pytest.mark.postgres
@pytest.mark.s3
def test_too_many_bad_rows_roll_back_everything(stack, make_task):
    stack.put("d/2019-02-01/a.csv", "id,day,v\n1,2019-02-01,old\n")
    cls = make_task()
    assert run_task(cls(date=D1)).status == LuigiStatusCode.SUCCESS
    before = stack.markers(f"{stack.schema}.t")
    stack.put("d/2019-02-01/a.csv", MIXED)
    with pytest.raises(BadInputError, match=r"a.csv: more than max_bad_rows=3 bad rows .* first in this object: line 3: "
                                            r"invalid input syntax for type bigint"):
        cls(date=D1, max_bad_rows=3, force=True).run()
    assert ids(stack) == [1]
    assert stack.markers(f"{stack.schema}.t") == before
    assert rejects(stack) == []
    assert stack.temp_files() == []


@pytest.mark.postgres
@pytest.mark.s3
def test_reload_replaces_old_rejects(stack, make_task):
    stack.put("d/2019-02-01/a.csv", MIXED)
    cls = make_task()
    assert run_task(cls(date=D1, max_bad_rows=10)).status == LuigiStatusCode.SUCCESS
    assert len(rejects(stack)) == 6
    stack.put("d/2019-02-01/a.csv", "id,day,v\n1,2019-02-01,fixed\n")
    assert run_task(cls(date=D1, force=True)).status == LuigiStatusCode.SUCCESS
    assert rejects(stack) == [] and ids(stack) == [1]


@pytest.mark.postgres
@pytest.mark.s3
def test_unterminated_quote_rejects_the_rest_of_the_object(stack, make_task):
    stack.put("d/2019-02-01/a.csv", 'id,day,v\n1,2019-02-01,a\n2,2019-02-01,"open\n3,2019-02-01,c\n')
    assert run_task(make_task()(date=D1, max_bad_rows=1)).status == LuigiStatusCode.SUCCESS
    assert ids(stack) == [1]
    [(key, line, raw, err)] = rejects(stack)
    assert line == 3 and raw == '2,2019-02-01,"open\n3,2019-02-01,c' and "unterminated CSV quoted field" in err


@pytest.mark.postgres
@pytest.mark.s3
def test_wrong_header_is_not_a_bad_row(stack, make_task):
    stack.put("d/2019-02-01/a.csv", "id,date,v\n1,2019-02-01,a\n")
    with pytest.raises(BadInputError, match=r"a.csv line 1: column name mismatch in header line"):
        make_task()(date=D1, max_bad_rows=10).run()


@pytest.mark.postgres
@pytest.mark.s3
def test_clean_data_in_quarantine_mode_loads_normally(stack, make_task):
    stack.put("d/2019-02-01/a.csv", "id,day,v\n1,2019-02-01,a\n2,2019-02-01,b\n")
    assert run_task(make_task()(date=D1, max_bad_rows=5)).status == LuigiStatusCode.SUCCESS
    assert ids(stack) == [1, 2] and rejects(stack) == []


@pytest.mark.postgres
@pytest.mark.s3
def test_bad_row_after_a_multiline_record_at_a_segment_start(stack, make_task):
    """PostgreSQL does not count newlines inside a quoted field before a stream's first line end;
    a segment that starts with such a record must still reject the right row."""
    body = 'id,day,v\nx,2019-02-01,a\n1,2019-02-01,"two\nlines"\n2,2019-02-01\n3,2019-02-01,c\n'
    stack.put("d/2019-02-01/a.csv", body)
    assert run_task(make_task()(date=D1, max_bad_rows=5)).status == LuigiStatusCode.SUCCESS
    assert ids(stack) == [1, 3]
    assert [(line, raw) for _, line, raw, _ in rejects(stack)] == [(2, "x,2019-02-01,a"), (5, "2,2019-02-01")]


@pytest.mark.postgres
@pytest.mark.s3
def test_many_bad_rows_across_chunks(stack, make_task, monkeypatch):
    """Small chunks force many segments; every good row loads once and every bad row is caught."""
    from luigi_pipelines import quarantine

    monkeypatch.setattr(quarantine.QuarantineCopy, "chunk_bytes", 200)
    lines = ["id,day,v"]
    for n in range(1, 301):
        lines.append(f"{'bad' if n % 37 == 0 else n},2019-02-01,\"row\n{n}\"")
    stack.put("d/2019-02-01/a.csv", "\n".join(lines) + "\n")
    assert run_task(make_task()(date=D1, max_bad_rows=10)).status == LuigiStatusCode.SUCCESS
    assert ids(stack) == [n for n in range(1, 301) if n % 37]
    assert [line for _, line, _, _ in rejects(stack)] == [2 * n for n in range(37, 301, 37)]


@pytest.mark.postgres
@pytest.mark.s3
@pytest.mark.parametrize("encoding, codec, text", [
    ("WIN1251", "cp1251", "Привет"), ("KOI8R", "koi8_r", "Привет"), ("EUC_JP", "euc_jp", "日本語"),
    ("win-1252", "cp1252", "€uro"), ("LATIN1", "latin-1", "café"),
])
def test_rejected_rows_keep_their_text_in_the_source_encoding(stack, make_task, encoding, codec, text):
    """The rejects table shows a bad row as it reads in the object's encoding (PostgreSQL's name for it)."""
    stack.put("d/2019-02-01/a.csv", f"id,day,v\n1,2019-02-01,{text}\n{text},2019-02-01,x\n".encode(codec))
    task = make_task(csv=CsvFormat(encoding=encoding))(date=D1, max_bad_rows=1)
    assert run_task(task).status == LuigiStatusCode.SUCCESS
    assert stack.query(f"SELECT v FROM {stack.schema}.t") == [(text,)]
    assert [(line, raw) for _, line, raw, _ in rejects(stack)] == [(3, f"{text},2019-02-01,x")]


def test_line_after_finds_the_next_line_start():
    lines = LineFile(io.BytesIO(b"aaaa\nbbbb\ncccc\n"))
    assert lines.line_after(1, 3) == 2 and lines.offset(2) == 5
    assert lines.line_after(1, 5) == 2  # the chunk ends exactly at a line end
    assert lines.line_after(1, 7) == 3
    assert lines.line_after(2, 100) is None


def test_line_file_offsets_are_sparse_and_exact():
    data = b"".join(b"line %d\n" % n for n in range(1, 10001))
    lines = LineFile(io.BytesIO(data))
    assert lines.offset(1) == 0
    assert lines.offset(9000) == data.index(b"line 9000\n")
    assert lines.offset(10001) == len(data) and lines.at_end(10001)
    assert lines.offset(10002) is None
    assert lines.offset(3) == data.index(b"line 3\n")
    assert len(lines._lines) < 10  # sparse: checkpoints, not every line
    assert lines.read_lines(2, 3) == b"line 2\nline 3\n"
    assert lines.segment(9999, None).read(100) == b"line 9999\nline 10000\n"


@pytest.mark.parametrize(
    "text, target, bounds",
    [
        (b'a\nb\nc\n', 2, (2, 2)),
        (b'a\n"b\nc"\nd\n', 3, (2, 3)),
        (b'a\n"b\nc"\nd\n', 4, (4, 4)),
        (b'"x""\ny"\nz\n', 1, (1, 2)),  # a doubled quote inside a quoted field
        (b'a\n"open\nrest\n', 2, (2, 3)),  # unterminated: the record runs to the end
    ],
)
def test_record_bounds(text, target, bounds):
    assert record_bounds(LineFile(io.BytesIO(text)), 1, target, b'"', b'"') == bounds


def test_record_bounds_with_backslash_escape():
    text = b'1,"a\\"\nb"\n2,c\n'  # \" is an escaped quote: the field spans lines 1-2
    assert record_bounds(LineFile(io.BytesIO(text)), 1, 1, b'"', b"\\") == (1, 2)


@pytest.mark.postgres
@pytest.mark.s3
def test_corrupt_gzip_after_a_bad_row_fails_clearly(stack, make_task):
    good = gzip.compress(b"id,day,v\nbad,2019-02-01,a\n" + b"".join(b"%d,2019-02-01,x\n" % n for n in range(50000)))
    stack.put("d/2019-02-01/a.csv.gz", good[: len(good) - 200])  # truncated
    with pytest.raises(BadInputError, match=r"a.csv.gz: corrupt or truncated gzip data"):
        make_task()(date=D1, max_bad_rows=5).run()
    assert stack.temp_files() == []
