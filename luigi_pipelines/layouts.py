"""How a load's table relates to its files (pure): where each row's date comes from, lineage columns, the table's DDL.

A load task's ``columns`` are what its files hold. The table may hold more, none of them read
from the files and none costing per-row Python work:

- the date column, when the files have none: filled with the partition's date by the load
  (``partition_date()``), or computed by the table from file columns as a stored generated column
  (``make_date("year", "month", "day")``, ``local_date("time_hour", "America/New_York")``, or a
  generated column of the user's own DDL: ``generated_column()``);
- ``Lineage`` columns: the S3 key of each row's object, the load's id, the load's start time;
- scope and hour columns (see ``partitions.ScopedTable``) that the files lack.

``TableLayout`` gathers them: the columns COPY reads, the columns each load fills through a
default that reads a transaction-local setting (``sql.fill_default``), the generated columns, and
the DDL that creates the table. Everything here builds ``psycopg2.sql`` objects from checked
names and literals; nothing runs SQL.
"""
from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from psycopg2 import sql

from . import sql as q
from .partitions import TableName, check_identifier

_ZONE = re.compile(r"^[A-Za-z][A-Za-z0-9_+\-/]{0,63}$")
_WITH_ZONE = re.compile(r"^(timestamptz(\s*\(\s*\d\s*\))?|timestamp(\s*\(\s*\d\s*\))? with time zone)$")
_WITHOUT_ZONE = re.compile(r"^timestamp(\s*\(\s*\d\s*\))?( without time zone)?$")


class DateSource:
    """Where the rows' date comes from: the base is "a column of the files" (the default)."""

    in_files = True  # the date column is one of the files' columns
    filled = False  # the load fills it with the partition's date
    generated = False  # the table computes it (a stored generated column)
    own_ddl = False  # ... with the expression of the user's own DDL (the project never creates the table)
    zone = ""  # a time zone the expression names

    def expression(self, columns: Mapping[str, q.Column]) -> sql.Composable | None:
        """The generation expression over the files' ``columns`` (None: the table's own, or not generated)."""
        return None

    def describe(self) -> str:
        return "a column of the files"


@dataclass(frozen=True)
class _FromFiles(DateSource):
    pass


@dataclass(frozen=True)
class _PartitionDate(DateSource):
    in_files = False
    filled = True

    def describe(self) -> str:
        return "partition_date()"


@dataclass(frozen=True)
class _MakeDate(DateSource):
    year: str
    month: str
    day: str
    in_files = False
    generated = True

    def __post_init__(self) -> None:
        for name in (self.year, self.month, self.day):
            check_identifier(name)

    def expression(self, columns: Mapping[str, q.Column]) -> sql.Composable:
        """``make_date((year)::integer, (month)::integer, (day)::integer)``: immutable, as a generated column needs."""
        _require(columns, (self.year, self.month, self.day), self.describe())
        parts = [sql.SQL("({})::integer").format(sql.Identifier(c)) for c in (self.year, self.month, self.day)]
        return sql.SQL("make_date({})").format(sql.SQL(", ").join(parts))

    def describe(self) -> str:
        return f"make_date({self.year!r}, {self.month!r}, {self.day!r})"


@dataclass(frozen=True)
class _LocalDate(DateSource):
    column: str
    zone: str
    in_files = False
    generated = True

    def __post_init__(self) -> None:
        check_identifier(self.column)
        if not isinstance(self.zone, str) or not _ZONE.match(self.zone):
            raise ValueError(f"local_date: {self.zone!r} is not a time zone name (e.g. 'America/New_York', 'UTC')")

    def expression(self, columns: Mapping[str, q.Column]) -> sql.Composable:
        """``((ts AT TIME ZONE 'zone'))::date`` of a timestamptz; a timestamp without time zone is read as UTC."""
        _require(columns, (self.column,), self.describe())
        kind = " ".join(columns[self.column].type.lower().split())
        value: sql.Composable = sql.Identifier(self.column)
        if _WITHOUT_ZONE.match(kind):
            value = sql.SQL("({} AT TIME ZONE 'UTC')").format(value)
        elif not _WITH_ZONE.match(kind):
            raise ValueError(f"{self.describe()}: column {self.column!r} is {kind}, not a timestamptz or timestamp")
        return sql.SQL("(({} AT TIME ZONE {}))::date").format(value, sql.Literal(self.zone))

    def describe(self) -> str:
        return f"local_date({self.column!r}, {self.zone!r})"


