"""Temporary download files and the decoded readers that feed them to COPY (gzip, UTF-8 BOM, ``\\.`` lines)."""
from __future__ import annotations

import codecs
import gzip
import os
import re
import socket
import tempfile
import threading
import zlib
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import IO, Any

from .errors import BadInputError, PipelineError

# A line that is exactly \. (before \n or \r\n), at the start of the data or after a \n.
_END_MARKER_LINE = re.compile(rb"^\\\.(?=\r?\n)", re.MULTILINE)
_END_MARKER_LAST = re.compile(rb"^\\\.(?=\r?\n|\r?\Z)", re.MULTILINE)
_PEEK = 1024 * 1024  # the first chunk of an object, read before its COPY (is it empty? its header?)


def _prefix(host: str, pid: int) -> str:
    return f"luigi_pipelines-{host}-{pid}-"


@contextmanager
def temp_download(directory: str) -> Iterator[IO[bytes]]:
    """A ``NamedTemporaryFile`` (mode 0600) in ``directory``, removed on every path out of the block.

    Its name carries the host and process id, so that a file left by a killed process (``kill -9``
    runs no cleanup) is recognised and removed by the next load on that host: see ``sweep_stale``.
    """
    prefix = _prefix(socket.gethostname(), os.getpid())
    with tempfile.NamedTemporaryFile(dir=directory, prefix=prefix, suffix=".part") as tmp:
        os.fchmod(tmp.fileno(), 0o600)  # already 0600 from mkstemp; made explicit as a guarantee
        yield tmp


def sweep_stale(directory: str) -> list[str]:
    """Remove download files in ``directory`` left by processes of this host that no longer run."""
    pattern = re.compile(re.escape(f"luigi_pipelines-{socket.gethostname()}-") + r"(\d+)-.*\.part$")
    removed: list[str] = []
    try:
        entries = list(os.scandir(directory))
    except FileNotFoundError:
        return removed
    for entry in entries:
        match = pattern.match(entry.name)
        if match and not _running(int(match.group(1))):
            try:
                os.unlink(entry.path)
                removed.append(entry.path)
            except FileNotFoundError:  # another sweeper was faster
                pass
    return removed


