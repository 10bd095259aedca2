"""The luigi tasks: a base partition task (lock, marker, one commit) and the S3 → PostgreSQL load task."""
from __future__ import annotations

import datetime
import logging
import os
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, ClassVar, TypeVar

import luigi
import psycopg2.errors
import psycopg2.extensions
from psycopg2 import sql

from . import db, layouts
from . import sql as q
from .config import database_settings, load_settings, s3_settings
from .db import SupportsRead
from .errors import BadInputError, ConfigurationError, LoadError, PipelineError, SourceError
from .files import csv_line, sweep_stale, temp_download
from .layouts import FILES, DateSource, Lineage, MergeLayout, TableLayout, table_problems, unknown_types
from .manifests import UPSTREAM_LOADS, objects_change, recorded_upstream_loads, upstream_change
from .objects import CsvDecoder, Decoder, ObjectLoader, ObjectRecord
from .partitions import CONVENTIONAL_SKIPS, KeyFilter, ScopedTable, TableName, key_prefix, prefixes_apart
from .reporting import ROLLED_BACK, ProgressReport, failure_text, one_line
from .s3 import Listing, S3Client, S3Object
from .settings import LoadSettings
from .targets import PartitionMarkerTarget, check_owner, forget_missing, note_missing, take_missing

logger = logging.getLogger("luigi-interface.luigi_pipelines")
_MIB = 1024 * 1024
_MERGE_PRIORITY = 3_000_000  # above every date's ordinal up to the year 8200: a merge's priority stays positive
_READ_ONCE = "_luigi_pipelines_read_once"  # the instance attribute of ``PartitionTask.reading_config_once``
T = TypeVar("T")
# Within ``one_stale_check``: each partition's stale check, by task id, as made the first time it was asked.
_STALE_CHECKED: ContextVar[dict[str, str | None] | None] = ContextVar("luigi_pipelines_stale_checked", default=None)


@contextmanager
def one_stale_check() -> Iterator[None]:
    """Within the block, each partition's stale check (``stale_changes``) is made once, however often it is asked:
    ``status`` checks a load, then its transform, whose check asks the load's again (a second S3 listing)."""
    token = _STALE_CHECKED.set({})
    try:
        yield
    finally:
        _STALE_CHECKED.reset(token)


class PartitionDateParameter(luigi.DateParameter):
    """luigi's ``DateParameter`` with a one-line error for a date that does not exist (``2019-02-30``)."""

    def parse(self, s: str) -> datetime.date:
        try:
            return super().parse(s)
        except ValueError as exc:
            raise ValueError(f"--date {s!r} is not a date of the calendar (YYYY-MM-DD): {exc}") from None


def _parameter_value(parameter: Any, name: str) -> Any:
    """The partition's date (or hour) in one of ``bulk_complete``'s parameters (a value, a 1-tuple or a dict)."""
    if isinstance(parameter, dict):
        return parameter[name]
    if isinstance(parameter, (tuple, list)):
        return parameter[0]
    return parameter


