"""Reading a task's configuration once per load: a load (or a completeness check) reads its table, marker table and
prefix many times, and each read of a ``luigi.Config`` costs ~0.2-0.5 ms of CPU. Within ``reading_once(obj)``,
``read_once(obj, name, read)`` reads each ``name`` once; outside, every read is fresh (luigi reuses a task instance
across runs, whose config may change). Pure: the memo is an attribute of ``obj``."""
from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

_ATTRIBUTE = "_luigi_pipelines_read_once"
T = TypeVar("T")


@contextmanager
def reading_once(obj: Any) -> Iterator[None]:
    """Within the block, what ``read_once(obj, ...)`` reads is read once; nested blocks share the outer one."""
    if _ATTRIBUTE in obj.__dict__:
        yield
        return
    obj.__dict__[_ATTRIBUTE] = {}
    try:
        yield
    finally:
        del obj.__dict__[_ATTRIBUTE]


def read_once(obj: Any, name: str, read: Callable[[], T]) -> T:
    """``read()``, or within ``reading_once(obj)`` the value it gave the first time there."""
    memo = obj.__dict__.get(_ATTRIBUTE)
    if memo is None:
        return read()
    if name not in memo:
        memo[name] = read()
    return memo[name]
