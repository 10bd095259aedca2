"""A table's schema read and changed inside a partition's transaction (schema contracts: ``contracts``), and its size.

The ``ALTER TABLE`` runs in the load's own transaction, so it commits with the rows and the marker or not at all.
Schema changes of one table are serialised by an advisory lock of their own (``schema_lock_key``), taken before the
catalog is read again: of two loads that both found a column missing, the second finds it added.
"""
from __future__ import annotations

import datetime
from collections.abc import Iterable

import psycopg2.extensions

from .. import sql as q
from ..layouts import ExistingColumn
from ..partitions import TableName, lock_key
from .transaction import PartitionTransaction
from .translate import LOCK_TIMEOUT, NO_PRIVILEGE, translating


def schema_lock_key(table: TableName) -> tuple[int, int]:
    """The advisory lock keys of ``table``'s schema changes: ``lock_key``'s first key and -1, which neither a date's
    ordinal nor a whole table's lock (0) is."""
    return lock_key(table, datetime.date.min)[0], -1


def columns_in(tx: PartitionTransaction, table: TableName) -> list[ExistingColumn]:
    """Every column of ``table`` as the catalog shows it to the transaction (``db.table_columns``)."""
    tx.cursor.execute(q.select_table_columns(), (q.table_ident(table).as_string(tx.cursor),))
    return [ExistingColumn(*row) for row in tx.cursor.fetchall()]


def types_in(tx: PartitionTransaction, types: Iterable[str]) -> dict[str, tuple[str, str] | None]:
    """Each of ``types`` as PostgreSQL names it, with its category (``db.resolve_types``: these parsed before)."""
    tx.cursor.execute(q.resolve_types(), (list(dict.fromkeys(types)),))
    return {name: (shown, category) if shown else None for name, shown, category in tx.cursor.fetchall()}


def lock_schema(tx: PartitionTransaction, table: TableName) -> None:
    """Wait for any other load that changes ``table``'s schema to commit or roll back."""
    with translating(f"{table}", LOCK_TIMEOUT, lock=f"another load changes the columns of {table}, and [load] "
                     f"lock_timeout_s ran out"):
        tx.cursor.execute(q.advisory_xact_lock(), schema_lock_key(table))


def alter_schema(tx: PartitionTransaction, table: TableName, statement: q.sql.Composable) -> None:
    """Run ``statement`` (an ``ALTER TABLE`` of ``table``) in the transaction: it takes the table's ACCESS EXCLUSIVE
    lock, held until the load commits."""
    shown = statement.as_string(tx.cursor)
    with translating(f"{table}", NO_PRIVILEGE, fix=f"its owner runs once: {shown}"), \
            translating(f"{table}", LOCK_TIMEOUT, lock=f"ALTER TABLE waits for the readers and writers of {table}, "
                        f"and [load] lock_timeout_s ran out; nothing was changed"):
        tx.cursor.execute(statement)


def table_size(conn: psycopg2.extensions.connection, table: TableName) -> tuple[int, int]:
    """``table``'s size in bytes (with its indexes and TOAST) and the planner's estimate of its rows."""
    with conn, conn.cursor() as cur:
        cur.execute(q.select_table_size(), (q.table_ident(table).as_string(conn),))
        row = cur.fetchone()
    return (0, 0) if row is None else (int(row[0] or 0), max(int(row[1] or 0), 0))


def connection_of(tx: PartitionTransaction) -> psycopg2.extensions.connection:
    """The connection of ``tx`` (to render a statement's text for a message: ``Composable.as_string``)."""
    return tx.cursor.connection
