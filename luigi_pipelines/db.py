"""PostgreSQL effects: connections, race-free DDL, the partition transaction, COPY and marker reads and writes."""
from __future__ import annotations

import dataclasses
import datetime
import json
import logging
import multiprocessing.util
import os
import select
import socket
import threading
import uuid
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol

import psycopg2
import psycopg2.errors
import psycopg2.extensions

from . import sql as q
from .errors import (
    BadInputError,
    ConfigurationError,
    CopyAborted,
    LoadError,
    copy_error_position,
    describe_bad_input,
)
from .layouts import ExistingColumn
from .partitions import ScopedTable, TableName, lock_key, table_lock_key
from .settings import DatabaseSettings

logger = logging.getLogger(__name__)


class SupportsRead(Protocol):
    def read(self, size: int = -1) -> bytes: ...

# One fixed advisory lock key serialises every luigi_pipelines DDL statement in a database, so that
# CREATE ... IF NOT EXISTS run by many processes at once never trips over the catalog's unique indexes.
_DDL_LOCK = (0x6C70, 0x0DD1)
_SAVEPOINT = "luigi_pipelines_copy"
_READ_CURSOR = "luigi_pipelines_upstream"


@contextmanager
def connect(settings: DatabaseSettings) -> Iterator[psycopg2.extensions.connection]:
    """A new connection from ``settings`` (and libpq's environment), closed on every path."""
    conn = _connect(settings)
    try:
        yield conn
    finally:
        conn.close()


@dataclass
class _Pooled:
    """A process's reusable connection, whether it is lent now, and the checks made on it (``checks_of``)."""

    conn: psycopg2.extensions.connection
    in_use: bool = False
    checked: set[Any] = field(default_factory=set)


# One connection per process and settings, reused by the tasks the process runs one after another (see
# ``session``). Keyed by the process id: a forked child never uses (or closes) its parent's connections.
_POOL: dict[tuple, _Pooled] = {}
_POOL_LOCK = threading.Lock()
_HOOKED: set[int] = set()  # the processes that registered their exit hook
_FORK_HOOK: list[bool] = []  # whether the fork hook is registered (children inherit it)


@contextmanager
def session(settings: DatabaseSettings, reset: bool = True) -> Iterator[psycopg2.extensions.connection]:
    """This process's connection for ``settings``, reused across tasks: connecting costs more than a small load.

    Lent to one user at a time (a nested or concurrent user gets a connection of its own, closed after).
    Before it is lent, a connection the server closed meanwhile (a terminated backend, a restart: the
    socket has something to read while idle) is replaced. After each use it is reset: an open
    transaction is rolled back, then ``DISCARD ALL`` drops what the use may have left in the session
    (settings, temporary tables, prepared statements, session advisory locks). A use that raises drops
    the connection, and with it what ``checks_of`` remembered: the next use connects anew. After
    ``fork`` the child closes its inherited copies without ending the parent's sessions, and connects
    on its own. ``reset=False`` is for uses that change no session state (the package's own reads, each
    in a committed transaction): they skip ``DISCARD ALL``.
    """
    key = (os.getpid(), settings, _pg_environment())
    pooled = _lend(key, settings)
    if pooled is None:
        with connect(settings) as conn:
            yield conn
        return
    try:
        yield pooled.conn
    except BaseException:
        _drop(key)
        raise
    try:
        _reset(pooled.conn, discard=reset)
    except psycopg2.Error:
        _drop(key)
    else:
        pooled.in_use = False


def _lend(key: tuple, settings: DatabaseSettings) -> _Pooled | None:
    """The pooled connection of ``key``, marked lent (made or replaced if need be); None while it is lent."""
    with _POOL_LOCK:
        pooled = _POOL.get(key)
        if pooled is not None and pooled.in_use:
            return None
        if pooled is not None and not _usable(pooled.conn):
            _drop(key)
            pooled = None
        if pooled is None:
            pooled = _pool(key, settings)
        pooled.in_use = True
        return pooled