class PartitionTask(luigi.Task):
    """A task that writes one (table, date) partition exactly once.

    ``run()`` opens one transaction that takes the partition's advisory lock, re-reads the marker
    (a loser of a race ends here as a successful no-op), lets the subclass write the partition in
    ``write_partition`` and upserts the marker, then commits once. Subclasses declare ``table``,
    ``date_column`` and ``columns`` and implement ``write_partition``.
    """

    date = PartitionDateParameter(description="the partition date")
    force = luigi.BoolParameter(
        default=False, significant=False, positional=False,
        description="reload the partition even if its marker says it is done"
    )
    reload_changed = luigi.BoolParameter(
        default=False, significant=False, positional=False,
        description="also count a loaded partition as not done when its sources changed since it was written "
        "(S3 objects added, removed or replaced; an upstream partition reloaded), so that it is reloaded"
    )
    stale_known = luigi.OptionalDictParameter(
        default=None, significant=False, positional=False,
        description="reload_changed mode: the partitions (as on the command line) that a check made earlier in "
        "this run found stale, each with the load_id of its marker then; the others count as fresh without "
        "listing their sources again (backfill --reload-changed checks once and hands the answer on). A "
        "partition stays stale until a reload gives its marker another load_id. Unset: each check compares"
    )

    # luigi's [resources] caps how many of these run at once across all workers of a luigid
    # (luigi.cfg: postgres_loads), so a big backfill cannot exhaust the database's connections.
    resources = {"postgres_loads": 1}

    table: ClassVar[str] = ""
    date_column: ClassVar[str] = ""
    columns: ClassVar[Sequence[tuple[str, str]]] = ()
    create_table: ClassVar[bool] = True
    # Where each row's date comes from: a column of the files (FILES, the default), the partition's
    # date (partition_date()), or a generated column (make_date(...), local_date(...), generated_column()).
    date_from: ClassVar[DateSource] = FILES
    # The rows of the table this task owns, when several sources feed one table: e.g.
    # {"region": "us"}. Its loads replace only those rows, with a marker and a lock of their own.
    # A scope column missing from ``columns`` (the files) is filled with the value by the load.
    scope: ClassVar[dict[str, str]] = {}

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._last_status: str | None = None  # the last progress message sent to luigid
        self._object_in_progress: str | None = None  # the S3 key being loaded, named in the failure record

    # -- declarations ---------------------------------------------------------------------------

    @property
    def target_table(self) -> TableName:
        try:
            return self.read_once("target_table", self._target_table)
        except ValueError as exc:  # a table name that is no identifier
            raise ConfigurationError(f"{self.task_family}: {exc}") from None

    def _target_table(self) -> TableName:
        if not self.table or not self.date_column:
            raise ConfigurationError(f"{self.task_family} must declare table and date_column")
        return TableName.parse(self.table)

    @contextmanager
    def reading_config_once(self) -> Iterator[None]:
        """Within the block, what ``read_once`` reads is read once: a load (or a completeness check) reads
        its table, marker table and prefix many times, and each read of a ``luigi.Config`` costs ~0.2-0.5 ms
        of CPU. Outside such a block every read is fresh (luigi reuses a task instance across runs)."""
        if _READ_ONCE in self.__dict__:
            yield
            return
        self.__dict__[_READ_ONCE] = {}
        try:
            yield
        finally:
            del self.__dict__[_READ_ONCE]

    def read_once(self, name: str, read: Callable[[], T]) -> T:
        """``read()``, or within ``reading_config_once`` the value it gave the first time there."""
        memo = self.__dict__.get(_READ_ONCE)
        if memo is None:
            return read()
        if name not in memo:
            memo[name] = read()
        return memo[name]

    @property
    def partition_key(self) -> ScopedTable:
        """The table and scope this task's partitions belong to: the marker's and the lock's key."""
        return self.partition_of(self.partition_value)[0]

    # The luigi parameter that names the partition, and its value: the date (hourly tasks: the hour).
    partition_parameter: ClassVar[str] = "date"

    @property
    def partition_value(self) -> Any:
        return getattr(self, self.partition_parameter)

    def partition_of(self, value: Any) -> tuple[ScopedTable, datetime.date]:
        """The marker key and date of the partition ``value`` names (a date here; an hour for hourly tasks)."""
        table = self.target_table  # its own errors name no scope
        try:
            return ScopedTable.of(table, self.scope), value
        except ValueError as exc:
            raise ConfigurationError(f"{self.task_family}: scope {self.scope!r}: {exc}") from None

    def partitions_of(self, values: Sequence[Any]) -> list[tuple[ScopedTable, datetime.date]]:
        """``partition_of`` of many values at once (``bulk_complete``): the key is read once, not per date."""
        key = self.partition_key
        return [(key, value) for value in values]

    @property
    def day_key(self) -> ScopedTable:
        """The rows of a whole date of this task's table and scope (of an hourly task: all its hours)."""
        return self.partition_key

    @classmethod
    def partition_values_of_date(cls, date: datetime.date) -> list[Any]:
        """The partition values (``partition_parameter``) of ``date``: the date, or its 24 hours."""
        return [date]

    @classmethod
    def partitions_of_date(cls, date: datetime.date, **params: Any) -> list[PartitionTask]:
        """The tasks that together write ``date``: one (daily tasks) or 24 (hourly ones), with ``params``."""
        return [cls(**{cls.partition_parameter: value}, **params) for value in cls.partition_values_of_date(date)]

    @property
    def target_columns(self) -> tuple[q.Column, ...]:
        """The columns the source data holds, in its order (what COPY reads)."""
        if not getattr(self, "check_partition_rows", True):
            raise ConfigurationError(
                f"{self.task_family}: check_partition_rows = False is no longer accepted: it committed rows of "
                f"other dates into this partition, and the next load of those dates deleted them")
        return self.layout.files

    @property
    def layout(self) -> TableLayout:
        """Every column of the table by where its values come from: the files, the load, the table itself."""
        files = q.columns_of(self.columns)
        try:
            return TableLayout.of(self.target_table, self.date_column, files, self.date_from,
                                  self.scope_fills(files), self.lineage_columns())
        except ValueError as exc:
            raise ConfigurationError(f"{self.task_family}: {exc}") from None

    @property
    def filled_columns(self) -> tuple[q.Column, ...]:
        """Columns of the table that are not in the data and that each load fills with its value: scope
        columns the files lack, the date with ``date_from = partition_date()``, lineage columns."""
        return self.layout.filled

    def scope_fills(self, files: Sequence[q.Column]) -> tuple[q.Column, ...]:
        """The scope columns the files lack (text), which each load fills with the scope's value."""
        present = {c.name for c in files}
        return tuple(q.Column(c, "text") for c in self.partition_key.columns if c not in present)

    def lineage_columns(self) -> Lineage:
        return Lineage()

    def fill_values(self, tx: db.PartitionTransaction) -> dict[str, str]:
        """The values of the filled columns for the whole transaction (lineage keys are set per object)."""
        values = dict(tx.key.scope)
        if self.date_from.filled:
            values[self.date_column] = tx.date.isoformat()
        return values

    @property
    def marker_table(self) -> TableName:
        return self.load_section().marker

    def load_section(self) -> LoadSettings:
        """The ``[load]`` section (read once within ``reading_config_once``)."""
        return self.read_once("load_settings", load_settings)

    def output(self) -> PartitionMarkerTarget:
        return PartitionMarkerTarget(self.partition_key, self.date, self.marker_table, database_settings(),
                                     owner=self.task_family)

    def complete(self) -> bool:
        """Whether the marker says the partition is written (and, in ``reload_changed`` mode, its sources have
        not changed since). A partition that ``bulk_complete`` found not complete a moment ago in this
        process is taken as not complete without another query, once (see ``targets.note_missing``)."""
        if self.force or take_missing(self.task_id, bool(self.reload_changed)):
            return False
        with self.reading_config_once():
            if not super().complete():
                return False
            return not (self.reload_changed and self.stale_values([self.partition_value]))

    @classmethod
    def bulk_complete(cls, parameter_tuples: Iterable[Any]) -> list[Any]:
        """Those of ``parameter_tuples`` already complete, with one query on one connection.

        ``RangeDaily`` (``RangeHourly``) passes ``cls`` as a ``functools.partial`` carrying its
        ``of_params``, so a probe instance is built to read the declarations (and ``force``) the
        tasks would have.
        """
        params = list(parameter_tuples)
        if not params:
            return []
        name = getattr(cls, "func", cls).partition_parameter
        probe = cls(**{name: _parameter_value(params[0], name)})
        if probe.force:
            return []
        with probe.reading_config_once():
            return probe._bulk_complete_of(params)

    def _bulk_complete_of(self, params: list[Any]) -> list[Any]:
        """``bulk_complete`` of this probe's class and parameters."""
        probe, name = self, self.partition_parameter
        wanted = probe.partitions_of([_parameter_value(p, name) for p in params])
        family = probe.task_family
        with db.session(database_settings(), reset=False) as conn:
            done = db.completed_partitions(conn, probe.marker_table, wanted)
        for (key, day), owner in done.items():
            if owner != family:
                check_owner(key, day, owner, family)
        complete = [p for p, partition in zip(params, wanted, strict=True) if partition in done]
        if probe.reload_changed and complete:
            stale = probe.stale_values([_parameter_value(p, name) for p in complete])
            complete = [p for p in complete if _parameter_value(p, name) not in stale]
        found = {_parameter_value(p, name) for p in complete}
        missing = [_parameter_value(p, name) for p in params if _parameter_value(p, name) not in found]
        note_missing(probe.task_ids_of(missing), bool(probe.reload_changed))
        probe.learn_sources(missing)
        return complete

    def task_ids_of(self, values: Sequence[Any]) -> list[str]:
        """The task ids of this task for the partition values ``values`` (same other parameters), without
        making the tasks."""
        name = self.partition_parameter
        params = self.to_str_params(only_significant=True, only_public=True)
        return [luigi.task.task_id_str(self.task_family, {**params, name: self.serialized(v)}) for v in values]

    def serialized(self, value: Any) -> str:
        """The partition value ``value`` as luigi's command line says it (``2019-02-01``)."""
        return str(dict(type(self).get_params())[self.partition_parameter].serialize(value))

    def learn_sources(self, values: Sequence[Any]) -> None:
        """Learn at once what the dependency checks of the partitions ``values`` (not complete) will ask, if that
        is cheaper in bulk. Here nothing."""

    def stale_values(self, values: Sequence[Any]) -> set[Any]:
        """Those of ``values`` (partitions of this task that have a marker) whose sources changed since their
        marker was written, or whose marker is gone: one marker query, then ``changed_sources``."""
        return set(self.stale_changes(values))

    def stale_changes(self, values: Sequence[Any]) -> dict[Any, str]:
        """``stale_values`` with how each one changed (``source_changes``): what ``status --check-sources`` shows.
        With ``stale_known``, that earlier check's answer, and nothing is listed; within ``one_stale_check``, a
        partition's first answer. A failed attempt on record for a partition found fresh is superseded
        (``supersede_failures``)."""
        checked = _STALE_CHECKED.get()
        if checked is None:
            return self._stale_changes(values)
        ids = dict(zip(values, self.task_ids_of(values), strict=True))
        asked = [v for v in values if ids[v] not in checked]
        found = self._stale_changes(asked) if asked else {}
        checked.update({ids[v]: found.get(v) for v in asked})  # None: fresh
        return {v: change for v in values if (change := checked[ids[v]]) is not None}

    def _stale_changes(self, values: Sequence[Any]) -> dict[Any, str]:
        partitions = self.partitions_of(values)
        with db.session(database_settings(), reset=False) as conn:
            found = db.marker_sources(conn, self.marker_table, partitions)
            checked_at = db.server_clock(conn)
        recorded = {v: found[p] for v, p in zip(values, partitions, strict=True) if p in found}
        if self.stale_known is not None:
            known = dict(self.stale_known)
            return {v: "found stale by this run's check" for v in values if v not in recorded or known.get(
                self.serialized(v), v) == recorded[v].load_id}
        gone = {v: "its marker is gone" for v in values if v not in recorded}
        present = [(v, marker.sources) for v, marker in recorded.items()]
        changes = gone | (self.source_changes(present) if present else {})
        if self.compares_sources:
            self.supersede_failures([p for v, p in zip(values, partitions, strict=True) if v not in changes], checked_at)
        return changes

    def recorded(self, values: Sequence[Any]) -> dict[Any, db.MarkerSources]:
        """The marker's sources and ``load_id`` of each of ``values`` that has a marker: one query."""
        partitions = self.partitions_of(values)
        with db.session(database_settings(), reset=False) as conn:
            found = db.marker_sources(conn, self.marker_table, partitions)
        return {v: found[p] for v, p in zip(values, partitions, strict=True) if p in found}

    # Whether ``changed_sources`` really compares a partition's sources with its marker (a plain PartitionTask
    # cannot tell: it is never stale, and never shown fresh either).
    compares_sources: ClassVar[bool] = False

    def supersede_failures(self, fresh: Sequence[tuple[ScopedTable, datetime.date]], checked_at: datetime.datetime
                           ) -> None:
        """The failed attempts on record of ``fresh`` partitions (loaded, their sources equal to their marker as
        listed after ``checked_at``) are history: a reload failed and the sources were then restored, so the
        previous load is what they say. Deleted, so that ``status`` stops reporting a failure for correct data."""
        with db.session(database_settings(), reset=False) as conn:
            cleared = db.supersede_failures(conn, self.load_section().failures, fresh, checked_at)
        for key, day, error_class in cleared:
            logger.warning("%s %s: loaded, and its sources match its load: the failed attempt on record (%s) is "
                           "superseded", key, day, error_class)  # a warning: an alarm that clears itself is news

    def changed_sources(self, recorded: Sequence[tuple[Any, list[dict[str, Any]]]]) -> set[Any]:
        """Of (value, the marker's ``source_objects``) pairs, the values whose sources differ now. Here none:
        a task that cannot tell (a plain ``PartitionTask``) is never stale."""
        return set()

    def source_changes(self, recorded: Sequence[tuple[Any, list[dict[str, Any]]]]) -> dict[Any, str]:
        """``changed_sources`` with how each value's sources changed, where the task can say (else ``""``)."""
        return dict.fromkeys(self.changed_sources(recorded), "")

    def absent_ready_keys(self, values: Sequence[Any]) -> dict[Any, str]:
        """Of ``values`` (not loaded), those that wait for a ready key the producer has not written, with its URL.
        Here none: only a load from S3 has one."""
        return {}

    def source_change(self, tx: db.PartitionTransaction) -> str:
        """How the partition's sources differ from ``tx.previous`` (the marker), checked inside ``tx``; ``""`` if
        they do not (or this task cannot tell)."""
        return ""

    # -- the transaction ------------------------------------------------------------------------

    def run(self) -> None:
        """Write the partition once (``write_once``); a failed attempt is put on record before it is raised."""
        self._last_status = self._object_in_progress = None  # luigi reuses an instance for the same parameters
        try:
            self.write_once()
        except Exception as exc:
            self._report(f"{self._last_status or 'failed'}; {ROLLED_BACK}", 0)
            self.record_failure(exc)
            raise

    def write_once(self) -> None:
        with self.reading_config_once():
            self._write_once()

    def _write_once(self) -> None:
        settings, database = self.load_section(), database_settings()
        for path in sweep_stale(settings.temp_directory):
            logger.warning("removed %s, left by a load process that was killed", path)
        forget_missing(self.task_id)
        with db.session(database) as conn:
            self.prepare(conn)
            with db.describe_errors(self.partition_key, self.date, settings.lock_timeout_s), db.partition_transaction(
                conn, self.marker_table, self.partition_key, self.date, settings.lock_timeout_s
            ) as tx:
                if tx.previous is not None:
                    check_owner(tx.key, tx.date, tx.previous["task_family"], self.task_family)
                if tx.done and not self.force and not self.changed_under_lock(tx):
                    logger.info("%s %s: already loaded by %s; nothing to do", tx.key, self.date,
                                tx.previous and tx.previous["task_id"])
                    return
                self.check_neighbours(tx)
                db.fill_columns(tx, self.fill_values(tx))
                self.write_partition(tx)
                db.clear_failure(tx, settings.failures)
                db.write_marker(tx, self.marker_table, self.task_family, self.task_id)
                self.before_commit(tx)
        logger.info("%s %s: committed %d rows, %.1f MiB from %d objects in %.1f s", tx.key, self.date,
                    tx.rows, tx.bytes / _MIB, len(tx.sources), _elapsed(tx.started_at))

    def changed_under_lock(self, tx: db.PartitionTransaction) -> bool:
        """In ``reload_changed`` mode, whether the loaded partition's sources changed since its marker, asked
        again under the lock: of two runs that both saw it stale, the second finds the first's marker current."""
        if not self.reload_changed:
            return False
        change = self.source_change(tx)
        if change:
            logger.info("%s %s: sources changed since its load by %s: %s; reloading", tx.key, self.date,
                        tx.previous and tx.previous["task_id"], change)
        return bool(change)

    def record_failure(self, exc: BaseException) -> None:
        """Put the failed attempt on record (class, one line, S3 key, host, time) in the failures table, on a
        short connection of its own: the transaction rolled back, so nothing else remembers it."""
        try:
            key, failures = self.partition_key, load_settings().failures
            failure = db.Failure(key, self.date, self.task_family, self.task_id, type(exc).__name__,
                                 one_line(str(exc) or repr(exc)), self.failed_source())
        except Exception as cannot:  # a declaration or config error: what failed is reported, not this
            logger.warning("%s %s: the failed attempt is not on record: %s", self.task_family, self.date, cannot)
            return
        db.record_failure(database_settings(), failures, failure)

    def failed_source(self) -> str | None:
        """The S3 key of the object being loaded when the attempt failed, if any."""
        return None

    def check_neighbours(self, tx: db.PartitionTransaction) -> None:
        """Refuse to load where another task's partition of the same table and date could lose rows to
        our DELETE (an unscoped load next to scoped ones, or scopes over different columns)."""
        for key, family in db.keys_of_date(tx, self.marker_table).items():
            if key.overlaps(tx.key):
                raise ConfigurationError(
                    f"{self.task_family} loads {tx.key.describe()} for {tx.date}, but {family} already loaded "
                    f"{key.describe()} for that date: a load of one would delete rows of the other. Give every "
                    f"task that feeds {tx.target} a scope over the same columns (e.g. scope = {{'region': 'us'}})")

    def prepare(self, conn: psycopg2.extensions.connection) -> None:
        """Create the marker table, and the target table if declared so, before the transaction.

        On a reused connection (``db.session``) the tables' existence is checked once: a table dropped
        later makes the load fail (its DELETE, COPY or marker read names the missing relation), which
        drops the connection and what was checked on it, so the next attempt checks and creates again.
        The columns that each load fills (``_check_table``) are checked every time: a default removed
        meanwhile would leave them NULL without an error."""
        settings = self.load_section()
        if not os.path.isdir(settings.temp_directory):
            raise ConfigurationError(f"[load] temp_dir {settings.temp_directory} does not exist (or is not a "
                                     f"directory): create it or point temp_dir elsewhere")
        layout, checked = self.layout, db.checks_of(conn)
        declared = ("declared", layout.table, layout.table_columns)
        types: layouts.ResolvedTypes = {}
        if declared not in checked:  # before anything is created or read
            types = db.resolve_types(conn, (c.type for c in layout.table_columns))
            unknown = unknown_types(layout.table_columns, types)
            if unknown:
                raise ConfigurationError(f"{self.task_family}: PostgreSQL knows no type {', '.join(unknown)} "
                                         f"(to_regtype); fix the column's type in `columns`")
        tables = ("tables", self.marker_table, settings.rejects, settings.failures)
        if tables not in checked:
            db.ensure_marker_table(conn, self.marker_table, settings.rejects, settings.failures)
            checked.add(tables)
        exists = ("exists", layout.table)
        if exists not in checked:
            self._ensure_table(conn, layout)
            checked.add(exists)
        if declared not in checked or layout.defaults:
            self._check_table(conn, layout, types)
            checked.add(declared)

    def _ensure_table(self, conn: psycopg2.extensions.connection, layout: TableLayout) -> None:
        """The target table exists, created here if declared so."""
        if self.create_table and not self.date_from.own_ddl:
            db.ensure_table(conn, layout.table, layout.create_statements())
        elif not db.table_exists(conn, layout.table):
            why = "date_from = generated_column(): create it with its generated date column" if self.create_table \
                else "create_table is off"
            raise ConfigurationError(f"{self.task_family}: table {layout.table} does not exist and {why}")

    def _check_table(self, conn: psycopg2.extensions.connection, layout: TableLayout,
                     types: layouts.ResolvedTypes) -> None:
        """An existing table must have the declared columns, of their kind of type, and what the layout adds to
        them (or the load would leave those columns NULL); no column the load leaves out may be NOT NULL without
        a default. Every problem is reported at once, with the one ``ALTER TABLE`` that fixes them all.
        Checked once per connection, but the defaults every time; ``types`` empty: the types are not compared."""
        existing = db.table_columns(conn, layout.table)
        if not existing:  # dropped since this connection created it: the load fails naming it, and the next creates it
            return
        problems = table_problems(layout, existing, types)
        if problems:
            fix = q.alter_table(layout.table, [action for _, action in problems]).as_string(conn)
            head = problems[0][0] if len(problems) == 1 else (
                f"{layout.table} does not match the declaration, {len(problems)} problems: "
                + "; ".join(problem for problem, _ in problems))
            raise ConfigurationError(f"{self.task_family}: {head}; run once: {fix}")
        if self.date_from.generated:
            self._check_generated_date(conn, layout)

    def _check_generated_date(self, conn: psycopg2.extensions.connection, layout: TableLayout) -> None:
        info = db.column_info(conn, layout.table, layout.date_column)
        if info is None or not info.generated:
            fixes = [q.add_column(layout.table, q.generated_column(c, e)).as_string(conn) for c, e in layout.generated]
            raise ConfigurationError(
                f"{self.task_family}: {layout.table} {'has no' if info is None else 'has a plain'} column "
                f"{layout.date_column!r}, but date_from = {self.date_from.describe()} needs a generated column"
                + "".join(f"; run once{' (after dropping the old column)' if info else ''}: {fix}" for fix in fixes))
        zone = self.date_from.zone
        if zone and not db.check_time_zone(conn, zone):
            raise ConfigurationError(f"{self.task_family}: {self.date_from.describe()}: PostgreSQL does not know the "
                                     f"time zone {zone!r} (see pg_timezone_names)")

    # -- hooks: override these, not the methods above ------------------------------------------

    def before_commit(self, tx: db.PartitionTransaction) -> None:
        """Hook: the partition and its marker are written and the transaction is about to commit.

        Raising here rolls everything back. E.g. a final consistency check against another table."""

    def on_failure(self, exception: BaseException) -> str:
        """What luigid shows for a failure, on short lines: what was not loaded, the S3 object, the line and
        column, the reason, what to do. Never a traceback of our own errors, which may repeat a
        multi-megabyte bad value from PostgreSQL's error detail; other exceptions keep luigi's traceback."""
        head = f"{type(exception).__name__}: {self.describe_partition()} not loaded; {ROLLED_BACK}"
        if not isinstance(exception, PipelineError):
            return f"{head}\n{super().on_failure(exception)}"
        return failure_text(head, exception, self.failed_url())

    def describe_partition(self) -> str:
        try:
            return f"{self.partition_key} {self.date}"
        except PipelineError:  # the declaration itself is what failed
            return f"{self.task_family} {self.date}"

    def failed_url(self) -> str | None:
        """Where the failed attempt's data came from, if one source is to blame (see ``failed_source``)."""
        return self.failed_source()

    def _report(self, message: str, percent: int) -> None:
        """Progress for luigid's UI; a no-op when run() is called outside a luigi worker."""
        self._last_status = message
        if callable(self.set_status_message):
            self.set_status_message(message)
        if callable(self.set_progress_percentage):
            self.set_progress_percentage(percent)

    def write_partition(self, tx: db.PartitionTransaction) -> None:
        """Replace the partition's rows inside ``tx``; set ``tx.rows``, ``tx.bytes`` and ``tx.sources``."""
        raise NotImplementedError


