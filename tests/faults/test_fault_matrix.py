"""The runbook's failures as one table of scenarios (issue 15, "the fault matrix").

Every scenario starts from one world: October 2025 is a real simulated cycle (the account holds
1,358 VEU) and November's decision (100% AGG: sell the VEU, buy 844 AGG at the 2025-12-01 open)
is due or taken. A fault strikes the November cycle at a named point; the operator does what
the runbook says (approve a return to RUN inside the window, clear a broker fault, make the
disk writable again); the ticks run on. Every scenario then asserts, from the raw SQLite rows
and the simulated broker's own books rather than the code under test:

- the final state is the runbook's (RUN when the cycle could finish, SAFE_MODE when the account
  ended short of its plan, HALT when the ledger cannot be trusted);
- the broker holds at most one order per client reference (nothing traded twice);
- every execution the broker reports is recorded once in the ledger (no fill lost or doubled);
- the ledger verifies; and two more ticks change nothing (the ticks converge).

The table of outcomes is printed at the end of the run (scenarios, passed, double orders, lost
fills, wrong final states).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml
from conftest import make_decided_november, make_undecided_november, read_only

from ops_runner.brokers import open_broker
from ops_runner.core.errors import OpsError
from ops_runner.ledger import LEDGER_FILE, open_ledger
from ops_runner.ledger.approvals import Action, approve, resume
from ops_runner.market.integrity import check_integrity
from ops_runner.ops.checks import approve_baseline
from ops_runner.ops.tick import tick
from ops_runner.runtime.notebooks import IN_PROCESS_ENV
from ops_runner.workbook.config import Config, load_config

EXE = Path(sys.executable).with_name("ops-runner")
KEY = "0123456789abcdef" * 4
SESSION = "2025-12-01"  # November's orders go to this open
DECIDE, EXECUTE, APPROVE, RETRY = "2025-11-28T21:30:00Z", "2025-12-01T13:30:00Z", \
    "2025-12-01T13:40:00Z", "2025-12-01T13:45:00Z"  # fmt: skip
RECONCILE, SETTLED = "2025-12-01T15:10:00Z", "2025-12-01T16:30:00Z"


def at(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)


# --- the world --------------------------------------------------------------------------------


@dataclass
class World:
    """One scenario's private workbook, and the operator's and the scheduler's hands on it."""

    cfg: Config
    notes: list[str] = field(default_factory=list)

    @property
    def root(self) -> Path:
        return self.cfg.workbook

    def tick(self, when: str, fault: str = "") -> str:
        """A tick in this process (its kernels inherit ``fault``); returns its line."""
        saved = os.environ.pop("OPS_RUNNER_FAULT", None)
        if fault:
            os.environ["OPS_RUNNER_FAULT"] = fault
        try:
            line = tick(load_config(self.root), now=at(when)).message
        except OpsError as exc:  # what the CLI prints in one line
            line = f"refused: {exc}"
        finally:
            os.environ.pop("OPS_RUNNER_FAULT", None)
            if saved is not None:
                os.environ["OPS_RUNNER_FAULT"] = saved
        self.notes.append(f"{when} {line}")
        return line

    def cli(self, *args: str, fault: str = "", wait: bool = True):
        env = {k: v for k, v in os.environ.items() if k != "OPS_RUNNER_FAULT"}
        env["OPS_RUNNER_APPROVAL_KEY"] = KEY
        if fault:
            env["OPS_RUNNER_FAULT"] = fault
        argv = [str(EXE), "--workbook", str(self.root), *args]
        if not wait:
            return subprocess.Popen(argv, env=env, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, text=True)  # fmt: skip
        return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=600)

    def leave_safe_mode(self, when: str) -> None:
        token = approve(self.cfg, Action.EXIT_SAFE_MODE, "reviewed", now=at(when))
        resume(self.cfg, token, now=at(when), integrity=check_integrity)

    def set_faults(self, **faults: object) -> None:
        """Set the broker's faults, on a venue that takes a second order under a reference it
        holds (as IB does with an orderRef): a double send shows as two orders."""
        config = self.root / "config.yaml"
        raw = yaml.safe_load(config.read_text(encoding="utf-8"))
        raw["broker"]["sim_faults"] = {**faults, "accepts_duplicate_refs": True}
        config.write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
        self.cfg = load_config(self.root)

    def book(self) -> dict:
        """The simulated broker's books, brought up to ``SETTLED`` (fills at the open)."""
        broker = open_broker(self.cfg, clock=lambda: at(SETTLED), role="readonly")
        broker.connect()
        broker.executions()
        broker.close()
        return json.loads((self.cfg.path("broker") / "sim.json").read_text(encoding="utf-8"))

    def rows(self) -> list[tuple[int, str, str, dict]]:
        """The ledger's raw rows: (seq, kind, key, payload), straight from SQLite."""
        path = self.cfg.path("ledger") / LEDGER_FILE
        connection = sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True)
        try:
            found = connection.execute("SELECT seq, kind, key, payload FROM events ORDER BY seq")
            return [(s, k, key, json.loads(p)) for s, k, key, p in found]
        finally:
            connection.close()


