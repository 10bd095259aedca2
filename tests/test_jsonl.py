"""JSON lines objects (``luigi_pipelines.jsonl``): mapped by key and typed by PostgreSQL, against the real
PostgreSQL and moto's S3 server; bad lines named by key and line, or set aside in quarantine mode."""
from __future__ import annotations

import datetime
import decimal
import gzip
import json

import pytest
from luigi.execution_summary import LuigiStatusCode
from psycopg2 import sql

import luigi_pipelines as lp
from luigi_pipelines import BadInputError, JsonLinesDecoder, db
from luigi_pipelines import sql as q
from luigi_pipelines.jsonl import scrub
from tests.conftest import run_task

pytestmark = [pytest.mark.postgres, pytest.mark.s3, pytest.mark.usefixtures("json_lines_reader")]

D1 = datetime.date(2019, 2, 1)
SUCCESS = LuigiStatusCode.SUCCESS
TYPED = [("id", "bigint"), ("day", "date"), ("at", "timestamptz"), ("amount", "numeric(12,2)"), ("v", "text"),
         ("doc", "jsonb")]


def lines(*objects: object) -> bytes:
    return b"".join((o if isinstance(o, bytes) else json.dumps(o).encode()) + b"\n" for o in objects)


def rows(stack, columns: str = "*") -> list[tuple]:
    return stack.query(f"SELECT {columns} FROM {stack.schema}.t ORDER BY 1")


def rejects(stack) -> list[tuple]:
    return stack.query(f"SELECT s3_key, line_number, raw_line, error FROM {stack.marker_schema}.rejected_rows "
                       "ORDER BY s3_key, line_number")


def test_scrub_keeps_json_and_makes_copy_control_bytes_a_third_one():
    assert scrub(b'{"a": "x\\"y"}\n') == b'{"a": "x\\"y"}\n'
    assert scrub(b"a\x01b\x02c") == b"a\x03b\x03c"


def _flatten(composable):
    if isinstance(composable, sql.Composed):
        return [p for part in composable.seq for p in _flatten(part)]
    return [composable]


def test_the_insert_statement_maps_keys_to_typed_columns_and_the_rest_to_extra():
    statement = q.insert_json_lines(lp.TableName("s", "t"), q.columns_of([("id", "bigint"), ("rest", "jsonb")]),
                                    extra="rest")
    parts = _flatten(statement)
    assert sql.Identifier("s", "t") in parts and sql.Literal(["id"]) in parts and sql.SQL("bigint") in parts
    assert sql.SQL("jsonb") not in parts  # the extra column is not read from a key of its own


def test_objects_load_by_key_with_types_converted_by_postgresql(stack, make_task):
    text = 'back\\slash "quoted" ünïcödé ✓ tab\there'
    body = lines(
        {"id": 1, "day": "2019-02-01", "at": "2019-02-01T10:00:00+01:00", "amount": 12.5, "v": text,
         "doc": {"nested": [1, {"x": None}]}, "unknown": "ignored"},
        {"day": "2019-02-01", "id": "2", "amount": "0.10"},   # keys in any order, a number as a string, missing keys
        b"",                                                  # an empty line: skipped
        {"id": 3, "day": "2019-02-01", "v": None, "doc": [1, 2], "at": "2019-02-01 23:59:59.123456Z"},
    )
    stack.put("d/2019-02-01/a.jsonl", body)
    task = make_task(decoder=JsonLinesDecoder(), columns=TYPED)(date=D1)
    assert run_task(task).status == SUCCESS
    utc = datetime.timezone.utc
    assert rows(stack) == [
        (1, D1, datetime.datetime(2019, 2, 1, 9, tzinfo=utc), decimal.Decimal("12.50"), text,
         {"nested": [1, {"x": None}]}),
        (2, D1, None, decimal.Decimal("0.10"), None, None),
        (3, D1, datetime.datetime(2019, 2, 1, 23, 59, 59, 123456, tzinfo=utc), None, None, [1, 2]),
    ]
    marker = stack.markers(f"{stack.schema}.t")[D1]
    assert marker[0] == 3 and marker[2][0]["rows"] == 3


