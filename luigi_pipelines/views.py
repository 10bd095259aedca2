"""Pure: the status calendar of ``states.Calendar``s as terminal text, as JSON, and as one self-contained HTML page.

Rendering only: what a date's state is was decided by ``states``. The HTML page carries its CSS and
script inline and fetches nothing; every value from the database is escaped.
"""
from __future__ import annotations

import calendar
import dataclasses
import datetime
import html
import json
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from .freshness import duration
from .states import CHECK_FAILED, EXPIRED, FAILED, LOADED, MISSING, STALE, Calendar, DateState
from .status_page import CSS, PAGE, SCRIPT

_MIB = 1024 * 1024
# (mark, ANSI colour) per state; a loaded date with rejected rows has its own mark
_MARKS = {LOADED: ("#", "32"), "rejects": ("R", "33"), STALE: ("S", "35"), FAILED: ("X", "1;31"),
          CHECK_FAILED: ("C", "1;34"), MISSING: (".", "2"), EXPIRED: ("-", "2")}
_LEGEND = ((LOADED, "loaded"), ("rejects", "loaded, rows rejected"), (STALE, "stale (sources changed since the load)"),
           (FAILED, "failed (last attempt)"), (CHECK_FAILED, "check failed, previous load kept"),
           (MISSING, "missing (no data yet, or not loaded)"), (EXPIRED, "expired (dropped by keep)"))
# without --check-sources no date is stale because none was checked: the legend says so
_NOT_CHECKED = "stale not checked (--check-sources)"
_COUNTED = ((LOADED, "loaded"), (STALE, "stale"), (FAILED, "failed"), (CHECK_FAILED, "check failed"),
            (MISSING, "missing"), (EXPIRED, "expired"))
_KEPT = "green edge: a reload failed, the previous load is kept"
EXIT_MEANINGS = {0: "every date is loaded", 21: "dates are missing", 22: "loaded dates are stale (sources changed)",
                 28: "a table is late (its newest partition is older than its freshness allows)",
                 30: "a date's last attempt failed",
                 31: "a date's last attempt failed a data check (its previous load, if any, is kept)"}


def kind(day: DateState) -> str:
    """The state as shown: ``rejects`` for a loaded date with rows rejected, else the state."""
    return "rejects" if day.state == LOADED and day.rejected else day.state


def legend(cal: Calendar) -> tuple[tuple[str, str], ...]:
    """(kind, label) of each mark; the stale one says when the sources were not checked."""
    return tuple((k, _NOT_CHECKED if k == STALE and not cal.sources_checked else label) for k, label in _LEGEND
                 if k != EXPIRED or cal.count(EXPIRED))


# -- terminal -----------------------------------------------------------------------------------------------


def text(calendars: Sequence[Calendar], color: bool = False, listed: int = 10) -> str:
    """A calendar per pipeline: a line per month, a mark per day, a legend, the totals and the problems."""
    return "\n\n".join(_text_one(c, color, listed) for c in calendars)


def _text_one(cal: Calendar, color: bool, listed: int) -> str:
    """A line per row of the grain's grid: of a daily task a month of days, of an hourly one a day of hours (and
    how many of them are in each state), of a monthly one a year of months."""
    head = f"{cal.task}  {cal.key}  [{cal.start}, {cal.stop})"
    lines = _day_grid(cal, color) if cal.unit == "day" else _grid(cal, color)
    lines = [head + ("" if cal.unit == "day" else f"  by the {cal.unit}"), *lines]
    lines.append("  " + "   ".join(f"{_paint(_MARKS[k][0], _MARKS[k][1], color)} {label}" for k, label in legend(cal)))
    lines.append("  " + _totals_line(cal))
    if cal.freshness is not None and cal.freshness.allowed is not None:  # a late table: a red line of its own
        fresh = cal.freshness
        by = f"by {duration(fresh.lateness)}: " if fresh.lateness is not None else ""
        said = f"late    {by}" if fresh.late else "fresh   "
        lines.append("  " + _paint(said + fresh.describe(), "1;31", color and fresh.late))
    lines += _problem_lines(cal, listed)
    return "\n".join(lines)


