"""Section ``scale``: years of hourly partitions under one luigid, with partitions so small that scheduling dominates.

- ``backfill`` in waves: ``--scale-partitions`` hours (100,000 by default: 11.4 years) of ``bench.pipeline.TinyHourly``
  (an empty S3 prefix per hour: one LIST, 0 rows, a marker) by two ``luigi-pipelines backfill`` processes of one
  worker each (two hosts' worth) against one luigid started from ``configs/luigid.cfg``, with ``--block-hours`` each
  of ``--scale-block-hours`` (24 by default: a luigi task per day of hours; ``1,24``: both, side by side). Sampled
  every half second: luigid's RSS and the partitions loaded (marker rows), so luigid's memory is known at 10 %, 30 %
  and 100 % of the range. A wave's scheduling time is from its start line to its luigi process's ``Done scheduling tasks``.
- the same range again: a no-op (one marker query per wave, no luigi process).
- what a user would otherwise run: one plain ``luigi ... RangeHourly`` of the same range with ``--workers 2``, against
  a fresh luigid, stopped after ``--scale-plain-timeout`` seconds; how far it got (tasks handed to luigid, partitions
  loaded) and luigid's memory by then.
"""
from __future__ import annotations

import configparser
import contextlib
import datetime
import math
import os
import re
import subprocess
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from psycopg2 import sql

from luigi_pipelines import sql as q
from luigi_pipelines.devstack.local import Luigid, kill_process_group
from luigi_pipelines.grains import HOURLY
from luigi_pipelines.partitions import TableName
from luigi_pipelines.ranges import range_args

from ..context import Bench
from ..measure import MB, BenchError
from ..report import Section, SectionResult, Table, Target
from ..stack import MARKER, ROOT, SCHEMA

START = datetime.date(2001, 1, 1)
TASK = "TinyHourly"
_WAVE_START = re.compile(r"luigi-pipelines backfill: \[wave (\d+)\] (\d+) hours to load")
_WAVE_SCHEDULED = re.compile(r"^\[wave (\d+)\] INFO: Done scheduling tasks")
_HANDED = "has status   PENDING"  # luigi's line per task it hands to luigid


@dataclass
class Sample:
    at_s: float
    luigid_rss_kib: int
    loaded: int


@dataclass
class Run:
    """One measured run: wall time, luigid's memory over it, and what the processes said of their waves."""

    partitions: int
    wall_s: float = 0.0
    loaded: int = 0
    samples: list[Sample] = field(default_factory=list)
    luigid_peak_kib: int = 0
    waves: int = 0
    scheduling_s: list[float] = field(default_factory=list)  # per backfill process: sum of its waves' scheduling
    handed: int = 0  # tasks a plain RangeHourly handed to luigid
    block_hours: int = 1  # backfill --block-hours of the waves
    loadavg: tuple[float, ...] = ()  # at the end of the run
    codes: list[int | None] = field(default_factory=list)

    def rss_at(self, share: float) -> float | None:
        """luigid's RSS (MB) when ``share`` of the partitions were loaded (None: never got there)."""
        for s in self.samples:
            if s.loaded >= share * self.partitions:
                return s.luigid_rss_kib * 1024 / MB
        return None


class _Output:
    """A child's stderr, read line by line: written to ``log``, its waves' start and scheduling-done times kept."""

    def __init__(self, proc: subprocess.Popen, log: Path) -> None:
        self.started: dict[int, float] = {}
        self.scheduled: dict[int, float] = {}
        self.handed = 0
        self.thread = threading.Thread(target=self._read, args=(proc, log), daemon=True)
        self.thread.start()

    def _read(self, proc: subprocess.Popen, log: Path) -> None:
        assert proc.stderr is not None
        with open(log, "w") as out:
            for line in proc.stderr:
                text = line.decode(errors="replace")
                out.write(text)
                now = time.monotonic()
                if (m := _WAVE_START.search(text)) is not None:
                    self.started[int(m.group(1))] = now
                elif (m := _WAVE_SCHEDULED.search(text)) is not None:
                    self.scheduled[int(m.group(1))] = now
                elif _HANDED in text:
                    self.handed += 1

    def scheduling_s(self) -> float:
        return sum(self.scheduled[n] - self.started[n] for n in self.scheduled if n in self.started)


