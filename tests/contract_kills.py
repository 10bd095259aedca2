"""A fork server of loads that add a column (``contract = "evolve"``) and run data checks, each stopping at a chosen
point to be killed.

``tests/test_contracts.py`` starts ``python -m tests.contract_kills`` once: it imports the package, then for each
line on its stdin (``table date point object byte directory``) forks a child that loads ``date`` into ``table``
and stops at ``point``: it writes its pid to ``directory/reached`` and waits there to be killed. The server
prints ``started <pid>`` for each child and ``exited <pid> <status>`` when it ends (a negative status: the signal).
A fork costs milliseconds where a new interpreter costs a second of imports: thirty kills stay quick.

The points: ``start`` (before the load's transaction), ``altered`` (the column added, before the first COPY),
``object`` (before object ``object``), ``copy`` (inside the COPY of object ``object`` once ``byte`` bytes were
read, in reads of at most 4 KiB), ``checked`` (the data checks run, before the marker), ``commit`` (rows and marker
written, not committed), ``committed`` (after the commit). Config:
``LUIGI_CONFIG_PATH`` (``[load]``), the bucket in ``KILL_BUCKET``.
"""
from __future__ import annotations

import os
import signal
import sys
from pathlib import Path
from typing import Any

from luigi_pipelines import CsvFormat, LoadPartition, between, db, not_null, row_count, unique
from luigi_pipelines.s3 import S3Object

_POINT: dict[str, Any] = {}
COLUMNS = [("id", "bigint"), ("day", "date"), ("v", "text"), ("w", "integer")]


def _stop(point: str, object_number: int = 0) -> None:
    if _POINT.get("point") != point or (object_number and object_number != _POINT["object"]):
        return
    directory = Path(_POINT["directory"])
    (directory / "reached.tmp").write_text(str(os.getpid()))
    (directory / "reached.tmp").rename(directory / "reached")
    signal.alarm(60)  # a test that never kills it: SIGALRM's default action ends the process after a minute
    while True:
        signal.pause()  # killed here (SIGKILL): no polling, nothing to wake for


class _StopAtByte:
    """The COPY stream of one object, read at most 4 KiB at a time, stopping once ``byte`` bytes were read."""

    def __init__(self, inner: Any, number: int) -> None:
        self._inner, self._number, self._read = inner, number, 0

    def read(self, size: int = -1) -> bytes:
        if self._read >= _POINT["byte"]:
            _stop("copy", self._number)
        data = self._inner.read(4096 if size < 0 else min(size, 4096))
        self._read += len(data)
        return data


class LoadEvolving(LoadPartition):
    """``d/<date>/*.csv`` (by name) into the table of the command, declared with the new column ``w``."""

    key_prefix = "d/{date:%Y-%m-%d}/"
    date_column = "day"
    columns = COLUMNS
    csv = CsvFormat(by_name=True)
    contract = "evolve"
    checks = (not_null("id", "w"), unique("id"), between("w", 0, 100_000), row_count(min=1))
    bucket = property(lambda self: os.environ["KILL_BUCKET"])
    table = property(lambda self: _POINT["table"])

    def before_copy(self, tx: db.PartitionTransaction) -> None:
        _stop("altered")

    def after_copy(self, tx: db.PartitionTransaction) -> None:
        _stop("checked")

    def before_object(self, tx: db.PartitionTransaction, obj: S3Object) -> None:
        _POINT["current"] = _POINT.get("current", 0) + 1
        _stop("object", _POINT["current"])

    def source_stream(self, obj: S3Object, stream: Any) -> Any:
        if _POINT.get("point") == "copy" and _POINT["current"] == _POINT["object"]:
            return _StopAtByte(stream, _POINT["current"])
        return stream

    def before_commit(self, tx: db.PartitionTransaction) -> None:
        _stop("commit")


def _child(line: str) -> None:
    table, date, point, number, byte, directory = line.split()
    _POINT.update(table=table, point=point, object=int(number), byte=int(byte), directory=directory)
    import datetime
    _stop("start")
    LoadEvolving(date=datetime.date.fromisoformat(date)).run()
    _stop("committed")


def serve() -> None:
    for line in sys.stdin:
        pid = os.fork()
        if pid == 0:
            code = 0
            try:
                _child(line)
            except BaseException as exc:  # the test reads the status; the reason goes to stderr
                print(f"load failed: {exc!r}", file=sys.stderr, flush=True)
                code = 1
            os._exit(code)
        print(f"started {pid}", flush=True)
        _, status = os.waitpid(pid, 0)
        print(f"exited {pid} {os.waitstatus_to_exitcode(status)}", flush=True)


if __name__ == "__main__":
    serve()
