"""Partitions handed to luigid in blocks: one luigi task per block of consecutive hours of a UTC day
(``--block-hours``, ``PartitionBlock``) or of consecutive days (``--block-days``, ``PartitionDayBlock``), which loads
each of its partitions not loaded yet in a transaction of its own.

Why: a partition handed to luigid as a task of its own costs four RPCs (``add_task`` pending, ``get_work``,
``add_task`` running and done) and luigid's bookkeeping of it (memory, and the prune that walks every task it holds);
for years of tiny partitions that is most of what a partition costs (docs/scheduling.md). A block costs the same
RPCs once for its N partitions, and luigid holds N times fewer tasks.

What does not change, per partition (hour or day):

- exactly once: each is written by its own task (``PartitionTask.run``: ``write_once`` under the partition's lock,
  data and marker in one transaction), so a partition loaded by another worker, host or block meanwhile is found and
  skipped, and a worker killed in the middle of a block leaves each partition either as it was or loaded;
- a failed partition is put on record (``status`` names it) and rolled back; the block goes on with its others,
  then fails, naming the failed ones, so luigid retries it later (the partitions loaded by then are skipped);
- ``status``, the markers, the verdict of ``backfill``: all per partition, as before.

Blocks are counted from a fixed origin, Monday 2001-01-01 at 00:00 UTC (``block_start``), whatever the range asked:
blocks of hours (N divides 24) are aligned on the UTC day, blocks of 7 days are weeks from Monday to Sunday, and any
N of days works (months would allow no other length). Two backfills (two hosts) over the same range, or waves that
cut a block in two, name the same block by the same task id, which luigid hands to one worker. A block is cut to the
backfill's window (``--block-window``: a backfill loads no date it was not asked for); only a block at the window's
edge can then be named otherwise by a backfill over another window (each of its partitions is still written once).
A block requires what its partitions not loaded require (luigi runs it once all of their inputs exist: a week's
block of a feed with a ready key waits for the week's last day).

``RangeHourlyBlocks`` and ``RangeDailyBlocks`` are ``RangeHourly`` and ``RangeDaily`` (same parameters, same window
rule, same ``bulk_complete`` query, same task limit) whose missing partitions are grouped into blocks. A wave's luigi
process runs them through ``command`` below, which registers them before luigi parses its command line.
"""
from __future__ import annotations

import datetime
import functools
import logging
import time
from collections.abc import Sequence
from typing import Any, ClassVar

import luigi
from luigi.task import flatten
from luigi.tools.range import RangeDaily, RangeHourly

from .grains import DAILY, HOURLY, Grain
from .targets import completed_values, note_missing, take_missing

logger = logging.getLogger("luigi-interface")

DEFAULT_BLOCK_HOURS = 24
ORIGIN = datetime.date(2001, 1, 1)  # a Monday: the first block of every length starts there
_STEP = {"hour": datetime.timedelta(hours=1), "day": datetime.timedelta(days=1)}
# The wave's child: luigi's own command line, with this module imported first (it registers the tasks below).
PYTHON_C = "import sys, luigi.cmdline, luigi_pipelines.blocks; luigi.cmdline.luigi_run(sys.argv[1:])"


def check_block_hours(hours: int) -> int:
    if hours < 1 or 24 % hours:
        raise ValueError(f"--block-hours {hours}: a block is a whole part of a UTC day (1, 2, 3, 4, 6, 8, 12 or 24)")
    return hours


def check_block_days(days: int) -> int:
    if days < 1:
        raise ValueError(f"--block-days {days}: a block holds at least 1 day")
    return days


def wrong_lengths(hours: int, days: int, grain: Grain | None = None) -> str:
    """Why ``--block-hours``/``--block-days`` cannot be used ("" when they can), for a task of ``grain``."""
    try:
        check_block_hours(hours), check_block_days(days)
    except ValueError as exc:
        return str(exc)
    for option, length, unit in (("--block-hours", hours, "hour"), ("--block-days", days, "day")):
        if grain is not None and length > 1 and grain.unit != unit:
            return f"{option} {length}: blocks of {unit}s, but the task's partitions are {grain.unit}s"
    return ""


def block_start(value: Any, length: int, grain: Grain = HOURLY) -> Any:
    """The first value of the block of ``length`` values of ``grain`` that holds ``value`` (counted from ORIGIN)."""
    origin, step = grain.containing(ORIGIN), _STEP[grain.unit]
    n = (value - origin) // step
    return origin + (n - n % length) * step


def command(cmd: Sequence[str], length: int, grain: Grain = HOURLY,
            window: tuple[datetime.date, datetime.date] | None = None) -> list[str]:
    """The luigi command line ``cmd`` (``python -m luigi ... RangeHourly ...`` or ``RangeDaily``, from
    ``ranges.luigi_command``) made to hand its partitions to luigid in blocks of ``length``, cut to ``window``."""
    cmd, blocks = list(cmd), _RANGES.get(grain.unit)
    if cmd[1:3] != ["-m", "luigi"] or blocks is None or blocks.range_name not in cmd:
        raise ValueError(f"not a {'RangeHourly or RangeDaily' if blocks is None else blocks.range_name} command: "
                         f"{cmd[:8]}")
    cmd[1:3] = ["-c", PYTHON_C]
    cmd[cmd.index(blocks.range_name)] = blocks.__name__
    extra = ["--block-window", f'["{window[0]}", "{window[1]}"]'] if window else []
    return cmd + [f"--block-{blocks.unit}s", str(blocks.check(length)), *extra]


