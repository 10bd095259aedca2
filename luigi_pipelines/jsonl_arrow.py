"""JSON lines read by Arrow (the ``parquet`` extra, pyarrow) and written to COPY as CSV, for ``jsonl.JsonLinesDecoder``.

PostgreSQL's path parses every line as ``jsonb`` and maps it with ``jsonb_to_record`` (``jsonl``). This one lets
Arrow's JSON reader parse the lines, the declared columns as its explicit schema, a bounded chunk of whole lines at a
time (``chunk_bytes``; Arrow's streaming reader is not used because the checks below need each chunk's bytes), and
writes each chunk's rows as CSV straight into the table's COPY, like ``parquet``. It must load the same rows, values
and NULLs, or nothing: each declared type is read as an Arrow type whose text PostgreSQL reads as ``jsonb_to_record``
would have read the value (``arrow_kind``); the values of ``jsonb`` columns and the keys an ``extra`` column keeps go
as the line holds them (``LineWalker``), for PostgreSQL to parse as its path does; and whatever Arrow reads otherwise,
or cannot tell apart, is a *doubt* (``Doubt``): the caller undoes the COPY and loads the object by PostgreSQL's path,
which also names a bad line by its key and line, or sets it aside in quarantine mode.

What makes a doubt: a line Arrow refuses (not JSON, not an object, a value of another JSON type than the column's
Arrow type takes, a key given twice); a line whose declared keys are all missing or null (``{}`` and ``{"id": null}``
look alike to Arrow; the unmatched-line check tells them apart; with walked keys, only a line without a declared key);
a scope key that is null or holds another value; a chunk holding what Arrow takes and ``jsonb`` refuses, anywhere in
a line (``NaN``/``Infinity``, ``\\u0000``, a byte-order mark, bytes that are not UTF-8, a line nested deeper than
``DEPTH``), or what makes its lines other than one object each (a line not starting with ``{`` or not ending with
``}``, a ``\\r``); a float zero where the chunk holds an exponent or ``-0`` (an underflow, a negative zero); any COPY
error; and COPY taking another number of rows than Arrow read. pyarrow comes in on first use.
"""
from __future__ import annotations

import io
import json
import re
from collections.abc import Generator, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from . import sql as q
from .ahead import MadeAhead
from .files import SourceReader

CSV = q.CsvFormat(header=False, check_header=False)  # as the Parquet path writes it: strings quoted, NULL unquoted
DEPTH = 1000  # nesting that jsonb surely parses (PostgreSQL 15 with the default max_stack_depth: 10,000, not 20,000)
_WS = re.compile(r"\s+")
_INTS = {"smallint", "integer", "int", "bigint", "int2", "int4", "int8"}
# Unconstrained numeric and float4: only integers are read by Arrow (its floats are binary: 12.50 would lose a digit
# of the scale, a float4 would be rounded twice); a fractional value is a doubt
_INTEGRAL_ONLY = {"numeric", "decimal", "real", "float4"}
_FLOATS = {"double precision", "float8", "float"}
_BOOLS = {"boolean", "bool"}
_STRINGS = re.compile(r"text|citext|name|uuid|bytea|date|interval|inet|cidr|macaddr|bpchar|"
                      r"(?:varchar|character varying|char|character)(?:\(\d+\))?|"
                      r"(?:time|timestamp)(?:\(\d\))?(?: with(?:out)? time zone)?|timetz|timestamptz")
_SCALED = re.compile(r"(?:numeric|decimal)\((\d+)(?:,(\d+))?\)")
_FLOAT_P = re.compile(r"float\((\d+)\)")


class Doubt(Exception):
    """Arrow's rows might differ from PostgreSQL's path (the reason says why): the object takes that path."""


