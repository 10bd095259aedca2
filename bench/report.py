"""What a section hands back (tables, targets, raw numbers) and how a run is printed and saved as JSON."""
from __future__ import annotations

import datetime
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

RESULTS_DIR = Path(__file__).resolve().parent / "results"
Cell = str | int | float | None


@dataclass
class Table:
    """A titled table of already-chosen columns; numbers are formatted when printed."""

    title: str
    headers: Sequence[str]
    rows: list[Sequence[Cell]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Target:
    """A goal a measurement is compared against: reported as pass or fail, never asserted."""

    name: str
    goal: str
    measured: str
    passed: bool


@dataclass
class SectionResult:
    """One section's output: tables to print, targets to judge, and the raw numbers for the JSON file."""

    name: str
    tables: list[Table] = field(default_factory=list)
    targets: list[Target] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    contention: dict[str, float] | None = None  # CPU other processes used meanwhile (see contention.py)
    error: str | None = None


@dataclass(frozen=True)
class Section:
    """A named group of measurements: ``run`` takes the run's ``Bench`` and returns its ``SectionResult``.

    Adding a section: write ``bench/sections/<name>.py`` with ``SECTION = Section(...)`` and list it
    in ``bench/sections/__init__.py``; ``--only <name>`` then selects it.
    """

    name: str
    summary: str
    run: Callable[[Any], SectionResult]
    default: bool = True  # part of a run without --only


def format_cell(value: Cell) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if math.isinf(value) or math.isnan(value):
            return str(value)
        magnitude = abs(value)
        if magnitude >= 1000:
            return f"{value:,.0f}"
        if magnitude >= 100:
            return f"{value:.1f}"
        if magnitude >= 1 or magnitude == 0:
            return f"{value:.2f}"
        return f"{value:.3f}"
    return str(value)


def describe_contention(contention: dict[str, float] | None) -> str:
    if contention is None:
        return ""
    return f"; other processes used {contention['others_cpu_s']:.0f} CPU-s, {contention['others_share']:.0%} of the machine"


def render_table(table: Table) -> str:
    cells = [[format_cell(c) for c in row] for row in table.rows]
    widths = [max([len(h), *(len(r[i]) for r in cells)]) for i, h in enumerate(table.headers)]

    def line(values: Sequence[str]) -> str:
        first, *rest = values
        return "  ".join([first.ljust(widths[0]), *(v.rjust(w) for v, w in zip(rest, widths[1:], strict=True))]).rstrip()

    rule = "-" * len(line(list(table.headers)))
    out = [table.title, rule, line(list(table.headers)), rule, *(line(r) for r in cells), rule]
    out += [f"  {note}" for note in table.notes]
    return "\n".join(out)


def render_targets(targets: Sequence[Target]) -> str:
    if not targets:
        return ""
    table = Table("Targets (information only, never asserted)", ["target", "goal", "measured", "result"],
                  [[t.name, t.goal, t.measured, "PASS" if t.passed else "FAIL"] for t in targets])
    return render_table(table)


def render_section(result: SectionResult) -> str:
    head = f"== {result.name} ({result.seconds:.0f} s{describe_contention(result.contention)}) =="
    if result.error:
        return f"{head}\nFAILED: {result.error}"
    parts = [head, *(render_table(t) for t in result.tables)]
    if result.targets:
        parts.append(render_targets(result.targets))
    return "\n\n".join(parts)


def write_json(meta: dict[str, Any], results: Sequence[SectionResult], directory: Path = RESULTS_DIR) -> Path:
    """Save the run as ``<directory>/<UTC timestamp>.json``; returns the path."""
    directory.mkdir(parents=True, exist_ok=True)
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    path = directory / f"{stamp}.json"
    document = {"meta": meta, "sections": {r.name: asdict(r) for r in results}}
    path.write_text(json.dumps(document, indent=2, default=str) + "\n")
    return path
