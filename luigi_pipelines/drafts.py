"""The task class that ``luigi-pipelines infer`` prints: its key_prefix and date source guessed from the sampled
object's key (``.../2019-01-03/...``, ``dt=2019-01-03``, ``2019/01/03``, ``year=2019/month=01/day=03``) or from a
column, its table and name, and the class as Python with a comment per column. Pure: ``infer`` gives the columns.
"""
from __future__ import annotations

import datetime
import re
from collections.abc import Sequence
from dataclasses import dataclass

from .infer import Drafted, Seen
from .infer import py_text as _py
from .partitions import TableName

_INTEGERS = ("smallint", "integer", "bigint")
_KEY_DATES = (  # (pattern of a date in a key, its key_prefix template), the first match in the key wins
    (re.compile(r"year=([0-9]{4})/month=([0-9]{2})/day=([0-9]{2})"), "year={date:%Y}/month={date:%m}/day={date:%d}"),
    (re.compile(r"(?<![0-9])([0-9]{4})/([0-9]{2})/([0-9]{2})(?![0-9])"), "{date:%Y/%m/%d}"),
    (re.compile(r"(?<![0-9])([0-9]{4})-([0-9]{2})-([0-9]{2})(?![0-9])"), "{date:%Y-%m-%d}"),
    (re.compile(r"(?<![0-9])([0-9]{4})([0-9]{2})([0-9]{2})(?![0-9])"), "{date:%Y%m%d}"),
)


@dataclass(frozen=True)
class KeyDate:
    """The date a key holds, the ``key_prefix`` template of every date's objects, and ``keys`` globs when that prefix
    does not end at a ``/`` (the date is in the object's name)."""

    date: datetime.date
    key_prefix: str
    keys: tuple[str, ...]
    stem: str  # the last name before the date (the table's name by default)


def key_date(key: str) -> KeyDate | None:
    """The first date (1970-2099) in ``key`` by the patterns of ``_KEY_DATES``, or None."""
    found = []
    for pattern, template in _KEY_DATES:
        for match in pattern.finditer(key):
            try:
                day = datetime.date(int(match[1]), int(match[2]), int(match[3]))
            except ValueError:
                continue
            if 1970 <= day.year <= 2099:
                found.append((match.start(), -match.end(), template, day))
                break
    if not found:
        return None
    start, negative_end, template, day = min(found, key=lambda f: f[:2])  # the first, and the longest there
    before, rest = key[:start], key[-negative_end:]
    slash = rest.find("/")
    keys = () if slash >= 0 else (f"*{rest[rest.find('.'):]}" if "." in rest else "*",)
    prefix = _braced(before) + template + (_braced(rest[:slash + 1]) if slash >= 0 else "")
    names = [n for n in re.split(r"[/=]", before) if n and n not in ("dt", "date", "ds", "day")]
    return KeyDate(day, prefix, keys, names[-1] if names else "")


def _braced(text: str) -> str:
    return text.replace("{", "{{").replace("}", "}}")


@dataclass(frozen=True)
class DateChoice:
    """The task's ``date_column`` and ``date_from`` (Python text; empty for a column of the files), and why."""

    column: str
    date_from: str
    why: str


