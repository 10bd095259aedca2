"""Run in a fresh process by the ``overhead`` section: one ``luigi`` command line, in-process, with the time
of each phase of a partition's life measured around the functions that make it up, printed as JSON.

``python -m bench.phases -- --module bench.pipeline RangeDaily --of LoadTransactions ...`` with the run's
environment and LUIGI_CONFIG_PATH. Phases are exclusive: time is counted against the innermost phase
running (a connect inside ``complete()`` is "connect", not "completeness"); what no phase covers is
luigi itself (building tasks, its scheduler, the worker loop) and is reported as "scheduling".
Only the main thread is measured (with one worker luigi runs tasks in it); calls from other threads (progress
reports to luigid) are left out, their time overlapping the main thread's.
"""
from __future__ import annotations

import functools
import json
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

PHASES = ("scheduling", "luigid_rpc", "completeness", "s3_exists", "connect", "ddl", "s3_list", "transaction")


@dataclass
class PhaseClock:
    """Exclusive wall and CPU seconds per phase, with a stack of the phases running."""

    wall: dict[str, float] = field(default_factory=lambda: dict.fromkeys(PHASES, 0.0))
    cpu: dict[str, float] = field(default_factory=lambda: dict.fromkeys(PHASES, 0.0))
    calls: dict[str, int] = field(default_factory=lambda: dict.fromkeys(PHASES, 0))
    stack: list[str] = field(default_factory=lambda: ["scheduling"])
    mark: tuple[float, float] = field(default_factory=lambda: (time.perf_counter(), time.thread_time()))

    def _switch(self, to: str | None) -> None:
        wall, cpu = time.perf_counter(), time.thread_time()
        top = self.stack[-1]
        self.wall[top] += wall - self.mark[0]
        self.cpu[top] += cpu - self.mark[1]
        self.mark = (wall, cpu)
        if to is None:
            self.stack.pop()
        else:
            self.stack.append(to)
            self.calls[to] += 1

    def wrap(self, phase: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        def timed(*args: Any, **kwargs: Any) -> Any:
            if threading.current_thread() is not threading.main_thread():  # e.g. progress reports: not a phase
                return fn(*args, **kwargs)
            self._switch(phase)
            try:
                return fn(*args, **kwargs)
            finally:
                self._switch(None)
        return timed

    def close(self) -> None:
        self._switch("scheduling")


def instrument(clock: PhaseClock) -> None:
    """Wrap the functions of each phase (methods of the package's classes, psycopg2.connect, luigi's RPC)."""
    import luigi.rpc
    import psycopg2

    from luigi_pipelines import loads, s3, tasks, writes

    def method(cls: Any, name: str, phase: str) -> None:
        fn = cls.__dict__[name]
        if isinstance(fn, classmethod):
            setattr(cls, name, classmethod(clock.wrap(phase, fn.__func__)))
        else:
            setattr(cls, name, clock.wrap(phase, fn))

    method(tasks.PartitionTask, "complete", "completeness")
    method(tasks.PartitionTask, "bulk_complete", "completeness")
    method(loads.S3PartitionExists, "complete", "s3_exists")
    method(writes, "prepare", "ddl")
    method(tasks.PartitionTask, "write_once", "transaction")
    method(s3.S3Client, "list_partition", "s3_list")
    method(luigi.rpc.RemoteScheduler, "_request", "luigid_rpc")
    psycopg2.connect = clock.wrap("connect", psycopg2.connect)  # what luigi_pipelines.db.session calls


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["--"]:
        args = args[1:]
    wall0, cpu0 = time.perf_counter(), time.process_time()
    import luigi.interface
    from luigi.retcodes import run_with_retcodes  # noqa: F401 - [retcode] config is read as the command does

    clock = PhaseClock()
    instrument(clock)
    started, started_cpu = time.perf_counter(), time.process_time()
    result = luigi.interface.run(args, detailed_summary=True)
    clock.close()
    out = {
        "import_s": started - wall0, "import_cpu_s": started_cpu - cpu0,
        "wall_s": time.perf_counter() - started, "process_cpu_s": time.process_time() - started_cpu,
        "phases": {p: {"wall_s": clock.wall[p], "cpu_s": clock.cpu[p], "calls": clock.calls[p]} for p in PHASES},
        "status": result.status.name,
    }
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
