"""Security: identifiers only through psycopg2.sql, injection refused or quoted, secrets kept out of
logs, task ids, luigid and the marker table, private temp files, servers on loopback only."""
from __future__ import annotations

import ast
import contextlib
import datetime
import gzip
import json
import os
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import luigi
import psycopg2
import pytest
from luigi.execution_summary import LuigiStatusCode

import luigi_pipelines
from luigi_pipelines import CsvFormat
from luigi_pipelines.devstack.local import LocalS3, Luigid, free_port
from luigi_pipelines.devstack.postgres import LocalPostgres
from tests.conftest import ROOT, run_task

D1 = datetime.date(2019, 2, 1)
PACKAGE = Path(luigi_pipelines.__file__).parent


# -- every identifier through psycopg2.sql ------------------------------------------------------


def _sql_calls(tree: ast.AST) -> Iterator[tuple[str, ast.Call]]:
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            if node.func.attr in ("execute", "executemany", "copy_expert", "mogrify", "SQL") and node.args:
                yield node.func.attr, node


def _built_from_text(node: ast.AST) -> bool:
    """Whether ``node`` builds a string at run time: an f-string, ``%`` or ``+`` on text, ``str.format``."""
    if isinstance(node, ast.JoinedStr):
        return True
    if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Mod, ast.Add)):
        return True
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "format":
        return isinstance(node.func.value, (ast.Constant, ast.JoinedStr))  # "...".format(), not sql.SQL(...).format()
    return False


def test_sql_is_never_built_from_text():
    """No statement is an f-string, ``%`` or ``.format`` of text; ``sql.SQL`` gets only literal text
    (or a column type, which ``Column`` checks against a strict pattern)."""
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for attr, call in _sql_calls(ast.parse(path.read_text(), str(path))):
            first = call.args[0]
            where = f"{path.relative_to(PACKAGE.parent)}:{call.lineno}"
            if _built_from_text(first):
                offenders.append(f"{where}: {attr}() of a string built at run time")
            if attr == "SQL":
                literal = isinstance(first, ast.Constant) or (
                    isinstance(first, ast.IfExp) and all(isinstance(b, ast.Constant) for b in (first.body, first.orelse)))
                column_type = isinstance(first, ast.Attribute) and first.attr == "type"
                if not (literal or column_type):
                    offenders.append(f"{where}: sql.SQL({ast.unparse(first)}) is not literal text")
    assert offenders == []


# -- injection through configured names ---------------------------------------------------------

INJECTIONS = ['t"; DROP TABLE canary; --', "t; DROP TABLE canary", "t' OR '1'='1", 'a"."b', "t\x00", "t\nDROP"]


def _failure(task: luigi.Task) -> BaseException:
    """Run ``task`` through a worker and assert it failed (in scheduling or in run); return its error.

    luigi reports an error in ``complete()`` only in its log, so the error itself is taken from
    calling ``complete()`` and ``run()`` as the worker does.
    """
    result = run_task(task)
    assert result.status in (LuigiStatusCode.FAILED, LuigiStatusCode.SCHEDULING_FAILED), result.summary_text
    try:
        task.complete()
        task.run()
    except Exception as exc:  # whatever it is, the test checks its message
        return exc
    pytest.fail(f"{task} did not fail when run directly")


@pytest.fixture
def canary(stack):
    """A table that injected SQL would drop; afterwards it must be there, and no schema or table
    whose name is more than a plain identifier may exist anywhere in the database."""
    stack.execute(f"CREATE SCHEMA {stack.schema}; CREATE TABLE {stack.schema}.canary (x int); "
                  f"INSERT INTO {stack.schema}.canary VALUES (1)")
    yield
    assert stack.query(f"SELECT x FROM {stack.schema}.canary") == [(1,)]
    plain = "'^[A-Za-z_][A-Za-z0-9_$]*$'"
    assert stack.query(
        "SELECT n.nspname, c.relname FROM pg_namespace n LEFT JOIN pg_class c ON c.relnamespace = n.oid "
        f"WHERE n.nspname !~ {plain} OR c.relname !~ {plain}") == []