class S3PartitionExists(luigi.ExternalTask):
    """A partition's data is in S3: some data object under the prefix, or the producer's ready key.

    "Data object" means what the load would list: the same ``KeyFilter`` decides both.
    """

    bucket = luigi.Parameter(description="S3 bucket")
    prefix = luigi.Parameter(description="key prefix of the partition's objects")
    ready_key = luigi.Parameter(default="", description="a key under the prefix written last by the producer")
    keys = luigi.ListParameter(default=(), description="fnmatch globs on the key after the prefix; empty: every key")
    skip_keys = luigi.ListParameter(
        default=CONVENTIONAL_SKIPS, description="fnmatch globs of names below the prefix that are not data")

    def complete(self) -> bool:
        """Whether the data is there: one listing of the prefix (or a HEAD of the ready key). An earlier
        listing less than a minute old may answer instead, once: one made by ``LoadPartition.bulk_complete``
        for a whole range of dates not loaded (``S3Client.survey``, ``S3Client.absent``), used by this check
        and, if it found data, by the next; or this check's own last listing, if it found data (luigi checks
        a dependency when scheduling, and again just before the load runs). The load lists again, under its
        lock."""
        s3 = S3Client.shared(s3_settings())
        question = self.question(self.bucket, self.prefix, self.ready_key, self.keys, self.skip_keys)
        answer = s3.take_answer(question)
        if answer is not None:
            return answer
        if self.ready_key:
            found = s3.exists(self.bucket, self.prefix + self.ready_key)
        else:
            found = s3.has_objects(self.bucket, self.prefix, KeyFilter(tuple(self.keys), tuple(self.skip_keys)))
        if found:
            s3.note_answer(question, True)
        return found

    @staticmethod
    def question(bucket: str, prefix: str, ready_key: str, keys: Sequence[str], skip_keys: Sequence[str]
                 ) -> tuple[Any, ...]:
        """What the check of these parameters asks of S3 (the key of its remembered answers)."""
        return bucket, prefix, ready_key, tuple(keys), tuple(skip_keys)


