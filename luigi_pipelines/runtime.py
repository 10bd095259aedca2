"""The package's per-process state: every value reused across tasks (clients, connections, short-lived answers) is
declared here as a ``Slot`` and kept by process id, with one fork hook and one public reset (``forget``).

A slot's value is made on first use (never at import) and forgotten when its process exits. In a forked child
(luigi forks a process per task with more than one worker; ``backfill --processes`` forks its shards) the one
``os.register_at_fork`` hook hands each of the parent's values to its slot's ``inherited`` (e.g. to close copies
of the parent's sockets without ending its sessions) and drops it, so the child makes its own; a slot declared
``across_fork`` (state that holds no connection, e.g. boto3's parsed service models) is kept instead. Keying by
process id besides means a value is never used by another process even where no hook ran.
"""
from __future__ import annotations

import atexit
import gc
import multiprocessing.util
import os
import threading
from collections.abc import Callable
from typing import Any, Generic, TypeVar

T = TypeVar("T")

# process id -> slot -> this process's value of it
_VALUES: dict[int, dict[Slot[Any], Any]] = {}
_MAKING = threading.Lock()  # held while a value is made, so that two threads get the same one; new after fork
_FORK_HOOK: list[bool] = []  # whether the hook is registered (a forked child inherits it)
_EXIT_HOOKED: set[int] = set()  # the processes whose exit hook is registered


def _leave(value: Any) -> None:
    """What a slot does by default with a value it drops: nothing (the garbage collector frees it)."""


class Slot(Generic[T]):
    """One kind of per-process value: ``get()`` returns this process's, made by ``make()`` on first use.

    - ``inherited(value)`` runs in a forked child on the parent's value before it is dropped (it must not
      end anything the parent still uses);
    - ``forgotten(value)`` runs when ``forget`` drops this process's value, and when the process exits (close
      what it holds);
    - ``across_fork``: a forked child keeps the parent's value (and ``forget`` keeps it too).
    """

    def __init__(self, name: str, make: Callable[[], T], *, inherited: Callable[[T], None] = _leave,
                 forgotten: Callable[[T], None] = _leave, across_fork: bool = False) -> None:
        self.name = name
        self.make = make
        self.inherited = inherited
        self.forgotten = forgotten
        self.across_fork = across_fork

    def get(self) -> T:
        """This process's value, made on first use."""
        mine = _VALUES.get(os.getpid())
        if mine is not None and self in mine:
            return mine[self]
        with _MAKING:
            mine = _VALUES.setdefault(os.getpid(), {})
            if self not in mine:
                _hook_fork_and_exit()
                mine[self] = self.make()
            return mine[self]

    def __repr__(self) -> str:
        return f"Slot({self.name!r})"


def forget() -> None:
    """Drop this process's values (each through its slot's ``forgotten``), except those kept across fork: the
    process is then as a freshly forked child. Other processes' values are left alone. For tests, and for a
    process that must not reuse what it made (a server or an environment that changed)."""
    mine = _VALUES.get(os.getpid(), {})
    for slot in [s for s in mine if not s.across_fork]:
        slot.forgotten(mine.pop(slot))


def _hook_fork_and_exit() -> None:
    if not _FORK_HOOK:
        _FORK_HOOK.append(True)
        os.register_at_fork(after_in_child=_after_fork_in_child)
    if os.getpid() not in _EXIT_HOOKED:  # multiprocessing runs this also in a luigi worker's child, which runs no atexit
        _EXIT_HOOKED.add(os.getpid())
        multiprocessing.util.Finalize(None, forget, exitpriority=0)
        atexit.register(_quick_exit)


def _quick_exit() -> None:
    """At the exit of a process that did the package's work, move every object left to the garbage collector's
    permanent generation (``gc.freeze``), so that the interpreter's finalization does not trace and collect them one
    by one: boto3's parsed S3 service model and endpoint rules alone made it 0.15-0.2 s longer (0.04 s with this),
    paid by every ``luigi`` command that loads. Python does not promise to finalize the objects still alive at exit
    anyway; the package's own (connections, clients) are closed explicitly by ``forget``, which still runs after this
    (``atexit`` runs the last registered first; multiprocessing's exit function was registered earlier)."""
    gc.freeze()


def _after_fork_in_child() -> None:
    """The one fork hook: the child keeps the parent's ``across_fork`` values, hands the others to their slot's
    ``inherited`` and drops them."""
    global _MAKING
    _MAKING = threading.Lock()  # another thread of the parent may have held it at the fork
    inherited = [value for pid, values in list(_VALUES.items()) if pid != os.getpid() for value in values.items()]
    _VALUES.clear()
    kept = _VALUES.setdefault(os.getpid(), {})
    for slot, value in inherited:
        if slot.across_fork:
            kept[slot] = value
        else:
            slot.inherited(value)
