"""Parquet values (``luigi_pipelines.parquet_values``): every value loads as the file holds it or fails naming its
object, row group and row, never as a different value. Real files from apache/parquet-testing
(``tests/data/parquet-testing``: Spark's INT96, page checksums) and files written here with pyarrow, loaded into
the real PostgreSQL through moto's S3 server."""
from __future__ import annotations

import datetime
import decimal
import io
import pathlib

import pytest
from luigi.execution_summary import LuigiStatusCode

import luigi_pipelines as lp
from luigi_pipelines import BadInputError, ParquetDecoder
from tests.conftest import run_task

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

pytestmark = [pytest.mark.postgres, pytest.mark.s3]

D1 = datetime.date(2019, 2, 1)
KEY = "d/2019-02-01/a.parquet"
SUCCESS = LuigiStatusCode.SUCCESS
TESTING = pathlib.Path(__file__).parent / "data" / "parquet-testing"
WHERE = r"a\.parquet row group {group} row {row} \(row {n} of the file\) column {column}: "


def parquet_bytes(table, **options) -> bytes:
    sink = io.BytesIO()
    pq.write_table(table, sink, **options)
    return sink.getvalue()


def task(make_task, columns):
    return make_task(decoder=ParquetDecoder(), columns=columns, date_from=lp.partition_date())(date=D1)


def loaded(stack, make_task, table, columns, **options) -> list:
    """The rows of ``table`` as PostgreSQL holds them once loaded into ``columns``."""
    stack.put(KEY, parquet_bytes(table, **options))
    assert run_task(task(make_task, columns)).status == SUCCESS
    names = ", ".join(name for name, _ in columns)
    return stack.query(f"SELECT {names} FROM {stack.schema}.t ORDER BY 1")


def refused(stack, make_task, table, columns, match: str, **options) -> None:
    """Loading ``table`` fails with ``match`` and leaves no row and no marker."""
    stack.put(KEY, parquet_bytes(table, **options))
    with pytest.raises(BadInputError, match=match):
        task(make_task, columns).run()
    assert stack.query(f"SELECT count(*) FROM {stack.schema}.t") == [(0,)]
    assert stack.markers(f"{stack.schema}.t") == {}


# -- INT96 (Spark's default timestamps) ------------------------------------------------------------------------------

def test_spark_int96_file_names_the_value_beyond_range_and_loads_nothing(stack, make_task):
    """apache/parquet-testing's ``int96_from_spark.parquet``: read as nanoseconds, row 3 (9999-12-31 03:00) wrapped
    to 1816-03-29 and row 6 (year 290000, beyond what Arrow's microseconds hold) to 2147-08-27, with exit 0."""
    stack.put(KEY, (TESTING / "int96_from_spark.parquet").read_bytes())
    with pytest.raises(BadInputError, match=WHERE.format(group=1, row=6, n=6, column="a")
                       + r"an INT96 timestamp beyond what microseconds hold \(year 294247 and later\)"):
        task(make_task, [("a", "timestamp")]).run()
    assert stack.markers(f"{stack.schema}.t") == {}


def test_spark_int96_rows_in_range_load_exactly_at_microseconds(stack, make_task):
    """The same file's first five rows (read at microseconds), written again as INT96 by pyarrow as Spark does."""
    spark = pq.ParquetFile(TESTING / "int96_from_spark.parquet", coerce_int96_timestamp_unit="us").read().slice(0, 5)
    assert loaded(stack, make_task, spark.append_column("id", pa.array(range(1, 6))),
                  [("id", "bigint"), ("a", "timestamp")], use_deprecated_int96_timestamps=True) == [
        (1, datetime.datetime(2024, 1, 1, 20, 34, 56, 123456)), (2, datetime.datetime(2024, 1, 1, 1, 0)),
        (3, datetime.datetime(9999, 12, 31, 3, 0)), (4, datetime.datetime(2024, 12, 30, 23, 0)), (5, None)]


def test_int96_before_1970_and_at_year_1_load_exactly(stack, make_task):
    at = [datetime.datetime(1, 1, 1), datetime.datetime(1677, 9, 21, 0, 12, 43, 145224),
          datetime.datetime(1969, 12, 31, 23, 59, 59, 999999), datetime.datetime(2262, 4, 11, 23, 47, 16, 854776)]
    table = pa.table({"id": range(4), "a": pa.array(at, pa.timestamp("us"))})
    assert loaded(stack, make_task, table, [("id", "bigint"), ("a", "timestamp")],
                  use_deprecated_int96_timestamps=True) == list(enumerate(at))


# -- timestamps, dates and times in every unit ----------------------------------------------------------------------

