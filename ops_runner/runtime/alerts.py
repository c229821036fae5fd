"""Alerts: always the log file, then email over SMTP, a JSON webhook and push channels through
apprise (ntfy, Telegram, Pushover, Slack, ...); a channel never raises."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import smtplib
import ssl
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ops_runner.core.clock import format_seconds
from ops_runner.core.errors import ConfigError, OpsError, SecretError
from ops_runner.core.events import EventKind, State
from ops_runner.core.hashing import compute_sha256
from ops_runner.core.text import compute_one_line
from ops_runner.ledger import Ledger, LedgerConflict
from ops_runner.workbook.config import Config, compute_push_secret_name, load_secret
from ops_runner.workbook.settings import EmailSettings

if TYPE_CHECKING:
    import apprise

__all__ = [
    "Alert",
    "AlertError",
    "Severity",
    "pump_alerts",
    "require_push_channels",
    "send_alert",
]

log = logging.getLogger(__name__)

SENT = "sent"
NOT_CONFIGURED = "not configured"
KEY_PREFIX = f"{EventKind.ALERT_SENT}:"
PUMP_KEY_PREFIX = "events:"
SUBJECT_LIMIT = 160  # characters: a subject is a headline, the body carries the detail
REASON_LIMIT = 200  # characters of an exception's message kept in a channel's outcome
RESPONSE_LIMIT = 64 * 1024  # bytes of a webhook's answer read (and discarded)
_REDACTED = "***"
PUSH_PREFIX = "push:"  # a push channel's outcome is named push:<its name>
PUSH_TOKEN_PART = 8  # characters: a push URL's parts this long or longer are never written
# apprise logs a service's URL and urllib3 a request's path, either of which can hold a token:
# while a push goes out their records reach only apprise's own result, never our logs.
_QUIETED_LOGGERS = ("apprise", "urllib3")
# apprise's NotifyType values, spelled here so that a tick with no push channel never imports
# apprise (half a second, and its plugins on first use): it loads only when a push goes out.
_NOTIFY_TYPES = {"critical": "failure", "warning": "warning", "info": "info"}


class Severity(StrEnum):
    """How loud an alert is."""

    CRITICAL = "critical"
    WARNING = "warning"
    INFO = "info"


class AlertError(OpsError):
    """An alert that cannot be built as asked (a programming error, not a channel failure)."""


@dataclass(frozen=True)
class Alert:
    """One alert: a one-line subject, a body of lines, and a severity (critical|warning|info)."""

    subject: str
    body: str
    severity: str = "critical"

    def __post_init__(self) -> None:
        try:
            Severity(self.severity)
        except ValueError:
            allowed = ", ".join(s.value for s in Severity)
            raise AlertError(f"alert severity {self.severity!r} is not one of: {allowed}") from None
        if not str(self.subject).strip():
            raise AlertError("an alert needs a subject; say what happened in one line")


# -- what a channel may say -----------------------------------------------------------------


class _ChannelFailed(Exception):
    """A channel's failure, already worded without any secret."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


def _redact(text: str, secrets: Iterable[str]) -> str:
    for secret in sorted((s for s in secrets if s), key=len, reverse=True):
        text = text.replace(secret, _REDACTED)
    return text


def _failure(exc: BaseException, secrets: Iterable[str]) -> str:
    if isinstance(exc, _ChannelFailed):
        kind, message = exc.kind, str(exc)
    else:
        kind, message = type(exc).__name__, str(exc) or repr(exc)
    return "failed: " + _redact(compute_one_line(f"{kind}: {message}", REASON_LIMIT), secrets)


