"""Schema contracts (``contracts``, ``evolution``): a table evolved inside the load's transaction, or the load refused
with every difference; files that lack a declared column or carry an undeclared one. Real PostgreSQL and S3."""
from __future__ import annotations

import datetime
import io
import json

import pytest
from luigi.execution_summary import LuigiStatusCode

import luigi_pipelines as lp
from luigi_pipelines import BadInputError, ConfigurationError, Contract, JsonLinesDecoder
from luigi_pipelines.contracts import REWRITE, TYPE, WIDEN, declared_type, table_type, type_change
from tests.conftest import run_task

pytestmark = [pytest.mark.postgres, pytest.mark.s3]

D1, D2, D3, D4 = (datetime.date(2019, 2, d) for d in range(1, 5))
OLD = [("id", "bigint"), ("day", "date"), ("v", "text")]
NEW = [*OLD, ("w", "integer")]
BY_NAME = lp.CsvFormat(by_name=True)
SUCCESS = LuigiStatusCode.SUCCESS


# -- the contract itself (pure) --------------------------------------------------------------------------------


def test_a_contract_is_declared_by_shorthand_or_in_full():
    assert Contract.of(None) == Contract() == Contract("freeze", "ignore", "kind")
    assert Contract.of("evolve") == Contract(columns="evolve", extra_fields="ignore", types="evolve")
    assert Contract.of("freeze") == Contract(columns="freeze", extra_fields="refuse", types="freeze")
    assert not Contract().evolves and Contract(types="evolve").evolves
    with pytest.raises(ValueError, match=r"Contract\(columns='discard_row'\): one of 'freeze', 'evolve'"):
        Contract(columns="discard_row")
    with pytest.raises(ValueError, match=r"contract = 'loose': a Contract\(...\), 'evolve' or 'freeze'"):
        Contract.of("loose")


@pytest.mark.parametrize("old, new, change", [
    ("character varying(10)", "character varying(20)", WIDEN),
    ("character varying(10)", "text", WIDEN),
    ("character varying(10)", "character varying", WIDEN),
    ("character varying(20)", "character varying(10)", TYPE),
    ("text", "character varying(10)", TYPE),
    ("numeric(10,2)", "numeric(12,2)", WIDEN),
    ("numeric(10,2)", "numeric", WIDEN),
    ("numeric(10,2)", "numeric(12,4)", REWRITE),
    ("numeric(10,2)", "numeric(10,4)", TYPE),
    ("numeric", "numeric(12,2)", TYPE),
    ("integer", "bigint", REWRITE),
    ("smallint", "integer", REWRITE),
    ("bigint", "integer", TYPE),
    ("real", "double precision", REWRITE),
    ("integer", "numeric", REWRITE),
    ("text", "integer", TYPE),
    ("bigint", "bigint", None),
])
def test_type_changes_are_widenings_with_or_without_a_rewrite_or_refused(old, new, change):
    assert type_change(old, new) == change


def test_declared_types_read_as_the_catalog_shows_them():
    assert declared_type("varchar(20)", "character varying") == "character varying(20)"
    assert declared_type("decimal( 12 )", "numeric") == "numeric(12,0)"
    assert declared_type("timestamptz(3)", "timestamp with time zone") == "timestamp with time zone"
    assert table_type("timestamp(3) with time zone") == "timestamp with time zone"
    assert table_type("numeric(12,2)") == "numeric(12,2)"


# -- a range whose files gain a column halfway -------------------------------------------------------------------


def _csv(day: datetime.date, ids: range, w: bool) -> str:
    return ("id,day,v" + (",w" if w else "") + "\n"
            + "".join(f"{n},{day},v{n}" + (f",{n * 10}" if w else "") + "\n" for n in ids))


def _jsonl(day: datetime.date, ids: range, w: bool) -> str:
    return "".join(json.dumps({"id": n, "day": str(day), "v": f"v{n}", **({"w": n * 10} if w else {})}) + "\n"
                   for n in ids)


def _parquet(day: datetime.date, ids: range, w: bool) -> bytes:
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    columns = {"id": list(ids), "day": [day] * len(ids), "v": [f"v{n}" for n in ids]}
    if w:
        columns["w"] = [n * 10 for n in ids]
    sink = io.BytesIO()
    pq.write_table(pa.table(columns), sink)
    return sink.getvalue()


