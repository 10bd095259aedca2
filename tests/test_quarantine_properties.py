"""Quarantine mode's record splitter, as properties: for any CSV content and any chunk size, the rows it
keeps and the rows it rejects are exactly the input records, in order, and a good row is never rejected.

PostgreSQL decides which rows are bad: every segment is COPYed into a temporary table in a savepoint,
as ``LoadPartition`` does it (``db.copy_in_savepoint``).
"""
from __future__ import annotations

import contextlib
import datetime
import io
from dataclasses import dataclass

import psycopg2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from luigi_pipelines import db
from luigi_pipelines import sql as q
from luigi_pipelines.partitions import TableName
from luigi_pipelines.quarantine import LineFile, QuarantineCopy, Reject

pytestmark = pytest.mark.postgres

BOM = b"\xef\xbb\xbf"
TABLE = TableName("pg_temp", "quarantine_rows")
COLUMNS = [q.Column("n", "bigint"), q.Column("v", "text")]
# ``seq`` records the order in which rows arrived (a sequence is not rolled back with a savepoint, so
# it only grows); ``n`` is the record's position in the input.
CREATE = "CREATE TEMP TABLE quarantine_rows (seq bigserial, n bigint, v text) ON COMMIT DROP"


@dataclass(frozen=True)
class Record:
    """One generated CSV record: its bytes (line end included), and what PostgreSQL makes of it."""

    data: bytes
    good: bool
    n: int
    value: str | None = None  # the stored ``v`` of a good record (None: NULL)


@dataclass(frozen=True)
class CsvFile:
    head: bytes  # the BOM and the header line, if any
    records: list[Record]
    first_line: int  # the first line after the header, if any
    first_offset: int  # where line 1 starts: after the BOM, if any

    @property
    def data(self) -> bytes:
        return self.head + b"".join(r.data for r in self.records)

    def line_of(self, index: int) -> int:
        """The physical line (counted by \\n, as ``LineFile`` does) where record ``index`` starts."""
        return 1 + self.head.count(b"\n") + sum(r.data.count(b"\n") for r in self.records[:index])


# Field text: letters, the CSV specials, every kind of line break (inside quotes), non-ASCII.
# No backslash: PostgreSQL takes a line holding only \. inside a quoted field for the end of the data.
values = st.lists(st.sampled_from(list('ab ,"é€') + ["\n", "\r\n", "\r", "\U0001f600"]), max_size=12).map("".join)


@st.composite
def fields(draw: st.DrawFn) -> tuple[str, str | None]:
    """A CSV field and the value PostgreSQL stores for it."""
    value = draw(values)
    must_quote = value == "" or any(c in value for c in ',"\r\n')
    if value == "" and draw(st.booleans()):
        return "", None  # unquoted empty: NULL
    if must_quote or draw(st.booleans()):
        return '"' + value.replace('"', '""') + '"', value
    return value, value


BAD_KINDS = ["not_a_number", "missing_column", "extra_column", "nul", "bad_utf8", "multiline_number", "multiline_extra"]


@st.composite
def records(draw: st.DrawFn, n: int, eol: bytes) -> Record:
    field, value = draw(fields())
    kind = draw(st.sampled_from(["good"] * len(BAD_KINDS) + BAD_KINDS))
    line = {
        "good": f"{n},{field}".encode(),
        "not_a_number": f"x{n},{field}".encode(),
        "missing_column": f"{n}".encode(),
        "extra_column": f"{n},{field},extra".encode(),
        "nul": f"{n},a\x00b".encode(),
        "bad_utf8": f"{n},a".encode() + b"\xff\xfe",
        "multiline_number": f'"{n}\n{n}",{field}'.encode(),
        "multiline_extra": f'{n},"two\nlines",{field}'.encode(),
    }[kind]
    return Record(line + eol, kind == "good", n, value)


