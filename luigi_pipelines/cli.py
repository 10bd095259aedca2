"""The ``luigi-pipelines`` command: the embedded demo, a status report of loaded partitions and backfills.

Loading itself is done with luigi's own command line (``luigi --module ... RangeDaily ...``); ``backfill``
only builds that command from a window of whole UTC days and runs it.
"""
from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from . import backfill as backfill_command
from . import status as status_command


def cmd_demo(args: argparse.Namespace) -> int:
    from .devstack import demo

    return demo.run(html=args.html)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="luigi-pipelines", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="run the example backfill on a local PostgreSQL and S3 it starts itself, "
                          "and show the status calendar")
    demo.add_argument("--html", type=Path, default=Path("demo-status.html"),
                      help="where to write the status page (default: demo-status.html in the current directory)")
    demo.set_defaults(func=cmd_demo)

    status = sub.add_parser(
        "status", help="each date's state (loaded, failed, missing) as a calendar, JSON or an HTML page; "
        "exit 0 all loaded, 21 dates missing, 30 a date's last attempt failed",
        description="Each date's state of one or more pipelines (loaded, failed, missing; rows rejected) over a "
        "window. Exit 0: every date is loaded; 21: dates are missing; 30: a date's last attempt failed.")
    status_command.add_arguments(status)
    status.set_defaults(func=status_command.main)

    backfill = sub.add_parser(
        "backfill", help="run luigi's RangeDaily over whole UTC days (--days-back N or --start/--stop), "
        "on luigid, --local-scheduler or --processes N local processes, with an exit code for cron",
        description="Run luigi's RangeDaily over a window of whole UTC days and return an exit code for cron.")
    backfill_command.add_arguments(backfill)
    backfill.set_defaults(func=backfill_command.main)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