@pytest.fixture(scope="module", autouse=True)
def approval_key() -> Iterator[None]:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("OPS_RUNNER_APPROVAL_KEY", KEY)
        yield


@pytest.fixture(scope="module")
def decided(tmp_path_factory) -> Path:
    return make_decided_november(tmp_path_factory.mktemp("matrix-decided") / "wb")


@pytest.fixture(scope="module")
def undecided(tmp_path_factory) -> Path:
    return make_undecided_november(tmp_path_factory.mktemp("matrix-undecided") / "wb")


def copy_world(source: Path, target: Path) -> World:
    shutil.copytree(source, target)
    world = World(load_config(target))
    world.set_faults()
    approve_baseline(world.cfg, "the matrix's broker: a venue that takes duplicate references")
    return world


# --- the invariants, from raw rows and the broker's books --------------------------------------


@dataclass(frozen=True)
class Outcome:
    scenario: str
    passed: bool
    double_orders: int
    lost_fills: int
    doubled_fills: int
    wrong_state: bool
    detail: str


OUTCOMES: list[Outcome] = []


def final_state(world: World) -> str:
    """HALT when the ledger does not verify (the runbook's state for a ledger it cannot trust),
    else the last StateChanged's "to" in the raw rows (RUN when there is none)."""
    with open_ledger(world.cfg, readonly=True) as ledger:
        try:
            ledger.require_anchored(world.cfg.path("anchor"))
        except OpsError:
            return "HALT"
        if not ledger.verify().ok:
            return "HALT"
    states = [p["to"] for _, kind, _, p in world.rows() if kind == "StateChanged"]
    return states[-1] if states else "RUN"


def judge(world: World, name: str, expected: str) -> Outcome:
    book = world.book()
    refs = Counter(o["client_ref"] for o in book["orders"] if o["client_ref"].startswith("mr:"))
    double = sum(1 for n in refs.values() if n > 1)
    at_broker = {e["exec_id"] for e in book["executions"]}
    state = final_state(world)
    lost = doubled = 0
    if state != "HALT" or expected != "HALT":  # a cut ledger is not read for fills
        recorded = Counter(p["exec_id"] for _, kind, key, p in world.rows()
                           if kind == "FillRecorded"
                           and not key.endswith(":commission"))  # fmt: skip
        lost = len(at_broker - set(recorded))
        doubled = sum(1 for n in recorded.values() if n > 1)
    # convergence: a tick after all that, then another that must write nothing
    world.tick(SETTLED)
    before = world.rows()
    world.tick(SETTLED)
    converged = world.rows() == before
    wrong = state != expected
    detail = f"state {state} (want {expected})" + ("" if converged else "; ticks do not converge")
    passed = not (double or lost or doubled or wrong) and converged
    outcome = Outcome(name, passed, double, lost, doubled, wrong, detail)
    OUTCOMES.append(outcome)
    return outcome


def require(outcome: Outcome, world: World) -> None:
    assert outcome.passed, f"{outcome}\n" + "\n".join(world.notes)


# --- the scenarios ------------------------------------------------------------------------------


def recover_in_process(monkeypatch: pytest.MonkeyPatch) -> None:
    """A kernel's death is what these tests are about, so the job that dies runs in a kernel.
    The runbook's recovery after it runs its jobs' cells in this process, as the tick's tests
    do: every job's notebook runs in a kernel in tests/notebooks/."""
    monkeypatch.setenv(IN_PROCESS_ENV, "1")


def finish_after_approval(world: World) -> None:
    """The runbook after a failed or crashed execution: approve inside the window, the tick
    sends what is unsent (adopting what the broker has), then reconciliation after the open."""
    world.leave_safe_mode(APPROVE)
    world.tick(RETRY)
    world.tick(RECONCILE)


KERNEL_CRASHES = ["after_intents", "before_place", "after_place", "after_record"]


