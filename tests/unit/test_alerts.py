"""Alerts without a network: the log file, idempotent keys, what the pump alerts on and how."""

from __future__ import annotations

import stat
from pathlib import Path
from typing import Any

import pytest
import yaml

from ops_runner.core.events import EventKind, Trigger
from ops_runner.ledger import open_ledger
from ops_runner.ledger.init import init_workbook
from ops_runner.ledger.states import apply_trigger
from ops_runner.runtime.alerts import Alert, AlertError, pump_alerts, send_alert
from ops_runner.workbook.config import Config, load_config

NOT_CONFIGURED = "not configured"


def make_cfg(root: Path, alerts: dict[str, Any] | None = None) -> Config:
    """A workbook at ``root`` whose alerts section is the template's updated with ``alerts``."""
    init_workbook(root, template="demo")
    path = root / "config.yaml"
    raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    for name, value in (alerts or {}).items():
        if isinstance(value, dict):
            raw["alerts"][name].update(value)
        else:
            raw["alerts"][name] = value
    path.write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
    return load_config(root)


@pytest.fixture(autouse=True)
def no_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("OPS_RUNNER_SMTP_PASSWORD", "OPS_RUNNER_ALERT_WEBHOOK_URL"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def cfg(tmp_path: Path) -> Config:
    return make_cfg(tmp_path / "wb")


@pytest.fixture
def ledger(cfg: Config):
    with open_ledger(cfg) as opened:
        yield opened


def alert_log(cfg: Config) -> str:
    return (cfg.workbook / "ops" / "alerts.log").read_text(encoding="utf-8")


def incident(ledger, incident_id: str = "inc-1", summary: str = "job decision failed") -> None:
    """RUN -> SAFE_MODE by an incident, the way the orchestrator records one."""
    payload = {
        "incident_id": incident_id,
        "category": "job_failed",
        "summary": summary,
        "evidence": ["JobFailed:decision:2025-01-31"],
    }
    key = f"{EventKind.INCIDENT_OPENED}:{incident_id}"
    apply_trigger(
        ledger, Trigger.INCIDENT, summary, extra_events=[(EventKind.INCIDENT_OPENED, key, payload)]
    )


def job_event(ledger, kind: EventKind, job: str, slot: str) -> int:
    payload: dict[str, Any] = {
        "job": job,
        "slot": slot,
        "session": "2025-01-31",
        "cycle": "2025-01",
        "at": "2025-01-31T21:30:00.000000Z",
    }
    if kind is EventKind.JOB_FAILED:
        payload |= {"run_id": f"run-{job}", "error": "KernelDied: the kernel died"}
    else:
        payload |= {"deadline": "2025-01-31T22:00:00.000000Z"}
    return ledger.append(str(kind), f"{kind}:{job}:{slot}", payload).seq


def alerts_sent(ledger) -> list:
    return list(ledger.events(kind=str(EventKind.ALERT_SENT)))


# -- send_alert ---------------------------------------------------------------------------------


def test_send_alert_when_only_the_log_is_configured_appends_it_0600_and_reports_the_rest(cfg):
    outcome = send_alert(cfg, Alert("HALT: kill switch", "line one\nline two", "critical"))

    assert outcome == {"log": "sent", "email": NOT_CONFIGURED, "webhook": NOT_CONFIGURED}
    path = cfg.workbook / "ops" / "alerts.log"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    head, *body = alert_log(cfg).splitlines()
    assert head.endswith("HALT: kill switch") and " CRITICAL [" in head
    assert head[:20].endswith("Z") and head[4] == "-" and head[10] == "T"
    assert body == ["    line one", "    line two"]


def test_send_alert_when_log_folder_is_missing_creates_it(tmp_path):
    cfg = make_cfg(tmp_path / "wb", {"log_file": "deep/er/alerts.log"})

    assert send_alert(cfg, Alert("s", "b"))["log"] == "sent"
    assert (cfg.workbook / "deep" / "er" / "alerts.log").is_file()


def test_send_alert_when_log_file_cannot_be_written_records_failure_and_does_not_raise(tmp_path):
    cfg = make_cfg(tmp_path / "wb", {"log_file": "blocker/alerts.log"})
    (cfg.workbook / "blocker").write_text("a file where the folder should be")

    with open_ledger(cfg) as ledger:
        outcome = send_alert(cfg, Alert("SAFE_MODE: x", "b"), ledger, key="k1")
        recorded = ledger.get("AlertSent:k1").payload

    assert outcome["log"].startswith("failed: ") and "Error" in outcome["log"]
    assert recorded["channels"] == outcome


def test_send_alert_when_key_already_recorded_sends_nothing_again(cfg, ledger):
    first = send_alert(cfg, Alert("HALT: drawdown", "b"), ledger, key="halt-1", events=[3])
    head = ledger.head()
    again = send_alert(cfg, Alert("HALT: drawdown", "b"), ledger, key="halt-1", events=[3])

    assert again == first and ledger.head() == head
    assert alert_log(cfg).count("HALT: drawdown") == 1
    [event] = alerts_sent(ledger)
    assert event.key == "AlertSent:halt-1"
    assert event.payload["events"] == [3] and event.payload["severity"] == "critical"
    assert event.payload["subject"] == "HALT: drawdown"


def test_send_alert_when_ledger_given_without_key_records_a_one_off_alert(cfg, ledger):
    send_alert(cfg, Alert("note", "b", "info"), ledger)
    send_alert(cfg, Alert("note", "b", "info"), ledger)

    keys = [event.key for event in alerts_sent(ledger)]
    assert len(keys) == 2 and len(set(keys)) == 2
    assert all(key.startswith("AlertSent:adhoc:") for key in keys)


def test_send_alert_when_smtp_login_has_no_password_email_fails_without_raising(tmp_path):
    email = {"to": "ops@example.com", "username": "ops", "port": 1}
    cfg = make_cfg(tmp_path / "wb", {"email": email})

    outcome = send_alert(cfg, Alert("s", "b"))

    assert outcome["log"] == "sent"
    assert outcome["email"].startswith("failed: SecretError: secret SMTP_PASSWORD is not set")


def test_send_alert_when_webhook_url_is_not_http_fails_without_naming_it(tmp_path):
    cfg = make_cfg(tmp_path / "wb", {"webhook": {"url": "file:///etc/passwd"}})

    outcome = send_alert(cfg, Alert("s", "b"))

    assert outcome["webhook"] == "failed: ValueError: webhook: the URL is not http:// or https://"


@pytest.mark.parametrize("severity", ["fatal", "CRITICAL", ""])
def test_alert_when_severity_unknown_raises_alert_error(severity):
    with pytest.raises(AlertError, match="critical, warning, info"):
        Alert("s", "b", severity)


# -- pump_alerts --------------------------------------------------------------------------------


def test_pump_alerts_when_incident_moved_to_safe_mode_alerts_once(cfg, ledger):
    incident(ledger)
    opened = ledger.last(str(EventKind.INCIDENT_OPENED)).seq
    changed = ledger.last(str(EventKind.STATE_CHANGED)).seq

    [payload] = pump_alerts(cfg, ledger)
    head = ledger.head()

    assert payload["events"] == [opened, changed]
    assert payload["subject"] == "SAFE_MODE: job decision failed (+1 more)"
    assert payload["severity"] == "critical" and payload["channels"]["log"] == "sent"
    assert ledger.get(f"AlertSent:events:{opened}-{changed}").payload == payload
    body = alert_log(cfg).splitlines()[1:]
    assert len(body) == 2
    assert f"#{opened} " in body[0] and "incident inc-1 [job_failed]" in body[0]
    assert f"#{changed} " in body[1] and "state RUN -> SAFE_MODE (incident)" in body[1]

    assert pump_alerts(cfg, ledger) == []
    assert ledger.head() == head and len(alert_log(cfg).splitlines()) == 3


def test_pump_alerts_when_only_degraded_data_writes_nothing(cfg, ledger):
    apply_trigger(ledger, Trigger.DATA_FAULT, "SPY bar missing")
    head = ledger.head()

    assert pump_alerts(cfg, ledger) == []
    assert ledger.head() == head
    assert not (cfg.workbook / "ops" / "alerts.log").exists()


def test_pump_alerts_when_ledger_is_empty_writes_nothing(cfg, ledger):
    assert pump_alerts(cfg, ledger) == [] and ledger.head() is None


# (events recorded in order) -> the subject, written by hand from the runbook's ranking
SUBJECTS = [
    ([("failed", "decision")], "job decision failed"),
    ([("missed", "execution")], "job execution missed its deadline"),
    ([("failed", "decision"), ("missed", "execution")], "job decision failed (+1 more)"),
    ([("failed", "decision"), ("incident", "i-7")], "incident i-7: boom (+1 more)"),
    ([("incident", "i-7"), ("safe", "clock skew 9 s")], "SAFE_MODE: clock skew 9 s (+1 more)"),
    ([("safe", "clock skew 9 s"), ("halt", "kill switch")], "HALT: kill switch (+1 more)"),
    ([("halt", "kill switch"), ("missed", "execution")], "HALT: kill switch (+1 more)"),
]


@pytest.mark.parametrize(("steps", "subject"), SUBJECTS)
def test_pump_alerts_when_events_mixed_subject_names_the_worst(cfg, ledger, steps, subject):
    for what, name in steps:
        if what == "failed":
            job_event(ledger, EventKind.JOB_FAILED, name, "s1")
        elif what == "missed":
            job_event(ledger, EventKind.JOB_MISSED, name, "s1")
        elif what == "incident":  # recorded without a state change
            payload = {"incident_id": name, "category": "c", "summary": "boom", "evidence": []}
            ledger.append(str(EventKind.INCIDENT_OPENED), f"IncidentOpened:{name}", payload)
        elif what == "safe":
            apply_trigger(ledger, Trigger.INCIDENT, name)
        else:
            apply_trigger(ledger, Trigger.KILL_SWITCH, name)

    [payload] = pump_alerts(cfg, ledger)

    assert payload["subject"] == subject
    assert len(payload["events"]) == len(steps)


def test_pump_alerts_when_new_events_follow_an_alert_covers_only_the_new_ones(cfg, ledger):
    incident(ledger)
    pump_alerts(cfg, ledger)
    apply_trigger(ledger, Trigger.DRAWDOWN_BREACH, "drawdown 27% > 25%")
    halt = ledger.last(str(EventKind.STATE_CHANGED)).seq

    [payload] = pump_alerts(cfg, ledger)

    assert payload["events"] == [halt]
    assert payload["subject"] == "HALT: drawdown 27% > 25%"
    assert ledger.get(f"AlertSent:events:{halt}-{halt}") is not None
    assert len(alerts_sent(ledger)) == 2


def test_pump_alerts_when_a_later_event_was_alerted_directly_still_alerts_earlier_ones(cfg, ledger):
    failed = job_event(ledger, EventKind.JOB_FAILED, "decision", "s1")
    missed = job_event(ledger, EventKind.JOB_MISSED, "execution", "s2")
    send_alert(cfg, Alert("job execution missed", "b"), ledger, key="direct", events=[missed])

    [payload] = pump_alerts(cfg, ledger)

    assert payload["events"] == [failed]
    assert pump_alerts(cfg, ledger) == []
