"""Data checks (``checks``) in the load's transaction, on the real PostgreSQL and S3: a failed check of severity
error rolls the partition back (its previous load stays), a warn check commits; the figures in the marker; the
samples that name rows and their objects; quarantine of row checks; ``status``'s check failed state (exit 31);
and a kill loop over loads that run checks."""
from __future__ import annotations

import datetime
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from luigi.execution_summary import LuigiStatusCode
from psycopg2 import sql

import luigi_pipelines as lp
from luigi_pipelines import ConfigurationError, DataCheckError
from luigi_pipelines.checks import CheckResult, sample_text
from tests.conftest import ROOT, run_task

D = datetime.date
D1, D2, D3, D4 = D(2019, 2, 1), D(2019, 2, 2), D(2019, 2, 3), D(2019, 2, 4)
SUCCESS, FAILED = LuigiStatusCode.SUCCESS, LuigiStatusCode.FAILED


# -- the declarations (pure) ----------------------------------------------------------------------------------


def test_declarations_refuse_what_cannot_be_checked():
    with pytest.raises(ConfigurationError, match=r"must read \{partition\}"):
        lp.sql_check("x", sql.SQL("select 1"))
    with pytest.raises(ConfigurationError, match=r"give the query as psycopg2.sql.SQL"):
        lp.sql_check("x", "select id from {partition}")  # text is never made SQL
    with pytest.raises(ConfigurationError, match="give min and/or max, or relative_min"):
        lp.row_count(min=1, relative_min=0.5)
    with pytest.raises(ConfigurationError, match="severity must be 'error' or 'warn'"):
        lp.not_null("id", severity="fatal")
    with pytest.raises(ConfigurationError, match="not a valid SQL identifier"):
        lp.unique("id; drop table t")
    with pytest.raises(ConfigurationError, match="give a list of values"):
        lp.accepted_values("v", "ab")


def test_a_result_says_its_figures_and_samples():
    result = CheckResult("unique(id)", "error", 1000, 2, "0 rows that repeat another row's (id)",
                         samples=(sample_text({"id": 5, "luigi_pipelines_rows": 2, "luigi_pipelines_keys": ["d/a.csv"]},
                                              count=2),))
    assert result.describe() == ("unique(id): 2 violations in 1,000 rows (held to 0 rows that repeat another row's "
                                 '(id)); e.g. {"id": 5} (on 2 rows; object d/a.csv)')
    assert result.record() == {"check": "unique(id)", "severity": "error", "rows": 1000, "violations": 2,
                               "bound": "0 rows that repeat another row's (id)", "passed": False,
                               "samples": ['{"id": 5} (on 2 rows; object d/a.csv)']}


def test_a_failure_of_a_data_check_is_its_own_state_and_exit_code():
    """A failure record of class DataCheckError makes the date check_failed (its previous load kept when it has a
    marker), counted apart from other failures; exit 31 wins over 30."""
    from luigi_pipelines.states import CHECK_FAILED, FAILED, Calendar, date_states, exit_code

    moment = datetime.datetime(2019, 2, 5, tzinfo=datetime.timezone.utc)
    marker = {"partition_date": D1, "rows_loaded": 5, "rows_rejected": 0, "bytes_loaded": 1, "objects": 1,
              "seconds": 1.0, "finished_at": moment - datetime.timedelta(days=1), "host": "h", "task_family": "T",
              "skipped": 0, "skipped_keys": [], "checks": [{"check": "unique(id)", "passed": True}]}
    failures = [{"partition_date": day, "task_family": "T", "error_class": kind, "message": "m", "s3_key": None,
                 "host": "h", "failed_at": moment, "attempts": 1}
                for day, kind in ((D1, "DataCheckError"), (D2, "DataCheckError"), (D3, "BadInputError"))]
    days = date_states([D1, D2, D3], [D2, D3], [marker], failures)
    assert [(d.state, d.kept_previous) for d in days] == [(CHECK_FAILED, True), (CHECK_FAILED, False), (FAILED, False)]
    calendar = Calendar("T", "t", D1, D4, days)
    assert (calendar.totals.failed, calendar.totals.check_failed) == (1, 2)
    assert exit_code([calendar]) == 31 and exit_code([Calendar("T", "t", D1, D4, days[2:])]) == 30


