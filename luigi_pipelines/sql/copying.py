"""COPY from STDIN in CSV mode, the staging table an object is copied to first, and JSON lines' stage (each line
COPYed verbatim into ``jsonb``, then mapped to the columns by the server)."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from psycopg2 import sql

from ..partitions import TableName
from .names import Column, table_ident


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


def copies_into(statement: sql.Composable, table: TableName) -> bool:
    """Whether ``statement`` is ``copy_from_stdin``'s COPY into ``table``."""
    return isinstance(statement, sql.Composed) and len(statement.seq) > 1 and statement.seq[1] == table_ident(table)


def frozen_copy(statement: sql.Composed) -> sql.Composed:
    """``copy_from_stdin``'s statement with ``FREEZE`` among its options: ``... WITH (FORMAT csv, ..., FREEZE)``. The
    table must have been created (or truncated) in the same transaction, outside any savepoint."""
    return sql.Composed([*statement.seq[:-1], sql.SQL(", FREEZE)")])


def copy_where(statement: sql.Composable, condition: sql.Composable) -> sql.Composed:
    """``copy_from_stdin``'s statement (``FREEZE`` or not) with a ``WHERE`` (PostgreSQL >= 12): ``... WITH (...) WHERE
    <condition>``; a ``condition`` that raises for a row fails the COPY on its line."""
    return sql.Composed([statement, sql.SQL(" WHERE "), condition])


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
