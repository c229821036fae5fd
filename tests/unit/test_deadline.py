"""The tick's own deadline: a watchdog that kills, waits a grace, records and ends the process."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from ops_runner.core.deadline import EXIT_CODE, TickDeadline
from ops_runner.runtime.notebooks import SOCKET_PATH_LIMIT, compute_socket_base


class Calls:
    """What the watchdog did, in order, with an event per call for the test to wait on."""

    def __init__(self) -> None:
        self.seen: list[str] = []
        self.exited = threading.Event()

    def kill(self) -> None:
        self.seen.append("kill")

    def expire(self) -> None:
        self.seen.append("expire")

    def exit(self, code: int) -> None:
        self.seen.append(f"exit {code}")
        self.exited.set()


def test_deadline_when_the_tick_returns_in_time_does_nothing():
    calls = Calls()
    with TickDeadline(0.5, kill=calls.kill, expire=calls.expire, exit=calls.exit) as watch:
        assert 0 < watch.remaining() <= 0.5
    time.sleep(0.8)
    assert calls.seen == [] and not watch.passed.is_set()


def test_deadline_when_the_tick_stays_stuck_kills_records_and_exits_with_its_code():
    calls = Calls()
    stuck = TickDeadline(0.2, kill=calls.kill, expire=calls.expire, exit=calls.exit, grace=0.2)
    with stuck:
        assert calls.exited.wait(10)  # the "tick" never returns while the watchdog runs
    assert calls.seen == ["kill", "expire", f"exit {EXIT_CODE}"]
    assert stuck.passed.is_set() and stuck.remaining() < 0


def test_deadline_when_the_tick_returns_inside_the_grace_neither_records_nor_exits():
    calls = Calls()
    watch = TickDeadline(0.2, kill=calls.kill, expire=calls.expire, exit=calls.exit, grace=5)
    with watch:
        while not watch.passed.is_set():
            time.sleep(0.02)
        # the kill ended what the tick waited on: it records the failure itself and returns
    time.sleep(0.3)
    assert calls.seen == ["kill"]


def test_deadline_when_recording_hangs_too_still_exits():
    calls = Calls()

    def expire_hangs() -> None:
        threading.Event().wait()

    watch = TickDeadline(
        0.1, kill=calls.kill, expire=expire_hangs, exit=calls.exit, grace=0.1, expire_seconds=0.3
    )
    with watch:
        assert calls.exited.wait(10)
    assert calls.seen == ["kill", f"exit {EXIT_CODE}"]


def test_deadline_when_kill_and_expire_raise_still_exits():
    calls = Calls()

    def boom() -> None:
        raise RuntimeError("boom")

    with TickDeadline(0.1, kill=boom, expire=boom, exit=calls.exit, grace=0.1):
        assert calls.exited.wait(10)
    assert calls.seen == [f"exit {EXIT_CODE}"]


@pytest.mark.parametrize(
    ("runtime", "fits"),
    [
        ("/root/.local/share/jupyter/runtime", True),
        ("/run/user/1000/jupyter", True),
        # the folder of the scheduler-template test that hung on 2026-12-06
        (
            "/tmp/pytest-of-root/pytest-0/test_crontab_command_when_run_1/.local/share/jupyter/"
            "runtime",
            False,
        ),
        ("/home/" + "a" * 60 + "/.local/share/jupyter/runtime", False),
    ],
)
def test_compute_socket_base_when_the_runtime_folder_is_deep_refuses_it(runtime, fits):
    name = "opsr-0123456789ab-ipc"
    base = compute_socket_base(Path(runtime), name)
    assert (base is not None) is fits


def _folder_of_length(root: Path, length: int) -> Path:
    """A real folder under ``root`` whose path is ``length`` bytes long."""
    folder = root / ("f" * (length - len(str(root)) - 1))
    folder.mkdir(parents=True, exist_ok=True)
    assert len(str(folder)) == length
    return folder


def test_compute_socket_base_when_accepted_every_channel_socket_binds(tmp_path):
    import socket

    name = "opsr-0123456789ab-ipc"
    root = Path("/tmp") / f"sock-{tmp_path.name[-8:]}"
    try:
        # the deepest folder accepted, and the next one up
        deepest = SOCKET_PATH_LIMIT - len(name) - 1 - 3
        accepted = compute_socket_base(_folder_of_length(root, deepest), name)
        assert accepted is not None
        assert compute_socket_base(_folder_of_length(root, deepest + 1), name) is None
        for channel in range(1, 6):  # what jupyter_client binds: "<base>-<channel>"
            with socket.socket(socket.AF_UNIX) as sock:
                sock.bind(f"{accepted}-{channel}")
        # the kernel's failure, for real: a path past the OS's limit cannot be bound
        too_deep = _folder_of_length(root, 105) / name
        with socket.socket(socket.AF_UNIX) as sock, pytest.raises(OSError):
            sock.bind(f"{too_deep}-5")
    finally:
        import shutil

        shutil.rmtree(root, ignore_errors=True)
