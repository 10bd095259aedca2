"""Data checks' statements (``checks``, run by ``db.run_checks``): set-based SQL over one partition's rows only.

A partition's rows are a ``Rows``: a table (the target, or a merge load's stage) under the alias
``luigi_pipelines_row`` (``p`` in the docstrings below) and the condition that selects the partition's rows of it
(its date or dates and its scope, as literals: the statements take no parameters but those named, so a user's query
may hold a ``%``). Every row check is one ``FILTER`` of one
scan (``row_figures``); ``unique`` is one ``GROUP BY``; a failed check's samples are a ``LIMIT``.
"""
from __future__ import annotations

import datetime
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from psycopg2 import sql

from ..partitions import TableName
from .names import identifiers, table_ident

ALIAS = "luigi_pipelines_row"  # a row of the partition (a bare name of a column would win over a short alias)
CTE = "luigi_pipelines_partition"  # what a sql_check's ``{partition}`` becomes
ROWS = "luigi_pipelines_rows"  # a unique sample's row count
KEYS = "luigi_pipelines_keys"  # a unique sample's object keys
HIDDEN = ("luigi_pipelines_ord",)  # columns of a merge stage that are not the data's
_TRUE, _ALL = sql.SQL("TRUE"), sql.SQL("*")
_BAD = "luigi_pipelines_bad"


@dataclass(frozen=True)
class Rows:
    """A partition's rows: ``SELECT * FROM <table> AS p WHERE <where>``."""

    table: TableName
    where: sql.Composable

    @classmethod
    def every(cls, table: TableName) -> Rows:
        """Every row of ``table`` (a merge load's stage)."""
        return cls(table, _TRUE)

    def select(self, columns: sql.Composable = _ALL) -> sql.Composed:
        return sql.SQL("SELECT {} FROM {} AS {} WHERE {}").format(columns, table_ident(self.table),
                                                                  sql.Identifier(ALIAS), self.where)


def partition_where(date_column: str, scope: Sequence[tuple[str, Any]], date: datetime.date,
                    stop: datetime.date | None = None) -> sql.Composable:
    """``p."day" = '2019-02-01'::date AND p."region" = 'us'``: a partition's rows, ``[date, stop)`` with ``stop``;
    without a date column (a merged table) its scope's rows."""
    parts: list[sql.Composable] = []
    if date_column:
        column = sql.Identifier(ALIAS, date_column)
        parts += [sql.SQL("{} = {}").format(column, sql.Literal(date))] if stop is None else [
            sql.SQL("{0} >= {1} AND {0} < {2}").format(column, sql.Literal(date), sql.Literal(stop))]
    parts += [sql.SQL("{} = {}").format(sql.Identifier(ALIAS, c), sql.Literal(v)) for c, v in scope]
    return sql.SQL(" AND ").join(parts) if parts else _TRUE


def row_figures(rows: Rows, predicates: Sequence[sql.Composable], uniques: Sequence[Sequence[str]] = ()
                ) -> sql.Composed:
    """One scan: the partition's rows, how many rows violate each predicate, and for each column list of
    ``uniques`` how many rows repeat another row's values of them (``surplus``)::

        SELECT count(*), count(*) FILTER (WHERE p."id" IS NULL), ..., count(*) FILTER (WHERE p."id" IS NOT NULL)
            - count(DISTINCT p."id") FILTER (WHERE p."id" IS NOT NULL) FROM "s"."t" AS p WHERE p."day" = '...'

    (``count(DISTINCT)`` sorts in the aggregate: on a million bigints a ``GROUP BY ... HAVING count(*) > 1`` cost 3 to
    5 times as much, its hash spilling to disk on a freshly loaded table without statistics.)
    """
    counts = [sql.SQL("count(*)")] + [sql.SQL("count(*) FILTER (WHERE {})").format(p) for p in predicates]
    return rows.select(sql.SQL(", ").join([*counts, *(_surplus(columns) for columns in uniques)]))


