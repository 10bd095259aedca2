"""The ``luigi-pipelines backfill`` command: luigi's own ``RangeDaily`` command line for a window of whole UTC days.

It adds three things to the raw ``luigi --module M RangeDaily --of T ...`` that it runs:

- a window rule: ``--days-back N`` means the N whole days before today in UTC (the newest is
  yesterday, UTC), and the clock is read once and handed to luigi as ``--now``;
- with a central scheduler, the worker flags that let several workers share a backfill
  (``--worker-keep-alive`` with an idle limit, so a worker waits while others still load);
- an exit code that means what cron needs: 0 only when, after the run, one query (the task class's
  ``bulk_complete``) finds every date the run was asked for loaded, whatever luigi returned. luigi's
  own non-zero code is kept, except that the two codes luigi gives a worker merely because *other*
  workers ran some of its tasks (``[retcode] already_running`` and ``not_run``) become 0 when every
  date is loaded; when luigi says 0 but dates are missing, the code is ``STILL_MISSING`` (21).

The dates asked for are the whole window (the task limit handed to luigi is the window's length),
or with ``--task-limit N`` the dates luigi's own ``RangeDaily`` picks for the same command line.

With ``--processes N`` there is no luigid and no fork per task: one ``bulk_complete`` query finds the
dates still to load, they are cut into N runs of consecutive dates (each date in exactly one), and
each run is its own ``luigi ... RangeDaily --local-scheduler --workers 1`` child process, its output
prefixed ``[i/N]``. The exit code is judged as above, over every date asked for, once all have ended.
"""
from __future__ import annotations

import argparse
import ctypes
import datetime
import functools
import importlib
import json
import os
import selectors
import shlex
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import IO, Any

import luigi.cmdline_parser
import luigi.retcodes
import psycopg2
from luigi.tools.range import RangeDaily  # noqa: F401 - registered, so the command line below can be parsed here

from . import (
    db,
    defaults,  # noqa: F401 - [retcode] as the luigi process sees it, from any directory
)
from .config import database_settings
from .errors import ConfigurationError
from .partitions import date_range
from .reporting import one_line
from .states import Shortfall, listed
from .tasks import PartitionTask

UTC = datetime.timezone.utc
DEFAULT_IDLE_S = 300
# Exit code of a run after which dates it was asked for are still not loaded although luigi exited 0
# (or the check could not be made). Distinct from every code of luigi's [retcode].
STILL_MISSING = 21


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
        return date_range(self.start, self.stop)


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


def range_daily_args(
    module: str,
    task: str,
    start: datetime.date,
    stop: datetime.date,
    *,
    now: datetime.datetime | None = None,
    days_back: int | None = None,
    workers: int | None = None,
    task_limit: int | None = None,
    reverse: bool = False,
    local_scheduler: bool = False,
    of_params: dict[str, Any] | None = None,
) -> list[str]:
    """luigi's arguments (what follows ``luigi`` or ``python -m luigi``) for ``RangeDaily`` of ``module.task``
    over the dates ``[start, stop)``; an option left at None is left to luigi and its config::

        --module M RangeDaily --of T --start 2019-02-01 --stop 2019-03-01 [--of-params JSON] [--now EPOCH]
            [--days-back N] [--workers N] [--task-limit N] [--reverse] [--local-scheduler]
    """
    args = ["--module", module, "RangeDaily", "--of", task, "--start", start.isoformat(), "--stop", stop.isoformat()]
    if of_params:  # parameters of every task of the range, and of the probe its bulk_complete builds
        args += ["--of-params", json.dumps(of_params, sort_keys=True)]
    for option, value in (("--now", int(now.timestamp()) if now else None), ("--days-back", days_back),
                          ("--workers", workers), ("--task-limit", task_limit)):
        if value is not None:
            args += [option, str(value)]
    if reverse:
        args.append("--reverse")
    if local_scheduler:
        args.append("--local-scheduler")
    return args


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
    stale: Mapping[datetime.date, str | None] | None = None,
) -> list[str]:
    """The real luigi command line of a backfill; in the ``reload_changed`` mode with the dates ``stale`` that the
    backfill's own check found (``stale_known``: luigi's checks then list nothing again)."""
    cmd = [python, "-m", "luigi", *range_daily_args(
        module, task, win.start, win.stop, now=win.now,
        # RangeDaily also drops dates more than its days_back before now: cover the window, whatever the config says.
        days_back=(win.today - win.start).days + 1,
        workers=workers, task_limit=task_limit, reverse=reverse, local_scheduler=scheduler.local,
        of_params=mode_params(reload_changed, stale),
    ), "--param-name", "date"]  # named: luigi's default (None, "the first parameter") warns on every run
    if not scheduler.local:
        if scheduler.host:
            cmd += ["--scheduler-host", scheduler.host]
        if scheduler.port:
            cmd += ["--scheduler-port", str(scheduler.port)]
        # Stay while tasks we scheduled are pending elsewhere (a killed worker's task comes back after
        # luigid's worker_disconnect_delay + retry_delay), but not forever (data that never arrives).
        cmd += ["--worker-keep-alive", "--worker-max-keep-alive-idle-duration", f"{scheduler.idle_s} seconds"]
    return cmd + list(extra)


