"""Backfills under a real luigid (configs/luigid.cfg with short delays) and several worker processes.

Workers are ``luigi-pipelines backfill`` processes, i.e. luigi's ``RangeDaily`` on luigid with keep-alive,
running ``tests.scheduler_tasks.HookedLoadTransactions`` (the example load task, traced, and able to
pause in the middle of its transaction so that a test can kill it there).
"""
from __future__ import annotations

import datetime
import time
from collections import Counter
from pathlib import Path

import pytest

from luigi_pipelines.devstack.local import Luigid, wait_until
from luigi_pipelines.partitions import TableName, lock_key
from tests.scheduling_support import (
    HOOKED_TASK,
    assert_exactly_once,
    backfill_command,
    describe,
    luigid_config,
    max_overlap,
    read_paused,
    read_runs,
    seed_days,
    start,
    table_counts,
    wait_all,
    worker_settings,
)

pytestmark = [pytest.mark.scheduler, pytest.mark.slow, pytest.mark.postgres, pytest.mark.s3]

START = datetime.date(2019, 2, 1)
NOW = "2019-06-01T12:00:00"  # the clock of every run here; the windows end well before it
DISCONNECT_S = 2.0  # worker_disconnect_delay of the test luigid (60 in configs/luigid.cfg)
RETRY_S = 0.5


def _luigid(tmp_path: Path, name: str = "luigid", **resources: int) -> Luigid:
    overrides = {"scheduler": {"worker_disconnect_delay": DISCONNECT_S, "retry_delay": RETRY_S}}
    if resources:
        overrides["resources"] = resources
    directory = tmp_path / name
    directory.mkdir()
    return Luigid(directory, luigid_config(directory / "luigid.cfg", overrides))


def _window(days: int) -> list[str]:
    return ["--start", START.isoformat(), "--stop", (START + datetime.timedelta(days=days)).isoformat(), "--now", NOW]


def _env(stack, cfg: Path, hook_dir: Path, name: str, **hooks: str) -> dict[str, str]:
    return {**stack.env(cfg), "LP_HOOK_DIR": str(hook_dir), "LP_WORKER_NAME": name, **hooks}


def _done_dates(luigid: Luigid) -> list[str]:
    return sorted(t["params"]["date"] for t in luigid.tasks("DONE", HOOKED_TASK).values())


def test_three_workers_sixty_days_each_date_loaded_once(stack, tmp_path):
    expected = seed_days(stack, START, 60)
    worker_settings(stack)
    cfg = stack.write_config(tmp_path / "worker.cfg")
    hooks = tmp_path / "hooks"
    hooks.mkdir()

    with _luigid(tmp_path) as luigid:
        workers = [start(f"w{n}", backfill_command(*_window(60), *luigid.scheduler_args),
                         _env(stack, cfg, hooks, f"w{n}", LP_HOOK_HOLD_S="0.02"), tmp_path) for n in (1, 2, 3)]
        codes = wait_all(workers, 240)
        done = _done_dates(luigid)

    assert codes == {"w1": 0, "w2": 0, "w3": 0}, describe(workers)
    assert_exactly_once(stack, expected)
    assert done == sorted(d.isoformat() for d in expected)  # luigid's own view: all 60 DONE
    runs = read_runs(hooks)
    assert Counter(r.date for r in runs) == Counter({d.isoformat(): 1 for d in expected})  # luigid ran each once
    assert all(r.end is not None for r in runs)
    assert len({r.pid for r in runs}) >= 2, "the workers did not share the backfill"


