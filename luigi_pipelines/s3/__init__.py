"""S3 access: a boto3 client from the ``[s3]`` section (``client``), listing a partition's objects (``listing``)
and downloading one to a file (``downloads``)."""
from .client import S3Client
from .listing import Listing, S3Object

__all__ = ["Listing", "S3Client", "S3Object"]
