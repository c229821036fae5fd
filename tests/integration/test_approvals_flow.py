"""Leaving SAFE_MODE and HALT with approval tokens, against a real workbook and ledger."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import subprocess
import sys
from datetime import date
from decimal import Decimal
from pathlib import Path

import pytest

from ops_runner.core.errors import SecretError
from ops_runner.core.events import EventKind, State, Trigger
from ops_runner.ledger import open_ledger
from ops_runner.ledger.approvals import Action, ApprovalRefused, approve, issue_token, resume
from ops_runner.ledger.init import init_workbook
from ops_runner.ledger.states import apply_trigger, read_state, record_equity_mark
from ops_runner.market.integrity import check_integrity
from ops_runner.ops.incidents import close_incident, open_incident
from ops_runner.workbook.config import load_config

KEY = "0123456789abcdef" * 4
EXE = Path(sys.executable).with_name("ops-runner")


@pytest.fixture
def cfg(tmp_path, monkeypatch):
    monkeypatch.setenv("OPS_RUNNER_APPROVAL_KEY", KEY)
    init_workbook(tmp_path, template="demo")
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


def close_reviewed(cfg, summary: str, postmortem: str, incident_id: str | None = None) -> None:
    """Close ``incident_id`` (default: a new one opened by hand) naming ``postmortem``."""
    with open_ledger(cfg) as ledger:
        found = incident_id or open_incident(cfg, ledger, summary)
        close_incident(cfg, ledger, found, f"resolved: {summary}", postmortem)


def halt_token(cfg, review: str | None) -> str:
    """Return an exit-halt token for the current HALT as signed offline with the key, without
    ``approve``'s early check; review None makes one ``issue_token`` would refuse to make."""
    with open_ledger(cfg) as ledger:
        seq = read_state(ledger).seq
    token = issue_token(KEY.encode(), Action.EXIT_HALT, seq, "reviewed", review or "-")
    if review is not None:
        return token
    prefix, body, _ = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    raw = json.dumps({**claims, "review": None}, sort_keys=True, separators=(",", ":"))
    body = base64.urlsafe_b64encode(raw.encode()).rstrip(b"=").decode()
    mac = hmac.new(KEY.encode(), f"{prefix}.{body}".encode(), hashlib.sha256).digest()
    return f"{prefix}.{body}.{base64.urlsafe_b64encode(mac).rstrip(b'=').decode()}"


def refused_review(cfg, token: str) -> str:
    """Assert resume refuses ``token`` for its review, recording nothing; return the message."""
    with open_ledger(cfg) as ledger:
        before = len(list(ledger.events()))
    with pytest.raises(ApprovalRefused) as caught:
        resume(cfg, token, integrity=check_integrity)
    assert caught.value.why == "review"
    assert state(cfg) is State.HALT
    assert events(cfg, EventKind.APPROVAL_USED) == []
    with open_ledger(cfg) as ledger:
        assert len(list(ledger.events())) == before
    return str(caught.value)


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
    close_reviewed(cfg, "drawdown reviewed", "PM-2026-03", incident_id="drawdown-2026-03-31")
    token = approve(cfg, Action.EXIT_HALT, "drawdown reviewed", review="PM-2026-03")
    assert resume(cfg, token, integrity=check_integrity) is State.SAFE_MODE
    with open_ledger(cfg) as ledger:
        # 80000 is 27% below the old peak but 2.4% below the reviewed baseline (82000).
        view = record_equity_mark(ledger, cfg, date(2026, 4, 30), Decimal("80000"), "sim")
        assert read_state(ledger).state is State.SAFE_MODE
    assert view.peak == Decimal("82000")
    used = events(cfg, EventKind.APPROVAL_USED)
    assert used[0].payload["review"] == "PM-2026-03"


def test_read_approval_key_when_key_file_readable_by_others_refuses(tmp_path, monkeypatch):
    monkeypatch.delenv("OPS_RUNNER_APPROVAL_KEY", raising=False)
    init_workbook(tmp_path, template="demo")
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


