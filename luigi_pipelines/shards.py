"""``backfill --processes N``: the partitions still to load, cut into N runs of consecutive values, each run its
own ``luigi ... Range* --local-scheduler --workers 1`` child process (no luigid, no fork per task), its output
prefixed ``[i/N]``; signals to the backfill reach every child, and a child ends with its backfill.
"""
from __future__ import annotations

import ctypes
import os
import selectors
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import IO, Any

from .grains import DAILY, Grain
from .ranges import Scheduler, Window, luigi_command

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


def run_one(cmd: Sequence[str]) -> int:
    """Run ``cmd``, passing SIGINT/SIGTERM/SIGHUP on to it; a child killed by a signal gives 128 + its number."""
    proc = subprocess.Popen(cmd)
    with _forwarding_signals([proc]):
        return _exit_code(proc)



def shards(values: Sequence[Any], processes: int) -> list[list[Any]]:
    """``values`` (sorted partition values: dates, hours, months) cut into at most ``processes`` runs of consecutive
    elements, as even as can be.

    Each value is in exactly one run, and each run can be a range of its own (from its first value to the one
    after its last): between two of a run's values lies no value of another run. Only the values still to load
    are cut, so values loaded earlier (say the first half of the window) leave no process idle.
    """
    count = min(processes, len(values))
    size, larger = divmod(len(values), count) if count else (0, 0)
    runs, at = [], 0
    for n in range(count):
        end = at + size + (1 if n < larger else 0)
        runs.append(list(values[at:end]))
        at = end
    return runs


@dataclass(frozen=True)
class Shard:
    """One process of a ``--processes`` backfill: its label in the output, its partition values, its luigi command."""

    label: str
    dates: tuple[Any, ...]
    cmd: tuple[str, ...]


def shard_commands(module: str, task: str, win: Window, todo: Sequence[Any], processes: int,
                   reverse: bool = False, extra: Sequence[str] = (), reload_changed: bool = False,
                   stale: Mapping[str, str | None] | None = None, grain: Grain = DAILY) -> list[Shard]:
    """The luigi command of each shard of ``todo``: the grain's range tool over the shard's own values, with a
    local scheduler and one worker, which runs its tasks in its own process (luigi forks per task only with more)."""
    runs = shards(todo, processes)
    found = []
    for n, values in enumerate(runs, 1):
        cmd = luigi_command(module, task, win, Scheduler(local=True), 1, len(values), reverse, extra,
                            reload_changed=reload_changed, stale=stale, grain=grain,
                            bounds=(values[0], grain.after(values[-1])))
        found.append(Shard(f"[{n}/{len(runs)}]", tuple(values), tuple(cmd)))
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

