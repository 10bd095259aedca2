"""The managed process under the local stack: failure shown with its log, stop escalation, the bounded wait."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

from luigi_pipelines.devstack.local import ManagedProcess, wait_until


class _NeverReady(ManagedProcess):
    def ready(self) -> bool:
        return False


def _gone(pid: int) -> bool:
    """Whether ``pid`` has ended (a zombie waiting for its parent counts as ended)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def test_a_process_that_ends_before_it_is_ready_fails_with_its_log(tmp_path):
    server = _NeverReady(["sh", "-c", "echo port 5432 already in use >&2; exit 3"], tmp_path / "s.log", name="srv")
    with pytest.raises(RuntimeError, match="srv did not get ready: it exited with code 3") as failure:
        server.start()
    assert "port 5432 already in use" in str(failure.value)
    assert "port 5432 already in use" in (tmp_path / "s.log").read_text()  # a given log is kept


def test_a_process_never_ready_is_stopped_after_the_startup_timeout():
    server = _NeverReady([sys.executable, "-c", "import signal; signal.pause()"], name="slow", startup_timeout=0.3)
    with pytest.raises(RuntimeError, match="timed out after 0.3 s waiting for slow to get ready"):
        server.start()
    assert server.returncode is not None  # stopped, not left running
    assert server.log is None  # its own temporary log went with it


def test_stop_kills_the_whole_group_when_sigterm_is_ignored(tmp_path):
    # the shell and its child both ignore SIGTERM (an ignored signal stays ignored across exec)
    group = ManagedProcess(["sh", "-c", "trap '' TERM; sleep 300 & echo $!; wait"], tmp_path / "g.log").start()
    child = int(wait_until(lambda: group.output().strip(), 10, "the child's pid"))
    assert group.stop(timeout=0.2) == -9
    wait_until(lambda: _gone(child), 10, "the child to end with its group")


def test_wait_until_returns_the_value_or_times_out():
    values = iter([0, None, "found"])
    assert wait_until(lambda: next(values), 5, "a value", interval=0.001) == "found"
    with pytest.raises(TimeoutError, match="timed out after 0.05 s waiting for nothing"):
        wait_until(lambda: False, 0.05, "nothing", interval=0.01)
