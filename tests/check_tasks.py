"""Test-only tasks with data checks, run in-process or as real processes (``python -m luigi --module
tests.check_tasks ...``, ``luigi-pipelines status --module tests.check_tasks ...``).

``[check_test]`` names the bucket and the schema of their tables. ``LoadChecked`` loads ``d/<date>/*`` into
``<schema>.t (id bigint, day date, v text, amount numeric)``, with the S3 key of each row in ``source_key``;
``MergeChecked`` merges ``c/<date>/*`` snapshots into ``<schema>.customers`` by ``customer_id``;
``LoadCheckedKilled`` is ``LoadChecked`` with the ``[fault]`` section's bucket and table (``tests/test_faults.py``'s
loader) and the checks that a kill loop runs.
"""
from __future__ import annotations

import luigi
from luigi.tools.range import RangeDaily  # noqa: F401 - registers RangeDaily with [core] autoload_range=false
from psycopg2 import sql

import luigi_pipelines as lp
from luigi_pipelines import Lineage, LoadPartition, MergePartition
from tests.fault_tasks import fault


class check_test(luigi.Config):  # noqa: N801 - the [check_test] section
    bucket = luigi.Parameter(description="bucket of the test's objects")
    schema = luigi.Parameter(description="schema of the test's tables")


class LoadChecked(LoadPartition):
    key_prefix = "d/{date:%Y-%m-%d}/"
    date_column = "day"
    columns = [("id", "bigint"), ("day", "date"), ("v", "text"), ("amount", "numeric")]
    lineage = Lineage(key="source_key")
    checks = (lp.not_null("id"), lp.unique("id"), lp.accepted_values("v", ["a", "b"], severity="warn"),
              lp.between("amount", 0, 1000), lp.row_count(relative_min=0.5, last=3))
    bucket = property(lambda self: check_test().bucket)
    table = property(lambda self: f"{check_test().schema}.t")


class MergeChecked(MergePartition):
    key_prefix = "c/{date:%Y-%m-%d}/"
    columns = [("customer_id", "bigint"), ("name", "text"), ("email", "text")]
    merge_key = ("customer_id",)
    snapshot = True
    lineage = Lineage(key="source_key")
    checks = (lp.unique("customer_id"), lp.unique("email", severity="warn"), lp.not_null("name"))
    bucket = property(lambda self: check_test().bucket)
    table = property(lambda self: f"{check_test().schema}.customers")


class LoadCheckedKilled(LoadPartition):
    """``d/<date>/*`` of ``[fault] bucket`` into ``[fault] table (id bigint, day date, v text)``, with checks."""

    key_prefix = "d/{date:%Y-%m-%d}/"
    date_column = "day"
    columns = [("id", "bigint"), ("day", "date"), ("v", "text")]
    checks = (lp.not_null("id"), lp.unique("id"), lp.row_count(min=1000),
              lp.sql_check("one_version", sql.SQL("select v from {partition} group by v having count(*) <> "
                                                  "(select count(*) from {partition})")))
    bucket = property(lambda self: fault().bucket)
    table = property(lambda self: fault().table)
