"""Partition tasks whose source is S3 objects: ``LoadPartition`` (any grain, replaced or merged by key), and the
names kept for two of its combinations, ``LoadHourlyPartition`` and ``MergePartition``."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import luigi

from . import sql as q
from .config import s3_settings
from .db import PartitionTransaction, SupportsRead
from .errors import ConfigurationError, PipelineError
from .grains import HOURLY, Hourly
from .layouts import Lineage
from .objects import CsvDecoder, Decoder, ObjectRecord
from .partitions import CONVENTIONAL_SKIPS, KeyFilter, key_prefix
from .s3 import S3Client, S3Object
from .sources import S3Load, S3Objects, s3_changes
from .tasks import PartitionTask


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
    """Load one partition's S3 objects into PostgreSQL with COPY, exactly once.

    Declare ``bucket``, ``key_prefix`` (a template with ``{date}``, e.g. ``"transactions/{date:%Y-%m-%d}/"``;
    an hourly task's gets the hour, a monthly one's the month's first date), ``table``, ``columns``,
    ``date_column`` and, if the files differ from the defaults, ``csv`` or a ``decoder``. Objects ending in
    ``.gz`` are decompressed on the fly. ``keys`` and ``skip_keys`` select the data objects among the keys under
    the prefix (``KeyFilter``). With ``merge_key`` the rows are merged by key (``MergePartition``).
    """

    bucket: ClassVar[str] = ""
    key_prefix: ClassVar[str] = ""
    csv: ClassVar[q.CsvFormat] = q.CsvFormat()
    decoder: ClassVar[Decoder | None] = None  # how objects become COPY input; default: CsvDecoder(csv)
    max_bad_rows = luigi.IntParameter(
        default=0, significant=False,
        positional=False,  # the partition's value stays the first positional parameter, for luigi's ranges
        description="quarantine mode: up to this many bad rows per partition go to the rejects table and the "
        "good rows load; more fail the load. 0 (the default) is strict: any bad row fails it")
    # A key the producer writes last (e.g. "_SUCCESS"): a partition loads only once it exists, so files still
    # arriving are never left out. Without it a partition loads as soon as any object is there.
    ready_key: ClassVar[str] = ""
    empty_partition_ok: ClassVar[bool] = False  # no objects: missing data (False) or 0 rows (True)
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
        """The partition's key prefix; one cut inside a name needs ``keys`` to say which names are data."""
        return self.read_once("prefix", lambda: self.prefix_of(self.partition_value))

    def prefix_of(self, value: Any) -> str:
        """The key prefix of the partition ``value``."""
        if not self.source_bucket or "{date" not in self.key_prefix:
            raise ConfigurationError(f"{self.task_family} must declare bucket and a key_prefix containing {{date...}}")
        prefix = key_prefix(self.key_prefix, self.grain.template_value(value))
        if not prefix.endswith("/") and not self.keys:
            raise ConfigurationError(
                f"{self.task_family}: key_prefix {self.key_prefix!r} gives {prefix!r}, which does not end at '/', so "
                f"it also lists keys such as {prefix}_old.csv or {prefix}.csv.bak: end it with '/' or declare "
                f"keys = (...), fnmatch globs of the data keys after the prefix (e.g. ('.csv',))")
        return prefix

    @property
    def key_filter(self) -> KeyFilter:
        return KeyFilter(tuple(self.keys), tuple(self.skip_keys))

    @property
    def source_bucket(self) -> str:
        """``bucket`` (read once within ``reading_config_once``: a pipeline may read it from its config)."""
        return self.read_once("bucket", lambda: self.bucket)

    @property
    def checks_sources(self) -> bool:
        """Whether the load depends on ``S3PartitionExists`` (not when an empty partition is fine and no ready key)."""
        return not (self.empty_partition_ok and not self.ready_key)

    def requires(self) -> Any:
        if not self.checks_sources:
            return []
        with self.reading_config_once():  # luigi asks this several times per partition while scheduling
            return S3PartitionExists(bucket=self.source_bucket, prefix=self.prefix, ready_key=self.ready_key,
                                     keys=tuple(self.keys), skip_keys=tuple(self.skip_keys))

    def lineage_columns(self) -> Lineage:
        return self.lineage

    def objects_of(self, value: Any) -> S3Objects:
        """The data objects of the partition ``value`` (listed when asked)."""
        return S3Objects(self.s3_client(), self.source_bucket, self.prefix_of(value), self.key_filter, self.ready_key,
                         self.empty_partition_ok, snapshot=self.is_merge and self.snapshot)

    def source_part(self) -> S3Load:
        return S3Load(self.objects_of(self.partition_value), self.decoder or CsvDecoder(self.csv), self.target_columns,
                      self.load_section(), self, int(self.max_bad_rows), self.empty_objects_ok, self.lineage.key,
                      self.declared.contract)

    def source_changes(self, recorded: Sequence[tuple[Any, list[dict[str, Any]]]]) -> dict[Any, str]:
        """How each partition's objects differ from its marker's: one listing per partition, e.g. ``"1 added (d/b.csv)"``."""
        return s3_changes(recorded, self.objects_of)

    def absent_ready_keys(self, values: Sequence[Any]) -> dict[Any, str]:
        """Of ``values`` (not loaded), those waiting for the ready key, with its URL: one HEAD each."""
        if not self.ready_key:
            return {}
        absent = {value: self.objects_of(value).absent_ready_key() for value in values}
        return {value: why for value, why in absent.items() if why}

    def learn_sources(self, values: Sequence[Any]) -> None:
        """Of a range of partitions not loaded, which have S3 data, for their ``S3PartitionExists`` checks: one
        listing of all their keys when that is short (``S3Client.survey``), else one listing of their parent
        prefix, which tells the ones with no key at all (``S3Client.absent``); instead of one listing each."""
        if len(values) < 2 or not self.checks_sources:
            return
        try:
            prefixes = [self.prefix_of(value) for value in values]
        except PipelineError:
            return  # a declaration error: requires() reports it
        s3 = S3Client.shared(s3_settings())
        surveyed = s3.survey(self.bucket, prefixes, self.key_filter, self.ready_key)
        answers = surveyed if surveyed is not None else dict.fromkeys(s3.absent(self.bucket, prefixes), False)
        for prefix, found in answers.items():  # data found: for the scheduling check and the one before the load
            s3.note_answer(S3PartitionExists.question(self.bucket, prefix, self.ready_key, self.keys, self.skip_keys),
                           found, uses=2 if found else 1)

    def prepared(self, conn: Any) -> None:
        """A partition whose rows take their date (or hour) from the key needs a prefix of its own; the S3 client is
        built here, not under the lock."""
        unit = "date" if self.grain.unit == "day" else self.grain.unit
        if (self.date_from.filled or self.grain.key_columns()) and not self.grain.prefixes_apart(self.key_prefix):
            raise ConfigurationError(
                f"{self.task_family}: key_prefix {self.key_prefix!r} does not give every {unit} a prefix of "
                f"its own (one that starts no other's), so rows would be given the wrong {unit}"
                + (": name the hour, e.g. '{date:%Y/%m/%d/%H}/'" if self.grain.unit == "hour" else ""))
        self.s3_client()

    def failed_source(self) -> str | None:
        return self._source.objects.in_progress if isinstance(self._source, S3Load) else None

    def failed_url(self) -> str | None:
        key = self.failed_source()
        return f"s3://{self.bucket}/{key}" if key else None

    # -- hooks: override these -------------------------------------------------------------------

    def s3_client(self) -> S3Client:
        """Hook: the S3 client of this process for the ``[s3]`` settings (a test may wrap it)."""
        return S3Client.shared(s3_settings())

    def before_copy(self, tx: PartitionTransaction) -> None:
        """Hook: in the transaction, after the partition's old rows are deleted (or the stage made), before the
        first object."""

    def before_object(self, tx: PartitionTransaction, obj: S3Object) -> None:
        """Hook: before ``obj`` is downloaded and copied."""

    def source_stream(self, obj: S3Object, stream: SupportsRead) -> SupportsRead:
        """Hook: what COPY reads for ``obj`` (decoded bytes); return it or a wrapper around it."""
        return stream

    def after_object(self, tx: PartitionTransaction, record: ObjectRecord) -> None:
        """Hook: ``obj`` is copied; ``record`` says what it added (``tx.rows`` includes it)."""


class LoadHourlyPartition(LoadPartition):
    """``LoadPartition`` by the hour: ``grain = HOURLY`` (``--date-hour 2019-02-01T13``, ``RangeHourly``), with the
    hour's column named by ``hour_column`` (default ``hour``; see ``grains.Hourly``)."""

    grain = HOURLY
    hour_column: ClassVar[str] = "hour"

    def __init_subclass__(cls, **kwargs: Any) -> None:
        if "hour_column" in cls.__dict__:
            cls.grain = Hourly(cls.hour_column)
        super().__init_subclass__(**kwargs)


class MergePartition(LoadPartition):
    """``LoadPartition`` merged by key: declare ``merge_key`` (and optionally ``snapshot``, ``deleted_flag``), no
    ``date_column`` (see ``writes.Merge``). Any grain; merges of one table run one at a time, oldest first."""

    merged = True
