"""Native partitions of a task's table: the child that holds a partition value (its name and bound), and the check
that an existing table has the shape the task declares (partitioned by range on the partition's columns with a child
per partition value, or plain), each mismatch refused with the statements that migrate it, never altered.

A child's name carries its value (``t_p20190201``, ``t_p2019020113``, ``t_p201902``) and its bound is exactly that
value's: ``FROM ('2019-02-01') TO ('2019-02-02')``; an hourly table's key is (date, hour), ``FROM ('2019-02-01', 13)
TO ('2019-02-01', 14)``. No luigi here.
"""
from __future__ import annotations

import datetime
import re
from collections.abc import Sequence
from typing import Any

import psycopg2.extensions
from psycopg2 import sql

from .db import swap as db_swap
from .errors import ConfigurationError
from .partitions import TableName
from .sql import swap as swap_sql

_PATTERNS = {"day": "%Y%m%d", "hour": "%Y%m%d%H", "month": "%Y%m"}
_DOCS = "docs/partitions.md"


def scope_parents(table: TableName, scope: Sequence[tuple[str, str]]) -> list[tuple[TableName, TableName, str]]:
    """The parents a scope's partitions hang from, top down: (table, its parent, its list value) per scope column,
    ``t_us`` for ``{"region": "us"}`` (``t_us_web`` under it for a second column); none without a scope."""
    chain, parent = [], table
    for column, value in scope:
        if not re.fullmatch(r"[A-Za-z0-9_]+", value) or len(f"{parent.name}_{value}") > 48:
            raise ConfigurationError(f"{table}: scope {column}={value!r}: a partitioned table's scope values name its "
                                     f"children, so they must be letters, digits or _, and short")
        child = TableName(table.schema, f"{parent.name}_{value}")
        chain.append((child, parent, value))
        parent = child
    return chain


def range_parent(table: TableName, scope: Sequence[tuple[str, str]]) -> TableName:
    """The table whose children are the partitions of ``scope``: ``table`` itself, or its last scope parent."""
    chain = scope_parents(table, scope)
    return chain[-1][0] if chain else table


def child_name(table: TableName, unit: str, value: Any) -> str:
    """The name of the child of ``table`` that holds the partition ``value`` of ``unit`` (day, hour, month)."""
    name = f"{table.name}_p{value.strftime(_PATTERNS[unit])}"
    if len(f"{name}_new") > 63:
        raise ConfigurationError(f"{table}: the name is too long for its children's names ({name}_new is over "
                                 f"PostgreSQL's 63 characters): give the table a shorter name")
    return name


def value_of_child(table: TableName, unit: str, name: str) -> Any:
    """The partition value whose child is named ``name`` (a date; an hour's datetime), or None if no value's is."""
    prefix = f"{table.name}_p"
    if not name.startswith(prefix):
        return None
    try:
        value = datetime.datetime.strptime(name[len(prefix):], _PATTERNS[unit])
    except ValueError:
        return None
    if child_name(table, unit, value) != name:
        return None
    return value if unit == "hour" else value.date()


def bound(unit: str, value: Any) -> tuple[tuple[Any, ...], tuple[Any, ...]]:
    """The range bound of the partition ``value``'s child: its first key and the key after its last."""
    if unit == "hour":
        return (value.date(), value.hour), (value.date(), value.hour + 1)
    if unit == "month":
        return (value,), ((value + datetime.timedelta(days=32)).replace(day=1),)
    return (value,), (value + datetime.timedelta(days=1),)


def bound_text(unit: str, value: Any) -> str:
    """``bound`` as the catalog renders it (``pg_get_expr``): ``FOR VALUES FROM ('2019-02-01') TO ('2019-02-02')``."""
    start, stop = bound(unit, value)

    def keys(values: Sequence[Any]) -> str:
        return ", ".join(f"'{v.isoformat()}'" if isinstance(v, datetime.date) else str(v) for v in values)
    return f"FOR VALUES FROM ({keys(start)}) TO ({keys(stop)})"


def check_shape(conn: psycopg2.extensions.connection, table: TableName, columns: Sequence[str], unit: str,
                family: str, strategy: str = "r") -> None:
    """``table`` must be partitioned by range on ``columns`` (partitions of ``unit``) when ``columns`` are given,
    plain when not (its children are checked by ``check_children``); each mismatch is a ``ConfigurationError``
    with the statements that migrate the table (see ``docs/partitions.md``)."""
    shape = db_swap.table_shape(conn, table)
    if shape is None:  # dropped since: the load fails naming it, and the next attempt creates it
        return
    kind, found, keys = shape
    if not columns:
        if kind == "p":
            raise ConfigurationError(
                f"{family}: {table} is partitioned, but the task declares a plain table: declare partitioned = True "
                f"(a load then swaps the partition's child), or make it plain, once: "
                f"{_statements(conn, swap_sql.migrate_to_plain(table))}")
        return
    if kind != "p" and strategy == "r":
        raise ConfigurationError(
            f"{family}: {table} is a plain table, but the task declares partitioned = True: nothing was changed. "
            f"Migrate it once, in one transaction (see {_DOCS}): "
            f"{_statements(conn, swap_sql.migrate_to_partitioned(table, columns, unit))}")
    if kind != "p" or found != strategy or list(keys) != list(columns):
        raise ConfigurationError(
            f"{family}: {table} is {'partitioned by ' + _describe(found, keys) if kind == 'p' else 'a plain table'}, "
            f"but the task's partitions need it partitioned by {_describe(strategy, columns)}: migrate it yourself "
            f"(see {_DOCS}); nothing was changed")


def check_children(conn: psycopg2.extensions.connection, table: TableName, unit: str, family: str) -> None:
    """Every child of ``table`` must be one partition value's, named and bound as a load makes it: another child
    (a default partition, a month's child of a daily task) would hold rows of several partitions."""
    foreign = [(name, text) for name, text in db_swap.children(conn, table) if not _owned(table, unit, name, text)]
    if foreign:
        name, text = foreign[0]
        child = TableName(table.schema, name)
        many = len(foreign) > 1
        raise ConfigurationError(
            f"{family}: {table} has {len(foreign)} child table{'s' if many else ''} that {'are' if many else 'is'} "
            f"not one {unit}'s child named as a load names it, e.g. {name} ({text}): its rows may be of several "
            f"{unit}s, which a swap cannot replace. Detach it and move its rows through the parent once (each row "
            f"goes to its {unit}'s child, which must exist: a forced load creates it): "
            f"{_statements(conn, [swap_sql.detach_partition(table, child)])}; then reload its {unit}s with --force "
            f"and drop {child}")


def _owned(table: TableName, unit: str, name: str, text: str) -> bool:
    value = value_of_child(table, unit, name)
    return value is not None and text.replace("'", "") == bound_text(unit, value).replace("'", "")  # 13 or '13'



def _describe(strategy: str, keys: Sequence[str]) -> str:
    kind = {"r": "RANGE", "l": "LIST", "h": "HASH"}.get(strategy, strategy)
    return f"{kind} ({', '.join(keys) or 'an expression'})"


def _statements(conn: psycopg2.extensions.connection, statements: Sequence[sql.Composable]) -> str:
    return "; ".join(s.as_string(conn) for s in statements)
