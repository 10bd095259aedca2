"""JSON lines objects (``.jsonl``, ``.ndjson``, ``.json``; gzip or not): one object a line, mapped to the columns by the server.

Each object's lines go verbatim into the ``jsonb`` column of a staging table by COPY (``sql.JSON_LINES``:
CSV mode with a quote and a delimiter that JSON never holds raw), numbered by a sequence as they come:
a line that is not JSON fails there, with its number, like a bad CSV field (and quarantine mode's
segmented COPY sets such lines aside, as for CSV). Then one ``INSERT ... SELECT ... jsonb_to_record(raw)``
maps every object's keys to the declared columns and converts the values to the columns' types, in the
partition's transaction. No line is parsed in Python. Only when that INSERT fails is the bad line looked
for: by bisecting the line numbers with trial INSERTs that are rolled back (about two more passes over
the object's rows), so the error names the key and the line, or, in quarantine mode, the line is set
aside and the others load.

With pyarrow installed (and ``[load] json_lines_reader`` not ``postgres``), each object is first read by Arrow and
COPYed as CSV straight into the table (``quick_copy``, ``jsonl_arrow``), in a savepoint; on any doubt that this loads
exactly what the path above would, the savepoint is rolled back and the object takes the path above.
"""
from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import IO

from . import db, quarantine, rowchecks
from . import sql as q
from .contracts import NO_CONTRACT, Contract
from .errors import BadInputError, ConfigurationError, CopyAborted, LoadError
from .files import EndMarkerGuard, GrowingFile, SourceReader, bom_length, temp_download
from .objects import CopyPlan, CsvDecoder, ObjectLoader, Scope, plain_copy
from .partitions import TableName, compression_for
from .s3 import S3Object
from .settings import JSON_LINES_READERS

logger = logging.getLogger("luigi-interface.luigi_pipelines")
_MIB = 1024 * 1024
_ALL = 2**62  # a line number past any object's last line
_WINDOW = 8192  # lines inserted at a time once the whole object's INSERT has failed: a bad line costs about 3x this
_NOT_JSON = bytes.maketrans(b"\x01\x02", b"\x03\x03")  # COPY's quote and delimiter -> a byte JSON refuses as well


def scrub(data: bytes) -> bytes:
    """``data`` with the bytes 0x01 and 0x02 (COPY's quote and delimiter here) made 0x03: the line stays one
    field and stays not JSON (JSON holds no raw control character), so it fails as such, with its number."""
    if b"\x01" in data or b"\x02" in data:
        return data.translate(_NOT_JSON)
    return data