def _surplus(columns: Sequence[str]) -> sql.Composed:
    """How many rows repeat another row's values of ``columns`` (rows with a NULL among them are not compared)."""
    present = sql.SQL(" AND ").join(sql.SQL("{} IS NOT NULL").format(sql.Identifier(ALIAS, c)) for c in columns)
    values = sql.Identifier(ALIAS, columns[0]) if len(columns) == 1 else sql.SQL("({})").format(
        identifiers(columns, ALIAS))
    return sql.SQL("count(*) FILTER (WHERE {0}) - count(DISTINCT {1}) FILTER (WHERE {0})").format(present, values)


def surplus(source: sql.Composable, columns: Sequence[str]) -> sql.Composed:
    """Of ``source`` (a ``SELECT`` whose rows have ``columns``), how many rows repeat another row's values of them:
    ``SELECT <surplus> FROM (<source>) AS p``."""
    return sql.SQL("SELECT {} FROM ({}) AS {}").format(_surplus(columns), source, sql.Identifier(ALIAS))


def _row_json() -> sql.Composed:
    """``to_json(p)``: a row's values, in the table's order (a stage's own columns are left out by the reader)."""
    return sql.SQL("to_json({})").format(sql.Identifier(ALIAS))


def violating_rows(rows: Rows, predicate: sql.Composable, limit: int) -> sql.Composed:
    """The first ``limit`` rows that violate ``predicate``, each as json."""
    return sql.SQL("{} LIMIT {}").format(
        Rows(rows.table, sql.SQL("({}) AND ({})").format(rows.where, predicate)).select(_row_json()), sql.Literal(limit))


def duplicates(rows: sql.Composable, columns: Sequence[str], key_column: str, limit: int) -> sql.Composed:
    """Of ``rows`` (a ``SELECT`` whose rows have ``columns``), the values of ``columns`` on more than one row (NULLs
    are not compared): the first ``limit`` of them (most rows first) as json with their rows and, with a lineage
    ``key_column``, their objects' keys (a failed ``unique``'s samples)::

        SELECT to_json(d) FROM (SELECT "id", count(*) AS luigi_pipelines_rows, ...
            FROM (<rows>) AS p WHERE "id" IS NOT NULL GROUP BY "id" HAVING count(*) > 1) AS d
        ORDER BY d.luigi_pipelines_rows DESC LIMIT 5
    """
    keys = sql.SQL(", array_agg(DISTINCT {}) AS {}").format(sql.Identifier(key_column), sql.Identifier(KEYS)) \
        if key_column else sql.SQL("")
    not_null = sql.SQL(" AND ").join(sql.SQL("{} IS NOT NULL").format(sql.Identifier(c)) for c in columns)
    return sql.SQL(
        "SELECT to_json(luigi_pipelines_dup) FROM (SELECT {cols}, count(*) AS {rows}{keys} "
        "FROM ({source}) AS {p} WHERE {not_null} GROUP BY {cols} HAVING count(*) > 1) AS luigi_pipelines_dup "
        "ORDER BY luigi_pipelines_dup.{rows} DESC LIMIT {limit}"
    ).format(cols=identifiers(columns), rows=sql.Identifier(ROWS), keys=keys, source=rows, p=sql.Identifier(ALIAS),
             not_null=not_null, limit=sql.Literal(limit))


