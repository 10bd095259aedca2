"""Bad input: every case fails the task with a message naming the key, the line, the column and the reason,
and leaves the table, the marker and the temp directory exactly as they were.

Each case loads a good version of the partition first, then replaces it with one good and one bad
object and reloads with ``force=True``: the good object's rows are copied before the bad one fails,
so "unchanged" also proves the rollback.
"""
from __future__ import annotations

import datetime
import gzip
import logging
import re
from dataclasses import dataclass, field
from typing import Any

import luigi
import pytest
from luigi.execution_summary import LuigiStatusCode

from luigi_pipelines import BadInputError, CsvFormat, SourceError
from tests.conftest import run_task

pytestmark = [pytest.mark.postgres, pytest.mark.s3]

D1 = datetime.date(2019, 2, 1)
PREFIX = "d/2019-02-01/"
OLD = "id,day,v\n1,2019-02-01,old\n2,2019-02-01,old\n"
NEW = "id,day,v\n10,2019-02-01,new\n11,2019-02-01,new\n12,2019-02-01,new\n"
LONG = 4 * 1024 * 1024  # a 4 MiB field: longer than COPY's read buffer and any single read


def csv(*rows: str, header: str = "id,day,v", eol: str = "\n") -> bytes:
    return eol.join([header, *rows]).encode() + eol.encode()


def gz(body: bytes) -> bytes:
    return gzip.compress(body, mtime=0)


# More than one COPY read buffer (1 MiB) decompressed, so that part of it reaches COPY before the error.
BIG_GZ = gz(csv(*(f"{n},2019-02-01,row{n}" for n in range(3, 120_000))))


def _corrupt(data: bytes, at: float) -> bytes:
    flipped = bytearray(data)
    flipped[int(len(data) * at)] ^= 0xFF
    return bytes(flipped)


# the \. line read as the value \. in the first column (which PostgreSQL checks first depends on its version)
_MARKER_LINE_3 = r' line 3(: missing data for column "day"| column id: invalid input syntax for type bigint: "\\\.")'


@dataclass
class Case:
    """One bad object ``key`` (under the partition's prefix) and the exact message it must produce."""

    id: str
    key: str
    body: bytes
    message: str  # a regex, after "s3://<bucket>/d/2019-02-01/<key>"
    attrs: dict[str, Any] = field(default_factory=dict)