def checks_of(conn: psycopg2.extensions.connection) -> set[Any]:
    """A set where callers note checks (e.g. "this table exists") that hold as long as ``conn`` does: the
    pooled connection's own set, forgotten with it; for any other connection, a new empty set."""
    for pooled in list(_POOL.values()):
        if pooled.conn is conn:
            return pooled.checked
    return set()


def _pool(key: tuple, settings: DatabaseSettings) -> _Pooled:
    if not _FORK_HOOK:  # inherited by forked children, which then forget their parent's connections
        _FORK_HOOK.append(True)
        os.register_at_fork(after_in_child=_forget_inherited)
    if key[0] not in _HOOKED:  # at exit, also of a luigi worker's child (multiprocessing runs this, not atexit)
        _HOOKED.add(key[0])
        multiprocessing.util.Finalize(None, close_sessions, exitpriority=0)
    pooled = _POOL[key] = _Pooled(_connect(settings))
    return pooled


def _usable(conn: psycopg2.extensions.connection) -> bool:
    """Whether an idle pooled connection is still open: the server sends nothing to an idle session unless
    it is ending it (a readable socket means an error message or end of file)."""
    if conn.closed:
        return False
    try:
        readable, _, _ = select.select([conn.fileno()], [], [], 0)
    except (OSError, ValueError, psycopg2.Error):
        return False
    return not readable


def _reset(conn: psycopg2.extensions.connection, discard: bool = True) -> None:
    """Leave nothing of a use behind: no open transaction, no session state (``DISCARD ALL``)."""
    if conn.info.transaction_status != psycopg2.extensions.TRANSACTION_STATUS_IDLE:
        conn.rollback()
    if not discard:
        return
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute(q.discard_all())
    finally:
        conn.autocommit = False


def _drop(key: tuple) -> None:
    pooled = _POOL.pop(key, None)
    if pooled is not None and not pooled.conn.closed:
        try:
            pooled.conn.close()
        except psycopg2.Error:
            pass


def close_sessions() -> None:
    """Close this process's pooled connections (at exit; tests). Other processes' entries are left alone."""
    for key in [k for k in _POOL if k[0] == os.getpid()]:
        _drop(key)


def _forget_inherited() -> None:
    """In a forked child: close the copies of the parent's connections without ending the parent's sessions.

    Closing a libpq connection sends the server a Terminate message on its socket, which the child shares
    with the parent; so the child's copy of each socket is first pointed at /dev/null."""
    global _POOL_LOCK
    _POOL_LOCK = threading.Lock()  # another thread of the parent may have held it at the fork
    inherited = list(_POOL.values())
    _POOL.clear()
    _HOOKED.clear()
    devnull = os.open(os.devnull, os.O_RDWR)
    try:
        for pooled in inherited:
            if not pooled.conn.closed:
                os.dup2(devnull, pooled.conn.fileno())
                pooled.conn.close()
    finally:
        os.close(devnull)


def _pg_environment() -> tuple[tuple[str, str], ...]:
    """libpq's environment (PG*), which decides what unset settings connect to."""
    return tuple(sorted((k, v) for k, v in os.environ.items() if k.startswith("PG")))


def _connect(settings: DatabaseSettings) -> psycopg2.extensions.connection:
    try:
        return psycopg2.connect(**connect_kwargs(settings))
    except psycopg2.ProgrammingError:  # libpq quotes the malformed part of the DSN, which may be the password
        raise ConfigurationError("[database] dsn is not a valid libpq connection string (not shown: it may "
                                 "hold a password)") from None


