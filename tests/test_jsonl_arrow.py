"""Arrow's JSON-lines reader (``luigi_pipelines.jsonl_arrow``): the same rows, values and NULLs as PostgreSQL's path,
or PostgreSQL's path itself (a doubt); the choice of reader. The comparisons load one object both ways against the
real PostgreSQL and moto's S3 server and compare the tables' rows as PostgreSQL writes them (``to_jsonb(t)::text``)."""
from __future__ import annotations

import datetime
import io
import json
import logging

import pytest

import luigi_pipelines as lp
from luigi_pipelines import BadInputError, JsonLinesDecoder
from luigi_pipelines import sql as q
from luigi_pipelines.files import SourceReader
from luigi_pipelines.jsonl_arrow import ArrowJsonRows, ArrowPlan, Doubt, arrow_kind
from luigi_pipelines.settings import LoadSettings

D1 = datetime.date(2019, 2, 1)
COLUMNS = [("id", "bigint"), ("d", "date"), ("at", "timestamptz"), ("amount", "numeric(12,2)"), ("v", "varchar(20)"),
           ("ok", "boolean"), ("f", "double precision"), ("n", "numeric"), ("doc", "jsonb")]
FALLBACK = "loading the object by PostgreSQL's path"


def lines(*objects: object) -> bytes:
    return b"".join((o if isinstance(o, bytes) else json.dumps(o).encode()) + b"\n" for o in objects)


@pytest.mark.parametrize("declared, kind", [
    ("bigint", "int"), ("INTEGER", "int"), ("numeric", "integral"), ("real", "integral"), ("float(10)", "integral"),
    ("double precision", "float"), ("float(53)", "float"), ("numeric(12, 2)", "decimal(12,2)"),
    ("decimal(50,3)", "decimal(50,3)"), ("numeric(80,2)", None), ("boolean", "bool"), ("jsonb", "jsonb"),
    ("text", "string"), ("character varying(20)", "string"), ("timestamp(3) with time zone", "string"),
    ("timestamptz", "string"), ("uuid", "string"), ("json", None), ("text[]", None), ("mood", None),
])
def test_each_declared_type_is_read_as_an_arrow_type_whose_text_postgresql_reads_alike_or_left_to_postgresql(
        declared, kind):
    assert arrow_kind(declared) == kind


def test_a_plan_leaves_a_json_extra_column_and_a_scope_key_of_another_type_to_postgresql():
    columns = q.columns_of([("id", "bigint"), ("rest", "json")])
    assert ArrowPlan.of(columns, "rest", (), False) is None
    assert ArrowPlan.of(q.columns_of([("id", "bigint")]), "", (("id", "1"),), False) is None
    assert ArrowPlan.of(q.columns_of([("id", "bigint"), ("rest", "jsonb")]), "rest", (("region", "eu"),), False)


def csv_of(data: bytes, columns=COLUMNS, extra: str = "", chunk_bytes: int = 1 << 20) -> str:
    pytest.importorskip("pyarrow")
    plan = ArrowPlan.of(q.columns_of(columns), extra, (), False)
    assert plan is not None
    rows = ArrowJsonRows(SourceReader(io.BytesIO(data), "s3://b/a.jsonl", None, strip_bom=True), plan, chunk_bytes)
    return b"".join(iter(lambda: rows.read(7), b"")).decode()


def test_rows_are_written_as_csv_in_chunks_of_whole_lines_with_nested_values_as_the_line_holds_them():
    data = lines(b'{"id": 1, "d": "2019-02-01", "amount": "12.5", "v": "a \\"q\\"", "ok": true, "f": 0.5, "n": 7, '
                 b'"doc": {"b": [1.10, 1e2], "a": null}}', {"id": 2, "doc": None}, b"", {"id": 3, "doc": "x"})
    assert csv_of(data, chunk_bytes=16) == ('1,"2019-02-01",,12.50,"a ""q""",true,0.5,7,"{""b"": [1.10, 1e2], ""a"": null}"\n'
                                            '2,,,,,,,,\n3,,,,,,,,"""x"""\n')
    extra = csv_of(lines(b'{"id": 1, "k": {"x": 1.50}, "id2": "z"}', {"id": 2}), [("id", "bigint"), ("rest", "jsonb")],
                   "rest")
    assert extra == '1,"{""k"": {""x"": 1.50}, ""id2"": ""z""}"\n2,\n'


