"""Push channels through apprise over real HTTP: an ntfy server and a JSON endpoint on 127.0.0.1.

apprise's ntfy plugin, pointed at a server of our own (``ntfy://host:port/topic``), POSTs JSON
``{"topic", "title", "message"}`` to the server's root; its JSON plugin (``json://host:port/path``)
POSTs ``{"version", "title", "message", "attachments", "type"}`` to the path. Slack, Telegram and
Pushover are sent to their services' own hosts (apprise takes no other endpoint for them), so
they are not exercised here.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml
from conftest import make_workbook
from http_world import HOST, RecordingServer, serve

from ops_runner.cli import main
from ops_runner.core.events import EventKind, State, Trigger
from ops_runner.ledger import open_ledger
from ops_runner.ledger.init import init_workbook
from ops_runner.ledger.states import apply_trigger, write_kill_switch
from ops_runner.ops.checks import approve_baseline
from ops_runner.ops.tick import tick
from ops_runner.runtime.alerts import Alert, pump_alerts, send_alert
from ops_runner.workbook.config import Config, load_config

NTFY_TOPIC = "ops-Zq7wK2mP9xLr4TbVn"  # on ntfy.sh a topic is a password: whoever knows it reads
JSON_TOKEN = "Jt5hQ8vLw3Rx9Kd2Mb6Np"
JSON_PASSWORD = "pw-Hc4Ty8Ue2Io6Pa1S"
IDLE = datetime(2025, 11, 27, 15, 0, tzinfo=UTC)  # Thanksgiving: no job opens, only the switch


def make_cfg(root: Path, channels: list[str], timeout: int = 1) -> Config:
    """A workbook at ``root`` whose alerts go to the push ``channels`` (names only)."""
    init_workbook(root, template="demo")
    path = root / "config.yaml"
    raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    raw["alerts"]["push"] = {"channels": channels, "timeout_seconds": timeout}
    path.write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
    return load_config(root)


def free_port() -> int:
    """A port nothing listens on (bound, then released): connecting to it is refused."""
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def alert_id(key: str) -> str:
    """The id a keyed alert carries: the first 16 hex digits of the key's SHA-256."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()[:16]


def ledger_export(cfg: Config) -> str:
    """Every event as JSON lines, as `ops-runner ledger export` prints them."""
    with open_ledger(cfg, create=False, readonly=True) as ledger:
        return "\n".join(json.dumps(e.to_dict(), sort_keys=True) for e in ledger.events())


def alert_log(cfg: Config) -> str:
    return (cfg.workbook / "ops" / "alerts.log").read_text(encoding="utf-8")


@pytest.fixture(autouse=True)
def no_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("OPS_RUNNER_PUSH_") or name in (
            "OPS_RUNNER_SMTP_PASSWORD",
            "OPS_RUNNER_ALERT_WEBHOOK_URL",
        ):
            monkeypatch.delenv(name)


# -- a server that speaks HTTP -------------------------------------------------------------------


@pytest.fixture
def ntfy() -> Iterator[RecordingServer]:
    yield from serve(content_type="application/json")


@pytest.fixture
def hook() -> Iterator[RecordingServer]:
    yield from serve(content_type="application/json")


def ntfy_url(server: RecordingServer) -> str:
    return f"ntfy://{server.where}/{NTFY_TOPIC}"


def json_url(server: RecordingServer) -> str:
    return f"json://ops:{JSON_PASSWORD}@{server.where}/hooks/{JSON_TOKEN}"


# -- delivered -----------------------------------------------------------------------------------


def test_ntfy_when_server_is_up_receives_the_alert_as_title_and_message(
    tmp_path, ntfy, monkeypatch
):
    monkeypatch.setenv("OPS_RUNNER_PUSH_NTFY_PHONE_URL", ntfy_url(ntfy))
    cfg = make_cfg(tmp_path / "wb", ["ntfy_phone"])

    with open_ledger(cfg) as ledger:
        outcome = send_alert(cfg, Alert("HALT: kill switch", "#7 state RUN -> HALT"), ledger, "k1")
        recorded = ledger.get("AlertSent:k1").payload

    assert outcome == {
        "log": "sent",
        "email": "not configured",
        "webhook": "not configured",
        "push:ntfy_phone": "sent",
    }
    assert recorded["channels"] == outcome
    [request] = ntfy.received
    assert (request.method, request.path) == ("POST", "/")  # ntfy takes JSON at its root
    assert request.headers["Content-Type"] == "application/json"
    assert request.document == {
        "topic": NTFY_TOPIC,
        "title": "[ops-runner demo] HALT: kill switch",
        "message": f"#7 state RUN -> HALT\n\n-- ops-runner demo, alert {alert_id('k1')}",
    }