# -- channels -------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Push:
    """One push channel: its name from config.yaml and its URL from the secrets (or why not)."""

    name: str
    url: str | None
    problem: str | None

    @property
    def secrets(self) -> list[str]:
        """The URL, what follows its scheme, and each of its parts long enough to be a token."""
        if not self.url:
            return []
        rest = self.url.split("://", 1)[-1]
        parts = [p for p in re.split(r"[/:@?&=#,]", rest) if len(p) >= PUSH_TOKEN_PART]
        return [self.url, rest, *(urllib.parse.unquote(p) for p in parts), *parts]


@dataclass(frozen=True)
class _Channels:
    """The alerts section resolved: paths made absolute, secrets loaded (never shown)."""

    log_file: Path
    workbook_name: str
    email: EmailSettings
    recipients: tuple[str, ...]
    smtp_password: str | None
    smtp_password_problem: str | None
    webhook_url: str | None
    webhook_timeout: int
    push: tuple[_Push, ...]
    push_timeout: int

    @property
    def secrets(self) -> list[str]:
        """Every value that must never be written: the password, the URLs and their token parts."""
        found = [self.smtp_password or ""]
        if self.webhook_url:
            parts = urllib.parse.urlsplit(self.webhook_url)
            found += [self.webhook_url, parts.path, parts.query, parts.password or ""]
            found += [p for p in parts.path.split("/") if len(p) >= 16]  # token-like parts
        for push in self.push:
            found += push.secrets
        return [s for s in found if len(s) > 1]


def _read_secret(cfg: Config, name: str) -> tuple[str | None, str | None]:
    """Return (the secret, None) or (None, why it could not be read); never raises."""
    try:
        return load_secret(cfg, name), None
    except (SecretError, OSError, UnicodeDecodeError) as exc:  # e.g. an unreadable secrets file
        return None, compute_one_line(exc, REASON_LIMIT)


def _read_channels(cfg: Config) -> _Channels:
    """Return the configured channels; a missing secret becomes a problem, never an exception."""
    section = cfg.alerts
    log_path = Path(section.log_file)
    email = section.email
    recipients = tuple(a.strip() for a in (email.to or "").split(",") if a.strip())
    password, problem = None, None
    if recipients and email.username:
        password, problem = _read_secret(cfg, "SMTP_PASSWORD")
    url = section.webhook.url
    if not url:
        url, missing = _read_secret(cfg, "ALERT_WEBHOOK_URL")
        if missing:
            log.debug("no alert webhook: %s", missing)
    push = tuple(
        _Push(name, *_read_secret(cfg, compute_push_secret_name(name)))
        for name in section.push.channels
    )
    return _Channels(
        log_file=log_path if log_path.is_absolute() else cfg.workbook / log_path,
        workbook_name=cfg.workbook_name,
        email=email,
        recipients=recipients,
        smtp_password=password,
        smtp_password_problem=problem,
        webhook_url=url,
        webhook_timeout=section.webhook.timeout_seconds,
        push=push,
        push_timeout=section.push.timeout_seconds,
    )


def _write_log_file(path: Path, alert_id: str, alert: Alert, at: datetime) -> None:
    """Append the alert to the 0600 log file: a header line, then the body lines indented."""
    stamp = format_seconds(at)
    subject = compute_one_line(alert.subject, 1000)
    head = f"{stamp} {str(alert.severity).upper()} [{alert_id}] {subject}"
    lines = [head, *("    " + line for line in alert.body.splitlines() if line.strip())]
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.fchmod(fd, 0o600)  # a file made wider by hand is narrowed again: alerts quote the ledger
        os.write(fd, ("\n".join(lines) + "\n").encode("utf-8"))
    finally:
        os.close(fd)


