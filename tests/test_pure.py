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


def test_key_filter_skips_markers_and_conventional_names():
    every = partitions.KeyFilter()
    prefix = "d/2019-02-01/"
    assert every.skip_reason(prefix, "d/2019-02-01/a.csv", 10) is None
    assert every.skip_reason(prefix, "d/2019-02-01/part/a.csv", 10) is None
    assert every.skip_reason(prefix, "d/2019-02-01/", 0) == "a folder marker"
    assert every.skip_reason(prefix, "d/2019-02-01/part/", 0) == "a folder marker"
    assert every.skip_reason(prefix, "d/2019-02-01/x/", 5) is None  # bytes under a folder name: the listing refuses it
    for key, name, glob in [("_SUCCESS", "_SUCCESS", "_*"), ("_temporary/0/part-0.csv", "_temporary", "_*"),
                            (".part-0.csv.crc", ".part-0.csv.crc", ".*"), ("part-0.csv.crc", "part-0.csv.crc", "*.crc"),
                            ("sub/.hidden", ".hidden", ".*")]:
        assert every.skip_reason(prefix, prefix + key, 3) == f"its name {name!r} matches {glob!r}"
    assert partitions.KeyFilter(skip=()).skip_reason(prefix, prefix + "_SUCCESS", 0) is None


def test_key_filter_globs_match_the_key_after_the_prefix():
    csv = partitions.KeyFilter(("*.csv", "*.csv.gz"))
    assert csv.skip_reason("d/2019-02-01/", "d/2019-02-01/part/a.csv.gz", 1) is None  # * also matches /
    assert csv.skip_reason("d/2019-02-01/", "d/2019-02-01/a.csv.bak", 1) == "not matched by keys ('*.csv', '*.csv.gz')"
    # a prefix cut inside a name: the globs see the rest of the name, the conventions the whole name
    exact = partitions.KeyFilter((".csv",))
    assert exact.skip_reason("logs/2019-02-01", "logs/2019-02-01.csv", 1) is None
    assert exact.skip_reason("logs/2019-02-01", "logs/2019-02-01_old.csv", 1) is not None
    assert exact.skip_reason("logs/2019-02-01", "logs/2019-02-01.csv.bak", 1) is not None
    assert partitions.KeyFilter(("*.csv",)).skip_reason("logs/_2019-02-01", "logs/_2019-02-01.csv", 1) == \
        "its name '_2019-02-01.csv' matches '_*'"


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
