"""The per-object load pipeline: fetch → decode → COPY (or quarantine) → account, for one S3 object of a partition.

``ObjectLoader.load`` takes one listed object inside an open partition transaction and returns an
``ObjectRecord``, the one account of what the object contributed (rows, rejects, bytes, download
and COPY seconds), which the marker stores in its source list. How an object's bytes become COPY
input is a ``Decoder``'s business (``CsvDecoder`` here; ``jsonl.JsonLinesDecoder`` and
``parquet.ParquetDecoder`` beside it): a new format is a new decoder, not a new branch in the task.
Nothing here imports luigi.
"""
from __future__ import annotations

import concurrent.futures
import csv
import dataclasses
import functools
import gzip
import logging
import os
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import IO, Any, Protocol

from psycopg2 import sql

from . import contracts, db, quarantine, rowchecks
from . import sql as q
from .contracts import NO_CONTRACT, Contract
from .errors import BadInputError, CopyAborted, LoadError, PipelineError
from .files import DownloadCancelled, EndMarkerGuard, GrowingFile, SourceReader, bom_length, temp_download
from .layouts import columns_by_header
from .partitions import TableName, compression_for
from .s3 import S3Client, S3Object
from .settings import LoadSettings

SupportsRead = db.SupportsRead
Scope = Sequence[tuple[str, str]]  # a partition's scope: (column, value) pairs

logger = logging.getLogger("luigi-interface.luigi_pipelines")
_MIB = 1024 * 1024


@dataclass
class ObjectRecord:
    """What one source object contributed to its partition; ``as_marker`` is its entry in the marker."""

    obj: S3Object
    rows: int = 0
    rejected: int = 0
    download_s: float = 0.0
    copy_s: float = 0.0
    empty: str = ""  # why the object added no rows, if it had no data ("is empty (0 bytes)", ...)

    def as_marker(self) -> dict[str, Any]:
        return {
            **self.obj.as_marker(),
            "rows": self.rows,
            "rejected": self.rejected,
            "download_s": round(self.download_s, 4),
            "copy_s": round(self.copy_s, 4),
        }


@dataclass(frozen=True)
class CopyPlan:
    """Where one object's COPY goes: straight into the table, or, when the file has columns the
    table does not take, into a staging table (``sql.STAGE``) whose declared columns are then
    inserted into the table. ``columns`` are what COPY fills, in the file's order."""

    statement: sql.Composable
    target: TableName
    columns: tuple[q.Column, ...]
    staged_into: TableName | None = None  # the table the staged rows go to
    declared: tuple[q.Column, ...] = ()  # ... in these columns
    stage: tuple[sql.Composable, ...] = ()  # the statements that create the staging table (when staged)


class Decoder(Protocol):
    """How one format's objects become ``COPY ... FROM STDIN`` input."""

    def plan(self, table: TableName, columns: Sequence[q.Column], reader: SourceReader, scope: Scope = (),
             contract: Contract = NO_CONTRACT) -> CopyPlan:
        """The COPY of one object (opened by ``open``) into ``table``'s declared ``columns``; a file column (or key)
        named like a ``scope`` column must hold its value (``rowchecks``); the schema ``contract`` says whether a
        declared column the object lacks loads NULL and whether a field it has that no column declares refuses it
        (passed only when the task declares one, so a decoder written before contracts keeps working)."""

    def open(self, raw: GrowingFile, obj: S3Object) -> SourceReader:
        """A reader of the object's data as COPY reads it (decompressed, decoded)."""

    def check_copied(self, obj: S3Object, reader: SourceReader, rows: int) -> None:
        """Raise ``LoadError`` if COPY took fewer (or more) rows than the object holds: an early end."""

    def salvage(self, loader: ObjectLoader, obj: S3Object, raw: IO[bytes], first_error: BadInputError) -> int:
        """Quarantine mode: copy the object's good rows around its bad ones; return the rows copied."""

    def insert_staged(self, loader: ObjectLoader, obj: S3Object, copied: int) -> int:
        """A staged plan: move the ``copied`` staged rows into the table; return the rows the table got."""

    def located(self, reader: SourceReader, error: BadInputError) -> BadInputError:
        """``error`` (a COPY's, with its line) told in the object's own terms: e.g. a Parquet row group and row."""


