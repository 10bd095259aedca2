"""Faults with real processes: kill -9, a terminated backend, S3 or PostgreSQL gone mid-load, a full disk.

The load runs as a real ``luigi`` process (``tests/fault_tasks.py``) that stops at a chosen phase
and says so through a file, so each fault strikes at a known point without sleeping. After every
fault: no rows and no marker (or the old ones, untouched), no temp file, and a rerun loads the
partition exactly once.
"""
from __future__ import annotations

import datetime
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import psycopg2
import pytest

from luigi_pipelines.backfill import range_daily_args
from luigi_pipelines.devstack.local import LocalS3, ManagedProcess, wait_until
from luigi_pipelines.devstack.postgres import LocalPostgres
from tests.conftest import ROOT

pytestmark = [pytest.mark.postgres, pytest.mark.s3, pytest.mark.slow]

D1 = datetime.date(2019, 3, 1)
TASK = ["--module", "tests.fault_tasks", "LoadFaulty", "--local-scheduler"]


def rows(day: datetime.date, ids: range, pad: int = 0) -> bytes:
    """A CSV object of ``ids`` for ``day``; ``pad`` adds that many bytes to each row."""
    return ("id,day,v\n" + "".join(f"{n},{day},{'v' * pad}\n" for n in ids)).encode()


def wait_for(predicate: Callable[[], Any], what: str, timeout: float = 60) -> Any:
    """Poll ``predicate`` until it returns something truthy; fail the test after ``timeout`` seconds."""
    return wait_until(predicate, timeout, what, interval=0.02)


@dataclass
class FaultRun:
    """A ``luigi`` process that stops at ``phase`` until released."""

    process: ManagedProcess
    directory: Path

    def reached(self, timeout: float = 60) -> int:
        """Wait until the task stopped at its phase; returns the loading process's pid."""
        def ready() -> bool:
            if self.process.returncode is not None:
                pytest.fail(f"the load exited with {self.process.returncode} before its fault point:\n"
                            f"{self.process.output()[-3000:]}")
            return (self.directory / "reached").exists()

        wait_for(ready, "the load to reach its fault point", timeout)
        return int((self.directory / "reached").read_text())

    def release(self) -> None:
        (self.directory / "release").touch()

    def finish(self, timeout: float = 120) -> tuple[int, str]:
        return self.process.wait(timeout), self.process.output()


@dataclass
class Loader:
    """Runs ``tests.fault_tasks`` against one stack (or a server the test controls)."""

    stack: Any
    config: Path
    app: str  # the loader's application_name, to find its backend
    dsn: str
    env_overrides: dict[str, str]
    tmp: Path

    def env(self, **extra: str) -> dict[str, str]:
        return {**self.stack.env(self.config), **self.env_overrides, **extra}

    def start(self, phase: str, *args: str, fault_date: datetime.date | None = None) -> FaultRun:
        directory = self.tmp / f"fault-{phase}-{time.monotonic_ns()}"
        directory.mkdir()
        extra = {"FAULT_PHASE": phase, "FAULT_DIR": str(directory)}
        if fault_date:
            extra["FAULT_DATE"] = str(fault_date)
        process = ManagedProcess([sys.executable, "-m", "luigi", *args], directory / "luigi.log", name=f"load-{phase}",
                                 env=self.env(**extra), cwd=ROOT)
        return FaultRun(process.start(), directory)

    def run(self, *args: str, timeout: float = 180) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "luigi", *args], cwd=ROOT, env=self.env(),
                              capture_output=True, text=True, timeout=timeout)

    def query(self, statement: str, params: Any = None) -> list[tuple]:
        with psycopg2.connect(self.dsn) as conn, conn.cursor() as cur:
            cur.execute(statement, params)
            result = cur.fetchall() if cur.description else []
        conn.close()
        return result

    def backends(self) -> list[tuple]:
        """The loader's live backends: pid, state, query and whether its transaction wrote anything."""
        return self.query("SELECT pid, state, query, backend_xid IS NOT NULL FROM pg_stat_activity "
                          "WHERE application_name = %s", (self.app,))

    def wait_no_backend(self) -> None:
        wait_for(lambda: not self.backends(), "PostgreSQL to discard the loader's session")

    def partition(self, day: datetime.date) -> tuple[list[int], int | None]:
        """The ids in the table for ``day`` and the marker's row count (None: no marker)."""
        table = f"{self.stack.schema}.t"
        exists = self.query("SELECT to_regclass(%s) IS NOT NULL", (table,))[0][0]
        ids = [r[0] for r in self.query(f"SELECT id FROM {table} WHERE day = %s ORDER BY id", (day,))] if exists else []
        marker = self.query("SELECT to_regclass(%s) IS NOT NULL", (f"{self.stack.marker_schema}.partition_marker",))
        loaded = self.query(
            f"SELECT rows_loaded FROM {self.stack.marker_schema}.partition_marker "
            "WHERE target_table = %s AND partition_date = %s", (table, day)) if marker[0][0] else []
        return ids, loaded[0][0] if loaded else None


