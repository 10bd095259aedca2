"""An hourly load for the command-line test: ``luigi --module tests.hourly_tasks RangeHourly --of LoadHourlyEvents``.

Its bucket and table come from the test stack's ``[transactions]`` section, like the example pipeline's.
"""
from __future__ import annotations

from luigi.tools.range import RangeHourly  # noqa: F401 - registers RangeHourly with [core] autoload_range=false

import luigi_pipelines as lp
from luigi_pipelines.pipelines.transactions import transactions


class LoadHourlyEvents(lp.LoadHourlyPartition):
    key_prefix = "events/{date:%Y/%m/%d/%H}/"
    date_column = "day"
    date_from = lp.partition_date()
    columns = [("id", "bigint"), ("kind", "text")]
    bucket = property(lambda self: transactions().bucket)
    table = property(lambda self: transactions().table)
