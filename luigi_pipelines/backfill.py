"""The ``luigi-pipelines backfill`` command: luigi's own range tool of the task's grain (``RangeDaily``,
``RangeHourly``, ``RangeMonthly``) for a window of whole UTC days (``ranges``).

It adds three things to the raw ``luigi --module M RangeDaily --of T ...`` that it runs:

- a window rule: ``--days-back N`` means the N whole days before today in UTC (the newest is
  yesterday, UTC), and the clock is read once and handed to luigi as ``--now``; an hourly task gets every hour
  of those days, a monthly one the months that meet them and are over;
- with a central scheduler, the worker flags that let several workers share a backfill
  (``--worker-keep-alive`` with an idle limit, so a worker waits while others still load);
- an exit code that means what cron needs: 0 only when, after the run, one query (the task class's
  ``bulk_complete``) finds every partition the run was asked for loaded, whatever luigi returned. luigi's
  own non-zero code is kept, except that the two codes luigi gives a worker merely because *other*
  workers ran some of its tasks (``[retcode] already_running`` and ``not_run``) become 0 when every
  partition is loaded; when luigi says 0 but partitions are missing, the code is ``STILL_MISSING`` (21).

The partitions asked for are the whole window (the task limit handed to luigi is their number), or with
``--task-limit N`` those luigi's own range tool picks for the same command line.

Against luigid the window goes in waves (``waves``): at most ``--wave-size`` partitions still to load at a time,
the next wave started while the last one drains, each its own luigi process over its own bounds.

With ``--processes N`` there is no luigid and no fork per task (``shards``): one ``bulk_complete`` query finds
the partitions still to load, they are cut into N runs of consecutive values, each its own local-scheduler
luigi process. The exit code is judged as above, over every partition asked for, once all have ended.
"""
from __future__ import annotations

import argparse
import datetime
import functools
import importlib
import os
import shlex
import sys
from collections.abc import Callable, Sequence
from typing import Any

import luigi.retcodes
import psycopg2

from . import (
    blocks,
    db,
    defaults,  # noqa: F401 - [retcode] as the luigi process sees it, from any directory
)
from .config import database_settings
from .errors import ConfigurationError
from .grains import DAILY, Grain
from .ranges import DEFAULT_IDLE_S, Scheduler, Window, luigi_command, parse_now, scheduled_dates, window
from .ranges import range_daily_args as range_daily_args  # the public names of backfill's parts, kept here
from .reporting import one_line
from .shards import Shard as Shard
from .shards import combined_code, run_one, run_shards, shard_commands
from .shards import shards as shards
from .states import Shortfall, listed
from .tasks import PartitionTask
from .waves import DEFAULT_WAVE_SIZE, Wave, WaveRunner

UTC = datetime.timezone.utc
# Exit code of a run after which partitions it was asked for are still not loaded although luigi exited 0
# (or the check could not be made). Distinct from every code of luigi's [retcode].
STILL_MISSING = 21


def cooperation_codes(codes: Any) -> set[int]:
    """The exit codes luigi gives a worker because other workers ran tasks it had scheduled.

    Codes shared with a real failure (missing data, a failed task, a scheduling error) never count.
    """
    failures = {codes.missing_data, codes.task_failed, codes.scheduling_error, codes.unhandled_exception}
    return {codes.already_running, codes.not_run} - failures - {0}


def format_dates(dates: Sequence[Any], shown: int = 10, grain: Grain = DAILY) -> str:
    """``"3 (2019-01-01, 2019-01-02, 2019-01-05)"``: how many, and the first ``shown`` of them (as the command line
    writes ``grain``'s values: ``2019-02-01T13``)."""
    return listed([grain.describe(v) for v in dates], {}, shown)


