"""Run in a fresh process by the ``noop`` section: time ``bulk_complete`` over a range and a per-date
``complete()`` loop, in-process, and print the timings as one JSON object on stdout. With
``--reload-changed`` (the ``stale`` section) ``bulk_complete`` is asked in that mode, as ``RangeDaily``
asks it, and once more without it (``plain_s``).

``python -m bench.probe --start 2000-01-01 --days 3650 --loop-days 365`` with the run's environment
and LUIGI_CONFIG_PATH (the probe reads the same config as the luigi commands).
"""
from __future__ import annotations

import argparse
import datetime
import functools
import json
import sys
import time
from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--start", type=datetime.date.fromisoformat, required=True)
    parser.add_argument("--days", type=int, required=True, help="dates given to bulk_complete")
    parser.add_argument("--loop-days", type=int, required=True, help="dates checked one complete() at a time")
    parser.add_argument("--reload-changed", action="store_true", help="bulk_complete in reload_changed mode")
    args = parser.parse_args(argv)

    t0 = time.monotonic()
    from luigi_pipelines.pipelines.transactions import LoadTransactions
    imported = time.monotonic()
    dates = [args.start + datetime.timedelta(days=n) for n in range(args.days)]
    plain: dict[str, float] = {}
    started = imported
    if args.reload_changed:
        plain["plain_done"] = len(LoadTransactions.bulk_complete(dates))
        started = time.monotonic()
        plain["plain_s"] = started - imported
        in_mode = functools.partial(LoadTransactions, reload_changed=True)
        done = LoadTransactions.bulk_complete.__func__(in_mode, dates)  # as RangeDaily calls it
    else:
        done = LoadTransactions.bulk_complete(dates)
    bulk = time.monotonic()
    looped = sum(LoadTransactions(date=d).complete() for d in dates[: args.loop_days])
    loop = time.monotonic()
    print(json.dumps({**plain,
        "import_s": imported - t0,
        "bulk_complete_s": bulk - started, "bulk_complete_dates": len(dates), "bulk_complete_done": len(done),
        "loop_s": loop - bulk, "loop_dates": min(args.loop_days, len(dates)), "loop_done": looped,
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