@dataclass(frozen=True)
class _TableGenerated(DateSource):
    in_files = False
    generated = True
    own_ddl = True

    def describe(self) -> str:
        return "generated_column()"


FILES: DateSource = _FromFiles()


def file_column() -> DateSource:
    """The date column is one of the files' columns (the default)."""
    return FILES


def partition_date() -> DateSource:
    """The files have no date: every row gets its partition's date (the task's ``date``), through the
    column's default, which reads a setting the load gives the transaction. Nothing is read per row."""
    return _PartitionDate()


def make_date(year: str, month: str, day: str) -> DateSource:
    """The date is ``make_date(year, month, day)`` of three file columns: a stored generated column."""
    return _MakeDate(year, month, day)


def local_date(column: str, zone: str) -> DateSource:
    """The date is the local date in ``zone`` of the timestamp ``column`` (a timestamptz; a timestamp
    without time zone is read as UTC): a stored generated column."""
    return _LocalDate(column, zone)


def generated_column() -> DateSource:
    """The date column is a generated column of the table's own DDL (create the table yourself)."""
    return _TableGenerated()


def _require(columns: Mapping[str, q.Column], names: Sequence[str], what: str) -> None:
    missing = [n for n in names if n not in columns]
    if missing:
        raise ValueError(f"{what}: {', '.join(map(repr, missing))} not among columns (the files' columns)")


@dataclass(frozen=True)
class Lineage:
    """Optional columns that say where each row came from, filled by the load at COPY speed.

    ``key``: the S3 key of the row's object (text, set before each object's COPY); ``load_id``: the
    id of the load that wrote it (uuid; the marker row records the same ``load_id``); ``loaded_at``:
    when that load's transaction began (timestamptz, the column's default ``now()``).
    An empty name leaves that column out.
    """

    key: str = ""
    load_id: str = ""
    loaded_at: str = ""

    def __post_init__(self) -> None:
        names = [n for n in (self.key, self.load_id, self.loaded_at) if n]
        for name in names:
            check_identifier(name)
        if len(set(names)) != len(names):
            raise ValueError(f"Lineage: the columns must have different names, not {names}")

    @property
    def filled(self) -> tuple[q.Column, ...]:
        return tuple(q.Column(n, t) for n, t in ((self.key, "text"), (self.load_id, "uuid")) if n)

    @property
    def stamped(self) -> tuple[q.Column, ...]:
        return (q.Column(self.loaded_at, "timestamptz"),) if self.loaded_at else ()


NOW_DEFAULTS = ("now()", "CURRENT_TIMESTAMP", "transaction_timestamp()")  # how pg_get_expr shows a stamped default


@dataclass(frozen=True)
class LoadDefault:
    """A column whose values come from its default during a load: filled (a setting the load gives the
    transaction) or stamped (``now()``, the transaction's start)."""

    column: q.Column
    stamped: bool = False

    @property
    def expression(self) -> sql.Composable:
        return sql.SQL("now()") if self.stamped else q.fill_default(self.column)

    def matches(self, shown: str) -> bool:
        """Whether a default as the catalog shows it (``pg_get_expr``) does this column's job."""
        return shown in NOW_DEFAULTS if self.stamped else q.fill_setting(self.column.name) in shown


@dataclass(frozen=True)
class ExistingColumn:
    """A column of an existing table as the catalog shows it."""

    name: str
    type: str  # format_type: "bigint", "numeric(12,2)"
    category: str  # pg_type.typcategory: N numbers, S strings, D dates and times, B booleans, ...
    not_null: bool = False
    default: str = ""  # pg_get_expr of its default, "" when it has none
    generated: bool = False
    identity: bool = False