@dataclass(frozen=True)
class JsonLinesDecoder:
    """Objects of JSON lines, each line one JSON object whose keys name the declared columns.

    A key the columns do not name is ignored, or, with ``extra`` naming a declared ``jsonb`` column, kept
    there (the object without the mapped keys; NULL when there are none). A missing key or a JSON
    ``null`` is NULL. A nested object or array goes whole into a ``jsonb`` (or ``json``, ``text``)
    column, an array also into an SQL array column (``text[]``). Strings and numbers are read by the
    column type's own input (``"2019-02-01T10:00:00+01:00"`` into ``timestamptz``, ``12.50`` or ``"12.50"``
    into ``numeric``). Empty lines are skipped; a line of blanks, like any other line that is not one
    JSON object, is an error naming the key and the line (a reject under ``max_bad_rows``). So is an object none
    of whose keys names a declared column (``{}``; ``{"ID": 3}`` for ``id``), unless ``unmatched_lines_ok``
    (then a row of NULLs), and a key of a scope column with another value (``rowchecks``).
    """

    extra: str = ""
    unmatched_lines_ok: bool = False
    reader: str = ""  # "arrow", "postgres" or "auto"; "": the [load] json_lines_reader setting
    chunk_bytes: int = _MIB  # Arrow's reader: the lines parsed and written at a time (it bounds its memory)

    def quick_copy(self, loader: ObjectLoader, obj: S3Object, raw: GrowingFile, reader: SourceReader
                   ) -> int | SourceReader:
        """Arrow's reader (``jsonl_arrow``), when it is chosen and reads the declared types: the object's lines COPYed
        as CSV straight into the table, in a savepoint. On any doubt that PostgreSQL's path would load the same rows
        (or fail), the savepoint is rolled back and a reader of the object from its start is returned for that path."""
        from . import jsonl_arrow  # not imported by a process that loads no JSON lines (its regular expressions)

        self._check_extra(loader.columns)
        choice = self.reader or loader.settings.json_lines_reader
        if choice not in JSON_LINES_READERS or self.chunk_bytes <= 0:
            raise ConfigurationError(f"JsonLinesDecoder(reader={self.reader!r}, chunk_bytes={self.chunk_bytes}): the "
                                     f"reader is one of {', '.join(JSON_LINES_READERS)}, chunk_bytes a positive size")
        plan = jsonl_arrow.ArrowPlan.of(loader.columns, self.extra, loader.tx.key.scope, self.unmatched_lines_ok)
        if loader.contract.refuses_extra_fields:  # Arrow drops undeclared keys: PostgreSQL's path names them
            return reader
        if choice == "postgres" or plan is None or not _arrow_installed(choice == "arrow"):
            return reader
        tx = loader.tx
        raw.restart()  # a reader without the scrub and the counts, which COPY's check of PostgreSQL's path needs
        reader = SourceReader(raw, obj.url, compression_for(obj.key), strip_bom=True, counted=False)
        rows = jsonl_arrow.ArrowJsonRows(reader, plan, self.chunk_bytes)
        statement = q.copy_from_stdin(loader.target, plan.columns, jsonl_arrow.CSV)
        where = loader.guard(CopyPlan(statement, loader.target, plan.columns))  # a refused row: PostgreSQL's path tells
        try:
            outcome = db.tentative_copy(tx, statement, loader.source_stream(obj, rows), obj.url,
                                        loader.settings.copy_buffer, keep=lambda copied: copied == rows.rows and reader.at_end(),
                                        where=where)
        finally:
            rows.close()  # its thread reads the object: stopped before anything else does
        if isinstance(outcome, int):
            tx.guarded += outcome if where is not None else 0
            return outcome
        if isinstance(outcome, CopyAborted) and rows.doubt is None:  # the reader's own error: a failed download,
            raise outcome if reader.error is None else reader.error from None  # corrupt gzip data
        doubt = rows.doubt or (f"COPY refused Arrow's rows: {outcome}" if outcome is not None else
                               f"COPY took another number of rows than Arrow's {rows.rows}, or ended early")
        logger.info("%s: %s; loading the object by PostgreSQL's path (jsonb_to_record)", obj.url, doubt)
        raw.restart()
        return self.open(raw, obj)

    def plan(self, table: TableName, columns: Sequence[q.Column], reader: SourceReader, scope: Scope = (),
             contract: Contract = NO_CONTRACT) -> CopyPlan:
        """Each line into the stage, which checks its keys as COPY reads it (``rowchecks.json_line_check``): with
        ``extra_fields="refuse"``, a key no column declares is a bad line naming it. (A missing key is NULL whatever
        the contract: JSON lines carry no schema of the file to tell a missing key from a null.)"""
        self._check_extra(columns)
        if self.extra and contract.refuses_extra_fields:
            raise ConfigurationError(f"JsonLinesDecoder(extra={self.extra!r}) keeps the keys no column declares, which "
                                     f"extra_fields='refuse' refuses: choose one")
        check = rowchecks.json_line_check(q.JSON_LINE.name, [c.name for c in columns if c.name != self.extra], scope,
                                          any_key=bool(self.extra), unmatched_ok=self.unmatched_lines_ok,
                                          refuse_other=contract.refuses_extra_fields)
        stage = (q.create_json_stage(),) if check is None else (*rowchecks.create_functions(), q.create_json_stage((check,)))
        return CopyPlan(q.copy_json_lines(), q.STAGE, (q.JSON_LINE,), table, tuple(columns), stage)  # lines count from 1

    def _check_extra(self, columns: Sequence[q.Column]) -> None:
        by_name = {c.name: c for c in columns}
        if self.extra and (self.extra not in by_name or by_name[self.extra].type.lower() not in ("jsonb", "json")):
            raise ConfigurationError(f"JsonLinesDecoder(extra={self.extra!r}) must name a declared jsonb column, "
                                     f"not {by_name[self.extra].type if self.extra in by_name else 'an undeclared one'}")

    def open(self, raw: GrowingFile, obj: S3Object) -> SourceReader:
        return SourceReader(raw, obj.url, compression_for(obj.key), strip_bom=True, quote=q.JSON_LINES.quote.encode(),
                            scrub=scrub)

    def check_copied(self, obj: S3Object, reader: SourceReader, rows: int) -> None:
        """COPY must have taken every line (scrubbed data holds no quote, so every line is one row)."""
        CsvDecoder(q.JSON_LINES).check_copied(obj, reader, rows)

    def located(self, reader: SourceReader | None, error: BadInputError) -> BadInputError:
        """COPY's error names the stage's column and PostgreSQL's words; the line and what is wrong with it count."""
        if error.column != q.JSON_LINE.name:
            return error
        reason = _in_words(error.reason or "", error.detail)
        return BadInputError(f"{str(error).split(f' column {error.column}:', 1)[0]}: {reason}", error.line, None, reason)

    def salvage(self, loader: ObjectLoader, obj: S3Object, raw: IO[bytes], first_error: BadInputError) -> int:
        """The COPY into the stage failed (a line that is not JSON, bytes that are not UTF-8): the segmented copy of
        ``quarantine`` around those lines, each segment numbered from its first line, over a ``scrub``bed copy of
        the object's lines (``objects.plain_copy``) (so no byte of them is the quote that ``quarantine`` tracks)."""
        if first_error.line is None:
            raise first_error  # a corrupt stream is not a bad line
        tx = loader.tx
        statement = q.copy_json_lines()

        def copy_segment(segment: quarantine.SegmentReader) -> int | BadInputError:
            db.execute(tx, q.number_json_lines(), (segment.first_line,))
            outcome = db.copy_in_savepoint(tx, statement, EndMarkerGuard(segment, q.JSON_LINES.quote.encode()),
                                           obj.url, loader.settings.copy_buffer)
            return self.located(None, outcome) if isinstance(outcome, BadInputError) else outcome

        with temp_download(loader.settings.temp_directory) as plain:
            plain = plain_copy(obj, raw, plain, scrub)
            lines = quarantine.LineFile(plain, first_offset=bom_length(plain))
            quote = q.JSON_LINES.quote.encode()
            copier = quarantine.QuarantineCopy(lines, obj.url, quote, quote, "UTF8", copy_segment,
                                               budget=loader.max_bad_rows - tx.rejected)
            rows, rejects = copier.run(first_line=1)
        loader.reject(obj, rejects)
        return rows

    def insert_staged(self, loader: ObjectLoader, obj: S3Object, copied: int) -> int:
        """Insert the staged lines' objects into the table, all at once. When that fails (a line that is not an
        object, a value its column's type refuses, a constraint of the table), the lines are inserted again
        by windows of ``_WINDOW`` lines (an index on the line number added first), and a failing window is
        bisected to its first bad line: named, or in quarantine mode set aside while the others go in."""
        tx, plan = loader.tx, loader.plan
        assert plan.staged_into is not None
        statement = q.insert_json_lines(plan.staged_into, plan.declared, self.extra)
        outcome = _try_insert(tx, obj, statement, 1, _ALL, keep=True)
        if not isinstance(outcome, BadInputError):
            return outcome
        for step in q.index_json_lines():
            db.execute(tx, step)
        return self._insert_around_bad_lines(loader, obj, statement, outcome)

    def _insert_around_bad_lines(self, loader: ObjectLoader, obj: S3Object, statement: q.sql.Composable,
                                 failed: BadInputError) -> int:
        tx = loader.tx
        row = db.fetch_one(tx, q.last_json_line())  # max(line): one row, NULL for an empty stage
        last = row[0] if row and row[0] is not None else 0
        inserted, first = 0, 1
        while first <= last:
            stop = min(first + _WINDOW - 1, last)
            outcome = _try_insert(tx, obj, statement, first, stop, keep=True)
            if not isinstance(outcome, BadInputError):
                inserted, first = inserted + outcome, stop + 1
                continue
            line, error = _first_bad_line(tx, obj, statement, first, stop, outcome)
            if loader.max_bad_rows <= 0:
                raise BadInputError(f"{obj.url} line {line}: {error.reason}", line, None, error.reason)
            if line > first:
                inserted += _inserted(obj, _try_insert(tx, obj, statement, first, line - 1, keep=True))
            loader.reject(obj, [quarantine.Reject(line, _raw_line(tx, line), error.reason or str(error))])
            first = line + 1
        if loader.max_bad_rows <= 0:  # every window went in: the rows only fail all together
            raise BadInputError(f"{obj.url}: {failed.reason} (in the INSERT of the object's lines, which went in "
                                f"window by window)", None, None, failed.reason)
        return inserted