class LoadPartition(PartitionTask):
    """Load one date's S3 objects into PostgreSQL with COPY, exactly once.

    Declare ``bucket``, ``key_prefix`` (a template with ``{date}``, e.g.
    ``"transactions/{date:%Y-%m-%d}/"``), ``table``, ``columns``, ``date_column`` and, if the files
    differ from the defaults, ``csv``. Objects ending in ``.gz`` are decompressed on the fly.
    ``keys`` and ``skip_keys`` select the data objects among the keys under the prefix (``KeyFilter``).
    """

    bucket: ClassVar[str] = ""
    key_prefix: ClassVar[str] = ""
    csv: ClassVar[q.CsvFormat] = q.CsvFormat()
    max_bad_rows = luigi.IntParameter(
        default=0,
        significant=False,
        positional=False,  # the partition's date (or hour) stays the first positional parameter, for luigi's ranges
        description="quarantine mode: up to this many bad rows per partition go to the rejects table and the "
        "good rows load; more fail the load. 0 (the default) is strict: any bad row fails it",
    )
    # A key the producer writes last (e.g. "_SUCCESS"): a date loads only once it exists, so files
    # still arriving are never left out. Without it a date loads as soon as any object is there.
    ready_key: ClassVar[str] = ""
    empty_partition_ok: ClassVar[bool] = False  # a date with no objects: missing data (False) or 0 rows (True)
    empty_objects_ok: ClassVar[bool] = True  # a 0-byte or header-only object: 0 rows (True) or an error (False)
    # Columns that say where each row came from, filled at COPY speed: the object's key, the load's id
    # (the marker's load_id), the load's start, e.g. Lineage(key="source_key", load_id="load_id").
    lineage: ClassVar[Lineage] = Lineage()
    # fnmatch globs on the key after the prefix, e.g. ("*.csv", "*.csv.gz"); () takes every key. Needed
    # when key_prefix does not end at "/" ("logs/{date:%Y-%m-%d}" also lists logs/2019-02-01_old.csv).
    keys: ClassVar[Sequence[str]] = ()
    # names below the prefix that are never data (_SUCCESS, _temporary/..., *.crc, dot-files); () loads them too
    skip_keys: ClassVar[Sequence[str]] = CONVENTIONAL_SKIPS
    compares_sources = True

    @property
    def prefix(self) -> str:
        """The date's key prefix; one cut inside a name needs ``keys`` to say which names are data."""
        return self.read_once("prefix", self._prefix)

    def _prefix(self) -> str:
        return self.prefix_of(self.partition_value)

    def prefix_of(self, value: Any) -> str:
        """The key prefix of the partition ``value`` (``prefix`` of this task for another date)."""
        if not self.source_bucket or "{date" not in self.key_prefix:
            raise ConfigurationError(f"{self.task_family} must declare bucket and a key_prefix containing {{date...}}")
        prefix = key_prefix(self.key_prefix, value)
        if not prefix.endswith("/") and not self.keys:
            raise ConfigurationError(
                f"{self.task_family}: key_prefix {self.key_prefix!r} gives {prefix!r}, which does not end at '/', so "
                f"it also lists keys such as {prefix}_old.csv or {prefix}.csv.bak: end it with '/' or declare "
                f"keys = (...), fnmatch globs of the data keys after the prefix (e.g. ('.csv',))")
        return prefix

    @property
    def key_filter(self) -> KeyFilter:
        return KeyFilter(tuple(self.keys), tuple(self.skip_keys))

    def requires(self) -> Any:
        if not self.checks_sources:
            return []
        with self.reading_config_once():  # luigi asks this several times per date while scheduling
            return S3PartitionExists(bucket=self.source_bucket, prefix=self.prefix, ready_key=self.ready_key,
                                     keys=tuple(self.keys), skip_keys=tuple(self.skip_keys))

    @property
    def source_bucket(self) -> str:
        """``bucket`` (read once within ``reading_config_once``: a pipeline may read it from its config)."""
        return self.read_once("bucket", lambda: self.bucket)

    @property
    def checks_sources(self) -> bool:
        """Whether the load depends on ``S3PartitionExists`` (not when an empty date is fine and no ready key)."""
        return not (self.empty_partition_ok and not self.ready_key)

    def learn_sources(self, values: Sequence[Any]) -> None:
        """Of a range of dates not loaded, which have S3 data, for their ``S3PartitionExists`` checks: one listing
        of all their keys when that is short (``S3Client.survey``), else one listing of their parent prefix,
        which tells the dates with no key at all (``S3Client.absent``); instead of one listing per date."""
        if len(values) < 2 or not self.checks_sources:
            return
        own = type(self).prefix is LoadPartition.prefix  # else a subclass says what a date's prefix is
        try:
            prefixes = [self.prefix_of(value) if own else self.of_value(value).prefix for value in values]
        except PipelineError:
            return  # a declaration error: requires() reports it
        s3 = S3Client.shared(s3_settings())
        surveyed = s3.survey(self.bucket, prefixes, self.key_filter, self.ready_key)
        answers = surveyed if surveyed is not None else dict.fromkeys(s3.absent(self.bucket, prefixes), False)
        for prefix, found in answers.items():  # data found: for the scheduling check and the one before the load
            s3.note_answer(S3PartitionExists.question(self.bucket, prefix, self.ready_key, self.keys, self.skip_keys),
                           found, uses=2 if found else 1)

    def prepare(self, conn: psycopg2.extensions.connection) -> None:
        super().prepare(conn)
        if self.date_from.filled and not prefixes_apart(self.key_prefix):
            raise ConfigurationError(
                f"{self.task_family}: key_prefix {self.key_prefix!r} does not give every date a prefix of its own (one "
                f"that starts no other's), so date_from = partition_date() would give one object's rows several dates")
        self.s3_client()  # a new process (a forked worker) builds its client here, not under the lock

    decoder: ClassVar[Decoder | None] = None  # how objects become COPY input; default: CsvDecoder(csv)

    def lineage_columns(self) -> Lineage:
        return self.lineage

    def fill_values(self, tx: db.PartitionTransaction) -> dict[str, str]:
        values = super().fill_values(tx)
        if self.lineage.load_id:
            values[self.lineage.load_id] = str(tx.load_id)
        return values

    def write_partition(self, tx: db.PartitionTransaction) -> None:
        """List the date's objects, replace the partition's rows with theirs, check the dates."""
        s3 = self.s3_client()
        objects = self.objects_to_load(tx, s3)
        settings = self.load_section()
        deleted = db.delete_partition(tx, self.date_column)
        db.delete_rejects(tx, settings.rejects)
        logger.info("%s %s: replacing %d rows with %d objects (%.1f MiB)", tx.target, tx.date, deleted,
                    len(objects), sum(o.size for o in objects) / _MIB)
        self.copy_objects(tx, s3, objects)
        self.check_rows(tx)
        self.after_copy(tx)

    def copy_objects(self, tx: db.PartitionTransaction, s3: S3Client, objects: Sequence[S3Object],
                     into: TableName | None = None) -> None:
        """COPY each object, in order, into the partition's table (or ``into``), with the hooks and progress."""
        with ProgressReport(self._report, objects) as progress:
            loader = ObjectLoader(tx, s3, self.decoder or CsvDecoder(self.csv), self.target_columns, self.load_section(),
                                  self.max_bad_rows, self.empty_objects_ok, self.source_stream, progress.read,
                                  key_column=self.lineage.key, into=into)
            self.before_copy(tx)
            for n, obj in enumerate(objects, 1):
                self._object_in_progress = obj.key
                self.before_object(tx, obj)
                progress.start(n, obj, tx.rows)
                record = loader.load(obj)
                progress.done(n, obj, tx.rows)
                self.after_object(tx, record)
        self._object_in_progress = None

    def failed_source(self) -> str | None:
        return self._object_in_progress

    def failed_url(self) -> str | None:
        key = self.failed_source()
        return f"s3://{self.bucket}/{key}" if key else None

    def data_objects(self, s3: S3Client) -> list[S3Object]:
        """The date's data objects: one paginated listing, ``key_filter`` applied, the ready key left out."""
        return self.listing(s3).objects

    def listing(self, s3: S3Client) -> Listing:
        """``data_objects``, and the keys that look like data but that ``keys`` leave out (the ready key is neither)."""
        listed, ready = s3.list_partition(self.bucket, self.prefix, self.key_filter), self.prefix + self.ready_key
        return Listing([o for o in listed.objects if o.key != ready], [k for k in listed.left_out if k != ready])

    def absent_ready_keys(self, values: Sequence[Any]) -> dict[Any, str]:
        if not self.ready_key:
            return {}
        s3, bucket = self.s3_client(), self.source_bucket
        keys = {value: self.of_value(value).prefix + self.ready_key for value in values}
        return {value: f"s3://{bucket}/{key} absent" for value, key in keys.items() if not s3.exists(bucket, key)}

    def checked_objects(self, objects: list[S3Object]) -> list[S3Object]:
        if not objects and not self.empty_partition_ok:
            raise SourceError(f"s3://{self.bucket}/{self.prefix}: no objects to load")
        return objects

    # The listing that ``source_change`` compared, kept for the load of the same transaction (its load_id).
    _listed: tuple[uuid.UUID, Listing] | None = None

    def objects_to_load(self, tx: db.PartitionTransaction, s3: S3Client) -> list[S3Object]:
        """The objects to load in ``tx``: those listed under its lock to compare with the marker, or a new listing.
        The keys that ``keys`` leave out go to the marker (``tx.skipped``) and a warning (``check_left_out``)."""
        listed, self._listed = self._listed, None
        listing = listed[1] if listed is not None and listed[0] == tx.load_id else self.listing(s3)
        self.check_left_out(tx, listing.left_out)
        tx.skipped = listing.left_out
        if listing.left_out:
            logger.warning("%s %s: %s under s3://%s/%s look%s like data but %s left out by keys %r, not loaded: %s "
                           "(recorded in the marker's skipped_keys; declare them in keys to load them, or in skip_keys "
                           "if they are not data)", tx.key, tx.date, _objects(listing.left_out), self.bucket,
                           self.prefix, "" if len(listing.left_out) > 1 else "s",
                           "are" if len(listing.left_out) > 1 else "is", tuple(self.keys), _named(listing.left_out))
        return self.checked_objects(listing.objects)

    def check_left_out(self, tx: db.PartitionTransaction, keys: Sequence[str]) -> None:
        """Hook: ``keys`` look like data but ``keys`` leave them out; raise to refuse the load. Here they are named
        in a warning and in the marker only."""

    def changed_sources(self, recorded: Sequence[tuple[Any, list[dict[str, Any]]]]) -> set[Any]:
        """The dates whose listing (what the load would load now) differs from the marker's objects: one
        paginated listing per date."""
        return set(self.source_changes(recorded))

    def source_changes(self, recorded: Sequence[tuple[Any, list[dict[str, Any]]]]) -> dict[Any, str]:
        """``changed_sources`` with each change, e.g. ``"1 added (d/b.csv)"`` (``manifests.objects_change``)."""
        s3 = self.s3_client()
        changes = {value: objects_change(sources, [o.as_marker() for o in self.of_value(value).data_objects(s3)])
                   for value, sources in recorded}
        return {value: change for value, change in changes.items() if change}

    def of_value(self, value: Any) -> LoadPartition:
        """This task for another partition value (same declarations and parameters)."""
        return self if value == self.partition_value else self.clone(**{self.partition_parameter: value})

    def source_change(self, tx: db.PartitionTransaction) -> str:
        listing = self.listing(self.s3_client())
        self._listed = (tx.load_id, listing)
        return objects_change(tx.previous["source_objects"] if tx.previous else [],
                              [o.as_marker() for o in listing.objects])

    # -- hooks: override these, not the methods above ------------------------------------------

    def s3_client(self) -> S3Client:
        """Hook: the S3 client of this process for the ``[s3]`` settings (a test may wrap it)."""
        return S3Client.shared(s3_settings())

    def before_copy(self, tx: db.PartitionTransaction) -> None:
        """Hook: in the transaction, after the partition's old rows are deleted, before the first object."""

    def before_object(self, tx: db.PartitionTransaction, obj: S3Object) -> None:
        """Hook: before ``obj`` is downloaded and copied."""

    def source_stream(self, obj: S3Object, stream: SupportsRead) -> SupportsRead:
        """Hook: what COPY reads for ``obj`` (decoded bytes); return it or a wrapper around it."""
        return stream

    def after_object(self, tx: db.PartitionTransaction, record: ObjectRecord) -> None:
        """Hook: ``obj`` is copied; ``record`` says what it added (``tx.rows`` includes it)."""

    def after_copy(self, tx: db.PartitionTransaction) -> None:
        """Hook: every object is copied and the dates checked; the marker is written next.

        Like luigi's ``CopyToTable.post_copy``: e.g. derived updates in the same transaction."""

    def check_rows(self, tx: db.PartitionTransaction) -> None:
        """Every copied row must carry the partition's date, or a later load of another date would
        delete or duplicate it. The error names the objects that hold such rows."""
        in_partition = db.count_partition(tx, self.date_column)
        if in_partition == tx.rows:
            return
        keys = [s["key"] for s in tx.sources]
        if self.lineage.key:  # exactly which objects, and how many rows each
            counts = db.count_outside_by_key(tx, self.lineage.key, self.date_column, keys)
            holders, hint = ", ".join(f"s3://{self.bucket}/{k} ({n})" for k, n in counts.items()), ""
        else:
            holders = f"s3://{self.bucket}/ ({', '.join(keys)})"
            hint = "" if len(keys) < 2 else "; declare lineage = Lineage(key=...) to see which objects hold them"
        raise BadInputError(
            f"{tx.key.describe()} {tx.date}: {tx.rows - in_partition} of {tx.rows} rows copied from {holders} have "
            f"{self.date_column} other than {tx.date}" + "".join(f" or {c} other than {v!r}" for c, v in tx.key.scope)
            + hint)