def judge(code: int, cooperation: set[int], still_missing: Callable[[], Sequence[datetime.date] | Shortfall],
          who: str = "luigi") -> tuple[int, str]:
    """The exit code of the backfill from luigi's ``code``, and a line saying why if it differs or dates are missing.

    ``still_missing`` (the dates not loaded, or a ``Shortfall`` that says what each is) is asked whatever luigi
    returned: 0 only when it finds nothing missing. When luigi said 0, dates not loaded give 21 and dates
    loaded but stale 22, as ``status`` says them. ``who`` names what returned ``code`` in that line.
    """
    try:
        found = still_missing()
    except Exception as exc:  # the database cannot say: nothing is confirmed loaded
        result = code or STILL_MISSING
        return result, f"{who} exited {code}; checking which dates are loaded failed ({exc}): exit {result}"
    missing = found if isinstance(found, Shortfall) else Shortfall(not_loaded=tuple(found))
    if missing.dates:
        result = code or missing.exit_code()
        return result, f"{who} exited {code} and {missing.describe()}: exit {result}"
    if code in cooperation:
        return 0, f"{who} exited {code} because other workers ran some of the tasks; every date is loaded: exit 0"
    return code, ""


def task_class(module: str, name: str) -> Any:
    """The task class ``name`` of the pipeline module ``module``; a ``ConfigurationError`` in the user's words
    when the module cannot be imported or holds no partition task of that name."""
    try:
        found = importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name and (module == exc.name or module.startswith(exc.name + ".")):
            raise ConfigurationError(
                f"--module {module}: no module named {exc.name!r} here (cwd {os.getcwd()}, PYTHONPATH "
                f"{os.environ.get('PYTHONPATH', 'unset')}): put its directory on PYTHONPATH, or install "
                f"its package into this Python ({sys.executable})") from exc
        raise ConfigurationError(f"--module {module}: importing it failed: {exc}") from exc
    except Exception as exc:
        raise ConfigurationError(f"--module {module}: importing it failed: {type(exc).__name__}: {exc}") from exc
    cls = getattr(found, name, None)
    if not (isinstance(cls, type) and issubclass(cls, PartitionTask)):
        tasks = sorted(n for n, v in vars(found).items() if isinstance(v, type) and issubclass(v, PartitionTask)
                       and v.__module__ == found.__name__)
        what = "has no" if cls is None else "has a name, but not a partition task class,"
        raise ConfigurationError(f"--task {name}: module {module} {what} {name}; its partition tasks: "
                                 f"{', '.join(tasks) or 'none'}")
    return cls


def probe_of(cls: Any, value: Any, **params: Any) -> Any:
    """A task of ``cls`` for the partition value ``value`` (a date, an hour, a month), with ``params``."""
    return cls(**{cls.grain.parameter: value}, **params)


def incomplete(module: str, task: str, dates: Sequence[Any], reload_changed: bool = False) -> list[Any]:
    """Those of ``dates`` (partition values) whose partition is not loaded: the task class's ``bulk_complete``, one
    query. With ``reload_changed``, also those whose sources changed since they were loaded (as the range tool
    asks it)."""
    if not dates:
        return []
    cls = task_class(module, task)
    if reload_changed:
        done = set(cls.bulk_complete.__func__(functools.partial(cls, reload_changed=True), list(dates)))
    else:
        done = set(cls.bulk_complete(list(dates)))
    return [d for d in dates if d not in done]


# A loaded partition found stale before a run, by value: how its sources changed, and the load id of the load it
# would replace.
Stale = dict[Any, tuple[str, str | None]]


def stale_before(module: str, task: str, dates: Sequence[Any]) -> Stale:
    """Those of ``dates`` (partition values) loaded whose sources changed since: the stale check of the
    ``reload_changed`` mode, made once per run here (one S3 listing per loaded partition) and handed to luigi as
    ``stale_known``."""
    not_loaded = set(incomplete(module, task, dates))
    loaded = [d for d in dates if d not in not_loaded]
    if not loaded:
        return {}
    probe = probe_of(task_class(module, task), loaded[0], reload_changed=True)
    changes = probe.stale_changes(loaded)
    recorded = probe.recorded(sorted(changes)) if changes else {}
    return {d: (changes[d], recorded[d].load_id if d in recorded else None) for d in sorted(changes)}