def _running(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


class DownloadCancelled(Exception):
    """Raised in the download thread when its reader no longer wants the data (COPY failed)."""


class GrowingFile:
    """Sequential reads of a temporary file that a download thread is still writing.

    The writer reports each flushed byte count with ``advance`` and ends with ``finish`` (with its
    error, if any); ``read`` waits for bytes that are not there yet. Reads go through ``os.pread``
    on the writer's own descriptor, so the file is never opened twice. This lets COPY start on the
    first megabyte instead of after the last one, without the object ever being held in memory.
    """

    def __init__(self, fileobj: IO[bytes], on_read: Callable[[int], None] | None = None) -> None:
        self._fd = fileobj.fileno()
        self._on_read = on_read  # called with the bytes read so far, after each read (progress)
        self._cond = threading.Condition()
        self._written = 0
        self._done = False
        self._error: BaseException | None = None
        self._cancelled = False
        self._pos = 0

    def advance(self, written: int) -> None:
        with self._cond:
            if self._cancelled:
                raise DownloadCancelled()
            self._written = written
            self._cond.notify_all()

    def finish(self, error: BaseException | None = None, size: int | None = None) -> None:
        """The download ended: with ``size`` bytes in the file, or with ``error``."""
        with self._cond:
            self._done, self._error = True, error
            if size is not None:
                self._written = size
            self._cond.notify_all()

    def cancel(self) -> None:
        with self._cond:
            self._cancelled = True

    def restart(self) -> None:
        """Read from the first byte again (a JSON-lines object that Arrow gave up on is read again by PostgreSQL)."""
        self._pos = 0

    def fileno(self) -> int:
        """The file's descriptor, for a reader of the whole file once ``wait`` has returned (Parquet)."""
        return self._fd

    def wait(self) -> None:
        """Block until the download has ended; raise its error if it failed."""
        with self._cond:
            self._cond.wait_for(lambda: self._done)
            if self._error is not None:
                raise self._error

    def read(self, size: int = -1) -> bytes:
        with self._cond:
            self._cond.wait_for(lambda: self._done or self._written > self._pos)
            if self._error is not None:
                raise self._error  # never hand COPY part of an object whose download failed
            end = self._written if size < 0 else min(self._written, self._pos + size)
        data = os.pread(self._fd, end - self._pos, self._pos)
        self._pos += len(data)
        if self._on_read is not None and data:
            self._on_read(self._pos)
        return data


def bom_length(stream: IO[bytes]) -> int:
    """The length of a UTF-8 byte-order mark at the start of ``stream`` (0 or 3)."""
    stream.seek(0)
    return len(codecs.BOM_UTF8) if stream.read(len(codecs.BOM_UTF8)) == codecs.BOM_UTF8 else 0


class EndMarkerGuard:
    """Reads ``stream`` with every line that is exactly ``\\.`` sent as ``"\\."`` (the same value, quoted).

    In CSV mode PostgreSQL before 18 takes such a line as the end of the data and silently ignores
    everything after it; PostgreSQL 18 reads it as the value ``\\.``. Quoted, it is that value on
    every version: loaded as data (a one-column table) or refused as a short row with its line
    number, never an early end. PostgreSQL's CSV fields may mix quoted and unquoted parts, so the
    same bytes keep their value inside a quoted multi-line field too. Data without ``\\.`` passes
    through untouched (one ``in`` test per read); line numbers never change.
    """

    def __init__(self, stream: Any, quote: bytes = b'"') -> None:
        self._stream = stream
        self._quoted = quote + b"\\." + quote
        self._held = b""  # the start of a last line that may still become a \. line
        self._line_start = True

    def read(self, size: int = -1) -> bytes:
        while True:
            chunk = self._stream.read(size)
            data, self._held = self._held + chunk, b""
            if not chunk:
                return self._quote(data, _END_MARKER_LAST)
            tail = data[data.rfind(b"\n") + 1:]
            if len(tail) < len(data) or self._line_start:
                if tail and b"\\.\r".startswith(tail):
                    data, self._held = data[: len(data) - len(tail)], tail
            if data:
                return self._quote(data, _END_MARKER_LINE)

    def _quote(self, data: bytes, pattern: re.Pattern[bytes]) -> bytes:
        at_line_start, self._line_start = self._line_start, data.endswith(b"\n") if data else self._line_start
        if b"\\." not in data:
            return data
        if at_line_start:
            return pattern.sub(self._quoted, data)
        first = data.find(b"\n") + 1  # the first line continues a line begun in an earlier read
        if first == 0:
            return data
        return data[:first] + pattern.sub(self._quoted, data[first:])


class SourceReader:
    """A read-only view of a downloaded object as COPY should see it: decompressed, without a BOM,
    ``\\.`` lines quoted (``EndMarkerGuard``).

    It counts the line ends it hands on and notes whether a quote character occurred, so that the
    rows COPY reports can be checked against the records the object holds. Errors in the
    compressed stream become ``BadInputError`` naming the object; ``error`` keeps the real
    exception of a failed read, which psycopg2 reports to the caller only as text.
    """

    def __init__(self, raw: IO[bytes] | GrowingFile | Any, source: str, compression: str | None, strip_bom: bool,
                 quote: bytes = b'"', scrub: Callable[[bytes], bytes] | None = None, counted: bool = True) -> None:
        self.source = source
        self._stream: Any = gzip.GzipFile(fileobj=raw, mode="rb") if compression == "gzip" else raw  # type: ignore[arg-type]
        self._strip_bom = strip_bom
        self._scrub = scrub  # applied to the decoded data before it is counted and handed on (JSON lines)
        self._quote = quote
        self._counted = counted  # lines and quotes counted (for COPY's row check); a reader that is not COPY's: not
        self._guard = EndMarkerGuard(_Decoded(self), quote)
        self._peeked: bytes | None = None
        self.bytes_read = 0
        self.lines_read = 0  # \n line ends handed to COPY
        self._lone_cr = 0  # \r line ends not followed by \n, counted until a quote is seen
        self.saw_quote = False
        self.last_byte = b""
        self.error: PipelineError | None = None

    def is_empty(self) -> bool:
        """Whether the object has no data at all once decompressed and without its byte-order mark."""
        return not self._peek()

    def first_line(self, limit: int = _PEEK) -> bytes:
        """The first line of the data, without its line end, read ahead of COPY (which still gets it):
        usually inside the first chunk, which ``is_empty`` has read already."""
        peeked = self._peek()
        while b"\n" not in peeked and len(peeked) < limit:
            more = self._fetch(limit - len(peeked))
            if not more:
                break
            peeked = self._peeked = peeked + more
        line, newline, _ = peeked.partition(b"\n")
        if not newline and len(peeked) >= limit:
            raise BadInputError(f"{self.source}: the first line is longer than {limit // 1024} KiB: not a header")
        return line[:-1] if line.endswith(b"\r") else line

    def _peek(self) -> bytes:
        if self._peeked is None:
            self._peeked = self._fetch(_PEEK)
        return self._peeked

    def read(self, size: int = -1) -> bytes:
        return self._guard.read(size)

    def decoded(self, size: int) -> bytes:
        """The data as decoded, without the ``\\.`` guard (for a reader that is not COPY: Arrow's)."""
        return self._decoded(size)

    def _decoded(self, size: int) -> bytes:
        if self._peeked is not None:
            data, self._peeked = self._peeked, None
            return data
        return self._fetch(size)

    def _fetch(self, size: int) -> bytes:
        try:
            data = self._stream.read(size)
        except PipelineError as exc:  # the download behind a GrowingFile failed
            self.error = exc
            raise
        except (OSError, EOFError, zlib.error) as exc:
            after = f" after line {self.lines_read}" if self.lines_read else ""
            self.error = BadInputError(f"{self.source}: corrupt or truncated gzip data{after}: {exc}")
            raise self.error from exc
        if self._strip_bom and data:
            self._strip_bom = False
            if data.startswith(codecs.BOM_UTF8):
                data = data[len(codecs.BOM_UTF8):]
        if self._scrub is not None:
            data = self._scrub(data)
        self._account(data)
        return data

    def _account(self, data: bytes) -> None:
        if not data:
            return
        self.bytes_read += len(data)
        if not self._counted:
            return
        self.lines_read += data.count(b"\n")
        if not self.saw_quote:  # the record count below only matters while no quote was seen
            self.saw_quote = self._quote in data
            if b"\r" in data:  # lone \r line ends (old Mac files); a \r\n is already counted by its \n
                crlf = data.count(b"\r\n") + (self.last_byte == b"\r" and data[:1] == b"\n")
                self._lone_cr += data.count(b"\r") - crlf
        self.last_byte = data[-1:]

    def at_end(self) -> bool:
        """Whether everything the object holds was handed on (one more read of the data finds nothing)."""
        return self._peeked in (None, b"") and not self._stream.read(1)

    @property
    def records_if_unquoted(self) -> int | None:
        """The records (lines) the data holds when no quote character occurred in it, else None
        (a quoted field may span lines, so only a parser could count them)."""
        if self.saw_quote:
            return None
        return self.lines_read + self._lone_cr + (1 if self.last_byte not in (b"", b"\n", b"\r") else 0)


class _Decoded:
    """The decoded stream of a ``SourceReader`` (what its ``EndMarkerGuard`` reads)."""

    def __init__(self, reader: SourceReader) -> None:
        self._reader = reader

    def read(self, size: int = -1) -> bytes:
        return self._reader._decoded(size)


def csv_line(row: Sequence[Any]) -> bytes:
    """One CSV line for COPY: NULL as an empty unquoted field, every other value quoted."""
    fields = ("" if v is None else '"' + str(v).replace('"', '""') + '"' for v in row)
    return (",".join(fields) + "\n").encode()
