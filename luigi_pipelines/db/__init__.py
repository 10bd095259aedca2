"""PostgreSQL effects, one module per concern; the package re-exports their public names, so that callers write
``db.session``, ``db.partition_transaction``, ``db.completed_dates`` whatever module holds them.

- ``translate``: what a database error means to the project (``translate``, ``describe_errors``);
- ``session``: connections, the per-process reused connection and its fork handling;
- ``catalog``: catalog reads and race-free DDL (tables, columns, keys, types, the marker tables and their upgrade);
- ``transaction``: the partition transaction with COPY, the savepoint, a partition's rows, the merge's helpers;
- ``schema``: a table's columns read and changed inside a partition's transaction (schema contracts);
- ``markers``: completed partitions, marker sources, failures, the windows and summaries of ``status``;
- ``newest``: the newest marked partition of a task's keys (a table's freshness);
- ``checks``: a partition's data checks, run in its transaction before its marker.

Each owns its SQL, built by the pure modules of ``luigi_pipelines.sql``; no module outside this package touches a
cursor.
"""
from .catalog import (
    ColumnInfo,
    check_time_zone,
    column_info,
    ensure_marker_table,
    ensure_table,
    resolve_types,
    table_columns,
    table_exists,
    unique_keys,
)
from .checks import CheckedRows, run_checks
from .markers import (
    Failure,
    MarkerSources,
    completed_dates,
    completed_partitions,
    count_rows,
    failures_window,
    marker_sources,
    marker_summary,
    marker_window,
    record_failure,
    recorded_span,
    server_clock,
    supersede_failures,
    upstream_markers,
)
from .newest import newest_marked
from .schema import alter_schema, columns_in, connection_of, lock_schema, schema_lock_key, table_size, types_in
from .session import checks_of, close_sessions, connect, connect_kwargs, session
from .transaction import (
    PartitionRows,
    PartitionTransaction,
    SupportsRead,
    attempt,
    clear_failure,
    copy_in_savepoint,
    copy_stream,
    count_outside_by_key,
    count_partition,
    delete_absent,
    delete_partition,
    delete_rejects,
    execute,
    fetch_one,
    fill_columns,
    guard_copies,
    insert_from_query,
    keys_of_date,
    keys_of_table,
    lock_table,
    newest_partition,
    partition_transaction,
    read_rows,
    tentative_copy,
    write_marker,
    write_rejects,
)
from .translate import (
    BAD_DATA,
    CHECK_VIOLATION,
    LOCK_TIMEOUT,
    MISSING_OPERATOR,
    NO_PRIVILEGE,
    describe_errors,
    primary_message,
    translate,
    translating,
)

__all__ = [
    "CheckedRows", "run_checks",
    "BAD_DATA", "CHECK_VIOLATION", "LOCK_TIMEOUT", "MISSING_OPERATOR", "NO_PRIVILEGE", "attempt", "fetch_one", "primary_message",
    "translate", "translating",
    "ColumnInfo", "Failure", "MarkerSources", "PartitionRows", "PartitionTransaction", "SupportsRead", "check_time_zone",
    "checks_of", "clear_failure", "close_sessions", "column_info", "completed_dates", "completed_partitions", "connect",
    "connect_kwargs", "connection_of", "copy_in_savepoint", "copy_stream", "count_outside_by_key", "count_partition",
    "count_rows", "guard_copies",
    "delete_absent", "delete_partition", "delete_rejects", "describe_errors", "ensure_marker_table", "ensure_table",
    "execute", "failures_window", "fill_columns", "insert_from_query", "keys_of_date", "keys_of_table", "lock_table",
    "marker_sources", "marker_summary", "marker_window", "newest_marked", "newest_partition", "partition_transaction",
    "read_rows",
    "record_failure", "recorded_span", "resolve_types", "server_clock", "session", "supersede_failures",
    "table_columns", "table_exists", "tentative_copy", "unique_keys", "upstream_markers", "write_marker", "write_rejects",
    "alter_schema", "columns_in", "lock_schema", "schema_lock_key", "table_size", "types_in",
]
