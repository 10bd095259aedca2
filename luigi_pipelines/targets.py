"""The marker target: a partition is complete exactly when its row exists in the marker table."""
from __future__ import annotations

import datetime
import time
from collections.abc import Hashable, Iterable, Sequence
from typing import Any

import luigi

from . import db, runtime
from .errors import ConfigurationError
from .partitions import ScopedTable, TableName
from .settings import DatabaseSettings

# How long a partition that ``bulk_complete`` found not complete is taken to be so without asking again.
MISSING_MAX_AGE_S = 120.0
# This process's tasks found not complete, by task id, then by who asked (see ``note_missing``) -> when.
_MISSING: runtime.Slot[dict[str, dict[Hashable, float]]] = runtime.Slot("tasks found not complete", dict)

class PartitionMarkerTarget(luigi.Target):
    """The marker row of one (table, date) partition, written in the same transaction as the data."""

    def __init__(
        self,
        target: ScopedTable,
        date: datetime.date,
        marker: TableName,
        settings: DatabaseSettings,
        owner: str = "",
    ) -> None:
        self.target = target
        self.date = date
        self.marker = marker
        self.settings = settings
        self.owner = owner  # the task family that writes it: a row written by another is an error, not "done"

    def exists(self) -> bool:
        with db.session(self.settings, reset=False) as conn:
            done = db.completed_dates(conn, self.marker, self.target, [self.date])
        if self.date in done and self.owner:
            check_owner(self.target, self.date, done[self.date], self.owner)
        return self.date in done

    def __repr__(self) -> str:
        return f"PartitionMarkerTarget({self.target}, {self.date.isoformat()})"


def check_owner(key: ScopedTable, date: datetime.date, family: str, task_family: str) -> None:
    """A partition written by another task family is not ours to skip or to replace: say so."""
    if family != task_family:
        raise ConfigurationError(
            f"{task_family} and {family} both load {key.describe()}: {family} loaded {date} already. Declare a "
            f"different scope for each (e.g. scope = {{'region': 'us'}}), or, if {task_family} is {family} "
            f"renamed, update task_family in the marker table")


def note_missing(task_ids: Iterable[str], asker: Hashable) -> None:
    """Remember that the tasks ``task_ids`` were just found not complete (by ``bulk_complete``), so that the
    ``complete()`` luigi calls for each of them right after (``RangeDaily``'s ``requires()`` is followed by a
    ``complete()`` of each task it returns) need not ask the database again.

    Only "not complete" is remembered, each answer is used once (``take_missing``) and for at most
    ``MISSING_MAX_AGE_S``: any later ``complete()`` asks the database (luigi checks a range's tasks again
    before the range itself runs, after other workers may have loaded them). An answer out of date by the
    time it is used (a partition loaded meanwhile by another process) makes the task run: it takes the
    partition's lock, finds the marker and does nothing."""
    now, missing = time.monotonic(), _MISSING.get()
    for key in [k for k, asked in missing.items() if all(now - at > MISSING_MAX_AGE_S for at in asked.values())]:
        del missing[key]
    for task_id in task_ids:
        missing.setdefault(task_id, {})[asker] = now


def take_missing(task_id: str, asker: Hashable) -> bool:
    """Whether ``note_missing`` noted ``task_id`` for ``asker`` in this process less than ``MISSING_MAX_AGE_S``
    ago; the note is used up."""
    asked = _MISSING.get().get(task_id)
    at = asked.pop(asker, None) if asked is not None else None
    return at is not None and time.monotonic() - at <= MISSING_MAX_AGE_S


def forget_missing(task_id: str) -> None:
    """Forget what ``note_missing`` noted of ``task_id``: it is being written now."""
    _MISSING.get().pop(task_id, None)


def _parameter_value(parameter: Any, name: str) -> Any:
    """The partition value in one of ``bulk_complete``'s parameters (a value, a 1-tuple or a dict)."""
    if isinstance(parameter, dict):
        return parameter[name]
    if isinstance(parameter, (tuple, list)):
        return parameter[0]
    return parameter


def completed_values(cls: Any, parameter_tuples: Iterable[Any], learn: bool = True) -> list[Any]:
    """``bulk_complete`` of a partition task class: those of ``parameter_tuples`` already complete, with one marker
    query on one connection. luigi's range tools pass ``cls`` as a ``functools.partial`` carrying their
    ``of_params``, so a probe instance is built to read the declarations (and ``force``) the tasks would have.
    The values found not complete are noted (``note_missing``) and, if ``learn``, their sources learnt at once
    (``learn_sources``: a block's checks leave that to the range that made it, which learnt them for the wave)."""
    params = list(parameter_tuples)
    if not params:
        return []
    name = getattr(cls, "func", cls).grain.parameter
    values = [_parameter_value(p, name) for p in params]
    probe = cls(**{name: values[0]})
    if probe.force:
        return []
    with probe.reading_config_once():
        wanted = probe.partitions_of(values)
        family = probe.task_family
        with db.session(probe.database(), reset=False) as conn:
            done = db.completed_partitions(conn, probe.marker_table, wanted)
            expired = set(probe.declared.expired(conn, [v for v, p in zip(values, wanted, strict=True) if p not in done]))
        for (key, day), owner in done.items():
            check_owner(key, day, owner, family)
        complete = [v for v, partition in zip(values, wanted, strict=True) if partition in done or v in expired]
        if probe.reload_changed and complete:
            stale = probe.stale_changes([v for v in complete if v not in expired])
            complete = [v for v in complete if v not in stale]
        found = set(complete)
        missing = [v for v in values if v not in found]
        note_missing(task_ids_of(probe, missing), bool(probe.reload_changed))
        if learn:
            probe.learn_sources(missing)
    return [p for p, v in zip(params, values, strict=True) if v in found]


def expired_partition(task: Any) -> bool:
    """Whether ``task``'s partition (without a marker) was dropped by its table's retention (``keep``): done."""
    if not task.declared.keep:
        return False
    with db.session(task.database(), reset=False) as conn:
        return bool(task.declared.expired(conn, [task.partition_value]))


def task_ids_of(task: Any, values: Sequence[Any]) -> list[str]:
    """The task ids of ``task`` for the partition values ``values`` (same other parameters), without making the tasks."""
    name = task.grain.parameter
    params = task.to_str_params(only_significant=True, only_public=True)
    return [luigi.task.task_id_str(task.task_family, {**params, name: task.serialized(v)}) for v in values]

