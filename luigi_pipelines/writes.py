"""Write modes, and the one transaction that writes a partition with one.

``write_once`` is a partition's whole write, in the order the design fixes: the tables checked before the
transaction; then in one transaction its advisory lock, its marker read (a partition already written ends here
as a no-op, unless forced or its sources changed; so does one the write mode skips), the schema contract's changes
(``evolution``), the write mode's neighbour check, the write, the failure record cleared, the marker, the
``before_commit`` hook, one commit.

A write mode decides what the write does with the source's rows:

- ``Replace``: the partition's rows are deleted, the source's rows copied in, and every copied row must belong
  to the partition (its dates and scope);
- ``Merge``: the source's rows are staged and merged by key into a table that keeps its rows by key, not by
  date (see ``Merge``).

Either runs the task's data checks (``run_checks``) once its rows are in: a failed one rolls the write back.

A source (``sources``) is anything with ``write(tx, into)``, ``change(tx)`` and ``outside(tx, date_column, n)``.
No luigi here: tasks build the parts and delegate.
"""
from __future__ import annotations

import datetime
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import psycopg2.extensions

from . import db, evolution, tables
from . import sql as q
from .checks import Check
from .contracts import NO_CONTRACT, Contract
from .errors import BadInputError, ConfigurationError, LoadError, PipelineError
from .files import sweep_stale
from .layouts import MergeLayout, TableLayout
from .partitions import ScopedTable, TableName
from .settings import DatabaseSettings, LoadSettings

logger = logging.getLogger("luigi-interface.luigi_pipelines")
_MIB = 1024 * 1024


class Source(Protocol):
    def write(self, tx: db.PartitionTransaction, into: TableName | None = None) -> None: ...

    def change(self, tx: db.PartitionTransaction) -> str: ...

    def outside(self, tx: db.PartitionTransaction, date_column: str, outside: int) -> PipelineError: ...


class WriteMode(Protocol):
    def prepare(self, conn: psycopg2.extensions.connection, job: PartitionJob) -> None: ...

    def check_neighbours(self, tx: db.PartitionTransaction, job: PartitionJob) -> None: ...

    def skips(self, tx: db.PartitionTransaction, job: PartitionJob) -> str: ...

    def write(self, tx: db.PartitionTransaction, job: PartitionJob) -> None: ...


@dataclass
class PartitionJob:
    """One partition's write as its task declared it (everything of the task but luigi)."""

    key: ScopedTable
    date: datetime.date
    stop: datetime.date
    family: str
    task_id: str
    layout: TableLayout
    source: Source
    mode: WriteMode
    settings: LoadSettings
    database: DatabaseSettings
    create_table: bool = True
    force: bool = False
    reload_changed: bool = False
    max_bad_rows: int = 0
    contract: Contract = NO_CONTRACT  # the task's schema contract (``contracts``)
    checks: Sequence[Check] = ()  # data checks (``checks``), run by the write mode before the marker
    lineage_key: str = ""  # the lineage column of each row's S3 key, named by a failed check's samples
    fills: Callable[[db.PartitionTransaction], dict[str, str]] = lambda tx: {}
    after_write: Callable[[db.PartitionTransaction], None] = lambda tx: None
    before_commit: Callable[[db.PartitionTransaction], None] = lambda tx: None
    check_owner: Callable[[ScopedTable, datetime.date, str], None] = lambda key, date, family: None
    prepared: Callable[[psycopg2.extensions.connection], None] = lambda conn: None

    @property
    def marker(self) -> TableName:
        return self.settings.marker


