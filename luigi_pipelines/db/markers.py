"""Markers, failures and status queries: which partitions are complete and what they were made from, failed
attempts (recorded, superseded), and the windows and summaries that ``status`` shows."""
from __future__ import annotations

import dataclasses
import datetime
import logging
import socket
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import psycopg2
import psycopg2.errors
import psycopg2.extensions

from .. import sql as q
from ..partitions import ScopedTable, TableName
from ..settings import DatabaseSettings
from .session import connect
from .transaction import PartitionTransaction
from .translate import primary_message

logger = logging.getLogger(__name__)


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
        logger.warning("could not clear superseded failure records in %s: %s", failures, primary_message(exc))
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
