"""A test-only merge task run as a real process (``python -m luigi --module tests.merge_tasks ...``).

``MergeCustomers`` merges ``c/<date>/*`` of ``[merge_test] bucket`` into ``<[merge_test] schema>.customers`` by
``customer_id``. With ``FAULT_PHASE`` (and ``FAULT_DIR``, as in ``tests/fault_tasks.py``) it stops inside the COPY
into the stage (``copy``), or after the MERGE ran, before the marker and the commit (``merge``), so that a test
can kill it there.
"""
from __future__ import annotations

from typing import Any

import luigi
from luigi.tools.range import RangeDaily  # noqa: F401 - registers RangeDaily with [core] autoload_range=false

from luigi_pipelines import MergePartition, db
from tests.fault_tasks import _StopOnSecondRead, _stops_at, checkpoint


class merge_test(luigi.Config):  # noqa: N801 - the [merge_test] section
    bucket = luigi.Parameter(description="bucket of the test's objects")
    schema = luigi.Parameter(description="schema of the customers table")


class MergeCustomers(MergePartition):
    key_prefix = "c/{date:%Y-%m-%d}/"
    columns = [("customer_id", "bigint"), ("name", "text"), ("tier", "text")]
    merge_key = ("customer_id",)
    bucket = property(lambda self: merge_test().bucket)
    table = property(lambda self: f"{merge_test().schema}.customers")

    def source_stream(self, obj: Any, stream: Any) -> Any:
        return _StopOnSecondRead(stream) if _stops_at("copy", self.date) else stream

    def after_copy(self, tx: db.PartitionTransaction) -> None:
        if _stops_at("merge", self.date):
            checkpoint()


class MergeCustomerCsvs(MergeCustomers):
    """``MergeCustomers`` of the ``*.csv`` objects only: other objects of the date are left out by ``keys``."""

    keys = ("*.csv",)