def write_once(job: PartitionJob) -> db.PartitionTransaction | None:
    """Write ``job``'s partition exactly once (see the module docstring); the transaction written, or None when
    the partition was written already."""
    settings = job.settings
    for path in sweep_stale(settings.temp_directory):
        logger.warning("removed %s, left by a load process that was killed", path)
    with db.session(job.database) as conn:
        prepare(conn, job)
        with db.describe_errors(job.key, job.date, settings.lock_timeout_s), db.partition_transaction(
            conn, job.marker, job.key, job.date, settings.lock_timeout_s, job.stop
        ) as tx:
            if tx.previous is not None:
                job.check_owner(tx.key, tx.date, tx.previous["task_family"])
            if tx.done and not job.force and not changed_under_lock(tx, job):
                logger.info("%s %s: already loaded by %s; nothing to do", tx.key, job.date,
                            tx.previous and tx.previous["task_id"])
                return None
            skipped = job.mode.skips(tx, job)
            if skipped:  # e.g. a partition that a retention dropped (``swap.Swap``)
                logger.warning("%s %s: %s; nothing to do", tx.key, job.date, skipped)
                return None
            evolution.evolve(tx, job.layout, job.family, job.contract)
            job.mode.check_neighbours(tx, job)
            db.fill_columns(tx, job.fills(tx))
            job.mode.write(tx, job)
            job.after_write(tx)
            db.clear_failure(tx, settings.failures)
            db.write_marker(tx, job.marker, job.family, job.task_id)
            job.before_commit(tx)
    logger.info("%s %s: committed %d rows, %.1f MiB from %d sources in %.1f s", tx.key, job.date,
                tx.rows, tx.bytes / _MIB, len(tx.sources), _elapsed(tx.started_at))
    return tx


def prepare(conn: psycopg2.extensions.connection, job: PartitionJob) -> None:
    """The tables (``tables.prepare``), then the write mode's and the task's own checks, before the transaction."""
    tables.prepare(conn, job.settings, job.marker, job.layout, job.family, job.create_table, job.layout.date_from,
                   job.contract)
    job.mode.prepare(conn, job)
    job.prepared(conn)


def changed_under_lock(tx: db.PartitionTransaction, job: PartitionJob) -> bool:
    """In ``reload_changed`` mode, whether the written partition's sources changed since its marker, asked again
    under the lock: of two runs that both saw it stale, the second finds the first's marker current."""
    if not job.reload_changed:
        return False
    change = job.source.change(tx)
    if change:
        logger.info("%s %s: sources changed since its load by %s: %s; reloading", tx.key, job.date,
                    tx.previous and tx.previous["task_id"], change)
    return bool(change)


def _elapsed(started: datetime.datetime) -> float:
    return (datetime.datetime.now(datetime.timezone.utc) - started).total_seconds()


@dataclass(frozen=True)
class Replace:
    """Delete the partition's rows, copy the source's, check that every copied row is the partition's: as the COPY
    reads it when it goes straight into the table (``db.guard_copies``), else by a count after the copy."""

    def prepare(self, conn: psycopg2.extensions.connection, job: PartitionJob) -> None:
        """Nothing beyond the tables."""

    def check_neighbours(self, tx: db.PartitionTransaction, job: PartitionJob) -> None:
        """Refuse to load where another task's partition of the same table and date could lose rows to our DELETE
        (an unscoped load next to scoped ones, or scopes over different columns)."""
        for key, family in db.keys_of_date(tx, job.marker).items():
            if key.overlaps(tx.key):
                raise ConfigurationError(
                    f"{job.family} loads {tx.key.describe()} for {tx.date}, but {family} already loaded "
                    f"{key.describe()} for that date: a load of one would delete rows of the other. Give every "
                    f"task that feeds {tx.target} a scope over the same columns (e.g. scope = {{'region': 'us'}})")

    def skips(self, tx: db.PartitionTransaction, job: PartitionJob) -> str:
        """Never: every partition is written."""
        return ""

    def write(self, tx: db.PartitionTransaction, job: PartitionJob) -> None:
        date_column = job.layout.date_column
        deleted = db.delete_partition(tx, date_column)
        db.delete_rejects(tx, job.settings.rejects)
        logger.info("%s %s: replacing %d rows", tx.key.describe(), tx.date, deleted)
        if job.max_bad_rows <= 0:
            db.guard_copies(tx, date_column)
        job.source.write(tx)
        if tx.rows > tx.guarded:  # rows the COPY's guard did not see: counted
            in_partition = db.count_partition(tx, date_column)
            if in_partition != tx.rows:
                raise job.source.outside(tx, date_column, tx.rows - in_partition)
        run_checks(tx, job)


