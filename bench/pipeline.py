"""The luigi module the benchmark's commands load (``luigi --module bench.pipeline ...``).

It measures the shipped example pipeline unchanged: ``LoadTransactions`` and ``SummarizeTransactions``
are imported as is (bucket and tables come from the run's ``[transactions]`` config), next to
``RangeDaily`` and the baseline that luigi itself offers, ``CopyTransactions``: luigi's
``contrib.postgres.CopyToTable`` fed by a CSV reader. The transform section adds the same summary in
SQL, a row-for-row transform, and that transform holding its whole input first (the control).
The ``layouts`` section loads the same rows through variants of ``LoadTransactions`` declared below, the
``formats`` section the same rows as JSON lines and as Parquet, the ``merge`` section merges them by id
(``MergeTransactions``), the ``checks`` section loads them with data checks (``LoadTransactionsChecked``),
and the ``swap`` section loads them into a partitioned table (``LoadTransactionsSwapped``).
"""
from __future__ import annotations

import csv
import datetime
import os
from collections.abc import Iterable, Iterator
from typing import Any

import luigi
from luigi.contrib.postgres import CopyToTable
from luigi.tools.range import RangeDaily, RangeHourly  # noqa: F401 - registers them ([core] autoload_range is off)
from psycopg2 import sql

import luigi_pipelines as lp
from luigi_pipelines.pipelines.transactions import LoadTransactions, SummarizeTransactions, transactions

NO_DATE_PREFIX = "transactions-nodate/{date:%Y-%m-%d}/"  # the same rows without their txn_date column
MERGE_PREFIX = "merge/{date:%Y-%m-%d}/"  # the merge section's objects
JSONL_PREFIX = "transactions-jsonl/{date:%Y-%m-%d}/"  # the same rows as JSON lines
PARQUET_PREFIX = "transactions-parquet/{date:%Y-%m-%d}/"  # the same rows as Parquet


class LoadTransactionsPathDate(LoadTransactions):
    """The files have no date column: every row gets the partition's date (a filled column)."""

    key_prefix = NO_DATE_PREFIX
    columns = [c for c in LoadTransactions.columns if c[0] != "txn_date"]
    date_from = lp.partition_date()


class LoadTransactionsLineage(LoadTransactions):
    """The plain files, and three lineage columns: the object's key, the load's id and its start."""

    lineage = lp.Lineage(key="source_key", load_id="load_id", loaded_at="loaded_at")


class LoadTransactionsByName(LoadTransactions):
    """Columns by the header's names: every file column is declared, so COPY goes straight to the table."""

    csv = lp.CsvFormat(null="", by_name=True)


class LoadTransactionsStaged(LoadTransactions):
    """Columns by the header's names, with the file's ``note`` column not declared: staged, then inserted."""

    columns = [c for c in LoadTransactions.columns if c[0] != "note"]
    csv = lp.CsvFormat(null="", by_name=True)


class LoadTransactionsChecked(LoadTransactions):
    """The plain files, with data checks in the load's transaction (the ``checks`` section)."""

    checks = (lp.not_null("id"), lp.unique("id"), lp.between("amount", 0, 10_000), lp.row_count(min=1))


class LoadTransactionsSwapped(LoadTransactions):
    """The same load into a natively partitioned table: a child per date, built and swapped in (the swap section)."""

    partitioned = True


class MergeTransactions(lp.MergePartition):
    """The transactions' rows merged by id from ``merge/<date>/`` into the ``[transactions] table`` (a change set)."""

    key_prefix = MERGE_PREFIX
    columns = LoadTransactions.columns
    csv = LoadTransactions.csv
    merge_key = ("id",)
    bucket = property(lambda self: transactions().bucket)
    table = property(lambda self: transactions().table)


class LoadTransactionsJsonLines(LoadTransactions):
    """The same rows as JSON lines, one object a line: read by Arrow, COPYed as CSV (``jsonl_arrow``)."""

    key_prefix = JSONL_PREFIX
    decoder = lp.JsonLinesDecoder(reader="arrow")