def arrow_kind(column_type: str) -> str | None:
    """How a declared type is read by Arrow: ``int``, ``integral``, ``float``, ``bool``, ``string``, ``decimal(p,s)``,
    ``jsonb`` (the line's text of the value), or None: a type left to PostgreSQL's path (arrays, ``json``, user types)."""
    kind = _WS.sub(" ", column_type.strip().lower()).replace(" (", "(").replace(", ", ",").replace("( ", "(")
    if kind in _INTS:
        return "int"
    if kind in _INTEGRAL_ONLY:
        return "integral"
    if kind in _FLOATS:
        return "float"
    if (match := _FLOAT_P.fullmatch(kind)) is not None:
        return "float" if int(match.group(1)) > 24 else "integral"
    if kind in _BOOLS:
        return "bool"
    if kind == "jsonb":
        return "jsonb"
    if (match := _SCALED.fullmatch(kind)) is not None:
        precision, scale = int(match.group(1)), int(match.group(2) or 0)
        return f"decimal({precision},{scale})" if 0 <= scale <= precision <= 76 else None
    if _STRINGS.fullmatch(kind):
        return "string"
    return None


def _arrow_type(pa: Any, kind: str) -> Any:
    if kind in ("int", "integral"):
        return pa.int64()
    if kind == "float":
        return pa.float64()
    if kind == "bool":
        return pa.bool_()
    if kind.startswith("decimal("):
        precision, scale = map(int, kind[8:-1].split(","))
        return pa.decimal128(38, scale) if precision <= 38 else pa.decimal256(76, scale)
    return pa.string()


@dataclass(frozen=True)
class ArrowPlan:
    """What Arrow reads of each line: the declared columns (``kinds``, by name; ``jsonb`` ones and ``extra`` are walked
    by ``LineWalker``), the scope keys (as strings) and whether a line without a declared key loads."""

    columns: tuple[q.Column, ...]
    kinds: dict[str, str]
    extra: str
    scope: tuple[tuple[str, str], ...]
    unmatched_ok: bool

    @classmethod
    def of(cls, columns: Sequence[q.Column], extra: str, scope: Sequence[tuple[str, str]],
           unmatched_ok: bool) -> ArrowPlan | None:
        """The plan, or None when a declared column's type (or a scope key's) is left to PostgreSQL's path."""
        if extra and any(c.name == extra and arrow_kind(c.type) != "jsonb" for c in columns):
            return None  # a json column keeps jsonb's text of the keys, not the line's
        kinds = {c.name: kind for c in columns if c.name != extra and (kind := arrow_kind(c.type)) is not None}
        if len(kinds) != len([c for c in columns if c.name != extra]):
            return None
        if any(kinds.get(name, "string") != "string" for name, _ in scope):
            return None
        return cls(tuple(columns), kinds, extra, tuple(scope), unmatched_ok)

    @property
    def walks(self) -> bool:
        """Whether each line's keys are walked in Python (``LineWalker``): for ``jsonb`` columns and ``extra``."""
        return bool(self.extra) or "jsonb" in self.kinds.values()

    def schema(self, pa: Any) -> Any:
        fields = [(name, _arrow_type(pa, kind)) for name, kind in self.kinds.items() if kind != "jsonb"]
        fields += [(name, pa.string()) for name, _ in self.scope if name not in self.kinds]
        return pa.schema(fields)


def memory_pool(pa: Any) -> Any:
    """jemalloc's pool where pyarrow has it, else the system's: for these chunks (parse, CSV) both take less memory
    than pyarrow's default, mimalloc (a 202 MiB object: 1.63 s of CPU and 99 MB peak with jemalloc, 1.87 s and 111 MB
    with mimalloc, 1.98 s and 94 MB with the system's allocator)."""
    try:
        return pa.jemalloc_memory_pool()
    except NotImplementedError:  # pyarrow.lib.ArrowNotImplementedError: built without jemalloc
        return pa.system_memory_pool()


def pyarrow_json() -> Any:
    """``pyarrow`` with its ``json`` and ``csv`` modules (ImportError when it is not installed)."""
    import pyarrow
    import pyarrow.csv
    import pyarrow.json
    return pyarrow