def make_loader(stack: Any, tmp_path: Path, dsn: str | None = None, env: dict[str, str] | None = None,
                **config: str) -> Loader:
    app = stack.schema[:63]
    stack.set_config("fault", "bucket", stack.bucket)
    stack.set_config("fault", "table", f"{stack.schema}.t")
    stack.set_config("database", "application_name", app)
    for key, value in config.items():
        section, option = key.split("__")
        stack.set_config(section, option, value)
    cfg = stack.write_config(tmp_path / "fault.cfg")
    return Loader(stack, cfg, app, dsn or stack.pg.dsn, env or {}, tmp_path)


@pytest.fixture
def loader(stack, tmp_path) -> Loader:
    return make_loader(stack, tmp_path)


def open_temp_files(pid: int, directory: Path) -> list[tuple[str, int]]:
    """The files ``pid`` holds open in ``directory``: their /proc link and permission bits."""
    found = []
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            link = os.readlink(fd)
            if link.startswith(str(directory) + "/"):
                found.append((link, os.stat(fd).st_mode & 0o777))
        except FileNotFoundError:
            continue
    return found


_EXCEPTION_LINE = re.compile(r"^(?P<type>[A-Za-z_][\w.]*(?:Error|Exception)): (?P<message>.*)$", re.MULTILINE)


def final_error(log: str) -> str:
    """The last exception luigi logged (the task failure it reports), as ``type: message``."""
    found = list(_EXCEPTION_LINE.finditer(log))
    assert found, log[-3000:]
    return found[-1].group(0)


def assert_loads_exactly_once(loader: Loader, day: datetime.date, ids: list[int]) -> None:
    rerun = loader.run(*TASK, "--date", str(day))
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert loader.partition(day) == (ids, len(ids))
    again = loader.run(*TASK, "--date", str(day))
    assert again.returncode == 0 and "Did not run any tasks" in again.stderr, again.stderr[-2000:]
    assert loader.partition(day) == (ids, len(ids))
    assert loader.stack.temp_files() == []


# -- kill -9 ---------------------------------------------------------------------------------------


def _observe_download(loader: Loader, pid: int) -> None:
    """Mid-download: one 0600 NamedTemporaryFile open in the temp dir, named after the host and pid."""
    files = open_temp_files(pid, loader.stack.temp_dir)
    assert len(files) == 1 and files[0][1] == 0o600, files
    assert Path(files[0][0]).name.startswith(f"luigi_pipelines-{socket.gethostname()}-{pid}-"), files
    assert loader.stack.temp_files() == [Path(files[0][0])]


def _observe_copy(loader: Loader, pid: int) -> None:
    """Mid-COPY: PostgreSQL reports the COPY running, with data sent to it. (PostgreSQL 15 counts the
    rows as they arrive; 18 buffers up to 64 kB of input first, so it may show 0 rows while it waits
    for more: then its backend must be waiting on the client, inside COPY.)"""
    def copying() -> bool:
        progress = loader.query(
            "SELECT p.tuples_processed, a.wait_event FROM pg_stat_progress_copy p JOIN pg_stat_activity a "
            "USING (pid) WHERE a.application_name = %s", (loader.app,))
        return bool(progress and (progress[0][0] > 0 or progress[0][1] == "ClientRead"))

    wait_for(copying, "COPY progress")


def _observe_commit(loader: Loader, pid: int) -> None:
    """Just before commit: the transaction has written (data and marker) and waits, uncommitted."""
    [(_, state, query, wrote)] = loader.backends()
    assert state == "idle in transaction" and wrote and query.startswith("INSERT INTO"), (state, query)


@pytest.mark.parametrize("phase, observe", [
    ("download", _observe_download),
    ("copy", _observe_copy),
    ("commit", _observe_commit),
], ids=["download", "copy", "commit"])
def test_kill_9_leaves_nothing_and_rerun_loads_once(stack, loader, phase, observe):
    stack.put("d/2019-03-01/a.csv", rows(D1, range(1, 1001)))
    stack.put("d/2019-03-01/b.csv", rows(D1, range(1001, 2001)))
    run = loader.start(phase, *TASK, "--date", str(D1))
    try:
        pid = run.reached()
        observe(loader, pid)
        os.kill(pid, signal.SIGKILL)
        assert run.process.wait(30) == -signal.SIGKILL
    finally:
        run.process.kill()
    loader.wait_no_backend()
    assert loader.partition(D1) == ([], None)
    # kill -9 runs no cleanup: a download file may stay, named after the dead process; the rerun removes it
    assert all(p.name.startswith(f"luigi_pipelines-{socket.gethostname()}-{pid}-") for p in stack.temp_files())
    assert_loads_exactly_once(loader, D1, list(range(1, 2001)))


