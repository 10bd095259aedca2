"""Pure partition arithmetic: a (table, scope, date) partition to its marker key, lock key, S3 prefix and
compression, and which keys are data."""
from __future__ import annotations

import datetime
import itertools
import re
import urllib.parse
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from fnmatch import fnmatchcase

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


@dataclass(frozen=True)
class ScopedTable:
    """A table, or the share of it that one source owns: the rows whose ``scope`` columns hold its values.

    Several sources may feed one table (a feed per region, customer, shard): each declares a
    different scope, e.g. ``{"region": "us"}``, and its load replaces only its own rows of a date.
    ``str()`` is the partition's key in the marker table and the lock: the table name alone when
    there is no scope (as before scopes existed), else ``schema.table/region=us``.
    """

    table: TableName
    scope: tuple[tuple[str, str], ...] = ()

    @classmethod
    def of(cls, table: TableName, scope: Mapping[str, str] | None = None) -> ScopedTable:
        items = sorted((scope or {}).items())
        for column, value in items:
            check_identifier(column)
            if not isinstance(value, str):
                raise ValueError(f"scope {column!r}: the value must be a string, not {value!r}")
        return cls(table, tuple(items))

    @classmethod
    def parse(cls, key: str) -> ScopedTable:
        name, _, scope = key.partition("/")
        pairs = (part.split("=", 1) for part in scope.split(",")) if scope else ()
        return cls(TableName.parse(name), tuple((c, urllib.parse.unquote(v)) for c, v in pairs))

    @property
    def columns(self) -> tuple[str, ...]:
        return tuple(column for column, _ in self.scope)

    def overlaps(self, other: ScopedTable) -> bool:
        """Whether a load of one may delete rows of the other: another key of the same table, unless
        both are scopes over the same columns (which split the table's rows between them)."""
        if self.table != other.table or self == other:
            return False
        return not (self.scope and other.scope and self.columns == other.columns)

    def describe(self) -> str:
        return str(self.table) + (" where " + " and ".join(f"{c} = {v!r}" for c, v in self.scope) if self.scope else "")

    def __str__(self) -> str:
        if not self.scope:
            return str(self.table)
        return f"{self.table}/" + ",".join(f"{c}={urllib.parse.quote(v, safe='')}" for c, v in self.scope)


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


def prefixes_apart(template: str, hourly: bool = False) -> bool:
    """Whether ``template`` gives every date (every hour, if ``hourly``) a prefix of its own that is not
    the start of another's, tried over two years of dates (and two days of hours).

    A load that takes its partition's date from the key (``date_from = partition_date()``) relies on
    it: ``{date:%Y-%m}/`` would label a month's rows with each of its dates, and ``{date:%Y-%m-%-d}``
    without a ``/`` would list the 10th to the 19th under the 1st.
    """
    start = datetime.datetime(2000, 1, 1)
    times = {start + datetime.timedelta(days=n) for n in range(800)}
    if hourly:
        times |= {start + datetime.timedelta(hours=n) for n in range(48)}
    rendered = sorted({template.format(date=t if hourly else t.date()) for t in times})
    return len(rendered) == len(times) and not any(b.startswith(a) for a, b in itertools.pairwise(rendered))


def lock_key(table: TableName | ScopedTable, date: datetime.date) -> tuple[int, int]:
    """The two int4 keys of ``pg_advisory_xact_lock`` for a partition.

    The first is a CRC of the table name and scope (a collision only makes two tables' loads of the
    same date wait for each other), the second the date's ordinal, which is unique.
    """
    crc = zlib.crc32(str(table).encode())
    return crc - (1 << 32) if crc >= (1 << 31) else crc, date.toordinal()


def table_lock_key(table: TableName | ScopedTable) -> tuple[int, int]:
    """The advisory lock keys of a whole table (and scope), taken by merge loads so that they apply one
    date at a time: ``lock_key``'s first key, and 0, which no date's ordinal is."""
    return lock_key(table, datetime.date.min)[0], 0


# Names that by convention are not data: what Hadoop and Spark write beside their output files
# (_SUCCESS, _temporary/..., _metadata, .part-00000.crc) and hidden dot-files. Hadoop's input
# formats skip the same ("_" and "." prefixed names).
CONVENTIONAL_SKIPS = ("_*", ".*", "*.crc")


@dataclass(frozen=True)
class KeyFilter:
    """Which keys listed under a partition's prefix are its data objects.

    The existence check and the load listing both ask this one filter, so they cannot disagree.
    A key is skipped when it is

    - a folder marker: 0 bytes and ending in ``/`` (what S3 consoles' "Create folder" makes);
    - named by convention as not data: any name below the prefix's folder matching one of ``skip``
      (fnmatch globs on each ``/``-separated name; by default ``_*``, ``.*``, ``*.crc``);
    - not matched by ``patterns``, when some are given: fnmatch globs on the key relative to the
      prefix (``*`` also matches ``/``). ``()`` takes every key.

    >>> KeyFilter(("*.csv",)).skip_reason("d/2019-02-01/", "d/2019-02-01/_SUCCESS", 0)
    "its name '_SUCCESS' matches '_*'"
    """

    patterns: tuple[str, ...] = ()
    skip: tuple[str, ...] = CONVENTIONAL_SKIPS

    def skip_reason(self, prefix: str, key: str, size: int) -> str | None:
        """Why ``key`` (of ``size`` bytes, listed under ``prefix``) is not a data object, or None if it is one."""
        return self._not_data(prefix, key, size) or self._unmatched(prefix, key)

    def left_out(self, prefix: str, key: str, size: int) -> bool:
        """Whether ``key`` looks like data but ``patterns`` leave it out: it holds bytes and is neither a folder
        marker nor named as not data by ``skip``. A load names such keys; a snapshot merge refuses to run.

        >>> KeyFilter(("*.csv",)).left_out("d/2019-02-01/", "d/2019-02-01/b.csv.gz", 20)
        True
        """
        return size > 0 and self._not_data(prefix, key, size) is None and self._unmatched(prefix, key) is not None

    def _not_data(self, prefix: str, key: str, size: int) -> str | None:
        if key.endswith("/") and size == 0:
            return "a folder marker"
        folder = prefix[: prefix.rfind("/") + 1]  # a prefix cut inside a name is judged by the whole name
        for name in key[len(folder):].split("/"):
            for glob in self.skip:
                if fnmatchcase(name, glob):
                    return f"its name {name!r} matches {glob!r}"
        return None

    def _unmatched(self, prefix: str, key: str) -> str | None:
        if self.patterns and not any(fnmatchcase(key[len(prefix):], glob) for glob in self.patterns):
            return f"not matched by keys {self.patterns!r}"
        return None


def compression_for(key: str) -> str | None:
    """The compression of an object, from its key's suffix: ``gzip`` for ``.gz``, else ``None``."""
    return "gzip" if key.endswith(".gz") else None


def date_range(start: datetime.date, stop: datetime.date) -> list[datetime.date]:
    """Every date in ``[start, stop)``."""
    return [start + datetime.timedelta(days=n) for n in range((stop - start).days)]