def shortfall(module: str, task: str, dates: Sequence[Any], stale: Stale | None = None) -> Shortfall:
    """What is not done of ``dates`` after a run: those not loaded (naming the ready key a partition waits for)
    and of the partitions ``stale`` found stale before it, those whose load no reload replaced (same load id),
    each named as the command line writes it. One marker query, one more for those stale partitions, and a HEAD
    per ready key of a partition not loaded; no listing."""
    not_loaded = incomplete(module, task, dates)
    if not dates:
        return Shortfall()
    probe = probe_of(task_class(module, task), dates[0])
    name = probe.grain.describe
    stale = stale or {}
    kept = [d for d in stale if d not in not_loaded]
    now = probe.recorded(kept) if kept else {}
    left = [d for d in kept if d in now and now[d].load_id == stale[d][1]]
    absent = probe.absent_ready_keys([*not_loaded, *left]) if not_loaded or left else {}
    why = {name(d): f"{stale[d][0]}; not reloaded" + (f": {absent[d]}" if d in absent else "") for d in left}
    return Shortfall(tuple(name(d) for d in not_loaded), {name(d): absent[d] for d in not_loaded if d in absent},
                     why, unit=_unit(probe.grain))


def _unit(grain: Grain) -> str:
    """What the messages call a partition of ``grain``: date, hour, month."""
    return "date" if grain.unit == "day" else grain.unit


def _checks_failed(exc: Exception) -> int:
    code = luigi.retcodes.retcode().scheduling_error or STILL_MISSING
    print(f"luigi-pipelines backfill: checking which dates are loaded failed ({one_line(str(exc))}): exit {code}",
          file=sys.stderr)
    return code


def _database_answers() -> Exception | None:
    """Why PostgreSQL cannot be reached (None when it can): asked before luigi runs, whose own check would fail
    with a traceback per task."""
    try:
        with db.connect(database_settings()):
            return None
    except psycopg2.OperationalError as exc:
        return exc


def checked_task(module: str, task: str) -> Any:
    """The task class a backfill runs (any grain), refused in one line (``ConfigurationError``) when it is not a
    partition task."""
    return task_class(module, task)


def main_processes(args: argparse.Namespace, win: Window, task_limit: int, grain: Grain = DAILY) -> int:
    """``backfill --processes N``: plan the shards with one ``bulk_complete`` query, run them, judge the result."""
    try:
        stale = check_stale(args, win, grain)
    except Exception as exc:  # the database or S3 cannot say what is stale
        return _checks_failed(exc)
    whole = luigi_command(args.module, args.task, win, Scheduler(local=True), 1, task_limit, args.reverse,
                          args.luigi_args, reload_changed=args.reload_changed, stale=known(stale, grain), grain=grain)
    unit = _unit(grain)
    print(f"backfill [{win.start}, {win.stop}) at {win.now:%Y-%m-%dT%H:%M:%SZ} on {args.processes} processes, "
          f"the {unit}s to load cut into runs of consecutive {unit}s: luigi {shlex.join(whole[3:])}",
          file=sys.stderr, flush=True)
    if args.dry_run:
        return 0
    try:
        todo = scheduled_dates(whole)  # luigi's own choice for the whole window: the dates not loaded yet
    except Exception as exc:  # the database cannot say what to load
        return _checks_failed(exc)
    processes = args.processes
    merged = task_class(args.module, args.task)
    if processes > 1 and (merged.merged or merged.merge_key):
        # Merges apply in date order, and N local schedulers do not know of each other's dates: a later run would
        # merge its first date while an earlier one is still at its own, whose later dates are then refused.
        print(f"{args.task} merges its dates in order: one process, not {processes}", file=sys.stderr, flush=True)
        processes = 1
    wanted = win.values(grain) if args.task_limit is None else todo
    planned = shard_commands(args.module, args.task, win, todo, processes, args.reverse, args.luigi_args,
                             args.reload_changed, known(stale, grain), grain)
    print(f"to load: {format_dates(todo, grain=grain)}", file=sys.stderr, flush=True)
    for shard in planned:
        print(f"{shard.label} {len(shard.dates)} {unit}s, {grain.describe(shard.dates[0])} to "
              f"{grain.describe(shard.dates[-1])}: "
              f"luigi {shlex.join(shard.cmd[3:])}", file=sys.stderr, flush=True)
    codes = run_shards(planned)
    for shard, code in zip(planned, codes, strict=True):
        print(f"{shard.label} exited {code}", file=sys.stderr, flush=True)
    code = combined_code(codes, cooperation_codes(luigi.retcodes.retcode()))
    return _verdict(args, code, wanted,
                    f"the {len(planned)} luigi processes (the highest code)" if len(planned) > 1 else "luigi", stale,
                    grain)


