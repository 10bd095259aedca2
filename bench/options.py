"""The benchmark's settings: every size and count a section uses, the defaults and the ``--quick`` preset."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Options:
    """What to measure and how much; the defaults finish in a few minutes on two cores."""

    sizes_mib: tuple[int, ...] = (100, 400)  # the first is the main size of the load comparison
    repeat: int = 3  # timed runs per load method; the median is reported
    range_days: int = 3650  # dates of the no-op RangeDaily rerun
    noop_repeat: int = 3  # runs of each no-op / empty-range command; the median is reported
    complete_loop_days: int = 365  # dates of the per-date complete() loop (extrapolated to range_days)
    stale_days: int = 365  # loaded, unchanged dates of the reload_changed stale check
    backfill_days: int = 60  # partitions of the multi-worker backfill
    backfill_mib: float = 10.0  # size of each of those partitions (small ones measure only per-task overhead)
    worker_counts: tuple[int, ...] = (1, 2, 4)
    scheduler_range_days: int = 3650  # tasks handed to luigid at once
    scheduler_pilot_days: int = 365  # a smaller range measured first, to project the full one
    scheduler_budget_s: float = 150  # measure the full range only if projected within this (0: always)
    transform_rows: int = 1_000_000  # rows of the upstream partition the transforms read
    merge_rows: int = 1_000_000  # rows of the table the merge section merges into (and of each of its files)
    small_days: int = 365  # dates of the small-partition backfill (2 gzip objects each)
    small_kib: float = 10.0  # size of each of those objects, gzipped
    overhead_days: int = 365  # tiny partitions of the per-phase profile (section overhead)
    overhead_objects: int = 2  # gzip objects per date of that profile
    overhead_rows: int = 100  # rows per object (a few KiB gzip)
    overhead_schedule_days: int = 730  # dates with missing data handed to luigid, profiled
    scale_partitions: int = 100_000  # hourly partitions of the scale section (rounded up to whole days)
    scale_wave_size: int = 2000  # backfill --wave-size of the scale section
    scale_plain_timeout_s: float = 300  # how long the plain RangeHourly of the scale section may run (0: skip it)
    scale_prune_on_get_work: bool | None = None  # luigid's prune_on_get_work in the scale section (None: the shipped)
    scale_block_hours: tuple[int, ...] = (24,)  # backfill --block-hours of the scale section's waves, a run each
    swap_mib: float = 50.0  # size of each date of the swap section
    swap_reloads: int = 20  # forced reloads of one date in each mode (swap section)
    swap_children: int = 3650  # daily children of the parent the swap section's readers query
    swap_child_rows: int = 1000  # rows of each of those children
    timeout_s: float = 1800  # bound on any single command

    @property
    def main_size_mib(self) -> int:
        return self.sizes_mib[0]


QUICK = Options(
    sizes_mib=(4, 16),
    repeat=1,
    noop_repeat=1,
    complete_loop_days=50,
    backfill_days=6,
    backfill_mib=0.25,
    worker_counts=(1, 2),
    scheduler_pilot_days=30,
    scheduler_budget_s=10,
    transform_rows=20_000,
    merge_rows=20_000,
    small_days=30,
    overhead_days=20,
    overhead_schedule_days=30,
    scale_partitions=480,
    scale_wave_size=100,
    scale_plain_timeout_s=20,
    swap_mib=2.0,
    swap_reloads=5,
    swap_children=200,
    swap_child_rows=100,
    timeout_s=300,
)


def with_overrides(base: Options, **given: Any) -> Options:
    """``base`` with every explicitly given (non-None) value replaced."""
    return dataclasses.replace(base, **{k: v for k, v in given.items() if v is not None})