CASES = [
    Case("too-few-columns", "b.csv", csv("3,2019-02-01,x", "4,2019-02-01"),
         r' line 3: missing data for column "v"'),
    Case("too-many-columns", "b.csv", csv("3,2019-02-01,x,surplus"),
         r" line 2: extra data after last expected column"),
    Case("unterminated-quoted-field", "b.csv", csv("3,2019-02-01,x", '4,2019-02-01,"never closed', "5,2019-02-01,y"),
         r" line 5: unterminated CSV quoted field"),
    Case("non-numeric", "b.csv", csv("3,2019-02-01,x", "four,2019-02-01,y"),
         r' line 3 column id: invalid input syntax for type bigint: "four"'),
    Case("invalid-date", "b.csv", csv("3,2019-02-30,x"),
         r' line 2 column day: date/time field value out of range: "2019-02-30"'),
    Case("invalid-utf8", "b.csv", b"id,day,v\n3,2019-02-01,caf\xe9\n",
         r' line 2: invalid byte sequence for encoding "UTF8": 0xe9 0x0a'),
    Case("nul-byte", "b.csv", b"id,day,v\n3,2019-02-01,x\n4,2019-02-01,a\x00b\n",
         r' line 3: invalid byte sequence for encoding "UTF8": 0x00'),
    Case("truncated-gzip", "b.csv.gz", BIG_GZ[:-100],
         r": corrupt or truncated gzip data after line [1-9]\d*: "
         r"Compressed file ended before the end-of-stream marker was reached"),
    Case("corrupt-gzip", "b.csv.gz", _corrupt(BIG_GZ, 0.8), r": corrupt or truncated gzip data after line [1-9]\d*: .+"),
    Case("not-gzip", "b.csv.gz", csv("3,2019-02-01,x"), r": corrupt or truncated gzip data: Not a gzipped file \(b'id'\)"),
    Case("header-mismatch", "b.csv", csv("3,2019-02-01,x", header="id,date,v"),
         r' line 1: column name mismatch in header line field 2: got "date", expected "day"'),
    Case("header-missing-column", "b.csv", csv("3,2019-02-01", header="id,day"),
         r" line 1: wrong number of fields in header line: got 2, expected 3"),
    Case("mixed-line-endings", "b.csv", b"id,day,v\r\n3,2019-02-01,x\r\n4,2019-02-01,y\n",
         r" line 3: unquoted newline found in data"),
    Case("very-long-line-bad-number", "b.csv", csv("3,2019-02-01,x", "9" * LONG + ",2019-02-01,y"),
         r' line 3 column id: value "9{293}\.\.\. \(\d+ more characters\)'),
    Case("very-long-line-too-many-columns", "b.csv", csv("3,2019-02-01,x", "4,2019-02-01," + ",".join(["y" * 64] * (LONG // 64))),
         r" line 3: extra data after last expected column"),
    Case("empty-object-refused", "b.csv", b"",
         r": the object is empty \(0 bytes\) \(empty_objects_ok is off\)", {"empty_objects_ok": False}),
    Case("header-only-object-refused", "b.csv", csv(),
         r": the object has no data rows \(empty_objects_ok is off\)", {"empty_objects_ok": False}),
    # gzip.compress(b"") is 20 bytes, a BOM 3: neither has data once decoded, like a 0-byte object
    Case("empty-gzip-refused", "b.csv.gz", gz(b""),
         r": the object has no data after decompression and byte-order mark removal \(empty_objects_ok is off\)",
         {"empty_objects_ok": False}),
    Case("bom-only-refused", "b.csv", b"\xef\xbb\xbf",
         r": the object has no data after decompression and byte-order mark removal \(empty_objects_ok is off\)",
         {"empty_objects_ok": False}),
    # PostgreSQL before 18 ends CSV input at a line "\." and drops the rest: it must be a bad row instead
    Case("end-of-data-marker-line", "b.csv", csv("4,2019-02-01,d", "\\.", "5,2019-02-01,e", "6,2019-02-01,f"),
         _MARKER_LINE_3),
    Case("end-of-data-marker-crlf", "b.csv", csv("4,2019-02-01,d", "\\.", "5,2019-02-01,e", eol="\r\n"),
         _MARKER_LINE_3),
    Case("end-of-data-marker-last-line", "b.csv", csv("4,2019-02-01,d") + b"\\.",
         _MARKER_LINE_3),
]


def run_failing(task: luigi.Task) -> BaseException:
    """Run ``task`` through a luigi worker; assert it failed and return the exception luigi reported."""
    failures: list[BaseException] = []
    type(task).event_handler(luigi.Event.FAILURE)(lambda _task, exc: failures.append(exc))
    result = run_task(task)
    assert result.status == LuigiStatusCode.FAILED, result.summary_text
    assert len(failures) == 1
    return failures[0]


def state(stack) -> tuple[list[tuple], dict]:
    return (stack.query(f"SELECT id, day, v FROM {stack.schema}.t ORDER BY id"), stack.markers(f"{stack.schema}.t"))


@pytest.fixture
def loaded(stack, make_task):
    """A partition loaded from a good object; returns a function that builds the task class again."""
    stack.put(PREFIX + "a.csv", OLD)
    assert run_task(make_task()(date=D1)).status == LuigiStatusCode.SUCCESS
    before = state(stack)
    assert [r[2] for r in before[0]] == ["old", "old"] and before[1][D1][0] == 2
    return before


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_object_fails_clearly_and_changes_nothing(stack, make_task, loaded, case):
    stack.put(PREFIX + "a.csv", NEW)  # copied first, then rolled back with the rest
    stack.put(PREFIX + case.key, case.body)
    error = run_failing(make_task(**case.attrs)(date=D1, force=True))
    assert isinstance(error, BadInputError)
    url = f"s3://{stack.bucket}/{PREFIX}{case.key}"
    assert re.fullmatch(re.escape(url) + case.message, str(error), re.DOTALL), str(error)[:500]
    assert len(str(error)) < 1000  # a bad 4 MiB line is not pasted into the log
    assert state(stack) == loaded
    assert stack.temp_files() == []


def _delete_before_download(self, tx, obj):
    if obj.key.endswith("b.csv"):
        self.s3_client().client.delete_object(Bucket=obj.bucket, Key=obj.key)


def _replace_before_download(self, tx, obj):
    if obj.key.endswith("b.csv"):
        self.s3_client().client.put_object(Bucket=obj.bucket, Key=obj.key, Body=csv("3,2019-02-01,replaced", "4,2019-02-01,x"))


@pytest.mark.parametrize("hook, reason", [
    (_delete_before_download, "the object was deleted after it was listed"),
    (_replace_before_download, r"the object was replaced after it was listed \(ETag changed\)"),
], ids=["deleted", "replaced"])
def test_object_changed_between_listing_and_download(stack, make_task, loaded, hook, reason):
    stack.put(PREFIX + "a.csv", NEW)
    stack.put(PREFIX + "b.csv", csv("3,2019-02-01,listed"))
    error = run_failing(make_task(before_object=hook)(date=D1, force=True))
    assert isinstance(error, SourceError)
    assert re.fullmatch(re.escape(f"s3://{stack.bucket}/{PREFIX}b.csv: ") + reason, str(error)), str(error)
    assert state(stack) == loaded
    assert stack.temp_files() == []


@dataclass
class GoodCase:
    """Objects that must load, with the ``(id, v)`` rows they give and the warning they log, if any."""

    id: str
    objects: dict[str, bytes]
    rows: list[tuple[int, str | None]]
    warning: str | None = None
    attrs: dict[str, Any] = field(default_factory=dict)


BOM = b"\xef\xbb\xbf"
GOOD_CASES = [
    GoodCase("crlf", {"a.csv": csv("1,2019-02-01,x", "2,2019-02-01,y", eol="\r\n")}, [(1, "x"), (2, "y")]),
    GoodCase("crlf-quoted-newline", {"a.csv": csv('1,2019-02-01,"two\r\nlines"', "2,2019-02-01,y", eol="\r\n")},
             [(1, "two\r\nlines"), (2, "y")]),
    GoodCase("utf8-bom", {"a.csv": BOM + csv("1,2019-02-01,café")}, [(1, "café")]),
    GoodCase("utf8-bom-crlf-gzip", {"a.csv.gz": gz(BOM + csv("1,2019-02-01,x", "2,2019-02-01,ü", eol="\r\n"))},
             [(1, "x"), (2, "ü")]),
    GoodCase("no-final-newline", {"a.csv": b"id,day,v\n1,2019-02-01,x"}, [(1, "x")]),
    GoodCase("very-long-line", {"a.csv": csv("1,2019-02-01," + "x" * LONG)}, [(1, "x" * LONG)]),
    GoodCase("header-not-checked", {"a.csv": csv("1,2019-02-01,x", header="ID,date,value")}, [(1, "x")],
             attrs={"csv": CsvFormat(check_header=False)}),
    GoodCase("empty-object", {"a.csv": csv("1,2019-02-01,x"), "b.csv": b""}, [(1, "x")],
             warning="b.csv: the object is empty (0 bytes); it adds no rows"),
    GoodCase("header-only-object", {"a.csv": csv("1,2019-02-01,x"), "b.csv.gz": gz(csv())}, [(1, "x")],
             warning="b.csv.gz: the object has no data rows; it adds no rows"),
    GoodCase("only-empty-objects", {"a.csv": b"", "b.csv": csv(eol="\r\n")}, [],
             warning="b.csv: the object has no data rows; it adds no rows"),
]


@pytest.mark.parametrize("case", GOOD_CASES, ids=[c.id for c in GOOD_CASES])
def test_good_input_loads_exactly(stack, make_task, caplog, case):
    for key, body in case.objects.items():
        stack.put(PREFIX + key, body)
    with caplog.at_level(logging.WARNING, logger="luigi-interface"):
        assert run_task(make_task(**case.attrs)(date=D1)).status == LuigiStatusCode.SUCCESS
    rows, markers = state(stack)
    assert [(r[0], r[2]) for r in rows] == case.rows
    assert markers[D1][0] == len(case.rows)
    assert [(s["key"].rsplit("/", 1)[1], s["size"]) for s in markers[D1][2]] == [
        (k, len(b)) for k, b in sorted(case.objects.items())]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    if case.warning:
        assert f"s3://{stack.bucket}/{PREFIX}{case.warning}" in warnings
    assert stack.temp_files() == []
