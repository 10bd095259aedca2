"""What a load tells people while it runs and when it fails: luigid's progress and its short failure text."""
from __future__ import annotations

import logging
import textwrap
import threading
import time
from collections.abc import Callable, Sequence

from .errors import BadInputError, ConfigurationError, DataCheckError, LoadError, SourceError
from .s3 import S3Object

_MIB = 1024 * 1024
logger = logging.getLogger("luigi-interface.luigi_pipelines")

ROLLED_BACK = "rolled back: nothing kept; the partition is as before"
_MAX_REASON = 1500
_TO_DO: dict[type, str] = {
    BadInputError: "fix or replace the object in S3 and rerun (with --force if the date was loaded before), "
                   "or let max_bad_rows set bad rows aside",
    SourceError: "check the object (or the date's objects) in S3, then rerun",
    DataCheckError: "the previous load of the partition is kept; look at the data (the samples name rows and their "
                    "objects), fix it at its source and rerun (with --force if the date was loaded before), or "
                    "declare the check severity='warn'",
    ConfigurationError: "fix the task's declaration or the configuration, then rerun",
    LoadError: "rerun; nothing needs cleaning up first",
}


def failure_text(head: str, exception: BaseException, source: str | None) -> str:
    """``head`` and then, on short lines: the S3 object, the line and column, the reason, what to do."""
    reason = _reason(exception, source)
    lines = [head]
    if source:
        lines.append(f"  object:  {source}")
    where = _where(exception)
    if where:
        lines.append(f"  where:   {where}")
    lines += _field("reason", reason[:_MAX_REASON] + ("…" if len(reason) > _MAX_REASON else ""))
    lines += _field("to do", _TO_DO.get(type(exception), _TO_DO[LoadError]))
    return "\n".join(lines)


def _reason(exc: BaseException, source: str | None) -> str:
    """The error's reason without the object and position that the other lines already give."""
    reason = getattr(exc, "reason", None)
    if reason:
        return str(reason)
    text = one_line(str(exc), limit=100_000)
    if source and text.startswith(source + ": "):
        return text[len(source) + 2:]
    return text


def _where(exc: BaseException) -> str:
    line, column = getattr(exc, "line", None), getattr(exc, "column", None)
    return ", ".join(part for part in (f"line {line}" if line else "", f"column {column}" if column else "") if part)


def _field(name: str, text: str, width: int = 88) -> list[str]:
    """``  name:    text`` wrapped to short lines, continued under the text."""
    label = f"  {name + ':':<8} "
    wrapped = textwrap.wrap(text, width - len(label), break_long_words=True, break_on_hyphens=False) or [""]
    return [label + wrapped[0], *(" " * len(label) + rest for rest in wrapped[1:])]


class ProgressReport:
    """A partition's progress for luigid, by bytes of the objects as COPY reads them: after each object,
    and within one at most when 5 points were gained or 2 s have passed.

    Each report is two calls to luigid (message and percentage), which cost the worker CPU, and
    ``read`` runs on COPY's path: so reports are handed to a thread of their own, which sends the
    latest one at most once a second (``send_every_s``; those in between are dropped). COPY never
    waits for luigid, and a 10 MiB object costs a report or two, not twenty. Use it as a context
    manager: leaving the block sends what is pending and stops the thread, on every path.
    """

    send_every_s = 1.0

    def __init__(self, report: Callable[[str, int], None], objects: Sequence[S3Object],
                 clock: Callable[[], float] = time.monotonic, every_s: float = 2.0, step: int = 5) -> None:
        self._report, self._clock, self._every_s, self._step = report, clock, every_s, step
        self.count, self.total = len(objects), sum(o.size for o in objects)
        self.finished = 0  # bytes of the objects done
        self._n, self._rows, self._last_percent, self._last_at = 0, 0, 0, clock()
        self._cond = threading.Condition()
        self._pending: tuple[str, int] | None = None
        self._sending = self._closed = False
        self._thread: threading.Thread | None = None

    def __enter__(self) -> ProgressReport:
        self._thread = threading.Thread(target=self._sender, name="luigid progress", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join()

    def start(self, n: int, obj: S3Object, rows: int) -> None:
        self._n, self._rows = n, rows

    def read(self, obj: S3Object, position: int) -> None:
        percent = self._percent(self.finished + position)
        if percent - self._last_percent < self._step and self._clock() - self._last_at < self._every_s:
            return
        self._send(f"copying object {self._n} of {self.count} ({obj.key}): {position / _MIB:.1f} of "
                   f"{obj.size / _MIB:.1f} MiB; {self._rows} rows before it", percent)

    def done(self, n: int, obj: S3Object, rows: int) -> None:
        self.finished += obj.size
        self._send(f"copied {n} of {self.count} objects, {rows} rows", self._percent(self.finished))

    def _percent(self, copied: int) -> int:
        return min(100, round(100 * copied / self.total)) if self.total else 100

    def _send(self, message: str, percent: int) -> None:
        self._last_percent, self._last_at = percent, self._clock()
        if self._thread is None:  # not started as a context manager: report in line
            self._report(message, percent)
            return
        with self._cond:
            self._pending = (message, percent)
            self._cond.notify_all()

    def _sender(self) -> None:
        """Send the latest report, at most one per ``send_every_s`` (what comes between is dropped); when
        the block ends, what is pending goes at once."""
        last_sent = float("-inf")
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._pending is not None or self._closed)
                if not self._closed:
                    self._cond.wait(max(0.0, last_sent + self.send_every_s - time.monotonic()))
                if self._pending is None:
                    if self._closed:
                        return  # closed, and everything sent
                    continue
                (message, percent), self._pending = self._pending, None
            last_sent = time.monotonic()
            try:
                self._report(message, percent)
            except Exception as exc:  # progress is never worth failing a load for
                logger.warning("could not report progress to the scheduler: %s", exc)


def one_line(text: str, limit: int = 500) -> str:
    """``text`` on one line (whitespace runs made one space), at most ``limit`` characters."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"