class QuickCopy(Protocol):
    """A decoder's faster COPY of a whole object, tried first, which may give up (``jsonl``: Arrow's reader)."""

    def quick_copy(self, loader: ObjectLoader, obj: S3Object, raw: GrowingFile, reader: SourceReader
                   ) -> int | SourceReader:
        """The rows copied, or a reader of the object from its start (``reader`` itself if it was not read) for the
        decoder's ``plan``: whatever the quick COPY did is undone then."""


@dataclass(frozen=True)
class CsvDecoder:
    """CSV objects (gzip when the key ends in ``.gz``; a UTF-8 byte-order mark removed), parsed by PostgreSQL."""

    fmt: q.CsvFormat = q.CsvFormat()

    @property
    def utf8(self) -> bool:
        return self.fmt.encoding.upper().replace("-", "") == "UTF8"

    def plan(self, table: TableName, columns: Sequence[q.Column], reader: SourceReader, scope: Scope = (),
             contract: Contract = NO_CONTRACT) -> CopyPlan:
        """By position, or (``by_name``) by the header's names: straight into the table when the file has
        only declared columns, else through the staging table (one more write of the rows): when it has others,
        or a column named like a ``scope`` column, which the stage checks row by row (``rowchecks.scope_check``).
        By name, the ``contract`` says whether a declared column the header lacks loads NULL (the COPY leaves it
        out) and whether a name no column declares refuses the object (``contracts.file_fields``)."""
        in_file, extra, names = tuple(columns), False, [c.name for c in columns]
        if self.fmt.by_name:
            names = self.header(reader)
            try:
                if contract != NO_CONTRACT:
                    present = contracts.file_fields(names, [c.name for c in columns], contract, "header")
                    columns = tuple(c for c in columns if c.name in present)
                in_file, extra = columns_by_header(names, columns)
            except ValueError as exc:
                raise BadInputError(f"{reader.source}: {exc}") from None
        checks = [rowchecks.scope_check(c.name, name, scope_value) for c, name in zip(in_file, names, strict=True)
                  for scoped, scope_value in scope if name == scoped]
        if not extra and not checks:
            return CopyPlan(q.copy_from_stdin(table, in_file, self.fmt), table, in_file)
        fmt = dataclasses.replace(self.fmt, check_header=False) if extra else self.fmt  # the stage names extras by position
        return CopyPlan(q.copy_from_stdin(q.STAGE, in_file, fmt), q.STAGE, in_file, table, tuple(columns),
                        (*(rowchecks.create_functions() if checks else ()), q.create_stage(in_file, checks)))

    def header(self, reader: SourceReader) -> list[str]:
        """The names in the object's header line."""
        line = reader.first_line().decode(quarantine.python_codec(self.fmt.encoding), errors="replace")
        doubled = self.fmt.escape == self.fmt.quote  # "" inside quotes, else an escape character
        try:
            return next(csv.reader([line], delimiter=self.fmt.delimiter, quotechar=self.fmt.quote, strict=True,
                                   doublequote=doubled, escapechar=None if doubled else self.fmt.escape), [])
        except csv.Error as exc:
            raise BadInputError(f"{reader.source} line 1: the header cannot be read: {exc}") from None

    def open(self, raw: GrowingFile, obj: S3Object) -> SourceReader:
        return SourceReader(raw, obj.url, compression_for(obj.key), strip_bom=self.utf8, quote=self.fmt.quote.encode())

    def check_copied(self, obj: S3Object, reader: SourceReader, rows: int) -> None:
        """Where the object has no quote character, every line is one record: COPY must have taken
        them all. (With quotes a record may span lines; the ``\\.`` guard covers that case.)"""
        if not reader.at_end():
            raise LoadError(f"{obj.url}: COPY ended before the end of the object ({rows} rows copied); "
                            f"nothing of the partition was kept")
        records = reader.records_if_unquoted
        if records is None:
            return
        expected = records - (1 if self.fmt.header else 0)
        if rows != expected:
            raise LoadError(
                f"{obj.url}: COPY took {rows} rows but the object holds {expected} data lines: PostgreSQL "
                f"stopped reading early; nothing of the partition was kept")

    def salvage(self, loader: ObjectLoader, obj: S3Object, raw: IO[bytes], first_error: BadInputError) -> int:
        """The segmented copy of ``quarantine`` over the object's decompressed bytes (a second temp file)."""
        if first_error.line is None or (self.fmt.header and first_error.line == 1):
            raise first_error  # a corrupt stream or a wrong header is not a bad row
        tx, plan = loader.tx, loader.plan
        statement = q.copy_from_stdin(plan.target, plan.columns, dataclasses.replace(self.fmt, header=False, by_name=False))
        with temp_download(loader.settings.temp_directory) as plain_file:
            plain = plain_copy(obj, raw, plain_file)
            lines = quarantine.LineFile(plain, first_offset=bom_length(plain) if self.utf8 else 0)
            copier = quarantine.QuarantineCopy(
                lines, obj.url, self.fmt.quote.encode(), self.fmt.escape.encode(), self.fmt.encoding,
                lambda segment: db.copy_in_savepoint(
                    tx, statement, EndMarkerGuard(segment, self.fmt.quote.encode()), obj.url, loader.settings.copy_buffer),
                budget=loader.max_bad_rows - tx.rejected,
            )
            rows, rejects = copier.run(first_line=2 if self.fmt.header else 1)
        loader.reject(obj, rejects)
        return rows

    def insert_staged(self, loader: ObjectLoader, obj: S3Object, copied: int) -> int:
        """Types were checked by the COPY into the stage (with the line); the table's own constraints
        (NOT NULL, CHECK, keys) only by the INSERT, whose error can name the object but no line."""
        plan = loader.plan
        assert plan.staged_into is not None
        with db.translating(obj.url, db.BAD_DATA, note="in the INSERT from the staging table: no line number"):
            moved = db.execute(loader.tx, q.insert_from_stage(plan.staged_into, plan.declared))
        if moved != copied:
            raise LoadError(f"{obj.url}: {moved} of {copied} staged rows were inserted; nothing of the partition was kept")
        return moved

    def located(self, reader: SourceReader, error: BadInputError) -> BadInputError:
        return error


