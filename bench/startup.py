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
from .stack import SHIPPED_MODULE

# part: the code a fresh ``python -c`` runs up to the end of that part (None: the whole empty command)
STEPS = {
    "interpreter start (python -c pass)": "pass",
    "import luigi and its command line (luigi.cmdline)": "import luigi.cmdline",
    f"import luigi_pipelines and the pipeline module ({SHIPPED_MODULE})":
        f"import luigi.cmdline, luigi.tools.range, {SHIPPED_MODULE}",
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


# printed by a fresh process: the seconds of one build of luigi's parser (all our tasks registered), and of importing
# jsonschema, which luigi.parameter imports whenever it is installed
_PARSER = (f"import time, luigi.cmdline_parser as p, luigi.tools.range, {SHIPPED_MODULE}; t = time.perf_counter(); "
           "p.CmdlineParser._build_parser(); print(time.perf_counter() - t)")
_JSONSCHEMA = ("import time; t = time.perf_counter()\ntry: import jsonschema\nexcept ImportError: t = None\n"
               "print(-1.0 if t is None else time.perf_counter() - t)")  # -1: not installed
# and of importing boto3 and making the first S3 client (its service model and endpoint rules read and built), which a
# load pays once per process for its dependency's S3 check and its downloads: outside the command's empty run. Timed
# after what the command has imported by then (luigi's own import brings urllib3 and http.client, which boto3 needs).
_BOTO3 = (f"import luigi.cmdline, luigi.tools.range, {SHIPPED_MODULE}; import time; t = time.perf_counter(); "
          "import boto3; boto3.session.Session().client('s3', region_name='us-east-1', "
          "endpoint_url='http://127.0.0.1:9'); print(time.perf_counter() - t)")


def in_process_s(bench: Bench, code: str) -> float:
    """The median of what ``code`` prints (seconds it timed in a fresh process), over ``noop_repeat`` runs."""
    config = bench.stack.config_file("startup", "bench.startup")
    return median([float(bench.stack.python(["-c", code], config, bench.options.timeout_s).stdout.split()[-1])
                   for _ in range(bench.options.noop_repeat)])


def startup_notes(bench: Bench) -> dict[str, float]:
    """Parts measured inside a process: one build of luigi's parser, jsonschema's import, and boto3's import with the
    first S3 client."""
    return {"parser_build_s": in_process_s(bench, _PARSER), "jsonschema_import_s": in_process_s(bench, _JSONSCHEMA),
            "boto3_client_s": in_process_s(bench, _BOTO3)}


def startup_table(reached: dict[str, float], inside: dict[str, float]) -> Table:
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
        f"class, ours included: one build takes {inside['parser_build_s']:.3f} s in a process, so 9 take "
        f"{9 * inside['parser_build_s']:.2f} s",
        _jsonschema_note(inside["jsonschema_import_s"]),
        f"a load adds, outside its transaction, boto3's import and its first S3 client ({inside['boto3_client_s']:.3f} s "
        "in a process that has imported luigi and the pipeline module, as the command has by then: the service model "
        "and endpoint rules read and built), for its dependency's S3 check and its downloads; (a2) makes its client "
        "before its clock starts",
    ]
    return table


def _jsonschema_note(seconds: float) -> str:
    """What jsonschema, which ``luigi.parameter`` imports whenever it is installed, adds to luigi's import here."""
    if seconds < 0:
        return ("jsonschema is not installed where the measured commands run (`make bench` runs them in an install of "
                "the package alone, .venv-bench): luigi.parameter would import it if it were, as in the dev .venv, "
                "where moto's server (the `local` extra of the tests and the demo) brings it")
    return (f"luigi's import includes jsonschema's ({seconds:.3f} s in a process), which `luigi.parameter` imports "
            "whenever it is installed: here it is (moto's server, the `local` extra of the tests and the demo, brings "
            "it); an install of the package alone has none: `make bench` measures in one (.venv-bench)")
