"""Pure psycopg2.sql builders for every statement luigi_pipelines runs: DDL, COPY, delete, merge and markers.

Identifiers only ever reach SQL through ``sql.Identifier`` and values through ``sql.Literal`` or
query parameters; column types are checked against a strict pattern before they become SQL.
"""
from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from psycopg2 import sql

from .partitions import TableName, check_identifier

# fullmatch, and ASCII digits and spaces only: re's $ would also pass a final newline, \d and \s any script's
_COLUMN_TYPE = re.compile(r"[A-Za-z][A-Za-z0-9_ ]*(\( *[0-9]+ *(, *[0-9]+ *)?\))?( with(out)? time zone)?(\[\])?")


@dataclass(frozen=True)
class CsvFormat:
    """How the source files are written: the options of PostgreSQL's ``COPY ... (FORMAT csv)``."""

    delimiter: str = ","
    header: bool = True
    check_header: bool = True
    quote: str = '"'
    escape: str = '"'
    null: str = ""
    encoding: str = "UTF8"
    # Match the files' columns to the declared ones by the header's names: any order; file columns
    # not declared are left out (through a staging table); a declared column the header lacks is an error.
    by_name: bool = False

    def __post_init__(self) -> None:
        if self.by_name and not self.header:
            raise ValueError("CsvFormat(by_name=True) needs header=True: without a header, columns go by position")


@dataclass(frozen=True)
class Column:
    """A target column: its name and its SQL type."""

    name: str
    type: str

    def __post_init__(self) -> None:
        check_identifier(self.name)
        if not _COLUMN_TYPE.fullmatch(self.type):
            raise ValueError(f"column {self.name!r}: {self.type!r} is not an accepted SQL type")


def columns_of(spec: Sequence[tuple[str, str]] | Sequence[Column]) -> tuple[Column, ...]:
    """Columns from ``(name, type)`` pairs (or ``Column`` objects)."""
    return tuple(c if isinstance(c, Column) else Column(*c) for c in spec)


def table_ident(table: TableName) -> sql.Identifier:
    return sql.Identifier(table.schema, table.name)


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


