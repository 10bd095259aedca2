"""The ``luigi-pipelines`` command: the embedded demo, a status report of loaded partitions and backfills.

Loading itself is done with luigi's own command line (``luigi --module ... RangeDaily ...``); ``backfill``
only builds that command from a window of whole UTC days and runs it.
"""
from __future__ import annotations

import argparse
import datetime
import sys
from collections.abc import Sequence

from . import backfill as backfill_command
from . import db
from .config import database_settings
from .partitions import date_range


def cmd_demo(args: argparse.Namespace) -> int:
    from . import demo

    return demo.run()


def cmd_status(args: argparse.Namespace) -> int:
    """Print the marker rows of one pipeline and the dates of [start, stop) still missing."""
    if bool(args.start) != bool(args.stop):
        raise SystemExit("luigi-pipelines status: give both --start and --stop, or neither")
    cls = backfill_command.task_class(args.module, args.task)
    probe = cls(date=args.start or datetime.date.today())
    with db.connect(database_settings()) as conn:
        rows = db.marker_summary(conn, probe.marker_table, probe.target_table)
    wanted = date_range(args.start, args.stop) if args.start and args.stop else []
    wanted_set = set(wanted)
    shown = [r for r in rows if not wanted or r[0] in wanted_set]
    print(f"{probe.target_table}: {len(shown)} partitions loaded")
    print(f"{'date':<12}{'rows':>12}{'MiB':>10}{'objects':>9}  finished")
    for day, loaded, size, objects, finished, host in shown:
        print(f"{day.isoformat():<12}{loaded:>12}{size / 2**20:>10.1f}{objects:>9}  {finished:%Y-%m-%d %H:%M:%S%z} {host}")
    # What is missing is decided as backfill decides it: the task class's bulk_complete, one query.
    missing = backfill_command.incomplete(args.module, args.task, wanted)
    if wanted:
        print(f"missing in [{args.start}, {args.stop}): {backfill_command.format_dates(missing)}")
    return 1 if missing else 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="luigi-pipelines", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="run the example backfill on a local PostgreSQL and S3 it starts itself")
    demo.set_defaults(func=cmd_demo)

    status = sub.add_parser("status", help="show the loaded partitions of a pipeline (exit 1 if dates are missing)")
    status.add_argument("--module", default="luigi_pipelines.pipelines.transactions", help="pipeline module")
    status.add_argument("--task", default="LoadTransactions", help="load task class in the module")
    status.add_argument("--start", type=datetime.date.fromisoformat, help="first date to check (inclusive)")
    status.add_argument("--stop", type=datetime.date.fromisoformat, help="last date to check (exclusive)")
    status.set_defaults(func=cmd_status)

    backfill = sub.add_parser(
        "backfill", help="run luigi's RangeDaily over whole UTC days (--days-back N or --start/--stop), "
        "on luigid or --local-scheduler, with an exit code for cron",
        description="Run luigi's RangeDaily over a window of whole UTC days and return an exit code for cron.")
    backfill_command.add_arguments(backfill)
    backfill.set_defaults(func=backfill_command.main)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
