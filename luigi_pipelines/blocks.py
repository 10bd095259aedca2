"""Hourly partitions handed to luigid in blocks: one luigi task per block of consecutive hours of a UTC day
(``--block-hours``, 24 by default: a day), which loads each of its hours not loaded yet in a transaction of its own.

Why: a partition handed to luigid as a task of its own costs four RPCs (``add_task`` pending, ``get_work``,
``add_task`` running and done) and luigid's bookkeeping of it (memory, and the prune that walks every task it holds);
for years of tiny hourly partitions that is most of what a partition costs (docs/scheduling.md). A block costs the same
RPCs once for its N hours, and luigid holds N times fewer tasks.

What does not change, per hour:

- exactly once: each hour is written by the hour's own task (``PartitionTask.run``: ``write_once`` under the
  partition's lock, data and marker in one transaction), so an hour loaded by another worker, host or block meanwhile
  is found and skipped, and a worker killed in the middle of a block leaves each hour either as it was or loaded;
- a failed hour is put on record (``status`` names it) and rolled back; the block goes on with its other hours, then
  fails, naming the failed ones, so luigid retries it later (the hours loaded by then are skipped);
- ``status``, the markers, the verdict of ``backfill``: all per hour, as before.

Blocks are aligned on the UTC day (hours ``k*N`` to ``k*N + N - 1`` of a day; N divides 24), whatever the range asked:
two backfills (two hosts) over the same range, or waves that cut a day in two, name the same block by the same task
id, which luigid hands to one worker. A block requires what its hours not loaded require (luigi runs it once all of
their inputs exist: a day's block of a feed with a ready key waits for the day's last hour).

``RangeHourlyBlocks`` is ``RangeHourly`` (same parameters, same window rule, same ``bulk_complete`` query, same task
limit) whose missing hours are grouped into blocks. A wave's luigi process runs it through ``command`` below, which
registers it before luigi parses its command line.
"""
from __future__ import annotations

import datetime
import functools
import logging
from collections.abc import Sequence
from typing import Any

import luigi
from luigi.task import flatten
from luigi.tools.range import RangeHourly

from .targets import note_missing, take_missing

logger = logging.getLogger("luigi-interface")

DEFAULT_BLOCK_HOURS = 24
# The wave's child: luigi's own command line, with this module imported first (it registers the tasks below).
PYTHON_C = "import sys, luigi.cmdline, luigi_pipelines.blocks; luigi.cmdline.luigi_run(sys.argv[1:])"


def check_block_hours(hours: int) -> int:
    if hours < 1 or 24 % hours:
        raise ValueError(f"--block-hours {hours}: a block is a whole part of a UTC day (1, 2, 3, 4, 6, 8, 12 or 24)")
    return hours


def block_start(hour: datetime.datetime, hours: int) -> datetime.datetime:
    """The first hour of the block of ``hours`` hours that holds ``hour``."""
    return hour.replace(hour=hour.hour - hour.hour % hours, minute=0, second=0, microsecond=0)


def command(cmd: Sequence[str], hours: int) -> list[str]:
    """The luigi command line ``cmd`` (``python -m luigi ... RangeHourly ...``, from ``ranges.luigi_command``) made to
    hand its hours to luigid in blocks of ``hours``."""
    cmd = list(cmd)
    if cmd[1:3] != ["-m", "luigi"] or "RangeHourly" not in cmd:
        raise ValueError(f"not a RangeHourly command: {cmd[:8]}")
    cmd[1:3] = ["-c", PYTHON_C]
    cmd[cmd.index("RangeHourly")] = "RangeHourlyBlocks"
    return cmd + ["--block-hours", str(check_block_hours(hours))]