def plain_copy(obj: S3Object, raw: IO[bytes], into: IO[bytes], scrub: Callable[[bytes], bytes] | None = None
               ) -> IO[bytes]:
    """``quarantine.decoded_copy`` of the object, for a salvage: corrupt gzip data a ``BadInputError``, a failed
    write of ``into`` a ``LoadError``."""
    try:
        return quarantine.decoded_copy(raw, compression_for(obj.key) == "gzip", into, scrub)
    except (EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise BadInputError(f"{obj.url}: corrupt or truncated gzip data: {exc}") from exc
    except OSError as exc:
        raise LoadError(f"{obj.url}: cannot write temporary file in {into.name}: {exc}") from exc


@dataclass
class ObjectLoader:
    """Loads the objects of one partition transaction, one at a time (see the module docstring).

    ``source_stream(obj, reader)`` may wrap what COPY reads (a hook of the task: progress, faults);
    ``on_read(obj, n)`` hears that COPY has read ``n`` bytes of the object as stored (progress).
    """

    tx: db.PartitionTransaction
    s3: S3Client
    decoder: Decoder
    columns: Sequence[q.Column]
    settings: LoadSettings
    max_bad_rows: int = 0
    empty_objects_ok: bool = True
    source_stream: Callable[[S3Object, SupportsRead], SupportsRead] = lambda obj, stream: stream
    on_read: Callable[[S3Object, int], None] | None = None
    key_column: str = ""  # a lineage column that gets each object's key (a setting given before its COPY)
    into: TableName | None = None  # where the rows go, if not the partition's table (a merge load's stage)
    contract: Contract = NO_CONTRACT  # the task's schema contract: the fields an object may lack or add

    def __post_init__(self) -> None:
        self.target = self.into or self.tx.target
        self.plan = CopyPlan(sql.SQL(""), self.target, tuple(self.columns))  # the current object's, once known

    def load(self, obj: S3Object) -> ObjectRecord:
        """Copy one object into the open transaction and account for it in ``tx``."""
        record = ObjectRecord(obj)
        if obj.size == 0:  # COPY would reject the missing header line; an empty file simply has no rows
            record.empty = "is empty (0 bytes)"
        else:
            if self.key_column:
                db.fill_columns(self.tx, {self.key_column: obj.key})
            self._copy(record)
        if record.rows == 0 and not record.empty and record.rejected == 0:
            record.empty = "has no data rows"
        if record.empty:
            self._no_rows(obj, record.empty)
        self.tx.add(record.as_marker(), record.rows, obj.size)
        return record

    def _copy(self, record: ObjectRecord) -> None:
        """Stream the object S3 → temporary file → COPY, the download running ahead on its own thread."""
        obj = record.obj
        with temp_download(self.settings.temp_directory) as tmp, \
                concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="download") as pool:
            growing = GrowingFile(tmp, None if self.on_read is None else functools.partial(self.on_read, obj))
            started, rejected_before = time.monotonic(), self.tx.rejected
            download = pool.submit(_download, self.s3, obj, tmp, growing, self.settings.temp_directory)
            try:
                reader = self.decoder.open(growing, obj)
                if reader.is_empty():
                    record.empty = "has no data after decompression and byte-order mark removal"
                else:
                    quick = getattr(self.decoder, "quick_copy", None)  # a faster COPY that may give up (QuickCopy)
                    outcome = reader if quick is None else quick(self, obj, growing, reader)
                    if isinstance(outcome, int):
                        record.rows = outcome
                    else:
                        record.rows = self._planned(record, outcome, tmp, growing)
                    record.rejected = self.tx.rejected - rejected_before  # by the COPY's salvage or the staged INSERT
            finally:
                growing.cancel()  # a failed COPY stops the download; a finished one is not affected
            fetched, record.download_s = download.result()  # the download's own error, if COPY hid it
            record.obj = fetched
            record.copy_s = time.monotonic() - started
        logger.info("%s: %.1f MiB downloaded in %.2f s, %d rows copied in %.2f s (COPY starts with the "
                    "download's first MiB)", obj.url, obj.size / _MIB, record.download_s, record.rows, record.copy_s)

    def _planned(self, record: ObjectRecord, reader: SourceReader, raw: IO[bytes], growing: GrowingFile) -> int:
        """The object's COPY as its decoder plans it."""
        contract = {"contract": self.contract} if self.contract != NO_CONTRACT else {}  # a decoder of old: without
        self.plan = self.decoder.plan(self.target, self.columns, reader, self.tx.key.scope, **contract)
        return self._staged(record.obj, lambda: self._copy_stream(record, reader, raw, growing))

    def _staged(self, obj: S3Object, copy: Callable[[], int]) -> int:
        """``copy()`` the object as ``self.plan`` says; a staged one then goes on to its table
        (``Decoder.insert_staged``), and the staging table is dropped."""
        plan = self.plan
        if plan.staged_into is None:
            return copy()
        for statement in plan.stage:
            db.execute(self.tx, statement)
        rows = self.decoder.insert_staged(self, obj, copy())
        db.execute(self.tx, q.drop_stage())
        return rows

    def _copy_stream(self, record: ObjectRecord, reader: SourceReader, raw: IO[bytes], growing: GrowingFile) -> int:
        obj = record.obj
        stream = self.source_stream(obj, reader)
        buffer = self.settings.copy_buffer
        statement = self.plan.statement
        where = self.guard(self.plan)
        try:
            if self.max_bad_rows <= 0:
                outcome: int | BadInputError = db.copy_stream(self.tx, statement, stream, obj.url, buffer, where)
            else:
                outcome = db.copy_in_savepoint(self.tx, statement, stream, obj.url, buffer)
        except CopyAborted:
            if reader.error is not None:  # the reader's own error (a failed download, corrupt gzip data)
                raise reader.error from None
            raise
        except BadInputError as exc:
            located = self.decoder.located(reader, exc)
            if located is exc:
                raise
            raise located from exc
        if not isinstance(outcome, BadInputError):
            self.decoder.check_copied(obj, reader, outcome)
            self.tx.guarded += outcome if where is not None else 0
            return outcome
        outcome = self.decoder.located(reader, outcome)
        growing.wait()  # the slow path needs the whole object
        logger.warning("%s: %s; copying around bad rows (max_bad_rows=%d)", obj.url, outcome, self.max_bad_rows)
        return self.decoder.salvage(self, obj, raw, outcome)

    def guard(self, plan: CopyPlan) -> sql.Composable | None:
        """The partition's guard (``tx.guard``) for ``plan``'s COPY, where it is exact: straight into the partition's
        table, filling the columns it reads, outside quarantine (which keeps rows of another date to the count)."""
        guard = self.tx.guard
        if guard is None or self.into is not None or plan.staged_into is not None or self.max_bad_rows > 0:
            return None
        return guard.where if guard.columns <= {c.name for c in plan.columns} else None

    def reject(self, obj: S3Object, rejects: Sequence[quarantine.Reject]) -> None:
        """Set ``rejects`` of ``obj`` aside in the rejects table; fail once the partition has too many."""
        db.write_rejects(self.tx, self.settings.rejects, obj.key, rejects)
        self.tx.rejected += len(rejects)
        if self.tx.rejected > self.max_bad_rows:
            first = rejects[0]
            raise BadInputError(
                f"{obj.url}: more than max_bad_rows={self.max_bad_rows} bad rows in {self.tx.target} {self.tx.date}; "
                f"first in this object: line {first.line}: {first.error}"
            )
        logger.warning("%s: %d rows set aside in %s", obj.url, len(rejects), self.settings.rejects)

    def _no_rows(self, obj: S3Object, why: str) -> None:
        if not self.empty_objects_ok:
            raise BadInputError(f"{obj.url}: the object {why} (empty_objects_ok is off)")
        logger.warning("%s: the object %s; it adds no rows", obj.url, why)