@pytest.mark.parametrize("data, doubt", [
    (b'{"id": 1}\n   \n', "does not start with {"),                      # blanks: not JSON for PostgreSQL
    (b'{"id": 1} {"id": 2}\n', "does not start with {|Arrow read 2 rows"),  # two objects on a line
    (b'{"id": 1,\n"d": "2019-02-01"}\n', "does not start with {"),     # one object on two lines
    (b'{"id": 1, "x": NaN}\n', "NaN"),                                   # jsonb refuses NaN, Arrow takes it
    (b'{"id": 1, "x": [1, -Infinity]}\n', "NaN or Infinity"),
    (b'{"id": 1, "x": "\\u0000"}\n', "u0000"),                           # jsonb refuses \u0000 (in any key)
    (b'{"id": 1}\n\xef\xbb\xbf{"id": 2}\n', "byte-order mark"),                      # a byte-order mark inside the object
    (b'{"id": 1, "x": "\xff"}\n', "not UTF-8"),                          # in a key no column takes
    (b'{"id": 1}\r\n', "r"),                                             # COPY's line ends are PostgreSQL's business
    (b'{"id": "2"}\n', "changed from number to string"),                 # a string into bigint: PostgreSQL converts it
    (b'{"id": 1.0}\n', "int64"),                                         # 1.0 into bigint: PostgreSQL refuses it
    (b'{"n": 1.50}\n', "int64"),                                         # numeric keeps 1.50's scale, Arrow's float not
    (b'{"amount": 1.505}\n', "requires scale"),                          # numeric(12,2) rounds it
    (b'{"v": 12}\n', "changed from string to number"),                  # a number into text: jsonb's text of it
    (b'{"ok": "yes"}\n', "changed from boolean to string"),             # PostgreSQL's boolean input takes "yes"
    (b'{"f": 1e-400}\n', "underflow"),                                   # PostgreSQL: out of range
    (b'{"f": -0.0}\n', "negative zero"),                                 # jsonb's numeric has no -0
    (b'{"id": 1, "id": 2}\n', "specified twice"),                        # jsonb: the last one wins
    (b'{"ID": 1}\n', "no declared key"),                                 # the unmatched-line check names the key
    (b'{"id": 1, "doc": ' + b"[" * 1001 + b"]" * 1001 + b"}\n", "deeper than 1000"),
])
def test_what_arrow_may_read_otherwise_than_postgresql_is_a_doubt(data, doubt):
    with pytest.raises(Doubt, match=doubt):
        csv_of(data)


def test_a_line_of_null_declared_keys_is_a_doubt_unless_its_keys_are_walked():
    """``{"id": null}`` has a declared key, ``{}`` none: Arrow reads both as NULLs; walked keys (for a ``jsonb`` column
    or ``extra``) tell them apart."""
    with pytest.raises(Doubt, match="all missing or null"):
        csv_of(b'{"id": null}\n', [("id", "bigint")])
    assert csv_of(b'{"id": null}\n') == ",,,,,,,,\n"
    with pytest.raises(Doubt, match="no declared key"):
        csv_of(b'{}\n')


@pytest.fixture
def both(stack, make_task, caplog):
    """Load one object by each reader into its own table: each table's rows as PostgreSQL writes them (or the error),
    and whether Arrow's reader gave way to PostgreSQL's path."""
    pytest.importorskip("pyarrow")
    caplog.set_level(logging.INFO, logger="luigi-interface.luigi_pipelines")

    def load(data: bytes, columns=COLUMNS, **decoder) -> tuple[object, object, bool]:
        stack.put("d/2019-02-01/a.jsonl", data)
        got = []
        for reader in ("postgres", "arrow"):
            table = f"{stack.schema}.t_{reader}"
            task = make_task(decoder=JsonLinesDecoder(reader=reader, **decoder), columns=columns, table=table,
                             date_from=lp.partition_date())(date=D1)
            caplog.clear()
            try:
                task.run()
            except BadInputError as exc:
                got.append(str(exc))
            else:
                got.append(stack.query(f"SELECT to_jsonb(t)::text FROM {table} AS t ORDER BY to_jsonb(t)::text"))
            stack.execute(f"DROP TABLE IF EXISTS {table}")
            stack.execute(f"DELETE FROM {stack.marker_schema}.partition_marker")
        return got[0], got[1], FALLBACK in caplog.text

    return load



