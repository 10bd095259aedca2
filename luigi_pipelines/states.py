"""Pure: the state of each date of a pipeline (loaded, stale, failed, check failed, missing) from its marker rows, its
failure rows, the dates its ``bulk_complete`` finds not loaded and, when checked, those whose sources changed since their
load; the totals of a window and the status exit code.

Nothing here reads a database or a clock: ``luigi_pipelines.status`` gathers the rows, ``views`` renders
what this module decides.
"""
from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .errors import DataCheckError
from .freshness import Freshness

LOADED = "loaded"
STALE = "stale"  # loaded, but its sources changed since (what the reload_changed mode would reload)
FAILED = "failed"
CHECK_FAILED = "check_failed"  # its last attempt failed a data check: rolled back, the previous load (if any) kept
MISSING = "missing"
EXPIRED = "expired"  # dropped by a partitioned table's retention (keep = N): gone on purpose, not missing
STATES = (LOADED, STALE, FAILED, CHECK_FAILED, MISSING, EXPIRED)

# Exit codes of ``luigi-pipelines status``: the meanings they have in luigi's [retcode] table and for
# ``backfill`` (21: dates asked for are not loaded; 30: a task failed), so one table explains both.
# 22 (stale) sits beside 21: loaded dates that a run in the reload_changed mode would load again.
# 28 (late): a table whose task declares ``freshness`` has no partition new enough (``freshness``), above stale
# and missing (a late table's newest partitions are missing too), below failed.
# 31 (check failed) sits beside 30: a last attempt that a data check of the task refused, which a rerun of the
# same data refuses again (someone must look at the data), where 30 may be a passing fault.
# When several apply, the highest wins, as in luigi's [retcode].
EXIT_ALL_LOADED = 0
EXIT_MISSING = 21
EXIT_STALE = 22
EXIT_LATE = 28
EXIT_FAILED = 30
EXIT_CHECK_FAILED = 31


@dataclass(frozen=True)
class DateState:
    """One partition of a pipeline (a date; of an hourly task an hour, of a monthly one a month): its state and what
    the marker and the failure record say about it."""

    date: datetime.date  # the partition value: a date, an hour (a datetime), a month (its first date)
    state: str
    rows: int | None = None  # from the marker: the partition's rows, None when it has no marker row
    rejected: int = 0
    bytes: int | None = None
    objects: int | None = None
    seconds: float | None = None
    finished_at: datetime.datetime | None = None
    host: str | None = None
    error_class: str | None = None  # from the failure record, when the last attempt failed
    error: str | None = None
    s3_key: str | None = None
    failed_at: datetime.datetime | None = None
    failed_host: str | None = None
    attempts: int | None = None
    change: str | None = None  # a stale date: how its sources changed since its load ("" when not said)
    skipped: int = 0  # from the marker: objects that looked like data but that ``keys`` left out
    skipped_keys: tuple[str, ...] = ()  # the first few of them
    checks: tuple[dict[str, Any], ...] = ()  # from the marker: each data check's figures (``checks.CheckResult``)
    label: str = ""  # the value as the command line writes it (2019-02-01T13) when the task is not daily

    @property
    def name(self) -> str:
        """The partition as the command line writes it: ``2019-02-01``, ``2019-02-01T13``, ``2019-02``."""
        return self.label or self.date.isoformat()

    @property
    def kept_previous(self) -> bool:
        """A failed reload: the last attempt failed (or failed a data check), and the partition loaded before it is
        still there."""
        return self.state in (FAILED, CHECK_FAILED) and self.rows is not None

    @property
    def warned(self) -> list[dict[str, Any]]:
        """The data checks of severity warn that found violations in the committed load."""
        return [c for c in self.checks if not c.get("passed", True)]


@dataclass(frozen=True)
class Totals:
    dates: int
    loaded: int  # loaded and, when sources were checked, not stale
    stale: int
    failed: int
    missing: int
    with_rejects: int  # loaded dates with rows rejected (quarantine mode)
    rejected: int
    rows: int  # in the table: of the loaded and the stale dates
    bytes: int
    check_failed: int = 0  # failed, by a data check (not counted in ``failed``)