def mode_params(reload_changed: bool, stale: Mapping[datetime.date, str | None] | None) -> dict[str, Any] | None:
    """The ``--of-params`` of the ``reload_changed`` mode, with what a check made already found stale."""
    if not reload_changed:
        return None
    known = {} if stale is None else {"stale_known": {d.isoformat(): load_id for d, load_id in stale.items()}}
    return {"reload_changed": True, **known}


def scheduled_dates(cmd: Sequence[str]) -> list[datetime.date]:
    """The dates luigi's own ``RangeDaily`` requires for the luigi command line ``cmd``, as the run will see them.

    The arguments from ``--module`` on are parsed by luigi's own command-line parser and the ``RangeDaily``
    task it builds is asked for its ``requires()``: its task limit, direction, ``days_back`` and config apply
    exactly as in the run (one ``bulk_complete`` query), instead of a copy of its slicing here.
    """
    with luigi.cmdline_parser.CmdlineParser.global_instance(list(cmd[cmd.index("--module"):])) as parsed:
        return sorted(task.date for task in parsed.get_task_obj().requires())


def cooperation_codes(codes: Any) -> set[int]:
    """The exit codes luigi gives a worker because other workers ran tasks it had scheduled.

    Codes shared with a real failure (missing data, a failed task, a scheduling error) never count.
    """
    failures = {codes.missing_data, codes.task_failed, codes.scheduling_error, codes.unhandled_exception}
    return {codes.already_running, codes.not_run} - failures - {0}


def format_dates(dates: Sequence[datetime.date], shown: int = 10) -> str:
    """``"3 (2019-01-01, 2019-01-02, 2019-01-05)"``: how many, and the first ``shown`` of them."""
    return listed(dates, {}, shown)


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


def incomplete(module: str, task: str, dates: Sequence[datetime.date], reload_changed: bool = False
               ) -> list[datetime.date]:
    """Those of ``dates`` whose partition is not loaded: the task class's ``bulk_complete``, one query. With
    ``reload_changed``, also those whose sources changed since they were loaded (as ``RangeDaily`` asks it)."""
    if not dates:
        return []
    cls = task_class(module, task)
    if reload_changed:
        done = set(cls.bulk_complete.__func__(functools.partial(cls, reload_changed=True), list(dates)))
    else:
        done = set(cls.bulk_complete(list(dates)))
    return [d for d in dates if d not in done]


# A loaded date found stale before a run: how its sources changed, and the load id of the load it would replace.
Stale = dict[datetime.date, tuple[str, str | None]]


def stale_before(module: str, task: str, dates: Sequence[datetime.date]) -> Stale:
    """Those of ``dates`` loaded whose sources changed since: the stale check of the ``reload_changed`` mode,
    made once per run here (one S3 listing per loaded date) and handed to luigi as ``stale_known``."""
    not_loaded = set(incomplete(module, task, dates))
    loaded = [d for d in dates if d not in not_loaded]
    if not loaded:
        return {}
    probe = task_class(module, task)(date=loaded[0], reload_changed=True)
    changes = probe.stale_changes(loaded)
    recorded = probe.recorded(sorted(changes)) if changes else {}
    return {d: (changes[d], recorded[d].load_id if d in recorded else None) for d in sorted(changes)}