def test_gzip_and_ndjson_objects_and_unknown_keys_kept_in_a_declared_jsonb_column(stack, make_task):
    stack.put("d/2019-02-01/a.jsonl.gz", gzip.compress(lines({"id": 1, "day": "2019-02-01", "v": "a", "k": 1})))
    stack.put("d/2019-02-01/b.ndjson", lines({"id": 2, "day": "2019-02-01", "v": "b"}) + b'{"id":3,"day":"2019-02-01"}')
    columns = [("id", "bigint"), ("day", "date"), ("v", "text"), ("rest", "jsonb")]
    task = make_task(decoder=JsonLinesDecoder(extra="rest"), columns=columns)(date=D1)
    assert run_task(task).status == SUCCESS
    assert rows(stack) == [(1, D1, "a", {"k": 1}), (2, D1, "b", None), (3, D1, None, None)]


def test_extra_must_name_a_declared_jsonb_column(stack, make_task):
    stack.put("d/2019-02-01/a.jsonl", lines({"id": 1, "day": "2019-02-01"}))
    with pytest.raises(lp.ConfigurationError, match=r"JsonLinesDecoder\(extra='v'\) must name a declared jsonb column, "
                                                    r"not text"):
        make_task(decoder=JsonLinesDecoder(extra="v"))(date=D1).run()


def test_a_line_that_is_not_json_names_the_key_and_line_and_keeps_nothing(stack, make_task):
    stack.put("d/2019-02-01/a.jsonl", lines({"id": 1, "day": "2019-02-01"}, {"id": 2, "day": "2019-02-01"}) +
              b'{"id": 3, "day": "2019-02-01"\n' + lines({"id": 4, "day": "2019-02-01"}))
    with pytest.raises(BadInputError, match=r"a\.jsonl line 3: the line is not JSON: ") as info:
        make_task(decoder=JsonLinesDecoder())(date=D1).run()
    assert info.value.line == 3
    assert stack.markers(f"{stack.schema}.t") == {} and rows(stack) == []


def test_a_value_that_does_not_fit_its_column_names_the_key_and_line(stack, make_task):
    good = [{"id": n, "day": "2019-02-01"} for n in range(1, 2000)]
    stack.put("d/2019-02-01/a.jsonl", lines(*good[:1500], {"id": "x1", "day": "2019-02-01"}, *good[1500:]))
    with pytest.raises(BadInputError, match=r'a\.jsonl line 1501: invalid input syntax for type bigint: "x1"'):
        make_task(decoder=JsonLinesDecoder())(date=D1).run()
    assert rows(stack) == []


def test_a_table_constraint_broken_far_from_the_first_row_names_its_line(stack, make_task):
    """The duplicate of line 3 is line 9000, in another window of the search: still found, with its line."""
    stack.execute(f"CREATE SCHEMA {stack.schema}")
    stack.execute(f"CREATE TABLE {stack.schema}.t (id bigint PRIMARY KEY, day date, v text)")
    ids = list(range(1, 10_001))
    ids[8999] = 3
    stack.put("d/2019-02-01/a.jsonl", lines(*({"id": n, "day": "2019-02-01"} for n in ids)))
    with pytest.raises(BadInputError, match=r"a\.jsonl line 9000: duplicate key value violates unique constraint"):
        make_task(decoder=JsonLinesDecoder())(date=D1).run()
    assert rows(stack) == []


@pytest.mark.parametrize("line, reason", [
    (b'{"id": 2, "day": "2019-02-01", "v": "a\x01b"}', r"the line is not JSON: a control character \(0x01, 0x02 or "
                                                       r"0x03\) must be escaped"),  # COPY's quote byte
    (b'{"id": 2, "day": "2019-02-01", "v": "a\x02b"}', r"the line is not JSON: a control character"),  # COPY's delimiter
    (b"\\.", r'the line is not JSON: token "\\" is invalid'),                                  # COPY's end marker
    (b"[1, 2]", r"the line is not a JSON object \(cannot call populate_composite on an array\)"),
    (b"   ", "the line is not JSON: the input string ended unexpectedly"),                     # blanks: not empty
])
def test_lines_that_copy_could_misread_fail_as_themselves(stack, make_task, line, reason):
    stack.put("d/2019-02-01/a.jsonl", lines({"id": 1, "day": "2019-02-01"}, line, {"id": 3, "day": "2019-02-01"}))
    with pytest.raises(BadInputError, match=rf"a\.jsonl line 2: {reason}"):
        make_task(decoder=JsonLinesDecoder())(date=D1).run()
    assert rows(stack) == []