@pytest.mark.postgres
@pytest.mark.s3
def test_typed_lines_load_by_arrow_as_postgresql_loads_them(both):
    data = lines(
        {"id": 1, "d": "2019-02-01", "at": "2019-02-01T10:00:00+01:00", "amount": 12.5, "v": 'back\\slash "q" ✓\ttab',
         "ok": True, "f": 1.7976931348623157e308, "n": 123456789012345678, "doc": {"a": {}}},
        b'{"id": 6, "doc": {"b": [1.10, 1e2, -0, 1E-2]}, "amount": 1.5e1}',
        {"d": "2019-02-01", "id": 9223372036854775807, "amount": "0.10", "at": "2019-02-01 23:59:59.123456Z"},
        b"",
        {"id": -3, "v": "", "ok": False, "f": 5e-324, "amount": 1e3, "doc": "text", "unknown": [1, {"x": 2}]},
        {"id": 4, "doc": None, "v": None, "f": 2.5, "n": -0},
        '{"id": 5, "doc": {"k": 1, "k": 2}, "v": "\u00e9\\u00e9"}'.encode(),  # the last of a key wins in jsonb
        b'{"id": 7, "v": "Info NaN \\ud83d\\ude00", "doc": ["\\ud83d\\ude00", "\\u00e9"]}',  # no doubt
    )
    postgres, arrow, fell_back = both(data)
    assert arrow == postgres and len(postgres) == 7 and not fell_back


@pytest.mark.postgres
@pytest.mark.s3
def test_keys_kept_in_extra_load_by_arrow_as_postgresql_keeps_them(both):
    data = lines(b'{"id": 1, "k": {"x": 1.50, "y": [1e2]}, "z": null}', {"id": 2}, b'{"k2": "v", "k2": "w"}',
                 b'{"id": 3, "\\u006b3": 1, "k3": 2}')
    postgres, arrow, fell_back = both(data, [("id", "bigint"), ("rest", "jsonb")], extra="rest")
    assert arrow == postgres and len(postgres) == 4 and not fell_back


@pytest.mark.postgres
@pytest.mark.s3
@pytest.mark.parametrize("data", [
    lines({"id": "2", "v": 12, "ok": "yes", "n": 1.50, "f": -0.0}, {"id": 3, "v": True, "doc": [1]}),  # loads
    lines({"id": 1}, {"id": 1.0}),                                   # bigint refuses 1.0
    lines({"id": 1}, b'{"id": 2, "f": 1e-400}'),                     # out of range for double precision
    lines({"id": 1}) + b'{"id": 2, "x": NaN}\n',                     # not JSON
    lines({"id": 1}) + b"  \n",                                      # blanks: not JSON
    lines({"id": 1}, {"ID": 2}, {"id": None}),                       # no declared key; all null
    lines({"id": 1}) + b'{"id": 2, "x": "\\u0000"}\n',               # jsonb refuses \u0000
    lines({"id": 1}, {"id": 2, "amount": 1.505}),                    # numeric(12,2) rounds it
], ids=["converted", "bigint", "underflow", "nan", "blanks", "unmatched", "nul", "rounded"])
def test_lines_arrow_cannot_load_exactly_take_postgresqls_path_with_the_same_rows_or_error(both, data):
    postgres, arrow, fell_back = both(data)
    assert arrow == postgres and fell_back


