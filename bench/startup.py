"""The fixed cost of a ``luigi`` process, part by part: what an empty ``RangeDaily`` command (start == stop) spends
before any partition, from fresh processes that each stop one step further (medians of ``noop_repeat`` runs each; the
whole command: the empty runs the load section took next to its loads).

The parts are differences of medians, so a part can read slightly negative on a noisy machine.
"""
from __future__ import annotations

from .context import Bench
from .measure import median
from .methods import empty_luigi_runs
from .report import Table
from .stack import PIPELINE_MODULE

# part: the code a fresh ``python -c`` runs up to the end of that part (None: the whole empty command)
STEPS = {
    "interpreter start (python -c pass)": "pass",
    "import luigi and its command line (luigi.cmdline)": "import luigi.cmdline",
    f"import luigi_pipelines and the pipeline module ({PIPELINE_MODULE})":
        f"import luigi.cmdline, luigi.tools.range, {PIPELINE_MODULE}",
    "luigi's command line (its parser built 9 times over every registered parameter), config, an empty "
    "scheduling round, exit": None,
}


def startup_parts(bench: Bench) -> dict[str, float]:
    """Wall seconds of each part of ``STEPS`` (medians of fresh processes), the whole command last."""
    config = bench.stack.config_file("startup", "bench.startup")
    reached: dict[str, float] = {}
    for part, code in STEPS.items():
        runs = empty_luigi_runs(bench) if code is None else [
            bench.stack.python(["-c", code], config, bench.options.timeout_s) for _ in range(bench.options.noop_repeat)]
        reached[part] = median([r.wall_s for r in runs])
    return reached


def startup_table(reached: dict[str, float]) -> Table:
    table = Table("The empty `luigi ... RangeDaily` command (start == stop), part by part",
                  ["part", "seconds", "share"])
    total, before = list(reached.values())[-1], 0.0
    for part, at in reached.items():
        table.rows.append([part, at - before, f"{100 * (at - before) / total:.0f} %"])
        before = at
    table.rows.append(["total (the empty command)", total, "100 %"])
    table.notes = [
        "each part: the median wall time of fresh processes that stop after it, minus the part before; the project's "
        "modules are byte-compiled first, as an installed package's are",
        "only the pipeline module's import is ours; the parser is luigi's own (`run_with_retcodes` makes three "
        "`CmdlineParser`s, each builds it three times), over every parameter of every registered task and config "
        "class, ours included",
    ]
    return table
