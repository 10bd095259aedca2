"""The marker, rejects and failures rows: written in (or, for a failure, beside) the partition's transaction, and
read by completeness checks, staleness checks and ``status``."""
from __future__ import annotations

from psycopg2 import sql

from ..partitions import TableName
from .names import table_ident


def upsert_marker(marker: TableName) -> sql.Composed:
    """Parameters, by name: the columns of the marker table; ``finished_at`` is the commit's clock."""
    return sql.SQL(
        """INSERT INTO {} (target_table, partition_date, task_family, task_id, rows_loaded, rows_rejected,
                bytes_loaded, source_objects, started_at, finished_at, host, load_id, skipped_keys,
                checks)
VALUES (%(target_table)s, %(partition_date)s, %(task_family)s, %(task_id)s, %(rows_loaded)s, %(rows_rejected)s,
        %(bytes_loaded)s, %(source_objects)s, %(started_at)s, clock_timestamp(), %(host)s, %(load_id)s,
        %(skipped_keys)s, %(checks)s)
ON CONFLICT (target_table, partition_date) DO UPDATE SET
    task_family = EXCLUDED.task_family, task_id = EXCLUDED.task_id, rows_loaded = EXCLUDED.rows_loaded,
    rows_rejected = EXCLUDED.rows_rejected, bytes_loaded = EXCLUDED.bytes_loaded, source_objects = EXCLUDED.source_objects,
    started_at = EXCLUDED.started_at, finished_at = EXCLUDED.finished_at, host = EXCLUDED.host,
    load_id = EXCLUDED.load_id, skipped_keys = EXCLUDED.skipped_keys, checks = EXCLUDED.checks"""
    ).format(table_ident(marker))


def delete_rejects(rejects: TableName) -> sql.Composed:
    """Parameters: target table, partition date."""
    return sql.SQL("DELETE FROM {} WHERE target_table = %s AND partition_date = %s").format(table_ident(rejects))


def insert_reject(rejects: TableName) -> sql.Composed:
    """Parameters: target table, partition date, key, line number, raw line, error."""
    return sql.SQL(
        "INSERT INTO {} (target_table, partition_date, s3_key, line_number, raw_line, error) "
        "VALUES (%s, %s, %s, %s, %s, %s)"
    ).format(table_ident(rejects))


def upsert_failure(failures: TableName) -> sql.Composed:
    """Parameters, by name: the columns but ``failed_at`` (the server's clock) and ``attempts`` (counted)."""
    return sql.SQL(
        """INSERT INTO {0} AS f (target_table, partition_date, task_family, task_id, error_class, message, s3_key, host,
                failed_at)
VALUES (%(target_table)s, %(partition_date)s, %(task_family)s, %(task_id)s, %(error_class)s, %(message)s, %(s3_key)s,
        %(host)s, clock_timestamp())
ON CONFLICT (target_table, partition_date) DO UPDATE SET
    task_family = EXCLUDED.task_family, task_id = EXCLUDED.task_id, error_class = EXCLUDED.error_class,
    message = EXCLUDED.message, s3_key = EXCLUDED.s3_key, host = EXCLUDED.host, failed_at = EXCLUDED.failed_at,
    attempts = f.attempts + 1"""
    ).format(table_ident(failures))


def delete_failure(failures: TableName) -> sql.Composed:
    """Parameters: target table key, partition date."""
    return sql.SQL("DELETE FROM {} WHERE target_table = %s AND partition_date = %s").format(table_ident(failures))


def delete_superseded_failures(failures: TableName) -> sql.Composed:
    """Parameters: an array of target table keys, an array of as many dates, a time. The failure rows of those
    (key, date) pairs recorded before that time, which a check found superseded; returns their key and date::

        DELETE FROM failures WHERE (target_table, partition_date) IN (SELECT * FROM unnest(%s::text[], %s::date[]))
        AND failed_at < %s RETURNING target_table, partition_date, error_class
    """
    return sql.SQL(
        "DELETE FROM {} WHERE (target_table, partition_date) IN (SELECT * FROM unnest(%s::text[], %s::date[])) "
        "AND failed_at < %s RETURNING target_table, partition_date, error_class"
    ).format(table_ident(failures))


def server_clock() -> sql.SQL:
    """``SELECT clock_timestamp()``: the server's clock, the one failure records are stamped with."""
    return sql.SQL("SELECT clock_timestamp()")


# What ``select_failures`` returns per row, in this order.
FAILURE_FIELDS = ("partition_date", "task_family", "error_class", "message", "s3_key", "host", "failed_at", "attempts")


def select_failures(failures: TableName) -> sql.Composed:
    """Parameters: target table key, first date, stop date (exclusive). The failure rows of a window."""
    return sql.SQL("SELECT {} FROM {} WHERE target_table = %s AND partition_date >= %s AND partition_date < %s "
                   "ORDER BY partition_date").format(
        sql.SQL(", ").join(sql.Identifier(f) for f in FAILURE_FIELDS), table_ident(failures))