class LoadTransactionsJsonLinesPostgres(LoadTransactionsJsonLines):
    """The same JSON lines by PostgreSQL's path: staged by COPY, mapped by ``jsonb_to_record``."""

    decoder = lp.JsonLinesDecoder(reader="postgres")


class LoadTransactionsParquet(LoadTransactions):
    """The same rows as Parquet (typed columns), a row group at a time into COPY."""

    key_prefix = PARQUET_PREFIX
    decoder = lp.ParquetDecoder()


class CopyTransactions(CopyToTable):
    """One local CSV file into ``table`` the way luigi's contrib module does it: every value of every row
    goes through Python (``rows()`` then ``map_column``) into a temporary file, which is then COPYed.

    CopyToTable takes no libpq environment, so host (the Unix socket directory), port, user and
    database are read from the PG* variables the benchmark sets.
    """

    csv_path = luigi.Parameter(description="the local CSV file (with a header line) to load")
    target_table = luigi.Parameter(description="schema-qualified table to load into")

    columns = list(LoadTransactions.columns)
    password = None

    @property
    def host(self) -> str:
        return os.environ["PGHOST"]

    @property
    def port(self) -> str:
        return os.environ.get("PGPORT", "5432")

    @property
    def database(self) -> str:
        return os.environ.get("PGDATABASE", "postgres")

    @property
    def user(self) -> str:
        return os.environ.get("PGUSER", "postgres")

    @property
    def table(self) -> str:
        return str(self.target_table)

    def rows(self) -> Iterator[list[str | None]]:
        """The CSV's rows; an empty field becomes None (NULL), as ``NULL ''`` does for the other methods."""
        with open(self.csv_path, newline="", encoding="utf-8") as f:
            reader = csv.reader(f)
            next(reader)  # the header
            for row in reader:
                yield [value if value != "" else None for value in row]


class SummarizeTransactionsInSql(lp.SqlTransformPartition):
    """``SummarizeTransactions`` as one ``INSERT ... SELECT`` in the server."""

    upstream = LoadTransactions
    source_columns = ["account", "currency", "amount"]
    query = sql.SQL("SELECT {}, account, currency, count(*), sum(coalesce(amount, 0)) FROM upstream "
                    "GROUP BY account, currency").format(sql.Placeholder("date"))
    table = "bench.transform_totals_sql"
    date_column = "txn_date"
    columns = SummarizeTransactions.columns


def amounts_in_cents(rows: Iterable[tuple[Any, ...]], date: datetime.date) -> Iterator[tuple[Any, ...]]:
    """Every transaction again, its amount in cents: as many rows out as in, yielded one by one."""
    for id_, day, amount in rows:
        yield id_, day, None if amount is None else int(amount * 100)


def amounts_in_cents_held(rows: Iterable[tuple[Any, ...]], date: datetime.date) -> Iterator[tuple[Any, ...]]:
    """The same after holding the whole partition in a tuple: what reading it into memory costs (the control)."""
    held = tuple(rows)
    yield from amounts_in_cents(held, date)


class CentsTransactions(lp.TransformPartition):
    """A row-for-row transform: 1 M rows in, 1 M rows out, streamed on both sides."""

    upstream = LoadTransactions
    source_columns = ["id", "txn_date", "amount"]
    transform = staticmethod(amounts_in_cents)
    table = "bench.transform_cents"
    date_column = "txn_date"
    columns = [("id", "bigint"), ("txn_date", "date"), ("cents", "bigint")]


class CentsTransactionsHeld(CentsTransactions):
    """``CentsTransactions`` with a function that holds its whole input first."""

    transform = staticmethod(amounts_in_cents_held)
    table = "bench.transform_cents_held"


class TinyHourly(lp.LoadHourlyPartition):
    """The ``scale`` section's hourly load: an empty S3 prefix per hour (one LIST, no object), 0 rows and a marker,
    so that what a partition costs is scheduling, the listing and the transaction, not data."""

    key_prefix = "tiny/{date:%Y/%m/%d/%H}/"
    empty_partition_ok = True
    date_column = "day"
    date_from = lp.partition_date()
    columns = [("id", "bigint")]
    bucket = property(lambda self: transactions().bucket)
    table = property(lambda self: transactions().table)
