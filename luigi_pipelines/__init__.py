"""luigi_pipelines: idempotent, exactly-once Luigi tasks that load date-partitioned S3 files into PostgreSQL."""
from .errors import BadInputError, ConfigurationError, LoadError, PipelineError, SourceError
from .partitions import TableName
from .s3 import S3Client, S3Object
from .sql import Column, CsvFormat
from .targets import PartitionMarkerTarget
from .tasks import LoadPartition, PartitionTask, S3PartitionExists

__version__ = "0.1.0"

__all__ = [
    "BadInputError",
    "Column",
    "ConfigurationError",
    "CsvFormat",
    "LoadError",
    "LoadPartition",
    "PartitionMarkerTarget",
    "PartitionTask",
    "PipelineError",
    "S3Client",
    "S3Object",
    "S3PartitionExists",
    "SourceError",
    "TableName",
]