def wave_command(cmd: list[str], grain: Grain, hours: int, days: int,
                 window: tuple[datetime.date, datetime.date]) -> list[str]:
    """A wave's command ``cmd`` in blocks of ``hours`` (an hourly task) or ``days`` (a daily one), if more than 1."""
    length = {"hour": hours, "day": days}.get(grain.unit, 1)
    return command(cmd, length, grain, window) if length > 1 else cmd


class _Block(luigi.Task):
    """The partitions ``start`` to ``start + length - 1`` of the partition task ``of`` (with ``of_params``), each
    loaded by its own task in its own transaction (see the module docstring). Subclasses: one per grain."""

    grain: ClassVar[Grain]
    start: Any  # the block's first partition, and its length: the subclass's parameters
    param_name: Any
    of: Any = luigi.TaskParameter(description="the partition task")
    of_params: Any = luigi.DictParameter(default={}, description="the other parameters of each partition's task")

    @property
    def length(self) -> int:
        raise NotImplementedError

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.priority = self._tasks_of_block()[0].priority  # a merge's: older blocks first, as its partitions

    def process_resources(self) -> dict[str, int]:
        """A partition's resources (luigi's hook for what the task asks of luigid): one PostgreSQL connection at a
        time, as the partitions load one after the other."""
        return dict(self._tasks_of_block()[0].process_resources())

    def partition_values(self) -> list[Any]:
        return [self.start + n * _STEP[self.grain.unit] for n in range(self.length)]

    def _tasks_of_block(self) -> list[Any]:
        """Each partition's task (made once per block instance: luigi caches instances by parameters)."""
        if not hasattr(self, "_tasks"):
            self._tasks = [self.of(**{**self.of_params, self.param_name: v}) for v in self.partition_values()]
        return self._tasks

    def _loaded(self, tasks: Sequence[Any]) -> set[Any]:
        """The partitions of ``tasks`` that are loaded: ``bulk_complete``'s query (one), without its S3 survey: the
        range that made the block surveyed the wave's sources at once, for the checks of its inputs."""
        with_params = functools.partial(self.of, **self.of_params)  # as the range tool calls it
        return set(completed_values(with_params, [getattr(t, self.param_name) for t in tasks], learn=False))

    def _not_loaded(self) -> list[Any]:
        tasks = self._tasks_of_block()
        done = self._loaded(tasks)
        return [t for t in tasks if getattr(t, self.param_name) not in done]

    def complete(self) -> bool:
        """Every partition loaded (one query); a block that a range just found a partition missing in is not
        asked again."""
        if take_missing(self.task_id, "block"):
            return False
        return not self._not_loaded()

    def requires(self) -> list[Any]:
        """What the partitions not loaded require: external inputs (S3 objects, a ready key) as one task
        (``_Inputs``: one ``add_task``, not one per partition); tasks that run (a transform's upstream partitions)
        themselves, so that luigi runs them first; none for a load whose partition may be empty and has no ready key."""
        tasks = self._tasks_of_block()
        if not any(flatten(t.requires()) for t in tasks):  # no query when no partition requires anything
            return []
        inputs = self._inputs()
        if all(type(dep).run is None for dep in inputs):  # luigi's external tasks: nothing to run, only to await
            return [_INPUTS[type(self)](**self.param_kwargs)]
        return inputs

    def _inputs(self) -> list[Any]:
        return [dep for t in self._not_loaded() for dep in flatten(t.requires())]

    def run(self) -> None:
        todo, unit = self._not_loaded(), self.grain.unit
        failed: list[str] = []
        report = _throttled(self.set_status_message) if callable(self.set_status_message) else None
        for n, task in enumerate(todo):
            task.set_status_message = report
            value = self.grain.describe(getattr(task, self.param_name))
            try:
                task.run()  # the partition's write_once: its lock, its transaction; a failure is put on record
            except Exception as exc:  # the partition rolled back; the others go on
                logger.error("%s: %s %s not loaded (%d of %d to load in this block): %s", self.task_family, unit,
                             value, n + 1, len(todo), exc)
                failed.append(f"{value}: {type(exc).__name__}: {exc}")
        if failed:
            raise BlockFailed(f"{len(failed)} of the {len(todo)} {unit}s this block loaded failed (each rolled back "
                              f"and on record; the others are loaded): " + "; ".join(failed))