def _send_email(channels: _Channels, alert: Alert, alert_id: str) -> None:
    """Send the alert by SMTP. Raises on any failure."""
    email = channels.email
    if email.username and channels.smtp_password is None:
        raise _ChannelFailed("SecretError", channels.smtp_password_problem or "no SMTP password")
    message = EmailMessage()
    message["Subject"] = (
        f"[ops-runner {channels.workbook_name}] {compute_one_line(alert.subject, 1000)}"
    )
    message["From"] = email.sender
    message["To"] = ", ".join(channels.recipients)
    message["Date"] = formatdate(usegmt=True)
    message["Message-ID"] = make_msgid(idstring=alert_id)
    message["X-Ops-Runner-Severity"] = str(alert.severity)
    message.set_content(
        f"{alert.body}\n\n-- ops-runner {channels.workbook_name}, alert {alert_id}\n"
    )
    with smtplib.SMTP(email.host, email.port, timeout=email.timeout_seconds) as smtp:
        if email.starttls:
            smtp.starttls(context=ssl.create_default_context())
        if email.username:
            smtp.login(email.username, channels.smtp_password or "")
        smtp.send_message(message)


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """A redirect would resend the alert as a GET without its body: treat it as a failure."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


def _post_webhook(channels: _Channels, alert: Alert, alert_id: str) -> None:
    """POST the alert as JSON. Raises _ChannelFailed (worded without the URL) on any failure."""
    url = channels.webhook_url or ""
    if urllib.parse.urlsplit(url).scheme not in ("http", "https"):
        raise _ChannelFailed("ValueError", "webhook: the URL is not http:// or https://")
    subject = compute_one_line(alert.subject, 1000)
    document = {
        "text": f"{subject}\n{alert.body}",
        "subject": subject,
        "severity": str(alert.severity),
        "workbook": channels.workbook_name,
        "alert_id": alert_id,
    }
    request = urllib.request.Request(
        url,
        data=json.dumps(document).encode("utf-8"),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    opener = urllib.request.build_opener(_NoRedirect)
    timeout = channels.webhook_timeout
    # The exceptions urllib raises can carry the URL (HTTPError.filename, a redirect's
    # Location): each is reworded here and its cause dropped.
    try:
        with opener.open(request, timeout=timeout) as response:
            response.read(RESPONSE_LIMIT)
            status = response.status
    except urllib.error.HTTPError as exc:
        raise _ChannelFailed("HTTPError", f"webhook: HTTP {exc.code}") from None
    except urllib.error.URLError as exc:
        if isinstance(exc.reason, TimeoutError):
            raise _ChannelFailed("TimeoutError", f"webhook: no answer within {timeout} s") from None
        raise _ChannelFailed("URLError", f"webhook: {exc.reason}") from None
    except TimeoutError:
        raise _ChannelFailed("TimeoutError", f"webhook: no answer within {timeout} s") from None
    except OSError as exc:
        raise _ChannelFailed(type(exc).__name__, f"webhook: {exc.strerror or exc}") from None
    if not 200 <= status < 300:
        raise _ChannelFailed("HTTPError", f"webhook: HTTP {status}")


@contextlib.contextmanager
def _quiet_push_libraries() -> Iterator[None]:
    """Keep apprise's and urllib3's records (they quote URLs) out of every log while inside;
    apprise's DEBUG records, which say what the socket said, reach its own result."""
    loggers = [logging.getLogger(name) for name in _QUIETED_LOGGERS]
    kept = [(logger, logger.propagate, logger.level, logging.NullHandler()) for logger in loggers]
    for logger, _, _, sink in kept:
        logger.propagate = False
        logger.addHandler(sink)  # with no handler at all, logging would print to stderr
    logging.getLogger(_QUIETED_LOGGERS[0]).setLevel(logging.DEBUG)  # apprise
    try:
        yield
    finally:
        for logger, propagate, level, sink in kept:
            logger.removeHandler(sink)
            logger.setLevel(level)
            logger.propagate = propagate


