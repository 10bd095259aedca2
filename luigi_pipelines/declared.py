"""What a partition task declares about its table, read once into one frozen value: the keys of its partitions
(table, scope, grain), the table's layout, its write mode and the values each write fills.

The luigi task classes read their class attributes (and their config) into a ``Declared`` and delegate to it;
every check of a declaration is here, as a ``ConfigurationError`` naming the task. No luigi here.
"""
from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from . import db, swap, writes
from . import sql as q
from .checks import Check, validate
from .contracts import NO_CONTRACT, Contract
from .errors import ConfigurationError
from .grains import Grain
from .layouts import FILES, DateSource, Lineage, MergeLayout, TableLayout
from .partitions import ScopedTable, TableName


@dataclass(frozen=True)
class Declared:
    """A task's declarations about its table (see the module docstring)."""

    family: str
    table: str
    date_column: str
    columns: tuple[q.Column, ...]
    grain: Grain
    scope: Mapping[str, str]
    date_from: DateSource = FILES
    lineage: Lineage = Lineage()
    merged: bool = False  # merged by key (``writes.Merge``), not replaced
    merge_key: Sequence[str] = ()
    snapshot: bool = False
    deleted_flag: str = ""
    contract: Contract = NO_CONTRACT  # what a load does when the table or the files differ (``contracts``)
    partitioned: bool = False  # natively partitioned, a child per partition, swapped in by each load (``swap.Swap``)
    keep: int = 0  # partitioned: keep the newest ``keep`` partitions, drop older ones (0: all)

    @classmethod
    def of(cls, family: str, table: str, date_column: str, columns: Sequence[tuple[str, str]], grain: Grain,
           scope: Mapping[str, str], **more: Any) -> Declared:
        try:
            more["contract"] = Contract.of(more.get("contract"))
            return cls(family, table, date_column, q.columns_of(columns), grain, dict(scope), **more)
        except ValueError as exc:
            raise ConfigurationError(f"{family}: {exc}") from None

    @property
    def target_table(self) -> TableName:
        if not self.table or not (self.date_column or self.merged):
            raise ConfigurationError(f"{self.family} must declare table and date_column (or merge_key)")
        if self.merged and (self.date_column or self.date_from is not FILES):
            raise ConfigurationError(
                f"{self.family}: a merged table keeps its rows by key, not by date: leave date_column and "
                f"date_from out (a date in the files is an ordinary column)")
        try:
            return TableName.parse(self.table)
        except ValueError as exc:
            raise ConfigurationError(f"{self.family}: {exc}") from None

    @property
    def table_key(self) -> ScopedTable:
        """The table and scope the task writes, whatever the partition (an hourly task: all its hours)."""
        try:
            return ScopedTable.of(self.target_table, self.scope)
        except ValueError as exc:
            raise ConfigurationError(f"{self.family}: scope {self.scope!r}: {exc}") from None

    def key_of(self, value: Any) -> ScopedTable:
        """The partition ``value``'s key in the marker and the lock: the table, its scope and the grain's columns."""
        extra = self.grain.key_scope(value)
        if not extra:
            return self.table_key
        clash = sorted(set(extra) & set(self.scope))
        if clash:
            raise ConfigurationError(f"{self.family}: {clash[0]!r} is the grain's column and cannot be a scope column")
        return ScopedTable.of(self.target_table, {**self.scope, **extra})

    def partitions_of(self, values: Sequence[Any]) -> list[tuple[ScopedTable, datetime.date]]:
        """The marker key and date of each partition value; each key made once, not per value."""
        keys: dict[tuple[tuple[str, str], ...], ScopedTable] = {}
        out = []
        for value in values:
            extra = tuple(self.grain.key_scope(value).items())
            if extra not in keys:
                keys[extra] = self.key_of(value)
            out.append((keys[extra], self.grain.date_of(value)))
        return out

    def layout(self) -> TableLayout:
        """Every column of the table by where its values come from: the source, the write, the table itself."""
        try:
            if not self.merged:
                layout = TableLayout.of(self.target_table, self.date_column, self.columns, self.date_from,
                                        self.fills(), self.lineage)
                if self.scope and self.partition_columns:  # a list partition per scope value (``native``)
                    return dataclasses.replace(layout, partition_by=self.table_key.columns[:1], partition_strategy="LIST")
                return dataclasses.replace(layout, partition_by=self.partition_columns)
            unkeyed = [c for c in self.table_key.columns if c not in self.merge_key]
            if unkeyed:
                raise ConfigurationError(f"{self.family}: scope columns {unkeyed} must be part of merge_key: each "
                                         f"scope owns its keys")
            return MergeLayout.merged(self.target_table, self.columns, self.merge_key, self.deleted_flag,
                                      self.fills(), self.lineage)
        except ValueError as exc:
            raise ConfigurationError(f"{self.family}: {exc}") from None

    def fills(self) -> tuple[q.Column, ...]:
        """The scope's columns the source lacks (text), and unless merged the grain's (an hour: smallint): each
        write fills them with the partition's values."""
        present = {c.name for c in self.columns}
        grain = () if self.merged else self.grain.key_columns()
        return (*(q.Column(c, "text") for c in self.table_key.columns if c not in present),
                *(c for c in grain if c.name not in present))

    @property
    def partition_columns(self) -> tuple[str, ...]:
        """A partitioned table's partition key (the date column, and the grain's: an hour), else none."""
        if not (self.partitioned or self.keep):
            return ()
        refusals = ((not self.partitioned, "keep needs partitioned = True"),
                    (self.keep < 0, "keep must be a count of partitions"),
                    (self.grain.unit not in ("day", "hour", "month"), f"no child table per {self.grain.unit}"),
                    (self.merged, "a merged table keeps its rows by key, not by partition"),
                    (self.date_from.generated, "PostgreSQL cannot partition on a generated date column"))
        for refused, why in refusals:
            if refused:
                raise ConfigurationError(f"{self.family}: partitioned = True: {why}")
        return (self.date_column, *(c.name for c in self.grain.key_columns()))

    def write_mode(self, value: Any) -> writes.WriteMode:
        """``writes.Merge`` of a merged table (ordered by the grain's keys within a date), ``swap.Swap`` of a
        partitioned one, else ``writes.Replace``."""
        if self.partition_columns:
            return swap.Swap(self.grain, self.partition_columns, self.key_of, self.keep, self.table_key.scope)
        if not self.merged:
            return writes.Replace()
        date = self.grain.date_of(value)
        keys = self.partitions_of(self.grain.covering(date, date + datetime.timedelta(days=1)))
        return writes.Merge(tuple(self.merge_key), self.snapshot, self.deleted_flag, writes.merge_keys([k for k, _ in keys]))

    def checks_of(self, checks: Sequence[Any], max_bad_rows: int) -> tuple[Check, ...]:
        """The task's data checks, each against the table's columns (``checks.validate``)."""
        layout = self.layout()
        columns = [c.name for c in (*layout.table_columns, *(c for c, _ in layout.generated))]
        return validate(self.family, checks, columns, max_bad_rows)

    def expired(self, conn: Any, values: Sequence[Any]) -> list[Any]:
        """Of ``values``, those a partitioned table's retention expired (``swap.Swap.expired``); else none."""
        if not self.keep:
            return []
        mode = self.write_mode(values[0])
        return mode.expired(conn, self.target_table, values) if isinstance(mode, swap.Swap) else []

    def fill_values(self, tx: db.PartitionTransaction) -> dict[str, str]:
        """The values of the filled columns for the whole transaction (lineage keys are set per object)."""
        key = tx.key if not self.merged else self.table_key
        return writes.fill_values(key, tx.date, self.date_column, self.date_from.filled, tx.load_id,
                                  self.lineage.load_id)
