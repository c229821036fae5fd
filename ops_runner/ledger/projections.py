"""Projections: positions, cash, orders, state, incidents and equity folded from ledger events."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from typing import Any, Protocol

from ops_runner.core.events import EventKind, State, Trigger

ZERO = Decimal(0)


class EventLike(Protocol):
    """The fields of ``ops_runner.ledger.Event`` a projection reads (hand-built ones work too)."""

    @property
    def seq(self) -> int: ...
    @property
    def recorded_at(self) -> str: ...
    @property
    def kind(self) -> str: ...
    @property
    def payload(self) -> Mapping[str, Any]: ...


@dataclass(frozen=True)
class StateView:
    """The system state as of one StateChanged event (seq 0 and since None: no change yet)."""

    state: State
    since: str | None = None
    trigger: Trigger | None = None
    reason: str = ""
    evidence: tuple[str, ...] = ()
    seq: int = 0


INITIAL_STATE = StateView(state=State.RUN, reason="no state change recorded yet")


@dataclass(frozen=True)
class DrawdownView:
    """Equity marks in session order, their running peak, the last mark and its drawdown.

    ``drawdown`` is (peak - last) / peak as of the last session; ``max_drawdown_seen`` is the
    deepest such ratio at any mark. All zero when there are no marks.
    """

    marks: tuple[tuple[date, Decimal], ...] = ()
    peak: Decimal = ZERO
    last: Decimal = ZERO
    drawdown: Decimal = ZERO
    max_drawdown_seen: Decimal = ZERO


@dataclass(frozen=True)
class OrderView:
    """One client reference's life: the intent, whether it was submitted, status, shares filled."""

    client_ref: str
    symbol: str | None = None
    side: str | None = None
    quantity: int = 0
    purpose: str | None = None
    intended: bool = False
    submitted: bool = False
    broker_order_id: str | None = None
    status: str = "unknown"
    filled: int = 0
    denied_reason: str | None = None


def _of_kind(events: Iterable[EventLike], kind: EventKind) -> Iterable[EventLike]:
    return (e for e in events if e.kind == kind)


def _state_view(event: EventLike) -> StateView:
    payload = event.payload
    trigger = payload.get("trigger")
    return StateView(
        state=State(payload["to"]),
        since=event.recorded_at,
        trigger=Trigger(trigger) if trigger else None,
        reason=str(payload.get("reason") or ""),
        evidence=tuple(str(item) for item in payload.get("evidence") or ()),
        seq=event.seq,
    )


def compute_state(events: Iterable[EventLike]) -> StateView:
    """Return the state after the last StateChanged among ``events`` (RUN when there is none)."""
    view = INITIAL_STATE
    for event in _of_kind(events, EventKind.STATE_CHANGED):
        view = _state_view(event)
    return view


def compute_state_history(events: Iterable[EventLike]) -> list[StateView]:
    """Return one StateView per StateChanged, oldest first (the state each change entered)."""
    return [_state_view(e) for e in _of_kind(events, EventKind.STATE_CHANGED)]


def compute_fills(events: Iterable[EventLike]) -> dict[str, dict[str, Any]]:
    """Fills keyed by exec_id, first report wins; later reports only supply a missing commission.

    A broker may report one execution twice (a reconnect re-requests executions) and may send
    its commission later, as a second FillRecorded with the same exec_id and the commission set.
    """
    fills: dict[str, dict[str, Any]] = {}
    for event in _of_kind(events, EventKind.FILL_RECORDED):
        payload = event.payload
        exec_id = str(payload["exec_id"])
        known = fills.get(exec_id)
        if known is None:
            fills[exec_id] = dict(payload)
        elif known.get("commission") is None and payload.get("commission") is not None:
            known["commission"] = payload["commission"]
    return fills


def _signed_quantity(fill: Mapping[str, Any]) -> int:
    quantity = int(fill["quantity"])
    return quantity if str(fill["side"]) == "BUY" else -quantity


def compute_positions(events: Iterable[EventLike]) -> dict[str, int]:
    """Return shares held per symbol: FillRecorded (each exec_id once) plus each SplitApplied's
    change in shares (each once); flat symbols omitted."""
    events = list(events)
    positions: dict[str, int] = {}
    for fill in compute_fills(events).values():
        symbol = str(fill["symbol"])
        positions[symbol] = positions.get(symbol, 0) + _signed_quantity(fill)
    for split in compute_splits(events).values():
        symbol = str(split["symbol"])
        change = int(split["shares_after"]) - int(split["shares_before"])
        positions[symbol] = positions.get(symbol, 0) + change
    return {symbol: qty for symbol, qty in sorted(positions.items()) if qty != 0}