def _declared(stack, bad: str) -> dict[str, dict[str, Any]]:
    return {
        "table": {"table": f"{stack.schema}.{bad}"},
        "schema": {"table": f"{bad}.t"},
        "column": {"columns": [("id", "bigint"), ("day", "date"), (bad, "text")]},
        "date_column": {"date_column": bad},
    }


@pytest.mark.postgres
@pytest.mark.s3
@pytest.mark.parametrize("bad", INJECTIONS)
@pytest.mark.parametrize("where", ["table", "schema", "column", "date_column"])
def test_injection_through_declared_names_is_refused(stack, make_task, canary, where, bad):
    stack.put("d/2019-02-01/a.csv", "id,day,v\n1,2019-02-01,x\n")
    error = _failure(make_task(**_declared(stack, bad)[where])(date=D1))
    assert repr(bad)[1:-1] in str(error), str(error)  # the message shows the offending name
    assert any(reason in str(error) for reason in (
        "is not a valid SQL identifier", "must be 'table' or 'schema.table'", "is not among columns")), str(error)


@pytest.mark.postgres
@pytest.mark.s3
@pytest.mark.parametrize("bad", ["text); DROP TABLE canary; --", "text DEFAULT 'x'", "int --"])
def test_injection_through_a_column_type_is_refused(stack, make_task, canary, bad):
    stack.put("d/2019-02-01/a.csv", "id,day,v\n1,2019-02-01,x\n")
    error = _failure(make_task(columns=[("id", "bigint"), ("day", "date"), ("v", bad)])(date=D1))
    assert f"column 'v': {bad!r} is not an accepted SQL type" in str(error)


@pytest.mark.postgres
@pytest.mark.s3
@pytest.mark.parametrize("option", ["marker_schema", "marker_table", "rejects_table"])
def test_injection_through_configured_marker_names_is_refused(stack, make_task, canary, option):
    stack.put("d/2019-02-01/a.csv", "id,day,v\n1,2019-02-01,x\n")
    bad = 'm"; DROP TABLE canary; --'
    stack.set_config("load", option, bad)
    error = _failure(make_task()(date=D1))
    assert str(error) == f"{bad!r} is not a valid SQL identifier (letters, digits, _ and $; at most 63 bytes)"


@pytest.mark.postgres
@pytest.mark.s3
def test_injection_through_the_configured_table_of_the_example_pipeline_is_refused(stack, canary):
    from luigi_pipelines.pipelines.transactions import LoadTransactions

    bad = f'{stack.schema}.transaction; DROP TABLE {stack.schema}.canary; --'
    stack.set_config("transactions", "table", bad)
    stack.put("transactions/2019-02-01/a.csv", "x\n")
    error = _failure(LoadTransactions(date=D1))
    assert "must be 'table' or 'schema.table'" in str(error) or "is not a valid SQL identifier" in str(error)


@pytest.mark.postgres
@pytest.mark.s3
def test_unusual_but_valid_names_are_quoted_exactly(stack, make_task, canary):
    """Reserved words, capitals and ``$`` are legal identifiers: quoted, they load where declared."""
    stack.set_config("load", "marker_table", "Marker$Table")
    stack.put("d/2019-02-01/a.csv", "select,From,day\n1,x,2019-02-01\n")
    cls = make_task(table=f"{stack.schema}.Order", columns=[("select", "bigint"), ("From", "text"), ("day", "date")])
    assert run_task(cls(date=D1)).status == LuigiStatusCode.SUCCESS
    assert stack.query(f'SELECT "select", "From", day FROM "{stack.schema}"."Order"') == [(1, "x", D1)]
    assert stack.query(f'SELECT target_table, rows_loaded FROM "{stack.marker_schema}"."Marker$Table"') == [
        (f"{stack.schema}.Order", 1)]
    assert stack.query("SELECT to_regclass(%s) IS NULL", (f"{stack.schema}.order",)) == [(True,)]  # not folded


