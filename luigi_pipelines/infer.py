"""A task's declaration drafted from a sample of its files (``luigi-pipelines infer``): for each column the SQL type
that PostgreSQL accepts for every sampled value, a CSV's NULL marker, where the date comes from (the object's key
or a column), and the class printed as Python, with a comment per column on what was seen.

Pure: sampled values in, text out (``sampling`` reads the sample from S3). Types are chosen conservatively, by
patterns that PostgreSQL's input functions accept (``tests/test_infer.py`` holds them against the server): a value
that fits no narrower type makes its column ``text``.
"""
from __future__ import annotations

import datetime
import decimal
import json
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from .errors import BadInputError

FORMATS = ("csv", "jsonl", "parquet")
DELIMITERS = (",", ";", "\t", "|")
NULL_MARKERS = ("NA", "NULL", "null", "\\N", "N/A", "None", "#N/A", "nil")  # besides "", COPY's default
_INT = re.compile(r"[+-]?[0-9]{1,19}")
_LEADING_ZERO = re.compile(r"[+-]?0[0-9]")
_NUMERIC = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]{1,3})?")
_STAMP = re.compile(r"([0-9]{4})-([0-9]{2})-([0-9]{2})(?:[T ]([0-9]{2}):([0-9]{2})(?::([0-9]{2})(?:\.[0-9]{1,6})?)?"
                    r"(Z|[+-]([0-9]{2})(?::?([0-9]{2}))?)?)?")
_BOOLEAN = {"true", "false", "t", "f", "yes", "no", "y", "n", "on", "off"}
# The narrowest kind of each value, and the type of a column whose values are all of the kinds in a set.
_TYPES = (({"int"}, "bigint"), ({"int", "num"}, "numeric"), ({"date"}, "date"), ({"date", "stamp"}, "timestamp"),
          ({"date", "stamp", "stamptz"}, "timestamptz"), ({"bool"}, "boolean"), ({"json"}, "jsonb"))
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_$]*")  # partitions.check_identifier's names


def kind_of(text: str) -> str:
    """The narrowest kind of a value's text: ``int`` (bigint), ``num`` (numeric), ``date``, ``stamp`` (timestamp
    without an offset), ``stamptz`` (with ``Z`` or an offset), ``bool``, ``json`` (an object or array), or ``text``."""
    if _INT.fullmatch(text) and not _LEADING_ZERO.match(text) and -2**63 <= int(text) < 2**63:
        return "int"
    if _NUMERIC.fullmatch(text) and not _LEADING_ZERO.match(text) and len(text) <= 1000:
        return "num"
    if (stamp := _STAMP.fullmatch(text)) is not None:
        return _stamp_kind(stamp)
    if text.lower() in _BOOLEAN:
        return "bool"
    if text[:1] in "{[" and _is_json(text):
        return "json"
    return "text"


def _stamp_kind(stamp: re.Match[str]) -> str:
    year, month, day, hour, minute, second, zone, zone_hour, zone_minute = stamp.groups()
    try:
        datetime.datetime(int(year), int(month), int(day), int(hour or 0), int(minute or 0), int(second or 0))
    except ValueError:
        return "text"
    if int(year) < 1 or zone_hour and (int(zone_hour) > 14 or int(zone_minute or 0) > 59):
        return "text"
    return "date" if hour is None else "stamptz" if zone else "stamp"


def _is_json(text: str) -> bool:
    def refuse(constant: str) -> None:
        raise ValueError(constant)  # NaN and Infinity: Python reads them, PostgreSQL's jsonb does not

    try:
        json.loads(text, parse_constant=refuse)
    except ValueError:
        return False
    return "\\u0000" not in text  # jsonb refuses the NUL character


# -- what a sample showed of each column -----------------------------------------------------------------------


@dataclass
class Seen:
    """What the sample showed of one column: each value's text (None: NULL) and what else was met."""

    name: str
    values: list[str | None] = field(default_factory=list)
    nested: int = 0  # JSON objects or arrays (JSON lines)
    absent: int = 0  # lines without the key (JSON lines)
    given: str = ""  # the type the file's schema gives (Parquet)
    origin: str = ""  # that schema's type (Parquet)
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Drafted:
    """A column of the draft: its name, its type, and what was seen."""

    name: str
    type: str
    comment: str


def drafted(seen: Seen, null: str = "") -> Drafted:
    """The column's type and comment; ``null`` names the NULL marker for the comment (a CSV's)."""
    present = [v for v in seen.values if v is not None]
    kinds = {kind_of(v) for v in present}
    notes = list(seen.notes)
    if seen.given:
        column_type = seen.given
        notes.insert(0, seen.origin)
    elif seen.nested:
        column_type = "jsonb"
        notes.append(f"{seen.nested} nested (objects, arrays): jsonb")
    elif not present:
        column_type = "text"
        notes.append("only NULL seen: text is a guess" if seen.values else "no value seen: text is a guess")
    else:
        column_type = next((t for allowed, t in _TYPES if kinds <= allowed), "text")
        notes += _type_notes(column_type, present, kinds)
    nulls = len(seen.values) - len(present)
    if nulls:
        notes.append(f"{nulls} NULL ({null or 'null'})")
    if seen.absent:
        notes.append(f"missing from {seen.absent} lines (NULL)")
    if present:
        notes.append(f"e.g. {_shown(present[0])}")
    return Drafted(seen.name, column_type, "; ".join(notes))


