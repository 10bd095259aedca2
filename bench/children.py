"""What thousands of children cost readers (the ``swap`` section): a parent with a daily child per date and the same
rows in a plain table with an index on the date; planning and execution time of a one-date query and of a one-month
aggregate, on a warm session (the median of several) and as the first query of a new session."""
from __future__ import annotations

import json
import statistics
import time

from psycopg2 import sql

from luigi_pipelines import sql as q
from luigi_pipelines.partitions import TableName

from .context import Bench
from .report import Table
from .stack import SCHEMA

PARTITIONED, PLAIN = TableName(SCHEMA, "swap_children"), TableName(SCHEMA, "swap_children_plain")
QUERIES = {
    "one date": "SELECT count(*), sum(amount) FROM {} WHERE txn_date = '2014-06-15'",
    "one month, by date": "SELECT txn_date, count(*), sum(amount) FROM {} WHERE txn_date >= '2014-06-01' "
                          "AND txn_date < '2014-07-01' GROUP BY 1",
}
WARM_RUNS = 7


def drop(bench: Bench) -> None:
    """Both tables; the children a few hundred per transaction (dropping thousands at once needs more locks than
    ``max_locks_per_transaction`` gives a transaction by default)."""
    names = [r[0] for r in bench.stack.query("SELECT relid::text FROM pg_partition_tree(to_regclass(%s)) WHERE isleaf",
                                             (str(PARTITIONED),))]
    for start in range(0, len(names), 500):
        bench.stack.execute(sql.SQL("DROP TABLE {}").format(sql.SQL(", ").join(map(sql.SQL, names[start:start + 500]))))
    for table in (PARTITIONED, PLAIN):
        bench.stack.execute(sql.SQL("DROP TABLE IF EXISTS {} CASCADE").format(q.table_ident(table)))


def build(bench: Bench, days: int, rows_per_day: int) -> None:
    """Both tables, ``days`` dates from 2010-01-01 of ``rows_per_day`` rows each, analysed."""
    stack = bench.stack
    drop(bench)
    columns = "(id bigint, txn_date date, amount numeric(12,2))"
    stack.execute(sql.SQL("CREATE TABLE {} " + columns + " PARTITION BY RANGE (txn_date)").format(
        q.table_ident(PARTITIONED)))
    stack.execute(sql.SQL("CREATE TABLE {} " + columns).format(q.table_ident(PLAIN)))
    bench.log(f"creating {days:,} daily children and {days * rows_per_day:,} rows")
    stack.execute(sql.SQL(
        "DO $$BEGIN FOR n IN 0..{} LOOP EXECUTE format('CREATE TABLE %I.%I PARTITION OF %I.%I FOR VALUES FROM (%L) "
        "TO (%L)', {}, {} || to_char(date '2010-01-01' + n, 'YYYYMMDD'), {}, {}, date '2010-01-01' + n, "
        "date '2010-01-01' + n + 1); END LOOP; END$$").format(
        sql.Literal(days - 1), sql.Literal(SCHEMA), sql.Literal(f"{PARTITIONED.name}_p"), sql.Literal(SCHEMA),
        sql.Literal(PARTITIONED.name)))
    for table in (PARTITIONED, PLAIN):
        stack.execute(sql.SQL("INSERT INTO {} SELECT g, date '2010-01-01' + (g % {}), (g % 1000) / 10.0 "
                              "FROM generate_series(0, {}) g").format(q.table_ident(table), sql.Literal(days),
                                                                      sql.Literal(days * rows_per_day - 1)))
        stack.execute(q.create_date_index(table, "txn_date"))
        stack.execute(sql.SQL("ANALYZE {}").format(q.table_ident(table)))


def explain(cur: object, statement: str) -> tuple[float, float]:
    """(planning ms, execution ms) of one ``EXPLAIN (ANALYZE, FORMAT JSON)``."""
    cur.execute("EXPLAIN (ANALYZE, FORMAT JSON) " + statement)  # type: ignore[attr-defined]
    plan = cur.fetchone()[0]  # type: ignore[attr-defined]
    plan = plan if isinstance(plan, list) else json.loads(plan)
    return float(plan[0]["Planning Time"]), float(plan[0]["Execution Time"])


def measure(bench: Bench) -> Table:
    days, per_day = bench.options.swap_children, bench.options.swap_child_rows
    build(bench, days, per_day)
    table = Table(f"Readers of {days:,} daily children vs a plain table ({days * per_day:,} rows, {per_day} a date; "
                  f"an index on the date in both)",
                  ["table", "query", "planning ms", "execution ms", "first query of a new session ms"])
    try:
        for label, target in (("partitioned", PARTITIONED), ("plain", PLAIN)):
            for what, text in QUERIES.items():
                statement = text.format(f'"{target.schema}"."{target.name}"')
                firsts = []
                for _ in range(3):
                    with bench.stack.connect() as conn, conn.cursor() as cur:
                        started = time.perf_counter()
                        cur.execute(statement)
                        cur.fetchall()
                        firsts.append((time.perf_counter() - started) * 1e3)
                with bench.stack.connect() as conn, conn.cursor() as cur:
                    runs = [explain(cur, statement) for _ in range(WARM_RUNS + 1)][1:]
                table.rows.append([label, what, statistics.median(r[0] for r in runs),
                                   statistics.median(r[1] for r in runs), statistics.median(firsts)])
    finally:
        drop(bench)
    table.notes = [f"median of {WARM_RUNS} EXPLAIN ANALYZE on one session after a first run; the first query of a "
                   "new session: median of 3 sessions (it reads the children's catalog entries)"]
    return table
