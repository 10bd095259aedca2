"""``luigi-pipelines backfill``: the UTC window rule, the luigi command it builds, its exit code; the cron and
luigid files in configs/ and the Makefile targets that start them."""
from __future__ import annotations

import configparser
import datetime
import os
import re
import shlex
import subprocess
import sys
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import luigi
import luigi.configuration
import psycopg2.extensions
import pytest
from luigi.tools.range import RangeDaily

from luigi_pipelines import backfill as bf
from luigi_pipelines.cli import main as cli_main
from tests.scheduling_support import listings_since, s3_log_mark, seed_days, table_counts

ROOT = Path(__file__).resolve().parents[1]
UTC = datetime.timezone.utc
D = datetime.date


def at(text: str) -> datetime.datetime:
    return bf.parse_now(text)


# -- the window ------------------------------------------------------------------------------------

@pytest.mark.parametrize(("now", "first", "last"), [
    ("2019-03-10T00:00:00Z", D(2019, 3, 3), D(2019, 3, 9)),
    ("2019-03-10T23:59:59Z", D(2019, 3, 3), D(2019, 3, 9)),
    ("2019-03-10T00:30:00+02:00", D(2019, 3, 2), D(2019, 3, 8)),  # 22:30 UTC on the 9th: today is the 9th
    ("2019-03-09T20:00:00-05:00", D(2019, 3, 3), D(2019, 3, 9)),  # 01:00 UTC on the 10th
    ("1552176000", D(2019, 3, 3), D(2019, 3, 9)),  # epoch seconds of 2019-03-10T00:00Z
])
def test_days_back_is_the_whole_utc_days_before_today(now, first, last):
    win = bf.window(at(now), days_back=7)
    assert win.dates() == [first + datetime.timedelta(days=n) for n in range(7)]
    assert win.dates()[-1] == last  # yesterday, UTC


def test_window_rules():
    now = at("2019-03-10T05:00:00Z")
    assert bf.window(now, start=D(2019, 1, 1)).stop == D(2019, 3, 10)  # stop defaults to today (exclusive)
    assert bf.window(now, start=D(2019, 1, 1), stop=D(2019, 3, 10)).dates()[-1] == D(2019, 3, 9)
    with pytest.raises(ValueError, match="after today"):
        bf.window(now, start=D(2019, 1, 1), stop=D(2019, 3, 11))
    with pytest.raises(ValueError, match="either --days-back or --start"):
        bf.window(now)
    with pytest.raises(ValueError, match="either --days-back or --start"):
        bf.window(now, days_back=3, start=D(2019, 1, 1))
    with pytest.raises(ValueError, match="at least 1"):
        bf.window(now, days_back=0)
    with pytest.raises(ValueError, match="empty"):
        bf.window(now, start=D(2019, 3, 5), stop=D(2019, 3, 5))


class _Day(luigi.Task):
    """A task RangeDaily can range over without a database: nothing is ever complete."""

    date = luigi.DateParameter()

    @classmethod
    def bulk_complete(cls, parameter_tuples):
        return []


def _range_daily_dates(cmd: list[str]) -> list[D]:
    """The dates luigi's own RangeDaily requires for the arguments of ``cmd``."""
    args = dict(zip(cmd[cmd.index("--start")::2], cmd[cmd.index("--start") + 1::2], strict=False))
    task = RangeDaily(of=_Day, start=D.fromisoformat(args["--start"]), stop=D.fromisoformat(args["--stop"]),
                      now=int(args["--now"]), days_back=int(args["--days-back"]), task_limit=100000)
    return [t.date for t in task.requires()]


@pytest.mark.parametrize("now", ["2019-03-10T00:00:00Z", "2019-03-10T00:00:01Z", "2019-03-10T23:59:59Z",
                                 "2019-03-10T12:00:00+14:00"])
@pytest.mark.parametrize("days", [1, 7, 400])
def test_luigi_range_daily_schedules_exactly_the_window(now, days):
    """The command hands luigi --start/--stop/--now/--days-back so that RangeDaily's own moving window
    (which alone would give N-1 or N dates depending on the time of day) covers exactly the window."""
    win = bf.window(at(now), days_back=days)
    cmd = bf.luigi_command("m", "T", win, bf.Scheduler(local=True))
    assert _range_daily_dates(cmd) == win.dates()


def test_luigi_command_for_luigid_and_for_a_local_scheduler():
    win = bf.window(at("2019-03-10T05:00:00Z"), days_back=3)
    local = bf.luigi_command("pkg.mod", "LoadX", win, bf.Scheduler(local=True), workers=4, task_limit=2,
                             reverse=True, extra=["--log-level", "INFO"], python="py")
    assert local == ["py", "-m", "luigi", "--module", "pkg.mod", "RangeDaily", "--of", "LoadX",
                     "--start", "2019-03-07", "--stop", "2019-03-10", "--now", "1552194000", "--days-back", "4",
                     "--workers", "4", "--task-limit", "2", "--reverse", "--local-scheduler", "--param-name", "date",
                     "--log-level", "INFO"]
    central = bf.luigi_command("pkg.mod", "LoadX", win, bf.Scheduler(host="sched", port=8099, idle_s=60), python="py")
    assert central[-7:] == ["--scheduler-host", "sched", "--scheduler-port", "8099", "--worker-keep-alive",
                            "--worker-max-keep-alive-idle-duration", "60 seconds"]
    assert "--local-scheduler" not in central


