"""Temporary download files and the decoded readers that feed them to COPY (gzip, UTF-8 BOM)."""
from __future__ import annotations

import gzip
import os
import re
import socket
import tempfile
import threading
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO, Any

from .errors import BadInputError, PipelineError

_BOM = b"\xef\xbb\xbf"


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

    def __init__(self, fileobj: IO[bytes]) -> None:
        self._fd = fileobj.fileno()
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
        return data


class SourceReader:
    """A read-only view of a downloaded object as COPY should see it: decompressed, without a BOM.

    Errors in the compressed stream become ``BadInputError`` naming the object.
    """

    def __init__(self, raw: IO[bytes] | GrowingFile, source: str, compression: str | None, strip_bom: bool) -> None:
        self.source = source
        self._stream: Any = gzip.GzipFile(fileobj=raw, mode="rb") if compression == "gzip" else raw  # type: ignore[arg-type]
        self._strip_bom = strip_bom
        self.bytes_read = 0
        self.lines_read = 0  # complete lines handed to COPY, so a gzip error can say how far the data was good
        self.error: PipelineError | None = None  # psycopg2 reports a read() failure only as text; keep the real one

    def read(self, size: int = -1) -> bytes:
        try:
            data = self._stream.read(size)
        except PipelineError as exc:  # the download behind a GrowingFile failed
            self.error = exc
            raise
        except (OSError, EOFError, zlib.error) as exc:
            after = f" after line {self.lines_read}" if self.lines_read else ""
            self.error = BadInputError(f"{self.source}: corrupt or truncated gzip data{after}: {exc}")
            raise self.error from exc
        if self._strip_bom:
            self._strip_bom = False
            if data.startswith(_BOM):
                data = data[len(_BOM):]
        self.bytes_read += len(data)
        self.lines_read += data.count(b"\n")
        return data