def test_kill_9_during_forced_reload_keeps_the_old_partition(stack, loader):
    stack.put("d/2019-03-01/a.csv", rows(D1, range(1, 11)))
    assert loader.run(*TASK, "--date", str(D1)).returncode == 0
    before = loader.partition(D1)
    stack.put("d/2019-03-01/a.csv", rows(D1, range(100, 200)))
    run = loader.start("commit", *TASK, "--date", str(D1), "--force")
    try:
        os.kill(run.reached(), signal.SIGKILL)
        run.process.wait(30)
    finally:
        run.process.kill()
    loader.wait_no_backend()
    assert loader.partition(D1) == before == (list(range(1, 11)), 10)
    assert stack.temp_files() == []


# -- the database or S3 going away -----------------------------------------------------------------


def test_backend_terminated_mid_copy_fails_clearly_then_retry_succeeds(stack, loader):
    stack.put("d/2019-03-01/a.csv", rows(D1, range(1, 1001)))
    run = loader.start("copy", *TASK, "--date", str(D1))
    try:
        run.reached()
        _observe_copy(loader, 0)
        [(backend, *_)] = loader.backends()
        assert loader.query("SELECT pg_terminate_backend(%s)", (backend,)) == [(True,)]
        loader.wait_no_backend()
        run.release()
        code, log = run.finish()
    finally:
        run.process.kill()
    assert code == 30, log[-3000:]  # [retcode] task_failed
    url = f"s3://{stack.bucket}/d/2019-03-01/a.csv"
    # the real error is the one reported, not a failed rollback ("connection already closed")
    assert final_error(log) == (f"luigi_pipelines.errors.LoadError: {url}: the database connection failed during COPY: "
                                "server closed the connection unexpectedly")
    assert loader.partition(D1) == ([], None)
    assert stack.temp_files() == []
    assert_loads_exactly_once(loader, D1, list(range(1, 1001)))


@pytest.fixture
def own_s3(tmp_path) -> Iterator[LocalS3]:
    """An S3 server this test may stop and start again (on the same port)."""
    server = LocalS3(log=tmp_path / "moto.log").start()
    try:
        yield server
    finally:
        server.stop()


def _beyond_socket_buffers() -> int:
    """Bytes that cannot all be in flight while the reader pauses: a multiple of the server's largest
    send buffer plus the paused receiver's (un-grown) default receive buffer, at least 20 MiB."""
    wmem_max = int(Path("/proc/sys/net/ipv4/tcp_wmem").read_text().split()[2])
    rmem_default = int(Path("/proc/sys/net/ipv4/tcp_rmem").read_text().split()[1])
    return max(20 * 2**20, 4 * (wmem_max + rmem_default))


def test_s3_stopped_mid_download_fails_clearly_then_succeeds(stack, tmp_path, own_s3):
    # [s3] read_chunk_kb makes the download stop after its first 64 KiB of an object far larger than
    # the socket buffers hold, so the rest can only come from the server we are about to stop.
    # max_attempts=2: one resumed GET (which finds the endpoint gone), one botocore retry of it
    loader = make_loader(stack, tmp_path, env={"AWS_ENDPOINT_URL": own_s3.endpoint_url}, s3__read_chunk_kb="64",
                         s3__max_attempts="2")
    count = _beyond_socket_buffers() // 100
    body = rows(D1, range(1, count + 1), pad=100)
    assert len(body) > _beyond_socket_buffers()

    def seed() -> None:
        client = boto3.client("s3", endpoint_url=own_s3.endpoint_url, region_name="us-east-1",
                              aws_access_key_id="k", aws_secret_access_key="s")
        client.create_bucket(Bucket=stack.bucket)
        client.put_object(Bucket=stack.bucket, Key="d/2019-03-01/a.csv", Body=body)

    seed()
    run = loader.start("download", *TASK, "--date", str(D1))
    try:
        run.reached()
        own_s3.stop()
        run.release()
        code, log = run.finish()
    finally:
        run.process.kill()
    assert code == 30, log[-3000:]
    assert re.fullmatch(
        re.escape(f"luigi_pipelines.errors.SourceError: s3://{stack.bucket}/d/2019-03-01/a.csv: download failed after ")
        + rf"\d+ of {len(body)} bytes: Could not connect to the endpoint URL: .+", final_error(log)), log[-3000:]
    assert re.search(r"a\.csv: the download broke after \d+ of \d+ bytes \(.+\); resuming from byte \d+, attempt 2 of 2",
                     log), log[-3000:]
    assert loader.partition(D1) == ([], None)
    assert stack.temp_files() == []

    own_s3.start()  # the endpoint returns, with the same object
    seed()
    rerun = loader.run(*TASK, "--date", str(D1))
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    ids, marker = loader.partition(D1)
    assert marker == count and ids == list(range(1, count + 1))


