"""Every setting of luigi_pipelines as a plain frozen dataclass: what ``db``, ``s3`` and the load pipeline take.

This module is pure (standard library only): the effects layer is used and tested with these
objects directly, without luigi. ``config.py`` holds the ``luigi.Config`` sections
(``[database]``, ``[s3]``, ``[load]``) that build them from cfg files.
"""
from __future__ import annotations

import tempfile
from dataclasses import dataclass, field

from .partitions import TableName, check_identifier


@dataclass(frozen=True)
class DatabaseSettings:
    """Where and how to connect to PostgreSQL; empty values are left to libpq's environment (PG*)."""

    dsn: str = field(default="", repr=False)
    host: str = ""
    port: str = ""
    dbname: str = ""
    user: str = ""
    password: str = field(default="", repr=False)
    connect_timeout: int = 10
    keepalives_idle: int = 30
    keepalives_interval: int = 10
    keepalives_count: int = 3
    application_name: str = "luigi_pipelines"

    @property
    def user_timeout_ms(self) -> int:
        """TCP_USER_TIMEOUT of the keepalive window: a link cut with data in flight ends as soon as an idle one."""
        return 1000 * (self.keepalives_idle + self.keepalives_interval * self.keepalives_count)


@dataclass(frozen=True)
class S3Settings:
    """Where and how to read S3; empty values are left to boto3's standard chain (AWS_*)."""

    endpoint_url: str = ""
    region_name: str = ""
    aws_access_key_id: str = field(default="", repr=False)
    aws_secret_access_key: str = field(default="", repr=False)
    addressing_style: str = "auto"
    download_mode: str = "auto"
    multipart_threshold_mb: int = 64
    multipart_chunksize_mb: int = 64
    max_concurrency: int = 8
    read_chunk_kb: int = 1024
    max_attempts: int = 5
    connect_timeout: int = 10
    read_timeout: int = 60

    def client_kwargs(self) -> dict[str, str]:
        """The keyword arguments of ``boto3.client('s3', ...)`` that are set."""
        given = {
            "endpoint_url": self.endpoint_url,
            "region_name": self.region_name,
            "aws_access_key_id": self.aws_access_key_id,
            "aws_secret_access_key": self.aws_secret_access_key,
        }
        return {k: v for k, v in given.items() if v}


JSON_LINES_READERS = ("auto", "arrow", "postgres")


@dataclass(frozen=True)
class LoadSettings:
    """How partitions are loaded and where their markers live."""

    temp_dir: str = ""
    copy_buffer_kb: int = 1024
    marker_schema: str = "luigi_pipelines"
    marker_table: str = "partition_marker"
    rejects_table: str = "rejected_rows"
    failures_table: str = "partition_failure"
    lock_timeout_s: int = 0
    json_lines_reader: str = "auto"  # JSON lines: "arrow", "postgres" (the exact path), "auto" (arrow if importable)

    def __post_init__(self) -> None:
        for name in (self.marker_schema, self.marker_table, self.rejects_table, self.failures_table):
            check_identifier(name)
        if self.json_lines_reader not in JSON_LINES_READERS:
            raise ValueError(f"json_lines_reader={self.json_lines_reader!r}: one of {', '.join(JSON_LINES_READERS)}")

    @property
    def marker(self) -> TableName:
        return TableName(self.marker_schema, self.marker_table)

    @property
    def rejects(self) -> TableName:
        return TableName(self.marker_schema, self.rejects_table)

    @property
    def failures(self) -> TableName:
        return TableName(self.marker_schema, self.failures_table)

    @property
    def temp_directory(self) -> str:
        return self.temp_dir or tempfile.gettempdir()

    @property
    def copy_buffer(self) -> int:
        return self.copy_buffer_kb * 1024
