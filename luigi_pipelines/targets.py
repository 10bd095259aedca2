"""The marker target: a partition is complete exactly when its row exists in the marker table."""
from __future__ import annotations

import datetime

import luigi

from . import db, defaults  # noqa: F401 - importing defaults puts the package's luigi defaults in place
from .config import database as database_settings
from .partitions import TableName


class PartitionMarkerTarget(luigi.Target):
    """The marker row of one (table, date) partition, written in the same transaction as the data."""

    def __init__(
        self,
        target: TableName,
        date: datetime.date,
        marker: TableName,
        settings: database_settings | None = None,
    ) -> None:
        self.target = target
        self.date = date
        self.marker = marker
        self.settings = settings

    def exists(self) -> bool:
        with db.connect(self.settings) as conn:
            return self.date in db.completed_dates(conn, self.marker, self.target, [self.date])

    def __repr__(self) -> str:
        return f"PartitionMarkerTarget({self.target}, {self.date.isoformat()})"