@dataclass(frozen=True)
class Merge:
    """Merge the source's rows into a table keyed by ``key``: upserts, not a replace.

    A merged table keeps its rows by key, not by date; the partition names what was read and the marker. After
    the partition's lock and marker check: the table's lock (merges of one table apply one partition at a time),
    a refusal of a partition older than the newest one merged (unless forced), then the source's rows go to a
    temporary stage (``sql.create_merge_stage``) whose ordinal column numbers them in order; of rows sharing a key
    the last one is kept; one ``MERGE`` inserts new keys and updates the rows that differ (an unchanged row is not
    written); a ``snapshot`` (the partition's rows are all the table's rows, of the task's scope) then deletes
    the keys it lacks; a ``deleted_flag`` (a boolean column of the files, not stored) true deletes its row's key.
    The table needs a primary key or unique constraint on ``key`` (``create_table`` makes one).

    ``order`` gives, for each marker key of the table's partitions (an hour's), its rank within a date, so that
    "older" compares hours too.
    """

    key: tuple[str, ...]
    snapshot: bool = False
    deleted_flag: str = ""
    order: Mapping[str, int] = field(default_factory=dict)

    def prepare(self, conn: psycopg2.extensions.connection, job: PartitionJob) -> None:
        """No quarantine of a snapshot; the table must have a unique index on the merge key."""
        if self.snapshot and job.max_bad_rows > 0:
            raise ConfigurationError(f"{job.family}: max_bad_rows with snapshot = True: a row set aside would be "
                                     f"absent from the snapshot, and its key's row deleted")
        layout = job.layout
        if frozenset(self.key) not in db.unique_keys(conn, layout.table):
            if not db.table_exists(conn, layout.table):  # dropped since this process's connection checked it
                raise LoadError(f"{job.family}: table {layout.table} does not exist (dropped while this process "
                                f"ran?); nothing was written; the next attempt creates it again")
            raise ConfigurationError(
                f"{job.family}: {layout.table} has no primary key or unique constraint on merge_key "
                f"({', '.join(self.key)}), which a merge needs (one row per key, found through its index); run once: "
                f"{q.add_primary_key(layout.table, self.key).as_string(conn)} (ADD UNIQUE (...) if the table has "
                f"another primary key)")

    def check_neighbours(self, tx: db.PartitionTransaction, job: PartitionJob) -> None:
        """Refuse to merge into rows another task writes, on any date: a merge keeps rows by key, not by date, so
        another family's rows of an overlapping scope would be updated or (snapshot) deleted by ours."""
        rows = self.rows_key(tx.key)
        for key, family in db.keys_of_table(tx, job.marker):
            if family != job.family and (self.rows_key(key) == rows or self.rows_key(key).overlaps(rows)):
                raise ConfigurationError(
                    f"{job.family} merges into {rows.describe()}, but {family} has loaded {key.describe()}: "
                    f"a merge by one would change or delete rows of the other. Give each task that feeds "
                    f"{tx.target} its own scope over the same columns (in merge_key), or one task per table")

    def skips(self, tx: db.PartitionTransaction, job: PartitionJob) -> str:
        """Never: every partition is merged."""
        return ""

    def rows_key(self, key: ScopedTable) -> ScopedTable:
        """The rows a partition's marker key names: its scope but the grain's columns (an hour), which a merged
        table does not store."""
        return ScopedTable(key.table, tuple((c, v) for c, v in key.scope if c in self.key))

    def write(self, tx: db.PartitionTransaction, job: PartitionJob) -> None:
        layout = job.layout
        assert isinstance(layout, MergeLayout)
        self.check_order(tx, job)
        db.delete_rejects(tx, job.settings.rejects)
        db.execute(tx, q.create_merge_stage(layout.files, layout.key, layout.stage_defaults))
        logger.info("%s %s: merging by %s", tx.target, tx.date, ", ".join(layout.key))
        job.source.write(tx, q.MERGE_STAGE)
        run_checks(tx, job, self)
        self.apply_stage(tx, job, layout)

    def check_order(self, tx: db.PartitionTransaction, job: PartitionJob) -> None:
        """Take the table's lock, then refuse a partition older than the newest one merged: it would put older values
        over newer ones. ``force`` applies it anyway (the later ones are then to be applied again, in order)."""
        db.lock_table(tx, self.rows_key(tx.key))
        keys = dict(self.order) or {str(tx.key): 0}
        newest = db.newest_partition(tx, job.marker, list(keys))
        if newest is None:
            return
        date, key = newest
        if (date, keys.get(key, 0)) <= (tx.date, keys.get(str(tx.key), 0)):
            return
        label = f"{date}" + (f" ({ScopedTable.parse(key).describe()})" if len(keys) > 1 else "")
        if not job.force:
            raise LoadError(
                f"{tx.key.describe()} {tx.date}: {label} is merged already, and merges apply in date order (this "
                f"date's rows would overwrite newer ones): run this date with --force, then every later date up to "
                f"{label} with --force, oldest first")
        logger.warning("%s %s: merging over %s, a newer date (forced): merge the later dates again, oldest first",
                       tx.key.describe(), tx.date, label)

    def apply_stage(self, tx: db.PartitionTransaction, job: PartitionJob, layout: MergeLayout) -> None:
        """The staged rows into the table: duplicates superseded, one MERGE, a snapshot's absent keys deleted."""
        if self.snapshot and tx.rows == 0:
            raise BadInputError(f"{tx.key.describe()} {tx.date}: the snapshot has no rows: merging it would delete every "
                                f"row of {tx.target}; truncate the table yourself if that is meant")
        superseded = db.execute(tx, q.delete_superseded(layout.key))
        db.execute(tx, q.analyze_merge_stage())
        with db.translating(f"{job.family}: a merge compares each column with the table's value", db.MISSING_OPERATOR,
                            fix="declare a comparable type (jsonb for json, text for xml)"):
            changed = db.execute(tx, q.merge_from_stage(tx.target, layout.key, layout.compared, layout.carried,
                                                        layout.deleted_flag))
        absent = db.delete_absent(tx, layout.key, self.rows_key(tx.key)) if self.snapshot else 0
        logger.info("%s %s: merged %d rows: %d superseded by a later row of the same key, %d rows inserted, updated "
                    "or deleted, %s", tx.key.describe(), tx.date, tx.rows, superseded, changed,
                    f"{absent} deleted as absent from the snapshot" if self.snapshot else "no snapshot deletes")


