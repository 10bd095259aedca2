"""A partition's rows (delete, select, count, a set-based transform's INSERT) and the transaction's own statements:
advisory locks, settings, savepoints (used by ``db.transaction`` and ``db.session``)."""
from __future__ import annotations

import datetime
from collections.abc import Sequence
from dataclasses import dataclass

from psycopg2 import sql

from ..partitions import TableName
from .names import Column, identifiers, table_ident


def _partition_conditions(date_column: str, scope_columns: Sequence[str], span: bool = False,
                          values: Sequence[sql.Composable] = ()) -> list[sql.Composable]:
    """The conditions of ``_partition_rows``, the date's (if any) first, then one per scope column; ``values`` are
    what they compare with (the date, with ``span`` the stop, then the scope's values), by default ``%s``."""
    values = list(values) or [sql.Placeholder()] * ((2 if span else 1) * bool(date_column) + len(scope_columns))
    dated = [] if not date_column else [sql.SQL("{0} >= {1} AND {0} < {2}" if span else "{0} = {1}").format(
        sql.Identifier(date_column), *values[:2 if span else 1])]
    scoped = values[len(values) - len(scope_columns):]
    return [*dated, *(sql.SQL("{} = {}").format(sql.Identifier(c), v) for c, v in zip(scope_columns, scoped, strict=True))]


def _partition_rows(date_column: str, scope_columns: Sequence[str], span: bool = False) -> sql.Composable:
    """``<date_column> = %s AND <scope column> = %s ...``: the rows of one partition. With ``span``, a range of dates,
    ``<date_column> >= %s AND <date_column> < %s`` (a month); without a date column (a merged table), the scope's rows."""
    conditions = _partition_conditions(date_column, scope_columns, span)
    return sql.SQL(" AND ").join(conditions) if conditions else sql.SQL("TRUE")


# What a row outside the partition makes ``partition_guard`` raise, before the sentence that says why.
GUARD_MARKER = "luigi_pipelines outside the partition: "


@dataclass(frozen=True)
class PartitionGuard:
    """``partition_guard``'s condition, and the columns it reads (a COPY must fill them all for it to be exact)."""

    columns: frozenset[str]
    where: sql.Composed


def partition_guard(date_column: str, scope: Sequence[tuple[str, str]], date: datetime.date,
                    stop: datetime.date | None = None) -> PartitionGuard:
    """The ``WHERE`` of a COPY straight into a partition's table (PostgreSQL >= 12): true for a row of the partition,
    as ``_partition_rows`` selects it (with ``stop``, the dates ``[date, stop)``), with the same values inlined; any
    other row (a NULL included) fails the COPY on its line, with an invalid boolean that says why::

        CASE WHEN "day" = '2019-02-01'::date AND "region" = 'us' THEN true ELSE ('luigi_pipelines outside the
        partition: ' || CASE WHEN ("day" = '2019-02-01'::date) IS NOT TRUE THEN 'day ' || coalesce("day"::text,
        'NULL') || ' is not the partition''s date 2019-02-01' WHEN ... END)::boolean END

    No volatile function (COPY would then insert row by row instead of in batches); a scan after the COPY is saved.
    """
    span = stop is not None
    values = [sql.Literal(date), *((sql.Literal(stop),) if span else ()), *(sql.Literal(v) for _, v in scope)]
    conditions = _partition_conditions(date_column, [c for c, _ in scope], span, values)
    wanted = [f"is outside the partition's dates [{date}, {stop})" if span else f"is not the partition's date {date}",
              *(f"is not the partition's {c} '{v}'" for c, v in scope)]
    shown = [sql.SQL("coalesce({}::text, 'NULL')").format(sql.Identifier(date_column)),
             *(sql.SQL("coalesce(quote_literal({}::text), 'NULL')").format(sql.Identifier(c)) for c, _ in scope)]
    reasons = sql.SQL(" ").join(
        sql.SQL("WHEN ({}) IS NOT TRUE THEN {} || {} || {}").format(condition, sql.Literal(f"{column} "), value,
                                                                   sql.Literal(f" {why}"))
        for condition, column, value, why in zip(conditions, [date_column, *(c for c, _ in scope)], shown, wanted,
                                                 strict=True))
    where = sql.SQL("CASE WHEN {} THEN true ELSE ({} || CASE {} ELSE '' END)::boolean END").format(
        sql.SQL(" AND ").join(conditions), sql.Literal(GUARD_MARKER), reasons)
    return PartitionGuard(frozenset([date_column, *(c for c, _ in scope)]), where)


def has_row_triggers() -> sql.SQL:
    """Parameter: a table's qualified name. Whether it has a row trigger of its own (not a constraint's), which could
    change a row after a COPY's ``WHERE`` has seen it."""
    return sql.SQL("SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_trigger WHERE tgrelid = to_regclass(%s) "
                   "AND NOT tgisinternal AND tgtype & 1 = 1)")


def delete_partition(table: TableName, date_column: str, scope_columns: Sequence[str] = (), span: bool = False
                     ) -> sql.Composed:
    """Parameters: the partition date (with ``span``, its first date and the date after its last), then the scope's
    values. ``DELETE FROM t WHERE day = %s [AND region = %s]``."""
    return sql.SQL("DELETE FROM {} WHERE {}").format(table_ident(table), _partition_rows(date_column, scope_columns, span))


