"""The luigi module the benchmark's commands load (``luigi --module bench.pipeline ...``).

It measures the shipped example pipeline unchanged: ``LoadTransactions`` is imported as is (its bucket
and table come from the run's ``[transactions]`` config), next to ``RangeDaily`` and the baseline that
luigi itself offers, ``CopyTransactions``: luigi's ``contrib.postgres.CopyToTable`` fed by a CSV reader.
The ``layouts`` section loads the same rows through variants of ``LoadTransactions`` declared below.
"""
from __future__ import annotations

import csv
import os
from collections.abc import Iterator

import luigi
from luigi.contrib.postgres import CopyToTable
from luigi.tools.range import RangeDaily  # noqa: F401 - registers RangeDaily ([core] autoload_range is off)

import luigi_pipelines as lp
from luigi_pipelines.pipelines.transactions import LoadTransactions  # measured as shipped

NO_DATE_PREFIX = "transactions-nodate/{date:%Y-%m-%d}/"  # the same rows without their txn_date column


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