def run_checks(tx: db.PartitionTransaction, job: PartitionJob, merge: Merge | None = None,
               child: TableName | None = None) -> None:
    """The task's data checks (``db.run_checks``) on the partition's rows: a replace's in the table, a merge's in its
    stage (every row read, before those of one key supersede each other), with the table's rows beside them, a
    swap's in its new ``child`` (all of whose rows are the partition's)."""
    if not job.checks:
        return
    common: dict[str, Any] = dict(marker=job.marker, rejects=job.settings.rejects, family=job.family,
                                  key_column=job.lineage_key, max_bad_rows=job.max_bad_rows)
    if child is not None:
        db.run_checks(tx, job.checks, db.CheckedRows.swapped(child, **common))
        return
    where = db.CheckedRows.replaced(tx, job.layout.date_column, **common) if merge is None else db.CheckedRows.merged(
        tx, q.MERGE_STAGE, merge.rows_key(tx.key), merge.key, merge.snapshot, **common)
    db.run_checks(tx, job.checks, where)


def merge_keys(keys: Sequence[ScopedTable]) -> dict[str, int]:
    """``Merge.order`` of a grain's marker keys within a date, in order."""
    return {str(key): n for n, key in enumerate(keys)}


def fill_values(key: ScopedTable, date: datetime.date, date_column: str, date_filled: bool,
                load_id: Any = None, load_id_column: str = "") -> dict[str, str]:
    """The values of the filled columns for a whole transaction: the scope's (and an hour's), the partition's date,
    the load's id (lineage keys are set per object)."""
    values = dict(key.scope)
    if date_filled:
        values[date_column] = date.isoformat()
    if load_id_column:
        values[load_id_column] = str(load_id)
    return values