def connect_kwargs(settings: DatabaseSettings) -> dict[str, Any]:
    """Keyword arguments for ``psycopg2.connect``; unset values are left to libpq's defaults.

    Keepalives only probe a connection with nothing unacknowledged: if the link dies while one end
    still has data in flight (say the server's last reply), that end retransmits for ~15 minutes
    instead, holding the partition lock. TCP_USER_TIMEOUT bounds that case by the same window, on
    both ends (the server's through ``options``).
    """
    s = settings
    given = {"host": s.host, "port": s.port, "dbname": s.dbname, "user": s.user, "password": s.password}
    kwargs: dict[str, Any] = {k: v for k, v in given.items() if v}
    server_keepalives = (
        f"-c tcp_keepalives_idle={s.keepalives_idle} -c tcp_keepalives_interval={s.keepalives_interval} "
        f"-c tcp_keepalives_count={s.keepalives_count} -c tcp_user_timeout={s.user_timeout_ms}"
    )
    kwargs.update(
        dsn=s.dsn,
        connect_timeout=s.connect_timeout,
        application_name=s.application_name,
        keepalives=1,
        keepalives_idle=s.keepalives_idle,
        keepalives_interval=s.keepalives_interval,
        keepalives_count=s.keepalives_count,
        tcp_user_timeout=s.user_timeout_ms,
        options=f"{_user_options(s.dsn)} {server_keepalives}".strip(),
    )
    return kwargs


def _user_options(dsn: str) -> str:
    """Server options the user already set (``options`` in the DSN, else ``PGOPTIONS``): ours are
    appended to them, not put in their place (a search_path or statement_timeout must survive)."""
    try:
        from_dsn = psycopg2.extensions.parse_dsn(dsn).get("options", "") if dsn else ""
    except psycopg2.ProgrammingError:
        from_dsn = ""  # a malformed DSN is reported, without its text, when connecting
    return from_dsn or os.environ.get("PGOPTIONS", "")


def table_exists(conn: psycopg2.extensions.connection, table: TableName) -> bool:
    with conn, conn.cursor() as cur:
        cur.execute(q.table_exists(), (table.schema, table.name))
        return bool(cur.fetchone()[0])


def ensure_table(conn: psycopg2.extensions.connection, table: TableName, ddl: Sequence[q.sql.Composable]) -> None:
    """Run ``ddl`` (idempotent CREATE statements) unless ``table`` exists already; safe to race.

    The table's schema is created first if it is missing. The existence checks keep the common
    path free of DDL (and of CREATE privileges: PostgreSQL checks the database's CREATE right even
    for a ``CREATE SCHEMA IF NOT EXISTS`` that has nothing to do); the advisory lock makes
    concurrent first runs wait for each other instead of failing.
    """
    if table_exists(conn, table):
        return
    with conn, conn.cursor() as cur:
        cur.execute(q.advisory_xact_lock(), _DDL_LOCK)
        cur.execute(q.schema_exists(), (table.schema,))
        if not cur.fetchone()[0]:
            cur.execute(q.create_schema(table.schema))
        for statement in ddl:
            cur.execute(statement)


def ensure_marker_table(conn: psycopg2.extensions.connection, marker: TableName, rejects: TableName,
                        failures: TableName) -> None:
    """The marker table and the rejects and failures tables beside it (a catalog read of the newest of those
    tables, so a database made before it existed gets it too, and one per marker column added since the first
    marker tables: ``load_id``, ``skipped_keys``).

    A marker table made before one of those columns gets it (nullable: no rewrite, old rows keep NULL),
    once, under the DDL lock: no manual migration.
    """
    ensure_table(conn, failures, [q.create_marker_table(marker), q.create_marker_date_index(marker),
                                  q.create_rejects_table(rejects), q.create_failures_table(failures)])
    for column, _ in q.MARKER_ADDED_COLUMNS:
        if column_info(conn, marker, column) is None:
            _add_marker_column(conn, marker, column)


def _add_marker_column(conn: psycopg2.extensions.connection, marker: TableName, column: str) -> None:
    try:
        with conn, conn.cursor() as cur:
            cur.execute(q.advisory_xact_lock(), _DDL_LOCK)
            cur.execute(q.add_marker_column(marker, column))
    except psycopg2.errors.InsufficientPrivilege:
        raise ConfigurationError(f"the marker table {marker} predates {column} and this user may not add it: its "
                                 f"owner runs once: {q.add_marker_column(marker, column).as_string(conn)}") from None


