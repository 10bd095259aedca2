"""Catalog reads and DDL: schemas, tables, columns and their defaults, types, indexes and keys; the marker, rejects
and failures tables and the marker table's added columns (used by ``db.catalog`` and by ``layouts``)."""
from __future__ import annotations

from collections.abc import Sequence

from psycopg2 import sql

from ..partitions import TableName, check_identifier
from .names import Column, identifiers, table_ident


def create_schema(schema: str) -> sql.Composed:
    return sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema))


def schema_exists() -> sql.SQL:
    """Parameter: schema."""
    return sql.SQL("SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_namespace WHERE nspname = %s)")


def table_exists() -> sql.SQL:
    """Parameters: schema, table."""
    return sql.SQL(
        "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_tables WHERE schemaname = %s AND tablename = %s)"
    )


def create_table(table: TableName, columns: Sequence[Column], filled: Sequence[Column] = (),
                 extra: Sequence[sql.Composable] = ()) -> sql.Composed:
    """``CREATE TABLE IF NOT EXISTS t (<columns>, <filled> DEFAULT current_setting(...), <extra>)``.

    ``filled`` columns are not in the files: each load fills them with a value of its own through
    the column's default (see ``fill_setting``), at COPY speed. ``extra`` are further column
    definitions (``generated_column``, ``column_with_default``).
    """
    defs: list[sql.Composable] = [column_definition(c) for c in columns]
    defs += [column_with_default(c, fill_default(c)) for c in filled]
    defs += list(extra)
    return sql.SQL("CREATE TABLE IF NOT EXISTS {} ({})").format(table_ident(table), sql.SQL(", ").join(defs))


def column_with_default(column: Column, default: sql.Composable) -> sql.Composed:
    """``"c" type DEFAULT <default>``: a column definition."""
    return sql.SQL("{} {} DEFAULT {}").format(sql.Identifier(column.name), sql.SQL(column.type), default)


def generated_column(column: Column, expression: sql.Composable) -> sql.Composed:
    """``"c" type GENERATED ALWAYS AS (<expression>) STORED``: computed by the table, left out of COPY."""
    return sql.SQL("{} {} GENERATED ALWAYS AS ({}) STORED").format(sql.Identifier(column.name), sql.SQL(column.type),
                                                                 expression)


def add_column(table: TableName, definition: sql.Composable) -> sql.Composed:
    """``ALTER TABLE t ADD COLUMN <definition>``: what a user runs to give an existing table a managed column."""
    return alter_table(table, [add_column_action(definition)])


def alter_table(table: TableName, actions: Sequence[sql.Composable]) -> sql.Composed:
    """``ALTER TABLE t <action>, <action>, ...``: one statement that makes every change at once."""
    return sql.SQL("ALTER TABLE {} {}").format(table_ident(table), sql.SQL(", ").join(actions))


def add_column_action(definition: sql.Composable) -> sql.Composed:
    return sql.SQL("ADD COLUMN {}").format(definition)


def column_definition(column: Column) -> sql.Composed:
    """``"c" type``."""
    return sql.SQL("{} {}").format(sql.Identifier(column.name), sql.SQL(column.type))


def set_default_action(column: Column, default: sql.Composable) -> sql.Composed:
    return sql.SQL("ALTER COLUMN {} SET DEFAULT {}").format(sql.Identifier(column.name), default)


def set_type_action(column: Column) -> sql.Composed:
    """``ALTER COLUMN "c" TYPE type USING "c"::type``."""
    return sql.SQL("ALTER COLUMN {0} TYPE {1} USING {0}::{1}").format(sql.Identifier(column.name), sql.SQL(column.type))


def drop_not_null_action(column: str) -> sql.Composed:
    return sql.SQL("ALTER COLUMN {} DROP NOT NULL").format(sql.Identifier(column))