def check_stale(args: argparse.Namespace, win: Window, grain: Grain = DAILY) -> Stale | None:
    """With ``--reload-changed`` (and not ``--dry-run``), the window's loaded partitions found stale, said on
    stderr: the run's one stale check. Otherwise None: nothing is checked."""
    if not args.reload_changed or args.dry_run:
        return None
    stale = stale_before(args.module, args.task, win.values(grain))
    named = {grain.describe(d): change for d, (change, _) in stale.items()}
    print(f"stale (loaded, sources changed since; reloaded by this run): {listed(sorted(named), named)}",
          file=sys.stderr, flush=True)
    return stale


def known(stale: Stale | None, grain: Grain = DAILY) -> dict[str, str | None] | None:
    """``check_stale``'s answer as luigi's ``stale_known`` takes it: each partition, by its command-line value
    (``2019-02-01T13``), with its load id (None: not checked)."""
    return None if stale is None else {grain.describe(d): load_id for d, (_, load_id) in stale.items()}


def _verdict(args: argparse.Namespace, code: int, wanted: Sequence[Any], who: str = "luigi",
             stale: Stale | None = None, grain: Grain = DAILY, unknown: Sequence[Any] | None = None) -> int:
    """The backfill's exit code for ``code`` (``judge``d unless ``--raw-exit-code``), saying why when it differs.
    ``unknown``: those of ``wanted`` still to ask the database about (default all; the others were found loaded)."""
    if args.raw_exit_code:
        print(f"luigi-pipelines backfill: {who} exited {code} (--raw-exit-code: not checked): exit {code}",
              file=sys.stderr)
        return code
    code, why = judge(code, cooperation_codes(luigi.retcodes.retcode()),
                      lambda: shortfall(args.module, args.task, wanted if unknown is None else unknown, stale), who)
    if code == luigi.retcodes.retcode().task_failed:
        from .status import check_failed_verdict  # status builds on this module
        code, why = check_failed_verdict(args.module, args.task, code, why, wanted, grain)
    if not why:  # the verdict of a success too: one line that cron's log ends with
        done = f"every {_unit(grain)} asked for is loaded, {format_dates(wanted, 2, grain)}"
        why = f"{done}: exit {code}" if not code else f"{who} exited {code}; {done}: exit {code}"
    print(f"luigi-pipelines backfill: {why}", file=sys.stderr)
    return code


