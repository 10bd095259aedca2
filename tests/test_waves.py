"""``backfill`` against luigid in bounded waves (``luigi_pipelines/waves.py``): the waves' planning, a no-op range
answered with one marker query per wave and no luigi process, every grain under a real luigid, two backfills
sharing an hourly range with every hour loaded once and luigid's pending set bounded."""
from __future__ import annotations

import datetime
import json
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from luigi_pipelines.devstack.local import Luigid
from luigi_pipelines.waves import Wave, chunks, to_load, waves_of
from tests.conftest import ROOT
from tests.scheduling_support import backfill_command, describe, luigid_config, sample_while, start, wait_all, worker_settings

HOURLY = ["--module", "tests.hourly_tasks", "--task", "HookedLoadHourlyEvents"]
TWO_DAYS = ["--start", "2019-02-01", "--stop", "2019-02-03", "--now", "2019-02-05T05:00:00Z"]
HOURS = [datetime.datetime(2019, 2, d, h) for d in (1, 2) for h in range(24)]


# -- planning (pure) ------------------------------------------------------------------------------------------

def test_chunks_and_waves_ask_one_chunk_at_a_time_only_when_needed():
    asked: list[list[int]] = []

    def loaded(values):
        asked.append(list(values))
        return {v for v in values if v % 3 == 0}  # a third loaded already

    seen: set[int] = set()
    waves = waves_of(to_load(range(30), 10, loaded, seen=seen), 5)
    first = next(waves)
    assert first == Wave(1, (1, 2, 4, 5, 7)) and asked == [list(range(10))]  # only the first chunk asked
    assert next(waves).values == (8, 10, 11, 13, 14) and len(asked) == 2
    rest = list(waves)
    assert [w.number for w in rest] == [3, 4] and len(asked) == 3
    assert sorted(v for w in [first, *rest] for v in w.values) + [8, 10, 11, 13, 14] == sorted(
        v for v in range(30) if v % 3 and v not in (8, 10, 11, 13, 14)) + [8, 10, 11, 13, 14]
    assert seen == {v for v in range(30) if v % 3 == 0}
    assert list(chunks(list(range(7)), 3, reverse=True)) == [[4, 5, 6], [1, 2, 3], [0]]
    newest = waves_of(to_load(list(range(7)), 3, lambda vs: set(), forced=[], reverse=True), 4)
    assert [w.values for w in newest] == [(3, 4, 5, 6), (0, 1, 2)]


def test_forced_values_are_loaded_even_when_found_loaded():
    seen: set[int] = set()
    assert list(to_load(range(6), 4, lambda vs: set(vs), forced=[2, 5], seen=seen)) == [2, 5]
    assert seen == {0, 1, 3, 4}


# -- against PostgreSQL, S3 and luigid ----------------------------------------------------------------------------

def _cli(stack, cfg: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "luigi_pipelines.cli", *args], cwd=ROOT,
                          env={**stack.env(cfg), **(env or {})}, capture_output=True, text=True, timeout=300)


def _put_hours(stack, hours) -> dict[str, int]:
    for hour in hours:
        stack.put(f"events/{hour:%Y/%m/%d/%H}/a.csv", f"id,kind\n{hour.day * 100 + hour.hour},k\n"
                  f"{100000 + hour.day * 100 + hour.hour},k\n")
    return {f"{h:%Y-%m-%dT%H}": 2 for h in hours}


def _hour_counts(stack) -> dict[str, int]:
    rows = stack.query(f"SELECT day, hour, count(*) FROM {stack.schema}.transaction GROUP BY 1, 2")
    return {f"{day:%Y-%m-%d}T{hour:02d}": n for day, hour, n in rows}


def _luigid(tmp_path: Path) -> Luigid:
    directory = tmp_path / "luigid"
    directory.mkdir()
    overrides = {"scheduler": {"worker_disconnect_delay": 2, "retry_delay": 0.5}}
    return Luigid(directory, luigid_config(directory / "luigid.cfg", overrides))


# The backfill with ``db.completed_partitions`` counted: each call appends the number of partitions it was asked.
_COUNTED = """
import json, sys
from luigi_pipelines import cli, db
real = db.completed_partitions
def counted(conn, marker, partitions):
    partitions = list(partitions)
    with open(sys.argv[1], "a") as f:
        f.write(json.dumps(len(partitions)) + "\\n")
    return real(conn, marker, partitions)
db.completed_partitions = counted
sys.exit(cli.main(sys.argv[2:]))
"""