@st.composite
def csv_files(draw: st.DrawFn) -> CsvFile:
    eol = draw(st.sampled_from([b"\n", b"\r\n"]))
    bom, header = draw(st.booleans()), draw(st.booleans())
    count = draw(st.integers(1, 20))
    rows = [draw(records(n, eol)) for n in range(1, count + 1)]
    if draw(st.booleans()):  # a quote left open: the last record runs to the end of the file
        rest = draw(values.filter(lambda v: '"' not in v)).encode()
        rows.append(Record(f'{count + 1},"open'.encode() + eol + rest + eol, False, count + 1))
    head = (BOM if bom else b"") + (b"n,v" + eol if header else b"")
    return CsvFile(head, rows, 2 if header else 1, len(BOM) if bom else 0)


@pytest.fixture(scope="module")
def conn(pg_server):
    with contextlib.closing(psycopg2.connect(pg_server.dsn)) as connection:
        yield connection


def quarantine(conn, csv: CsvFile, chunk_bytes: int, buffer_size: int, budget: int) -> tuple[int, list[Reject], list]:
    """Run ``QuarantineCopy`` over ``csv`` into a temporary table; returns its result and the rows in the table."""
    statement = q.copy_from_stdin(TABLE, COLUMNS, q.CsvFormat(header=False))
    try:
        with conn.cursor() as cur:
            cur.execute(CREATE)
            tx = db.PartitionTransaction(cur, TABLE, datetime.date(2019, 2, 1), None, datetime.datetime(2019, 2, 2))
            copier = QuarantineCopy(
                LineFile(io.BytesIO(csv.data), first_offset=csv.first_offset), "generated.csv", b'"', b'"', "UTF8",
                lambda segment: db.copy_in_savepoint(tx, statement, segment, "generated.csv", buffer_size),
                budget=budget, chunk_bytes=chunk_bytes)
            rows, rejects = copier.run(first_line=csv.first_line)
            cur.execute("SELECT n, v FROM quarantine_rows ORDER BY seq")
            return rows, rejects, cur.fetchall()
    finally:
        conn.rollback()


def expected_rejects(csv: CsvFile, records: list[Record] | None = None) -> list[tuple[int, str]]:
    """The lines and the texts the rejects table shows for the bad records (of ``records``, default all)."""
    bad = [(i, r) for i, r in enumerate(csv.records) if not r.good and (records is None or r in records)]
    texts = [r.data.decode("utf-8", errors="backslashreplace").replace("\x00", "\\x00") for _, r in bad]
    return [(csv.line_of(i), text.rstrip("\r\n")) for (i, _), text in zip(bad, texts, strict=True)]


buffer_sizes = st.sampled_from([5, 100, 64 * 1024])


@settings(max_examples=40, deadline=None)
@given(csv_files(), st.data(), buffer_sizes)
def test_every_record_is_kept_or_rejected_once_in_order(conn, csv, data, buffer_size):
    chunk_bytes = data.draw(st.integers(1, len(csv.data) + 16), label="chunk_bytes")
    rows, rejects, table = quarantine(conn, csv, chunk_bytes, buffer_size, budget=len(csv.records))
    assert table == [(r.n, r.value) for r in csv.records if r.good]
    assert rows == len(table)
    assert [(r.line, r.raw) for r in rejects] == expected_rejects(csv)
    assert all(r.error for r in rejects)


@settings(max_examples=25, deadline=None)
@given(csv_files(), st.data())
def test_stops_at_the_first_reject_over_budget(conn, csv, data):
    """Over budget, the good rows before the last reject are copied and nothing after it."""
    bad = [r for r in csv.records if not r.good]
    budget = data.draw(st.integers(0, max(len(bad) - 1, 0)), label="budget")
    chunk_bytes = data.draw(st.integers(1, len(csv.data) + 16), label="chunk_bytes")
    rows, rejects, table = quarantine(conn, csv, chunk_bytes, 64 * 1024, budget)
    if len(bad) <= budget:
        assert len(rejects) == len(bad)
        return
    last = bad[budget]
    assert [(r.line, r.raw) for r in rejects] == expected_rejects(csv, bad[: budget + 1])
    assert table == [(r.n, r.value) for r in csv.records[: csv.records.index(last)] if r.good]
    assert rows == len(table)
