"""Leaving SAFE_MODE and HALT with approval tokens, against a real workbook and ledger."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import date
from decimal import Decimal
from pathlib import Path

import pytest

from ops_runner.approvals import Action, ApprovalRefused, approve, resume
from ops_runner.config import init_workbook, load_config
from ops_runner.errors import SecretError
from ops_runner.events import EventKind, State, Trigger
from ops_runner.ledger import open_ledger
from ops_runner.state import apply_trigger, read_state, record_equity_mark

KEY = "0123456789abcdef" * 4
EXE = Path(sys.executable).with_name("ops-runner")


@pytest.fixture
def cfg(tmp_path, monkeypatch):
    monkeypatch.setenv("OPS_RUNNER_APPROVAL_KEY", KEY)
    init_workbook(tmp_path)
    return load_config(tmp_path)


def enter(cfg, trigger: Trigger, reason: str = "test") -> None:
    with open_ledger(cfg) as ledger:
        apply_trigger(ledger, trigger, reason)


def events(cfg, kind: EventKind) -> list:
    with open_ledger(cfg) as ledger:
        return list(ledger.events(kind=str(kind)))


def state(cfg) -> State:
    with open_ledger(cfg) as ledger:
        return read_state(ledger).state


def test_resume_when_integrity_fails_refuses_and_records_nothing(cfg):
    enter(cfg, Trigger.INCIDENT)
    token = approve(cfg, Action.EXIT_SAFE_MODE, "investigated")
    with pytest.raises(ApprovalRefused) as caught:
        resume(cfg, token, integrity=lambda c, ledger: ["data QA: 3 blocking findings"])
    assert caught.value.why == "integrity" and "3 blocking" in str(caught.value)
    assert state(cfg) is State.SAFE_MODE
    assert events(cfg, EventKind.APPROVAL_USED) == []


def test_resume_when_checks_pass_returns_to_run_once(cfg):
    enter(cfg, Trigger.INCIDENT)
    token = approve(cfg, Action.EXIT_SAFE_MODE, "investigated")
    assert resume(cfg, token, integrity=lambda c, ledger: []) is State.RUN
    used = events(cfg, EventKind.APPROVAL_USED)
    assert len(used) == 1 and used[0].payload["action"] == "exit-safe-mode"
    assert KEY not in str([e.payload for e in events(cfg, EventKind.STATE_CHANGED)])
    enter(cfg, Trigger.INCIDENT)  # a new SAFE_MODE episode: the old token must not end it
    with pytest.raises(ApprovalRefused) as caught:
        resume(cfg, token, integrity=lambda c, ledger: [])
    assert caught.value.why == "replayed"
    assert state(cfg) is State.SAFE_MODE


def test_approve_when_state_needs_no_approval_refuses(cfg):
    with pytest.raises(Exception, match="needs no approval"):
        approve(cfg, Action.EXIT_SAFE_MODE, "nothing to do")
    enter(cfg, Trigger.KILL_SWITCH)
    with pytest.raises(Exception, match="exit-halt"):
        approve(cfg, Action.EXIT_SAFE_MODE, "wrong action for HALT")


def test_drawdown_halt_when_reviewed_resumes_to_safe_mode_and_peak_restarts(cfg):
    marks = [("2026-01-30", "100000"), ("2026-02-27", "110000"), ("2026-03-31", "82000")]
    with open_ledger(cfg) as ledger:
        for day, value in marks:
            view = record_equity_mark(ledger, cfg, date.fromisoformat(day), Decimal(value), "sim")
    assert view.drawdown >= Decimal("0.25")
    assert state(cfg) is State.HALT
    token = approve(cfg, Action.EXIT_HALT, "drawdown reviewed", review="PM-2026-03")
    assert resume(cfg, token) is State.SAFE_MODE
    with open_ledger(cfg) as ledger:
        # 80000 is 27% below the old peak but 2.4% below the reviewed baseline (82000).
        view = record_equity_mark(ledger, cfg, date(2026, 4, 30), Decimal("80000"), "sim")
        assert read_state(ledger).state is State.SAFE_MODE
    assert view.peak == Decimal("82000")
    used = events(cfg, EventKind.APPROVAL_USED)
    assert used[0].payload["review"] == "PM-2026-03"


def test_read_approval_key_when_key_file_readable_by_others_refuses(tmp_path, monkeypatch):
    monkeypatch.delenv("OPS_RUNNER_APPROVAL_KEY", raising=False)
    init_workbook(tmp_path)
    config = tmp_path / "config.yaml"
    config.write_text(config.read_text().replace("  file: null", "  file: .secrets"))
    (tmp_path / ".secrets").write_text(f"APPROVAL_KEY={KEY}\n")
    os.chmod(tmp_path / ".secrets", 0o644)
    cfg = load_config(tmp_path)
    enter(cfg, Trigger.INCIDENT)
    with pytest.raises(SecretError, match="chmod 600"):
        approve(cfg, Action.EXIT_SAFE_MODE, "x")
    os.chmod(tmp_path / ".secrets", 0o600)
    assert approve(cfg, Action.EXIT_SAFE_MODE, "x").startswith("opsr1.")


def test_cli_when_kill_then_approve_and_resume_halt_goes_to_safe_mode(cfg, tmp_path):
    env = {**os.environ, "OPS_RUNNER_APPROVAL_KEY": KEY}
    wb = ["--workbook", str(cfg.workbook)]

    def cli(*args):
        return subprocess.run([str(EXE), *wb, *args], capture_output=True, text=True, env=env)

    assert cli("kill", "--reason", "broker acting up").returncode == 0
    from ops_runner.state import enforce_kill_switch

    with open_ledger(cfg) as ledger:
        enforce_kill_switch(cfg, ledger)
    status = cli("status")
    assert "HALT" in status.stdout and "broker acting up" in status.stdout
    missing_review = cli("approve", "--action", "exit-halt", "--reason", "checked")
    assert missing_review.returncode != 0 and "review" in missing_review.stderr
    assert "Traceback" not in missing_review.stderr
    assert cli("unkill").returncode == 0
    approved = cli("approve", "--action", "exit-halt", "--reason", "ok", "--review", "PM-1")
    assert approved.returncode == 0, approved.stderr
    token = approved.stdout.strip()
    done = cli("resume", "--token", token)
    assert done.returncode == 0 and "SAFE_MODE" in done.stdout, done.stderr
    again = cli("resume", "--token", token)
    assert again.returncode == 1 and "approval refused" in again.stderr
    verify = cli("ledger", "verify")
    assert verify.returncode == 0, verify.stdout
