"""No tick outlives its deadline, and a run whose process died is recorded as failed, once.

The tick runs as the scheduler runs it (the CLI in its own process); ``OPS_RUNNER_FAULT``
makes it hang or die right after a job's JobStarted, before its kernel starts: the place the
2026-12-06 tick hung for good, in a zmq ``term()`` no kernel kill could end.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml
from conftest import make_sample_workbook

from ops_runner.core.deadline import EXIT_CODE
from ops_runner.core.events import EventKind, State
from ops_runner.ledger import open_ledger
from ops_runner.ledger.states import read_state
from ops_runner.ops.checks import approve_baseline
from ops_runner.ops.schedule import Job, Slot
from ops_runner.ops.tick import ORPHANED, run_slot
from ops_runner.ops.ticklock import hold_tick_lock
from ops_runner.workbook.config import Config, load_config

EXE = Path(sys.executable).with_name("ops-runner")
# Friday 2025-11-28 after the early close and the decision delay: data QA is due.
QA_DUE = "2025-11-28T21:30:00Z"


def with_schedule(root: Path, **values: float) -> Config:
    config = root / "config.yaml"
    raw = yaml.safe_load(config.read_text(encoding="utf-8"))
    raw["schedule"].update(values)
    config.write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
    return load_config(root)


@pytest.fixture
def workbook(tmp_path: Path) -> Path:
    root = make_sample_workbook(tmp_path / "wb")
    # only the jobs under test: no weekly audit or investigation notebooks after them
    cfg = with_schedule(root, weekly_audit=False, investigate_incidents=False)
    approve_baseline(cfg, "the sample workbook as made")  # so the checks leave it in RUN
    return root


def tick(workbook: Path, fault: str = "", timeout: float = 180) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "OPS_RUNNER_FAULT"}
    if fault:
        env["OPS_RUNNER_FAULT"] = fault
    return subprocess.run(
        [str(EXE), "--workbook", str(workbook), "tick", "--now", QA_DUE],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


def events_of(cfg: Config, kind: EventKind) -> list:
    with open_ledger(cfg) as ledger:
        return list(ledger.events(kind=str(kind)))


@pytest.mark.subprocess
@pytest.mark.slow
def test_tick_when_stuck_past_its_deadline_stops_with_the_run_recorded_as_failed(workbook):
    cfg = with_schedule(workbook, tick_deadline_minutes=0.25, notebook_deadline_minutes=0.05)
    began = time.monotonic()
    stuck = tick(workbook, fault="hang@job:started")
    took = time.monotonic() - began
    assert stuck.returncode == EXIT_CODE, stuck.stdout + stuck.stderr
    # 15 s deadline + a grace of a quarter of it; the rest is start-up (the bound is generous)
    assert took < 15 + 3.75 + 40
    lines = [line for line in stuck.stderr.splitlines() if line.startswith("ops-runner:")]
    assert len(lines) == 1 and "deadline of 15 s" in lines[0], stuck.stderr
    assert "Traceback" not in stuck.stderr
    (started,) = events_of(cfg, EventKind.JOB_STARTED)
    (failed,) = events_of(cfg, EventKind.JOB_FAILED)
    assert failed.run_id == started.run_id and failed.payload["slot"] == "data_qa:2025-11"
    assert "tick's deadline of 0.25 min passed" in failed.payload["error"]
    (incident,) = [  # beside it: the sample workbook's missing baseline, found before
        e for e in events_of(cfg, EventKind.INCIDENT_OPENED) if started.run_id in str(e.payload)
    ]
    assert "deadline" in incident.payload["summary"]
    with open_ledger(cfg) as ledger:
        assert read_state(ledger).state is State.SAFE_MODE
        head = ledger.head()
    with hold_tick_lock(cfg) as held:
        assert held  # the OS released the lock with the process
    # The next tick is not busy, records the failure no second time and runs nothing held.
    with_schedule(workbook, tick_deadline_minutes=40, notebook_deadline_minutes=20)
    again = tick(workbook)
    assert again.returncode == 0 and again.stdout.startswith("state SAFE_MODE"), again.stderr
    assert len(events_of(cfg, EventKind.JOB_FAILED)) == 1
    jobs = [e.payload["job"] for e in events_of(cfg, EventKind.JOB_STARTED)]
    assert jobs.count("data_qa") == 1  # held: not retried before an approval
    with open_ledger(cfg) as ledger:
        assert ledger.verify().ok and ledger.head()[0] >= head[0]


@pytest.mark.subprocess
@pytest.mark.slow
def test_tick_when_killed_inside_a_run_the_next_tick_records_it_failed_once(workbook):
    cfg = load_config(workbook)
    killed = tick(workbook, fault="crash@job:started")
    assert killed.returncode == -9, killed.stdout + killed.stderr
    (started,) = events_of(cfg, EventKind.JOB_STARTED)
    assert events_of(cfg, EventKind.JOB_FAILED) == []
    with open_ledger(cfg) as ledger:
        assert read_state(ledger).state is State.RUN  # nothing knew yet
    after = tick(workbook)
    assert after.returncode == 0 and after.stdout.startswith("state SAFE_MODE"), after.stderr
    (failed,) = events_of(cfg, EventKind.JOB_FAILED)
    assert failed.run_id == started.run_id and failed.payload["error"] == ORPHANED
    # the crashed run's slot is held until an approval; a third tick adds nothing
    with open_ledger(cfg) as ledger:
        head = ledger.head()
    assert tick(workbook).returncode == 0
    with open_ledger(cfg) as ledger:
        assert ledger.head() == head


def test_run_slot_when_the_tick_has_less_left_than_a_notebook_may_take_waits(workbook):
    cfg = load_config(workbook)  # notebook deadline 20 min
    at = datetime(2025, 11, 28, 21, 30, tzinfo=UTC)
    session = at.date()
    slot = Slot(Job.DATA_QA, "data_qa:2025-11", session, "2025-11", at, at)
    with open_ledger(cfg) as ledger:
        ok, line = run_slot(cfg, ledger, None, slot, at, True, remaining=lambda: 19 * 60.0)
        assert ok and "waiting" in line and "deadline" in line
        assert list(ledger.events(kind=str(EventKind.JOB_STARTED))) == []


@pytest.mark.parametrize(("tick_minutes", "ok"), [(20, False), (10, False), (20.5, True)])
def test_config_when_the_tick_deadline_is_not_above_the_notebooks_refuses_it(
    workbook, tick_minutes, ok
):
    from ops_runner.core.errors import ConfigError

    if ok:
        with_schedule(workbook, tick_deadline_minutes=tick_minutes)
        return
    with pytest.raises(ConfigError, match="schedule.tick_deadline_minutes"):
        with_schedule(workbook, tick_deadline_minutes=tick_minutes)
