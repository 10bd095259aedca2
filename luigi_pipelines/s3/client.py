"""The S3 client: one boto3 client from the ``[s3]`` section (one per process and settings, ``S3Client.shared``)
that lists, probes and downloads with errors that name the object, and remembers for a short while what a
listing showed to existence checks."""
from __future__ import annotations

import os
import time
from collections.abc import Callable, Hashable, Sequence
from typing import IO, TYPE_CHECKING, Any

from .. import runtime
from ..partitions import KeyFilter
from ..settings import S3Settings
from . import listing
from .listing import EVERY_DATA_KEY, PAGE, Listing, S3Object

if TYPE_CHECKING:
    import boto3

# How long an existence check may answer from an earlier listing (``take_answer``).
EXISTENCE_MAX_AGE_S = 60.0


class S3Client:
    """A thin wrapper over one boto3 client: list, probe and download, with errors that name the object."""

    def __init__(self, settings: S3Settings, client: Any = None) -> None:
        self.settings = settings
        self.client = client or self._make_client()
        # For existence checks only, never for what a load loads: what a listing showed, by the question
        # an existence check asks: (when, found, how many more checks may use it).
        self._answers: dict[Hashable, tuple[float, bool, int]] = {}

    @classmethod
    def shared(cls, settings: S3Settings) -> S3Client:
        """The process's client for ``settings``, made on first use (kept in ``runtime``, like every value the
        package reuses across tasks).

        Building a boto3 client costs ~80 ms of CPU; a backfill asks for one per date twice (the
        existence check and the load), which dominated scheduling. boto3 clients are thread-safe,
        so one per (process, settings) is kept. It holds no data, is keyed by everything that shapes
        the client, and is never made at import; a forked child makes its own.
        """
        clients = _CLIENTS.get()
        key = (settings, _aws_environment())
        client = clients.get(key)
        if client is None:
            client = clients[key] = cls(settings)
        return client

    def _make_client(self) -> Any:
        import botocore.config  # with boto3 (``_session``): only a process that reaches S3 imports them

        cfg = botocore.config.Config(
            retries={"max_attempts": self.settings.max_attempts, "mode": "standard"},
            connect_timeout=self.settings.connect_timeout,
            read_timeout=self.settings.read_timeout,
            max_pool_connections=max(10, self.settings.max_concurrency),
            s3={"addressing_style": self.settings.addressing_style},
        )
        return _session().client("s3", config=cfg, **self.settings.client_kwargs())

    @property
    def single_get(self) -> bool:
        """Whether to download with one streamed GET (see ``[s3] download_mode``).

        boto3's managed download splits large objects into ranged GETs; a local or self-hosted
        endpoint (moto reads the whole object for every range) gets much slower that way, while AWS
        gets faster. ``auto`` therefore picks one plain GET whenever an endpoint URL is configured.
        """
        mode = self.settings.download_mode
        if mode == "auto":
            return bool(self.client.meta.endpoint_url and "amazonaws.com" not in self.client.meta.endpoint_url)
        return mode == "single"

    def list_objects(
        self, bucket: str, prefix: str, keys: KeyFilter = EVERY_DATA_KEY, page_size: int = PAGE
    ) -> list[S3Object]:
        """The data objects under ``prefix`` (all pages), sorted by key: what ``keys`` does not skip."""
        return self.list_partition(bucket, prefix, keys, page_size).objects

    def list_partition(
        self, bucket: str, prefix: str, keys: KeyFilter = EVERY_DATA_KEY, page_size: int = PAGE
    ) -> Listing:
        """``list_objects``, and the keys that look like data but that ``keys`` leave out (``listing.list_partition``)."""
        return listing.list_partition(self.client, bucket, prefix, keys, page_size)

    def has_objects(self, bucket: str, prefix: str, keys: KeyFilter = EVERY_DATA_KEY, page_size: int = PAGE) -> bool:
        """Whether ``list_objects`` would find something under ``prefix`` (``listing.has_objects``)."""
        return listing.has_objects(self.client, bucket, prefix, keys, page_size)

    def survey(self, bucket: str, prefixes: Sequence[str], keys: KeyFilter = EVERY_DATA_KEY, ready_key: str = "",
               page_size: int = PAGE) -> dict[str, bool] | None:
        """Which of ``prefixes`` hold data, from one listing from the first to the last, or None when that takes
        too many pages (``listing.survey``)."""
        return listing.survey(self.client, bucket, prefixes, keys, ready_key, page_size)

    def absent(self, bucket: str, prefixes: Sequence[str]) -> list[str]:
        """Those of ``prefixes`` with no key at all, from one listing of each parent (``listing.absent``)."""
        return listing.absent(self.client, bucket, prefixes)

    def exists(self, bucket: str, key: str) -> bool:
        """Whether the object ``key`` exists (one HEAD request)."""
        return listing.exists(self.client, bucket, key)

    def note_answer(self, question: Hashable, found: bool, uses: int = 1) -> None:
        """Remember, for the next ``uses`` existence checks asking ``question``, what a listing made now showed."""
        self._answers[question] = (time.monotonic(), found, uses)

    def take_answer(self, question: Hashable) -> bool | None:
        """What ``note_answer`` noted for ``question`` less than ``EXISTENCE_MAX_AGE_S`` ago (one use of it), or
        None: the check must list."""
        at, found, uses = self._answers.pop(question, (0.0, False, 0))
        if not uses or time.monotonic() - at > EXISTENCE_MAX_AGE_S:
            return None
        if uses > 1:
            self._answers[question] = (at, found, uses - 1)
        return found

    def download(self, obj: S3Object, fileobj: IO[bytes], on_flushed: Callable[[int], None] | None = None) -> S3Object:
        """Write the object's bytes to ``fileobj``; returns the object as fetched (with its version id
        when the bucket is versioned).

        The download is pinned to the listed ETag, in both modes, so an object replaced or deleted
        since it was listed fails clearly instead of loading data that does not match the marker.
        With one streamed GET, ``on_flushed(total)`` is called after each chunk is written and
        flushed, so a reader can follow the file as it grows, and a stream that breaks mid-read is
        resumed from the byte it reached (s3transfer retries its ranged GETs itself).
        """
        from . import downloads  # s3transfer's managed downloads, imported with the first download

        return downloads.download(self.client, self.settings, self.single_get, obj, fileobj, on_flushed)


