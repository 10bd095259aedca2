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


class HookedLoadHourlyEvents(LoadHourlyEvents):
    """``LoadHourlyEvents`` with the hooks of ``tests/scheduler_tasks.py`` (``LP_HOOK_DIR``, ``LP_HOOK_PAUSE_DATE``
    as the command line writes the hour, ``LP_HOOK_PAUSE_QUERY_S``, ``LP_WORKER_NAME``) for the waves and netns
    tests; each load that writes its hour also appends ``wrote <pid> <hour>`` to ``wrote`` there."""

    def run(self) -> None:
        from tests import scheduler_tasks as hooks

        hooks._trace("start", self.grain.describe(self.date_hour))
        super().run()
        hooks._trace("end", self.grain.describe(self.date_hour))

    def after_object(self, tx, record) -> None:  # type: ignore[no-untyped-def]
        from tests import scheduler_tasks as hooks

        if not getattr(self, "_paused", False) and hooks._claim_pause(self.grain.describe(self.date_hour)):
            self._paused = True
            hooks._pause(tx)

    def after_copy(self, tx) -> None:  # type: ignore[no-untyped-def]
        import os

        directory = os.environ.get("LP_HOOK_DIR")
        if directory:
            with open(os.path.join(directory, "wrote"), "a") as f:
                f.write(f"wrote {os.getpid()} {self.grain.describe(self.date_hour)}\n")
