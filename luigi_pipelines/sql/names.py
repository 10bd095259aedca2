"""The names every statement is built from: checked columns and types, quoted tables and identifier lists."""
from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from psycopg2 import sql

from ..partitions import TableName, check_identifier

# fullmatch, and ASCII digits and spaces only: re's $ would also pass a final newline, \d and \s any script's
_COLUMN_TYPE = re.compile(r"[A-Za-z][A-Za-z0-9_ ]*(\( *[0-9]+ *(, *[0-9]+ *)?\))?( with(out)? time zone)?(\[\])?")


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


def identifiers(columns: Sequence[str], prefix: str = "") -> sql.Composed:
    """``"a", "b"`` or, with ``prefix``, ``s."a", s."b"``."""
    return sql.SQL(", ").join(sql.Identifier(prefix, c) if prefix else sql.Identifier(c) for c in columns)
