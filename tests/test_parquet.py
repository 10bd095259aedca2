"""Parquet objects (``luigi_pipelines.parquet``, the ``parquet`` extra): typed columns by name, row group by row
group, against the real PostgreSQL and moto's S3 server; truncated files and a missing pyarrow named clearly."""
from __future__ import annotations

import builtins
import datetime
import decimal
import io
import subprocess
import sys
from pathlib import Path

import pytest
from luigi.execution_summary import LuigiStatusCode

import luigi_pipelines as lp
from luigi_pipelines import BadInputError, ConfigurationError, ParquetDecoder
from tests.conftest import run_task

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

pytestmark = [pytest.mark.postgres, pytest.mark.s3]

D1 = datetime.date(2019, 2, 1)
SUCCESS = LuigiStatusCode.SUCCESS
UTC = datetime.timezone.utc
SHAPES = Path(__file__).parent / "data" / "parquet-testing-shapes"
TYPED = [("id", "bigint"), ("day", "date"), ("at", "timestamptz"), ("amount", "numeric(12,2)"), ("v", "text"),
         ("tags", "jsonb"), ("point", "jsonb"), ("ok", "boolean"), ("ratio", "double precision"),
         ("wall", "timestamp")]


def parquet_bytes(table, row_group_size: int | None = None) -> bytes:
    sink = io.BytesIO()
    pq.write_table(table, sink, row_group_size=row_group_size)
    return sink.getvalue()


def rows(stack, columns: str = "*") -> list[tuple]:
    return stack.query(f"SELECT {columns} FROM {stack.schema}.t ORDER BY 1")


def typed_table():
    text = 'back\\slash "quoted" ünïcödé ✓\nnew line'
    return pa.table({
        "v": pa.array([text, "", None, "\\."]),  # the file's order differs from the declared one
        "id": pa.array([1, 2, 3, 4], pa.int64()),
        "day": pa.array([D1] * 4, pa.date32()),
        "at": pa.array([datetime.datetime(2019, 2, 1, 10, 0, 0, 123456, tzinfo=UTC), None,
                        datetime.datetime(2019, 2, 1, 23, 59, 59, tzinfo=UTC),
                        datetime.datetime(2019, 2, 1, 0, 0, tzinfo=UTC)], pa.timestamp("us", tz="America/New_York")),
        "amount": pa.array([decimal.Decimal("12.50"), decimal.Decimal("-0.01"), None, decimal.Decimal("9999999999.99")],
                           pa.decimal128(12, 2)),
        "tags": pa.array([["a", "b"], [], None, ["\"q\""]], pa.list_(pa.string())),
        "point": pa.array([{"x": 1, "when": D1}, None, {"x": None, "when": None}, {"x": 2, "when": D1}],
                          pa.struct([("x", pa.int32()), ("when", pa.date32())])),
        "ok": pa.array([True, False, None, True]),
        "ratio": pa.array([1.5, float("inf"), None, -0.25]),
        "wall": pa.array([datetime.datetime(2019, 2, 1, 8, 30, 0, 1), None, None, None], pa.timestamp("ns")),
        "undeclared": pa.array(["never", "read", "by", "us"]),
    })


def test_parquet_loads_exact_typed_rows_by_column_name(stack, make_task):
    stack.put("d/2019-02-01/a.parquet", parquet_bytes(typed_table(), row_group_size=3))
    task = make_task(decoder=ParquetDecoder(), columns=TYPED)(date=D1)
    assert run_task(task).status == SUCCESS
    assert rows(stack) == [
        (1, D1, datetime.datetime(2019, 2, 1, 10, 0, 0, 123456, tzinfo=UTC), decimal.Decimal("12.50"),
         'back\\slash "quoted" ünïcödé ✓\nnew line', ["a", "b"], {"x": 1, "when": "2019-02-01"}, True, 1.5,
         datetime.datetime(2019, 2, 1, 8, 30, 0, 1)),
        (2, D1, None, decimal.Decimal("-0.01"), "", [], None, False, float("inf"), None),
        (3, D1, datetime.datetime(2019, 2, 1, 23, 59, 59, tzinfo=UTC), None, None, None, {"x": None, "when": None},
         None, None, None),
        (4, D1, datetime.datetime(2019, 2, 1, tzinfo=UTC), decimal.Decimal("9999999999.99"), "\\.", ['"q"'],
         {"x": 2, "when": "2019-02-01"}, True, -0.25, None),
    ]
    marker = stack.markers(f"{stack.schema}.t")[D1]
    assert marker[0] == 4 and marker[2][0]["rows"] == 4