@pytest.mark.parametrize("point", KERNEL_CRASHES)
@pytest.mark.notebook
def test_execution_kernel_dies_at_a_boundary(decided, tmp_path, point, monkeypatch):
    world = copy_world(decided, tmp_path / "wb")
    line = world.tick(EXECUTE, fault=f"crash@submission:{point}")
    assert "execution:2025-11 FAILED" in line and "kernel died" in line, line
    recover_in_process(monkeypatch)
    finish_after_approval(world)
    require(judge(world, f"execution kernel dies {point.replace('_', ' ')}", "RUN"), world)


@pytest.mark.parametrize("point", ["after_snapshot", "after_record"])
@pytest.mark.notebook
def test_decision_kernel_dies_at_a_boundary(undecided, tmp_path, point, monkeypatch):
    world = copy_world(undecided, tmp_path / "wb")
    line = world.tick(DECIDE, fault=f"crash@decision:{point}")
    assert "decision:2025-11 FAILED" in line, line
    recover_in_process(monkeypatch)
    world.leave_safe_mode("2025-11-28T21:40:00Z")
    assert "decision:2025-11" in world.tick("2025-11-28T21:45:00Z")
    world.tick(EXECUTE)
    world.tick(RECONCILE)
    decisions = [p for _, kind, _, p in world.rows() if kind == "DecisionRecorded"
                 and p["cycle_id"] == "2025-11"]  # fmt: skip
    assert len(decisions) == 1  # decided once, whatever the crash left
    require(judge(world, f"decision kernel dies {point.replace('_', ' ')}", "RUN"), world)


@pytest.mark.notebook
def test_reconciliation_kernel_dies_after_recording_fills(decided, tmp_path, monkeypatch):
    world = copy_world(decided, tmp_path / "wb")
    monkeypatch.setenv(IN_PROCESS_ENV, "1")  # the execution before it is not the subject
    world.tick(EXECUTE)
    monkeypatch.delenv(IN_PROCESS_ENV)
    line = world.tick(RECONCILE, fault="crash@reconciliation:after_fills")
    assert "reconciliation:2025-11 FAILED" in line, line
    recover_in_process(monkeypatch)
    world.leave_safe_mode("2025-12-01T15:20:00Z")
    assert "reconciliation:2025-11 CLEAN" in world.tick("2025-12-01T15:25:00Z")
    require(judge(world, "reconciliation kernel dies after fills", "RUN"), world)


@pytest.mark.slow  # 1.5 s or more: left out of make test-fast
@pytest.mark.subprocess
def test_the_tick_process_dies_before_the_kernel_starts(decided, tmp_path):
    world = copy_world(decided, tmp_path / "wb")
    died = world.cli("tick", "--now", EXECUTE, fault="crash@job:started")
    assert died.returncode == -signal.SIGKILL, died.stderr
    line = world.tick("2025-12-01T13:35:00Z")  # records the run that never ended: unknown
    assert line.startswith("state SAFE_MODE"), line
    finish_after_approval(world)
    require(judge(world, "tick process dies after JobStarted", "RUN"), world)


@pytest.mark.slow  # 1.5 s or more: left out of make test-fast
@pytest.mark.subprocess
def test_the_tick_process_dies_after_the_notebook_was_registered(decided, tmp_path):
    world = copy_world(decided, tmp_path / "wb")
    died = world.cli("tick", "--now", EXECUTE, fault="crash@job:before_completed")
    assert died.returncode == -signal.SIGKILL, died.stderr
    # the notebook completed and is registered; only the tick's judgement of it was lost:
    # the next tick runs the job again, which finds every order at the broker
    line = world.tick("2025-12-01T13:35:00Z")
    assert line == "state RUN; ran execution:2025-11 SUBMITTED", line
    world.tick(RECONCILE)
    require(judge(world, "tick process dies before JobCompleted", "RUN"), world)