def _luigid(bench: Bench, name: str) -> Luigid:
    """A fresh luigid of ``configs/luigid.cfg``, with ``prune_on_get_work`` as ``--scale-prune-on-get-work`` says
    (pruning on every get_work walks every task luigid holds, finished ones too: see docs/scheduling.md)."""
    directory = bench.stack.work / name
    directory.mkdir()
    parser = configparser.ConfigParser(interpolation=None)
    parser.read(ROOT / "configs" / "luigid.cfg")
    if bench.options.scale_prune_on_get_work is not None:
        parser.set("scheduler", "prune_on_get_work", str(bench.options.scale_prune_on_get_work).lower())
    with open(directory / "luigid.cfg", "w") as f:
        parser.write(f)
    return Luigid(directory, directory / "luigid.cfg", env=bench.stack.env, cwd=directory)


def _prune_on_get_work(bench: Bench) -> bool:
    """What the scale section's luigid does: ``--scale-prune-on-get-work``, else the shipped file's setting."""
    if bench.options.scale_prune_on_get_work is not None:
        return bench.options.scale_prune_on_get_work
    parser = configparser.ConfigParser(interpolation=None)
    parser.read(ROOT / "configs" / "luigid.cfg")
    return parser.getboolean("scheduler", "prune_on_get_work")


def _config(bench: Bench, table: TableName) -> Path:
    bench.stack.forget_partitions(table)
    bench.stack.drop_table(table)
    return bench.stack.config_file(table.name, str(table))


def _loaded(bench: Bench, table: TableName) -> int:
    if not bench.stack.query("SELECT to_regclass(%s) IS NOT NULL", (str(MARKER),))[0][0]:
        return 0  # no load has created the marker table yet
    count = sql.SQL("SELECT count(*) FROM {} WHERE target_table LIKE %s").format(q.table_ident(MARKER))
    return int(bench.stack.query(count, (f"{table}/%",))[0][0])


@contextlib.contextmanager
def _sampling(bench: Bench, luigid: Luigid, table: TableName, run: Run) -> Iterator[None]:
    """Sample luigid's RSS and the partitions loaded every half second while the block runs."""
    stop, started = threading.Event(), time.monotonic()

    def sample() -> None:
        while not stop.wait(0.5):
            memory = luigid.memory_kib()
            run.samples.append(Sample(time.monotonic() - started, memory.get("VmRSS", 0), _loaded(bench, table)))
            run.luigid_peak_kib = max(run.luigid_peak_kib, memory.get("VmHWM", 0))

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def _window(partitions: int) -> tuple[list[str], int]:
    days = math.ceil(partitions / 24)
    stop = START + datetime.timedelta(days=days)
    return ["--start", START.isoformat(), "--stop", stop.isoformat(), "--now", f"{stop}T05:00:00Z"], days * 24


def _start(argv: Sequence[str], bench: Bench, config: Path) -> subprocess.Popen:
    return subprocess.Popen(argv, env={**bench.stack.env, "LUIGI_CONFIG_PATH": str(config)}, cwd=ROOT,
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            start_new_session=True)


def _backfill_argv(python: str, window: Sequence[str], luigid: Luigid, wave_size: int, block_hours: int = 1
                   ) -> list[str]:
    return [python, "-m", "luigi_pipelines.cli", "backfill", "--module", "bench.pipeline", "--task", TASK,
            *window, *luigid.scheduler_args, "--wave-size", str(wave_size), "--workers", "1",
            "--block-hours", str(block_hours)]


def _wait(procs: Sequence[subprocess.Popen], timeout_s: float) -> list[int | None]:
    """Each process's exit code; what is still running after ``timeout_s`` is killed (None)."""
    deadline = time.monotonic() + timeout_s
    codes: list[int | None] = []
    for proc in procs:
        try:
            codes.append(proc.wait(max(0.1, deadline - time.monotonic())))
        except subprocess.TimeoutExpired:
            kill_process_group(proc)
            codes.append(None)
    return codes


def _waves_table(block_hours: int) -> TableName:
    return TableName(SCHEMA, f"scale_waves_{block_hours}")


