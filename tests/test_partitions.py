"""Partition arithmetic: table names, key prefixes, lock keys and date ranges."""
import datetime
import os
import re
import string
import subprocess
import sys

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from luigi_pipelines import partitions
from luigi_pipelines.partitions import TableName, check_identifier, date_range, key_prefix, lock_key


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


# -- properties ------------------------------------------------------------------------------------
# (deadline=None throughout: on a shared machine a slow example is not a failure)

IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_$]*")  # the documented rule, written independently of partitions.py
_FIRST = string.ascii_letters + "_"
identifiers = st.builds(str.__add__, st.sampled_from(_FIRST), st.text(_FIRST + string.digits + "$", max_size=62))
# Near misses: a valid identifier with a little text before or after it, often a character that matters in SQL.
affixes = st.one_of(st.sampled_from(['"', ";", " ", "\n", "-", ".", "\u0661"]), st.text(min_size=1, max_size=3))
near_identifiers = st.one_of(
    st.tuples(identifiers, affixes), st.tuples(affixes, identifiers), st.tuples(affixes, identifiers, affixes),
).map("".join)
table_names = st.builds(TableName, identifiers, identifiers)
# Years of four digits: below 1000, %Y is not zero-padded on every platform.
dates = st.dates(datetime.date(1000, 1, 1), datetime.date(9000, 12, 31))
days_apart = st.one_of(st.integers(1, 40), st.integers(-40, -1), st.integers(-50_000, 50_000).filter(bool))


@settings(deadline=None)
@given(identifiers, identifiers)
def test_valid_names_round_trip(schema, name):
    table = TableName.parse(f"{schema}.{name}")
    assert table == TableName(schema, name)
    assert TableName.parse(str(table)) == table
    assert TableName.parse(name, default_schema=schema) == table


@settings(max_examples=300, deadline=None)
@example("transaction\n")  # found by this test: re's $ also matches before a final newline
@example("public\n.transaction")
@given(st.one_of(near_identifiers, st.tuples(near_identifiers, near_identifiers).map(".".join), st.text()))
def test_only_plain_identifiers_are_accepted(qualified):
    """Whatever the input, a name that passes is letters, digits, _ and $ (at most 63 bytes): nothing
    that could close a quote, end a statement or start a comment reaches SQL."""
    try:
        table = TableName.parse(qualified)
    except ValueError as exc:
        assert "not a valid SQL identifier" in str(exc) or "must be" in str(exc)
        return
    for part in (table.schema, table.name):
        assert IDENTIFIER.fullmatch(part) and len(part.encode()) <= 63, repr(part)


@settings(deadline=None)
@given(st.builds(str.__add__, st.sampled_from(_FIRST), st.text(_FIRST + string.digits + "$", min_size=63, max_size=80)))
def test_names_over_63_bytes_are_rejected(name):
    with pytest.raises(ValueError, match="at most 63 bytes"):
        check_identifier(name)


@settings(deadline=None)
@given(st.text(st.characters(blacklist_characters="{}")), dates)
def test_key_prefix_renders_the_date(prefix, date):
    assert key_prefix(prefix + "{date:%Y-%m-%d}/", date) == f"{prefix}{date.isoformat()}/"
    assert key_prefix(prefix + "{date:%Y/%m/%d}/", date) == f"{prefix}{date.year:04d}/{date.month:02d}/{date.day:02d}/"


@settings(deadline=None)
@given(dates, days_apart)
def test_key_prefixes_of_different_dates_never_overlap(a, days):
    """One partition's listing (a prefix) never picks up another date's objects."""
    b = a + datetime.timedelta(days=days)
    pa, pb = key_prefix("t/{date:%Y-%m-%d}/", a), key_prefix("t/{date:%Y-%m-%d}/", b)
    assert not pa.startswith(pb) and not pb.startswith(pa)


@settings(deadline=None)
@given(table_names, dates, days_apart)
def test_lock_key_is_two_int4_stable_and_distinct_per_date(table, a, days):
    b = a + datetime.timedelta(days=days)
    ka, kb = lock_key(table, a), lock_key(table, b)
    assert all(isinstance(k, int) and -(2**31) <= k < 2**31 for k in (*ka, *kb))
    assert lock_key(TableName(table.schema, table.name), a) == ka  # an equal name, a new object
    assert ka[0] == kb[0]  # the first key is the table's alone
    assert ka[1] != kb[1]


def test_lock_key_is_the_same_in_every_process():
    """Workers on other hosts must take the same lock: no per-process hash seed may enter the key."""
    tables = [TableName("public", "transaction"), TableName("s", "Marker$Table"), TableName("_x", "a" * 63)]
    code = ("import datetime; from luigi_pipelines.partitions import TableName, lock_key; "
            f"print([lock_key(t, datetime.date(2019, 2, 1)) for t in {tables!r}])")
    seen = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                           env={**os.environ, "PYTHONHASHSEED": seed}).stdout for seed in ("1", "2")}
    assert seen == {f"{[lock_key(t, datetime.date(2019, 2, 1)) for t in tables]}\n"}


@settings(deadline=None)
@given(dates, st.integers(-30, 800), st.integers(0, 800))
def test_date_range_is_every_day_from_start_to_before_stop(start, days, split):
    stop = start + datetime.timedelta(days=days)
    got = date_range(start, stop)
    assert len(got) == max(days, 0)
    assert all(b - a == datetime.timedelta(days=1) for a, b in zip(got, got[1:], strict=False))
    assert all(start <= d < stop for d in got) and (not got or got[0] == start)
    middle = start + datetime.timedelta(days=min(split, max(days, 0)))
    assert date_range(start, middle) + date_range(middle, stop) == got


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


def test_prefixes_apart_tells_templates_that_merge_dates_or_hours():
    assert partitions.prefixes_apart("d/{date:%Y-%m-%d}/") and partitions.prefixes_apart("e/dt={date:%Y%m%d}/")
    assert not partitions.prefixes_apart("d/{date:%Y-%m}/")  # a month's objects under each of its dates
    assert not partitions.prefixes_apart("d/{date:%m-%d}/")  # the same day of every year
    assert not partitions.prefixes_apart("d/{date:%Y-%-m-%-d}")  # 2019-1-1 is the start of 2019-1-10
    assert partitions.prefixes_apart("h/{date:%Y/%m/%d/%H}/", hourly=True)
    assert not partitions.prefixes_apart("h/{date:%Y/%m/%d}/", hourly=True)
