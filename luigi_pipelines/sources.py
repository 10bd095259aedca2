"""Sources: what one partition is made from, and what a marker says it was made from (its manifest).

A source writes a partition's rows into a table in the open partition transaction (the target table, or a
write mode's stage) and records in ``tx.sources`` what it read. Three kinds:

- ``S3Objects``: the objects under the partition's key prefix, each decoded (``Decoder``: CSV, JSON lines,
  Parquet) and copied (``objects.ObjectLoader``); the manifest is each object's key, size and ETag;
- ``UpstreamRows``: an upstream partition's rows through a pure function, then one COPY;
- ``UpstreamQuery``: an upstream partition's rows through a SQL query, ``INSERT ... SELECT`` in the server.
  The manifest of both is the ``load_id`` of each upstream partition read.

Each answers "have my sources changed since the marker?" with one diff of manifests (``change``), asked
under the partition's lock, or for many partitions at once (``s3_changes``, ``upstream_changes``) by
``status --check-sources`` and the ``reload_changed`` mode. No luigi here: tasks build sources and delegate.
"""
from __future__ import annotations

import datetime
import logging
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from psycopg2 import sql

from . import db
from . import sql as q
from .contracts import NO_CONTRACT, Contract
from .db import SupportsRead
from .errors import BadInputError, ConfigurationError, LoadError, PipelineError, SourceError
from .files import csv_line, temp_download
from .manifests import UPSTREAM_LOADS, objects_change, recorded_upstream_loads, upstream_change
from .objects import Decoder, ObjectLoader, ObjectRecord
from .partitions import KeyFilter, ScopedTable, TableName
from .reporting import ProgressReport
from .s3 import Listing, S3Client, S3Object
from .settings import DatabaseSettings, LoadSettings

logger = logging.getLogger("luigi-interface.luigi_pipelines")


class ObjectHooks(Protocol):
    """What a task may do around each object (the hooks ``LoadPartition`` documents)."""

    def before_copy(self, tx: db.PartitionTransaction) -> None: ...

    def before_object(self, tx: db.PartitionTransaction, obj: S3Object) -> None: ...

    def source_stream(self, obj: S3Object, stream: SupportsRead) -> SupportsRead: ...

    def after_object(self, tx: db.PartitionTransaction, record: ObjectRecord) -> None: ...

    def report_progress(self, message: str, percent: int) -> None: ...