def test_range_daily_args_leave_unset_options_to_luigi():
    assert bf.range_daily_args("pkg.mod", "LoadX", D(2019, 2, 1), D(2019, 3, 1)) == [
        "--module", "pkg.mod", "RangeDaily", "--of", "LoadX", "--start", "2019-02-01", "--stop", "2019-03-01"]
    assert bf.range_daily_args("m", "T", D(2019, 2, 1), D(2019, 2, 2), now=at("2019-03-10T05:00:00+02:00"),
                               local_scheduler=True)[-3:] == ["--now", "1552186800", "--local-scheduler"]


# -- the exit code ----------------------------------------------------------------------------------

# What luigi itself defaults to, i.e. what a run gets where no luigi.cfg of ours is read.
LUIGI_OWN_DEFAULTS = ("[RangeDaily]\ntask_limit = 50\ndays_back = 100\n[retcode]\n"
                      + "".join(f"{name} = 0\n" for name in ("already_running", "missing_data", "not_run",
                                                              "task_failed", "scheduling_error")))

CODES = SimpleNamespace(already_running=10, missing_data=20, not_run=25, task_failed=30, scheduling_error=35,
                        unhandled_exception=40)


def test_judge_gives_0_only_when_every_date_asked_for_is_loaded():
    coop = bf.cooperation_codes(CODES)
    assert coop == {10, 25}
    assert bf.judge(0, coop, lambda: []) == (0, "")
    assert bf.judge(25, coop, lambda: [])[0] == 0
    assert bf.judge(10, coop, lambda: [])[0] == 0
    code, why = bf.judge(25, coop, lambda: [D(2019, 1, 2)])
    assert code == 25 and "1 (2019-01-02)" in why
    for failure in (20, 30, 35, 40, 137):  # a failure stays a failure, and names what is missing
        assert bf.judge(failure, coop, lambda: [])[0] == failure
        code, why = bf.judge(failure, coop, lambda: [D(2019, 1, 2), D(2019, 1, 3)])
        assert code == failure and "2 (2019-01-02, 2019-01-03)" in why


def test_judge_when_luigi_exits_0_with_dates_missing():
    """luigi's 0 is not trusted: a task limit, a days_back or a [retcode] of 0 can all hide missing dates."""
    coop = bf.cooperation_codes(CODES)
    code, why = bf.judge(0, coop, lambda: [D(2019, 1, d) for d in range(1, 13)])
    assert code == bf.STILL_MISSING == 21
    assert "12 (2019-01-01, 2019-01-02" in why and "2019-01-10 ..." in why and "exit 21" in why

    def unreachable() -> list[D]:
        raise OSError("connection refused")

    assert bf.judge(0, coop, unreachable)[0] == 21  # nothing confirmed: not 0
    code, why = bf.judge(30, coop, unreachable)
    assert code == 30 and "connection refused" in why


def test_cooperation_codes_exclude_codes_shared_with_failures():
    assert bf.cooperation_codes(SimpleNamespace(**{**vars(CODES), "not_run": 30})) == {10}
    assert bf.cooperation_codes(SimpleNamespace(**{**vars(CODES), "already_running": 0, "not_run": 0})) == set()
    assert bf.cooperation_codes(luigi.retcodes.retcode()) == {10, 25}  # what luigi.cfg sets


class _EvenDaysDone(luigi.Task):
    """A task RangeDaily can range over without a database: the even days of the month are complete."""

    date = luigi.DateParameter()

    @classmethod
    def bulk_complete(cls, parameter_tuples):
        return [p for p in parameter_tuples if p.day % 2 == 0]


@pytest.mark.parametrize(("task_limit", "reverse", "expected"), [
    (2, False, [D(2019, 3, 3), D(2019, 3, 5)]),
    (2, True, [D(2019, 3, 7), D(2019, 3, 9)]),
    (10, False, [D(2019, 3, 3), D(2019, 3, 5), D(2019, 3, 7), D(2019, 3, 9)]),
])
def test_scheduled_dates_are_what_luigi_range_daily_picks(task_limit, reverse, expected):
    """With --task-limit, the dates a run is asked for are luigi's own choice for the same command line."""
    win = bf.window(at("2019-03-10T05:00:00Z"), days_back=8)  # Mar 2-9: Mar 3, 5, 7, 9 are missing
    cmd = bf.luigi_command(__name__, "_EvenDaysDone", win, bf.Scheduler(local=True), task_limit=task_limit,
                           reverse=reverse)
    assert bf.scheduled_dates(cmd) == expected


def test_backfill_hands_luigi_the_whole_window_as_task_limit(capsys):
    """Without --task-limit luigi's RangeDaily would fall back to [RangeDaily] task_limit (50 by luigi's default)."""
    assert cli_main(["backfill", "--start", "2018-01-01", "--now", "2019-03-10T05:00:00Z", "--dry-run",
                     "--local-scheduler"]) == 0
    assert "--task-limit 433 " in capsys.readouterr().err  # 2018-01-01 .. 2019-03-09
    assert cli_main(["backfill", "--days-back", "400", "--task-limit", "7", "--now", "2019-03-10T05:00:00Z",
                     "--dry-run", "--local-scheduler"]) == 0
    assert "--task-limit 7 " in capsys.readouterr().err


# -- the command end to end -------------------------------------------------------------------------