# The events that move cash between trades by their ``amount`` (signed: + into the account).
ACCOUNT_CASH_EVENTS = (
    EventKind.DIVIDEND_PAID,
    EventKind.TAX_WITHHELD,
    EventKind.INTEREST_BOOKED,
    EventKind.FEE_CHARGED,
)
ACCOUNT_EVENTS = (*ACCOUNT_CASH_EVENTS, EventKind.SPLIT_APPLIED, EventKind.DIVIDEND_ENTITLED)


def compute_account_events(events: Iterable[EventLike]) -> dict[tuple[str, str], Mapping]:
    """Return what happened to the account between trades (entitlements, dividends paid, tax
    withheld, splits, interest, fees) keyed by (kind, id), each once: the first wins.

    The id is the payload's ``id`` (the ledger key it was recorded under), so an event folded
    twice, or the same statement line recorded again, counts once.
    """
    found: dict[tuple[str, str], Mapping] = {}
    for event in events:
        if event.kind in ACCOUNT_EVENTS:
            key = (str(event.kind), str(event.payload.get("id") or event.seq))
            found.setdefault(key, event.payload)
    return found


def compute_splits(events: Iterable[EventLike]) -> dict[str, Mapping]:
    """Return the SplitApplied payloads by id (each once)."""
    return {
        key: payload
        for (kind, key), payload in compute_account_events(events).items()
        if kind == EventKind.SPLIT_APPLIED
    }


def compute_account_cash(events: Iterable[EventLike]) -> Decimal:
    """Return the cash moved between trades: dividends paid, tax withheld, interest, fees and
    cash in lieu of fractional shares (each event once, signed)."""
    total = ZERO
    for (kind, _), payload in compute_account_events(events).items():
        if kind in ACCOUNT_CASH_EVENTS:
            total += Decimal(str(payload["amount"]))
        elif kind == EventKind.SPLIT_APPLIED:
            total += Decimal(str(payload.get("cash_in_lieu") or "0"))
    return total


def compute_receivables(events: Iterable[EventLike]) -> dict[tuple[str, str], Decimal]:
    """Return dividends entitled and not yet paid: (symbol, ex_date) -> the amount owed (gross
    plus the expected withholding, which is negative).

    A dividend is owed from its ex-date (DividendEntitled) until its cash arrives
    (DividendPaid for the same symbol and ex-date); a broker counts it in net liquidation
    meanwhile, so the equity marks do not dip on an ex-date.
    """
    owed: dict[tuple[str, str], Decimal] = {}
    paid: set[tuple[str, str]] = set()
    for (kind, _), payload in compute_account_events(events).items():
        key = (str(payload.get("symbol")), str(payload.get("ex_date")))
        if kind == EventKind.DIVIDEND_ENTITLED:
            owed[key] = Decimal(str(payload["amount"])) + Decimal(
                str(payload.get("withholding") or "0")
            )
        elif kind == EventKind.DIVIDEND_PAID:
            paid.add(key)
    return {key: amount for key, amount in sorted(owed.items()) if key not in paid}


def compute_ledger_equity(
    events: Iterable[EventLike], closes: Mapping[str, Decimal], *, receivables: bool = True
) -> Decimal:
    """Return the ledger's total equity: cash + each position at ``closes`` + dividends owed.

    Raises KeyError naming a held symbol without a close.
    """
    events = list(events)
    value = compute_cash(events)
    for symbol, shares in compute_positions(events).items():
        value += shares * Decimal(str(closes[symbol]))
    if receivables:
        value += sum(compute_receivables(events).values(), ZERO)
    return value


def compute_cash(events: Iterable[EventLike]) -> Decimal:
    """Return cash: CashAdjusted amounts + sell proceeds - buy costs - commissions + the cash
    moved between trades (``compute_account_cash``: dividends, withholding, interest, fees,
    cash in lieu).

    Fills count once per exec_id; a fill's commission is the first non-null one reported for its
    exec_id (in the fill itself or a later FillRecorded for the same exec_id). Settlement is not
    modelled here: this is the cash the ledger has accounted for, settled or not.
    """
    events = list(events)
    cash = sum(
        (Decimal(str(e.payload["amount"])) for e in _of_kind(events, EventKind.CASH_ADJUSTED)),
        ZERO,
    )
    for fill in compute_fills(events).values():
        cash -= _signed_quantity(fill) * Decimal(str(fill["price"]))
        if fill.get("commission") is not None:
            cash -= Decimal(str(fill["commission"]))
    return cash + compute_account_cash(events)


