"""Section ``swap``: the partition-swap write mode (``partitioned = True``) side by side with the delete mode, same
data, one run.

- the first load of a date (the median of 3, each into a new table), then forced reloads of it, in each mode, every
  load after a checkpoint (goal: a swap reload <= 1.0x the first load of the same mode);
- the table's size and dead tuples after the first load and after ``swap_reloads`` reloads of one date, in each mode
  (goal: the partitioned table within 5 % of its first size, 0 dead tuples); autovacuum on, as in production;
- during as many reloads again two readers (a count of another date, a count of the reloaded date, every 10 ms
  each): the longest and the 99th-percentile answer time and lock wait of each, and in swap mode the longest swap
  (from asking for the parent's lock to the commit) and the longest the lock was held (goal: no reader of another
  date waits for a lock longer than the swap);
- 2 processes loading different dates of one partitioned table side by side vs 1 loading them all;
- what thousands of children cost readers: planning and execution time of a one-date query and of a one-month
  aggregate on a parent with ``swap_children`` daily children vs the same rows in a plain table.
"""
from __future__ import annotations

import json
import re
import statistics
import subprocess
import threading
import time
from collections.abc import Sequence
from typing import Any

from psycopg2 import sql

from luigi_pipelines import sql as q
from luigi_pipelines.partitions import TableName

from .. import children as swap_children
from ..context import Bench
from ..data import MIB, Dataset
from ..measure import BenchError
from ..report import Section, SectionResult, Table, Target
from ..stack import ROOT, SCHEMA

DELETED, SWAPPED = TableName(SCHEMA, "swap_delete_mode"), TableName(SCHEMA, "swap_swap_mode")
TASKS = {DELETED: "LoadTransactions", SWAPPED: "LoadTransactionsSwapped"}
MODES = {DELETED: "delete mode", SWAPPED: "swap mode"}


FIRSTS = 3  # first loads of the reloaded date per mode, each into a new table (their median)
LOCK_WAIT = re.compile(r"process (\d+) acquired \w+ on .* after ([\d.]+) ms")


def probe(bench: Bench, table: TableName, dates: Sequence[Any], force: bool = False, times: int = 1
          ) -> dict[str, list[Any]]:
    """``bench.swap_probe``: each load of ``dates`` into ``table`` timed in one process, a checkpoint before each."""
    config = bench.stack.config_file(f"swap-{table.name}", str(table))
    args = ["-m", "bench.swap_probe", TASKS[table], ",".join(d.isoformat() for d in dates), "--times", str(times),
            "--checkpoint", *(["--force"] if force else [])]
    run = bench.stack.python(args, config, bench.options.timeout_s)
    return dict(json.loads(run.stdout.strip().splitlines()[-1]))


class Reader(threading.Thread):
    """A count of ``date``'s rows every 10 ms, each answer timed, until stopped. Its session logs each lock wait
    longer than 1 ms (``log_lock_waits`` after a ``deadlock_timeout`` of 1 ms): ``lock_waits`` reads them from the
    server's log, so a wait is told apart from the query's own time (a count of a date's rows takes tens of ms)."""

    def __init__(self, bench: Bench, table: TableName, date: Any) -> None:
        super().__init__(daemon=True)
        self.bench, self.date, self.stop = bench, date, threading.Event()
        self.error: Exception | None = None
        self.statement = sql.SQL("SELECT count(*) FROM {} WHERE txn_date = %s").format(q.table_ident(table))
        self.answers: list[float] = []
        self.pid, self.ready = 0, threading.Event()

    def run(self) -> None:
        try:
            with self.bench.stack.connect() as conn:
                conn.autocommit = True
                with conn.cursor() as cur:
                    cur.execute("SET deadlock_timeout = '1ms'; SET log_lock_waits = on; SELECT pg_backend_pid()")
                    self.pid = cur.fetchone()[0]
                    self.ready.set()
                    while not self.stop.is_set():
                        started = time.perf_counter()
                        cur.execute(self.statement, (self.date,))
                        cur.fetchone()
                        self.answers.append(time.perf_counter() - started)
                        time.sleep(max(0.0, 0.010 - (time.perf_counter() - started)))
        except Exception as exc:  # noqa: BLE001 - reported by the section
            self.error = exc
        finally:
            self.ready.set()

    def lock_waits(self, log: str) -> list[float]:
        """Each answer's wait for a lock, seconds: those the server logged (over 1 ms), 0 for the others."""
        waits = [float(ms) / 1e3 for pid, ms in LOCK_WAIT.findall(log) if int(pid) == self.pid]
        return waits + [0.0] * max(0, len(self.answers) - len(waits))