def _push_service(url: str, timeout: int) -> apprise.Apprise | None:
    """Return an apprise notifier holding the one service ``url`` names (None: apprise does not
    know the URL): one attempt, ``timeout`` seconds to connect and again to answer, nothing
    stored on disk. apprise's own deadline is off, so no send outlives the call."""
    import apprise  # only where a push goes out: see _NOTIFY_TYPES

    asset = apprise.AppriseAsset(service_timeout=0, storage_mode="memory")
    notifier = apprise.Apprise(asset=asset)
    if not notifier.add(url):
        return None
    service = notifier[0]
    service.socket_connect_timeout = service.socket_read_timeout = float(timeout)
    service.retry = 0  # as email and the webhook: an alert is sent once, its outcome recorded
    return notifier


def _push_failure(name: str, result: apprise.AppriseResult, timeout: int) -> _ChannelFailed:
    """Return apprise's failure worded by us: its own messages quote the URL's parts."""
    import apprise  # only where a push goes out: see _NOTIFY_TYPES

    said = " ".join(entry.message for entry in result.logs())
    code = re.search(r"error=(\d{3})\b", said)
    if result.status == apprise.AppriseResultStatus.TIMEOUT or "timed out" in said.lower():
        return _ChannelFailed("TimeoutError", f"push {name}: no answer within {timeout} s")
    if "connection refused" in said.lower():
        return _ChannelFailed("ConnectionRefusedError", f"push {name}: connection refused")
    if code:
        return _ChannelFailed("HTTPError", f"push {name}: HTTP {code.group(1)}")
    status = apprise.AppriseResultStatus(result.status).name
    return _ChannelFailed("PushError", f"push {name}: not delivered (apprise: {status})")


def _send_push(channels: _Channels, push: _Push, alert: Alert, alert_id: str) -> None:
    """Send the alert to one push channel through apprise. Raises _ChannelFailed (worded
    without the URL) on any failure."""
    if push.url is None:
        raise _ChannelFailed("SecretError", push.problem or f"push {push.name}: no URL")
    timeout = channels.push_timeout
    with _quiet_push_libraries():
        notifier = _push_service(push.url, timeout)
        if notifier is None:
            raise _ChannelFailed(
                "ValueError", f"push {push.name}: apprise does not know the URL; check its scheme"
            )
        result = notifier.notify(
            body=f"{alert.body}\n\n-- ops-runner {channels.workbook_name}, alert {alert_id}",
            title=f"[ops-runner {channels.workbook_name}] {compute_one_line(alert.subject, 1000)}",
            notify_type=_NOTIFY_TYPES[str(alert.severity)],
            body_format="text",  # apprise.NotifyFormat.TEXT
            log_level=logging.DEBUG,  # the socket's own words: refused, timed out
        )
    if not result:
        raise _push_failure(push.name, result, timeout)


def require_push_channels(cfg: Config) -> None:
    """Check that every push channel in ``alerts.push.channels`` has its URL among the secrets
    and that apprise knows the URL; nothing is sent. Raises SecretError naming the first
    channel without its secret, ConfigError for a URL apprise does not know."""
    for push in _read_channels(cfg).push:
        if push.url is None:
            raise SecretError(f"alerts.push.channels: {push.name}: {push.problem}")
        with _quiet_push_libraries():
            known = _push_service(push.url, cfg.alerts.push.timeout_seconds) is not None
        if not known:
            secret = compute_push_secret_name(push.name)
            raise ConfigError(
                f"config error: alerts.push.channels: {push.name}: apprise does not know the URL "
                f"in the secret {secret}; check its scheme (ntfys://, slack://, tgram://, ...)",
                "alerts.push.channels",
            )


# -- sending --------------------------------------------------------------------------------


def _alert_id(key: str | None) -> str:
    # A keyed alert gets the same id on every re-run, so its AlertSent payload repeats exactly.
    if key is None:
        return uuid.uuid4().hex[:16]
    return compute_sha256(key)[:16]