def test_lineage_and_the_date_from_the_path_as_for_csv(stack, make_task):
    stack.put("d/2019-02-01/a.parquet", parquet_bytes(pa.table({"id": [1, 2], "v": ["a", "b"]})))
    task = make_task(decoder=ParquetDecoder(), columns=[("id", "bigint"), ("v", "text")],
                     date_from=lp.partition_date(), lineage=lp.Lineage(key="source_key"))(date=D1)
    assert run_task(task).status == SUCCESS
    assert rows(stack, "id, day, v, source_key") == [(1, D1, "a", "d/2019-02-01/a.parquet"),
                                                      (2, D1, "b", "d/2019-02-01/a.parquet")]


def test_many_row_groups_and_batches_load_every_row(stack, make_task):
    n = 10_000
    table = pa.table({"id": pa.array(range(n), pa.int64()), "day": pa.array([D1] * n, pa.date32()),
                      "v": pa.array([f"row {i}" for i in range(n)])})
    stack.put("d/2019-02-01/a.parquet", parquet_bytes(table, row_group_size=1_000))
    assert run_task(make_task(decoder=ParquetDecoder(batch_rows=333))(date=D1)).status == SUCCESS
    assert stack.query(f"SELECT count(*), count(DISTINCT id), max(v) FROM {stack.schema}.t")[0] == (n, n, "row 9999")


def test_a_value_that_does_not_fit_names_the_row_group_and_row(stack, make_task):
    ids = [str(i) for i in range(1, 11)]
    ids[6] = "x7"  # row 7 of the file: row group 3 (rows 7-9), its row 1
    table = pa.table({"id": ids, "day": pa.array([D1] * 10, pa.date32()), "v": ["a"] * 10})
    stack.put("d/2019-02-01/a.parquet", parquet_bytes(table, row_group_size=3))
    with pytest.raises(BadInputError, match=r'a\.parquet row group 3 row 1 \(row 7 of the file\) column id: '
                                            r'invalid input syntax for type bigint: "x7"'):
        make_task(decoder=ParquetDecoder())(date=D1).run()
    assert rows(stack) == [] and stack.markers(f"{stack.schema}.t") == {}


@pytest.mark.parametrize("bad_row", [1, 6, 10])
def test_a_row_of_another_date_is_refused_naming_its_row_group_and_row(stack, make_task, bad_row):
    """The COPY's partition guard names the line, told as the row group and row behind strings that hold newlines."""
    days = [D1] * 10
    days[bad_row - 1] = D1 + datetime.timedelta(days=1)
    notes = ["two\nlines", "one", "three\nshort\nlines", None, "a\nb", "x", "y\n", "z", "\n\n", "end"]
    table = pa.table({"id": list(range(1, 11)), "day": pa.array(days, pa.date32()), "v": notes})
    stack.put("d/2019-02-01/a.parquet", parquet_bytes(table, row_group_size=4))
    group, row = (bad_row - 1) // 4 + 1, (bad_row - 1) % 4 + 1
    with pytest.raises(BadInputError, match=rf"a\.parquet row group {group} row {row} \(row {bad_row} of the file\): "
                                            rf"day 2019-02-02 is not the partition's date 2019-02-01$"):
        make_task(decoder=ParquetDecoder(batch_rows=3))(date=D1).run()
    assert rows(stack) == [] and stack.markers(f"{stack.schema}.t") == {}


