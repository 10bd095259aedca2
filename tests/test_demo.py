"""``make demo`` (``luigi-pipelines demo``): its own PostgreSQL and S3, the backfill, the late days, and the status
calendar it ends with, in the terminal and as an HTML page."""
from __future__ import annotations

import pytest

from luigi_pipelines.devstack import demo
from tests.browser_support import Elements
from tests.conftest import ROOT

pytestmark = [pytest.mark.slow]


def test_demo_ends_with_the_status_calendar_and_page(tmp_path, capfd):
    page = tmp_path / "status.html"
    assert demo.run(project_dir=ROOT, html=page) == 0  # every step ended as expected, the planted failure included
    out, err = capfd.readouterr()
    calendars = out[out.index("$ luigi-pipelines status"):]
    assert "public.account: 980 accounts, the same as the 2019-03-02 snapshot" in out  # merged, 30 snapshots
    assert "LoadTransactions  public.transaction  [2019-02-01, 2019-03-07)" in calendars
    assert "2019-02  " + "#" * 13 + "S" + "#" * 14 + "\n2019-03  ##RX..\n" in calendars  # every state
    assert "34 dates: 30 loaded (1 with 2 rows rejected), 1 stale, 1 failed, 2 missing" in calendars
    assert "stale   2019-02-14  1 added (transactions/2019-02-14/part-0009.csv)" in calendars
    assert "SummarizeTransactions  public.daily_account_totals" in calendars and "2019-03  ###...\n" in calendars
    assert 'column name mismatch in header line field 3: got "acct", expected "account"' in calendars
    assert f"wrote {page}" in err and "exit code 30\nstopped the local PostgreSQL and S3" in out
    cells = [a for t, a in Elements(page.read_text()).tags if t == "td" and a.get("data-date")]
    assert len(cells) == 2 * 34 and sum(a["data-state"] == "failed" for a in cells) == 1
    assert sorted(a["data-date"] for a in cells if a["data-state"] == "stale") == ["2019-02-14", "2019-02-14"]
