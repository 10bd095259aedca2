"""Parquet row groups read in batches of ``ParquetDecoder.batch_rows`` rows (``parquet.ParquetRows``), never whole:
memory is bounded whatever the producer's row group size, and every check still names the row group and the row."""
from __future__ import annotations

import datetime
import io
import tempfile

import pytest

import luigi_pipelines as lp
from luigi_pipelines import BadInputError, ParquetDecoder
from luigi_pipelines import sql as q
from luigi_pipelines.files import GrowingFile
from luigi_pipelines.parquet import ParquetRows

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

D1 = datetime.date(2019, 2, 1)
ROWS = 10_000


def one_row_group(corrupt_last_page: bool = False) -> bytes:
    """``ROWS`` ids in ONE row group of small uncompressed pages with checksums; optionally a byte of the last page's
    values flipped, which only reading that page finds."""
    sink = io.BytesIO()
    pq.write_table(pa.table({"id": pa.array(range(ROWS), pa.int64())}), sink, row_group_size=ROWS,
                   compression="none", use_dictionary=False, data_page_size=4096, write_page_checksum=True)
    body = bytearray(sink.getvalue())
    if corrupt_last_page:
        chunk = pq.ParquetFile(io.BytesIO(bytes(body))).metadata.row_group(0).column(0)
        body[chunk.data_page_offset + chunk.total_compressed_size - 8] ^= 0xFF  # inside the last id's value
    return bytes(body)


@pytest.fixture
def rows_of():
    """The ``ParquetRows`` of a file's bytes with ``id bigint`` declared, as a load reads it (a finished download)."""
    with tempfile.TemporaryFile() as handle:
        def rows(body: bytes, batch_rows: int) -> ParquetRows:
            handle.write(body)
            handle.flush()
            raw = GrowingFile(handle)
            raw.finish(size=len(body))
            opened = ParquetRows(raw, "s3://b/a.parquet", batch_rows)
            opened.select([q.Column("id", "bigint")])
            return opened
        yield rows


def test_a_large_row_group_is_read_batch_by_batch_not_whole(rows_of):
    """Before: the whole row group was read (and checked) before its first row was written, so its last page's
    checksum failed the first read. Now the first batch is written from the first pages only."""
    rows = rows_of(one_row_group(corrupt_last_page=True), batch_rows=1_000)
    first = rows.read()
    assert first.split(b"\n")[:2] == [b"0", b"1"] and first.count(b"\n") == 1_000
    with pytest.raises(BadInputError, match=r"a\.parquet row group 1: cannot be read: .*CRC checksum verification"):
        while rows.read():
            pass


def test_each_batch_of_one_row_group_holds_at_most_batch_rows_rows(rows_of):
    rows = rows_of(one_row_group(), batch_rows=768)
    sizes = []
    while chunk := rows.read():
        sizes.append(chunk.count(b"\n"))  # read() hands on one batch's CSV at a time, whole
    assert sizes == [768] * (ROWS // 768) + [ROWS % 768]


@pytest.mark.postgres
@pytest.mark.s3
def test_a_corrupt_page_late_in_one_row_group_loads_nothing(stack, make_task):
    stack.put("d/2019-02-01/a.parquet", one_row_group(corrupt_last_page=True))
    with pytest.raises(BadInputError, match=r"a\.parquet row group 1: cannot be read: .*CRC checksum verification"):
        make_task(decoder=ParquetDecoder(batch_rows=1_000), columns=[("id", "bigint")],
                  date_from=lp.partition_date())(date=D1).run()
    assert stack.query(f"SELECT count(*) FROM {stack.schema}.t") == [(0,)]
    assert stack.markers(f"{stack.schema}.t") == {}


@pytest.mark.postgres
@pytest.mark.s3
def test_int96_beyond_microseconds_in_a_later_batch_names_its_row(stack, make_task):
    """The INT96 column's second read (at seconds) goes batch by batch in lockstep with the first."""
    sink = io.BytesIO()
    at = [datetime.datetime(2019, 2, 1, i) for i in range(7)]
    table = pa.table({"id": pa.array(range(7), pa.int64()), "a": pa.array(at, pa.timestamp("s"))})
    seconds = table.column("a").cast(pa.int64()).to_pylist()
    seconds[5] = 9_400_000_000_000  # about year 299,900: row 6 of the row group, in its third batch of 2
    table = table.set_column(1, "a", pa.array(seconds, pa.int64()).cast(pa.timestamp("s")))
    pq.write_table(table, sink, use_deprecated_int96_timestamps=True)
    stack.put("d/2019-02-01/a.parquet", sink.getvalue())
    task = make_task(decoder=ParquetDecoder(batch_rows=2), columns=[("id", "bigint"), ("a", "timestamp")],
                     date_from=lp.partition_date())(date=D1)
    with pytest.raises(BadInputError, match=r"a\.parquet row group 1 row 6 \(row 6 of the file\) column a: an INT96 "):
        task.run()
    assert stack.markers(f"{stack.schema}.t") == {}


@pytest.mark.postgres
@pytest.mark.s3
def test_a_scope_value_in_a_later_batch_names_its_row(stack, make_task):
    sink = io.BytesIO()
    pq.write_table(pa.table({"id": [1, 2, 3, 4, 5], "day": pa.array([D1] * 5, pa.date32()), "v": list("abcde"),
                             "region": ["eu", "eu", "eu", "us", "eu"]}), sink)
    stack.put("eu/2019-02-01/a.parquet", sink.getvalue())
    task = make_task(key_prefix="eu/{date:%Y-%m-%d}/", scope={"region": "eu"}, decoder=ParquetDecoder(batch_rows=3))
    with pytest.raises(BadInputError, match=r"a\.parquet row group 1 row 4 \(row 4 of the file\): region is not 'eu'"):
        task(date=D1).run()
    assert stack.markers(f"{stack.schema}.t") == {}
