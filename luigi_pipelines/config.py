"""The luigi.Config sections of luigi_pipelines (``[database]``, ``[s3]``, ``[load]``): they only build ``settings``.

Every value may be left unset: PostgreSQL then falls back to libpq's own environment (PGHOST,
PGPORT, PGDATABASE, PGUSER, PGPASSWORD, PGSERVICE, ~/.pgpass) and S3 to boto3's standard chain
(AWS_* variables, shared files, instance roles; AWS_ENDPOINT_URL for a non-AWS endpoint).
Secrets belong in the environment, referenced from a cfg file as ``${VAR}`` if at all.
"""
from __future__ import annotations

import dataclasses
from typing import TypeVar

import luigi
from luigi.parameter import ParameterVisibility

from . import defaults  # noqa: F401 - importing it puts the package's luigi defaults (defaults.cfg) in place
from .settings import DatabaseSettings, LoadSettings, S3Settings

T = TypeVar("T")


def _build(section: luigi.Config, cls: type[T]) -> T:
    """The settings dataclass ``cls`` from a section's values (its parameters share the fields' names)."""
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    return cls(**{k: v for k, v in section.param_kwargs.items() if k in names})


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

    def settings(self) -> DatabaseSettings:
        return _build(self, DatabaseSettings)


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
    addressing_style = luigi.ChoiceParameter(
        choices=["auto", "path", "virtual"],
        default="auto",
        description="'path' (http://host/bucket/key), which self-hosted servers behind one hostname need, "
        "'virtual' (http://bucket.host/key) or 'auto' (boto3 decides)",
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

    def settings(self) -> S3Settings:
        return _build(self, S3Settings)


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
    failures_table = luigi.Parameter(
        default="partition_failure", description="table (in marker_schema) of each partition's last failed attempt"
    )
    lock_timeout_s = luigi.IntParameter(
        default=0, description="give up waiting for another loader's partition lock after this long (0: wait)"
    )

    def settings(self) -> LoadSettings:
        return _build(self, LoadSettings)


def database_settings() -> DatabaseSettings:
    """The ``[database]`` section as read now (cfg files, then defaults)."""
    return database().settings()


def s3_settings() -> S3Settings:
    """The ``[s3]`` section as read now."""
    return s3().settings()


def load_settings() -> LoadSettings:
    """The ``[load]`` section as read now."""
    return load().settings()