@pytest.mark.postgres
@pytest.mark.s3
def test_backfill_days_back_picks_up_late_data(stack, tmp_path):
    """Cron at 23:05 UTC on Feb 9 with --days-back 3: Feb 6-8. Feb 8's files are late: exit 20 (missing data),
    the others load. The next run, once they arrived, loads Feb 8 only and exits 0."""
    expected = seed_days(stack, D(2019, 2, 1), 7)  # up to Feb 7
    cfg = stack.write_config(tmp_path / "cron.cfg")
    cron = ["backfill", "--days-back", "3", "--now", "2019-02-10T00:05:00+01:00", "--local-scheduler"]

    def run() -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "luigi_pipelines.cli", *cron], cwd=ROOT, env=stack.env(cfg),
                              capture_output=True, text=True, timeout=120)

    first = run()
    assert first.returncode == 20, first.stderr[-3000:]
    assert "backfill [2019-02-06, 2019-02-09)" in first.stderr
    assert table_counts(stack) == {d: n for d, n in expected.items() if d >= D(2019, 2, 6)}

    expected.update(seed_days(stack, D(2019, 2, 8), 2))  # Feb 8 arrives, and Feb 9 (today in UTC): not loaded
    second = run()
    assert second.returncode == 0, second.stderr[-3000:]
    assert table_counts(stack) == {d: n for d, n in expected.items() if D(2019, 2, 6) <= d <= D(2019, 2, 8)}
    markers = stack.markers(f"{stack.schema}.transaction")
    assert sorted(markers) == [D(2019, 2, 6), D(2019, 2, 7), D(2019, 2, 8)]


def _run_backfill(stack, cfg, cwd, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "luigi_pipelines.cli", "backfill", *args], cwd=cwd,
                          env=stack.env(cfg), capture_output=True, text=True, timeout=300)


@pytest.mark.postgres
@pytest.mark.s3
@pytest.mark.slow
def test_backfill_loads_the_whole_window_whatever_luigi_defaults_to(stack, tmp_path):
    """Run where luigi finds none of our config (its own task_limit 50, every [retcode] 0), a 60-day backfill
    loads all 60 dates and exits 0; it used to load 50 and exit 0."""
    expected = seed_days(stack, D(2019, 1, 1), 60, rows=3, parts=1)
    cfg = stack.write_config(tmp_path / "user.cfg", LUIGI_OWN_DEFAULTS)
    result = _run_backfill(stack, cfg, tmp_path, "--start", "2019-01-01", "--stop", "2019-03-02",
                           "--now", "2019-03-02T05:00:00Z", "--local-scheduler")
    assert result.returncode == 0, result.stderr[-3000:]
    assert table_counts(stack) == expected
    assert sorted(stack.markers(f"{stack.schema}.transaction")) == sorted(expected)


@pytest.mark.postgres
@pytest.mark.s3
def test_backfill_never_exits_0_with_dates_missing(stack, tmp_path):
    """luigi exits 0 for missing data when [retcode] missing_data is 0 (luigi's default); backfill asks the
    database and exits 21, naming the date, and 0 once the date is loaded."""
    seed_days(stack, D(2019, 2, 1), 3, rows=3, parts=1)
    cfg = stack.write_config(tmp_path / "user.cfg", LUIGI_OWN_DEFAULTS)
    window = ["--start", "2019-02-01", "--stop", "2019-02-05", "--now", "2019-02-05T05:00:00Z", "--local-scheduler"]
    first = _run_backfill(stack, cfg, tmp_path, *window)
    assert first.returncode == 21, first.stderr[-3000:]
    assert "luigi exited 0 and dates asked for are not loaded: 1 (2019-02-04): exit 21" in first.stderr
    assert sorted(table_counts(stack)) == [D(2019, 2, 1), D(2019, 2, 2), D(2019, 2, 3)]

    limited = _run_backfill(stack, cfg, tmp_path, *window, "--task-limit", "1")
    assert limited.returncode == 21 and "1 (2019-02-04)" in limited.stderr  # the one date it was asked for

    seed_days(stack, D(2019, 2, 4), 1, rows=3, parts=1)
    second = _run_backfill(stack, cfg, tmp_path, *window)
    assert second.returncode == 0, second.stderr[-3000:]
    assert sorted(table_counts(stack)) == [D(2019, 2, d) for d in range(1, 5)]


@pytest.mark.postgres
@pytest.mark.s3
def test_backfill_reload_changed_reloads_exactly_the_dates_whose_files_changed(stack, tmp_path):
    """Cron's `--days-back 3 --reload-changed` through the real command: a file that arrived after its date
    was loaded is left out without the flag (exit 0, as before) and loaded with it, that date alone."""
    from luigi_pipelines.devstack.sample import csv_bytes, transaction_lines

    expected = seed_days(stack, D(2019, 2, 6), 3, rows=3, parts=1)
    cfg = stack.write_config(tmp_path / "cron.cfg")
    window = ["--days-back", "3", "--now", "2019-02-09T02:15:00Z", "--local-scheduler"]
    assert _run_backfill(stack, cfg, ROOT, *window).returncode == 0
    assert table_counts(stack) == expected
    loaded = stack.markers(f"{stack.schema}.transaction")

    stack.put("transactions/2019-02-07/late.csv", csv_bytes(transaction_lines(D(2019, 2, 7), 10**6, 4)))
    plain = _run_backfill(stack, cfg, ROOT, *window)
    assert plain.returncode == 0, plain.stderr[-3000:]
    assert table_counts(stack) == expected and stack.markers(f"{stack.schema}.transaction") == loaded

    changed = _run_backfill(stack, cfg, ROOT, *window, "--reload-changed")
    assert changed.returncode == 0, changed.stderr[-3000:]
    assert '--of-params \'{"reload_changed": true, "stale_known": {"2019-02-07": "' in changed.stderr
    assert "stale (loaded, sources changed since; reloaded by this run): 1 (2019-02-07: 1 added " \
        "(transactions/2019-02-07/late.csv))" in changed.stderr
    assert table_counts(stack) == {**expected, D(2019, 2, 7): expected[D(2019, 2, 7)] + 4}
    markers = stack.markers(f"{stack.schema}.transaction")
    assert {d: m for d, m in markers.items() if d != D(2019, 2, 7)} == \
        {d: m for d, m in loaded.items() if d != D(2019, 2, 7)}  # the other dates: untouched
    assert "transactions/2019-02-07/late.csv" in [s["key"] for s in markers[D(2019, 2, 7)][2]]

    again = _run_backfill(stack, cfg, ROOT, *window, "--reload-changed")
    assert again.returncode == 0 and stack.markers(f"{stack.schema}.transaction") == markers  # fresh: a no-op


