"""The newest marked partition of a task's keys, for a table's freshness (``luigi_pipelines.freshness``)."""
from __future__ import annotations

import datetime
from collections.abc import Sequence

import psycopg2
import psycopg2.errors
import psycopg2.extensions

from .. import sql as q
from ..partitions import ScopedTable, TableName


def newest_marked(conn: psycopg2.extensions.connection, marker: TableName,
                  keys: Sequence[ScopedTable]) -> list[tuple[ScopedTable, datetime.date]]:
    """Each of ``keys`` that has a marker row, with its newest marked date (an hourly task has a key per hour of
    the day: its newest hour is the newest of these); empty when none has one, or there is no marker table yet.
    One query (``sql.select_newest_dates``, the merge's own)."""
    by_name = {str(key): key for key in keys}
    if not by_name:
        return []
    try:
        with conn, conn.cursor() as cur:
            cur.execute(q.select_newest_dates(marker), (list(by_name),))
            return [(by_name[key], day) for key, day in cur.fetchall()]
    except psycopg2.errors.UndefinedTable:
        return []
