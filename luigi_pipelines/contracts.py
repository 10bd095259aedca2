"""Schema contracts (pure): what a load does when its table or its files differ from the task's declaration.

A task declares one ``Contract`` (``contract = Contract(columns="evolve")``, or the shorthands ``"evolve"`` and
``"freeze"``); learnt from dlt's schema contracts, with the table's DDL run inside the load's own transaction:

- ``columns``: ``"freeze"`` (the default): a declared column the table lacks refuses the load, with the
  statement that adds it; a declared column a file lacks (a CSV header read ``by_name``, a Parquet file) is bad
  input. ``"evolve"``: the load adds the column (nullable; a filled or stamped column gets its default after the
  add, so older rows keep NULL), and a file without it loads NULL into it;
- ``extra_fields``: a file field no column declares (a ``by_name`` CSV header's name, a JSON key, a Parquet
  column): ``"ignore"``d (the default) or ``"refuse"``d, naming each;
- ``types``: ``"kind"`` (the default) compares only the kind of type (PostgreSQL's ``typcategory``: text where
  numbers are declared); ``"freeze"`` refuses any other type; ``"evolve"`` widens what PostgreSQL widens without
  rewriting the table (``varchar(n)`` to ``varchar(m > n)`` or ``text``, ``numeric(p,s)`` to ``numeric(q > p,s)``
  or ``numeric``); ``"evolve_with_rewrite"`` also those that rewrite it (``integer`` to ``bigint``,
  ``real`` to ``double precision``). A narrowing, or another type, is always refused.

A column is never dropped, renamed or narrowed, nor a NOT NULL dropped: the refusal shows the statement a person
would run. ``differences`` compares a table with a layout; ``judge`` splits them by the contract into what the load
does and what it refuses. Nothing here runs SQL.
"""
from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from psycopg2 import sql

from . import sql as q
from .layouts import ExistingColumn, ResolvedTypes, TableLayout

COLUMNS = ("freeze", "evolve")
EXTRA_FIELDS = ("ignore", "refuse")
TYPES = ("kind", "freeze", "evolve", "evolve_with_rewrite")

# The kinds of difference. ADD and DEFAULT: a column or a load's default the table lacks; WIDEN: a type widened
# without a rewrite; REWRITE: widened with one; TYPE: narrowed, or another type; NOT_NULL: an undeclared NOT NULL
# column without a default, which every row would fail.
ADD, DEFAULT, WIDEN, REWRITE, TYPE, NOT_NULL = "add", "default", "widen", "rewrite", "type", "not null"

_MODIFIER = re.compile(r"\(\s*(\d+)\s*(?:,\s*(\d+)\s*)?\)")
_INTEGERS = ("smallint", "integer", "bigint")
_FLOATS = ("real", "double precision")


@dataclass(frozen=True)
class Contract:
    """A task's schema contract (see the module docstring); ``Contract()`` is the behaviour without one."""

    columns: str = "freeze"
    extra_fields: str = "ignore"
    types: str = "kind"

    def __post_init__(self) -> None:
        for name, allowed in (("columns", COLUMNS), ("extra_fields", EXTRA_FIELDS), ("types", TYPES)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"Contract({name}={getattr(self, name)!r}): one of {', '.join(map(repr, allowed))}")

    @classmethod
    def of(cls, value: Contract | str | None) -> Contract:
        """A task's ``contract``: a ``Contract``, ``"freeze"`` (every difference refused: columns, extra fields,
        types), ``"evolve"`` (columns added, types widened without a rewrite, extra fields ignored), or None."""
        if value is None:
            return cls()
        if isinstance(value, Contract):
            return value
        if value == "freeze":
            return cls("freeze", "refuse", "freeze")
        if value == "evolve":
            return cls("evolve", "ignore", "evolve")
        raise ValueError(f"contract = {value!r}: a Contract(...), 'evolve' or 'freeze'")

    @property
    def evolves(self) -> bool:
        """Whether a load may change the table."""
        return self.columns == "evolve" or self.types in ("evolve", "evolve_with_rewrite")

    @property
    def missing_fields_null(self) -> bool:
        """Whether a declared column a file lacks loads NULL (else the file is bad input)."""
        return self.columns == "evolve"

    @property
    def refuses_extra_fields(self) -> bool:
        return self.extra_fields == "refuse"

    def allows(self, kind: str) -> bool:
        """Whether the load itself makes a difference of ``kind``."""
        if kind in (ADD, DEFAULT):
            return self.columns == "evolve"
        if kind == WIDEN:
            return self.types in ("evolve", "evolve_with_rewrite")
        return kind == REWRITE and self.types == "evolve_with_rewrite"

    def describe(self) -> str:
        return f"Contract(columns={self.columns!r}, extra_fields={self.extra_fields!r}, types={self.types!r})"