class ArrowJsonRows:
    """A read-only stream of CSV (``read``) made from a JSON-lines ``reader``'s data, ``chunk_bytes`` of lines at a
    time, in a thread a chunk ahead of COPY (``ahead``; ``close`` it); ``rows``: the rows written so far. A doubt
    raises ``Doubt`` from ``read`` (COPY is then aborted), and is kept in ``doubt``."""

    def __init__(self, reader: SourceReader, plan: ArrowPlan, chunk_bytes: int) -> None:
        self._reader = reader
        self._plan = plan
        self._chunk_bytes = chunk_bytes
        self.pa = pyarrow_json()
        self._schema = plan.schema(self.pa)
        self._parse = {behaviour: self.pa.json.ParseOptions(explicit_schema=self._schema, newlines_in_values=False,
                                                            unexpected_field_behavior=behaviour)
                       for behaviour in ("error", "ignore")}
        self._every_key_declared = not plan.walks  # until a chunk has a key no column takes (``_parsed``)
        self._walker = LineWalker(plan) if plan.walks else None
        self._write = self.pa.csv.WriteOptions(include_header=False, batch_size=16384)  # 1,024: 15 % slower
        self._pool = memory_pool(self.pa)
        self._ahead = MadeAhead(self._csv_chunks, name="JSON lines by Arrow")
        self.rows = 0
        self.doubt: str | None = None

    def read(self, size: int = -1) -> bytes:
        return self._ahead.read(size)

    def close(self) -> None:
        """Stop reading the lines (``ahead.MadeAhead.close``): before anything else reads ``reader``'s source."""
        self._ahead.close()

    def _csv_chunks(self) -> Generator[bytes, None, None]:
        try:
            for lines in self._line_chunks():
                yield self._csv(lines)
        except Doubt as doubt:
            self.doubt = str(doubt)
            raise

    def _line_chunks(self) -> Iterator[bytes]:
        """The reader's data in chunks of whole lines, each ending with ``\\n`` (added to a last line without one)."""
        rest = b""
        while True:
            data = self._reader.decoded(self._chunk_bytes)
            if not data:
                break
            data = rest + data
            cut = data.rfind(b"\n") + 1
            if cut == 0:
                rest = data
                continue
            rest = data[cut:]
            yield data[:cut]
        if rest:
            yield rest + b"\n"

    def _csv(self, lines: bytes) -> bytes:
        pa = self.pa
        expected = _check_lines(lines)
        table = self._parsed(lines, expected)
        if table.num_rows != expected:
            raise Doubt(f"Arrow read {table.num_rows} rows from {expected} lines")
        walked = None if self._walker is None else self._walker.walk(lines.decode(), expected)
        self._check_rows(table, lines, walked is None)
        plan = self._plan
        columns = [pa.array(walked[c.name], pa.string(), memory_pool=self._pool) if walked is not None and c.name in walked
                   else table.column(c.name) for c in plan.columns]
        written = pa.Table.from_arrays(columns, names=[c.name for c in plan.columns])
        sink = io.BytesIO()
        pa.csv.write_csv(written, sink, write_options=self._write, memory_pool=self._pool)
        self.rows += table.num_rows
        del written, columns, table
        self._pool.release_unused()  # else the allocator keeps what each chunk freed (as for Parquet's batches)
        return sink.getvalue()

    def _parsed(self, lines: bytes, objects: int) -> Any:
        """The chunk's rows as Arrow reads them. While every key of the object's lines is a declared scalar column
        (Arrow's ``error`` for any other key), no value Arrow would read and ``jsonb`` refuse can hide in a key that
        Arrow skips, so ``_check_values`` is not needed: its scans cost about a fifth of the parse."""
        pa = self.pa
        read = pa.json.ReadOptions(use_threads=False, block_size=len(lines) + 1)  # the whole chunk, a long line too
        try:
            if self._every_key_declared:
                try:
                    return pa.json.read_json(pa.BufferReader(lines), read_options=read, parse_options=self._parse["error"],
                                             memory_pool=self._pool)
                except pa.ArrowInvalid as exc:
                    if "unexpected field" not in str(exc):
                        raise
                    self._every_key_declared = False
            _check_values(lines, objects)
            return pa.json.read_json(pa.BufferReader(lines), read_options=read, parse_options=self._parse["ignore"],
                                        memory_pool=self._pool)
        except (pa.ArrowException, ValueError) as exc:
            raise Doubt(f"Arrow does not read a line as PostgreSQL's path would: {exc}") from None

    def _check_rows(self, table: Any, lines: bytes, unmatched: bool) -> None:
        """The doubts that need the values: an (``unmatched``) line whose declared keys may all be missing, a scope
        key, a float zero, NaN or an infinity."""
        plan = self._plan
        if unmatched and not plan.unmatched_ok and plan.kinds and all(table.column(n).null_count for n in plan.kinds):
            pc = _compute()  # some row may have every declared key missing (only then: pyarrow.compute costs 8 MB)
            missing = None
            for name in plan.kinds:
                null = pc.is_null(table.column(name))
                missing = null if missing is None else pc.and_(missing, null)
            if pc.any(missing).as_py():
                raise Doubt("a line whose declared keys are all missing or null (the unmatched-line check decides)")
        for name, value in plan.scope:
            column = table.column(name)
            if column.null_count or not _compute().all(_compute().equal(column, value)).as_py():
                raise Doubt(f"a line whose scope key {name!r} is null or not {value!r}")
        for name in (n for n, kind in plan.kinds.items() if kind == "float"):
            pc, column = _compute(), table.column(name)
            if pc.any(pc.invert(pc.is_finite(column))).as_py():
                raise Doubt(f"a NaN or an infinity in {name}")
            if pc.any(pc.equal(column, 0)).as_py() and any(mark in lines for mark in (b"e-", b"E-", b"-0", b"0" * 300)):
                raise Doubt(f"a zero in {name} that may be an underflow or a negative zero")


