"""Section ``formats``: the same rows loaded from CSV, JSON lines (by Arrow's reader and by PostgreSQL's path) and
Parquet by our task; goals: JSON lines by Arrow at >= 0.8x the CSV load's rate with a peak RSS < 150 MB, by
PostgreSQL's path at >= 0.5x, Parquet at >= 0.8x; the peak RSS of each."""
from __future__ import annotations

import csv
import json
from dataclasses import asdict
from pathlib import Path

from luigi_pipelines import JsonLinesDecoder, ParquetDecoder
from luigi_pipelines.partitions import key_prefix

from ..context import Bench
from ..data import MIB, CsvFile, Dataset, upload
from ..measure import MB, median
from ..methods import LoadRun, summarise
from ..pipeline import JSONL_PREFIX, PARQUET_PREFIX
from ..report import Section, SectionResult, Table, Target
from ..stack import BUCKET
from .layouts import load_task

GOALS = {"JSON lines (Arrow)": 0.8, "JSON lines (PostgreSQL)": 0.5, "Parquet": 0.8}
RSS_GOALS_MB = {"JSON lines (Arrow)": 150}
ROW_GROUP_ROWS = 128 * 1024  # rows per Parquet row group, as Spark and pyarrow writers commonly make them
# label: (task of bench/pipeline.py, what its object is)
FORMATS = {
    "CSV": ("LoadTransactions", "the CSV file as generated, COPY straight into the table"),
    "JSON lines (Arrow)": ("LoadTransactionsJsonLines", "one object a line: read by Arrow, COPY of its CSV"),
    "JSON lines (PostgreSQL)": ("LoadTransactionsJsonLinesPostgres",
                                "the same object: COPY into a stage, INSERT ... jsonb_to_record"),
    "Parquet": ("LoadTransactionsParquet", f"typed columns, row groups of {ROW_GROUP_ROWS:,} rows, snappy"),
}


def as_json_lines(bench: Bench, data: Dataset) -> Dataset:
    """``data``'s rows as JSON lines (numbers as JSON numbers, a NULL note as null), under the JSON-lines prefix."""
    path = data.csv.path.with_suffix(".jsonl")
    bench.log(f"writing {data.rows:,} rows as JSON lines")
    with open(data.csv.path, newline="", encoding="utf-8") as src, open(path, "w", encoding="utf-8") as dst:
        rows = csv.reader(src)
        next(rows)
        for id_, day, account, amount, currency, created, note in rows:
            dst.write(f'{{"id": {id_}, "txn_date": "{day}", "account": {json.dumps(account)}, "amount": {amount}, '
                      f'"currency": "{currency}", "created_at": "{created}", "note": {json.dumps(note or None)}}}\n')
    return _upload(bench, data, path, key_prefix(JSONL_PREFIX, data.date) + "part-0000.jsonl")


def as_parquet(bench: Bench, data: Dataset) -> Dataset:
    """``data``'s rows as a Parquet file of typed columns (read and written a batch at a time), under its prefix."""
    import pyarrow as pa
    import pyarrow.csv
    import pyarrow.parquet

    path = data.csv.path.with_suffix(".parquet")
    bench.log(f"writing {data.rows:,} rows as Parquet")
    types = {"id": pa.int64(), "txn_date": pa.date32(), "account": pa.string(), "amount": pa.decimal128(12, 2),
             "currency": pa.string(), "created_at": pa.timestamp("us", tz="UTC"), "note": pa.string()}
    options = pa.csv.ConvertOptions(column_types=types, strings_can_be_null=True)
    reader = pa.csv.open_csv(data.csv.path, convert_options=options)
    with pa.parquet.ParquetWriter(path, reader.schema) as writer:
        pending: list[pa.RecordBatch] = []
        for batch in [*reader, None]:
            if batch is not None:
                pending.append(batch)
            if pending and (batch is None or sum(b.num_rows for b in pending) >= ROW_GROUP_ROWS):
                writer.write_table(pa.Table.from_batches(pending), row_group_size=ROW_GROUP_ROWS)
                pending = []
    return _upload(bench, data, path, key_prefix(PARQUET_PREFIX, data.date) + "part-0000.parquet")


def _upload(bench: Bench, data: Dataset, path: Path, key: str) -> Dataset:
    return upload(bench.stack.s3_client, BUCKET, CsvFile(data.date, path, path.stat().st_size, data.rows), key)


def largest_row_group_mb(path: Path) -> float:
    """The largest row group's uncompressed size in the file's metadata, MB."""
    import pyarrow.parquet

    meta = pyarrow.parquet.ParquetFile(path).metadata
    return max(meta.row_group(i).total_byte_size for i in range(meta.num_row_groups)) / MB


