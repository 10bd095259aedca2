"""The partition transaction: its advisory lock and marker read, COPY (also in a savepoint), the delete, count and
read of a partition's rows, the merge's table lock and checks, and the marker, rejects and failure rows written in it."""
from __future__ import annotations

import datetime
import json
import socket
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol

import psycopg2
import psycopg2.errors
import psycopg2.extensions

from .. import sql as q
from ..errors import BadInputError, CopyAborted
from ..partitions import ScopedTable, TableName, lock_key, table_lock_key
from .session import checks_of
from .translate import BAD_DATA, LOCK_TIMEOUT, translate, translating


class SupportsRead(Protocol):
    def read(self, size: int = -1) -> bytes: ...


_SAVEPOINT = "luigi_pipelines_attempt"
_READ_CURSOR = "luigi_pipelines_upstream"


@dataclass
class PartitionTransaction:
    """The state of one open partition transaction (see ``partition_transaction``)."""

    cursor: psycopg2.extensions.cursor
    key: ScopedTable
    date: datetime.date
    previous: dict[str, Any] | None
    started_at: datetime.datetime
    sources: list[dict[str, Any]] = field(default_factory=list)
    rows: int = 0
    rejected: int = 0
    bytes: int = 0
    load_id: uuid.UUID = field(default_factory=uuid.uuid4)  # this load's id: in the marker, and in lineage columns
    stop: datetime.date | None = None  # the date after the partition's last, when it covers more than ``date`` (a month)
    skipped: list[str] = field(default_factory=list)  # keys under the prefix that looked like data, left out by keys
    checks: list[dict[str, Any]] | None = None  # the data checks' figures (``checks.CheckResult.record``), if declared
    freeze: TableName | None = None  # a table created in this transaction, which a COPY straight into it writes frozen
    guard: q.PartitionGuard | None = None  # the WHERE of a COPY straight into ``target`` that refuses other rows
    guarded: int = 0  # of ``rows``, those copied under ``guard``: known to be the partition's without a count

    @property
    def target(self) -> TableName:
        return self.key.table

    @property
    def span(self) -> bool:
        """Whether the partition's rows are those of a range of dates, ``[date, stop)``, not of ``date`` alone."""
        return self.stop is not None and self.stop != self.date + datetime.timedelta(days=1)

    def add(self, source: dict[str, Any], rows: int, size: int) -> None:
        """Account for one source (an S3 object, an upstream partition) in the marker to be written."""
        self.sources.append(source)
        self.rows += rows
        self.bytes += size

    @property
    def done(self) -> bool:
        """Whether the partition was already complete when the lock was granted."""
        return self.previous is not None


@contextmanager
def partition_transaction(
    conn: psycopg2.extensions.connection,
    marker: TableName,
    key: ScopedTable,
    date: datetime.date,
    lock_timeout_s: int = 0,
    stop: datetime.date | None = None,
) -> Iterator[PartitionTransaction]:
    """One transaction holding the partition's advisory lock, committed once when the block ends.

    On entry the lock is taken (waiting for any other loader of the same partition, from any
    process or host) and the marker read; the caller checks ``done``, writes the data and calls
    ``write_marker``. Any exception rolls everything back, lock included.
    """
    started = datetime.datetime.now(datetime.timezone.utc)
    with _transaction(conn), conn.cursor() as cur:
        if lock_timeout_s:
            cur.execute(q.set_local("lock_timeout"), (f"{lock_timeout_s}s",))
        cur.execute(q.advisory_xact_lock(), lock_key(key, date))
        cur.execute(q.select_marker(marker), (str(key), date))
        row = cur.fetchone()
        previous = None if row is None else dict(zip(q.MARKER_FIELDS, row, strict=True))
        yield PartitionTransaction(cur, key, date, previous, started, stop=stop)


@contextmanager
def _transaction(conn: psycopg2.extensions.connection) -> Iterator[None]:
    """Commit when the block ends, roll back on any exception.

    Unlike ``with conn``, a connection the server already closed (terminated backend, restart) is
    not rolled back, so the caller sees the real error instead of "connection already closed".
    """
    try:
        yield
    except BaseException:
        if not conn.closed:
            conn.rollback()
        raise
    conn.commit()