def add_arguments(parser: argparse.ArgumentParser) -> None:
    when = parser.add_argument_group("window (whole days in UTC; stop is exclusive and at most today)")
    when.add_argument("--days-back", type=int, help="the N days before today: N=7 loads yesterday and the 6 days before")
    when.add_argument("--start", type=datetime.date.fromisoformat, help="first date (instead of --days-back)")
    when.add_argument("--stop", type=datetime.date.fromisoformat, help="date after the last one (default: today, UTC)")
    when.add_argument("--now", type=parse_now, help="the clock: epoch seconds or ISO time (default: the real clock)")
    parser.add_argument("--module", default="luigi_pipelines.pipelines.transactions", help="pipeline module")
    parser.add_argument("--task", default="LoadTransactions", help="load task class in the module")
    parser.add_argument("--workers", type=int, default=1, help="parallel tasks in this process (default 1)")
    parser.add_argument("--processes", type=int, metavar="N",
                        help="no luigid: the dates still to load, cut into N runs of consecutive dates, each run "
                        "a luigi process of its own (local scheduler, 1 worker, no fork per task)")
    parser.add_argument("--task-limit", type=int,
                        help="schedule at most this many missing dates, oldest first (default: the whole window)")
    parser.add_argument("--reverse", action="store_true", help="newest dates first (with --task-limit: the newest)")
    parser.add_argument("--reload-changed", action="store_true",
                        help="also reload loaded dates whose sources changed since (S3 objects added, removed or "
                        "replaced; an upstream reloaded): one S3 listing per loaded date")
    where = parser.add_argument_group("scheduler (default: luigid from [core] scheduler_host/port)")
    where.add_argument("--local-scheduler", action="store_true", help="no luigid: this process schedules alone")
    where.add_argument("--scheduler-host", help="luigid host")
    where.add_argument("--scheduler-port", type=int, help="luigid port")
    where.add_argument("--wave-size", type=int, default=DEFAULT_WAVE_SIZE, metavar="N",
                       help=f"with luigid: hand it at most N partitions still to load at a time, the next wave as the "
                       f"last one drains (default {DEFAULT_WAVE_SIZE}; 0: the whole window in one luigi command)")
    where.add_argument("--next-wave-at", type=int, metavar="N",
                       help="with luigid: start the next wave once N or fewer partitions of the running ones are left "
                       "to load (default: a quarter of --wave-size)")
    where.add_argument("--block-hours", type=int, default=1, metavar="N",
                       help="with luigid, an hourly task in waves: one luigi task per N hours of a UTC day (N divides "
                       "24), each hour still in its own transaction: N times fewer tasks and RPCs (default 1)")
    where.add_argument("--block-days", type=int, default=1, metavar="N",
                       help="with luigid, a daily task in waves: one luigi task per N days (7: Monday to Sunday), each "
                       "day still in its own transaction: N times fewer tasks and RPCs (default 1)")
    where.add_argument("--idle-timeout", type=int, default=DEFAULT_IDLE_S, metavar="SECONDS",
                       help=f"with luigid: leave after this long without work of our own (default {DEFAULT_IDLE_S})")
    parser.add_argument("--raw-exit-code", action="store_true", help="return luigi's exit code unchanged")
    parser.add_argument("--dry-run", action="store_true", help="print the luigi command and exit")
    parser.add_argument("luigi_args", nargs="*", help="after --: more luigi arguments, passed through")


def processes_conflict(args: argparse.Namespace) -> str:
    """Why ``--processes`` cannot go with the other options given ("" when it can)."""
    if args.processes < 1:
        return "--processes must be at least 1"
    if args.scheduler_host or args.scheduler_port:
        return "--processes runs its own local schedulers: leave out --scheduler-host/--scheduler-port"
    if args.workers != 1:
        return "--processes runs each process with 1 worker: leave out --workers (or use luigid's workers)"
    return ""


def main(args: argparse.Namespace) -> int:
    now = args.now or datetime.datetime.now(UTC)
    try:
        win = window(now, args.days_back, args.start, args.stop)
    except ValueError as exc:
        print(f"luigi-pipelines backfill: {exc}", file=sys.stderr)
        return 2
    scheduler = Scheduler(args.local_scheduler, args.scheduler_host, args.scheduler_port, args.idle_timeout)
    grain = checked_task(args.module, args.task).grain
    if not win.values(grain):
        print(f"luigi-pipelines backfill: the window [{win.start}, {win.stop}) covers no {grain.unit} that is over "
              f"before today ({win.today} UTC): --task {args.task} is {grain.name}", file=sys.stderr)
        return 2
    unreachable = None if args.dry_run else _database_answers()
    if unreachable is not None:
        return _checks_failed(unreachable)
    # luigi's own task_limit (50 without a [RangeDaily] section) would quietly cut the window: give it explicitly.
    task_limit = len(win.values(grain)) if args.task_limit is None else args.task_limit
    if args.processes is not None:
        wrong = processes_conflict(args)
        if wrong:
            print(f"luigi-pipelines backfill: {wrong}", file=sys.stderr)
            return 2
        return main_processes(args, win, task_limit, grain)
    try:
        stale = check_stale(args, win, grain)
    except Exception as exc:  # the database or S3 cannot say what is stale
        return _checks_failed(exc)
    if not scheduler.local and args.wave_size > 0:
        return main_waves(args, win, scheduler, task_limit, grain, stale)
    cmd = luigi_command(args.module, args.task, win, scheduler, args.workers, task_limit, args.reverse,
                        args.luigi_args, reload_changed=args.reload_changed, stale=known(stale, grain), grain=grain)
    print(f"backfill [{win.start}, {win.stop}) at {win.now:%Y-%m-%dT%H:%M:%SZ}: luigi {shlex.join(cmd[3:])}",
          file=sys.stderr, flush=True)
    if args.dry_run:
        return 0
    wanted = win.values(grain) if args.task_limit is None else scheduled_dates(cmd)
    code = run_one(cmd)
    return _verdict(args, code, wanted, stale=stale, grain=grain)