def test_quarantine_sets_bad_lines_aside_and_loads_the_others(stack, make_task):
    body = lines({"id": 1, "day": "2019-02-01", "v": "a"}, b"not json", {"id": 3, "day": "2019-02-01"},
                 {"id": "x4", "day": "2019-02-01"}, {"id": 5, "day": "2019-02-31"}, {"id": 6, "day": "2019-02-01"})
    stack.put("d/2019-02-01/a.jsonl", body)
    stack.put("d/2019-02-01/b.jsonl.gz", gzip.compress(lines({"id": 7, "day": "2019-02-01"}) + b"\xff\xfe\n" +
                                                       lines({"id": 9, "day": "2019-02-01"})))
    task = make_task(decoder=JsonLinesDecoder())(date=D1, max_bad_rows=4)
    assert run_task(task).status == SUCCESS
    assert [r[0] for r in rows(stack)] == [1, 3, 6, 7, 9]
    got = [(k.rsplit("/", 1)[1], n, raw, err.split(":")[0]) for k, n, raw, err in rejects(stack)]
    assert got == [
        ("a.jsonl", 2, "not json", "the line is not JSON"),
        ("a.jsonl", 4, '{"id": "x4", "day": "2019-02-01"}', "invalid input syntax for type bigint"),
        ("a.jsonl", 5, '{"id": 5, "day": "2019-02-31"}', "date/time field value out of range"),
        ("b.jsonl.gz", 2, "\\xff\\xfe", "invalid byte sequence for encoding \"UTF8\""),
    ]
    marker = stack.query(f"SELECT rows_loaded, rows_rejected, source_objects FROM {stack.marker_schema}.partition_marker")
    assert marker[0][:2] == (5, 4)
    assert [(s["rows"], s["rejected"]) for s in marker[0][2]] == [(3, 3), (2, 1)]


def test_quarantine_sets_aside_only_the_lines_that_hold_copy_control_bytes(stack, make_task):
    """0x01 is COPY's quote here: the segmented copy must not take it for one and join lines."""
    stack.put("d/2019-02-01/a.jsonl", lines({"id": 1, "day": "2019-02-01"}, b'{"id": 2, "v": "\x01"}',
                                            {"id": 3, "day": "2019-02-01"}, b'{"id": 4, "v": "\x01\x02"}',
                                            {"id": 5, "day": "2019-02-01"}))
    assert run_task(make_task(decoder=JsonLinesDecoder())(date=D1, max_bad_rows=2)).status == SUCCESS
    assert [r[0] for r in rows(stack)] == [1, 3, 5]
    assert [(n, raw) for _, n, raw, _ in rejects(stack)] == [(2, '{"id": 2, "v": "\x03"}'), (4, '{"id": 4, "v": "\x03\x03"}')]


def test_quarantine_fails_the_load_past_max_bad_rows(stack, make_task):
    stack.put("d/2019-02-01/a.jsonl", lines({"id": "x1", "day": "2019-02-01"}, {"id": "x2", "day": "2019-02-01"}))
    with pytest.raises(BadInputError, match=r"more than max_bad_rows=1 bad rows.*line 2"):
        make_task(decoder=JsonLinesDecoder())(date=D1, max_bad_rows=1).run()
    assert rows(stack) == [] and stack.markers(f"{stack.schema}.t") == {}


