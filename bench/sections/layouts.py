"""Section ``layouts``: the same rows loaded plain, with the date from the path, with lineage columns, by the
header's names, and by name with an undeclared file column (staged); goal: the path date at >= 0.97x plain."""
from __future__ import annotations

from dataclasses import asdict

from luigi_pipelines.partitions import TableName, key_prefix

from ..contention import server_cpu_s
from ..context import Bench
from ..data import MIB, CsvFile, Dataset, upload
from ..measure import BenchError, median, rate_mb_s
from ..methods import LoadRun, summarise, task_parts
from ..pipeline import NO_DATE_PREFIX
from ..report import Section, SectionResult, Table, Target
from ..stack import PIPELINE_MODULE, SCHEMA

GOAL = 0.97
# label: (task of bench/pipeline.py, what it does, whether it reads the file without the date column)
VARIANTS = {
    "plain": ("LoadTransactions", "the date is a column of the file (as shipped)", False),
    "path date": ("LoadTransactionsPathDate", "the file has no date column: partition_date() fills it", True),
    "lineage": ("LoadTransactionsLineage", "plain + source_key, load_id, loaded_at columns", False),
    "by name": ("LoadTransactionsByName", "columns by the header's names, all declared", False),
    "staged": ("LoadTransactionsStaged", "by name, the file's note column undeclared: staged, then inserted", False),
}


def without_date(bench: Bench, data: Dataset) -> Dataset:
    """``data``'s rows without their second field (txn_date), under the path-date task's prefix."""
    path = data.csv.path.with_name(f"nodate-{data.date.isoformat()}.csv")
    with open(data.csv.path, "rb") as src, open(path, "wb") as dst:
        for line in src:
            first, _, rest = line.split(b",", 2)
            dst.write(first + b"," + rest)
    csv = CsvFile(data.date, path, path.stat().st_size, data.rows)
    key = key_prefix(NO_DATE_PREFIX, data.date) + "part-0000.csv"
    return upload(bench.stack.s3_client, data.bucket, csv, key)


def load_variant(bench: Bench, label: str, data: Dataset, attempt: int) -> LoadRun:
    """One variant's task in a fresh ``luigi`` process, into a table it creates itself (dropped afterwards)."""
    return load_task(bench, "layouts", label, VARIANTS[label][0], data, attempt)


def load_task(bench: Bench, section: str, label: str, task: str, data: Dataset, attempt: int) -> LoadRun:
    """``task`` of bench/pipeline.py on ``data``'s date in a fresh ``luigi`` process, into a table it creates
    itself (dropped afterwards): its time, peak RSS, parts and the server's CPU time."""
    stack = bench.stack
    table = TableName(SCHEMA, f"{section}_{task.lower()}_{attempt}")
    stack.drop_table(table)
    stack.forget_partitions(table)
    stack.checkpoint()
    bench.log(f"({label}) {task}: {data.size_bytes / MIB:.0f} MiB")
    try:
        config = stack.config_file(f"{section}-{table.name}", str(table))
        args = ["--module", PIPELINE_MODULE, task, "--date", data.date.isoformat(), "--local-scheduler"]
        server_before = server_cpu_s(stack.pg.pid)
        run = stack.luigi(args, config, bench.options.timeout_s)
        server_s = server_cpu_s(stack.pg.pid) - server_before
        if stack.count_rows(table) != data.rows:
            raise BenchError(f"({label}) loaded {stack.count_rows(table)} rows, the file has {data.rows}")
        parts = {**task_parts(bench, table, data.date, run), "server_cpu_s": server_s}
    finally:
        stack.drop_table(table)
    return LoadRun(label, run.wall_s, data.size_bytes, data.rows, run.max_rss_bytes, run.cpu_s, parts)


def run(bench: Bench) -> SectionResult:
    plain = bench.dataset(bench.options.main_size_mib)
    files = {False: plain, True: without_date(bench, plain)}
    runs: dict[str, list[LoadRun]] = {label: [] for label in VARIANTS}
    for attempt in range(bench.options.repeat):  # interleaved, so drift affects every variant alike
        for label, (_, _, no_date) in VARIANTS.items():
            runs[label].append(load_variant(bench, label, files[no_date], attempt))
    best = {label: summarise(rs) for label, rs in runs.items()}
    base = best["plain"]
    cpu = {label: median([r.parts["server_cpu_s"] for r in rs]) for label, rs in runs.items()}
    table = Table(f"The same {plain.rows:,} rows ({plain.size_bytes / MIB:.0f} MiB as shipped) loaded five ways",
                  ["variant", "what", "seconds", "MB/s of its file", "rows/s", "rate vs plain", "COPY s",
                   "PostgreSQL CPU s", "CPU vs plain"])
    for label, r in best.items():
        table.rows.append([label, VARIANTS[label][1], r.seconds, rate_mb_s(r.size_bytes, r.seconds), r.rows / r.seconds,
                           f"{base.seconds / r.seconds:.2f}x", r.parts.get("copy_s"), cpu[label],
                           f"{cpu[label] / cpu['plain']:.2f}x"])
    table.notes = [
        f"median of {bench.options.repeat} interleaved run(s) per variant, each a whole `luigi` process into a fresh "
        "table it creates; the rate is in rows (every variant loads the same rows)",
        f"the path-date file lacks the date column: {files[True].size_bytes / MIB:.1f} MiB instead of "
        f"{plain.size_bytes / MIB:.1f}",
        "COPY s: the objects' download and COPY (overlapped), from the marker; staged includes the INSERT",
        "PostgreSQL CPU s: the server's CPU time during the command (median), which other processes on a shared "
        "machine slow down less than the wall clock",
    ]
    ratio = base.seconds / best["path date"].seconds
    return SectionResult(
        "layouts",
        tables=[table],
        targets=[Target("path-date load rate vs a plain load", f">= {GOAL}x", f"{ratio:.2f}x", ratio >= GOAL)],
        data={"median": {k: asdict(v) for k, v in best.items()}, "runs": {k: [asdict(r) for r in v] for k, v in runs.items()},
              "rate_vs_plain": {k: base.seconds / v.seconds for k, v in best.items()},
              "server_cpu_s": cpu, "server_cpu_vs_plain": {k: v / cpu["plain"] for k, v in cpu.items()}},
    )


SECTION = Section("layouts", f"the same rows plain, path date (goal >= {GOAL}x), lineage, by name, staged", run)
