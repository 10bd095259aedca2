"""What luigid shows of a load: progress inside an object, and a failed load's status and error text."""
from __future__ import annotations

import datetime
import json
from pathlib import Path

import pytest

from luigi_pipelines.devstack.local import Luigid, wait_until
from luigi_pipelines.devstack.sample import csv_bytes, transaction_lines
from luigi_pipelines.reporting import ROLLED_BACK, ProgressReport
from luigi_pipelines.s3 import S3Object
from tests.scheduling_support import backfill_command, describe, luigid_config, start, wait_all, worker_settings

D1, D2 = datetime.date(2019, 2, 1), datetime.date(2019, 2, 2)
TASK = "PausingLoadTransactions"
MIB = 1024 * 1024


def test_progress_is_reported_within_an_object_and_throttled():
    """Reports go out when 5 points were gained or 2 s passed, and after every object."""
    clock = [0.0]
    sent: list[tuple[str, int]] = []
    objects = [S3Object("b", "k/a.csv", 100 * MIB, "e1"), S3Object("b", "k/b.csv", 100 * MIB, "e2")]
    progress = ProgressReport(lambda message, percent: sent.append((message, percent)), objects, lambda: clock[0])
    progress.start(1, objects[0], 0)
    for mib in range(1, 101):  # 1 MiB per read, 0.01 s apart: 0.5 % of the partition each
        clock[0] += 0.01
        progress.read(objects[0], mib * MIB)
    assert [p for _, p in sent] == [5, 10, 15, 20, 25, 30, 35, 40, 45, 50]
    assert sent[0][0] == "copying object 1 of 2 (k/a.csv): 10.0 of 100.0 MiB; 0 rows before it"
    progress.done(1, objects[0], 1234)
    assert sent[-1] == ("copied 1 of 2 objects, 1234 rows", 50)
    progress.start(2, objects[1], 1234)
    clock[0] += 2.5  # slow: 2 s pass before 5 points are gained
    progress.read(objects[1], 2 * MIB)
    assert sent[-1] == ("copying object 2 of 2 (k/b.csv): 2.0 of 100.0 MiB; 1234 rows before it", 51)
    progress.read(objects[1], 3 * MIB)
    assert len(sent) == 12  # neither 2 s nor 5 points since the last report


def _luigid(tmp_path: Path) -> Luigid:
    directory = tmp_path / "luigid"
    directory.mkdir()
    overrides = {"scheduler": {"worker_disconnect_delay": 2, "retry_delay": 600}}  # a failed task stays FAILED
    return Luigid(directory, luigid_config(directory / "luigid.cfg", overrides))


def _one_object_day(stack, day: datetime.date, rows: int, bad_line: int | None = None) -> int:
    lines = transaction_lines(day, day.toordinal() * 100_000, rows)
    if bad_line is not None:
        lines[bad_line - 2] = "x" + lines[bad_line - 2]  # line 1 is the header
    body = csv_bytes(lines)
    stack.put(f"transactions/{day}/part-0000.csv", body)
    return len(body)


