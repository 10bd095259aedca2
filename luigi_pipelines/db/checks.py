"""A partition's data checks (``checks``), run in its transaction after its rows are in and before its marker:
the quarantine of row checks that ask for it, then every check's figures, recorded on the transaction for the
marker; a failed check of severity ``error`` raises ``DataCheckError`` (the transaction rolls back)."""
from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import psycopg2

from .. import checks as c
from ..errors import ConfigurationError, DataCheckError
from ..partitions import ScopedTable, TableName
from ..sql import checks as q
from ..sql import identifiers
from .transaction import PartitionTransaction
from .translate import primary_message

logger = logging.getLogger("luigi-interface.luigi_pipelines")


@dataclass(frozen=True)
class CheckedRows:
    """Where a partition's checks find its rows, and what they may use beside them.

    ``rows``: the partition's rows (of a replace, the table's rows of its dates and scope; of a merge, its stage,
    every row read, before rows of the same key supersede each other); ``table``: of a merge, the table's rows of
    the scope, with the ``merge_key`` (a ``unique`` over other columns compares them too, unless ``snapshot``);
    ``key_column``: a lineage column with each row's S3 key, named in the samples.
    """

    rows: q.Rows
    marker: TableName
    rejects: TableName
    family: str
    key_column: str = ""
    max_bad_rows: int = 0
    table: q.Rows | None = None
    merge_key: tuple[str, ...] = ()
    snapshot: bool = False

    @classmethod
    def replaced(cls, tx: PartitionTransaction, date_column: str, **common: Any) -> CheckedRows:
        """A replaced partition's rows: the table's rows of its dates and scope."""
        return cls(_rows_of(tx.key, date_column, tx), **common)

    @classmethod
    def merged(cls, tx: PartitionTransaction, stage: TableName, rows: ScopedTable, merge_key: tuple[str, ...],
               snapshot: bool, **common: Any) -> CheckedRows:
        """A merged partition's rows: its stage; beside them the table's rows of ``rows`` (its scope)."""
        return cls(q.Rows.every(stage), table=_rows_of(rows, "", tx), merge_key=merge_key, snapshot=snapshot, **common)

    @classmethod
    def swapped(cls, child: TableName, **common: Any) -> CheckedRows:
        """A swapped partition's rows: every row of its new child table (``swap.Swap``)."""
        return cls(q.Rows.every(child), **common)


def _rows_of(key: ScopedTable, date_column: str, tx: PartitionTransaction) -> q.Rows:
    return q.Rows(key.table, q.partition_where(date_column, key.scope, tx.date, tx.stop if tx.span else None))


def run_checks(tx: PartitionTransaction, checks: Sequence[c.Check], where: CheckedRows) -> list[c.CheckResult]:
    """Run ``checks`` on the partition's rows (see the module docstring); their results, also in ``tx.checks``."""
    quarantined = _quarantine(tx, [k for k in checks if k.quarantine], where)
    rest = [k for k in checks if not k.quarantine]
    rows, counts = _row_counts(tx, [k for k in rest if k.predicate() is not None or _within(k, where)], where)
    results = [quarantined.get(k.name) or _result(tx, k, where, rows, counts) for k in checks]
    tx.checks = [r.record() for r in results]
    partition = f"{tx.key.describe()} {tx.date}"
    for result in results:
        if not result.passed and result.severity == c.WARN:
            logger.warning("%s: data check warned (committed): %s", partition, result.describe())
    failed = [r for r in results if not r.passed and r.severity == c.ERROR]
    if failed:
        raise DataCheckError(c.failed_text(partition, failed), tuple(failed))
    return results


def _within(check: c.Check, where: CheckedRows) -> bool:
    """Whether ``check`` is a ``unique`` of the partition's rows alone (not, of a merge, with the table's too)."""
    return isinstance(check, c.Unique) and not _across(check, where)


def _across(check: c.Unique, where: CheckedRows) -> bool:
    return where.table is not None and not where.snapshot and set(check.columns) != set(where.merge_key)


def _row_counts(tx: PartitionTransaction, checks: Sequence[c.Check], where: CheckedRows
                ) -> tuple[int, dict[str, int]]:
    """The partition's rows and the violations of each of ``checks`` (row checks, and ``unique``s of the partition):
    one scan (none without such checks: the rows are those the write counted)."""
    if not checks:
        return tx.rows, {}
    row_checks = [k for k in checks if k.predicate() is not None]
    uniques = [k for k in checks if k.predicate() is None]
    tx.cursor.execute(q.row_figures(where.rows, [k.predicate() for k in row_checks],
                                    [k.columns for k in uniques]))
    total, *violations = tx.cursor.fetchone()
    return int(total), {k.name: int(n) for k, n in zip([*row_checks, *uniques], violations, strict=True)}


def _result(tx: PartitionTransaction, check: c.Check, where: CheckedRows, rows: int, counts: dict[str, int]
            ) -> c.CheckResult:
    if isinstance(check, c.Unique):
        return _unique(tx, check, where, rows, counts.get(check.name))
    if isinstance(check, c.RowCount):
        return _row_count(tx, check, where, rows)
    if isinstance(check, c.SqlCheck):
        return _user_check(tx, check, where, rows)
    violations = counts[check.name]
    samples = _samples(tx, check, where) if violations else ()
    return c.CheckResult(check.name, check.severity, rows, violations, check.bound(), samples=samples)


