"""Deterministic sample transactions and refunds for the demo and the tests (pure: rows in, bytes out)."""
from __future__ import annotations

import datetime
import gzip
import json
import random

HEADER = "id,txn_date,account,amount,currency,created_at,note"
_CURRENCIES = ("EUR", "USD", "GBP", "CHF")
ACCOUNTS_HEADER = "account,name,tier"
_TIERS = ("basic", "silver", "gold")


def transaction_lines(date: datetime.date, first_id: int, count: int, seed: int = 0) -> list[str]:
    """``count`` CSV lines of transactions on ``date``, ids from ``first_id``; some notes are NULL."""
    rng = random.Random(f"{seed}-{date.isoformat()}-{first_id}")
    lines = []
    for n in range(count):
        second = rng.randrange(86400)
        created = datetime.datetime.combine(date, datetime.time()) + datetime.timedelta(seconds=second)
        note = "" if rng.random() < 0.3 else f'"card, ref {rng.randrange(10**6):06d}"'
        lines.append(
            f"{first_id + n},{date.isoformat()},acct-{rng.randrange(1000):04d},{rng.randrange(1, 10**6) / 100:.2f},"
            f"{rng.choice(_CURRENCIES)},{created.isoformat()}+00:00,{note}"
        )
    return lines


def csv_bytes(lines: list[str], header: bool = True, compress: bool = False) -> bytes:
    body = "\n".join(([HEADER] if header else []) + lines) + "\n"
    data = body.encode()
    return gzip.compress(data, mtime=0) if compress else data


def day_objects(date: datetime.date, rows: int, parts: int, seed: int = 0) -> dict[str, bytes]:
    """A day's objects, ``transactions/<date>/part-N.csv[.gz]``, every other part gzipped."""
    objects = {}
    per_part = -(-rows // parts)
    for part in range(parts):
        first = date.toordinal() * 100_000 + part * per_part
        count = min(per_part, rows - part * per_part)
        gz = part % 2 == 1
        key = f"transactions/{date.isoformat()}/part-{part:04d}.csv" + (".gz" if gz else "")
        objects[key] = csv_bytes(transaction_lines(date, first, count, seed), compress=gz)
    return objects


def account_lines(date: datetime.date, accounts: int = 1000) -> list[str]:
    """The snapshot of the accounts (``acct-NNNN``, as in the transactions) on ``date``: an account's tier moves
    every 3 to 9 days, and on any date 20 accounts are closed (absent from the snapshot; back the next day)."""
    day = date.toordinal()
    return [f"acct-{n:04d},Account {n},{_TIERS[(n + day // (3 + n % 7)) % len(_TIERS)]}"
            for n in range(accounts) if (n + day) % 50]


def accounts_csv(date: datetime.date, accounts: int = 1000) -> bytes:
    """``date``'s accounts snapshot as a CSV object with a header line."""
    return "\n".join([ACCOUNTS_HEADER, *account_lines(date, accounts)]).encode() + b"\n"


_REASONS = ('customer said "never arrived"', "duplicate charge \\ retried", "défectueux ✗", None)


def refund_lines(date: datetime.date, count: int, seed: int = 0) -> list[str]:
    """``count`` JSON lines of refunds on ``date`` of that day's transactions (``day_objects`` ids): keys in
    varying order, a nested ``channel``, a key no column takes (``trace``), some ``reason`` missing."""
    rng = random.Random(f"refunds-{seed}-{date.isoformat()}")
    lines = []
    for n in range(count):
        created = datetime.datetime.combine(date, datetime.time(), datetime.timezone.utc) + datetime.timedelta(
            seconds=rng.randrange(86400))
        refund: dict[str, object] = {"id": date.toordinal() * 10_000 + n, "txn_id": date.toordinal() * 100_000 + n * 7,
                                     "refunded_at": created.isoformat(), "amount": f"{rng.randrange(1, 10**5) / 100:.2f}",
                                     "channel": {"kind": rng.choice(["web", "phone"]), "agent": rng.randrange(50)}}
        reason = rng.choice(_REASONS)
        if reason is not None:
            refund["reason"] = reason
        if rng.random() < 0.2:
            refund["trace"] = f"{rng.getrandbits(64):016x}"
        items = list(refund.items())
        rng.shuffle(items)
        lines.append(json.dumps(dict(items), ensure_ascii=rng.random() < 0.5))
    return lines


def refund_objects(date: datetime.date, rows: int, seed: int = 0) -> dict[str, bytes]:
    """A day's refunds as one gzipped JSON-lines object, ``refunds/<date>/part-0000.jsonl.gz``."""
    body = ("\n".join(refund_lines(date, rows, seed)) + "\n").encode()
    return {f"refunds/{date.isoformat()}/part-0000.jsonl.gz": gzip.compress(body, mtime=0)}
