"""``luigi-pipelines infer`` (issue 18, item 5): a class drafted from a sample of the files, which loads them.

The pure parts (value kinds, the CSV reader, the key's date) are held against PostgreSQL itself where it decides;
the command runs as a user runs it, against moto's S3 server, on the files the other tests load (the flight
records of ``test_layouts``, the demo's transactions and refunds, apache/parquet-testing's files), and the class
it prints is written into a module that the real ``luigi`` command loads; the rows must be the files'.
"""
from __future__ import annotations

import ast
import csv
import datetime
import decimal
import gzip
import io
import json
import os
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

import psycopg2
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from luigi_pipelines import drafts, infer
from luigi_pipelines.devstack import sample
from tests.conftest import ROOT
from tests.test_layouts import FLIGHT_DAYS, flights_csv

DATA = Path(__file__).parent / "data"
TYPE_OF_KIND = {"int": "bigint", "num": "numeric", "date": "date", "stamp": "timestamp", "stamptz": "timestamptz",
                "bool": "boolean", "json": "jsonb", "text": "text"}


# -- pure: kinds of values, held against PostgreSQL -----------------------------------------------------------------


@pytest.mark.parametrize(("text", "kind"), [
    ("1", "int"), ("-12", "int"), ("9223372036854775807", "int"), ("9223372036854775808", "num"), ("007", "text"),
    ("1.5", "num"), ("1e5", "num"), (".5", "num"), ("NaN", "text"), ("2019-02-01", "date"), ("2019-02-30", "text"),
    ("2019-02-01T10:00:00", "stamp"), ("2019-02-01 10:00:00.123Z", "stamptz"), ("2019-02-01T10:00+01:00", "stamptz"),
    ("2019-02-01T25:00:00", "text"), ("true", "bool"), ("T", "bool"), ('{"a": 1}', "json"), ("[1, NaN]", "text"),
    ("x", "text"), ("", "text"), ("1 ", "text"),
])
def test_the_kind_of_a_value(text, kind):
    assert infer.kind_of(text) == kind


@st.composite
def stamp_texts(draw: Any) -> str:
    """Dates and timestamps, valid and not: fields just past their ranges, offsets past PostgreSQL's limit."""
    number = st.integers
    if draw(st.booleans()):
        text = draw(st.dates()).isoformat()
    else:
        text = f"{draw(number(0, 9999)):04d}-{draw(number(0, 19)):02d}-{draw(number(0, 39)):02d}"
    if draw(st.booleans()):
        text += f"{draw(st.sampled_from('T '))}{draw(number(0, 29)):02d}:{draw(number(0, 69)):02d}"
        if draw(st.booleans()):
            text += f":{draw(number(0, 69)):02d}{draw(st.sampled_from(['', '.5', '.123456', '.1234567']))}"
        sign = draw(st.sampled_from(["", "Z", "+", "-"]))
        text += sign
        if sign in "+-" and sign:
            text += f"{draw(number(0, 19)):02d}{draw(st.sampled_from(['', ':', '']))}"
            text += f"{draw(number(0, 69)):02d}" if text[-1] == ":" or draw(st.booleans()) else ""
    return text


VALUE_TEXT = st.one_of(
    st.from_regex(r"\A[+-]?[0-9]{1,20}(\.[0-9]{0,4})?([eE][+-]?[0-9]{1,4})?\Z"),
    stamp_texts(),
    st.sampled_from(["t", "f", "yes", "No", "on", "OFF", "y", "1", "0", "{}", "[]", '{"a": [1, "x"]}', '"s"']),
    st.text(alphabet="0123456789-+:.eTZ tfyn{}[]\"", max_size=12),
)


@pytest.fixture(scope="module")
def pg_cursor(pg_server):
    conn = psycopg2.connect(pg_server.dsn)
    conn.autocommit = True
    with conn.cursor() as cur:
        yield cur
    conn.close()