def choose_date(columns: Sequence[Drafted], seen: Sequence[Seen], when: KeyDate | None) -> DateChoice:
    """A column that holds the key's date in every sampled row; else year, month and day columns that do
    (``make_date``); else the key's date (``partition_date``). Without a date in the key: a date column, else a
    timestamp column (``local_date`` in UTC)."""
    full = {s.name: s.values for s in seen if not s.absent and s.values and None not in s.values}
    types = {c.name: c.type for c in columns}
    free = next(n for n in ("date", "dt", "partition_date", "load_date") if n not in types)
    if when is not None:
        day = when.date.isoformat()
        held = next((c.name for c in columns if c.type == "date" and set(full.get(c.name, [])) == {day}), None)
        if held:
            return DateChoice(held, "", f"{held} holds the key's date in every sampled row")
        parts = {"year": when.date.year, "month": when.date.month, "day": when.date.day}
        if all(types.get(n) in _INTEGERS and {int(v or 0) for v in full.get(n, [])} == {p} for n, p in parts.items()):
            return DateChoice(free, 'lp.make_date("year", "month", "day")',
                              "year, month and day hold the key's date in every sampled row")
        column = "dt" if "dt={date" in when.key_prefix and "dt" not in types else free
        return DateChoice(column, "lp.partition_date()", "no column holds the key's date: every row gets it")
    for kinds, how in ((("date",), ""), (("timestamptz", "timestamp"), "local_date")):
        name = next((c.name for c in columns if c.type in kinds and c.name in full), None)
        if name is not None and not how:
            return DateChoice(name, "", f"the key holds no date: {name}, a date in every sampled row")
        if name is not None:
            return DateChoice(free, f'lp.local_date("{name}", "UTC")', f"the key holds no date: {name}'s date in UTC")
    return DateChoice(free, "lp.partition_date()", "no date seen in the key or the columns: the key must give it")


@dataclass(frozen=True)
class Draft:
    """Everything the printed class says."""

    source: str  # the sampled object's URL
    sampled: str  # what was read of it
    bucket: str
    when: KeyDate | None
    key_prefix: str  # the prefix given, when its key holds no date
    table: TableName
    date: DateChoice
    columns: Sequence[Drafted]
    format_line: str  # e.g. 'csv = lp.CsvFormat(null="NA")'
    format_note: str


def table_of(name: str, when: KeyDate | None, key: str) -> TableName:
    """``name`` (``schema.table``; ``public`` when unqualified), else ``public.`` and the key's last name before
    its date (else the object's name), as a plain SQL name."""
    if name:
        return TableName.parse(name if "." in name else f"public.{name}")
    stem = (when.stem if when and when.stem else key.rsplit("/", 1)[-1].split(".")[0]) or "data"
    plain = re.sub(r"[^a-z0-9_]+", "_", stem.lower()).strip("_") or "data"
    return TableName("public", plain if not plain[0].isdigit() else f"t_{plain}")


def class_name(table: TableName) -> str:
    return "Load" + "".join(part[:1].upper() + part[1:] for part in re.split(r"[^A-Za-z0-9]+", table.name) if part)


def render(draft: Draft) -> str:
    """The module text: a comment on where it comes from, the imports, and the class."""
    when = draft.when
    if when is not None:
        prefix = f"    key_prefix = {_py(when.key_prefix)}  # the date from the key ({when.date.isoformat()} in the sample)"
    else:
        prefix = (f"    key_prefix = {_py(draft.key_prefix)}  # the key holds no date: give each date's objects a prefix of "
                  f"their own, e.g. {_py(draft.key_prefix + '{date:%Y-%m-%d}/')}")
    lines = [
        f"# Drafted by `luigi-pipelines infer` from {draft.source}",
        f"# ({draft.sampled}). Check each type against what the files may hold beyond the sample.",
        "from luigi.tools.range import RangeDaily  # noqa: F401  (registers RangeDaily: range autoloading is off)",
        "",
        "import luigi_pipelines as lp",
        "",
        "",
        f"class {class_name(draft.table)}(lp.LoadPartition):",
        f"    bucket = {_py(draft.bucket)}",
        prefix,
        *([f"    keys = ({_py(when.keys[0])},)  # the date is in the object's name"] if when and when.keys else []),
        f"    table = {_py(str(draft.table))}",
        f"    date_column = {_py(draft.date.column)}  # {draft.date.why}",
        *([f"    date_from = {draft.date.date_from}"] if draft.date.date_from else []),
        "    columns = [",
        *_column_lines(draft.columns),
        "    ]",
        f"    {draft.format_line}  # {draft.format_note}",
    ]
    return "\n".join(lines) + "\n"


def _column_lines(columns: Sequence[Drafted]) -> list[str]:
    pairs = [f"({_py(c.name)}, {_py(c.type)})," for c in columns]
    width = max((len(p) for p in pairs), default=0)
    return [f"        {p:<{width}}  # {c.comment}" if c.comment else f"        {p}" for p, c in zip(pairs, columns, strict=True)]
