"""The benchmark's sections, in the order a run takes them.

To add one: write ``bench/sections/<name>.py`` defining ``SECTION = Section(name, summary, run)``
where ``run(bench: Bench) -> SectionResult`` (see ``bench/report.py``; ``bench.dataset(size_mib)``,
``bench.stack`` and ``bench/methods.py`` provide data, servers and measured commands), then list it below.
"""
from __future__ import annotations

from ..report import Section
from . import (
    checks,
    formats,
    layouts,
    load,
    memory,
    merge,
    noop,
    overhead,
    quarantine,
    scale,
    small,
    stale,
    swap,
    transform,
    workers,
)

SECTIONS: tuple[Section, ...] = (load.SECTION, memory.SECTION, transform.SECTION, quarantine.SECTION, layouts.SECTION,
                                 formats.SECTION, merge.SECTION, checks.SECTION, noop.SECTION, stale.SECTION,
                                 workers.SECTION, overhead.SECTION, small.SECTION, swap.SECTION, scale.SECTION)


def by_name() -> dict[str, Section]:
    return {s.name: s for s in SECTIONS}