@dataclass
class S3Objects:
    """The data objects under one partition's key prefix (see the module docstring).

    Keys under the prefix that look like data but that ``key_filter``'s patterns leave out are named in a warning
    and recorded in the marker (``tx.skipped``); a ``snapshot`` merge, which deletes every key its objects lack,
    refuses to run when there are any."""

    s3: S3Client
    bucket: str
    prefix: str
    key_filter: KeyFilter
    ready_key: str = ""
    empty_partition_ok: bool = False
    snapshot: bool = False
    in_progress: str | None = None  # the key being copied: named by a failure
    _listed: tuple[Any, Listing] | None = field(default=None, repr=False)

    def listing(self) -> Listing:
        """One paginated listing: the data objects (``key_filter`` applied, the ready key left out), and the keys that
        look like data but that ``keys`` leave out (the ready key is neither)."""
        listed, ready = self.s3.list_partition(self.bucket, self.prefix, self.key_filter), self.prefix + self.ready_key
        return Listing([o for o in listed.objects if o.key != ready], [k for k in listed.left_out if k != ready])

    def data_objects(self) -> list[S3Object]:
        return self.listing().objects

    def manifest(self) -> list[dict[str, Any]]:
        """What a load would record of its objects now."""
        return [o.as_marker() for o in self.data_objects()]

    def change(self, tx: db.PartitionTransaction) -> str:
        """How the objects listed now (under the lock) differ from the marker's; the listing is kept for the load of
        the same transaction."""
        listing = self.listing()
        self._listed = (tx.load_id, listing)
        return objects_change(tx.previous["source_objects"] if tx.previous else [],
                              [o.as_marker() for o in listing.objects])

    def objects_to_load(self, tx: db.PartitionTransaction) -> list[S3Object]:
        """The objects to load in ``tx``: those ``change`` listed under its lock, or a new listing; none is an error
        unless declared fine. The keys that ``keys`` leave out go to the marker (``tx.skipped``) and a warning."""
        listed, self._listed = self._listed, None
        listing = listed[1] if listed is not None and listed[0] == tx.load_id else self.listing()
        left_out = listing.left_out
        if left_out and self.snapshot:
            raise ConfigurationError(
                f"{tx.key.describe()} {tx.date}: a snapshot merge deletes every key absent from the date's objects, and "
                f"keys {self.key_filter.patterns!r} leave out {_objects(left_out)} under {self.url(self.prefix)} that "
                f"look{'' if len(left_out) > 1 else 's'} like data (bytes, not a folder marker, not matched by "
                f"skip_keys): {_named(left_out)}; nothing was written. Match {_them(left_out)} with keys to merge "
                f"{_them(left_out)}, or declare {_them(left_out)} not data in skip_keys")
        tx.skipped = left_out
        if left_out:
            logger.warning("%s %s: %s under %s look%s like data but %s left out by keys %r, not loaded: %s (recorded "
                           "in the marker's skipped_keys; declare them in keys to load them, or in skip_keys if they "
                           "are not data)", tx.key, tx.date, _objects(left_out), self.url(self.prefix),
                           "" if len(left_out) > 1 else "s", "are" if len(left_out) > 1 else "is",
                           self.key_filter.patterns, _named(left_out))
        if not listing.objects and not self.empty_partition_ok:
            raise SourceError(f"{self.url(self.prefix)}: no objects to load")
        return listing.objects

    def absent_ready_key(self) -> str:
        """``s3://bucket/key absent`` when the partition waits for a ready key the producer has not written, else ``""``."""
        if not self.ready_key or self.s3.exists(self.bucket, self.prefix + self.ready_key):
            return ""
        return f"{self.url(self.prefix + self.ready_key)} absent"

    def url(self, key: str) -> str:
        return f"s3://{self.bucket}/{key}"


def _objects(keys: Sequence[str]) -> str:
    return f"{len(keys)} object{'s' if len(keys) > 1 else ''}"


def _them(keys: Sequence[str]) -> str:
    return "them" if len(keys) > 1 else "it"


def _named(keys: Sequence[str], shown: int = 5) -> str:
    """At most ``shown`` of ``keys``, and ``...`` if there are more."""
    return ", ".join(keys[:shown]) + (", ..." if len(keys) > shown else "")


@dataclass
class S3Load:
    """``S3Objects`` as a partition's rows: each object decoded and copied, with quarantine, lineage and the hooks."""

    objects: S3Objects
    decoder: Decoder
    columns: tuple[q.Column, ...]
    settings: LoadSettings
    hooks: ObjectHooks
    max_bad_rows: int = 0
    empty_objects_ok: bool = True
    key_column: str = ""  # a lineage column that gets each object's key
    contract: Contract = NO_CONTRACT  # the task's schema contract (``contracts``): the fields an object may lack or add

    def change(self, tx: db.PartitionTransaction) -> str:
        return self.objects.change(tx)

    def write(self, tx: db.PartitionTransaction, into: TableName | None = None) -> None:
        """COPY each object, in order, into the partition's table (or ``into``), with the hooks and progress."""
        source = self.objects
        objects = source.objects_to_load(tx)
        logger.info("%s %s: loading %d objects (%.1f MiB)", tx.key.describe(), tx.date, len(objects),
                    sum(o.size for o in objects) / (1 << 20))
        hooks = self.hooks
        with ProgressReport(hooks.report_progress, objects) as progress:
            loader = ObjectLoader(tx, source.s3, self.decoder, self.columns, self.settings, self.max_bad_rows,
                                  self.empty_objects_ok, hooks.source_stream, progress.read, key_column=self.key_column,
                                  into=into, contract=self.contract)
            hooks.before_copy(tx)
            for n, obj in enumerate(objects, 1):
                source.in_progress = obj.key
                hooks.before_object(tx, obj)
                progress.start(n, obj, tx.rows)
                record = loader.load(obj)
                progress.done(n, obj, tx.rows)
                hooks.after_object(tx, record)
        source.in_progress = None

    def outside(self, tx: db.PartitionTransaction, date_column: str, outside: int) -> PipelineError:
        """Rows copied outside the partition: which objects hold them (with a lineage key column, how many each)."""
        keys = [s["key"] for s in tx.sources]
        bucket = self.objects.bucket
        if self.key_column:
            counts = db.count_outside_by_key(tx, self.key_column, date_column, keys)
            holders, hint = ", ".join(f"s3://{bucket}/{k} ({n})" for k, n in counts.items()), ""
        else:
            holders = f"s3://{bucket}/ ({', '.join(keys)})"
            hint = "" if len(keys) < 2 else "; declare lineage = Lineage(key=...) to see which objects hold them"
        return describe_outside(tx, date_column, outside, holders, hint)


