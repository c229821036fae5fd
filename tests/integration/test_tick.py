"""`ops-runner tick` as a scheduler runs it: lock, corrupt ledger, kill switch, killed ticks."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ops_runner.core.events import EventKind
from ops_runner.ledger import LEDGER_FILE, open_ledger
from ops_runner.ledger.init import init_workbook
from ops_runner.ops.ticklock import hold_tick_lock
from ops_runner.workbook.config import load_config

EXE = Path(sys.executable).with_name("ops-runner")


@pytest.fixture
def workbook(tmp_path) -> Path:
    init_workbook(tmp_path, template="demo")
    return tmp_path


def cli(workbook: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(EXE), "--workbook", str(workbook), *args], capture_output=True, text=True, timeout=120
    )


@pytest.mark.subprocess
@pytest.mark.slow
def test_tick_when_kill_switch_present_halts_once_with_its_reason(workbook):
    assert cli(workbook, "kill", "--reason", "fat finger on the config").returncode == 0
    first = cli(workbook, "tick")
    assert first.returncode == 0 and "HALT" in first.stdout, first.stderr
    cfg = load_config(workbook)
    with open_ledger(cfg) as ledger:
        seen = list(ledger.events(kind=str(EventKind.KILL_SWITCH_SEEN)))
        head = ledger.head()
    assert [e.payload["reason"] for e in seen] == ["fat finger on the config"]
    assert cli(workbook, "tick").returncode == 0
    with open_ledger(cfg) as ledger:
        assert ledger.head() == head  # a second tick with the same file records nothing new
    assert cli(workbook, "unkill").returncode == 0
    still = cli(workbook, "tick")
    assert "HALT" in still.stdout  # removing the file does not leave HALT


@pytest.mark.subprocess
def test_tick_when_another_tick_holds_the_lock_exits_busy(workbook):
    cfg = load_config(workbook)
    with hold_tick_lock(cfg) as held:
        assert held
        done = cli(workbook, "tick")
    assert done.returncode == 0 and "busy" in done.stdout


@pytest.mark.subprocess
@pytest.mark.slow
def test_tick_when_previous_tick_was_killed_takes_the_lock(workbook):
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sys, time; from ops_runner.workbook.config import load_config; "
         "from ops_runner.ops.ticklock import hold_tick_lock\n"
         f"with hold_tick_lock(load_config({str(workbook)!r})) as held:\n"
         "    print(held, flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert holder.stdout.readline().strip() == "True"
    assert "busy" in cli(workbook, "tick").stdout
    holder.send_signal(signal.SIGKILL)
    holder.wait(timeout=10)
    # a simulated instant when no job is open (Wednesday 10:00 New York), so the test does not
    # depend on the time of day it runs at
    done = cli(workbook, "tick", "--now", "2025-11-26T15:00:00Z")
    assert done.returncode == 0 and "state RUN" in done.stdout, done.stdout + done.stderr


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
@pytest.mark.subprocess
def test_tick_when_ledger_corrupt_refuses_with_one_line_and_writes_nothing(workbook, damage):
    path = workbook / "ledger" / LEDGER_FILE
    cfg = load_config(workbook)
    with open_ledger(cfg) as ledger:
        for i in range(200):
            ledger.append("CheckRecorded", f"check-{i}", {"check": "x" * 200, "passed": True})
    # checkpoint the WAL into the main file so the damage hits real pages
    import sqlite3

    con = sqlite3.connect(path)
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    con.close()
    data = path.read_bytes()
    if damage == "garbage":
        path.write_bytes(b"\x00garbage" * 64 + data[512:])
    else:
        path.write_bytes(data[: len(data) // 2])
    before = path.read_bytes()
    done = cli(workbook, "tick")
    assert done.returncode == 3, done.stdout + done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "corrupt" in lines[0] and "HALT" in lines[0]
    assert "Traceback" not in done.stderr
    assert path.read_bytes() == before
    status = cli(workbook, "status")
    assert status.returncode == 0 and "HALT" in status.stdout
    verify = cli(workbook, "ledger", "verify")
    assert verify.returncode == 3 and path.read_bytes() == before


@pytest.mark.subprocess
def test_status_when_run_during_a_writing_tick_reads_without_blocking(workbook):
    import sqlite3

    cfg = load_config(workbook)
    with open_ledger(cfg) as ledger:
        ledger.append("CheckRecorded", "c-1", {"check": "clock", "passed": True})
    writer = sqlite3.connect(workbook / "ledger" / LEDGER_FILE, isolation_level=None)
    writer.execute("BEGIN IMMEDIATE")  # a tick in the middle of its write transaction
    try:
        started = time.monotonic()
        done = cli(workbook, "status", "--json")
        took = time.monotonic() - started
        assert writer.in_transaction
    finally:
        writer.rollback()
        writer.close()
    assert done.returncode == 0, done.stderr
    assert '"state": "RUN"' in done.stdout
    assert took < 20  # it did not wait out the writer (busy timeout 30 s)
