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
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from . import backfill, db, metrics, views
from .config import database_settings, load_settings
from .newest import allowance_of, freshness_of
from .staleness import one_stale_check
from .states import CHECK_FAILED, EXIT_CHECK_FAILED, LOADED, Calendar, date_states, exit_code, with_expired, with_stale

UTC = datetime.timezone.utc


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_selection(parser)
    out = parser.add_argument_group("output (default: the calendar on stdout)")
    out.add_argument("--json", action="store_true", help="print JSON instead of the calendar")
    out.add_argument("--html", type=Path, metavar="FILE", help="also write a self-contained HTML page to FILE")
    out.add_argument("--color", choices=("auto", "always", "never"), default="auto",
                     help="colour the calendar: auto (on a terminal, unless NO_COLOR is set), always or never")
    out.add_argument("--prometheus", action="store_true",
                     help="print per-table metrics in Prometheus' text format instead of the calendar")
    out.add_argument("--textfile", type=Path, metavar="FILE",
                     help="also write those metrics to FILE atomically (node_exporter's textfile collector: *.prom)")


def add_selection(parser: argparse.ArgumentParser) -> None:
    """The pipelines and the window (``status``'s, and ``metrics-serve``'s)."""
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


def main(args: argparse.Namespace) -> int:
    now = args.now or datetime.datetime.now(UTC)
    try:
        calendars = gather(args, now)
    except ValueError as exc:
        print(f"luigi-pipelines status: {exc}", file=sys.stderr)
        return 2
    if calendars is None:
        print("luigi-pipelines status: nothing on record yet; give --start (and --stop) or --days-back", file=sys.stderr)
        return 0
    code = exit_code(calendars)
    if args.textfile:
        metrics.write_textfile(args.textfile, metrics.exposition(calendars, code))
    if args.prometheus:
        print(metrics.exposition(calendars, code), end="")
    elif args.json:
        print(json.dumps(views.as_json(calendars, code), indent=2))
    else:
        print(views.text(calendars, color=_use_color(args.color)))
    if args.html:
        args.html.write_text(views.page(calendars, code, now), encoding="utf-8")
        print(f"wrote {args.html.resolve()}", file=sys.stderr)
    return code


def gather(args: argparse.Namespace, now: datetime.datetime) -> list[Calendar] | None:
    """The calendar of each ``--task`` over the window the arguments give (``add_selection``) at ``now``; ``None``
    when no window is given and nothing is on record. A window that is wrong is a ``ValueError``."""
    tasks = args.tasks or ["LoadTransactions"]
    window = _window(args, now, tasks)
    if window is None:
        return None
    with one_stale_check():  # a transform's check asks its upstream's again: each date is listed once
        return [calendar_of(args.module, task, *window, check_sources=args.check_sources,
                            today=now.astimezone(UTC).date(), now=now) for task in tasks]


def calendar_of(module: str, task: str, start: datetime.date, stop: datetime.date,
                check_sources: bool = False, today: datetime.date | None = None,
                now: datetime.datetime | None = None) -> Calendar:
    """The states of ``module.task``'s partitions in ``[start, stop)`` (its dates, hours or months; of a monthly
    task, the months that meet the window and are over before ``today``; a daily or hourly one's as the window
    says, today's too when a window without ``--stop`` reaches it): one query per partition key and table
    (an hourly task has one per hour of the day), plus ``bulk_complete``; with ``check_sources``, the loaded
    partitions whose sources changed since are stale (``stale_changes``), and a failed reload whose sources match
    the previous load again is loaded (the check supersedes its failure record). With ``now``, the table's
    newest loaded partition and, when the task declares ``freshness``, whether it is late (one query more)."""
    cls = backfill.task_class(module, task)
    allowed = allowance_of(cls)
    grain = cls.grain
    values = grain.covering(start, stop)
    if today is not None and grain.unit == "month":  # the current month is not over: not missing yet
        values = [v for v in values if grain.stop_of(v) <= today]
    probe = backfill.probe_of(cls, values[0] if values else start, reload_changed=check_sources)
    with db.connect(database_settings()) as conn:
        markers, failed = _recorded(conn, probe, values)
        table_rows = db.count_rows(conn, probe.table_key) if probe.is_merge else None
        freshness = freshness_of(conn, probe, now, allowed) if now is not None else None
        expired = probe.declared.expired(conn, values) if values else []
    not_loaded = backfill.incomplete(module, task, values)  # what backfill would load: the same one query
    days = with_expired(date_states(values, not_loaded, markers, failed, None if grain.unit == "day" else grain.describe),
                        expired)
    if check_sources:  # the loaded partitions, and those whose reload failed (the previous load kept)
        loaded = [d.date for d in days if d.state == LOADED or d.kept_previous]
        days = with_stale(days, probe.stale_changes(loaded) if loaded else {}, checked=loaded)
    return Calendar(task, str(probe.table_key), start, stop, days, sources_checked=check_sources,
                    table_rows=table_rows, unit=grain.unit, freshness=freshness)