def _compute() -> Any:
    import pyarrow.compute
    return pyarrow.compute


_NON_FINITE = re.compile(rb"[:\[,][ \t]*-?(?:NaN|Inf)")  # a value NaN, Inf(inity), which Arrow reads as numbers
_BOM = b"\xef\xbb\xbf"


def _check_lines(lines: bytes) -> int:
    """The number of objects ``lines`` (ending with ``\\n``) hold for PostgreSQL's path: one a non-empty line, or a
    ``Doubt`` when a line may hold another number (a line not from ``{`` to ``}``), a ``\\r`` (COPY's business in
    PostgreSQL's path), a byte-order mark or bytes that are not UTF-8. Each check is a scan of the bytes in C."""
    if b"\r" in lines:
        raise Doubt("a chunk of lines holding a \\r")
    if not lines.isascii():
        if _BOM in lines:
            raise Doubt("a chunk of lines holding a byte-order mark")
        try:
            lines.decode()
        except UnicodeDecodeError as exc:
            raise Doubt(f"bytes that are not UTF-8 ({exc.reason})") from None
    count = lines.count(b"\n")
    if lines[:1] == b"{" and lines[-2:] == b"}\n" and lines.count(b"}\n{") == count - 1:
        return count  # no empty line, each line from { to }: one scan instead of three
    empty = len(re.findall(b"\n(?=\n)", lines)) + (lines[:1] == b"\n")
    objects = count - empty
    starts = lines.count(b"\n{") + (lines[:1] == b"{")
    if starts != objects or lines.count(b"}\n") != objects:
        raise Doubt("a line that does not start with { and end with } (blanks, several objects, one on several lines)")
    return objects


