"""Downloading one listed S3 object to a file, pinned to its listed ETag: one streamed GET that resumes a broken
stream from the byte it reached, or s3transfer's ranged GETs; errors that say what happened to the object."""
from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Callable
from typing import IO, Any

import botocore.exceptions
import urllib3.exceptions
from boto3.s3.transfer import TransferConfig
from s3transfer.exceptions import S3DownloadFailedError
from s3transfer.manager import TransferManager
from s3transfer.subscribers import BaseSubscriber

from ..errors import SourceError
from ..settings import S3Settings
from .listing import S3Object

logger = logging.getLogger("luigi-interface.luigi_pipelines.s3")  # shown with luigi's own log
_MB = 1024 * 1024


def download(client: Any, settings: S3Settings, single_get: bool, obj: S3Object, fileobj: IO[bytes],
             on_flushed: Callable[[int], None] | None = None) -> S3Object:
    """Write the object's bytes to ``fileobj`` (with one streamed GET if ``single_get``, or if it is below the
    multipart threshold); returns the object as fetched (with its version id when the bucket is versioned).
    See ``S3Client.download``."""
    start = fileobj.tell()
    try:
        # below the threshold s3transfer would make one GET too, but without IfMatch
        if single_get or obj.size < settings.multipart_threshold_mb * _MB:
            fetched = _download_single(client, settings, obj, fileobj, on_flushed)
        else:
            fetched = _download_managed(client, settings, obj, fileobj)
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


def _download_single(client: Any, settings: S3Settings, obj: S3Object, fileobj: IO[bytes],
                     on_flushed: Callable[[int], None] | None) -> S3Object:
    """One streamed GET pinned to the listed ETag. A body stream that breaks mid-read is resumed from
    the byte it reached (``Range: bytes=N-`` with the same ``IfMatch``), in at most ``max_attempts``
    GETs in all, each resumption logged as a warning; as s3transfer does, but without fetching
    again what is already written (and already read by COPY)."""
    attempts = max(1, settings.max_attempts)
    written, version_id = 0, None
    for attempt in range(1, attempts + 1):
        reply = _get_from(client, obj, written)
        version_id = version_id or reply.get("VersionId")
        try:
            written = _write_body(reply["Body"], fileobj, written, settings.read_chunk_kb * 1024, on_flushed)
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


def _get_from(client: Any, obj: S3Object, start: int) -> dict[str, Any]:
    """GET the listed version of ``obj`` from byte ``start`` on."""
    if not start:
        return client.get_object(Bucket=obj.bucket, Key=obj.key, IfMatch=obj.etag)
    try:
        reply = client.get_object(Bucket=obj.bucket, Key=obj.key, IfMatch=obj.etag, Range=f"bytes={start}-")
    except botocore.exceptions.BotoCoreError as exc:  # (a ClientError, e.g. ETag changed, is described by download)
        raise SourceError(f"{obj.url}: download failed after {start} of {obj.size} bytes: {exc}") from exc
    content_range = str(reply.get("ContentRange", ""))
    if not content_range.startswith(f"bytes {start}-"):
        reply["Body"].close()
        raise SourceError(f"{obj.url}: the server answered a GET from byte {start} with Content-Range "
                          f"{content_range!r}; the download cannot resume")
    return reply


def _write_body(body: Any, fileobj: IO[bytes], written: int, chunk_size: int,
                on_flushed: Callable[[int], None] | None) -> int:
    """Append ``body`` to ``fileobj``; returns the total written so far. A stream that breaks raises
    ``_StreamBroken``; an error of ``fileobj`` or ``on_flushed`` (a full disk, a cancel) passes unchanged."""
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


def _download_managed(client: Any, settings: S3Settings, obj: S3Object, fileobj: IO[bytes]) -> S3Object:
    config = TransferConfig(
        multipart_threshold=settings.multipart_threshold_mb * _MB,
        multipart_chunksize=settings.multipart_chunksize_mb * _MB,
        max_concurrency=settings.max_concurrency,
    )
    # Handing s3transfer the listed size and ETag skips its own HEAD request and makes every
    # ranged GET carry IfMatch with the *listed* ETag (not one it read later itself).
    with TransferManager(client, config) as manager:
        future = manager.download(obj.bucket, obj.key, fileobj, subscribers=[_KnownObject(obj)])
        future.result()
    return obj


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


def _describe_client_error(exc: botocore.exceptions.ClientError) -> str:
    code = str(exc.response.get("Error", {}).get("Code", ""))
    if code in ("NoSuchKey", "404", "NotFound"):
        return "the object was deleted after it was listed"
    if code in ("PreconditionFailed", "412"):
        return "the object was replaced after it was listed (ETag changed)"
    return f"download failed: {exc}"