@pytest.mark.postgres
@pytest.mark.s3
def test_backfill_reload_changed_lists_each_date_once_per_run(stack, tmp_path):
    """The stale check of `backfill --reload-changed` lists each loaded date's prefix once per run, as the S3
    server saw it (it listed twice: luigi's RangeDaily, then backfill's final check). A stale date's reload then
    lists as any load does: its dependency check (data there?) and, under its lock, the listing it loads."""
    from luigi_pipelines.devstack.sample import csv_bytes, transaction_lines

    seed_days(stack, D(2019, 2, 6), 3, rows=3, parts=1)
    cfg = stack.write_config(tmp_path / "cron.cfg")
    window = ["--days-back", "3", "--now", "2019-02-09T02:15:00Z", "--local-scheduler"]
    assert _run_backfill(stack, cfg, ROOT, *window).returncode == 0
    prefixes = [f"transactions/2019-02-0{n}/" for n in (6, 7, 8)]

    mark = s3_log_mark(stack)
    fresh = _run_backfill(stack, cfg, ROOT, *window, "--reload-changed")
    assert fresh.returncode == 0, fresh.stderr[-3000:]
    assert listings_since(stack, mark) == Counter(dict.fromkeys(prefixes, 1))

    stack.put("transactions/2019-02-07/late.csv", csv_bytes(transaction_lines(D(2019, 2, 7), 10**6, 4)))
    mark = s3_log_mark(stack)
    changed = _run_backfill(stack, cfg, ROOT, *window, "--reload-changed")
    assert changed.returncode == 0, changed.stderr[-3000:]
    assert listings_since(stack, mark) == Counter({**dict.fromkeys(prefixes, 1), "transactions/2019-02-07/": 3})

    window = [w for w in window if w != "--local-scheduler"]
    mark = s3_log_mark(stack)
    shared = _run_backfill(stack, cfg, ROOT, *window, "--reload-changed", "--processes", "2")
    assert shared.returncode == 0, shared.stderr[-3000:]
    assert listings_since(stack, mark) == Counter(dict.fromkeys(prefixes, 1))


READY_MODULE = """\
from luigi.tools.range import RangeDaily  # noqa: F401

from luigi_pipelines.pipelines.transactions import LoadTransactions


class LoadWhenReady(LoadTransactions):
    ready_key = "_SUCCESS"
"""


@pytest.mark.postgres
@pytest.mark.s3
def test_backfill_says_which_dates_wait_for_their_ready_key_and_which_are_stale(stack, tmp_path):
    """Under luigi's own [retcode] (all 0) the verdict decides, and says what each date is: a date whose ready key
    is absent waits for it (named), a loaded date whose files changed but whose reload waits is loaded and stale,
    not "not loaded"; stale alone exits 22, as in `status`."""
    from luigi_pipelines.devstack.sample import csv_bytes, transaction_lines

    (tmp_path / "readymod.py").write_text(READY_MODULE)
    seed_days(stack, D(2019, 2, 1), 3, rows=3, parts=1)
    for day in ("2019-02-01", "2019-02-02"):
        stack.put(f"transactions/{day}/_SUCCESS", b"")
    cfg = stack.write_config(tmp_path / "user.cfg", LUIGI_OWN_DEFAULTS)
    window = ["--module", "readymod", "--task", "LoadWhenReady", "--start", "2019-02-01", "--stop", "2019-02-04",
              "--now", "2019-02-05T05:00:00Z", "--local-scheduler"]
    ready = f"s3://{stack.bucket}/transactions/2019-02-0{{}}/_SUCCESS absent"

    first = _run_backfill(stack, cfg, tmp_path, *window)
    assert first.returncode == 21, first.stderr[-3000:]
    assert first.stderr.splitlines()[-1] == (
        "luigi-pipelines backfill: luigi exited 0 and dates asked for wait for their ready key (absent, so not "
        f"loaded): 1 (2019-02-03: {ready.format(3)}): exit 21")

    late = "transactions/2019-02-02/late.csv"
    stack.put(late, csv_bytes(transaction_lines(D(2019, 2, 2), 10**6, 4)))
    stack.s3_client.delete_object(Bucket=stack.bucket, Key="transactions/2019-02-02/_SUCCESS")  # rewriting it
    stack.put("transactions/2019-02-03/_SUCCESS", b"")
    second = _run_backfill(stack, cfg, tmp_path, *window, "--reload-changed")
    assert second.returncode == 22, second.stderr[-3000:]
    assert second.stderr.splitlines()[-1] == (
        "luigi-pipelines backfill: luigi exited 0 and dates asked for are loaded but stale, their sources changed "
        "since and no reload replaced the previous load (a backfill with --reload-changed reloads them): 1 "
        f"(2019-02-02: 1 added ({late}); not reloaded: {ready.format(2)}): exit 22")
    assert sorted(table_counts(stack)) == [D(2019, 2, 1), D(2019, 2, 2), D(2019, 2, 3)]

    stack.put("transactions/2019-02-02/_SUCCESS", b"")
    third = _run_backfill(stack, cfg, tmp_path, *window, "--reload-changed")
    assert third.returncode == 0, third.stderr[-3000:]