def completed_dates(
    conn: psycopg2.extensions.connection, marker: TableName, key: ScopedTable, dates: Iterable[datetime.date]
) -> dict[datetime.date, str]:
    """Those of ``dates`` whose partition of ``key`` has a marker row, with the task family that wrote
    it: one query, any number of dates."""
    wanted = list(dates)
    if not wanted:
        return {}
    try:
        with conn, conn.cursor() as cur:
            cur.execute(q.select_completed_dates(marker), (str(key), wanted))
            return dict(cur.fetchall())
    except psycopg2.errors.UndefinedTable:
        return {}  # no marker table yet: nothing has ever completed


def completed_partitions(
    conn: psycopg2.extensions.connection, marker: TableName, partitions: Iterable[tuple[ScopedTable, datetime.date]]
) -> dict[tuple[ScopedTable, datetime.date], str]:
    """Those of ``partitions`` (key, date) that have a marker row, with the task family that wrote it:
    one query for any number of them (hourly partitions differ in their keys, daily ones in their dates)."""
    wanted = set(partitions)
    if not wanted:
        return {}
    keys = {str(key): key for key, _ in wanted}
    try:
        with conn, conn.cursor() as cur:
            cur.execute(q.select_completed_partitions(marker), (list(keys), sorted({d for _, d in wanted})))
            found = {(keys[key], day): family for key, day, family in cur.fetchall()}
    except psycopg2.errors.UndefinedTable:
        return {}  # no marker table yet: nothing has ever completed
    return {p: family for p, family in found.items() if p in wanted}


@dataclass(frozen=True)
class MarkerSources:
    """What a marker row says its partition was made from (``source_objects``) and by which load."""

    sources: list[dict[str, Any]]
    load_id: str | None


def marker_sources(conn: psycopg2.extensions.connection, marker: TableName,
                   partitions: Iterable[tuple[ScopedTable, datetime.date]]) -> dict[tuple[ScopedTable, datetime.date],
                                                                                     MarkerSources]:
    """The marker rows' sources and load ids of those of ``partitions`` that have one: one query."""
    try:
        with conn, conn.cursor() as cur:
            return _marker_sources(cur, marker, partitions)
    except psycopg2.errors.UndefinedTable:
        return {}  # no marker table yet: nothing has ever completed


def upstream_markers(tx: PartitionTransaction, marker: TableName, partitions: Iterable[tuple[ScopedTable, datetime.date]]
                     ) -> dict[tuple[ScopedTable, datetime.date], MarkerSources]:
    """``marker_sources`` read inside ``tx`` (a transform reads its upstream's load ids before its rows)."""
    return _marker_sources(tx.cursor, marker, partitions)


def _marker_sources(cur: psycopg2.extensions.cursor, marker: TableName,
                    partitions: Iterable[tuple[ScopedTable, datetime.date]]
                    ) -> dict[tuple[ScopedTable, datetime.date], MarkerSources]:
    wanted = set(partitions)
    if not wanted:
        return {}
    keys = {str(key): key for key, _ in wanted}
    cur.execute(q.select_marker_sources(marker), (list(keys), sorted({d for _, d in wanted})))
    found = {(keys[key], day): MarkerSources(sources, load_id) for key, day, sources, load_id in cur.fetchall()}
    return {p: m for p, m in found.items() if p in wanted}


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
    tx.cursor.execute(q.advisory_xact_lock(), table_lock_key(rows or tx.key))


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


def _regclass(conn: psycopg2.extensions.connection, table: TableName) -> str:
    """``table`` as ``to_regclass`` reads it: quoted, so that a name with capitals is not folded to lower case."""
    return q.table_ident(table).as_string(conn)


def unique_keys(conn: psycopg2.extensions.connection, table: TableName) -> list[frozenset[str]]:
    """The column sets of ``table``'s unique indexes that can back a merge key (``sql.select_unique_keys``)."""
    with conn, conn.cursor() as cur:
        cur.execute(q.select_unique_keys(), (_regclass(conn, table),))
        return [frozenset(names) for (names,) in cur.fetchall()]


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