def _type_notes(column_type: str, present: list[str], kinds: set[str]) -> list[str]:
    notes = []
    if column_type == "text":
        if "" in present:
            notes.append(f"{present.count('')} empty ('')")
        if any(_LEADING_ZERO.match(v) and _NUMERIC.fullmatch(v) for v in present):
            notes.append("numbers with leading zeros: text keeps them")
        elif len(kinds - {"text"}) > 1 or (kinds - {"text"} and "text" in kinds):
            notes.append(f"mixed ({', '.join(sorted(kinds))}): text")
    elif column_type == "timestamptz" and kinds & {"stamp", "date"}:
        naive = sum(1 for v in present if kind_of(v) in ("stamp", "date"))
        notes.append(f"{naive} without a UTC offset: read in the session's TimeZone")
    return notes


def py_text(text: str) -> str:
    """A Python string literal of ``text`` in double quotes (JSON's escapes are Python's)."""
    return json.dumps(text, ensure_ascii=False)


def _shown(value: str, limit: int = 40) -> str:
    return repr(value if len(value) <= limit else value[:limit] + "...")


# -- CSV ---------------------------------------------------------------------------------------------------------


def csv_records(lines: Iterable[str], delimiter: str, quote: str = '"') -> Iterator[list[tuple[str, bool]]]:
    """Each record of CSV text lines (line ends kept: a quoted field may span lines) as (text, quoted) per field,
    as COPY's CSV mode reads it (the escape is the quote, doubled); empty lines are skipped."""
    fields: list[tuple[str, bool]] = []
    chars: list[str] = []
    quoted = inside = False
    for line in lines:
        if not inside and line.strip("\r\n") == "":
            continue
        i = 0
        while i < len(line):
            c = line[i]
            if inside and c == quote and line[i + 1:i + 2] == quote:
                chars.append(quote)
                i += 1
            elif c == quote:
                inside, quoted = not inside, True
            elif inside or c not in (delimiter, "\r", "\n"):
                chars.append(c)
            elif c == delimiter:
                fields.append(("".join(chars), quoted))
                chars, quoted = [], False
            i += 1
        if not inside:
            yield [*fields, ("".join(chars), quoted)]
            fields, chars, quoted = [], [], False
    if inside:
        raise BadInputError("a quoted field is not closed before the sample's end")


def delimiter_of(header: str) -> str:
    """The likeliest delimiter of a CSV header line: the most frequent of ``DELIMITERS``, else a comma."""
    return max(DELIMITERS, key=lambda d: (header.count(d), d == ","))


@dataclass(frozen=True)
class CsvSample:
    """The columns of a CSV sample and how its file is read."""

    seen: list[Seen]
    null: str  # the NULL marker chosen
    header: bool
    names_checked: bool  # the header's names are the columns' (COPY's HEADER MATCH); else renamed, not checked
    notes: str


def csv_sample(records: Sequence[list[tuple[str, bool]]]) -> CsvSample:
    """The columns of ``records`` (the first a header, unless its fields look like data), under the NULL marker that
    gives the most columns a type other than ``text`` (an empty unquoted field, COPY's default, on a tie)."""
    first = records[0] if records else []
    header = bool(first) and all(text and kind_of(text) in ("text", "bool") for text, _ in first)  # names, no data
    names = [text for text, _ in first] if header else [f"column_{n + 1}" for n in range(len(first))]
    rows = records[1:] if header else records
    wide = next((n for n, row in enumerate(rows, 2 if header else 1) if len(row) != len(names)), None)
    if wide is not None:
        raise BadInputError(f"record {wide} has another number of fields than the first ({len(names)})")
    columns, renamed = _column_names(names)
    best: tuple[int, int, str, list[Seen]] | None = None
    for null in ("", *NULL_MARKERS):
        count = sum(1 for row in rows for text, quoted in row if text == null and not quoted)
        if null and not count:
            continue
        seen = [Seen(name, [None if text == null and not quoted else text for text, quoted in (row[n] for row in rows)])
                for n, name in enumerate(columns)]
        typed = sum(1 for s in seen if drafted(s).type != "text")
        if best is None or (typed, count) > best[:2]:
            best = (typed, count, null, seen)
    assert best is not None
    notes = "NULL is an empty unquoted field" if not best[2] else f"{best[2]!r} unquoted is NULL ({best[1]} seen)"
    if renamed:
        notes += f"; {renamed} header names are not SQL names: renamed, the header not checked"
    return CsvSample(best[3], best[2], header, header and not renamed, notes)