NO_CONTRACT = Contract()  # the behaviour of a task that declares none


@dataclass(frozen=True)
class Difference:
    """One way a table differs from its declaration, with the ``ALTER TABLE`` action that removes it."""

    kind: str
    column: str
    problem: str
    action: sql.Composable


@dataclass(frozen=True)
class Verdict:
    """The differences a load makes itself (``applied``) and those it refuses."""

    applied: tuple[Difference, ...]
    refused: tuple[Difference, ...]


def judge(differences: Sequence[Difference], contract: Contract) -> Verdict:
    return Verdict(tuple(d for d in differences if contract.allows(d.kind)),
                   tuple(d for d in differences if not contract.allows(d.kind)))


def differences(layout: TableLayout, existing: Sequence[ExistingColumn], resolved: ResolvedTypes,
                contract: Contract = NO_CONTRACT) -> list[Difference]:
    """Every way the existing table differs from what ``layout`` needs: a column missing; filled by the load but
    without its default; of another type (of another kind only, under ``types="kind"``: ``integer`` for ``bigint``
    loads); or not declared, NOT NULL and without a default (every row would fail). ``resolved`` empty: the types
    are not compared. Generated columns are checked elsewhere."""
    by_name = {c.name: c for c in existing}
    defaults = {d.column.name: d for d in layout.defaults}
    found_all: list[Difference] = []
    for column in layout.table_columns:
        found, default = by_name.get(column.name), defaults.get(column.name)
        if default is not None:
            if found is None:
                action = add_action(column, default.expression) if contract != NO_CONTRACT else q.add_column_action(
                    q.column_with_default(column, default.expression))  # as before contracts, without one
                found_all.append(Difference(ADD, column.name, f"table {layout.table} has no column {column.name!r}, "
                                            f"which each load fills", action))
            elif not default.matches(found.default):
                found_all.append(Difference(DEFAULT, column.name, f"column {column.name!r} of {layout.table} is "
                                            f"filled by each load through its default",
                                            q.set_default_action(column, default.expression)))
        elif found is None:
            found_all.append(Difference(ADD, column.name, f"table {layout.table} has no column {column.name!r} "
                                        f"({column.type})", add_action(column)))
        elif not found.generated:
            found_all += _type_difference(layout, column, found, resolved.get(column.type), contract.types)
    known = {c.name for c in layout.table_columns} | {c.name for c, _ in layout.generated}
    for found in existing:
        if found.name not in known and found.not_null and not found.default and not (found.generated or found.identity):
            found_all.append(Difference(NOT_NULL, found.name, f"column {found.name!r} of {layout.table} ({found.type}) "
                                        f"is NOT NULL without a default, and no load fills it (not declared): every row "
                                        f"would fail", q.drop_not_null_action(found.name)))
    return found_all


def add_action(column: q.Column, default: sql.Composable | None = None) -> sql.Composed:
    """``ADD COLUMN "c" type``, and ``ALTER COLUMN "c" SET DEFAULT <default>`` after it: in one statement the rows
    the table holds keep NULL (no rewrite), and only rows written later get the default (a load's setting, now())."""
    add = q.add_column_action(q.column_definition(column))
    return add if default is None else sql.SQL(", ").join([add, q.set_default_action(column, default)])


def _type_difference(layout: TableLayout, column: q.Column, found: ExistingColumn,
                     resolved: tuple[str, str] | None, mode: str) -> list[Difference]:
    if resolved is None:
        return []
    shown, category = resolved
    if mode == "kind":
        change: str | None = None if category == found.category else TYPE
    else:
        change = type_change(table_type(found.type), declared_type(column.type, shown))
    if change is None:
        return []
    kind = change
    how = {WIDEN: "a widening without a rewrite", REWRITE: "a widening that rewrites the table",
           TYPE: "never changed by a load (a narrowing, or another type)"}[kind]
    suffix = "" if mode == "kind" else f": {how}"
    return [Difference(kind, column.name, f"column {column.name!r} of {layout.table} is {found.type}, declared "
                                          f"{column.type}{suffix}", q.set_type_action(column))]


