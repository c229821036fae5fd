"""Alert channels over real protocols: an aiosmtpd server and an HTTP webhook on 127.0.0.1."""

from __future__ import annotations

import email
import email.policy
import json
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from http_world import HOST, RecordingServer, serve

from ops_runner.core.events import EventKind, Trigger
from ops_runner.ledger import open_ledger
from ops_runner.ledger.init import init_workbook
from ops_runner.ledger.states import apply_trigger
from ops_runner.runtime.alerts import Alert, pump_alerts, send_alert
from ops_runner.workbook.config import Config, load_config

SMTP_USER = "ops-alerts"
SMTP_PASSWORD = "Sm7p-pa55-w0rd-9f3c"
WEBHOOK_TOKEN = "XyZ9tokenAbC123def456GhI789"


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


def free_port() -> int:
    """A port nothing listens on (bound, then released): connecting to it is refused."""
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def ledger_export(cfg: Config) -> str:
    """Every event as JSON lines, as `ops-runner ledger export` prints them."""
    with open_ledger(cfg, create=False, readonly=True) as ledger:
        return "\n".join(json.dumps(e.to_dict(), sort_keys=True) for e in ledger.events())


def alert_log(cfg: Config) -> str:
    return (cfg.workbook / "ops" / "alerts.log").read_text(encoding="utf-8")


@pytest.fixture(autouse=True)
def no_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("OPS_RUNNER_SMTP_PASSWORD", "OPS_RUNNER_ALERT_WEBHOOK_URL"):
        monkeypatch.delenv(name, raising=False)


# -- an SMTP server -----------------------------------------------------------------------------


@dataclass
class Mailbox:
    """What the SMTP server received; the one login it accepts is SMTP_USER with ``password``."""

    port: int
    password: str = SMTP_PASSWORD
    messages: list[email.message.EmailMessage] = field(default_factory=list)
    envelopes: list[tuple[str, list[str]]] = field(default_factory=list)
    logins: list[tuple[str, bool]] = field(default_factory=list)

    async def handle_DATA(self, server, session, envelope) -> str:  # noqa: N802 - aiosmtpd's name
        wire = envelope.content.replace(b"\r\n", b"\n")  # SMTP's line ends, as a file has them
        parsed = email.message_from_bytes(wire, policy=email.policy.default)
        self.messages.append(parsed)
        self.envelopes.append((envelope.mail_from, list(envelope.rcpt_tos)))
        return "250 OK"

    def authenticate(self, server, session, envelope, mechanism, auth_data) -> AuthResult:
        if not isinstance(auth_data, LoginPassword):
            return AuthResult(success=False, handled=False)
        user, password = auth_data.login.decode(), auth_data.password.decode()
        good = user == SMTP_USER and password == self.password
        self.logins.append((user, good))
        return AuthResult(success=good, handled=False, auth_data=auth_data)


@pytest.fixture
def mailbox() -> Iterator[Mailbox]:
    box = Mailbox(port=free_port())
    controller = Controller(
        box,
        hostname=HOST,
        port=box.port,
        authenticator=box.authenticate,
        auth_require_tls=False,  # a test server on loopback; production uses starttls
    )
    controller.start()
    try:
        yield box
    finally:
        controller.stop()


# -- a webhook ----------------------------------------------------------------------------------


@pytest.fixture
def webhook() -> Iterator[RecordingServer]:
    yield from serve(answer=b"ok")


def email_section(port: int, **extra: Any) -> dict[str, Any]:
    section = {
        "to": "ops@example.com, you@example.com",
        "sender": "runner@example.com",
        "host": HOST,
        "port": port,
        "timeout_seconds": 1,
    }
    return section | extra


# -- delivered ----------------------------------------------------------------------------------


def test_email_when_smtp_server_is_up_delivers_subject_and_body(tmp_path, mailbox):
    cfg = make_cfg(tmp_path / "wb", {"email": email_section(mailbox.port)})

    outcome = send_alert(cfg, Alert("HALT: kill switch", "#7 state SAFE_MODE -> HALT\nsecond"))

    assert outcome == {"log": "sent", "email": "sent", "webhook": "not configured"}
    [message] = mailbox.messages
    assert message["Subject"] == "[ops-runner demo] HALT: kill switch"
    assert message["From"] == "runner@example.com"
    assert message["To"] == "ops@example.com, you@example.com"
    assert message["X-Ops-Runner-Severity"] == "critical"
    assert message["Date"] and message["Message-ID"]
    text = message.get_content()
    assert text.startswith("#7 state SAFE_MODE -> HALT\nsecond\n")
    assert mailbox.envelopes == [("runner@example.com", ["ops@example.com", "you@example.com"])]
    assert mailbox.logins == []