def waves_run(bench: Bench, block_hours: int, hosts: int = 2) -> Run:
    o = bench.options
    table = _waves_table(block_hours)
    config = _config(bench, table)
    window, partitions = _window(o.scale_partitions)
    run = Run(partitions, block_hours=block_hours)
    bench.log(f"scale: {partitions} hourly partitions by {hosts} backfill processes in waves of {o.scale_wave_size}, "
              f"blocks of {block_hours} hours")
    name = f"waves-{hosts}-{block_hours}"
    with _luigid(bench, f"luigid-{name}") as luigid, _sampling(bench, luigid, table, run):
        started = time.monotonic()
        argv = _backfill_argv(bench.stack.interpreter, window, luigid, o.scale_wave_size, block_hours)
        procs = [_start(argv, bench, config) for _ in range(hosts)]
        outputs = [_Output(p, bench.stack.work / f"scale-{name}-{n}.log") for n, p in enumerate(procs)]
        run.codes = _wait(procs, o.timeout_s)
        run.wall_s = time.monotonic() - started
        run.loadavg = os.getloadavg()
        for out in outputs:
            out.thread.join()
    run.loaded = _loaded(bench, table)
    run.waves = max((max(out.started, default=0) for out in outputs), default=0)
    run.scheduling_s = [out.scheduling_s() for out in outputs]
    if run.codes != [0] * hosts or run.loaded != partitions:
        tail = (bench.stack.work / f"scale-{name}-0.log").read_text()[-3000:]
        raise BenchError(f"waves backfill: exit codes {run.codes}, {run.loaded} of {partitions} loaded:\n{tail}")
    return run


def noop_run(bench: Bench, block_hours: int) -> float:
    """The waves' range again, all loaded: one backfill process, against a luigid it never needs."""
    o = bench.options
    config = bench.stack.config_file("scale_waves", str(_waves_table(block_hours)))
    window, _ = _window(o.scale_partitions)
    with _luigid(bench, "luigid-noop") as luigid:
        started = time.monotonic()
        proc = _start(_backfill_argv(bench.stack.interpreter, window, luigid, o.scale_wave_size, block_hours), bench, config)
        out = _Output(proc, bench.stack.work / "scale-noop.log")
        code = _wait([proc], o.timeout_s)[0]
        wall = time.monotonic() - started
        out.thread.join()
    if code != 0 or out.started:
        raise BenchError(f"the no-op backfill exited {code} after starting {len(out.started)} waves")
    return wall


def plain_run(bench: Bench) -> Run:
    """One ``luigi ... RangeHourly`` of the whole range with 2 workers, cut after ``scale_plain_timeout_s``."""
    o = bench.options
    table = TableName(SCHEMA, "scale_plain")
    config = _config(bench, table)
    _, partitions = _window(o.scale_partitions)
    first = datetime.datetime.combine(START, datetime.time())
    stop = first + datetime.timedelta(hours=partitions)
    now = datetime.datetime.combine(stop.date() + datetime.timedelta(days=1), datetime.time(5),
                                    tzinfo=datetime.timezone.utc)
    run = Run(partitions)
    bench.log(f"scale: one plain RangeHourly of {partitions} hours, 2 workers, for at most {o.scale_plain_timeout_s:g} s")
    with _luigid(bench, "luigid-plain") as luigid, _sampling(bench, luigid, table, run):
        argv = [bench.stack.interpreter, "-m", "luigi", *range_args(
            "bench.pipeline", TASK, first, stop, grain=HOURLY, now=now, back=partitions + 48, workers=2,
            task_limit=partitions), "--param-name", HOURLY.parameter, *luigid.scheduler_args]
        started = time.monotonic()
        proc = _start(argv, bench, config)
        out = _Output(proc, bench.stack.work / "scale-plain.log")
        run.codes = _wait([proc], o.scale_plain_timeout_s)
        run.wall_s = time.monotonic() - started
        run.loadavg = os.getloadavg()
        out.thread.join()
    run.loaded, run.handed = _loaded(bench, table), out.handed
    return run


