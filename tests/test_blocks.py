"""Partitions handed to luigid in blocks (``backfill --block-hours``/``--block-days``, ``luigi_pipelines/blocks.py``):
blocks aligned on the day (hours) or counted from a Monday (days) whatever the wave, days' blocks cut to the window;
two backfills sharing a range in blocks, each partition written once and luigid holding blocks, not partitions; a
failed hour or day rolled back alone while the rest of its block loads; a worker killed in the middle of a block
leaving each hour loaded or as it was, and a rerun loading the others."""
from __future__ import annotations

import datetime
import json
import os
import signal
from collections import Counter

import pytest

from luigi_pipelines.blocks import block_start, check_block_hours, command, wrong_lengths
from luigi_pipelines.devstack.local import wait_until
from luigi_pipelines.grains import DAILY, HOURLY
from tests.scheduling_support import assert_exactly_once, backfill_command, describe, seed_days, start, wait_all, worker_settings
from tests.test_waves import HOURS, TWO_DAYS, _cli, _hour_counts, _luigid, _put_hours, _wave_exits

BLOCKED = "PartitionBlock"


def test_blocks_are_aligned_on_the_day_and_divide_it():
    assert block_start(datetime.datetime(2019, 2, 1, 13), 6) == datetime.datetime(2019, 2, 1, 12)
    assert block_start(datetime.datetime(2019, 2, 1, 23), 24) == datetime.datetime(2019, 2, 1, 0)
    assert check_block_hours(8) == 8
    for wrong in (0, 5, 48):
        with pytest.raises(ValueError, match="whole part of a UTC day"):
            check_block_hours(wrong)
    cmd = command(["py", "-m", "luigi", "--module", "m", "RangeHourly", "--of", "T"], 6)
    assert cmd[1] == "-c" and "luigi_pipelines.blocks" in cmd[2]
    assert cmd[3:] == ["--module", "m", "RangeHourlyBlocks", "--of", "T", "--block-hours", "6"]
    with pytest.raises(ValueError, match="not a RangeHourly command"):
        command(["py", "-m", "luigi", "--module", "m", "RangeDaily"], 6)


def test_day_blocks_count_from_a_monday_any_length_cut_to_the_window():
    assert block_start(datetime.date(2019, 2, 10), 7, DAILY) == datetime.date(2019, 2, 4)  # a Sunday: its Monday
    assert block_start(datetime.date(2019, 2, 4), 7, DAILY) == datetime.date(2019, 2, 4)
    assert block_start(datetime.date(2019, 2, 6), 30, DAILY) == datetime.date(2019, 1, 27)
    assert wrong_lengths(24, 30) == "" and "at least 1 day" in wrong_lengths(24, 0)
    assert wrong_lengths(24, 1, HOURLY) == "" and wrong_lengths(1, 7, DAILY) == ""
    assert wrong_lengths(1, 7, HOURLY) == "--block-days 7: blocks of days, but the task's partitions are hours"
    assert wrong_lengths(24, 1, DAILY) == "--block-hours 24: blocks of hours, but the task's partitions are days"
    cmd = command(["py", "-m", "luigi", "--module", "m", "RangeDaily", "--of", "T"], 7, DAILY,
                  (datetime.date(2019, 2, 1), datetime.date(2019, 2, 15)))
    assert cmd[3:] == ["--module", "m", "RangeDailyBlocks", "--of", "T", "--block-days", "7",
                       "--block-window", '["2019-02-01", "2019-02-15"]']
    with pytest.raises(ValueError, match="not a RangeDaily command"):
        command(["py", "-m", "luigi", "--module", "m", "RangeHourly"], 7, DAILY)


