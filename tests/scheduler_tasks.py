"""The example pipeline's load task with hooks, for the scheduler, concurrency and netns tests.

Worker processes started by those tests run ``--module tests.scheduler_tasks RangeDaily --of
HookedLoadTransactions``: the real ``LoadTransactions`` (same table, bucket and marker, from the
``[transactions]`` section) plus hooks steered by environment variables:

- ``LP_HOOK_DIR``: a directory shared with the test. Every load appends ``start`` and ``end`` lines
  (wall clock, pid, date) to ``trace`` there, so a test can see who loaded what and how many loads
  overlapped.
- ``LP_HOOK_PAUSE_DATE``: the first loader of that date (and only the first) stops after copying its
  first object, with its transaction open, rows written and the partition lock held. It writes
  ``paused`` (worker name, pid, PostgreSQL backend pid) and waits, at most ``LP_HOOK_PAUSE_S``
  seconds, for ``release`` to appear. The test kills it, cuts its link, or releases it.
- ``LP_HOOK_PAUSE_QUERY_S``: after writing ``paused``, the paused loader first runs a query that
  lasts this long (``pg_sleep``), so that the server's reply is in flight when the test cuts the
  link right after ``paused`` appears: unacknowledged data, which TCP keepalives alone never probe.
- ``LP_HOOK_HOLD_S``: every load keeps its transaction open this long after its last COPY, so that
  loads that may run at once do overlap.
- ``LP_WORKER_NAME``: the name written to ``paused``.

Each load that writes its date also appends ``wrote <pid> <date>`` to ``wrote`` in ``LP_HOOK_DIR``.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from luigi.tools.range import RangeDaily  # noqa: F401 - registers RangeDaily with [core] autoload_range=false

from luigi_pipelines import db
from luigi_pipelines.pipelines.transactions import LoadTransactions


def _hook_dir() -> Path | None:
    value = os.environ.get("LP_HOOK_DIR")
    return Path(value) if value else None


def _trace(event: str, date: Any) -> None:
    directory = _hook_dir()
    if directory is not None:
        with open(directory / "trace", "a") as f:  # one short O_APPEND write per line: lines never interleave
            f.write(f"{event} {time.time():.6f} {os.getpid()} {date}\n")


def _claim_pause(date: Any) -> bool:
    directory = _hook_dir()
    if directory is None or os.environ.get("LP_HOOK_PAUSE_DATE") != str(date):
        return False
    try:
        os.close(os.open(directory / "paused.claim", os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        return True
    except FileExistsError:
        return False


def _pause(tx: db.PartitionTransaction) -> None:
    """Say where we are, then wait for ``release``: the transaction stays open meanwhile."""
    directory = _hook_dir()
    assert directory is not None
    tx.cursor.execute("SELECT pg_backend_pid()")
    state = {"worker": os.environ.get("LP_WORKER_NAME", ""), "pid": os.getpid(), "backend_pid": tx.cursor.fetchone()[0],
             "date": str(tx.date), "rows": tx.rows}
    (directory / "paused.tmp").write_text(json.dumps(state))
    (directory / "paused.tmp").rename(directory / "paused")  # appears complete or not at all
    query_s = float(os.environ.get("LP_HOOK_PAUSE_QUERY_S", "0"))
    if query_s:
        tx.cursor.execute("SELECT pg_sleep(%s)", (query_s,))
    deadline = time.monotonic() + float(os.environ.get("LP_HOOK_PAUSE_S", "120"))
    while not (directory / "release").exists():
        if time.monotonic() > deadline:
            raise RuntimeError(f"scheduler test hook: never released from {directory}")
        time.sleep(0.02)


class HookedLoadTransactions(LoadTransactions):
    """``LoadTransactions`` that traces its runs and can pause in the middle of its transaction."""

    def run(self) -> None:
        _trace("start", self.date)
        super().run()
        _trace("end", self.date)

    def after_object(self, tx: db.PartitionTransaction, record: Any) -> None:
        if not getattr(self, "_paused", False) and _claim_pause(self.date):
            self._paused = True
            _pause(tx)  # tx.rows: what is in the open transaction so far, for the test to see

    def after_copy(self, tx: db.PartitionTransaction) -> None:
        directory = _hook_dir()
        if directory is not None:  # the date is written (its transaction about to commit)
            with open(directory / "wrote", "a") as f:
                f.write(f"wrote {os.getpid()} {self.date}\n")
        hold = float(os.environ.get("LP_HOOK_HOLD_S", "0"))
        if hold:
            time.sleep(hold)  # a slow load: keeps the connection and the lock for a while
