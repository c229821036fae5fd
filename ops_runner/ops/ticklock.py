"""The workbook's tick lock: one tick (or restore, or run by hand) at a time."""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from ops_runner.core.errors import NotWritable
from ops_runner.workbook.config import Config

LOCK_NAME = "tick.lock"


@contextlib.contextmanager
def hold_tick_lock(cfg: Config) -> Iterator[bool]:
    """Yield True while holding the workbook's tick lock, False if another process holds it.

    An flock on a file beside the kill switch: released by the OS when a tick dies, so a killed
    tick never leaves a stale lock behind.
    """
    path = lock_path(cfg)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as exc:
        raise NotWritable("open the tick lock", path, exc, NOTHING_RUN) from None
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            os.ftruncate(handle, 0)
            os.write(handle, f"{os.getpid()}\n".encode())
        except OSError as exc:
            raise NotWritable("write the tick lock", path, exc, NOTHING_RUN) from None
        yield True
    finally:
        os.close(handle)


NOTHING_RUN = "nothing was run and no order sent"


def lock_path(cfg: Config) -> Path:
    """Return where the tick lock lives."""
    return cfg.path("kill_switch").parent / LOCK_NAME