def shortfall(module: str, task: str, dates: Sequence[datetime.date], stale: Stale | None = None) -> Shortfall:
    """What is not done of ``dates`` after a run: those not loaded (naming the ready key a date waits for) and
    of the dates ``stale`` found stale before it, those whose load no reload replaced (same load id). One marker
    query, one more for those stale dates, and a HEAD per ready key of a date not loaded; no listing."""
    not_loaded = incomplete(module, task, dates)
    if not dates:
        return Shortfall()
    probe = task_class(module, task)(date=dates[0])
    stale = stale or {}
    kept = [d for d in stale if d not in not_loaded]
    now = probe.recorded(kept) if kept else {}
    left = [d for d in kept if d in now and now[d].load_id == stale[d][1]]
    absent = probe.absent_ready_keys([*not_loaded, *left]) if not_loaded or left else {}
    why = {d: f"{stale[d][0]}; not reloaded" + (f": {absent[d]}" if d in absent else "") for d in left}
    return Shortfall(tuple(not_loaded), {d: absent[d] for d in not_loaded if d in absent}, why)


FORWARDED_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


@contextmanager
def _forwarding_signals(procs: Sequence[subprocess.Popen]) -> Iterator[None]:
    """While the block runs, SIGINT/SIGTERM/SIGHUP received here are sent on to each of ``procs`` still running."""
    def forward(sig: int, _frame: Any) -> None:
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(sig)

    previous = {sig: signal.signal(sig, forward) for sig in FORWARDED_SIGNALS}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _exit_code(proc: subprocess.Popen) -> int:
    """``proc``'s exit code, 128 + the signal's number for a child killed by a signal (as a shell says it)."""
    code = proc.wait()
    return 128 - code if code < 0 else code


def _run(cmd: Sequence[str]) -> int:
    """Run ``cmd``, passing SIGINT/SIGTERM/SIGHUP on to it; a child killed by a signal gives 128 + its number."""
    proc = subprocess.Popen(cmd)
    with _forwarding_signals([proc]):
        return _exit_code(proc)


# -- --processes N: the window's missing dates shared by N local-scheduler processes -----------------------

def shards(dates: Sequence[datetime.date], processes: int) -> list[list[datetime.date]]:
    """``dates`` (sorted) cut into at most ``processes`` runs of consecutive elements, as even as can be.

    Each date is in exactly one run, and each run can be a ``RangeDaily`` of its own (from its first date to
    the day after its last): between two of a run's dates lies no date of another run. Only the dates still
    to load are cut, so dates loaded earlier (say the first half of the window) leave no process idle.
    """
    count = min(processes, len(dates))
    size, larger = divmod(len(dates), count) if count else (0, 0)
    runs, at = [], 0
    for n in range(count):
        end = at + size + (1 if n < larger else 0)
        runs.append(list(dates[at:end]))
        at = end
    return runs


@dataclass(frozen=True)
class Shard:
    """One process of a ``--processes`` backfill: its label in the output and its luigi command."""

    label: str
    dates: tuple[datetime.date, ...]
    cmd: tuple[str, ...]


def shard_commands(module: str, task: str, win: Window, todo: Sequence[datetime.date], processes: int,
                   reverse: bool = False, extra: Sequence[str] = (), reload_changed: bool = False,
                   stale: Mapping[datetime.date, str | None] | None = None) -> list[Shard]:
    """The luigi command of each shard of ``todo``: ``RangeDaily`` over the shard's own dates, with a local
    scheduler and one worker, which runs its tasks in its own process (luigi forks per task only with more)."""
    runs = shards(todo, processes)
    found = []
    for n, dates in enumerate(runs, 1):
        own = Window(dates[0], dates[-1] + datetime.timedelta(days=1), win.now)
        cmd = luigi_command(module, task, own, Scheduler(local=True), 1, len(dates), reverse, extra,
                            reload_changed=reload_changed, stale=stale)
        found.append(Shard(f"[{n}/{len(runs)}]", tuple(dates), tuple(cmd)))
    return found


class _PrefixedLines:
    """A child's output, chunk by chunk, written to ``stream`` as whole lines prefixed with ``label``."""

    def __init__(self, stream: IO[str], label: str) -> None:
        self.stream, self.label, self.held = stream, label, b""

    def feed(self, chunk: bytes) -> None:
        *lines, self.held = (self.held + chunk).split(b"\n")
        self._write(lines)

    def close(self) -> None:
        """The child's output ended: write what is left of its last line."""
        self._write([self.held] if self.held else [])
        self.held = b""

    def _write(self, lines: Sequence[bytes]) -> None:
        for line in lines:
            self.stream.write(f"{self.label} {line.decode(errors='replace')}\n")
        self.stream.flush()