class LoadHourlyPartition(LoadPartition):
    """Load one hour's S3 objects into PostgreSQL with COPY, exactly once: ``LoadPartition`` by the hour.

    The task's parameter is ``date_hour`` (luigi's ``DateHourParameter``, ``--date-hour
    2019-02-01T13``), so luigi's ``RangeHourly`` drives backfills, and ``bulk_complete`` answers for
    any number of hours with one query. ``key_prefix`` must name the hour: ``date`` in the template
    is the hour's datetime, e.g. ``"events/{date:%Y/%m/%d/%H}/"``.

    An hour's partition is the rows whose ``date_column`` is the hour's date and whose
    ``hour_column`` (default ``hour``) is its hour, 0-23. The hour column works like a scope column:
    the marker key is ``schema.table/hour=13`` (``partition_date`` stays the date, so the marker
    table keeps its shape), the lock and the DELETE cover that hour only, and when the files lack
    the column each load fills it with the hour (a smallint). The one-transaction guarantee is the
    same. A daily task can depend on the 24 hours of its date: ``partitions_of_date``
    (``TransformPartition`` does it for an hourly ``upstream``).
    """

    date_hour = luigi.DateHourParameter(description="the partition's hour, e.g. 2019-02-01T13")
    partition_parameter = "date_hour"
    hour_column: ClassVar[str] = "hour"

    @property
    def date(self) -> datetime.date:  # type: ignore[override]  # a property: the parameter is date_hour
        """The hour's date (the marker's ``partition_date``, the date column's value)."""
        return self.date_hour.date()

    def partition_of(self, value: datetime.datetime) -> tuple[ScopedTable, datetime.date]:
        if self.hour_column in self.scope:
            raise ConfigurationError(f"{self.task_family}: hour_column {self.hour_column!r} cannot be a scope column")
        try:
            key = ScopedTable.of(self.target_table, {**self.scope, self.hour_column: f"{value.hour:02d}"})
        except ValueError as exc:
            raise ConfigurationError(f"{self.task_family}: scope or hour_column: {exc}") from None
        return key, value.date()

    def partitions_of(self, values: Sequence[Any]) -> list[tuple[ScopedTable, datetime.date]]:
        keys = {hour: self.partition_of(datetime.datetime(2000, 1, 1, hour))[0] for hour in range(24)}
        return [(keys[value.hour], value.date()) for value in values]

    @property
    def day_key(self) -> ScopedTable:
        return ScopedTable.of(self.target_table, self.scope)

    @classmethod
    def partition_values_of_date(cls, date: datetime.date) -> list[Any]:
        return [datetime.datetime.combine(date, datetime.time(hour)) for hour in range(24)]

    def scope_fills(self, files: Sequence[q.Column]) -> tuple[q.Column, ...]:
        """Scope columns the files lack; the hour column among them is a smallint."""
        return tuple(q.Column(c.name, "smallint") if c.name == self.hour_column else c
                     for c in super().scope_fills(files))

    def prepare(self, conn: psycopg2.extensions.connection) -> None:
        if not prefixes_apart(self.key_prefix, hourly=True):
            raise ConfigurationError(f"{self.task_family}: key_prefix {self.key_prefix!r} does not give every hour a "
                                     f"prefix of its own (one that starts no other's): name the hour, e.g. "
                                     f"'{{date:%Y/%m/%d/%H}}/'")
        super().prepare(conn)


