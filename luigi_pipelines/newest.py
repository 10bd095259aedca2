"""A task's newest loaded partition, read from its marker keys, and its freshness (``luigi_pipelines.freshness``).

``status`` and the metrics ask it once per pipeline: one query, whatever the window (the newest partition may be
after the window, or before it).
"""
from __future__ import annotations

import datetime
from typing import Any

from . import db
from .errors import ConfigurationError
from .freshness import Freshness, parse_allowance

_DAY = datetime.timedelta(days=1)


def allowance_of(cls: Any) -> datetime.timedelta | None:
    """The task class's declared ``freshness`` (``None`` when it declares none); a bad one is a ``ConfigurationError``
    naming the task."""
    try:
        return parse_allowance(getattr(cls, "freshness", None))
    except ValueError as exc:
        raise ConfigurationError(f"{cls.__name__}: {exc}") from None


def freshness_of(conn: Any, probe: Any, now: datetime.datetime, allowed: datetime.timedelta | None) -> Freshness:
    """The freshness of ``probe``'s table (any partition task of the class) at ``now``."""
    grain = probe.grain
    day = datetime.date(2000, 1, 1)
    keys = list(dict.fromkeys(key for key, _ in probe.partitions_of(grain.covering(day, day + _DAY))))
    marked = db.newest_marked(conn, probe.marker_table, keys)
    if not marked:
        return Freshness.of(grain, None, now, allowed)
    newest_day = max(d for _, d in marked)
    found = {(key, d) for key, d in marked}
    values = grain.covering(newest_day, newest_day + _DAY)
    candidates = [v for v, part in zip(values, probe.partitions_of(values), strict=True) if part in found]
    return Freshness.of(grain, max(candidates, key=grain.ordinal) if candidates else None, now, allowed)
