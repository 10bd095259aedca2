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
from collections.abc import Iterator, Sequence
from typing import Any

from .states import FAILED, LOADED, MISSING, STALE, Calendar, DateState

_MIB = 1024 * 1024
# (mark, ANSI colour) per state; a loaded date with rejected rows has its own mark
_MARKS = {LOADED: ("#", "32"), "rejects": ("R", "33"), STALE: ("S", "35"), FAILED: ("X", "1;31"),
          MISSING: (".", "2")}
_LEGEND = ((LOADED, "loaded"), ("rejects", "loaded, rows rejected"), (STALE, "stale (sources changed since the load)"),
           (FAILED, "failed (last attempt)"), (MISSING, "missing (no data yet, or not loaded)"))
# without --check-sources no date is stale because none was checked: the legend says so
_NOT_CHECKED = "stale not checked (--check-sources)"
_KEPT = "green edge: a reload failed, the previous load is kept"
EXIT_MEANINGS = {0: "every date is loaded", 21: "dates are missing", 22: "loaded dates are stale (sources changed)",
                 30: "a date's last attempt failed"}


def kind(day: DateState) -> str:
    """The state as shown: ``rejects`` for a loaded date with rows rejected, else the state."""
    return "rejects" if day.state == LOADED and day.rejected else day.state


def legend(cal: Calendar) -> tuple[tuple[str, str], ...]:
    """(kind, label) of each mark; the stale one says when the sources were not checked."""
    return tuple((k, _NOT_CHECKED if k == STALE and not cal.sources_checked else label) for k, label in _LEGEND)


# -- terminal -----------------------------------------------------------------------------------------------


def text(calendars: Sequence[Calendar], color: bool = False, listed: int = 10) -> str:
    """A calendar per pipeline: a line per month, a mark per day, a legend, the totals and the problems."""
    return "\n\n".join(_text_one(c, color, listed) for c in calendars)