class MergePartition(LoadPartition):
    """Merge one date's S3 objects into a table keyed by ``merge_key``, exactly once: upserts, not a replace.

    Declare what ``LoadPartition`` takes (``bucket``, ``key_prefix``, ``table``, ``columns``, ``csv``...),
    but no ``date_column``: a merged table keeps its rows by key, not by date; the date names the
    objects and the marker. Then ``merge_key = ("customer_id",)``, and optionally ``snapshot = True``
    (the date's objects hold every row: rows of the table, of the task's ``scope`` if it has one, whose
    key they lack are deleted) and ``deleted_flag = "is_deleted"`` (a boolean column of the files, not
    stored: a row with it true deletes its key).

    In the partition's transaction, after its lock and marker check: the table's lock (merges of one
    table apply one at a time), a refusal of a date older than the newest one merged (unless ``force``),
    then every object is copied into a temporary stage (``sql.create_merge_stage``) whose ordinal column
    numbers the rows by object (in key order), then by line; of rows sharing a key the last one is kept;
    one ``MERGE`` inserts new keys and updates the rows that differ (an unchanged row is not written);
    a snapshot then deletes the absent keys. ``after_copy`` runs after all of that, before the marker.
    The table needs a primary key or unique constraint on ``merge_key`` (``create_table`` makes one).
    """

    merge_key: ClassVar[Sequence[str]] = ()
    snapshot: ClassVar[bool] = False  # the date's objects are the whole table (of the scope): absent keys are deleted
    deleted_flag: ClassVar[str] = ""  # a boolean column of the files: true deletes the row's key

    @property
    def priority(self) -> int:  # type: ignore[override]  # luigi reads an attribute; a property per date here
        """Older dates first: of the tasks ready to run, luigi's scheduler gives out the highest priority first."""
        return _MERGE_PRIORITY - self.date.toordinal()

    @property
    def resources(self) -> dict[str, int]:  # type: ignore[override]
        """``postgres_loads`` and the table's own resource, which no ``[resources]`` names, so luigi allows one at
        a time: the scheduler runs one merge of the table at once, the oldest date first (``priority``)."""
        return {**PartitionTask.resources, f"merge {self.partition_key}": 1}

    def _target_table(self) -> TableName:
        if not self.table:
            raise ConfigurationError(f"{self.task_family} must declare table")
        if self.date_column or self.date_from is not FILES:
            raise ConfigurationError(
                f"{self.task_family}: a merged table keeps its rows by key, not by date: leave date_column and "
                f"date_from out (a date in the files is an ordinary column)")
        return TableName.parse(self.table)

    @property
    def layout(self) -> MergeLayout:
        files = q.columns_of(self.columns)
        unkeyed = [c for c in self.partition_key.columns if c not in self.merge_key]
        if unkeyed:
            raise ConfigurationError(f"{self.task_family}: scope columns {unkeyed} must be part of merge_key: each "
                                     f"scope owns its keys")
        try:
            return MergeLayout.merged(self.target_table, files, self.merge_key, self.deleted_flag,
                                      self.scope_fills(files), self.lineage)
        except ValueError as exc:
            raise ConfigurationError(f"{self.task_family}: {exc}") from None

    def prepare(self, conn: psycopg2.extensions.connection) -> None:
        """No quarantine of a snapshot; ``LoadPartition``'s; then the table must have a unique index on the merge key."""
        if self.snapshot and self.max_bad_rows > 0:
            raise ConfigurationError(f"{self.task_family}: max_bad_rows with snapshot = True: a row set aside would be "
                                     f"absent from the snapshot, and its key's row deleted")
        super().prepare(conn)
        layout = self.layout
        if frozenset(layout.key) not in db.unique_keys(conn, layout.table):
            if not db.table_exists(conn, layout.table):  # dropped since this process's connection checked it
                raise LoadError(f"{self.task_family}: table {layout.table} does not exist (dropped while this process "
                                f"ran?); nothing was written; the next attempt creates it again")
            raise ConfigurationError(
                f"{self.task_family}: {layout.table} has no primary key or unique constraint on merge_key "
                f"({', '.join(layout.key)}), which a merge needs (one row per key, found through its index); run once: "
                f"{q.add_primary_key(layout.table, layout.key).as_string(conn)} (ADD UNIQUE (...) if the table has "
                f"another primary key)")

    def write_partition(self, tx: db.PartitionTransaction) -> None:
        """Stage the date's objects, keep the last row of each key, merge them into the table."""
        s3 = self.s3_client()
        objects = self.objects_to_load(tx, s3)
        self.check_order(tx)
        db.delete_rejects(tx, self.load_section().rejects)
        layout = self.layout
        db.execute(tx, q.create_merge_stage(layout.files, layout.key, layout.stage_defaults))
        logger.info("%s %s: merging %d objects (%.1f MiB) by %s", tx.target, tx.date, len(objects),
                    sum(o.size for o in objects) / _MIB, ", ".join(layout.key))
        self.copy_objects(tx, s3, objects, into=q.MERGE_STAGE)
        self.apply_stage(tx, layout)
        self.after_copy(tx)

    def check_neighbours(self, tx: db.PartitionTransaction) -> None:
        """Refuse to merge into rows another task writes, on any date: a merge keeps rows by key, not by date,
        so another family's rows of an overlapping scope would be updated or (snapshot) deleted by ours."""
        for key, family in db.keys_of_table(tx, self.marker_table):
            if family != self.task_family and (key == tx.key or key.overlaps(tx.key)):
                raise ConfigurationError(
                    f"{self.task_family} merges into {tx.key.describe()}, but {family} has loaded {key.describe()}: "
                    f"a merge by one would change or delete rows of the other. Give each task that feeds "
                    f"{tx.target} its own scope over the same columns (in merge_key), or one task per table")

    def check_left_out(self, tx: db.PartitionTransaction, keys: Sequence[str]) -> None:
        """A snapshot deletes every key absent from the date's objects: an object left out by ``keys`` that looks
        like data would have its rows deleted. Refused, before anything is written."""
        if self.snapshot and keys:
            raise ConfigurationError(
                f"{tx.key.describe()} {tx.date}: a snapshot merge deletes every key absent from the date's objects, and "
                f"keys {tuple(self.keys)!r} leave out {_objects(keys)} under s3://{self.bucket}/{self.prefix} that "
                f"look{'' if len(keys) > 1 else 's'} like data (bytes, not a folder marker, not matched by skip_keys): "
                f"{_named(keys)}; nothing was written. Match {'them' if len(keys) > 1 else 'it'} with keys to merge "
                f"{'them' if len(keys) > 1 else 'it'}, or declare {'them' if len(keys) > 1 else 'it'} not data in "
                f"skip_keys")

    def check_order(self, tx: db.PartitionTransaction) -> None:
        """Take the table's lock, then refuse a date older than the newest one merged: it would put older values
        over newer ones. ``force`` applies it anyway (the later dates are then to be applied again, in order)."""
        try:
            db.lock_table(tx)
        except psycopg2.errors.LockNotAvailable as exc:
            raise LoadError(f"{tx.key.describe()} {tx.date}: another merge of {tx.key.describe()} holds the table's "
                            f"lock, and [load] lock_timeout_s ran out: a merge of another date is running; rerun "
                            f"later") from exc
        newest = db.newest_date(tx, self.marker_table)
        if newest is None or newest <= tx.date:
            return
        if not self.force:
            raise LoadError(
                f"{tx.key.describe()} {tx.date}: {newest} is merged already, and merges apply in date order (this "
                f"date's rows would overwrite newer ones): run this date with --force, then every later date up to "
                f"{newest} with --force, oldest first")
        logger.warning("%s %s: merging over %s, a newer date (forced): merge the later dates again, oldest first",
                       tx.key.describe(), tx.date, newest)

    def apply_stage(self, tx: db.PartitionTransaction, layout: MergeLayout) -> None:
        """The staged rows into the table: duplicates superseded, one MERGE, a snapshot's absent keys deleted."""
        if self.snapshot and tx.rows == 0:
            raise BadInputError(f"{tx.key.describe()} {tx.date}: the snapshot has no rows: merging it would delete every "
                                f"row of {tx.target}; truncate the table yourself if that is meant")
        superseded = db.execute(tx, q.delete_superseded(layout.key))
        db.execute(tx, q.analyze_merge_stage())
        try:
            changed = db.execute(tx, q.merge_from_stage(tx.target, layout.key, layout.compared, layout.carried,
                                                        layout.deleted_flag))
        except psycopg2.errors.UndefinedFunction as exc:  # a type without "=": json, xml, point...
            raise ConfigurationError(
                f"{self.task_family}: a merge compares each column with the table's value, and "
                f"{exc.diag.message_primary}: declare a comparable type (jsonb for json, text for xml)") from exc
        absent = db.delete_absent(tx, layout.key) if self.snapshot else 0
        logger.info("%s %s: merged %d rows: %d superseded by a later row of the same key, %d rows inserted, updated "
                    "or deleted, %s", tx.key.describe(), tx.date, tx.rows, superseded, changed,
                    f"{absent} deleted as absent from the snapshot" if self.snapshot else "no snapshot deletes")

    def check_rows(self, tx: db.PartitionTransaction) -> None:
        """Nothing to check: a merged table's rows carry no partition date."""


