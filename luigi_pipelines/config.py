"""The luigi.Config sections of luigi_pipelines: ``[database]``, ``[s3]`` and ``[load]``.

Every value may be left unset: PostgreSQL then falls back to libpq's own environment (PGHOST,
PGPORT, PGDATABASE, PGUSER, PGPASSWORD, PGSERVICE, ~/.pgpass) and S3 to boto3's standard chain
(AWS_* variables, shared files, instance roles; AWS_ENDPOINT_URL for a non-AWS endpoint).
Secrets belong in the environment, referenced from a cfg file as ``${VAR}`` if at all.
"""
from __future__ import annotations

import os
import tempfile
from typing import Any

import luigi
import psycopg2.extensions
from luigi.parameter import ParameterVisibility

from .partitions import TableName, check_identifier


class database(luigi.Config):  # noqa: N801 - a luigi.Config is named after its cfg section
    """Where and how to connect to PostgreSQL."""

    dsn = luigi.Parameter(
        default="",
        significant=False,
        visibility=ParameterVisibility.PRIVATE,
        description="libpq connection string or URI; may be empty to use PG* environment variables",
    )
    host = luigi.Parameter(default="", description="host name or Unix socket directory (default: PGHOST)")
    port = luigi.Parameter(default="", description="port (default: PGPORT or 5432)")
    dbname = luigi.Parameter(default="", description="database name (default: PGDATABASE)")
    user = luigi.Parameter(default="", description="user name (default: PGUSER)")
    password = luigi.Parameter(
        default="",
        significant=False,
        visibility=ParameterVisibility.PRIVATE,
        description="password; prefer PGPASSWORD or ~/.pgpass, or ${VAR} in the cfg file",
    )
    connect_timeout = luigi.IntParameter(default=10, description="seconds to wait for a connection")
    keepalives_idle = luigi.IntParameter(
        default=30,
        description="seconds of silence before TCP keepalives start, on both ends, so a dead peer "
        "(killed worker, cut link) is noticed and its transaction and partition lock are released",
    )
    keepalives_interval = luigi.IntParameter(default=10, description="seconds between TCP keepalives")
    keepalives_count = luigi.IntParameter(default=3, description="unanswered keepalives before a connection is dead")
    application_name = luigi.Parameter(default="luigi_pipelines", description="shown in pg_stat_activity")

    def connect_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``psycopg2.connect``; unset values are left to libpq's defaults."""
        given = {k: getattr(self, k) for k in ("host", "port", "dbname", "user", "password")}
        kwargs: dict[str, Any] = {k: v for k, v in given.items() if v}
        # Keepalives only probe a connection with nothing unacknowledged: if the link dies while one end
        # still has data in flight (say the server's last reply), that end retransmits for ~15 minutes
        # instead, holding the partition lock. TCP_USER_TIMEOUT bounds that case by the same window.
        user_timeout_ms = 1000 * (self.keepalives_idle + self.keepalives_interval * self.keepalives_count)
        server_keepalives = (
            f"-c tcp_keepalives_idle={self.keepalives_idle} -c tcp_keepalives_interval={self.keepalives_interval} "
            f"-c tcp_keepalives_count={self.keepalives_count} -c tcp_user_timeout={user_timeout_ms}"
        )
        kwargs.update(
            dsn=self.dsn,
            connect_timeout=self.connect_timeout,
            application_name=self.application_name,
            keepalives=1,
            keepalives_idle=self.keepalives_idle,
            keepalives_interval=self.keepalives_interval,
            keepalives_count=self.keepalives_count,
            tcp_user_timeout=user_timeout_ms,
            options=f"{self._user_options()} {server_keepalives}".strip(),
        )
        return kwargs

    def _user_options(self) -> str:
        """Server options the user already set (``options`` in the DSN, else ``PGOPTIONS``): ours are
        appended to them, not put in their place (a search_path or statement_timeout must survive)."""
        try:
            from_dsn = psycopg2.extensions.parse_dsn(self.dsn).get("options", "") if self.dsn else ""
        except psycopg2.ProgrammingError:
            from_dsn = ""  # a malformed DSN is reported, without its text, when connecting
        return from_dsn or os.environ.get("PGOPTIONS", "")


class s3(luigi.Config):  # noqa: N801
    """Where and how to read S3."""

    endpoint_url = luigi.Parameter(
        default="", description="S3 endpoint for a non-AWS server (default: AWS_ENDPOINT_URL or AWS)"
    )
    region_name = luigi.Parameter(default="", description="AWS region (default: the standard chain)")
    aws_access_key_id = luigi.Parameter(
        default="", significant=False, visibility=ParameterVisibility.PRIVATE, description="prefer the AWS chain"
    )
    aws_secret_access_key = luigi.Parameter(
        default="", significant=False, visibility=ParameterVisibility.PRIVATE, description="prefer the AWS chain"
    )
    download_mode = luigi.ChoiceParameter(
        choices=["auto", "single", "managed"],
        default="auto",
        description="'single': one streamed GET per object; 'managed': boto3's parallel ranged GETs for objects "
        "above multipart_threshold; 'auto': single against a custom endpoint_url, managed against AWS",
    )
    multipart_threshold_mb = luigi.IntParameter(default=64, description="managed mode: ranged GETs above this size")
    multipart_chunksize_mb = luigi.IntParameter(default=64, description="managed mode: size of each ranged GET")
    max_concurrency = luigi.IntParameter(default=8, description="managed mode: parallel ranged GETs")
    read_chunk_kb = luigi.IntParameter(default=1024, description="single mode: bytes read per chunk")
    max_attempts = luigi.IntParameter(default=5, description="botocore retry attempts per request")
    connect_timeout = luigi.IntParameter(default=10, description="seconds to connect to S3")
    read_timeout = luigi.IntParameter(default=60, description="seconds to wait for S3 data")

    def client_kwargs(self) -> dict[str, Any]:
        given = {k: getattr(self, k) for k in ("endpoint_url", "region_name", "aws_access_key_id", "aws_secret_access_key")}
        return {k: v for k, v in given.items() if v}


class load(luigi.Config):  # noqa: N801
    """How partitions are loaded and where their markers live."""

    temp_dir = luigi.Parameter(
        default="", description="directory of the temporary download files (default: the system temp dir)"
    )
    copy_buffer_kb = luigi.IntParameter(default=1024, description="bytes handed to COPY per read")
    marker_schema = luigi.Parameter(default="luigi_pipelines", description="schema of the marker table")
    marker_table = luigi.Parameter(default="partition_marker", description="name of the marker table")
    rejects_table = luigi.Parameter(
        default="rejected_rows", description="table (in marker_schema) of rows set aside by max_bad_rows"
    )
    lock_timeout_s = luigi.IntParameter(
        default=0, description="give up waiting for another loader's partition lock after this long (0: wait)"
    )

    def marker(self) -> TableName:
        return TableName(check_identifier(self.marker_schema), check_identifier(self.marker_table))

    def rejects(self) -> TableName:
        return TableName(check_identifier(self.marker_schema), check_identifier(self.rejects_table))

    def temp_directory(self) -> str:
        return self.temp_dir or tempfile.gettempdir()
