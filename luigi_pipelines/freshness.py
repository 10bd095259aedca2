"""Pure: how late a table is, from its newest loaded partition, its grain and the freshness it declares.

A task may declare ``freshness = "26h"`` (or a ``datetime.timedelta``): how long after the end of its newest
loaded partition the table still counts as fresh. The end comes from the grain (a date ends at the next midnight
UTC, an hour at the next hour, a month at the next month's first day), so ``"26h"`` on a daily feed means
"yesterday's partition is loaded by 02:00 UTC today". ``status`` shows a late table and exits ``EXIT_LATE``
(``states``); the metrics carry the lateness. The clock comes in as ``now``.
"""
from __future__ import annotations

import datetime
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # states imports this module, and must not pull in grains' psycopg2.sql
    from .grains import Grain

UTC = datetime.timezone.utc
_UNITS = {"w": 7 * 86400, "d": 86400, "h": 3600, "m": 60, "s": 1}
_PART = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([wdhms])")


def parse_allowance(value: Any) -> datetime.timedelta | None:
    """A declared ``freshness`` as a duration: a ``timedelta``, or text of numbers with units ``w d h m s``
    (``"26h"``, ``"1d 2h"``, ``"90m"``); ``None`` or ``""``: not declared. Raises ``ValueError`` otherwise."""
    if value is None or value == "":
        return None
    if isinstance(value, datetime.timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, str) and re.fullmatch(r"(?:\s*\d+(?:\.\d+)?\s*[wdhms])+\s*", value):
        seconds = sum(float(n) * _UNITS[unit] for n, unit in _PART.findall(value))
    else:
        raise ValueError(f"freshness {value!r}: give a datetime.timedelta or a duration such as '26h', '1d 2h', '90m'")
    if seconds <= 0:
        raise ValueError(f"freshness {value!r}: must be longer than zero")
    return datetime.timedelta(seconds=seconds)


def moment(value: Any) -> datetime.datetime:
    """A partition value's start as an aware UTC time: a date at midnight, an hour (naive: UTC) as is."""
    if isinstance(value, datetime.datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    return datetime.datetime.combine(value, datetime.time(), tzinfo=UTC)


def partition_end(grain: Grain, value: Any) -> datetime.datetime:
    """When ``value``'s partition ends: the start of the grain's next value."""
    return moment(grain.after(value))


@dataclass(frozen=True)
class Freshness:
    """A table's newest loaded partition (``newest``: its name, ``None`` when nothing is loaded) and, when the task
    declares ``allowed``, whether it is late at ``now``."""

    now: datetime.datetime
    allowed: datetime.timedelta | None = None
    newest: str | None = None  # as the command line writes it: 2019-02-01, 2019-02-01T13, 2019-02
    newest_start: datetime.datetime | None = None
    newest_end: datetime.datetime | None = None

    @classmethod
    def of(cls, grain: Grain, newest: Any, now: datetime.datetime, allowed: datetime.timedelta | None) -> Freshness:
        if newest is None:
            return cls(now, allowed)
        return cls(now, allowed, grain.describe(newest), moment(newest), partition_end(grain, newest))

    @property
    def age(self) -> datetime.timedelta | None:
        """How long ago the newest loaded partition ended (negative when it ends after ``now``)."""
        return None if self.newest_end is None else self.now - self.newest_end

    @property
    def late(self) -> bool:
        """Declared, and the newest partition ended longer ago than allowed (or nothing is loaded at all)."""
        if self.allowed is None:
            return False
        return self.age is None or self.age > self.allowed

    @property
    def lateness(self) -> datetime.timedelta | None:
        """By how much the table is late (zero when it is not); ``None`` when not declared or nothing is loaded."""
        if self.allowed is None or self.age is None:
            return None
        return max(datetime.timedelta(0), self.age - self.allowed)

    def describe(self) -> str:
        """``newest loaded 2019-02-05, ended 2 d 4 h ago; freshness allows 1 d 2 h``."""
        allows = f"freshness allows {duration(self.allowed)}" if self.allowed is not None else "no freshness declared"
        if self.newest is None:
            return f"nothing loaded yet; {allows}"
        if self.age is None or self.age < datetime.timedelta(0):
            return f"newest loaded {self.newest}, not over yet; {allows}"
        return f"newest loaded {self.newest}, ended {duration(self.age)} ago; {allows}"

    def verdict(self) -> str:
        """``late by 1 d 2 h``, ``late`` (nothing loaded), ``fresh``; ``""`` when no freshness is declared."""
        if self.allowed is None:
            return ""
        if not self.late:
            return "fresh"
        return f"late by {duration(self.lateness)}" if self.lateness is not None else "late"

    def as_json(self) -> dict[str, Any]:
        """What ``status --json`` says of it: times in ISO 8601, durations in seconds; ``null`` where unknown."""
        return {"newest": self.newest, "newest_start": _iso(self.newest_start), "newest_end": _iso(self.newest_end),
                "age_s": _seconds(self.age), "allowed_s": _seconds(self.allowed), "late": self.late,
                "lateness_s": _seconds(self.lateness)}


def _iso(moment: datetime.datetime | None) -> str | None:
    return None if moment is None else moment.isoformat()


def _seconds(delta: datetime.timedelta | None) -> float | None:
    return None if delta is None else delta.total_seconds()


def duration(delta: datetime.timedelta | None) -> str:
    """``2 d 4 h``, ``26 h``, ``5 min``, ``40 s``: the two largest units, rounded down."""
    if delta is None:
        return "?"
    left = int(max(delta, datetime.timedelta(0)).total_seconds())
    parts: list[str] = []
    for name, size in (("d", 86400), ("h", 3600), ("min", 60), ("s", 1)):
        if left >= size or (name == "s" and not parts):
            parts.append(f"{left // size} {name}")
            left %= size
    return " ".join(parts[:2])
