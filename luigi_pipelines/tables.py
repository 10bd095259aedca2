"""The tables a partition's write needs, before its transaction: the marker tables, the target table (created
when declared so), and the checks that an existing table has what each load fills.

Each problem is one ``ConfigurationError`` with the statement that fixes it. No luigi here.
"""
from __future__ import annotations

import os

import psycopg2.extensions

from . import contracts, db, layouts, native
from . import sql as q
from .contracts import NO_CONTRACT, Contract
from .errors import ConfigurationError
from .evolution import refusal
from .layouts import DateSource, TableLayout, unknown_types
from .partitions import TableName
from .settings import LoadSettings


def check_temp_dir(settings: LoadSettings) -> None:
    if not os.path.isdir(settings.temp_directory):
        raise ConfigurationError(f"[load] temp_dir {settings.temp_directory} does not exist (or is not a "
                                 f"directory): create it or point temp_dir elsewhere")


def prepare(conn: psycopg2.extensions.connection, settings: LoadSettings, marker: TableName, layout: TableLayout,
            family: str, create_table: bool, date_from: DateSource, contract: Contract = NO_CONTRACT) -> None:
    """Check the declared types (``to_regtype``, before anything is created or read), create the marker tables,
    and the target table if declared so; check that an existing table matches the declaration.

    On a reused connection (``db.session``) the types, the tables' existence and the table's columns are checked
    once: a table dropped later makes the load fail (its DELETE, COPY or marker read names the missing relation),
    which drops the connection and what was checked on it, so the next attempt checks and creates again. The
    columns that each load fills are checked every time: a default removed meanwhile would leave them NULL.
    A difference that ``contract`` lets the load make is left to it (``evolution.evolve``, in the transaction)."""
    check_temp_dir(settings)
    checked = db.checks_of(conn)
    declared = ("declared", layout.table, layout.table_columns, contract)
    types: layouts.ResolvedTypes = {}
    if declared not in checked:  # before anything is created or read
        types = db.resolve_types(conn, (c.type for c in layout.table_columns))
        unknown = unknown_types(layout.table_columns, types)
        if unknown:
            raise ConfigurationError(f"{family}: PostgreSQL knows no type {', '.join(unknown)} (to_regtype); fix the "
                                     f"column's type in `columns`")
    tables = ("tables", marker, settings.rejects, settings.failures)
    if tables not in checked:
        db.ensure_marker_table(conn, marker, settings.rejects, settings.failures)
        checked.add(tables)
    exists = ("exists", layout.table)
    if exists not in checked:
        ensure_table(conn, layout, family, create_table, date_from)
        checked.add(exists)
    if declared not in checked or layout.defaults:
        check_table(conn, layout, family, date_from, types, contract)
        checked.add(declared)


def ensure_table(conn: psycopg2.extensions.connection, layout: TableLayout, family: str, create_table: bool,
                 date_from: DateSource) -> None:
    """The target table exists, created here if declared so."""
    if create_table and not date_from.own_ddl:
        db.ensure_table(conn, layout.table, layout.create_statements())
    elif not db.table_exists(conn, layout.table):
        why = "date_from = generated_column(): create it with its generated date column" if create_table \
            else "create_table is off"
        raise ConfigurationError(f"{family}: table {layout.table} does not exist and {why}")


def check_table(conn: psycopg2.extensions.connection, layout: TableLayout, family: str, date_from: DateSource,
                types: layouts.ResolvedTypes, contract: Contract = NO_CONTRACT) -> None:
    """An existing table must have the declared columns, of their kind of type, and what the layout adds to them (or
    the load would leave those columns NULL); no column the load leaves out may be NOT NULL without a default. Every
    problem is reported at once, with the one ``ALTER TABLE`` that fixes them all (``contracts.differences``), but
    those ``contract`` lets the load make. ``types`` empty: the types are not compared."""
    existing = db.table_columns(conn, layout.table)
    if not existing:  # dropped since this connection created it: the load fails naming it, and the next creates it
        return
    if not layout.partition_by:  # a partitioned table is the swap's to check (``swap.Swap.prepare``)
        native.check_shape(conn, layout.table, (), "", family)
    refused = contracts.judge(contracts.differences(layout, existing, types, contract), contract).refused
    if refused:
        size = db.table_size(conn, layout.table) if any(d.kind == contracts.REWRITE for d in refused) else None
        raise ConfigurationError(refusal(conn, layout, family, refused, contract, size))
    if date_from.generated:
        check_generated_date(conn, layout, family, date_from)


def check_generated_date(conn: psycopg2.extensions.connection, layout: TableLayout, family: str,
                         date_from: DateSource) -> None:
    info = db.column_info(conn, layout.table, layout.date_column)
    if info is None or not info.generated:
        fixes = [q.add_column(layout.table, q.generated_column(c, e)).as_string(conn) for c, e in layout.generated]
        raise ConfigurationError(
            f"{family}: {layout.table} {'has no' if info is None else 'has a plain'} column "
            f"{layout.date_column!r}, but date_from = {date_from.describe()} needs a generated column"
            + "".join(f"; run once{' (after dropping the old column)' if info else ''}: {fix}" for fix in fixes))
    zone = date_from.zone
    if zone and not db.check_time_zone(conn, zone):
        raise ConfigurationError(f"{family}: {date_from.describe()}: PostgreSQL does not know the "
                                 f"time zone {zone!r} (see pg_timezone_names)")
