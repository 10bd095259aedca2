"""Parquet objects (the ``parquet`` extra, pyarrow): read a batch at a time and written to COPY as CSV by Arrow's C++ writer.

A Parquet file's footer, at its end, says where its row groups are, so the object is read once its
download has ended (``GrowingFile.wait``), unlike CSV, whose COPY starts with the first megabyte.
Then each row group's declared columns (by name; the file's other columns are never read) are
decoded in batches of ``batch_rows`` rows, their pages read as they are decoded, and written as CSV,
``pyarrow.csv.write_csv`` into the COPY stream: memory holds one batch and its CSV, never a whole row
group (Spark writes row groups of 128 MB compressed) nor the file. Strings are always quoted, so NULL (an empty
unquoted field) and the empty string stay apart; timestamps carry their offset or ``Z``; decimals,
dates and booleans are written as PostgreSQL reads them. Lists, structs and maps become JSON text
(for ``jsonb`` columns) and binary values UTF-8 text or ``bytea``'s (``parquet_text``), one value at a time
in Python: the one per-value step, for those columns only.
Timestamps with a time zone are written as their UTC wall time and ``Z``, which Arrow formats fast.
pyarrow is imported on first use, with an error naming the extra when it is missing.
"""
from __future__ import annotations

import bisect
import io
import itertools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import IO, Any

from . import contracts
from . import sql as q
from .contracts import NO_CONTRACT, Contract
from .errors import BadInputError, ConfigurationError, LoadError
from .files import GrowingFile, SourceReader
from .objects import CopyPlan, ObjectLoader, Scope
from .parquet_text import RECASTS, UnwritableValue, recast
from .parquet_values import ValueChecks, batches, open_parquet
from .partitions import TableName
from .rowchecks import scope_reason
from .s3 import S3Object

EXTRA = "parquet"  # pip install 'luigi-pipelines[parquet]'
CSV = q.CsvFormat(header=False, check_header=False)  # what the batches are written as: quoted strings, NULL unquoted


def pyarrow_modules() -> Any:
    """``pyarrow`` with its ``parquet`` and ``csv`` modules, or a ``ConfigurationError`` naming the extra."""
    try:
        import pyarrow
        import pyarrow.compute
        import pyarrow.csv
        import pyarrow.parquet
    except ImportError as exc:
        raise ConfigurationError(f"Parquet objects need pyarrow, which is not installed ({exc}): "
                                 f"pip install 'luigi-pipelines[{EXTRA}]'") from None
    return pyarrow


@dataclass(frozen=True)
class ParquetDecoder:
    """Parquet objects, their columns matched to the declared ones by name (see the module docstring).

    ``batch_rows`` rows of a row group are read, checked and converted to CSV at a time, whatever the row group's
    size: with the file's pages, the read and decompression buffers of its declared columns, and one batch's CSV,
    it bounds the memory of the load (fewer rows: less memory, more batches). A declared column the file lacks
    is an error naming it; the file's undeclared columns are not read. Quarantine mode does not apply:
    a value that does not fit its column fails the load, naming the row group and the row.
    """

    batch_rows: int = 32_768

    def plan(self, table: TableName, columns: Sequence[q.Column], reader: SourceReader, scope: Scope = (),
             contract: Contract = NO_CONTRACT) -> CopyPlan:
        """The file's declared columns by name; under ``columns="evolve"`` one the file lacks is left out of the COPY
        (NULL), under ``extra_fields="refuse"`` a column no column declares refuses the file."""
        present = _rows(reader).select(columns, scope, contract)
        return CopyPlan(q.copy_from_stdin(table, present, CSV), table, present)

    def open(self, raw: GrowingFile, obj: S3Object) -> SourceReader:
        pyarrow_modules()
        return ParquetReader(ParquetRows(raw, obj.url, self.batch_rows))

    def check_copied(self, obj: S3Object, reader: SourceReader, rows: int) -> None:
        expected = _rows(reader).num_rows
        if not reader.at_end() or rows != expected:
            raise LoadError(f"{obj.url}: COPY took {rows} rows but the Parquet file holds {expected}; nothing of the "
                            f"partition was kept")

    def located(self, reader: SourceReader, error: BadInputError) -> BadInputError:
        """COPY's line, told as the row group and row (``ParquetRows.where``: COPY counts newlines inside strings)."""
        if error.line is None:
            return error
        where = _rows(reader).where(error.line)
        message = str(error).replace(f" line {error.line}", f" {where}", 1)
        return BadInputError(message, error.line, error.column, error.reason)

    def salvage(self, loader: ObjectLoader, obj: S3Object, raw: IO[bytes], first_error: BadInputError) -> int:
        raise BadInputError(f"{first_error} (quarantine mode does not apply to Parquet objects)", first_error.line,
                            first_error.column, first_error.reason)

    def insert_staged(self, loader: ObjectLoader, obj: S3Object, copied: int) -> int:
        raise AssertionError("Parquet objects are never staged")


