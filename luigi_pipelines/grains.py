"""Grains: what one partition of a task is, by time. A task declares one (``grain = lp.HOURLY``); daily is the default.

A grain maps a partition value (a date, an hour, a month) to

- the luigi parameter that carries it (``--date``, ``--date-hour``, ``--month``; named here, made by the task
  class) and luigi's range tool that backfills it (``RangeDaily``, ``RangeHourly``, ``RangeMonthly``);
- the marker's ``partition_date`` (the first date it covers) and the dates of the table's rows it covers,
  ``[date_of(value), stop_of(value))``;
- the columns it adds to the partition's key (an hour: ``hour = 13``, which the marker key shows as
  ``schema.table/hour=13`` and each load fills when the files lack it);
- the value that a ``key_prefix`` template is formatted with (``{date:%Y/%m/%d/%H}``);
- the unit of the status calendar.

Nothing else in the package knows which grain a task has: sources and write modes see a partition's key and
its span of dates. A new grain is one class here. Pure: no luigi.
"""
from __future__ import annotations

import datetime
import itertools
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar

from . import runtime
from . import sql as q


class Grain(ABC):
    """One partition per ``unit`` of time (see the module docstring)."""

    name: ClassVar[str]
    parameter: ClassVar[str]  # the luigi parameter's name (the command line's --date, --date-hour, --month)
    parameter_type: ClassVar[str]  # the luigi parameter's class (in ``luigi``), which the task class gets
    range_task: ClassVar[str]  # luigi's range tool of this parameter
    unit: ClassVar[str]  # the calendar's unit: day, hour, month
    text_format: ClassVar[str]  # the value as the command line writes it (strftime)

    @abstractmethod
    def date_of(self, value: Any) -> datetime.date:
        """The first date ``value`` covers: the marker's ``partition_date``."""

    @abstractmethod
    def stop_of(self, value: Any) -> datetime.date:
        """The date after the last one ``value`` covers."""

    @abstractmethod
    def values_between(self, start: datetime.date, stop: datetime.date) -> list[Any]:
        """Every value whose dates lie in ``[start, stop)``, in order."""

    def covering(self, start: datetime.date, stop: datetime.date) -> list[Any]:
        """The values whose dates meet ``[start, stop)``: of a coarser grain, those that contain them."""
        last = self.containing(stop - datetime.timedelta(days=1))
        return self.values_between(self.date_of(self.containing(start)), self.stop_of(last))

    def containing(self, date: datetime.date) -> Any:
        """The first value that covers ``date``."""
        return self.values_between(date, date + datetime.timedelta(days=1))[0]

    def after(self, value: Any) -> Any:
        """The value that follows ``value`` (a range's exclusive stop after its last value)."""
        own = self.covering(self.date_of(value), self.stop_of(value))
        at = own.index(value) + 1
        return own[at] if at < len(own) else self.containing(self.stop_of(value))

    @abstractmethod
    def ordinal(self, value: Any) -> int:
        """``value``'s place in time: later values have higher ordinals (a merge's priority, oldest first)."""

    def key_scope(self, value: Any) -> dict[str, str]:
        """The columns this grain adds to the partition's key, with ``value``'s values (none but for hours)."""
        return {}

    def key_columns(self) -> tuple[q.Column, ...]:
        """The columns ``key_scope`` fills, typed (for the table's DDL when the files lack them)."""
        return ()

    def template_value(self, value: Any) -> Any:
        """What a ``key_prefix`` template is formatted with as ``date``."""
        return value

    def describe(self, value: Any) -> str:
        """The value as the command line writes it."""
        return str(value.strftime(self.text_format))

    def prefixes_apart(self, template: str) -> bool:
        """Whether ``template`` gives every value a key prefix of its own that starts no other's, tried over
        two years of dates (and two days of hours): a load that takes its rows' date from the key relies on it.
        Asked before every load: the answer is kept per process (it took ~10 ms, ~5 % of a tiny hourly load)."""
        known = _PREFIXES_APART.get()
        if (self, template) not in known:
            known[(self, template)] = self._prefixes_apart(template)
        return known[(self, template)]

    def _prefixes_apart(self, template: str) -> bool:
        start = datetime.date(2000, 1, 1)
        values = self.values_between(start, start + datetime.timedelta(days=800))
        if self.unit == "hour":  # two days of hours, and the first hour of the others
            values = values[:48] + values[48::24]
        rendered = sorted({template.format(date=self.template_value(v)) for v in values})
        return len(rendered) == len(values) and not any(b.startswith(a) for a, b in itertools.pairwise(rendered))



