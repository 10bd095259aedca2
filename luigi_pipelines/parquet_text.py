"""Arrow columns that COPY's CSV cannot take as Arrow writes them, as text: nested values (lists, structs, maps) as
JSON for ``jsonb``, binary values as validated UTF-8 or as ``bytea``'s hex text (``parquet`` picks one per column with
``recast``). Each works one value at a time in Python, for these columns only. pyarrow comes in as ``pa``, so importing
this module imports no pyarrow.
"""
from __future__ import annotations

import collections
import datetime
import json
import math
from collections.abc import Callable
from typing import Any


def _binary(pa: Any, kind: Any) -> bool:
    return bool(pa.types.is_binary(kind) or pa.types.is_large_binary(kind) or pa.types.is_fixed_size_binary(kind))


def recast(pa: Any, kind: Any, declared: str) -> str | None:
    """How a file column of Arrow type ``kind`` is written for a column declared ``declared``: nested values as JSON,
    bytes as ``bytea`` text into ``bytea`` and as validated UTF-8 into any other type (Impala and Hive write
    strings as plain BYTE_ARRAY, without the UTF8 annotation that makes pyarrow read them as strings)."""
    if pa.types.is_nested(kind):
        return "json"
    if _binary(pa, kind):
        return "bytea" if declared.strip().lower() == "bytea" else "text"
    return None


class UnwritableValue(Exception):
    """The value at ``index`` of a column (0 until its column's loop knows it) cannot be written, for ``reason``."""

    def __init__(self, index: int, reason: str) -> None:
        super().__init__(reason)
        self.index = index
        self.reason = reason


def _as_json(pa: Any, column: Any) -> Any:
    """Each value as JSON text: maps as objects, non-finite floats as strings (``_plain``)."""
    kind = column.type
    walk = _holds_map(pa, kind)
    texts = []
    for index, value in enumerate(column.to_pylist()):
        try:
            texts.append(None if value is None else _json_text(pa, kind, value, walk))
        except UnwritableValue as bad:
            raise UnwritableValue(index, bad.reason) from None
    return pa.array(texts, pa.string())


def _json_text(pa: Any, kind: Any, value: Any, walk: bool) -> str:
    """``value`` as JSON text; walked by ``_plain`` when its type holds a map or it holds a non-finite float (which
    ``json.dumps`` refuses with ``allow_nan=False``): walking every list of five floats took 1.9 times as long."""
    if not walk:
        try:
            return json.dumps(value, default=_json_default, allow_nan=False)
        except ValueError:
            pass
    return json.dumps(_plain(pa, kind, value), default=_json_default)


def _holds_map(pa: Any, kind: Any) -> bool:
    """Whether values of ``kind`` hold a map, which ``to_pylist`` gives as a list of pairs."""
    return bool(pa.types.is_map(kind) or any(_holds_map(pa, kind.field(i).type) for i in range(kind.num_fields)))


_NON_FINITE = {"nan": "NaN", "inf": "Infinity", "-inf": "-Infinity"}  # as PostgreSQL's to_jsonb writes them


def _plain(pa: Any, kind: Any, value: Any) -> Any:
    """``value`` of Arrow type ``kind`` (from ``to_pylist``) as JSON takes it: a map (pairs) as an object keyed by
    ``_key_text``, NaN and infinities as PostgreSQL's ``to_jsonb`` writes them, ``"NaN"``, ``"Infinity"``,
    ``"-Infinity"`` (JSON has no such numbers); a map repeating a key is a ``UnwritableValue`` (a JSON object cannot hold
    it twice, and keeping one value would drop the other silently)."""
    if value is None:
        return None
    if pa.types.is_map(kind):
        item = kind.item_type
        as_is = not pa.types.is_nested(item) and not pa.types.is_floating(item)  # flat values: no call per value
        pairs = [(k if isinstance(k, str) else _key_text(k), v if as_is else _plain(pa, item, v)) for k, v in value]
        plain = dict(pairs)
        if len(plain) < len(pairs):
            repeated = next(k for k, n in collections.Counter(k for k, _ in pairs).items() if n > 1)
            raise UnwritableValue(0, f"the map holds the key {repeated!r} twice; a JSON object cannot")
        return plain
    if pa.types.is_struct(kind):
        return {field.name: _plain(pa, field.type, value[field.name]) for field in kind}
    if pa.types.is_floating(kind):
        return value if math.isfinite(value) else _NON_FINITE[str(value)]
    if kind.num_fields and not pa.types.is_union(kind):  # lists of every kind
        return [_plain(pa, kind.field(0).type, v) for v in value]
    return value


def _key_text(key: Any) -> str:
    """A map key as a JSON object's key: strings as they are, booleans as ``true``/``false``, other values as their
    text (numbers as JSON writes them, dates and times ISO, bytes hex)."""
    if isinstance(key, str):
        return key
    if isinstance(key, bool):
        return "true" if key else "false"
    if isinstance(key, float):
        return repr(key) if math.isfinite(key) else _NON_FINITE[str(key)]
    return str(_json_default(key))


def _as_utf8(pa: Any, column: Any) -> Any:
    """Binary values as text once they are checked to be UTF-8 (Arrow's cast checks them, and for the first one that
    is not, the loop finds its row)."""
    try:
        return column.cast(pa.binary()).cast(pa.string())
    except pa.ArrowInvalid:
        bad = next(((i, v) for i, v in enumerate(column.to_pylist()) if v is not None and not _is_utf8(v)), None)
        if bad is None:
            raise
        raise UnwritableValue(bad[0], f"binary value is not UTF-8 text ({bad[1][:40]!r}); declare the column bytea to "
                                f"load the bytes") from None


def _is_utf8(value: bytes) -> bool:
    try:
        value.decode()
    except UnicodeDecodeError:
        return False
    return True


def _as_bytea(pa: Any, column: Any) -> Any:
    r"""Binary values as ``bytea``'s hex text, ``\x00ff``: one value at a time in Python, for these columns only."""
    return pa.array([None if v is None else "\\x" + v.hex() for v in column.to_pylist()], pa.string())


RECASTS: dict[str, Callable[[Any, Any], Any]] = {"json": _as_json, "text": _as_utf8, "bytea": _as_bytea}
"""What ``recast`` names, the function that writes such a column (``pa``, the column)."""


def _json_default(value: Any) -> Any:
    """JSON for what ``to_pylist`` gives inside nested values: dates and times as ISO text, bytes as hex, decimals
    (exactly) and anything else as their text."""
    if isinstance(value, (datetime.date, datetime.time)):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.hex()
    return str(value)
