"""The pure layers (partitions, sql, errors, sample) without any connection or client."""
import datetime
import subprocess
import sys

import pytest
from psycopg2 import sql

from luigi_pipelines import errors, partitions
from luigi_pipelines import sql as q
from luigi_pipelines.partitions import TableName


def test_pure_modules_import_no_effects():
    code = (
        "import sys; import luigi_pipelines.partitions, luigi_pipelines.sql, luigi_pipelines.errors, "
        "luigi_pipelines.sample; "
        "print(','.join(m for m in ('boto3', 'botocore', 'luigi') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == ""


def test_key_prefix_renders_date():
    assert partitions.key_prefix("transactions/{date:%Y-%m-%d}/", datetime.date(2019, 2, 1)) == "transactions/2019-02-01/"
    assert partitions.key_prefix("x/{date:%Y/%m/%d}/", datetime.date(2019, 2, 1)) == "x/2019/02/01/"


def test_lock_key_is_int4_and_distinguishes_dates_and_tables():
    t = TableName("public", "transaction")
    k1 = partitions.lock_key(t, datetime.date(2019, 2, 1))
    k2 = partitions.lock_key(t, datetime.date(2019, 2, 2))
    k3 = partitions.lock_key(TableName("public", "other"), datetime.date(2019, 2, 1))
    assert len({k1, k2, k3}) == 3
    assert all(-(2**31) <= k < 2**31 for k in (*k1, *k2, *k3))
    assert partitions.lock_key(t, datetime.date(2019, 2, 1)) == k1  # stable across calls and processes


def test_table_name_parse_and_reject():
    assert TableName.parse("transaction") == TableName("public", "transaction")
    assert TableName.parse("a.b") == TableName("a", "b")
    for bad in ('a"; DROP TABLE x; --', "a.b.c", "", "1abc", "x y", "a" * 64):
        with pytest.raises(ValueError, match="not a valid SQL identifier|must be"):
            TableName.parse(bad)


def test_compression_by_suffix():
    assert partitions.compression_for("a/b.csv.gz") == "gzip"
    assert partitions.compression_for("a/b.csv") is None


def test_column_types_are_checked():
    assert q.Column("amount", "numeric(12,2)").type == "numeric(12,2)"
    assert q.Column("ts", "timestamp with time zone")
    for bad in ("text); DROP TABLE x; --", "int --", "text'"):
        with pytest.raises(ValueError, match="not an accepted SQL type"):
            q.Column("c", bad)


def test_copy_statement_quotes_identifiers_and_literals():
    stmt = q.copy_from_stdin(TableName("s", "t"), [q.Column("id", "int"), q.Column("Day", "date")],
                             q.CsvFormat(delimiter=";", null="\\N"))
    parts = _flatten(stmt)
    assert sql.Identifier("s", "t") in parts and sql.Identifier("Day") in parts
    assert sql.Literal(";") in parts and sql.Literal("\\N") in parts


def test_copy_header_modes():
    t, cols = TableName("s", "t"), [q.Column("id", "int")]
    assert sql.SQL("MATCH") in _flatten(q.copy_from_stdin(t, cols, q.CsvFormat()))
    assert sql.SQL("true") in _flatten(q.copy_from_stdin(t, cols, q.CsvFormat(check_header=False)))
    assert sql.SQL("false") in _flatten(q.copy_from_stdin(t, cols, q.CsvFormat(header=False)))


def _flatten(composable):
    if isinstance(composable, sql.Composed):
        return [p for part in composable.seq for p in _flatten(part)]
    return [composable]


@pytest.mark.parametrize(
    "context, line, column",
    [
        ('COPY t, line 3, column amount: "abc"', 3, "amount"),
        ("COPY t, line 7", 7, None),
        ("COPY transaction, line 12: \"1,2\"", 12, None),
        (None, None, None),
    ],
)
def test_copy_error_position(context, line, column):
    pos = errors.copy_error_position(context)
    assert (pos.line, pos.column) == (line, column)


def test_describe_bad_input():
    msg = errors.describe_bad_input("s3://b/k.csv", errors.CopyErrorPosition(3, "amount"), "invalid input")
    assert msg == "s3://b/k.csv line 3 column amount: invalid input"


def test_set_based_transform_statement_quotes_names_and_binds_values():
    query = sql.SQL("SELECT {}, a FROM upstream").format(sql.Placeholder("date"))
    stmt = q.insert_from_query(TableName("s", "out"), [q.Column("day", "date"), q.Column("a", "text")],
                               TableName("s", "in"), "day", ["a"], ["region"], query)
    parts = _flatten(stmt)
    assert parts[:2] == [sql.SQL("WITH "), sql.Identifier("upstream")]
    assert sql.Identifier("s", "in") in parts and sql.Identifier("s", "out") in parts
    assert sql.Placeholder("date") in parts and sql.Placeholder("upstream_region") in parts
    assert parts[-3:] == _flatten(query)  # the declared query comes last, as declared
    assert not any(isinstance(p, sql.Literal) for p in parts)  # values only ever as parameters