def imports_rss_mb(bench: Bench) -> float:
    """The peak RSS of a process that only imports what the Parquet load imports (luigi, our tasks, pyarrow)."""
    config = bench.stack.config_file("formats-imports", "bench.unused")
    code = "import luigi, luigi_pipelines.tasks, pyarrow.parquet, pyarrow.csv, pyarrow.compute"
    return (bench.stack.python(["-c", code], config, bench.options.timeout_s).max_rss_bytes or 0) / MB


def run(bench: Bench) -> SectionResult:
    plain = bench.dataset(bench.options.main_size_mib)
    lines = as_json_lines(bench, plain)
    files = {"CSV": plain, "JSON lines (Arrow)": lines, "JSON lines (PostgreSQL)": lines, "Parquet": as_parquet(bench, plain)}
    runs: dict[str, list[LoadRun]] = {label: [] for label in FORMATS}
    for attempt in range(bench.options.repeat):  # interleaved, so drift affects every format alike
        for label, (task, _) in FORMATS.items():
            runs[label].append(load_task(bench, "formats", label, task, files[label], attempt))
    best = {label: summarise(rs) for label, rs in runs.items()}
    base = best["CSV"]
    cpu = {label: median([r.parts["server_cpu_s"] for r in rs]) for label, rs in runs.items()}
    ratios = {label: base.seconds / r.seconds for label, r in best.items()}
    busy = {label: max(r.cpu_s or 0.0, cpu[label]) for label, r in best.items()}  # the busier of the two processes
    floor = imports_rss_mb(bench)
    table = Table(f"The same {plain.rows:,} rows loaded from three formats (JSON lines by two readers) by our task",
                  ["format", "object", "object MiB", "seconds", "rows/s", "rate vs CSV", "download s", "COPY s",
                   "PostgreSQL CPU s", "task CPU s", "CPU-bound vs CSV", "peak RSS MB"])
    for label, r in best.items():
        table.rows.append([label, FORMATS[label][1], r.size_bytes / MIB, r.seconds, r.rows / r.seconds,
                           f"{ratios[label]:.2f}x", r.parts.get("download_s"), r.parts.get("copy_s"), cpu[label],
                           r.cpu_s, f"{busy['CSV'] / busy[label]:.2f}x", (r.max_rss_bytes or 0) / MB])
    table.notes = [
        f"median of {bench.options.repeat} interleaved run(s) per format, each a whole `luigi` process into a fresh "
        "table it creates; the rate is in rows (every format loads the same rows)",
        "COPY s: from the marker; for JSON lines by PostgreSQL it includes the INSERT from the stage, for Parquet the "
        "wait for the whole download (the footer is at the end); download s: the object's download, which COPY "
        "overlaps (a JSON-lines object holds about twice the CSV's bytes: where the download is the bound, so is the rate)",
        "CPU-bound vs CSV: the rate vs CSV if each load were bound by its busier process, the task (with its download "
        "thread and luigi's start) or PostgreSQL's backend, each on its own core: max(task CPU, PostgreSQL CPU)",
        f"JSON lines (Arrow): `[load] json_lines_reader` = arrow, chunks of {JsonLinesDecoder().chunk_bytes // MIB} MiB "
        "of lines; an object Arrow cannot load exactly would take PostgreSQL's path (logged at INFO)",
        f"Parquet: the largest row group is {largest_row_group_mb(files['Parquet'].csv.path):.1f} MB uncompressed "
        f"(its metadata) of a {files['Parquet'].size_bytes / MIB:.1f} MiB file: the task holds one batch of "
        f"{ParquetDecoder().batch_rows:,} rows at a time, whatever the row group's size; "
        f"a process that only imports luigi, our tasks and pyarrow peaks at {floor:.1f} MB",
    ]
    return SectionResult(
        "formats",
        tables=[table],
        targets=[Target(f"{label} load rate vs CSV", f">= {goal}x", f"{ratios[label]:.2f}x", ratios[label] >= goal)
                 for label, goal in GOALS.items()] + [
            Target(f"{label} peak RSS", f"< {goal} MB", f"{(best[label].max_rss_bytes or 0) / MB:.1f} MB",
                   (best[label].max_rss_bytes or 0) / MB < goal) for label, goal in RSS_GOALS_MB.items()],
        data={"median": {k: asdict(v) for k, v in best.items()}, "runs": {k: [asdict(r) for r in v] for k, v in runs.items()},
              "rate_vs_csv": ratios, "server_cpu_s": cpu, "cpu_bound_vs_csv": {k: busy["CSV"] / v for k, v in busy.items()},
              "row_group_rows": ROW_GROUP_ROWS,
              "imports_with_pyarrow_max_rss_mb": floor},
    )


SECTION = Section("formats", "the same rows from CSV, JSON lines by Arrow (goal >= 0.8x, < 150 MB) and by "
                             "PostgreSQL (>= 0.5x), and Parquet (goal >= 0.8x), rate and peak RSS", run)
