"""Run in a fresh process by the ``noop`` section: time ``bulk_complete`` over a range and a per-date
``complete()`` loop, in-process, and print the timings as one JSON object on stdout.

``python -m bench.probe --start 2000-01-01 --days 3650 --loop-days 365`` with the run's environment
and LUIGI_CONFIG_PATH (the probe reads the same config as the luigi commands).
"""
from __future__ import annotations

import argparse
import datetime
import json
import sys
import time
from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--start", type=datetime.date.fromisoformat, required=True)
    parser.add_argument("--days", type=int, required=True, help="dates given to bulk_complete")
    parser.add_argument("--loop-days", type=int, required=True, help="dates checked one complete() at a time")
    args = parser.parse_args(argv)

    t0 = time.monotonic()
    from luigi_pipelines.pipelines.transactions import LoadTransactions
    imported = time.monotonic()
    dates = [args.start + datetime.timedelta(days=n) for n in range(args.days)]
    done = LoadTransactions.bulk_complete(dates)
    bulk = time.monotonic()
    looped = sum(LoadTransactions(date=d).complete() for d in dates[: args.loop_days])
    loop = time.monotonic()
    print(json.dumps({
        "import_s": imported - t0,
        "bulk_complete_s": bulk - imported, "bulk_complete_dates": len(dates), "bulk_complete_done": len(done),
        "loop_s": loop - bulk, "loop_dates": min(args.loop_days, len(dates)), "loop_done": looped,
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
