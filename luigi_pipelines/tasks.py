"""The base partition task: a luigi task made of a grain, a source and a write mode, which declares and delegates.

- The **grain** (``grains``: daily, hourly, monthly) says what one partition is and gives the task its luigi
  parameter (``date``, ``date_hour``, ``month``).
- The **source** (``sources``) says what the partition is made from: S3 objects (``loads.LoadPartition``), an
  upstream partition's rows through a function or a query (``derived.TransformPartition``,
  ``derived.SqlTransformPartition``). A task kind builds its source in ``source_part``.
- The **write mode** (``writes``): the partition's rows replaced (the default), merged by key when the task
  declares ``merge_key``, or its child table swapped in when it declares ``partitioned`` (``swap``).

Any grain goes with any source and either write mode. The partition's write itself (``writes.write_once``), the
tables' checks (``tables``) and the sources live below, without luigi; here are the luigi parts: parameters,
``complete``/``bulk_complete`` on the marker, ``run``, the failure record and luigid's messages.
"""
from __future__ import annotations

import datetime
import logging
from collections.abc import Callable, Iterable, Sequence
from contextlib import AbstractContextManager as ContextManager
from typing import Any, ClassVar, TypeVar

import luigi

from . import db, memo, staleness, writes
from . import sql as q
from .config import database_settings, load_settings
from .contracts import Contract
from .declared import Declared
from .errors import ConfigurationError, PipelineError
from .grains import DAILY, Grain
from .layouts import FILES, DateSource, Lineage, TableLayout
from .partitions import ScopedTable, TableName
from .reporting import ROLLED_BACK, failure_text, one_line
from .settings import DatabaseSettings, LoadSettings
from .targets import (
    PartitionMarkerTarget,
    check_owner,
    completed_values,
    expired_partition,
    forget_missing,
    take_missing,
    task_ids_of,
)

logger = logging.getLogger("luigi-interface.luigi_pipelines")
_MERGE_PRIORITY = 1_000_000_000  # above every partition's ordinal (an hour's up to the year 9999): stays positive
T = TypeVar("T")


class PartitionDateParameter(luigi.DateParameter):
    """luigi's ``DateParameter`` with a one-line error for a date that does not exist (``2019-02-30``)."""

    def parse(self, s: str) -> datetime.date:
        try:
            return super().parse(s)
        except ValueError as exc:
            raise ValueError(f"--date {s!r} is not a date of the calendar (YYYY-MM-DD): {exc}") from None


def grain_parameter(grain: Grain) -> luigi.Parameter[Any]:
    """A new luigi parameter of ``grain``'s values (each task class of the grain gets its own)."""
    if grain.parameter_type == "DateParameter":
        return PartitionDateParameter(description="the partition date")
    kind: type[luigi.Parameter[Any]] = getattr(luigi, grain.parameter_type)
    return kind(description=f"the partition's {grain.unit}, e.g. {grain.describe(datetime.datetime(2019, 2, 1, 13))}")