def delete_partition(tx: PartitionTransaction, date_column: str) -> int:
    """Delete the partition's rows (of its scope only); returns how many there were."""
    tx.cursor.execute(q.delete_partition(tx.target, date_column, tx.key.columns, tx.span), _partition_params(tx))
    return tx.cursor.rowcount


def _partition_params(tx: PartitionTransaction) -> tuple[Any, ...]:
    return (tx.date, *((tx.stop,) if tx.span else ()), *(value for _, value in tx.key.scope))


def lock_table(tx: PartitionTransaction, rows: ScopedTable | None = None) -> None:
    """Take the advisory lock of the partition's whole table (and scope; or of ``rows``), after the partition's own:
    merge loads of one table apply one partition at a time, whatever their dates."""
    rows = rows or tx.key
    with translating(f"{rows.describe()} {tx.date}", LOCK_TIMEOUT, lock=f"another merge of {rows.describe()} holds the "
                     f"table's lock, and [load] lock_timeout_s ran out: a merge of another date is running"):
        tx.cursor.execute(q.advisory_xact_lock(), table_lock_key(rows))


def newest_partition(tx: PartitionTransaction, marker: TableName, keys: Sequence[str]
                     ) -> tuple[datetime.date, str] | None:
    """Of the marker keys ``keys``, the newest date with a marker row and the newest key of that date (by the
    order of ``keys``), read in ``tx``: a merge's newest applied partition."""
    tx.cursor.execute(q.select_newest_dates(marker), (list(keys),))
    rows = tx.cursor.fetchall()
    if not rows:
        return None
    rank = {key: n for n, key in enumerate(keys)}
    key, date = max(rows, key=lambda r: (r[1], rank.get(r[0], 0)))
    return date, key


def delete_absent(tx: PartitionTransaction, key: Sequence[str], rows: ScopedTable | None = None) -> int:
    """A snapshot's deletes: the rows of the table (of the scope, or of ``rows``) whose key the merge stage lacks."""
    scope = (rows or tx.key).scope
    tx.cursor.execute(q.delete_absent(tx.target, key, tuple(c for c, _ in scope)), tuple(v for _, v in scope))
    return tx.cursor.rowcount


def keys_of_date(tx: PartitionTransaction, marker: TableName) -> dict[ScopedTable, str]:
    """Every marker key of the table on ``tx.date`` (any scope), with the family that wrote it."""
    tx.cursor.execute(q.select_keys_of_date(marker), (tx.date, str(tx.target)))
    return {ScopedTable.parse(key): family for key, family in tx.cursor.fetchall()}


def keys_of_table(tx: PartitionTransaction, marker: TableName) -> list[tuple[ScopedTable, str]]:
    """Every marker key of the table on any date (any scope), with each family that wrote it (a merge's check)."""
    tx.cursor.execute(q.select_keys_of_table(marker), (str(tx.target),))
    return [(ScopedTable.parse(key), family) for key, family in tx.cursor.fetchall()]


def fill_columns(tx: PartitionTransaction, values: dict[str, str]) -> None:
    """Give filled columns (see ``sql.create_table``) their values for the rest of this transaction."""
    for column, value in values.items():
        tx.cursor.execute(q.set_local(q.fill_setting(column)), (value,))


@dataclass
class PartitionRows:
    """The rows of an upstream partition as a one-pass iterator of tuples, counted as they are read."""

    cursor: psycopg2.extensions.cursor
    read: int = 0

    def __iter__(self) -> Iterator[tuple]:
        for row in self.cursor:
            self.read += 1
            yield row


@contextmanager
def read_rows(tx: PartitionTransaction, rows: ScopedTable, date_column: str, start: datetime.date,
              stop: datetime.date, columns: Sequence[str], batch_rows: int = 10_000) -> Iterator[PartitionRows]:
    """The rows of ``rows`` (a table and scope) whose ``date_column`` lies in ``[start, stop)`` (without a date
    column, all of them), in ``tx``'s transaction, through a server-side (named) cursor that fetches ``batch_rows``
    at a time: memory stays bounded by the batch, whatever the partition's size. The rows are tuples (immutable
    input for a pure transform); the cursor is closed when the block ends."""
    span = stop != start + datetime.timedelta(days=1)
    statement = q.select_partition(rows.table, date_column, columns, rows.columns, span)
    dates = () if not date_column else (start, stop) if span else (start,)
    with tx.cursor.connection.cursor(name=_READ_CURSOR) as cursor:
        cursor.itersize = batch_rows
        cursor.execute(statement, (*dates, *(value for _, value in rows.scope)))
        yield PartitionRows(cursor)