@pytest.mark.parametrize("unit", ["s", "ms", "us"])
def test_timestamps_beyond_nanoseconds_range_load_exactly(stack, make_task, unit):
    at = [datetime.datetime(1, 1, 1), datetime.datetime(1000, 6, 15, 12), datetime.datetime(2999, 12, 31, 23, 59, 59),
          datetime.datetime(9999, 12, 31, 23, 59, 59)]
    table = pa.table({"id": range(4), "a": pa.array(at, pa.timestamp(unit)),
                      "z": pa.array(at, pa.timestamp(unit, tz="UTC"))})
    utc = [t.replace(tzinfo=datetime.timezone.utc) for t in at]
    assert loaded(stack, make_task, table, [("id", "bigint"), ("a", "timestamp"), ("z", "timestamptz")]) == [
        (i, a, z) for i, (a, z) in enumerate(zip(at, utc, strict=True))]


@pytest.mark.parametrize("kind, column", [(pa.timestamp("s"), "timestamp"), (pa.timestamp("ms", tz="UTC"), "timestamptz")])
def test_a_timestamp_past_year_294247_is_a_bad_value(stack, make_task, kind, column):
    seconds = 9_400_000_000_000 if kind.unit == "s" else 9_400_000_000_000_000  # about year 299,900
    table = pa.table({"id": [1, 2], "a": pa.array([0, seconds], pa.int64()).cast(kind)})
    refused(stack, make_task, table, [("id", "bigint"), ("a", column)], WHERE.format(group=1, row=2, n=2, column="a"))


@pytest.mark.parametrize("kind", [pa.date32(), pa.timestamp("s")])
def test_a_value_before_year_1_is_a_bad_value(stack, make_task, kind):
    days = -719_528 - 366  # 0000-01-01 is -719,528 days from 1970: year -1, which PostgreSQL calls 2 BC
    values = pa.array([0, days], pa.int32()).cast(kind) if kind == pa.date32() else pa.array([0, days * 86_400], kind)
    refused(stack, make_task, pa.table({"id": [1, 2], "a": values}),
            [("id", "bigint"), ("a", "date" if kind == pa.date32() else "timestamp")],
            WHERE.format(group=1, row=2, n=2, column="a"))


def test_dates_before_1970_and_beyond_9999_load_exactly(stack, make_task):
    days = [datetime.date(1, 1, 1), datetime.date(1582, 10, 4), datetime.date(1969, 12, 31), datetime.date(9999, 12, 31)]
    table = pa.table({"id": range(4), "d": pa.array(days, pa.date32()), "m": pa.array(days, pa.date64())})
    assert loaded(stack, make_task, table, [("id", "bigint"), ("d", "date"), ("m", "date")]) == [
        (i, d, d) for i, d in enumerate(days)]


def test_times_load_exactly_and_nanoseconds_round_to_the_microsecond(stack, make_task):
    table = pa.table({"id": [1, 2], "s": pa.array([0, 86_399], pa.time32("s")),
                      "us": pa.array([1, 86_399_999_999], pa.time64("us")),
                      "ns": pa.array([1_499, 43_200_000_000_500], pa.time64("ns")),
                      "at": pa.array([1_549_009_800_000_000_999, 1_549_009_800_000_001_500], pa.timestamp("ns"))})
    assert loaded(stack, make_task, table, [("id", "bigint"), ("s", "time"), ("us", "time"), ("ns", "time"),
                                            ("at", "timestamp")]) == [
        (1, datetime.time(0), datetime.time(0, 0, 0, 1), datetime.time(0, 0, 0, 1),
         datetime.datetime(2019, 2, 1, 8, 30, 0, 1)),
        (2, datetime.time(23, 59, 59), datetime.time(23, 59, 59, 999999), datetime.time(12, 0, 0, 0),
         datetime.datetime(2019, 2, 1, 8, 30, 0, 2))]


# -- integers, decimals and floats ---------------------------------------------------------------------------------

def test_unsigned_64_bit_above_bigint_is_a_bad_value_never_wrapped(stack, make_task):
    table = pa.table({"id": pa.array([1, 2**63 - 1, 2**63, 2**64 - 1], pa.uint64())})
    refused(stack, make_task, table, [("id", "bigint")],
            WHERE.format(group=1, row=3, n=3, column="id") + r'value "9223372036854775808" is out of range')


