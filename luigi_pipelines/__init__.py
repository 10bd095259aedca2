"""luigi_pipelines: idempotent, exactly-once Luigi tasks that load date-partitioned S3 files into PostgreSQL.

The public names below are imported lazily, so that importing a pure module such as
``luigi_pipelines.sql`` does not pull in luigi, boto3 or a database driver's connection code.
"""
from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_PUBLIC = {
    "BadInputError": "errors",
    "ConfigurationError": "errors",
    "DataCheckError": "errors",
    "LoadError": "errors",
    "PipelineError": "errors",
    "SourceError": "errors",
    "TableName": "partitions",
    "DateSource": "layouts",
    "Lineage": "layouts",
    "file_column": "layouts",
    "generated_column": "layouts",
    "local_date": "layouts",
    "make_date": "layouts",
    "partition_date": "layouts",
    "Column": "sql",
    "Contract": "contracts",
    "CsvFormat": "sql",
    "CsvDecoder": "objects",
    "JsonLinesDecoder": "jsonl",
    "ParquetDecoder": "parquet",
    "S3Client": "s3",
    "S3Object": "s3",
    "PartitionMarkerTarget": "targets",
    "LoadHourlyPartition": "loads",
    "LoadPartition": "loads",
    "MergePartition": "loads",
    "PartitionTask": "tasks",
    "S3PartitionExists": "loads",
    "SqlTransformPartition": "derived",
    "TransformPartition": "derived",
    "UpstreamPartition": "derived",
    "accepted_values": "checks",
    "between": "checks",
    "not_null": "checks",
    "row_count": "checks",
    "sql_check": "checks",
    "unique": "checks",
    "Grain": "grains",
    "DAILY": "grains",
    "HOURLY": "grains",
    "MONTHLY": "grains",
    "Daily": "grains",
    "Hourly": "grains",
    "Monthly": "grains",
}

__all__ = sorted(_PUBLIC)


def __getattr__(name: str) -> Any:
    if name not in _PUBLIC:
        raise AttributeError(f"module 'luigi_pipelines' has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_PUBLIC[name]}", __name__), name)


def __dir__() -> list[str]:
    return __all__