def resolve_types() -> sql.SQL:
    """Parameter: a list of declared SQL types. Each type, as PostgreSQL names it and its category
    (``pg_type.typcategory``); NULLs for one PostgreSQL knows no such type (``to_regtype``; a type that does
    not parse makes the statement raise instead)."""
    return sql.SQL("SELECT r.name, format_type(t.oid, NULL), t.typcategory "
                   "FROM (SELECT name, to_regtype(name) AS oid FROM unnest(%s::text[]) AS name) r "
                   "LEFT JOIN pg_catalog.pg_type t ON t.oid = r.oid")


def select_table_columns() -> sql.SQL:
    """Parameter: schema-qualified table. Every column: name, type, type category, NOT NULL, default expression,
    generated, identity."""
    return sql.SQL(
        "SELECT a.attname, format_type(a.atttypid, a.atttypmod), t.typcategory, a.attnotnull, "
        "coalesce(pg_get_expr(d.adbin, d.adrelid), ''), a.attgenerated = 's', a.attidentity <> '' "
        "FROM pg_catalog.pg_attribute a JOIN pg_catalog.pg_type t ON t.oid = a.atttypid "
        "LEFT JOIN pg_catalog.pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum "
        "WHERE a.attrelid = to_regclass(%s) AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum")


def fill_setting(column: str) -> str:
    """The transaction-local setting whose value a load gives the filled column ``column``."""
    return f"luigi_pipelines.{column.lower()}"


def fill_default(column: Column) -> sql.Composed:
    """``(current_setting('luigi_pipelines.<column>', true))::<type>``: a filled column's default.

    Outside a load the setting is unset, so the default is NULL. (In a session that has itself set
    it in an earlier transaction it reads ''; that case is left to fail a cast loudly rather than
    paid for on every row: a ``NULLIF`` here cost about 8% of COPY's server CPU.)
    """
    return sql.SQL("(current_setting({}, true))::{}").format(sql.Literal(fill_setting(column.name)), sql.SQL(column.type))


def add_fill_default(table: TableName, column: Column) -> sql.Composed:
    """``ALTER TABLE t ALTER COLUMN c SET DEFAULT ...``: what a user runs to let an existing table be filled."""
    return set_default(table, column, fill_default(column))


def set_default(table: TableName, column: Column, default: sql.Composable) -> sql.Composed:
    return alter_table(table, [set_default_action(column, default)])


def select_column() -> sql.SQL:
    """Parameters: schema-qualified table, column. The column's default expression and whether it is
    generated (``attgenerated = 's'``); no row when there is no such column."""
    return sql.SQL(
        "SELECT pg_get_expr(d.adbin, d.adrelid), a.attgenerated = 's' FROM pg_catalog.pg_attribute a "
        "LEFT JOIN pg_catalog.pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum "
        "WHERE a.attrelid = to_regclass(%s) AND a.attname = %s AND NOT a.attisdropped"
    )


def check_time_zone() -> sql.SQL:
    """Parameter: a time zone name. Fails (``InvalidParameterValue``) unless PostgreSQL knows the zone."""
    return sql.SQL("SELECT now() AT TIME ZONE %s")


def create_date_index(table: TableName, date_column: str) -> sql.Composed:
    index = check_identifier(f"{table.name}_{date_column}_idx"[:63])
    return sql.SQL("CREATE INDEX IF NOT EXISTS {} ON {} ({})").format(
        sql.Identifier(index), table_ident(table), sql.Identifier(date_column)
    )


def primary_key(key: Sequence[str]) -> sql.Composed:
    """``PRIMARY KEY ("id")``: a table constraint, for ``create_table``'s ``extra``."""
    return sql.SQL("PRIMARY KEY ({})").format(identifiers(key))


def add_primary_key(table: TableName, key: Sequence[str]) -> sql.Composed:
    """``ALTER TABLE t ADD PRIMARY KEY (...)``: what a user runs to let a table be merged by ``key``."""
    return sql.SQL("ALTER TABLE {} ADD {}").format(table_ident(table), primary_key(key))