def check_failed_of(module: str, task: str, values: Sequence[Any]) -> list[Any]:
    """Of ``values`` (partition values of ``module.task``, in order), those whose last attempt a data check refused
    (``check_failed`` in ``status``): what turns a backfill's exit 30 into 31."""
    if not values:
        return []
    grain = backfill.task_class(module, task).grain
    found = calendar_of(module, task, grain.date_of(values[0]), grain.stop_of(values[-1]))
    wanted = set(values)
    return [d.date for d in found.days if d.state == CHECK_FAILED and d.date in wanted]


def check_failed_verdict(module: str, task: str, code: int, why: str, wanted: Sequence[Any], grain: Any
                         ) -> tuple[int, str]:
    """A backfill's verdict: 31 instead of luigi's 30 when a partition of ``wanted`` failed a data check on its last
    attempt, as ``status`` says it, and the line naming them; else ``code`` and ``why`` as they were."""
    try:
        refused = check_failed_of(module, task, wanted)
    except Exception:  # noqa: BLE001 - the database cannot say: luigi's code stands
        return code, why
    if not refused:
        return code, why
    unit = "date" if grain.unit == "day" else grain.unit
    said = (f"{unit}s whose load a data check refused (their previous load kept): "
            f"{backfill.format_dates(refused, 10, grain)}: exit {EXIT_CHECK_FAILED}")
    return EXIT_CHECK_FAILED, f"{why.rsplit(': exit', 1)[0]}; {said}" if why else f"luigi exited {code}; {said}"


def _recorded(conn: Any, probe: Any, values: Sequence[Any]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The marker and failure rows of ``values``' partitions, each with its partition ``value``: one query of each
    table per partition key (a daily or monthly task has one key, an hourly one a key per hour of the day)."""
    if not values:
        return [], []
    value_of = dict(zip(probe.partitions_of(values), values, strict=True))
    first, stop = probe.grain.date_of(values[0]), probe.grain.stop_of(values[-1])
    failures = load_settings().failures
    found: tuple[list[dict[str, Any]], list[dict[str, Any]]] = ([], [])
    for key in dict.fromkeys(key for key, _ in value_of):
        for rows, window_rows in zip(found, (db.marker_window(conn, probe.marker_table, key, first, stop),
                                             db.failures_window(conn, failures, key, first, stop)), strict=True):
            rows += [{**row, "value": value_of[key, row["partition_date"]]} for row in window_rows
                     if (key, row["partition_date"]) in value_of]
    return found


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
    """The first and last date with a marker or a failure row of any of the task's partition keys (an hourly task:
    each hour's)."""
    cls = backfill.task_class(module, task)
    day = datetime.date(2000, 1, 1)
    values = cls.grain.covering(day, day + datetime.timedelta(days=1))
    probe = backfill.probe_of(cls, values[0])
    with db.connect(database_settings()) as conn:
        spans = [db.recorded_span(conn, probe.marker_table, load_settings().failures, key)
                 for key in dict.fromkeys(key for key, _ in probe.partitions_of(values))]
    found = [s for s in spans if s]
    return (min(s[0] for s in found), max(s[1] for s in found)) if found else None


def _use_color(choice: str) -> bool:
    if choice != "auto":
        return choice == "always"
    return sys.stdout.isatty() and not os.environ.get("NO_COLOR")