def test_email_when_login_is_configured_logs_in_with_the_secret_password(
    tmp_path, mailbox, monkeypatch
):
    monkeypatch.setenv("OPS_RUNNER_SMTP_PASSWORD", SMTP_PASSWORD)
    cfg = make_cfg(tmp_path / "wb", {"email": email_section(mailbox.port, username=SMTP_USER)})

    outcome = send_alert(cfg, Alert("SAFE_MODE: clock skew", "b", "warning"))

    assert outcome["email"] == "sent"
    assert mailbox.logins == [(SMTP_USER, True)] and len(mailbox.messages) == 1


def test_webhook_when_server_is_up_receives_json_with_the_text(tmp_path, webhook):
    cfg = make_cfg(
        tmp_path / "wb", {"webhook": {"url": webhook.base + "/hook", "timeout_seconds": 1}}
    )

    outcome = send_alert(cfg, Alert("SAFE_MODE: incident inc-1", "line 1\nline 2", "warning"))

    assert outcome == {"log": "sent", "email": "not configured", "webhook": "sent"}
    [request] = webhook.received
    path, headers, body = request.path, request.headers, request.body
    assert path == "/hook" and headers["Content-Type"] == "application/json"
    document = json.loads(body)
    assert document["text"] == "SAFE_MODE: incident inc-1\nline 1\nline 2"
    assert document["subject"] == "SAFE_MODE: incident inc-1"
    assert document["severity"] == "warning" and document["workbook"] == "demo"


def test_webhook_when_url_is_only_a_secret_posts_to_it(tmp_path, webhook, monkeypatch):
    monkeypatch.setenv("OPS_RUNNER_ALERT_WEBHOOK_URL", f"{webhook.base}/services/{WEBHOOK_TOKEN}")
    cfg = make_cfg(tmp_path / "wb", {"webhook": {"timeout_seconds": 1}})

    assert send_alert(cfg, Alert("s", "b"))["webhook"] == "sent"
    assert webhook.received[0].path == f"/services/{WEBHOOK_TOKEN}"


# -- a channel down: recorded, never raised ---------------------------------------------------


def test_email_when_smtp_server_is_down_records_failure_and_does_not_raise(tmp_path):
    cfg = make_cfg(tmp_path / "wb", {"email": email_section(free_port())})

    with open_ledger(cfg) as ledger:
        outcome = send_alert(cfg, Alert("HALT: x", "b"), ledger, key="down", events=[1])
        recorded = ledger.get("AlertSent:down").payload

    assert outcome["email"].startswith("failed: ConnectionRefusedError: ")
    assert outcome["log"] == "sent" and recorded["channels"] == outcome


@pytest.mark.parametrize(
    ("status", "location", "expected"),
    [
        (500, "", "failed: HTTPError: webhook: HTTP 500"),
        (404, "", "failed: HTTPError: webhook: HTTP 404"),
        (302, "/elsewhere", "failed: HTTPError: webhook: HTTP 302"),
    ],
)
def test_webhook_when_server_answers_non_2xx_records_failure_and_does_not_raise(
    tmp_path, webhook, status, location, expected
):
    webhook.status, webhook.location = status, location
    cfg = make_cfg(tmp_path / "wb", {"webhook": {"url": webhook.base, "timeout_seconds": 1}})

    with open_ledger(cfg) as ledger:
        outcome = send_alert(cfg, Alert("HALT: x", "b"), ledger, key="k")
        recorded = ledger.get("AlertSent:k").payload

    assert outcome["webhook"] == expected and recorded["channels"]["webhook"] == expected
    assert len(webhook.received) == 1  # a redirect is not followed (it would drop the body)


def test_webhook_when_server_is_slower_than_the_timeout_records_failure(tmp_path, webhook):
    webhook.delay = 1.5
    cfg = make_cfg(tmp_path / "wb", {"webhook": {"url": webhook.base, "timeout_seconds": 1}})

    started = time.monotonic()
    with open_ledger(cfg) as ledger:
        outcome = send_alert(cfg, Alert("HALT: x", "b"), ledger, key="slow")
        recorded = ledger.get("AlertSent:slow").payload

    assert time.monotonic() - started < 1.4
    assert outcome["webhook"] == "failed: TimeoutError: webhook: no answer within 1 s"
    assert recorded["channels"] == outcome