def test_lineage_and_the_date_from_the_path_fill_their_columns(stack, make_task):
    stack.put("d/2019-02-01/a.jsonl", lines({"id": 1, "v": "a"}, {"id": 2, "v": "b"}))
    task = make_task(decoder=JsonLinesDecoder(), columns=[("id", "bigint"), ("v", "text")],
                     date_from=lp.partition_date(), lineage=lp.Lineage(key="source_key"))(date=D1)
    assert run_task(task).status == SUCCESS
    assert rows(stack, "id, day, source_key") == [(1, D1, "d/2019-02-01/a.jsonl"), (2, D1, "d/2019-02-01/a.jsonl")]


@pytest.mark.parametrize("reader", ["arrow", "postgres"])
def test_rows_of_another_date_fail_the_load_as_for_csv(stack, make_task, monkeypatch, reader):
    """Arrow's COPY goes straight into the table under the partition's guard: a load needs no count after it, and a
    row of another date makes it give way to PostgreSQL's path, whose lines go through a stage and are counted."""
    if reader == "arrow":
        pytest.importorskip("pyarrow")
    counted = []
    real = db.count_partition
    monkeypatch.setattr(db, "count_partition", lambda tx, column: counted.append(column) or real(tx, column))
    stack.put("d/2019-02-01/a.jsonl", lines({"id": 1, "day": "2019-02-01"}))
    assert run_task(make_task(decoder=JsonLinesDecoder(reader=reader))(date=D1)).status == SUCCESS
    assert counted == ([] if reader == "arrow" else ["day"])
    stack.put("d/2019-02-01/a.jsonl", lines({"id": 1, "day": "2019-02-01"}, {"id": 2, "day": "2019-02-02"}))
    with pytest.raises(BadInputError, match=r": 1 of 2 rows copied from s3://\S+/ \(d/2019-02-01/a.jsonl\) have day "
                                            r"other than 2019-02-01$"):
        make_task(decoder=JsonLinesDecoder(reader=reader))(date=D1, force=True).run()
    assert rows(stack, "id") == [(1,)]


def test_the_demo_refunds_load_as_the_sample_wrote_them(stack):
    from luigi_pipelines.devstack.demo import seed_refunds
    from luigi_pipelines.devstack.sample import refund_lines
    from luigi_pipelines.pipelines.transactions import LoadRefunds

    stack.set_config("transactions", "refunds_table", f"{stack.schema}.refund")
    assert seed_refunds(stack.s3.endpoint_url, stack.s3.env, stack.bucket, D1, days=2) == 21 + 22
    for day in (D1, D1 + datetime.timedelta(days=1)):
        assert run_task(LoadRefunds(date=day)).status == SUCCESS
    got = stack.query(f"SELECT id, txn_id, refunded_at, amount, reason, channel, attributes, refund_date "
                      f"FROM {stack.schema}.refund ORDER BY id")
    expected = []
    for day in (D1, D1 + datetime.timedelta(days=1)):
        for line in refund_lines(day, 20 + day.day):
            r = json.loads(line)
            expected.append((r["id"], r["txn_id"], datetime.datetime.fromisoformat(r["refunded_at"]),
                             decimal.Decimal(r["amount"]), r.get("reason"), r["channel"],
                             {"trace": r["trace"]} if "trace" in r else None, day))
    assert got == sorted(expected)
    assert {r[4] for r in got} == {'customer said "never arrived"', "duplicate charge \\ retried", "défectueux ✗", None}
    assert any(r[6] for r in got)


# -- lines whose keys name no declared column, scope keys, lines PostgreSQL cannot take (issue 16) --

def test_a_line_whose_keys_name_no_declared_column_is_a_bad_row_naming_a_key_that_differs_in_case(stack, make_task):
    """Before: ``{}`` and ``{"ID": 3}`` loaded as rows of NULLs, exit 0."""
    load = make_task(decoder=JsonLinesDecoder(), columns=[("id", "bigint"), ("v", "text")], date_from=lp.partition_date())
    stack.put("d/2019-02-01/a.jsonl", lines({"id": 1, "v": "a"}, {"ID": 3, "V": "b"}, {"id": 4}))
    with pytest.raises(BadInputError, match=r'a\.jsonl line 2: no key of the line names a declared column '
                                            r'\(id, v\): "ID" is not "id", "V" is not "v"$'):
        load(date=D1).run()
    stack.put("d/2019-02-01/a.jsonl", lines({"id": 1, "v": "a"}, {}))
    with pytest.raises(BadInputError, match=r"a\.jsonl line 2: the line is an empty object: no key names a declared "
                                            r"column \(id, v\)$"):
        load(date=D1).run()
    assert rows(stack) == [] and stack.markers(f"{stack.schema}.t") == {}


