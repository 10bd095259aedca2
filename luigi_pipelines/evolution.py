"""A schema contract's changes to a table, made inside the partition's transaction (``contracts``: what and when).

``evolve`` runs right after the partition's lock and marker read, before anything of the table is touched: it reads
the catalog, and when the contract lets the load make a difference (a column added, a type widened) it waits for
the table's schema lock (``db.lock_schema``), reads the catalog again (another load may have made it meanwhile),
and runs one ``ALTER TABLE``. The ALTER takes the table's ACCESS EXCLUSIVE lock, held until the load commits: the
table's readers wait for that one load, once per change; the loads after it find nothing to change and take no lock
but their own. A kill at any point rolls the change back with the rows and the marker. No luigi here.
"""
from __future__ import annotations

import logging

import psycopg2.extensions

from . import contracts, db
from .contracts import NO_CONTRACT, REWRITE, Contract, Difference, Verdict
from .errors import ConfigurationError
from .layouts import TableLayout

logger = logging.getLogger("luigi-interface.luigi_pipelines")
_MIB = 1024 * 1024


def evolve(tx: db.PartitionTransaction, layout: TableLayout, family: str, contract: Contract) -> None:
    """Make the differences between ``layout`` and its table that ``contract`` lets a load make (see the module
    docstring); refuse the load, naming them all, if one it does not let a load make appeared since the check
    before the transaction."""
    if not contract.evolves or not _verdict(tx, layout, contract).applied:
        return
    db.lock_schema(tx, layout.table)
    verdict = _verdict(tx, layout, contract)  # under the lock: what another load changed meanwhile is seen
    if verdict.refused:
        raise ConfigurationError(refusal(db.connection_of(tx), layout, family, verdict.refused, contract))
    if not verdict.applied:
        return
    statement = contracts.fix_statement(layout.table, verdict.applied)
    db.alter_schema(tx, layout.table, statement)
    logger.warning("%s %s: %s: %s (%s; committed with this load)", tx.key.describe(), tx.date, contract.describe(),
                   "; ".join(d.problem for d in verdict.applied), statement.as_string(db.connection_of(tx)))


def _verdict(tx: db.PartitionTransaction, layout: TableLayout, contract: Contract) -> Verdict:
    existing = db.columns_in(tx, layout.table)
    if not existing:  # dropped since the check: the load fails naming it
        return Verdict((), ())
    types = db.types_in(tx, (c.type for c in layout.table_columns))
    return contracts.judge(contracts.differences(layout, existing, types, contract), contract)


def refusal(conn: psycopg2.extensions.connection, layout: TableLayout, family: str,
            refused: tuple[Difference, ...] | list[Difference], contract: Contract,
            size: tuple[int, int] | None = None) -> str:
    """The message of a load refused for ``refused``: every difference, and the one statement a person runs (with
    the table's size when it rewrites the table)."""
    fix = contracts.fix_statement(layout.table, refused).as_string(conn)
    text = f"{family}: {contracts.headline(layout.table, refused)}; run once: {fix}"
    if contract != NO_CONTRACT:
        text += f" ({contract.describe()})"
    if size is not None and any(d.kind == REWRITE for d in refused):
        text += (f"; it rewrites {layout.table} ({size[0] / _MIB:.1f} MiB with its indexes, about {size[1]} rows) "
                 f"under an ACCESS EXCLUSIVE lock: run it when readers can wait, or let the loads do it with "
                 f"types='evolve_with_rewrite'")
    added = [d.column for d in refused if d.kind == contracts.ADD]
    if added and contract.columns == "freeze" and contract != NO_CONTRACT:
        text += f"; a column is never renamed by a load: if {added[0]!r} was renamed, rename it instead " \
                f"(ALTER TABLE ... RENAME COLUMN old TO {added[0]})"
    return text
