"""The partition-swap write mode (``Swap``): a natively partitioned table, one child table per partition value, and a
load that builds the value's new child and swaps it in; with ``keep``, the retention of the newest partitions only.

A load, in the partition's one transaction (``writes.write_once``: advisory lock, marker read, then this):

1. creates the new child ``<table>_p<value>_new`` with the parent's columns, read from the catalog (no lock on the
   parent), and a CHECK constraint of the value's bound: a row of another date (or hour) is refused as the COPY
   reads it, naming the object and line;
2. copies the source's rows into it, ``COPY ... FREEZE`` (the table is the transaction's own): no dead tuples left
   behind by a reload, no later freeze or hint-bit rewrite; then builds the parent's indexes on it, one sort each;
3. takes the parent's ACCESS EXCLUSIVE lock (``db.swap.lock_for_swap``), drops the old child, renames the new one
   and attaches it (the CHECK proves the bound: no scan); with ``keep``, drops the children and markers that the
   newest partition leaves behind the horizon. The marker follows, and the commit.

Readers of every date wait for step 3 only, up to the commit; readers of the reloaded date see the old rows or the
new ones. Loads of different dates of one parent copy side by side and take the parent's lock one at a time, for
their swaps only (see ``db.swap`` for the lock order).

**Retention** (``keep = N``): the newest N partition values (days, hours or months by grain) counted back from the
newest child are kept; older ones are **expired**: dropped with their markers by the load that moves the horizon,
refused to a load (raise ``keep`` to load one again), shown ``expired`` by ``status``, and counted done by
``bulk_complete``, so a backfill over them neither loads them nor reports them missing. No luigi here.
"""
from __future__ import annotations

import datetime
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import psycopg2.extensions

from . import db, native, writes
from .db import swap as db_swap
from .errors import LoadError
from .grains import Grain
from .partitions import ScopedTable, TableName
from .sql import swap as swap_sql
from .writes import PartitionJob, Replace

logger = logging.getLogger("luigi-interface.luigi_pipelines")