def select_partition(table: TableName, date_column: str, columns: Sequence[str],
                     scope_columns: Sequence[str] = (), span: bool = False) -> sql.Composed:
    """Parameters: as ``delete_partition``'s. The rows of one partition, in a stable order::

        SELECT "a", "b" FROM "s"."t" WHERE "day" = %s [AND "region" = %s] ORDER BY "a", "b"
    """
    cols = sql.SQL(", ").join(sql.Identifier(c) for c in columns)
    return sql.SQL("SELECT {} FROM {} WHERE {} ORDER BY {}").format(
        cols, table_ident(table), _partition_rows(date_column, scope_columns, span), cols)


# The name under which a set-based transform's query sees the upstream partition (see ``insert_from_query``).
UPSTREAM = "upstream"


def scope_placeholder(column: str) -> str:
    """The name of the query parameter that carries the upstream scope's value of ``column``."""
    return f"upstream_{column}"


def insert_from_query(target: TableName, columns: Sequence[Column], upstream: TableName, date_column: str,
                      source_columns: Sequence[str], scope_columns: Sequence[str], query: sql.Composable,
                      span: bool = False) -> sql.Composed:
    """Named parameters: ``date`` (with ``span`` also ``stop``, the date after the last), ``upstream_<scope column>``
    and whatever ``query`` uses. A set-based transform::

        WITH "upstream" AS (SELECT "a", "b" FROM "s"."t" WHERE "day" = %(date)s [AND "region" = %(upstream_region)s])
        INSERT INTO "s"."target" ("day", "a", "n") <query>

    ``query`` (a ``psycopg2.sql.Composable``) reads the relation ``upstream``: the upstream partition's
    ``source_columns``, nothing else of that table.
    """
    dated = [] if not date_column else [
        sql.SQL("{0} >= %(date)s AND {0} < %(stop)s" if span else "{0} = %(date)s").format(sql.Identifier(date_column))]
    where = sql.SQL(" AND ").join([*dated, *(sql.SQL("{} = {}").format(sql.Identifier(c), sql.Placeholder(scope_placeholder(c)))
                                             for c in scope_columns)] or [sql.SQL("TRUE")])
    return sql.SQL("WITH {} AS (SELECT {} FROM {} WHERE {}) INSERT INTO {} ({}) {}").format(
        sql.Identifier(UPSTREAM), sql.SQL(", ").join(sql.Identifier(c) for c in source_columns), table_ident(upstream),
        where, table_ident(target), sql.SQL(", ").join(sql.Identifier(c.name) for c in columns), query)


def count_by_date(table: TableName, date_column: str) -> sql.Composed:
    """Rows per date of a whole table."""
    return sql.SQL("SELECT {0}, count(*) FROM {1} GROUP BY {0}").format(sql.Identifier(date_column), table_ident(table))


def count_scoped(table: TableName, scope_columns: Sequence[str] = ()) -> sql.Composed:
    """Parameters: the scope's values. The rows of a table, or of its scope's share of it."""
    where = sql.SQL(" WHERE ") + sql.SQL(" AND ").join(
        sql.SQL("{} = %s").format(sql.Identifier(c)) for c in scope_columns) if scope_columns else sql.SQL("")
    return sql.SQL("SELECT count(*) FROM {}{}").format(table_ident(table), where)


def count_partition(table: TableName, date_column: str, scope_columns: Sequence[str] = (), span: bool = False
                    ) -> sql.Composed:
    """Parameters: as ``delete_partition``'s."""
    return sql.SQL("SELECT count(*) FROM {} WHERE {}").format(
        table_ident(table), _partition_rows(date_column, scope_columns, span))


def count_outside_by_key(table: TableName, key_column: str, date_column: str, scope_columns: Sequence[str] = (),
                         span: bool = False) -> sql.Composed:
    """Parameters: an array of object keys, then as ``delete_partition``'s. Per key (a lineage
    column), how many of its rows are not in the partition: ``SELECT key, count(*) ... GROUP BY key``."""
    return sql.SQL("SELECT {0}, count(*) FROM {1} WHERE {0} = ANY(%s) AND ({2}) IS NOT TRUE GROUP BY 1 ORDER BY 1").format(
        sql.Identifier(key_column), table_ident(table), _partition_rows(date_column, scope_columns, span))


def select_columns(table: TableName, columns: Sequence[str]) -> sql.Composed:
    """``SELECT "a", "b" FROM "s"."t"``: every row of a table (a merged one has no partition to select)."""
    return sql.SQL("SELECT {} FROM {}").format(identifiers(columns), table_ident(table))


def advisory_xact_lock() -> sql.SQL:
    """Parameters: the two int4 keys of ``partitions.lock_key``."""
    return sql.SQL("SELECT pg_advisory_xact_lock(%s, %s)")


def set_local(setting: str) -> sql.Composed:
    """Parameter: the value. ``SELECT set_config('<setting>', %s, true)``: a setting for this transaction only."""
    return sql.SQL("SELECT set_config({}, %s, true)").format(sql.Literal(setting))


def set_session(setting: str) -> sql.Composed:
    """Parameter: the value. ``SELECT set_config('<setting>', %s, false)``: a setting for the rest of the session."""
    return sql.SQL("SELECT set_config({}, %s, false)").format(sql.Literal(setting))


def discard_all() -> sql.SQL:
    """``DISCARD ALL``: a reused connection's session as new (settings, temporary tables, prepared statements,
    session advisory locks); outside a transaction block only."""
    return sql.SQL("DISCARD ALL")


def savepoint(name: str) -> sql.Composed:
    return sql.SQL("SAVEPOINT {}").format(sql.Identifier(name))


def rollback_to_savepoint(name: str) -> sql.Composed:
    return sql.SQL("ROLLBACK TO SAVEPOINT {}").format(sql.Identifier(name))


def release_savepoint(name: str) -> sql.Composed:
    return sql.SQL("RELEASE SAVEPOINT {}").format(sql.Identifier(name))