def run(bench: Bench) -> SectionResult:
    runs = [waves_run(bench, hours) for hours in bench.options.scale_block_hours]
    waves = runs[-1]  # the targets are judged on the last
    noop_s = noop_run(bench, waves.block_hours)
    plain = plain_run(bench) if bench.options.scale_plain_timeout_s > 0 else None
    result = SectionResult("scale", data={"waves": [asdict(r) for r in runs], "noop_s": noop_s,
                                          "plain": asdict(plain) if plain else None,
                                          "wave_size": bench.options.scale_wave_size,
                                          "prune_on_get_work": _prune_on_get_work(bench),
                                          "loadavg": os.getloadavg()})
    o = bench.options
    result.tables = [scale_table(runs, plain, noop_s, o.scale_wave_size, _prune_on_get_work(bench))]
    result.targets = scale_targets(waves, noop_s)
    return result


def _ms(seconds: float, partitions: int) -> float:
    return 1000 * seconds / max(partitions, 1)


def scale_targets(waves: Run, noop_s: float) -> list[Target]:
    peak = waves.luigid_peak_kib * 1024 / MB
    scheduling = _ms(max(waves.scheduling_s, default=0.0), waves.partitions)
    n = f"{waves.partitions:,}"
    what = f"luigid peak RSS, {n} hourly partitions in waves, blocks of {waves.block_hours} h"
    return [Target(what, "< 500 MB", f"{peak:.0f} MB", peak < 500),
            Target("scheduling per partition, amortized", "<= 4 ms", f"{scheduling:.2f} ms", scheduling <= 4),
            Target(f"the same {n} partitions again (no-op)", "<= 10 s", f"{noop_s:.1f} s", noop_s <= 10)]


def scale_table(runs: Sequence[Run], plain: Run | None, noop_s: float, wave_size: int, prune: bool) -> Table:
    waves = runs[-1]
    table = Table(f"{waves.partitions:,} hourly partitions under one luigid (empty S3 prefixes: scheduling dominates)",
                  ["run", "seconds", "loaded", "ms per partition", "scheduling ms/partition", "luigid RSS at 10 %",
                   "at 30 %", "at 100 %", "luigid peak MB", "load average at the end"])
    named = [(f"backfill in waves, 2 x 1 worker, --block-hours {r.block_hours}", r) for r in runs]
    for name, r in [*named, ("plain RangeHourly, --workers 2", plain)]:
        if r is None:
            continue
        scheduling = _ms(max(r.scheduling_s, default=0.0), r.partitions) if r.scheduling_s else None
        table.rows.append([name, r.wall_s, r.loaded, _ms(r.wall_s, r.loaded), scheduling, r.rss_at(0.1),
                           r.rss_at(0.3), r.rss_at(1.0), r.luigid_peak_kib * 1024 / MB,
                           " ".join(f"{x:.1f}" for x in r.loadavg)])
    table.rows.append(["the same range again (no-op, waves)", noop_s, 0, _ms(noop_s, waves.partitions), None, None,
                       None, None, None, None])
    table.notes = [
        f"waves of at most {wave_size} hours to load ({', '.join(str(r.waves) for r in runs)} waves); --block-hours N: "
        "one luigi task per N hours of a day, each hour in its own transaction (luigi_pipelines.blocks); each backfill "
        "process runs its waves' luigi processes with 1 worker (no fork per task); luigid from configs/luigid.cfg "
        "(remove_delay 600 s: finished tasks stay in its memory 10 minutes after their wave's workers left), "
        f"prune_on_get_work = {prune}",
        "scheduling ms/partition: the sum over one backfill process's waves of (wave started -> its luigi process's "
        "'Done scheduling tasks'), divided by the partitions (the slower of the two processes); it overlaps loading",
        "luigid RSS at N %: when N % of the partitions had their marker (sampled every 0.5 s)",
        f"{os.cpu_count()} CPUs shared by luigid, PostgreSQL, moto and the workers; load average at the end "
        + " ".join(f"{x:.2f}" for x in os.getloadavg()),
    ]
    if plain is not None:
        state = "finished" if plain.codes and plain.codes[0] is not None else f"stopped after {plain.wall_s:.0f} s"
        table.notes.append(f"plain RangeHourly {state}: it had handed {plain.handed:,} of {plain.partitions:,} tasks "
                           f"to luigid and loaded {plain.loaded:,} (it loads nothing before it has handed them all)")
    return table


SECTION = Section("scale", "100,000 hourly partitions under luigid: backfill in waves of blocks of a day vs one plain "
                  "RangeHourly (20 minutes or more on 2 cores: only with --only scale)", run, default=False)