def _two_hosts(stack, tmp_path, *args: str, **names: str) -> tuple[dict, Counter]:
    """Two ``backfill`` processes ("hosts") with ``args`` against one luigid, each exiting 0 after its waves; the
    tasks luigid holds done, and how many times each partition was written (the hooked tasks' ``wrote`` lines)."""
    worker_settings(stack)
    cfg = stack.write_config(tmp_path / "run.cfg")
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    with _luigid(tmp_path) as luigid:
        env = {**stack.env(cfg), "LP_HOOK_DIR": str(hooks), "LP_HOOK_HOLD_S": "0.05"}
        hosts = [start(name, backfill_command(*args, *luigid.scheduler_args, **names), env, tmp_path)
                 for name in ("a", "b")]
        codes = wait_all(hosts, 240)
        done = luigid.tasks("DONE")
    assert codes == {"a": 0, "b": 0}, describe(hosts)
    for host in hosts:
        assert _wave_exits(host.output()), host.output()[-3000:]
    return done, Counter(line.split()[2] for line in (hooks / "wrote").read_text().splitlines())


def _markers(stack) -> int:
    return stack.query(f"SELECT count(*) FROM {stack.marker_schema}.partition_marker")[0][0]


@pytest.mark.scheduler
@pytest.mark.postgres
@pytest.mark.s3
def test_two_backfills_share_an_hourly_range_in_blocks_each_hour_loaded_once(stack, tmp_path):
    """Waves of 10 hours cut the blocks of 6: both hosts name each block alike; luigid holds the 8 blocks, no hour."""
    expected = _put_hours(stack, HOURS)
    done, wrote = _two_hosts(stack, tmp_path, *TWO_DAYS, "--wave-size", "10", "--next-wave-at", "3",
                             "--block-hours", "6", module="tests.hourly_tasks", task="HookedLoadHourlyEvents")
    assert _hour_counts(stack) == expected and _markers(stack) == len(HOURS)
    assert wrote == Counter(dict.fromkeys(expected, 1))  # every hour written once, by one of the two hosts
    blocks = sorted(t["params"]["start"] for t in done.values() if t["name"] == BLOCKED)
    assert blocks == [f"2019-02-0{d}T{h:02d}" for d in (1, 2) for h in (0, 6, 12, 18)], blocks
    assert not [t for t in done.values() if t["name"] == "HookedLoadHourlyEvents"]


@pytest.mark.scheduler
@pytest.mark.postgres
@pytest.mark.s3
def test_a_failed_hour_rolls_back_alone_and_the_rest_of_its_block_loads(stack, tmp_path):
    expected = _put_hours(stack, HOURS[:24])
    stack.put("events/2019/02/01/05/a.csv", "id,kind\nnot-a-number,k\n")
    del expected["2019-02-01T05"]
    worker_settings(stack)
    cfg = stack.write_config(tmp_path / "run.cfg")
    with _luigid(tmp_path) as luigid:
        run = _cli(stack, cfg, "backfill", "--module", "tests.hourly_tasks", "--task", "LoadHourlyEvents",
                   "--start", "2019-02-01", "--stop", "2019-02-02", "--now", "2019-02-05T05:00:00Z",
                   *luigid.scheduler_args, "--block-hours", "24", "--idle-timeout", "5")
    assert run.returncode == 30, run.stderr[-3000:]
    assert _hour_counts(stack) == expected and _markers(stack) == 23
    assert "1 of the 24 hours this block loaded failed" in run.stderr, run.stderr[-3000:]
    assert "not loaded: 1 (2019-02-01T05)" in run.stderr.splitlines()[-1]
    [(partition_date, error)] = stack.query(f"SELECT partition_date, error_class FROM {stack.marker_schema}."
                                            "partition_failure")
    assert partition_date == datetime.date(2019, 2, 1) and error


