"""The marker target: a partition is complete exactly when its row exists in the marker table."""
from __future__ import annotations

import datetime

import luigi

from . import db
from .errors import ConfigurationError
from .partitions import ScopedTable, TableName
from .settings import DatabaseSettings


class PartitionMarkerTarget(luigi.Target):
    """The marker row of one (table, date) partition, written in the same transaction as the data."""

    def __init__(
        self,
        target: ScopedTable,
        date: datetime.date,
        marker: TableName,
        settings: DatabaseSettings,
        owner: str = "",
    ) -> None:
        self.target = target
        self.date = date
        self.marker = marker
        self.settings = settings
        self.owner = owner  # the task family that writes it: a row written by another is an error, not "done"

    def exists(self) -> bool:
        with db.session(self.settings, reset=False) as conn:
            done = db.completed_dates(conn, self.marker, self.target, [self.date])
        if self.date in done and self.owner:
            check_owner(self.target, self.date, done[self.date], self.owner)
        return self.date in done

    def __repr__(self) -> str:
        return f"PartitionMarkerTarget({self.target}, {self.date.isoformat()})"


def check_owner(key: ScopedTable, date: datetime.date, family: str, task_family: str) -> None:
    """A partition written by another task family is not ours to skip or to replace: say so."""
    if family != task_family:
        raise ConfigurationError(
            f"{task_family} and {family} both load {key.describe()}: {family} loaded {date} already. Declare a "
            f"different scope for each (e.g. scope = {{'region': 'us'}}), or, if {task_family} is {family} "
            f"renamed, update task_family in the marker table")

