"""Pure psycopg2.sql builders for every statement luigi_pipelines runs: DDL, COPY, delete and markers.

Identifiers only ever reach SQL through ``sql.Identifier`` and values through ``sql.Literal`` or
query parameters; column types are checked against a strict pattern before they become SQL.
"""
from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from psycopg2 import sql

from .partitions import TableName, check_identifier

# fullmatch, and ASCII digits and spaces only: re's $ would also pass a final newline, \d and \s any script's
_COLUMN_TYPE = re.compile(r"[A-Za-z][A-Za-z0-9_ ]*(\( *[0-9]+ *(, *[0-9]+ *)?\))?( with(out)? time zone)?(\[\])?")


@dataclass(frozen=True)
class CsvFormat:
    """How the source files are written: the options of PostgreSQL's ``COPY ... (FORMAT csv)``."""

    delimiter: str = ","
    header: bool = True
    check_header: bool = True
    quote: str = '"'
    escape: str = '"'
    null: str = ""
    encoding: str = "UTF8"


@dataclass(frozen=True)
class Column:
    """A target column: its name and its SQL type."""

    name: str
    type: str

    def __post_init__(self) -> None:
        check_identifier(self.name)
        if not _COLUMN_TYPE.fullmatch(self.type):
            raise ValueError(f"column {self.name!r}: {self.type!r} is not an accepted SQL type")


def columns_of(spec: Sequence[tuple[str, str]] | Sequence[Column]) -> tuple[Column, ...]:
    """Columns from ``(name, type)`` pairs (or ``Column`` objects)."""
    return tuple(c if isinstance(c, Column) else Column(*c) for c in spec)


def table_ident(table: TableName) -> sql.Identifier:
    return sql.Identifier(table.schema, table.name)


def create_schema(schema: str) -> sql.Composed:
    return sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema))


def schema_exists() -> sql.SQL:
    """Parameter: schema."""
    return sql.SQL("SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_namespace WHERE nspname = %s)")


def table_exists() -> sql.SQL:
    """Parameters: schema, table."""
    return sql.SQL(
        "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_tables WHERE schemaname = %s AND tablename = %s)"
    )


def create_table(table: TableName, columns: Sequence[Column]) -> sql.Composed:
    defs = sql.SQL(", ").join(sql.SQL("{} {}").format(sql.Identifier(c.name), sql.SQL(c.type)) for c in columns)
    return sql.SQL("CREATE TABLE IF NOT EXISTS {} ({})").format(table_ident(table), defs)


def create_date_index(table: TableName, date_column: str) -> sql.Composed:
    index = check_identifier(f"{table.name}_{date_column}_idx"[:63])
    return sql.SQL("CREATE INDEX IF NOT EXISTS {} ON {} ({})").format(
        sql.Identifier(index), table_ident(table), sql.Identifier(date_column)
    )


def delete_partition(table: TableName, date_column: str) -> sql.Composed:
    """Parameter: the partition date."""
    return sql.SQL("DELETE FROM {} WHERE {} = %s").format(table_ident(table), sql.Identifier(date_column))


def select_partition(table: TableName, date_column: str, columns: Sequence[str]) -> sql.Composed:
    """Parameter: the partition date. The rows of one partition, in a stable order."""
    cols = sql.SQL(", ").join(sql.Identifier(c) for c in columns)
    return sql.SQL("SELECT {} FROM {} WHERE {} = %s ORDER BY {}").format(
        cols, table_ident(table), sql.Identifier(date_column), cols)


def count_by_date(table: TableName, date_column: str) -> sql.Composed:
    """Rows per date of a whole table."""
    return sql.SQL("SELECT {0}, count(*) FROM {1} GROUP BY {0}").format(sql.Identifier(date_column), table_ident(table))


def count_partition(table: TableName, date_column: str) -> sql.Composed:
    """Parameter: the partition date."""
    return sql.SQL("SELECT count(*) FROM {} WHERE {} = %s").format(table_ident(table), sql.Identifier(date_column))


def copy_from_stdin(table: TableName, columns: Sequence[Column], fmt: CsvFormat) -> sql.Composed:
    header: sql.Composable = sql.SQL("MATCH" if fmt.check_header else "true") if fmt.header else sql.SQL("false")
    options = sql.SQL(
        "FORMAT csv, DELIMITER {}, HEADER {}, QUOTE {}, ESCAPE {}, NULL {}, ENCODING {}"
    ).format(
        sql.Literal(fmt.delimiter),
        header,
        sql.Literal(fmt.quote),
        sql.Literal(fmt.escape),
        sql.Literal(fmt.null),
        sql.Literal(fmt.encoding),
    )
    return sql.SQL("COPY {} ({}) FROM STDIN WITH ({})").format(
        table_ident(table), sql.SQL(", ").join(sql.Identifier(c.name) for c in columns), options
    )


