"""Quarantine mode: load an object's good rows and set its bad rows aside, when the fast COPY has failed.

PostgreSQL 15 has no ``COPY ... ON_ERROR``. The fast path therefore stays one plain COPY per object
(in a savepoint); only when it fails does this module take over for that object: it COPYs the
object again in segments of physical lines, cut at the record PostgreSQL names in each error.
The rows before a bad record are copied at COPY speed, the bad record becomes a reject, and the
rest follows in the next segment. No row goes through Python except the bad ones and the line
scan between errors.

Cost: the failed fast COPY sends the object once; the segments send it once more; each bad row
adds at most one failed segment (up to ``chunk_bytes``, 8 MiB) and a COPY of the row alone.
"""
from __future__ import annotations

import bisect
import contextlib
import gzip
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import IO

from psycopg2.extensions import encodings

from .errors import BadInputError

_MAX_RAW = 64 * 1024  # bytes of a bad record kept in the rejects table


@dataclass(frozen=True)
class Reject:
    """One record set aside: where it was, what it said and why it was refused."""

    line: int
    raw: str
    error: str


class LineFile:
    """Access to a seekable byte stream by physical line number (1-based).

    Offsets are kept for a sparse set of lines (every 4096th, plus those asked for), so memory
    stays small however long the file; any other line is found by reading forward from the
    nearest kept one.
    """

    _EVERY = 4096

    def __init__(self, stream: IO[bytes], first_offset: int = 0) -> None:
        self.stream = stream
        self._lines = [1]
        self._offsets = [first_offset]
        stream.seek(0, 2)
        self.size = stream.tell()

    def remember(self, line: int, offset: int) -> None:
        i = bisect.bisect_left(self._lines, line)
        if i == len(self._lines) or self._lines[i] != line:
            self._lines.insert(i, line)
            self._offsets.insert(i, offset)

    def offset(self, line: int) -> int | None:
        """Byte offset where ``line`` starts, or None if the stream ends before it."""
        i = bisect.bisect_right(self._lines, line) - 1
        n, offset = self._lines[i], self._offsets[i]
        self.stream.seek(offset)
        while n < line:
            if not self.stream.readline():
                return None
            n += 1
            offset = self.stream.tell()
            if n % self._EVERY == 0:
                self.remember(n, offset)
        self.remember(line, offset)
        return offset

    def line_after(self, line: int, nbytes: int) -> int | None:
        """The first line starting at least ``nbytes`` after ``line`` starts; None if the stream ends first."""
        start = self.offset(line)
        if start is None or start + nbytes >= self.size:
            return None
        self.stream.seek(start)
        data = self.stream.read(nbytes)
        following = line + data.count(b"\n")
        offset = start + nbytes
        if not data.endswith(b"\n"):
            rest = self.stream.readline()
            if not rest.endswith(b"\n"):
                return None
            following, offset = following + 1, offset + len(rest)
        self.remember(following, offset)
        return following

    def at_end(self, line: int) -> bool:
        offset = self.offset(line)
        return offset is None or offset >= self.size

    def scan(self, first: int) -> Iterator[tuple[int, bytes]]:
        """(line number, bytes) of every line from ``first`` on."""
        offset = self.offset(first)
        if offset is None:
            return
        self.stream.seek(offset)
        yield from enumerate(iter(self.stream.readline, b""), first)

    def read_lines(self, first: int, last: int) -> bytes:
        """The bytes of lines ``first`` .. ``last`` inclusive (``last`` may lie past the end)."""
        start = self.offset(first)
        assert start is not None
        end = self.offset(last + 1)
        self.stream.seek(start)
        return self.stream.read() if end is None else self.stream.read(end - start)

    def segment(self, first: int, stop: int | None) -> SegmentReader:
        """A reader of lines ``first`` up to (not including) ``stop``; ``None`` reads to the end."""
        start = self.offset(first)
        assert start is not None
        end = None if stop is None else self.offset(stop)
        return SegmentReader(self.stream, start, end, first)


class SegmentReader:
    """A file-like view of ``stream[start:end]`` for ``copy_expert``; ``first_line`` is the line it starts at."""

    def __init__(self, stream: IO[bytes], start: int, end: int | None, first_line: int = 1) -> None:
        self.stream, self.pos, self.end = stream, start, end
        self.first_line = first_line

    def read(self, size: int = -1) -> bytes:
        self.stream.seek(self.pos)
        if self.end is not None:
            size = min(size if size >= 0 else self.end, self.end - self.pos)
        data = self.stream.read(size)
        self.pos += len(data)
        return data