FORMATS = {
    "csv": (_csv, "a.csv", {"csv": BY_NAME}),
    "jsonl": (_jsonl, "a.jsonl", {"decoder": JsonLinesDecoder()}),
    "parquet": (_parquet, "a.parquet", {}),
}


def _format(name: str):
    write, key, attrs = FORMATS[name]
    if name == "parquet":
        attrs = {"decoder": lp.ParquetDecoder()}
    return write, key, attrs


def _put_range(stack, name: str, days: dict[datetime.date, bool]) -> None:
    write, key, _ = _format(name)
    for n, (day, w) in enumerate(days.items()):
        stack.put(f"d/{day}/{key}", write(day, range(n * 10 + 1, n * 10 + 4), w))


def _rows(stack, columns: str = "day, id, v, w") -> list[tuple]:
    return stack.query(f"SELECT {columns} FROM {stack.schema}.t ORDER BY day, id")


def _columns(stack) -> list[tuple]:
    return stack.query("SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid = "
                       "to_regclass(%s) AND attnum > 0 AND NOT attisdropped ORDER BY attnum", (f"{stack.schema}.t",))


@pytest.mark.parametrize("name", ["csv", "jsonl", "parquet"])
def test_a_range_whose_files_gain_a_column_evolves_the_table_in_the_load(stack, make_task, name):
    _put_range(stack, name, {D1: False, D2: False, D3: True, D4: True})
    _, _, attrs = _format(name)
    old = make_task(columns=OLD, **attrs)
    assert run_task(old(date=D1)).status == SUCCESS  # the table is made in the old shape
    new = make_task(columns=NEW, contract="evolve", **attrs)
    result = lp_build([new(date=d) for d in (D1, D2, D3, D4)])
    assert result.status == SUCCESS, result.summary_text
    assert _columns(stack)[-1] == ("w", "integer")
    rows = _rows(stack)
    assert [(day, w) for day, _, _, w in rows] == [(D1, None)] * 3 + [(D2, None)] * 3 + [
        (D3, 210), (D3, 220), (D3, 230), (D4, 310), (D4, 320), (D4, 330)]
    assert set(stack.markers(f"{stack.schema}.t")) == {D1, D2, D3, D4}
    assert run_task(new(date=D1, force=True)).status == SUCCESS  # an old date reloads: its files still lack w
    assert _rows(stack)[:3] == [(D1, 1, "v1", None), (D1, 2, "v2", None), (D1, 3, "v3", None)]


def lp_build(tasks):
    import luigi
    return luigi.build(tasks, local_scheduler=True, detailed_summary=True, log_level="WARNING")


@pytest.mark.parametrize("name", ["csv", "jsonl", "parquet"])
def test_a_range_under_freeze_stops_at_the_first_changed_date_naming_every_difference(stack, make_task, name):
    _put_range(stack, name, {D1: False, D2: False, D3: True})
    write, key, attrs = _format(name)
    frozen = make_task(columns=OLD, contract="freeze", **attrs)
    for day in (D1, D2):
        assert run_task(frozen(date=day)).status == SUCCESS
    before = _rows(stack, "day, id, v")
    with pytest.raises(BadInputError) as refused:
        frozen(date=D3).run()
    url = f"s3://{stack.bucket}/d/{D3}/{key}"
    if name == "jsonl":  # line by line: the first line names its keys
        assert str(refused.value) == (f"{url} line 1: keys no column declares (extra_fields='refuse'): "
                                      f'{{"w": 210}}')
    else:
        what = "header" if name == "csv" else "Parquet file"
        assert str(refused.value) == f"{url}: the {what} has field no column declares: 'w' (extra_fields='refuse')"
    assert run_task(frozen(date=D3)).status != SUCCESS
    assert _rows(stack, "day, id, v") == before and set(stack.markers(f"{stack.schema}.t")) == {D1, D2}
    assert [c for c, _ in _columns(stack)] == ["id", "day", "v"]


def test_under_freeze_a_file_that_lacks_and_adds_columns_names_both(stack, make_task):
    stack.put(f"d/{D1}/a.csv", "id,day,x,y\n1,2019-02-01,?,!\n")
    with pytest.raises(BadInputError, match=r"a.csv: the header lacks the declared column 'v'; the header has fields "
                                             r"no column declares: 'x', 'y' \(extra_fields='refuse'\)$"):
        make_task(columns=OLD, csv=BY_NAME, contract="freeze")(date=D1).run()