# What ``select_marker_window`` returns per row, in this order.
MARKER_WINDOW_FIELDS = ("partition_date", "rows_loaded", "rows_rejected", "bytes_loaded", "objects", "seconds",
                        "finished_at", "host", "task_family", "skipped", "skipped_keys", "checks")


SKIPPED_KEYS_SHOWN = 5  # of a marker's skipped_keys, how many ``select_marker_window`` returns


def select_marker_window(marker: TableName) -> sql.Composed:
    """Parameters: target table key, first date, stop date (exclusive). The marker rows of a window, summarised;
    the skipped keys (``to_jsonb(m)``: NULL in a marker table made before them) as a count and the first few; the
    data checks' figures (NULL without checks)."""
    return sql.SQL(
        "SELECT partition_date, rows_loaded, rows_rejected, bytes_loaded, jsonb_array_length(source_objects), "
        "extract(epoch FROM finished_at - started_at)::float8, finished_at, host, task_family, "
        "coalesce(jsonb_array_length(to_jsonb(m) -> 'skipped_keys'), 0), "
        "ARRAY(SELECT jsonb_array_elements_text(to_jsonb(m) -> 'skipped_keys') LIMIT {}), to_jsonb(m) -> 'checks' "
        "FROM {} AS m WHERE target_table = %s AND partition_date >= %s AND partition_date < %s ORDER BY partition_date"
    ).format(sql.Literal(SKIPPED_KEYS_SHOWN), table_ident(marker))


def select_recorded_span(marker: TableName, failures: TableName) -> sql.Composed:
    """Parameters: target table key, twice. The first and last date with a marker or a failure row."""
    return sql.SQL(
        "SELECT min(d), max(d) FROM (SELECT partition_date FROM {} WHERE target_table = %s UNION ALL "
        "SELECT partition_date FROM {} WHERE target_table = %s) AS recorded (d)"
    ).format(table_ident(marker), table_ident(failures))


# What ``select_marker`` returns of a partition's marker row, in this order.
MARKER_FIELDS = ("rows_loaded", "bytes_loaded", "source_objects", "started_at", "finished_at", "host", "task_id",
                 "task_family")


def select_marker(marker: TableName) -> sql.Composed:
    """Parameters: target table, partition date. ``SELECT <MARKER_FIELDS> FROM marker WHERE ...``."""
    return sql.SQL("SELECT {} FROM {} WHERE target_table = %s AND partition_date = %s").format(
        sql.SQL(", ").join(sql.Identifier(f) for f in MARKER_FIELDS), table_ident(marker))


def select_completed_dates(marker: TableName) -> sql.Composed:
    """Parameters: marker key, an array of dates. One query for any number of dates: (date, task family)."""
    return sql.SQL(
        "SELECT partition_date, task_family FROM {} WHERE target_table = %s AND partition_date = ANY(%s::date[])"
    ).format(table_ident(marker))


def select_completed_partitions(marker: TableName) -> sql.Composed:
    """Parameters: an array of marker keys, an array of dates. Every (key, date, task family) of those
    keys on those dates, one query (the caller keeps the pairs it asked for)."""
    return sql.SQL(
        "SELECT target_table, partition_date, task_family FROM {} "
        "WHERE target_table = ANY(%s::text[]) AND partition_date = ANY(%s::date[])"
    ).format(table_ident(marker))


def select_marker_sources(marker: TableName) -> sql.Composed:
    """Parameters: an array of marker keys, an array of dates. What each of those partitions was made from and
    the load that made it (``NULL`` in a marker table made before ``load_id``), one query::

        SELECT target_table, partition_date, source_objects, to_jsonb(m) ->> 'load_id' FROM marker AS m
        WHERE target_table = ANY(%s::text[]) AND partition_date = ANY(%s::date[])
    """
    return sql.SQL(
        "SELECT target_table, partition_date, source_objects, to_jsonb(m) ->> 'load_id' FROM {} AS m "
        "WHERE target_table = ANY(%s::text[]) AND partition_date = ANY(%s::date[])"
    ).format(table_ident(marker))


def select_keys_of_date(marker: TableName) -> sql.Composed:
    """Parameters: partition date, table name. Every marker key (any scope) of the table on that date, with its family."""
    return sql.SQL(
        "SELECT target_table, task_family FROM {} WHERE partition_date = %s AND split_part(target_table, '/', 1) = %s"
    ).format(table_ident(marker))


def select_keys_of_table(marker: TableName) -> sql.Composed:
    """Parameter: table name. Every marker key (any scope) of the table on any date, with the families that wrote it."""
    return sql.SQL(
        "SELECT DISTINCT target_table, task_family FROM {} WHERE split_part(target_table, '/', 1) = %s"
    ).format(table_ident(marker))


def select_marker_summary(marker: TableName) -> sql.Composed:
    """Parameter: target table. Every marker row of one table, oldest date first."""
    return sql.SQL(
        "SELECT partition_date, rows_loaded, bytes_loaded, jsonb_array_length(source_objects), finished_at, host "
        "FROM {} WHERE target_table = %s ORDER BY partition_date"
    ).format(table_ident(marker))