@pytest.mark.parametrize("bad_row", [2, 6, 8, 10])
def test_the_row_is_found_behind_strings_that_hold_newlines(stack, make_task, bad_row):
    """COPY counts a quoted newline as a line (but for the first record's): the row is still named right."""
    ids = [str(i) for i in range(1, 11)]
    ids[bad_row - 1] = f"x{bad_row}"
    notes = ["two\nlines", "one", "three\nshort\nlines", None, "a\nb", "x", "y\n", "z", "\n\n", "end"]
    table = pa.table({"id": ids, "day": pa.array([D1] * 10, pa.date32()),
                      "v": pa.array(notes).dictionary_encode() if bad_row == 10 else notes})
    stack.put("d/2019-02-01/a.parquet", parquet_bytes(table, row_group_size=4))
    group, row = (bad_row - 1) // 4 + 1, (bad_row - 1) % 4 + 1
    with pytest.raises(BadInputError, match=rf"row group {group} row {row} \(row {bad_row} of the file\) column id: "
                                            rf'invalid input syntax for type bigint: "x{bad_row}"'):
        make_task(decoder=ParquetDecoder(batch_rows=3))(date=D1).run()


@pytest.mark.parametrize("bad_row", [1, 2, 5, 7, 8])
def test_the_row_is_found_behind_carriage_returns_in_the_first_row_and_later(stack, make_task, bad_row):
    """COPY counts a quoted \\r as a line inside the first record (its line ending is not known yet), and a quoted
    \\n inside every later one: \\r\\n, lone \\r and \\n in the first row and later rows still name the right row."""
    ids = [str(i) for i in range(1, 9)]
    ids[bad_row - 1] = f"x{bad_row}"
    notes = ["cr lf\r\nthen a lone\rcr", "lone\rcr", "\r\n", None, "x\r", "y\n\r\n", "z\r\r", "end\n"]
    table = pa.table({"id": ids, "day": pa.array([D1] * 8, pa.date32()), "v": notes})
    stack.put("d/2019-02-01/a.parquet", parquet_bytes(table, row_group_size=4))
    group, row = (bad_row - 1) // 4 + 1, (bad_row - 1) % 4 + 1
    with pytest.raises(BadInputError, match=rf"row group {group} row {row} \(row {bad_row} of the file\) column id: "
                                            rf'invalid input syntax for type bigint: "x{bad_row}"'):
        make_task(decoder=ParquetDecoder(batch_rows=3))(date=D1).run()


def test_each_object_is_a_copy_of_its_own_with_its_own_first_record(stack, make_task):
    day = pa.array([D1] * 2, pa.date32())
    stack.put("d/2019-02-01/a.parquet", parquet_bytes(pa.table({"id": ["1", "2"], "day": day, "v": ["a\nb", "c\r"]})))
    stack.put("d/2019-02-01/b.parquet", parquet_bytes(pa.table({"id": ["3", "x4"], "day": day, "v": ["\r\r", "d"]})))
    with pytest.raises(BadInputError, match=r"b\.parquet row group 1 row 2 \(row 2 of the file\) column id: "):
        make_task(decoder=ParquetDecoder())(date=D1).run()


def test_quarantine_mode_does_not_apply_and_says_so(stack, make_task):
    table = pa.table({"id": ["1", "x2"], "day": pa.array([D1, D1], pa.date32()), "v": ["a", "b"]})
    stack.put("d/2019-02-01/a.parquet", parquet_bytes(table))
    with pytest.raises(BadInputError, match=r"row group 1 row 2 \(row 2 of the file\) column id: .* \(quarantine mode "
                                            r"does not apply to Parquet objects\)"):
        make_task(decoder=ParquetDecoder())(date=D1, max_bad_rows=5).run()
    assert rows(stack) == [] and stack.markers(f"{stack.schema}.t") == {}


