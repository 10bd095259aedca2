"""Pure: the data checks a task declares (``checks = (lp.not_null("id"), lp.unique("id"), ...)``), what each one
found, and how that is said: in the marker's ``checks`` column, in a WARNING, in a failed load's message.

A check runs inside the partition's transaction, after the rows are in and before the marker (``db.run_checks``,
with the statements of ``sql.checks``): set-based SQL over the partition's rows only. A check of severity
``error`` that finds violations fails the load (``DataCheckError``): the transaction rolls back and the previous
load of the partition stays. One of severity ``warn`` lets the load commit; what it found is in the marker.

- row checks (a predicate per row): ``not_null``, ``accepted_values``, ``between``; with ``quarantine=True``
  their violating rows are set aside in the rejects table instead (within the task's ``max_bad_rows``);
- ``unique``: no two rows of the partition share the columns' values (NULLs are not compared, as in a UNIQUE
  constraint); of a merge load over other columns than the merge key, across the table's other rows too;
- ``row_count``: the partition's rows within bounds: absolute (``min``, ``max``) or relative to the median of
  the last ``last`` loaded partitions of the same marker key (``relative_min=0.5``: at least half of usual);
- ``sql_check``: a query of the user's over ``{partition}`` that returns the violating rows.
"""
from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from psycopg2 import sql

from .errors import ConfigurationError
from .partitions import check_identifier
from .sql.checks import ALIAS as ROW

ERROR = "error"
WARN = "warn"
SEVERITIES = (ERROR, WARN)
SAMPLES = 5  # violating rows named per failed check
PARTITION = "{partition}"  # what a sql_check's query writes for the partition's rows


@dataclass(frozen=True)
class Check:
    """A declared check: its severity and, for a row check, whether its violating rows go to quarantine."""

    severity: str = field(default=ERROR, kw_only=True)
    quarantine: bool = field(default=False, kw_only=True)

    def __post_init__(self) -> None:
        if self.severity not in SEVERITIES:
            raise ConfigurationError(f"{self.name}: severity must be 'error' or 'warn', not {self.severity!r}")
        if self.quarantine and self.predicate() is None:
            raise ConfigurationError(f"{self.name}: quarantine=True is for row checks (not_null, accepted_values, "
                                     f"between): a row is set aside, not a key or a count")

    @property
    def name(self) -> str:
        """``not_null(id)``: how messages, the marker and ``status`` name the check."""
        raise NotImplementedError

    @property
    def columns(self) -> tuple[str, ...]:
        """The table's columns the check reads (checked against the task's columns before the load)."""
        return ()

    def predicate(self) -> sql.Composable | None:
        """A row check's violation, as a condition on a row of the partition (``p``); None for other checks."""
        return None

    def bound(self) -> str:
        """What the check holds the partition to, in words (for a row check: the violations allowed, none)."""
        return "0 rows"


def _identifiers(names: Sequence[str]) -> tuple[str, ...]:
    if isinstance(names, str) or not names:
        raise ConfigurationError(f"a check needs one or more column names, not {names!r}")
    try:
        return tuple(check_identifier(n) for n in names)
    except ValueError as exc:
        raise ConfigurationError(f"check: {exc}") from None


@dataclass(frozen=True)
class NotNull(Check):
    columns: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        return f"not_null({', '.join(self.columns)})"

    def predicate(self) -> sql.Composable:
        return sql.SQL(" OR ").join(sql.SQL("{} IS NULL").format(sql.Identifier(ROW, c)) for c in self.columns)

    def bound(self) -> str:
        return f"0 rows with {' or '.join(self.columns)} NULL"


@dataclass(frozen=True)
class AcceptedValues(Check):
    column: str = ""
    values: tuple[Any, ...] = ()

    @property
    def name(self) -> str:
        return f"accepted_values({self.column})"

    @property
    def columns(self) -> tuple[str, ...]:
        return (self.column,)

    def predicate(self) -> sql.Composable:
        """``p.status <> ALL (ARRAY['A', 'B'])``: a NULL is not a violation (``not_null`` is for that)."""
        return sql.SQL("{} <> ALL ({})").format(sql.Identifier(ROW, self.column), sql.Literal(list(self.values)))

    def bound(self) -> str:
        return f"0 rows with {self.column} not in {list(self.values)!r}"


@dataclass(frozen=True)
class Between(Check):
    column: str = ""
    min: Any = None
    max: Any = None

    @property
    def name(self) -> str:
        return f"between({self.column})"

    @property
    def columns(self) -> tuple[str, ...]:
        return (self.column,)

    def predicate(self) -> sql.Composable:
        """``p.amount < 0 OR p.amount > 1000000``: a NULL is not a violation."""
        column = sql.Identifier(ROW, self.column)
        parts = [template.format(column, sql.Literal(value))
                 for template, value in ((sql.SQL("{} < {}"), self.min), (sql.SQL("{} > {}"), self.max))
                 if value is not None]
        return sql.SQL(" OR ").join(parts)

    def bound(self) -> str:
        low = "" if self.min is None else f"{self.min!r} <= "
        high = "" if self.max is None else f" <= {self.max!r}"
        return f"0 rows outside {low}{self.column}{high}"