@pytest.mark.scheduler
@pytest.mark.postgres
@pytest.mark.s3
def test_a_worker_killed_in_a_block_leaves_each_hour_loaded_or_as_it_was(stack, tmp_path):
    """kill -9 of the worker (the wave's luigi process) while the block's 4th hour is in its transaction: the 3 hours
    before are loaded with their markers, no other; a rerun loads the rest."""
    expected = _put_hours(stack, HOURS[:24])
    worker_settings(stack)
    cfg = stack.write_config(tmp_path / "run.cfg")
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    args = ["--start", "2019-02-01", "--stop", "2019-02-02", "--now", "2019-02-05T05:00:00Z"]
    with _luigid(tmp_path) as luigid:
        env = {**stack.env(cfg), "LP_HOOK_DIR": str(hooks), "LP_HOOK_PAUSE_DATE": "2019-02-01T03"}
        cmd = backfill_command(*args, *luigid.scheduler_args, "--block-hours", "24", "--idle-timeout", "5",
                               module="tests.hourly_tasks", task="HookedLoadHourlyEvents")
        backfill = start("backfill", cmd, env, tmp_path)
        wait_until(lambda: (hooks / "paused").exists(), 120, "the 4th hour paused in its transaction")
        paused = json.loads((hooks / "paused").read_text())
        os.kill(paused["pid"], signal.SIGKILL)
        assert wait_all([backfill], 60)["backfill"] == 128 + signal.SIGKILL, backfill.output()[-3000:]
        wait_until(lambda: not stack.query("SELECT count(*) FROM pg_stat_activity WHERE pid = %s",
                                           (paused["backend_pid"],))[0][0], 60, "the killed load's transaction ended")
        assert _hour_counts(stack) == {h: n for h, n in expected.items() if h < "2019-02-01T03"}
        assert _markers(stack) == 3
        rerun = _cli(stack, cfg, "backfill", "--module", "tests.hourly_tasks", "--task", "HookedLoadHourlyEvents",
                     *args, *luigid.scheduler_args, "--block-hours", "24", "--idle-timeout", "5")
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert _hour_counts(stack) == expected and _markers(stack) == 24


DAYS_BLOCKED = "PartitionDayBlock"
FORTNIGHT = ["--start", "2019-02-01", "--stop", "2019-02-15", "--now", "2019-02-20T05:00:00Z"]


@pytest.mark.scheduler
@pytest.mark.postgres
@pytest.mark.s3
def test_two_backfills_share_a_daily_range_in_blocks_each_day_loaded_once(stack, tmp_path):
    """Waves of 5 days cut the weeks: both hosts name each block alike, the blocks at the window's edges cut to it
    (Friday 1 to Sunday 3, Monday 11 to Thursday 14); luigid holds the 3 blocks, no date."""
    expected = seed_days(stack, datetime.date(2019, 2, 1), 14, rows=3, parts=1)
    done, wrote = _two_hosts(stack, tmp_path, *FORTNIGHT, "--wave-size", "5", "--next-wave-at", "2",
                             "--block-days", "7")
    assert_exactly_once(stack, expected)
    assert wrote == Counter({f"{day}": 1 for day in expected})  # every date written once, by one of the two hosts
    blocks = sorted((t["params"]["start"], t["params"]["days"]) for t in done.values() if t["name"] == DAYS_BLOCKED)
    assert blocks == [("2019-02-01", "3"), ("2019-02-04", "7"), ("2019-02-11", "4")], blocks
    assert not [t for t in done.values() if t["name"] == "HookedLoadTransactions"]


@pytest.mark.scheduler
@pytest.mark.postgres
@pytest.mark.s3
def test_a_failed_day_rolls_back_alone_and_the_rest_of_its_block_loads(stack, tmp_path):
    expected = seed_days(stack, datetime.date(2019, 2, 4), 7, rows=3, parts=1)
    stack.put("transactions/2019-02-06/part-0000.csv", b"not,a,transactions,file\n1,2,3,4\n")
    del expected[datetime.date(2019, 2, 6)]
    worker_settings(stack)
    cfg = stack.write_config(tmp_path / "run.cfg")
    with _luigid(tmp_path) as luigid:
        run = _cli(stack, cfg, "backfill", "--module", "tests.scheduler_tasks", "--task", "HookedLoadTransactions",
                   "--start", "2019-02-04", "--stop", "2019-02-11", "--now", "2019-02-20T05:00:00Z",
                   *luigid.scheduler_args, "--block-days", "7", "--idle-timeout", "5")
        done = luigid.tasks("DONE")
    assert run.returncode == 30, run.stderr[-3000:]
    assert_exactly_once(stack, expected)
    assert "1 of the 7 days this block loaded failed" in run.stderr, run.stderr[-3000:]
    assert "not loaded: 1 (2019-02-06)" in run.stderr.splitlines()[-1]
    [(partition_date, error)] = stack.query(f"SELECT partition_date, error_class FROM {stack.marker_schema}."
                                            "partition_failure")
    assert partition_date == datetime.date(2019, 2, 6) and error
    assert not [t for t in done.values() if t["name"] == DAYS_BLOCKED]  # the block failed: luigid retries it