def _deliver(channels: _Channels, alert: Alert, alert_id: str) -> dict[str, str]:
    """Send through every channel and return channel -> outcome; never raises for a channel."""
    secrets = channels.secrets
    email = (lambda: _send_email(channels, alert, alert_id)) if channels.recipients else None
    webhook = (lambda: _post_webhook(channels, alert, alert_id)) if channels.webhook_url else None
    attempts = [
        ("log", lambda: _write_log_file(channels.log_file, alert_id, alert, datetime.now(UTC))),
        ("email", email),
        ("webhook", webhook),
        *(
            (PUSH_PREFIX + push.name, lambda push=push: _send_push(channels, push, alert, alert_id))
            for push in channels.push
        ),
    ]
    outcomes: dict[str, str] = {}
    for name, attempt in attempts:
        if attempt is None:
            outcomes[name] = NOT_CONFIGURED
            continue
        try:
            attempt()
        except Exception as exc:  # a channel that is down is recorded, never raised: runbook rule
            outcomes[name] = _failure(exc, secrets)
            log.warning("alert %s: channel %s %s", alert_id, name, outcomes[name])
        else:
            outcomes[name] = SENT
    return outcomes


def _send(
    cfg: Config, alert: Alert, ledger: Ledger | None, key: str | None, events: Sequence[int]
) -> tuple[dict[str, Any], bool]:
    """Return (the AlertSent payload, whether this call wrote it)."""

    alert_id = _alert_id(key)
    ledger_key = KEY_PREFIX + (key if key is not None else f"adhoc:{alert_id}")
    if ledger is not None:
        existing = ledger.get(ledger_key)
        if existing is not None:
            log.info("alert %s already sent; not sending it again", ledger_key)
            return existing.payload, False
    channels = _read_channels(cfg)
    # Bodies come from the ledger, already masked; a secret that slipped in is still cut out.
    alert = Alert(
        subject=_redact(compute_one_line(alert.subject, SUBJECT_LIMIT), channels.secrets),
        body=_redact(str(alert.body), channels.secrets),
        severity=alert.severity,
    )
    preview = getattr(cfg, "preview", False) or getattr(ledger, "preview", False)
    if preview:  # a notebook run by hand: what would go out, said here only
        log.warning("preview, not sent: %s", alert.subject)
    payload = {
        "alert_id": alert_id,
        "subject": alert.subject,
        "severity": str(alert.severity),
        "events": [int(seq) for seq in events],
        "channels": {"preview": "not sent"} if preview else _deliver(channels, alert, alert_id),
    }
    if ledger is None:
        return payload, False
    try:
        ledger.append(str(EventKind.ALERT_SENT), ledger_key, payload)
    except LedgerConflict as exc:  # another process sent it meanwhile: its record stands
        log.warning("alert %s was recorded by another run; keeping that record", ledger_key)
        return exc.existing.payload, False
    return payload, True


def send_alert(
    cfg: Config,
    alert: Alert,
    ledger: Ledger | None = None,
    key: str | None = None,
    events: Sequence[int] = (),
) -> dict[str, str]:
    """Send ``alert`` through every channel; return channel -> outcome ("log", "email", "webhook").

    Outcomes are "sent", "failed: <ExceptionType>: <message>" or "not configured"; a failed
    channel is logged at WARNING and never raised. With a ledger, records AlertSent under
    ``AlertSent:<key>`` (a one-off key when ``key`` is None); a key already recorded sends
    nothing again and returns the recorded outcomes. Raises LedgerError only when the ledger
    cannot record the outcome.
    """
    payload, _ = _send(cfg, alert, ledger, key, events)
    return dict(payload["channels"])


# -- pumping the ledger ---------------------------------------------------------------------

_RANK = {"HALT": 0, "SAFE_MODE": 1, "incident": 2, "job": 3}


def _qualifies(kind: str, payload: dict[str, Any]) -> str | None:
    """Return the event's rank name when it must be alerted, else None."""
    if kind == EventKind.STATE_CHANGED:
        target = payload.get("to")
        return str(target) if target in (State.HALT, State.SAFE_MODE) else None
    if kind == EventKind.INCIDENT_OPENED:
        return "incident"
    if kind in (EventKind.JOB_FAILED, EventKind.JOB_MISSED):
        return "job"
    return None


