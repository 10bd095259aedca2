"""The ``luigi-pipelines status`` command: each date's state of one or more pipelines over a window, as a
calendar in the terminal, as JSON, or as a self-contained HTML page, with an exit code that says whether
anything in the window is missing, stale or failed.

It gathers rows (the marker and failure tables, and the task's ``bulk_complete`` through
``backfill.incomplete``, the one check of what is loaded; with ``--check-sources``, the task's
``stale_changes``, the check of the ``reload_changed`` mode); ``states`` decides, ``views`` renders.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
from pathlib import Path

from . import backfill, db, views
from .config import database_settings, load_settings
from .partitions import date_range
from .staleness import one_stale_check
from .states import LOADED, Calendar, date_states, exit_code, with_stale

UTC = datetime.timezone.utc


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--module", default="luigi_pipelines.pipelines.transactions", help="pipeline module")
    parser.add_argument("--task", action="append", dest="tasks", metavar="TASK",
                        help="partition task class in the module; repeat for several (default: LoadTransactions)")
    when = parser.add_argument_group("window (default: from the first to the last date on record)")
    when.add_argument("--days-back", type=int, help="the N days before today (UTC)")
    when.add_argument("--start", type=datetime.date.fromisoformat, help="first date (inclusive)")
    when.add_argument("--stop", type=datetime.date.fromisoformat, help="date after the last one (default: today, UTC)")
    when.add_argument("--now", type=backfill.parse_now, help="the clock: epoch seconds or ISO time (default: real clock)")
    parser.add_argument("--check-sources", action="store_true",
                        help="also compare each loaded date's sources with its marker, as the reload_changed mode does "
                        "(a load: one S3 listing per loaded date; a transform: its upstream markers), and show a date "
                        "whose sources changed as stale (exit 22); without it stale is not checked")
    out = parser.add_argument_group("output (default: the calendar on stdout)")
    out.add_argument("--json", action="store_true", help="print JSON instead of the calendar")
    out.add_argument("--html", type=Path, metavar="FILE", help="also write a self-contained HTML page to FILE")
    out.add_argument("--color", choices=("auto", "always", "never"), default="auto",
                     help="colour the calendar: auto (on a terminal, unless NO_COLOR is set), always or never")


def main(args: argparse.Namespace) -> int:
    tasks = args.tasks or ["LoadTransactions"]
    now = args.now or datetime.datetime.now(UTC)
    try:
        window = _window(args, now, tasks)
    except ValueError as exc:
        print(f"luigi-pipelines status: {exc}", file=sys.stderr)
        return 2
    if window is None:
        print("luigi-pipelines status: nothing on record yet; give --start (and --stop) or --days-back", file=sys.stderr)
        return 0
    with one_stale_check():  # a transform's check asks its upstream's again: each date is listed once
        calendars = [calendar_of(args.module, task, *window, check_sources=args.check_sources) for task in tasks]
    code = exit_code(calendars)
    if args.json:
        print(json.dumps(views.as_json(calendars, code), indent=2))
    else:
        print(views.text(calendars, color=_use_color(args.color)))
    if args.html:
        args.html.write_text(views.page(calendars, code, now), encoding="utf-8")
        print(f"wrote {args.html.resolve()}", file=sys.stderr)
    return code


def calendar_of(module: str, task: str, start: datetime.date, stop: datetime.date,
                check_sources: bool = False) -> Calendar:
    """The states of ``module.task``'s dates in ``[start, stop)``: one query per table, plus ``bulk_complete``;
    with ``check_sources``, the loaded dates whose sources changed since are stale (``stale_changes``), and a failed
    reload whose sources match the previous load again is loaded (the check supersedes its failure record)."""
    probe = backfill.task_class(module, task)(date=start, reload_changed=check_sources)
    key, failures = probe.partition_key, load_settings().failures
    with db.connect(database_settings()) as conn:
        markers = db.marker_window(conn, probe.marker_table, key, start, stop)
        failed = db.failures_window(conn, failures, key, start, stop)
        table_rows = db.count_rows(conn, key) if probe.is_merge else None
    dates = date_range(start, stop)
    not_loaded = backfill.incomplete(module, task, dates)  # what backfill would load: the same one query
    days = date_states(dates, not_loaded, markers, failed)
    if check_sources:  # the loaded dates, and those whose reload failed (the previous load kept)
        loaded = [d.date for d in days if d.state == LOADED or d.kept_previous]
        days = with_stale(days, probe.stale_changes(loaded) if loaded else {}, checked=loaded)
    return Calendar(task, str(key), start, stop, days, sources_checked=check_sources, table_rows=table_rows)


def _window(args: argparse.Namespace, now: datetime.datetime,
            tasks: list[str]) -> tuple[datetime.date, datetime.date] | None:
    if args.days_back is not None or args.start is not None:
        win = backfill.window(now, args.days_back, args.start, args.stop)
        return win.start, win.stop
    if args.stop is not None:
        raise ValueError("--stop needs --start")
    spans = [s for s in (_recorded_span(args.module, t) for t in tasks) if s]
    if not spans:
        return None
    return min(s[0] for s in spans), max(s[1] for s in spans) + datetime.timedelta(days=1)


def _recorded_span(module: str, task: str) -> tuple[datetime.date, datetime.date] | None:
    probe = backfill.task_class(module, task)(date=datetime.date(2000, 1, 1))
    with db.connect(database_settings()) as conn:
        return db.recorded_span(conn, probe.marker_table, load_settings().failures, probe.partition_key)


def _use_color(choice: str) -> bool:
    if choice != "auto":
        return choice == "always"
    return sys.stdout.isatty() and not os.environ.get("NO_COLOR")
