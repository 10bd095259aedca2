"""Pure: the frame of the status page (``views.page``): its inline CSS, its script and the HTML around them.

The script reads the page's data (``lp-data``) and shows a chosen date's details; a day of an hourly task opens to
its 24 hours. Nothing is fetched.
"""

CSS = """
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
.check_failed { background: #2f5fb3; color: #fff; } .check_failed.kept { box-shadow: inset 0 -5px 0 #2e9e5b; }
.missing { background: #e4e7ec; color: #5b6475; } .expired { background: #f4f5f7; color: #9aa1ad; }
.stale { background: #7d4cc2; color: #fff; }
ul.failures { padding-left: 18px; }
p.freshness.late { color: #fff; background: #d64541; display: inline-block; padding: 2px 8px; border-radius: 3px; }
.hours { margin: 4px 0 8px; } .hours[hidden] { display: none; }
span.hour { display: inline-block; width: 24px; height: 20px; line-height: 20px; margin: 1px; text-align: center;
  border-radius: 3px; font-size: 11px; cursor: pointer; } span.hour:focus, span.hour.selected { outline: 2px solid #1d2330; }
.detail { border: 1px solid #d5d9e0; border-radius: 4px; padding: 8px 12px; max-width: 720px;
  white-space: pre-wrap; font-family: ui-monospace, monospace; font-size: 12px; }
"""

SCRIPT = """
(function () {
  var data = JSON.parse(document.getElementById("lp-data").textContent);
  function show(cell) {
    var section = cell.closest("section"), n = section.getAttribute("data-pipeline");
    var day = data[n][cell.getAttribute("data-date")], panel = document.getElementById("detail-" + n);
    var lines = [(day.partition || day.date) + ": " + day.state];
    if (day.rows !== undefined) {
      lines.push("rows: " + day.rows.toLocaleString("en") + ", MiB: " + (day.bytes / 1048576).toFixed(2) +
                 ", objects: " + day.objects + ", seconds: " + day.seconds.toFixed(1));
      lines.push("loaded: " + day.finished_at + " on " + day.host);
      lines.push("rows rejected: " + day.rejected);
    }
    (day.checks || []).forEach(function (c) {
      lines.push("check " + c.check + " (" + c.severity + "): " + c.violations + " violations in " + c.rows +
                 " rows, held to " + c.bound + (c.passed ? "" : " [warned]"));
    });
    if (day.state === "check_failed") {
      lines.push("check failed, " + (day.kept_previous ? "previous load kept" : "nothing loaded before"));
    }
    if (day.state === "failed" || day.state === "check_failed") {
      lines.push("error: " + day.error_class + ": " + day.error);
      if (day.s3_key) { lines.push("object: " + day.s3_key); }
      lines.push("failed: " + day.failed_at + " on " + day.failed_host + ", attempts: " + day.attempts);
      if (day.kept_previous) { lines.push("the previous load is kept"); }
    }
    if (day.state === "stale") { lines.push("stale: sources changed since the load: " + day.change); }
    if (day.state === "missing") { lines.push("not loaded: no data yet, or not run"); }
    panel.textContent = lines.join("\\n");
    panel.setAttribute("data-date", cell.getAttribute("data-date"));
    section.querySelectorAll(".selected").forEach(function (c) { c.classList.remove("selected"); });
    cell.classList.add("selected");
  }
  // a day of an hourly task opens to its 24 hours, showing its latest failed hour, else stale, else missing, else last
  function open(cell) {
    var section = cell.closest("section"), day = cell.getAttribute("data-hours"), strip = null;
    section.querySelectorAll("div.hours").forEach(function (d) {
      d.hidden = d.getAttribute("data-day") !== day;
      if (!d.hidden) { strip = d; }
    });
    var pick = function (sel) { var c = strip.querySelectorAll(sel); return c.length ? c[c.length - 1] : null; };
    show(pick('span[data-state="check_failed"]') ||
         pick('span[data-state="failed"]') || pick('span[data-state="stale"]') || pick('span[data-state="missing"]') ||
         pick("span.hour"));
    cell.classList.add("selected");
  }
  function choose(cell) { if (cell.hasAttribute("data-hours")) { open(cell); } else { show(cell); } }
  document.querySelectorAll("td.day, span.hour").forEach(function (cell) {
    cell.addEventListener("click", function () { choose(cell); });
    cell.addEventListener("focus", function () { choose(cell); });
  });
  // open on the latest failed date, else the latest stale one, else the latest missing one, else the latest date
  document.querySelectorAll("section.pipeline").forEach(function (section) {
    var pick = function (sel) { var c = section.querySelectorAll(sel); return c.length ? c[c.length - 1] : null; };
    var cell = pick('td[data-state="check_failed"]') ||
               pick('td[data-state="failed"]') || pick('td[data-state="stale"]') || pick('td[data-state="missing"]') ||
               pick("td.day");
    if (cell) { choose(cell); }
  });
})();
"""

PAGE = """<!DOCTYPE html>
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
