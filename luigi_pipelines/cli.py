"""The ``luigi-pipelines`` command: the embedded demo, a status report of loaded partitions, backfills, drafted classes.

``infer`` prints a task class drafted from a sample of an S3 prefix (``sampling``).

Loading itself is done with luigi's own command line (``luigi --module ... RangeDaily ...``); ``backfill``
only builds that command from a window of whole UTC days and runs it.
"""
from __future__ import annotations

import argparse
import importlib.metadata
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import psycopg2

from . import backfill as backfill_command
from . import metrics_serve as metrics_serve_command
from . import sampling
from . import status as status_command
from .errors import ConfigurationError, PipelineError
from .reporting import one_line

# Exit codes of the command itself (luigi's [retcode] codes pass through backfill unchanged): README, "Exit codes".
USAGE = 2  # the command line or a declaration is wrong; nothing ran
CHECK_FAILED = 35  # PostgreSQL (or S3) could not be asked; nothing ran (luigi's scheduling_error: its check fails too)
INTERNAL = 40  # anything else, a bug: one line here, and the traceback with LUIGI_PIPELINES_TRACEBACK=1


def cmd_demo(args: argparse.Namespace) -> int:
    from .devstack import demo

    return demo.run(html=args.html)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="luigi-pipelines", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"%(prog)s {version()}")
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="run the example backfill on a local PostgreSQL and S3 it starts itself, "
                          "and show the status calendar")
    demo.add_argument("--html", type=Path, default=Path("demo-status.html"),
                      help="where to write the status page (default: demo-status.html in the current directory)")
    demo.set_defaults(func=cmd_demo)

    status = sub.add_parser(
        "status", help="each date's state (loaded, stale, failed, check failed, missing) as a calendar, JSON or an HTML "
        "page; exit 0 all loaded, 21 dates missing, 22 dates stale (--check-sources), 28 a table late, 30 a date's last "
        "attempt failed, 31 a data check refused a date's last attempt (previous load kept); --prometheus for metrics",
        description="Each date's state of one or more pipelines (loaded, stale, failed, check failed, missing; rows "
        "rejected) over a window. Exit 0: every date is loaded (and, with --check-sources, fresh); 21: dates are "
        "missing; 22: loaded dates are stale, their sources changed since the load (only with --check-sources); 28: a "
        "table is late, its newest partition older than its task's freshness allows; 30: a date's last attempt "
        "failed; 31: a data check refused a date's last attempt, its previous load is kept; the highest applies. 2: "
        "the command line or the task's declaration is wrong; 35: PostgreSQL cannot be reached.")
    status_command.add_arguments(status)
    status.set_defaults(func=status_command.main)

    backfill = sub.add_parser(
        "backfill", help="run luigi's RangeDaily over whole UTC days (--days-back N or --start/--stop), "
        "on luigid, --local-scheduler or --processes N local processes, with an exit code for cron",
        description="Run luigi's RangeDaily over a window of whole UTC days and return an exit code for cron.")
    backfill_command.add_arguments(backfill)
    backfill.set_defaults(func=backfill_command.main)

    infer = sub.add_parser(
        "infer", help="print a task class drafted from a sample of an S3 prefix's first object (CSV, JSON lines, "
        "Parquet): columns, types, the date source; exit 2 a URL that names no object of the format, 35 S3 cannot be asked",
        description="Read the first object under an S3 prefix as a stream (at most N records; a Parquet file's footer "
        "and first batch) and print a LoadPartition class: columns with types PostgreSQL accepts for every sampled "
        "value, the date source guessed from the key or a column, a comment per column on what was seen.")
    sampling.add_arguments(infer)
    infer.set_defaults(func=cmd_infer)
    serve = sub.add_parser(
        "metrics-serve", help="serve status's per-table metrics over HTTP for Prometheus (/metrics)",
        description="Serve the per-table metrics of `status --prometheus` at http://ADDRESS:PORT/metrics, computed "
        "on a scrape and kept for --cache-s seconds.")
    metrics_serve_command.add_arguments(serve)
    serve.set_defaults(func=metrics_serve_command.main)
    return parser


def cmd_infer(args: argparse.Namespace) -> int:
    from .config import s3_settings

    return sampling.main(args, s3_settings())


def version() -> str:
    """The installed package's version, from its metadata."""
    try:
        return importlib.metadata.version("luigi-pipelines")
    except importlib.metadata.PackageNotFoundError:
        return "unknown (not installed)"


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_command(f"luigi-pipelines {args.command}", lambda: int(args.func(args)))


def run_command(name: str, command: Callable[[], int]) -> int:
    """``command``'s exit code; an error it raises is one line on stderr, prefixed with ``name``, and an exit code
    of the README's table (``USAGE``, ``CHECK_FAILED``, ``INTERNAL``), never a traceback."""
    try:
        return command()
    except ConfigurationError as exc:
        return _one_line(name, str(exc), USAGE)
    except PipelineError as exc:  # S3 could not be listed, ...
        return _one_line(name, str(exc), CHECK_FAILED)
    except psycopg2.OperationalError as exc:
        return _one_line(name, f"cannot reach PostgreSQL: {one_line(str(exc))}; check PGHOST/PGPORT (or [database]) and that "
                         "it is running, then rerun", CHECK_FAILED)
    except Exception as exc:
        if os.environ.get("LUIGI_PIPELINES_TRACEBACK"):
            raise
        return _one_line(name, f"unexpected {type(exc).__name__}: {exc} (LUIGI_PIPELINES_TRACEBACK=1 shows where)",
                         INTERNAL)


def _one_line(name: str, text: str, code: int) -> int:
    print(f"{name}: {one_line(text, limit=2000)}: exit {code}", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