@dataclass(frozen=True)
class Swap:
    """Swap the partition's child table (see the module docstring). ``columns``: the partition key, the date column
    (and an hourly task's hour column); ``key_of``: a partition value's marker key."""

    grain: Grain
    columns: tuple[str, ...]
    key_of: Callable[[Any], ScopedTable]
    keep: int = 0
    scope: tuple[tuple[str, str], ...] = ()  # a scoped task's: its partitions hang from the scope's own parent

    @property
    def unit(self) -> str:
        return self.grain.unit

    def prepare(self, conn: psycopg2.extensions.connection, job: PartitionJob) -> None:
        """The table must be partitioned on ``columns`` with only children of partition values (once per
        connection)."""
        table, checked = job.layout.table, db.checks_of(conn)
        if ("swap", table, self.scope) in checked:
            return
        chain = native.scope_parents(table, self.scope)
        if chain:
            native.check_shape(conn, table, [self.scope[0][0]], self.unit, job.family, "l")
        for n, (parent, above, value) in enumerate(chain):
            last = n == len(chain) - 1
            columns, strategy = (self.columns, "RANGE") if last else ([self.scope[n + 1][0]], "LIST")
            db_swap.ensure_scope_parent(conn, parent, swap_sql.create_scope_parent(parent, above, value, columns,
                                                                                     strategy))
            native.check_shape(conn, parent, columns, self.unit, job.family, strategy[0].lower())
        if not chain:
            native.check_shape(conn, table, self.columns, self.unit, job.family)
        native.check_children(conn, native.range_parent(table, self.scope), self.unit, job.family)
        checked.add(("swap", table, self.scope))

    def skips(self, tx: db.PartitionTransaction, job: PartitionJob) -> str:
        """A partition behind the retention's horizon, unless forced (then the write refuses it): a backfill that
        loads newer dates first finds the older ones expired by the time it reaches them."""
        if not self.keep or job.force:
            return ""
        try:
            self.horizon(tx, self.value_of(tx))
        except LoadError as expired:
            return str(expired).split(": ", 1)[1]
        return ""

    def check_neighbours(self, tx: db.PartitionTransaction, job: PartitionJob) -> None:
        """As a replace: no other task's partition of the same table and date."""
        Replace().check_neighbours(tx, job)

    def write(self, tx: db.PartitionTransaction, job: PartitionJob) -> None:
        table, value = native.range_parent(tx.target, self.scope), self.value_of(tx)
        name = native.child_name(table, self.unit, value)
        new, (start, stop) = TableName(table.schema, f"{name}_new"), native.bound(self.unit, value)
        if self.keep:
            self.horizon(tx, value)  # fail before the copy
        db_swap.create_child(tx, table, new, swap_sql.bound_condition(self.columns, start, stop, self.scope))
        db.delete_rejects(tx, job.settings.rejects)
        with db.translating(f"{tx.key.describe()} {tx.date}: a row outside the partition", db.CHECK_VIOLATION):
            job.source.write(tx, new)
        writes.run_checks(tx, job, child=new)
        indexes = db_swap.build_indexes(tx, table, new)
        waited = db_swap.lock_for_swap(tx, table, job.settings.lock_timeout_s)
        expired = self.expire(tx, job, value) if self.keep else 0
        old = db_swap.swap_child(tx, table, new, name, start, stop)
        logger.info("%s %s: %s child %s (%d rows, %d indexes built after the copy) after %.3f s waiting for the "
                    "table's lock; %d expired partitions dropped", tx.key.describe(), tx.date,
                    "swapped in the new" if old else "attached the", name, tx.rows, indexes, waited, expired)

    def value_of(self, tx: db.PartitionTransaction) -> Any:
        """The partition value of ``tx`` (its date; an hourly task's hour)."""
        values = [v for v in self.grain.covering(tx.date, tx.date + datetime.timedelta(days=1))
                  if self.grain.date_of(v) == tx.date and self.key_of(v) == tx.key]
        if not values:
            raise LoadError(f"{tx.key} {tx.date}: no partition value of the {self.unit} for this key")
        return values[0]

    def horizon(self, tx: db.PartitionTransaction, value: Any) -> list[tuple[str, Any]]:
        """The children behind the retention's horizon (name, value), the newest child or ``value`` counting as the
        newest; refuses ``value`` itself when it is behind."""
        parent = native.range_parent(tx.target, self.scope)
        children = self.children(db_swap.child_names(tx, parent), parent)
        newest = max([self.grain.ordinal(v) for _, v in children] + [self.grain.ordinal(value)])
        if self.grain.ordinal(value) <= newest - self.keep:
            raise LoadError(f"{tx.key.describe()} {self.grain.describe(value)}: expired: keep = {self.keep} keeps the "
                            f"{self.keep} newest {self.unit}s up to the newest loaded, and this one is older; nothing "
                            f"was written (raise keep to load it again)")
        return [(name, v) for name, v in children if self.grain.ordinal(v) <= newest - self.keep]

    def children(self, names: Sequence[str], table: TableName) -> list[tuple[str, Any]]:
        found = ((name, native.value_of_child(table, self.unit, name)) for name in names)
        return [(name, v) for name, v in found if v is not None]

    def expire(self, tx: db.PartitionTransaction, job: PartitionJob, value: Any) -> int:
        """Under the parent's lock: drop the children behind the horizon with their markers (not those a load holds
        now: the next load drops them); how many were dropped."""
        dropped = 0
        for name, old in self.horizon(tx, value):
            key, date = str(self.key_of(old)), self.grain.date_of(old)
            if db_swap.drop_expired(tx, job.marker, TableName(tx.target.schema, name), key, date):
                dropped += 1
            else:
                logger.info("%s %s: expired, but being loaded now; the next load drops it", key, date)
        return dropped

    def expired(self, conn: psycopg2.extensions.connection, table: TableName, values: Sequence[Any]) -> list[Any]:
        """Of ``values``, those behind the horizon of ``table``'s newest child: expired (``keep``), or none."""
        if not self.keep or not values:
            return []
        table = native.range_parent(table, self.scope)
        children = self.children([name for name, _ in db_swap.children(conn, table)], table)
        if not children:
            return []
        newest = max(self.grain.ordinal(v) for _, v in children)
        return [v for v in values if self.grain.ordinal(v) <= newest - self.keep]