def insert_from_query(tx: PartitionTransaction, statement: q.sql.Composable, params: dict[str, Any]) -> int:
    """Run a set-based transform's ``INSERT ... SELECT`` (``sql.insert_from_query``); returns the rows inserted."""
    tx.cursor.execute(statement, params or None)
    return tx.cursor.rowcount


def guard_copies(tx: PartitionTransaction, date_column: str) -> None:
    """Have the COPYs straight into the partition's table refuse, on its line, a row of another date or scope
    (``sql.partition_guard``; PostgreSQL >= 12 only): rows so copied need no ``count_partition`` (``tx.guarded``).
    Not into a table with row triggers of its own: a BEFORE trigger may change a row after the guard has passed it.
    A table found without them is noted with the connection's other table checks (``checks_of``): a trigger created
    later is seen by the next connection (a new process, or after this one's connection is replaced)."""
    conn = tx.cursor.connection
    if conn.server_version < 120000:
        return
    checks, untriggered = checks_of(conn), ("no row triggers", tx.target)
    if untriggered not in checks:
        tx.cursor.execute(q.has_row_triggers(), (q.table_ident(tx.target).as_string(conn),))
        if tx.cursor.fetchone()[0]:
            return
        checks.add(untriggered)
    tx.guard = q.partition_guard(date_column, tx.key.scope, tx.date, tx.stop if tx.span else None)


def count_partition(tx: PartitionTransaction, date_column: str) -> int:
    tx.cursor.execute(q.count_partition(tx.target, date_column, tx.key.columns, tx.span), _partition_params(tx))
    return int(tx.cursor.fetchone()[0])


def count_outside_by_key(tx: PartitionTransaction, key_column: str, date_column: str, keys: Sequence[str]
                         ) -> dict[str, int]:
    """Of the objects ``keys`` (recorded in the lineage column ``key_column``), how many rows each put
    outside the partition. A scan of the table: for an error message, not for the common path."""
    tx.cursor.execute(q.count_outside_by_key(tx.target, key_column, date_column, tx.key.columns, tx.span),
                      (list(keys), *_partition_params(tx)))
    return dict(tx.cursor.fetchall())


def execute(tx: PartitionTransaction, statement: q.sql.Composable, params: Sequence[Any] = ()) -> int:
    """Run one statement in the transaction; returns its row count."""
    tx.cursor.execute(statement, params or None)
    return tx.cursor.rowcount


def fetch_one(tx: PartitionTransaction, statement: q.sql.Composable, params: Sequence[Any] = ()) -> tuple | None:
    """Run one query in the transaction; returns its first row (None when it has none)."""
    tx.cursor.execute(statement, params or None)
    return tx.cursor.fetchone()


def copy_stream(
    tx: PartitionTransaction, statement: q.sql.Composable, reader: SupportsRead, source: str, buffer_size: int,
    where: q.sql.Composable | None = None,
) -> int:
    """Feed ``reader`` to ``COPY ... FROM STDIN`` (with ``where``, only the rows it holds true for:
    ``tx.guard``'s); returns the rows copied.

    PostgreSQL's data errors become ``BadInputError`` naming ``source``, the line and the column;
    an exception raised by ``reader`` itself reaches psycopg2 only as text and becomes
    ``CopyAborted`` (the reader's owner knows the real one). A COPY into ``tx.freeze`` writes its rows frozen
    (``COPY ... FREEZE``: no later vacuum freeze or hint-bit rewrite); not in a savepoint, where PostgreSQL refuses it.
    """
    if tx.freeze is not None and q.copies_into(statement, tx.freeze):
        statement = q.frozen_copy(statement)
    if where is not None:
        statement = q.copy_where(statement, where)
    return _copy(tx, statement, reader, source, buffer_size)


def _copy(
    tx: PartitionTransaction, statement: q.sql.Composable, reader: SupportsRead, source: str, buffer_size: int
) -> int:
    try:
        tx.cursor.copy_expert(statement, reader, size=buffer_size)
    except (*BAD_DATA, psycopg2.OperationalError) as exc:  # a reader's exception: QueryCanceled, an OperationalError
        raise translate(exc, source, statement="COPY", closed=bool(tx.cursor.connection.closed)) from exc
    return tx.cursor.rowcount


