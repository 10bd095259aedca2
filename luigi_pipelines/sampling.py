"""The reading part of ``luigi-pipelines infer``: the first object of an S3 prefix (the first page of its listing),
read as a stream, never whole: at most N records of a CSV or JSON-lines object (decompressed on the fly when its
key ends in ``.gz``, a UTF-8 byte-order mark removed), or a Parquet file's footer and first batch through
ranged GETs. ``infer`` and ``drafts`` make the class of what was read."""
from __future__ import annotations

import argparse
import dataclasses
import gzip
import io
import itertools
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO, Any, cast

import botocore.exceptions

from . import drafts, infer
from .errors import BadInputError, ConfigurationError, SourceError
from .parquet import pyarrow_modules
from .parquet_values import open_parquet
from .partitions import KeyFilter
from .s3 import S3Client, S3Object
from .settings import S3Settings

EXTENSIONS = {"csv": (".csv", ".csv.gz", ".tsv", ".tsv.gz", ".txt", ".txt.gz"),
              "jsonl": (".jsonl", ".jsonl.gz", ".ndjson", ".ndjson.gz", ".json", ".json.gz"),
              "parquet": (".parquet", ".parq")}
DATA_KEYS = KeyFilter()  # what a load skips (folder markers, _SUCCESS, dot-files) is never sampled
_CHUNK = 64 * 1024  # bytes asked of the body stream at a time
_NAMES = {"csv": "CSV", "jsonl": "JSON lines", "parquet": "Parquet"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("url", help="s3://bucket/prefix/ (its first object is sampled) or s3://bucket/key")
    parser.add_argument("--format", choices=infer.FORMATS, required=True, help="the objects' format")
    parser.add_argument("--sample-lines", type=int, default=1000, metavar="N",
                        help="records read (CSV, JSON lines) or rows of the first batch (Parquet); default 1000")
    parser.add_argument("--table", default="", help="the target table, schema.name (default: public. and the key's "
                        "last name before its date)")
    parser.add_argument("--endpoint-url", default="", help="S3 endpoint (default: [s3] endpoint_url, AWS_ENDPOINT_URL "
                        "or AWS)")


def main(args: argparse.Namespace, settings: S3Settings) -> int:
    """Print the drafted class of ``args.url``'s first object; ``settings`` are the ``[s3]`` section's."""
    if args.sample_lines < 1:
        raise ConfigurationError("--sample-lines must be at least 1")
    if args.endpoint_url:
        settings = dataclasses.replace(settings, endpoint_url=args.endpoint_url)
    bucket, prefix = parse_url(args.url)
    s3 = S3Client(settings)
    obj = first_object(s3, bucket, prefix, args.format)
    print(draft(s3, obj, prefix, args.format, args.sample_lines, args.table), end="")
    return 0


def parse_url(url: str) -> tuple[str, str]:
    """``(bucket, prefix)`` of ``s3://bucket/prefix``; a ``ConfigurationError`` for anything else."""
    bucket, _, prefix = url.removeprefix("s3://").partition("/")
    if not url.startswith("s3://") or not bucket:
        raise ConfigurationError(f"{url!r} is not an S3 URL: give s3://bucket/prefix/")
    return bucket, prefix


def first_object(s3: S3Client, bucket: str, prefix: str, fmt: str) -> S3Object:
    """The first data object of the first page of ``prefix``'s listing with an extension of ``fmt`` (else the
    first data object): one request, however many objects the prefix holds."""
    try:
        reply = s3.client.list_objects_v2(Bucket=bucket, Prefix=prefix, MaxKeys=1000)
    except botocore.exceptions.ClientError as exc:
        if exc.response.get("Error", {}).get("Code") == "NoSuchBucket":
            raise ConfigurationError(f"s3://{bucket}/: no such bucket") from None
        raise SourceError(f"s3://{bucket}/{prefix}: cannot list objects: {exc}") from exc
    except botocore.exceptions.BotoCoreError as exc:
        raise SourceError(f"s3://{bucket}/{prefix}: cannot list objects: {exc}") from exc
    parent = prefix[: prefix.rfind("/") + 1]
    data = [S3Object(bucket, item["Key"], item["Size"], item["ETag"].strip('"')) for item in reply.get("Contents", [])
            if DATA_KEYS.skip_reason(parent, item["Key"], item["Size"]) is None and not item["Key"].endswith("/")]
    if not data:
        raise ConfigurationError(f"s3://{bucket}/{prefix}: no object there to sample")
    return next((o for o in data if o.key.lower().endswith(EXTENSIONS[fmt])), data[0])


def draft(s3: S3Client, obj: S3Object, prefix: str, fmt: str, lines: int, table: str) -> str:
    """The class drafted from ``obj`` (see ``drafts.render``)."""
    try:
        if fmt == "parquet":
            seen, rows, fetched = _parquet_columns(s3, obj, lines)
            format_line, note = "decoder = lp.ParquetDecoder()", "columns matched by name"
            columns = [infer.drafted(s) for s in seen]
        else:
            with _text(s3, obj) as (text, counted):
                seen, rows, format_line, note, null = _text_columns(fmt, text, lines)
                fetched = counted.read_bytes
            columns = [infer.drafted(s, null) for s in seen]
        if not columns:
            raise BadInputError("no records in the sample")
    except (BadInputError, UnicodeDecodeError) as exc:
        raise ConfigurationError(f"{obj.url} cannot be read as {_NAMES[fmt]} (--format {fmt}): {exc}") from None
    when = drafts.key_date(obj.key)
    sampled = f"{rows:,} rows sampled; {fetched:,} bytes read of its {obj.size:,}"
    choice = drafts.choose_date(columns, seen, when)
    return drafts.render(drafts.Draft(obj.url, sampled, obj.bucket, when, prefix, drafts.table_of(table, when, obj.key),
                                      choice, columns, format_line, note))


def _text_columns(fmt: str, text: io.TextIOBase, lines: int) -> tuple[list[infer.Seen], int, str, str, str]:
    """The columns of at most ``lines`` records of the text, their count, the format's line and note, the NULL
    marker."""
    if fmt == "jsonl":
        seen = infer.jsonl_sample(itertools.islice(text, lines))
        return seen, max((len(s.values) + s.absent for s in seen), default=0), "decoder = lp.JsonLinesDecoder()", \
            "each column from the key of its name", ""
    head = text.readline()
    delimiter = infer.delimiter_of(head)
    records = list(itertools.islice(infer.csv_records(itertools.chain([head], text), delimiter), lines + 1))
    sample = infer.csv_sample(records)
    return sample.seen, len(records) - sample.header, f"csv = {infer.csv_format(sample, delimiter)}", sample.notes, \
        sample.null or "empty"


class _Counted(io.RawIOBase):
    """A raw stream over an S3 GET's body that counts the bytes read from it."""

    def __init__(self, body: Any) -> None:
        self.body = body
        self.read_bytes = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self.body.read(len(buffer))
        buffer[: len(data)] = data
        self.read_bytes += len(data)
        return len(data)


@contextmanager
def _text(s3: S3Client, obj: S3Object) -> Iterator[tuple[io.TextIOWrapper, _Counted]]:
    """The object's text as a stream (gunzipped for a ``.gz`` key, without a BOM); the GET ends with the block."""
    body = _get(s3, obj)["Body"]
    counted = _Counted(body)
    stream: Any = io.BufferedReader(counted, _CHUNK)
    if obj.key.endswith(".gz"):
        stream = gzip.GzipFile(fileobj=stream, mode="rb")
    try:
        yield io.TextIOWrapper(stream, encoding="utf-8-sig", newline=""), counted
    except (OSError, EOFError, zlib.error) as exc:
        raise BadInputError(f"corrupt or truncated gzip data: {exc}") from None
    except botocore.exceptions.BotoCoreError as exc:
        raise SourceError(f"{obj.url}: the GET failed: {exc}") from exc
    finally:
        body.close()


def _get(s3: S3Client, obj: S3Object, **extra: str) -> dict[str, Any]:
    try:
        return dict(s3.client.get_object(Bucket=obj.bucket, Key=obj.key, IfMatch=obj.etag, **extra))
    except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) as exc:
        raise SourceError(f"{obj.url}: {exc}") from exc