@dataclass(frozen=True)
class Unique(Check):
    columns: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        return f"unique({', '.join(self.columns)})"

    def bound(self) -> str:
        return f"0 rows that repeat another row's ({', '.join(self.columns)})"


@dataclass(frozen=True)
class RowCount(Check):
    min: int | None = None
    max: int | None = None
    relative_min: float | None = None
    relative_max: float | None = None
    last: int = 7

    @property
    def name(self) -> str:
        return "row_count(relative)" if self.relative else "row_count"

    @property
    def relative(self) -> bool:
        return self.relative_min is not None or self.relative_max is not None

    def limits(self, median: float | None) -> tuple[float | None, float | None]:
        """The bounds the partition's rows are held to: absolute, or the relative ones times the ``median`` of
        the last partitions (None when there is none: nothing to compare with)."""
        if not self.relative:
            return self.min, self.max
        if median is None:
            return None, None
        return (None if self.relative_min is None else self.relative_min * median,
                None if self.relative_max is None else self.relative_max * median)

    def describe(self, median: float | None, last_found: int) -> str:
        low, high = self.limits(median)
        said = " and ".join(s for s in (f">= {low:g}" if low is not None else "",
                                        f"<= {high:g}" if high is not None else "") if s)
        if not self.relative:
            return f"rows {said}"
        if median is None:
            return f"no earlier partition to compare with (last {self.last})"
        shares = " and ".join(s for s in (f">= {self.relative_min:g}" if self.relative_min is not None else "",
                                          f"<= {self.relative_max:g}" if self.relative_max is not None else "") if s)
        return f"rows {said} ({shares} x the median {median:g} of the last {last_found} partitions)"


@dataclass(frozen=True)
class SqlCheck(Check):
    label: str = ""
    query: sql.SQL = field(default_factory=lambda: sql.SQL("{partition}"))

    @property
    def name(self) -> str:
        return f"sql_check({self.label})"

    def bound(self) -> str:
        return "0 rows returned"


# -- the declarations a task writes -------------------------------------------------------------------------


def not_null(*columns: str, severity: str = ERROR, quarantine: bool = False) -> NotNull:
    """No row of the partition has a NULL in any of ``columns``."""
    return NotNull(_identifiers(columns), severity=severity, quarantine=quarantine)


def unique(*columns: str, severity: str = ERROR) -> Unique:
    """No two rows of the partition share the values of ``columns`` (of a merge load: nor a row of the table of
    another key, when ``columns`` are not the merge key)."""
    return Unique(_identifiers(columns), severity=severity)


def accepted_values(column: str, values: Sequence[Any], severity: str = ERROR, quarantine: bool = False
                    ) -> AcceptedValues:
    """Every non-NULL ``column`` of the partition is one of ``values``."""
    if isinstance(values, str) or not values:
        raise ConfigurationError(f"accepted_values({column}): give a list of values, not {values!r}")
    return AcceptedValues(_identifiers([column])[0], tuple(values), severity=severity, quarantine=quarantine)


def between(column: str, min: Any = None, max: Any = None, severity: str = ERROR,  # noqa: A002 - the words users use
            quarantine: bool = False) -> Between:
    """Every non-NULL ``column`` of the partition is ``>= min`` and ``<= max`` (either may be left out)."""
    if min is None and max is None:
        raise ConfigurationError(f"between({column}): give min, max or both")
    return Between(_identifiers([column])[0], min, max, severity=severity, quarantine=quarantine)


def row_count(min: int | None = None, max: int | None = None, relative_min: float | None = None,  # noqa: A002
              relative_max: float | None = None, last: int = 7, severity: str = ERROR) -> RowCount:
    """The partition's rows within ``min`` and ``max``; or, relative, within ``relative_min`` and
    ``relative_max`` times the median of the rows of the last ``last`` loaded partitions before it (of the same
    marker key: an hourly task's same hour). A first partition has nothing to compare with, and passes."""
    absolute, relative = (min, max) != (None, None), (relative_min, relative_max) != (None, None)
    if absolute == relative:
        raise ConfigurationError("row_count: give min and/or max, or relative_min and/or relative_max (with last)")
    if last < 1:
        raise ConfigurationError(f"row_count: last must be 1 or more, not {last}")
    return RowCount(min, max, relative_min, relative_max, int(last), severity=severity)