def _text_one(cal: Calendar, color: bool, listed: int) -> str:
    lines = [f"{cal.task}  {cal.key}  [{cal.start}, {cal.stop})", ("         " + "".join(
        str(d // 10) if d % 10 == 0 else " " for d in range(1, 32))).rstrip(), "         " + "".join(
        str(d % 10) for d in range(1, 32))]
    by_date = {d.date: d for d in cal.days}
    for year, month in _months(cal.start, cal.stop):
        marks = [_mark(by_date.get(datetime.date(year, month, n)), color)
                 for n in range(1, calendar.monthrange(year, month)[1] + 1)]
        lines.append(f"{year}-{month:02d}  " + "".join(marks).rstrip())
    lines.append("  " + "   ".join(f"{_paint(_MARKS[k][0], _MARKS[k][1], color)} {label}" for k, label in legend(cal)))
    lines.append("  " + _totals_line(cal))
    lines += _problem_lines(cal, listed)
    return "\n".join(lines)


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
    loaded = f"{t.rows:,} rows, {t.bytes / _MIB:,.1f} MiB loaded" if cal.table_rows is None else (
        f"{t.rows:,} rows, {t.bytes / _MIB:,.1f} MiB read and merged by key; the table holds {cal.table_rows:,} rows")
    return f"{t.dates} dates: {t.loaded} loaded{rejects}{stale}, {t.failed} failed, {t.missing} missing; {loaded}"


def _problem_lines(cal: Calendar, listed: int) -> list[str]:
    lines = []
    failed = cal.of(FAILED)
    for day in failed[:listed]:
        kept = "; the previous load is kept" if day.kept_previous else ""
        lines.append(f"  failed  {day.date}  {day.error_class} on {day.failed_host}, {_when(day.failed_at)}, "
                     f"{day.attempts} attempt{_s(day.attempts)}{kept}")
        lines.append(f"          {_short(day.error or '', 200)}")
        if day.s3_key and day.s3_key not in (day.error or ""):
            lines.append(f"          object: {day.s3_key}")
    if len(failed) > listed:
        lines.append(f"  ... and {len(failed) - listed} more failed dates (--json or --html lists them all)")
    stale = cal.of(STALE)
    lines += [f"  stale   {day.date}  {_short(day.change or 'sources changed since the load', 200)}"
              for day in stale[:listed]]
    if len(stale) > listed:
        lines.append(f"  ... and {len(stale) - listed} more stale dates (--json or --html lists them all)")
    lines += [f"  skipped {day.date}  {_left_out(day)}" for day in cal.days if day.skipped][:listed]
    missing = cal.of(MISSING)
    if missing:
        shown = ", ".join(d.date.isoformat() for d in missing[:listed]) + (" ..." if len(missing) > listed else "")
        lines.append(f"  missing {len(missing)}: {shown}")
    return lines


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
            "sources_checked": c.sources_checked, "totals": _totals_json(c), "dates": [_date_json(d) for d in c.days],
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
    out: dict[str, Any] = {"date": day.date.isoformat(), "state": day.state, "rejected": day.rejected}
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
    return out


# -- HTML -------------------------------------------------------------------------------------------------------


def page(calendars: Sequence[Calendar], code: int, generated_at: datetime.datetime) -> str:
    """One self-contained HTML page: a calendar per pipeline, a tooltip and a detail panel per date."""
    data = json.dumps({str(n): {d.date.isoformat(): _date_json(d) for d in c.days} for n, c in enumerate(calendars)})
    sections = "\n".join(_section(n, c) for n, c in enumerate(calendars))
    return _PAGE.format(
        css=_CSS, js=_JS, sections=sections, generated=html.escape(_when(generated_at)),
        code=code, meaning=html.escape(EXIT_MEANINGS.get(code, "")),
        # JSON inside <script>: "<" escaped, so no value can close the element or open a comment
        data=data.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026"),
    )


def _section(n: int, cal: Calendar) -> str:
    by_date = {d.date: d for d in cal.days}
    months = "\n".join(_month_table(year, month, by_date) for year, month in _months(cal.start, cal.stop))
    keys = "".join(f'<span class="key"><span class="swatch {k}"></span>{html.escape(label)}</span>'
                   for k, label in legend(cal))
    if any(d.kept_previous for d in cal.days):
        keys += f'<span class="key"><span class="swatch failed kept"></span>{html.escape(_KEPT)}</span>'
    return (f'<section class="pipeline" data-pipeline="{n}" data-task="{html.escape(cal.task)}">'
            f'<h2>{html.escape(cal.task)} <small>{html.escape(cal.key)}, [{cal.start}, {cal.stop})</small></h2>'
            f'<p class="totals">{html.escape(_totals_line(cal))}</p><p class="legend">{keys}</p>'
            f'<div class="months">{months}</div>'
            f'<div class="detail" id="detail-{n}" aria-live="polite">Select a date for its details.</div>'
            f'{_html_lists(cal)}</section>')


def _html_lists(cal: Calendar) -> str:
    """The failed dates with their errors, the stale ones with what changed."""
    failed = "".join(
        f'<li><b>{d.date}</b> {html.escape(d.error_class or "")}: {html.escape(d.error or "")}'
        f'{" (the previous load is kept)" if d.kept_previous else ""}</li>' for d in cal.of(FAILED))
    stale = "".join(f'<li><b>{d.date}</b> {html.escape(d.change or "sources changed since the load")}</li>'
                    for d in cal.of(STALE))
    return ((f'<h3>Failed</h3><ul class="failures">{failed}</ul>' if failed else "") +
            (f'<h3>Stale</h3><ul class="stale-dates">{stale}</ul>' if stale else ""))


def _month_table(year: int, month: int, by_date: dict[datetime.date, DateState]) -> str:
    weeks = calendar.Calendar(firstweekday=0).monthdatescalendar(year, month)
    rows = "".join("<tr>" + "".join(_cell(day, month, by_date.get(day)) for day in week) + "</tr>" for week in weeks)
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


def tooltip(day: DateState) -> str:
    """What a date's tooltip says, on a few short lines."""
    lines = [f"{day.date}: {day.state}" + (", rows rejected" if kind(day) == "rejects" else "")]
    if day.rows is not None:
        lines.append(f"{day.rows:,} rows, {(day.bytes or 0) / _MIB:,.2f} MiB, {day.objects} objects, "
                     f"{day.seconds or 0:.1f} s")
        lines.append(f"loaded {_when(day.finished_at)} on {day.host}")
        if day.rejected:
            lines.append(f"{day.rejected:,} rows rejected")
        if day.skipped:
            lines.append(_left_out(day))
    if day.state == FAILED:
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


_CSS = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 24px; color: #1d2330; background: #fff; }
h1 { font-size: 20px; margin: 0 0 4px; } h2 { font-size: 16px; margin: 24px 0 4px; }
h2 small { font-weight: normal; color: #5b6475; } .meta, .totals { color: #3b4252; margin: 2px 0; }
.legend .key { margin-right: 14px; white-space: nowrap; }
.swatch { display: inline-block; width: 12px; height: 12px; border-radius: 2px; margin-right: 4px;
  vertical-align: -1px; }
.months { display: flex; flex-wrap: wrap; gap: 16px; margin: 8px 0; }
table.month { border-collapse: separate; border-spacing: 3px; }
table.month caption { font-weight: 600; text-align: left; padding-left: 3px; }
table.month th { font-weight: normal; color: #7b8494; font-size: 11px; }
table.month td { width: 28px; height: 24px; text-align: center; border-radius: 3px; font-size: 12px; }
td.day { cursor: pointer; } td.day:focus, td.day.selected { outline: 2px solid #1d2330; }
td.out { color: #c0c6d0; }
.loaded { background: #2e9e5b; color: #fff; } .rejects { background: #e0a526; color: #1d2330; }
.failed { background: #d64541; color: #fff; } .failed.kept { box-shadow: inset 0 -5px 0 #2e9e5b; }
.missing { background: #e4e7ec; color: #5b6475; } .stale { background: #7d4cc2; color: #fff; }
ul.failures { padding-left: 18px; }
.detail { border: 1px solid #d5d9e0; border-radius: 4px; padding: 8px 12px; max-width: 720px;
  white-space: pre-wrap; font-family: ui-monospace, monospace; font-size: 12px; }
"""

_JS = """
(function () {
  var data = JSON.parse(document.getElementById("lp-data").textContent);
  function show(cell) {
    var section = cell.closest("section"), n = section.getAttribute("data-pipeline");
    var day = data[n][cell.getAttribute("data-date")], panel = document.getElementById("detail-" + n);
    var lines = [day.date + ": " + day.state];
    if (day.rows !== undefined) {
      lines.push("rows: " + day.rows.toLocaleString("en") + ", MiB: " + (day.bytes / 1048576).toFixed(2) +
                 ", objects: " + day.objects + ", seconds: " + day.seconds.toFixed(1));
      lines.push("loaded: " + day.finished_at + " on " + day.host);
      lines.push("rows rejected: " + day.rejected);
    }
    if (day.state === "failed") {
      lines.push("error: " + day.error_class + ": " + day.error);
      if (day.s3_key) { lines.push("object: " + day.s3_key); }
      lines.push("failed: " + day.failed_at + " on " + day.failed_host + ", attempts: " + day.attempts);
      if (day.kept_previous) { lines.push("the previous load is kept"); }
    }
    if (day.state === "stale") { lines.push("stale: sources changed since the load: " + day.change); }
    if (day.state === "missing") { lines.push("not loaded: no data yet, or not run"); }
    panel.textContent = lines.join("\\n");
    panel.setAttribute("data-date", day.date);
    section.querySelectorAll("td.selected").forEach(function (c) { c.classList.remove("selected"); });
    cell.classList.add("selected");
  }
  document.querySelectorAll("td.day").forEach(function (cell) {
    cell.addEventListener("click", function () { show(cell); });
    cell.addEventListener("focus", function () { show(cell); });
  });
  // open on the latest failed date, else the latest stale one, else the latest missing one, else the latest date
  document.querySelectorAll("section.pipeline").forEach(function (section) {
    var pick = function (sel) { var c = section.querySelectorAll(sel); return c.length ? c[c.length - 1] : null; };
    var cell = pick('td[data-state="failed"]') || pick('td[data-state="stale"]') || pick('td[data-state="missing"]') ||
               pick("td.day");
    if (cell) { show(cell); }
  });
})();
"""

_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>luigi_pipelines status</title>
<style>{css}</style>
</head>
<body>
<h1>luigi_pipelines status</h1>
<p class="meta">generated {generated}; exit code {code}: {meaning}</p>
{sections}
<script type="application/json" id="lp-data">{data}</script>
<script>{js}</script>
</body>
</html>
"""
