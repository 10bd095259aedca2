"""Measuring child processes: wall time and peak RSS of one command (via ``peak_rss.py``), with a bounded wait."""
from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from luigi_pipelines.devstack.local import kill_process_group

MB = 1_000_000  # rates and memory are reported in decimal megabytes
_WRAPPER = Path(__file__).resolve().parent / "peak_rss.py"


class BenchError(RuntimeError):
    """A measurement could not be taken (a command failed, data did not load as expected)."""


@dataclass(frozen=True)
class ProcessRun:
    """One finished child process: how long it took, its peak RSS and what it said."""

    argv: tuple[str, ...]
    wall_s: float
    max_rss_bytes: int  # peak resident set of the command or any of its descendants (floor: ~11 MB)
    returncode: int
    cpu_s: float  # user + system CPU seconds of the command and its descendants
    stdout: str
    stderr: str

    def tail(self, lines: int = 30) -> str:
        return "\n".join((self.stderr or self.stdout).splitlines()[-lines:])


def run_measured(
    argv: Sequence[str],
    env: Mapping[str, str],
    cwd: Path,
    timeout_s: float,
    stdin: Path | None = None,
    ok_codes: Sequence[int] = (0,),
) -> ProcessRun:
    """Run ``argv`` to completion under ``peak_rss.py``, which times it and reports its own peak RSS.

    Output goes to temporary files (no pipe can fill up); the child runs in its own session so a
    timeout kills it and anything it forked. A return code outside ``ok_codes`` raises ``BenchError``.
    """
    with tempfile.TemporaryDirectory(prefix="bench-run-") as tmp:
        report = Path(tmp) / "report.json"
        wrapped = [sys.executable, "-I", "-S", str(_WRAPPER), str(report), "--", *argv]
        with open(Path(tmp) / "out", "w+b") as out, open(Path(tmp) / "err", "w+b") as err, \
                _open_or_devnull(stdin) as inp:
            proc = subprocess.Popen(wrapped, env=dict(env), cwd=cwd, stdin=inp, stdout=out, stderr=err,
                                    start_new_session=True)
            _wait_bounded(proc, timeout_s, argv)
            if not report.exists():
                raise BenchError(f"{' '.join(argv[:6])} ... was not measured (exit {proc.returncode}):\n{_read(err)[-3000:]}")
            measured: dict[str, float] = json.loads(report.read_text())
            run = ProcessRun(tuple(argv), measured["wall_s"], int(measured["max_rss_kib"]) * 1024,
                             int(measured["returncode"]), measured["cpu_s"], _read(out), _read(err))
    if run.returncode not in ok_codes:
        raise BenchError(f"{' '.join(argv[:6])} ... exited with {run.returncode}:\n{run.tail()}")
    return run


def _open_or_devnull(path: Path | None) -> IO[bytes]:
    return open(path, "rb") if path is not None else open(os.devnull, "rb")


def _wait_bounded(proc: subprocess.Popen, timeout_s: float, argv: Sequence[str]) -> None:
    """Wait for ``proc``; past ``timeout_s`` kill its whole session (it and whatever it forked)."""
    try:
        proc.wait(timeout_s)
    except subprocess.TimeoutExpired:
        kill_process_group(proc)
        raise BenchError(f"{' '.join(argv[:6])} ... killed after {timeout_s:.0f} s") from None


def _read(f: IO[bytes]) -> str:
    f.seek(0)
    return f.read().decode(errors="replace")


@dataclass(frozen=True)
class Stopwatch:
    """Time a step: ``sw = Stopwatch.start()``, then ``sw.elapsed`` seconds on a monotonic clock."""

    t0: float

    @classmethod
    def start(cls) -> Stopwatch:
        return cls(time.monotonic())

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.t0


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def rate_mb_s(size_bytes: int, seconds: float) -> float:
    return size_bytes / MB / seconds if seconds > 0 else float("inf")