def sql_check(name: str, query: sql.SQL, severity: str = ERROR) -> SqlCheck:
    """``query`` (a ``psycopg2.sql.SQL``, as ``SqlTransformPartition``'s: SQL is written in code, never built from
    text) returns the partition's violating rows; it reads them from ``{partition}`` (e.g.
    ``sql.SQL("select id from {partition} where refund > amount")``; other braces doubled, as ``SQL.format`` reads
    them). It runs in the load's transaction, as the loading user: write it as a query, not a statement."""
    if not isinstance(query, sql.SQL):
        raise ConfigurationError(f"sql_check({name}): give the query as psycopg2.sql.SQL(\"select ... from "
                                 f"{PARTITION} where ...\"), not {type(query).__name__}")
    if PARTITION not in query.string:
        raise ConfigurationError(f"sql_check({name}): the query must read {PARTITION}, the partition's rows")
    return SqlCheck(name, query, severity=severity)


def validate(family: str, checks: Sequence[Check], columns: Sequence[str], max_bad_rows: int) -> tuple[Check, ...]:
    """``checks`` as declared, or a ``ConfigurationError`` naming the task: a column no load writes, a check
    named twice, quarantine without ``max_bad_rows``."""
    found = tuple(checks)
    for check in found:
        if not isinstance(check, Check):
            raise ConfigurationError(f"{family}: checks holds {check!r}, not a check (lp.not_null(...), ...)")
        unknown = [c for c in check.columns if c not in columns]
        if unknown:
            raise ConfigurationError(f"{family}: {check.name}: no column {', '.join(map(repr, unknown))} in the table "
                                     f"(its columns: {', '.join(columns)})")
        if check.quarantine and max_bad_rows <= 0:
            raise ConfigurationError(f"{family}: {check.name} has quarantine=True: give the task max_bad_rows > 0, "
                                     f"the rows it may set aside")
    names = [c.name for c in found]
    doubled = sorted({n for n in names if names.count(n) > 1})
    if doubled:
        raise ConfigurationError(f"{family}: checks {doubled} are declared twice")
    return found


# -- what a check found -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CheckResult:
    """What one check found in a partition: the rows it read, the violations (rows, or of ``unique`` values on
    more than one row, or 1 for a row count out of bounds), the bound, the rows set aside and a few samples."""

    check: str
    severity: str
    rows: int
    violations: int
    bound: str
    quarantined: int = 0
    samples: tuple[str, ...] = ()

    @property
    def passed(self) -> bool:
        """Whether the committed rows hold no violation: none found, or all of them set aside."""
        return self.violations == self.quarantined

    def record(self) -> dict[str, Any]:
        """The check's entry in the marker's ``checks`` (jsonb array)."""
        out: dict[str, Any] = {"check": self.check, "severity": self.severity, "rows": self.rows,
                               "violations": self.violations, "bound": self.bound, "passed": self.passed}
        if self.quarantined:
            out["quarantined"] = self.quarantined
        if self.samples:
            out["samples"] = list(self.samples)
        return out

    def describe(self) -> str:
        """``unique(id): 2 violations in 1,000 rows (held to 0 values of (id) on more than one row); e.g. ...``."""
        head = (f"{self.check}: {self.violations:,} violation{'' if self.violations == 1 else 's'} in {self.rows:,} "
                f"row{'' if self.rows == 1 else 's'}")
        said = f"{head} (held to {self.bound})"
        if self.quarantined:
            said += f"; {self.quarantined:,} rows set aside in quarantine"
        if self.samples:
            said += "; e.g. " + "; ".join(self.samples)
        return said


def sample_text(row: dict[str, Any], key_column: str = "", count: int | None = None) -> str:
    """A violating row (a ``to_jsonb`` of it) as ``{"id": null, "v": "x"} (s3://... object key)``: the row's
    values, its object's key when a lineage column holds it, and for a ``unique`` sample how many rows share it."""
    hidden = (key_column, "luigi_pipelines_rows", "luigi_pipelines_keys", "luigi_pipelines_ord")
    values = {k: v for k, v in row.items() if k not in hidden}
    text = json.dumps(values, default=str, ensure_ascii=False)
    if len(text) > 200:
        text = text[:199] + "…"
    where = []
    if count is not None:
        where.append(f"on {count} rows")
    keys = row.get("luigi_pipelines_keys") or ([row[key_column]] if key_column and row.get(key_column) else [])
    if keys:
        where.append("object " + ", ".join(str(k) for k in keys[:3]) + (", ..." if len(keys) > 3 else ""))
    return text + (f" ({'; '.join(where)})" if where else "")


def failed_text(partition: str, failed: Sequence[CheckResult]) -> str:
    """The message of a load that a check failed: the partition, each failed check with its figures, then their
    samples (last: a failure record keeps the first 500 characters)."""
    checks = " | ".join(replace(r, samples=()).describe() for r in failed)
    samples = " | ".join(f"{r.check}: " + "; ".join(r.samples) for r in failed if r.samples)
    return (f"{partition}: data check{'s' if len(failed) > 1 else ''} failed, nothing committed and the previous "
            f"load (if any) is kept: {checks}" + (f"; samples: {samples}" if samples else ""))