@pytest.mark.parametrize(("severity", "kind"), [("critical", "failure"), ("warning", "warning")])
def test_json_when_server_is_up_receives_title_message_and_severity(
    tmp_path, hook, monkeypatch, severity, kind
):
    monkeypatch.setenv("OPS_RUNNER_PUSH_OPS_HOOK_URL", json_url(hook))
    cfg = make_cfg(tmp_path / "wb", ["ops_hook"])

    outcome = send_alert(cfg, Alert("SAFE_MODE: incident i-1", "line 1\nline 2", severity), key="k")

    assert outcome["push:ops_hook"] == "sent"
    [request] = hook.received
    assert (request.method, request.path) == ("POST", f"/hooks/{JSON_TOKEN}")
    assert request.headers["Authorization"].startswith("Basic ")
    assert request.document == {
        "version": "1.0",
        "title": "[ops-runner demo] SAFE_MODE: incident i-1",
        "message": f"line 1\nline 2\n\n-- ops-runner demo, alert {alert_id('k')}",
        "attachments": [],
        "type": kind,
    }


def test_pump_alerts_when_run_again_delivers_each_alert_once_on_each_channel(
    tmp_path, ntfy, hook, monkeypatch
):
    monkeypatch.setenv("OPS_RUNNER_PUSH_NTFY_PHONE_URL", ntfy_url(ntfy))
    monkeypatch.setenv("OPS_RUNNER_PUSH_OPS_HOOK_URL", json_url(hook))
    cfg = make_cfg(tmp_path / "wb", ["ntfy_phone", "ops_hook"])
    with open_ledger(cfg) as ledger:
        payload = {"incident_id": "i-9", "category": "clock", "summary": "skew 9 s", "evidence": []}
        apply_trigger(
            ledger,
            Trigger.INCIDENT,
            "clock skew 9 s",
            extra_events=[(EventKind.INCIDENT_OPENED, "IncidentOpened:i-9", payload)],
        )
        [sent] = pump_alerts(cfg, ledger)
        again = pump_alerts(cfg, ledger)
        resent = send_alert(cfg, Alert("ignored", "b"), ledger, key="events:1-2")  # its key

    assert again == [] and resent == sent["channels"]
    assert sent["channels"]["push:ntfy_phone"] == sent["channels"]["push:ops_hook"] == "sent"
    assert len(ntfy.received) == 1 and len(hook.received) == 1
    title = "[ops-runner demo] SAFE_MODE: clock skew 9 s (+1 more)"
    assert ntfy.received[0].document["title"] == hook.received[0].document["title"] == title
    lines = ntfy.received[0].document["message"].splitlines()
    assert "incident i-9 [clock]: skew 9 s" in lines[0]
    assert "state RUN -> SAFE_MODE (incident): clock skew 9 s" in lines[1]


# -- a channel down: recorded, never raised, never in the way ----------------------------------


