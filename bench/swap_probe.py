"""``python -m bench.swap_probe TASK DATES [--force] [--times N]``: the bench's swap section's loads, in one process.

Each date's ``write_once`` is timed by itself (no interpreter start, no luigi scheduling), and in swap mode how long
the parent's lock was held: from the grant (``db.swap.lock_for_swap`` returning) to the commit, and the whole swap:
that plus how long its requests of the lock waited (readers queue behind a waiting request). Prints one JSON object:
``{"seconds": [...], "held": [...], "swap": [...]}``, one entry per load, in order. With ``--checkpoint`` a CHECKPOINT
runs before each load (untimed), so that every load starts in the same state: none pays for the last one's dirty pages
and WAL, which a first load after the section's own checkpoint would not.
"""
from __future__ import annotations

import argparse
import datetime
import json
import time
from typing import Any

import psycopg2

from luigi_pipelines import writes
from luigi_pipelines.db import swap as db_swap

from . import pipeline

_granted: list[tuple[float, float]] = []  # (when the parent's lock was granted, seconds its request waited)


def _timed_lock(original: Any) -> Any:
    def lock_for_swap(*args: Any, **kwargs: Any) -> float:
        waited = float(original(*args, **kwargs))
        _granted.append((time.perf_counter(), waited))
        return waited
    return lock_for_swap


def checkpoint() -> None:
    """A CHECKPOINT on the server the libpq variables name (the bench's)."""
    conn = psycopg2.connect("")
    try:
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("CHECKPOINT")
    finally:
        conn.close()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.swap_probe")
    parser.add_argument("task")
    parser.add_argument("dates", help="comma-separated dates")
    parser.add_argument("--force", action="store_true")
    parser.add_argument("--times", type=int, default=1, help="load the dates this many times, round and round")
    parser.add_argument("--checkpoint", action="store_true", help="a CHECKPOINT before each load (untimed)")
    args = parser.parse_args()
    db_swap.lock_for_swap = _timed_lock(db_swap.lock_for_swap)
    cls = getattr(pipeline, args.task)
    dates = [datetime.date.fromisoformat(d) for d in args.dates.split(",")]
    seconds: list[float] = []
    held: list[float | None] = []
    swap: list[float | None] = []
    for n in range(args.times * len(dates)):
        if args.checkpoint:
            checkpoint()
        _granted.clear()
        started = time.perf_counter()
        with_force = {"force": True} if args.force else {}
        task = cls(date=dates[n % len(dates)], **with_force)
        with task.reading_config_once():
            writes.write_once(task.job())
        done = time.perf_counter()
        seconds.append(done - started)
        held.append(done - _granted[0][0] if _granted else None)
        swap.append(done - _granted[0][0] + _granted[0][1] if _granted else None)
    print(json.dumps({"seconds": seconds, "held": held, "swap": swap}))


if __name__ == "__main__":
    main()
