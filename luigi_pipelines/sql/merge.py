"""Merge loads: a date's rows staged, de-duplicated and merged by key; a snapshot's deletes; the newest merged date."""
from __future__ import annotations

from collections.abc import Sequence

from psycopg2 import sql

from ..partitions import TableName
from .catalog import column_with_default
from .names import Column, identifiers, table_ident

MERGE_STAGE = TableName("pg_temp", "luigi_pipelines_merge")  # a merge load's rows, all objects of the date


MERGE_ORDINAL = "luigi_pipelines_ord"  # the stage's row order: by object (sorted by key), then by line
_LAST = "luigi_pipelines_last"


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
    ).format(stage=table_ident(MERGE_STAGE), key=identifiers(key), ord=sql.Identifier(MERGE_ORDINAL),
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
            identifiers(compared, "t"), identifiers(compared, "s"),
            sql.SQL(", ").join(sql.SQL("{} = {}").format(sql.Identifier(c), sql.Identifier("s", c)) for c in written)))
    inserted = [*key, *written]
    clauses.append(sql.SQL("WHEN NOT MATCHED{} THEN INSERT ({}) VALUES ({})").format(
        sql.SQL(" AND {} IS NOT TRUE").format(flag) if flag else sql.SQL(""), identifiers(inserted), identifiers(inserted, "s")))
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


def select_newest_dates(marker: TableName) -> sql.Composed:
    """Parameter: an array of marker keys. The newest date of each with a marker row (a merge's newest applied)."""
    return sql.SQL("SELECT target_table, max(partition_date) FROM {} WHERE target_table = ANY(%s) GROUP BY 1").format(
        table_ident(marker))