@pytest.mark.scheduler
@pytest.mark.slow
@pytest.mark.postgres
@pytest.mark.s3
def test_luigid_shows_progress_inside_an_object_and_a_failed_load_as_rolled_back(stack, tmp_path):
    size = _one_object_day(stack, D1, 60_000)  # one object of ~5 MiB
    _one_object_day(stack, D2, 60_000, bad_line=50_001)
    assert size > 4 * MIB
    worker_settings(stack)
    stack.set_config("load", "copy_buffer_kb", "64")  # many reads per object
    cfg = stack.write_config(tmp_path / "worker.cfg")
    pause = tmp_path / "pause"
    pause.mkdir()
    env = {**stack.env(cfg), "LP_PAUSE_DIR": str(pause), "LP_PAUSE_DATE": str(D1), "LP_PAUSE_BYTES": str(size // 2)}
    window = ["--start", str(D1), "--stop", str(D2 + datetime.timedelta(days=1)), "--now", "2019-06-01T00:00:00"]

    with _luigid(tmp_path) as luigid:
        # --idle-timeout: the failed task is not retried for 600 s, so the worker leaves as soon as it is alone with it
        worker = start("w1", backfill_command(*window, *luigid.scheduler_args, "--idle-timeout", "2",
                                              module="tests.progress_tasks", task=TASK), env, tmp_path)
        try:
            wait_until(lambda: (pause / "paused").exists() or worker.returncode is not None, 120, "the load to pause")
            assert (pause / "paused").exists(), describe([worker])
            # half of the only object read: before, luigid said nothing until the object was done (reports
            # go out at most once a second, on their own thread: the latest one arrives while COPY waits)
            running = wait_until(lambda: next((t for t in luigid.tasks("RUNNING", TASK).values()
                                               if t["progress_percentage"] >= 40), None), 10, "the report of half")
            assert running["params"]["date"] == str(D1)
            assert 40 <= running["progress_percentage"] <= 50, running
            assert running["status_message"].startswith(
                f"copying object 1 of 1 (transactions/{D1}/part-0000.csv): ")
            assert f" of {size / MIB:.1f} MiB; 0 rows before it" in running["status_message"]
            (pause / "release").write_text("")
            codes = wait_all([worker], 180)
        finally:
            worker.kill()
        done = luigid.tasks("DONE", TASK)
        [(failed_id, failed)] = luigid.tasks("FAILED", TASK).items()
        error = json.loads(luigid.api("fetch_error", task_id=failed_id)["error"])  # the worker sends it as JSON

    assert codes == {"w1": 30}, describe([worker])
    [loaded] = done.values()
    assert loaded["progress_percentage"] == 100 and loaded["status_message"] == "copied 1 of 1 objects, 60000 rows"
    # the failed load: its last message says where it was, and that nothing was kept
    assert failed["params"]["date"] == str(D2)
    assert failed["status_message"].startswith(f"copying object 1 of 1 (transactions/{D2}/part-0000.csv): ")
    assert failed["status_message"].endswith(f"; {ROLLED_BACK}") and failed["progress_percentage"] == 0
    lines = error.splitlines()
    assert lines[0] == (f"BadInputError: {stack.schema}.transaction {D2} not loaded; rolled back: nothing kept; "
                        "the partition is as before")
    assert lines[1:5] == [f"  object:  s3://{stack.bucket}/transactions/{D2}/part-0000.csv",
                          "  where:   line 50001, column id",
                          f'  reason:  invalid input syntax for type bigint: "x{D2.toordinal() * 100_000 + 49_999}"',
                          "  to do:   fix or replace the object in S3 and rerun (with --force if the date was"]
    assert max(len(line) for line in lines[1:]) <= 88
    assert stack.markers(f"{stack.schema}.transaction").keys() == {D1}
    [(error_class, key)] = stack.query(f"SELECT error_class, s3_key FROM {stack.marker_schema}.partition_failure")
    assert (error_class, key) == ("BadInputError", f"transactions/{D2}/part-0000.csv")


def test_reports_go_out_on_their_own_thread_and_copy_never_waits_for_luigid():
    """A slow luigid (here: a report call that blocks) delays no read; the latest report wins, and leaving
    the block sends what is pending."""
    import threading

    gate, sent = threading.Event(), []

    def slow_report(message: str, percent: int) -> None:
        gate.wait(10)
        sent.append(percent)

    objects = [S3Object("b", "k/a.csv", 100 * MIB, "e1")]
    clock = [0.0]
    with ProgressReport(slow_report, objects, lambda: clock[0]) as progress:
        progress.start(1, objects[0], 0)
        for mib in range(1, 101):  # 20 reports due; the first blocks in luigid
            progress.read(objects[0], mib * MIB)
        assert sent == []  # every read returned although no report got through
        progress.done(1, objects[0], 10)
        gate.set()
    assert sent[-1] == 100 and len(sent) <= 3  # the first, maybe one in between, then the latest