@pytest.mark.parametrize(
    ("down", "expected"),
    [
        ("http 500", "failed: HTTPError: push ntfy_phone: HTTP 500"),
        ("refused", "failed: ConnectionRefusedError: push ntfy_phone: connection refused"),
        ("slow", "failed: TimeoutError: push ntfy_phone: no answer within 1 s"),
    ],
)
def test_push_when_a_channel_is_down_records_the_failure_and_the_others_still_send(
    tmp_path, ntfy, hook, monkeypatch, caplog, down, expected
):
    ntfy.status, ntfy.delay = (500, 0.0) if down == "http 500" else (200, 8.0 * (down == "slow"))
    url = ntfy_url(ntfy) if down != "refused" else f"ntfy://{HOST}:{free_port()}/{NTFY_TOPIC}"
    monkeypatch.setenv("OPS_RUNNER_PUSH_NTFY_PHONE_URL", url)
    monkeypatch.setenv("OPS_RUNNER_PUSH_OPS_HOOK_URL", json_url(hook))
    cfg = make_cfg(tmp_path / "wb", ["ntfy_phone", "ops_hook"], timeout=1)
    caplog.set_level("WARNING")

    started = time.monotonic()
    with open_ledger(cfg) as ledger:
        outcome = send_alert(cfg, Alert("HALT: drawdown 26%", "detail"), ledger, key="down")
        recorded = ledger.get("AlertSent:down").payload
    took = time.monotonic() - started

    assert outcome["push:ntfy_phone"] == expected and outcome["push:ops_hook"] == "sent"
    assert outcome["log"] == "sent" and recorded["channels"] == outcome
    assert len(hook.received) == 1
    assert "HALT: drawdown 26%" in alert_log(cfg) and "    detail" in alert_log(cfg)
    assert f"channel push:ntfy_phone {expected}" in caplog.text
    # The server holds its answer 8 s; the channel gives up after its 1 s (apprise's first use
    # in a process loads its plugins, a second or two more).
    assert took < 6.0


def test_tick_when_kill_switch_is_engaged_and_every_push_channel_is_down_still_halts(
    tmp_path, hook, monkeypatch, caplog
):
    hook.status = 500
    monkeypatch.setenv(
        "OPS_RUNNER_PUSH_NTFY_PHONE_URL", f"ntfy://{HOST}:{free_port()}/{NTFY_TOPIC}"
    )
    monkeypatch.setenv("OPS_RUNNER_PUSH_OPS_HOOK_URL", json_url(hook))
    push = {"channels": ["ntfy_phone", "ops_hook"], "timeout_seconds": 1}
    cfg = load_config(make_workbook(tmp_path, **{"alerts.push": push}))
    approve_baseline(cfg, "reviewed", now=IDLE)
    write_kill_switch(cfg, "stop: testing push channels")
    caplog.set_level("WARNING")

    tick(cfg, now=IDLE)

    with open_ledger(cfg, create=False, readonly=True) as ledger:
        changes = [e.payload for e in ledger.events(kind=str(EventKind.STATE_CHANGED))]
        [sent] = [e.payload for e in ledger.events(kind=str(EventKind.ALERT_SENT))]
    assert changes[-1]["to"] == State.HALT  # the safety action stands
    assert sent["subject"].startswith("HALT: ")
    assert sent["channels"] == {
        "log": "sent",
        "email": "not configured",
        "webhook": "not configured",
        "push:ntfy_phone": "failed: ConnectionRefusedError: push ntfy_phone: connection refused",
        "push:ops_hook": "failed: HTTPError: push ops_hook: HTTP 500",
    }
    assert len(hook.received) == 1 and hook.received[0].document["title"].endswith(sent["subject"])
    assert sent["subject"] in alert_log(cfg)
    assert "channel push:ntfy_phone failed: ConnectionRefusedError" in caplog.text
    assert "channel push:ops_hook failed: HTTPError" in caplog.text


