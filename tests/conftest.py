"""Shared fixtures: a real PostgreSQL, moto's S3 server over HTTP, and a per-test isolated stack.

PostgreSQL: ``LUIGI_PIPELINES_TEST_DSN`` if set, else 127.0.0.1:5432 (database ``test``) when it
answers, else a throw-away server that the session starts itself (``luigi_pipelines.devstack.local``).
S3: always a moto server on 127.0.0.1 started for the session.
"""
from __future__ import annotations

import datetime
import itertools
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import luigi
import luigi.configuration
import psycopg2
import pytest

from luigi_pipelines import db, runtime
from luigi_pipelines.devstack.local import LocalS3
from luigi_pipelines.devstack.postgres import LocalPostgres

ROOT = Path(__file__).resolve().parents[1]
_DEFAULT_DSN = "host=127.0.0.1 port=5432 dbname=test user=postgres connect_timeout=3"


@dataclass
class PostgresServer:
    dsn: str
    local: LocalPostgres | None = None  # set when the session started it (and so can stop it)

    @property
    def env(self) -> dict[str, str]:
        """libpq variables for child processes; our tasks read them when [database] is empty."""
        params = psycopg2.extensions.parse_dsn(self.dsn)
        names = {"host": "PGHOST", "port": "PGPORT", "dbname": "PGDATABASE", "user": "PGUSER", "password": "PGPASSWORD"}
        return {names[k]: str(v) for k, v in params.items() if k in names}


def _reachable(dsn: str) -> bool:
    try:
        psycopg2.connect(dsn).close()
        return True
    except psycopg2.OperationalError:
        return False


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PostgresServer]:
    dsn = os.environ.get("LUIGI_PIPELINES_TEST_DSN", _DEFAULT_DSN)
    if _reachable(dsn):
        yield PostgresServer(dsn)
        return
    with LocalPostgres() as local:
        yield PostgresServer(local.dsn, local)


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalS3]:
    with LocalS3(log=tmp_path_factory.mktemp("s3") / "moto.log") as server:  # kept with pytest's temp dirs
        yield server


_counter = itertools.count()


@dataclass
class Stack:
    """One test's isolated world: its own schema, marker schema, bucket and temp dir."""

    pg: PostgresServer
    s3: LocalS3
    schema: str
    marker_schema: str
    bucket: str
    temp_dir: Path
    _config: list[tuple[str, str]] = field(default_factory=list)

    # -- configuration (in-process luigi config and a file for child processes) -----------------

    def set_config(self, section: str, option: str, value: str) -> None:
        cfg = luigi.configuration.get_config()
        if not cfg.has_section(section):
            cfg.add_section(section)
        cfg.set(section, option, value)
        if (section, option) not in self._config:
            self._config.append((section, option))

    def config_text(self) -> str:
        cfg = luigi.configuration.get_config()
        sections: dict[str, list[str]] = {}
        for section, option in self._config:
            value = cfg.get(section, option).replace("%", "%%")
            sections.setdefault(section, []).append(f"{option} = {value}")
        return "\n".join(f"[{s}]\n" + "\n".join(opts) + "\n" for s, opts in sections.items())

    def write_config(self, path: Path, extra: str = "") -> Path:
        path.write_text(self.config_text() + extra)
        return path

    def env(self, config_file: Path | None = None) -> dict[str, str]:
        """Environment for a child process (luigi command, worker) pointed at this stack."""
        env = {**os.environ, **self.pg.env, **self.s3.env, "PYTHONPATH": str(ROOT)}
        if config_file is not None:
            env["LUIGI_CONFIG_PATH"] = str(config_file)
        return env

    def luigi(self, *args: str, config_file: Path, timeout: float = 300) -> subprocess.CompletedProcess:
        """Run the real ``luigi`` command line from the project root (so luigi.cfg applies)."""
        return subprocess.run([sys.executable, "-m", "luigi", *args], cwd=ROOT, env=self.env(config_file),
                              capture_output=True, text=True, timeout=timeout)

    # -- S3 and SQL helpers -----------------------------------------------------------------------

    @property
    def s3_client(self) -> Any:
        return boto3.client("s3", **{
            "endpoint_url": self.s3.endpoint_url,
            "aws_access_key_id": self.s3.env["AWS_ACCESS_KEY_ID"],
            "aws_secret_access_key": self.s3.env["AWS_SECRET_ACCESS_KEY"],
            "region_name": "us-east-1",
        })

    def put(self, key: str, body: bytes | str) -> None:
        self.s3_client.put_object(Bucket=self.bucket, Key=key, Body=body.encode() if isinstance(body, str) else body)

    def query(self, statement: str, params: Any = None) -> list[tuple]:
        with psycopg2.connect(self.pg.dsn) as conn, conn.cursor() as cur:
            cur.execute(statement, params)
            rows = cur.fetchall() if cur.description else []
        conn.close()
        return rows

    def execute(self, statement: str, params: Any = None) -> None:
        self.query(statement, params)

    def markers(self, table: str) -> dict[datetime.date, tuple]:
        rows = self.query(
            f"SELECT partition_date, rows_loaded, bytes_loaded, source_objects, finished_at FROM "
            f"{self.marker_schema}.partition_marker WHERE target_table = %s", (table,)
        ) if self.has_table(self.marker_schema, "partition_marker") else []
        return {r[0]: r[1:] for r in rows}

    def has_table(self, schema: str, table: str) -> bool:
        return self.query("SELECT to_regclass(%s) IS NOT NULL", (f"{schema}.{table}",))[0][0]

    def temp_files(self) -> list[Path]:
        return sorted(self.temp_dir.iterdir())