def test_a_truncated_parquet_file_is_bad_input(stack, make_task):
    body = parquet_bytes(pa.table({"id": [1, 2], "day": pa.array([D1, D1], pa.date32()), "v": ["a", "b"]}))
    stack.put("d/2019-02-01/a.parquet", body[: len(body) // 2])
    with pytest.raises(BadInputError, match=r"a\.parquet: not a Parquet file, or a truncated one"):
        make_task(decoder=ParquetDecoder())(date=D1).run()
    assert stack.markers(f"{stack.schema}.t") == {}


def test_a_declared_column_the_file_lacks_is_named(stack, make_task):
    stack.put("d/2019-02-01/a.parquet", parquet_bytes(pa.table({"id": [1], "day": pa.array([D1], pa.date32())})))
    with pytest.raises(BadInputError, match=r"a\.parquet: the Parquet file lacks the declared column 'v' "
                                            r"\(it has 'id', 'day'\)"):
        make_task(decoder=ParquetDecoder())(date=D1).run()


def real_file(stack, name: str) -> None:
    """Put apache/parquet-testing's ``name`` (tests/data/parquet-testing-shapes, see its README) as the date's object."""
    stack.put("d/2019-02-01/a.parquet", (SHAPES / name).read_bytes())


def test_impala_strings_without_the_utf8_annotation_load_as_text(stack, make_task):
    """Impala 1.3 wrote strings as plain BYTE_ARRAY, which pyarrow reads as binary: into text, validated UTF-8."""
    real_file(stack, "alltypes_plain.parquet")
    columns = [("id", "bigint"), ("string_col", "text"), ("date_string_col", "varchar(8)")]
    assert run_task(make_task(decoder=ParquetDecoder(), columns=columns, date_from=lp.partition_date())(date=D1)).status \
        == SUCCESS
    assert rows(stack, "id, string_col, date_string_col")[:3] == [(0, "0", "01/01/09"), (1, "1", "01/01/09"),
                                                                  (2, "0", "02/01/09")]


def test_a_binary_column_loads_into_bytea_as_bytes(stack, make_task):
    real_file(stack, "binary.parquet")  # protobuf bytes 0x00 .. 0x0b, one a row
    task = make_task(decoder=ParquetDecoder(), columns=[("foo", "bytea")], date_from=lp.partition_date(),
                     date_column="day")(date=D1)
    assert run_task(task).status == SUCCESS
    assert [bytes(v) for (v,) in rows(stack, "foo")] == [bytes([i]) for i in range(12)]


def test_binary_text_is_counted_for_the_row_of_a_later_error(stack, make_task):
    table = pa.table({"id": ["1", "2", "x3"], "day": pa.array([D1] * 3, pa.date32()),
                      "v": pa.array([b"a\r\nb\rc", b"\n\n", b"z"], pa.binary())})
    stack.put("d/2019-02-01/a.parquet", parquet_bytes(table, row_group_size=2))
    with pytest.raises(BadInputError, match=r"row group 2 row 1 \(row 3 of the file\) column id: invalid input syntax"):
        make_task(decoder=ParquetDecoder())(date=D1).run()


def test_binary_that_is_not_utf8_is_a_bad_value_for_text(stack, make_task):
    table = pa.table({"id": [1, 2, 3], "day": pa.array([D1] * 3, pa.date32()),
                      "v": pa.array([b"ok", None, b"caf\xe9"], pa.binary())})
    stack.put("d/2019-02-01/a.parquet", parquet_bytes(table, row_group_size=2))
    with pytest.raises(BadInputError, match=r"a\.parquet row group 2 row 1 \(row 3 of the file\) column v: binary value "
                                            r"is not UTF-8 text \(b'caf\\xe9'\); declare the column bytea to load the bytes"):
        make_task(decoder=ParquetDecoder())(date=D1).run()
    assert rows(stack) == [] and stack.markers(f"{stack.schema}.t") == {}


def test_maps_become_json_objects_at_every_depth(stack, make_task):
    """Impala's complex-types table: a map, a list of maps, maps inside a struct; ->>'k1' reads a key."""
    real_file(stack, "nullable.impala.parquet")
    columns = [("id", "bigint"), ("int_map", "jsonb"), ("int_Map_Array", "jsonb"), ("nested_struct", "jsonb")]
    assert run_task(make_task(decoder=ParquetDecoder(), columns=columns, date_from=lp.partition_date())(date=D1)).status \
        == SUCCESS
    assert rows(stack, "id, int_map->>'k1', int_map, \"int_Map_Array\"") == [
        (1, "1", {"k1": 1, "k2": 100}, [{"k1": 1}]),
        (2, "2", {"k1": 2, "k2": None}, [{"k3": None, "k1": 1}, None, {}]),
        (3, None, {}, [None, None]), (4, None, {}, []), (5, None, {}, None), (6, None, None, None),
        (7, None, {"k1": None, "k3": None}, None)]
    assert stack.query(f"SELECT nested_struct->'g'->'g1' FROM {stack.schema}.t WHERE id = 2") == [({"H": {"i": [2.2, None]}},)]


def test_a_map_with_keys_that_are_not_strings_keys_them_by_their_text(stack, make_task):
    real_file(stack, "nested_maps.snappy.parquet")  # Spark: map<string, map<int32, boolean>>
    columns = [("b", "integer"), ("a", "jsonb")]
    assert run_task(make_task(decoder=ParquetDecoder(), columns=columns, date_from=lp.partition_date())(date=D1)).status \
        == SUCCESS
    assert [a for (a,) in rows(stack, "a")][:2] == [{"a": {"1": True, "2": False}}, {"b": {"1": True}}]
    assert stack.query(f"SELECT count(*) FROM {stack.schema}.t WHERE a->'f'->>'4' = 'false'") == [(1,)]


def test_map_keys_of_other_types_are_their_text(stack, make_task):
    table = pa.table({"id": [1], "day": pa.array([D1], pa.date32()),
                      "b": pa.array([[(True, 1), (False, 0)]], pa.map_(pa.bool_(), pa.int8())),
                      "d": pa.array([[(D1, 1)]], pa.map_(pa.date32(), pa.int8())),
                      "f": pa.array([[(1.5, 1), (float("nan"), 2), (float("-inf"), 3)]], pa.map_(pa.float64(), pa.int8())),
                      "x": pa.array([[(b"\x00\xff", 1)]], pa.map_(pa.binary(), pa.int8()))})
    stack.put("d/2019-02-01/a.parquet", parquet_bytes(table))
    columns = [("id", "bigint"), ("day", "date"), ("b", "jsonb"), ("d", "jsonb"), ("f", "jsonb"), ("x", "jsonb")]
    assert run_task(make_task(decoder=ParquetDecoder(), columns=columns)(date=D1)).status == SUCCESS
    assert rows(stack, "b, d, f, x") == [({"true": 1, "false": 0}, {"2019-02-01": 1},
                                          {"1.5": 1, "NaN": 2, "-Infinity": 3}, {"00ff": 1})]


def test_a_map_that_repeats_a_key_is_a_bad_value(stack, make_task):
    kind = pa.map_(pa.string(), pa.int64())
    table = pa.table({"id": [1, 2, 3], "day": pa.array([D1] * 3, pa.date32()),
                      "v": pa.array([[("a", 1)], [("b", 1)], [("k", 1), ("k", 2)]], kind)})
    stack.put("d/2019-02-01/a.parquet", parquet_bytes(table, row_group_size=2))
    with pytest.raises(BadInputError, match=r"a\.parquet row group 2 row 1 \(row 3 of the file\) column v: the map holds "
                                            r"the key 'k' twice; a JSON object cannot"):
        make_task(decoder=ParquetDecoder(), columns=[("id", "bigint"), ("day", "date"), ("v", "jsonb")])(date=D1).run()
    assert rows(stack) == [] and stack.markers(f"{stack.schema}.t") == {}


def test_nan_and_infinity_inside_nested_values_become_strings_as_to_jsonb_writes_them(stack, make_task):
    nan, inf = float("nan"), float("inf")
    table = pa.table({"id": [1, 2], "day": pa.array([D1] * 2, pa.date32()),
                      "v": pa.array([[1.5, nan, inf, -inf, None], []], pa.list_(pa.float64())),
                      "s": pa.array([{"x": nan}, {"x": None}], pa.struct([("x", pa.float32())])),
                      "m": pa.array([[("a", -inf)], None], pa.map_(pa.string(), pa.float64()))})
    stack.put("d/2019-02-01/a.parquet", parquet_bytes(table))
    columns = [("id", "bigint"), ("day", "date"), ("v", "jsonb"), ("s", "jsonb"), ("m", "jsonb")]
    assert run_task(make_task(decoder=ParquetDecoder(), columns=columns)(date=D1)).status == SUCCESS
    assert rows(stack, "id, v, s, m") == [(1, [1.5, "NaN", "Infinity", "-Infinity", None], {"x": "NaN"},
                                           {"a": "-Infinity"}), (2, [], {"x": None}, None)]
    assert stack.query("SELECT to_jsonb(ARRAY['NaN'::float8, 'Infinity', '-Infinity'])") == \
        [(["NaN", "Infinity", "-Infinity"],)]  # PostgreSQL's own spelling


def test_a_declared_column_the_file_holds_twice_is_named(stack, make_task):
    table = pa.table([pa.array([1]), pa.array([D1], pa.date32()), pa.array(["a"]), pa.array([2])],
                     names=["id", "day", "v", "id"])
    stack.put("d/2019-02-01/a.parquet", parquet_bytes(table))
    with pytest.raises(BadInputError, match=r"a\.parquet: the Parquet file has 2 columns named 'id', the declared column; "
                                            r"which one to load is not known: rename one in the file"):
        make_task(decoder=ParquetDecoder())(date=D1).run()
    assert stack.markers(f"{stack.schema}.t") == {}


def test_an_undeclared_column_the_file_holds_twice_is_not_read(stack, make_task):
    table = pa.table([pa.array([1]), pa.array([D1], pa.date32()), pa.array(["a"]), pa.array([2]), pa.array([3])],
                     names=["id", "day", "v", "extra", "extra"])
    stack.put("d/2019-02-01/a.parquet", parquet_bytes(table))
    assert run_task(make_task(decoder=ParquetDecoder())(date=D1)).status == SUCCESS
    assert rows(stack) == [(1, D1, "a")]


def test_an_empty_parquet_file_adds_no_rows(stack, make_task):
    empty = pa.table({"id": pa.array([], pa.int64()), "day": pa.array([], pa.date32()), "v": pa.array([], pa.string())})
    stack.put("d/2019-02-01/a.parquet", parquet_bytes(empty))
    assert run_task(make_task(decoder=ParquetDecoder())(date=D1)).status == SUCCESS
    assert stack.markers(f"{stack.schema}.t")[D1][0] == 0


def test_without_pyarrow_the_error_names_the_extra(stack, make_task, monkeypatch):
    stack.put("d/2019-02-01/a.parquet", b"PAR1")
    real_import = builtins.__import__

    def no_pyarrow(name, *args, **kwargs):
        if name == "pyarrow" or name.startswith("pyarrow."):
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_pyarrow)
    with pytest.raises(ConfigurationError, match=r"pip install 'luigi-pipelines\[parquet\]'"):
        make_task(decoder=ParquetDecoder())(date=D1).run()
    assert stack.markers(f"{stack.schema}.t") == {}


def test_pyarrow_is_imported_only_when_a_parquet_object_is_read():
    code = ("import sys, luigi_pipelines as lp, luigi_pipelines.parquet; "
            "lp.ParquetDecoder(); print(sorted(m for m in sys.modules if m.split('.')[0] == 'pyarrow'))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"