def _throttled(report: Any, every_s: float = 1.0) -> Any:
    """``report`` (the block's status message to luigid: an RPC) called at most once per ``every_s`` by its
    partitions' loads: each load's last report goes as its COPYs end, in its transaction, so a block of small
    partitions would still pay an RPC per partition (docs/scheduling.md, "Blocks of days")."""
    last = [float("-inf")]

    def send(message: str) -> None:
        if time.monotonic() - last[0] >= every_s:
            last[0] = time.monotonic()
            report(message)
    return send


class PartitionBlock(_Block):
    """The hours ``start`` to ``start + hours - 1`` of the hourly partition task ``of``."""

    grain = HOURLY
    start: Any = luigi.DateHourParameter(description="the block's first hour (a multiple of its length in the UTC day)")
    hours: Any = luigi.IntParameter(default=DEFAULT_BLOCK_HOURS, description="the block's length")
    param_name: Any = luigi.Parameter(default="date_hour", positional=False, description="the hour's parameter in `of`")
    length = property(lambda self: self.hours)


class PartitionDayBlock(_Block):
    """The days ``start`` to ``start + days - 1`` of the daily partition task ``of``."""

    grain = DAILY
    start: Any = luigi.DateParameter(description="the block's first day (from ORIGIN, or the window's first)")
    days: Any = luigi.IntParameter(description="the block's length (less at the window's edges)")
    param_name: Any = luigi.Parameter(default="date", positional=False, description="the day's parameter in `of`")
    length = property(lambda self: self.days)


class _Inputs:
    """What a block's partitions not loaded require (``S3PartitionExists``, a ready key...), as one external task:
    complete once each of them is (asked in turn, as luigi would), so that the block runs once all are there. One
    task per block instead of one per partition: each costs an ``add_task`` to luigid (docs/scheduling.md)."""

    run: Any = None  # external: nothing to run, luigi waits for it to be complete

    def requires(self) -> list[Any]:
        return []

    def complete(self) -> bool:
        return all(dep.complete() for dep in self._inputs())  # type: ignore[attr-defined]


class PartitionBlockInputs(_Inputs, PartitionBlock):
    """What the hours of a ``PartitionBlock`` not loaded require."""


class PartitionDayBlockInputs(_Inputs, PartitionDayBlock):
    """What the days of a ``PartitionDayBlock`` not loaded require."""


_INPUTS: dict[type, type] = {PartitionBlock: PartitionBlockInputs, PartitionDayBlock: PartitionDayBlockInputs}


class BlockFailed(Exception):
    """Some partitions of a block failed (each rolled back); the others were loaded."""


class _RangeBlocks:
    """A range tool whose missing partitions are required as blocks (``block``) of ``length`` partitions counted
    from ORIGIN and cut to ``block_window``: the same window, task limit and one ``bulk_complete`` query."""

    unit: ClassVar[str]
    range_name: ClassVar[str]  # the range tool it is
    check: ClassVar[Any]  # the check of its length
    block_class: ClassVar[type[_Block]]
    block_window: Any = luigi.ListParameter(default=(), description="[first date, stop date) of the backfill: "
                                            "blocks are cut to it (none: not cut)")

    def requires(self) -> list[Any]:
        if hasattr(self, "_cached_blocks"):
            return self._cached_blocks
        grain = _GRAINS[self.unit]
        length = type(self).check(getattr(self, f"block_{self.unit}s"))
        step = _STEP[self.unit]
        if self.block_window:
            first, stop = (grain.containing(datetime.date.fromisoformat(d)) for d in self.block_window)
        blocks = []
        for start in sorted({block_start(getattr(t, self._param_name), length, grain)  # type: ignore[attr-defined]
                             for t in super().requires()}, reverse=bool(self.reverse)):  # type: ignore[misc, attr-defined]
            end = start + length * step
            if self.block_window:
                start, end = max(start, first), min(end, stop)
            blocks.append(self.block_class(of=self.of, of_params=self.of_params, start=start,  # type: ignore[attr-defined]
                                           param_name=self._param_name,  # type: ignore[attr-defined]
                                           **{f"{self.unit}s": (end - start) // step}))
        note_missing([b.task_id for b in blocks], "block")  # each holds a partition the query just found missing
        self._cached_blocks: list[Any] = blocks
        return blocks


class RangeHourlyBlocks(_RangeBlocks, RangeHourly):
    """``RangeHourly`` whose missing hours are required as ``PartitionBlock``s of ``block_hours`` (aligned on the UTC
    day)."""

    unit, range_name, check, block_class = "hour", "RangeHourly", staticmethod(check_block_hours), PartitionBlock
    block_hours = luigi.IntParameter(default=DEFAULT_BLOCK_HOURS, description="hours of a block (divides 24)")


class RangeDailyBlocks(_RangeBlocks, RangeDaily):
    """``RangeDaily`` whose missing dates are required as ``PartitionDayBlock``s of ``block_days``."""

    unit, range_name, check, block_class = "day", "RangeDaily", staticmethod(check_block_days), PartitionDayBlock
    block_days = luigi.IntParameter(default=7, description="days of a block")


_GRAINS = {"hour": HOURLY, "day": DAILY}
_RANGES: dict[str, Any] = {"hour": RangeHourlyBlocks, "day": RangeDailyBlocks}