class PartitionBlock(luigi.Task):
    """The hours ``start`` to ``start + hours - 1`` of the hourly partition task ``of`` (with ``of_params``), each
    loaded by its own task in its own transaction (see the module docstring)."""

    of: Any = luigi.TaskParameter(description="the hourly partition task")
    of_params: Any = luigi.DictParameter(default={}, description="the other parameters of each hour's task")
    start: Any = luigi.DateHourParameter(description="the block's first hour (a multiple of its length in the UTC day)")
    hours: Any = luigi.IntParameter(default=DEFAULT_BLOCK_HOURS, description="the block's length")
    param_name: Any = luigi.Parameter(default="date_hour", positional=False, description="the hour's parameter in `of`")

    @property
    def resources(self) -> dict[str, int]:  # type: ignore[override]
        """An hour's (one PostgreSQL connection at a time): the hours load one after the other."""
        return dict(self._hour_tasks()[0].resources)

    def hour_values(self) -> list[datetime.datetime]:
        return [self.start + datetime.timedelta(hours=n) for n in range(self.hours)]

    def _hour_tasks(self) -> list[Any]:
        """Each hour's task (made once per block instance: luigi caches instances by parameters)."""
        if not hasattr(self, "_tasks"):
            self._tasks = [self.of(**{**self.of_params, self.param_name: h}) for h in self.hour_values()]
        return self._tasks

    def _loaded(self, tasks: Sequence[Any]) -> set[Any]:
        """The hours of ``tasks`` that are loaded: the task class's ``bulk_complete`` (one query)."""
        with_params = functools.partial(self.of, **self.of_params)
        bulk: Any = self.of.bulk_complete.__func__  # RangeHourly's own call: the class with the other parameters
        return set(bulk(with_params, [getattr(t, self.param_name) for t in tasks]))

    def _not_loaded(self) -> list[Any]:
        tasks = self._hour_tasks()
        done = self._loaded(tasks)
        return [t for t in tasks if getattr(t, self.param_name) not in done]

    def complete(self) -> bool:
        """Every hour loaded (one query); a block that ``RangeHourlyBlocks`` just found an hour missing in is not
        asked again."""
        if take_missing(self.task_id, "block"):
            return False
        return not self._not_loaded()

    def requires(self) -> list[Any]:
        """What the hours not loaded require (none for a load whose hour may be empty and has no ready key)."""
        tasks = self._hour_tasks()
        if not any(flatten(t.requires()) for t in tasks):  # no query when no hour requires anything
            return []
        return [dep for t in self._not_loaded() for dep in flatten(t.requires())]

    def run(self) -> None:
        todo = self._not_loaded()
        failed: list[str] = []
        for n, task in enumerate(todo):
            if callable(self.set_status_message):
                task.set_status_message = self.set_status_message
            try:
                task.run()  # the hour's write_once: its lock, its transaction; a failure is put on record
            except Exception as exc:  # the hour rolled back; the others go on
                logger.error("%s: hour %s not loaded (%d of %d to load in this block): %s", self.task_family,
                             getattr(task, self.param_name), n + 1, len(todo), exc)
                failed.append(f"{getattr(task, self.param_name):%Y-%m-%dT%H}: {type(exc).__name__}: {exc}")
        if failed:
            raise BlockFailed(f"{len(failed)} of the {len(todo)} hours this block loaded failed (each rolled back and "
                              f"on record; the others are loaded): " + "; ".join(failed))


class BlockFailed(Exception):
    """Some hours of a block failed (each rolled back); the others were loaded."""


class RangeHourlyBlocks(RangeHourly):
    """``RangeHourly`` whose missing hours are required as ``PartitionBlock``s of ``block_hours`` (aligned on the UTC
    day): the same window, task limit and one ``bulk_complete`` query."""

    block_hours = luigi.IntParameter(default=DEFAULT_BLOCK_HOURS, description="hours of a block (divides 24)")

    def requires(self) -> list[Any]:
        if hasattr(self, "_cached_blocks"):
            return self._cached_blocks
        hours = check_block_hours(self.block_hours)
        starts = sorted({block_start(getattr(t, self._param_name), hours) for t in super().requires()},
                        reverse=bool(self.reverse))
        blocks = [PartitionBlock(of=self.of, of_params=self.of_params, start=s, hours=hours,
                                 param_name=self._param_name) for s in starts]
        note_missing([b.task_id for b in blocks], "block")  # each holds an hour the query just found missing
        self._cached_blocks: list[Any] = blocks
        return blocks
