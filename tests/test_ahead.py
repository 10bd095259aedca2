"""ahead.MadeAhead: the chunks a generator makes, read in order from a thread; its error raised where they are read;
``close`` stops the thread wherever it is."""
from __future__ import annotations

import threading
from collections.abc import Generator

import pytest

from luigi_pipelines.ahead import MadeAhead


def counted(n: int, made: list[int], fail_at: int = -1) -> Generator[bytes, None, None]:
    for i in range(n):
        if i == fail_at:
            raise ValueError(f"chunk {i}")
        made.append(i)
        yield b"%d," % i


def test_reads_every_chunk_in_order_in_reads_of_any_size() -> None:
    made: list[int] = []
    stream = MadeAhead(lambda: counted(100, made), depth=2)
    data = b"".join(iter(lambda: stream.read(3), b""))
    assert data == b"".join(b"%d," % i for i in range(100))
    assert stream.read() == b""
    stream.close()


def test_the_generators_error_is_raised_by_read() -> None:
    stream = MadeAhead(lambda: counted(10, [], fail_at=4))
    got = [stream.read() for _ in range(4)]
    assert got == [b"0,", b"1,", b"2,", b"3,"]
    with pytest.raises(ValueError, match="chunk 4"):
        stream.read()
    stream.close()


def test_close_stops_the_thread_before_the_end_and_closes_the_generator() -> None:
    made: list[int] = []
    closed = threading.Event()

    def chunks() -> Generator[bytes, None, None]:
        try:
            yield from counted(10_000, made)
        finally:
            closed.set()

    stream = MadeAhead(chunks, depth=1)
    assert stream.read() == b"0,"
    stream.close()
    assert closed.is_set()
    assert len(made) <= 3  # the one read, the one made ahead, the one being made
    assert not any(t.name == "chunks made ahead" for t in threading.enumerate())
    assert stream.read() == b""


def test_close_without_a_read_starts_nothing() -> None:
    made: list[int] = []
    stream = MadeAhead(lambda: counted(3, made))
    stream.close()
    assert made == []