@pytest.mark.slow  # 1.5 s or more: left out of make test-fast
@pytest.mark.subprocess
def test_the_backup_dies_after_writing_its_archive(decided, tmp_path):
    world = copy_world(decided, tmp_path / "wb")
    config = world.root / "config.yaml"
    raw = yaml.safe_load(config.read_text(encoding="utf-8"))
    raw["schedule"]["weekly_backup"] = True  # Friday 2025-11-28 is the week's last session
    config.write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
    world.cfg = load_config(world.root)
    died = world.cli("tick", "--now", "2025-11-28T22:00:00Z", fault="crash@backup:after_archive")
    assert died.returncode == -signal.SIGKILL, died.stderr
    assert "backup:2025-11-28 archived" in world.tick("2025-11-28T22:05:00Z")
    recorded = [p for _, kind, _, p in world.rows() if kind == "BackupRecorded"]
    assert len(recorded) == 1, recorded  # the unrecorded archive is not taken for a backup
    checked = world.cli("backup", "verify", str(world.root / recorded[0]["archive"]))
    assert checked.returncode == 0, checked.stderr
    world.tick(EXECUTE)
    world.tick(RECONCILE)
    require(judge(world, "the backup dies after writing its archive", "RUN"), world)


def _descendants(pid: int) -> list[int]:
    found, todo = [], [pid]
    while todo:
        parent = todo.pop()
        for task in Path(f"/proc/{parent}/task").glob("*"):
            try:
                children = [int(c) for c in (task / "children").read_text().split()]
            except OSError:
                continue
            found += children
            todo += children
    return found


@pytest.mark.notebook
def test_power_loss_kills_the_tick_and_its_kernel_after_a_place(decided, tmp_path, monkeypatch):
    world = copy_world(decided, tmp_path / "wb")
    running = world.cli("tick", "--now", EXECUTE, fault="hang@submission:after_place", wait=False)
    books = world.cfg.path("broker") / "sim.json"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:  # until the SELL is at the broker
        orders = json.loads(books.read_text(encoding="utf-8"))["orders"]
        if any(o["client_ref"].startswith("mr:2025-11:") for o in orders):
            break
        time.sleep(0.2)
    else:
        running.kill()
        pytest.fail("the SELL never reached the broker")
    for pid in [running.pid, *_descendants(running.pid)]:  # everything at once
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    running.communicate(timeout=30)
    recover_in_process(monkeypatch)
    line = world.tick("2025-12-01T13:35:00Z")
    assert line.startswith("state SAFE_MODE"), line
    finish_after_approval(world)
    require(judge(world, "power loss after a place (tick and kernel)", "RUN"), world)


@pytest.mark.slow  # two tick processes
@pytest.mark.subprocess
def test_two_ticks_at_once_send_each_order_once(decided, tmp_path):
    world = copy_world(decided, tmp_path / "wb")
    first = world.cli("tick", "--now", EXECUTE, wait=False)
    second = world.cli("tick", "--now", EXECUTE, wait=False)
    outs = [p.communicate(timeout=300) for p in (first, second)]
    assert [p.returncode for p in (first, second)] == [0, 0], outs
    manual = world.cli("run", "execution", "--cycle", "2025-11", "--now", "2025-12-01T13:31:00Z")
    assert manual.returncode == 0, manual.stderr  # a repeat by hand: nothing sent twice
    world.tick(RECONCILE)
    require(judge(world, "two ticks and a manual run at once", "RUN"), world)


BROKER_FAULTS = [
    # (name, sim faults during the first execution tick, expected final state)
    ("broker refuses the connection", {"refuse_connection": True}, "RUN"),
    ("broker drops after each place", {"disconnect_at": "after_place"}, "RUN"),
    ("broker drops before the place", {"disconnect_at": "before_place"}, "RUN"),
    ("broker loses the acknowledgement", {"lost_ack": ["VEU", "AGG"]}, "RUN"),
    ("broker opens 45 minutes late", {"delayed_open_minutes": 45}, "RUN"),
    ("broker reports executions twice", {"duplicate_executions": True}, "RUN"),
    ("broker fills half the BUY", {"partial": {"AGG": 0.5}}, "SAFE_MODE"),
    ("broker never fills the BUY", {"no_fill": ["AGG"]}, "SAFE_MODE"),
    ("broker rejects the BUY", {"reject": {"AGG": "201 Order rejected - no margin"}}, "SAFE_MODE"),
]


@pytest.mark.slow  # 1.5 s or more: left out of make test-fast
@pytest.mark.parametrize(("name", "faults", "expected"), BROKER_FAULTS,
                         ids=[f[0] for f in BROKER_FAULTS])  # fmt: skip
def test_the_broker_misbehaves(decided, tmp_path, name, faults, expected):
    world = copy_world(decided, tmp_path / "wb")
    world.set_faults(**faults)
    world.tick(EXECUTE)
    if "delayed_open_minutes" not in faults and not expected == "SAFE_MODE":
        world.set_faults()  # the broker is back; the session faults are over
    if final_state(world) == "SAFE_MODE":
        world.leave_safe_mode(APPROVE)
    world.tick(RETRY)
    world.tick(RECONCILE)
    world.tick("2025-12-01T15:30:00Z")  # a late open fills by now
    require(judge(world, name, expected), world)