@dataclass(frozen=True)
class Daily(Grain):
    """One partition per date: ``--date 2019-02-01``, ``RangeDaily``; ``key_prefix`` gets the date."""

    name: ClassVar[str] = "daily"
    parameter: ClassVar[str] = "date"
    parameter_type: ClassVar[str] = "DateParameter"
    range_task: ClassVar[str] = "RangeDaily"
    unit: ClassVar[str] = "day"
    text_format: ClassVar[str] = "%Y-%m-%d"

    def date_of(self, value: datetime.date) -> datetime.date:
        return value

    def stop_of(self, value: datetime.date) -> datetime.date:
        return value + datetime.timedelta(days=1)

    def values_between(self, start: datetime.date, stop: datetime.date) -> list[datetime.date]:
        return [start + datetime.timedelta(days=n) for n in range((stop - start).days)]

    def ordinal(self, value: datetime.date) -> int:
        return value.toordinal()


@dataclass(frozen=True)
class Hourly(Grain):
    """One partition per hour: ``--date-hour 2019-02-01T13``, ``RangeHourly``; ``key_prefix`` gets the hour's
    datetime (``{date:%Y/%m/%d/%H}``).

    An hour's rows are those of its date whose ``column`` (default ``hour``, 0-23) is its hour: the column is
    part of the partition's key like a scope column (``schema.table/hour=13``), and each load fills it (a
    smallint) when the files lack it. ``partition_date`` stays the date, so the marker keeps its shape.
    """

    column: str = "hour"
    name: ClassVar[str] = "hourly"
    parameter: ClassVar[str] = "date_hour"
    parameter_type: ClassVar[str] = "DateHourParameter"
    range_task: ClassVar[str] = "RangeHourly"
    unit: ClassVar[str] = "hour"
    text_format: ClassVar[str] = "%Y-%m-%dT%H"

    def date_of(self, value: datetime.datetime) -> datetime.date:
        return value.date()

    def stop_of(self, value: datetime.datetime) -> datetime.date:
        return value.date() + datetime.timedelta(days=1)

    def values_between(self, start: datetime.date, stop: datetime.date) -> list[datetime.datetime]:
        return [datetime.datetime.combine(day, datetime.time(hour)) for day in Daily().values_between(start, stop)
                for hour in range(24)]

    def ordinal(self, value: datetime.datetime) -> int:
        return value.toordinal() * 24 + value.hour

    def key_scope(self, value: datetime.datetime) -> dict[str, str]:
        return {self.column: f"{value.hour:02d}"}

    def key_columns(self) -> tuple[q.Column, ...]:
        return (q.Column(self.column, "smallint"),)


@dataclass(frozen=True)
class Monthly(Grain):
    """One partition per month: ``--month 2019-02``, ``RangeMonthly``; ``key_prefix`` gets the month's first
    date (``{date:%Y-%m}``). A month's rows are those whose date column lies in the month; ``partition_date``
    is its first date."""

    name: ClassVar[str] = "monthly"
    parameter: ClassVar[str] = "month"
    parameter_type: ClassVar[str] = "MonthParameter"
    range_task: ClassVar[str] = "RangeMonthly"
    unit: ClassVar[str] = "month"
    text_format: ClassVar[str] = "%Y-%m"

    def date_of(self, value: datetime.date) -> datetime.date:
        return value.replace(day=1)

    def stop_of(self, value: datetime.date) -> datetime.date:
        return (value.replace(day=1) + datetime.timedelta(days=32)).replace(day=1)

    def values_between(self, start: datetime.date, stop: datetime.date) -> list[datetime.date]:
        months, month = [], start.replace(day=1)
        if month < start:
            month = self.stop_of(month)
        while self.stop_of(month) <= stop:
            months.append(month)
            month = self.stop_of(month)
        return months

    def containing(self, date: datetime.date) -> datetime.date:
        return date.replace(day=1)

    def ordinal(self, value: datetime.date) -> int:
        return value.year * 12 + value.month


# (grain, key_prefix template) -> whether the template gives each value a prefix of its own (``prefixes_apart``)
_PREFIXES_APART: runtime.Slot[dict[tuple[Grain, str], bool]] = runtime.Slot("key prefix checks", dict,
                                                                             across_fork=True)

DAILY = Daily()
HOURLY = Hourly()
MONTHLY = Monthly()