def _download(s3: S3Client, obj: S3Object, tmp: IO[bytes], growing: GrowingFile, temp_dir: str) -> tuple[S3Object, float]:
    """The download thread: the object into ``tmp``, reported to ``growing`` as it lands.

    Every way out ends ``growing`` (with the error, if any), so the COPY reading behind never waits
    forever; the error is also the future's, so the caller sees it even when COPY ended first.
    """
    started = time.monotonic()
    try:
        fetched = s3.download(obj, tmp, on_flushed=growing.advance)
        tmp.flush()
    except DownloadCancelled:  # COPY failed first: its error is the one reported
        growing.finish(LoadError(f"{obj.url}: download cancelled"))
        return obj, time.monotonic() - started
    except PipelineError as exc:
        error: PipelineError = exc
    except OSError as exc:  # e.g. ENOSPC in the temp directory
        error = LoadError(f"{obj.url}: cannot write temporary file in {temp_dir}: {exc}")
    except BaseException as exc:  # anything else still ends the reader's wait, and is reported
        error = LoadError(f"{obj.url}: download failed: {exc!r}")
    else:
        growing.finish(size=os.fstat(tmp.fileno()).st_size)  # managed downloads report no progress
        return fetched, time.monotonic() - started
    growing.finish(error)
    raise error