@pytest.mark.scheduler
@pytest.mark.postgres
@pytest.mark.s3
def test_an_hourly_merge_in_blocks_applies_its_hours_in_order(stack, tmp_path):
    """Merges apply in date order: a block merges its hours one after the other, oldest first, and the blocks of a
    wave run in order (one worker), so the table ends as the hours say, last hour last."""
    for h in range(24):
        y = "y,basic,false\n" if h < 10 else "y,basic,true\n" if h == 10 else ""
        stack.put(f"a/2019/02/01/{h:02d}/a.csv", f"account,tier,gone\nx,t{h:02d},false\n{y}")
    stack.set_config("compose_test", "schema", stack.schema)
    worker_settings(stack)
    cfg = stack.write_config(tmp_path / "run.cfg")
    with _luigid(tmp_path) as luigid:
        run = _cli(stack, cfg, "backfill", "--module", "tests.compose_tasks", "--task", "HourlyAccounts",
                   "--start", "2019-02-01", "--stop", "2019-02-02", "--now", "2019-02-05T05:00:00Z",
                   *luigid.scheduler_args, "--block-hours", "6", "--idle-timeout", "5")
        done = luigid.tasks("DONE")
    assert run.returncode == 0, run.stderr[-3000:]
    assert stack.query(f"SELECT account, tier FROM {stack.schema}.accounts_hourly ORDER BY 1") == [("x", "t23")]
    assert _markers(stack) == 24
    assert sorted(t["params"]["start"] for t in done.values() if t["name"] == BLOCKED) == [
        f"2019-02-01T{h:02d}" for h in (0, 6, 12, 18)]


@pytest.mark.scheduler
@pytest.mark.postgres
@pytest.mark.s3
@pytest.mark.parametrize("task, table", [("HourlyKinds", "kinds_hourly"), ("HourlyKindsSwapped", "kinds_hourly_swapped")])
def test_an_hourly_transform_in_blocks_loads_its_upstream_hours_too(stack, tmp_path, task, table):
    """A block requires what its hours require: a transform's upstream loads are scheduled and run (not awaited as
    if external), as they are with a task per hour; in delete mode and in swap mode (a child table per hour)."""
    for h in range(24):
        stack.put(f"e/2019/02/01/{h:02d}/part.csv", f"id,kind\n{h},k{h % 2}\n")
    stack.set_config("compose_test", "schema", stack.schema)
    worker_settings(stack)
    cfg = stack.write_config(tmp_path / "run.cfg")
    with _luigid(tmp_path) as luigid:
        run = _cli(stack, cfg, "backfill", "--module", "tests.compose_tasks", "--task", task,
                   "--start", "2019-02-01", "--stop", "2019-02-02", "--now", "2019-02-05T05:00:00Z",
                   *luigid.scheduler_args, "--block-hours", "12", "--idle-timeout", "5")
    assert run.returncode == 0, run.stderr[-3000:]
    assert stack.query(f"SELECT kind, sum(n) FROM {stack.schema}.{table} GROUP BY 1 ORDER BY 1") == [
        ("k0", 12), ("k1", 12)]
    assert _markers(stack) == 48  # 24 hours of events, 24 of their kinds
