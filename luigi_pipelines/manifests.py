"""What a marker says its partition was made from, and how the sources differ from that now (a stale partition).

A load's marker lists its S3 objects (key, size, ETag); a transform's marker records the ``load_id``
of each upstream partition it read. A partition is stale when a fresh listing of its objects, or
the upstream markers' load ids, no longer match. Pure: entries are plain mappings, as stored in JSON.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

UPSTREAM_LOADS = "upstream_loads"  # the key of a transform's source entry: {upstream marker key: load_id}

ObjectId = tuple[str, int, str]


def object_manifest(entries: Iterable[Mapping[str, Any]]) -> dict[str, tuple[int, str]]:
    """Each object's (size, ETag) by key: what tells two listings of a date apart (a version id, the
    rows or timings do not)."""
    return {e["key"]: (int(e["size"]), str(e["etag"])) for e in entries}


def objects_change(recorded: Iterable[Mapping[str, Any]], listed: Iterable[Mapping[str, Any]]) -> str:
    """How the objects ``listed`` now differ from those a marker ``recorded``, e.g. ``"1 added (d/b.csv),
    1 replaced (d/a.csv)"``; ``""`` when they are the same objects."""
    before, now = object_manifest(recorded), object_manifest(listed)
    added = sorted(now.keys() - before.keys())
    removed = sorted(before.keys() - now.keys())
    replaced = sorted(k for k in now.keys() & before.keys() if now[k] != before[k])
    return _changes(("added", added), ("removed", removed), ("replaced", replaced))


def recorded_upstream_loads(entries: Iterable[Mapping[str, Any]]) -> dict[str, str | None] | None:
    """The upstream loads a transform's marker says it read, by upstream marker key; None when the marker
    predates that record (it cannot be shown fresh)."""
    for entry in entries:
        if UPSTREAM_LOADS in entry:
            return dict(entry[UPSTREAM_LOADS])
    return None


def upstream_change(recorded: Mapping[str, str | None] | None, current: Mapping[str, str | None],
                    upstream: str = "upstream") -> str:
    """How the upstream partitions' loads ``current`` (None: no marker) differ from those a transform ``recorded``,
    e.g. ``"upstream LoadT 2019-02-01 was reloaded since (s.t)"`` with ``upstream`` naming the upstream task and
    date; ``""`` if not."""
    if recorded is None:
        return "no record of the upstream loads it read (written before they were recorded)"
    gone = sorted(k for k in current if current[k] is None and recorded.get(k) is not None)
    reloaded = sorted(k for k in current.keys() | recorded.keys() if current.get(k) != recorded.get(k) and k not in gone)
    parts = [f"{upstream} is not loaded any more (no marker: {_shown(gone)})" if gone else "",
             f"{upstream} was reloaded since ({_shown(reloaded)})" if reloaded else ""]
    return "; ".join(p for p in parts if p)


def _changes(*groups: tuple[str, list[str]]) -> str:
    return ", ".join(f"{len(keys)} {what} ({_shown(keys)})" for what, keys in groups if keys)


def _shown(keys: list[str], shown: int = 3) -> str:
    """``"a, b, c, ..."``: the first ``shown`` keys."""
    return ", ".join(keys[:shown]) + (", ..." if len(keys) > shown else "")