@dataclass(frozen=True)
class ColumnInfo:
    """What the catalog says of one column of a table: its default expression ("" if none), whether it is generated."""

    default: str
    generated: bool


def column_info(conn: psycopg2.extensions.connection, table: TableName, column: str) -> ColumnInfo | None:
    """The column's default and kind; None when the table has no such column."""
    with conn, conn.cursor() as cur:
        cur.execute(q.select_column(), (_regclass(conn, table), column))
        row = cur.fetchone()
    return None if row is None else ColumnInfo(row[0] or "", bool(row[1]))


def resolve_types(conn: psycopg2.extensions.connection, types: Iterable[str]) -> dict[str, tuple[str, str] | None]:
    """Each of ``types`` as PostgreSQL names it, with its category (``to_regtype``); None for one it does not know."""
    resolved: dict[str, tuple[str, str] | None] = {}
    for name in dict.fromkeys(types):
        try:
            with conn, conn.cursor() as cur:
                cur.execute(q.resolve_type(), (name,))
                shown, category = cur.fetchone()
        except psycopg2.errors.SyntaxError:
            shown = category = None
        resolved[name] = (shown, category) if shown else None
    return resolved


def table_columns(conn: psycopg2.extensions.connection, table: TableName) -> list[ExistingColumn]:
    """Every column of ``table`` as the catalog shows it."""
    with conn, conn.cursor() as cur:
        cur.execute(q.select_table_columns(), (_regclass(conn, table),))
        return [ExistingColumn(*row) for row in cur.fetchall()]


def check_time_zone(conn: psycopg2.extensions.connection, zone: str) -> bool:
    """Whether PostgreSQL knows the time zone ``zone``."""
    try:
        with conn, conn.cursor() as cur:
            cur.execute(q.check_time_zone(), (zone,))
    except psycopg2.errors.InvalidParameterValue:
        return False
    return True


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
    tx.cursor.execute(statement, params)
    return tx.cursor.rowcount


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


def execute(tx: PartitionTransaction, statement: q.sql.Composable) -> int:
    """Run one statement in the transaction; returns its row count."""
    tx.cursor.execute(statement)
    return tx.cursor.rowcount


def copy_stream(
    tx: PartitionTransaction, statement: q.sql.Composable, reader: SupportsRead, source: str, buffer_size: int
) -> int:
    """Feed ``reader`` to ``COPY ... FROM STDIN``; returns the rows copied.

    PostgreSQL's data errors become ``BadInputError`` naming ``source``, the line and the column;
    an exception raised by ``reader`` itself reaches psycopg2 only as text and becomes
    ``CopyAborted`` (the reader's owner knows the real one).
    """
    try:
        tx.cursor.copy_expert(statement, reader, size=buffer_size)
    except (psycopg2.DataError, psycopg2.IntegrityError, psycopg2.errors.StatementTooComplex) as exc:  # a value nested too deep
        position = copy_error_position(exc.diag.context)
        reason = exc.diag.message_primary or str(exc).strip()
        raise BadInputError(describe_bad_input(source, position, reason), position.line, position.column, reason) from exc
    except psycopg2.errors.QueryCanceled as exc:
        raise CopyAborted(f"{source}: COPY cancelled: {exc.diag.message_primary or exc}") from exc
    except psycopg2.OperationalError as exc:
        if tx.cursor.connection.closed:
            raise LoadError(f"{source}: the database connection failed during COPY: {str(exc).strip()}") from exc
        raise LoadError(f"{source}: COPY failed: {exc.diag.message_primary or str(exc).strip()}") from exc
    return tx.cursor.rowcount


