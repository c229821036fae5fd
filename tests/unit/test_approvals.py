"""Approval tokens: each way a token can be wrong is refused with its own message."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from datetime import UTC, datetime, timedelta

import pytest

from ops_runner.core.errors import OpsError
from ops_runner.core.events import State
from ops_runner.ledger.approvals import (
    Action,
    ApprovalRefused,
    issue_token,
    parse_ttl,
    require_valid_token,
)

KEY = b"k" * 40
NOW = datetime(2026, 3, 2, 14, 0, tzinfo=UTC)


def token(action=Action.EXIT_SAFE_MODE, seq=7, ttl=timedelta(hours=1), review=None, key=KEY):
    return issue_token(key, action, seq, "data fixed, QA clean", review, ttl, NOW)


def check(tok, action=Action.EXIT_SAFE_MODE, state=State.SAFE_MODE, seq=7, used=(), now=NOW):
    return require_valid_token(KEY, tok, action, state, seq, used, now)


def refused(why: str, *args, **kwargs) -> str:
    with pytest.raises(ApprovalRefused) as caught:
        check(*args, **kwargs)
    assert caught.value.why == why
    assert "state is unchanged" in str(caught.value)
    return str(caught.value)


def test_token_when_valid_returns_its_claims():
    claims = check(token(), now=NOW + timedelta(minutes=59))
    assert claims.action is Action.EXIT_SAFE_MODE
    assert (claims.from_state, claims.to_state, claims.from_seq) == (State.SAFE_MODE, State.RUN, 7)
    assert claims.expires_at == NOW + timedelta(hours=1)


def test_token_when_signed_with_another_key_is_forged():
    refused("forged", token(key=b"x" * 40))


def test_token_when_body_altered_is_forged():
    prefix, body, signature = token().split(".")
    claims = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    claims["expires_at"] = "2099-01-01T00:00:00Z"
    raw = json.dumps(claims, sort_keys=True, separators=(",", ":")).encode()
    forged = base64.urlsafe_b64encode(raw).rstrip(b"=").decode()
    refused("forged", f"{prefix}.{forged}.{signature}")


def test_token_when_signature_valid_but_body_not_json_is_malformed():
    body = "opsr1." + base64.urlsafe_b64encode(b"not json").rstrip(b"=").decode()
    mac = hmac.new(KEY, body.encode(), hashlib.sha256).digest()
    signature = base64.urlsafe_b64encode(mac).rstrip(b"=").decode()
    refused("malformed", f"{body}.{signature}")


@pytest.mark.parametrize("text", ["", "hello", "opsr1..", "opsr2.abc.def", "a.b.c.d"])
def test_token_when_not_a_token_is_malformed(text):
    refused("malformed", text)


def test_token_when_expired_is_refused():
    message = refused("expired", token(), now=NOW + timedelta(hours=1))
    assert "2026-03-02T15:00:00Z" in message


def test_token_when_used_before_is_replayed():
    tok = token()
    claims = check(tok)
    refused("replayed", tok, used={claims.token_id})


def test_token_when_for_another_action_is_refused():
    tok = token(action=Action.EXIT_HALT, review="PM-12")
    refused("wrong-action", tok, action=Action.EXIT_SAFE_MODE)


def test_token_when_state_episode_differs_is_refused():
    refused("wrong-state", token(seq=7), seq=9)
    refused("wrong-state", token(seq=7), state=State.HALT)


def test_issue_token_when_exit_halt_without_review_refuses():
    with pytest.raises(OpsError, match="review"):
        token(action=Action.EXIT_HALT)


def test_tokens_when_issued_twice_have_distinct_ids():
    assert check(token()).token_id != check(token()).token_id


@pytest.mark.parametrize(
    ("text", "expected"),
    [("90s", timedelta(seconds=90)), ("30m", timedelta(minutes=30)), ("1h", timedelta(hours=1)),
     ("2d", timedelta(days=2))],
)  # fmt: skip
def test_parse_ttl_when_written_with_unit_returns_lifetime(text, expected):
    assert parse_ttl(text) == expected


@pytest.mark.parametrize("text", ["", "1", "h", "0m", "1w", "-1h"])
def test_parse_ttl_when_bad_refuses(text):
    with pytest.raises(OpsError, match="--ttl"):
        parse_ttl(text)
