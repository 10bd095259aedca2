"""Pure transform functions: rows in, new rows out; they never mutate their input or touch globals."""
from __future__ import annotations

import datetime
from collections.abc import Iterable, Sequence
from decimal import Decimal
from typing import Any

Row = tuple[Any, ...]


def daily_account_totals(rows: Iterable[Sequence[Any]], date: datetime.date) -> list[Row]:
    """One row per (account, currency) of a day's transactions: date, account, currency, count, total.

    ``rows`` are ``(account, currency, amount)``; NULL amounts count as transactions but add nothing.
    The result is sorted, so the same input always gives the same output.
    """
    totals: dict[tuple[str, str], tuple[int, Decimal]] = {}
    for account, currency, amount in rows:
        count, total = totals.get((account, currency), (0, Decimal(0)))
        totals[(account, currency)] = (count + 1, total + (amount if amount is not None else Decimal(0)))
    return [(date, account, currency, count, total) for (account, currency), (count, total) in sorted(totals.items())]
