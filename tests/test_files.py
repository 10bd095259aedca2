"""Temporary download files and the readers that feed COPY (no server needed)."""
from __future__ import annotations

import tempfile
import threading

import pytest

from luigi_pipelines.errors import SourceError
from luigi_pipelines.files import DownloadCancelled, GrowingFile, SourceReader


def test_growing_file_reads_behind_the_writer_and_ends_with_it():
    with tempfile.TemporaryFile() as tmp:
        growing = GrowingFile(tmp)
        wrote_first = threading.Event()
        may_write_rest = threading.Event()

        def writer():
            tmp.write(b"a" * 10)
            tmp.flush()
            growing.advance(10)
            wrote_first.set()
            may_write_rest.wait(10)
            tmp.write(b"b" * 5)
            tmp.flush()
            growing.finish(size=15)

        thread = threading.Thread(target=writer)
        thread.start()
        assert wrote_first.wait(10)
        assert growing.read(100) == b"a" * 10  # what is there, without waiting for the rest
        may_write_rest.set()
        assert growing.read(100) == b"b" * 5
        assert growing.read(100) == b""
        thread.join()


def test_growing_file_raises_the_download_error_instead_of_a_short_read():
    with tempfile.TemporaryFile() as tmp:
        growing = GrowingFile(tmp)
        tmp.write(b"id\n1\n")
        tmp.flush()
        growing.advance(5)
        growing.finish(SourceError("s3://b/k: download failed: connection reset"))
        reader = SourceReader(growing, "s3://b/k", None, strip_bom=False)
        with pytest.raises(SourceError, match="connection reset"):
            reader.read(100)
        assert isinstance(reader.error, SourceError)  # kept for copy_stream, which psycopg2 would hide


def test_growing_file_cancel_stops_the_writer():
    with tempfile.TemporaryFile() as tmp:
        growing = GrowingFile(tmp)
        growing.cancel()
        with pytest.raises(DownloadCancelled):
            growing.advance(1)


def test_managed_style_download_reports_only_its_final_size():
    with tempfile.TemporaryFile() as tmp:
        growing = GrowingFile(tmp)
        tmp.write(b"xyz")
        tmp.flush()
        growing.finish(size=3)
        assert growing.read(-1) == b"xyz" and growing.read(-1) == b""