def size_and_dead(bench: Bench, table: TableName) -> tuple[int, int]:
    """The table's bytes (all its children and indexes) and its dead tuples (pgstattuple: exact, or the statistics')."""
    leaves = ("SELECT oid AS relid FROM pg_class WHERE oid = %(t)s::regclass AND relkind = 'r' "
              "UNION ALL SELECT relid FROM pg_partition_tree(%(t)s::regclass) WHERE isleaf")
    size = bench.stack.query(f"SELECT sum(pg_total_relation_size(relid)) FROM ({leaves}) l", {"t": str(table)})[0][0]
    try:
        bench.stack.execute("CREATE EXTENSION IF NOT EXISTS pgstattuple")
        dead = bench.stack.query(f"SELECT sum((pgstattuple(relid)).dead_tuple_count) FROM ({leaves}) l",
                                 {"t": str(table)})
    except Exception:  # noqa: BLE001 - an installation without the contrib module
        dead = bench.stack.query(f"SELECT sum(n_dead_tup) FROM pg_stat_user_tables WHERE relid IN ({leaves})",
                                 {"t": str(table)})
    return int(size), int(dead[0][0] or 0)


def p99(values: Sequence[float]) -> float:
    return sorted(values)[max(0, int(len(values) * 0.99) - 1)] if values else 0.0


def first_loads(bench: Bench, table: TableName, other: Any, reloaded: Any) -> float:
    """The median of ``FIRSTS`` first loads of ``reloaded``, each into a new table that holds ``other`` (loaded
    first, untimed, so that the table exists and the process is warm)."""
    seconds = []
    for _ in range(FIRSTS):
        bench.stack.execute(sql.SQL("DROP TABLE IF EXISTS {} CASCADE").format(q.table_ident(table)))
        bench.stack.forget_partitions(table)
        seconds.append(probe(bench, table, [other, reloaded])["seconds"][1])
    return statistics.median(seconds)


def watched(bench: Bench, table: TableName, other: Any, reloaded: Any, n: int) -> dict[str, Any]:
    """``n`` forced reloads of ``reloaded`` while a reader of each date counts its rows: their answer times and lock
    waits, the reloads' median, and the longest swap (request and hold of the parent's lock, to the commit)."""
    log, mark = bench.stack.pg.log_file, bench.stack.pg.log_file.stat().st_size
    readers = {"another date": Reader(bench, table, other), "the reloaded date": Reader(bench, table, reloaded)}
    for reader in readers.values():
        reader.start()
        reader.ready.wait(30)
    runs = probe(bench, table, [reloaded], force=True, times=n)
    for reader in readers.values():
        reader.stop.set()
        reader.join(30)
        if reader.error is not None:
            raise BenchError(f"the reader failed: {reader.error}")
    with open(log, encoding="utf-8", errors="replace") as f:
        f.seek(mark)
        text = f.read()
    return {"answers": {what: r.answers for what, r in readers.items()},
            "waits": {what: r.lock_waits(text) for what, r in readers.items()},
            "reload_with_reader_s": statistics.median(runs["seconds"]),
            "held_max_s": max((h for h in runs["held"] if h is not None), default=None),
            "swap_max_s": max((h for h in runs["swap"] if h is not None), default=None)}


def reloads(bench: Bench, datasets: Sequence[Dataset]) -> dict[TableName, dict[str, Any]]:
    """Each mode: first loads of the date (``first_loads``), ``swap_reloads`` forced reloads of it (timed, then the
    table's size and dead tuples), and as many again with the readers on (``watched``). Every load starts after a
    checkpoint, so the first loads and the reloads are timed in the same state."""
    reloaded, other = (d.csv.date for d in datasets)
    n, found = bench.options.swap_reloads, {}
    for table in (DELETED, SWAPPED):
        bench.log(f"{MODES[table]}: {FIRSTS} first loads of {reloaded} into a new table, then {n} forced reloads")
        first = first_loads(bench, table, other, reloaded)
        size_first, dead_first = size_and_dead(bench, table)
        runs = probe(bench, table, [reloaded], force=True, times=n)
        time.sleep(1.0)  # let the loader's statistics reach the collector (n_dead_tup, when pgstattuple is absent)
        size, dead = size_and_dead(bench, table)
        bench.log(f"{MODES[table]}: {n} more forced reloads of {reloaded}, a reader of each date meanwhile")
        found[table] = {"first_s": first, "reload_s": statistics.median(runs["seconds"]), "size_first": size_first,
                        "dead_first": dead_first, "size": size, "dead": dead,
                        **watched(bench, table, other, reloaded, n)}
    return found