class PartitionDeclarations(luigi.Task):
    """What a partition task declares: its grain's parameter, its table, and what follows from them (its keys,
    its layout, its write mode: ``declared.Declared``). ``PartitionTask`` adds what it does with them.

    Declare ``table``, ``columns`` and, unless merged, ``date_column``; ``grain`` (default daily); ``merge_key``
    (with ``snapshot``, ``deleted_flag``) to merge by key instead of replacing; ``scope`` when several tasks feed
    one table; ``date_from`` when the rows' date is not a column of the source.
    """

    grain: ClassVar[Grain] = DAILY
    date = PartitionDateParameter(description="the partition date")  # a daily task's; another grain's replaces it
    force = luigi.BoolParameter(default=False, significant=False, positional=False,
                                description="rewrite the partition even if its marker says it is done")
    reload_changed = luigi.BoolParameter(
        default=False, significant=False, positional=False,
        description="also count a written partition as not done when its sources changed since it was written "
        "(S3 objects added, removed or replaced; an upstream partition reloaded), so that it is written again")
    stale_known = luigi.OptionalDictParameter(
        default=None, significant=False, positional=False,
        description="reload_changed mode: the partitions a check earlier in this run found stale, with their "
        "marker's load_id then (backfill --reload-changed checks once and hands it on); the others are fresh")

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
    # The rows of the table this task owns, when several sources feed one table: e.g. {"region": "us"}. Its
    # writes touch only those rows, with a marker and a lock of their own; a scope column the source lacks is filled.
    scope: ClassVar[dict[str, str]] = {}
    # Merge by key instead of replacing the partition's rows (writes.Merge): the key's columns; snapshot = True: the
    # partition's rows are the whole table (of the scope), absent keys are deleted; deleted_flag: a boolean column
    # of the files whose true deletes the row's key.
    merge_key: ClassVar[Sequence[str]] = ()
    merged: ClassVar[bool] = False  # merged by key even before merge_key is declared (MergePartition: an error then)
    snapshot: ClassVar[bool] = False
    deleted_flag: ClassVar[str] = ""
    # What a load does when the table or the files differ from `columns`: Contract(columns="evolve", ...), "evolve",
    # "freeze" (contracts.Contract); None: declared columns the table lacks refuse the load, undeclared fields ignored.
    contract: ClassVar[Contract | str | None] = None
    # How late the newest partition may be, after its end ("26h" for a daily feed, or a datetime.timedelta): status
    # shows the table late (exit 28) and the metrics carry it (luigi_pipelines.freshness). None: not judged.
    freshness: ClassVar[str | datetime.timedelta | None] = None
    # Data checks run in the load's transaction before the marker (``checks``): e.g. (lp.not_null("id"), lp.unique("id")).
    checks: ClassVar[Sequence[Any]] = ()
    # A natively partitioned table (PARTITION BY RANGE), a child table per partition that each load builds and swaps
    # in (swap.Swap); keep = N: only the newest N partitions are kept, older ones dropped with their markers.
    partitioned: ClassVar[bool] = False
    keep: ClassVar[int] = 0

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """A class that declares another grain gets that grain's luigi parameter, and no other grain's."""
        super().__init_subclass__(**kwargs)
        if "grain" in cls.__dict__:
            _install_grain(cls)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.is_merge:  # luigi gives out the highest priority first: older partitions first, one at a time
            self.priority = _MERGE_PRIORITY - self.grain.ordinal(self.partition_value)
            scope = ",".join(f"{c}={v}" for c, v in sorted(self.scope.items()))
            self.resources = {**PartitionDeclarations.resources, f"merge {self.table}/{scope}": 1}

    # -- the declarations (``declared.Declared``) -------------------------------------------------

    @property
    def is_merge(self) -> bool:
        """Whether the table is merged by key (``writes.Merge``) rather than replaced partition by partition."""
        return bool(self.merge_key) or self.merged

    @property
    def declared(self) -> Declared:
        """The task's declarations about its table (read once within ``reading_config_once``)."""
        return self.read_once("declared", lambda: Declared.of(
            self.task_family, self.table, self.date_column, self.columns, self.grain, self.scope,
            date_from=self.date_from, lineage=self.lineage_columns(), merged=self.is_merge,
            merge_key=self.merge_key, snapshot=self.snapshot, deleted_flag=self.deleted_flag, contract=self.contract,
            partitioned=self.partitioned, keep=self.keep))

    @property
    def partition_value(self) -> Any:
        """The value of the grain's parameter: the date, the hour, the month."""
        return getattr(self, self.grain.parameter)

    @property
    def partition_date(self) -> datetime.date:
        """The first date of the partition: the marker's ``partition_date``."""
        return _partition_date(self)

    @property
    def target_table(self) -> TableName:
        return self.declared.target_table

    @property
    def table_key(self) -> ScopedTable:
        """The table and scope this task writes, whatever the partition (an hourly task: all its hours)."""
        return self.declared.table_key

    def key_of(self, value: Any) -> ScopedTable:
        return self.declared.key_of(value)

    @property
    def partition_key(self) -> ScopedTable:
        """The partition's key in the marker and the lock."""
        return self.key_of(self.partition_value)

    def partitions_of(self, values: Sequence[Any]) -> list[tuple[ScopedTable, datetime.date]]:
        """The marker key and date of each partition value (``bulk_complete``)."""
        return self.declared.partitions_of(values)

    @classmethod
    def partitions_of_date(cls, date: datetime.date, **params: Any) -> list[Any]:
        """The tasks that together write ``date`` (its 24 hours, its month), with ``params``."""
        values = cls.grain.covering(date, date + datetime.timedelta(days=1))
        return [cls(**{cls.grain.parameter: value}, **params) for value in values]

    @property
    def layout(self) -> TableLayout:
        """Every column of the table by where its values come from: the source, the write, the table itself."""
        return self.read_once("layout", self.declared.layout)

    @property
    def target_columns(self) -> tuple[q.Column, ...]:
        """The columns the source's rows hold, in their order (what COPY reads)."""
        if not getattr(self, "check_partition_rows", True):
            raise ConfigurationError(
                f"{self.task_family}: check_partition_rows = False is no longer accepted: it committed rows of "
                f"other dates into this partition, and the next load of those dates deleted them")
        return self.layout.files

    def lineage_columns(self) -> Lineage:
        return Lineage()

    # -- config, read once per load --------------------------------------------------------------

    def reading_config_once(self) -> ContextManager[None]:
        """Within the block, what ``read_once`` reads is read once (``memo.reading_once``)."""
        return memo.reading_once(self)

    def read_once(self, name: str, read: Callable[[], T]) -> T:
        """``read()``, or within ``reading_config_once`` the value it gave the first time there."""
        return memo.read_once(self, name, read)

    def load_section(self) -> LoadSettings:
        """The ``[load]`` section (read once within ``reading_config_once``)."""
        return self.read_once("load_settings", load_settings)

    def database(self) -> DatabaseSettings:
        """The ``[database]`` section (read once within ``reading_config_once``)."""
        return self.read_once("database", database_settings)

    @property
    def marker_table(self) -> TableName:
        return self.load_section().marker