def copy_in_savepoint(
    tx: PartitionTransaction, statement: q.sql.Composable, reader: SupportsRead, source: str, buffer_size: int
) -> int | BadInputError:
    """``copy_stream`` that undoes only itself on bad input and returns the error instead of raising."""
    tx.cursor.execute(q.savepoint(_SAVEPOINT))
    try:
        rows = copy_stream(tx, statement, reader, source, buffer_size)
    except BadInputError as exc:
        tx.cursor.execute(q.rollback_to_savepoint(_SAVEPOINT))
        return exc
    tx.cursor.execute(q.release_savepoint(_SAVEPOINT))
    return rows


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
        },
    )


@dataclass(frozen=True)
class Failure:
    """A failed attempt at a partition, as the failures table records it (the server adds the time)."""

    key: ScopedTable
    date: datetime.date
    task_family: str
    task_id: str
    error_class: str
    message: str  # one line
    s3_key: str | None = None
    host: str = field(default_factory=socket.gethostname)


def record_failure(settings: DatabaseSettings, failures: TableName, failure: Failure, timeout_s: int = 2) -> bool:
    """Write ``failure`` on a connection of its own, in autocommit: the load's transaction has rolled back,
    so this is the only trace of the attempt. Connecting and waiting for a lock are each bounded by
    ``timeout_s``, the statement by a second more; its own errors are logged, never raised (they must not hide the load's
    error). Returns whether it was written."""
    bounded = dataclasses.replace(settings, connect_timeout=max(2, min(settings.connect_timeout, timeout_s)),
                                  application_name=f"{settings.application_name} failure record")
    try:
        with connect(bounded) as conn:
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute(q.set_session("lock_timeout"), (f"{timeout_s}s",))
                cur.execute(q.set_session("statement_timeout"), (f"{timeout_s + 1}s",))
                cur.execute(q.upsert_failure(failures), {
                    "target_table": str(failure.key), "partition_date": failure.date,
                    "task_family": failure.task_family, "task_id": failure.task_id,
                    "error_class": failure.error_class, "message": failure.message, "s3_key": failure.s3_key,
                    "host": failure.host})
        return True
    except Exception as exc:  # whatever it is, the load's own error is the one to report
        logger.warning("%s %s: could not record the failed attempt in %s: %s", failure.key, failure.date, failures,
                       str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__)
        return False


def clear_failure(tx: PartitionTransaction, failures: TableName) -> None:
    """Forget the partition's failed attempts: called by a successful load, inside its transaction."""
    tx.cursor.execute(q.delete_failure(failures), (str(tx.key), tx.date))


def server_clock(conn: psycopg2.extensions.connection) -> datetime.datetime:
    """The server's clock now (failure records are stamped with it, not with this host's)."""
    with conn, conn.cursor() as cur:
        cur.execute(q.server_clock())
        return cur.fetchone()[0]


def supersede_failures(conn: psycopg2.extensions.connection, failures: TableName,
                       partitions: Sequence[tuple[ScopedTable, datetime.date]], before: datetime.datetime
                       ) -> list[tuple[str, datetime.date, str]]:
    """Delete the failure records of ``partitions`` made before ``before``: a check that began then found each of
    them loaded and its sources equal to its marker, so the table holds what the sources say and the failed
    attempt is history. A record made after ``before`` (an attempt that failed while the check ran) stays.
    Returns (key, date, error class) of each record deleted; its own errors are logged, never raised."""
    if not partitions:
        return []
    try:
        with conn, conn.cursor() as cur:
            cur.execute(q.delete_superseded_failures(failures),
                        ([str(k) for k, _ in partitions], [d for _, d in partitions], before))
            return list(cur.fetchall())
    except psycopg2.errors.UndefinedTable:
        return []  # no failure ever recorded
    except psycopg2.Error as exc:  # e.g. a read-only monitoring user: status still reports what it found
        logger.warning("could not clear superseded failure records in %s: %s", failures, _primary(exc))
        return []