def _arrow_installed(required: bool) -> bool:
    """Whether pyarrow imports; when it does not and Arrow's reader is ``required``, a ``ConfigurationError``."""
    from . import jsonl_arrow

    try:
        jsonl_arrow.pyarrow_json()
    except ImportError as exc:
        if required:
            raise ConfigurationError(f"json_lines_reader=arrow needs pyarrow, which is not installed ({exc}): "
                                     f"pip install 'luigi-pipelines[parquet]'") from None
        return False
    return True


def _inserted(obj: S3Object, outcome: int | BadInputError) -> int:
    if isinstance(outcome, BadInputError):  # the bisection found these lines good
        raise LoadError(f"{obj.url}: lines that went in on their own failed a second time: {outcome}")
    return outcome


def _try_insert(tx: db.PartitionTransaction, obj: S3Object, statement: q.sql.Composable, first: int, last: int,
                keep: bool) -> int | BadInputError:
    """Insert lines ``first``..``last`` in a savepoint (``db.attempt``): their row count (the rows kept if ``keep``,
    else rolled back too), or what PostgreSQL found wrong, in words (everything of this try rolled back)."""
    def insert() -> int:
        with db.translating(obj.url, db.BAD_DATA):
            return db.execute(tx, statement, (first, last))

    outcome = db.attempt(tx, insert, keep)
    if not isinstance(outcome, BadInputError):
        return outcome
    reason = _in_words(outcome.reason or "", outcome.detail)
    return BadInputError(reason, None, None, reason)