def workers(bench: Bench, datasets: Sequence[Dataset]) -> dict[str, float]:
    """Forced reloads of 4 dates of one partitioned table: 1 process loading all 4 vs 2 processes loading 2 each."""
    dates = [d.csv.date for d in datasets]
    bench.log(f"swap mode: 1 process reloading {len(dates)} dates, then 2 processes reloading {len(dates) // 2} each")
    probe(bench, SWAPPED, dates)  # their first loads (untimed)
    started = time.perf_counter()
    probe(bench, SWAPPED, dates, force=True)
    one = time.perf_counter() - started
    config = bench.stack.config_file(f"swap-{SWAPPED.name}", str(SWAPPED))
    halves = [dates[: len(dates) // 2], dates[len(dates) // 2:]]
    started = time.perf_counter()
    procs = [subprocess.Popen([bench.stack.interpreter, "-m", "bench.swap_probe", TASKS[SWAPPED], ",".join(map(str, half)),
                               "--force"], env={**bench.stack.env, "LUIGI_CONFIG_PATH": str(config)}, cwd=ROOT,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) for half in halves]
    errors = [p.communicate(timeout=bench.options.timeout_s)[1] for p in procs]
    two = time.perf_counter() - started
    if any(p.returncode for p in procs):
        raise BenchError(f"a worker failed: {errors[0][-2000:]!r} {errors[1][-2000:]!r}")
    return {"one_s": one, "two_s": two}


def run(bench: Bench) -> SectionResult:
    mib = bench.options.swap_mib
    datasets = [bench.new_dataset(day, mib) for day in bench.new_dates(6)]
    found = reloads(bench, datasets[:2])
    side = workers(bench, datasets[2:])
    children = swap_children.measure(bench)
    for table in (DELETED, SWAPPED):
        bench.stack.execute(sql.SQL("DROP TABLE IF EXISTS {} CASCADE").format(q.table_ident(table)))
    return result(bench, datasets[0], found, side, children)


def result(bench: Bench, data: Dataset, found: dict[TableName, dict[str, Any]], side: dict[str, float],
           children: Table) -> SectionResult:
    n, delete, swap = bench.options.swap_reloads, found[DELETED], found[SWAPPED]
    loads = Table(f"First load and forced reload of one date, {data.rows:,} rows ({data.size_bytes / MIB:.0f} MiB), "
                  f"each load timed in its process (no interpreter start)",
                  ["mode", "first load s", f"reload s (median of {n})", "reload vs first load (same mode)",
                   "reload vs first load (delete mode)"])
    for table in (DELETED, SWAPPED):
        f = found[table]
        loads.rows.append([MODES[table], f["first_s"], f["reload_s"], f"{f['reload_s'] / f['first_s']:.2f}x",
                           f"{f['reload_s'] / delete['first_s']:.2f}x"])
    sizes = Table(f"The table after the first load and after {n} reloads of one date (2 dates loaded; autovacuum on)",
                  ["mode", "size after first load MB", f"size after {n} reloads MB", "growth", "dead tuples after"])
    for table in (DELETED, SWAPPED):
        f = found[table]
        sizes.rows.append([MODES[table], f["size_first"] / 1e6, f["size"] / 1e6,
                           f"{(f['size'] / f['size_first'] - 1) * 100:+.1f} %", f["dead"]])
    readers = Table(f"Readers during {n} more reloads (a count of one date every 10 ms each), ms: the answer times, "
                    f"their waits for a lock, and the swaps",
                    ["mode", "query", "answers", "answer p99", "answer longest", "lock wait p99", "lock wait longest",
                     "swap longest (lock asked to commit)", "lock held longest"])
    for table in (DELETED, SWAPPED):
        f = found[table]
        for what, answers in f["answers"].items():
            waits = f["waits"][what]
            readers.rows.append([MODES[table], f"count of {what}", len(answers), p99(answers) * 1e3,
                                 max(answers) * 1e3, p99(waits) * 1e3, max(waits) * 1e3,
                                 *(f[k] * 1e3 if f[k] is not None else None for k in ("swap_max_s", "held_max_s"))])
    readers.notes.append("a lock wait is what the reader's session logged (log_lock_waits, deadlock_timeout = 1 ms): "
                         "waits under 1 ms count as 0; the rest of an answer is the count itself, slower while a COPY "
                         "shares the 2 CPUs")
    workers_table = Table("Forced reloads of 4 dates of one partitioned table", ["processes", "seconds", "vs 1"])
    workers_table.rows += [[1, side["one_s"], "1.00x"], [2, side["two_s"], f"{side['two_s'] / side['one_s']:.2f}x"]]
    ratio = swap["reload_s"] / swap["first_s"]
    growth = swap["size"] / swap["size_first"] - 1
    other_wait, longest_swap = max(swap["waits"]["another date"]), swap["swap_max_s"] or 0.0
    return SectionResult("swap", tables=[loads, sizes, readers, workers_table, children], targets=[
        Target("swap reload vs the first load of the date (swap mode)", "<= 1.0x", f"{ratio:.2f}x", ratio <= 1.0),
        Target(f"partitioned table after {n} reloads", "within 5 %, 0 dead tuples",
               f"{growth * 100:+.1f} %, {swap['dead']} dead", abs(growth) <= 0.05 and swap["dead"] == 0),
        Target("longest lock wait of a reader of another date vs the longest swap", "<= the swap",
               f"{other_wait * 1e3:.0f} ms vs {longest_swap * 1e3:.0f} ms", other_wait <= longest_swap)],
        data={"found": {MODES[t]: {k: v for k, v in f.items() if k not in ("waits", "answers")}
                        for t, f in found.items()},
              "workers": side, "rows": data.rows})


SECTION = Section("swap", "partition swap vs delete mode: reload time, bloat, reader waits, 2 workers, 3,650 children",
                  run)