@pytest.mark.postgres
@pytest.mark.s3
def test_csv_options_are_literals(stack, make_task, canary):
    """COPY's options are ``sql.Literal``: a NULL marker full of SQL is just a string to match."""
    null = "'); DROP TABLE canary; --"
    stack.put("d/2019-02-01/a.csv", f"id,day,v\n1,2019-02-01,{null}\n2,2019-02-01,x\n")
    assert run_task(make_task(csv=CsvFormat(null=null))(date=D1)).status == LuigiStatusCode.SUCCESS
    assert stack.query(f"SELECT id, v FROM {stack.schema}.t ORDER BY id") == [(1, None), (2, "x")]

    stack.put("d/2019-02-02/a.csv", "id,day,v\n1,2019-02-02,x\n")
    error = _failure(make_task(csv=CsvFormat(encoding="UTF8'); DROP TABLE canary; --"))(date=D1 + datetime.timedelta(1)))
    assert "must be a valid encoding name" in str(error)


# -- secrets --------------------------------------------------------------------------------------


@pytest.mark.postgres
@pytest.mark.s3
@pytest.mark.scheduler
@pytest.mark.slow
def test_secrets_stay_out_of_logs_task_ids_luigid_and_markers(stack, tmp_path):
    pg_secret, aws_secret = f"pg-Secret-{uuid.uuid4().hex}", f"aws-Secret-{uuid.uuid4().hex}"
    # Trust authentication ignores the password and moto accepts any key, so both runs are real.
    stack.set_config("s3", "aws_access_key_id", "AKIA" + uuid.uuid4().hex[:16].upper())
    stack.set_config("s3", "aws_secret_access_key", aws_secret)
    stack.set_config("fault", "bucket", stack.bucket)
    stack.set_config("fault", "table", f"{stack.schema}.t")
    good = stack.write_config(tmp_path / "good.cfg", f"[database]\npassword = {pg_secret}\n")
    # Failing runs: the database unreachable through a DSN that carries the password, and a DSN that
    # libpq cannot parse, whose error message would quote the word after "password=" (with a space in it).
    unreachable = stack.write_config(tmp_path / "unreachable.cfg", f"[database]\npassword = {pg_secret}\n"
                                     f"dsn = postgresql://postgres:{pg_secret}@127.0.0.1:{free_port()}/test\n")
    malformed = stack.write_config(tmp_path / "malformed.cfg",
                                   f"[database]\ndsn = host=127.0.0.1 password=first {pg_secret} dbname=test\n")
    env = {"PGPASSWORD": pg_secret, "AWS_SECRET_ACCESS_KEY": aws_secret}
    stack.put("d/2019-02-01/a.csv", "id,day,v\n1,2019-02-01,x\n")
    stack.put("d/2019-02-02/a.csv", "id,day,v\n1,2019-02-02,x\n")

    outputs = []
    with Luigid(tmp_path, env={**stack.env(good), **env}, cwd=ROOT) as luigid:
        for cfg, day, code in ((good, "2019-02-01", 0), (unreachable, "2019-02-02", 35), (malformed, "2019-02-02", 35)):
            run = subprocess.run(
                [sys.executable, "-m", "luigi", "--module", "tests.fault_tasks", "LoadFaulty", "--date", day,
                 *luigid.scheduler_args, "--log-level", "DEBUG"],
                cwd=ROOT, env={**stack.env(cfg), **env}, capture_output=True, text=True, timeout=120)
            assert run.returncode == code, run.stderr[-3000:]
            outputs += [run.stdout, run.stderr]
        # the failures really happened, and were logged
        assert "Connection refused" in outputs[-3]
        assert ("luigi_pipelines.errors.ConfigurationError: [database] dsn is not a valid libpq connection string "
                "(not shown: it may hold a password)") in outputs[-1]
        for status in ("DONE", "FAILED", "PENDING"):
            outputs.append(json.dumps(luigid.api("task_list", status=status, upstream_status="")))
        outputs.append(json.dumps(luigid.api("task_search", task_str="Load")))
        assert "LoadFaulty" in outputs[-1]
    assert luigid.state_path.exists()  # luigid saved its state on the way out: searched below
    outputs += [p.read_text(errors="replace") for p in tmp_path.iterdir() if p.is_file() and p.suffix != ".cfg"]
    markers = stack.query(f"SELECT m::text FROM {stack.marker_schema}.partition_marker m")
    assert len(markers) == 1
    outputs.append(str(markers))
    from tests.fault_tasks import LoadFaulty

    task = LoadFaulty(date=D1)
    outputs += [task.task_id, str(task.to_str_params()), repr(task)]
    for text in outputs:
        assert pg_secret not in text and aws_secret not in text