def _rows_of_window(conn: psycopg2.extensions.connection, statement: q.sql.Composable, key: ScopedTable,
                    start: datetime.date, stop: datetime.date, fields: Sequence[str]) -> list[dict[str, Any]]:
    try:
        with conn, conn.cursor() as cur:
            cur.execute(statement, (str(key), start, stop))
            return [dict(zip(fields, row, strict=True)) for row in cur.fetchall()]
    except psycopg2.errors.UndefinedTable:
        return []  # nothing recorded yet


def marker_window(conn: psycopg2.extensions.connection, marker: TableName, key: ScopedTable,
                  start: datetime.date, stop: datetime.date) -> list[dict[str, Any]]:
    """The marker rows of ``key`` in ``[start, stop)``, summarised (``sql.MARKER_WINDOW_FIELDS``)."""
    return _rows_of_window(conn, q.select_marker_window(marker), key, start, stop, q.MARKER_WINDOW_FIELDS)


def failures_window(conn: psycopg2.extensions.connection, failures: TableName, key: ScopedTable,
                    start: datetime.date, stop: datetime.date) -> list[dict[str, Any]]:
    """The failure rows of ``key`` in ``[start, stop)`` (``sql.FAILURE_FIELDS``)."""
    return _rows_of_window(conn, q.select_failures(failures), key, start, stop, q.FAILURE_FIELDS)


def recorded_span(conn: psycopg2.extensions.connection, marker: TableName, failures: TableName,
                  key: ScopedTable) -> tuple[datetime.date, datetime.date] | None:
    """The first and last date of ``key`` with a marker or a failure row; None if there is none."""
    try:
        with conn, conn.cursor() as cur:
            cur.execute(q.select_recorded_span(marker, failures), (str(key), str(key)))
            first, last = cur.fetchone()
    except psycopg2.errors.UndefinedTable:
        return None
    return None if first is None else (first, last)


def count_rows(conn: psycopg2.extensions.connection, key: ScopedTable) -> int | None:
    """The rows of ``key``'s table (of its scope's share, with a scope) now; None when there is no such table."""
    try:
        with conn, conn.cursor() as cur:
            cur.execute(q.count_scoped(key.table, key.columns), [value for _, value in key.scope])
            return int(cur.fetchone()[0])
    except psycopg2.errors.UndefinedTable:
        return None


def marker_summary(conn: psycopg2.extensions.connection, marker: TableName, target: TableName) -> list[tuple]:
    """Every marker row of ``target``: date, rows, bytes, object count, finish time, host."""
    try:
        with conn, conn.cursor() as cur:
            cur.execute(q.select_marker_summary(marker), (str(target),))
            return list(cur.fetchall())
    except psycopg2.errors.UndefinedTable:
        return []


@contextmanager
def describe_errors(key: ScopedTable, date: datetime.date, lock_timeout_s: int) -> Iterator[None]:
    """Database errors that are not about the data become one line naming the partition and what to do."""
    try:
        yield
    except psycopg2.errors.LockNotAvailable as exc:
        raise LoadError(f"{key} {date}: another load of this partition holds its lock, and [load] lock_timeout_s "
                        f"= {lock_timeout_s} ran out: it is being loaded now; rerun later") from exc
    except (psycopg2.errors.UndefinedColumn, psycopg2.errors.InvalidColumnReference,
            psycopg2.errors.GeneratedAlways) as exc:
        raise ConfigurationError(f"{key} {date}: {_primary(exc)}: the table does not match the declared columns "
                                 f"(generated columns cannot be loaded; every declared column must exist): fix "
                                 f"`columns` or the table") from exc
    except psycopg2.errors.InsufficientPrivilege as exc:
        raise ConfigurationError(f"{key} {date}: {_primary(exc)}: grant the loading user the right") from exc
    except (psycopg2.DatabaseError, psycopg2.InterfaceError) as exc:
        if isinstance(exc, psycopg2.OperationalError):
            raise LoadError(f"{key} {date}: database error: {_primary(exc)}; nothing was written: rerun") from exc
        raise


def _primary(exc: psycopg2.Error) -> str:
    return (exc.diag.message_primary if exc.diag else None) or str(exc).strip().splitlines()[0]