@pytest.mark.postgres
@settings(max_examples=500, deadline=None)
@given(values=st.lists(VALUE_TEXT, min_size=1, max_size=4))
@example(values=[".5", "+.5", "5.", "-0", "1e-999", "-9223372036854775808"])
@example(values=["0001-01-01", "2019-02-01 23:59:59.999999+14:59", "2019-02-01T10:00:00-0330"])
def test_postgresql_accepts_every_value_as_the_type_drafted_for_its_column(pg_cursor, values):
    """Whatever type a column of these values is given, PostgreSQL's input function takes each of them."""
    column = infer.drafted(infer.Seen("c", list(values)))
    for value in values:
        pg_cursor.execute(f"SELECT %s::{column.type}", (value,))  # raises if PostgreSQL refuses the value


def test_a_column_takes_the_narrowest_type_every_value_fits():
    def type_of(*values: str | None) -> str:
        return infer.drafted(infer.Seen("c", list(values))).type

    assert type_of("1", "2", None) == "bigint"
    assert type_of("1", "2.5") == "numeric"
    assert type_of("2019-02-01", "2019-02-01 10:00") == "timestamp"
    assert type_of("2019-02-01", "2019-02-01 10:00Z") == "timestamptz"
    assert type_of("1", "x") == "text"
    assert type_of("1", "") == "text"  # an empty string (quoted, or under another NULL marker) is no number
    assert type_of(None, None) == "text"
    comment = infer.drafted(infer.Seen("c", ["01234", "2"])).comment
    assert "leading zeros" in comment


def test_csv_records_as_copy_reads_them():
    text = 'a,b,c\r\n1,"x, ""y""",\n\n2,"line\nbreak",""\n'
    records = list(infer.csv_records(io.StringIO(text, newline=""), ","))
    assert records == [[("a", False), ("b", False), ("c", False)],
                       [("1", False), ('x, "y"', True), ("", False)],
                       [("2", False), ("line\nbreak", True), ("", True)]]


def test_the_null_marker_is_the_one_that_types_the_most_columns():
    def sample_of(text: str) -> infer.CsvSample:
        return infer.csv_sample(list(infer.csv_records(io.StringIO(text, newline=""), ",")))

    na = sample_of("id,v,n\n1,NA,3\n2,b,NA\nNA,c,4\n")
    assert na.null == "NA" and [infer.drafted(s).type for s in na.seen] == ["bigint", "text", "bigint"]
    empty = sample_of('id,v\n1,""\n,b\n')
    assert empty.null == "" and [infer.drafted(s).type for s in empty.seen] == ["bigint", "text"]
    assert empty.seen[1].values == ["", "b"]  # a quoted empty field is an empty string, not NULL
    assert sample_of("1,2\n3,4\n").header is False


@pytest.mark.parametrize(("key", "prefix", "keys", "day"), [
    ("flights/2013/01/01/flights.csv", "flights/{date:%Y/%m/%d}/", (), datetime.date(2013, 1, 1)),
    ("events/dt=2019-01-03/hour=04/part-0.csv", "events/dt={date:%Y-%m-%d}/", (), datetime.date(2019, 1, 3)),
    ("x/year=2019/month=02/day=03/a.parquet", "x/year={date:%Y}/month={date:%m}/day={date:%d}/", (),
     datetime.date(2019, 2, 3)),
    ("logs/20190203.csv.gz", "logs/{date:%Y%m%d}", ("*.csv.gz",), datetime.date(2019, 2, 3)),
    ("a{b}/2019-02-03/c.csv", "a{{b}}/{date:%Y-%m-%d}/", (), datetime.date(2019, 2, 3)),
])
def test_the_date_in_a_key_gives_the_key_prefix(key, prefix, keys, day):
    found = drafts.key_date(key)
    assert found is not None and (found.key_prefix, found.keys, found.date) == (prefix, keys, day)
    assert found.key_prefix.format(date=day) == key[: len(found.key_prefix.format(date=day))]


def test_a_key_without_a_date():
    assert drafts.key_date("exports/part-00000000.csv") is None


# -- the command against moto's S3, and the class it prints loaded by luigi ----------------------------------------


