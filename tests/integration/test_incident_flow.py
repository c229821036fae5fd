"""Incidents on a real workbook: faults produced by the tick, opened by hand, snapshot, close."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from conftest import EVE, IDLE, make_workbook

from ops_runner.core.events import EventKind, State
from ops_runner.ledger import open_ledger
from ops_runner.ledger.approvals import require_postmortem
from ops_runner.ledger.states import read_state, write_kill_switch
from ops_runner.ops.checks import approve_baseline
from ops_runner.ops.incident_evidence import Cause, classify, failing_runs
from ops_runner.ops.incidents import (
    IncidentError,
    close_incident,
    list_incidents,
    open_incident,
    snapshot,
)
from ops_runner.ops.tick import tick
from ops_runner.workbook.config import load_config

ACCOUNT = "DU1234567"
NOW = datetime(2025, 11, 26, 22, 0, tzinfo=UTC)


def state_changes(ledger):
    return [e for e in ledger.events(kind=str(EventKind.STATE_CHANGED))]


def test_open_by_hand_when_running_moves_to_safe_mode_once_and_snapshots_the_sim(tmp_path):
    cfg = load_config(make_workbook(tmp_path, **{"broker.account": ACCOUNT}))
    approve_baseline(cfg, "reviewed")
    assert tick(cfg, now=EVE).state is State.RUN
    with open_ledger(cfg) as ledger:
        incident_id = open_incident(cfg, ledger, "fills look odd", "broker", now=NOW)
        assert open_incident(cfg, ledger, "fills look odd", "broker", now=NOW) == incident_id
        assert [e.payload["to"] for e in state_changes(ledger)] == ["SAFE_MODE"]
        shot = snapshot(cfg, ledger, incident_id, now=NOW)
        assert shot.broker.connected and shot.broker.unavailable is None
        assert shot.broker.positions == {} and shot.broker.cash is not None
        assert shot.broker.account == "DU*****67" and shot.config_hash == cfg.hash
        assert shot.code_version["package"] and shot.state.state is State.SAFE_MODE
        assert shot.entries[0]["seq"] == ledger.head()[0]
        close_incident(cfg, ledger, incident_id, "a sim artefact; nothing to do", now=NOW)
        assert list_incidents(ledger) == []
        assert read_state(ledger).state is State.SAFE_MODE  # closing never leaves SAFE_MODE


def test_snapshot_when_broker_refuses_marks_it_unavailable_and_classifies_broker(tmp_path):
    faults = {"refuse_connection": True}
    cfg = load_config(make_workbook(tmp_path, **{"broker.sim_faults": faults,
                                                 "broker.account": ACCOUNT}))  # fmt: skip
    approve_baseline(cfg, "reviewed")
    tick(cfg, now=EVE)
    with open_ledger(cfg) as ledger:
        assert read_state(ledger).state is State.BROKER_DOWN
        incident_id = open_incident(cfg, ledger, "broker gone since the eve", now=NOW)
        assert read_state(ledger).state is State.SAFE_MODE
        incident = list_incidents(ledger)[-1]
        assert incident["incident_id"] == incident_id
        shot = snapshot(cfg, ledger, incident["incident_id"], now=NOW)
        verdict = classify(ledger, incident)
        assert failing_runs(cfg, ledger, incident) == []
    assert not shot.broker.connected and shot.broker.positions is None
    assert shot.broker.unavailable.startswith("unavailable: simulated broker refused")
    assert "unavailable" in shot.positions_frame().to_string()
    assert verdict.cause is Cause.BROKER, verdict.scores
    assert any("check broker failed" in line for line in verdict.lines())


def test_failing_runs_when_data_qa_notebook_failed_links_its_executed_notebook(tmp_path):
    from ops_runner.runtime.notebooks import execute_job

    cfg = load_config(make_workbook(tmp_path))
    run = execute_job(cfg, "data_qa", "2025-11/2025-11-26", {"workbook": str(cfg.workbook),
                      "as_of": "not-a-date"}, slot="data_qa:2025-11-26", session="2025-11-26",
                      cycle="2025-11", at=EVE)  # fmt: skip
    assert run.error
    with open_ledger(cfg) as ledger:
        incident = list_incidents(ledger)[-1]
        runs = failing_runs(cfg, ledger, incident)
        verdict = classify(ledger, incident)
    assert [(r.job, r.run_id, r.outcome, r.exists) for r in runs] == [
        ("data_qa", run.run_id, "failed", True)
    ]
    assert runs[0].path.startswith("ledger/runs/") and runs[0].path.endswith(".ipynb")
    assert verdict.cause is Cause.DATA


def test_close_when_halted_needs_postmortem_and_the_exit_review_must_name_it(tmp_path):
    cfg = load_config(make_workbook(tmp_path))
    approve_baseline(cfg, "reviewed")
    write_kill_switch(cfg, "operator stop")
    tick(cfg, now=IDLE)
    with open_ledger(cfg) as ledger:
        assert read_state(ledger).state is State.HALT
        incident_id = open_incident(cfg, ledger, "kill switch pulled", now=NOW)
        assert read_state(ledger).state is State.HALT  # HALT stays HALT
        with pytest.raises(IncidentError, match="post-mortem"):
            close_incident(cfg, ledger, incident_id, "reviewed the stop")
        closed = close_incident(cfg, ledger, incident_id, "reviewed", postmortem="PM-7", now=NOW)
        assert closed["postmortem"] == "PM-7" and closed["state"] == "HALT"
        require_postmortem(ledger, "PM-7")
        with pytest.raises(IncidentError):
            require_postmortem(ledger, "PM-8")