def _aws_environment() -> tuple[tuple[str, str], ...]:
    """The environment variables boto3 reads when it builds a client (the shared clients are keyed on them)."""
    return tuple(sorted((k, v) for k, v in os.environ.items() if k.startswith("AWS_")))


def _session() -> boto3.session.Session:
    """One boto3 session per AWS environment, kept across ``fork``.

    A session caches botocore's parsed service models: a client built from a fresh session costs
    50-75 ms of CPU, from a warm one 3-9 ms. luigi runs each task of a multi-worker run in a forked
    child, which inherits the parent's warm session (clients themselves are made per process). boto3 itself
    is imported here, not with the package: scheduling a load (its existence checks) makes the session in
    the parent, so the forked children inherit the imports too.
    """
    sessions = _SESSIONS.get()
    key = _aws_environment()
    session = sessions.get(key)
    if session is None:
        import boto3.session  # ~0.2 s of imports, paid only by a command that reaches S3

        session = sessions[key] = boto3.session.Session()
    return session


# The process's clients, by (settings, AWS environment); its boto3 sessions, by AWS environment.
_CLIENTS: runtime.Slot[dict[tuple, S3Client]] = runtime.Slot("s3 clients", dict)
_SESSIONS: runtime.Slot[dict[tuple, boto3.session.Session]] = runtime.Slot("boto3 sessions", dict, across_fork=True)
