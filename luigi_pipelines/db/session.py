"""Connections: one per process and settings, reused across tasks (``session``), and the fork handling that keeps a
forked child off its parent's connections."""
from __future__ import annotations

import os
import select
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import psycopg2
import psycopg2.extensions

from .. import runtime
from .. import sql as q
from ..errors import ConfigurationError
from ..settings import DatabaseSettings


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


def _close_copies(pool: dict[tuple, _Pooled]) -> None:
    """In a forked child: close the copies of the parent's connections without ending the parent's sessions.

    Closing a libpq connection sends the server a Terminate message on its socket, which the child shares
    with the parent; so the child's copy of each socket is first pointed at /dev/null."""
    devnull = os.open(os.devnull, os.O_RDWR)
    try:
        for pooled in pool.values():
            if not pooled.conn.closed:
                os.dup2(devnull, pooled.conn.fileno())
                pooled.conn.close()
    finally:
        os.close(devnull)


def _close_all(pool: dict[tuple, _Pooled]) -> None:
    """Close a process's pooled connections (at its exit, or ``runtime.forget``)."""
    for key in list(pool):
        _drop(key, pool)


# One connection per process and settings, reused by the tasks the process runs one after another (see
# ``session``): a ``runtime`` slot, so a forked child never uses (or ends) its parent's connections and makes
# its own, and a process's are closed at its exit.
_POOL: runtime.Slot[dict[tuple, _Pooled]] = runtime.Slot("database connections", dict, inherited=_close_copies,
                                                          forgotten=_close_all)
_POOL_LOCK = runtime.Slot("database pool lock", threading.Lock)  # a forked child makes its own


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
    key = (settings, _pg_environment())
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
    with _POOL_LOCK.get():
        pooled = _POOL.get().get(key)
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
    for pooled in list(_POOL.get().values()):
        if pooled.conn is conn:
            return pooled.checked
    return set()


def _pool(key: tuple, settings: DatabaseSettings) -> _Pooled:
    pooled = _POOL.get()[key] = _Pooled(_connect(settings))
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


def _drop(key: tuple, pool: dict[tuple, _Pooled] | None = None) -> None:
    pooled = (_POOL.get() if pool is None else pool).pop(key, None)
    if pooled is not None and not pooled.conn.closed:
        try:
            pooled.conn.close()
        except psycopg2.Error:
            pass


def close_sessions() -> None:
    """Close this process's pooled connections (tests; at exit the runtime does it). Other processes' are left alone."""
    _close_all(_POOL.get())


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
