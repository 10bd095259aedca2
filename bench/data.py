"""Benchmark data: CSV files of the transactions schema of a chosen size, written fast, and their upload to S3.

Rows come from ``luigi_pipelines.devstack.sample``: one chunk of lines per date is generated once and repeated
with fresh ids, so a gigabyte takes seconds, not minutes, and every row carries the file's date.
"""
from __future__ import annotations

import datetime
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from boto3.s3.transfer import TransferConfig

from luigi_pipelines.devstack.sample import HEADER, transaction_lines

MIB = 1024 * 1024
_CHUNK_ROWS = 10_000
_IDS_PER_DATE = 10**9  # ids of one date never collide with another date's


@dataclass(frozen=True)
class CsvFile:
    """A generated CSV file: one date's transactions, with a header line."""

    date: datetime.date
    path: Path
    size_bytes: int
    rows: int


@dataclass(frozen=True)
class Dataset:
    """A generated file and the S3 object holding the same bytes."""

    csv: CsvFile
    bucket: str
    key: str

    @property
    def size_bytes(self) -> int:
        return self.csv.size_bytes

    @property
    def rows(self) -> int:
        return self.csv.rows

    @property
    def date(self) -> datetime.date:
        return self.csv.date


def _chunk_tails(date: datetime.date) -> list[bytes]:
    """The sample lines of ``date`` without their leading id: ``b",<date>,acct-...,<note>\\n"``."""
    return [line[line.index(","):].encode() + b"\n" for line in transaction_lines(date, 0, _CHUNK_ROWS)]


def write_csv(path: Path, date: datetime.date, size_bytes: int) -> CsvFile:
    """Write at least ``size_bytes`` (to the next whole line) of ``date``'s transactions to ``path``."""
    tails = _chunk_tails(date)
    first_id = date.toordinal() * _IDS_PER_DATE
    written = 0
    rows = 0
    with open(path, "wb") as f:
        written += f.write(HEADER.encode() + b"\n")
        while written < size_bytes:
            chunk = b"".join(b"%d%s" % (first_id + rows + n, tail) for n, tail in enumerate(tails))
            if written + len(chunk) > size_bytes:
                chunk = _cut_after_line(chunk, size_bytes - written)
            written += f.write(chunk)
            rows += chunk.count(b"\n")
    return CsvFile(date, path, written, rows)


def write_csv_rows(path: Path, date: datetime.date, rows: int) -> CsvFile:
    """Write exactly ``rows`` of ``date``'s transactions (and a header line) to ``path``."""
    tails = _chunk_tails(date)
    first_id = date.toordinal() * _IDS_PER_DATE
    done = 0
    with open(path, "wb") as f:
        written = f.write(HEADER.encode() + b"\n")
        while done < rows:
            take = min(len(tails), rows - done)
            written += f.write(b"".join(b"%d%s" % (first_id + done + n, tail) for n, tail in enumerate(tails[:take])))
            done += take
    return CsvFile(date, path, written, rows)


def _cut_after_line(chunk: bytes, at_least: int) -> bytes:
    end = chunk.find(b"\n", max(at_least - 1, 0))
    return chunk if end < 0 else chunk[: end + 1]


def object_key(date: datetime.date, name: str = "part-0000.csv") -> str:
    """Where the transactions pipeline looks for ``date``'s objects (its ``key_prefix``)."""
    return f"transactions/{date.isoformat()}/{name}"


def upload(client: Any, bucket: str, csv: CsvFile, key: str = "") -> Dataset:
    """Put ``csv`` under its date's prefix (or at ``key``), as one object (one PUT up to 5 GiB, like most producers)."""
    key = key or object_key(csv.date)
    config = TransferConfig(multipart_threshold=5 * 1024 * MIB, max_concurrency=1)
    client.upload_file(str(csv.path), bucket, key, Config=config)
    return Dataset(csv, bucket, key)
