"""``backfill`` against luigid in bounded waves: a long range is handed to luigid a wave at a time, so that luigid
never holds more than about ``wave_size + next_at`` pending partitions of it, whatever the range's length.

- The window's partition values are taken in chunks of ``wave_size`` (newest first with ``--reverse``); each chunk
  is asked of the marker table once (one query, no S3), just before its partitions are needed, and those not
  loaded fill the next wave. A range already loaded costs one query per chunk and starts no luigi process.
- A wave is one ``luigi ... Range*`` child process over the wave's own bounds (its first value to the one after its
  last), with the backfill's workers and scheduler; its output is prefixed ``[wave N]``.
- The next wave starts while the last ones drain: as soon as the partitions of the running waves not loaded yet
  (polled on the marker table) are ``next_at`` or fewer, or a wave's process has ended. So the workers find the
  next wave's tasks in luigid before they run out of work, and luigid's pending set stays bounded.
- Several backfills (one per host) over the same range make the same waves from the same markers: luigid gives
  each task to one worker, and the partition lock covers the rest. A host that starts later skips what is loaded.
- No further wave starts once a wave's process could not schedule or crashed (``halting`` codes, a signal), or
  once the backfill got SIGINT, SIGTERM or SIGHUP (passed on to the running waves, as ``shards`` does).

Which partitions this run found loaded before it started a wave is kept (``WavesDone.confirmed``), so the verdict
asks the database again only about the others.
"""
from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import IO, Any

from .grains import Grain
from .shards import FORWARDED_SIGNALS, Shard, _exit_code, _forwarding_signals, _PrefixedLines, _start

DEFAULT_WAVE_SIZE = 2000
MAX_LIVE = 4  # waves whose processes may run at once (older ones waiting on late data, the newest scheduling)
POLL_S = 1.0


def chunks(values: Sequence[Any], size: int, reverse: bool = False) -> Iterator[list[Any]]:
    """``values`` (sorted) in runs of ``size``, from the oldest (newest with ``reverse``); each run sorted."""
    order = list(reversed(values)) if reverse else list(values)
    for at in range(0, len(order), size):
        yield sorted(order[at:at + size])


def to_load(values: Sequence[Any], size: int, loaded: Callable[[Sequence[Any]], set[Any]], forced: Iterable[Any] = (),
            reverse: bool = False, seen: set[Any] | None = None) -> Iterator[Any]:
    """The values of ``values`` not ``loaded`` (or ``forced``: stale ones to reload), in order (reversed with
    ``reverse``), asking ``loaded`` one chunk of ``size`` at a time, only when the caller wants more. The values
    found loaded are added to ``seen``."""
    must = set(forced)
    for chunk in chunks(values, size, reverse):
        done = loaded(chunk)
        if seen is not None:
            seen.update(v for v in chunk if v in done and v not in must)
        yield from (v for v in (reversed(chunk) if reverse else chunk) if v not in done or v in must)


@dataclass(frozen=True)
class Wave:
    """The partition values a wave loads, sorted, and its number in the run."""

    number: int
    values: tuple[Any, ...]

    @property
    def label(self) -> str:
        return f"[wave {self.number}]"


def waves_of(todo: Iterator[Any], size: int) -> Iterator[Wave]:
    """``todo`` in waves of ``size`` values (the last may be smaller), each sorted, pulled from ``todo`` lazily."""
    number = 0
    while True:
        values = [v for _, v in zip(range(size), todo, strict=False)]
        if not values:
            return
        number += 1
        yield Wave(number, tuple(sorted(values)))


@dataclass
class _Running:
    wave: Wave
    proc: subprocess.Popen
    relay: threading.Thread
    left: list[Any]  # values not seen loaded yet
    started: float = field(default_factory=time.monotonic)


@dataclass
class WavesDone:
    """What a run of waves did: each wave's exit code, and the values found loaded before their wave started."""

    codes: list[int] = field(default_factory=list)
    confirmed: set[Any] = field(default_factory=set)
    waves: int = 0