def describe_outside(tx: db.PartitionTransaction, date_column: str, outside: int, holders: str, hint: str = ""
                     ) -> BadInputError:
    """The error of rows copied outside the partition: which sources hold them, and what they should hold."""
    dates = f"{tx.date}" if not tx.span else f"[{tx.date}, {tx.stop})"
    return BadInputError(
        f"{tx.key.describe()} {tx.date}: {outside} of {tx.rows} rows copied from {holders} have "
        f"{date_column} {'other than' if not tx.span else 'outside'} {dates}"
        + "".join(f" or {c} other than {v!r}" for c, v in tx.key.scope) + hint)


def s3_changes(recorded: Sequence[tuple[Any, list[dict[str, Any]]]], source_of: Callable[[Any], S3Objects]
               ) -> dict[Any, str]:
    """Of (partition value, the marker's ``source_objects``) pairs, how each value's objects differ now (one listing
    per value), e.g. ``"1 added (d/b.csv)"``; values whose objects are the same are left out."""
    changes = {value: objects_change(sources, source_of(value).manifest()) for value, sources in recorded}
    return {value: change for value, change in changes.items() if change}


@dataclass(frozen=True)
class Upstream:
    """What a transform reads of its upstream task for one partition: the rows of ``rows`` (a table and scope)
    whose ``date_column`` lies in ``[start, stop)`` (a merged table, which has no date column: all of its rows),
    and the upstream partitions (marker key and date, in ``marker``) that hold them."""

    rows: ScopedTable
    date_column: str
    start: datetime.date
    stop: datetime.date
    marker: TableName
    partitions: tuple[tuple[ScopedTable, datetime.date], ...]
    name: str = "upstream"  # how a stale reason names it: "upstream LoadTransactions 2019-02-01"

    def loads(self, tx: db.PartitionTransaction) -> dict[str, str | None]:
        """The ``load_id`` of each upstream partition, by marker key, read in ``tx`` and recorded in the marker. Read
        before the rows: an upstream reload committed in between leaves the record older than the rows read (one
        needless reload later), never newer (a change missed)."""
        found = db.upstream_markers(tx, self.marker, self.partitions)
        return {str(p[0]): found[p].load_id if p in found else None for p in self.partitions}

    def change(self, tx: db.PartitionTransaction) -> str:
        recorded = recorded_upstream_loads(tx.previous["source_objects"] if tx.previous else [])
        return upstream_change(recorded, self.loads(tx), self.name)

    @property
    def span(self) -> bool:
        """Whether the rows are those of a range of dates (a month), not of one date."""
        return self.stop != self.start + datetime.timedelta(days=1)


def upstream_changes(recorded: Sequence[tuple[Any, list[dict[str, Any]]]], upstream_of: Callable[[Any], Upstream],
                     database: DatabaseSettings) -> dict[Any, str]:
    """Of (value, the marker's ``source_objects``) pairs of a transform, how each value's upstream partitions changed
    since (reloaded: their load ids differ from the recorded ones; gone: no marker), naming the upstream: one query
    for all; values whose upstream is the same are left out."""
    if not recorded:
        return {}
    wanted = {value: upstream_of(value) for value, _ in recorded}
    marker = next(iter(wanted.values())).marker
    with db.session(database, reset=False) as conn:
        found = db.marker_sources(conn, marker, [p for up in wanted.values() for p in up.partitions])
    changes = {value: upstream_change(recorded_upstream_loads(sources),
                                      {str(p[0]): found[p].load_id if p in found else None
                                       for p in wanted[value].partitions}, wanted[value].name)
               for value, sources in recorded}
    return {value: change for value, change in changes.items() if change}