def run_infer(stack, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "luigi_pipelines.cli", "infer", *args], env=stack.env(),
                          cwd=stack.temp_dir, capture_output=True, text=True, timeout=120)


def drafted_module(stack, tmp_path: Path, *args: str) -> tuple[str, str, list[tuple[str, str]]]:
    """Run ``infer``, write what it printed as a module; its name, its class and its columns."""
    out = run_infer(stack, *args)
    assert out.returncode == 0, out.stderr
    name = f"drafted_{tmp_path.name.replace('-', '_')}"
    (tmp_path / f"{name}.py").write_text(out.stdout)
    task = next(node for node in ast.parse(out.stdout).body if isinstance(node, ast.ClassDef))
    return name, task.name, printed_columns(out.stdout)


def printed_columns(text: str) -> list[tuple[str, str]]:
    task = next(node for node in ast.parse(text).body if isinstance(node, ast.ClassDef))
    return next(ast.literal_eval(n.value) for n in task.body if isinstance(n, ast.Assign)
                and getattr(n.targets[0], "id", "") == "columns")


def load(stack, tmp_path: Path, module: str, *args: str) -> None:
    env = {**stack.env(stack.write_config(tmp_path / "luigi.cfg")), "PYTHONPATH": f"{tmp_path}{os.pathsep}{ROOT}"}
    out = subprocess.run([sys.executable, "-m", "luigi", "--module", module, *args, "--local-scheduler"], cwd=ROOT,
                         env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr


def typed(value: str | None, column_type: str) -> Any:
    """A file's text as PostgreSQL returns it from a column of ``column_type`` (psycopg2's Python types)."""
    if value is None:
        return None
    if column_type in ("bigint", "integer", "smallint"):
        return int(value)
    if column_type.startswith("numeric"):
        return decimal.Decimal(value)
    if column_type == "date":
        return datetime.date.fromisoformat(value)
    if column_type in ("timestamptz", "timestamp"):
        return datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
    return value


def table_rows(stack, table: str, columns: list[tuple[str, str]], order: str) -> list[tuple]:
    names = ", ".join(f'"{name}"' for name, _ in columns)
    return stack.query(f"SELECT {names} FROM {table} ORDER BY {order}")


@pytest.mark.postgres
@pytest.mark.s3
def test_flight_records_drafted_and_loaded_as_delivered(stack, tmp_path):
    for day, count in FLIGHT_DAYS.items():
        stack.put(f"flights/{day:%Y/%m/%d}/flights.csv", flights_csv(day, count))
    table = f"{stack.schema}.flights"
    module, task, columns = drafted_module(stack, tmp_path, f"s3://{stack.bucket}/flights/", "--format", "csv",
                                           "--table", table)
    text = (tmp_path / f"{module}.py").read_text()
    assert task == "LoadFlights" and 'key_prefix = "flights/{date:%Y/%m/%d}/"' in text
    assert 'date_from = lp.make_date("year", "month", "day")' in text and 'lp.CsvFormat(null="NA")' in text
    assert dict(columns)["time_hour"] == "timestamptz" and dict(columns)["dep_delay"] == "bigint"
    load(stack, tmp_path, module, "RangeDaily", "--of", task, "--start", "2013-01-01", "--stop", "2013-01-04")
    expected = [tuple(typed(None if v == "NA" else v, t) for v, (_, t) in zip(row, columns, strict=True))
                for day, count in FLIGHT_DAYS.items() for row in list(csv.reader(io.StringIO(flights_csv(day, count))))[1:]]
    assert table_rows(stack, table, columns, "year, month, day, flight") == expected
    assert {d: m[0] for d, m in stack.markers(table).items()} == FLIGHT_DAYS


@pytest.mark.postgres
@pytest.mark.s3
def test_transactions_csv_and_gzip_drafted_and_loaded(stack, tmp_path):
    days = [datetime.date(2019, 2, 1), datetime.date(2019, 2, 2)]
    objects = {k: v for day in days for k, v in sample.day_objects(day, rows=300, parts=2).items()}
    for key, body in objects.items():
        stack.put(key, body)
    table = f"{stack.schema}.transaction"
    gz = run_infer(stack, f"s3://{stack.bucket}/transactions/2019-02-01/part-0001.csv.gz", "--format", "csv")
    module, task, columns = drafted_module(stack, tmp_path, f"s3://{stack.bucket}/transactions/", "--format", "csv",
                                           "--table", table)
    assert gz.returncode == 0 and printed_columns(gz.stdout) == columns  # the gzipped object, read the same
    assert columns == [("id", "bigint"), ("txn_date", "date"), ("account", "text"), ("amount", "numeric"),
                       ("currency", "text"), ("created_at", "timestamptz"), ("note", "text")]
    assert 'date_column = "txn_date"' in (tmp_path / f"{module}.py").read_text()
    load(stack, tmp_path, module, "RangeDaily", "--of", task, "--start", "2019-02-01", "--stop", "2019-02-03")
    expected = sorted(
        tuple(typed(v if v != "" else None, t) for v, (_, t) in zip(row, columns, strict=True))
        for key, body in objects.items()
        for row in list(csv.reader(io.StringIO((gzip.decompress(body) if key.endswith(".gz") else body).decode())))[1:])
    assert table_rows(stack, table, columns, "id") == expected


@pytest.mark.postgres
@pytest.mark.s3
def test_refunds_json_lines_drafted_and_loaded(stack, tmp_path):
    days = [datetime.date(2019, 2, 1), datetime.date(2019, 2, 2)]
    objects = {k: v for day in days for k, v in sample.refund_objects(day, rows=200).items()}
    for key, body in objects.items():
        stack.put(key, body)
    table = f"{stack.schema}.refund"
    module, task, columns = drafted_module(stack, tmp_path, f"s3://{stack.bucket}/refunds/", "--format", "jsonl",
                                           "--table", table)
    assert dict(columns) == {"id": "bigint", "txn_id": "bigint", "refunded_at": "timestamptz", "amount": "numeric",
                             "channel": "jsonb", "reason": "text", "trace": "text"}
    text = (tmp_path / f"{module}.py").read_text()
    assert "decoder = lp.JsonLinesDecoder()" in text and "date_from = lp.partition_date()" in text
    load(stack, tmp_path, module, "RangeDaily", "--of", task, "--start", "2019-02-01", "--stop", "2019-02-03")
    lines = [json.loads(line) for body in objects.values() for line in gzip.decompress(body).decode().splitlines()]
    expected = sorted((tuple(line.get(name) if t in ("jsonb", "text") else typed(line.get(name), t) for name, t in columns)
                       for line in lines), key=lambda row: row[[name for name, _ in columns].index("id")])
    assert table_rows(stack, table, columns, "id") == expected
    assert stack.query(f"SELECT date, count(*) FROM {table} GROUP BY 1 ORDER BY 1") == [(d, 200) for d in days]


PARQUET = [DATA / "parquet-testing-shapes" / name for name in
           ("alltypes_plain.parquet", "binary.parquet", "nullable.impala.parquet", "nested_maps.snappy.parquet")] + [
    DATA / "parquet-testing" / "datapage_v1-snappy-compressed-checksum.parquet"]


def comparable(value: Any, column_type: str) -> Any:
    if column_type == "jsonb":
        return value is None  # the nested values' JSON is test_parquet's; here: NULL where the file has null
    if column_type == "real" and value is not None:
        return struct.unpack("f", struct.pack("f", value))[0]
    if column_type == "text" and isinstance(value, bytes):
        return value.decode()
    if isinstance(value, memoryview):
        return bytes(value)
    return value


@pytest.mark.postgres
@pytest.mark.s3
@pytest.mark.parametrize("path", PARQUET, ids=[p.name for p in PARQUET])
def test_parquet_testing_files_drafted_and_loaded(stack, tmp_path, path):
    stack.put(f"d/2019-02-01/{path.name}", path.read_bytes())
    table = f"{stack.schema}.t"
    module, task, columns = drafted_module(stack, tmp_path, f"s3://{stack.bucket}/d/", "--format", "parquet",
                                           "--table", table)
    load(stack, tmp_path, module, task, "--date", "2019-02-01")
    file = pq.read_table(path, columns=[name for name, _ in columns]).to_pylist()
    expected = sorted((tuple(comparable(row[n], t) for n, t in columns) for row in file), key=repr)
    rows = [tuple(comparable(v, t) for v, (_, t) in zip(row, columns, strict=True))
            for row in table_rows(stack, table, columns, "1")]
    assert sorted(rows, key=repr) == expected and len(rows) == pq.ParquetFile(path).metadata.num_rows


# -- streaming, and what the command says when it cannot ---------------------------------------------------------


def _fetched(stdout: str) -> tuple[int, int]:
    words = stdout.splitlines()[1].split("; ")[1].split()  # "# (N rows sampled; A bytes read of its B). ..."
    return int(words[0].replace(",", "")), int(words[5].rstrip(").").replace(",", ""))


@pytest.mark.s3
def test_a_sample_reads_the_first_lines_and_a_parquet_footer_and_first_batch_only(stack):
    stack.put("big/2019-02-01/a.csv", "id,v\n" + "".join(f"{n},value {n}\n" for n in range(400_000)))
    out = run_infer(stack, f"s3://{stack.bucket}/big/", "--format", "csv", "--sample-lines", "100")
    assert out.returncode == 0, out.stderr
    fetched, size = _fetched(out.stdout)
    assert "100 rows sampled" in out.stdout and fetched <= 256 * 1024 < size
    table = pa.table({"id": pa.array(range(600_000), pa.int64()), "x": pa.array([n * 7919 % 1_000_003 for n in range(600_000)])})
    buffer = io.BytesIO()
    pq.write_table(table, buffer, row_group_size=200_000, compression="none")
    stack.put("big/2019-02-01/b.parquet", buffer.getvalue())
    out = run_infer(stack, f"s3://{stack.bucket}/big/2019-02-01/b", "--format", "parquet", "--sample-lines", "10")
    assert out.returncode == 0, out.stderr
    fetched, size = _fetched(out.stdout)
    assert "10 rows sampled" in out.stdout and fetched < size / 2, (fetched, size)


@pytest.mark.s3
def test_a_url_that_names_nothing_or_not_the_format_is_one_line_and_exit_2(stack):
    stack.put("d/2019-02-01/a.csv", "id,v\n1,a\n")
    stack.put("e/2019-02-01/a.csv", "\n")
    for args, message in [
        (("http://x/y", "--format", "csv"), "'http://x/y' is not an S3 URL"),
        ((f"s3://{stack.bucket}/nothing/", "--format", "csv"), f"s3://{stack.bucket}/nothing/: no object there"),
        (("s3://no-such-bucket-here/d/", "--format", "csv"), "s3://no-such-bucket-here/: no such bucket"),
        ((f"s3://{stack.bucket}/d/", "--format", "parquet"), "a.csv cannot be read as Parquet (--format parquet)"),
        ((f"s3://{stack.bucket}/d/", "--format", "jsonl"), "a.csv cannot be read as JSON lines (--format jsonl): line 1"),
        ((f"s3://{stack.bucket}/e/", "--format", "csv"), "e/2019-02-01/a.csv cannot be read as CSV (--format csv): no records"),
    ]:
        out = run_infer(stack, *args)
        assert (out.returncode, out.stdout) == (2, ""), out.stderr
        assert out.stderr.startswith("luigi-pipelines infer: ") and message in out.stderr
        assert out.stderr.endswith(": exit 2\n") and out.stderr.count("\n") == 1


@pytest.mark.s3
def test_s3_that_cannot_be_asked_is_exit_35(stack):
    out = run_infer(stack, f"s3://{stack.bucket}/d/", "--format", "csv", "--endpoint-url", "http://127.0.0.1:9")
    assert out.returncode == 35 and out.stderr.count("\n") == 1, out.stderr
    assert "cannot list objects" in out.stderr