@pytest.mark.postgres
@pytest.mark.s3
def test_the_setting_chooses_the_reader_and_the_decoder_overrides_it(stack, make_task, caplog):
    pytest.importorskip("pyarrow")
    caplog.set_level(logging.INFO, logger="luigi-interface.luigi_pipelines")
    stack.put("d/2019-02-01/a.jsonl", lines({"id": 1, "day": "2019-02-01", "v": 12}))  # a number into text: a doubt
    stack.set_config("load", "json_lines_reader", "postgres")
    make_task(decoder=JsonLinesDecoder())(date=D1).run()
    assert FALLBACK not in caplog.text  # Arrow's reader was not tried
    stack.execute(f"DELETE FROM {stack.marker_schema}.partition_marker")
    stack.execute(f"TRUNCATE {stack.schema}.t")
    make_task(decoder=JsonLinesDecoder(reader="arrow"))(date=D1).run()
    assert FALLBACK in caplog.text
    assert stack.query(f"SELECT id, v FROM {stack.schema}.t") == [(1, "12")]


@pytest.mark.postgres
@pytest.mark.s3
def test_a_decoder_naming_no_reader_is_a_configuration_error(stack, make_task):
    stack.put("d/2019-02-01/a.jsonl", lines({"id": 1, "day": "2019-02-01"}))
    with pytest.raises(lp.ConfigurationError, match=r"JsonLinesDecoder\(reader='fast', chunk_bytes=1048576\): the reader "
                                                    r"is one of auto, arrow, postgres"):
        make_task(decoder=JsonLinesDecoder(reader="fast"))(date=D1).run()


def test_the_reader_setting_takes_three_values():
    assert LoadSettings().json_lines_reader == "auto"
    with pytest.raises(ValueError, match="one of auto, arrow, postgres"):
        LoadSettings(json_lines_reader="fast")


@pytest.mark.postgres
@pytest.mark.s3
def test_without_pyarrow_auto_takes_postgresqls_path_and_arrow_names_the_extra(stack, make_task, monkeypatch):
    """pyarrow made not importable for the test (the package's own import of it goes through ``pyarrow_json``)."""
    from luigi_pipelines import jsonl_arrow

    def missing() -> None:
        raise ImportError("No module named 'pyarrow'")

    monkeypatch.setattr(jsonl_arrow, "pyarrow_json", missing)
    stack.put("d/2019-02-01/a.jsonl", lines({"id": 1, "day": "2019-02-01", "v": "a"}))
    with pytest.raises(lp.ConfigurationError, match=r"json_lines_reader=arrow needs pyarrow, which is not installed "
                                                    r".*pip install 'luigi-pipelines\[parquet\]'"):
        make_task(decoder=JsonLinesDecoder(reader="arrow"))(date=D1).run()
    make_task(decoder=JsonLinesDecoder())(date=D1).run()  # auto
    assert stack.query(f"SELECT id, v FROM {stack.schema}.t") == [(1, "a")]


def test_a_deep_line_among_empty_lines_is_a_doubt_and_a_declared_key_holding_nan_too():
    with pytest.raises(Doubt, match="deeper than 1000"):
        csv_of(b"\n" * 5000 + b'{"id": 1, "x": ' + b"[" * 1001 + b"]" * 1001 + b"}\n", [("id", "bigint")])
    with pytest.raises(Doubt, match="NaN or an infinity"):
        csv_of(b'{"id": 1, "f": NaN}\n', [("id", "bigint"), ("f", "float8")])
    assert csv_of(b'{"id": 1, "f": 2.5}\n{"id": 2}\n', [("id", "bigint"), ("f", "float8")]) == "1,2.5\n2,\n"


@pytest.mark.postgres
@pytest.mark.s3
def test_corrupt_gzip_data_fails_as_itself_with_either_reader(stack, make_task, json_lines_reader):
    import gzip

    body = gzip.compress(lines(*({"id": n, "day": "2019-02-01"} for n in range(20_000))))
    stack.put("d/2019-02-01/a.jsonl.gz", body[:len(body) // 2])  # truncated: not a doubt, the object's own error
    with pytest.raises(BadInputError, match=r"a\.jsonl\.gz: corrupt or truncated gzip data"):
        make_task(decoder=JsonLinesDecoder())(date=D1).run()
    assert stack.markers(f"{stack.schema}.t") == {}
