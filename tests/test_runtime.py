"""The package's per-process state (``luigi_pipelines.runtime``): values made once per process, forgotten on
request, and after ``fork`` handed to the child as their slot says; the S3 clients and the completeness notes
kept there."""
import functools
import json
import multiprocessing
import os
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import boto3

from luigi_pipelines import runtime, targets
from luigi_pipelines.config import s3_settings
from luigi_pipelines.s3 import S3Client


def in_forked_child(report: Callable[[], Any]) -> Any:
    """What ``report()`` returns (as JSON) when run in a forked child of this process."""
    read, write = os.pipe()
    child = os.fork()
    if child == 0:
        try:
            os.write(write, json.dumps(report()).encode())
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read) as reader:
        said = reader.read()
    assert os.waitpid(child, 0)[1] == 0 and said, "the child failed before it reported"
    return json.loads(said)


def test_a_slot_is_made_once_per_process_and_forget_drops_it_through_its_slot():
    made, dropped = [], []
    slot = runtime.Slot("test list", lambda: made.append(1) or [], forgotten=dropped.append)
    kept = runtime.Slot("test kept", list, across_fork=True)
    first = slot.get()
    first.append("x")
    kept.get().append("y")
    assert slot.get() is first and made == [1]
    runtime.forget()
    assert dropped == [["x"]] and slot.get() == [] and made == [1, 1]
    assert kept.get() == ["y"]  # (a value kept across fork holds no state of a run; forget leaves it)


def test_a_forked_child_hands_the_parents_values_to_their_slot_and_keeps_those_kept_across_fork():
    inherited: list[Any] = []
    slot = runtime.Slot("test dict", dict, inherited=inherited.append)
    kept = runtime.Slot("test kept", dict, across_fork=True)
    slot.get()["parent"] = os.getpid()
    kept.get()["parent"] = os.getpid()

    def child() -> dict[str, Any]:
        return {"inherited": inherited, "own": slot.get(), "kept": kept.get()}

    seen = in_forked_child(child)
    assert seen == {"inherited": [{"parent": os.getpid()}], "own": {}, "kept": {"parent": os.getpid()}}
    assert slot.get() == {"parent": os.getpid()} and inherited == []  # the parent's own is untouched


def test_a_value_is_forgotten_when_its_process_exits_also_a_multiprocessing_child(tmp_path):
    """luigi runs a task of a multi-worker run in a multiprocessing child, which runs no ``atexit``: its values are
    forgotten (their connections closed) all the same."""
    said = tmp_path / "forgotten"
    slot = runtime.Slot("test exit", lambda: "made in the child", forgotten=lambda value: said.write_text(value))

    child = multiprocessing.get_context("fork").Process(target=slot.get)
    child.start()
    child.join()
    assert child.exitcode == 0 and said.read_text() == "made in the child"


_EXITING = """
import atexit, gc, sys
from luigi_pipelines import runtime
atexit.register(lambda: print("frozen at exit:", gc.get_freeze_count() > 0, flush=True))  # runs after the package's
slot = runtime.Slot("test exit", lambda: "value", forgotten=lambda value: print("forgotten:", value, flush=True))
if sys.argv[1] == "made":
    slot.get()
"""


def test_a_process_that_made_a_value_freezes_what_is_left_at_exit_and_still_forgets_its_values():
    """The interpreter's finalization skips the objects left (boto3's parsed service model made it 0.15-0.2 s
    longer per command); the package's values are still forgotten (connections closed); a process that made nothing
    exits as Python does."""
    run = functools.partial(subprocess.run, capture_output=True, text=True, check=True, timeout=60)
    made = run([sys.executable, "-c", _EXITING, "made"]).stdout.splitlines()
    assert sorted(made) == ["forgotten: value", "frozen at exit: True"]
    assert run([sys.executable, "-c", _EXITING, "none"]).stdout.splitlines() == ["frozen at exit: False"]


def test_a_forked_child_makes_its_own_s3_client_from_the_parents_boto3_session(stack):
    parent = S3Client.shared(s3_settings())
    parent.note_answer("q", True)

    def child() -> dict[str, Any]:
        sessions_made = []

        class Counted(boto3.session.Session):
            def __init__(self, *args: Any, **kwargs: Any) -> None:
                sessions_made.append(1)
                super().__init__(*args, **kwargs)

        boto3.session.Session = Counted  # (the child's own module: the parent's is untouched)
        mine = S3Client.shared(s3_settings())
        return {"same client": mine is parent, "answer": mine.take_answer("q"), "sessions made": len(sessions_made)}

    assert in_forked_child(child) == {"same client": False, "answer": None, "sessions made": 0}
    assert S3Client.shared(s3_settings()) is parent and parent.take_answer("q") is True


def test_forget_drops_the_shared_s3_clients_with_their_answers_and_the_completeness_notes(stack):
    shared = S3Client.shared(s3_settings())
    shared.note_answer("q", True)
    targets.note_missing(["T(date=2019-02-01)"], asker=False)
    runtime.forget()
    again = S3Client.shared(s3_settings())
    assert again is not shared and again.take_answer("q") is None
    assert not targets.take_missing("T(date=2019-02-01)", asker=False)


def test_completeness_notes_stay_in_the_process_that_made_them():
    targets.note_missing(["T(date=2019-02-01)"], asker=True)
    assert in_forked_child(lambda: targets.take_missing("T(date=2019-02-01)", asker=True)) is False
    assert targets.take_missing("T(date=2019-02-01)", asker=True)