def test_under_freeze_every_difference_of_the_table_is_listed_with_one_statement(stack, make_task):
    stack.execute(f"CREATE SCHEMA {stack.schema}; CREATE TABLE {stack.schema}.t (id integer, day date, "
                  f"v varchar(10), n text NOT NULL)")
    stack.put(f"d/{D1}/a.csv", _csv(D1, range(1, 3), True))
    columns = [("id", "bigint"), ("day", "date"), ("v", "varchar(20)"), ("w", "integer")]
    with pytest.raises(ConfigurationError) as refused:
        make_task(columns=columns, contract="freeze")(date=D1).run()
    t = f"{stack.schema}.t"
    assert str(refused.value) == (
        f"LoadT: {t} does not match the declaration, 4 problems: column 'id' of {t} is integer, declared bigint: a "
        f"widening that rewrites the table; column 'v' of {t} is character varying(10), declared varchar(20): a "
        f"widening without a rewrite; table {t} has no column 'w' (integer); column 'n' of {t} (text) is NOT NULL "
        f"without a default, and no load fills it (not declared): every row would fail; run once: ALTER TABLE "
        f'"{stack.schema}"."t" ALTER COLUMN "id" TYPE bigint USING "id"::bigint, ALTER COLUMN "v" TYPE varchar(20) '
        f'USING "v"::varchar(20), ADD COLUMN "w" integer, ALTER COLUMN "n" DROP NOT NULL '
        f"(Contract(columns='freeze', extra_fields='refuse', types='freeze')); it rewrites {t} (0.0 MiB with its "
        f"indexes, about 0 rows) under an ACCESS EXCLUSIVE lock: run it when readers can wait, or let the loads do it "
        f"with types='evolve_with_rewrite'; a column is never renamed by a load: if 'w' was renamed, rename it "
        f"instead (ALTER TABLE ... RENAME COLUMN old TO w)")
    assert stack.markers(t) == {}


def test_without_a_contract_a_missing_column_is_refused_as_before(stack, make_task):
    stack.put(f"d/{D1}/a.csv", _csv(D1, range(1, 3), False))
    stack.put(f"d/{D2}/a.csv", _csv(D2, range(1, 3), False))
    assert run_task(make_task(columns=OLD)(date=D1)).status == SUCCESS
    with pytest.raises(ConfigurationError, match=rf"^LoadT: table {stack.schema}.t has no column 'w' \(integer\); run "
                                                  rf'once: ALTER TABLE "{stack.schema}"."t" ADD COLUMN "w" integer$'):
        make_task(columns=NEW, csv=BY_NAME)(date=D2).run()
    stack.execute(f"ALTER TABLE {stack.schema}.t ADD COLUMN w integer")
    with pytest.raises(BadInputError, match=r"the header lacks the declared column 'w' \(it has 'id', 'day', 'v'\)$"):
        make_task(columns=NEW, csv=BY_NAME)(date=D2).run()


# -- types -------------------------------------------------------------------------------------------------------


def test_evolve_widens_without_a_rewrite_and_refuses_a_rewrite_unless_opted_in(stack, make_task):
    stack.execute(f"CREATE SCHEMA {stack.schema}; CREATE TABLE {stack.schema}.t (id integer, day date, "
                  f"v varchar(3), n numeric(5,2)); INSERT INTO {stack.schema}.t VALUES (1, '2019-01-01', 'abc', 1.5)")
    node = stack.query("SELECT relfilenode FROM pg_class WHERE oid = %s::regclass", (f"{stack.schema}.t",))
    stack.put(f"d/{D1}/a.csv", "id,day,v,n\n2,2019-02-01,abcdefgh,123.25\n")
    columns = [("id", "integer"), ("day", "date"), ("v", "varchar(10)"), ("n", "numeric(8,2)")]
    assert run_task(make_task(columns=columns, contract="evolve")(date=D1)).status == SUCCESS
    assert _columns(stack) == [("id", "integer"), ("day", "date"), ("v", "character varying(10)"),
                               ("n", "numeric(8,2)")]
    assert stack.query("SELECT relfilenode FROM pg_class WHERE oid = %s::regclass", (f"{stack.schema}.t",)) == node
    wide = [("id", "bigint"), *columns[1:]]
    with pytest.raises(ConfigurationError, match=r"column 'id' of \S+ is integer, declared bigint: a widening that "
                                                  r"rewrites the table; run once: .* it rewrites \S+ \(0.0 MiB with "
                                                  r"its indexes, about \d+ rows\)"):
        make_task(columns=wide, contract="evolve")(date=D1).run()
    rewrite = Contract(columns="evolve", types="evolve_with_rewrite")
    assert run_task(make_task(columns=wide, contract=rewrite)(date=D1, force=True)).status == SUCCESS
    assert _columns(stack)[0] == ("id", "bigint")
    narrow = [("id", "bigint"), ("day", "date"), ("v", "varchar(5)"), ("n", "numeric(8,2)")]
    with pytest.raises(ConfigurationError, match=r"column 'v' of \S+ is character varying\(10\), declared varchar\(5\): "
                                                  r'never changed by a load \(a narrowing, or another type\); run once: '
                                                  r'ALTER TABLE \S+ ALTER COLUMN "v" TYPE varchar\(5\) USING'):
        make_task(columns=narrow, contract=rewrite)(date=D1).run()


