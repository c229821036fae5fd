"""The order gate: the one choke point every order passes before any broker's place call, and the
risk-off intents a drawdown HALT lets through it."""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from decimal import ROUND_FLOOR, Decimal
from enum import StrEnum
from typing import Any

from ops_runner.core.errors import OpsError
from ops_runner.core.events import EventKind, Purpose, State, Trigger
from ops_runner.ledger import Ledger, LedgerConflict
from ops_runner.ledger.projections import StateView, compute_state
from ops_runner.ledger.states import StateError, require_decimal

# Minted fresh in every process and never stored: a GatePass can only come from this module.
_PASS_SECRET = secrets.token_bytes(32)

# States that carry SAFE_MODE's restrictions: no new risk, only risk-reducing orders.
RESTRICTED = frozenset({State.SAFE_MODE, State.DEGRADED_DATA, State.BROKER_DOWN})


class Side(StrEnum):
    """Which way an order trades."""

    BUY = "BUY"
    SELL = "SELL"


@dataclass(frozen=True)
class OrderIntent:
    """An order we want: a deterministic client reference, what to trade and why."""

    client_ref: str
    symbol: str
    side: Side
    quantity: int
    purpose: Purpose
    session: str | None = None


@dataclass(frozen=True)
class GatePass:
    """Proof that the gate allowed ``intent`` in ``state`` as of ledger event ``ledger_seq``."""

    intent: OrderIntent
    state: State
    ledger_seq: int
    signature: str


class OrderRefused(OpsError):
    """The gate refused an order (or a broker was handed no valid pass). Nothing was placed.

    Fields: ``reason``, ``client_ref``, ``state`` (None when a pass was refused at the broker).
    """

    def __init__(self, reason: str, client_ref: str, state: State | None = None) -> None:
        where = f" in {state}" if state is not None else ""
        super().__init__(f"order {client_ref} refused{where}: {reason}")
        self.reason = reason
        self.client_ref = client_ref
        self.state = state