def _objects(keys: Sequence[str]) -> str:
    return f"{len(keys)} object{'s' if len(keys) > 1 else ''}"


def _named(keys: Sequence[str], shown: int = 5) -> str:
    """At most ``shown`` of ``keys``, and ``...`` if there are more."""
    return ", ".join(keys[:shown]) + (", ..." if len(keys) > shown else "")


def _elapsed(started: datetime.datetime) -> float:
    return (datetime.datetime.now(datetime.timezone.utc) - started).total_seconds()


class TransformPartition(PartitionTask):
    """Write one partition of a derived table from the same date's partition of an upstream task.

    Declare ``upstream`` (a ``PartitionTask`` class), ``source_columns`` (read from its table),
    ``transform`` (a pure function ``(rows, date) -> rows``, wrapped in ``staticmethod``), and
    ``table``, ``date_column`` and ``columns`` of the result. Reading the upstream partition,
    replacing this one and writing the marker happen in one transaction, like a load.

    ``rows`` is a one-pass iterator of tuples, in the order of ``source_columns``, read from the
    database ``read_batch_rows`` at a time through a server-side cursor; the function may return a
    list or yield its rows, which go to a temporary file and then to one COPY. So memory stays
    bounded by a batch (plus whatever the function itself keeps, e.g. one entry per group), not by
    the partition. For a transform that SQL can say, ``SqlTransformPartition`` does it in the server.
    """

    upstream: ClassVar[type[PartitionTask]]
    source_columns: ClassVar[Sequence[str]] = ()
    compares_sources = True
    read_batch_rows: ClassVar[int] = 10_000

    @staticmethod
    def transform(rows: Iterator[tuple[Any, ...]], date: datetime.date) -> Iterable[Sequence[Any]]:
        raise NotImplementedError

    def requires(self) -> PartitionTask | list[PartitionTask]:
        """The upstream partition of the same date; of an hourly upstream, the date's 24 hours. In
        ``reload_changed`` mode they are asked in that mode too, so a change reloads the whole chain in order."""
        upstream = self.upstream.partitions_of_date(self.date, **self.upstream_params())
        return upstream[0] if len(upstream) == 1 else upstream

    def upstream_params(self) -> dict[str, Any]:
        return {"reload_changed": True} if self.reload_changed else {}

    def upstream_task(self) -> PartitionTask:
        """One upstream task of the date: its table, date column and ``day_key`` say which rows to read."""
        return self.upstream.partitions_of_date(self.date, **self.upstream_params())[0]

    def upstream_partitions(self, date: datetime.date) -> list[tuple[ScopedTable, datetime.date]]:
        """The upstream partitions (marker key, date) of ``date``: one, or 24 hours."""
        return self.upstream_task().partitions_of(self.upstream.partition_values_of_date(date))

    def upstream_loads(self, tx: db.PartitionTransaction) -> dict[str, str | None]:
        """The ``load_id`` of each upstream partition of the date, by marker key, read in ``tx`` and recorded in
        the marker. Read before the rows: an upstream reload committed in between leaves the record older
        than the rows read (one needless reload later), never newer (a change missed)."""
        partitions = self.upstream_partitions(self.date)
        found = db.upstream_markers(tx, self.upstream_task().marker_table, partitions)
        return {str(p[0]): found[p].load_id if p in found else None for p in partitions}

    def source_change(self, tx: db.PartitionTransaction) -> str:
        recorded = recorded_upstream_loads(tx.previous["source_objects"] if tx.previous else [])
        return upstream_change(recorded, self.upstream_loads(tx), self.upstream_name(self.date))

    def upstream_name(self, value: Any) -> str:
        """``"upstream LoadTransactions 2019-02-01"``: the upstream task and partition a change message names."""
        return f"upstream {self.upstream.task_family} {value}"

    def changed_sources(self, recorded: Sequence[tuple[Any, list[dict[str, Any]]]]) -> set[Any]:
        return set(self.source_changes(recorded))

    def source_changes(self, recorded: Sequence[tuple[Any, list[dict[str, Any]]]]) -> dict[Any, str]:
        """The dates whose upstream partitions were reloaded since (their load ids differ from the recorded
        ones, one query), or are stale themselves (asked of the upstream task in the same mode: transitively),
        each with the upstream task and partition that changed and how."""
        wanted = {value: self.upstream_partitions(value) for value, _ in recorded}
        upstream = self.upstream_task()
        with db.session(database_settings(), reset=False) as conn:
            found = db.marker_sources(conn, upstream.marker_table, [p for ps in wanted.values() for p in ps])
        changes = {value: upstream_change(recorded_upstream_loads(sources),
                                          {str(p[0]): found[p].load_id if p in found else None for p in wanted[value]},
                                          self.upstream_name(value))
                   for value, sources in recorded}
        rest = [value for value, change in changes.items() if not change]
        values = {value: self.upstream.partition_values_of_date(value) for value in rest}
        stale = upstream.stale_changes([v for vs in values.values() for v in vs]) if rest else {}
        for value, upstream_values in values.items():
            hit = [v for v in upstream_values if v in stale]
            changes[value] = f"{self.upstream_name(upstream.serialized(hit[0]))} is stale: {stale[hit[0]]}" + (
                f" (and {len(hit) - 1} more of its partitions)" if len(hit) > 1 else "") if hit else ""
        return {value: change for value, change in changes.items() if change}

    def write_partition(self, tx: db.PartitionTransaction) -> None:
        source = self.upstream_task()
        settings = self.load_section()
        loads = self.upstream_loads(tx)
        db.delete_partition(tx, self.date_column)
        with temp_download(settings.temp_directory) as tmp:
            with db.read_partition(tx, source.day_key, source.date_column, self.source_columns,
                                   self.read_batch_rows) as rows:
                for row in self.transform(iter(rows), self.date):
                    tmp.write(csv_line(row))
            size = tmp.tell()
            tmp.seek(0)
            statement = q.copy_from_stdin(tx.target, self.target_columns, q.CsvFormat(header=False))
            copied = db.copy_stream(tx, statement, tmp, f"{self.task_family}({self.date})", settings.copy_buffer)
        tx.add({"upstream": str(source.partition_key), "rows_read": rows.read, UPSTREAM_LOADS: loads}, copied, size)
        if tx.rows:
            self.check_rows(tx)

    def check_rows(self, tx: db.PartitionTransaction) -> None:
        if db.count_partition(tx, self.date_column) != tx.rows:
            raise LoadError(f"{self.task_family}: transform returned rows whose {self.date_column} is not {tx.date}")


