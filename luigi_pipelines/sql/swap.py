"""Native partitions (``PARTITION BY RANGE``): the parent's clause, the catalog reads of its shape, its children and
its indexes, a new child built from the parent's columns, and the swap's statements (lock, drop, rename, attach).

A child of a partition value is named ``<parent>_p<value>`` (``t_p20190201``, ``t_p2019020113``, ``t_p201902``) and
bound ``FOR VALUES FROM (<first>) TO (<after>)``; a load builds it as ``<child>_new`` and renames it in the swap.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from psycopg2 import sql

from ..partitions import TableName
from .names import identifiers, table_ident

BOUND_CHECK = "partition_bound"  # a new child's CHECK of its bound (``select_create_child``): ATTACH skips its scan


def partition_by(columns: Sequence[str], strategy: str = "RANGE") -> sql.Composed:
    """`` PARTITION BY RANGE ("day"[, "hour"])`` (or ``LIST ("region")``): appended to a ``CREATE TABLE``."""
    if strategy not in ("RANGE", "LIST"):
        raise ValueError(f"partition strategy {strategy!r}: RANGE or LIST")
    return sql.SQL(" PARTITION BY {} ({})").format(sql.SQL("RANGE" if strategy == "RANGE" else "LIST"),
                                                   identifiers(columns))


def create_scope_parent(table: TableName, parent: TableName, value: str, columns: Sequence[str], strategy: str
                        ) -> sql.Composed:
    """``CREATE TABLE IF NOT EXISTS "s"."t_us" PARTITION OF "s"."t" FOR VALUES IN ('us') PARTITION BY RANGE ("day")``:
    a scope's own parent of its partitions' children (or of the next scope column's parents)."""
    return sql.SQL("CREATE TABLE IF NOT EXISTS {} PARTITION OF {} FOR VALUES IN ({}){}").format(
        table_ident(table), table_ident(parent), sql.Literal(value), partition_by(columns, strategy))


def select_shape() -> sql.SQL:
    """Parameter: schema-qualified table. Its kind (``r`` plain, ``p`` partitioned) and of a partitioned one its
    partition key as PostgreSQL writes it, ``RANGE (day, hour)``, ``LIST (region)`` (``pg_get_partkeydef``)."""
    return sql.SQL("SELECT c.relkind::text, pg_catalog.pg_get_partkeydef(c.oid) FROM pg_catalog.pg_class c "
                   "WHERE c.oid = to_regclass(%s)")


def select_children() -> sql.SQL:
    """Parameter: schema-qualified parent. Each child's name and bound (``FOR VALUES FROM (...) TO (...)``,
    ``DEFAULT``), from the catalog: no lock is taken."""
    return sql.SQL(
        "SELECT c.relname::text, pg_catalog.pg_get_expr(c.relpartbound, c.oid) FROM pg_catalog.pg_inherits i "
        "JOIN pg_catalog.pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = to_regclass(%s) ORDER BY 1")


def select_child_names() -> sql.SQL:
    """Parameter: schema-qualified parent. Its children's names (the retention's candidates)."""
    return sql.SQL("SELECT c.relname::text FROM pg_catalog.pg_inherits i JOIN pg_catalog.pg_class c "
                   "ON c.oid = i.inhrelid WHERE i.inhparent = to_regclass(%s)")


def select_is_child() -> sql.SQL:
    """Parameters: schema-qualified child, then parent. Whether the first is a partition of the second."""
    return sql.SQL("SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_inherits WHERE inhrelid = to_regclass(%s) "
                   "AND inhparent = to_regclass(%s))")


def select_create_child() -> sql.SQL:
    """Parameters: the new child (quoted, qualified: ``quoted``), its CHECK's condition (rendered:
    ``bound_condition``), the schema-qualified parent. The ``CREATE TABLE`` of the new child with the parent's
    columns (types, collations, defaults, generation expressions, NOT NULL), written by the server from its catalog
    (``format_type``, ``pg_get_expr``), and ``CONSTRAINT partition_bound CHECK (...)``; NULL if the parent has no
    column (it is gone). A catalog read: no lock on the parent, which ``CREATE TABLE ... (LIKE parent)`` would hold
    until the end of the transaction."""
    return sql.SQL(
        "SELECT CASE WHEN count(*) > 0 THEN format('CREATE TABLE %%s (%%s, CONSTRAINT partition_bound CHECK (%%s))', "
        "%s::text, string_agg(format('%%I %%s%%s%%s%%s', a.attname, pg_catalog.format_type(a.atttypid, a.atttypmod), "
        "CASE WHEN a.attcollation <> t.typcollation THEN ' COLLATE ' || quote_ident(co.collname) ELSE '' END, "
        "CASE WHEN d.adbin IS NULL THEN '' WHEN a.attgenerated = 's' THEN ' GENERATED ALWAYS AS (' || "
        "pg_catalog.pg_get_expr(d.adbin, d.adrelid) || ') STORED' ELSE ' DEFAULT ' || "
        "pg_catalog.pg_get_expr(d.adbin, d.adrelid) END, CASE WHEN a.attnotnull THEN ' NOT NULL' ELSE '' END), "
        "', ' ORDER BY a.attnum), %s::text) END "
        "FROM pg_catalog.pg_attribute a JOIN pg_catalog.pg_type t ON t.oid = a.atttypid "
        "LEFT JOIN pg_catalog.pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum "
        "LEFT JOIN pg_catalog.pg_collation co ON co.oid = a.attcollation "
        "WHERE a.attrelid = to_regclass(%s) AND a.attnum > 0 AND NOT a.attisdropped")


def select_parent_indexes() -> sql.SQL:
    """Parameters: the new child (quoted, qualified: ``quoted``), then the schema-qualified parent. The parent's indexes
    rewritten
    for the child, e.g. ``CREATE INDEX ON "s"."t_p20190201_new" USING btree (day)``: built after the COPY, they are
    what ATTACH matches to the parent's, so that it builds none under the lock."""
    return sql.SQL(
        "SELECT 'CREATE ' || CASE WHEN i.indisunique THEN 'UNIQUE ' ELSE '' END || 'INDEX ON ' || %s || ' ' || "
        "substr(d.def, strpos(d.def, ' USING ') + 1) FROM pg_catalog.pg_index i "
        "CROSS JOIN LATERAL (SELECT pg_catalog.pg_get_indexdef(i.indexrelid) AS def) d "
        "WHERE i.indrelid = to_regclass(%s) ORDER BY i.indexrelid")


def quoted(table: TableName) -> sql.Composed:
    """``"s"."t"``: a table's identifier, e.g. as a query's text parameter (``select_parent_indexes``)."""
    return table_ident(table)


def bound_condition(columns: Sequence[str], start: Sequence[Any], stop: Sequence[Any],
                    scope: Sequence[tuple[str, str]] = ()) -> sql.Composed:
    """``("day") >= ('2019-02-01') AND ("day") < ('2019-02-02') AND "day" IS NOT NULL [AND "region" = 'us']``: the
    rows of a range partition's bound, as a row comparison (how PostgreSQL compares a multi-column range key), and
    of its scope's parents' lists."""
    keys = sql.SQL("({})").format(identifiers(columns))
    return sql.SQL("{0} >= ({1}) AND {0} < ({2}) AND {3}").format(
        keys, sql.SQL(", ").join(map(sql.Literal, start)), sql.SQL(", ").join(map(sql.Literal, stop)),
        sql.SQL(" AND ").join([*(sql.SQL("{} IS NOT NULL").format(sql.Identifier(c)) for c in columns),
                               *(sql.SQL("{} = {}").format(sql.Identifier(c), sql.Literal(v)) for c, v in scope)]))


def show_lock_timeout() -> sql.SQL:
    return sql.SQL("SELECT current_setting('lock_timeout')")


def lock_exclusive(table: TableName) -> sql.Composed:
    """``LOCK TABLE "s"."t" IN ACCESS EXCLUSIVE MODE``: the swap's one lock on the parent, taken first."""
    return sql.SQL("LOCK TABLE {} IN ACCESS EXCLUSIVE MODE").format(table_ident(table))


def drop_table(table: TableName) -> sql.Composed:
    """``DROP TABLE "s"."t_p20190201"``: an old or an expired child (a partition is detached by its drop)."""
    return sql.SQL("DROP TABLE {}").format(table_ident(table))


def rename_table(table: TableName, name: str) -> sql.Composed:
    return sql.SQL("ALTER TABLE {} RENAME TO {}").format(table_ident(table), sql.Identifier(name))


def attach_partition(parent: TableName, child: TableName, start: Sequence[Any], stop: Sequence[Any]) -> sql.Composed:
    """``ALTER TABLE "s"."t" ATTACH PARTITION "s"."t_p20190201" FOR VALUES FROM ('2019-02-01') TO ('2019-02-02')``."""
    return sql.SQL("ALTER TABLE {} ATTACH PARTITION {} FOR VALUES {}").format(
        table_ident(parent), table_ident(child), bound_clause(start, stop))


def bound_clause(start: Sequence[Any], stop: Sequence[Any]) -> sql.Composed:
    return sql.SQL("FROM ({}) TO ({})").format(sql.SQL(", ").join(map(sql.Literal, start)),
                                              sql.SQL(", ").join(map(sql.Literal, stop)))


def create_partition_of(parent: TableName, child: TableName, start: Sequence[Any], stop: Sequence[Any]
                        ) -> sql.Composed:
    """``CREATE TABLE "s"."t_p20190201" PARTITION OF "s"."t" FOR VALUES FROM (...) TO (...)``: a migration's step."""
    return sql.SQL("CREATE TABLE {} PARTITION OF {} FOR VALUES {}").format(
        table_ident(child), table_ident(parent), bound_clause(start, stop))


def try_advisory_xact_lock() -> sql.SQL:
    """Parameters: the two int4 keys of ``partitions.lock_key``. Whether the lock was granted (never waits)."""
    return sql.SQL("SELECT pg_try_advisory_xact_lock(%s, %s)")


def delete_marker() -> sql.SQL:
    """Parameters: a marker key, a partition date; the marker table is formatted in (``delete_marker_of``)."""
    return sql.SQL("DELETE FROM {} WHERE target_table = %s AND partition_date = %s")


def delete_marker_of(marker: TableName) -> sql.Composed:
    """Parameters: a marker key and a partition date. An expired partition's marker row."""
    return delete_marker().format(table_ident(marker))


def migrate_to_partitioned(table: TableName, columns: Sequence[str], unit: str) -> list[sql.Composed]:
    """The statements that turn the plain ``table`` into one partitioned by range on ``columns`` (the date column,
    and an hourly task's hour column), with a child per partition value of its rows (day, hour or month), named as
    the loads name them. Run them in one transaction; the markers stay valid (same partitions, same rows)."""
    plain, ident = TableName(table.schema, f"{table.name}_unpartitioned"[:63]), table_ident(table)
    names = (sql.Literal(table.schema), sql.Literal(f"{table.name}_p"), sql.Literal(table.name))
    if unit == "hour":
        values = sql.SQL("SELECT DISTINCT {0}, {1} FROM {2} WHERE {0} IS NOT NULL AND {1} IS NOT NULL").format(
            sql.Identifier(columns[0]), sql.Identifier(columns[1]), table_ident(plain))
        create = sql.SQL("format('CREATE TABLE %I.%I PARTITION OF %I.%I FOR VALUES FROM (%L, %s) TO (%L, %s)', {0}, "
                         "{1} || to_char(r.d, 'YYYYMMDD') || lpad(r.h::text, 2, '0'), {0}, {2}, r.d, r.h, r.d, "
                         "r.h + 1)").format(*names)
        loop = sql.SQL("SELECT q.d, q.h FROM ({}) q(d, h)").format(values)
    else:
        monthly = unit == "month"
        values = sql.SQL("SELECT DISTINCT date_trunc('month', {0})::date FROM {1} WHERE {0} IS NOT NULL" if monthly
                         else "SELECT DISTINCT {0} FROM {1} WHERE {0} IS NOT NULL").format(
            sql.Identifier(columns[0]), table_ident(plain))
        create = sql.SQL("format('CREATE TABLE %I.%I PARTITION OF %I.%I FOR VALUES FROM (%L) TO (%L)', {0}, {1} || "
                         "to_char(r.d, 'YYYYMM'), {0}, {2}, r.d, (r.d + interval '1 month')::date)" if monthly else
                         "format('CREATE TABLE %I.%I PARTITION OF %I.%I FOR VALUES FROM (%L) TO (%L)', {0}, {1} || "
                         "to_char(r.d, 'YYYYMMDD'), {0}, {2}, r.d, r.d + 1)").format(*names)
        loop = sql.SQL("SELECT q.d FROM ({}) q(d)").format(values)
    return [sql.SQL("ALTER TABLE {} RENAME TO {}").format(ident, sql.Identifier(plain.name)),
            sql.SQL("CREATE TABLE {} (LIKE {} INCLUDING DEFAULTS INCLUDING GENERATED){}").format(
                ident, table_ident(plain), partition_by(columns)),
            sql.SQL("CREATE INDEX ON {} ({})").format(ident, sql.Identifier(columns[0])),
            sql.SQL("DO $$DECLARE r record; BEGIN FOR r IN {} LOOP EXECUTE {}; END LOOP; END$$").format(loop, create),
            sql.SQL("INSERT INTO {} SELECT * FROM {}").format(ident, table_ident(plain)),
            sql.SQL("DROP TABLE {}").format(table_ident(plain))]


def migrate_to_plain(table: TableName) -> list[sql.Composed]:
    """The statements that turn the partitioned ``table`` back into a plain table of the same rows and columns."""
    plain, ident = TableName(table.schema, f"{table.name}_plain"[:63]), table_ident(table)
    return [sql.SQL("CREATE TABLE {} (LIKE {} INCLUDING DEFAULTS INCLUDING GENERATED INCLUDING INDEXES)").format(
                table_ident(plain), ident),
            sql.SQL("INSERT INTO {} SELECT * FROM {}").format(table_ident(plain), ident),
            sql.SQL("DROP TABLE {}").format(ident),
            sql.SQL("ALTER TABLE {} RENAME TO {}").format(table_ident(plain), sql.Identifier(table.name))]


def detach_partition(parent: TableName, child: TableName) -> sql.Composed:
    return sql.SQL("ALTER TABLE {} DETACH PARTITION {}").format(table_ident(parent), table_ident(child))