def declared_type(declared: str, shown: str) -> str:
    """A declared type as the catalog shows a column of it: ``varchar(20)`` -> ``character varying(20)``,
    ``decimal(12)`` -> ``numeric(12,0)``; ``shown`` is its name without modifier (``format_type(oid, NULL)``). Only
    the modifiers of ``character varying`` and ``numeric`` are kept (the others are not compared)."""
    modifier = _MODIFIER.search(declared)
    if shown == "character varying" and modifier:
        return f"character varying({modifier.group(1)})"
    if shown == "numeric" and modifier:
        return f"numeric({modifier.group(1)},{modifier.group(2) or 0})"
    return shown


def table_type(shown: str) -> str:
    """A column's ``format_type`` with the modifiers ``declared_type`` does not compare removed."""
    if re.fullmatch(r"(character varying|numeric)\(\d+(,\d+)?\)", shown):
        return shown
    return _MODIFIER.sub("", shown).replace("  ", " ")


def type_change(old: str, new: str) -> str | None:
    """How a column of type ``old`` becomes ``new`` (both as ``declared_type`` gives them): None when they are
    the same, ``WIDEN`` without a rewrite, ``REWRITE`` with one, ``TYPE`` when it narrows or is another type."""
    if old == new:
        return None
    (old_base, old_mod), (new_base, new_mod) = _split(old), _split(new)
    if old_base in ("character varying", "text") and new_base in ("character varying", "text"):
        wider = new_base == "text" or not new_mod or (old_base != "text" and bool(old_mod) and new_mod[0] > old_mod[0])
        return WIDEN if wider else TYPE
    if old_base == new_base == "numeric":
        if not new_mod:
            return WIDEN
        if not old_mod:
            return TYPE
        (p, s), (p2, s2) = old_mod, new_mod
        if s2 == s and p2 > p:
            return WIDEN
        return REWRITE if s2 > s and p2 - s2 >= p - s else TYPE
    for ladder in (_INTEGERS, _FLOATS):
        if old_base in ladder and new_base in ladder:
            return REWRITE if ladder.index(new_base) > ladder.index(old_base) else TYPE
    if old_base in _INTEGERS and new == "numeric":
        return REWRITE
    return TYPE


def _split(shown: str) -> tuple[str, tuple[int, ...]]:
    modifier = _MODIFIER.search(shown)
    if modifier is None:
        return shown, ()
    return shown[:modifier.start()], tuple(int(g) for g in modifier.groups() if g is not None)


def fix_statement(table: Any, refused: Sequence[Difference]) -> sql.Composed:
    """The one ``ALTER TABLE`` a person runs to remove the ``refused`` differences."""
    return q.alter_table(table, [d.action for d in refused])


def headline(table: Any, refused: Sequence[Difference]) -> str:
    """``refused`` in one line: the one problem, or how many and each."""
    if len(refused) == 1:
        return refused[0].problem
    return (f"{table} does not match the declaration, {len(refused)} problems: "
            + "; ".join(d.problem for d in refused))


def file_fields(fields: Sequence[str], declared: Sequence[str], contract: Contract, what: str) -> list[str]:
    """Of the ``declared`` columns, those the file's ``fields`` hold (in declared order): a missing one loads NULL
    under ``columns="evolve"``, else refuses the file; an undeclared field refuses it under ``extra_fields="refuse"``.
    Both kinds are named at once, in one ``ValueError``."""
    present = set(fields)
    missing = [n for n in declared if n not in present]
    wanted = set(declared)
    extra = list(dict.fromkeys(n for n in fields if n not in wanted)) if contract.refuses_extra_fields else []
    problems = []
    if missing and not contract.missing_fields_null:
        problems.append(f"the {what} lacks the declared column{'s' if len(missing) > 1 else ''} "
                        f"{', '.join(map(repr, missing))}")
    if extra:
        problems.append(f"the {what} has field{'s' if len(extra) > 1 else ''} no column declares: "
                        f"{', '.join(repr(n[:64]) for n in extra[:20])}{' and more' if len(extra) > 20 else ''} "
                        f"(extra_fields='refuse')")
    if problems:
        raise ValueError("; ".join(problems))
    return [n for n in declared if n in present]
