"""A test-only load task that can stop at a chosen phase of its transaction, run as a real process.

``tests/test_faults.py`` runs it with ``python -m luigi --module tests.fault_tasks LoadFaulty ...``.
With ``FAULT_PHASE`` and ``FAULT_DIR`` set, the task stops at that phase: it writes its pid to
``FAULT_DIR/reached`` and waits (at most ``FAULT_WAIT_S`` seconds) for ``FAULT_DIR/release``, so
the test can act at a known point (kill -9, terminate the backend, stop S3 or PostgreSQL) without
sleeping. ``FAULT_DATE`` limits the stop to one partition date. The phases:

- ``download``: inside the S3 download, after the first chunk reached the temporary file;
- ``copy``: inside ``COPY ... FROM STDIN``, after PostgreSQL received the first buffer;
- ``commit``: after every object was copied and the marker written, just before the commit.

Without ``FAULT_PHASE`` it is an ordinary load task. The ``[fault]`` section names the bucket and table.
"""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import luigi
from luigi.tools.range import RangeDaily  # noqa: F401 - registers RangeDaily with [core] autoload_range=false

from luigi_pipelines import LoadPartition, db


class fault(luigi.Config):  # noqa: N801 - the [fault] section
    bucket = luigi.Parameter(description="bucket of the test's objects")
    table = luigi.Parameter(description="target table, schema-qualified")


def _stops_at(phase: str, date: Any) -> bool:
    if os.environ.get("FAULT_PHASE") != phase:
        return False
    return os.environ.get("FAULT_DATE", str(date)) == str(date)


def checkpoint() -> None:
    """Tell the test where we are (our pid in ``reached``), then wait for ``release``."""
    directory = Path(os.environ["FAULT_DIR"])
    (directory / "reached.tmp").write_text(str(os.getpid()))
    (directory / "reached.tmp").rename(directory / "reached")  # appears complete or not at all
    deadline = time.monotonic() + float(os.environ.get("FAULT_WAIT_S", "60"))
    while not (directory / "release").exists():
        if time.monotonic() > deadline:
            raise RuntimeError(f"fault test: never released from {directory}")
        time.sleep(0.01)


class _Delegate:
    def __init__(self, inner: Any) -> None:
        self._inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


class _StopAfterFirstWrite(_Delegate):
    """A download's temporary file that stops after the first chunk is written."""

    _stopped = False

    def write(self, data: bytes) -> int:
        written = self._inner.write(data)
        if not self._stopped:
            self._stopped = True
            self._inner.flush()
            checkpoint()
        return written


class _StopInDownload(_Delegate):
    """The S3 client, with downloads that stop after their first chunk."""

    def download(self, obj: Any, fileobj: Any, **kwargs: Any) -> Any:
        return self._inner.download(obj, _StopAfterFirstWrite(fileobj), **kwargs)


class _StopOnSecondRead(_Delegate):
    """A COPY source that stops before its second read, when PostgreSQL is inside COPY with data."""

    _reads = 0

    def read(self, size: int = -1) -> bytes:
        self._reads += 1
        if self._reads == 2:
            checkpoint()
        return self._inner.read(size)


class LoadFaulty(LoadPartition):
    """Objects ``d/<date>/*`` of ``[fault] bucket`` into ``[fault] table (id bigint, day date, v text)``."""

    key_prefix = "d/{date:%Y-%m-%d}/"
    date_column = "day"
    columns = [("id", "bigint"), ("day", "date"), ("v", "text")]
    bucket = property(lambda self: fault().bucket)
    table = property(lambda self: fault().table)

    def s3_client(self) -> Any:
        s3 = super().s3_client()
        return _StopInDownload(s3) if _stops_at("download", self.date) else s3

    def source_stream(self, obj: Any, stream: Any) -> Any:
        return _StopOnSecondRead(stream) if _stops_at("copy", self.date) else stream

    def before_commit(self, tx: db.PartitionTransaction) -> None:
        if _stops_at("commit", self.date):
            checkpoint()