def test_log_file_when_every_other_channel_fails_is_still_written(tmp_path):
    cfg = make_cfg(
        tmp_path / "wb",
        {
            "email": email_section(free_port()),
            "webhook": {"url": f"http://{HOST}:{free_port()}/hook", "timeout_seconds": 1},
        },
    )

    with open_ledger(cfg) as ledger:
        outcome = send_alert(cfg, Alert("HALT: all down", "detail"), ledger, key="all")
        recorded = ledger.get("AlertSent:all").payload

    assert outcome["log"] == "sent"
    assert outcome["email"].startswith("failed: ") and outcome["webhook"].startswith("failed: ")
    assert recorded["channels"] == outcome
    assert "HALT: all down" in alert_log(cfg) and "    detail" in alert_log(cfg)


# -- secrets ------------------------------------------------------------------------------------


@pytest.mark.parametrize("webhook_status", [500, None])  # None: nothing listens there
def test_secrets_when_channels_fail_never_appear_in_log_ledger_or_outcomes(
    tmp_path, mailbox, webhook, monkeypatch, caplog, capsys, webhook_status
):
    base = webhook.base if webhook_status else f"http://{HOST}:{free_port()}"
    webhook.status = webhook_status or 200
    secret_url = f"{base}/services/T0/B0/{WEBHOOK_TOKEN}?token={WEBHOOK_TOKEN}"
    monkeypatch.setenv("OPS_RUNNER_ALERT_WEBHOOK_URL", secret_url)
    monkeypatch.setenv("OPS_RUNNER_SMTP_PASSWORD", SMTP_PASSWORD)
    mailbox.password = "the-server-wants-another"  # the login fails with the known one sent
    section = email_section(mailbox.port, username=SMTP_USER)
    cfg = make_cfg(tmp_path / "wb", {"email": section, "webhook": {"timeout_seconds": 1}})
    caplog.set_level("DEBUG")

    with open_ledger(cfg) as ledger:
        incident_payload = {"incident_id": "i-1", "category": "c", "summary": "s", "evidence": []}
        apply_trigger(
            ledger,
            Trigger.INCIDENT,
            "job failed",
            extra_events=[(EventKind.INCIDENT_OPENED, "IncidentOpened:i-1", incident_payload)],
        )
        [payload] = pump_alerts(cfg, ledger)

    outcomes = payload["channels"]
    assert outcomes["log"] == "sent"
    assert mailbox.logins and all(login == (SMTP_USER, False) for login in mailbox.logins)
    assert outcomes["email"].startswith("failed: SMTPAuthenticationError: ")
    assert outcomes["webhook"].startswith("failed: ")
    seen = "\n".join(
        [
            alert_log(cfg),
            ledger_export(cfg),
            json.dumps(outcomes),
            caplog.text,
            *capsys.readouterr(),
        ]
    )
    for secret in (SMTP_PASSWORD, WEBHOOK_TOKEN, secret_url, "/services/T0/B0"):
        assert secret not in seen


# -- the pump over real channels ----------------------------------------------------------------


def test_pump_alerts_when_incident_moved_to_safe_mode_sends_once_on_each_channel(
    tmp_path, mailbox, webhook
):
    cfg = make_cfg(
        tmp_path / "wb",
        {
            "email": email_section(mailbox.port),
            "webhook": {"url": webhook.base, "timeout_seconds": 1},
        },
    )
    with open_ledger(cfg) as ledger:
        payload = {"incident_id": "i-9", "category": "clock", "summary": "skew 9 s", "evidence": []}
        apply_trigger(
            ledger,
            Trigger.INCIDENT,
            "clock skew 9 s",
            extra_events=[(EventKind.INCIDENT_OPENED, "IncidentOpened:i-9", payload)],
        )
        apply_trigger(ledger, Trigger.DATA_FAULT, "stale bars")  # SAFE_MODE stays: no alert
        [sent] = pump_alerts(cfg, ledger)
        again = pump_alerts(cfg, ledger)

    assert again == []
    assert sent["channels"] == {"log": "sent", "email": "sent", "webhook": "sent"}
    assert len(mailbox.messages) == 1 and len(webhook.received) == 1
    [message] = mailbox.messages
    assert message["Subject"] == "[ops-runner demo] SAFE_MODE: clock skew 9 s (+1 more)"
    lines = message.get_content().splitlines()
    assert "incident i-9 [clock]: skew 9 s" in lines[0]
    assert "state RUN -> SAFE_MODE (incident): clock skew 9 s" in lines[1]
    assert json.loads(webhook.received[0].body)["text"].splitlines()[1:3] == lines[:2]
