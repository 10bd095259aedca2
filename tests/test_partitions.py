"""Partition arithmetic: table names, key prefixes, lock keys and date ranges."""
import datetime

import pytest

from luigi_pipelines import partitions
from luigi_pipelines.partitions import TableName


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