def _start(shard: Shard) -> subprocess.Popen:
    # A session of its own: a terminal's Ctrl-C reaches the child once, forwarded from here, not twice.
    return subprocess.Popen(shard.cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True, preexec_fn=_ending_with(os.getpid()))


def _ending_with(parent: int) -> Callable[[], None] | None:
    """On Linux, what makes a shard's process get SIGTERM when the backfill dies, also by SIGKILL (which nothing
    can forward): ``prctl(PR_SET_PDEATHSIG)``, set in the child before it runs luigi. Elsewhere, None: a shard
    outliving its backfill finishes its own dates, each in its own transaction, and exits."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None

    def end_with_parent() -> None:
        prctl(1, signal.SIGTERM)  # 1: PR_SET_PDEATHSIG
        if os.getppid() != parent:  # the backfill died before the line above
            os.kill(os.getpid(), signal.SIGTERM)
    return end_with_parent


def _relay(selector: selectors.BaseSelector) -> None:
    """Copy every registered child's output to its writer until all of them have closed it."""
    while selector.get_map():
        for key, _ in selector.select():
            chunk = os.read(key.fd, 1 << 16)
            if chunk:
                key.data.feed(chunk)
                continue
            key.data.close()
            selector.unregister(key.fileobj)
            key.fileobj.close()  # type: ignore[union-attr]


def run_shards(planned: Sequence[Shard], stream: IO[str] = sys.stderr) -> list[int]:
    """Run every shard's command at once and return their exit codes (128 + N for one killed by signal N).

    Each child's output (stdout and stderr) goes to ``stream`` line by line, prefixed with its label.
    SIGINT, SIGTERM and SIGHUP received here are sent on to every child still running; the children
    end, and their exit codes are returned as usual. Should this process fail itself, it kills them.
    """
    procs: list[subprocess.Popen] = []
    with selectors.DefaultSelector() as selector, _forwarding_signals(procs):
        try:
            for shard in planned:
                procs.append(_start(shard))
                selector.register(procs[-1].stdout, selectors.EVENT_READ,  # type: ignore[arg-type]
                                  _PrefixedLines(stream, shard.label))
            _relay(selector)
        except BaseException:
            for proc in procs:
                proc.kill()
            raise
        return [_exit_code(proc) for proc in procs]


def combined_code(codes: Sequence[int], cooperation: set[int]) -> int:
    """One exit code for shards that ended with ``codes``: the highest failure, else the highest other code."""
    failures = [c for c in codes if c and c not in cooperation]
    return max(failures or [c for c in codes if c] or [0])


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


def checked_task(module: str, task: str, win: Window) -> Any:
    """The task class a backfill runs, refused in one line (``ConfigurationError``) when backfill cannot run it."""
    cls = task_class(module, task)
    if cls.grain.unit == "hour":
        raise ConfigurationError(
            f"--task {task} is hourly (grain = HOURLY) and backfill runs whole days (RangeDaily): load its "
            f"hours with luigi's RangeHourly, e.g. luigi --module {module} RangeHourly --of {task} --start "
            f"{win.start}T00 --stop {win.stop}T00 --local-scheduler (or backfill a daily task that requires "
            f"{task}.partitions_of_date(date))")
    if cls.grain.unit != "day":
        raise ConfigurationError(
            f"--task {task} is {cls.grain.name} and backfill runs whole days (RangeDaily): load it with luigi's "
            f"{cls.grain.range_task}, e.g. luigi --module {module} {cls.grain.range_task} --of {task} --start "
            f"{win.start:%Y-%m} --stop {win.stop:%Y-%m} --local-scheduler")
    return cls