class PartitionTask(PartitionDeclarations):
    """A task that writes one partition of a table exactly once: complete when its marker says so (one query for
    a whole range), written by ``writes.write_once`` with its grain, source (``source_part``, which a kind of task
    supplies) and write mode; a failed attempt is put on record. See the module docstring."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._last_status: str | None = None  # the last progress message sent to luigid
        self._source: Any = None  # the source of the write in progress (named by a failure)

    def output(self) -> PartitionMarkerTarget:
        return PartitionMarkerTarget(self.partition_key, self.partition_date, self.marker_table, self.database(),
                                     owner=self.task_family)

    def complete(self) -> bool:
        """Whether the marker says the partition is written (in ``reload_changed`` mode, and its sources have not
        changed since); a partition ``bulk_complete`` just found not complete is not asked again (``targets``)."""
        if self.force or take_missing(self.task_id, bool(self.reload_changed)):
            return False
        with self.reading_config_once():
            if not super().complete():
                return expired_partition(self)  # a partition its retention dropped is done, not missing
            return not (self.reload_changed and self.stale_changes([self.partition_value]))

    @classmethod
    def bulk_complete(cls, parameter_tuples: Iterable[Any]) -> list[Any]:
        """Those of ``parameter_tuples`` already complete, with one query on one connection (``RangeDaily``,
        ``RangeHourly``, ``RangeMonthly``, which pass ``cls`` as a ``functools.partial`` of their ``of_params``)."""
        return completed_values(cls, parameter_tuples)

    def learn_sources(self, values: Sequence[Any]) -> None:
        """Learn at once what the dependency checks of the partitions ``values`` (not complete) will ask, if that
        is cheaper in bulk. Here nothing."""

    def stale_changes(self, values: Sequence[Any]) -> dict[Any, str]:
        """Of ``values`` (partitions with a marker), those whose sources changed since, with how (``staleness``)."""
        return staleness.stale_changes(self, values, task_ids_of)

    def recorded(self, values: Sequence[Any]) -> dict[Any, db.MarkerSources]:
        """The marker's sources and ``load_id`` of each of ``values`` that has a marker: one query."""
        return staleness.recorded(self, values)

    # Whether ``source_changes`` compares a partition's sources with its marker (a plain PartitionTask cannot tell:
    # it is never stale, and never shown fresh either).
    compares_sources: ClassVar[bool] = False

    def source_changes(self, recorded: Sequence[tuple[Any, list[dict[str, Any]]]]) -> dict[Any, str]:
        """Of (value, the marker's ``source_objects``) pairs, how each value's sources differ now (the source's
        diff of manifests); a task that cannot tell is never stale."""
        return {}

    def absent_ready_keys(self, values: Sequence[Any]) -> dict[Any, str]:
        """Of ``values`` (not loaded), those that wait for a ready key the producer has not written, with its URL.
        Here none: only a load from S3 has one."""
        return {}

    def serialized(self, value: Any) -> str:
        """The partition value ``value`` as luigi's command line says it (``2019-02-01``)."""
        return str(dict(type(self).get_params())[self.grain.parameter].serialize(value))

    # -- the write -------------------------------------------------------------------------------

    def source_part(self) -> writes.Source:
        """The source of this partition (``sources``)."""
        raise NotImplementedError(f"{self.task_family}: a partition task needs a source: use LoadPartition, "
                                  f"TransformPartition or SqlTransformPartition")

    def job(self) -> writes.PartitionJob:
        """This partition's write, as declared (``writes.PartitionJob``)."""
        self._source = self.source_part()
        return _job(self, self._source)

    def run(self) -> None:
        """Write the partition once (``write_once``); a failed attempt is put on record before it is raised."""
        self._last_status = self._source = None  # luigi reuses an instance for the same parameters
        try:
            self.write_once()
        except Exception as exc:
            self.report_progress(f"{self._last_status or 'failed'}; {ROLLED_BACK}", 0)
            self.record_failure(exc)
            raise

    def write_once(self) -> None:
        with self.reading_config_once():
            forget_missing(self.task_id)
            writes.write_once(self.job())

    def prepare(self, conn: Any) -> None:
        """The tables and the write mode's checks, before the transaction (``writes.prepare``)."""
        with self.reading_config_once():
            writes.prepare(conn, self.job())

    def prepared(self, conn: Any) -> None:
        """Checks of a kind of task after the tables' (a load's key prefix); here none."""

    def record_failure(self, exc: BaseException) -> None:
        """Put the failed attempt on record in the failures table (``_record_failure``)."""
        _record_failure(self, exc)

    def failed_source(self) -> str | None:
        """The S3 key of the object being loaded when the attempt failed, if any."""
        return None

    # -- hooks: override these -------------------------------------------------------------------

    def after_copy(self, tx: db.PartitionTransaction) -> None:
        """Hook: the source's rows are written (and checked, or merged); the marker is written next.

        Like luigi's ``CopyToTable.post_copy``: e.g. derived updates in the same transaction."""

    def before_commit(self, tx: db.PartitionTransaction) -> None:
        """Hook: the partition and its marker are written and the transaction is about to commit.

        Raising here rolls everything back. E.g. a final consistency check against another table."""

    def on_failure(self, exception: BaseException) -> str:
        """What luigid shows for a failure, on short lines (``_failure_message``)."""
        return _failure_message(self, exception, lambda: str(super(PartitionTask, self).on_failure(exception)))

    def describe_partition(self) -> str:
        value = self.grain.describe(self.partition_value)
        try:
            return f"{self.partition_key} {value}"
        except PipelineError:  # the declaration itself is what failed
            return f"{self.task_family} {value}"

    def failed_url(self) -> str | None:
        """Where the failed attempt's data came from, if one source is to blame (see ``failed_source``)."""
        return self.failed_source()

    def report_progress(self, message: str, percent: int) -> None:
        """Progress for luigid's UI; a no-op when run() is called outside a luigi worker."""
        self._last_status = message
        if callable(self.set_status_message):
            self.set_status_message(message)
        if callable(self.set_progress_percentage):
            self.set_progress_percentage(percent)


