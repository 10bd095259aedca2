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
from .settings import JSON_LINES_READERS, DatabaseSettings, LoadSettings, S3Settings

T = TypeVar("T")

# Each default is declared once, on the settings dataclasses; the sections below take theirs from these.
_DATABASE, _S3, _LOAD = DatabaseSettings(), S3Settings(), LoadSettings()


def _build(section: luigi.Config, cls: type[T]) -> T:
    """The settings dataclass ``cls`` from a section's values (its parameters share the fields' names)."""
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    return cls(**{k: v for k, v in section.param_kwargs.items() if k in names})


class database(luigi.Config):  # noqa: N801 - a luigi.Config is named after its cfg section
    """Where and how to connect to PostgreSQL."""

    dsn = luigi.Parameter(
        default=_DATABASE.dsn,
        significant=False,
        visibility=ParameterVisibility.PRIVATE,
        description="libpq connection string or URI; may be empty to use PG* environment variables",
    )
    host = luigi.Parameter(default=_DATABASE.host, description="host name or Unix socket directory (default: PGHOST)")
    port = luigi.Parameter(default=_DATABASE.port, description="port (default: PGPORT or 5432)")
    dbname = luigi.Parameter(default=_DATABASE.dbname, description="database name (default: PGDATABASE)")
    user = luigi.Parameter(default=_DATABASE.user, description="user name (default: PGUSER)")
    password = luigi.Parameter(
        default=_DATABASE.password,
        significant=False,
        visibility=ParameterVisibility.PRIVATE,
        description="password; prefer PGPASSWORD or ~/.pgpass, or ${VAR} in the cfg file",
    )
    connect_timeout = luigi.IntParameter(default=_DATABASE.connect_timeout, description="seconds to wait for a connection")
    keepalives_idle = luigi.IntParameter(
        default=_DATABASE.keepalives_idle,
        description="seconds of silence before TCP keepalives start, on both ends, so a dead peer "
        "(killed worker, cut link) is noticed and its transaction and partition lock are released",
    )
    keepalives_interval = luigi.IntParameter(default=_DATABASE.keepalives_interval, description="seconds between TCP keepalives")
    keepalives_count = luigi.IntParameter(
        default=_DATABASE.keepalives_count, description="unanswered keepalives before a connection is dead")
    application_name = luigi.Parameter(default=_DATABASE.application_name, description="shown in pg_stat_activity")

    def settings(self) -> DatabaseSettings:
        return _build(self, DatabaseSettings)


class s3(luigi.Config):  # noqa: N801
    """Where and how to read S3."""

    endpoint_url = luigi.Parameter(
        default=_S3.endpoint_url, description="S3 endpoint for a non-AWS server (default: AWS_ENDPOINT_URL or AWS)"
    )
    region_name = luigi.Parameter(default=_S3.region_name, description="AWS region (default: the standard chain)")
    aws_access_key_id = luigi.Parameter(
        default=_S3.aws_access_key_id,
        significant=False, visibility=ParameterVisibility.PRIVATE, description="prefer the AWS chain"
    )
    aws_secret_access_key = luigi.Parameter(
        default=_S3.aws_secret_access_key,
        significant=False, visibility=ParameterVisibility.PRIVATE, description="prefer the AWS chain"
    )
    addressing_style = luigi.ChoiceParameter(
        choices=["auto", "path", "virtual"],
        default=_S3.addressing_style,
        description="'path' (http://host/bucket/key), which self-hosted servers behind one hostname need, "
        "'virtual' (http://bucket.host/key) or 'auto' (boto3 decides)",
    )
    download_mode = luigi.ChoiceParameter(
        choices=["auto", "single", "managed"],
        default=_S3.download_mode,
        description="'single': one streamed GET per object; 'managed': boto3's parallel ranged GETs for objects "
        "above multipart_threshold; 'auto': single against a custom endpoint_url, managed against AWS",
    )
    multipart_threshold_mb = luigi.IntParameter(
        default=_S3.multipart_threshold_mb, description="managed mode: ranged GETs above this size")
    multipart_chunksize_mb = luigi.IntParameter(
        default=_S3.multipart_chunksize_mb, description="managed mode: size of each ranged GET")
    max_concurrency = luigi.IntParameter(default=_S3.max_concurrency, description="managed mode: parallel ranged GETs")
    read_chunk_kb = luigi.IntParameter(default=_S3.read_chunk_kb, description="single mode: bytes read per chunk")
    max_attempts = luigi.IntParameter(default=_S3.max_attempts, description="botocore retry attempts per request")
    connect_timeout = luigi.IntParameter(default=_S3.connect_timeout, description="seconds to connect to S3")
    read_timeout = luigi.IntParameter(default=_S3.read_timeout, description="seconds to wait for S3 data")

    def settings(self) -> S3Settings:
        return _build(self, S3Settings)


class load(luigi.Config):  # noqa: N801
    """How partitions are loaded and where their markers live."""

    temp_dir = luigi.Parameter(
        default=_LOAD.temp_dir, description="directory of the temporary download files (default: the system temp dir)"
    )
    copy_buffer_kb = luigi.IntParameter(default=_LOAD.copy_buffer_kb, description="bytes handed to COPY per read")
    marker_schema = luigi.Parameter(default=_LOAD.marker_schema, description="schema of the marker table")
    marker_table = luigi.Parameter(default=_LOAD.marker_table, description="name of the marker table")
    rejects_table = luigi.Parameter(
        default=_LOAD.rejects_table, description="table (in marker_schema) of rows set aside by max_bad_rows"
    )
    failures_table = luigi.Parameter(
        default=_LOAD.failures_table, description="table (in marker_schema) of each partition's last failed attempt"
    )
    lock_timeout_s = luigi.IntParameter(
        default=_LOAD.lock_timeout_s, description="give up waiting for another loader's partition lock after this long (0: wait)"
    )
    json_lines_reader = luigi.ChoiceParameter(
        default=_LOAD.json_lines_reader, choices=JSON_LINES_READERS,
        description="who parses JSON lines: arrow (the parquet extra), postgres (jsonb_to_record, the exact path), "
        "auto (arrow when pyarrow is installed); arrow hands any line it cannot load exactly to postgres")

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
