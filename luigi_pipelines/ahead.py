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

import queue
import threading
from collections.abc import Callable, Generator
from typing import Any

_END = object()


class MadeAhead:
    """``read`` of the bytes that ``make()`` yields, made ``depth`` chunks ahead in a thread started by the first
    ``read``."""

    def __init__(self, make: Callable[[], Generator[bytes, None, None]], depth: int = 1, name: str = "chunks made ahead") -> None:
        self._make = make
        self._made: queue.Queue[Any] = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
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
            item = self._made.get()
            if item is _END:
                self._ended = True
                return b""
            if isinstance(item, BaseException):
                self._ended = True
                raise item
            self._buffer = memoryview(item)
        n = len(self._buffer) if size < 0 else min(size, len(self._buffer))
        data, self._buffer = bytes(self._buffer[:n]), self._buffer[n:]
        return data

    def close(self) -> None:
        """Stop making chunks and wait until the thread has let go of the source (at most the chunk being made)."""
        self._stop.set()
        self._ended = True
        if not self._started:
            return
        while self._thread.is_alive():
            try:  # a made chunk no one will read: room for the thread's put, after which it sees the stop
                self._made.get(timeout=1.0)
            except queue.Empty:
                pass
        self._thread.join()

    def _run(self) -> None:
        chunks = self._make()
        try:
            for chunk in chunks:
                self._made.put(chunk)
                if self._stop.is_set():
                    return
            self._made.put(_END)
        except BaseException as exc:  # handed to the reader, who raises it where COPY reads
            self._made.put(exc)
        finally:
            chunks.close()