def _column_names(names: Sequence[str]) -> tuple[list[str], int]:
    """The names as columns (a name that is not a plain SQL name made one), and how many were changed."""
    columns: list[str] = []
    for name in names:
        column = name if _NAME.fullmatch(name) and len(name.encode()) <= 63 else _plain(name)
        while column in columns:
            column += "_"
        columns.append(column)
    return columns, sum(1 for a, b in zip(names, columns, strict=True) if a != b)


def _plain(text: str) -> str:
    plain = re.sub(r"[^a-z0-9_]+", "_", text.lower()).strip("_")[:60]
    return plain if plain and not plain[0].isdigit() else f"c_{plain}"


def csv_format(sample: CsvSample, delimiter: str) -> str:
    """``lp.CsvFormat(...)`` with the options that differ from the defaults."""
    options = [f"delimiter={py_text(delimiter)}"] if delimiter != "," else []
    options += [] if sample.header else ["header=False"]
    options += ["check_header=False"] if sample.header and not sample.names_checked else []
    options += [f"null={py_text(sample.null)}"] if sample.null else []
    return f"lp.CsvFormat({', '.join(options)})"


# -- JSON lines and Parquet --------------------------------------------------------------------------------------


def jsonl_sample(lines: Iterable[str]) -> list[Seen]:
    """The keys of JSON-lines text (empty lines skipped), in the order first met, with their values' text."""
    seen: dict[str, Seen] = {}
    count = 0
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            value = json.loads(line, parse_float=decimal.Decimal, parse_constant=_no_constant)  # 12.50 stays 12.50
        except ValueError as exc:
            raise BadInputError(f"line {number} is not JSON: {exc}") from None
        if not isinstance(value, dict):
            raise BadInputError(f"line {number} is a JSON {type(value).__name__}, not an object")
        for key in value:
            seen.setdefault(key, Seen(key, absent=count))
        for key, column in seen.items():
            _take_json(column, value[key] if key in value else ...)
        count += 1
    return list(seen.values())


def _no_constant(constant: str) -> None:
    raise ValueError(f"{constant} is not JSON that PostgreSQL reads")


def _take_json(column: Seen, value: Any) -> None:
    if value is ...:
        column.absent += 1
    elif isinstance(value, dict | list):
        column.nested += 1
        column.values.append(json.dumps(value, ensure_ascii=False, default=float)[:60])
    else:
        column.values.append(None if value is None else _text_of(value))


_ARROW = (("bool", "boolean"), ("int8", "smallint"), ("uint8", "smallint"), ("int16", "smallint"),
          ("uint16", "integer"), ("int32", "integer"), ("uint32", "bigint"), ("int64", "bigint"),
          ("uint64", "numeric(20,0)"), ("halffloat", "real"), ("float", "real"), ("double", "double precision"),
          ("string", "text"), ("large_string", "text"), ("date32[day]", "date"), ("date64[ms]", "date"))


def arrow_type(arrow: str) -> str:
    """The column type for a Parquet column of Arrow type ``arrow`` (as pyarrow writes the type), or ``""`` when
    the values decide (binary: ``text`` or ``bytea``)."""
    kind = re.sub(r"^dictionary<values=([^,]+), .*$", r"\1", arrow)
    decimal = re.fullmatch(r"decimal(?:32|64|128|256)?\((\d+), (\d+)\)", kind)
    stamp = re.fullmatch(r"timestamp\[\w+(, tz=.+)?\]", kind)
    if decimal:
        return f"numeric({decimal.group(1)},{decimal.group(2)})"
    if stamp:
        return "timestamptz" if stamp.group(1) else "timestamp"
    if kind.startswith(("list<", "large_list<", "fixed_size_list<", "struct<", "map<")):
        return "jsonb"
    if kind.startswith("time"):
        return "time"
    if "binary" in kind:
        return ""
    return dict(_ARROW).get(kind, "text")


def parquet_seen(name: str, arrow: str, values: Sequence[Any]) -> Seen:
    """A Parquet column from its Arrow type and its first batch's values (Python objects)."""
    column = Seen(name, [None if v is None else _text_of(v) for v in values], given=arrow_type(arrow),
                  origin=f"Parquet {arrow}")
    if not column.given:
        raw = [v for v in values if v is not None]
        text = all(_utf8_text(v) for v in raw)
        column.given = "text" if text and raw else "bytea"
        column.notes.append("UTF-8 text in the sample: text (bytea keeps the bytes)" if column.given == "text"
                            else "bytes that are not all text: bytea")
    elif column.given == "jsonb":
        column.notes.append("nested: jsonb")
    return column


def _text_of(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime.date | datetime.time):
        return value.isoformat()
    if isinstance(value, bytes):
        return repr(value)[2:-1]
    return str(value)


def _utf8_text(value: bytes) -> bool:
    try:
        text = value.decode()
    except UnicodeDecodeError:
        return False
    return not any(ord(c) < 32 and c not in "\t\r\n" for c in text)