def _field(payload: dict[str, Any], name: str) -> str:
    return compute_one_line(payload.get(name, "?"), 300)


def _event_line(event: Any) -> str:
    """Return one line describing a qualifying ledger event for an alert's body."""
    p, kind = event.payload, event.kind
    if kind == EventKind.STATE_CHANGED:
        what = (
            f"state {_field(p, 'from')} -> {_field(p, 'to')} ({_field(p, 'trigger')}): "
            f"{_field(p, 'reason')}"
        )
    elif kind == EventKind.INCIDENT_OPENED:
        what = (
            f"incident {_field(p, 'incident_id')} [{_field(p, 'category')}]: {_field(p, 'summary')}"
        )
    elif kind == EventKind.JOB_FAILED:
        what = (
            f"job {_field(p, 'job')} failed (slot {_field(p, 'slot')}, run "
            f"{_field(p, 'run_id')}): {_field(p, 'error')}"
        )
    elif kind == EventKind.JOB_MISSED:
        what = (
            f"job {_field(p, 'job')} missed (slot {_field(p, 'slot')}, deadline "
            f"{_field(p, 'deadline')})"
        )
    else:
        what = kind
    return f"#{event.seq} {event.recorded_at} {what}"


def _headline(rank: str, event: Any) -> str:
    p = event.payload
    if rank in ("HALT", "SAFE_MODE"):
        return f"{rank}: {_field(p, 'reason')}"
    if rank == "incident":
        return f"incident {_field(p, 'incident_id')}: {_field(p, 'summary')}"
    verb = "failed" if event.kind == EventKind.JOB_FAILED else "missed its deadline"
    return f"job {_field(p, 'job')} {verb}"


def pump_alerts(cfg: Config, ledger: Ledger) -> list[dict[str, Any]]:
    """Alert once for every new SAFE_MODE/HALT transition, incident, failed or missed job.

    All qualifying events not yet in an AlertSent's ``events`` make one alert, keyed
    ``events:<first seq>-<last seq>``; the subject names the worst (HALT > SAFE_MODE >
    incident > job). Returns the AlertSent payloads written (empty when nothing was new).
    Raises LedgerError only when the ledger cannot be read or written.
    """
    covered: set[int] = set()
    pumped = 0  # every qualifying event up to here has been alerted by an earlier pump
    for sent in ledger.events(kind=str(EventKind.ALERT_SENT)):
        seqs = [s for s in sent.payload.get("events", []) if isinstance(s, int)]
        covered.update(seqs)
        if sent.key.startswith(KEY_PREFIX + PUMP_KEY_PREFIX) and seqs:
            pumped = max(pumped, *seqs)
    found: list[tuple[str, Any]] = []
    for event in ledger.events(after_seq=pumped):
        rank = _qualifies(event.kind, event.payload)
        if rank is not None and event.seq not in covered:
            found.append((rank, event))
    if not found:
        return []
    # The first of the worst kind: a later one of the same kind is usually its consequence.
    worst_rank, worst = min(found, key=lambda item: (_RANK[item[0]], item[1].seq))
    subject = _headline(worst_rank, worst)
    if len(found) > 1:
        subject += f" (+{len(found) - 1} more)"
    alert = Alert(
        subject=compute_one_line(subject, SUBJECT_LIMIT),
        body="\n".join(_event_line(event) for _, event in found),
        severity=Severity.CRITICAL,  # every event the runbook alerts on needs a person
    )
    seqs = [event.seq for _, event in found]
    payload, written = _send(cfg, alert, ledger, f"{PUMP_KEY_PREFIX}{seqs[0]}-{seqs[-1]}", seqs)
    return [payload] if written else []