def _textual(pa: Any, kind: Any) -> bool:
    """Whether values of Arrow type ``kind`` are written as text that may hold a newline."""
    if pa.types.is_dictionary(kind):
        kind = kind.value_type
    return bool(pa.types.is_string(kind) or pa.types.is_large_string(kind))


@dataclass(frozen=True)
class _Span:
    """A batch's first row (1-based) and COPY's line of it; with newlines in its strings, per row the
    newlines of the rows of the batch up to it."""

    row: int
    line: int
    newlines: Any = None  # a pyarrow array, 8 bytes a row


def _rows(reader: SourceReader) -> ParquetRows:
    assert isinstance(reader, ParquetReader)
    return reader.rows


class ParquetReader(SourceReader):
    """The CSV of a Parquet object as COPY reads it; empty when the file holds no rows (its footer says)."""

    def __init__(self, rows: ParquetRows) -> None:
        super().__init__(rows, rows.source, None, strip_bom=False)
        self.rows = rows

    def is_empty(self) -> bool:
        return self.rows.num_rows == 0


class ParquetRows:
    """A read-only stream of a Parquet file's rows as CSV (``read``), one row group at a time."""

    def __init__(self, raw: GrowingFile, source: str, batch_rows: int) -> None:
        self.source = source
        self._raw = raw
        self._batch_rows = batch_rows
        self._file: Any = None
        self._handle: IO[bytes] | None = None
        self._names: list[str] = []
        self._checks = ValueChecks()
        self._recast: dict[str, str] = {}  # a column written other than as Arrow writes it: "json", "text" or "bytea"
        self._scope: list[tuple[str, str]] = []  # (a file column named like a scope column, the scope's value)
        self._batches: Iterator[bytes] | None = None
        self._buffer = memoryview(b"")
        self.group = -1  # the row group being read
        self._starts: list[int] = []  # the first row (0-based) of each row group
        self._spans: list[_Span] = []  # where each batch's rows start, in COPY's line numbers
        self._rows = 0  # rows written so far
        self._newlines = 0  # newlines inside strings that COPY counts as lines, so far

    @property
    def parquet(self) -> Any:
        """The ``pyarrow.parquet.ParquetFile``, opened once the download has ended."""
        if self._file is None:
            pa = pyarrow_modules()
            self._raw.wait()
            self._handle = open(self._raw.fileno(), "rb", closefd=False)  # noqa: SIM115 - closed after the last row group
            try:
                self._file = open_parquet(pa, self._handle, "us")  # INT96 at microseconds, as Spark writes it
            except (pa.ArrowException, OSError, ValueError) as exc:
                raise BadInputError(f"{self.source}: not a Parquet file, or a truncated one: {exc}") from None
            sizes = [self._file.metadata.row_group(i).num_rows for i in range(self._file.num_row_groups)]
            self._starts = list(itertools.accumulate(sizes, initial=0))[:-1]
        return self._file

    @property
    def num_rows(self) -> int:
        return int(self.parquet.metadata.num_rows)

    def select(self, columns: Sequence[q.Column], scope: Scope = (), contract: Contract = NO_CONTRACT
               ) -> tuple[q.Column, ...]:
        """Read the declared ``columns`` (by name, in their order) from here on, and check that the file's columns
        named like a ``scope`` column (declared or not) hold its value; the columns read (``contract``: those the
        file has, under ``columns="evolve"``)."""
        schema = self.parquet.schema_arrow
        if contract != NO_CONTRACT:
            try:
                present = contracts.file_fields(schema.names, [c.name for c in columns], contract, "Parquet file")
            except ValueError as exc:
                raise BadInputError(f"{self.source}: {exc}") from None
            columns = [c for c in columns if c.name in present]
        missing = [c.name for c in columns if c.name not in schema.names]
        if missing:
            raise BadInputError(f"{self.source}: the Parquet file lacks the declared column{'s' if len(missing) > 1 else ''} "
                                f"{', '.join(map(repr, missing))} (it has {', '.join(map(repr, schema.names[:20]))})")
        twice = next((c.name for c in columns if schema.names.count(c.name) > 1), None)
        if twice is not None:
            raise BadInputError(f"{self.source}: the Parquet file has {schema.names.count(twice)} columns named {twice!r}, "
                                f"the declared column; which one to load is not known: rename one in the file")
        pa = pyarrow_modules()
        self._names = [c.name for c in columns]
        assert self._handle is not None  # opened with the file, above
        self._checks = ValueChecks.of(pa, self.parquet, self._handle, columns)
        self._recast = {c.name: how for c in columns if (how := recast(pa, schema.field(c.name).type, c.type))}
        self._scope = [(name, value) for name, value in scope if name in schema.names]
        return tuple(columns)

    def where(self, line: int) -> str:
        """``row group G row R (row N of the file)``, all 1-based, for the row COPY names by ``line``."""
        return self._place(self.row_of_line(line))

    def _place(self, row: int) -> str:
        group = bisect.bisect_right(self._starts, row - 1) - 1
        return self.place(group, row - 1 - self._starts[group])

    def place(self, group: int, index: int) -> str:
        """``row group G row R (row N of the file)`` for row ``index`` (0-based) of row group ``group`` (0-based)."""
        return f"row group {group + 1} row {index + 1} (row {self._starts[group] + index + 1} of the file)"

    def row_of_line(self, line: int) -> int:
        """The row (1-based) at COPY's ``line``, which COPY gives as the record's last line: row ``k`` ends on line
        ``k`` + the line breaks COPY counted in rows 1..``k`` (see ``_account``)."""
        span = self._spans[max(bisect.bisect_right([s.line for s in self._spans], line) - 1, 0)]
        if span.newlines is None:
            return span.row + line - span.line
        offsets = [i + n for i, n in enumerate(span.newlines.to_pylist())]  # row i of the batch: line span.line + offsets[i]
        return span.row + bisect.bisect_left(offsets, line - span.line)

    def read(self, size: int = -1) -> bytes:
        while not self._buffer:
            chunk = next(self._csv(), None)
            if chunk is None:
                return b""
            self._buffer = memoryview(chunk)
        n = len(self._buffer) if size < 0 else min(size, len(self._buffer))
        data, self._buffer = bytes(self._buffer[:n]), self._buffer[n:]
        return data

    def _csv(self) -> Iterator[bytes]:
        if self._batches is None:
            self._batches = self._all_batches()
        return self._batches

    def _all_batches(self) -> Iterator[bytes]:
        pa = pyarrow_modules()
        options = pa.csv.WriteOptions(include_header=False)
        pool = pa.default_memory_pool()
        try:
            for group in range(self.parquet.num_row_groups):
                self.group = group
                try:
                    for batch in self._group_batches(group):
                        sink = io.BytesIO()
                        written = self._jsonified(batch.select(self._names))
                        pa.csv.write_csv(written, sink, write_options=options)
                        csv = sink.getvalue()
                        self._account(written, csv)
                        del written, batch
                        pool.release_unused()  # else mimalloc keeps what each batch freed: +40 MB over 3,000,000 rows
                        yield csv
                except (pa.ArrowException, OSError, ValueError) as exc:
                    raise BadInputError(f"{self.source} row group {group + 1}: cannot be read: {exc}") from None
        finally:
            if self._handle is not None:
                self._handle.close()

    def _group_batches(self, group: int) -> Iterator[Any]:
        """Row group ``group``'s declared and scope columns in batches of at most ``batch_rows`` rows, read as they
        are decoded (``parquet_values.open_parquet``: memory holds one batch, whatever the row group's size), each
        checked (``_check_scope``, ``_check_values``) before it is handed on."""
        scoped = [n for n, _ in self._scope if n not in self._names]
        first = 0  # the batch's first row in the row group (0-based)
        parts = zip(batches(self.parquet, group, self._names + scoped, self._batch_rows),
                    self._checks.seconds_batches(group, self._batch_rows), strict=False)  # None after None
        for batch, seconds in parts:
            assert seconds is None or seconds.num_rows == batch.num_rows  # the same rows: the same row group and size
            self._check_scope(group, first, batch)
            self._check_values(group, first, batch, seconds)
            yield batch
            first += batch.num_rows

    def _check_values(self, group: int, first: int, batch: Any, seconds: Any) -> None:
        """A value the table would hold as another value (``parquet_values``) fails, naming its row; ``batch`` starts
        at row ``first`` of row group ``group``, and ``seconds`` holds its INT96 columns read at seconds."""
        problem = self._checks.first_problem(pyarrow_modules(), batch, seconds)
        if problem is not None:
            raise BadInputError(f"{self.source} {self.place(group, first + problem.index)} column {problem.column}: "
                                f"{problem.reason}", column=problem.column, reason=problem.reason)

    def _check_scope(self, group: int, first: int, batch: Any) -> None:
        """A row of ``batch`` (from row ``first`` of row group ``group``) whose scope column does not hold the scope's
        value (NULL does not) is bad input naming it (``rowchecks.scope_reason``)."""
        pa = pyarrow_modules()
        for name, value in self._scope:
            other = pa.compute.invert(pa.compute.fill_null(pa.compute.equal(batch.column(name).cast(pa.string()), value),
                                                           False))
            index = pa.compute.index(other, True).as_py()
            if index >= 0:
                raise BadInputError(f"{self.source} {self.place(group, first + index)}: {scope_reason(name, value)}")

    def _account(self, batch: Any, csv: bytes) -> None:
        """Note where ``batch``'s rows start in COPY's line numbers; when its strings hold line breaks, how many
        each row adds (cumulated; counted by Arrow, and only then), so an error's line finds its row.

        COPY counts a quoted ``\\n`` as a line, but inside the first record, whose line ending it does not know
        yet, a quoted ``\\r`` instead (PostgreSQL's ``CopyReadLineText``): ``"a\\r\\nb"`` adds one line there too,
        ``"a\\rb"`` one there and none later."""
        span = _Span(self._rows + 1, self._rows + 1 + self._newlines)
        first = self._rows == 0 and b"\r" in csv
        if first or csv.count(b"\n") > batch.num_rows:
            per_row = _breaks(batch, "\n")
            if self._rows == 0:
                per_row = pyarrow_modules().concat_arrays([_breaks(batch.slice(0, 1), "\r"), per_row[1:]])
            cumulated = pyarrow_modules().compute.cumulative_sum(per_row)
            self._newlines += cumulated[-1].as_py()
            span = _Span(span.row, span.line, cumulated)
        self._spans.append(span)
        self._rows += batch.num_rows

    def _jsonified(self, batch: Any) -> Any:
        """``batch`` with its nested and binary columns as text (``parquet_text.recast``) and its timestamps with a
        time zone as UTC text ending in ``Z`` (the same instants: Arrow keeps them in UTC; its CSV writer formats a
        zoned timestamp some 25 times slower than a plain one)."""
        pa = pyarrow_modules()
        if not self._recast and not any(_zoned(pa, t) for t in batch.schema.types):
            return batch
        arrays = [self._recast_column(name, column) if name in self._recast else _as_utc_text(pa, column)
                  if _zoned(pa, column.type) else column for name, column in zip(batch.schema.names, batch.columns, strict=True)]
        return pa.RecordBatch.from_arrays(arrays, names=batch.schema.names)

    def _recast_column(self, name: str, column: Any) -> Any:
        """``column`` as JSON, UTF-8 or ``bytea`` text; a value that cannot be is a bad value naming its row."""
        try:
            return RECASTS[self._recast[name]](pyarrow_modules(), column)
        except UnwritableValue as bad:
            raise BadInputError(f"{self.source} {self._place(self._rows + bad.index + 1)} column {name}: {bad.reason}",
                                column=name, reason=bad.reason) from None


def _breaks(batch: Any, char: str) -> Any:
    """Per row of ``batch``, how many ``char`` its strings hold (an int64 array)."""
    pa = pyarrow_modules()
    per_row = pa.repeat(pa.scalar(0, pa.int64()), batch.num_rows)
    for column in batch.columns:
        if _textual(pa, column.type):
            per_row = pa.compute.add(per_row, pa.compute.count_substring(column.cast(pa.large_string()), char).fill_null(0))
    return per_row


def _zoned(pa: Any, kind: Any) -> bool:
    return bool(pa.types.is_timestamp(kind) and kind.tz is not None)


def _as_utc_text(pa: Any, column: Any) -> Any:
    """``2019-02-01 10:00:00.123456Z``: the UTC wall time of each instant, and ``Z``."""
    plain = column.cast(pa.timestamp(column.type.unit)).cast(pa.string())
    return pa.compute.binary_join_element_wise(plain, pa.scalar("Z"), pa.scalar(""))