def main_processes(args: argparse.Namespace, win: Window, task_limit: int) -> int:
    """``backfill --processes N``: plan the shards with one ``bulk_complete`` query, run them, judge the result."""
    try:
        stale = check_stale(args, win)
    except Exception as exc:  # the database or S3 cannot say what is stale
        return _checks_failed(exc)
    whole = luigi_command(args.module, args.task, win, Scheduler(local=True), 1, task_limit, args.reverse,
                          args.luigi_args, reload_changed=args.reload_changed, stale=known(stale))
    print(f"backfill [{win.start}, {win.stop}) at {win.now:%Y-%m-%dT%H:%M:%SZ} on {args.processes} processes, "
          f"the dates to load cut into runs of consecutive dates: luigi {shlex.join(whole[3:])}",
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
    wanted = win.dates() if args.task_limit is None else todo
    planned = shard_commands(args.module, args.task, win, todo, processes, args.reverse, args.luigi_args,
                             args.reload_changed, known(stale))
    print(f"to load: {format_dates(todo)}", file=sys.stderr, flush=True)
    for shard in planned:
        print(f"{shard.label} {len(shard.dates)} dates, {shard.dates[0]} to {shard.dates[-1]}: "
              f"luigi {shlex.join(shard.cmd[3:])}", file=sys.stderr, flush=True)
    codes = run_shards(planned)
    for shard, code in zip(planned, codes, strict=True):
        print(f"{shard.label} exited {code}", file=sys.stderr, flush=True)
    code = combined_code(codes, cooperation_codes(luigi.retcodes.retcode()))
    return _verdict(args, code, wanted,
                    f"the {len(planned)} luigi processes (the highest code)" if len(planned) > 1 else "luigi", stale)


def check_stale(args: argparse.Namespace, win: Window) -> Stale | None:
    """With ``--reload-changed`` (and not ``--dry-run``), the window's loaded dates found stale, said on stderr:
    the run's one stale check. Otherwise None: nothing is checked."""
    if not args.reload_changed or args.dry_run:
        return None
    stale = stale_before(args.module, args.task, win.dates())
    print(f"stale (loaded, sources changed since; reloaded by this run): "
          f"{listed(sorted(stale), {d: change for d, (change, _) in stale.items()})}", file=sys.stderr, flush=True)
    return stale


def known(stale: Stale | None) -> dict[datetime.date, str | None] | None:
    """``check_stale``'s answer as luigi's ``stale_known`` takes it: each date's load id (None: not checked)."""
    return None if stale is None else {d: load_id for d, (_, load_id) in stale.items()}


def _verdict(args: argparse.Namespace, code: int, wanted: Sequence[datetime.date], who: str = "luigi",
             stale: Stale | None = None) -> int:
    """The backfill's exit code for ``code`` (``judge``d unless ``--raw-exit-code``), saying why when it differs."""
    if args.raw_exit_code:
        print(f"luigi-pipelines backfill: {who} exited {code} (--raw-exit-code: not checked): exit {code}",
              file=sys.stderr)
        return code
    code, why = judge(code, cooperation_codes(luigi.retcodes.retcode()),
                      lambda: shortfall(args.module, args.task, wanted, stale), who)
    if not why:  # the verdict of a success too: one line that cron's log ends with
        why = f"every date asked for is loaded, {format_dates(wanted, shown=2)}: exit {code}" if not code else \
            f"{who} exited {code}; every date asked for is loaded, {format_dates(wanted, shown=2)}: exit {code}"
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
    checked_task(args.module, args.task, win)
    unreachable = None if args.dry_run else _database_answers()
    if unreachable is not None:
        return _checks_failed(unreachable)
    # luigi's own task_limit (50 without a [RangeDaily] section) would quietly cut the window: give it explicitly.
    task_limit = len(win.dates()) if args.task_limit is None else args.task_limit
    if args.processes is not None:
        wrong = processes_conflict(args)
        if wrong:
            print(f"luigi-pipelines backfill: {wrong}", file=sys.stderr)
            return 2
        return main_processes(args, win, task_limit)
    try:
        stale = check_stale(args, win)
    except Exception as exc:  # the database or S3 cannot say what is stale
        return _checks_failed(exc)
    cmd = luigi_command(args.module, args.task, win, scheduler, args.workers, task_limit, args.reverse,
                        args.luigi_args, reload_changed=args.reload_changed, stale=known(stale))
    print(f"backfill [{win.start}, {win.stop}) at {win.now:%Y-%m-%dT%H:%M:%SZ}: luigi {shlex.join(cmd[3:])}",
          file=sys.stderr, flush=True)
    if args.dry_run:
        return 0
    wanted = win.dates() if args.task_limit is None else scheduled_dates(cmd)
    code = _run(cmd)
    return _verdict(args, code, wanted, stale=stale)