def _check_values(lines: bytes, objects: int) -> None:
    """A ``Doubt`` when ``lines`` may hold a value that Arrow reads and ``jsonb`` refuses in a key Arrow skips
    (``NaN``, ``Infinity``, ``\\u0000``) or nesting deeper than ``DEPTH``."""
    if b"\\u0000" in lines:
        raise Doubt("a chunk of lines holding \\u0000, which jsonb refuses")
    if (b"NaN" in lines or b"Inf" in lines) and _NON_FINITE.search(lines):  # "Info" in a string is no doubt
        raise Doubt("a chunk of lines holding NaN or Infinity, which Arrow reads as numbers and jsonb refuses")
    if lines.count(b"{") + (lines.count(b"[") if b"[" in lines else 0) - objects > DEPTH:
        for line in lines.split(b"\n"):
            if line.count(b"{") + line.count(b"[") > DEPTH and _depth(line) > DEPTH:
                raise Doubt(f"a line nested deeper than {DEPTH}")


_TOKENS = re.compile(rb'"(?:[^"\\]|\\.)*"|[\[{]|[\]}]')


def _depth(line: bytes) -> int:
    """How deep the arrays and objects of ``line`` nest (strings skipped)."""
    depth = deepest = 0
    for token in _TOKENS.finditer(line):
        mark = token.group()[:1]
        if mark in (b"[", b"{"):
            depth += 1
            deepest = max(deepest, depth)
        elif mark in (b"]", b"}"):
            depth -= 1
    return deepest


_SPACE = re.compile(r"[ \t\n\r]*")
_scanstring = json.decoder.scanstring  # type: ignore[attr-defined]


def _skip(line: str, at: int) -> int:
    """The first position from ``at`` that is not JSON whitespace."""
    match = _SPACE.match(line, at)
    return at if match is None else match.end()


class LineWalker:
    """Each line's keys walked in Python (``json``'s C scanner) for what Arrow cannot give: the text of the values of
    ``jsonb`` columns and of the keys an ``extra`` column keeps, as the line holds it (PostgreSQL parses that text as
    its path does: the same numbers, the last of a repeated key), and whether the line has a declared key."""

    def __init__(self, plan: ArrowPlan) -> None:
        self._plan = plan
        self._mapped = set(plan.kinds)
        self._jsonb = [name for name, kind in plan.kinds.items() if kind == "jsonb"]
        self._scan = json.decoder.JSONDecoder().scan_once  # type: ignore[attr-defined]

    def walk(self, text: str, rows: int) -> dict[str, list[str | None]]:
        """Per ``jsonb`` column (and ``extra``), each row's JSON text or None; ``text``: ``rows`` non-empty lines."""
        plan = self._plan
        values: dict[str, list[str | None]] = {name: [] for name in self._jsonb}
        kept: list[str | None] = []
        for line in filter(None, text.split("\n")):
            found, others = self._keys(line)
            if not plan.unmatched_ok and not (others if plan.extra else False) and not self._mapped & found.keys():
                raise Doubt("a line with no declared key (the unmatched-line check names it)")
            for name in self._jsonb:
                value = found.get(name)
                values[name].append(None if value is None or value == "null" else value)
            kept.append("{" + ", ".join(others) + "}" if others else None)
        if plan.extra:
            values[plan.extra] = kept
        assert all(len(v) == rows for v in values.values())
        return values

    def _keys(self, line: str) -> tuple[dict[str, str], list[str]]:
        """The line's keys with their values' text (the last of a repeated key), and ``"key": value`` of each key that
        the columns do not name, in the line's order."""
        found: dict[str, str] = {}
        others: list[str] = []
        scan = self._scan
        try:
            at = _skip(line, 1)
            if line[at] == "}":
                return found, others
            while True:
                key, end = _scanstring(line, at + 1)
                start = _skip(line, _skip(line, end) + 1)
                _, stop = scan(line, start)
                found[key] = line[start:stop]
                if key not in self._mapped:
                    others.append(f"{line[at:end]}: {line[start:stop]}")
                at = _skip(line, stop)
                if line[at] == "}":
                    return found, others
                at = _skip(line, at + 1)
        except (ValueError, IndexError, StopIteration, RecursionError) as exc:
            raise Doubt(f"a line Python's json does not walk: {exc!r}") from None