@pytest.mark.subprocess
@pytest.mark.slow
def test_cli_when_kill_then_approve_and_resume_halt_goes_to_safe_mode(cfg, tmp_path):
    env = {**os.environ, "OPS_RUNNER_APPROVAL_KEY": KEY}
    wb = ["--workbook", str(cfg.workbook)]

    def cli(*args):
        return subprocess.run([str(EXE), *wb, *args], capture_output=True, text=True, env=env)

    assert cli("kill", "--reason", "broker acting up").returncode == 0
    from ops_runner.ledger.states import enforce_kill_switch

    with open_ledger(cfg) as ledger:
        enforce_kill_switch(cfg, ledger)
    status = cli("status")
    assert "HALT" in status.stdout and "broker acting up" in status.stdout
    missing_review = cli("approve", "--action", "exit-halt", "--reason", "checked")
    assert missing_review.returncode != 0 and "review" in missing_review.stderr
    assert "Traceback" not in missing_review.stderr
    assert cli("unkill").returncode == 0
    unreviewed = cli("approve", "--action", "exit-halt", "--reason", "ok", "--review", "PM-1")
    assert unreviewed.returncode == 1 and "approval refused (review)" in unreviewed.stderr
    assert "Traceback" not in unreviewed.stderr
    opened = cli("incident", "open", "--summary", "broker acting up")
    assert opened.returncode == 0, opened.stderr
    incident_id = opened.stdout.split()[1]  # "incident <id> open; state HALT"
    closed = cli("incident", "close", incident_id, "--resolution", "broker restarted",
                 "--postmortem", "PM-1")  # fmt: skip
    assert closed.returncode == 0, closed.stderr
    approved = cli("approve", "--action", "exit-halt", "--reason", "ok", "--review", "PM-1")
    assert approved.returncode == 0, approved.stderr
    token = approved.stdout.strip()
    done = cli("resume", "--token", token)
    assert done.returncode == 0 and "SAFE_MODE" in done.stdout, done.stderr
    again = cli("resume", "--token", token)
    assert again.returncode == 1 and "approval refused" in again.stderr
    verify = cli("ledger", "verify")
    assert verify.returncode == 0, verify.stdout


@pytest.mark.parametrize(
    ("closed", "review"),
    [(None, "PM-1"), ("PM-1", "PM-2"), ("PM-1", None)],
    ids=["none-closed", "another-postmortem", "no-review"],
)
def test_resume_when_exit_halt_names_no_closed_postmortem_refuses_review(cfg, closed, review):
    enter(cfg, Trigger.KILL_SWITCH)
    if closed is not None:
        close_reviewed(cfg, "broker restarted", closed)
    message = refused_review(cfg, halt_token(cfg, review))
    assert "incident close" in message and "state is unchanged" in message


def test_resume_when_postmortem_closed_before_halt_began_refuses_review(cfg):
    close_reviewed(cfg, "stale prices re-imported", "PM-OLD")  # in SAFE_MODE, before the HALT
    enter(cfg, Trigger.KILL_SWITCH)
    with pytest.raises(ApprovalRefused) as early:
        approve(cfg, Action.EXIT_HALT, "reviewed", review="PM-OLD")
    assert early.value.why == "review"
    message = refused_review(cfg, halt_token(cfg, "PM-OLD"))
    assert "closed since HALT began" in message


def test_resume_when_postmortem_closed_in_this_halt_goes_to_safe_mode(cfg):
    close_reviewed(cfg, "stale prices re-imported", "PM-OLD")
    enter(cfg, Trigger.KILL_SWITCH)
    close_reviewed(cfg, "broker restarted", "PM-7")
    assert resume(cfg, halt_token(cfg, "PM-7"), integrity=check_integrity) is State.SAFE_MODE
    [used] = events(cfg, EventKind.APPROVAL_USED)
    assert (used.payload["action"], used.payload["review"]) == ("exit-halt", "PM-7")
