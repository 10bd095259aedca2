"""Per-table data metrics in Prometheus' text format, from ``status``'s calendars; and the file node_exporter's
textfile collector reads, written atomically.

What ``status`` decided is what is exported, nothing is asked again: the partitions of the window in each state,
the table's newest loaded partition and, when its task declares ``freshness``, how late it is; the window's last
load (rows, bytes, seconds, when). Series carry the labels ``table``, ``scope`` (``""`` or ``region=us``) and
``task`` (the task family). ``luigi-pipelines status --prometheus`` prints it, ``--textfile PATH`` writes it,
``luigi-pipelines metrics-serve`` serves it; ``configs/alerts.yml`` alerts on it.
"""
from __future__ import annotations

import datetime
import os
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

from .states import STALE, STATES, Calendar, DateState

P = "luigi_pipelines_"
# name: (type, help); every family the exporter can emit, in the order it emits them
FAMILIES = {
    P + "status_exit_code": ("gauge", "exit code of luigi-pipelines status over the window (0: all loaded and fresh)"),
    P + "partitions": ("gauge", "partitions of the window by state (stale only when sources were checked)"),
    P + "newest_partition_timestamp_seconds": ("gauge", "start of the table's newest loaded partition (unix time)"),
    P + "freshness_allowed_seconds": ("gauge", "how long after its end the newest partition may be (declared)"),
    P + "late": ("gauge", "1 if the table is late: its newest partition ended longer ago than freshness allows"),
    P + "lateness_seconds": ("gauge", "by how much the table is late (0 when it is not)"),
    P + "last_load_timestamp_seconds": ("gauge", "when the window's last load committed (unix time)"),
    P + "last_load_rows": ("gauge", "rows of the window's last load"),
    P + "last_load_bytes": ("gauge", "bytes of the window's last load"),
    P + "last_load_seconds": ("gauge", "how long the window's last load took"),
}


def exposition(calendars: Sequence[Calendar], code: int) -> str:
    """The text format (version 0.0.4) of ``calendars``: a ``# HELP``/``# TYPE`` header per family, then its series."""
    samples: dict[str, list[str]] = {name: [] for name in FAMILIES}
    samples[P + "status_exit_code"].append(_line(P + "status_exit_code", {}, code))
    for cal in calendars:
        for name, labels, value in _series(cal):
            samples[name].append(_line(name, labels, value))
    out = []
    for name, lines in samples.items():
        if lines:
            kind, help_text = FAMILIES[name]
            out += [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}", *lines]
    return "\n".join(out) + "\n"


def _series(cal: Calendar) -> Iterator[tuple[str, dict[str, str], float]]:
    table, _, scope = cal.key.partition("/")
    labels = {"table": table, "scope": scope, "task": cal.task}
    for state in STATES:
        if state != STALE or cal.sources_checked:  # not checked: unknown, not zero
            yield P + "partitions", {**labels, "state": state}, cal.count(state)
    fresh = cal.freshness
    if fresh is not None and fresh.newest_start is not None:
        yield P + "newest_partition_timestamp_seconds", labels, fresh.newest_start.timestamp()
    if fresh is not None and fresh.allowed is not None:
        yield P + "freshness_allowed_seconds", labels, fresh.allowed.total_seconds()
        yield P + "late", labels, int(fresh.late)
        if fresh.lateness is not None:
            yield P + "lateness_seconds", labels, fresh.lateness.total_seconds()
    last = last_load(cal.days)
    if last is not None and last.finished_at is not None:
        yield P + "last_load_timestamp_seconds", labels, last.finished_at.timestamp()
        yield P + "last_load_rows", labels, last.rows or 0
        yield P + "last_load_bytes", labels, last.bytes or 0
        yield P + "last_load_seconds", labels, last.seconds or 0.0


def last_load(days: Sequence[DateState]) -> DateState | None:
    """Of the partitions with a marker (loaded, stale, or a failed reload's kept load), the one committed last."""
    loaded = [d for d in days if d.rows is not None and d.finished_at is not None]
    return max(loaded, key=lambda d: d.finished_at or datetime.datetime.min) if loaded else None


def _line(name: str, labels: dict[str, str], value: float) -> str:
    said = ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items())
    return f"{name}{{{said}}} {_number(value)}" if said else f"{name} {_number(value)}"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def write_textfile(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically: a temporary file in the same directory, renamed over it, so that
    node_exporter's textfile collector never reads half a file. Readable by others (0644), as the collector needs."""
    path = Path(path)
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(temporary, 0o644)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
