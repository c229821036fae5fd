"""The tick's own deadline: whatever a tick is waiting on, it never outlives its deadline.

A notebook's deadline kills its kernel, but a tick can wait on things no kernel kill ends: a
zmq context blocking in ``Context.term()`` when garbage collection reaches it, a socket, a
lock (FAULTS.md). A watchdog thread starts with the tick. At the deadline it kills every
kernel this process started and gives the tick ``grace`` seconds to record the failure and
return. Past that it runs ``expire`` (record what was running as failed, SAFE_MODE, alerts),
itself bounded, and ends the process with exit code ``EXIT_CODE``: the OS releases the tick
lock with it, and SQLite rolls back a transaction left open, so the next tick finds the
ledger whole.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from types import TracebackType

log = logging.getLogger(__name__)

EXIT_CODE = 4
GRACE_SECONDS = 20.0
EXPIRE_SECONDS = 30.0  # what ``expire`` may take (a ledger write, alerts with their timeouts)


class TickDeadline:
    """A watchdog for one tick, used as a context manager; ``remaining()`` says what is left.

    ``kill`` ends what a kill can end (the kernels); ``expire`` records the failure; ``exit``
    ends the process (``os._exit``: no cleanup code of the stuck thread can run, or hang).
    """

    def __init__(
        self,
        seconds: float,
        *,
        kill: Callable[[], object],
        expire: Callable[[], object],
        grace: float | None = None,
        expire_seconds: float = EXPIRE_SECONDS,
        exit: Callable[[int], object] = os._exit,
    ) -> None:
        self.seconds = seconds
        self._kill, self._expire, self._exit = kill, expire, exit
        # A quarter of the deadline, at most GRACE_SECONDS: time to unwind after the kill.
        self._grace = min(GRACE_SECONDS, seconds / 4) if grace is None else grace
        self._expire_seconds = expire_seconds
        self._began = time.monotonic()
        self._done = threading.Event()
        self.passed = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="tick-deadline", daemon=True)

    def __enter__(self) -> TickDeadline:
        self._began = time.monotonic()
        self._thread.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._done.set()

    def remaining(self) -> float:
        """Return the seconds left before the deadline (negative once it has passed)."""
        return self.seconds - (time.monotonic() - self._began)

    def _watch(self) -> None:
        if self._done.wait(self.seconds):
            return
        self.passed.set()
        log.error("the tick's deadline of %g s passed: killing its kernels", self.seconds)
        try:
            self._kill()
        except Exception:  # boundary: the exit below must still happen
            log.exception("killing the tick's kernels failed")
        if self._done.wait(self._grace):
            return  # the tick recorded the failure itself and returned
        recorder = threading.Thread(target=self._record, name="tick-deadline-record", daemon=True)
        recorder.start()
        recorder.join(self._expire_seconds)
        message = (
            f"ops-runner: the tick passed its deadline of {self.seconds:g} s and was stopped; "
            "what it was running is recorded as failed (SAFE_MODE); see `ops-runner status`\n"
        )
        try:
            os.write(2, message.encode())
        except OSError:
            pass
        self._exit(EXIT_CODE)

    def _record(self) -> None:
        try:
            self._expire()
        except Exception:  # boundary: the next tick records the orphaned run instead
            log.exception("recording the tick's deadline failed; the next tick will")