class WaveRunner:
    """Runs the waves of one backfill (see the module docstring): ``command(wave)`` is a wave's luigi command line,
    ``loaded(values)`` the values of ``values`` loaded now (one marker query)."""

    def __init__(self, command: Callable[[Wave], Sequence[str]], loaded: Callable[[Sequence[Any]], set[Any]],
                 grain: Grain, next_at: int, stream: IO[str] = sys.stderr, poll_s: float = POLL_S,
                 halting: Iterable[int] = ()) -> None:
        self.command, self.loaded, self.grain = command, loaded, grain
        self.next_at, self.stream, self.poll_s = next_at, stream, poll_s
        self.halting = set(halting)  # a wave exiting with one of these (or killed by a signal) ends the run
        self.halted = False
        self.live: list[_Running] = []
        self.procs: list[subprocess.Popen] = []  # every child, for the signal forwarding
        self.done = WavesDone()
        self._lock = threading.Lock()

    def run(self, values: Sequence[Any], size: int, forced: Iterable[Any] = (), reverse: bool = False) -> WavesDone:
        """Load ``values`` (those not loaded, and ``forced``) in waves of ``size``; returns once every wave's process
        has ended."""
        todo = to_load(values, size, self.loaded, forced, reverse, self.done.confirmed)
        with _forwarding_signals(self.procs), self._halting_on_signals():
            try:
                for wave in waves_of(todo, size):
                    self._start(wave)
                    self._wait(lambda: self.halted or (self._left() <= self.next_at and len(self.live) < MAX_LIVE))
                    if self.halted:
                        self._say("no more waves: a wave's luigi process could not schedule or crashed, or the "
                                  "backfill was told to stop")
                        break
                self._wait(lambda: not self.live)
            except BaseException:
                for proc in self.procs:
                    proc.kill()
                raise
        return self.done

    @contextlib.contextmanager
    def _halting_on_signals(self) -> Iterator[None]:
        """While the block runs, SIGINT/SIGTERM/SIGHUP also mean: start no more waves (the running ones get the
        signal from the handler beneath, ``shards``' forwarding, even when none is running)."""
        beneath: dict[int, Any] = {sig: signal.getsignal(sig) for sig in FORWARDED_SIGNALS}

        def halt(sig: int, frame: Any) -> None:
            self.halted = True
            handler = beneath[sig]
            if callable(handler):
                handler(sig, frame)

        for sig in FORWARDED_SIGNALS:
            signal.signal(sig, halt)
        try:
            yield
        finally:
            for number, handler in beneath.items():
                signal.signal(number, handler)

    def _say(self, text: str) -> None:
        with self._lock:
            self.stream.write(f"luigi-pipelines backfill: {text}\n")
            self.stream.flush()

    def _start(self, wave: Wave) -> None:
        cmd = tuple(self.command(wave))
        unit, name = self.grain.unit, self.grain.describe
        left = self._left()
        self._say(f"{wave.label} {len(wave.values)} {unit}s to load, {name(wave.values[0])} to {name(wave.values[-1])}"
                  f" ({len(self.done.confirmed)} found loaded so far; {left} of the waves before still to load): "
                  f"luigi {' '.join(cmd[3:])}")
        proc = _start(Shard(wave.label, wave.values, cmd))
        relay = threading.Thread(target=self._relay, args=(proc, wave.label), daemon=True)
        relay.start()
        self.procs.append(proc)
        self.live.append(_Running(wave, proc, relay, list(wave.values)))
        self.done.waves += 1

    def _relay(self, proc: subprocess.Popen, label: str) -> None:
        lines, out = _PrefixedLines(self.stream, label), proc.stdout
        assert out is not None
        for chunk in iter(lambda: os.read(out.fileno(), 1 << 16), b""):
            with self._lock:
                lines.feed(chunk)
        with self._lock:
            lines.close()
        out.close()

    def _left(self) -> int:
        return sum(len(r.left) for r in self.live)

    def _wait(self, enough: Callable[[], bool]) -> None:
        """Reap the waves whose process ended and poll the others' progress until ``enough()``."""
        while True:
            self._reap()
            if enough():
                return
            try:
                self.live[0].proc.wait(self.poll_s)  # wakes at once when the oldest wave ends
            except subprocess.TimeoutExpired:
                pass
            self._poll()

    def _poll(self) -> None:
        waiting = [v for r in self.live for v in r.left]
        if not waiting:
            return
        done = self.loaded(waiting)
        for running in self.live:
            running.left = [v for v in running.left if v not in done]

    def _reap(self) -> None:
        for running in [r for r in self.live if r.proc.poll() is not None]:
            self.live.remove(running)
            code = _exit_code(running.proc)
            running.relay.join()
            self.done.codes.append(code)
            self.halted = self.halted or code in self.halting or code >= 128
            left = [v for v in running.left if v not in self.loaded(running.left)] if running.left else []
            took = time.monotonic() - running.started
            count = len(running.wave.values)
            self._say(f"{running.wave.label} exited {code} after {took:.1f} s: {count - len(left)} of {count} "
                      f"{self.grain.unit}s loaded ({(count - len(left)) / max(took, 1e-9):.1f} per s)"
                      + (f", {len(left)} not" if left else ""))
