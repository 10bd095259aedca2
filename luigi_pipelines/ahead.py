"""A read-only stream of the chunks a generator makes, made in a thread ahead of the reader (COPY), for the paths whose
chunks cost CPU to make (Arrow's JSON lines: parse, checks, CSV).

COPY FROM STDIN alternates on one thread: read a chunk (here: make it), send it, wait for PostgreSQL to take it. With
the chunks made in a thread, the next one is made while PostgreSQL takes the last (pyarrow and psycopg2 let go of the
GIL while they work), so the load runs at the pace of the slower side instead of the sum of both. At most ``depth``
chunks wait made, besides the one being made and the one being read: memory stays bounded by the chunk size.

The generator's exception (a ``Doubt``, a failed download) is raised by ``read``, as if ``read`` had made the chunk.
``close`` stops the thread and waits for it: call it before anything else reads the generator's source (the caller's
own path after an aborted COPY), whether or not the stream was read to its end.
"""
from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Generator
from typing import Any

_END = object()


class MadeAhead:
    """``read`` of the bytes that ``make()`` yields, made ``depth`` chunks ahead in a thread started by the first
    ``read``."""

    def __init__(self, make: Callable[[], Generator[bytes, None, None]], depth: int = 1,
                 name: str = "chunks made ahead") -> None:
        self._make = make
        self._depth = depth
        self._made: deque[Any] = deque()  # chunks, then _END or the generator's exception
        self._cond = threading.Condition()
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._buffer = memoryview(b"")
        self._ended = False
        self._started = False

    def read(self, size: int = -1) -> bytes:
        while not self._buffer:
            if self._ended:
                return b""
            if not self._started:
                self._started = True
                self._thread.start()
            with self._cond:
                self._cond.wait_for(lambda: self._made)
                item = self._made.popleft()
                self._cond.notify_all()
            if item is _END:
                self._ended = True
                return b""
            if isinstance(item, BaseException):
                self._ended = True
                raise item
            if size < 0 or len(item) <= size:
                return item  # the whole chunk, not a copy
            self._buffer = memoryview(item)
        n = len(self._buffer) if size < 0 else min(size, len(self._buffer))
        data, self._buffer = bytes(self._buffer[:n]), self._buffer[n:]
        return data

    def close(self) -> None:
        """Stop making chunks and wait until the thread has let go of the source (at most the chunk being made)."""
        with self._cond:
            self._stopped = True
            self._made.clear()
            self._cond.notify_all()
        self._ended = True
        if self._started:
            self._thread.join()

    def _put(self, item: Any) -> bool:
        """Hand ``item`` to the reader once there is room; False when closed."""
        with self._cond:
            self._cond.wait_for(lambda: self._stopped or len(self._made) < self._depth)
            if self._stopped:
                return False
            self._made.append(item)
            self._cond.notify_all()
            return True

    def _run(self) -> None:
        chunks = self._make()
        try:
            for chunk in chunks:
                if not self._put(chunk):
                    return
            self._put(_END)
        except BaseException as exc:  # handed to the reader, who raises it where COPY reads
            self._put(exc)
        finally:
            chunks.close()