def test_dry_run_prints_the_luigi_command(capsys):
    assert cli_main(["backfill", "--days-back", "2", "--now", "2019-03-10T05:00:00Z", "--dry-run",
                     "--local-scheduler"]) == 0
    err = capsys.readouterr().err
    assert "backfill [2019-03-08, 2019-03-10)" in err
    assert "RangeDaily --of LoadTransactions --start 2019-03-08 --stop 2019-03-10" in err
    assert cli_main(["backfill", "--start", "2019-03-08", "--stop", "2030-01-01", "--now", "2019-03-10", "--dry-run"]) == 2
    assert "after today" in capsys.readouterr().err


# -- configs/ and the Makefile -------------------------------------------------------------------------

def _cron_jobs() -> list[list[str]]:
    jobs = []
    for line in (ROOT / "configs" / "crontab.example").read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#") and "=" not in line.split()[0]:
            jobs.append(line.split(None, 5))
    return jobs


def test_crontab_example_runs_backfill_commands_that_parse(capsys, tmp_path, monkeypatch):
    (tmp_path / "mypipes").mkdir()  # the user's package the example names, where its PYTHONPATH would find it
    (tmp_path / "mypipes" / "__init__.py").write_text("")
    (tmp_path / "mypipes" / "orders.py").write_text("from luigi_pipelines.pipelines.transactions import "
                                                     "LoadTransactions as LoadOrders  # noqa: F401\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    jobs = _cron_jobs()
    assert jobs
    for *schedule, command in jobs:
        assert len(schedule) == 5
        words = shlex.split(command.split("&&", 1)[1].split(">>")[0])
        assert words[0].endswith("luigi-pipelines") and words[1] == "backfill" and "--days-back" in words
        assert cli_main([*words[1:], "--now", "2024-05-10T02:15:00Z", "--dry-run"]) == 0
        assert "RangeDaily" in capsys.readouterr().err
        assert "|| echo" in command  # a failure prints a line, which cron mails


def test_luigid_config_sets_what_the_scheduler_needs():
    """luigid caps a resource it has no value for at 1: configs/luigid.cfg must name postgres_loads."""
    from luigi_pipelines.tasks import PartitionTask

    cfg = configparser.ConfigParser(interpolation=None)
    cfg.read(ROOT / "configs" / "luigid.cfg")
    for resource in PartitionTask.resources:
        assert cfg.getint("resources", resource) > 1
    assert cfg.getfloat("scheduler", "worker_disconnect_delay") > 0
    assert cfg.getfloat("scheduler", "retry_delay") > 0
    assert cfg.getboolean("scheduler", "prune_on_get_work")
    assert Path(cfg.get("scheduler", "state_path")).is_absolute()


def test_makefile_has_scheduler_and_workers_targets():
    helped = subprocess.run(["make", "-s", "help"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert "scheduler" in helped and "workers" in helped
    dry = subprocess.run(["make", "-n", "workers", "N=3", "DAYS_BACK=7", "STAMP="], cwd=ROOT, capture_output=True,
                         text=True, check=True).stdout
    assert "luigi-pipelines backfill" in dry and "--days-back 7" in dry and "seq 3" in dry


# -- --processes N: the dates still to load, shared by N local-scheduler processes ---------------------------

def test_shards_cut_the_dates_into_even_runs_of_consecutive_dates():
    dates = [D(2019, 1, 1) + datetime.timedelta(days=n) for n in range(10)]
    assert bf.shards(dates, 3) == [dates[0:4], dates[4:7], dates[7:10]]
    assert bf.shards(dates, 1) == [dates]
    assert bf.shards(dates[:2], 4) == [[dates[0]], [dates[1]]]  # never an idle process
    assert bf.shards([], 4) == []


def test_shard_commands_give_each_date_still_to_load_to_exactly_one_luigi_process():
    """Early dates loaded already: only the others are shared, evenly, and each shard's own RangeDaily
    (its local scheduler, one worker) requires exactly its dates; dates loaded lie between them unharmed."""
    win = bf.window(at("2019-03-10T05:00:00Z"), start=D(2019, 1, 1))  # 68 days
    todo = [d for d in win.dates() if d >= D(2019, 2, 15) and d.day % 3]  # the first half is loaded, and more
    planned = bf.shard_commands("m", "T", win, todo, 3, extra=["--log-level", "INFO"])
    assert [s.label for s in planned] == ["[1/3]", "[2/3]", "[3/3]"]
    assert sorted(d for s in planned for d in s.dates) == todo
    assert max(len(s.dates) for s in planned) - min(len(s.dates) for s in planned) <= 1
    for shard in planned:
        cmd = list(shard.cmd)
        assert [d for d in _range_daily_dates(cmd) if d in todo] == list(shard.dates)
        assert cmd[cmd.index("--workers") + 1] == "1" and "--local-scheduler" in cmd
        assert cmd[cmd.index("--task-limit") + 1] == str(len(shard.dates)) and cmd[-2:] == ["--log-level", "INFO"]


def test_combined_code_of_shards_keeps_every_failure():
    coop = bf.cooperation_codes(CODES)
    assert bf.combined_code([0, 0], coop) == 0
    assert bf.combined_code([0, 30], coop) == 30
    assert bf.combined_code([25, 20, 0], coop) == 20  # a failure is never hidden by a cooperation code
    assert bf.combined_code([25, 0], coop) == 25
    assert bf.combined_code([30, 143], coop) == 143


def test_processes_refuses_luigid_and_worker_options(capsys):
    base = ["backfill", "--days-back", "3", "--now", "2019-03-10T05:00:00Z", "--dry-run"]
    assert cli_main([*base, "--processes", "2"]) == 0
    assert "on 2 processes" in capsys.readouterr().err
    refused = {"at least 1": ["--processes", "0"], "--scheduler-port": ["--processes", "2", "--scheduler-port", "8082"],
               "1 worker": ["--processes", "2", "--workers", "4"]}
    for said, wrong in refused.items():
        assert cli_main([*base, *wrong]) == 2
        assert said in capsys.readouterr().err


def _shard_lines(output: str, label: str) -> list[str]:
    return [line for line in output.splitlines() if line.startswith(label + " ")]


@pytest.mark.postgres
@pytest.mark.s3
def test_processes_load_each_missing_date_once_and_skip_loaded_ones(stack, tmp_path):
    """10 days, the first 4 loaded by an earlier run: `--processes 2` loads the other 6, 3 per process, each
    date once (rows, markers, the trace of runs), the loaded ones untouched; each shard's lines prefixed. Run
    again, it finds nothing to load and starts no process."""
    from tests.scheduling_support import assert_exactly_once, backfill_command, read_runs

    expected = seed_days(stack, D(2019, 2, 1), 10, rows=5)
    cfg = stack.write_config(tmp_path / "run.cfg")
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    env = {**stack.env(cfg), "LP_HOOK_DIR": str(hooks)}
    now = ["--now", "2019-02-11T05:00:00Z"]

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(backfill_command(*args, *now), cwd=ROOT, env=env, capture_output=True, text=True,
                              timeout=300)

    early = run("--start", "2019-02-01", "--stop", "2019-02-05", "--local-scheduler")
    assert early.returncode == 0, early.stderr[-3000:]
    loaded = stack.markers(f"{stack.schema}.transaction")
    (hooks / "trace").unlink()

    result = run("--start", "2019-02-01", "--processes", "2")
    assert result.returncode == 0, result.stderr[-3000:]
    assert_exactly_once(stack, expected)
    markers = stack.markers(f"{stack.schema}.transaction")
    assert {d: markers[d] for d in loaded} == loaded  # not loaded again
    runs = read_runs(hooks)
    assert sorted(D.fromisoformat(r.date) for r in runs) == [D(2019, 2, d) for d in range(5, 11)]
    assert all(r.end is not None for r in runs) and len({r.pid for r in runs}) == 2
    assert {r.date for r in runs if r.pid == runs[0].pid} in ({"2019-02-05", "2019-02-06", "2019-02-07"},
                                                              {"2019-02-08", "2019-02-09", "2019-02-10"})
    err = result.stderr
    assert "[1/2] 3 dates, 2019-02-05 to 2019-02-07: luigi " in err and "[2/2] 3 dates, 2019-02-08 to 2019-02-10" in err
    for label in ("[1/2]", "[2/2]"):
        assert any("Luigi Execution Summary" in line for line in _shard_lines(err + result.stdout, label))
        assert f"{label} exited 0" in err

    (hooks / "trace").unlink()
    again = run("--start", "2019-02-01", "--processes", "2")  # all loaded: no process is started
    assert again.returncode == 0 and "to load: 0\n" in again.stderr and "[1/" not in again.stderr, again.stderr[-3000:]
    assert read_runs(hooks) == [] and stack.markers(f"{stack.schema}.transaction") == markers


@pytest.mark.postgres
@pytest.mark.s3
def test_processes_a_bad_date_fails_the_run_and_every_other_date_loads(stack, tmp_path):
    """Feb 2 holds a bad row: its shard exits 30 and goes on to Feb 3, the other shard loads Feb 4-6; the
    backfill exits 30 and names Feb 2, the only date not loaded."""
    expected = seed_days(stack, D(2019, 2, 1), 6, rows=5, parts=1)
    stack.put("transactions/2019-02-02/part-0001.csv", "id,txn_date,account,amount,currency,created_at,note\n"
              "x1,2019-02-02,acct-1,1.00,EUR,2019-02-02T00:00:00+00:00,\n")
    cfg = stack.write_config(tmp_path / "run.cfg")
    result = _run_backfill(stack, cfg, ROOT, "--start", "2019-02-01", "--stop", "2019-02-07",
                           "--now", "2019-02-07T05:00:00Z", "--processes", "2")
    assert result.returncode == 30, result.stderr[-3000:]
    assert "[1/2] exited 30" in result.stderr and "[2/2] exited 0" in result.stderr
    assert "the 2 luigi processes (the highest code) exited 30 and dates asked for are not loaded: 1 (2019-02-02): " \
        "exit 30" in result.stderr
    del expected[D(2019, 2, 2)]
    assert table_counts(stack) == expected
    assert sorted(stack.markers(f"{stack.schema}.transaction")) == sorted(expected)


@pytest.mark.postgres
@pytest.mark.s3
@pytest.mark.slow
def test_processes_overlapping_another_run_load_nothing_twice(stack, tmp_path):
    """Run A (`--processes 2`) holds Feb 1's lock mid-load; run B (`--processes 2`, same window) starts then, plans
    Feb 1 as still to load and waits on its lock. Once A goes on, both exit 0, every date is loaded once and
    every S3 object was downloaded once."""
    from luigi_pipelines.devstack.local import wait_until
    from tests.scheduling_support import assert_exactly_once, backfill_command, describe, start, wait_all

    expected = seed_days(stack, D(2019, 2, 1), 6, rows=5)
    objects = [o["Key"] for o in stack.s3_client.list_objects_v2(Bucket=stack.bucket)["Contents"]]
    cfg = stack.write_config(tmp_path / "run.cfg")
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    env = {**stack.env(cfg), "LP_HOOK_DIR": str(hooks), "LP_HOOK_PAUSE_DATE": "2019-02-01"}
    args = ["--start", "2019-02-01", "--stop", "2019-02-07", "--now", "2019-02-07T05:00:00Z", "--processes", "2"]
    crc = _lock_crc(stack)
    procs = [start("a", backfill_command(*args), env, tmp_path)]
    try:
        wait_until(lambda: (hooks / "paused").exists(), 120, "run A to hold Feb 1 mid-load")
        procs.append(start("b", backfill_command(*args), env, tmp_path))
        wait_until(lambda: _lock_waiters(stack, crc) > 0, 120, "run B to wait on a partition lock")
        (hooks / "release").touch()
        codes = wait_all(procs, 240)
    finally:
        for p in procs:
            p.kill()
    assert codes == {"a": 0, "b": 0}, describe(procs)
    assert re.search(r"^to load: \d+ \(2019-02-01[,)]", procs[1].output(), re.M)  # B did plan Feb 1
    assert_exactly_once(stack, expected)
    assert Counter(stack.s3.object_gets(stack.bucket)) == Counter(objects)


def _lock_crc(stack) -> int:
    from luigi_pipelines.partitions import TableName, lock_key

    return lock_key(TableName(stack.schema, "transaction"), D(2019, 2, 1))[0]


def _lock_waiters(stack, crc: int) -> int:
    return stack.query("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted AND objsubid = 2"
                       " AND classid::bigint = %s", (crc % (1 << 32),))[0][0]


def _lock_holders(stack, crc: int) -> int:
    return stack.query("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted AND objsubid = 2"
                       " AND classid::bigint = %s", (crc % (1 << 32),))[0][0]


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False


@pytest.mark.postgres
@pytest.mark.s3
@pytest.mark.slow
@pytest.mark.parametrize("sig", ["SIGTERM", "SIGKILL"])
def test_processes_a_signal_to_the_backfill_stops_every_process(stack, tmp_path, sig):
    """Both shards sit in a load that would hold its transaction for 10 minutes; SIGTERM to the backfill (as
    `timeout` or a service manager sends it) ends both at once: the command exits 143, nothing is committed.
    SIGKILL (`timeout -s KILL`, the OOM killer) cannot be forwarded: the shards get SIGTERM from the kernel
    (PR_SET_PDEATHSIG) and end the same way."""
    import signal

    from luigi_pipelines.devstack.local import wait_until
    from tests.scheduling_support import backfill_command, describe, read_runs, start

    seed_days(stack, D(2019, 2, 1), 4, rows=5, parts=1)
    cfg = stack.write_config(tmp_path / "run.cfg")
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    env = {**stack.env(cfg), "LP_HOOK_DIR": str(hooks), "LP_HOOK_HOLD_S": "600"}
    crc = _lock_crc(stack)
    parent = start("backfill", backfill_command("--start", "2019-02-01", "--stop", "2019-02-05",
                                                "--now", "2019-02-05T05:00:00Z", "--processes", "2"), env, tmp_path)
    children: list[int] = []
    try:
        wait_until(lambda: _lock_holders(stack, crc) == 2, 120, "both processes inside a load")
        children = sorted({r.pid for r in read_runs(hooks)})
        assert len(children) == 2 and all(_alive(pid) for pid in children)
        assert parent.proc is not None
        parent.proc.send_signal(getattr(signal, sig))
        assert parent.wait(120) == (143 if sig == "SIGTERM" else -signal.SIGKILL), describe([parent])
        wait_until(lambda: not any(_alive(pid) for pid in children), 30, "the shard processes to end")
    finally:
        parent.kill()
        for pid in children:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
    if sig == "SIGTERM":
        assert "[1/2] exited 143" in parent.output() and "[2/2] exited 143" in parent.output()
    assert table_counts(stack) == {} and stack.markers(f"{stack.schema}.transaction") == {}
    assert _lock_holders(stack, crc) == 0


def test_run_shards_prefixes_every_line_and_returns_each_exit_code():
    """Two children writing at once (one without a final newline, one failing): every line comes out whole,
    prefixed with its shard, and each child's code is returned; a child killed by a signal gives 128 + N."""
    import io

    def child(label: str, code: str) -> bf.Shard:
        return bf.Shard(label, (), (sys.executable, "-c", code))

    out = io.StringIO()
    codes = bf.run_shards([
        child("[1/3]", "import sys\nfor n in range(300): print('out', n, flush=True); print('err', n, file=sys.stderr)\n"
                       "sys.stdout.write('last, unterminated')"),
        child("[2/3]", "import sys; print('failing'); sys.exit(30)"),
        child("[3/3]", "import os, signal; os.kill(os.getpid(), signal.SIGTERM)"),
    ], out)
    assert codes == [0, 30, 143]
    lines = out.getvalue().splitlines()
    first = [line for line in lines if line.startswith("[1/3] ")]
    assert sorted(first) == sorted([f"[1/3] {s} {n}" for s in ("out", "err") for n in range(300)]
                                   + ["[1/3] last, unterminated"])
    assert [line for line in lines if not line.startswith("[1/3] ")] == ["[2/3] failing"]


def test_processes_when_the_database_cannot_say_what_to_load(tmp_path):
    """No PostgreSQL where the pipeline looks: no process is started, and the exit code is luigi's
    scheduling_error (35), with the reason, as a single luigi run would give."""
    from luigi_pipelines.devstack.local import free_port

    env = {**os.environ, "PGHOST": "127.0.0.1", "PGPORT": str(free_port()), "PYTHONPATH": str(ROOT)}
    result = subprocess.run([sys.executable, "-m", "luigi_pipelines.cli", "backfill", "--days-back", "3",
                             "--processes", "2"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 35, result.stderr[-3000:]
    assert "checking which dates are loaded failed (" in result.stderr and "exit 35" in result.stderr
    assert "[1/" not in result.stderr


# -- a clean run: no warning, a verdict (issue 16, items 8 and 10); an hourly task's backfill (issue 17) ---------

def _production_config(stack, path: Path) -> Path:
    """configs/production.cfg.example as a user fills it in, pointed at the test stack: only its values change."""
    cfg = configparser.ConfigParser(interpolation=None)
    cfg.optionxform = str  # type: ignore[assignment,method-assign]  # keep luigi's option names as written
    cfg.read(ROOT / "configs" / "production.cfg.example")
    dsn = psycopg2.extensions.parse_dsn(stack.pg.dsn)
    for option, value in (("host", dsn.get("host", "127.0.0.1")), ("port", dsn.get("port", "5432")),
                          ("dbname", dsn["dbname"]), ("user", dsn.get("user", "postgres"))):
        cfg.set("database", option, value)
    for section, option in stack._config:
        if not cfg.has_section(section):
            cfg.add_section(section)
        cfg.set(section, option, luigi.configuration.get_config().get(section, option))
    with path.open("w") as out:
        cfg.write(out)
    return path


@pytest.mark.postgres
@pytest.mark.s3
def test_a_clean_backfill_with_the_production_config_prints_no_warning_and_ends_with_its_verdict(stack, tmp_path):
    """configs/production.cfg.example used to make luigi warn (UnconsumedParameterWarning for [core]
    default_scheduler_host/port) and every backfill printed `UserWarning: Parameter "param_name" with value "None"`;
    a successful run said nothing at the end."""
    expected = seed_days(stack, D(2019, 2, 1), 2, rows=3, parts=1)
    cfg = _production_config(stack, tmp_path / "production.cfg")
    result = _run_backfill(stack, cfg, tmp_path, "--start", "2019-02-01", "--stop", "2019-02-03",
                           "--now", "2019-02-05T05:00:00Z", "--local-scheduler")
    assert result.returncode == 0, result.stderr[-3000:]
    assert table_counts(stack) == expected
    assert "Warning" not in result.stderr and "warn" not in result.stderr.lower(), result.stderr[-3000:]
    assert result.stderr.splitlines()[-1] == ("luigi-pipelines backfill: every date asked for is loaded, "
                                              "2 (2019-02-01, 2019-02-02): exit 0")
    again = _run_backfill(stack, cfg, tmp_path, "--start", "2019-02-01", "--stop", "2019-02-03",
                          "--now", "2019-02-05T05:00:00Z", "--local-scheduler", "--raw-exit-code")
    assert again.returncode == 0 and "Warning" not in again.stderr
    assert again.stderr.splitlines()[-1] == ("luigi-pipelines backfill: luigi exited 0 (--raw-exit-code: not "
                                             "checked): exit 0")


@pytest.mark.postgres
@pytest.mark.s3
@pytest.mark.parametrize("processes", [["--local-scheduler"], ["--processes", "2"]])
def test_backfill_of_an_hourly_task_loads_every_hour_of_the_window_once(stack, tmp_path, processes):
    """It was refused in one line ("backfill runs whole days (RangeDaily)"): the window's days are now run as
    their hours with luigi's RangeHourly, in one process or cut into shards of consecutive hours."""
    hours = [datetime.datetime(2019, 2, d, h) for d in (1, 2) for h in range(24)]
    for h in hours:
        stack.put(f"events/{h:%Y/%m/%d/%H}/a.csv", f"id,kind\n{h.day * 100 + h.hour},k\n")
    cfg = stack.write_config(tmp_path / "run.cfg")
    result = _run_backfill(stack, cfg, ROOT, "--module", "tests.hourly_tasks", "--task", "LoadHourlyEvents",
                           "--start", "2019-02-01", "--stop", "2019-02-03", "--now", "2019-02-05T05:00:00Z", *processes)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "RangeHourly --of LoadHourlyEvents --start 2019-02-01T00 --stop 2019-02-03T00" in result.stderr
    assert result.stderr.splitlines()[-1] == ("luigi-pipelines backfill: every hour asked for is loaded, 48 "
                                              "(2019-02-01T00, 2019-02-01T01 ...): exit 0")
    table = f"{stack.schema}.transaction"
    assert stack.query(f"SELECT count(*), count(DISTINCT id), count(DISTINCT (day, hour)) FROM {table}") == [(48, 48, 48)]
    loaded = stack.query(f"SELECT target_table, partition_date, rows_loaded FROM {stack.marker_schema}.partition_marker")
    assert sorted(loaded) == sorted((f"{table}/hour={h:%H}", h.date(), 1) for h in hours)
    if "--processes" in processes:
        assert "[1/2] 24 hours, 2019-02-01T00 to 2019-02-01T23: luigi " in result.stderr
        assert "[2/2] 24 hours, 2019-02-02T00 to 2019-02-02T23: luigi " in result.stderr
