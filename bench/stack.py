"""The benchmark's own world: a durable local PostgreSQL, a moto S3 server, a work directory, and the
helpers that point psql, the ``luigi`` command and luigid at them (per-run config files, environment)."""
from __future__ import annotations

import compileall
import contextlib
import os
import sys
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import psycopg2
import psycopg2.extensions
from psycopg2 import sql

from luigi_pipelines import sql as q
from luigi_pipelines.devstack.local import LocalS3, Luigid
from luigi_pipelines.devstack.postgres import LocalPostgres
from luigi_pipelines.partitions import TableName
from luigi_pipelines.pipelines.transactions import LoadTransactions

from .measure import ProcessRun, run_measured

ROOT = Path(__file__).resolve().parents[1]  # the project root: luigi.cfg applies to commands run here
PIPELINE_MODULE = "bench.pipeline"  # the bench's variants of the shipped tasks, and luigi's CopyToTable baseline
# The shipped example module, as a user's ``--module``: what the plain load and range commands name (bench.pipeline
# registers ~20 more tasks, whose parameters luigi's command-line parser would go over 9 times in every command).
SHIPPED_MODULE = "luigi_pipelines.pipelines.transactions"
BUCKET = "bench-transactions"
SCHEMA = "bench"
MARKER_SCHEMA = "bench_markers"
MARKER = TableName(MARKER_SCHEMA, "partition_marker")  # the load task's marker table in every bench run
_NOT_INHERITED = ("PG", "AWS_", "LUIGI_CONFIG_PATH", "BOTO_")


@dataclass
class BenchStack:
    """A running PostgreSQL and S3 plus a work directory; every server stops when the ``with`` ends."""

    pg: LocalPostgres
    s3: LocalS3
    work: Path
    interpreter: str = sys.executable  # the interpreter of the measured children: luigi commands, luigid, probes

    @classmethod
    @contextlib.contextmanager
    def running(cls, work_parent: str | None = None, python: str | None = None) -> Iterator[BenchStack]:
        with tempfile.TemporaryDirectory(prefix="luigi_pipelines-bench-", dir=work_parent) as work:
            with LocalPostgres(durable=True) as pg, LocalS3() as s3:
                stack = cls(pg, s3, Path(work), os.path.abspath(python) if python else sys.executable)
                stack.setup()
                yield stack

    def setup(self) -> None:
        for package in ("luigi_pipelines", "bench"):  # as an installed package is (PYTHONDONTWRITEBYTECODE or not)
            compileall.compile_dir(str(ROOT / package), quiet=1)
        (self.work / "downloads").mkdir()
        self.s3_client.create_bucket(Bucket=BUCKET)
        self.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(SCHEMA)))

    def server_pids(self) -> list[int | None]:
        """The PostgreSQL postmaster's and the moto server's process ids (None if not running)."""
        return [self.pg.pid, self.s3.pid if self.s3.returncode is None else None]

    # -- environment and configuration for child processes ------------------------------------------

    @property
    def env(self) -> dict[str, str]:
        """Environment of every child: libpq and AWS variables of this stack (none inherited, so a caller's
        PGPASSWORD, AWS_PROFILE or LUIGI_CONFIG_PATH cannot redirect a measurement), the project on the path."""
        inherited = {k: v for k, v in os.environ.items() if not k.startswith(_NOT_INHERITED)}
        return {**inherited, **self.pg.env, **self.s3.env, "PYTHONPATH": str(ROOT)}

    def config_file(self, name: str, table: str, extra: str = "") -> Path:
        """A LUIGI_CONFIG_PATH file (read after the project's luigi.cfg) for runs loading into ``table``."""
        path = self.work / f"{name}.cfg"
        path.write_text(
            f"[load]\nmarker_schema = {MARKER_SCHEMA}\ntemp_dir = {self.work / 'downloads'}\n\n"
            f"[transactions]\nbucket = {BUCKET}\ntable = {table}\n\n{extra}"
        )
        return path

    def luigi(self, args: Sequence[str], config: Path, timeout_s: float, ok_codes: Sequence[int] = (0,)) -> ProcessRun:
        """The real ``luigi`` command line (``args`` name the ``--module``), from the project root, measured
        (wall time, peak RSS)."""
        argv = [self.interpreter, "-m", "luigi", *args]
        return run_measured(argv, {**self.env, "LUIGI_CONFIG_PATH": str(config)}, ROOT, timeout_s, ok_codes=ok_codes)

    def python(self, args: Sequence[str], config: Path, timeout_s: float) -> ProcessRun:
        """A fresh ``python`` child with the same environment as the luigi commands."""
        return run_measured([self.interpreter, *args], {**self.env, "LUIGI_CONFIG_PATH": str(config)}, ROOT, timeout_s)

    def luigid(self) -> Luigid:
        """A fresh luigid for one measurement (no state carried over), run from the project root as the
        luigi commands are; started and stopped by a ``with``."""
        return Luigid(Path(tempfile.mkdtemp(prefix="luigid-", dir=self.work)), env=self.env, cwd=ROOT,
                      python=self.interpreter)

    def psql(self, args: Sequence[str], timeout_s: float, stdin: Path | None = None) -> ProcessRun:
        """The psql shipped with the server (same version), over the Unix socket."""
        argv = [str(self.pg.bin / "psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1", *args]
        return run_measured(argv, self.env, self.work, timeout_s, stdin=stdin)

    # -- SQL ------------------------------------------------------------------------------------------

    @contextlib.contextmanager
    def connect(self) -> Iterator[psycopg2.extensions.connection]:
        conn = psycopg2.connect(self.pg.dsn)
        try:
            yield conn
        finally:
            conn.close()

    def query(self, statement: str | sql.Composable, params: Any = None) -> list[tuple]:
        with self.connect() as conn, conn, conn.cursor() as cur:
            cur.execute(statement, params)
            return list(cur.fetchall()) if cur.description else []

    def execute(self, statement: str | sql.Composable, params: Any = None) -> None:
        self.query(statement, params)

    def checkpoint(self) -> None:
        """Flush dirty buffers and WAL so that a measurement does not pay for the previous one's writes."""
        with self.connect() as conn:
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute("CHECKPOINT")

    def create_transaction_table(self, name: str) -> TableName:
        """A fresh logged table of the transactions schema with the date index the load task creates
        (and no marker rows left from an earlier table of that name)."""
        table = TableName(SCHEMA, name)
        self.drop_table(table)
        self.forget_partitions(table)
        self.execute(q.create_table(table, q.columns_of(LoadTransactions.columns)))
        self.execute(q.create_date_index(table, LoadTransactions.date_column))
        return table

    def drop_table(self, table: TableName) -> None:
        self.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(q.table_ident(table)))

    def forget_partitions(self, table: TableName) -> None:
        if self.query("SELECT to_regclass(%s) IS NOT NULL", (str(MARKER),))[0][0]:
            self.execute(sql.SQL("DELETE FROM {} WHERE target_table = %s").format(q.table_ident(MARKER)), (str(table),))

    def count_rows(self, table: TableName) -> int:
        return int(self.query(sql.SQL("SELECT count(*) FROM {}").format(q.table_ident(table)))[0][0])

    def as_string(self, statement: sql.Composable) -> str:
        with self.connect() as conn:
            return statement.as_string(conn)

    # -- S3 -------------------------------------------------------------------------------------------

    @property
    def s3_client(self) -> Any:
        env = self.s3.env
        return boto3.client("s3", endpoint_url=self.s3.endpoint_url, aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
                            aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"], region_name=env["AWS_DEFAULT_REGION"])
