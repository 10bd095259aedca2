"""The catalog and DDL: whether tables exist, their columns, keys and types; race-free creation of tables and of the
marker, rejects and failures tables, and the marker table's upgrade."""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import psycopg2
import psycopg2.errors
import psycopg2.extensions

from .. import sql as q
from ..layouts import ExistingColumn
from ..partitions import TableName
from .translate import NO_PRIVILEGE, translating

# One fixed advisory lock key serialises every luigi_pipelines DDL statement in a database, so that
# CREATE ... IF NOT EXISTS run by many processes at once never trips over the catalog's unique indexes.
_DDL_LOCK = (0x6C70, 0x0DD1)


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
    tables, so a database made before it existed gets it too, and one of the marker table's columns, for those
    added since the first marker tables: ``load_id``, ``skipped_keys``, ``checks``).

    A marker table made before one of those columns gets it (nullable: no rewrite, old rows keep NULL),
    once, under the DDL lock: no manual migration.
    """
    ensure_table(conn, failures, [q.create_marker_table(marker), q.create_marker_date_index(marker),
                                  q.create_rejects_table(rejects), q.create_failures_table(failures)])
    present = {column.name for column in table_columns(conn, marker)}
    for column, _ in q.MARKER_ADDED_COLUMNS:
        if column not in present:
            _add_marker_column(conn, marker, column)


def _add_marker_column(conn: psycopg2.extensions.connection, marker: TableName, column: str) -> None:
    fix = f"its owner runs once: {q.add_marker_column(marker, column).as_string(conn)}"
    with translating(f"the marker table {marker} predates {column} and this user may not add it", NO_PRIVILEGE,
                     fix=fix), conn, conn.cursor() as cur:
        cur.execute(q.advisory_xact_lock(), _DDL_LOCK)
        cur.execute(q.add_marker_column(marker, column))


def _regclass(conn: psycopg2.extensions.connection, table: TableName) -> str:
    """``table`` as ``to_regclass`` reads it: quoted, so that a name with capitals is not folded to lower case."""
    return q.table_ident(table).as_string(conn)


def unique_keys(conn: psycopg2.extensions.connection, table: TableName) -> list[frozenset[str]]:
    """The column sets of ``table``'s unique indexes that can back a merge key (``sql.select_unique_keys``)."""
    with conn, conn.cursor() as cur:
        cur.execute(q.select_unique_keys(), (_regclass(conn, table),))
        return [frozenset(names) for (names,) in cur.fetchall()]


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
    """Each of ``types`` as PostgreSQL names it, with its category (``to_regtype``); None for one it does not know.

    One statement for all of them (a process's first load pays this); only when one does not parse, which makes
    that statement fail, is each asked on its own, to tell which."""
    names = list(dict.fromkeys(types))
    try:
        return _resolve(conn, names)
    except psycopg2.errors.SyntaxError:
        pass
    resolved: dict[str, tuple[str, str] | None] = {}
    for name in names:
        try:
            resolved.update(_resolve(conn, [name]))
        except psycopg2.errors.SyntaxError:
            resolved[name] = None
    return resolved


def _resolve(conn: psycopg2.extensions.connection, names: list[str]) -> dict[str, tuple[str, str] | None]:
    with conn, conn.cursor() as cur:
        cur.execute(q.resolve_types(), (names,))
        rows = cur.fetchall()
    return {name: (shown, category) if shown else None for name, shown, category in rows}


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
