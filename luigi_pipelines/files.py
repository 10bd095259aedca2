"""Temporary download files and the decoded readers that feed them to COPY (gzip, UTF-8 BOM)."""
from __future__ import annotations

import gzip
import os
import re
import socket
import tempfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO

from .errors import BadInputError

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


class SourceReader:
    """A read-only view of a downloaded object as COPY should see it: decompressed, without a BOM.

    Errors in the compressed stream become ``BadInputError`` naming the object.
    """

    def __init__(self, raw: IO[bytes], source: str, compression: str | None, strip_bom: bool) -> None:
        self.source = source
        self._stream: IO[bytes] | gzip.GzipFile = gzip.GzipFile(fileobj=raw, mode="rb") if compression == "gzip" else raw
        self._strip_bom = strip_bom
        self.bytes_read = 0
        self.lines_read = 0  # complete lines handed to COPY, so a gzip error can say how far the data was good
        self.error: BadInputError | None = None  # psycopg2 reports a read() failure only as text; keep the real one

    def read(self, size: int = -1) -> bytes:
        try:
            data = self._stream.read(size)
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
