"""Partition tasks whose source is another task's partitions: ``TransformPartition`` (a pure function) and
``SqlTransformPartition`` (a query the server runs). Any grain no finer than the upstream's, replaced or merged."""
from __future__ import annotations

import datetime
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, ClassVar

from psycopg2 import sql

from .errors import ConfigurationError
from .sources import Upstream, UpstreamQuery, UpstreamRows, declared_query, upstream_changes
from .tasks import PartitionTask


class UpstreamPartition(PartitionTask):
    """A partition made from the same span of an upstream task's partitions (the base of the two below).

    Declare ``upstream`` (a ``PartitionTask`` class) and ``source_columns`` (read from its table), and ``table``,
    ``date_column`` and ``columns`` of the result. A partition reads the upstream rows of its own dates (a
    day's hours of an hourly upstream, a month's days of a daily one; the same hour of an hourly one; all the rows
    of a merged upstream table, which has no dates) and requires the upstream partitions that hold them. Reading
    them, writing this partition and its marker happen in one transaction, like a load.
    """

    upstream: ClassVar[type[PartitionTask]]
    source_columns: ClassVar[Sequence[str]] = ()
    compares_sources = True

    def requires(self) -> PartitionTask | list[PartitionTask]:
        """The upstream partitions of this one's span. In ``reload_changed`` mode they are asked in that mode too, so
        a change reloads the whole chain in order."""
        tasks = [self.upstream(**{self.upstream.grain.parameter: v}, **self.upstream_params())
                 for v in self.upstream_values(self.partition_value)]
        return tasks[0] if len(tasks) == 1 else tasks

    def upstream_params(self) -> dict[str, Any]:
        return {"reload_changed": True} if self.reload_changed else {}

    def upstream_values(self, value: Any) -> list[Any]:
        """The upstream partition values that cover the partition ``value``'s dates (and hour)."""
        if type(self.grain) is type(self.upstream.grain):
            return [value]
        if self.grain.key_columns():  # an hour of a daily table: its rows say no hour
            raise ConfigurationError(f"{self.task_family} is {self.grain.name} and its upstream {self.upstream.__name__} "
                                     f"is {self.upstream.grain.name}: its rows carry no {self.grain.unit} to read one by")
        return self.upstream.grain.covering(self.grain.date_of(value), self.grain.stop_of(value))

    def upstream_task(self) -> PartitionTask:
        """One upstream task of this partition: its table, date column and keys say what to read."""
        return self.upstream(**{self.upstream.grain.parameter: self.upstream_values(self.partition_value)[0]},
                             **self.upstream_params())

    def upstream_of(self, value: Any) -> Upstream:
        """What the partition ``value`` reads of the upstream (``sources.Upstream``)."""
        up = self.upstream_task()
        values = self.upstream_values(value)
        same = type(self.grain) is type(self.upstream.grain)
        rows = up.key_of(value) if same and not up.is_merge else up.table_key
        return Upstream(rows, "" if up.is_merge else up.date_column, self.grain.date_of(value),
                        self.grain.stop_of(value), up.marker_table, tuple(up.partitions_of(values)),
                        self.upstream_name(self.grain.describe(value)))

    def upstream_name(self, value: str) -> str:
        """``"upstream LoadTransactions 2019-02-01"``: the upstream task and partition a change message names."""
        return f"upstream {self.upstream.task_family} {value}"

    def source_changes(self, recorded: Sequence[tuple[Any, list[dict[str, Any]]]]) -> dict[Any, str]:
        """The partitions whose upstream partitions were reloaded since (their load ids differ from the recorded
        ones, one query), or are stale themselves (asked of the upstream task in the same mode: transitively)."""
        changed = upstream_changes(recorded, self.upstream_of, self.database())
        rest = [value for value, _ in recorded if value not in changed]
        if not rest:
            return changed
        up = self.upstream_task()
        values = {value: self.upstream_values(value) for value in rest}
        stale = up.stale_changes(sorted({v for vs in values.values() for v in vs}))
        for value, vs in values.items():
            hit = [v for v in vs if v in stale]
            if hit:
                changed[value] = f"{self.upstream_name(up.grain.describe(hit[0]))} is stale: {stale[hit[0]]}" + (
                    f" (and {len(hit) - 1} more of its partitions)" if len(hit) > 1 else "")
        return changed


class TransformPartition(UpstreamPartition):
    """Write one partition of a derived table from an upstream task's rows through a pure function.

    Besides ``UpstreamPartition``'s declarations, ``transform``: a pure function ``(rows, date) -> rows``,
    wrapped in ``staticmethod`` (``date`` is the partition's value: an hourly task's hour, a monthly one's month).
    ``rows`` is a one-pass iterator of tuples, in the order of ``source_columns``, read from the database
    ``read_batch_rows`` at a time through a server-side cursor; the function may return a list or yield its
    rows, which go to a temporary file and then to one COPY. So memory stays bounded by a batch (plus whatever
    the function itself keeps, e.g. one entry per group), not by the partition. For a transform that SQL can
    say, ``SqlTransformPartition`` does it in the server.
    """

    read_batch_rows: ClassVar[int] = 10_000

    @staticmethod
    def transform(rows: Iterator[tuple[Any, ...]], date: datetime.date) -> Iterable[Sequence[Any]]:
        raise NotImplementedError

    def source_part(self) -> UpstreamRows:
        return UpstreamRows(self.upstream_of(self.partition_value), tuple(self.source_columns), self.transform,
                            self.partition_value, self.target_columns, self.load_section(), self.read_batch_rows,
                            self.task_family)


class SqlTransformPartition(UpstreamPartition):
    """A transform that the database runs: ``INSERT ... SELECT`` of a declared query, in the same transaction.

    Declare what ``UpstreamPartition`` takes and, instead of a function, a ``query``: a
    ``psycopg2.sql.Composable`` SELECT over the relation ``upstream`` (the upstream partition, its
    ``source_columns`` only), whose columns are ``columns`` in order. Values come in as named placeholders,
    never as text: ``sql.Placeholder("date")`` is the partition's first date (``stop`` the date after its last),
    and ``query_parameters()`` may add more; names are ``sql.Identifier``. E.g.::

        query = sql.SQL("SELECT {}, account, count(*) FROM upstream GROUP BY account").format(sql.Placeholder("date"))

    No row passes through Python: rows go from the upstream table to this one inside the server.
    """

    query: ClassVar[sql.Composable | None] = None

    def query_parameters(self) -> dict[str, Any]:
        """Hook: values for the query's ``sql.Placeholder(name)``s besides ``date`` and ``stop``."""
        return {}

    def source_part(self) -> UpstreamQuery:
        return UpstreamQuery(self.upstream_of(self.partition_value), tuple(self.source_columns),
                             declared_query(self.query, self.task_family), self.query_parameters(), self.target_columns,
                             self.task_family)