def select_unique_keys() -> sql.SQL:
    """Parameter: schema-qualified table. The key columns of each unique index that can back a merge key
    (valid, immediate, not partial, no expressions), one array of names per index."""
    return sql.SQL(
        "SELECT array(SELECT a.attname::text FROM unnest(i.indkey::int2[]) WITH ORDINALITY AS k(attnum, n) "
        "JOIN pg_catalog.pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum "
        "WHERE k.n <= i.indnkeyatts) FROM pg_catalog.pg_index i WHERE i.indrelid = to_regclass(%s) "
        "AND i.indisunique AND i.indisvalid AND i.indimmediate AND i.indpred IS NULL AND i.indexprs IS NULL"
    )


def create_marker_table(marker: TableName) -> sql.Composed:
    return sql.SQL(
        """CREATE TABLE IF NOT EXISTS {} (
    target_table   text        NOT NULL,
    partition_date date        NOT NULL,
    task_family    text        NOT NULL,
    task_id        text        NOT NULL,
    rows_loaded    bigint      NOT NULL,
    rows_rejected  bigint      NOT NULL DEFAULT 0,
    bytes_loaded   bigint      NOT NULL,
    source_objects jsonb       NOT NULL,
    started_at     timestamptz NOT NULL,
    finished_at    timestamptz NOT NULL,
    host           text        NOT NULL,
    load_id        uuid,
    skipped_keys   jsonb,
    checks         jsonb,
    PRIMARY KEY (target_table, partition_date))"""
    ).format(table_ident(marker))


# Marker columns that came after the first marker tables, in the order they came, with their types: an existing
# table gets them (nullable, so instantly; its rows keep NULL).
MARKER_ADDED_COLUMNS = (("load_id", sql.SQL("uuid")), ("skipped_keys", sql.SQL("jsonb")), ("checks", sql.SQL("jsonb")))


def add_marker_column(marker: TableName, column: str) -> sql.Composed:
    """``ALTER TABLE marker ADD COLUMN IF NOT EXISTS <column> <type>``, of ``MARKER_ADDED_COLUMNS``."""
    return sql.SQL("ALTER TABLE {} ADD COLUMN IF NOT EXISTS {} {}").format(
        table_ident(marker), sql.Identifier(column), dict(MARKER_ADDED_COLUMNS)[column])


def create_rejects_table(rejects: TableName) -> sql.Composed:
    """Rows set aside by quarantine mode (``max_bad_rows``), written in the load's own transaction."""
    return sql.SQL(
        """CREATE TABLE IF NOT EXISTS {} (
    target_table   text        NOT NULL,
    partition_date date        NOT NULL,
    s3_key         text        NOT NULL,
    line_number    bigint      NOT NULL,
    raw_line       text        NOT NULL,
    error          text        NOT NULL,
    rejected_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (target_table, partition_date, s3_key, line_number))"""
    ).format(table_ident(rejects))


def create_failures_table(failures: TableName) -> sql.Composed:
    """The last failed attempt of each partition not loaded since: written outside the load's transaction
    (which rolled back), deleted by the next successful load inside its own."""
    return sql.SQL(
        """CREATE TABLE IF NOT EXISTS {} (
    target_table   text        NOT NULL,
    partition_date date        NOT NULL,
    task_family    text        NOT NULL,
    task_id        text        NOT NULL,
    error_class    text        NOT NULL,
    message        text        NOT NULL,
    s3_key         text,
    host           text        NOT NULL,
    failed_at      timestamptz NOT NULL,
    attempts       integer     NOT NULL DEFAULT 1,
    PRIMARY KEY (target_table, partition_date))"""
    ).format(table_ident(failures))


def create_marker_date_index(marker: TableName) -> sql.Composed:
    index = check_identifier(f"{marker.name}_date_idx"[:63])
    return sql.SQL("CREATE INDEX IF NOT EXISTS {} ON {} (partition_date)").format(sql.Identifier(index), table_ident(marker))


def select_table_size() -> sql.SQL:
    """Parameter: schema-qualified table. Its size on disk with its indexes and TOAST (bytes), and the planner's
    estimate of its rows (``reltuples``; -1 or 0 before its first ANALYZE)."""
    return sql.SQL("SELECT pg_total_relation_size(c.oid), c.reltuples::bigint FROM pg_catalog.pg_class c "
                   "WHERE c.oid = to_regclass(%s)")