# A declared type as PostgreSQL names it and its category, None for a type it does not know (``to_regtype``)
ResolvedTypes = Mapping[str, "tuple[str, str] | None"]


def unknown_types(columns: Sequence[q.Column], resolved: ResolvedTypes) -> list[str]:
    """``'v' bignit``, one per declared column whose type PostgreSQL does not know."""
    return [f"{c.name!r} {c.type}" for c in columns if resolved.get(c.type) is None]


@dataclass(frozen=True)
class TableLayout:
    """Every column of a load's table by where its values come from (see the module docstring)."""

    table: TableName
    date_column: str
    files: tuple[q.Column, ...]
    filled: tuple[q.Column, ...] = ()
    generated: tuple[tuple[q.Column, sql.Composable], ...] = ()  # (column, expression) the project creates
    stamped: tuple[q.Column, ...] = ()
    date_from: DateSource = FILES
    partition_by: tuple[str, ...] = ()  # natively partitioned on these columns (``swap.Swap``)
    partition_strategy: str = "RANGE"  # by range (the date), or by list (a scope column's values)

    def __post_init__(self) -> None:
        names = [c.name for c in (*self.files, *self.filled, *(c for c, _ in self.generated), *self.stamped)]
        doubled = sorted({n for n in names if names.count(n) > 1})
        if doubled:
            raise ValueError(f"columns {doubled} are declared twice (files, scope, date, lineage or hour)")

    @classmethod
    def of(cls, table: TableName, date_column: str, files: Sequence[q.Column], date_from: DateSource,
           filled: Sequence[q.Column] = (), lineage: Lineage = Lineage()) -> TableLayout:
        """The layout of ``files`` plus what ``date_from``, ``filled`` (scope, hour) and ``lineage`` add."""
        by_name = {c.name: c for c in files}
        if date_from.in_files and date_column not in by_name:
            raise ValueError(f"date_column {date_column!r} is not among columns (the files' columns)")
        if not date_from.in_files and date_column in by_name:
            raise ValueError(f"date_column {date_column!r} comes from {date_from.describe()}: leave it out of columns "
                             f"(the files' columns)")
        date = q.Column(date_column, "date")
        fills = [*filled, *([date] if date_from.filled else []), *lineage.filled]
        expression = date_from.expression(by_name)
        generated = ((date, expression),) if expression is not None else ()
        return cls(table, date_column, tuple(files), tuple(fills), generated, lineage.stamped, date_from)

    @property
    def table_columns(self) -> tuple[q.Column, ...]:
        """The table's columns that a load writes (but generated ones): from the files, filled, stamped."""
        return (*self.files, *self.filled, *self.stamped)

    @property
    def defaults(self) -> tuple[LoadDefault, ...]:
        """The columns that a load gives their values through their defaults."""
        return (*(LoadDefault(c) for c in self.filled), *(LoadDefault(c, stamped=True) for c in self.stamped))

    def create_statements(self) -> list[sql.Composable]:
        """``CREATE TABLE`` with every column (``PARTITION BY RANGE`` when partitioned), and the index on the date
        column."""
        extra = [*(q.generated_column(c, e) for c, e in self.generated),
                 *(q.column_with_default(d.column, d.expression) for d in self.defaults if d.stamped)]
        create = q.create_table(self.table, self.files, self.filled, extra)
        if self.partition_by:
            create += q.partition_by(self.partition_by, self.partition_strategy)
        return [create, q.create_date_index(self.table, self.date_column)]


