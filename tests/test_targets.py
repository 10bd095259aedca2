"""``PartitionMarkerTarget``: a partition is complete exactly when its marker row exists, and is its writer's."""
from __future__ import annotations

import datetime

import pytest

from luigi_pipelines import ConfigurationError, PartitionMarkerTarget
from luigi_pipelines.partitions import ScopedTable, TableName
from luigi_pipelines.settings import DatabaseSettings

pytestmark = pytest.mark.postgres

D1 = datetime.date(2019, 2, 1)


def mark(stack, key: str, family: str) -> None:
    stack.execute(f'CREATE TABLE IF NOT EXISTS "{stack.marker_schema}".partition_marker (target_table text, '
                  "partition_date date, task_family text, PRIMARY KEY (target_table, partition_date))")
    stack.execute(f'INSERT INTO "{stack.marker_schema}".partition_marker VALUES (%s, %s, %s)', (key, D1, family))


def target(stack, scope=None, owner="LoadT") -> PartitionMarkerTarget:
    key = ScopedTable.of(TableName(stack.schema, "t"), scope)
    return PartitionMarkerTarget(key, D1, TableName(stack.marker_schema, "partition_marker"),
                                 DatabaseSettings(dsn=stack.pg.dsn), owner=owner)


def test_no_marker_table_means_not_complete(stack):
    assert not target(stack).exists()


def test_exists_reads_the_row_of_its_own_key_and_date(stack):
    stack.execute(f'CREATE SCHEMA "{stack.marker_schema}"')
    mark(stack, f"{stack.schema}.t/region=eu", "LoadT")
    assert target(stack, {"region": "eu"}).exists()
    assert not target(stack, {"region": "us"}).exists()
    assert not target(stack).exists()


def test_a_row_written_by_another_task_family_is_an_error_not_done(stack):
    stack.execute(f'CREATE SCHEMA "{stack.marker_schema}"')
    mark(stack, f"{stack.schema}.t", "LoadEU")
    with pytest.raises(ConfigurationError, match="LoadUS and LoadEU both load"):
        target(stack, owner="LoadUS").exists()
    assert target(stack, owner="LoadEU").exists()
