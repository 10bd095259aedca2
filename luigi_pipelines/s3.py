"""S3 access: a boto3 client from the ``[s3]`` section, listing a partition's objects and downloading one to a file."""
from __future__ import annotations

import bisect
import dataclasses
import logging
import os
import time
from collections.abc import Callable, Hashable, Iterator, Sequence
from dataclasses import asdict, dataclass
from typing import IO, Any

import boto3
import botocore.config
import botocore.exceptions
import urllib3.exceptions
from boto3.s3.transfer import TransferConfig
from s3transfer.exceptions import S3DownloadFailedError
from s3transfer.manager import TransferManager
from s3transfer.subscribers import BaseSubscriber

from .errors import SourceError
from .partitions import KeyFilter
from .settings import S3Settings

logger = logging.getLogger("luigi-interface.luigi_pipelines.s3")  # shown with luigi's own log
# Environment variables boto3 reads when it builds a client (the shared-client cache keys on them).
_SHARED: dict[tuple, S3Client] = {}
_SESSIONS: dict[tuple, boto3.session.Session] = {}
_MB = 1024 * 1024
_PAGE = 1000  # keys per listing request: S3's maximum
_EVERY_DATA_KEY = KeyFilter()
# How long an existence check may answer from an earlier listing (``take_answer``).
EXISTENCE_MAX_AGE_S = 60.0
_PARENT_PAGES = 10  # pages of a parent's listing (``absent``) beyond which it is not used


@dataclass(frozen=True)
class S3Object:
    """One listed source object; its ETag (and version id) pin exactly what was loaded."""

    bucket: str
    key: str
    size: int
    etag: str
    version_id: str | None = None

    @property
    def url(self) -> str:
        return f"s3://{self.bucket}/{self.key}"

    def as_marker(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if k != "bucket"}