@pytest.mark.slow  # 1.5 s or more: left out of make test-fast
def test_the_disk_fills_mid_write(decided, tmp_path):
    world = copy_world(decided, tmp_path / "wb")
    line = world.tick(EXECUTE, fault="enospc@write:heartbeat.json")
    assert line.startswith("refused:") and "No space left" in line, line
    assert not [o for o in world.book()["orders"] if o["client_ref"].startswith("mr:2025-11")]
    world.tick("2025-12-01T13:35:00Z")
    world.tick(RECONCILE)
    require(judge(world, "the disk fills mid-write", "RUN"), world)


@pytest.mark.slow  # 1.5 s or more: left out of make test-fast
@pytest.mark.subprocess
def test_the_workbook_is_read_only_for_a_tick(decided, tmp_path):
    world = copy_world(decided, tmp_path / "wb")
    with read_only(world.root):
        refused = world.cli("tick", "--now", EXECUTE)
    assert refused.returncode != 0 and "Traceback" not in refused.stderr, refused.stderr
    world.tick("2025-12-01T13:35:00Z")
    world.tick(RECONCILE)
    require(judge(world, "a read-only workbook", "RUN"), world)


@pytest.mark.slow  # 1.5 s or more: left out of make test-fast
def test_the_clock_jumps_back_and_forth(decided, tmp_path):
    world = copy_world(decided, tmp_path / "wb")
    world.tick(EXECUTE)
    world.tick("2025-11-28T22:00:00Z")  # three days back
    world.tick("2025-12-01T13:32:00Z")
    world.tick(RECONCILE)
    world.tick("2025-12-01T13:50:00Z")  # back into the window after the open
    require(judge(world, "the clock jumps back and forth", "RUN"), world)


@pytest.mark.slow  # 1.5 s or more: left out of make test-fast
@pytest.mark.subprocess
def test_the_ledger_is_cut_at_its_tail(decided, tmp_path):
    world = copy_world(decided, tmp_path / "wb")
    saved = tmp_path / "before.sqlite"
    with open_ledger(world.cfg) as ledger:  # a copy of the file as it was before the orders
        ledger.conn.execute(f"VACUUM INTO '{saved}'")
    world.tick(EXECUTE)
    live = world.cfg.path("ledger") / LEDGER_FILE
    for extra in ("-wal", "-shm"):
        Path(f"{live}{extra}").unlink(missing_ok=True)
    shutil.copyfile(saved, live)  # the tail (plan, intents, orders) is gone
    cut = world.cli("tick", "--now", RECONCILE)
    assert cut.returncode == 3 and "tail truncated" in cut.stderr, cut.stdout + cut.stderr
    status = world.cli("status", "--json")
    assert json.loads(status.stdout)["state"] == "HALT"
    require(judge(world, "the ledger is cut at its tail", "HALT"), world)


# --- the table -------------------------------------------------------------------------------


def test_the_matrix_table(capsys):
    """Print the table of every scenario run in this session; nothing doubled, lost or wrong."""
    if not OUTCOMES:
        pytest.skip("no scenario ran (selected alone)")
    width = max(len(o.scenario) for o in OUTCOMES)
    lines = [f"{'scenario':<{width}}  passed  double orders  lost fills  wrong final state"]
    for o in OUTCOMES:
        lines.append(f"{o.scenario:<{width}}  {'yes' if o.passed else 'NO':<6}  "
                     f"{o.double_orders:>13}  {o.lost_fills + o.doubled_fills:>10}  "
                     f"{'yes' if o.wrong_state else 'no':>17}")  # fmt: skip
    totals = (sum(o.passed for o in OUTCOMES), sum(o.double_orders for o in OUTCOMES),
              sum(o.lost_fills + o.doubled_fills for o in OUTCOMES),
              sum(o.wrong_state for o in OUTCOMES))  # fmt: skip
    lines.append(f"{len(OUTCOMES)} scenarios: {totals[0]} passed, {totals[1]} double orders, "
                 f"{totals[2]} lost fills, {totals[3]} wrong final states")  # fmt: skip
    with capsys.disabled():  # the table goes to the terminal, whatever the capture
        print("\n" + "\n".join(lines))
    assert totals == (len(OUTCOMES), 0, 0, 0), "\n".join(lines)