def merged_values(stage: Rows, target: Rows, columns: Sequence[str], merge_key: Sequence[str],
                  key_column: str) -> sql.Composed:
    """The rows a merge's ``unique`` over other columns than its key compares: the stage's, and the table's rows
    (of the scope) of other keys whose values of ``columns`` the stage holds (a row whose key the stage holds is
    replaced by the merge)::

        SELECT "email" FROM stage AS p WHERE TRUE UNION ALL SELECT "email" FROM "s"."t" AS p WHERE <scope>
        AND NOT EXISTS (SELECT FROM stage AS s WHERE s."id" = p."id") AND ("email") IN (SELECT "email" FROM stage)
    """
    wanted = identifiers([*columns, *([key_column] if key_column else [])])
    same_key = sql.SQL(" AND ").join(sql.SQL("{} = {}").format(sql.Identifier("s", k), sql.Identifier(ALIAS, k))
                                     for k in merge_key)
    others = sql.SQL("({}) AND NOT EXISTS (SELECT FROM {} AS s WHERE {}) AND ({}) IN (SELECT {} FROM {})").format(
        target.where, table_ident(stage.table), same_key, identifiers(columns, ALIAS), identifiers(columns),
        table_ident(stage.table))
    return sql.SQL("{} UNION ALL {}").format(stage.select(wanted), Rows(target.table, others).select(wanted))


def recent_rows(marker: TableName) -> sql.Composed:
    """Parameters: marker key, partition date, N. The median of ``rows_loaded`` of the key's last N partitions
    before that date, and how many there were (NULL, 0: none)::

        SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY rows_loaded), count(*) FROM (SELECT rows_loaded
            FROM marker WHERE target_table = %s AND partition_date < %s ORDER BY partition_date DESC LIMIT %s) AS m
    """
    return sql.SQL(
        "SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY rows_loaded), count(*) FROM (SELECT rows_loaded FROM {} "
        "WHERE target_table = %s AND partition_date < %s ORDER BY partition_date DESC LIMIT %s) AS m"
    ).format(table_ident(marker))


def user_check(rows: Rows, query: sql.SQL, limit: int) -> sql.Composed:
    """A ``sql_check``: the user's ``query`` with its ``{partition}`` read as the partition's rows; the number of rows
    it returns, and the first ``limit`` of them as json::

        WITH luigi_pipelines_partition AS (SELECT * FROM "s"."t" AS p WHERE ...)
        SELECT count(*) OVER (), to_json(v) FROM (<query>) AS v LIMIT 5
    """
    return sql.SQL("WITH {} AS ({}) SELECT count(*) OVER (), to_json(luigi_pipelines_found) FROM ({}) AS "
                   "luigi_pipelines_found LIMIT {}").format(
        sql.Identifier(CTE), rows.select(), query.format(partition=sql.Identifier(CTE)), sql.Literal(limit))


def quarantine_rows(rows: Rows, predicate: sql.Composable, rejects: TableName, key_column: str) -> sql.Composed:
    """Parameters: the marker key, the partition date, the line number before the first (the rows get the
    numbers below it, negative: a row set aside by a check has no line of its own), the reason. Moves the rows
    that violate ``predicate`` to the rejects table, each as its jsonb, with its object's key when ``key_column``
    (lineage) holds it::

        WITH bad AS (DELETE FROM "s"."t" AS p WHERE (<where>) AND (<predicate>) RETURNING p.*)
        INSERT INTO rejects (target_table, partition_date, s3_key, line_number, raw_line, error)
        SELECT %s, %s, coalesce(bad."key", ''), %s - row_number() OVER (), (to_jsonb(bad) - ...)::text, %s FROM bad
    """
    key = sql.SQL("coalesce({}::text, '')").format(sql.Identifier(_BAD, key_column)) if key_column else sql.SQL("''")
    return sql.SQL(
        "WITH {bad} AS (DELETE FROM {table} AS {p} WHERE ({where}) AND ({predicate}) RETURNING {p}.*) "
        "INSERT INTO {rejects} (target_table, partition_date, s3_key, line_number, raw_line, error) "
        "SELECT %s, %s, {key}, %s - row_number() OVER (), (to_jsonb({bad}) - {hidden}::text[])::text, %s FROM {bad}"
    ).format(bad=sql.Identifier(_BAD), table=table_ident(rows.table), p=sql.Identifier(ALIAS), where=rows.where,
             predicate=predicate, rejects=table_ident(rejects), key=key, hidden=sql.Literal(list(HIDDEN)))
