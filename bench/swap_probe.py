"""``python -m bench.swap_probe TASK DATES [--force] [--times N]``: the bench's swap section's loads, in one process.

Each date's ``write_once`` is timed by itself (no interpreter start, no luigi scheduling), and in swap mode how long
the parent's lock was held: from the grant (``db.swap.lock_for_swap`` returning) to the commit. Prints one JSON
object: ``{"seconds": [...], "held": [...]}``, one entry per load, in order.
"""
from __future__ import annotations

import argparse
import datetime
import json
import time
from typing import Any

from luigi_pipelines import writes
from luigi_pipelines.db import swap as db_swap

from . import pipeline

_granted: list[float] = []


def _timed_lock(original: Any) -> Any:
    def lock_for_swap(*args: Any, **kwargs: Any) -> float:
        waited = original(*args, **kwargs)
        _granted.append(time.perf_counter())
        return float(waited)
    return lock_for_swap


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.swap_probe")
    parser.add_argument("task")
    parser.add_argument("dates", help="comma-separated dates")
    parser.add_argument("--force", action="store_true")
    parser.add_argument("--times", type=int, default=1, help="load the dates this many times, round and round")
    args = parser.parse_args()
    db_swap.lock_for_swap = _timed_lock(db_swap.lock_for_swap)  # type: ignore[method-assign]
    cls = getattr(pipeline, args.task)
    dates = [datetime.date.fromisoformat(d) for d in args.dates.split(",")]
    seconds, held = [], []
    for n in range(args.times * len(dates)):
        _granted.clear()
        started = time.perf_counter()
        with_force = {"force": True} if args.force else {}
        task = cls(date=dates[n % len(dates)], **with_force)
        with task.reading_config_once():
            writes.write_once(task.job())
        done = time.perf_counter()
        seconds.append(done - started)
        held.append(done - _granted[0] if _granted else None)
    print(json.dumps({"seconds": seconds, "held": held}))


if __name__ == "__main__":
    main()