def record_bounds(lines: LineFile, first: int, target: int, quote: bytes, escape: bytes) -> tuple[int, int]:
    """The first and last physical line of the CSV record that contains line ``target``.

    Records may span lines inside quotes; the quote state is tracked from ``first`` (a record start).
    """
    start, in_quote, n = first, False, first
    for n, text in lines.scan(first):
        if not in_quote:
            start = n
        if escape != quote:
            text = text.replace(escape + escape, b"").replace(escape + quote, b"")
        in_quote ^= text.count(quote) % 2 == 1
        if n >= target and not in_quote:
            return start, n
    return start, n


def decoded_copy(raw: IO[bytes], compressed: bool, into: IO[bytes],
                 scrub: Callable[[bytes], bytes] | None = None) -> IO[bytes]:
    """The object's plain bytes in a seekable file: ``raw`` itself, or decompressed (and each chunk ``scrub``bed,
    if given) into ``into``."""
    if not compressed and scrub is None:
        return raw
    raw.seek(0)
    with gzip.GzipFile(fileobj=raw, mode="rb") if compressed else contextlib.nullcontext(raw) as source:
        for chunk in iter(lambda: source.read(1024 * 1024), b""):
            into.write(chunk if scrub is None else scrub(chunk))
    into.flush()
    return into


@dataclass
class QuarantineCopy:
    """Copies one object in segments around its bad records.

    ``copy_segment(reader)`` COPYs a segment inside a savepoint and returns either the number of
    rows or the ``BadInputError`` PostgreSQL raised (its ``line`` counted from the segment's start);
    ``budget`` is how many more rejects the partition may take.

    A record is only ever rejected after PostgreSQL has refused it on its own, so a good row is
    never set aside, even where PostgreSQL's line count and the physical lines disagree (it does
    not count newlines inside a quoted field that come before the first line end of a stream).
    """

    lines: LineFile
    source: str
    quote: bytes
    escape: bytes
    encoding: str
    copy_segment: Callable[[SegmentReader], int | BadInputError]
    budget: int
    chunk_bytes: int = 8 * 1024 * 1024  # a failed COPY costs at most this much re-sent data

    def run(self, first_line: int) -> tuple[int, list[Reject]]:
        """Copy from ``first_line`` to the end; returns the rows copied and the rejects.

        Stops early once the rejects exceed ``budget`` (the caller then fails the load).
        """
        rows, rejects = 0, []
        pos, stop = first_line, None
        suspect: tuple[int, int] | None = None  # (first, last line) of a record to try on its own next
        while not self.lines.at_end(pos):
            if suspect is None or suspect[0] != pos:
                stop = stop or self.lines.line_after(pos, self.chunk_bytes)
                outcome = self.copy_segment(self.lines.segment(pos, stop))
                if not isinstance(outcome, BadInputError):
                    rows += outcome
                    if stop is None:
                        break
                    pos, stop = stop, None
                    continue
                start, end = record_bounds(self.lines, pos, self._locate(outcome, pos, stop), self.quote, self.escape)
                suspect = (start, end)
                if start > pos:  # copy the good records before the suspect one first
                    stop = start
                    continue
            start, end = suspect
            suspect = None
            alone = self.copy_segment(self.lines.segment(start, end + 1))
            if isinstance(alone, BadInputError):
                rejects.append(self._reject(start, end, alone))
                if len(rejects) > self.budget:
                    break
            else:
                rows += alone
            pos, stop = end + 1, None
        return rows, rejects

    def _locate(self, error: BadInputError, pos: int, stop: int | None) -> int:
        """The physical line of the record PostgreSQL complained about, as nearly as it can be told."""
        if error.line is None:
            raise error  # not a row error (e.g. a corrupt stream): nothing to set aside
        first_start, first_end = record_bounds(self.lines, pos, pos, self.quote, self.escape)
        hidden = first_end - first_start if error.line > 1 else 0
        line = pos + error.line - 1 + hidden
        if stop is not None:
            line = min(line, stop - 1)
        while line > pos and self.lines.at_end(line):  # an unterminated quote is reported past the end
            line -= 1
        return line

    def _reject(self, start: int, end: int, error: BadInputError) -> Reject:
        raw = self.lines.read_lines(start, end)[:_MAX_RAW]
        text = raw.decode(python_codec(self.encoding), errors="backslashreplace").replace("\x00", "\\x00")
        return Reject(start, text.rstrip("\r\n"), error.reason or str(error))


def python_codec(pg_encoding: str) -> str:
    """Python's codec for a PostgreSQL encoding name, from psycopg2's own map (``WIN1251`` → ``cp1251``).

    Names are normalized as psycopg2 does (``win-1251``, ``EUC_JP``); an unknown one falls back to UTF-8,
    though PostgreSQL has already refused it by then.
    """
    return encodings.get(pg_encoding.replace("-", "").replace("_", "").upper(), "utf_8")
