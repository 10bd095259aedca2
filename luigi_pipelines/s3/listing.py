"""Listing S3: a partition's objects (every page), whether a prefix holds data, and which of many prefixes do, in as
few requests as their keys allow. Functions of one boto3 client; ``S3Client`` offers them as its methods."""
from __future__ import annotations

import bisect
import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import botocore.exceptions

from ..errors import SourceError
from ..partitions import KeyFilter

logger = logging.getLogger("luigi-interface.luigi_pipelines.s3")  # shown with luigi's own log
PAGE = 1000  # keys per listing request: S3's maximum
EVERY_DATA_KEY = KeyFilter()
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


def list_partition(client: Any, bucket: str, prefix: str, keys: KeyFilter, page_size: int) -> Listing:
    """The data objects under ``prefix`` (all pages), sorted by key: what ``keys`` does not skip; and the keys that
    look like data but that ``keys`` leave out (``KeyFilter.left_out``).

    A key ending in ``/`` that holds bytes is neither a folder marker nor a file name; it is
    refused rather than skipped, so its bytes are never silently left out.
    """
    found, left_out, skipped = [], [], 0
    for item in _listing(client, bucket, prefix, page_size):
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


def has_objects(client: Any, bucket: str, prefix: str, keys: KeyFilter, page_size: int) -> bool:
    """Whether ``list_partition`` would find something under ``prefix``: pages are read until the first
    key that ``keys`` does not skip, so folder markers or ``_SUCCESS`` listed first hide nothing.

    A refused key (bytes under a name ending in ``/``) counts, so the load runs and says why it fails.
    """
    for item in _listing(client, bucket, prefix, page_size):
        reason = keys.skip_reason(prefix, item["Key"], item["Size"])
        if reason is None:
            return True
        logger.debug("s3://%s/%s: not data, skipped: %s", bucket, item["Key"], reason)
    return False


def survey(client: Any, bucket: str, prefixes: Sequence[str], keys: KeyFilter, ready_key: str, page_size: int
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
            reply = client.list_objects_v2(Bucket=bucket, Prefix=common, MaxKeys=page_size, **more)
            items = reply.get("Contents", [])
            for item in items:
                _mark_found(found, wanted, item["Key"], item["Size"], keys, ready_key)
            beyond = bool(items) and items[-1]["Key"] > last and not items[-1]["Key"].startswith(last)
            if beyond or not reply.get("IsTruncated") and len(items) < page_size:
                return found
            more = ({"ContinuationToken": reply["NextContinuationToken"]} if reply.get("IsTruncated")
                    else {"StartAfter": items[-1]["Key"]})  # a full last page: see _listing
    except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
        raise SourceError(f"s3://{bucket}/{common}: cannot list objects: {exc}") from exc
    return None


def absent(client: Any, bucket: str, prefixes: Sequence[str]) -> list[str]:
    """Those of ``prefixes`` with no key at all, from one listing of each parent (a prefix up to its last
    inner ``/``) with ``Delimiter='/'``: one request per 1,000 names one level below it (such as a
    thousand dates' folders), whatever the prefixes hold. A parent too big to list (over
    ``_PARENT_PAGES`` pages) tells nothing."""
    by_parent: dict[str, list[str]] = {}
    for prefix in prefixes:
        by_parent.setdefault(prefix[: prefix.rstrip("/").rfind("/") + 1], []).append(prefix)
    empty = []
    for parent, below in by_parent.items():
        children = _children(client, bucket, parent)
        if children is not None:
            empty += [prefix for prefix in below if children.none_under(prefix, len(parent))]
    return empty


def exists(client: Any, bucket: str, key: str) -> bool:
    """Whether the object ``key`` exists (one HEAD request)."""
    try:
        client.head_object(Bucket=bucket, Key=key)
    except botocore.exceptions.ClientError as exc:
        if str(exc.response.get("Error", {}).get("Code")) in ("404", "NoSuchKey", "NotFound"):
            return False
        raise SourceError(f"s3://{bucket}/{key}: {exc}") from exc
    except botocore.exceptions.BotoCoreError as exc:
        raise SourceError(f"s3://{bucket}/{key}: {exc}") from exc
    return True


def _children(client: Any, bucket: str, parent: str) -> _Children | None:
    """The keys and common prefixes one level below ``parent``; None past ``_PARENT_PAGES`` pages, or when
    a full last page leaves doubt (see ``_listing``)."""
    names: list[str] = []
    folders: set[str] = set()
    more: dict[str, str] = {}
    try:
        for _ in range(_PARENT_PAGES):
            reply = client.list_objects_v2(Bucket=bucket, Prefix=parent, Delimiter="/", MaxKeys=PAGE, **more)
            keys = [item["Key"] for item in reply.get("Contents", [])]
            common = [item["Prefix"] for item in reply.get("CommonPrefixes", [])]
            names += keys + common
            folders.update(common)
            if reply.get("IsTruncated"):
                more = {"ContinuationToken": reply["NextContinuationToken"]}
            elif len(keys) + len(common) >= PAGE:
                return None
            else:
                return _Children(sorted(names), folders)
    except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
        raise SourceError(f"s3://{bucket}/{parent}: cannot list objects: {exc}") from exc
    return None


def _listing(client: Any, bucket: str, prefix: str, page_size: int) -> Iterator[dict[str, Any]]:
    """Every listed item under ``prefix``, page after page, as the server gives them (folder markers too).

    SeaweedFS (4.48) says a listing is complete when a full page ends on a folder marker, even with
    keys below it; such a page is therefore followed by one more request from after its last key.
    """
    more: dict[str, str] = {}
    try:
        while True:
            reply = client.list_objects_v2(Bucket=bucket, Prefix=prefix, MaxKeys=page_size, **more)
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