# -- merge tables, lineage, extra fields -------------------------------------------------------------------------


def _merge_task(stack, columns):
    return type("MergeT", (lp.MergePartition,), {
        "bucket": stack.bucket, "key_prefix": "d/{date:%Y-%m-%d}/", "table": f"{stack.schema}.t", "columns": columns,
        "merge_key": ("id",), "csv": BY_NAME, "contract": "evolve", "__module__": __name__})


def test_a_merged_table_evolves_through_its_stage(stack):
    stack.put(f"d/{D1}/a.csv", "id,v\n1,a\n2,b\n")
    stack.put(f"d/{D2}/a.csv", "id,v,w\n2,B,20\n3,c,30\n")
    assert run_task(_merge_task(stack, [("id", "bigint"), ("v", "text")])(date=D1)).status == SUCCESS
    new = _merge_task(stack, [("id", "bigint"), ("v", "text"), ("w", "integer")])
    assert run_task(new(date=D2)).status == SUCCESS
    assert stack.query(f"SELECT id, v, w FROM {stack.schema}.t ORDER BY id") == [(1, "a", None), (2, "B", 20),
                                                                               (3, "c", 30)]


def test_a_lineage_column_added_later_leaves_older_rows_null(stack, make_task):
    stack.put(f"d/{D1}/a.csv", _csv(D1, range(1, 3), False))
    stack.put(f"d/{D2}/a.csv", _csv(D2, range(1, 3), False))
    assert run_task(make_task(columns=OLD)(date=D1)).status == SUCCESS
    keyed = make_task(columns=OLD, contract="evolve", lineage=lp.Lineage(key="source_key", loaded_at="loaded_at"))
    assert run_task(keyed(date=D2)).status == SUCCESS
    rows = stack.query(f"SELECT day, source_key, loaded_at IS NOT NULL FROM {stack.schema}.t ORDER BY day, id")
    assert rows == [(D1, None, False)] * 2 + [(D2, f"d/{D2}/a.csv", True)] * 2


def test_extra_fields_refused_under_evolve_too(stack, make_task):
    stack.put(f"d/{D1}/a.csv", _csv(D1, range(1, 3), True))
    with pytest.raises(BadInputError, match=r"a.csv: the header has field no column declares: 'w'"):
        make_task(columns=OLD, csv=BY_NAME, contract=Contract(columns="evolve", extra_fields="refuse"))(date=D1).run()
    assert run_task(make_task(columns=OLD, csv=BY_NAME, contract="evolve")(date=D1)).status == SUCCESS


def test_json_extra_with_refuse_is_a_configuration_error(stack, make_task):
    stack.put(f"d/{D1}/a.jsonl", _jsonl(D1, range(1, 3), True))
    columns = [*OLD, ("rest", "jsonb")]
    with pytest.raises(ConfigurationError, match=r"extra='rest'\) keeps the keys no column declares, which "
                                                  r"extra_fields='refuse' refuses: choose one"):
        make_task(columns=columns, decoder=JsonLinesDecoder(extra="rest"), contract="freeze")(date=D1).run()


def test_a_contract_that_is_not_one_is_a_configuration_error(make_task):
    with pytest.raises(ConfigurationError, match=r"LoadT: contract = 'sometimes': a Contract"):
        assert make_task(contract="sometimes")(date=D1).layout