# -- loads against the stack ----------------------------------------------------------------------------------



def rows(day: D, ids: Any, v: str = "a", amount: str = "10", null_ids: int = 0) -> str:
    lines = [f"{n},{day},{v},{amount}" for n in ids] + [f",{day},{v},{amount}"] * null_ids
    return "id,day,v,amount\n" + "".join(line + "\n" for line in lines)


@pytest.fixture
def checked(stack) -> Any:
    stack.set_config("check_test", "bucket", stack.bucket)
    stack.set_config("check_test", "schema", stack.schema)
    return stack


def failure(stack, table: str, day: D) -> tuple[str, str]:
    [(error_class, message)] = stack.query(
        f"SELECT error_class, message FROM {stack.marker_schema}.partition_failure WHERE target_table = %s "
        "AND partition_date = %s", (table, day))
    return error_class, message


def marker_checks(stack, table: str, day: D) -> list[dict[str, Any]]:
    [(found,)] = stack.query(f"SELECT checks FROM {stack.marker_schema}.partition_marker WHERE target_table = %s "
                             "AND partition_date = %s", (table, day))
    return found


def status(stack, cfg: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "luigi_pipelines.cli", "status", "--module", "tests.check_tasks",
                           *args], cwd=ROOT, env=stack.env(cfg), capture_output=True, text=True, timeout=120)


@pytest.mark.postgres
@pytest.mark.s3
def test_a_clean_load_records_each_checks_figures_in_the_marker(checked):
    from tests.check_tasks import LoadChecked

    checked.put(f"d/{D1}/a.csv", rows(D1, range(1, 101)))
    assert run_task(LoadChecked(date=D1)).status == SUCCESS
    found = marker_checks(checked, f"{checked.schema}.t", D1)
    assert [(c["check"], c["rows"], c["violations"], c["passed"]) for c in found] == [
        ("not_null(id)", 100, 0, True), ("unique(id)", 100, 0, True), ("accepted_values(v)", 100, 0, True),
        ("between(amount)", 100, 0, True), ("row_count(relative)", 100, 0, True)]
    assert found[3]["bound"] == "0 rows outside 0 <= amount <= 1000"
    assert found[4]["bound"] == "no earlier partition to compare with (last 3)"