# -- temporary files ------------------------------------------------------------------------------


@pytest.mark.postgres
@pytest.mark.s3
def test_temp_files_are_private_and_in_the_configured_directory(stack, make_task, monkeypatch):
    """Every temporary file (downloads, and quarantine's decoded copy) is 0600, whatever the umask,
    lives in ``[load] temp_dir``, is named after this host and process, and is gone afterwards."""
    import luigi_pipelines.objects as objects

    seen: list[tuple[str, int]] = []
    real = objects.temp_download

    @contextlib.contextmanager
    def watched(directory: str) -> Iterator[Any]:
        with real(directory) as tmp:
            fd = tmp.fileno()
            seen.append((os.readlink(f"/proc/self/fd/{fd}"), os.fstat(fd).st_mode & 0o777))
            yield tmp

    monkeypatch.setattr(objects, "temp_download", watched)
    stack.put("d/2019-02-01/a.csv", "id,day,v\n1,2019-02-01,x\nbad,2019-02-01,y\n")
    stack.put("d/2019-02-01/b.csv.gz", gzip.compress(b"id,day,v\n2,2019-02-01,z\n"))
    old_umask = os.umask(0)
    try:
        assert run_task(make_task()(date=D1, max_bad_rows=1)).status == LuigiStatusCode.SUCCESS
    finally:
        os.umask(old_umask)
    assert len(seen) == 3, seen  # two downloads, one decoded copy for quarantine
    for link, mode in seen:
        assert mode == 0o600
        assert Path(link).parent == stack.temp_dir
        assert Path(link).name.startswith(f"luigi_pipelines-{socket.gethostname()}-{os.getpid()}-"), link
    assert stack.temp_files() == []


# -- servers on loopback or a Unix socket only -----------------------------------------------------


def listening_sockets(pid: int) -> list[tuple[str, int]]:
    """The TCP addresses (ip, port) that process ``pid`` listens on, from /proc."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):
            target = os.readlink(fd)
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    found = []
    for table, family in (("tcp", socket.AF_INET), ("tcp6", socket.AF_INET6)):
        for line in Path(f"/proc/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] != "0A" or fields[9] not in inodes:  # 0A: LISTEN
                continue
            hex_ip, hex_port = fields[1].split(":")
            raw = bytes.fromhex(hex_ip)
            raw = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))  # /proc prints 32-bit words host-endian
            found.append((socket.inet_ntop(family, raw), int(hex_port, 16)))
    return found


def _loopback(ip: str) -> bool:
    return ip.startswith("127.") or ip == "::1"


@pytest.mark.postgres
def test_local_postgres_listens_on_a_unix_socket_only():
    with LocalPostgres() as pg:
        pid = int((pg.data / "postmaster.pid").read_text().split()[0])
        assert listening_sockets(pid) == []
        with psycopg2.connect(pg.dsn) as conn, conn.cursor() as cur:
            cur.execute("SELECT current_setting('listen_addresses'), current_setting('unix_socket_directories')")
            assert cur.fetchone() == ("", str(pg.socket_dir))
        conn.close()
        assert pg.socket_dir.stat().st_mode & 0o777 == 0o700  # and only its owner can reach the socket


@pytest.mark.s3
def test_local_s3_listens_on_loopback_only(s3_server: LocalS3):
    assert s3_server.pid is not None
    addresses = listening_sockets(s3_server.pid)
    assert addresses and all(_loopback(ip) for ip, _ in addresses), addresses


@pytest.mark.scheduler
def test_local_luigid_listens_on_loopback_only(tmp_path):
    with Luigid(tmp_path, cwd=ROOT) as luigid:
        addresses = listening_sockets(luigid.pid)
    assert addresses and all(_loopback(ip) for ip, _ in addresses) and luigid.port in {p for _, p in addresses}, addresses