def test_two_loads_that_add_the_same_column_wait_for_each_other(stack, make_task):
    """Of two loads of other dates that both found ``w`` missing, the second waits for the first's schema lock, reads
    the catalog again and finds ``w`` there: no "column already exists"."""
    import threading

    from luigi_pipelines import db
    from luigi_pipelines.devstack.local import wait_until
    from luigi_pipelines.partitions import TableName

    _put_range(stack, "csv", {D1: False, D2: True, D3: True})
    assert run_task(make_task(columns=OLD, csv=BY_NAME)(date=D1)).status == SUCCESS
    new = make_task(columns=NEW, csv=BY_NAME, contract="evolve")
    altered, release, errors = threading.Event(), threading.Event(), []

    class Holding(new):
        def before_copy(self, tx):
            altered.set()
            release.wait(60)

    def load(task):
        try:
            task.run()
        except Exception as exc:  # noqa: BLE001 - reported by the test
            errors.append(exc)

    first = threading.Thread(target=load, args=(Holding(date=D2),))
    first.start()
    assert altered.wait(60)
    second = threading.Thread(target=load, args=(new(date=D3),))
    second.start()
    key = db.schema_lock_key(TableName.parse(f"{stack.schema}.t"))
    waiting = f"SELECT pg_advisory_xact_lock(%{key[0]}, %-1)"  # psycopg2 writes -1 as " -1"
    altering = f'ALTER TABLE "{stack.schema}"."t"%'  # where it would wait without the schema lock
    wait_until(lambda: stack.query("SELECT 1 FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND (query LIKE %s "
                                   "OR query LIKE %s)", (waiting, altering)), 60, "the second load to wait", interval=0.01)
    assert stack.query("SELECT 1 FROM pg_stat_activity WHERE query LIKE %s", (waiting,))
    release.set()
    first.join(60)
    second.join(60)
    assert errors == []
    assert [(day, w) for day, _, _, w in _rows(stack)] == [(D1, None)] * 3 + [(D2, 110), (D2, 120), (D2, 130),
                                                                             (D3, 210), (D3, 220), (D3, 230)]


# -- kill -9 at random points of loads that add a column ----------------------------------------------------------

KILL_POINTS = ("start", "altered", "object", "copy", "checked", "commit", "committed")


def _kill_state(stack, table: str) -> tuple[bool, list[tuple], int | None]:
    """Whether ``table`` has ``w``; its rows of D2 (id, w); the D2 marker's row count (None: no marker)."""
    has_w = bool(stack.query("SELECT 1 FROM pg_attribute WHERE attrelid = to_regclass(%s) AND attname = 'w' AND NOT "
                             "attisdropped", (table,)))
    rows = stack.query(f"SELECT id, {'w' if has_w else 'NULL'} FROM {table} WHERE day = %s ORDER BY id", (D2,))
    marker = stack.query(f"SELECT rows_loaded FROM {stack.marker_schema}.partition_marker WHERE target_table = %s "
                         f"AND partition_date = %s", (table, D2)) if stack.has_table(stack.marker_schema,
                                                                                     "partition_marker") else []
    return has_w, rows, marker[0][0] if marker else None