def copy_in_savepoint(
    tx: PartitionTransaction, statement: q.sql.Composable, reader: SupportsRead, source: str, buffer_size: int
) -> int | BadInputError:
    """``copy_stream`` that undoes only itself on bad input and returns the error instead of raising."""
    return attempt(tx, lambda: _copy(tx, statement, reader, source, buffer_size))


def tentative_copy(tx: PartitionTransaction, statement: q.sql.Composable, reader: SupportsRead, source: str,
                   buffer_size: int, keep: Callable[[int], bool], where: q.sql.Composable | None = None
                   ) -> int | BadInputError | CopyAborted | None:
    """``copy_stream`` in a savepoint, kept only if ``keep(rows)``: the rows copied; else None, or the error of the data
    (``BadInputError``) or of the reader (``CopyAborted``), everything of it undone and the transaction still usable."""
    tx.cursor.execute(q.savepoint(_SAVEPOINT))
    try:
        rows = copy_stream(tx, statement, reader, source, buffer_size, where)
    except (BadInputError, CopyAborted) as exc:
        tx.cursor.execute(q.rollback_to_savepoint(_SAVEPOINT))
        return exc
    kept = keep(rows)
    tx.cursor.execute(q.release_savepoint(_SAVEPOINT) if kept else q.rollback_to_savepoint(_SAVEPOINT))
    return rows if kept else None


def attempt(tx: PartitionTransaction, step: Callable[[], int], keep: bool = True) -> int | BadInputError:
    """Run ``step`` in a savepoint: its row count, its work kept (with ``keep``; else undone as well), or the
    ``BadInputError`` it raised, with everything it did undone and the transaction still usable."""
    tx.cursor.execute(q.savepoint(_SAVEPOINT))
    try:
        rows = step()
    except BadInputError as exc:
        tx.cursor.execute(q.rollback_to_savepoint(_SAVEPOINT))
        return exc
    tx.cursor.execute(q.release_savepoint(_SAVEPOINT) if keep else q.rollback_to_savepoint(_SAVEPOINT))
    return rows


def attempt_statements(tx: PartitionTransaction, statements: Sequence[tuple[q.sql.Composable, Sequence[Any]]],
                       errors: tuple[type[psycopg2.Error], ...]) -> bool:
    """Run ``statements`` in a savepoint: True when they ran (kept), False when one raised one of ``errors`` (all of
    them undone, the transaction usable)."""
    tx.cursor.execute(q.savepoint(_SAVEPOINT))
    try:
        for statement, params in statements:
            tx.cursor.execute(statement, params or None)
    except errors:
        tx.cursor.execute(q.rollback_to_savepoint(_SAVEPOINT))
        return False
    tx.cursor.execute(q.release_savepoint(_SAVEPOINT))
    return True


def delete_rejects(tx: PartitionTransaction, rejects: TableName) -> None:
    tx.cursor.execute(q.delete_rejects(rejects), (str(tx.key), tx.date))


def write_rejects(tx: PartitionTransaction, rejects_table: TableName, key: str, rejects: Sequence[Any]) -> None:
    """Insert quarantined rows (objects with ``line``, ``raw`` and ``error``) for one source object."""
    tx.cursor.executemany(
        q.insert_reject(rejects_table),
        [(str(tx.key), tx.date, key, r.line, r.raw, r.error) for r in rejects],
    )


def write_marker(tx: PartitionTransaction, marker: TableName, task_family: str, task_id: str) -> None:
    tx.cursor.execute(
        q.upsert_marker(marker),
        {
            "target_table": str(tx.key),
            "partition_date": tx.date,
            "task_family": task_family,
            "task_id": task_id,
            "rows_loaded": tx.rows,
            "rows_rejected": tx.rejected,
            "bytes_loaded": tx.bytes,
            "source_objects": json.dumps(tx.sources),
            "started_at": tx.started_at,
            "host": socket.gethostname(),
            "load_id": str(tx.load_id),
            "skipped_keys": json.dumps(tx.skipped),
            "checks": None if tx.checks is None else json.dumps(tx.checks),
        },
    )


def clear_failure(tx: PartitionTransaction, failures: TableName) -> None:
    """Forget the partition's failed attempts: called by a successful load, inside its transaction."""
    tx.cursor.execute(q.delete_failure(failures), (str(tx.key), tx.date))