class _Ranged(io.RawIOBase):
    """A seekable view of an S3 object whose every read is one ranged GET (pyarrow reads a Parquet file's footer
    from its end, then the pages it decodes), counting the bytes fetched."""

    def __init__(self, s3: S3Client, obj: S3Object) -> None:
        self.s3, self.obj = s3, obj
        self.position = self.read_bytes = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self.position, io.SEEK_END: self.obj.size}[whence]
        self.position = max(0, base + offset)
        return self.position

    def tell(self) -> int:
        return self.position

    def readinto(self, buffer: Any) -> int:
        stop = min(self.obj.size, self.position + len(buffer))
        if stop <= self.position:
            return 0
        reply = _get(self.s3, self.obj, Range=f"bytes={self.position}-{stop - 1}")
        data = reply["Body"].read()
        buffer[: len(data)] = data
        self.position += len(data)
        self.read_bytes += len(data)
        return len(data)


def _parquet_columns(s3: S3Client, obj: S3Object, rows: int) -> tuple[list[infer.Seen], int, int]:
    """The columns of a Parquet object from its schema and the values of its first batch of ``rows`` rows, the rows
    read, and the bytes fetched."""
    pa = pyarrow_modules()
    ranged = _Ranged(s3, obj)
    try:
        parquet = open_parquet(pa, cast(IO[bytes], ranged), "us")  # INT96 at microseconds, as the load reads it
        schema = parquet.schema_arrow
        batch = next(parquet.iter_batches(batch_size=rows, use_threads=False), None) if parquet.num_row_groups else None
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise BadInputError(f"not a Parquet file, or a truncated one: {exc}") from None
    seen = [infer.parquet_seen(f.name, str(f.type), batch.column(n).to_pylist() if batch is not None else [])
            for n, f in enumerate(schema)]
    return seen, 0 if batch is None else batch.num_rows, ranged.read_bytes