def _day_grid(cal: Calendar, color: bool) -> list[str]:
    lines = [("         " + "".join(str(d // 10) if d % 10 == 0 else " " for d in range(1, 32))).rstrip(),
             "         " + "".join(str(d % 10) for d in range(1, 32))]
    by_date = {d.date: d for d in cal.days}
    for year, month in _months(cal.start, cal.stop):
        marks = [_mark(by_date.get(datetime.date(year, month, n)), color)
                 for n in range(1, calendar.monthrange(year, month)[1] + 1)]
        lines.append(f"{year}-{month:02d}  " + "".join(marks).rstrip())
    return lines


# Of a grain other than daily: (row of a value, its column, the columns' numbers) from its name: an hour
# 2019-02-01T13 is column 13 of the day 2019-02-01; a month 2019-02 column 2 of the year 2019.
_GRIDS = {"hour": (lambda name: (name[:10], int(name[11:13])), range(24)),
          "month": (lambda name: (name[:4], int(name[5:7])), range(1, 13))}
# Of a grain whose unit has no grid of its own (a grain of the user's): a row per partition, one mark each.
_LIST = (lambda name: (name, 0), range(1))


def rows_of(cal: Calendar) -> dict[str, dict[int, DateState]]:
    """The partitions of ``cal`` (hourly or monthly) by row (a day, a year), then by column (the hour, the month)."""
    place, _ = _GRIDS.get(cal.unit, _LIST)
    rows: dict[str, dict[int, DateState]] = {}
    for day in cal.days:
        row, column = place(day.name)
        rows.setdefault(row, {})[column] = day
    return rows


def _grid(cal: Calendar, color: bool) -> list[str]:
    _, columns = _GRIDS.get(cal.unit, _LIST)
    rows = rows_of(cal)
    indent = " " * (max((len(r) for r in rows), default=4) + 2)
    lines = [(indent + "".join(str(c // 10) if c % 10 == 0 else " " for c in columns)).rstrip(),
             indent + "".join(str(c % 10) for c in columns)]
    for row, cells in rows.items():
        marks = "".join(_mark(cells.get(c), color) for c in columns)
        counts = Counter(kind(d) if kind(d) != "rejects" else LOADED for d in cells.values())
        said = ", ".join(f"{counts[k]} {label}" for k, label in _COUNTED if counts[k])
        lines.append((f"{row}  {marks}" + (f"  {said}" if cal.unit == "hour" else "")).rstrip())
    return lines


def summary(cells: Sequence[DateState]) -> str:
    """The kind a day of hours is shown as: its worst hour's (failed, stale, missing, rows rejected), else loaded."""
    kinds = {kind(d) for d in cells}
    return next((k for k in (CHECK_FAILED, FAILED, STALE, MISSING, "rejects") if k in kinds), LOADED)


def _months(start: datetime.date, stop: datetime.date) -> Iterator[tuple[int, int]]:
    year, month = start.year, start.month
    last = stop - datetime.timedelta(days=1)
    while (year, month) <= (last.year, last.month):
        yield year, month
        year, month = (year + 1, 1) if month == 12 else (year, month + 1)


def _mark(day: DateState | None, color: bool) -> str:
    if day is None:
        return " "  # outside the window
    mark, code = _MARKS[kind(day)]
    return _paint(mark, code, color)


def _paint(mark: str, code: str, color: bool) -> str:
    return f"\x1b[{code}m{mark}\x1b[0m" if color else mark


def _totals_line(cal: Calendar) -> str:
    t = cal.totals
    rejects = f" ({t.with_rejects} with {t.rejected:,} rows rejected)" if t.with_rejects else ""
    stale = f", {t.stale} stale" if cal.sources_checked else ""
    stale += f", {t.check_failed} check failed" if t.check_failed else ""
    loaded = f"{t.rows:,} rows, {t.bytes / _MIB:,.1f} MiB loaded" if cal.table_rows is None else (
        f"{t.rows:,} rows, {t.bytes / _MIB:,.1f} MiB read and merged by key; the table holds {cal.table_rows:,} rows")
    expired = f", {cal.count(EXPIRED)} expired" if cal.count(EXPIRED) else ""
    return (f"{t.dates} {_units(cal)}: {t.loaded} loaded{rejects}{stale}, {t.failed} failed, {t.missing} missing"
            f"{expired}; {loaded}")


def _problem_lines(cal: Calendar, listed: int) -> list[str]:
    lines = []
    failed = cal.of(FAILED)
    for day in failed[:listed]:
        kept = "; the previous load is kept" if day.kept_previous else ""
        lines.append(f"  failed  {day.name}  {day.error_class} on {day.failed_host}, {_when(day.failed_at)}, "
                     f"{day.attempts} attempt{_s(day.attempts)}{kept}")
        lines.append(f"          {_short(day.error or '', 200)}")
        if day.s3_key and day.s3_key not in (day.error or ""):
            lines.append(f"          object: {day.s3_key}")
    if len(failed) > listed:
        lines.append(f"  ... and {len(failed) - listed} more failed {_units(cal)} (--json or --html lists them all)")
    lines += _check_lines(cal, listed)
    stale = cal.of(STALE)
    lines += [f"  stale   {day.name}  {_short(day.change or 'sources changed since the load', 200)}"
              for day in stale[:listed]]
    if len(stale) > listed:
        lines.append(f"  ... and {len(stale) - listed} more stale {_units(cal)} (--json or --html lists them all)")
    lines += [f"  skipped {day.name}  {_left_out(day)}" for day in cal.days if day.skipped][:listed]
    missing = cal.of(MISSING)
    if missing:
        shown = ", ".join(d.name for d in missing[:listed]) + (" ..." if len(missing) > listed else "")
        lines.append(f"  missing {len(missing)}: {shown}")
    return lines


def _check_lines(cal: Calendar, listed: int) -> list[str]:
    """Each date whose last attempt a data check refused, with the checks and their figures; each loaded date with
    a check of severity warn that found violations (committed)."""
    lines = []
    for day in cal.of(CHECK_FAILED)[:listed]:
        kept = "the previous load is kept" if day.kept_previous else "nothing was loaded before"
        lines.append(f"  check   {day.name}  check failed, {kept}; on {day.failed_host}, {_when(day.failed_at)}, "
                     f"{day.attempts} attempt{_s(day.attempts)}")
        lines.append(f"          {_short(day.error or '', 300)}")
    warned = [d for d in cal.days if d.warned and d.rows is not None]
    lines += [f"  warned  {day.name}  {_warning(day)}" for day in warned[:listed]]
    return lines


def _warning(day: DateState) -> str:
    """``row_count(relative): 1 violation in 10 rows (held to rows >= 50)``: the warn checks that found violations."""
    return _short("; ".join(f"{c['check']}: {c['violations']:,} violation{_s(c['violations'])} in {c['rows']:,} rows "
                            f"(held to {c['bound']})" for c in day.warned), 300)


def _units(cal: Calendar) -> str:
    return "dates" if cal.unit == "day" else f"{cal.unit}s"


def _left_out(day: DateState) -> str:
    """``2 objects left out by keys: d/b.csv.gz, d/c.json``: the marker's skipped keys (the first few)."""
    more = ", ..." if day.skipped > len(day.skipped_keys) else ""
    return f"{day.skipped} object{_s(day.skipped)} left out by keys: {', '.join(day.skipped_keys)}{more}"


def _short(message: str, limit: int) -> str:
    return message if len(message) <= limit else message[: limit - 3] + "..."


def _when(moment: datetime.datetime | None) -> str:
    if moment is None:
        return "?"
    return moment.astimezone(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def _s(count: int | None) -> str:
    return "" if count == 1 else "s"


# -- JSON -----------------------------------------------------------------------------------------------------


def as_json(calendars: Sequence[Calendar], code: int) -> dict[str, Any]:
    """Everything the calendar shows, for scripts: per pipeline its window, totals and every date."""
    return {
        "exit_code": code,
        "meaning": EXIT_MEANINGS.get(code, ""),
        "pipelines": [{
            "task": c.task, "key": c.key, "start": c.start.isoformat(), "stop": c.stop.isoformat(),
            **({} if c.unit == "day" else {"unit": c.unit}),
            "sources_checked": c.sources_checked, "totals": _totals_json(c),
            **({} if c.freshness is None else {"freshness": c.freshness.as_json()}),
            "dates": [_date_json(d) for d in c.days],
        } for c in calendars],
    }


def _totals_json(cal: Calendar) -> dict[str, Any]:
    totals = dataclasses.asdict(cal.totals)
    if not cal.sources_checked:
        totals["stale"] = None  # not checked: unknown, not zero
    if cal.table_rows is not None:  # a merge: "rows" were read from the dates' objects; the table holds these
        totals["table_rows"] = cal.table_rows
    return totals


def _date_json(day: DateState) -> dict[str, Any]:
    first = datetime.date(day.date.year, day.date.month, day.date.day).isoformat()  # of an hour too
    out: dict[str, Any] = {"date": first, "state": day.state, "rejected": day.rejected}
    if day.label:  # not daily: the partition as the command line writes it (2019-02-01T13, 2019-02)
        out = {"partition": day.label, **out}
    for name in ("rows", "bytes", "objects", "seconds", "host", "error_class", "error", "s3_key", "failed_host",
                 "attempts", "change"):
        value = getattr(day, name)
        if value is not None:
            out[name] = value
    for name in ("finished_at", "failed_at"):
        moment = getattr(day, name)
        if moment is not None:
            out[name] = moment.astimezone(datetime.timezone.utc).isoformat()
    if day.kept_previous:
        out["kept_previous"] = True
    if day.rows is not None:
        out["skipped"] = day.skipped
    if day.skipped:
        out["skipped_keys"] = list(day.skipped_keys)
    if day.checks:
        out["checks"] = list(day.checks)
        out["warned"] = [c["check"] for c in day.warned]
    return out


# -- HTML -------------------------------------------------------------------------------------------------------


def page(calendars: Sequence[Calendar], code: int, generated_at: datetime.datetime) -> str:
    """One self-contained HTML page: a calendar per pipeline, a tooltip and a detail panel per date."""
    data = json.dumps({str(n): {d.name: _date_json(d) for d in c.days} for n, c in enumerate(calendars)})
    sections = "\n".join(_section(n, c) for n, c in enumerate(calendars))
    return PAGE.format(
        css=CSS, js=SCRIPT, sections=sections, generated=html.escape(_when(generated_at)),
        code=code, meaning=html.escape(EXIT_MEANINGS.get(code, "")),
        # JSON inside <script>: "<" escaped, so no value can close the element or open a comment
        data=data.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026"),
    )


def _section(n: int, cal: Calendar) -> str:
    months = _grid_html(cal)
    keys = "".join(f'<span class="key"><span class="swatch {k}"></span>{html.escape(label)}</span>'
                   for k, label in legend(cal))
    if any(d.kept_previous for d in cal.days):
        keys += f'<span class="key"><span class="swatch failed kept"></span>{html.escape(_KEPT)}</span>'
    return (f'<section class="pipeline" data-pipeline="{n}" data-task="{html.escape(cal.task)}">'
            f'<h2>{html.escape(cal.task)} <small>{html.escape(cal.key)}, [{cal.start}, {cal.stop})</small></h2>'
            f'<p class="totals">{html.escape(_totals_line(cal))}</p>{_freshness_html(cal)}<p class="legend">{keys}</p>'
            f'<div class="months">{months}</div>'
            f'<div class="detail" id="detail-{n}" aria-live="polite">Select a date for its details.</div>'
            f'{_html_lists(cal)}</section>')


def _freshness_html(cal: Calendar) -> str:
    """A task that declares ``freshness``: whether the table is fresh, or late (in red) and by how much."""
    fresh = cal.freshness
    if fresh is None or fresh.allowed is None:
        return ""
    said = html.escape(f"{fresh.verdict()}: {fresh.describe()}")
    return f'<p class="freshness{" late" if fresh.late else ""}">{said}</p>'


def _html_lists(cal: Calendar) -> str:
    """The failed dates with their errors, the stale ones with what changed."""
    failed = "".join(
        f'<li><b>{d.name}</b> {html.escape(d.error_class or "")}: {html.escape(d.error or "")}'
        f'{" (the previous load is kept)" if d.kept_previous else ""}</li>' for d in (*cal.of(CHECK_FAILED), *cal.of(FAILED)))
    stale = "".join(f'<li><b>{d.name}</b> {html.escape(d.change or "sources changed since the load")}</li>'
                    for d in cal.of(STALE))
    return ((f'<h3>Failed</h3><ul class="failures">{failed}</ul>' if failed else "") +
            (f'<h3>Stale</h3><ul class="stale-dates">{stale}</ul>' if stale else ""))


def _grid_html(cal: Calendar) -> str:
    """Of a daily task a table per month; of an hourly one the same, a day opening to its 24 hours (a strip of them
    below the months, shown when the day is chosen); of a monthly one a table per year."""
    if cal.unit == "month":
        return "\n".join(_year_table(year, cells) for year, cells in rows_of(cal).items())
    if cal.unit not in ("day", *_GRIDS):  # a grain of the user's: its partitions in a row, by name
        return '<div class="hours list">' + "".join(_hour(d, d.name) for d in cal.days) + "</div>"
    if cal.unit == "day":
        by_date = {d.date: d for d in cal.days}
        return "\n".join(_month_table(year, month, lambda day, m: _cell(day, m, by_date.get(day)))
                         for year, month in _months(cal.start, cal.stop))
    hours = rows_of(cal)
    tables = "\n".join(_month_table(year, month, lambda day, m: _day_of_hours(day, m, hours.get(str(day))))
                       for year, month in _months(cal.start, cal.stop))
    return tables + "".join(f'<div class="hours" data-day="{day}" hidden>{"".join(_hour(d) for d in cells.values())}'
                            "</div>" for day, cells in hours.items())


def _month_table(year: int, month: int, cell: Callable[[datetime.date, int], str]) -> str:
    weeks = calendar.Calendar(firstweekday=0).monthdatescalendar(year, month)
    rows = "".join("<tr>" + "".join(cell(day, month) for day in week) + "</tr>" for week in weeks)
    head = "".join(f"<th>{name}</th>" for name in ("Mo", "Tu", "We", "Th", "Fr", "Sa", "Su"))
    return (f'<table class="month"><caption>{calendar.month_name[month]} {year}</caption>'
            f"<thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>")


def _cell(day: datetime.date, month: int, state: DateState | None) -> str:
    if day.month != month:
        return '<td class="pad"></td>'
    if state is None:
        return f'<td class="out" title="{day}: outside the window">{day.day}</td>'
    kept = " kept" if state.kept_previous else ""
    return (f'<td class="day {kind(state)}{kept}" data-date="{day}" data-state="{state.state}" tabindex="0" '
            f'title="{html.escape(tooltip(state))}">{day.day}</td>')


def _day_of_hours(day: datetime.date, month: int, hours: dict[int, DateState] | None) -> str:
    """A day of an hourly task: shown as its worst hour, saying how many hours are in each state; it opens to them."""
    if day.month != month:
        return '<td class="pad"></td>'
    if hours is None:
        return f'<td class="out" title="{day}: outside the window">{day.day}</td>'
    shown = summary(list(hours.values()))
    counts = Counter(d.state for d in hours.values())
    said = ", ".join(f"{counts[k]} {label}" for k, label in _COUNTED if counts[k])
    return (f'<td class="day {shown}" data-date="{day}" data-state="{shown}" data-hours="{day}" tabindex="0" '
            f'title="{day}: {len(hours)} hours: {said}">{day.day}</td>')


def _hour(state: DateState, label: str | None = None) -> str:
    kept = " kept" if state.kept_previous else ""
    return (f'<span class="hour {kind(state)}{kept}" data-date="{state.name}" data-state="{state.state}" tabindex="0" '
            f'title="{html.escape(tooltip(state))}">{html.escape(label or state.name[11:13])}</span>')


def _year_table(year: str, months: dict[int, DateState]) -> str:
    """A monthly task's year: a cell per month."""
    cells = "".join(f'<td class="out" title="{year}-{m:02d}: outside the window">{calendar.month_abbr[m]}</td>'
                    if m not in months else
                    f'<td class="day {kind(months[m])}{" kept" if months[m].kept_previous else ""}" data-date='
                    f'"{months[m].name}" data-state="{months[m].state}" tabindex="0" '
                    f'title="{html.escape(tooltip(months[m]))}">{calendar.month_abbr[m]}</td>' for m in range(1, 13))
    return f'<table class="month year"><caption>{year}</caption><tbody><tr>{cells}</tr></tbody></table>'


def tooltip(day: DateState) -> str:
    """What a date's tooltip says, on a few short lines."""
    lines = [f"{day.name}: {day.state}" + (", rows rejected" if kind(day) == "rejects" else "")]
    if day.rows is not None:
        lines.append(f"{day.rows:,} rows, {(day.bytes or 0) / _MIB:,.2f} MiB, {day.objects} objects, "
                     f"{day.seconds or 0:.1f} s")
        lines.append(f"loaded {_when(day.finished_at)} on {day.host}")
        if day.rejected:
            lines.append(f"{day.rejected:,} rows rejected")
        if day.skipped:
            lines.append(_left_out(day))
        if day.warned:
            lines.append(f"check warned: {_warning(day)}")
    if day.state == CHECK_FAILED:
        lines.append("check failed, " + ("previous load kept" if day.kept_previous else "nothing loaded before"))
    if day.state in (FAILED, CHECK_FAILED):
        lines.append(f"{day.error_class}: {_short(day.error or '', 200)}")
        if day.s3_key:
            lines.append(f"object: {day.s3_key}")
        lines.append(f"failed {_when(day.failed_at)} on {day.failed_host} ({day.attempts} attempt{_s(day.attempts)})")
        if day.kept_previous:
            lines.append("the previous load is kept")
    if day.state == STALE:
        lines.append(f"stale: sources changed since the load: {_short(day.change or '', 200)}".rstrip(": "))
    if day.state == MISSING:
        lines.append("not loaded: no data yet, or not run")
    return "\n".join(lines)