def test_unsigned_64_bit_within_bigint_and_every_integer_width_load_exactly(stack, make_task):
    table = pa.table({"id": pa.array([0, 2**63 - 1], pa.uint64()), "i8": pa.array([-128, 127], pa.int8()),
                      "u32": pa.array([0, 2**32 - 1], pa.uint32()), "i64": pa.array([-2**63, 2**63 - 1], pa.int64())})
    assert loaded(stack, make_task, table, [("id", "bigint"), ("i8", "smallint"), ("u32", "bigint"),
                                            ("i64", "bigint")]) == [(0, -128, 0, -2**63), (2**63 - 1, 127, 2**32 - 1, 2**63 - 1)]


def test_decimal_digits_beyond_the_column_scale_are_a_bad_value_not_rounded(stack, make_task):
    amounts = [decimal.Decimal("12.500"), decimal.Decimal("-0.010"), decimal.Decimal("12.505")]
    table = pa.table({"id": [1, 2, 3], "amount": pa.array(amounts, pa.decimal128(10, 3))})
    refused(stack, make_task, table, [("id", "bigint"), ("amount", "numeric(12, 2)")],
            WHERE.format(group=1, row=3, n=3, column="amount") + r"12\.505 has more decimals than numeric\(12, 2\) "
            r"keeps \(2\); PostgreSQL would round it")


def test_floats_with_decimals_beyond_the_column_scale_are_a_bad_value(stack, make_task):
    table = pa.table({"id": [1, 2], "amount": pa.array([0.1, 0.125], pa.float64())})
    refused(stack, make_task, table, [("id", "bigint"), ("amount", "decimal(12,2)")],
            WHERE.format(group=1, row=2, n=2, column="amount") + r"0\.125 has more decimals than decimal\(12,2\)")


def test_decimals_that_fit_the_column_load_exactly(stack, make_task):
    wide = decimal.Decimal("1234567890123456789012345678.0123456789")
    table = pa.table({"id": [1, 2], "amount": pa.array([decimal.Decimal("12.500"), None], pa.decimal128(10, 3)),
                      "f": pa.array([0.1, 1.15], pa.float64()), "wide": pa.array([wide, -wide], pa.decimal128(38, 10)),
                      "whole": pa.array([decimal.Decimal("7.000"), decimal.Decimal("-3")], pa.decimal128(6, 3))})
    assert loaded(stack, make_task, table, [("id", "bigint"), ("amount", "numeric(12,2)"), ("f", "numeric(12,2)"),
                                            ("wide", "numeric"), ("whole", "numeric(5)")]) == [
        (1, decimal.Decimal("12.50"), decimal.Decimal("0.10"), wide, decimal.Decimal("7")),
        (2, None, decimal.Decimal("1.15"), -wide, decimal.Decimal("-3"))]


def test_float16_float32_and_float64_load_exactly(stack, make_task):
    table = pa.table({"id": [1, 2, 3], "h": pa.array([0.1, 65504.0, None]).cast(pa.float16()),
                      "f": pa.array([0.1, 16777216.0, 3.4e38], pa.float32()),
                      "d": pa.array([0.1, 5e-324, -0.0], pa.float64())})
    loaded(stack, make_task, table, [("id", "bigint"), ("h", "real"), ("f", "real"), ("d", "double precision")])
    assert stack.query(f"SELECT h::float8, f::float8, d FROM {stack.schema}.t ORDER BY id") == [
        (0.0999755859375, 0.10000000149011612, 0.1), (65504.0, 16777216.0, 5e-324), (None, 3.3999999521443642e38, -0.0)]


# -- page checksums ------------------------------------------------------------------------------------------------

def test_a_page_whose_checksum_does_not_match_is_bad_input_and_nothing_loads(stack, make_task):
    """apache/parquet-testing's ``datapage_v1-corrupt-checksum.parquet``: unverified, it loaded altered rows, exit 0."""
    stack.put(KEY, (TESTING / "datapage_v1-corrupt-checksum.parquet").read_bytes())
    with pytest.raises(BadInputError, match=r"a\.parquet row group 1: cannot be read: .*CRC checksum verification "
                                            r"failed"):
        task(make_task, [("a", "integer"), ("b", "integer")]).run()
    assert stack.query(f"SELECT count(*) FROM {stack.schema}.t") == [(0,)]
    assert stack.markers(f"{stack.schema}.t") == {}


def test_a_file_with_good_checksums_loads_every_row(stack, make_task):
    path = TESTING / "datapage_v1-snappy-compressed-checksum.parquet"
    stack.put(KEY, path.read_bytes())
    assert run_task(task(make_task, [("a", "integer"), ("b", "integer")])).status == SUCCESS
    expected = pq.read_table(path).to_pylist()
    assert len(expected) == 5120
    assert stack.query(f"SELECT a, b FROM {stack.schema}.t ORDER BY a, b") == sorted((r["a"], r["b"]) for r in expected)