@dataclass(frozen=True)
class Listing:
    """What a listing of a partition's prefix found: its data objects, and the keys that look like data but that
    the task's ``keys`` leave out (``KeyFilter.left_out``)."""

    objects: list[S3Object]
    left_out: list[str]


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
        """The process's client for ``settings``, made on first use.

        Building a boto3 client costs ~80 ms of CPU; a backfill asks for one per date twice (the
        existence check and the load), which dominated scheduling. boto3 clients are thread-safe,
        so one per (process, settings) is kept. This is the package's only process-wide cache: it
        holds no data, is keyed by everything that shapes the client, and is never made at import.
        """
        key = (os.getpid(), settings, _aws_environment())
        client = _SHARED.get(key)
        if client is None:
            client = _SHARED[key] = cls(settings)
        return client

    def _make_client(self) -> Any:
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
        self, bucket: str, prefix: str, keys: KeyFilter = _EVERY_DATA_KEY, page_size: int = _PAGE
    ) -> list[S3Object]:
        """The data objects under ``prefix`` (all pages), sorted by key: what ``keys`` does not skip."""
        return self.list_partition(bucket, prefix, keys, page_size).objects

    def list_partition(
        self, bucket: str, prefix: str, keys: KeyFilter = _EVERY_DATA_KEY, page_size: int = _PAGE
    ) -> Listing:
        """``list_objects``, and the keys that look like data but that ``keys`` leave out (``KeyFilter.left_out``).

        A key ending in ``/`` that holds bytes is neither a folder marker nor a file name; it is
        refused rather than skipped, so its bytes are never silently left out.
        """
        found, left_out, skipped = [], [], 0
        for item in self._listing(bucket, prefix, page_size):
            key, size = item["Key"], item["Size"]
            reason = keys.skip_reason(prefix, key, size)
            if reason is not None:
                logger.debug("s3://%s/%s: not data, skipped: %s", bucket, key, reason)
                skipped += 1
                if keys.left_out(prefix, key, size):
                    left_out.append(key)
            elif key.endswith("/"):
                raise SourceError(f"s3://{bucket}/{key}: a key ending in '/' holds {size} bytes: it is neither a "
                                  f"folder marker nor a file name; rename or delete it, then rerun")
            else:
                found.append(S3Object(bucket, key, size, item["ETag"].strip('"')))
        if skipped > len(left_out):
            logger.info("s3://%s/%s: %d listed keys are not data (folder markers, %s) and were skipped",
                        bucket, prefix, skipped - len(left_out), ", ".join(keys.skip) or "no names")
        return Listing(sorted(found, key=lambda o: o.key), sorted(left_out))

    def has_objects(self, bucket: str, prefix: str, keys: KeyFilter = _EVERY_DATA_KEY, page_size: int = _PAGE) -> bool:
        """Whether ``list_objects`` would find something under ``prefix``: pages are read until the first
        key that ``keys`` does not skip, so folder markers or ``_SUCCESS`` listed first hide nothing.

        A refused key (bytes under a name ending in ``/``) counts, so the load runs and says why it fails.
        """
        for item in self._listing(bucket, prefix, page_size):
            reason = keys.skip_reason(prefix, item["Key"], item["Size"])
            if reason is None:
                return True
            logger.debug("s3://%s/%s: not data, skipped: %s", bucket, item["Key"], reason)
        return False

    def forget_existence(self) -> None:
        """Forget what earlier existence checks learnt (``note_answer``)."""
        self._answers.clear()

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

    def survey(self, bucket: str, prefixes: Sequence[str], keys: KeyFilter = _EVERY_DATA_KEY, ready_key: str = ""
               ) -> dict[str, bool] | None:
        """Which of ``prefixes`` hold data (a key that ``keys`` does not skip; with ``ready_key``, that key),
        as ``has_objects`` (``exists``) would say of each, from one listing of the keys from the first prefix to
        the last. Worth it while it takes fewer pages than there are prefixes (e.g. 365 dates of a few objects:
        one request): past ``len(prefixes) // 4`` pages it gives up and returns None."""
        wanted = sorted(set(prefixes))
        if len(wanted) < 2:
            return None
        found = dict.fromkeys(wanted, False)
        # (no StartAfter before the first prefix: SeaweedFS skips a whole folder named by it)
        common, last = os.path.commonprefix(wanted), wanted[-1]
        more: dict[str, str] = {}
        try:
            for _ in range(max(1, len(wanted) // 4)):
                reply = self.client.list_objects_v2(Bucket=bucket, Prefix=common, MaxKeys=_PAGE, **more)
                items = reply.get("Contents", [])
                for item in items:
                    _mark_found(found, wanted, item["Key"], item["Size"], keys, ready_key)
                beyond = bool(items) and items[-1]["Key"] > last and not items[-1]["Key"].startswith(last)
                if beyond or not reply.get("IsTruncated") and len(items) < _PAGE:
                    return found
                more = ({"ContinuationToken": reply["NextContinuationToken"]} if reply.get("IsTruncated")
                        else {"StartAfter": items[-1]["Key"]})  # a full last page: see _listing
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
            raise SourceError(f"s3://{bucket}/{common}: cannot list objects: {exc}") from exc
        return None

    def absent(self, bucket: str, prefixes: Sequence[str]) -> list[str]:
        """Those of ``prefixes`` with no key at all, from one listing of each parent (a prefix up to its last
        inner ``/``) with ``Delimiter='/'``: one request per 1,000 names one level below it (such as a
        thousand dates' folders), whatever the prefixes hold. A parent too big to list (over
        ``_PARENT_PAGES`` pages) tells nothing."""
        by_parent: dict[str, list[str]] = {}
        for prefix in prefixes:
            by_parent.setdefault(prefix[: prefix.rstrip("/").rfind("/") + 1], []).append(prefix)
        empty = []
        for parent, below in by_parent.items():
            children = self._children(bucket, parent)
            if children is not None:
                empty += [prefix for prefix in below if children.none_under(prefix, len(parent))]
        return empty

    def _children(self, bucket: str, parent: str) -> _Children | None:
        """The keys and common prefixes one level below ``parent``; None past ``_PARENT_PAGES`` pages, or when
        a full last page leaves doubt (see ``_listing``)."""
        names: list[str] = []
        folders: set[str] = set()
        more: dict[str, str] = {}
        try:
            for _ in range(_PARENT_PAGES):
                reply = self.client.list_objects_v2(Bucket=bucket, Prefix=parent, Delimiter="/", MaxKeys=_PAGE, **more)
                keys = [item["Key"] for item in reply.get("Contents", [])]
                common = [item["Prefix"] for item in reply.get("CommonPrefixes", [])]
                names += keys + common
                folders.update(common)
                if reply.get("IsTruncated"):
                    more = {"ContinuationToken": reply["NextContinuationToken"]}
                elif len(keys) + len(common) >= _PAGE:
                    return None
                else:
                    return _Children(sorted(names), folders)
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
            raise SourceError(f"s3://{bucket}/{parent}: cannot list objects: {exc}") from exc
        return None

    def _listing(self, bucket: str, prefix: str, page_size: int) -> Iterator[dict[str, Any]]:
        """Every listed item under ``prefix``, page after page, as the server gives them (folder markers too).

        SeaweedFS (4.48) says a listing is complete when a full page ends on a folder marker, even with
        keys below it; such a page is therefore followed by one more request from after its last key.
        """
        more: dict[str, str] = {}
        try:
            while True:
                reply = self.client.list_objects_v2(Bucket=bucket, Prefix=prefix, MaxKeys=page_size, **more)
                items = reply.get("Contents", [])
                yield from items
                if reply.get("IsTruncated"):
                    more = {"ContinuationToken": reply["NextContinuationToken"]}
                elif len(items) == page_size and items[-1]["Key"].endswith("/"):
                    more = {"StartAfter": items[-1]["Key"]}
                else:
                    return
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
            raise SourceError(f"s3://{bucket}/{prefix}: cannot list objects: {exc}") from exc

    def exists(self, bucket: str, key: str) -> bool:
        """Whether the object ``key`` exists (one HEAD request)."""
        try:
            self.client.head_object(Bucket=bucket, Key=key)
        except botocore.exceptions.ClientError as exc:
            if str(exc.response.get("Error", {}).get("Code")) in ("404", "NoSuchKey", "NotFound"):
                return False
            raise SourceError(f"s3://{bucket}/{key}: {exc}") from exc
        except botocore.exceptions.BotoCoreError as exc:
            raise SourceError(f"s3://{bucket}/{key}: {exc}") from exc
        return True

    def download(self, obj: S3Object, fileobj: IO[bytes], on_flushed: Callable[[int], None] | None = None) -> S3Object:
        """Write the object's bytes to ``fileobj``; returns the object as fetched (with its version id
        when the bucket is versioned).

        The download is pinned to the listed ETag, in both modes, so an object replaced or deleted
        since it was listed fails clearly instead of loading data that does not match the marker.
        With one streamed GET, ``on_flushed(total)`` is called after each chunk is written and
        flushed, so a reader can follow the file as it grows, and a stream that breaks mid-read is
        resumed from the byte it reached (s3transfer retries its ranged GETs itself).
        """
        start = fileobj.tell()
        try:
            # below the threshold s3transfer would make one GET too, but without IfMatch
            if self.single_get or obj.size < self.settings.multipart_threshold_mb * _MB:
                fetched = self._download_single(obj, fileobj, on_flushed)
            else:
                fetched = self._download_managed(obj, fileobj)
        except botocore.exceptions.ClientError as exc:
            raise SourceError(f"{obj.url}: {_describe_client_error(exc)}") from exc
        except S3DownloadFailedError as exc:  # s3transfer's wrapper around the failed GET
            cause = exc.__cause__ or exc.__context__
            reason = _describe_client_error(cause) if isinstance(cause, botocore.exceptions.ClientError) else str(exc)
            raise SourceError(f"{obj.url}: {reason}") from exc
        except botocore.exceptions.BotoCoreError as exc:
            raise SourceError(f"{obj.url}: download failed: {exc}") from exc
        # ranged GETs may finish (and write) in any order: measure the file, not the position
        written = fileobj.seek(0, os.SEEK_END) - start
        if written != obj.size:
            raise SourceError(f"{obj.url}: downloaded {written} bytes, listing said {obj.size}")
        return fetched

    def _download_single(
        self, obj: S3Object, fileobj: IO[bytes], on_flushed: Callable[[int], None] | None
    ) -> S3Object:
        """One streamed GET pinned to the listed ETag. A body stream that breaks mid-read is resumed from
        the byte it reached (``Range: bytes=N-`` with the same ``IfMatch``), in at most ``max_attempts``
        GETs in all, each resumption logged as a warning; as s3transfer does, but without fetching
        again what is already written (and already read by COPY)."""
        attempts = max(1, self.settings.max_attempts)
        written, version_id = 0, None
        for attempt in range(1, attempts + 1):
            reply = self._get_from(obj, written)
            version_id = version_id or reply.get("VersionId")
            try:
                written = self._write_body(reply["Body"], fileobj, written, on_flushed)
                break
            except _StreamBroken as broken:
                written = broken.written
                if written == obj.size:  # it broke after the last byte: nothing is missing
                    break
                if attempt == attempts:
                    raise SourceError(f"{obj.url}: download failed: the stream broke {attempts} times, the last after "
                                      f"{written} of {obj.size} bytes: {broken.reason}") from broken.cause
                logger.warning("%s: the download broke after %d of %d bytes (%s); resuming from byte %d, attempt %d of %d",
                               obj.url, written, obj.size, broken.reason, written, attempt + 1, attempts)
        return dataclasses.replace(obj, version_id=version_id)

    def _get_from(self, obj: S3Object, start: int) -> dict[str, Any]:
        """GET the listed version of ``obj`` from byte ``start`` on."""
        if not start:
            return self.client.get_object(Bucket=obj.bucket, Key=obj.key, IfMatch=obj.etag)
        try:
            reply = self.client.get_object(Bucket=obj.bucket, Key=obj.key, IfMatch=obj.etag, Range=f"bytes={start}-")
        except botocore.exceptions.BotoCoreError as exc:  # (a ClientError, e.g. ETag changed, is described by download)
            raise SourceError(f"{obj.url}: download failed after {start} of {obj.size} bytes: {exc}") from exc
        content_range = str(reply.get("ContentRange", ""))
        if not content_range.startswith(f"bytes {start}-"):
            reply["Body"].close()
            raise SourceError(f"{obj.url}: the server answered a GET from byte {start} with Content-Range "
                              f"{content_range!r}; the download cannot resume")
        return reply

    def _write_body(self, body: Any, fileobj: IO[bytes], written: int, on_flushed: Callable[[int], None] | None) -> int:
        """Append ``body`` to ``fileobj``; returns the total written so far. A stream that breaks raises
        ``_StreamBroken``; an error of ``fileobj`` or ``on_flushed`` (a full disk, a cancel) passes unchanged."""
        chunk_size = self.settings.read_chunk_kb * 1024
        with body:  # (StreamingBody's __enter__ returns the raw stream, so ``body`` itself is read)
            while True:
                try:
                    chunk = body.read(chunk_size)  # b"" at the end, after botocore checked the length
                except _STREAM_BREAKS as exc:
                    raise _StreamBroken(written, exc) from exc
                if not chunk:
                    return written
                fileobj.write(chunk)
                written += len(chunk)
                if on_flushed is not None:
                    fileobj.flush()
                    on_flushed(written)

    def _download_managed(self, obj: S3Object, fileobj: IO[bytes]) -> S3Object:
        config = TransferConfig(
            multipart_threshold=self.settings.multipart_threshold_mb * _MB,
            multipart_chunksize=self.settings.multipart_chunksize_mb * _MB,
            max_concurrency=self.settings.max_concurrency,
        )
        # Handing s3transfer the listed size and ETag skips its own HEAD request and makes every
        # ranged GET carry IfMatch with the *listed* ETag (not one it read later itself).
        with TransferManager(self.client, config) as manager:
            future = manager.download(obj.bucket, obj.key, fileobj, subscribers=[_KnownObject(obj)])
            future.result()
        return obj


@dataclass(frozen=True)
class _Children:
    """What a delimited listing of a parent prefix found: keys and common prefixes (sorted), the latter as a set."""

    names: list[str]
    folders: set[str]

    def none_under(self, prefix: str, parent_length: int) -> bool:
        """Whether no key starts with ``prefix``: no name starts with it, and no common prefix is a folder
        of it (``prefix`` may lie deeper than one level below the parent)."""
        at = bisect.bisect_left(self.names, prefix)
        if at < len(self.names) and self.names[at].startswith(prefix):
            return False
        return not any(prefix[: n + 1] in self.folders for n in range(parent_length, len(prefix)) if prefix[n] == "/")


class _StreamBroken(Exception):
    """A GET's body stream broke after ``written`` bytes of the object were in the file."""

    def __init__(self, written: int, cause: BaseException) -> None:
        super().__init__(written, cause)
        self.written = written
        self.cause = cause

    @property
    def reason(self) -> str:
        """e.g. ``IncompleteReadError: 199456 read, but total bytes expected is 1148899.`` (counts of this GET)."""
        return f"{type(self.cause).__name__}: {self.cause}"


# What reading a body raises when its connection breaks or stalls: botocore wraps urllib3's errors in
# ReadTimeoutError and ResponseStreamingError and checks the length itself (IncompleteReadError).
_STREAM_BREAKS = (
    botocore.exceptions.ReadTimeoutError,
    botocore.exceptions.ResponseStreamingError,
    botocore.exceptions.IncompleteReadError,
    urllib3.exceptions.ProtocolError,
    ConnectionError,
    TimeoutError,
)


class _KnownObject(BaseSubscriber):
    """Tells s3transfer the size and ETag from the listing before it starts."""

    def __init__(self, obj: S3Object) -> None:
        self.obj = obj

    def on_queued(self, future: Any, **kwargs: Any) -> None:
        future.meta.provide_transfer_size(self.obj.size)
        future.meta.provide_object_etag(f'"{self.obj.etag}"')


def _mark_found(found: dict[str, bool], wanted: list[str], key: str, size: int, keys: KeyFilter, ready_key: str) -> None:
    """Mark the prefixes of ``wanted`` (sorted; the keys of ``found``) under which ``key`` is data (or is the
    ready key). The nearest prefix before the key is one; any other is a prefix of what it shares with the key."""
    at = bisect.bisect_right(wanted, key)
    if not at:
        return
    nearest = wanted[at - 1]
    shared = os.path.commonprefix([nearest, key])
    for prefix in {nearest, *(shared[:n] for n in range(1, len(shared) + 1) if shared[:n] in found)}:
        if key.startswith(prefix) and (key == prefix + ready_key if ready_key else
                                       keys.skip_reason(prefix, key, size) is None):
            found[prefix] = True


def _aws_environment() -> tuple[tuple[str, str], ...]:
    return tuple(sorted((k, v) for k, v in os.environ.items() if k.startswith("AWS_")))


def _session() -> boto3.session.Session:
    """One boto3 session per AWS environment, kept across ``fork``.

    A session caches botocore's parsed service models: a client built from a fresh session costs
    50-75 ms of CPU, from a warm one 3-9 ms. luigi runs each task of a multi-worker run in a forked
    child, which inherits the parent's warm session (clients themselves are made per process).
    """
    key = _aws_environment()
    session = _SESSIONS.get(key)
    if session is None:
        session = _SESSIONS[key] = boto3.session.Session()
    return session


def _describe_client_error(exc: botocore.exceptions.ClientError) -> str:
    code = str(exc.response.get("Error", {}).get("Code", ""))
    if code in ("NoSuchKey", "404", "NotFound"):
        return "the object was deleted after it was listed"
    if code in ("PreconditionFailed", "412"):
        return "the object was replaced after it was listed (ETag changed)"
    return f"download failed: {exc}"