# -- secrets -------------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [200, 500, None])  # None: nothing listens there
def test_push_urls_when_sent_never_appear_in_log_ledger_outcomes_or_output(
    tmp_path, ntfy, hook, monkeypatch, caplog, capsys, status
):
    ntfy.status = hook.status = status or 200
    where = ntfy.where if status else f"{HOST}:{free_port()}"
    ntfy_secret = f"ntfy://{where}/{NTFY_TOPIC}"
    hook_secret = json_url(hook) if status else f"json://ops:{JSON_PASSWORD}@{where}/h/{JSON_TOKEN}"
    monkeypatch.setenv("OPS_RUNNER_PUSH_NTFY_PHONE_URL", ntfy_secret)
    monkeypatch.setenv("OPS_RUNNER_PUSH_OPS_HOOK_URL", hook_secret)
    cfg = make_cfg(tmp_path / "wb", ["ntfy_phone", "ops_hook"])
    caplog.set_level("DEBUG")  # apprise and urllib3 name URLs and paths at DEBUG

    with open_ledger(cfg) as ledger:
        # A secret that slipped into an alert's text is cut out before anything is written.
        alert = Alert(f"HALT: quoting {NTFY_TOPIC}", f"and {JSON_TOKEN} in the body")
        outcomes = send_alert(cfg, alert, ledger, key="quoted")

    assert outcomes["log"] == "sent"
    ok = "sent" if status == 200 else "failed: "
    assert all(outcomes[c].startswith(ok) for c in ("push:ntfy_phone", "push:ops_hook"))
    seen = "\n".join(
        [
            alert_log(cfg),
            ledger_export(cfg),
            json.dumps(outcomes),
            caplog.text,
            *capsys.readouterr(),
            # What went out for a person to read (ntfy's protocol carries its topic, as it must)
            *(r.document[k] for r in ntfy.received + hook.received for k in ("title", "message")),
        ]
    )
    for secret in (ntfy_secret, hook_secret, NTFY_TOPIC, JSON_TOKEN, JSON_PASSWORD):
        assert secret not in seen
    assert "HALT: quoting ***" in alert_log(cfg) and "    and *** in the body" in alert_log(cfg)


# -- a channel without its URL -------------------------------------------------------------------


def test_push_when_the_url_secret_is_missing_records_one_line_and_sends_the_rest(
    tmp_path, hook, monkeypatch
):
    monkeypatch.setenv("OPS_RUNNER_PUSH_OPS_HOOK_URL", json_url(hook))
    cfg = make_cfg(tmp_path / "wb", ["ntfy_phone", "ops_hook"])

    outcome = send_alert(cfg, Alert("HALT: x", "b"))

    assert outcome["push:ntfy_phone"] == (
        "failed: SecretError: secret PUSH_NTFY_PHONE_URL is not set; export "
        "OPS_RUNNER_PUSH_NTFY_PHONE_URL or add PUSH_NTFY_PHONE_URL=... to the 0600 file named by "
        "secrets.file"
    )
    assert outcome["push:ops_hook"] == "sent" and outcome["log"] == "sent"


def test_push_when_the_url_is_not_one_apprise_knows_fails_without_naming_it(tmp_path, monkeypatch):
    monkeypatch.setenv("OPS_RUNNER_PUSH_NTFY_PHONE_URL", f"notaservice://{NTFY_TOPIC}")
    cfg = make_cfg(tmp_path / "wb", ["ntfy_phone"])

    outcome = send_alert(cfg, Alert("HALT: x", "b"))

    assert outcome["push:ntfy_phone"] == (
        "failed: ValueError: push ntfy_phone: apprise does not know the URL; check its scheme"
    )


@pytest.mark.parametrize(
    ("secret", "code", "line"),
    [
        (None, 2, "ops-runner: alerts.push.channels: ntfy_phone: secret PUSH_NTFY_PHONE_URL is not "
         "set; export OPS_RUNNER_PUSH_NTFY_PHONE_URL or add PUSH_NTFY_PHONE_URL=... to the 0600 "
         "file named by secrets.file"),
        (f"notaservice://{NTFY_TOPIC}", 2, "ops-runner: config error: alerts.push.channels: "
         "ntfy_phone: apprise does not know the URL in the secret PUSH_NTFY_PHONE_URL; check its "
         "scheme (ntfys://, slack://, tgram://, ...)"),
        (f"ntfys://ntfy.sh/{NTFY_TOPIC}", 0, None),
    ],
)  # fmt: skip
def test_config_check_when_a_push_channel_lacks_its_url_says_so_in_one_line(
    tmp_path, monkeypatch, capsys, secret, code, line
):
    if secret:
        monkeypatch.setenv("OPS_RUNNER_PUSH_NTFY_PHONE_URL", secret)
    cfg = make_cfg(tmp_path / "wb", ["ntfy_phone"])

    assert main(["--workbook", str(cfg.workbook), "config", "check"]) == code

    out, err = capsys.readouterr()
    assert "Traceback" not in err and NTFY_TOPIC not in out + err
    if line is None:
        assert out.startswith("config ok: ") and err == ""
    else:
        assert err.splitlines() == [line]
