"""The example pipeline: daily card transactions from ``s3://<bucket>/transactions/<YYYY-MM-DD>/*.csv[.gz]``, their
daily totals, their refunds, JSON lines from ``s3://<bucket>/refunds/<YYYY-MM-DD>/*.jsonl[.gz]``, and the accounts
dimension merged from daily snapshots (``accounts/<YYYY-MM-DD>/``).

Run a backfill with luigi's own range tool::

    luigi --module luigi_pipelines.pipelines.transactions RangeDaily --of LoadTransactions \\
        --start 2019-02-01 --stop 2019-03-01
"""
import luigi
from luigi.tools.range import RangeDaily  # noqa: F401 - registers RangeDaily with [core] autoload_range=false

import luigi_pipelines as lp
from luigi_pipelines.transforms import daily_account_totals


class transactions(luigi.Config):  # noqa: N801 - the [transactions] section
    bucket = luigi.Parameter(default="example-transactions", description="bucket holding transactions/<date>/")
    table = luigi.Parameter(default="public.transaction", description="target table, schema-qualified")
    totals_table = luigi.Parameter(default="public.daily_account_totals", description="table of daily totals")
    accounts_table = luigi.Parameter(default="public.account", description="the accounts dimension, merged by key")
    refunds_table = luigi.Parameter(default="public.refund", description="table of refunds, loaded from JSON lines")


class LoadTransactions(lp.LoadPartition):
    """One day of transactions, replaced as a whole in one transaction."""

    key_prefix = "transactions/{date:%Y-%m-%d}/"
    date_column = "txn_date"
    columns = [
        ("id", "bigint"),
        ("txn_date", "date"),
        ("account", "text"),
        ("amount", "numeric(12,2)"),
        ("currency", "char(3)"),
        ("created_at", "timestamptz"),
        ("note", "text"),
    ]
    csv = lp.CsvFormat(header=True, null="")

    # Where the data lives differs per environment, so it comes from the [transactions] section.
    bucket = property(lambda self: transactions().bucket)
    table = property(lambda self: transactions().table)


class LoadRefunds(lp.LoadPartition):
    """One day of refunds, JSON lines (one object a line, as a Firehose stream delivers them): each declared
    column from the key of its name, typed by PostgreSQL; keys no column takes kept in ``attributes``."""

    key_prefix = "refunds/{date:%Y-%m-%d}/"
    keys = ("*.jsonl", "*.jsonl.gz")
    date_column = "refund_date"
    date_from = lp.partition_date()
    columns = [
        ("id", "bigint"),
        ("txn_id", "bigint"),
        ("refunded_at", "timestamptz"),
        ("amount", "numeric(12,2)"),
        ("reason", "text"),
        ("channel", "jsonb"),
        ("attributes", "jsonb"),
    ]
    decoder = lp.JsonLinesDecoder(extra="attributes")

    bucket = property(lambda self: transactions().bucket)
    table = property(lambda self: transactions().refunds_table)


class SummarizeTransactions(lp.TransformPartition):
    """Daily totals per account and currency, from the same day's transactions."""

    upstream = LoadTransactions
    source_columns = ["account", "currency", "amount"]
    transform = staticmethod(daily_account_totals)
    date_column = "txn_date"
    columns = [
        ("txn_date", "date"),
        ("account", "text"),
        ("currency", "char(3)"),
        ("transactions", "bigint"),
        ("total", "numeric(16,2)"),
    ]
    table = property(lambda self: transactions().totals_table)


class MergeAccounts(lp.MergePartition):
    """The accounts dimension: each day's full snapshot (``accounts/<YYYY-MM-DD>/``) merged by account, so that
    changed accounts are updated, new ones inserted and closed ones (absent from the snapshot) deleted."""

    key_prefix = "accounts/{date:%Y-%m-%d}/"
    columns = [("account", "text"), ("name", "text"), ("tier", "text")]
    merge_key = ("account",)
    snapshot = True

    bucket = property(lambda self: transactions().bucket)
    table = property(lambda self: transactions().accounts_table)
