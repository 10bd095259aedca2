"""The luigi command line of a backfill: a window of whole UTC days, run with the task's grain's own range tool
(``RangeDaily``, ``RangeHourly``, ``RangeMonthly``) over the partition values that the window covers.

- ``--days-back N`` means the N whole days before today in UTC (the newest is yesterday, UTC); the clock is
  read once and handed to luigi as ``--now``;
- a daily task gets the window's dates, an hourly one every hour of them (``--start 2019-02-01T00 --stop
  2019-02-03T00``), a monthly one the months that meet the window and are over (``--start 2019-02 --stop 2019-04``);
- with a central scheduler, the worker flags that let several workers share a backfill (``--worker-keep-alive``
  with an idle limit, so a worker waits while others still load).
"""
from __future__ import annotations

import datetime
import json
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import luigi.cmdline_parser
from luigi.tools.range import RangeDaily, RangeHourly, RangeMonthly  # noqa: F401 - registered for the command line

from .grains import DAILY, Grain

UTC = datetime.timezone.utc
DEFAULT_IDLE_S = 300


@dataclass(frozen=True)
class Window:
    """The dates ``[start, stop)`` of a backfill, with the UTC instant that decided "today"."""

    start: datetime.date
    stop: datetime.date
    now: datetime.datetime

    @property
    def today(self) -> datetime.date:
        return self.now.astimezone(UTC).date()

    def dates(self) -> list[datetime.date]:
        return DAILY.values_between(self.start, self.stop)

    def values(self, grain: Grain = DAILY) -> list[Any]:
        """The partition values of ``grain`` that the window covers and that are over before today (UTC): its
        dates, every hour of them, the months that meet it and have ended (the current month is not over)."""
        return [v for v in grain.covering(self.start, self.stop) if grain.stop_of(v) <= self.today]


def parse_now(text: str) -> datetime.datetime:
    """Seconds since the epoch, or an ISO date/time (UTC unless it carries an offset)."""
    try:
        return datetime.datetime.fromtimestamp(float(text), UTC)
    except ValueError:
        moment = datetime.datetime.fromisoformat(text)
        return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def window(
    now: datetime.datetime,
    days_back: int | None = None,
    start: datetime.date | None = None,
    stop: datetime.date | None = None,
) -> Window:
    """The window of a run at ``now``: ``--days-back N`` or ``--start`` (and ``--stop``, default today UTC).

    A day is loaded once it is over in UTC, so ``stop`` (exclusive) may be today at the latest.
    """
    today = now.astimezone(UTC).date()
    if (days_back is None) == (start is None):
        raise ValueError("give either --days-back or --start")
    if days_back is not None:
        if days_back < 1:
            raise ValueError("--days-back must be at least 1 (1 is yesterday, UTC)")
        start = today - datetime.timedelta(days=days_back)
    assert start is not None
    stop = stop or today
    if stop > today:
        raise ValueError(f"--stop {stop} is after today ({today} UTC); the newest date a run loads is yesterday, "
                         f"{today - datetime.timedelta(days=1)}")
    if start >= stop:
        raise ValueError(f"the window [{start}, {stop}) is empty")
    return Window(start, stop, now)


@dataclass(frozen=True)
class Scheduler:
    """``local=True`` for ``--local-scheduler``; otherwise luigid at host/port (unset: luigi's [core] defaults)."""

    local: bool = False
    host: str | None = None
    port: int | None = None
    idle_s: int = DEFAULT_IDLE_S


def range_args(
    module: str,
    task: str,
    first: Any,
    stop: Any,
    *,
    grain: Grain = DAILY,
    now: datetime.datetime | None = None,
    back: int | None = None,
    workers: int | None = None,
    task_limit: int | None = None,
    reverse: bool = False,
    local_scheduler: bool = False,
    of_params: dict[str, Any] | None = None,
) -> list[str]:
    """luigi's arguments (what follows ``luigi`` or ``python -m luigi``) for ``grain``'s range tool of
    ``module.task`` over the partition values ``[first, stop)``; an option left at None is left to luigi::

        --module M RangeHourly --of T --start 2019-02-01T00 --stop 2019-02-03T00 [--of-params JSON] [--now EPOCH]
            [--hours-back N] [--workers N] [--task-limit N] [--reverse] [--local-scheduler]

    ``back`` is the range tool's own moving window in its unit (``--days-back``, ``--hours-back``, ``--months-back``).
    """
    args = ["--module", module, grain.range_task, "--of", task, "--start", grain.describe(first),
            "--stop", grain.describe(stop)]
    if of_params:  # parameters of every task of the range, and of the probe its bulk_complete builds
        args += ["--of-params", json.dumps(of_params, sort_keys=True)]
    for option, value in (("--now", int(now.timestamp()) if now else None), (f"--{grain.unit}s-back", back),
                          ("--workers", workers), ("--task-limit", task_limit)):
        if value is not None:
            args += [option, str(value)]
    if reverse:
        args.append("--reverse")
    if local_scheduler:
        args.append("--local-scheduler")
    return args