def test_lines_with_no_declared_key_are_set_aside_in_quarantine_mode(stack, make_task):
    stack.put("d/2019-02-01/a.jsonl", lines({"id": 1, "day": "2019-02-01"}, {}, {"Id": 3, "other": 1},
                                            {"id": 4, "day": "2019-02-01"}))
    assert run_task(make_task(decoder=JsonLinesDecoder())(date=D1, max_bad_rows=2)).status == SUCCESS
    assert [r[0] for r in rows(stack)] == [1, 4]
    assert [(n, raw, err) for _, n, raw, err in rejects(stack)] == [
        (2, "{}", "the line is an empty object: no key names a declared column (id, day, v)"),
        (3, '{"Id": 3, "other": 1}', 'no key of the line names a declared column (id, day, v): "Id" is not "id"'),
    ]


def test_unmatched_lines_ok_loads_lines_with_no_declared_key_as_rows_of_nulls(stack, make_task):
    stack.put("d/2019-02-01/a.jsonl", lines({"id": 1, "v": "a"}, {}, {"ID": 3}))
    task = make_task(decoder=JsonLinesDecoder(unmatched_lines_ok=True), columns=[("id", "bigint"), ("v", "text")],
                     date_from=lp.partition_date())(date=D1)
    assert run_task(task).status == SUCCESS
    assert rows(stack, "id, v") == [(1, "a"), (None, None), (None, None)]


def test_a_line_with_only_keys_kept_in_extra_is_not_unmatched(stack, make_task):
    stack.put("d/2019-02-01/a.jsonl", lines({"id": 1}, {"k": 2}))
    task = make_task(decoder=JsonLinesDecoder(extra="rest"), columns=[("id", "bigint"), ("rest", "jsonb")],
                     date_from=lp.partition_date())(date=D1)
    assert run_task(task).status == SUCCESS
    assert rows(stack, "id, rest") == [(1, None), (None, {"k": 2})]


def test_a_line_that_is_not_json_says_what_is_wrong_with_it(stack, make_task):
    stack.put("d/2019-02-01/a.jsonl", lines({"id": 1, "day": "2019-02-01"}) + b'{"id": 2, "day": "2019-02-01"\n')
    with pytest.raises(BadInputError) as info:
        make_task(decoder=JsonLinesDecoder())(date=D1).run()
    assert str(info.value).endswith("a.jsonl line 2: the line is not JSON: the input string ended unexpectedly")
    assert "raw" not in str(info.value) and info.value.line == 2 and info.value.column is None


def test_a_line_nested_too_deep_names_its_line_and_reason_or_is_set_aside(stack, make_task):
    """Before: ``COPY failed: stack depth limit exceeded``, with no line."""
    deep = b'{"id": 2, "day": "2019-02-01", "doc": ' + b"[" * 200_000 + b"]" * 200_000 + b"}"
    stack.put("d/2019-02-01/a.jsonl", lines({"id": 1, "day": "2019-02-01"}, deep, {"id": 3, "day": "2019-02-01"}))
    load = make_task(decoder=JsonLinesDecoder(), columns=TYPED)
    with pytest.raises(BadInputError, match=r"a\.jsonl line 2: the line is nested too deep for PostgreSQL "
                                            r"\(stack depth limit exceeded\)$"):
        load(date=D1).run()
    assert run_task(load(date=D1, max_bad_rows=1)).status == SUCCESS
    assert [r[0] for r in rows(stack)] == [1, 3]
    assert [(n, err) for _, n, _, err in rejects(stack)] == [
        (2, "the line is nested too deep for PostgreSQL (stack depth limit exceeded)")]