@dataclass(frozen=True)
class Calendar:
    """One pipeline (a task class and its marker key) over the dates ``[start, stop)``.

    ``sources_checked``: whether the loaded dates' sources were compared with their markers. When not, no
    date is stale because none was checked, not because all are fresh.
    """

    task: str
    key: str
    start: datetime.date
    stop: datetime.date
    days: tuple[DateState, ...]
    sources_checked: bool = False
    # A merge's table (its rows now, in the task's scope), None for other writes. Its dates' rows are the rows read
    # from each date's objects and merged by key, so their sum is not what the table holds.
    table_rows: int | None = None
    unit: str = "day"  # what one of ``days`` is: a day, an hour, a month (the task's grain)
    freshness: Freshness | None = None  # the table's newest loaded partition (in or out of the window), how late

    @property
    def totals(self) -> Totals:
        loaded = [d for d in self.days if d.state == LOADED]
        in_table = [d for d in self.days if d.state in (LOADED, STALE)]
        return Totals(
            dates=len(self.days), loaded=len(loaded), stale=self.count(STALE), failed=self.count(FAILED),
            check_failed=self.count(CHECK_FAILED), missing=self.count(MISSING), with_rejects=sum(1 for d in loaded if d.rejected),
            rejected=sum(d.rejected for d in loaded), rows=sum(d.rows or 0 for d in in_table),
            bytes=sum(d.bytes or 0 for d in in_table))

    def count(self, state: str) -> int:
        return sum(1 for d in self.days if d.state == state)

    def of(self, state: str) -> list[DateState]:
        return [d for d in self.days if d.state == state]


def date_states(
    dates: Iterable[datetime.date],
    not_loaded: Iterable[datetime.date],
    markers: Iterable[Mapping[str, Any]],
    failures: Iterable[Mapping[str, Any]],
    name: Callable[[Any], str] | None = None,
) -> tuple[DateState, ...]:
    """The state of each of ``dates`` (partition values: of an hourly task its hours, each row then carrying its
    ``value``; ``name`` writes a value as the command line does, for the ``label`` of a task that is not daily).

    ``not_loaded`` decides loaded or not (the task's ``bulk_complete``, as ``backfill`` decides it);
    ``markers`` and ``failures`` are rows of the marker and failures tables (``sql.MARKER_WINDOW_FIELDS``,
    ``sql.FAILURE_FIELDS``). A date is **failed** when its last attempt failed: a failure row for a
    date not loaded, or one newer than the date's marker (a reload that failed; the earlier load is
    kept). A failure row older than the marker (an attempt that failed while another succeeded) is
    history, not state. A failed date whose last attempt a data check refused is **check_failed**. Otherwise a date
    not loaded is **missing** (no data yet, or never run), and the rest are **loaded**.
    """
    pending = set(not_loaded)
    by_date = {m.get("value", m["partition_date"]): m for m in markers}
    failed = {f.get("value", f["partition_date"]): f for f in failures}
    states = (_state(day, day in pending, by_date.get(day), failed.get(day)) for day in dates)
    return tuple(dataclasses.replace(d, label=name(d.date)) for d in states) if name else tuple(states)


def _state(day: datetime.date, pending: bool, marker: Mapping[str, Any] | None,
           failure: Mapping[str, Any] | None) -> DateState:
    last_failed = failure is not None and (
        pending or marker is None or failure["failed_at"] > marker["finished_at"])
    checked = last_failed and failure is not None and failure["error_class"] == DataCheckError.__name__
    state = CHECK_FAILED if checked else FAILED if last_failed else MISSING if pending else LOADED
    details: dict[str, Any] = {}
    if marker is not None and not pending:
        details.update(rows=marker["rows_loaded"], rejected=marker["rows_rejected"], bytes=marker["bytes_loaded"],
                       objects=marker["objects"], seconds=marker["seconds"], finished_at=marker["finished_at"],
                       host=marker["host"], skipped=marker["skipped"], skipped_keys=tuple(marker["skipped_keys"]),
                       checks=tuple(marker.get("checks") or ()))
    if last_failed and failure is not None:
        details.update(error_class=failure["error_class"], error=failure["message"], s3_key=failure["s3_key"],
                       failed_at=failure["failed_at"], failed_host=failure["host"], attempts=failure["attempts"])
    return DateState(day, state, **details)


def with_stale(days: Iterable[DateState], changes: Mapping[datetime.date, str],
               checked: Iterable[datetime.date] = ()) -> tuple[DateState, ...]:
    """``days`` with each loaded date of ``changes`` (the dates whose sources changed since their load, and how)
    made **stale**, and each failed reload (``kept_previous``) among the ``checked`` dates whose sources did not
    change made **loaded**: the previous load is what its sources hold again, and the check superseded its
    failure record. Other failed dates and missing ones keep their state."""
    fresh = set(checked) - set(changes)
    return tuple(dataclasses.replace(d, state=STALE, change=changes[d.date]) if d.state == LOADED and d.date in changes
                 else _superseded(d) if d.kept_previous and d.date in fresh else d for d in days)


