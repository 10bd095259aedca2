"""The psycopg2.sql builders: identifiers quoted, values as literals, column types checked."""
import pytest
from psycopg2 import sql

from luigi_pipelines import sql as q
from luigi_pipelines.partitions import TableName


def test_column_types_are_checked():
    assert q.Column("amount", "numeric(12,2)").type == "numeric(12,2)"
    assert q.Column("ts", "timestamp with time zone")
    for bad in ("text); DROP TABLE x; --", "int --", "text'"):
        with pytest.raises(ValueError, match="not an accepted SQL type"):
            q.Column("c", bad)


def test_copy_statement_quotes_identifiers_and_literals():
    stmt = q.copy_from_stdin(TableName("s", "t"), [q.Column("id", "int"), q.Column("Day", "date")],
                             q.CsvFormat(delimiter=";", null="\\N"))
    parts = _flatten(stmt)
    assert sql.Identifier("s", "t") in parts and sql.Identifier("Day") in parts
    assert sql.Literal(";") in parts and sql.Literal("\\N") in parts


def test_copy_header_modes():
    t, cols = TableName("s", "t"), [q.Column("id", "int")]
    assert sql.SQL("MATCH") in _flatten(q.copy_from_stdin(t, cols, q.CsvFormat()))
    assert sql.SQL("true") in _flatten(q.copy_from_stdin(t, cols, q.CsvFormat(check_header=False)))
    assert sql.SQL("false") in _flatten(q.copy_from_stdin(t, cols, q.CsvFormat(header=False)))


def _flatten(composable):
    if isinstance(composable, sql.Composed):
        return [p for part in composable.seq for p in _flatten(part)]
    return [composable]
