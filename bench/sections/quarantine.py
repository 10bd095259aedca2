"""Section ``quarantine``: the cost of ``max_bad_rows`` on clean data (goal: >= 0.9x of strict mode), and
what a few bad rows cost (the slow path)."""
from __future__ import annotations

from dataclasses import asdict

from .. import methods
from ..context import Bench
from ..data import MIB, CsvFile, Dataset, upload
from ..measure import BenchError, median, rate_mb_s
from ..methods import LoadRun, load_one, task_parts
from ..report import Section, SectionResult, Table, Target

MAX_BAD_ROWS = 1000
BAD_ROWS = 10
GOAL = 0.9


def load_with_quarantine(bench: Bench, data: Dataset, label: str, expect_rows: int) -> LoadRun:
    """(b) with ``--max-bad-rows``, into a fresh table, in a fresh ``luigi`` process."""
    stack = bench.stack
    table = stack.create_transaction_table(f"q_{data.csv.date:%Y%m%d}{label}")
    stack.checkpoint()
    try:
        config = stack.config_file(f"q-{table.name}", str(table))
        run = stack.luigi(load_one(data.csv.date, "--max-bad-rows", str(MAX_BAD_ROWS)), config, bench.options.timeout_s)
        loaded = stack.count_rows(table)
        if loaded != expect_rows:
            raise BenchError(f"quarantine load {label}: {loaded} rows, expected {expect_rows}")
    finally:
        stack.drop_table(table)
    return LoadRun("bq", run.wall_s, data.size_bytes, data.rows, run.max_rss_bytes, run.cpu_s,
                   task_parts(bench, table, data.csv.date, run))


def dirty_copy(bench: Bench, clean: Dataset) -> Dataset:
    """The clean file with ``BAD_ROWS`` rows spread through it made unloadable (a non-numeric id), under a new date."""
    date = bench.new_dates(1)[0]
    body = clean.csv.path.read_bytes().replace(
        clean.csv.date.isoformat().encode(), date.isoformat().encode())
    lines = body.split(b"\n")
    step = max((len(lines) - 2) // BAD_ROWS, 1)
    for n in range(1, BAD_ROWS + 1):
        lines[n * step] = b"oops" + lines[n * step]
    path = clean.csv.path.with_name(f"dirty-{date.isoformat()}.csv")
    path.write_bytes(b"\n".join(lines))
    csv = CsvFile(date, path, path.stat().st_size, clean.csv.rows)
    return upload(bench.stack.s3_client, clean.bucket, csv)


def run(bench: Bench) -> SectionResult:
    clean = bench.dataset(bench.options.main_size_mib)
    strict: list[LoadRun] = []
    quarantined: list[LoadRun] = []
    for attempt in range(bench.options.repeat):  # interleaved, like the load section
        strict.append(methods.measure(bench, "b", clean, f"_s{attempt}"))
        quarantined.append(load_with_quarantine(bench, clean, f"_{attempt}", clean.rows))
    dirty = dirty_copy(bench, clean)
    slow = load_with_quarantine(bench, dirty, "_dirty", dirty.rows - BAD_ROWS)
    s, q = methods.summarise(strict), methods.summarise(quarantined)
    ratio = s.seconds / q.seconds
    table = Table(f"max_bad_rows on a {clean.size_bytes / MIB:.0f} MiB file: clean data, then {BAD_ROWS} bad rows",
                  ["run", "seconds", "MB/s", "rate vs strict"])
    table.rows = [
        ["strict (max_bad_rows = 0), clean file", s.seconds, rate_mb_s(s.size_bytes, s.seconds), "1.00x"],
        [f"quarantine (max_bad_rows = {MAX_BAD_ROWS}), clean file", q.seconds, rate_mb_s(q.size_bytes, q.seconds),
         f"{ratio:.2f}x"],
        [f"quarantine, {BAD_ROWS} bad rows spread through the file", slow.seconds,
         rate_mb_s(slow.size_bytes, slow.seconds), f"{s.seconds / slow.seconds:.2f}x"],
    ]
    table.notes = [
        f"median of {bench.options.repeat} interleaved runs for the clean file, one run with bad rows; whole `luigi` processes",
        "clean data takes the fast path (one COPY in a savepoint); bad rows send the object through the segmented slow path",
    ]
    return SectionResult(
        "quarantine",
        tables=[table],
        targets=[Target("quarantine vs strict on clean data", f">= {GOAL}x", f"{ratio:.2f}x", ratio >= GOAL)],
        data={"strict": asdict(s), "quarantine_clean": asdict(q), "quarantine_dirty": asdict(slow),
              "bad_rows": BAD_ROWS, "runs": {"strict": [asdict(r) for r in strict],
                                             "quarantine": [asdict(r) for r in quarantined]},
              "median_s": {"strict": median([r.seconds for r in strict])}},
    )


SECTION = Section("quarantine", f"max_bad_rows on clean data vs strict (goal >= {GOAL}x), and with {BAD_ROWS} bad rows", run)
