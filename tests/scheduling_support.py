"""Helpers of the scheduler, concurrency and netns tests: luigid's test config, worker processes, seeding and traces.

The servers themselves (luigid, S3, PostgreSQL) are ``luigi_pipelines.devstack.local``'s, as in the demo and the bench.
"""
from __future__ import annotations

import configparser
import csv
import datetime
import gzip
import io
import json
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import psycopg2

from luigi_pipelines.devstack.local import ManagedProcess
from luigi_pipelines.devstack.sample import day_objects
from luigi_pipelines.partitions import date_range

ROOT = Path(__file__).resolve().parents[1]
HOOKED_MODULE = "tests.scheduler_tasks"
HOOKED_TASK = "HookedLoadTransactions"
T = TypeVar("T")


# -- data -------------------------------------------------------------------------------------------

def seed_days(stack: Any, start: datetime.date, days: int, rows: int = 40, parts: int = 2,
              put: Callable[[str, bytes], Any] | None = None) -> dict[datetime.date, int]:
    """Put ``days`` days of sample transactions (``parts`` objects a day) in the stack's bucket; rows per date."""
    expected = {}
    for day in date_range(start, start + datetime.timedelta(days=days)):
        n = rows + day.day  # a different count per date, so a date loaded into another's place shows
        expected[day] = 0
        for key, body in day_objects(day, rows=n, parts=parts).items():
            (put or stack.put)(key, body)
            expected[day] += csv_data_rows(body)
    return expected


def csv_data_rows(body: bytes) -> int:
    """The records after the header line of a CSV object (gzipped or not), as the test put it."""
    text = (gzip.decompress(body) if body[:2] == b"\x1f\x8b" else body).decode()
    return sum(1 for _ in csv.reader(io.StringIO(text))) - 1


def table_counts(stack: Any) -> dict[datetime.date, int]:
    if not stack.has_table(stack.schema, "transaction"):
        return {}
    return dict(stack.query(f'SELECT txn_date, count(*) FROM "{stack.schema}".transaction GROUP BY 1'))


def assert_exactly_once(stack: Any, expected: dict[datetime.date, int]) -> None:
    """Every expected date has exactly its rows (no duplicates, nothing missing) and a marker saying so."""
    assert table_counts(stack) == expected
    markers = stack.markers(f"{stack.schema}.transaction")
    assert {day: m[0] for day, m in markers.items()} == expected
    duplicates = stack.query(f'SELECT id FROM "{stack.schema}".transaction GROUP BY id HAVING count(*) > 1')
    assert duplicates == []


def worker_settings(stack: Any) -> None:
    """Worker-side settings for fast tests: short polls and RPC retries (luigi's are 1-6 s and 30 s)."""
    stack.set_config("worker", "wait_interval", "0.1")
    stack.set_config("worker", "wait_jitter", "0.1")
    stack.set_config("worker", "ping_interval", "0.3")
    stack.set_config("core", "rpc_retry_wait", "1")
    stack.set_config("core", "rpc_connect_timeout", "3")


# -- traces written by tests/scheduler_tasks.py -------------------------------------------------------

@dataclass(frozen=True)
class Run:
    pid: int
    date: str
    start: float
    end: float | None  # None: never finished (killed, cut off)


def read_runs(hook_dir: Path) -> list[Run]:
    trace = hook_dir / "trace"
    if not trace.exists():
        return []
    open_runs: dict[tuple[int, str], float] = {}
    runs = []
    for line in trace.read_text().splitlines():
        event, moment, pid, date = line.split()
        if event == "start":
            open_runs[(int(pid), date)] = float(moment)
        else:
            runs.append(Run(int(pid), date, open_runs.pop((int(pid), date)), float(moment)))
    runs += [Run(pid, date, start, None) for (pid, date), start in open_runs.items()]
    return runs


def max_overlap(runs: Iterable[Run]) -> int:
    """The most runs that were in progress at one instant."""
    events = sorted([(r.start, 1) for r in runs] + [(r.end if r.end is not None else float("inf"), -1) for r in runs],
                    key=lambda e: (e[0], e[1]))
    most = current = 0
    for _, step in events:
        current += step
        most = max(most, current)
    return most


def read_paused(hook_dir: Path) -> dict[str, Any] | None:
    path = hook_dir / "paused"
    return json.loads(path.read_text()) if path.exists() else None


# -- luigid and worker processes -------------------------------------------------------------------------

def luigid_config(path: Path, overrides: dict[str, dict[str, Any]]) -> Path:
    """``configs/luigid.cfg`` with ``overrides`` applied (the tests run the shipped file, with shorter delays)."""
    parser = configparser.ConfigParser(interpolation=None)
    parser.read(ROOT / "configs" / "luigid.cfg")
    for section, options in overrides.items():
        if not parser.has_section(section):
            parser.add_section(section)
        for option, value in options.items():
            parser.set(section, option, str(value))
    with open(path, "w") as f:
        parser.write(f)
    return path


def start(name: str, cmd: Sequence[str], env: dict[str, str], log_dir: Path, netns: str | None = None) -> ManagedProcess:
    """A worker (or any command) from the project root, its output in ``log_dir/<name>.log``."""
    return ManagedProcess(cmd, log_dir / f"{name}.log", name=name, env=env, cwd=ROOT, netns=netns).start()


def backfill_command(*args: str, module: str = HOOKED_MODULE, task: str = HOOKED_TASK) -> list[str]:
    """``luigi-pipelines backfill`` of the hooked task, with ``args`` as a user types them."""
    return [sys.executable, "-m", "luigi_pipelines.cli", "backfill", "--module", module, "--task", task, *args]


def wait_all(procs: Sequence[ManagedProcess], timeout: float) -> dict[str, int]:
    """Every process's exit code; kills what is still running after ``timeout`` (and fails)."""
    deadline = time.monotonic() + timeout
    codes = {}
    try:
        for p in procs:
            codes[p.name] = p.wait(max(0.1, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        tails = "\n".join(f"--- {p.name}\n{p.output()[-2000:]}" for p in procs)
        raise AssertionError(f"processes still running after {timeout:.0f} s:\n{tails}") from None
    finally:
        for p in procs:
            p.kill()
    return codes


def sample_while(procs: Sequence[ManagedProcess], probe: Callable[[Any], T], dsn: str, timeout: float,
                 interval: float = 0.02) -> list[T]:
    """Call ``probe(cursor)`` on one PostgreSQL connection every ``interval`` s while any of ``procs`` runs."""
    samples = []
    deadline = time.monotonic() + timeout
    conn = psycopg2.connect(dsn)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            while any(p.returncode is None for p in procs) and time.monotonic() < deadline:
                samples.append(probe(cur))
                time.sleep(interval)
    finally:
        conn.close()
    return samples


def describe(procs: Sequence[ManagedProcess]) -> str:
    return "\n".join(f"--- {p.name} (exit {p.returncode})\n{p.output()[-2500:]}" for p in procs)



# -- S3 requests, as moto's server logged them ------------------------------------------------------

def s3_log_mark(stack: Any) -> int:
    """Where the S3 server's request log ends now: ``listings_since`` counts the requests after it."""
    return len(stack.s3.output())


def listings_since(stack: Any, mark: int) -> Counter[str]:
    """The ListObjects requests made of the stack's bucket since ``mark``, by prefix, as the server logged them."""
    return stack.s3.listings(stack.bucket, mark)