def range_daily_args(module: str, task: str, start: datetime.date, stop: datetime.date, *,
                     days_back: int | None = None, **options: Any) -> list[str]:
    """``range_args`` of ``RangeDaily`` over the dates ``[start, stop)`` (``days_back``: its ``--days-back``)."""
    return range_args(module, task, start, stop, grain=DAILY, back=days_back, **options)


def luigi_command(
    module: str,
    task: str,
    win: Window,
    scheduler: Scheduler,
    workers: int = 1,
    task_limit: int | None = None,
    reverse: bool = False,
    extra: Sequence[str] = (),
    python: str = sys.executable,
    reload_changed: bool = False,
    stale: Mapping[str, str | None] | None = None,
    grain: Grain = DAILY,
    bounds: tuple[Any, Any] | None = None,
) -> list[str]:
    """The real luigi command line of a backfill of ``win`` (or of the values ``bounds``, ``[first, stop)``, of it);
    in the ``reload_changed`` mode with the partitions ``stale`` (by their command-line value) that the backfill's
    own check found (``stale_known``: luigi's checks then list nothing again)."""
    if bounds is None:
        values = win.values(grain)
        bounds = (values[0], grain.after(values[-1]))
    first, stop = bounds
    cmd = [python, "-m", "luigi", *range_args(
        module, task, first, stop, grain=grain, now=win.now,
        # The range tool also drops values more than its days_back (hours_back, months_back) before now: cover
        # the window, whatever the config says.
        back=len(grain.covering(grain.date_of(first), win.today + datetime.timedelta(days=1))),
        workers=workers, task_limit=task_limit, reverse=reverse, local_scheduler=scheduler.local,
        of_params=mode_params(reload_changed, stale),
    ), "--param-name", grain.parameter]  # named: luigi's default (None, "the first parameter") warns on every run
    if not scheduler.local:
        if scheduler.host:
            cmd += ["--scheduler-host", scheduler.host]
        if scheduler.port:
            cmd += ["--scheduler-port", str(scheduler.port)]
        # Stay while tasks we scheduled are pending elsewhere (a killed worker's task comes back after
        # luigid's worker_disconnect_delay + retry_delay), but not forever (data that never arrives).
        cmd += ["--worker-keep-alive", "--worker-max-keep-alive-idle-duration", f"{scheduler.idle_s} seconds"]
    return cmd + list(extra)


def mode_params(reload_changed: bool, stale: Mapping[str, str | None] | None) -> dict[str, Any] | None:
    """The ``--of-params`` of the ``reload_changed`` mode, with what a check made already found stale (each
    partition by its command-line value, with the load id it had)."""
    if not reload_changed:
        return None
    known = {} if stale is None else {"stale_known": dict(stale)}
    return {"reload_changed": True, **known}


def scheduled_dates(cmd: Sequence[str]) -> list[Any]:
    """The partition values luigi's own range tool requires for the luigi command line ``cmd``, as the run will
    see them (dates for ``RangeDaily``).

    The arguments from ``--module`` on are parsed by luigi's own command-line parser and the range task it
    builds is asked for its ``requires()``: its task limit, direction, moving window and config apply exactly
    as in the run (one ``bulk_complete`` query), instead of a copy of its slicing here.
    """
    name = cmd[cmd.index("--param-name") + 1] if "--param-name" in cmd else "date"
    with luigi.cmdline_parser.CmdlineParser.global_instance(list(cmd[cmd.index("--module"):])) as parsed:
        return sorted(getattr(task, name) for task in parsed.get_task_obj().requires())