def loaded_values(module: str, task: str, values: Sequence[Any]) -> set[Any]:
    """Those of ``values`` (partition values) that have a marker: one query, nothing asked of S3 (a wave's check)."""
    if not values:
        return set()
    probe = probe_of(task_class(module, task), values[0])
    with probe.reading_config_once():
        wanted = probe.partitions_of(values)
        with db.session(probe.database(), reset=False) as conn:
            done = db.completed_partitions(conn, probe.marker_table, wanted)
    return {v for v, partition in zip(values, wanted, strict=True) if partition in done}


def main_waves(args: argparse.Namespace, win: Window, scheduler: Scheduler, task_limit: int, grain: Grain,
               stale: Stale | None) -> int:
    """``backfill`` against luigid in waves of ``--wave-size`` partitions still to load (``waves``); the verdict is
    judged over every partition asked for, asking the database only about those no wave's check found loaded."""
    whole = luigi_command(args.module, args.task, win, scheduler, args.workers, task_limit, args.reverse,
                          args.luigi_args, reload_changed=args.reload_changed, stale=known(stale, grain), grain=grain)
    next_at = args.wave_size // 4 if args.next_wave_at is None else args.next_wave_at
    if blocks.wrong_lengths(args.block_hours, args.block_days, grain):
        print(f"luigi-pipelines backfill: {blocks.wrong_lengths(args.block_hours, args.block_days, grain)}",
              file=sys.stderr)
        return 2
    merges = task_class(args.module, args.task)
    if merges.merged or merges.merge_key:  # merges apply in order: a wave's may not start before the last one's end
        next_at = 0
    print(f"backfill [{win.start}, {win.stop}) at {win.now:%Y-%m-%dT%H:%M:%SZ} in waves of at most {args.wave_size} "
          f"{_unit(grain)}s to load, the next one started when {next_at} are left, each wave this command over its "
          f"own --start/--stop: luigi {shlex.join(whole[3:])}", file=sys.stderr, flush=True)
    if args.dry_run:
        return 0
    try:
        wanted = win.values(grain) if args.task_limit is None else scheduled_dates(whole)
    except Exception as exc:  # the database cannot say what to load
        return _checks_failed(exc)

    def command(wave: Wave) -> list[str]:
        cmd = luigi_command(args.module, args.task, win, scheduler, args.workers, len(wave.values), args.reverse,
                            args.luigi_args, reload_changed=args.reload_changed, stale=known(stale, grain),
                            grain=grain, bounds=(wave.values[0], grain.after(wave.values[-1])))
        return blocks.wave_command(cmd, grain, args.block_hours, args.block_days, (win.start, win.stop))

    codes = luigi.retcodes.retcode()
    runner = WaveRunner(command, functools.partial(loaded_values, args.module, args.task), grain, next_at,
                        halting={codes.scheduling_error, codes.unhandled_exception} - {0})
    try:
        done = runner.run(wanted, args.wave_size, forced=stale or {}, reverse=args.reverse)
    except Exception as exc:  # a wave's check could not ask the database (the waves started were ended)
        return _checks_failed(exc)
    code = combined_code(done.codes, cooperation_codes(codes))
    who = f"the {done.waves} waves' luigi processes (the highest code)" if done.waves > 1 else "luigi"
    who = who if done.waves else "no luigi process (nothing to load)"
    unknown = [v for v in wanted if v not in done.confirmed]
    return _verdict(args, code, wanted, who, stale, grain, unknown)
