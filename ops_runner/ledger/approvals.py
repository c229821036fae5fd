"""Approval tokens: HMAC-signed, expiring, single-use permissions to leave SAFE_MODE or HALT."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

from ops_runner.core.clock import format_seconds
from ops_runner.core.errors import IncidentError, OpsError
from ops_runner.core.events import EventKind, State, Trigger
from ops_runner.ledger.states import apply_trigger, read_state
from ops_runner.ledger.store import Ledger, open_ledger
from ops_runner.workbook.config import Config, load_secret

TOKEN_PREFIX = "opsr1"
KEY_NAME = "approval_key"
MIN_KEY_LENGTH = 32


class Action(StrEnum):
    """What a token allows, bound to the one transition it names."""

    EXIT_SAFE_MODE = "exit-safe-mode"
    EXIT_HALT = "exit-halt"


# action -> (state it leaves, state it enters, the state machine's trigger)
ACTION_TRANSITIONS: dict[Action, tuple[State, State, Trigger]] = {
    Action.EXIT_SAFE_MODE: (State.SAFE_MODE, State.RUN, Trigger.APPROVED_EXIT_SAFE_MODE),
    # Leaving HALT lands in SAFE_MODE: integrity checks and a second approval still stand
    # between a halted system and new trades.
    Action.EXIT_HALT: (State.HALT, State.SAFE_MODE, Trigger.APPROVED_EXIT_HALT),
}


class ApprovalRefused(OpsError):
    """A token was refused; ``why`` is one of: malformed, forged, replayed, expired,
    wrong-action, wrong-state, key, integrity, review."""

    exit_code = 1

    def __init__(self, why: str, message: str) -> None:
        super().__init__(f"approval refused ({why}): {message}; the state is unchanged")
        self.why = why


@dataclass(frozen=True)
class Claims:
    """What a token says: its id, action, the transition it allows and for how long."""

    token_id: str
    action: Action
    from_state: State
    to_state: State
    from_seq: int
    reason: str
    review: str | None
    issued_at: datetime
    expires_at: datetime

    def to_payload(self) -> dict[str, Any]:
        return {
            "v": 1,
            "id": self.token_id,
            "action": str(self.action),
            "from": str(self.from_state),
            "to": str(self.to_state),
            "from_seq": self.from_seq,
            "reason": self.reason,
            "review": self.review,
            "issued_at": format_seconds(self.issued_at),
            "expires_at": format_seconds(self.expires_at),
        }


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _sign(key: bytes, body: str) -> str:
    return _b64(hmac.new(key, body.encode("ascii"), hashlib.sha256).digest())


def parse_ttl(text: str) -> timedelta:
    """Return the lifetime written as 90s, 30m, 1h or 2d. Raises OpsError."""
    match = re.fullmatch(r"\s*(\d+)\s*([smhd])\s*", text or "")
    if not match or int(match.group(1)) == 0:
        raise OpsError(f"--ttl: {text!r} is not a lifetime; write e.g. 30m, 1h or 2d")
    unit = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}[match.group(2)]
    return timedelta(**{unit: int(match.group(1))})


def read_approval_key(cfg: Config) -> bytes:
    """Return the signing key from $OPS_RUNNER_APPROVAL_KEY or the 0600 secrets file.

    The key never enters the ledger, a notebook or a log. Raises SecretError or ApprovalRefused.
    """
    key = load_secret(cfg, KEY_NAME)
    if len(key) < MIN_KEY_LENGTH:
        raise ApprovalRefused(
            "key",
            f"the approval key is {len(key)} characters; use at least {MIN_KEY_LENGTH} "
            "(e.g. `python -c 'import secrets; print(secrets.token_hex(32))'`)",
        )
    return key.encode("utf-8")


def issue_token(
    key: bytes,
    action: Action,
    from_seq: int,
    reason: str,
    review: str | None = None,
    ttl: timedelta = timedelta(hours=1),
    now: datetime | None = None,
) -> str:
    """Return a signed token allowing ``action`` out of the state entered at ``from_seq``."""
    if not reason.strip():
        raise OpsError("--reason: say why the system may leave its state")
    if action is Action.EXIT_HALT and not (review or "").strip():
        raise OpsError("--review: leaving HALT needs the review (post-mortem) reference")
    issued = (now or datetime.now(UTC)).replace(microsecond=0)
    from_state, to_state, _ = ACTION_TRANSITIONS[action]
    claims = Claims(
        token_id=uuid.uuid4().hex,
        action=action,
        from_state=from_state,
        to_state=to_state,
        from_seq=from_seq,
        reason=reason.strip(),
        review=(review or "").strip() or None,
        issued_at=issued,
        expires_at=issued + ttl,
    )
    body_json = json.dumps(claims.to_payload(), sort_keys=True, separators=(",", ":"))
    body = f"{TOKEN_PREFIX}.{_b64(body_json.encode('utf-8'))}"
    return f"{body}.{_sign(key, body)}"


def _read_claims(payload: Any) -> Claims:
    try:
        if payload.get("v") != 1:
            raise ValueError("version")
        return Claims(
            token_id=str(payload["id"]),
            action=Action(payload["action"]),
            from_state=State(payload["from"]),
            to_state=State(payload["to"]),
            from_seq=int(payload["from_seq"]),
            reason=str(payload["reason"]),
            review=payload.get("review"),
            issued_at=datetime.fromisoformat(payload["issued_at"]),
            expires_at=datetime.fromisoformat(payload["expires_at"]),
        )
    except (AttributeError, KeyError, TypeError, ValueError):
        raise ApprovalRefused("malformed", "the token's claims are incomplete") from None


def require_valid_token(
    key: bytes,
    token: str,
    action: Action,
    state: State,
    state_seq: int,
    used: Iterable[str],
    now: datetime | None = None,
) -> Claims:
    """Return the token's claims if it may be used now; raises ApprovalRefused saying why.

    The signature is checked (in constant time) before anything in the token is trusted.
    """
    parts = (token or "").strip().split(".")
    if len(parts) != 3 or parts[0] != TOKEN_PREFIX or not parts[1] or not parts[2]:
        raise ApprovalRefused("malformed", "not an ops-runner approval token")
    body = f"{parts[0]}.{parts[1]}"
    if not hmac.compare_digest(_sign(key, body), parts[2]):
        raise ApprovalRefused("forged", "the signature does not match this workbook's key")
    try:
        payload = json.loads(_unb64(parts[1]))
    except (binascii.Error, ValueError):
        raise ApprovalRefused("malformed", "the token's body cannot be read") from None
    claims = _read_claims(payload)
    if claims.token_id in set(used):
        raise ApprovalRefused("replayed", f"token {claims.token_id[:12]} was already used")
    if (now or datetime.now(UTC)) >= claims.expires_at:
        expired = format_seconds(claims.expires_at)
        raise ApprovalRefused("expired", f"the token expired at {expired}")
    if claims.action is not action:
        raise ApprovalRefused("wrong-action", f"the token allows {claims.action}, not {action}")
    if state is not claims.from_state or state_seq != claims.from_seq:
        raise ApprovalRefused(
            "wrong-state",
            f"the token was issued to leave the {claims.from_state} entered at ledger event "
            f"{claims.from_seq}; the system is in {state} since event {state_seq}",
        )
    return claims


def action_for_state(state: State) -> Action:
    """Return the approval that leaves ``state``; raises OpsError when it needs none."""
    for action, (from_state, _, _) in ACTION_TRANSITIONS.items():
        if from_state is state:
            return action
    raise OpsError(f"nothing to approve: the system is in {state}, which needs no approval")


def require_postmortem(ledger: Ledger, review: str | None) -> None:
    """Raise IncidentError unless ``review`` is the post-mortem reference of an incident closed
    during the current HALT (after the StateChanged that entered it). Returns None when it is."""
    view = read_state(ledger)
    reference = " ".join((review or "").split())
    if view.state is not State.HALT:
        raise IncidentError(f"the system is in {view.state}, not HALT: no post-mortem to check")
    if not reference:
        raise IncidentError(
            "leaving HALT needs the post-mortem reference of an incident closed since HALT began: "
            "`ops-runner incident close ID --resolution TEXT --postmortem REF`, then approve "
            "with --review REF"
        )
    named = [
        e.payload.get("postmortem")
        for e in ledger.events(kind=str(EventKind.INCIDENT_CLOSED), after_seq=view.seq)
    ]
    if reference not in named:
        known = ", ".join(sorted({str(n) for n in named if n})) or "none"
        raise IncidentError(
            f"review {reference!r} is not the post-mortem of an incident closed since HALT began "
            f"at event {view.seq} (closed with post-mortems: {known}); close the incident with "
            "`ops-runner incident close ID --resolution TEXT --postmortem REF` first"
        )


def require_review(ledger: Ledger, review: str | None) -> None:
    """Return None when ``review`` is the post-mortem of an incident closed since the current
    HALT began; raises ApprovalRefused("review") saying which post-mortems would do."""
    try:
        require_postmortem(ledger, review)
    except IncidentError as exc:
        raise ApprovalRefused("review", str(exc)) from None


def approve(
    cfg: Config,
    action: Action,
    reason: str,
    review: str | None = None,
    ttl: timedelta | None = None,
    now: datetime | None = None,
) -> str:
    """Return a token for ``action`` bound to the state the ledger is in now.

    Raises OpsError when the state needs another approval (or none), ApprovalRefused("review")
    when an exit-halt names no post-mortem of an incident closed in this HALT: refused here
    rather than at ``resume``, which checks it again when the token is used.
    """
    with open_ledger(cfg, create=False, readonly=True) as ledger:
        view = read_state(ledger)
        needed = action_for_state(view.state)
        if needed is not action:
            raise OpsError(f"the system is in {view.state}: the approval it needs is {needed}")
        if action is Action.EXIT_HALT and (review or "").strip():  # none: issue_token says so
            require_review(ledger, review)
    lifetime = ttl or cfg.approvals.default_ttl
    return issue_token(read_approval_key(cfg), action, view.seq, reason, review, lifetime, now)


def resume(
    cfg: Config,
    token: str,
    now: datetime | None = None,
    *,
    integrity: Callable[..., list[str]],
    key: bytes | None = None,
) -> State:
    """Use a token: record ApprovalUsed and the transition in one append. Returns the new state.

    Leaving SAFE_MODE needs ``integrity`` (``ops_runner.market.integrity.check_integrity`` in
    production, passed in because its data QA sits above the ledger) to find no problem;
    leaving HALT needs the token's review to be the post-mortem of an incident closed since the
    HALT began. Raises
    ApprovalRefused (nothing recorded, state unchanged).
    """
    signing_key = key if key is not None else read_approval_key(cfg)
    with open_ledger(cfg, create=False) as ledger:
        view = read_state(ledger)
        action = action_for_state(view.state)
        used = {str(e.payload.get("token_id")) for e in ledger.events(kind=EventKind.APPROVAL_USED)}
        claims = require_valid_token(signing_key, token, action, view.state, view.seq, used, now)
        if action is Action.EXIT_SAFE_MODE:
            problems = integrity(cfg, ledger, now) if now is not None else integrity(cfg, ledger)
            if problems:
                raise ApprovalRefused("integrity", "; ".join(problems))
        if action is Action.EXIT_HALT:
            require_review(ledger, claims.review)
        _, to_state, trigger = ACTION_TRANSITIONS[action]
        used_event = (
            str(EventKind.APPROVAL_USED),
            f"ApprovalUsed:{claims.token_id}",
            {
                "token_id": claims.token_id,
                "action": str(claims.action),
                "from": str(claims.from_state),
                "to": str(to_state),
                "reason": claims.reason,
                "review": claims.review,
                "issued_at": format_seconds(claims.issued_at),
            },
        )
        evidence = [f"token:{claims.token_id}"] + (
            [f"review:{claims.review}"] if claims.review else []
        )
        new_view = apply_trigger(
            ledger, trigger, claims.reason, evidence=evidence, extra_events=[used_event]
        )
    return new_view.state
