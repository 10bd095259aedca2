"""Whether written partitions are stale: their sources changed since their marker (the ``reload_changed`` mode and
``status --check-sources``).

A task answers for many partitions at once: one marker query, then its source's diff of manifests
(``source_changes``: one S3 listing per partition of a load, one marker query for a transform's upstream). Within
``one_stale_check`` each partition is checked once however often it is asked; with ``stale_known`` (an earlier check
of the same run, handed on by ``backfill``) nothing is listed again. A check that finds a partition fresh
supersedes a failed attempt on record for it. No luigi here: the task is any object with the methods used below.
"""
from __future__ import annotations

import datetime
import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from . import db
from .partitions import ScopedTable, TableName
from .settings import DatabaseSettings

logger = logging.getLogger("luigi-interface.luigi_pipelines")
# Within ``one_stale_check``: each partition's stale check, by task id, as made the first time it was asked.
_STALE_CHECKED: ContextVar[dict[str, str | None] | None] = ContextVar("luigi_pipelines_stale_checked", default=None)


@contextmanager
def one_stale_check() -> Iterator[None]:
    """Within the block, each partition's stale check (``stale_changes``) is made once, however often it is asked:
    ``status`` checks a load, then its transform, whose check asks the load's again (a second S3 listing)."""
    token = _STALE_CHECKED.set({})
    try:
        yield
    finally:
        _STALE_CHECKED.reset(token)


def stale_changes(task: Any, values: Sequence[Any], task_ids: Any) -> dict[Any, str]:
    """Of ``values`` (partitions of ``task`` with a marker), those whose sources changed since their marker was
    written, or whose marker is gone, with how (see the module docstring). ``task_ids(task, values)``: their ids."""
    checked = _STALE_CHECKED.get()
    if checked is None:
        return _stale_changes(task, values)
    ids = dict(zip(values, task_ids(task, values), strict=True))
    asked = [v for v in values if ids[v] not in checked]
    found = _stale_changes(task, asked) if asked else {}
    checked.update({ids[v]: found.get(v) for v in asked})  # None: fresh
    return {v: change for v in values if (change := checked[ids[v]]) is not None}


def _stale_changes(task: Any, values: Sequence[Any]) -> dict[Any, str]:
    partitions = task.partitions_of(values)
    with db.session(task.database(), reset=False) as conn:
        found = db.marker_sources(conn, task.marker_table, partitions)
        checked_at = db.server_clock(conn)
    recorded = {v: found[p] for v, p in zip(values, partitions, strict=True) if p in found}
    if task.stale_known is not None:
        known = dict(task.stale_known)
        return {v: "found stale by this run's check" for v in values if v not in recorded or known.get(
            task.serialized(v), v) == recorded[v].load_id}
    gone = {v: "its marker is gone" for v in values if v not in recorded}
    present = [(v, marker.sources) for v, marker in recorded.items()]
    changes = gone | (task.source_changes(present) if present else {})
    if task.compares_sources:
        fresh = [p for v, p in zip(values, partitions, strict=True) if v not in changes]
        supersede_failures(task.database(), task.load_section().failures, fresh, checked_at)
    return changes


def recorded(task: Any, values: Sequence[Any]) -> dict[Any, db.MarkerSources]:
    """The marker's sources and ``load_id`` of each of ``values`` that has a marker: one query."""
    partitions = task.partitions_of(values)
    with db.session(task.database(), reset=False) as conn:
        found = db.marker_sources(conn, task.marker_table, partitions)
    return {v: found[p] for v, p in zip(values, partitions, strict=True) if p in found}


def supersede_failures(database: DatabaseSettings, failures: TableName,
                       fresh: Sequence[tuple[ScopedTable, datetime.date]], checked_at: datetime.datetime) -> None:
    """The failed attempts on record of ``fresh`` partitions (written, their sources equal to their marker as listed
    after ``checked_at``) are history: a reload failed and the sources were then restored, so the previous load is
    what they say. Deleted, so that ``status`` stops reporting a failure for correct data."""
    if not fresh:
        return
    with db.session(database, reset=False) as conn:
        cleared = db.supersede_failures(conn, failures, fresh, checked_at)
    for key, day, error_class in cleared:
        logger.warning("%s %s: loaded, and its sources match its load: the failed attempt on record (%s) is "
                       "superseded", key, day, error_class)  # a warning: an alarm that clears itself is news
