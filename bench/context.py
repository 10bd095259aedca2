"""What every section is handed: the options, the running stack, and data or results shared between sections.

Data is generated and uploaded once per size and measurements that two sections report (the load
task at the main size) are taken once: ``shared`` memoises them for the whole run.
"""
from __future__ import annotations

import datetime
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from .data import MIB, Dataset, upload, write_csv
from .options import Options
from .stack import BUCKET, BenchStack

T = TypeVar("T")
FIRST_DATA_DATE = datetime.date(2020, 1, 1)


@dataclass
class Bench:
    options: Options
    stack: BenchStack
    _memo: dict[Any, Any] = field(default_factory=dict)
    _next_date: datetime.date = FIRST_DATA_DATE

    def log(self, message: str) -> None:
        """Progress on stderr (the results go to stdout)."""
        print(f"  .. {message}", file=sys.stderr, flush=True)

    def shared(self, key: Any, compute: Callable[[], T]) -> T:
        """``compute()`` once per run and key; later callers get the same value."""
        if key not in self._memo:
            self._memo[key] = compute()
        return self._memo[key]

    def new_dates(self, count: int) -> list[datetime.date]:
        """``count`` consecutive dates no other dataset of this run uses (each date is its own S3 prefix)."""
        first = self._next_date
        self._next_date += datetime.timedelta(days=count)
        return [first + datetime.timedelta(days=n) for n in range(count)]

    def dataset(self, size_mib: float) -> Dataset:
        """A CSV file of ``size_mib`` and its S3 object, made once per size."""
        return self.shared(("dataset", size_mib), lambda: self.new_dataset(self.new_dates(1)[0], size_mib))

    def new_dataset(self, date: datetime.date, size_mib: float, quiet: bool = False) -> Dataset:
        """Generate ``date``'s CSV file of ``size_mib`` and upload it under the date's prefix."""
        path = self.stack.work / f"transactions-{date.isoformat()}-{size_mib:g}MiB.csv"
        if not quiet:
            self.log(f"generating {size_mib:g} MiB of transactions for {date} and uploading it")
        csv = write_csv(path, date, int(size_mib * MIB))
        return upload(self.stack.s3_client, BUCKET, csv)
