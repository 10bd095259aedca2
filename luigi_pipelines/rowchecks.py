"""Checks of each row that COPY applies as it reads a staged object (pure: SQL builders, nothing runs here).

A check is a ``CHECK`` constraint of the staging table that calls a function of the session's ``pg_temp``
(``create_functions``) which raises a data error whose message is the row's problem in the user's words;
COPY's context adds the line. So a strict load names the object and the line, and quarantine mode's
segmented COPY sets the row aside with that reason, like any other bad row. The checks cost one
expression per row, in the COPY; the functions run for a bad row only.

- scope: a file column (a CSV column, declared or named by the header) or a JSON key with the name of a
  scope column must hold the scope's value (NULL is another value): a row that its producer labelled for
  another scope is never relabelled by the load.
- JSON lines: an object none of whose keys names a declared column (``{}``, ``{"ID": 3}`` for ``id``) is a
  bad line, unless the decoder allows such lines (``JsonLinesDecoder(unmatched_lines_ok=True)``); a key that
  differs from a declared column only in case is named in the reason.
"""
from __future__ import annotations

import json
from collections.abc import Sequence

from psycopg2 import sql

_REFUSE = sql.SQL("pg_temp.luigi_pipelines_refuse")
_UNMATCHED = sql.SQL("pg_temp.luigi_pipelines_unmatched")
_SCOPE_NOTE = "the value of the task's scope (a row labelled for another scope)"


def create_functions() -> tuple[sql.SQL, sql.SQL]:
    """The functions the checks call (``CREATE OR REPLACE``: a session's ``pg_temp`` keeps them):
    ``luigi_pipelines_refuse(reason)`` raises ``reason``; ``luigi_pipelines_unmatched(line, declared)`` raises
    what is wrong with a JSON object none of whose keys is among ``declared``."""
    return (
        sql.SQL("CREATE OR REPLACE FUNCTION pg_temp.luigi_pipelines_refuse(reason text) RETURNS boolean "
                "LANGUAGE plpgsql AS $refuse$ BEGIN RAISE EXCEPTION USING ERRCODE = 'data_exception', "
                "MESSAGE = reason; END $refuse$"),
        sql.SQL("""CREATE OR REPLACE FUNCTION pg_temp.luigi_pipelines_unmatched(line jsonb, declared text[])
RETURNS boolean LANGUAGE plpgsql AS $unmatched$
DECLARE
    listed text := array_to_string(declared, ', ');
    why text;
BEGIN
    IF line = '{}'::jsonb THEN
        why := format('the line is an empty object: no key names a declared column (%s)', listed);
    ELSE
        SELECT string_agg(format('"%s" is not "%s"', k, d), ', ' ORDER BY k, d) INTO why
            FROM jsonb_object_keys(line) AS k, unnest(declared) AS d WHERE lower(k) = lower(d);
        IF why IS NULL THEN
            SELECT 'its keys are ' || string_agg(format('"%s"', left(k, 64)), ', ') INTO why
                FROM (SELECT k FROM jsonb_object_keys(line) AS k LIMIT 10) AS first_keys;
        END IF;
        why := format('no key of the line names a declared column (%s): %s', listed, why);
    END IF;
    RAISE EXCEPTION USING ERRCODE = 'data_exception', MESSAGE = why;
END $unmatched$"""),
    )


def scope_reason(column: str, value: str) -> str:
    """What a row whose ``column`` does not hold the scope's ``value`` is told (CSV, Parquet)."""
    return f"{column} is not {value!r}, {_SCOPE_NOTE}"


def scope_check(stage_column: str, column: str, value: str) -> sql.Composed:
    """``CHECK ("region"::text IS NOT DISTINCT FROM 'us' OR pg_temp.luigi_pipelines_refuse('region is not ...'))``:
    the stage's ``stage_column`` holds the file's ``column``, which must hold the scope's ``value``."""
    return sql.SQL("CHECK ({}::text IS NOT DISTINCT FROM {} OR {}({}))").format(
        sql.Identifier(stage_column), sql.Literal(value), _REFUSE, sql.Literal(scope_reason(column, value)))


def json_line_check(line: str, declared: Sequence[str], scope: Sequence[tuple[str, str]], any_key: bool,
                    unmatched_ok: bool, refuse_other: bool = False) -> sql.Composed | None:
    """The ``CHECK`` of the staged JSON ``line`` column: an object line needs a key among ``declared`` (any key at
    all, with ``any_key``: an extra column keeps the others), unless ``unmatched_ok``; with ``refuse_other`` it may
    hold no other key (a schema contract's ``extra_fields="refuse"``); a key of a scope column must hold its value.
    A line that is no object passes (the INSERT says what it is). None: nothing to check."""
    raw = sql.Identifier(line)
    cases = []
    if refuse_other:
        other = sql.SQL("({} - {}::text[])").format(raw, sql.Literal(list(declared)))
        cases.append(sql.SQL("WHEN {other} <> '{{}}'::jsonb THEN {refuse}({head} || left({other}::text, 200))").format(
            other=other, refuse=_REFUSE, head=sql.Literal("keys no column declares (extra_fields='refuse'): ")))
    if not unmatched_ok:
        unmatched = sql.SQL("{} = '{{}}'::jsonb").format(raw) if any_key else sql.SQL("NOT {} ?| {}::text[]").format(
            raw, sql.Literal(list(declared)))
        cases.append(sql.SQL("WHEN {} THEN {}({}, {}::text[])").format(unmatched, _UNMATCHED, raw,
                                                                       sql.Literal(list(declared))))
    for column, value in scope:
        key = sql.Literal(column)
        cases.append(sql.SQL("WHEN {raw} ? {key} AND {raw} ->> {key} IS DISTINCT FROM {value} THEN {refuse}({head} "
                             "|| left(({raw} -> {key})::text, 100) || {tail})").format(
            raw=raw, key=key, value=sql.Literal(value), refuse=_REFUSE, head=sql.Literal(f"key {json.dumps(column)} is "),
            tail=sql.Literal(f", not {json.dumps(value)}, {_SCOPE_NOTE}")))
    if not cases:
        return None
    return sql.SQL("CHECK (jsonb_typeof({}) IS DISTINCT FROM 'object' OR CASE {} ELSE true END)").format(
        raw, sql.SQL(" ").join(cases))