@pytest.mark.postgres
@pytest.mark.s3
def test_a_date_with_a_tenth_of_its_usual_rows_fails_and_keeps_its_previous_load(checked, tmp_path):
    from tests.check_tasks import LoadChecked

    table = f"{checked.schema}.t"
    for n, day in enumerate((D1, D2, D3, D4)):
        checked.put(f"d/{day}/a.csv", rows(day, range(n * 1000, n * 1000 + 100 + n)))
        assert run_task(LoadChecked(date=day)).status == SUCCESS
    before = checked.query(f"SELECT id, v FROM {table} WHERE day = %s ORDER BY id", (D4,))
    checked.put(f"d/{D4}/a.csv", rows(D4, range(5000, 5010), v="b"))
    assert run_task(LoadChecked(date=D4, force=True)).status == FAILED
    assert checked.query(f"SELECT id, v FROM {table} WHERE day = %s ORDER BY id", (D4,)) == before
    assert checked.markers(table)[D4][0] == 103  # the previous load's marker
    error_class, message = failure(checked, table, D4)
    assert error_class == "DataCheckError"
    assert (f"{table} {D4}: data check failed, nothing committed and the previous load (if any) is kept: "
            "row_count(relative): 1 violation in 10 rows (held to rows >= 50.5 (>= 0.5 x the median 101 of the last "
            "3 partitions))") in message

    cfg = checked.write_config(tmp_path / "status.cfg")
    window = ["--task", "LoadChecked", "--start", str(D1), "--stop", str(D(2019, 2, 5))]
    shown = status(checked, cfg, *window)
    assert shown.returncode == 31, shown.stderr
    lines = shown.stdout.splitlines()
    assert lines[3] == "2019-02  ###C"
    assert "1 check failed" in lines[5]
    at = lines.index(next(line for line in lines if line.startswith("  check ")))
    assert lines[at].startswith(f"  check   {D4}  check failed, the previous load is kept; on ")
    assert "row_count(relative): 1 violation in 10 rows" in lines[at + 1]
    out = json.loads(status(checked, cfg, *window, "--json").stdout)
    assert (out["exit_code"], out["meaning"]) == (31, "a date's last attempt failed a data check (its previous load, "
                                                      "if any, is kept)")
    day = out["pipelines"][0]["dates"][3]
    assert (day["state"], day["kept_previous"], day["rows"], day["error_class"]) == ("check_failed", True, 103,
                                                                                      "DataCheckError")
    page = tmp_path / "status.html"
    assert status(checked, cfg, *window, "--html", str(page)).returncode == 31
    assert f'class="day check_failed kept" data-date="{D4}" data-state="check_failed"' in page.read_text()

    # a backfill that reloads the changed date meets the same check: luigi says 30 (a task failed), backfill 31
    run = subprocess.run([sys.executable, "-m", "luigi_pipelines.cli", "backfill", "--module", "tests.check_tasks",
                          "--local-scheduler", "--reload-changed", *window], cwd=ROOT, env=checked.env(cfg),
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 31, run.stderr[-3000:]
    assert (f"dates whose load a data check refused (their previous load kept): 1 ({D4}): exit 31"
            in run.stderr.splitlines()[-1]), run.stderr[-3000:]


@pytest.mark.postgres
@pytest.mark.s3
def test_a_first_load_that_fails_a_check_leaves_nothing(checked):
    from tests.check_tasks import LoadChecked

    table = f"{checked.schema}.t"
    checked.put(f"d/{D1}/a.csv", rows(D1, [1, 2, 2, 3], amount="5000", null_ids=7))
    with pytest.raises(DataCheckError) as raised:
        LoadChecked(date=D1).run()
    assert checked.query(f"SELECT count(*) FROM {table}") == [(0,)] and D1 not in checked.markers(table)
    # every failed check at once with its figures, then up to 5 samples of each naming the row's object
    figures = (f"{table} {D1}: data checks failed, nothing committed and the previous load (if any) is kept: "
               "not_null(id): 7 violations in 11 rows (held to 0 rows with id NULL) | unique(id): 1 violation in 11 "
               "rows (held to 0 rows that repeat another row's (id)) | between(amount): 11 violations in 11 rows (held "
               "to 0 rows outside 0 <= amount <= 1000); samples: not_null(id): ")
    message = str(raised.value)
    assert message.startswith(figures)
    key = f"d/{D1}/a.csv"
    null_row = f'{{"id": null, "day": "{D1}", "v": "a", "amount": 5000}} (object {key})'
    assert message[len(figures):].startswith("; ".join([null_row] * 5) + " | unique(id): {\"id\": 2} (on 2 rows; object "
                                                                          f"{key}) | between(amount): ")
    error_class, recorded = failure(checked, table, D1)  # the failure record: the first 500 characters
    assert error_class == "DataCheckError" and recorded.startswith(figures)


@pytest.mark.postgres
@pytest.mark.s3
def test_a_warn_check_commits_and_shows_in_status(checked, tmp_path):
    from tests.check_tasks import LoadChecked

    table = f"{checked.schema}.t"
    checked.put(f"d/{D1}/a.csv", rows(D1, range(1, 6)) + f"6,{D1},z,1\n")
    assert run_task(LoadChecked(date=D1)).status == SUCCESS
    assert checked.query(f"SELECT count(*) FROM {table}") == [(6,)]
    [warned] = [c for c in marker_checks(checked, table, D1) if not c["passed"]]
    assert warned == {"check": "accepted_values(v)", "severity": "warn", "rows": 6, "violations": 1,
                      "bound": "0 rows with v not in ['a', 'b']", "passed": False,
                      "samples": [f'{{"id": 6, "day": "{D1}", "v": "z", "amount": 1}} (object d/{D1}/a.csv)']}
    cfg = checked.write_config(tmp_path / "status.cfg")
    window = ["--task", "LoadChecked", "--start", str(D1), "--stop", str(D2)]
    out = json.loads(status(checked, cfg, *window, "--json").stdout)
    assert out["exit_code"] == 0
    [day] = out["pipelines"][0]["dates"]
    assert (day["state"], day["warned"]) == ("loaded", ["accepted_values(v)"])
    assert [c["violations"] for c in day["checks"]] == [0, 0, 1, 0, 0]
    shown = status(checked, cfg, *window)
    assert shown.returncode == 0
    assert (f"  warned  {D1}  accepted_values(v): 1 violation in 6 rows (held to 0 rows with v not in ['a', 'b'])"
            in shown.stdout.splitlines())


@pytest.mark.postgres
@pytest.mark.s3
def test_a_duplicate_merge_key_in_a_snapshot_fails_unique_naming_the_key(checked):
    from tests.check_tasks import MergeChecked

    table = f"{checked.schema}.customers"
    checked.put(f"c/{D1}/a.csv", "customer_id,name,email\n1,Ann,a@x\n2,Bo,b@x\n")
    assert run_task(MergeChecked(date=D1)).status == SUCCESS
    checked.put(f"c/{D2}/a.csv", "customer_id,name,email\n1,Ann,a@x\n2,Bo,b@x\n2,Bob,bob@x\n3,Cy,c@x\n")
    assert run_task(MergeChecked(date=D2)).status == FAILED
    assert checked.query(f"SELECT customer_id, name FROM {table} ORDER BY 1") == [(1, "Ann"), (2, "Bo")]
    error_class, message = failure(checked, table, D2)
    assert error_class == "DataCheckError"
    assert (f"unique(customer_id): 1 violation in 4 rows (held to 0 rows that repeat another row's (customer_id)); "
            f'samples: unique(customer_id): {{"customer_id": 2}} (on 2 rows; object c/{D2}/a.csv)') in message


@pytest.mark.postgres
@pytest.mark.s3
def test_a_merge_checks_unique_across_the_tables_other_keys(checked):
    """Not a snapshot: a new key whose email another key of the table holds violates unique(email) (warn: it
    commits, recorded); a key that changes its email to one it frees in the same partition does not."""
    from tests.check_tasks import MergeChecked

    class MergeUpserts(MergeChecked):
        snapshot = False

    table = f"{checked.schema}.customers"
    checked.put(f"c/{D1}/a.csv", "customer_id,name,email\n1,Ann,a@x\n2,Bo,b@x\n")
    assert run_task(MergeUpserts(date=D1)).status == SUCCESS
    checked.put(f"c/{D2}/a.csv", "customer_id,name,email\n3,Cy,a@x\n")
    assert run_task(MergeUpserts(date=D2)).status == SUCCESS
    [email] = [c for c in marker_checks(checked, table, D2) if c["check"] == "unique(email)"]
    assert (email["violations"], email["passed"], email["samples"]) == (
        1, False, [f'{{"email": "a@x"}} (on 2 rows; object c/{D1}/a.csv, c/{D2}/a.csv)'])
    checked.put(f"c/{D3}/a.csv", "customer_id,name,email\n1,Ann,z@x\n2,Bo,a@x\n3,Cy,b@x\n")
    assert run_task(MergeUpserts(date=D3)).status == SUCCESS
    [email] = [c for c in marker_checks(checked, table, D3) if c["check"] == "unique(email)"]
    assert email["violations"] == 0


@pytest.mark.postgres
@pytest.mark.s3
def test_quarantine_sets_violating_rows_aside_within_max_bad_rows(checked):
    from tests.check_tasks import LoadChecked

    class LoadQuarantined(LoadChecked):
        checks = (lp.not_null("id", quarantine=True), lp.between("amount", 0, 1000, quarantine=True))

    table = f"{checked.schema}.t"
    checked.put(f"d/{D1}/a.csv", rows(D1, range(1, 9), null_ids=2) + f"9,{D1},a,-1\n")
    assert run_task(LoadQuarantined(date=D1, max_bad_rows=3)).status == SUCCESS
    assert checked.query(f"SELECT count(*) FROM {table}") == [(8,)]
    assert checked.query(f"SELECT rows_loaded, rows_rejected FROM {checked.marker_schema}.partition_marker") == [(8, 3)]
    rejected = checked.query(f"SELECT s3_key, line_number, error FROM {checked.marker_schema}.rejected_rows "
                             "ORDER BY line_number DESC")
    assert rejected == [(f"d/{D1}/a.csv", -1, "check not_null(id): violates 0 rows with id NULL"),
                        (f"d/{D1}/a.csv", -2, "check not_null(id): violates 0 rows with id NULL"),
                        (f"d/{D1}/a.csv", -3, "check between(amount): violates 0 rows outside 0 <= amount <= 1000")]
    found = {c["check"]: (c["violations"], c.get("quarantined"), c["passed"])
             for c in marker_checks(checked, table, D1)}
    assert found == {"not_null(id)": (2, 2, True), "between(amount)": (1, 1, True)}
    # more than max_bad_rows: nothing set aside, the load fails (the first load: nothing stays)
    checked.put(f"d/{D2}/a.csv", rows(D2, range(1, 9), null_ids=4))
    assert run_task(LoadQuarantined(date=D2, max_bad_rows=3)).status == FAILED
    assert "or at most 3 rows set aside (max_bad_rows 3, 0 set aside already)" in failure(checked, table, D2)[1]
    with pytest.raises(ConfigurationError, match="quarantine=True: give the task max_bad_rows > 0"):
        LoadQuarantined(date=D2).job()


@pytest.mark.postgres
@pytest.mark.s3
def test_a_sql_check_returns_the_violating_rows(checked, make_task):
    task = make_task(columns=[("id", "bigint"), ("day", "date"), ("v", "text")], checks=(
        lp.sql_check("odd_ids_are_b", sql.SQL("select id, v from {partition} where id % 2 = 1 and v <> 'b'")),))
    checked.put(f"d/{D1}/a.csv", "id,day,v\n1,2019-02-01,b\n2,2019-02-01,a\n3,2019-02-01,a\n")
    assert run_task(task(date=D1)).status == FAILED
    assert ('sql_check(odd_ids_are_b): 1 violation in 3 rows (held to 0 rows returned); samples: '
            'sql_check(odd_ids_are_b): {"id": 3, "v": "a"}' in failure(checked, f"{checked.schema}.t", D1)[1])
    broken = make_task(columns=[("id", "bigint"), ("day", "date"), ("v", "text")],
                       checks=(lp.sql_check("broken", sql.SQL("select nope from {partition}")),))
    assert run_task(broken(date=D1)).status == FAILED
    error_class, message = failure(checked, f"{checked.schema}.t", D1)
    assert error_class == "ConfigurationError" and 'sql_check(broken): its query failed: column "nope" does not exist' in message


@pytest.mark.postgres
@pytest.mark.s3
def test_unique_over_several_columns_leaves_rows_with_a_null_out(checked, make_task):
    task = make_task(checks=(lp.unique("id", "v", severity="warn"),))
    checked.put(f"d/{D1}/a.csv", "id,day,v\n1,2019-02-01,a\n1,2019-02-01,a\n1,2019-02-01,a\n1,2019-02-01,b\n"
                                 ",2019-02-01,a\n,2019-02-01,a\n")
    assert run_task(task(date=D1)).status == SUCCESS
    [found] = marker_checks(checked, f"{checked.schema}.t", D1)
    assert (found["rows"], found["violations"], found["samples"]) == (6, 2, ['{"id": 1, "v": "a"} (on 3 rows)'])


@pytest.mark.postgres
@pytest.mark.s3
def test_a_check_of_a_column_the_table_lacks_is_a_declaration_error(checked, make_task):
    task = make_task(checks=(lp.not_null("nope"),))
    with pytest.raises(ConfigurationError, match=r"LoadT: not_null\(nope\): no column 'nope' in the table"):
        task(date=D1).job()


# -- kill -9 at random points of loads that run checks -----------------------------------------------------------

KILLS = 30
VERSION_ROWS = 100_000  # rows of the first version; version n has VERSION_ROWS + n (its marker's row count says which)


def version_body(n: int, bad: bool) -> bytes:
    """Version ``n`` of the day's object: ids 1.. with ``v = n``; a bad version repeats an id (unique fails)."""
    ids = list(range(1, VERSION_ROWS + n + 1))
    if bad:
        ids[-1] = 1
    return ("id,day,v\n" + "".join(f"{i},{D1},{n}\n" for i in ids)).encode()


def committed_version(loader: Any) -> int:
    """The one version the table holds for the day, whole, with a marker that matches it (its rows, its checks
    passed on those rows)."""
    table = f"{loader.stack.schema}.t"
    [(count, versions, distinct_ids)] = loader.query(
        f"SELECT count(*), array_agg(DISTINCT v), count(DISTINCT id) FROM {table} WHERE day = %s", (D1,))
    [(rows_loaded, checks)] = loader.query(
        f"SELECT rows_loaded, checks FROM {loader.stack.marker_schema}.partition_marker WHERE partition_date = %s", (D1,))
    [version] = [int(v) for v in versions]
    assert count == distinct_ids == rows_loaded == VERSION_ROWS + version
    assert [(c["check"], c["rows"], c["passed"]) for c in checks] == [
        ("not_null(id)", count, True), ("unique(id)", count, True), ("row_count", count, True),
        ("sql_check(one_version)", count, True)]
    return version


def doing(loader: Any) -> str:
    """What the loader's backend is doing now (its statement's first word), or where it is not yet or any more."""
    backends = loader.backends()
    if not backends:
        return "no backend (starting, listing, downloading, or gone)"
    _, state, query, wrote = backends[0]
    return f"{state}: {query.split(' ', 1)[0]}{' (wrote)' if wrote else ''}"


@pytest.mark.postgres
@pytest.mark.s3
@pytest.mark.slow
def test_kill_9_at_random_points_of_checked_loads_leaves_old_or_new_with_its_marker(stack, tmp_path):
    """At least 30 forced reloads with checks, each killed with SIGKILL at a random point of its run: once its
    backend is there, after a delay drawn at random over what remains of a whole run (the completeness check, the
    listing, the download, the COPY, the checks, the marker, the commit); one version in four fails its unique
    check. After each: the table holds the last committed version or the new one, whole, with that version's
    marker; a version that fails its check is never committed."""
    from tests.test_faults import TASK, make_loader, wait_for

    loader = make_loader(stack, tmp_path)
    task = ["--module", "tests.check_tasks", "LoadCheckedKilled", *TASK[3:], "--date", str(D1)]
    stack.put(f"d/{D1}/a.csv", version_body(0, False))

    def start() -> subprocess.Popen:
        process = subprocess.Popen([sys.executable, "-m", "luigi", *task, "--force"], cwd=ROOT, env=loader.env(),
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for(lambda: loader.backends() or process.poll() is not None, "the loader's backend")
        return process

    first = start()
    connected = time.monotonic()
    assert first.wait(300) == 0
    window_s = time.monotonic() - connected  # from its backend's start to its end
    rng = random.Random(int(os.environ.get("KILL_SEED", "18")))
    current, kills, points, n = 0, 0, [], 0
    while kills < KILLS:
        n += 1
        assert n <= 3 * KILLS, f"only {kills} of {n - 1} runs were killed before they ended: {points}"
        bad = n % 4 == 0
        stack.put(f"d/{D1}/a.csv", version_body(n, bad))
        process = start()
        try:
            code = process.wait(rng.uniform(0.0, 1.0) * window_s)  # the random point: the fault, not a wait
        except subprocess.TimeoutExpired:
            points.append(doing(loader))
            os.kill(process.pid, signal.SIGKILL)
            code = process.wait(30)
            kills += 1
        loader.wait_no_backend()
        version = committed_version(loader)
        assert version in (current, n) and not (bad and version == n), (version, current, n, bad, code)
        assert code != 0 or version == (current if bad else n), (version, current, n, bad, code)
        current = version
    print(f"{kills} kills in {n} runs (a run's backend lives {window_s:.2f} s); where they struck: "
          f"{sorted(Counter(points).items())}")
