"""Helpers of the scheduler, concurrency and netns tests: a real luigid, worker processes, seeding and traces."""
from __future__ import annotations

import configparser
import csv
import datetime
import gzip
import io
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import psycopg2

from luigi_pipelines.local import free_port, stop_process_group
from luigi_pipelines.partitions import date_range
from luigi_pipelines.sample import day_objects

ROOT = Path(__file__).resolve().parents[1]
HOOKED_MODULE = "tests.scheduler_tasks"
HOOKED_TASK = "HookedLoadTransactions"
T = TypeVar("T")


def wait_until(predicate: Callable[[], T], timeout: float, what: str, interval: float = 0.05) -> T:
    """Poll ``predicate`` until it returns something truthy (returned), or fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def netns_prefix(netns: str | None) -> list[str]:
    return ["ip", "netns", "exec", netns] if netns else []


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


# -- luigid ---------------------------------------------------------------------------------------------

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


def http_get(url: str, netns: str | None = None, timeout: float = 10) -> bytes:
    """GET ``url``, from inside network namespace ``netns`` if given (the test itself stays outside)."""
    if netns is None:
        with urllib.request.urlopen(url, timeout=timeout) as reply:
            return reply.read()
    code = "import sys, urllib.request; sys.stdout.buffer.write(urllib.request.urlopen(sys.argv[1], timeout=10).read())"
    return subprocess.run([*netns_prefix(netns), sys.executable, "-c", code, url], check=True, capture_output=True,
                          timeout=timeout + 10).stdout


@dataclass
class Luigid:
    """A real luigid (``luigi.cmdline.luigid``) in its own directory, on ``host``:``port`` (inside ``netns``).

    ``listen`` is the address it binds (default ``host``), e.g. 0.0.0.0 to serve other namespaces.
    """

    directory: Path
    config: Path
    host: str = "127.0.0.1"
    port: int = 0
    netns: str | None = None
    listen: str | None = None
    proc: subprocess.Popen | None = None
    log: Path = field(init=False)

    def __post_init__(self) -> None:
        self.port = self.port or free_port(self.host)
        self.log = self.directory / "luigid.log"

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> Luigid:
        self.directory.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "LUIGI_CONFIG_PATH": str(self.config)}
        code = "import sys; from luigi.cmdline import luigid; luigid(sys.argv[1:])"
        cmd = [*netns_prefix(self.netns), sys.executable, "-c", code, "--address", self.listen or self.host,
               "--port", str(self.port), "--state-path", str(self.directory / "state.pickle")]
        # cwd is its own directory, as on a scheduler host: only the given config applies, not ./luigi.cfg
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(cmd, cwd=self.directory, env=env, stdout=log, stderr=subprocess.STDOUT,
                                         start_new_session=True)
        wait_until(self._ready, 30, f"luigid on {self.url}", interval=0.1)
        return self

    def _ready(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise RuntimeError(f"luigid exited with {self.proc.returncode}:\n{self.log.read_text()[-3000:]}")
        try:
            self.api("task_list", status="DONE")
            return True
        except (OSError, subprocess.CalledProcessError):
            return False

    def api(self, method: str, **data: Any) -> Any:
        """Call luigid's HTTP API (``/api/<method>?data=<json>``); returns its ``response``."""
        query = urllib.parse.urlencode({"data": json.dumps(data)})
        return json.loads(http_get(f"{self.url}/api/{method}?{query}", self.netns))["response"]

    def tasks(self, status: str, family: str | None = None) -> dict[str, dict[str, Any]]:
        found = self.api("task_list", status=status, upstream_status="", search="")
        return {tid: t for tid, t in found.items() if family is None or t["name"] == family}

    def stop(self) -> None:
        stop_process_group(self.proc)
        self.proc = None

    def __enter__(self) -> Luigid:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


# -- worker processes ------------------------------------------------------------------------------------

@dataclass
class Proc:
    """One command started in its own session (so it and its children can be killed together)."""

    name: str
    proc: subprocess.Popen
    log: Path

    def wait(self, timeout: float) -> int:
        return self.proc.wait(timeout)

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def kill(self) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait()


def start(name: str, cmd: Sequence[str], env: dict[str, str], log_dir: Path, netns: str | None = None) -> Proc:
    log = log_dir / f"{name}.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([*netns_prefix(netns), *cmd], cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    return Proc(name, proc, log)


def backfill_command(*args: str, module: str = HOOKED_MODULE, task: str = HOOKED_TASK) -> list[str]:
    return [sys.executable, "-m", "luigi_pipelines.cli", "backfill", "--module", module, "--task", task, *args]


def wait_all(procs: Sequence[Proc], timeout: float) -> dict[str, int]:
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


def sample_while(procs: Sequence[Proc], probe: Callable[[Any], T], dsn: str, timeout: float,
                 interval: float = 0.02) -> list[T]:
    """Call ``probe(cursor)`` on one PostgreSQL connection every ``interval`` s while any of ``procs`` runs."""
    samples = []
    deadline = time.monotonic() + timeout
    conn = psycopg2.connect(dsn)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            while any(p.proc.poll() is None for p in procs) and time.monotonic() < deadline:
                samples.append(probe(cur))
                time.sleep(interval)
    finally:
        conn.close()
    return samples


def describe(procs: Sequence[Proc]) -> str:
    return "\n".join(f"--- {p.name} (exit {p.proc.returncode})\n{p.output()[-2500:]}" for p in procs)


# -- S3 -----------------------------------------------------------------------------------------------------

class MotoServer:
    """moto's S3 server on ``host`` (inside ``netns`` if given), its request log kept in ``log``."""

    def __init__(self, log: Path, host: str = "127.0.0.1", netns: str | None = None, port: int | None = None) -> None:
        self.host = host
        self.netns = netns
        self.port = port or free_port(host)
        self.log = log
        self.proc: subprocess.Popen | None = None

    @property
    def endpoint_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> MotoServer:
        listen = "0.0.0.0" if self.netns else self.host
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen([*netns_prefix(self.netns), sys.executable, "-m", "moto.server", "-H", listen,
                                          "-p", str(self.port)], stdout=out, stderr=subprocess.STDOUT,
                                         start_new_session=True)
        wait_until(self._ready, 30, f"moto on {self.endpoint_url}", interval=0.1)
        return self

    def _ready(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise RuntimeError(f"moto exited with {self.proc.returncode}: {self.log.read_text()[-2000:]}")
        try:
            http_get(self.endpoint_url + "/moto-api/", self.netns, timeout=2)
            return True
        except (OSError, subprocess.CalledProcessError):
            return False

    def object_gets(self, bucket: str) -> list[str]:
        """The keys of every object GET the server answered (its werkzeug request log)."""
        found = re.findall(rf'"GET /{re.escape(bucket)}/([^ ?"]+) HTTP', self.log.read_text(errors="replace"))
        return found

    def stop(self) -> None:
        stop_process_group(self.proc)
        self.proc = None

    def __enter__(self) -> MotoServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
