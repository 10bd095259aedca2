"""The Parquet values that would reach the table as a different value, found in each row group before its COPY.

Two cases pass every other check (PostgreSQL reads the text Arrow writes for them without an error):
- an INT96 timestamp (Spark's default) is read at microseconds, as Spark writes it; Arrow's microseconds wrap past
  year 294247 (int64), so each INT96 column is also read at seconds, which cannot wrap, and a value beyond the
  microseconds' range is a bad value instead of another date;
- a decimal or a float with more decimals than a ``numeric(p,s)`` column keeps, which PostgreSQL would round.
Every other conversion either loads the same value or fails in PostgreSQL naming the row (docs/guarantees.md).
"""
from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import IO, Any

from . import sql as q

MICROSECONDS_END = 9_223_372_036_854  # seconds from 1970 at which int64 microseconds end: 294247-01-10
_SCALED = re.compile(r"\s*(?:numeric|decimal)\s*\(\s*\d+\s*(?:,\s*(\d+)\s*)?\)\s*", re.IGNORECASE)


@dataclass(frozen=True)
class ValueProblem:
    """The first value of a row group that would change: its column, its row in the row group (0-based), why."""

    column: str
    index: int
    reason: str


def declared_scale(column_type: str) -> int | None:
    """The scale of ``numeric(p,s)`` / ``decimal(p)`` (0); ``None`` for any other type (plain ``numeric`` too)."""
    match = _SCALED.fullmatch(column_type)
    return None if match is None else int(match.group(1) or 0)


@dataclass(frozen=True)
class ValueChecks:
    """The checks of one file's declared columns: its INT96 columns, and its numbers bound for ``numeric(p,s)``."""

    int96: tuple[str, ...] = ()
    scaled: tuple[tuple[q.Column, int], ...] = ()
    seconds: Any = field(default=None, compare=False)  # the file opened again, INT96 read at seconds

    @classmethod
    def of(cls, pa: Any, parquet: Any, handle: IO[bytes], columns: Sequence[q.Column]) -> ValueChecks:
        names = {c.name for c in columns}
        leaves = (parquet.schema.column(i) for i in range(len(parquet.schema)))
        int96 = tuple(c.path for c in leaves if c.physical_type == "INT96" and c.path in names)
        arrow = parquet.schema_arrow
        scaled = tuple((c, s) for c in columns if (s := declared_scale(c.type)) is not None
                       and _finer(pa, arrow.field(c.name).type, s))
        seconds = pa.parquet.ParquetFile(handle, coerce_int96_timestamp_unit="s",
                                         page_checksum_verification=True) if int96 else None
        return cls(int96, scaled, seconds)

    def first_problem(self, pa: Any, group: int, table: Any) -> ValueProblem | None:
        """The first value of row group ``group`` (read as ``table``) that the table would hold as another value."""
        if self.int96:
            seconds = self.seconds.read_row_group(group, columns=list(self.int96), use_threads=False)
            for name in self.int96:
                if (index := _first_beyond_microseconds(pa, seconds.column(name))) >= 0:
                    return ValueProblem(name, index, "an INT96 timestamp beyond what microseconds hold (year 294247 "
                                                     "and later), or a corrupt one: not loaded as another date")
        for column, scale in self.scaled:
            values = table.column(column.name)
            if (index := _first_rounded(pa, values, scale)) >= 0:
                return ValueProblem(column.name, index, f"{values[index].as_py()} has more decimals than {column.type} "
                                                        f"keeps ({scale}); PostgreSQL would round it (declare a larger "
                                                        f"scale to keep it)")
        return None


def _finer(pa: Any, kind: Any, scale: int) -> bool:
    """Whether Arrow type ``kind`` can hold more decimals than ``scale``."""
    return bool(pa.types.is_floating(kind) or (pa.types.is_decimal(kind) and kind.scale > scale))


def _first_beyond_microseconds(pa: Any, seconds: Any) -> int:
    counts = seconds.cast(pa.int64())
    beyond = pa.compute.or_(pa.compute.less(counts, -MICROSECONDS_END), pa.compute.greater(counts, MICROSECONDS_END))
    return int(pa.compute.index(beyond, True).as_py())


def _first_rounded(pa: Any, values: Any, scale: int) -> int:
    """The first of ``values`` that rounding to ``scale`` decimals changes (NaN and infinities are not rounded)."""
    if pa.types.is_decimal(values.type):  # towards zero: never past the type's precision
        changed = pa.compute.not_equal(pa.compute.round(values, ndigits=scale, round_mode="towards_zero"), values)
    else:  # to nearest: the value Arrow writes as text has at most ``scale`` decimals exactly when this keeps it
        exact = values.cast(pa.float32()) if pa.types.is_float16(values.type) else values
        changed = pa.compute.and_(pa.compute.not_equal(pa.compute.round(exact, ndigits=scale), exact),
                                  pa.compute.is_finite(exact))
    return int(pa.compute.index(changed, True).as_py())
