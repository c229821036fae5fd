"""`ops-runner tick`: the scheduler's entry point; today the safety steps that run before any job.

A tick takes an exclusive lock (a second tick exits at once), opens the ledger (a corrupt ledger
means HALT and nothing is written), and obeys the kill switch. Which jobs are due and running
them land with the production-run issue.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from ops_runner.config import Config
from ops_runner.events import State

log = logging.getLogger(__name__)

LOCK_NAME = "tick.lock"


@dataclass(frozen=True)
class TickResult:
    """What one tick did: ``busy`` when another tick held the lock."""

    busy: bool
    state: State | None
    message: str


@contextlib.contextmanager
def hold_tick_lock(cfg: Config) -> Iterator[bool]:
    """Yield True while holding the workbook's tick lock, False if another process holds it.

    An flock on a file beside the kill switch: released by the OS when a tick dies, so a killed
    tick never leaves a stale lock behind.
    """
    path = lock_path(cfg)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        os.ftruncate(handle, 0)
        os.write(handle, f"{os.getpid()}\n".encode())
        yield True
    finally:
        os.close(handle)


def tick(cfg: Config, cancel: Callable[[], list[str]] | None = None) -> TickResult:
    """Run one tick's safety steps and return what happened.

    Raises LedgerCorrupt (the system is in HALT; nothing is written to a corrupt ledger).
    """
    from ops_runner.ledger import open_ledger
    from ops_runner.state import enforce_kill_switch, read_state

    with hold_tick_lock(cfg) as held:
        if not held:
            return TickResult(True, None, "busy: another tick holds the lock")
        with open_ledger(cfg) as ledger:
            killed = enforce_kill_switch(cfg, ledger, cancel=cancel)
            view = killed or read_state(ledger)
        message = f"state {view.state}"
        if view.state is not State.RUN and view.reason:
            message += f" ({view.trigger}: {view.reason})"
        return TickResult(False, view.state, message)


def lock_path(cfg: Config) -> Path:
    """Return where the tick lock lives."""
    return cfg.path("kill_switch").parent / LOCK_NAME
