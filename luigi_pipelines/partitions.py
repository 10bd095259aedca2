"""Pure partition arithmetic: a (table, date) pair to its S3 prefix, lock key and compression."""
from __future__ import annotations

import datetime
import re
import zlib
from dataclasses import dataclass

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_$]*")  # fullmatch: re's $ would also pass a final newline


@dataclass(frozen=True)
class TableName:
    """A schema-qualified table name, validated so that it can only ever be quoted, never injected."""

    schema: str
    name: str

    @classmethod
    def parse(cls, qualified: str, default_schema: str = "public") -> TableName:
        parts = qualified.split(".")
        if len(parts) == 1:
            parts = [default_schema, parts[0]]
        if len(parts) != 2:
            raise ValueError(f"table name {qualified!r} must be 'table' or 'schema.table'")
        for part in parts:
            check_identifier(part)
        return cls(parts[0], parts[1])

    def __str__(self) -> str:
        return f"{self.schema}.{self.name}"


def check_identifier(name: str) -> str:
    """Reject names that are not plain SQL identifiers (letters, digits, _ and $, at most 63 bytes).

    Identifiers are always quoted by psycopg2.sql as well; this check turns a configuration
    mistake (or an injection attempt) into a clear error instead of a strangely named table.
    """
    if not isinstance(name, str) or not _IDENTIFIER.fullmatch(name) or len(name.encode()) > 63:
        raise ValueError(f"{name!r} is not a valid SQL identifier (letters, digits, _ and $; at most 63 bytes)")
    return name


def key_prefix(template: str, date: datetime.date) -> str:
    """Render a key prefix template such as ``transactions/{date:%Y-%m-%d}/`` for one date."""
    return template.format(date=date)


def lock_key(table: TableName, date: datetime.date) -> tuple[int, int]:
    """The two int4 keys of ``pg_advisory_xact_lock`` for a partition.

    The first is a CRC of the table name (a collision only makes two tables' loads of the same
    date wait for each other), the second the date's ordinal, which is unique.
    """
    crc = zlib.crc32(str(table).encode())
    return crc - (1 << 32) if crc >= (1 << 31) else crc, date.toordinal()


def compression_for(key: str) -> str | None:
    """The compression of an object, from its key's suffix: ``gzip`` for ``.gz``, else ``None``."""
    return "gzip" if key.endswith(".gz") else None


def date_range(start: datetime.date, stop: datetime.date) -> list[datetime.date]:
    """Every date in ``[start, stop)``."""
    return [start + datetime.timedelta(days=n) for n in range((stop - start).days)]
