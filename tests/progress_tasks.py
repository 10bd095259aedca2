"""The example load task with a pause inside an object's COPY, for the luigid progress test.

Workers started by ``tests/test_progress.py`` run ``--module tests.progress_tasks RangeDaily --of
PausingLoadTransactions``: the real ``LoadTransactions`` whose ``source_stream`` hook, for the date in
``LP_PAUSE_DATE`` only, stops once COPY has read ``LP_PAUSE_BYTES`` of the object: it writes ``paused``
in ``LP_PAUSE_DIR`` and waits (at most 120 s) for ``release`` there, so the test can read luigid's view
of a load that is half way through its only object.
"""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from luigi.tools.range import RangeDaily  # noqa: F401 - registers RangeDaily with [core] autoload_range=false

from luigi_pipelines.pipelines.transactions import LoadTransactions


class _PauseAt:
    def __init__(self, stream: Any, after: int, directory: Path) -> None:
        self._stream, self._after, self._directory, self._read = stream, after, directory, 0

    def read(self, size: int = -1) -> bytes:
        data = self._stream.read(size)
        self._read += len(data)
        if self._after is not None and self._read >= self._after:
            self._after = None
            (self._directory / "paused").write_text(str(self._read))
            deadline = time.monotonic() + 120
            while not (self._directory / "release").exists() and time.monotonic() < deadline:
                time.sleep(0.02)
        return data


class PausingLoadTransactions(LoadTransactions):
    def source_stream(self, obj: Any, stream: Any) -> Any:
        if str(self.date) != os.environ.get("LP_PAUSE_DATE"):
            return stream
        return _PauseAt(stream, int(os.environ["LP_PAUSE_BYTES"]), Path(os.environ["LP_PAUSE_DIR"]))