def resolve_type() -> sql.SQL:
    """Parameter: a declared SQL type. The type as PostgreSQL names it and its category (``pg_type.typcategory``);
    NULLs when PostgreSQL knows no such type (``to_regtype``; a type that does not parse raises instead)."""
    return sql.SQL("SELECT format_type(t.oid, NULL), t.typcategory FROM (SELECT to_regtype(%s) AS oid) r "
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


def _partition_rows(date_column: str, scope_columns: Sequence[str], span: bool = False) -> sql.Composable:
    """``<date_column> = %s AND <scope column> = %s ...``: the rows of one partition. With ``span``, a range of dates,
    ``<date_column> >= %s AND <date_column> < %s`` (a month); without a date column (a merged table), the scope's rows."""
    dated = [] if not date_column else [sql.SQL("{0} >= %s AND {0} < %s" if span else "{0} = %s").format(
        sql.Identifier(date_column))]
    conditions = [*dated, *(sql.SQL("{} = %s").format(sql.Identifier(c)) for c in scope_columns)]
    return sql.SQL(" AND ").join(conditions) if conditions else sql.SQL("TRUE")


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


def copy_from_stdin(table: TableName, columns: Sequence[Column], fmt: CsvFormat) -> sql.Composed:
    header: sql.Composable = sql.SQL("MATCH" if fmt.check_header else "true") if fmt.header else sql.SQL("false")
    options = sql.SQL(
        "FORMAT csv, DELIMITER {}, HEADER {}, QUOTE {}, ESCAPE {}, NULL {}, ENCODING {}"
    ).format(
        sql.Literal(fmt.delimiter),
        header,
        sql.Literal(fmt.quote),
        sql.Literal(fmt.escape),
        sql.Literal(fmt.null),
        sql.Literal(fmt.encoding),
    )
    return sql.SQL("COPY {} ({}) FROM STDIN WITH ({})").format(
        table_ident(table), sql.SQL(", ").join(sql.Identifier(c.name) for c in columns), options
    )


STAGE = TableName("pg_temp", "luigi_pipelines_stage")  # where an object with undeclared columns is copied first


def create_stage(columns: Sequence[Column], checks: Sequence[sql.Composable] = ()) -> sql.Composed:
    """``CREATE TEMP TABLE luigi_pipelines_stage (<columns>[, <checks>]) ON COMMIT DROP``: one object's file, all its
    columns (``checks``: table constraints, ``rowchecks``)."""
    defs = [*(sql.SQL("{} {}").format(sql.Identifier(c.name), sql.SQL(c.type)) for c in columns), *checks]
    return sql.SQL("CREATE TEMP TABLE {} ({}) ON COMMIT DROP").format(sql.Identifier(STAGE.name), sql.SQL(", ").join(defs))


def insert_from_stage(table: TableName, columns: Sequence[Column]) -> sql.Composed:
    """``INSERT INTO t (<columns>) SELECT <columns> FROM pg_temp.luigi_pipelines_stage``: the declared ones."""
    names = sql.SQL(", ").join(sql.Identifier(c.name) for c in columns)
    return sql.SQL("INSERT INTO {} ({}) SELECT {} FROM {}").format(table_ident(table), names, names, table_ident(STAGE))


def drop_stage() -> sql.Composed:
    return sql.SQL("DROP TABLE {}").format(table_ident(STAGE))


# -- merge loads: a date's rows staged, de-duplicated and merged by key -------------------------

MERGE_STAGE = TableName("pg_temp", "luigi_pipelines_merge")  # a merge load's rows, all objects of the date
MERGE_ORDINAL = "luigi_pipelines_ord"  # the stage's row order: by object (sorted by key), then by line
_LAST = "luigi_pipelines_last"


def _names(columns: Sequence[str], prefix: str = "") -> sql.Composed:
    """``"a", "b"`` or, with ``prefix``, ``s."a", s."b"``."""
    return sql.SQL(", ").join(sql.Identifier(prefix, c) if prefix else sql.Identifier(c) for c in columns)


def _keys_equal(left: str, right: str, key: Sequence[str]) -> sql.Composed:
    """``l."id" = r."id" AND ...``: the merge key of two aliases."""
    return sql.SQL(" AND ").join(sql.SQL("{} = {}").format(sql.Identifier(left, c), sql.Identifier(right, c)) for c in key)


def create_merge_stage(columns: Sequence[Column], key: Sequence[str],
                       defaults: Sequence[tuple[Column, sql.Composable]] = ()) -> sql.Composed:
    """The stage of a merge load, in the load's transaction::

        CREATE TEMP TABLE luigi_pipelines_merge ("id" bigint NOT NULL, "name" text, "source_key" text DEFAULT
            <default>, luigi_pipelines_ord bigint GENERATED ALWAYS AS IDENTITY) ON COMMIT DROP

    ``columns`` are what COPY reads (the key columns among them NOT NULL, so a NULL key fails the COPY
    with its line), ``defaults`` the columns each load fills (scope, lineage) with their defaults. The
    ordinal numbers the rows in the order COPY reads them: the objects in key order, each by line.
    """
    defs = [sql.SQL("{} {}{}").format(sql.Identifier(c.name), sql.SQL(c.type),
                                      sql.SQL(" NOT NULL" if c.name in key else "")) for c in columns]
    defs += [column_with_default(c, d) for c, d in defaults]
    defs.append(sql.SQL("{} bigint GENERATED ALWAYS AS IDENTITY").format(sql.Identifier(MERGE_ORDINAL)))
    return sql.SQL("CREATE TEMP TABLE {} ({}) ON COMMIT DROP").format(sql.Identifier(MERGE_STAGE.name),
                                                                     sql.SQL(", ").join(defs))


def delete_superseded(key: Sequence[str]) -> sql.Composed:
    """Of the staged rows that share a key, delete all but the last (the highest ordinal); the row count is
    how many were superseded::

        DELETE FROM pg_temp.luigi_pipelines_merge AS s USING (SELECT "id", max(luigi_pipelines_ord) AS
            luigi_pipelines_last FROM pg_temp.luigi_pipelines_merge GROUP BY "id" HAVING count(*) > 1) AS d
        WHERE s."id" = d."id" AND s.luigi_pipelines_ord < d.luigi_pipelines_last
    """
    return sql.SQL(
        "DELETE FROM {stage} AS s USING (SELECT {key}, max({ord}) AS {last} FROM {stage} GROUP BY {key} "
        "HAVING count(*) > 1) AS d WHERE {equal} AND {s_ord} < {d_last}"
    ).format(stage=table_ident(MERGE_STAGE), key=_names(key), ord=sql.Identifier(MERGE_ORDINAL),
             last=sql.Identifier(_LAST), equal=_keys_equal("s", "d", key), s_ord=sql.Identifier("s", MERGE_ORDINAL),
             d_last=sql.Identifier("d", _LAST))


def analyze_merge_stage() -> sql.Composed:
    """``ANALYZE pg_temp.luigi_pipelines_merge``: autovacuum never analyzes a temporary table, and the MERGE's
    plan (a hash join for a big date, index probes for a small one) depends on its size."""
    return sql.SQL("ANALYZE {}").format(table_ident(MERGE_STAGE))


def merge_from_stage(table: TableName, key: Sequence[str], compared: Sequence[str], carried: Sequence[str] = (),
                     deleted_flag: str = "") -> sql.Composed:
    """Apply the de-duplicated stage to ``table`` by ``key``; only rows that differ are written::

        MERGE INTO "s"."t" AS t USING pg_temp.luigi_pipelines_merge AS s ON t."id" = s."id"
        WHEN MATCHED AND s."is_deleted" THEN DELETE
        WHEN MATCHED AND ROW(t."name", t."tier") IS DISTINCT FROM ROW(s."name", s."tier")
            THEN UPDATE SET "name" = s."name", "tier" = s."tier", "load_id" = s."load_id"
        WHEN NOT MATCHED AND s."is_deleted" IS NOT TRUE
            THEN INSERT ("id", "name", "tier", "load_id") VALUES (s."id", s."name", s."tier", s."load_id")

    ``compared`` are the columns whose change makes a row changed, ``carried`` further columns written
    with a changed row (lineage). Unlike ``INSERT ... ON CONFLICT DO UPDATE ... WHERE``, which locks every
    conflicting row even when its WHERE is false, MERGE leaves an unchanged row untouched (PostgreSQL 15+).
    """
    flag = sql.Identifier("s", deleted_flag) if deleted_flag else None
    clauses = [sql.SQL("WHEN MATCHED AND {} THEN DELETE").format(flag)] if flag else []
    written = [*compared, *carried]
    if compared:
        clauses.append(sql.SQL("WHEN MATCHED AND ROW({}) IS DISTINCT FROM ROW({}) THEN UPDATE SET {}").format(
            _names(compared, "t"), _names(compared, "s"),
            sql.SQL(", ").join(sql.SQL("{} = {}").format(sql.Identifier(c), sql.Identifier("s", c)) for c in written)))
    inserted = [*key, *written]
    clauses.append(sql.SQL("WHEN NOT MATCHED{} THEN INSERT ({}) VALUES ({})").format(
        sql.SQL(" AND {} IS NOT TRUE").format(flag) if flag else sql.SQL(""), _names(inserted), _names(inserted, "s")))
    return sql.SQL("MERGE INTO {} AS t USING {} AS s ON {} {}").format(
        table_ident(table), table_ident(MERGE_STAGE), _keys_equal("t", "s", key), sql.SQL(" ").join(clauses))


def delete_absent(table: TableName, key: Sequence[str], scope_columns: Sequence[str] = ()) -> sql.Composed:
    """Parameters: the scope's values. A snapshot's deletes: the rows of the table (of the scope) whose key
    the stage lacks::

        DELETE FROM "s"."t" AS t WHERE ["region" = %s AND] NOT EXISTS
            (SELECT 1 FROM pg_temp.luigi_pipelines_merge AS s WHERE t."id" = s."id")
    """
    scope = sql.SQL("").join(sql.SQL("{} = %s AND ").format(sql.Identifier("t", c)) for c in scope_columns)
    return sql.SQL("DELETE FROM {} AS t WHERE {}NOT EXISTS (SELECT 1 FROM {} AS s WHERE {})").format(
        table_ident(table), scope, table_ident(MERGE_STAGE), _keys_equal("t", "s", key))


def select_columns(table: TableName, columns: Sequence[str]) -> sql.Composed:
    """``SELECT "a", "b" FROM "s"."t"``: every row of a table (a merged one has no partition to select)."""
    return sql.SQL("SELECT {} FROM {}").format(_names(columns), table_ident(table))


def primary_key(key: Sequence[str]) -> sql.Composed:
    """``PRIMARY KEY ("id")``: a table constraint, for ``create_table``'s ``extra``."""
    return sql.SQL("PRIMARY KEY ({})").format(_names(key))


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


def select_newest_dates(marker: TableName) -> sql.Composed:
    """Parameter: an array of marker keys. The newest date of each with a marker row (a merge's newest applied)."""
    return sql.SQL("SELECT target_table, max(partition_date) FROM {} WHERE target_table = ANY(%s) GROUP BY 1").format(
        table_ident(marker))



# -- JSON lines: each line COPYed verbatim into a jsonb staging table, then mapped to the columns by the server --

# COPY's CSV mode with a quote and a delimiter that valid JSON never holds raw (control characters must be
# escaped in JSON strings and are no whitespace between tokens): every line passes verbatim, backslashes
# and double quotes included, and an empty line is NULL. The decoder turns those two bytes into a third
# one that JSON also refuses, so a line holding them is a line that is not JSON, never a field split.
JSON_LINES = CsvFormat(delimiter="\x02", header=False, check_header=False, quote="\x01", escape="\x01", null="")
JSON_LINE = Column("raw", "jsonb")
JSON_LINE_NUMBER = "line"


def create_json_stage(checks: Sequence[sql.Composable] = ()) -> sql.Composed:
    """``CREATE TEMP TABLE luigi_pipelines_stage (line bigserial, raw jsonb) ON COMMIT DROP``: one object's lines,
    parsed by COPY and numbered as it reads them (``number_json_lines`` sets where the numbering starts)."""
    return create_stage((Column(JSON_LINE_NUMBER, "bigserial"), JSON_LINE), checks)


def copy_json_lines() -> sql.Composed:
    """``COPY pg_temp.luigi_pipelines_stage (raw) FROM STDIN WITH (FORMAT csv, QUOTE e'\\x01', DELIMITER e'\\x02', ...)``."""
    return copy_from_stdin(STAGE, (JSON_LINE,), JSON_LINES)


def number_json_lines() -> sql.Composed:
    """Parameter: the number of the next line COPY reads (a segment's first line, in quarantine mode).
    ``SELECT setval(pg_get_serial_sequence('pg_temp.luigi_pipelines_stage', 'line'), %s, false)``."""
    return sql.SQL("SELECT setval(pg_get_serial_sequence({}, {}), %s, false)").format(
        sql.Literal(f"{STAGE.schema}.{STAGE.name}"), sql.Literal(JSON_LINE_NUMBER))


def insert_json_lines(table: TableName, columns: Sequence[Column], extra: str = "") -> sql.Composed:
    """Parameters: the first and last line number to insert. The staged lines' objects into the table, each
    declared column from the key of its name, converted to its type by PostgreSQL; empty lines skipped::

        INSERT INTO t ("id", "day") SELECT r."id", r."day" FROM pg_temp.luigi_pipelines_stage AS s
        CROSS JOIN LATERAL jsonb_to_record(s.raw) AS r ("id" bigint, "day" date)
        WHERE s.raw IS NOT NULL AND s.line BETWEEN %s AND %s

    With ``extra`` (a declared ``jsonb`` column), that column gets the keys no other column takes (NULL if none):
    ``NULLIF(s.raw - ARRAY['id', 'day']::text[], '{}'::jsonb)``.
    """
    mapped = [c for c in columns if c.name != extra]
    names = sql.SQL(", ").join(sql.Identifier(c.name) for c in columns)
    values = [sql.SQL("r.{}").format(sql.Identifier(c.name)) if c.name != extra else sql.SQL(
        "NULLIF(s.raw - {}::text[], '{{}}'::jsonb)").format(sql.Literal([c.name for c in mapped])) for c in columns]
    record = sql.SQL(", ").join(sql.SQL("{} {}").format(sql.Identifier(c.name), sql.SQL(c.type)) for c in mapped)
    return sql.SQL("INSERT INTO {} ({}) SELECT {} FROM {} AS s CROSS JOIN LATERAL jsonb_to_record(s.raw) AS r ({}) "
                   "WHERE s.raw IS NOT NULL AND s.{} BETWEEN %s AND %s").format(
        table_ident(table), names, sql.SQL(", ").join(values), table_ident(STAGE), record,
        sql.Identifier(JSON_LINE_NUMBER))


def select_json_line() -> sql.Composed:
    """Parameter: a line number. ``SELECT raw::text FROM pg_temp.luigi_pipelines_stage WHERE line = %s``."""
    return sql.SQL("SELECT {}::text FROM {} WHERE {} = %s").format(
        sql.Identifier(JSON_LINE.name), table_ident(STAGE), sql.Identifier(JSON_LINE_NUMBER))


def index_json_lines() -> tuple[sql.Composed, sql.Composed]:
    """``CREATE INDEX ON pg_temp.luigi_pipelines_stage (line)`` and ``ANALYZE`` it: for the INSERTs of line ranges
    that look for a bad line, so each reads its range, not the whole stage."""
    return (sql.SQL("CREATE INDEX ON {} ({})").format(table_ident(STAGE), sql.Identifier(JSON_LINE_NUMBER)),
            sql.SQL("ANALYZE {}").format(table_ident(STAGE)))


def last_json_line() -> sql.Composed:
    """``SELECT max(line) FROM pg_temp.luigi_pipelines_stage``."""
    return sql.SQL("SELECT max({}) FROM {}").format(sql.Identifier(JSON_LINE_NUMBER), table_ident(STAGE))


# -- the marker table --------------------------------------------------------------------------


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
    PRIMARY KEY (target_table, partition_date))"""
    ).format(table_ident(marker))


# Marker columns that came after the first marker tables, in the order they came, with their types: an existing
# table gets them (nullable, so instantly; its rows keep NULL).
MARKER_ADDED_COLUMNS = (("load_id", sql.SQL("uuid")), ("skipped_keys", sql.SQL("jsonb")))


def add_marker_column(marker: TableName, column: str) -> sql.Composed:
    """``ALTER TABLE marker ADD COLUMN IF NOT EXISTS <column> <type>``, of ``MARKER_ADDED_COLUMNS``."""
    return sql.SQL("ALTER TABLE {} ADD COLUMN IF NOT EXISTS {} {}").format(
        table_ident(marker), sql.Identifier(column), dict(MARKER_ADDED_COLUMNS)[column])


def upsert_marker(marker: TableName) -> sql.Composed:
    """Parameters, by name: the columns of the marker table; ``finished_at`` is the commit's clock."""
    return sql.SQL(
        """INSERT INTO {} (target_table, partition_date, task_family, task_id, rows_loaded, rows_rejected,
                bytes_loaded, source_objects, started_at, finished_at, host, load_id, skipped_keys)
VALUES (%(target_table)s, %(partition_date)s, %(task_family)s, %(task_id)s, %(rows_loaded)s, %(rows_rejected)s,
        %(bytes_loaded)s, %(source_objects)s, %(started_at)s, clock_timestamp(), %(host)s, %(load_id)s,
        %(skipped_keys)s)
ON CONFLICT (target_table, partition_date) DO UPDATE SET
    task_family = EXCLUDED.task_family, task_id = EXCLUDED.task_id, rows_loaded = EXCLUDED.rows_loaded,
    rows_rejected = EXCLUDED.rows_rejected, bytes_loaded = EXCLUDED.bytes_loaded, source_objects = EXCLUDED.source_objects,
    started_at = EXCLUDED.started_at, finished_at = EXCLUDED.finished_at, host = EXCLUDED.host,
    load_id = EXCLUDED.load_id, skipped_keys = EXCLUDED.skipped_keys"""
    ).format(table_ident(marker))


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