def with_expired(days: Iterable[DateState], expired: Iterable[Any]) -> tuple[DateState, ...]:
    """``days`` with each of ``expired`` (partition values behind a retention's horizon) without a marker made
    **expired**: ``bulk_complete`` counts them done, and they hold no rows."""
    gone = set(expired)
    return tuple(dataclasses.replace(d, state=EXPIRED) if d.date in gone and d.rows is None and d.state == LOADED
                 else d for d in days)


def _superseded(day: DateState) -> DateState:
    """A failed reload whose sources match the kept load again: loaded, without the failure's details."""
    return dataclasses.replace(day, state=LOADED, error_class=None, error=None, s3_key=None, failed_at=None,
                               failed_host=None, attempts=None)


def exit_code(calendars: Sequence[Calendar]) -> int:
    """The highest that applies: 31 if any date's last attempt failed a data check, 30 if any date's last attempt
    failed otherwise, 28 if a table is late, 22 if any date is stale, 21 if any date is missing, else 0."""
    if any(c.count(CHECK_FAILED) for c in calendars):
        return EXIT_CHECK_FAILED
    if any(c.count(FAILED) for c in calendars):
        return EXIT_FAILED
    if any(c.freshness is not None and c.freshness.late for c in calendars):
        return EXIT_LATE
    if any(c.count(STALE) for c in calendars):
        return EXIT_STALE
    if any(c.count(MISSING) for c in calendars):
        return EXIT_MISSING
    return EXIT_ALL_LOADED


@dataclass(frozen=True)
class Shortfall:
    """What a backfill's final check found not done among the dates it was asked for, each said as what it is.

    ``not_loaded``: no marker; of them, ``waiting`` those whose producer has not written the ready key yet
    (the key's URL). ``stale``: loaded (the previous load is in the table), but their sources changed since
    and no reload replaced it (how they changed). A date is in ``not_loaded`` or ``stale``, never both.
    """

    not_loaded: tuple[Any, ...] = ()
    waiting: Mapping[Any, str] = dataclasses.field(default_factory=dict)
    stale: Mapping[Any, str] = dataclasses.field(default_factory=dict)
    unit: str = "date"  # what the partitions are (date, hour, month), named as the command line writes them

    @property
    def dates(self) -> list[Any]:
        return sorted({*self.not_loaded, *self.stale})

    def exit_code(self) -> int:
        """21 if a date is not loaded, else 22 if one is stale (as ``status`` says them), else 0."""
        return EXIT_MISSING if self.not_loaded else EXIT_STALE if self.stale else EXIT_ALL_LOADED

    def describe(self, shown: int = 10) -> str:
        """``"dates asked for are not loaded: 1 (2019-02-04); ..."``: each kind of date that is not done."""
        absent = [d for d in self.not_loaded if d not in self.waiting]
        parts = [f"{self.unit}s asked for are not loaded: {listed(absent, {}, shown)}" if absent else "",
                 f"{self.unit}s asked for wait for their ready key (absent, so not loaded): "
                 f"{listed(sorted(self.waiting), self.waiting, shown)}" if self.waiting else "",
                 f"{self.unit}s asked for are loaded but stale, their sources changed since and no reload replaced the "
                 f"previous load (a backfill with --reload-changed reloads them): "
                 f"{listed(sorted(self.stale), self.stale, shown)}" if self.stale else ""]
        return "; ".join(p for p in parts if p)


def listed(dates: Sequence[Any], notes: Mapping[Any, str], shown: int = 10) -> str:
    """``"3 (2019-01-01, 2019-01-02: why, ...)"``: how many, and the first ``shown`` of them with their notes (dates,
    or partition values already written as the command line writes them: ``2019-02-01T13``)."""
    if not dates:
        return "0"
    more = " ..." if len(dates) > shown else ""
    named = [f"{_text(d)}: {notes[d]}" if notes.get(d) else _text(d) for d in dates[:shown]]
    return f"{len(dates)} ({', '.join(named)}{more})"


def _text(value: Any) -> str:
    return value if isinstance(value, str) else value.isoformat()