def compute_orders(events: Iterable[EventLike]) -> dict[str, OrderView]:
    """Return each client reference's order: intent, submission, latest status, shares filled.

    Status is "intended", "denied", "submitted", then the latest OrderStatusChanged status.
    Fills count once per exec_id; fills without a client_ref (manual trades) are not orders.
    """
    events = list(events)
    orders: dict[str, dict[str, Any]] = {}

    def order(ref: str) -> dict[str, Any]:
        return orders.setdefault(ref, {"client_ref": ref})

    def describe(row: dict[str, Any], payload: Mapping[str, Any]) -> None:
        for name in ("symbol", "side", "purpose"):
            if payload.get(name) is not None:
                row[name] = str(payload[name])
        if isinstance(payload.get("quantity"), int):
            row["quantity"] = payload["quantity"]

    for event in events:
        payload = event.payload
        ref = payload.get("client_ref")
        if ref is None:
            continue
        if event.kind == EventKind.ORDER_INTENT_RECORDED:
            row = order(str(ref))
            describe(row, payload)
            row["intended"] = True
            row.setdefault("status", "intended")
        elif event.kind == EventKind.ORDER_DENIED:
            row = order(str(ref))
            describe(row, payload)
            row["denied_reason"] = str(payload.get("reason") or "")
            row["status"] = "denied"
        elif event.kind == EventKind.ORDER_SUBMITTED:
            row = order(str(ref))
            describe(row, payload)
            row["submitted"] = True
            row["denied_reason"] = None
            if payload.get("broker_order_id") is not None:
                row["broker_order_id"] = str(payload["broker_order_id"])
            row["status"] = "submitted"
        elif event.kind == EventKind.ORDER_STATUS_CHANGED:
            order(str(ref))["status"] = str(payload["status"])
    for fill in compute_fills(events).values():
        ref = fill.get("client_ref")
        if ref is not None:
            row = order(str(ref))
            row.setdefault("symbol", str(fill["symbol"]))
            row.setdefault("side", str(fill["side"]))
            row["filled"] = row.get("filled", 0) + int(fill["quantity"])
    return {ref: OrderView(**row) for ref, row in orders.items()}


def compute_open_incidents(events: Iterable[EventLike]) -> list[dict[str, Any]]:
    """Return the IncidentOpened payloads not yet closed, oldest first, with seq and opened_at."""
    opened: dict[str, dict[str, Any]] = {}
    for event in events:
        if event.kind == EventKind.INCIDENT_OPENED:
            incident_id = str(event.payload["incident_id"])
            opened.setdefault(
                incident_id, {**event.payload, "seq": event.seq, "opened_at": event.recorded_at}
            )
        elif event.kind == EventKind.INCIDENT_CLOSED:
            opened.pop(str(event.payload["incident_id"]), None)
    return sorted(opened.values(), key=lambda row: row["seq"])


def compute_approvals_used(events: Iterable[EventLike]) -> set[str]:
    """Return the token ids of every ApprovalUsed event (a token is single use)."""
    return {str(e.payload["token_id"]) for e in _of_kind(events, EventKind.APPROVAL_USED)}


def compute_equity(events: Iterable[EventLike]) -> DrawdownView:
    """Return the equity marks (one per session, the latest event wins) and their drawdown.

    Marks are taken in session order, so a late backfilled mark lands where it belongs. The
    running peak restarts after an approved exit from HALT (``ApprovalUsed`` for exit-halt):
    the reviewed account's last mark before the approval is the new baseline, otherwise every
    later mark would breach the same old peak again.
    """
    by_session: dict[date, tuple[int, Decimal]] = {}
    reset_seq = -1
    for event in events:
        if event.kind == EventKind.APPROVAL_USED and event.payload.get("action") == "exit-halt":
            reset_seq = max(reset_seq, event.seq)
        elif event.kind == EventKind.EQUITY_MARKED:
            session = date.fromisoformat(str(event.payload["session"]))
            by_session[session] = (event.seq, Decimal(str(event.payload["net_liquidation"])))
    marks = tuple((day, value) for day, (_, value) in sorted(by_session.items()))
    if not marks:
        return DrawdownView()
    counted = [(day, value) for day, (seq, value) in sorted(by_session.items()) if seq > reset_seq]
    before = [(day, value) for day, (seq, value) in sorted(by_session.items()) if seq <= reset_seq]
    if reset_seq >= 0 and before:
        counted = [before[-1], *counted]
    peak = counted[0][1] if counted else marks[-1][1]
    deepest = ZERO
    drawdown = ZERO
    for _, value in counted:
        peak = max(peak, value)
        drawdown = compute_drawdown(peak, value)
        deepest = max(deepest, drawdown)
    return DrawdownView(
        marks=marks, peak=peak, last=marks[-1][1], drawdown=drawdown, max_drawdown_seen=deepest
    )


def compute_drawdown(peak: Decimal, value: Decimal) -> Decimal:
    """Return (peak - value) / peak, or 0 when the peak is not positive."""
    if peak <= 0:
        return ZERO
    return (peak - value) / peak


def compute_last_jobs(events: Iterable[EventLike]) -> dict[str, EventLike]:
    """Return the latest JobCompleted event per job name."""
    return {str(e.payload["job"]): e for e in _of_kind(events, EventKind.JOB_COMPLETED)}
