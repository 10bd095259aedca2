"""Temporary download files and the decoded readers that feed them to COPY (gzip, UTF-8 BOM)."""
from __future__ import annotations

import gzip
import os
import tempfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO

from .errors import BadInputError

_BOM = b"\xef\xbb\xbf"


@contextmanager
def temp_download(directory: str) -> Iterator[IO[bytes]]:
    """An unnamed temporary file (mode 0600) in ``directory``, gone on every path out of the block.

    Unnamed (``O_TMPFILE`` on Linux, else unlinked at once), so that not even a ``kill -9`` or a
    power cut leaves a downloaded object behind in ``directory``.
    """
    with tempfile.TemporaryFile(dir=directory, prefix="luigi_pipelines-", suffix=".part") as tmp:
        os.fchmod(tmp.fileno(), 0o600)  # already 0600 from the kernel or mkstemp; made explicit as a guarantee
        yield tmp


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