def _in_words(message: str, detail: str | None) -> str:
    """What is wrong with a line, from PostgreSQL's ``message`` and its ``detail`` (which says where the JSON is
    wrong): a line that is not JSON, one nested too deep, one that is not an object, a value its column refuses."""
    if message == "invalid input syntax for type json":
        if detail == "Character with value 0x03 must be escaped.":  # 0x01 and 0x02 were made 0x03 (``scrub``)
            detail = "A control character (0x01, 0x02 or 0x03) must be escaped."
        return "the line is not JSON" + (f": {detail[:1].lower()}{detail[1:].rstrip('.')}" if detail else "")
    if message == "stack depth limit exceeded":
        return f"the line is nested too deep for PostgreSQL ({message})"
    if message.startswith("cannot call populate_composite on"):  # jsonb_to_record of an array or a scalar
        message = f"the line is not a JSON object ({message})"
    return f"{message}: {detail}" if detail else message


def _first_bad_line(tx: db.PartitionTransaction, obj: S3Object, statement: q.sql.Composable, first: int, stop: int,
                    error: BadInputError) -> tuple[int, BadInputError]:
    """The first line of ``first``..``stop`` (which fail together with ``error``) whose INSERT fails with the lines
    before it, and the error it gives: the smallest ``last`` for which lines ``first``..``last`` fail, by
    bisection of trial INSERTs that are rolled back."""
    low, high = first, stop
    while low < high:
        middle = (low + high) // 2
        outcome = _try_insert(tx, obj, statement, first, middle, keep=False)
        if isinstance(outcome, BadInputError):
            high, error = middle, outcome
        else:
            low = middle + 1
    return high, error


def _raw_line(tx: db.PartitionTransaction, line: int) -> str:
    """The line's object as PostgreSQL parsed it (``jsonb``'s text: keys in jsonb's order, spaces normalised)."""
    row = db.fetch_one(tx, q.select_json_line(), (line,))
    return "" if row is None or row[0] is None else row[0][:64 * 1024]
