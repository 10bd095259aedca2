"""The Parquet values that would reach the table as a different value, found in each row group before its COPY.

Two cases pass every other check (PostgreSQL reads the text Arrow writes for them without an error):
- an INT96 timestamp (Spark's default) is read at microseconds, as Spark writes it; Arrow's microseconds wrap past
  year 294247 (int64), so each INT96 column is also read at seconds, which cannot wrap, and a value beyond the
  microseconds' range is a bad value instead of another date;
- a decimal or a float with more decimals than a ``numeric(p,s)`` column keeps, which PostgreSQL would round.
Every other conversion either loads the same value or fails in PostgreSQL naming the row (docs/guarantees.md).
"""
from __future__ import annotations

import itertools
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import IO, Any

from . import sql as q

READ_BUFFER = 1 << 20  # bytes of a column chunk read from the file at a time, instead of its whole chunk
MICROSECONDS_END = 9_223_372_036_854  # seconds from 1970 at which int64 microseconds end: 294247-01-10
_SCALED = re.compile(r"\s*(?:numeric|decimal)\s*\(\s*\d+\s*(?:,\s*(\d+)\s*)?\)\s*", re.IGNORECASE)


def open_parquet(pa: Any, handle: IO[bytes], int96_unit: str) -> Any:
    """``handle``'s Parquet file, INT96 read at ``int96_unit``, each page's checksum verified where the file has one,
    and read as it is decoded, ``READ_BUFFER`` bytes at a time: neither a row group's nor a column chunk's bytes
    are ever read whole (pyarrow's defaults, ``pre_buffer`` and an unbuffered stream, read one or the other)."""
    return pa.parquet.ParquetFile(handle, coerce_int96_timestamp_unit=int96_unit, page_checksum_verification=True,
                                  pre_buffer=False, buffer_size=READ_BUFFER)


def batches(parquet: Any, group: int, columns: Sequence[str], batch_rows: int) -> Iterator[Any]:
    """Row group ``group`` of ``parquet``, its ``columns`` only, as record batches of at most ``batch_rows`` rows."""
    return iter(parquet.iter_batches(batch_size=batch_rows, row_groups=[group], columns=list(columns),
                                     use_threads=False))


@dataclass(frozen=True)
class ValueProblem:
    """The first value of a batch that would change: its column, its row in the batch (0-based), why."""

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
        seconds = open_parquet(pa, handle, "s") if int96 else None
        return cls(int96, scaled, seconds)

    def seconds_batches(self, group: int, batch_rows: int) -> Iterator[Any]:
        """Row group ``group``'s INT96 columns read at seconds, in the same batches as the load's (``batches``); for
        a file without INT96 columns, ``None`` per batch."""
        if not self.int96:
            return itertools.repeat(None)
        return batches(self.seconds, group, self.int96, batch_rows)

    def first_problem(self, pa: Any, batch: Any, seconds: Any) -> ValueProblem | None:
        """The first value of ``batch`` that the table would hold as another value; ``seconds``: the same rows of
        the INT96 columns read at seconds (``seconds_batches``)."""
        if self.int96:
            for name in self.int96:
                if (index := _first_beyond_microseconds(pa, seconds.column(name))) >= 0:
                    return ValueProblem(name, index, "an INT96 timestamp beyond what microseconds hold (year 294247 "
                                                     "and later), or a corrupt one: not loaded as another date")
        for column, scale in self.scaled:
            values = batch.column(column.name)
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