@dataclass(frozen=True)
class MergeLayout(TableLayout):
    """The layout of a table merged by key (``MergePartition``): no date column; the files' columns but the
    deleted flag, the filled and stamped columns, and a primary key on ``key``.

    Its rows are staged (``sql.create_merge_stage``): the filled and stamped columns get their values there,
    through the same defaults, and are written with a changed row. The table needs no defaults of its own.
    """

    key: tuple[str, ...] = ()
    deleted_flag: str = ""

    @classmethod
    def merged(cls, table: TableName, files: Sequence[q.Column], key: Sequence[str], deleted_flag: str = "",
               filled: Sequence[q.Column] = (), lineage: Lineage = Lineage()) -> MergeLayout:
        """The layout of ``files`` merged by ``key`` (names among the files' or the filled columns)."""
        names = {c.name: c for c in (*files, *filled)}
        if not key or isinstance(key, str):
            raise ValueError(f"merge_key must name the key's columns, e.g. ('customer_id',), not {key!r}")
        missing = [k for k in key if k not in names]
        if missing:
            raise ValueError(f"merge_key {', '.join(map(repr, missing))} not among columns (the files' columns)")
        if deleted_flag:
            flag = names.get(deleted_flag)
            if flag is None or deleted_flag in key or flag.type.lower() not in ("boolean", "bool"):
                raise ValueError(f"deleted_flag {deleted_flag!r} must be a boolean column of the files, not of the key")
        return cls(table, "", tuple(files), (*filled, *lineage.filled), stamped=lineage.stamped, key=tuple(key),
                   deleted_flag=deleted_flag)

    @property
    def stored(self) -> tuple[q.Column, ...]:
        """The files' columns that the table stores: all but the deleted flag."""
        return tuple(c for c in self.files if c.name != self.deleted_flag)

    @property
    def table_columns(self) -> tuple[q.Column, ...]:
        return (*self.stored, *self.filled, *self.stamped)

    @property
    def compared(self) -> tuple[str, ...]:
        """The columns whose change makes a row changed: the stored ones outside the key."""
        return tuple(c.name for c in self.stored if c.name not in self.key)

    @property
    def carried(self) -> tuple[str, ...]:
        """Columns written with a changed row but not compared: lineage (they differ on every load)."""
        return tuple(c.name for c in (*self.filled, *self.stamped) if c.name not in self.key)

    @property
    def stage_defaults(self) -> tuple[tuple[q.Column, sql.Composable], ...]:
        """The stage's filled and stamped columns with their defaults (a setting of the load, ``now()``)."""
        return tuple((d.column, d.expression) for d in super().defaults)

    @property
    def defaults(self) -> tuple[LoadDefault, ...]:
        return ()  # the table's own defaults are never used: the stage's are

    def create_statements(self) -> list[sql.Composable]:
        """``CREATE TABLE`` with the stored, filled and stamped columns and ``PRIMARY KEY (<key>)``."""
        stamped = [q.column_with_default(c, sql.SQL("now()")) for c in self.stamped]
        return [q.create_table(self.table, self.stored, self.filled, [*stamped, q.primary_key(self.key)])]


def columns_by_header(names: Sequence[str], declared: Sequence[q.Column]) -> tuple[tuple[q.Column, ...], bool]:
    """The columns of a file whose header says ``names``, in its order: each declared column where
    the header names it, a text column ``luigi_pipelines_extra_<n>`` for each other one; and whether
    there are such others (then the file goes through a staging table). Every declared column
    must be named exactly once."""
    wanted = {c.name: c for c in declared}
    missing = [n for n in wanted if n not in names]
    if missing:
        raise ValueError(f"the header lacks the declared column{'s' if len(missing) > 1 else ''} "
                         f"{', '.join(map(repr, missing))} (it has {_listing(names)})")
    doubled = sorted({n for n in names if n in wanted and names.count(n) > 1})
    if doubled:
        raise ValueError(f"the header names {', '.join(map(repr, doubled))} more than once")
    columns = tuple(wanted.get(n) or q.Column(f"luigi_pipelines_extra_{i}", "text") for i, n in enumerate(names, 1))
    return columns, len(names) > len(wanted)


def _listing(names: Sequence[str], limit: int = 20) -> str:
    shown = ", ".join(repr(n[:64]) for n in names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")