def delete_rejects(rejects: TableName) -> sql.Composed:
    """Parameters: target table, partition date."""
    return sql.SQL("DELETE FROM {} WHERE target_table = %s AND partition_date = %s").format(table_ident(rejects))


def insert_reject(rejects: TableName) -> sql.Composed:
    """Parameters: target table, partition date, key, line number, raw line, error."""
    return sql.SQL(
        "INSERT INTO {} (target_table, partition_date, s3_key, line_number, raw_line, error) "
        "VALUES (%s, %s, %s, %s, %s, %s)"
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
                        "finished_at", "host", "task_family", "skipped", "skipped_keys")
SKIPPED_KEYS_SHOWN = 5  # of a marker's skipped_keys, how many ``select_marker_window`` returns


def select_marker_window(marker: TableName) -> sql.Composed:
    """Parameters: target table key, first date, stop date (exclusive). The marker rows of a window, summarised;
    the skipped keys (``to_jsonb(m)``: NULL in a marker table made before them) as a count and the first few."""
    return sql.SQL(
        "SELECT partition_date, rows_loaded, rows_rejected, bytes_loaded, jsonb_array_length(source_objects), "
        "extract(epoch FROM finished_at - started_at)::float8, finished_at, host, task_family, "
        "coalesce(jsonb_array_length(to_jsonb(m) -> 'skipped_keys'), 0), "
        "ARRAY(SELECT jsonb_array_elements_text(to_jsonb(m) -> 'skipped_keys') LIMIT {}) "
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


def create_marker_date_index(marker: TableName) -> sql.Composed:
    index = check_identifier(f"{marker.name}_date_idx"[:63])
    return sql.SQL("CREATE INDEX IF NOT EXISTS {} ON {} (partition_date)").format(sql.Identifier(index), table_ident(marker))


def select_marker_summary(marker: TableName) -> sql.Composed:
    """Parameter: target table. Every marker row of one table, oldest date first."""
    return sql.SQL(
        "SELECT partition_date, rows_loaded, bytes_loaded, jsonb_array_length(source_objects), finished_at, host "
        "FROM {} WHERE target_table = %s ORDER BY partition_date"
    ).format(table_ident(marker))


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
