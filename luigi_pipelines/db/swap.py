"""Native partitions in the database: the parent's shape and children read from the catalog (no lock), a new child
built in the partition transaction with the parent's columns and indexes, and the swap under the parent's lock.

Lock order, the same in every load, so that loads of different dates of one parent never deadlock: the partition's
advisory lock (``partition_transaction``); the new child (created by this transaction, seen by no one else); no lock
on the parent while the rows are copied; then the parent's ACCESS EXCLUSIVE lock, alone, first (``lock_for_swap``),
and under it the old child (its readers all went through the parent) and, never waiting, an expired partition's
advisory lock. The parent's lock is asked for with a short ``lock_timeout`` in a savepoint and asked again until
granted: a long query on the parent makes the swap wait, but not every reader queued behind the swap's request.
"""
from __future__ import annotations

import logging
import random
import time
from collections.abc import Sequence
from typing import Any

import psycopg2.extensions

from .. import sql as q
from ..errors import LoadError
from ..partitions import ScopedTable, TableName, lock_key
from ..sql import swap as swap_sql
from .catalog import ensure_table
from .transaction import PartitionTransaction, attempt_statements
from .translate import LOCK_TIMEOUT

logger = logging.getLogger("luigi-interface.luigi_pipelines")
SWAP_LOCK_TRY_MS = 200  # how long one request of the parent's lock may queue ahead of readers


def table_shape(conn: psycopg2.extensions.connection, table: TableName) -> tuple[str, str, list[str]] | None:
    """``(kind, strategy, key columns)`` of ``table``: ``("r", "", [])`` for a plain table, ``("p", "r", ["day"])``
    for one partitioned by range on ``day``; None when it does not exist."""
    with conn, conn.cursor() as cur:
        cur.execute(swap_sql.select_shape(), (str(table),))
        row = cur.fetchone()
    if row is None:
        return None
    strategy, _, keys = (row[1] or "").partition(" ")  # RANGE (day, hour)
    columns = [c.strip().strip('"') for c in keys.strip().removeprefix("(").removesuffix(")").split(",") if c.strip()]
    return row[0], strategy[:1].lower(), columns


def children(conn: psycopg2.extensions.connection, table: TableName) -> list[tuple[str, str]]:
    """Each child of ``table`` with its bound, as the catalog renders it."""
    with conn, conn.cursor() as cur:
        cur.execute(swap_sql.select_children(), (str(table),))
        return [(name, bound) for name, bound in cur.fetchall()]


def ensure_scope_parent(conn: psycopg2.extensions.connection, table: TableName, create: q.sql.Composable) -> None:
    """A scope's parent (``sql.swap.create_scope_parent``), created once, before any transaction of its loads (it
    locks the table above it, briefly); safe to race."""
    ensure_table(conn, table, [create])


def child_names(tx: PartitionTransaction, table: TableName) -> list[str]:
    """The names of ``table``'s children, read in ``tx`` (a catalog read: no lock)."""
    tx.cursor.execute(swap_sql.select_child_names(), (str(table),))
    return [name for (name,) in tx.cursor.fetchall()]


def create_child(tx: PartitionTransaction, parent: TableName, child: TableName, check: q.sql.Composable) -> None:
    """``child``: a new table of ``parent``'s columns (from the catalog: no lock on ``parent``) that refuses rows
    outside ``check``; created in ``tx``, so a COPY into it writes its rows frozen (``tx.freeze``)."""
    tx.cursor.execute(swap_sql.select_create_child(), (swap_sql.quoted(child).as_string(tx.cursor),
                                                       check.as_string(tx.cursor), str(parent)))
    statement = tx.cursor.fetchone()[0]
    if statement is None:
        raise LoadError(f"{parent}: the table does not exist (dropped while this process ran?); nothing was written")
    tx.cursor.execute(statement)
    tx.freeze = child


def build_indexes(tx: PartitionTransaction, parent: TableName, child: TableName) -> int:
    """The parent's indexes built on ``child``, after its rows are in (one sort each, not row by row); how many."""
    tx.cursor.execute(swap_sql.select_parent_indexes(), (swap_sql.quoted(child).as_string(tx.cursor), str(parent)))
    statements = [statement for (statement,) in tx.cursor.fetchall()]
    for statement in statements:
        tx.cursor.execute(statement)
    return len(statements)


def lock_for_swap(tx: PartitionTransaction, parent: TableName, lock_timeout_s: int, try_ms: int = SWAP_LOCK_TRY_MS
                  ) -> float:
    """Take ``parent``'s ACCESS EXCLUSIVE lock (see the module docstring); returns the seconds waited. Each request
    waits ``try_ms`` at most, then gives way to the readers it held up and asks again after a pause; past
    ``lock_timeout_s`` (0: no limit) the load fails, rolled back."""
    started = time.monotonic()
    tx.cursor.execute(swap_sql.show_lock_timeout())
    own = tx.cursor.fetchone()[0]  # the transaction's own, restored once the lock is granted
    request = [(q.set_local("lock_timeout"), (f"{try_ms}ms",)), (swap_sql.lock_exclusive(parent), ())]
    while True:
        if not attempt_statements(tx, request, LOCK_TIMEOUT):
            waited = time.monotonic() - started
            if lock_timeout_s and waited > lock_timeout_s:
                raise LoadError(f"{parent}: the swap waited {waited:.0f} s for the table's lock, held by a long query "
                                f"or another load's swap, and [load] lock_timeout_s = {lock_timeout_s} ran out; "
                                f"nothing was written: rerun later") from None
            time.sleep(random.uniform(0.01, 0.05))  # let the readers it held up through
            continue
        tx.cursor.execute(q.set_local("lock_timeout"), (own,))
        return time.monotonic() - started


def swap_child(tx: PartitionTransaction, parent: TableName, new: TableName, name: str, start: Sequence[Any],
               stop: Sequence[Any]) -> bool:
    """Under the parent's lock: drop the old child ``name`` (if ``parent`` has one so named), name the new one so,
    attach it for its bound (its CHECK constraint proves the bound: no scan); whether there was an old child."""
    child = TableName(parent.schema, name)
    tx.cursor.execute(swap_sql.select_is_child(), (str(child), str(parent)))
    old = bool(tx.cursor.fetchone()[0])
    if old:
        tx.cursor.execute(swap_sql.drop_table(child))
    tx.cursor.execute(swap_sql.rename_table(new, name))
    tx.cursor.execute(swap_sql.attach_partition(parent, child, start, stop))
    return old


def drop_expired(tx: PartitionTransaction, marker: TableName, child: TableName, key: str, date: Any) -> bool:
    """Under the parent's lock: drop an expired child and its marker row, unless a load of that partition holds its
    advisory lock now (never waited for: the next load drops it); whether it was dropped."""
    tx.cursor.execute(swap_sql.try_advisory_xact_lock(), lock_key(ScopedTable.parse(key), date))
    if not tx.cursor.fetchone()[0]:
        return False
    tx.cursor.execute(swap_sql.drop_table(child))
    tx.cursor.execute(swap_sql.delete_marker_of(marker), (key, date))
    return True