# -- the marker table --------------------------------------------------------------------------


def create_marker_table(marker: TableName) -> sql.Composed:
    return sql.SQL(
        """CREATE TABLE IF NOT EXISTS {} (
    target_table   text        NOT NULL,
    partition_date date        NOT NULL,
    task_family    text        NOT NULL,
    task_id        text        NOT NULL,
    rows_loaded    bigint      NOT NULL,
    rows_rejected  bigint      NOT NULL DEFAULT 0,
    bytes_loaded   bigint      NOT NULL,
    source_objects jsonb       NOT NULL,
    started_at     timestamptz NOT NULL,
    finished_at    timestamptz NOT NULL,
    host           text        NOT NULL,
    PRIMARY KEY (target_table, partition_date))"""
    ).format(table_ident(marker))


def upsert_marker(marker: TableName) -> sql.Composed:
    """Parameters, by name: the columns of the marker table; ``finished_at`` is the commit's clock."""
    return sql.SQL(
        """INSERT INTO {} (target_table, partition_date, task_family, task_id, rows_loaded, rows_rejected,
                bytes_loaded, source_objects, started_at, finished_at, host)
VALUES (%(target_table)s, %(partition_date)s, %(task_family)s, %(task_id)s, %(rows_loaded)s, %(rows_rejected)s,
        %(bytes_loaded)s, %(source_objects)s, %(started_at)s, clock_timestamp(), %(host)s)
ON CONFLICT (target_table, partition_date) DO UPDATE SET
    task_family = EXCLUDED.task_family, task_id = EXCLUDED.task_id, rows_loaded = EXCLUDED.rows_loaded,
    rows_rejected = EXCLUDED.rows_rejected, bytes_loaded = EXCLUDED.bytes_loaded, source_objects = EXCLUDED.source_objects,
    started_at = EXCLUDED.started_at, finished_at = EXCLUDED.finished_at, host = EXCLUDED.host"""
    ).format(table_ident(marker))


def create_rejects_table(rejects: TableName) -> sql.Composed:
    """Rows set aside by quarantine mode (``max_bad_rows``), written in the load's own transaction."""
    return sql.SQL(
        """CREATE TABLE IF NOT EXISTS {} (
    target_table   text        NOT NULL,
    partition_date date        NOT NULL,
    s3_key         text        NOT NULL,
    line_number    bigint      NOT NULL,
    raw_line       text        NOT NULL,
    error          text        NOT NULL,
    rejected_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (target_table, partition_date, s3_key, line_number))"""
    ).format(table_ident(rejects))


def delete_rejects(rejects: TableName) -> sql.Composed:
    """Parameters: target table, partition date."""
    return sql.SQL("DELETE FROM {} WHERE target_table = %s AND partition_date = %s").format(table_ident(rejects))


def insert_reject(rejects: TableName) -> sql.Composed:
    """Parameters: target table, partition date, key, line number, raw line, error."""
    return sql.SQL(
        "INSERT INTO {} (target_table, partition_date, s3_key, line_number, raw_line, error) "
        "VALUES (%s, %s, %s, %s, %s, %s)"
    ).format(table_ident(rejects))


def select_marker(marker: TableName) -> sql.Composed:
    """Parameters: target table, partition date."""
    return sql.SQL(
        "SELECT rows_loaded, bytes_loaded, source_objects, started_at, finished_at, host, task_id "
        "FROM {} WHERE target_table = %s AND partition_date = %s"
    ).format(table_ident(marker))


def select_completed_dates(marker: TableName) -> sql.Composed:
    """Parameters: target table, an array of dates. One query for any number of dates."""
    return sql.SQL(
        "SELECT partition_date FROM {} WHERE target_table = %s AND partition_date = ANY(%s::date[])"
    ).format(table_ident(marker))


def select_marker_summary(marker: TableName) -> sql.Composed:
    """Parameter: target table. Every marker row of one table, oldest date first."""
    return sql.SQL(
        "SELECT partition_date, rows_loaded, bytes_loaded, jsonb_array_length(source_objects), finished_at, host "
        "FROM {} WHERE target_table = %s ORDER BY partition_date"
    ).format(table_ident(marker))


def advisory_xact_lock() -> sql.SQL:
    """Parameters: the two int4 keys of ``partitions.lock_key``."""
    return sql.SQL("SELECT pg_advisory_xact_lock(%s, %s)")