def _samples(tx: PartitionTransaction, check: c.Check, where: CheckedRows) -> tuple[str, ...]:
    predicate = check.predicate()
    assert predicate is not None
    tx.cursor.execute(q.violating_rows(where.rows, predicate, c.SAMPLES))
    return tuple(c.sample_text(row, where.key_column) for (row,) in tx.cursor.fetchall())


def _unique(tx: PartitionTransaction, check: c.Unique, where: CheckedRows, rows: int, counted: int | None
            ) -> c.CheckResult:
    """Rows that repeat another row's values of the columns: of the partition (``counted`` in the scan of the row
    checks); of a merge over other columns than its key, with the table's rows of other keys. The values on
    more than one row are read only for the samples of a failed check."""
    columns = list(check.columns)
    wanted = identifiers([*columns, *([where.key_column] if where.key_column else [])])
    source = where.rows.select(wanted)
    if where.table is not None and _across(check, where):
        source = q.merged_values(where.rows, where.table, columns, where.merge_key, where.key_column)
        tx.cursor.execute(q.surplus(source, columns))
        counted = int(tx.cursor.fetchone()[0])
    assert counted is not None
    samples: tuple[str, ...] = ()
    if counted:
        tx.cursor.execute(q.duplicates(source, columns, where.key_column, c.SAMPLES))
        samples = tuple(c.sample_text(row, where.key_column, row[q.ROWS]) for (row,) in tx.cursor.fetchall())
    across = f", with the table's rows of other keys than ({', '.join(where.merge_key)})" if _across(check, where) else ""
    return c.CheckResult(check.name, check.severity, rows, counted, check.bound() + across, samples=samples)


def _row_count(tx: PartitionTransaction, check: c.RowCount, where: CheckedRows, rows: int) -> c.CheckResult:
    median, last_found = None, 0
    if check.relative:
        tx.cursor.execute(q.recent_rows(where.marker), (str(tx.key), tx.date, check.last))
        found, last_found = tx.cursor.fetchone()
        median = None if found is None else float(found)
    low, high = check.limits(median)
    outside = (low is not None and rows < low) or (high is not None and rows > high)
    return c.CheckResult(check.name, check.severity, rows, int(outside), check.describe(median, int(last_found)))


def _user_check(tx: PartitionTransaction, check: c.SqlCheck, where: CheckedRows, rows: int) -> c.CheckResult:
    try:
        tx.cursor.execute(q.user_check(where.rows, check.query, c.SAMPLES))
    except (psycopg2.Error, KeyError, IndexError, ValueError) as exc:  # the server's, or SQL.format's placeholders
        if not isinstance(exc, psycopg2.Error):
            raise ConfigurationError(f"{where.family}: {check.name}: its query has a placeholder other than "
                                     f"{c.PARTITION} ({exc!r}): double the braces of its text") from None
        raise ConfigurationError(f"{where.family}: {check.name}: its query failed: {primary_message(exc)}") from None
    found = tx.cursor.fetchall()
    samples = tuple(c.sample_text(_as_row(row), where.key_column) for _, row in found)
    return c.CheckResult(check.name, check.severity, rows, int(found[0][0]) if found else 0, check.bound(),
                         samples=samples)


def _as_row(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {"value": value}


def _quarantine(tx: PartitionTransaction, row_checks: Sequence[c.Check], where: CheckedRows
                ) -> dict[str, c.CheckResult]:
    """Set the violating rows of ``row_checks`` aside in the rejects table, if they fit in what ``max_bad_rows``
    leaves; else nothing is set aside and those checks fail with their figures."""
    if not row_checks:
        return {}
    rows, counts = _row_counts(tx, row_checks, where)
    budget = where.max_bad_rows - tx.rejected
    if sum(counts.values()) > budget:
        return {k.name: c.CheckResult(k.name, c.ERROR, rows, counts[k.name], f"{k.bound()}, or at most {budget} "
                                      f"rows set aside (max_bad_rows {where.max_bad_rows}, {tx.rejected} set aside "
                                      f"already)", samples=_samples(tx, k, where) if counts[k.name] else ())
                for k in row_checks}
    results, line = {}, 0
    for check in row_checks:
        samples = _samples(tx, check, where) if counts[check.name] else ()
        moved = _move(tx, check, where, line) if counts[check.name] else 0
        line -= moved
        results[check.name] = c.CheckResult(check.name, check.severity, rows, moved, check.bound(), moved, samples)
    return results


def _move(tx: PartitionTransaction, check: c.Check, where: CheckedRows, line: int) -> int:
    predicate = check.predicate()
    assert predicate is not None
    tx.cursor.execute(q.quarantine_rows(where.rows, predicate, where.rejects, where.key_column),
                      (str(tx.key), tx.date, line, f"check {check.name}: violates {check.bound()}"))
    moved = tx.cursor.rowcount
    tx.rows -= moved
    tx.rejected += moved
    logger.warning("%s %s: %d rows set aside in %s by check %s", tx.key.describe(), tx.date, moved, where.rejects,
                   check.name)
    return moved