@pytest.fixture
def own_postgres() -> Iterator[LocalPostgres]:
    """A PostgreSQL this test may stop and start (Unix socket only)."""
    with LocalPostgres() as server:
        yield server


def test_postgres_restarted_mid_backfill_tasks_retried_final_state_exact(stack, tmp_path, own_postgres):
    days = [D1 + datetime.timedelta(days=n) for n in range(4)]
    for n, day in enumerate(days):
        stack.put(f"d/{day}/a.csv", rows(day, range(n * 1000 + 1, n * 1000 + 501)))
        stack.put(f"d/{day}/b.csv", rows(day, range(n * 1000 + 501, n * 1000 + 1001)))
    loader = make_loader(
        stack, tmp_path, dsn=own_postgres.dsn, env=own_postgres.env,
        # luigi retries a failed task within the same run: the worker stays while work is pending,
        # and the scheduler puts a failed task back to pending after retry_delay seconds.
        worker__keep_alive="true", worker__wait_interval="0.1", scheduler__retry_delay="1",
        scheduler__prune_on_get_work="true",
    )
    backfill = range_daily_args("tests.fault_tasks", "LoadFaulty", days[0], days[-1] + datetime.timedelta(days=1),
                                local_scheduler=True)
    run = loader.start("copy", *backfill, fault_date=days[1])
    try:
        run.reached()
        own_postgres.restart()  # a fast shutdown ends every session, the loader's open COPY among them
        run.release()
        code, log = run.finish()
    finally:
        run.process.kill()
    assert code == 0, log[-4000:]
    assert f"failed    LoadFaulty(date={days[1]})" in log
    assert final_error(log) == (
        f"luigi_pipelines.errors.LoadError: s3://{stack.bucket}/d/{days[1]}/a.csv: "
        "the database connection failed during COPY: server closed the connection unexpectedly")
    assert "there were failed tasks but they all succeeded in a retry" in log, log[-4000:]
    for n, day in enumerate(days):
        assert loader.partition(day) == (list(range(n * 1000 + 1, n * 1000 + 1001)), 1000)
    assert stack.temp_files() == []


# -- a full temp directory -------------------------------------------------------------------------


@pytest.fixture
def tiny_tmpfs(tmp_path) -> Iterator[Path]:
    """A 1 MiB tmpfs, or a skip where this process may not mount one."""
    mount_point = tmp_path / "tiny"
    mount_point.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m,mode=0700", "tmpfs", str(mount_point)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs to fill (needs root or CAP_SYS_ADMIN): {mounted.stderr.strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", str(mount_point)], check=True)


def test_full_temp_dir_fails_clearly_and_writes_nothing(stack, tmp_path, tiny_tmpfs):
    stack.set_config("load", "temp_dir", str(tiny_tmpfs))
    loader = make_loader(stack, tmp_path)
    stack.put("d/2019-03-01/a.csv", rows(D1, range(1, 11)))
    assert loader.run(*TASK, "--date", str(D1)).returncode == 0
    before = loader.partition(D1)
    stack.put("d/2019-03-01/a.csv", rows(D1, range(1, 11)))
    stack.put("d/2019-03-01/b.csv", rows(D1, range(11, 50_001), pad=20))  # ~1.5 MiB
    failed = loader.run(*TASK, "--date", str(D1), "--force")
    assert failed.returncode == 30, failed.stderr[-3000:]
    url = f"s3://{stack.bucket}/d/2019-03-01/b.csv"
    assert final_error(failed.stderr) == (
        f"luigi_pipelines.errors.LoadError: {url}: cannot write temporary file in {tiny_tmpfs}: "
        "[Errno 28] No space left on device")
    assert loader.partition(D1) == before
    assert list(tiny_tmpfs.iterdir()) == []
    assert os.statvfs(tiny_tmpfs).f_bfree == os.statvfs(tiny_tmpfs).f_blocks  # the space came back too