def test_worker_killed_mid_load_task_moves_to_another_worker(stack, tmp_path):
    """kill -9 a worker with its transaction open: PostgreSQL rolls it back, luigid hands the task on after
    worker_disconnect_delay + retry_delay, and the data ends exact."""
    expected = seed_days(stack, START, 20, parts=3)
    victim_date = (START + datetime.timedelta(days=4)).isoformat()
    worker_settings(stack)
    cfg = stack.write_config(tmp_path / "worker.cfg")
    hooks = tmp_path / "hooks"
    hooks.mkdir()

    with _luigid(tmp_path) as luigid:
        workers = {n: start(n, backfill_command(*_window(20), *luigid.scheduler_args),
                            _env(stack, cfg, hooks, n, LP_HOOK_PAUSE_DATE=victim_date), tmp_path)
                   for n in ("w1", "w2", "w3")}
        try:
            paused = wait_until(lambda: read_paused(hooks), 120, "a worker paused mid-load")
            assert paused["rows"] > 0  # rows copied, not committed
            victim = workers[paused["worker"]]
            running = luigid.tasks("RUNNING", HOOKED_TASK)
            [task_id] = [tid for tid, t in running.items() if t["params"]["date"] == victim_date]

            day = datetime.date.fromisoformat(victim_date)
            key = lock_key(TableName(stack.schema, "transaction"), day)

            def lock_holders() -> list[tuple]:
                return stack.query("SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted AND objsubid = 2"
                                   " AND classid::bigint = %s AND objid::bigint = %s", (key[0] % (1 << 32), key[1]))

            assert lock_holders() == [(paused["backend_pid"],)]
            victim.kill()  # SIGKILL to the whole worker (the backfill command and its luigi process)
            killed_at = time.monotonic()
            wait_until(lambda: not stack.query("SELECT 1 FROM pg_stat_activity WHERE pid = %s",
                                               (paused["backend_pid"],)), 10, "the killed worker's backend to end")
            backend_gone_s = time.monotonic() - killed_at
            # Rolled back: the date has no rows and no marker, and the lock is free. luigid has not handed the
            # task on yet (it waits worker_disconnect_delay), so nobody else can have loaded it meanwhile.
            assert day not in table_counts(stack) and day not in stack.markers(f"{stack.schema}.transaction")
            assert not lock_holders()
            still = luigid.tasks("RUNNING", HOOKED_TASK).get(task_id)
            assert still and still["worker_running"] == running[task_id]["worker_running"]

            def reassigned() -> bool:
                task = luigid.tasks("RUNNING", HOOKED_TASK).get(task_id) or luigid.tasks("DONE", HOOKED_TASK).get(task_id)
                return bool(task) and task.get("worker_running") != running[task_id]["worker_running"]

            wait_until(reassigned, 30, "luigid to hand the killed worker's task to another worker")
            reassigned_s = time.monotonic() - killed_at
            others = [w for n, w in workers.items() if n != paused["worker"]]
            codes = wait_all(others, 180)
        finally:
            for w in workers.values():
                w.kill()
        done = _done_dates(luigid)

    assert set(codes.values()) == {0}, describe(list(workers.values()))
    assert_exactly_once(stack, expected)
    assert done == sorted(d.isoformat() for d in expected)
    runs = [r for r in read_runs(hooks) if r.date == victim_date]
    assert [(r.pid, r.end) for r in runs if r.end is None] == [(paused["pid"], None)]  # the killed load never ended
    assert [r.pid for r in runs if r.end is not None] != [paused["pid"]]  # ... another worker's did
    marker_finished = stack.markers(f"{stack.schema}.transaction")[datetime.date.fromisoformat(victim_date)][3]
    assert marker_finished.timestamp() > runs[0].start
    assert reassigned_s >= DISCONNECT_S  # luigid waited for the disconnect delay before handing it on
    print(f"backend gone {backend_gone_s:.2f} s after kill -9; task reassigned after {reassigned_s:.2f} s")


@pytest.mark.parametrize("scheduler", ["luigid", "local"])
def test_resource_cap_limits_concurrent_loads(stack, tmp_path, scheduler):
    """[resources] postgres_loads = 2: never more than 2 loads at once, although 6 could run (3 workers x 2)."""
    expected = seed_days(stack, START, 10, rows=10, parts=1)
    worker_settings(stack)
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    hold = {"LP_HOOK_HOLD_S": "0.4"}  # each load keeps its connection 0.4 s: uncapped, up to 6 would overlap
    if scheduler == "luigid":
        cfg = stack.write_config(tmp_path / "worker.cfg")
        with _luigid(tmp_path, postgres_loads=2) as luigid:
            workers = [start(f"w{n}", backfill_command(*_window(10), *luigid.scheduler_args, "--workers", "2"),
                             _env(stack, cfg, hooks, f"w{n}", **hold), tmp_path) for n in (1, 2, 3)]
            codes = wait_all(workers, 120)
    else:  # one process, its own scheduler: luigi.cfg's [resources] (here overridden) applies
        stack.set_config("resources", "postgres_loads", "2")
        cfg = stack.write_config(tmp_path / "worker.cfg")
        workers = [start("w1", backfill_command(*_window(10), "--local-scheduler", "--workers", "6"),
                         _env(stack, cfg, hooks, "w1", **hold), tmp_path)]
        codes = wait_all(workers, 120)

    assert set(codes.values()) == {0}, describe(workers)
    assert_exactly_once(stack, expected)
    assert max_overlap(read_runs(hooks)) == 2  # the cap, and reached: the loads did run in parallel


def test_two_luigid_instances_same_range(stack, tmp_path):
    """Two schedulers cannot see each other's workers; the partition lock makes them agree anyway."""
    expected = seed_days(stack, START, 20)
    worker_settings(stack)
    cfg = stack.write_config(tmp_path / "worker.cfg")
    hooks = tmp_path / "hooks"
    hooks.mkdir()

    with _luigid(tmp_path, "a") as a, _luigid(tmp_path, "b") as b:
        workers = [start(f"{s}{n}", backfill_command(*_window(20), *luigid.scheduler_args),
                         _env(stack, cfg, hooks, f"{s}{n}", LP_HOOK_HOLD_S="0.05"), tmp_path)
                   for s, luigid in (("a", a), ("b", b)) for n in (1, 2)]
        codes = wait_all(workers, 180)
        done_a, done_b = _done_dates(a), _done_dates(b)

    assert set(codes.values()) == {0}, describe(workers)
    assert_exactly_once(stack, expected)
    assert done_a == done_b == sorted(d.isoformat() for d in expected)
    runs = read_runs(hooks)
    assert all(r.end is not None for r in runs)
    assert len(runs) > len(expected)  # some dates were run under both schedulers: the second run was a no-op