def _partition_date(task: PartitionDeclarations) -> datetime.date:
    """``task.partition_date``; also ``task.date`` of a task of another grain than daily."""
    return task.grain.date_of(task.partition_value)


def _install_grain(cls: type[PartitionDeclarations]) -> None:
    """``cls`` gets its grain's luigi parameter (its own instance), and not the one of the grain of a class it
    derives from: ``date`` of a task of another grain is the partition's first date (a property)."""
    parameter = cls.grain.parameter
    if not isinstance(getattr(cls, parameter, None), luigi.Parameter):
        installed = grain_parameter(cls.grain)
        setattr(cls, parameter, installed)
        installed.__set_name__(cls, parameter)  # as a class body's parameter gets it
    bases = [getattr(base, "grain", None) for base in cls.__mro__[1:]]
    for name in {grain.parameter for grain in bases if isinstance(grain, Grain)}:
        if name != parameter and isinstance(getattr(cls, name, None), luigi.Parameter):
            setattr(cls, name, property(_partition_date) if name == "date" else None)


def _job(task: PartitionTask, source: writes.Source) -> writes.PartitionJob:
    """``task``'s partition write with ``source``: its key and dates, layout, write mode, settings and hooks."""
    declared, value = task.declared, task.partition_value
    max_bad_rows = int(getattr(task, "max_bad_rows", 0))
    return writes.PartitionJob(
        task.partition_key, task.partition_date, task.grain.stop_of(value), task.task_family, task.task_id,
        task.layout, source, declared.write_mode(value), task.load_section(), task.database(),
        create_table=task.create_table, force=bool(task.force), reload_changed=bool(task.reload_changed),
        max_bad_rows=max_bad_rows, contract=declared.contract, checks=declared.checks_of(task.checks, max_bad_rows),
        lineage_key=declared.lineage.key, fills=declared.fill_values, after_write=task.after_copy,
        before_commit=task.before_commit, prepared=task.prepared,
        check_owner=lambda key, date, family: check_owner(key, date, family, task.task_family))


