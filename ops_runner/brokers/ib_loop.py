"""A private asyncio event loop in a daemon thread, for a client that must own its loop.

The IB clients are asyncio libraries; the workbook calls brokers synchronously, from plain
processes and from Jupyter kernels whose main thread already runs a loop. So the client lives
on a loop created inside its own thread, and callers block on ``run`` with a timeout. Nothing
here patches asyncio (no nest_asyncio): the caller's loop, if any, is never touched.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


class LoopThread:
    """One daemon thread running one event loop until ``stop``."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The running loop (started on first use)."""
        self.start()
        if self._loop is None:  # pragma: no cover - start() always sets it
            raise RuntimeError(f"{self._name}: the event loop did not start")
        return self._loop

    def start(self) -> None:
        """Start the thread and its loop if not running yet (idempotent)."""
        with self._lock:
            if self._thread is not None and self._thread.is_alive():
                return
            ready = threading.Event()
            holder: dict[str, asyncio.AbstractEventLoop] = {}

            def main() -> None:
                loop = asyncio.new_event_loop()
                asyncio.set_event_loop(loop)  # the clients ask the policy for "the" loop
                holder["loop"] = loop
                ready.set()
                try:
                    loop.run_forever()
                finally:
                    loop.close()

            thread = threading.Thread(target=main, name=self._name, daemon=True)
            thread.start()
            ready.wait()
            self._loop, self._thread = holder["loop"], thread

    def in_loop_thread(self) -> bool:
        return self._thread is not None and threading.current_thread() is self._thread

    def run(self, make: Callable[[], Coroutine[Any, Any, T]], timeout: float) -> T:
        """Run the coroutine ``make()`` on the loop and return its result.

        Raises whatever the coroutine raises, TimeoutError after ``timeout`` seconds (the
        coroutine is then cancelled), RuntimeError when called from the loop's own thread.
        """
        if self.in_loop_thread():
            raise RuntimeError(f"{self._name}: a blocking call from inside its own loop")
        loop = self.loop
        future = asyncio.run_coroutine_threadsafe(make(), loop)
        try:
            return future.result(timeout)
        except TimeoutError:
            future.cancel()
            raise

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the loop and join the thread (idempotent)."""
        with self._lock:
            loop, thread = self._loop, self._thread
            self._loop = self._thread = None
        if loop is None or thread is None:
            return
        if thread.is_alive():
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout)