@pytest.fixture
def stack(pg_server: PostgresServer, s3_server: LocalS3, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Stack]:
    tag = f"{os.getpid()}_{next(_counter)}_{uuid.uuid4().hex[:6]}"
    temp_dir = tmp_path / "downloads"
    temp_dir.mkdir()
    st = Stack(pg_server, s3_server, f"lp_t_{tag}", f"lp_m_{tag}", f"lp-b-{tag.replace('_', '-')}", temp_dir)
    for name, value in {**pg_server.env, **s3_server.env}.items():
        monkeypatch.setenv(name, value)
    st.set_config("load", "marker_schema", st.marker_schema)
    st.set_config("load", "temp_dir", str(temp_dir))
    st.set_config("transactions", "bucket", st.bucket)
    st.set_config("transactions", "table", f"{st.schema}.transaction")
    st.s3_client.create_bucket(Bucket=st.bucket)
    try:
        yield st
    finally:
        cfg = luigi.configuration.get_config()
        for section, option in st._config:
            cfg.remove_option(section, option)
        for schema in (st.schema, st.marker_schema):
            st.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


@pytest.fixture
def make_task(stack: Stack) -> Any:
    """Build a LoadPartition subclass bound to this test's schema and bucket.

    Defaults: objects under ``d/<date>/``, table ``<schema>.t (id bigint, day date, v text)``.
    """
    from luigi_pipelines import CsvFormat, LoadPartition

    def factory(**attrs: Any) -> type[LoadPartition]:
        declared = {
            "bucket": stack.bucket,
            "key_prefix": "d/{date:%Y-%m-%d}/",
            "table": f"{stack.schema}.t",
            "date_column": "day",
            "columns": [("id", "bigint"), ("day", "date"), ("v", "text")],
            "csv": CsvFormat(),
            "__module__": __name__,
        }
        declared.update(attrs)
        # One name for every variant: the marker records the task family as the partition's owner,
        # and a test's variants of "the load of table t" are one owner (a test of two owners names them).
        return type(attrs.pop("__name__", "LoadT"), (LoadPartition,), declared)

    return factory


def run_task(task: luigi.Task) -> luigi.execution_summary.LuigiRunResult:
    """Run one task in-process with the local scheduler; returns luigi's run result."""
    return luigi.build([task], local_scheduler=True, detailed_summary=True, log_level="WARNING")


@pytest.fixture(autouse=True)
def _fresh_process_state() -> Iterator[None]:
    """Each test starts and ends without the process's reused connections and remembered checks (a test's
    server, bucket or monkeypatched connect must not meet an earlier test's)."""
    forget_process_state()
    yield
    forget_process_state()


def forget_process_state() -> None:
    db.close_sessions()
    runtime.forget()



JSON_LINES_READERS = ["postgres", pytest.param("arrow", marks=pytest.mark.skipif(
    __import__("importlib").util.find_spec("pyarrow") is None, reason="Arrow's JSON reader needs pyarrow"))]


@pytest.fixture(params=JSON_LINES_READERS)
def json_lines_reader(request: pytest.FixtureRequest) -> str:
    """Each JSON-lines test runs with both readers (``[load] json_lines_reader``): PostgreSQL's path and Arrow's,
    which must load the same rows or give way to PostgreSQL's path (``luigi_pipelines.jsonl_arrow``)."""
    if "stack" in request.fixturenames:
        request.getfixturevalue("stack").set_config("load", "json_lines_reader", request.param)
    return str(request.param)