class SqlTransformPartition(TransformPartition):
    """A transform that the database runs: ``INSERT ... SELECT`` of a declared query, in the same transaction.

    Declare ``upstream``, ``source_columns``, ``table``, ``date_column`` and ``columns`` as for
    ``TransformPartition``, and instead of a function a ``query``: a ``psycopg2.sql.Composable``
    SELECT over the relation ``upstream`` (the upstream partition, its ``source_columns`` only),
    whose columns are ``columns`` in order. Values come in as named placeholders, never as text:
    ``sql.Placeholder("date")`` is the partition date, and ``query_parameters()`` may add more;
    names are ``sql.Identifier``. E.g.::

        query = sql.SQL("SELECT {}, account, count(*) FROM upstream GROUP BY account").format(sql.Placeholder("date"))

    No row passes through Python: rows go from the upstream table to this one inside the server.
    """

    query: ClassVar[sql.Composable | None] = None

    def query_parameters(self) -> dict[str, Any]:
        """Hook: values for the query's ``sql.Placeholder(name)``s besides ``date`` (the partition date)."""
        return {}

    def write_partition(self, tx: db.PartitionTransaction) -> None:
        source = self.upstream_task()
        key = source.day_key
        statement = q.insert_from_query(tx.target, self.target_columns, key.table, source.date_column,
                                        self.source_columns, key.columns, self.declared_query())
        params = {**self.query_parameters(), "date": tx.date,
                  **{q.scope_placeholder(column): value for column, value in key.scope}}
        loads = self.upstream_loads(tx)
        db.delete_partition(tx, self.date_column)
        inserted = db.insert_from_query(tx, statement, params)
        tx.add({"upstream": str(key), "query": True, UPSTREAM_LOADS: loads}, inserted, 0)
        if tx.rows:
            self.check_rows(tx)

    def declared_query(self) -> sql.Composable:
        if not isinstance(self.query, sql.Composable):
            raise ConfigurationError(
                f"{self.task_family}: query must be a psycopg2.sql.Composable (sql.SQL(...) with names as "
                f"sql.Identifier and values as sql.Placeholder), not {type(self.query).__name__}")
        return self.query