def _is_whole(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def compute_gate_decision(
    view: StateView, intent: OrderIntent, position: int, *, kill_switch_seen: bool = False
) -> str | None:
    """Return None when ``intent`` may go to the broker in ``view``'s state, else the reason.

    ``position`` is the current long position in the intent's symbol. ``kill_switch_seen``
    says a kill switch was recorded during this HALT: then even risk-off orders stop.
    """
    if not _is_whole(intent.quantity) or intent.quantity <= 0:
        return f"quantity must be a positive whole number of shares, got {intent.quantity!r}"
    if intent.side not in (Side.BUY, Side.SELL):
        return f"side must be BUY or SELL, got {intent.side!r}"
    if intent.purpose not in tuple(Purpose):
        return f"unknown purpose {intent.purpose!r}"
    purpose = Purpose(intent.purpose)
    # A cancel withdraws an order already at the broker: it never adds exposure.
    if purpose is not Purpose.CANCEL and intent.side == Side.SELL and intent.quantity > position:
        return (
            f"SELL {intent.quantity} {intent.symbol} exceeds the long position of {position}: "
            "the gate never opens a short"
        )
    state = State(view.state)
    if state is State.RUN or purpose is Purpose.CANCEL:
        return None
    if state in RESTRICTED:
        if purpose in (Purpose.RISK_OFF, Purpose.RECONCILIATION) or intent.side == Side.SELL:
            return None
        return (
            f"{state} allows only risk-reducing orders (sells, risk-off, reconciliation); "
            f"a {purpose} {intent.side} waits for RUN"
        )
    entered_by = view.trigger or "unknown"
    if purpose is Purpose.RISK_OFF and entered_by == Trigger.DRAWDOWN_BREACH:
        if not kill_switch_seen:
            return None
        return "HALT with the kill switch seen allows only cancels, not risk-off orders"
    return f"HALT (entered by {entered_by}) allows only cancels; an approved exit is needed first"


def _sign(intent: OrderIntent, state: State, ledger_seq: int) -> str:
    message = json.dumps(
        [
            intent.client_ref,
            intent.symbol,
            str(intent.side),
            intent.quantity,
            str(intent.purpose),
            intent.session,
            str(state),
            ledger_seq,
        ],
        separators=(",", ":"),
    )
    return hmac.new(_PASS_SECRET, message.encode("utf-8"), hashlib.sha256).hexdigest()


def _json_safe(value: Any) -> Any:
    return value if _is_whole(value) or value is None else str(value)


def _kill_switch_seen_in_halt(ledger: Ledger, view: StateView) -> bool:
    if view.state is not State.HALT:
        return False
    seen = ledger.last(str(EventKind.KILL_SWITCH_SEEN))
    return seen is not None and seen.seq > view.seq


def require_gate_pass(
    ledger: Ledger, intent: OrderIntent, positions: Mapping[str, int]
) -> GatePass:
    """Return a signed GatePass for ``intent`` in the ledger's current state.

    Raises OrderRefused after recording OrderDenied (once per client_ref and state change).
    """
    view = compute_state(ledger.events(kind=str(EventKind.STATE_CHANGED)))
    position = int(positions.get(intent.symbol, 0))
    reason = compute_gate_decision(
        view, intent, position, kill_switch_seen=_kill_switch_seen_in_halt(ledger, view)
    )
    if reason is not None:
        _append_denial(ledger, intent, view, reason)
        raise OrderRefused(reason, intent.client_ref, view.state)
    head = ledger.head()
    ledger_seq = head[0] if head else 0
    return GatePass(
        intent=intent,
        state=view.state,
        ledger_seq=ledger_seq,
        signature=_sign(intent, view.state, ledger_seq),
    )


def _append_denial(ledger: Ledger, intent: OrderIntent, view: StateView, reason: str) -> None:

    payload = {
        "client_ref": intent.client_ref,
        "symbol": intent.symbol,
        "side": _json_safe(intent.side),
        "quantity": _json_safe(intent.quantity),
        "purpose": _json_safe(intent.purpose),
        "state": str(view.state),
        "reason": reason,
    }
    try:
        ledger.append(
            str(EventKind.ORDER_DENIED), f"OrderDenied:{intent.client_ref}:{view.seq}", payload
        )
    except LedgerConflict:
        # The same client_ref was already denied in this state for another reason (say the
        # position changed between retries); that denial stands and this one refuses too.
        pass


def require_valid_pass(gate_pass: object, intent: OrderIntent) -> None:
    """Return when ``gate_pass`` was minted by this process's gate for exactly ``intent``.

    Every broker's place call runs this first. Raises OrderRefused for a missing pass, one built
    by hand or altered, or one minted for another intent.
    """
    ref = getattr(intent, "client_ref", "?")
    if not isinstance(gate_pass, GatePass):
        raise OrderRefused("no gate pass: every order goes through the order gate", ref)
    if gate_pass.intent != intent:
        raise OrderRefused(
            f"the gate pass was issued for {gate_pass.intent.client_ref}, not this intent", ref
        )
    if not isinstance(gate_pass.signature, str) or not _is_whole(gate_pass.ledger_seq):
        raise OrderRefused("the gate pass is malformed", ref)
    expected = _sign(gate_pass.intent, gate_pass.state, gate_pass.ledger_seq)
    if not hmac.compare_digest(expected, gate_pass.signature):
        raise OrderRefused("the gate pass signature does not verify: not minted by the gate", ref)


# --- risk-off ------------------------------------------------------------------------------------

RISK_OFF_BUFFER = Decimal("0.02")


def compute_risk_off_intents(
    positions: Mapping[str, int],
    policy: str,
    defensive: str,
    prices: Mapping[str, Decimal],
    cash: Decimal,
    session: date | str,
) -> list[OrderIntent]:
    """Return the risk-off orders for ``policy``: sells first (by symbol), then any buy.

    none: nothing. cash: sell every long position. defensive: sell every long position but the
    defensive asset, then buy whole shares of it with the proceeds plus cash, less a 2% buffer.
    Short or flat positions are left to reconciliation. Raises StateError for an unknown policy
    or a missing or non-positive price the defensive policy needs (policy cash needs none).
    """
    day = session.isoformat() if isinstance(session, date) else str(session)
    if policy == "none":
        return []
    if policy not in ("cash", "defensive"):
        raise StateError(f"risk.risk_off: unknown policy {policy!r}; use none, defensive or cash")

    def intent(symbol: str, side: Side, quantity: int) -> OrderIntent:
        return OrderIntent(
            client_ref=f"riskoff-{day}-{symbol}-{side}",
            symbol=symbol,
            side=side,
            quantity=quantity,
            purpose=Purpose.RISK_OFF,
            session=day,
        )

    keep = defensive if policy == "defensive" else None
    sells = [
        intent(symbol, Side.SELL, int(qty))
        for symbol, qty in sorted(positions.items())
        if qty > 0 and symbol != keep
    ]
    if policy == "cash":
        return sells

    def price(symbol: str) -> Decimal:
        if symbol not in prices:
            raise StateError(
                f"risk-off: no price for {symbol}; the defensive policy needs one for every "
                "position sold and for the defensive asset (policy cash needs none)"
            )
        value = require_decimal(prices[symbol], f"price of {symbol}")
        if value <= 0:
            raise StateError(f"risk-off: price of {symbol} is {value}; it must be positive")
        return value

    proceeds = sum((price(s.symbol) * s.quantity for s in sells), Decimal(0))
    budget = (proceeds + require_decimal(cash, "cash")) * (1 - RISK_OFF_BUFFER)
    shares = int((budget / price(defensive)).to_integral_value(rounding=ROUND_FLOOR))
    return sells + ([intent(defensive, Side.BUY, shares)] if shares > 0 else [])