@dataclass(frozen=True)
class UpstreamRows:
    """An upstream partition's rows through ``transform``, a pure function ``(rows, date) -> rows``: rows are read
    ``batch_rows`` at a time through a server-side cursor, the results go to a temporary file and one COPY."""

    upstream: Upstream
    source_columns: tuple[str, ...]
    transform: Callable[[Iterator[tuple[Any, ...]], Any], Iterable[Sequence[Any]]]
    value: Any  # what the function is given as its partition (the date; an hour or a month by grain)
    columns: tuple[q.Column, ...]
    settings: LoadSettings
    batch_rows: int = 10_000
    label: str = ""  # the task family

    def write(self, tx: db.PartitionTransaction, into: TableName | None = None) -> None:
        up, settings = self.upstream, self.settings
        loads = up.loads(tx)
        with temp_download(settings.temp_directory) as tmp:
            with db.read_rows(tx, up.rows, up.date_column, up.start, up.stop, self.source_columns,
                              self.batch_rows) as rows:
                for row in self.transform(iter(rows), self.value):
                    tmp.write(csv_line(row))
            size = tmp.tell()
            tmp.seek(0)
            statement = q.copy_from_stdin(into or tx.target, self.columns, q.CsvFormat(header=False))
            copied = db.copy_stream(tx, statement, tmp, f"{self.label}({tx.date})", settings.copy_buffer)
        tx.add({"upstream": str(up.rows), "rows_read": rows.read, UPSTREAM_LOADS: loads}, copied, size)

    def change(self, tx: db.PartitionTransaction) -> str:
        return self.upstream.change(tx)

    def outside(self, tx: db.PartitionTransaction, date_column: str, outside: int) -> PipelineError:
        return LoadError(f"{self.label}: transform returned rows whose {date_column} is not {tx.date}")


@dataclass(frozen=True)
class UpstreamQuery:
    """An upstream partition's rows through ``query``, a SELECT over the relation ``upstream`` (the partition's
    ``source_columns``), run by the server as ``INSERT ... SELECT``: no row passes through Python."""

    upstream: Upstream
    source_columns: tuple[str, ...]
    query: sql.Composable
    parameters: Mapping[str, Any]
    columns: tuple[q.Column, ...]
    label: str = ""

    def write(self, tx: db.PartitionTransaction, into: TableName | None = None) -> None:
        up = self.upstream
        statement = q.insert_from_query(into or tx.target, self.columns, up.rows.table, up.date_column,
                                        self.source_columns, up.rows.columns, self.query, up.span)
        params = {**self.parameters, "date": up.start, "stop": up.stop,
                  **{q.scope_placeholder(c): v for c, v in up.rows.scope}}
        loads = up.loads(tx)
        inserted = db.insert_from_query(tx, statement, params)
        tx.add({"upstream": str(up.rows), "query": True, UPSTREAM_LOADS: loads}, inserted, 0)

    def change(self, tx: db.PartitionTransaction) -> str:
        return self.upstream.change(tx)

    def outside(self, tx: db.PartitionTransaction, date_column: str, outside: int) -> PipelineError:
        return LoadError(f"{self.label}: the query returned rows whose {date_column} is not {tx.date}")


def declared_query(query: Any, family: str) -> sql.Composable:
    """``query``, which must be a ``psycopg2.sql.Composable``: values as placeholders, names as identifiers."""
    if not isinstance(query, sql.Composable):
        raise ConfigurationError(
            f"{family}: query must be a psycopg2.sql.Composable (sql.SQL(...) with names as sql.Identifier and values "
            f"as sql.Placeholder), not {type(query).__name__}")
    return query