def _record_failure(task: PartitionTask, exc: BaseException) -> None:
    """Put the failed attempt on record (class, one line, S3 key, host, time) in the failures table, on a short
    connection of its own: the transaction rolled back, so nothing else remembers it."""
    try:
        failure = db.Failure(task.partition_key, task.partition_date, task.task_family, task.task_id,
                             type(exc).__name__, one_line(str(exc) or repr(exc)), task.failed_source())
        failures = load_settings().failures
    except Exception as cannot:  # a declaration or config error: what failed is reported, not this
        logger.warning("%s %s: the failed attempt is not on record: %s", task.task_family, task.partition_value, cannot)
        return
    db.record_failure(database_settings(), failures, failure)


def _failure_message(task: PartitionTask, exception: BaseException, luigi_text: Callable[[], str]) -> str:
    """What luigid shows for a failure, on short lines: what was not written, the S3 object, the line and column,
    the reason, what to do. Never a traceback of our own errors, which may repeat a multi-megabyte bad value from
    PostgreSQL's error detail; other exceptions keep luigi's traceback (``luigi_text``)."""
    head = f"{type(exception).__name__}: {task.describe_partition()} not loaded; {ROLLED_BACK}"
    if not isinstance(exception, PipelineError):
        return f"{head}\n{luigi_text()}"
    return failure_text(head, exception, task.failed_url())
