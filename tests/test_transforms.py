"""Pure transforms, and the transform task that writes a partition from one (sharing the load's transaction)."""
from __future__ import annotations

import copy
import datetime
from decimal import Decimal

import pytest
from luigi.execution_summary import LuigiStatusCode

from luigi_pipelines.transforms import daily_account_totals
from tests.conftest import run_task

D1 = datetime.date(2019, 2, 1)


def test_daily_account_totals_is_pure_and_deterministic():
    rows = (("a", "EUR", Decimal("1.50")), ("b", "USD", Decimal("2")), ("a", "EUR", None), ("a", "EUR", Decimal("3")))
    frozen = copy.deepcopy(rows)
    listed = [list(r) for r in rows]
    result = daily_account_totals(rows, D1)
    assert result == [(D1, "a", "EUR", 3, Decimal("4.50")), (D1, "b", "USD", 1, Decimal("2"))]
    assert rows == frozen
    assert daily_account_totals(listed, D1) == result and listed == [list(r) for r in frozen]
    assert daily_account_totals(reversed(rows), D1) == result  # order of input does not matter
    assert daily_account_totals((), D1) == []


@pytest.mark.postgres
@pytest.mark.s3
def test_summarize_transactions_end_to_end(stack):
    from luigi_pipelines.pipelines.transactions import SummarizeTransactions
    from luigi_pipelines.sample import csv_bytes, transaction_lines

    lines = transaction_lines(D1, first_id=1, count=137)
    stack.put(f"transactions/{D1}/part-0000.csv", csv_bytes(lines[:100]))
    stack.put(f"transactions/{D1}/part-0001.csv.gz", csv_bytes(lines[100:], compress=True))
    stack.set_config("transactions", "totals_table", f"{stack.schema}.totals")
    assert run_task(SummarizeTransactions(date=D1)).status == LuigiStatusCode.SUCCESS
    assert stack.markers(f"{stack.schema}.transaction")[D1][0] == len(lines)
    expected = stack.query(
        f"SELECT txn_date, account, currency, count(*), sum(coalesce(amount, 0)) FROM {stack.schema}.transaction "
        "GROUP BY 1, 2, 3 ORDER BY 2, 3")
    got = stack.query(f"SELECT * FROM {stack.schema}.totals ORDER BY 2, 3")
    assert got == expected and len(got) > 10
    marker = stack.markers(f"{stack.schema}.totals")[D1]
    assert marker[0] == len(got)
    assert marker[2] == [{"upstream": f"{stack.schema}.transaction", "rows_read": len(lines)}]

    before = stack.markers(f"{stack.schema}.totals")
    assert run_task(SummarizeTransactions(date=D1)).status == LuigiStatusCode.SUCCESS
    assert stack.markers(f"{stack.schema}.totals") == before  # rerun: a no-op
    assert stack.temp_files() == []
