"""A read-only or full workbook: every command says so in one line, and trading still stops.

Read-only is made for real: ``chattr +i`` on every folder as root (root ignores permission
bits), ``chmod`` otherwise; the test skips where neither can be done. A disk that fills is
played by ``OPS_RUNNER_FAULT=enospc@write:<file>`` (the write fails half-way with ENOSPC), and
for real on a 1 MB tmpfs where this machine lets the test mount one.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import copy_of_built, make_sample_workbook, read_only

from ops_runner.core.events import EventKind, State
from ops_runner.ledger import open_ledger
from ops_runner.ledger.states import read_state
from ops_runner.workbook.config import load_config

EXE = Path(sys.executable).with_name("ops-runner")
IDLE = "2025-11-26T15:00:00Z"  # Wednesday 10:00 New York: nothing is due


def cli(workbook: Path, *args: str, fault: str = "") -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "OPS_RUNNER_FAULT"}
    if fault:
        env["OPS_RUNNER_FAULT"] = fault
    return subprocess.run([str(EXE), "--workbook", str(workbook), *args], capture_output=True,
                          text=True, timeout=300, env=env)  # fmt: skip


def one_line(done: subprocess.CompletedProcess) -> str:
    assert "Traceback" not in done.stderr, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.startswith("ops-runner:")]
    assert len(lines) == 1, done.stderr
    return lines[0]


def _ticked_once(root: Path) -> Path:
    make_sample_workbook(root)
    assert cli(root, "tick", "--now", IDLE).returncode == 0  # the ledger, ops/ and the lock
    return root


@pytest.fixture
def workbook(tmp_path: Path) -> Path:
    """A sample workbook ticked once by the CLI: built once per test process, copied per test."""
    return copy_of_built("ticked-once", _ticked_once, tmp_path / "wb")


def ledger_head(workbook: Path):
    with open_ledger(load_config(workbook), readonly=True) as ledger:
        return ledger.head()


@pytest.mark.subprocess
@pytest.mark.slow
def test_kill_when_the_whole_workbook_is_read_only_says_trading_is_not_stopped(workbook):
    with read_only(workbook):
        done = cli(workbook, "kill", "--reason", "stop everything")
    assert done.returncode == 1
    line = one_line(done)
    assert "cannot write the kill switch" in line and "trading is NOT stopped" in line
    assert "systemctl stop ops-runner-tick.timer" in line  # what to do instead


@pytest.mark.subprocess
@pytest.mark.slow
def test_kill_when_only_its_folder_is_read_only_records_halt_in_the_ledger(workbook):
    head = ledger_head(workbook)
    with read_only(workbook / "ops"):
        done = cli(workbook, "kill", "--reason", "stop everything")
        assert done.returncode == 1
        line = one_line(done)
        assert "HALT recorded in the ledger instead" in line
        # the tick cannot take its lock: one line, and nothing runs
        stuck = cli(workbook, "tick", "--now", IDLE)
        assert stuck.returncode == 1 and "nothing was run" in one_line(stuck)
    cfg = load_config(workbook)
    with open_ledger(cfg) as ledger:
        assert read_state(ledger).state is State.HALT
        (seen,) = ledger.events(kind=str(EventKind.KILL_SWITCH_SEEN), after_seq=head[0])
        assert "could not be written" in " ".join(seen.payload["evidence"])
    assert not cfg.path("kill_switch").exists()
    after = cli(workbook, "tick", "--now", IDLE)
    assert after.returncode == 0 and after.stdout.startswith("state HALT")


@pytest.mark.parametrize(
    "args",
    [
        ("tick", "--now", IDLE),
        ("backup",),
        ("unkill",),
        ("report", "index"),
        ("run", "data_qa", "--as-of", "2025-11-26", "--now", IDLE),
        ("data", "sample"),
        ("init",),
        ("baseline", "approve", "--reason", "x"),
    ],
    ids=lambda a: " ".join(a[:2]),
)
@pytest.mark.subprocess
@pytest.mark.slow
def test_command_when_the_workbook_is_read_only_fails_in_one_line(workbook, args):
    head = ledger_head(workbook)
    with read_only(workbook):
        done = cli(workbook, *args)
    if done.returncode == 0:  # nothing to write (e.g. unkill with no kill switch): fine
        assert "Traceback" not in done.stderr
    else:
        one_line(done)
    assert ledger_head(workbook) == head


@pytest.mark.parametrize("args", [("status",), ("ledger", "verify"), ("data", "list")])
@pytest.mark.subprocess
@pytest.mark.slow
def test_read_command_when_the_workbook_is_read_only_still_reads(workbook, args):
    with read_only(workbook):
        done = cli(workbook, *args)
    assert "Traceback" not in done.stderr
    assert done.returncode == 0 or len(done.stderr.strip().splitlines()) == 1, done.stderr


@pytest.mark.parametrize(
    ("point", "args", "words"),
    [
        ("write:heartbeat.json", ("tick", "--now", IDLE), "cannot write the heartbeat"),
        ("write:KILL_SWITCH", ("kill", "--reason", "x"), "HALT recorded in the ledger instead"),
    ],
    ids=["tick-heartbeat", "kill-file"],
)
@pytest.mark.subprocess
@pytest.mark.slow
def test_command_when_the_disk_fills_mid_write_fails_in_one_line_and_trades_nothing(
    workbook, point, args, words
):
    done = cli(workbook, *args, fault=f"enospc@{point}")
    assert done.returncode == 1
    line = one_line(done)
    assert words in line and "No space left on device" in line and "free space" in line
    folder = workbook / "ops"
    assert not [p.name for p in folder.iterdir() if p.name.endswith(".tmp")]  # nothing half
    cfg = load_config(workbook)
    with open_ledger(cfg) as ledger:
        assert list(ledger.events(kind=str(EventKind.JOB_STARTED))) == []
        assert list(ledger.events(kind=str(EventKind.ORDER_SUBMITTED))) == []


@pytest.mark.subprocess
@pytest.mark.slow
def test_tick_when_the_disk_is_really_full_fails_in_one_line(tmp_path):
    mount = tmp_path / "small"
    mount.mkdir()
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)],
                          capture_output=True)  # fmt: skip
    if made.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {made.stderr.decode().strip()}")
    try:
        root = mount / "wb"
        assert cli(root, "init", "--template", "demo").returncode == 0
        assert cli(root, "tick", "--now", IDLE).returncode == 0
        filler = mount / "filler"
        with filler.open("wb") as handle, contextlib.suppress(OSError):
            while True:
                handle.write(b"\0" * (1 << 16))
        for args in (("tick", "--now", "2025-11-26T15:05:00Z"), ("kill", "--reason", "x")):
            done = cli(root, *args)
            assert "Traceback" not in done.stderr, done.stderr
            if done.returncode != 0:
                assert "No space left" in one_line(done) or "disk is full" in one_line(done)
    finally:
        subprocess.run(["umount", str(mount)], capture_output=True)