@pytest.mark.postgres
@pytest.mark.s3
def test_a_loaded_range_is_answered_with_one_marker_query_per_wave_and_no_luigi(stack, tmp_path):
    expected = _put_hours(stack, HOURS)
    cfg = stack.write_config(tmp_path / "run.cfg")
    first = _cli(stack, cfg, "backfill", *HOURLY, *TWO_DAYS, "--processes", "1")
    assert first.returncode == 0, first.stderr[-3000:]
    assert _hour_counts(stack) == expected

    counts = tmp_path / "queries"
    # no luigid at this port: a wave's luigi process would fail to reach it, and none may start
    again = subprocess.run([sys.executable, "-c", _COUNTED, str(counts), "backfill", *HOURLY, *TWO_DAYS,
                            "--scheduler-host", "127.0.0.1", "--scheduler-port", "9", "--wave-size", "10"],
                           cwd=ROOT, env=stack.env(cfg), capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    asked = [json.loads(line) for line in counts.read_text().splitlines()]
    assert asked == [10, 10, 10, 10, 8]  # one query per wave of 10 hours, the verdict asks nothing again
    assert "[wave" not in again.stderr and "luigi exited" not in again.stderr
    assert again.stderr.splitlines()[-1] == ("luigi-pipelines backfill: every hour asked for is loaded, 48 "
                                             "(2019-02-01T00, 2019-02-01T01 ...): exit 0")


@pytest.mark.postgres
@pytest.mark.s3
def test_no_more_waves_once_a_wave_cannot_reach_luigid(stack, tmp_path):
    """luigid is not there: the first wave's luigi process fails to schedule; the backfill starts no other wave
    (there would be 5) and says so, with luigi's failure code and the hours not loaded."""
    _put_hours(stack, HOURS)
    worker_settings(stack)
    stack.set_config("core", "rpc_retry_attempts", "1")
    cfg = stack.write_config(tmp_path / "run.cfg")
    run = _cli(stack, cfg, "backfill", *HOURLY, *TWO_DAYS, "--scheduler-host", "127.0.0.1", "--scheduler-port", "9",
               "--wave-size", "10")
    assert run.returncode in (35, 40), run.stderr[-3000:]
    assert [n for n, _ in _wave_exits(run.stderr)] == [1], run.stderr[-3000:]
    assert "no more waves: a wave's luigi process could not schedule or crashed" in run.stderr
    assert "hours asked for are not loaded: 48 (2019-02-01T00, " in run.stderr.splitlines()[-1]


def _wave_exits(output: str) -> list[tuple[int, int]]:
    return [(int(n), int(code)) for n, code in re.findall(r"\[wave (\d+)\] exited (-?\d+) after", output)]


@pytest.mark.scheduler
@pytest.mark.postgres
@pytest.mark.s3
@pytest.mark.parametrize("grain", ["daily", "hourly", "monthly"])
def test_waves_load_every_grain_under_luigid(stack, tmp_path, grain):
    if grain == "daily":
        from tests.scheduling_support import seed_days

        seed_days(stack, datetime.date(2019, 2, 1), 7, rows=3, parts=1)
        args = ["--module", "tests.scheduler_tasks", "--task", "HookedLoadTransactions", "--start", "2019-02-01",
                "--stop", "2019-02-08", "--now", "2019-02-10T05:00:00Z"]
        size, partitions = 3, 7
    elif grain == "hourly":
        _put_hours(stack, HOURS[:10])
        args = [*HOURLY, "--start", "2019-02-01", "--stop", "2019-02-02", "--now", "2019-02-05T05:00:00Z"]
        size, partitions = 4, 24
    else:
        stack.set_config("compose_test", "schema", stack.schema)
        for month in ("01", "02", "03"):
            stack.put(f"m/2019-{month}/a.csv", f"id,day,amount\n{month},2019-{month}-02,1.50\n")
        args = ["--module", "tests.compose_tasks", "--task", "MonthlySales", "--start", "2019-01-01",
                "--stop", "2019-04-03", "--now", "2019-04-03T05:00:00Z"]
        size, partitions = 2, 3
    worker_settings(stack)
    cfg = stack.write_config(tmp_path / "run.cfg")
    with _luigid(tmp_path) as luigid:
        run = _cli(stack, cfg, "backfill", *args, *luigid.scheduler_args, "--wave-size", str(size),
                   "--next-wave-at", "1", "--idle-timeout", "5")
    waves = -(-partitions // size)
    if grain == "hourly":  # 14 hours have no data: exit 20 once luigi gives up on them, 10 hours loaded
        assert run.returncode == 20, run.stderr[-3000:]
        assert _hour_counts(stack) == {f"{h:%Y-%m-%dT%H}": 2 for h in HOURS[:10]}
        assert "not loaded: 14 (2019-02-01T10, 2019-02-01T11, " in run.stderr.splitlines()[-1]
    else:
        assert run.returncode == 0, run.stderr[-3000:]
    assert sorted(n for n, _ in _wave_exits(run.stderr)) == list(range(1, waves + 1)), run.stderr[-3000:]
    assert f"[wave {waves}] {min(size, partitions - size * (waves - 1))} " in run.stderr


@pytest.mark.scheduler
@pytest.mark.slow
@pytest.mark.postgres
@pytest.mark.s3
def test_two_backfills_share_an_hourly_range_in_waves_each_hour_loaded_once(stack, tmp_path):
    expected = _put_hours(stack, HOURS)
    worker_settings(stack)
    cfg = stack.write_config(tmp_path / "run.cfg")
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    size, next_at = 10, 3
    with _luigid(tmp_path) as luigid:
        env = {**stack.env(cfg), "LP_HOOK_DIR": str(hooks), "LP_HOOK_HOLD_S": "0.05"}
        cmd = backfill_command(*TWO_DAYS, *luigid.scheduler_args, "--wave-size", str(size), "--next-wave-at",
                               str(next_at), module="tests.hourly_tasks", task="HookedLoadHourlyEvents")
        hosts = [start(name, cmd, env, tmp_path) for name in ("a", "b")]
        pending = sample_while(hosts, lambda _: len(luigid.tasks("PENDING", "HookedLoadHourlyEvents")),
                               stack.pg.dsn, 240, interval=0.05)
        codes = wait_all(hosts, 240)
    assert codes == {"a": 0, "b": 0}, describe(hosts)
    assert _hour_counts(stack) == expected
    wrote = Counter(line.split()[2] for line in (hooks / "wrote").read_text().splitlines())
    assert wrote == Counter(dict.fromkeys(expected, 1))  # every hour written once, by one of the two hosts
    assert len(stack.markers(f"{stack.schema}.transaction/hour=13")) == 2
    # luigid never held the whole range: at most a wave and what was left of the one before, per host
    assert 0 < max(pending) <= 2 * (size + next_at) < len(HOURS), pending
    for host in hosts:
        assert _wave_exits(host.output()), host.output()[-3000:]


def test_the_key_prefix_check_of_a_load_is_made_once_per_process(monkeypatch):
    """Every load asks whether its key_prefix gives each hour a prefix of its own: over two years of values, ~10 ms;
    at 100,000 tiny hourly loads that was minutes. Now once per (grain, template) and process."""
    from luigi_pipelines import grains, runtime

    runtime.forget()
    made = []
    real = grains.Hourly._prefixes_apart
    monkeypatch.setattr(grains.Hourly, "_prefixes_apart", lambda self, t: made.append(t) or real(self, t))
    for _ in range(3):
        assert grains.HOURLY.prefixes_apart("w/{date:%Y/%m/%d/%H}/")
        assert not grains.HOURLY.prefixes_apart("w/{date:%Y/%m/%d}/")
    assert made == ["w/{date:%Y/%m/%d/%H}/", "w/{date:%Y/%m/%d}/"]


@pytest.mark.scheduler
@pytest.mark.postgres
@pytest.mark.s3
def test_sigterm_ends_the_running_wave_and_starts_no_other(stack, tmp_path):
    """SIGTERM to the backfill reaches its wave's luigi process (its load rolls back) and no further wave starts:
    exit 143, every hour either loaded whole with its marker or not at all."""
    import os
    import signal

    from luigi_pipelines.devstack.local import wait_until

    expected = _put_hours(stack, HOURS)
    worker_settings(stack)
    cfg = stack.write_config(tmp_path / "run.cfg")
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    with _luigid(tmp_path) as luigid:
        env = {**stack.env(cfg), "LP_HOOK_DIR": str(hooks), "LP_HOOK_HOLD_S": "0.3"}
        cmd = backfill_command(*TWO_DAYS, *luigid.scheduler_args, "--wave-size", "10", module="tests.hourly_tasks",
                               task="HookedLoadHourlyEvents")
        backfill = start("backfill", cmd, env, tmp_path)
        # an hour committed (a condition, not a time: on a busy machine the first load may still be in its transaction
        # when its hook has written), then SIGTERM while the wave's other hours load (each holds 0.3 s)
        wait_until(lambda: (hooks / "wrote").exists() and stack.query(
            f"SELECT count(*) FROM {stack.marker_schema}.partition_marker")[0][0] > 0, 120, "an hour of the first wave")
        os.kill(backfill.pid, signal.SIGTERM)
        code = wait_all([backfill], 120)["backfill"]
    output = backfill.output()
    assert code == 143, output[-3000:]
    assert [n for n, _ in _wave_exits(output)] == [1], output[-3000:]
    assert "no more waves" in output
    loaded = _hour_counts(stack)
    assert 0 < len(loaded) < 10 and all(expected[h] == n for h, n in loaded.items())
    markers = stack.query(f"SELECT count(*) FROM {stack.marker_schema}.partition_marker")[0][0]
    assert markers == len(loaded)


def test_a_merging_task_waits_for_each_wave_to_end(capsys):
    """Merges apply in date order: the next wave of a merging task starts only when the last one is loaded."""
    from luigi_pipelines.cli import main as cli_main

    base = ["backfill", "--days-back", "30", "--now", "2019-03-10T05:00:00Z", "--dry-run", "--scheduler-host", "x",
            "--wave-size", "8"]
    assert cli_main([*base, "--module", "tests.merge_tasks", "--task", "MergeCustomers"]) == 0
    assert "in waves of at most 8 dates to load, the next one started when 0 are left" in capsys.readouterr().err
    assert cli_main(base) == 0
    assert "in waves of at most 8 dates to load, the next one started when 2 are left" in capsys.readouterr().err