@pytest.mark.slow
def test_kill_9_at_random_points_of_loads_that_add_a_column(stack, tmp_path):
    """Thirty loads, each adding the column ``w`` to its own table in the old shape and running data checks, each
    killed with SIGKILL at a
    point drawn at random (every kind of point, random objects and bytes): every table is then in the old shape
    with its old rows and no marker of the date, or in the new shape with the date's rows and a matching marker."""
    import os
    import random
    import signal
    import subprocess
    import sys

    from luigi_pipelines.devstack.local import wait_until
    from tests.conftest import ROOT

    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    objects = [_csv(D2, range(n * 1000 + 1, n * 1000 + 1001), True) for n in range(3)]
    for n, body in enumerate(objects, 1):
        stack.put(f"d/{D2}/{n}.csv", body)
    app = f"kills_{stack.schema}"[:63]
    stack.set_config("database", "application_name", app)
    config = stack.write_config(tmp_path / "kills.cfg")
    server = subprocess.Popen([sys.executable, "-m", "tests.contract_kills"], cwd=ROOT, text=True,
                              env={**stack.env(config), "KILL_BUCKET": stack.bucket}, stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, stderr=(tmp_path / "kills.log").open("w"))
    outcomes = []
    try:
        for n in range(30):
            table = f"{stack.schema}.t{n}"
            stack.execute(f"{'CREATE SCHEMA IF NOT EXISTS ' + stack.schema + ';' if n == 0 else ''} CREATE TABLE "
                          f"{table} (id bigint, day date, v text); INSERT INTO {table} VALUES (1, %s, 'old')", (D1,))
            point, number = KILL_POINTS[n % len(KILL_POINTS)], rng.randint(1, 3)
            byte = rng.randrange(len(objects[number - 1]))
            directory = tmp_path / f"kill{n}"
            directory.mkdir()
            server.stdin.write(f"{table} {D2} {point} {number} {byte} {directory}\n")
            server.stdin.flush()
            pid = int(server.stdout.readline().split()[1])
            try:
                wait_until(lambda d=directory: (d / "reached").exists(), 60, f"load {n} to reach {point}",
                           interval=0.01)
            except TimeoutError:
                pytest.fail(f"load {n} never reached {point}: {(tmp_path / 'kills.log').read_text()[-3000:]}")
            os.kill(pid, signal.SIGKILL)
            assert server.stdout.readline().split() == ["exited", str(pid), str(-signal.SIGKILL)], (seed, n, point)
            wait_until(lambda: not stack.query("SELECT 1 FROM pg_stat_activity WHERE application_name = %s", (app,)),
                       60, "PostgreSQL to discard the killed load's session", interval=0.01)
            has_w, rows, marker = _kill_state(stack, table)
            old = stack.query(f"SELECT id, day, v FROM {table} WHERE day = %s", (D1,))
            assert old == [(1, D1, "old")], (seed, n, point)
            if has_w:  # the new shape: the date's rows and its marker
                assert len(rows) == marker == 3000 and rows[0] == (1, 10), (seed, n, point, number, byte)
                checks = stack.query(f"SELECT checks FROM {stack.marker_schema}.partition_marker WHERE target_table = %s "
                                     f"AND partition_date = %s", (table, D2))[0][0]
                assert len(checks) == 4 and all(c["passed"] and c["rows"] == 3000 for c in checks), (seed, n, checks)
            else:  # the old shape: nothing of the date
                assert (rows, marker) == ([], None), (seed, n, point, number, byte)
            outcomes.append((point, has_w))
    finally:
        server.stdin.close()
        server.kill()
        server.wait(30)
    assert len(outcomes) == 30
    assert {has_w for point, has_w in outcomes if point == "committed"} == {True}
    assert {has_w for point, has_w in outcomes if point != "committed"} == {False}


def test_the_readme_example_loads_old_files_and_adds_the_column_for_new_ones(stack, tmp_path):
    """The README's ``LoadSales``, pasted into a module with the test's bucket and schema: 2019's files (no coupon)
    load NULL, a 2021 file adds the column in its load, and a reload of 2019 works afterwards."""
    import importlib.util

    from tests.test_readme import blocks

    block = next(b for b in blocks("python") if "class LoadSales(" in b)
    source = "import luigi_pipelines as lp\n\n" + block.replace('"acme-exports"', f'"{stack.bucket}"').replace(
        '"sales.orders"', f'"{stack.schema}.orders"')
    path = tmp_path / "readme_contracts.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("readme_contracts", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    old, new = datetime.date(2019, 5, 4), datetime.date(2021, 5, 4)
    stack.put("orders/2019/05/04/a.csv", "order_id,order_date,amount\n1,2019-05-04,9.50\n")
    stack.put("orders/2021/05/04/a.csv", "order_id,amount,coupon,order_date,channel\n2,3.25,SPRING,2021-05-04,web\n")
    stack.execute(f"CREATE SCHEMA {stack.schema}; CREATE TABLE {stack.schema}.orders (order_id bigint, "
                  f"order_date date, amount numeric(12,2))")  # made before coupons existed
    for day in (old, new):
        assert run_task(module.LoadSales(date=day)).status == SUCCESS
    assert run_task(module.LoadSales(date=old, force=True)).status == SUCCESS
    assert stack.query(f"SELECT order_id, amount::text, coupon FROM {stack.schema}.orders ORDER BY order_id") == [
        (1, "9.50", None), (2, "3.25", "SPRING")]
