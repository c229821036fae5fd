"""Reconciliation: after the open, record the broker's fills once and find the cycle's breaks."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timedelta
from decimal import Decimal
from enum import StrEnum
from typing import Any

from ops_runner.brokers.base import (
    Broker,
    BrokerOrder,
    Commission,
    Execution,
    OrderStatus,
    find_order,
)
from ops_runner.brokers.gate import OrderIntent, Side
from ops_runner.core.canonical import canonical_json, compute_json_ready
from ops_runner.core.errors import DataError, OpsError
from ops_runner.core.events import EventKind, Purpose, State, Trigger
from ops_runner.core.faults import inject
from ops_runner.core.hashing import compute_sha256
from ops_runner.execution.books import book_account
from ops_runner.execution.breaks import Break, BreakKind
from ops_runner.execution.quotes import QuoteMoment, write_quotes
from ops_runner.ledger import Ledger
from ops_runner.ledger.projections import (
    OrderView,
    compute_cash,
    compute_fills,  # the one dedup rule: first report wins, a later one only adds a commission
    compute_open_incidents,
    compute_orders,
    compute_positions,
)
from ops_runner.ledger.states import apply_trigger, read_state
from ops_runner.market.calendar import NY, open_calendar
from ops_runner.market.prices import compute_split_ratio, open_store
from ops_runner.workbook.config import Config

log = logging.getLogger(__name__)

CHECK = "reconciliation"
REF_PREFIX = "mr"  # a rebalance order's reference: mr:{cycle}:{symbol}:{side} (execution)
CENT = Decimal("0.01")
WORKING = frozenset({OrderStatus.SUBMITTED, OrderStatus.PARTIAL})
_ORDER_KINDS = {EventKind.ORDER_INTENT_RECORDED, EventKind.ORDER_SUBMITTED, EventKind.ORDER_DENIED}
_PRICE = Decimal("0.0001")
Item = tuple[str, str, dict[str, Any]]


class ReconciliationError(OpsError):
    """Reconciliation cannot run as asked (a naive clock, a day that is not a session)."""


class ReconciliationStatus(StrEnum):
    """What one reconciliation run came to."""

    WAIT = "WAIT"  # before open + delay, or orders/commissions still due before the limit
    CLEAN = "CLEAN"  # every intent filled as intended; positions and cash agree
    BREAKS = "BREAKS"  # at least one break: SAFE_MODE and an incident
    UNRESOLVED = "UNRESOLVED"  # breaks at or past open + limit: HALT


@dataclass(frozen=True)
class FillRow:
    """One intent of the cycle: intended vs filled, its prices, and slippage vs the open.

    ``slippage_bps`` is a cost: positive when a buy paid above (a sell got below) the session's
    opening print. ``decision_close`` is the decision session's raw close from the price store
    (what execution sized with), else the Decision Record's ``prices_used`` for that session
    (back-adjusted as of that session, so equal to the raw close but for a same-day dividend).
    """

    client_ref: str
    symbol: str
    side: str
    intended: int
    filled: int
    avg_price: Decimal | None
    commission: Decimal | None  # None while any of its fills still lacks a commission
    decision_close: Decimal | None
    open_print: Decimal | None
    slippage_bps: Decimal | None
    status: str  # the broker's order status, else the ledger's


@dataclass(frozen=True)
class ReconciliationTimes:
    """The session's open, when reconciliation may judge (open + delay), and the limit."""

    open: datetime
    ready_at: datetime
    deadline: datetime


@dataclass(frozen=True)
class ReconciliationReport:
    """The outcome of one ``reconcile`` call; ``recorded`` lists the ledger keys it wrote."""

    cycle_id: str
    session: str
    status: ReconciliationStatus
    as_of: datetime
    times: ReconciliationTimes
    state: State
    rows: tuple[FillRow, ...] = ()
    breaks: tuple[Break, ...] = ()
    pending: tuple[str, ...] = ()  # why it waits
    expected_positions: dict[str, int] = field(default_factory=dict)
    broker_positions: dict[str, int] = field(default_factory=dict)
    expected_cash: Decimal | None = None
    broker_cash: Decimal | None = None
    cash_tolerance: Decimal | None = None
    net_liquidation: Decimal | None = None
    recorded: tuple[str, ...] = ()
    incident_id: str | None = None  # this cycle's open reconciliation incident, if any

    @property
    def residual_weight(self) -> Decimal | None:
        """Broker cash / net liquidation: what the buffer, whole shares and skips left over."""
        if self.broker_cash is None or not self.net_liquidation:
            return None
        return (self.broker_cash / self.net_liquidation).quantize(_PRICE)

    def summary(self) -> str:
        """Return one line: cycle, session, status and the first break or reason to wait."""
        head = f"reconciliation {self.cycle_id} (session {self.session}): {self.status}"
        if self.breaks:
            more = f" (+{len(self.breaks) - 1} more)" if len(self.breaks) > 1 else ""
            return f"{head}, {len(self.breaks)} break(s): {self.breaks[0].detail}{more}"
        return f"{head}: {self.pending[0]}" if self.pending else head

    def to_frame(self) -> Any:
        """Return the fills table (a DataFrame indexed by client reference, one row per intent)."""
        import pandas as pd

        rows = [vars(r) for r in self.rows]
        return pd.DataFrame(rows, columns=list(FillRow.__dataclass_fields__)).set_index(
            "client_ref"
        )

    def breaks_frame(self) -> Any:
        """Return the breaks as a DataFrame, one row each."""
        import pandas as pd

        rows = [compute_json_ready(b) for b in self.breaks]
        return pd.DataFrame(rows, columns=list(Break.__dataclass_fields__))

    def positions_frame(self) -> Any:
        """Return ledger vs broker shares per symbol (broker None: no position reported)."""
        import pandas as pd

        ours, theirs = self.expected_positions, self.broker_positions
        rows = [(s, ours.get(s, 0), theirs.get(s)) for s in sorted(set(ours) | set(theirs))]
        return pd.DataFrame(rows, columns=["symbol", "ledger", "broker"]).set_index("symbol")

    def to_payload(self) -> dict[str, Any]:
        """Return the report as JSON-ready values (decimal strings, ISO instants, no floats)."""
        residual = compute_json_ready(self.residual_weight)
        extra = {"summary": self.summary(), "residual_weight": residual}
        return {**compute_json_ready(self), **extra}


# -- pure parts ----------------------------------------------------------------------------------


def compute_times(cfg: Config, order_session: date | str) -> ReconciliationTimes:
    """Return the session's open, open + ``schedule.reconciliation_delay_minutes`` and open +
    ``execution.reconciliation_limit_minutes`` (UTC). Raises ReconciliationError for a day that
    is not a session, CalendarError outside the calendar's coverage."""
    calendar = open_calendar(cfg)
    if not calendar.is_session(order_session):
        raise ReconciliationError(f"{order_session} is not a session: no open to reconcile")
    opened = calendar.session_open(order_session).to_pydatetime()
    delay = cfg.schedule.reconciliation_delay
    # Not in ExecutionSettings: those are the plan's sizing rules, recorded in every plan's
    # payload, which a field more would change.
    limit = timedelta(minutes=int(cfg.values["execution"]["reconciliation_limit_minutes"]))
    return ReconciliationTimes(opened, opened + delay, opened + max(delay, limit))


def compute_cycle_orders(events: Sequence[Any], cycle_id: str) -> dict[str, OrderView]:
    """Return the cycle's orders by client reference: every intent, submission or denial recorded
    under the cycle's id or carrying its reference prefix ``mr:{cycle_id}:``."""
    prefix = f"{REF_PREFIX}:{cycle_id}:"
    refs = {
        str(e.payload["client_ref"])
        for e in events
        if e.kind in _ORDER_KINDS
        and e.payload.get("client_ref")
        and (getattr(e, "cycle_id", None) == cycle_id or e.payload["client_ref"].startswith(prefix))
    }
    orders = compute_orders(events)
    return {ref: orders[ref] for ref in sorted(refs)}


def compute_adoptions(
    events: Sequence[Any],
    cycle: Mapping[str, OrderView],
    broker_orders: tuple[Sequence[BrokerOrder], Sequence[BrokerOrder]],
) -> list[Item]:
    """Return OrderSubmitted (adopted) for each intent of the cycle that the ledger never saw
    submitted and the broker holds under its client reference: the outcome of a place call
    whose process died before recording it (a killed kernel, a power cut).

    The payload is the one the submission itself records when it finds an order by its
    reference, so a later execution run finds the event and adds nothing. A reference matching
    more than one broker order is left alone: the order checks report it.
    """
    intents = {str(e.payload["client_ref"]): e.payload for e in events
               if e.kind == EventKind.ORDER_INTENT_RECORDED}  # fmt: skip
    every = [*broker_orders[0], *broker_orders[1]]
    items: list[Item] = []
    for ref, view in cycle.items():
        if view.submitted or ref not in intents:
            continue
        payload = intents[ref]
        intent = _as_intent(ref, view, str(payload.get("session") or ""))
        ids = sorted({o.broker_order_id for o in find_order(every, intent)} if intent else set())
        if len(ids) == 1:
            adopted = {**payload, "broker_order_id": ids[0], "adopted": True}
            items.append((str(EventKind.ORDER_SUBMITTED), f"OrderSubmitted:{ref}", adopted))
            log.warning("adopted %s: broker order %s, placed but never recorded", ref, ids[0])
    return items


def compute_execution_refs(
    executions: Iterable[Execution], orders: Mapping[str, OrderView], cycle: Iterable[str]
) -> dict[str, tuple[str | None, str]]:
    """Return exec_id -> (client reference, how it was matched).

    By the execution's own reference when the ledger knows it; else by broker order id from
    OrderSubmitted (IB drops orderRef on some reports); else, for an execution with no
    reference, by (symbol, side) when exactly one intent of ``cycle`` fits. Otherwise the
    reference is what the broker sent (None if empty), matched by "none".
    """
    by_order_id = {v.broker_order_id: ref for ref, v in orders.items() if v.broker_order_id}
    result: dict[str, tuple[str | None, str]] = {}
    for ex in executions:
        fits = [
            ref for ref in sorted(cycle)
            if not ex.client_ref and orders[ref].symbol == ex.symbol and orders[ref].side == ex.side
        ]  # fmt: skip
        if ex.client_ref and ex.client_ref in orders:
            result[ex.exec_id] = (ex.client_ref, "client_ref")
        elif ex.broker_order_id and ex.broker_order_id in by_order_id:
            result[ex.exec_id] = (by_order_id[ex.broker_order_id], "broker_order_id")
        elif len(fits) == 1:
            result[ex.exec_id] = (fits[0], "symbol_side")
        else:
            result[ex.exec_id] = (ex.client_ref or None, "none")
    return result


def _fill_payload(ex: Execution, ref: str | None, how: str, fee: Decimal | None) -> dict:
    return {"exec_id": ex.exec_id, "client_ref": ref, "symbol": ex.symbol, "side": ex.side,
            "quantity": ex.quantity, "price": ex.price, "commission": fee, "session": ex.session,
            "broker_order_id": ex.broker_order_id, "time": ex.time, "matched_by": how}  # fmt: skip


def _numbers(fill: Execution | Mapping[str, Any]) -> tuple[str, str, int, Decimal]:
    if isinstance(fill, Execution):
        return fill.symbol, fill.side, fill.quantity, fill.price
    price = Decimal(str(fill["price"]))
    return str(fill["symbol"]), str(fill["side"]), int(fill["quantity"]), price


def _changed(ex: Execution, before: tuple[str, str, int, Decimal]) -> Break:
    was, now = f"{before[2]} @ {before[3]}", f"{ex.quantity} @ {ex.price}"
    return Break(BreakKind.FILL_CHANGED, ex.symbol, was, now,
                 f"execution {ex.exec_id} ({ex.symbol} {ex.side}) reported as {was} and as {now}; "
                 "the first report stands", ex.client_ref or None)  # fmt: skip


def compute_fill_events(
    executions: Iterable[Execution],
    commissions: Iterable[Commission],
    known: Mapping[str, Mapping[str, Any]],
    refs: Mapping[str, tuple[str | None, str]],
) -> tuple[list[Item], list[Break]]:
    """Return the FillRecorded events still to record and the breaks the reports show.

    An execution counts once per exec_id (a replayed or duplicate report is dropped). A
    commission joins its execution by exec_id whenever it arrives: in the fill when both are
    new, else as ``FillRecorded:{exec_id}:commission`` repeating the fill with the commission
    set (``compute_cash`` counts it once). An exec_id reported again with other numbers, or a
    second commission of another amount, is a break and never recorded over the first.
    """
    breaks: list[Break] = []
    fee: dict[str, Decimal] = {}
    for c in commissions:
        if fee.setdefault(c.exec_id, c.amount) != c.amount:
            breaks.append(Break(BreakKind.COMMISSION_CHANGED, None, fee[c.exec_id], c.amount,
                                f"execution {c.exec_id}: commission reported as {fee[c.exec_id]} "
                                f"and as {c.amount}"))  # fmt: skip
    unique: dict[str, Execution] = {}
    for ex in sorted(executions, key=lambda e: (e.time, e.exec_id)):
        first = unique.setdefault(ex.exec_id, ex)
        if _numbers(first) != _numbers(ex):
            breaks.append(_changed(ex, _numbers(first)))
    items: list[Item] = []
    for exec_id, ex in unique.items():
        ref, how = refs.get(exec_id, (ex.client_ref or None, "none"))
        recorded = known.get(exec_id)
        if recorded is None:
            payload = _fill_payload(ex, ref, how, fee.get(exec_id))
            items.append((str(EventKind.FILL_RECORDED), f"FillRecorded:{exec_id}", payload))
            continue
        if _numbers(recorded) != _numbers(ex):
            breaks.append(_changed(ex, _numbers(recorded)))
        had = recorded.get("commission")
        if had is None and exec_id in fee:
            payload = {**recorded, "commission": fee[exec_id]}
            key = f"FillRecorded:{exec_id}:commission"
            items.append((str(EventKind.FILL_RECORDED), key, payload))
        elif had is not None and exec_id in fee and Decimal(str(had)) != fee[exec_id]:
            breaks.append(Break(BreakKind.COMMISSION_CHANGED, ex.symbol, Decimal(str(had)),
                                fee[exec_id], f"execution {exec_id}: commission {had} recorded, "
                                f"the broker now reports {fee[exec_id]}", ref))  # fmt: skip
    return items, breaks


def check_positions(expected: Mapping[str, int], reported: Mapping[str, int]) -> list[Break]:
    """Return a break per symbol where the broker's position is not the ledger's.

    A symbol the ledger holds that the broker does not list is a break of its own: no report is
    not a flat position. A symbol flat on both sides agrees, listed or not.
    """
    breaks = []
    for symbol in sorted(set(expected) | set(reported)):
        want = expected.get(symbol, 0)
        if symbol not in reported and want != 0:
            breaks.append(Break(BreakKind.POSITION_NOT_REPORTED, symbol, want, None,
                                f"broker reported no position for {symbol}; "
                                f"ledger expects {want}"))  # fmt: skip
        elif symbol in reported and reported[symbol] != want:
            breaks.append(Break(BreakKind.POSITION, symbol, want, reported[symbol],
                                f"broker holds {reported[symbol]} {symbol}; "
                                f"ledger expects {want}"))  # fmt: skip
    return breaks


def check_cash(expected: Decimal, reported: Decimal, tolerance: Decimal) -> list[Break]:
    """Return a cash break when the broker's cash is off the ledger's by more than
    ``tolerance`` (a cent per order of the cycle)."""
    if abs(reported - expected) <= tolerance:
        return []
    return [Break(BreakKind.CASH, None, expected, reported,
                  f"broker cash {reported}; ledger expects {expected} "
                  f"(off by {reported - expected}, tolerance {tolerance})")]  # fmt: skip


def compute_planned_positions(
    events: Iterable[Any], cycle_id: str, splits: Mapping[str, Decimal] | None = None
) -> dict[str, int] | None:
    """Return where the cycle's plan of record leaves each symbol (shares held when planned,
    plus the order's shares: a skipped line keeps what it held), or None with no plan. A
    symbol in ``splits`` (split at the order session's open) has both scaled, whole shares."""
    planned = [e for e in events if e.kind == EventKind.ORDERS_PLANNED
               and e.payload.get("cycle_id") == cycle_id]  # fmt: skip
    if not planned:
        return None
    sign, splits = {"BUY": 1, "SELL": -1}, splits or {}

    def scaled(symbol: str, shares: int) -> int:
        return math.floor(shares * splits[symbol]) if symbol in splits else shares

    return {
        str(line["symbol"]): scaled(str(line["symbol"]), int(line["current"]))
        + sign.get(str(line.get("side")), 0)
        * scaled(str(line["symbol"]), int(line.get("quantity") or 0))
        for line in planned[-1].payload["lines"]
    }


def compute_session_splits(events: Iterable[Any], session: str) -> dict[str, Decimal]:
    """Return the ratio of each split booked with ``session`` as its effective date."""
    return {
        str(e.payload["symbol"]): Decimal(str(e.payload["ratio"]))
        for e in events
        if e.kind == EventKind.SPLIT_APPLIED and str(e.payload.get("effective")) == session
    }


def compute_split_orders(
    orders: Mapping[str, OrderView], splits: Mapping[str, Decimal]
) -> dict[str, OrderView]:
    """Return the orders with the quantity of each split symbol's scaled to whole shares."""
    return {
        ref: replace(view, quantity=math.floor(view.quantity * splits[str(view.symbol)]))
        if str(view.symbol) in splits
        else view
        for ref, view in orders.items()
    }


def check_targets(
    targets: Mapping[str, str],
    planned: Mapping[str, int] | None,
    reported: Mapping[str, int],
    explained: Iterable[str] = (),
) -> list[Break]:
    """Return a break per symbol where the account is not where the cycle meant it to be.

    Against the plan of record when there is one (an intent the gate denied or nobody sent
    leaves the account short: a break with both numbers, not a clean report of what little
    was sent); without a plan, against the decision's targets: held where the decision holds
    nothing, or nothing held where it targets a weight. ``explained`` symbols already carry an
    order's break and get no second one.
    """
    breaks, skip = [], set(explained)
    if planned is not None:
        for symbol in sorted(set(planned) - skip):
            want, held = planned[symbol], int(reported.get(symbol, 0))
            if held != want:
                weight = targets.get(symbol, "0")
                breaks.append(Break(BreakKind.TARGET, symbol, want, held,
                                    f"{symbol}: the cycle's plan ends at {want} shares (decision "
                                    f"weight {weight}), the account holds {held}: short of the "
                                    "decision's targets"))  # fmt: skip
        return breaks
    wanted = {s for s, w in targets.items() if Decimal(str(w)) > 0}
    holding = {s for s, q in reported.items() if q}
    for symbol in sorted((wanted ^ holding) - skip):
        breaks.append(Break(BreakKind.TARGET, symbol, targets.get(symbol, "0"),
                            int(reported.get(symbol, 0)),
                            f"{symbol}: no orders were planned for the cycle; the decision's "
                            f"weight is {targets.get(symbol, '0')}, the account holds "
                            f"{int(reported.get(symbol, 0))}"))  # fmt: skip
    return breaks


def _as_intent(ref: str, view: OrderView, session: str) -> OrderIntent | None:
    if view.symbol is None or view.side not in ("BUY", "SELL"):
        return None
    purpose = view.purpose if view.purpose in tuple(Purpose) else Purpose.REBALANCE
    return OrderIntent(ref, view.symbol, Side(view.side), view.quantity, Purpose(purpose), session)


def _fill_row(ref: str, view: OrderView, fills: list[Mapping[str, Any]], status: str,
              close: Decimal | None, opening: Decimal | None) -> FillRow:  # fmt: skip
    shares = sum(int(f["quantity"]) for f in fills)
    paid = sum((int(f["quantity"]) * Decimal(str(f["price"])) for f in fills), Decimal(0))
    avg = (paid / shares).quantize(_PRICE) if shares else None
    fees = [f.get("commission") for f in fills]
    commission = sum((Decimal(str(c)) for c in fees), Decimal(0)) if None not in fees else None
    slippage = None
    if avg is not None and opening:
        cost = (avg - opening) if view.side == "BUY" else (opening - avg)
        slippage = (cost / opening * 10_000).quantize(CENT)
    return FillRow(ref, str(view.symbol), str(view.side), view.quantity, shares, avg,
                   commission if fills else None, close, opening, slippage, status)  # fmt: skip


def check_orders(
    orders: Mapping[str, OrderView],
    fills: Mapping[str, Mapping[str, Any]],
    broker_orders: tuple[Sequence[BrokerOrder], Sequence[BrokerOrder]],
    session: str,
    past_deadline: bool,
    prices: tuple[Mapping[str, Decimal], Mapping[str, Decimal]] = ({}, {}),
) -> tuple[list[FillRow], list[Break], list[str]]:
    """Return (a row per intent, breaks, reasons to wait): target vs filled, intent by intent.

    ``broker_orders`` is (open orders, completed orders); ``prices`` is (decision closes, open
    prints) by symbol. An order still working at the broker before the limit is a reason to
    wait, never a missing fill: opens can be late. A denied intent was never sent, so any fill
    of it is an overfill. A fill of ``session`` still without its commission is a reason to wait
    before the limit and a break at it.
    """
    open_orders, completed = broker_orders
    rows, breaks, pending = [], [], []
    by_ref: dict[str | None, list[Mapping[str, Any]]] = {}
    for fill in fills.values():
        by_ref.setdefault(fill.get("client_ref"), []).append(fill)
    for ref, view in orders.items():
        mine = by_ref.get(ref, [])
        filled = sum(int(f["quantity"]) for f in mine)
        want = 0 if view.status == "denied" else view.quantity
        intent = _as_intent(ref, view, session)
        seen = find_order([*open_orders, *completed], intent) if intent else []
        working = any(o.status in WORKING for o in seen if o in open_orders)
        status = str(seen[-1].status if seen else view.status)
        status = "denied" if view.status == "denied" else status
        rows.append(_fill_row(ref, view, mine, status, prices[0].get(str(view.symbol)),
                              prices[1].get(str(view.symbol))))  # fmt: skip
        what = f"{view.side} {view.quantity} {view.symbol} ({ref})"
        if filled > want:
            breaks.append(Break(BreakKind.OVERFILL, view.symbol, want, filled,
                                f"{what}: filled {filled}, intended {want}", ref))  # fmt: skip
        elif filled < want and working and not past_deadline:
            pending.append(f"{what}: {filled} of {want} filled, order still working at the broker")
        elif filled < want and working:
            breaks.append(Break(BreakKind.ORDER_WORKING, view.symbol, want, filled,
                                f"{what}: still working at the broker at the limit, "
                                f"{filled} of {want} filled", ref))  # fmt: skip
        elif filled < want:
            where = f"broker status {status}" if seen else "the broker has no such order"
            kind = BreakKind.PARTIAL_FILL if filled else BreakKind.MISSING_FILL
            breaks.append(Break(kind, view.symbol, want, filled,
                                f"{what}: filled {filled} of {want} ({where})", ref))  # fmt: skip
    for exec_id, fill in sorted(fills.items()):
        if fill.get("session") == session and fill.get("commission") is None:
            line = f"execution {exec_id} ({fill['symbol']} {fill['side']}) has no commission yet"
            if not past_deadline:
                pending.append(line)
            else:
                breaks.append(Break(BreakKind.COMMISSION_MISSING, str(fill["symbol"]), None, None,
                                    f"{line} at the limit", fill.get("client_ref")))  # fmt: skip
    return rows, breaks, pending


def compute_record_closes(events: Iterable[Any], cycle_id: str) -> tuple[str | None, dict]:
    """Return (decision session, close per symbol from ``prices_used``) of the cycle's last
    Decision Record, or (None, {}) when the cycle has none."""
    records = [
        e.payload
        for e in events
        if e.kind == EventKind.DECISION_RECORDED and e.payload.get("cycle_id") == cycle_id
    ]
    if not records:
        return None, {}
    record, closes = records[-1], {}
    for symbol, pairs in record["decision"].get("prices_used", {}).items():
        for day, price in pairs:
            if day == record["session"]:
                closes[symbol] = Decimal(str(price))
    return str(record["session"]), closes


def compute_record_targets(events: Iterable[Any], cycle_id: str) -> dict[str, str] | None:
    """Return the target weights of the cycle's last Decision Record, or None without one."""
    records = [e.payload for e in events if e.kind == EventKind.DECISION_RECORDED
               and e.payload.get("cycle_id") == cycle_id]  # fmt: skip
    return dict(records[-1]["decision"]["targets"]) if records else None


def read_session_prices(
    cfg: Config, symbols: Iterable[str], column: str, session: str | None
) -> dict[str, Decimal]:
    """Return ``column`` ("open", "close") of ``session`` per symbol from the price store's
    primary source; a symbol without that bar is left out (the table shows it blank)."""
    import pandas as pd

    if session is None:
        return {}
    store, source, day = open_store(cfg), cfg.primary_source, pd.Timestamp(session)
    prices = {}
    for symbol in sorted(set(symbols)):
        try:
            bars = store.load_bars(source, symbol)
        except DataError:
            continue
        if day in bars.index:
            prices[symbol] = Decimal(repr(float(bars.at[day, column]))).quantize(_PRICE)
    return prices


def read_session_splits(cfg: Config, symbols: Iterable[str], session: str) -> dict[str, Decimal]:
    """Return the ratio of each of ``symbols`` the price store splits at ``session``'s open."""

    splits = {}
    for symbol, raw in read_session_prices(cfg, symbols, "split", session).items():
        if raw != 1:
            splits[symbol] = compute_split_ratio(float(raw))
    return splits


def _digest(payload: Mapping[str, Any]) -> str:
    return compute_sha256(canonical_json(payload))[:16]


# -- the job -------------------------------------------------------------------------------------


def reconcile(
    cfg: Config,
    ledger: Ledger,
    broker: Broker,
    cycle_id: str,
    order_session: str,
    now: datetime,
    *,
    alert: Callable[[str], None] | None = None,
    run_id: str | None = None,
) -> ReconciliationReport:
    """Reconcile cycle ``cycle_id``'s orders for ``order_session``; return the report.

    Before open + delay: WAIT, the broker not asked, nothing recorded. Then new executions are
    recorded (once per exec_id, commissions joined when they come); an order still working or a
    commission still due before the limit: WAIT. Else target vs filled, positions and cash are
    compared. Clean: CheckRecorded passed. Breaks: CheckRecorded failed + IncidentOpened +
    SAFE_MODE, then ``alert(summary)``; at or past the limit: UNRESOLVED and HALT. The same
    findings are acted on once: a second run writes nothing. Raises ReconciliationError (naive
    ``now``, not a session), BrokerUnavailable (nothing written) and the ledger's errors.
    """

    if now.tzinfo is None or now.utcoffset() is None:
        raise ReconciliationError(f"now {now.isoformat()} is naive; give the clock a time zone")
    session = str(order_session)
    times = compute_times(cfg, session)
    report = ReconciliationReport(cycle_id, session, ReconciliationStatus.WAIT, now, times,
                                  read_state(ledger).state)  # fmt: skip
    if now < times.ready_at:
        wait = f"too early: reconciliation judges from {times.ready_at.isoformat()} (open + delay)"
        return replace(report, pending=(wait,))
    past_deadline = now >= times.deadline

    # Ask the broker everything first: a broker that drops mid-way leaves nothing half written.
    since = datetime.combine(date.fromisoformat(session), datetime.min.time(), tzinfo=NY)
    executions, commissions = broker.executions(since), broker.commissions()
    broker_orders = (broker.open_orders(), broker.completed_orders())
    reported, account = dict(broker.positions()), broker.account_values()

    events = list(ledger.events())
    adopted = compute_adoptions(events, compute_cycle_orders(events, cycle_id), broker_orders)
    if adopted:  # placed at the broker by a run that died before recording it: adopt first
        ledger.append_many(adopted, run_id=run_id, cycle_id=cycle_id)
        events = list(ledger.events())
    cycle = compute_cycle_orders(events, cycle_id)
    refs = compute_execution_refs(executions, compute_orders(events), cycle)
    items, breaks = compute_fill_events(executions, commissions, compute_fills(events), refs)
    recorded = [key for _, key, _ in adopted + items]
    if items:
        ledger.append_many(items, run_id=run_id, cycle_id=cycle_id)
        events = list(ledger.events())
    inject("reconciliation:after_fills")
    # Just after the open: the quotes the fills are judged against (once per cycle).
    symbols = [str(v.symbol) for v in cycle.values() if v.symbol]
    write_quotes(ledger, broker, cycle_id, session, QuoteMoment.OPEN, symbols, run_id=run_id)
    for ex in {e.exec_id: e for e in executions}.values():
        ref = refs[ex.exec_id][0]
        if ex.session == session and ref not in cycle:
            breaks.append(Break(BreakKind.UNEXPECTED_FILL, ex.symbol, 0, ex.quantity,
                                f"execution {ex.exec_id} ({ex.side} {ex.quantity} {ex.symbol}, "
                                f"ref {ref or 'none'}) is no intent of cycle {cycle_id}",
                                ref))  # fmt: skip
    books = book_account(cfg, ledger, broker, now, account=account, run_id=run_id)
    if books.recorded:
        events = list(ledger.events())
    breaks += books.breaks
    decided, closes = compute_record_closes(events, cycle_id)
    closes.update(read_session_prices(cfg, symbols, "close", decided))
    prices = (closes, read_session_prices(cfg, symbols, "open", session))
    fills = compute_fills(events)
    # A split at the order session's open scales the working orders at the broker (as IB does):
    # the cycle's intents and plan are judged on the same basis.
    splits = read_session_splits(cfg, symbols, session)
    splits.update(compute_session_splits(events, session))
    judged = compute_split_orders(cycle, splits)
    rows, more, pending = check_orders(judged, fills, broker_orders, session, past_deadline, prices)
    breaks += more
    expected_positions, expected_cash = compute_positions(events), compute_cash(events)
    tolerance = CENT * max(1, len(cycle))
    report = replace(
        report, rows=tuple(rows), pending=tuple(pending), expected_positions=expected_positions,
        broker_positions=reported, expected_cash=expected_cash, broker_cash=account.cash,
        cash_tolerance=tolerance, net_liquidation=account.net_liquidation,
        recorded=tuple(recorded), incident_id=_open_incident(events, cycle_id),
    )  # fmt: skip
    if pending and not breaks:
        log.info("%s", report.summary())
        return report
    breaks += check_positions(expected_positions, reported)
    breaks += check_cash(expected_cash, account.cash, tolerance)
    if (targets := compute_record_targets(events, cycle_id)) is not None:
        explained = {str(b.symbol) for b in breaks if b.symbol}
        planned = compute_planned_positions(events, cycle_id, splits)
        breaks += check_targets(targets, planned, reported, explained)
    status = ReconciliationStatus.CLEAN
    if breaks:
        status = ReconciliationStatus.UNRESOLVED if past_deadline else ReconciliationStatus.BREAKS
    report = replace(report, status=status, breaks=tuple(breaks))
    return _record_outcome(ledger, report, alert, run_id)


def _record_outcome(
    ledger: Ledger,
    report: ReconciliationReport,
    alert: Callable[[str], None] | None,
    run_id: str | None,
) -> ReconciliationReport:
    """Record the check; on breaks also the incident and the state change, then alert."""

    cycle_id, breaks, kind = report.cycle_id, report.breaks, str(EventKind.CHECK_RECORDED)
    check = {
        "check": CHECK, "passed": not breaks, "detail": report.summary(),
        "evidence": [b.detail for b in breaks], "cycle_id": cycle_id, "session": report.session,
        "status": str(report.status), "breaks": compute_json_ready(breaks),
        "fills": compute_json_ready(report.rows),
        "expected_positions": report.expected_positions,
        "broker_positions": report.broker_positions,
        "expected_cash": report.expected_cash, "broker_cash": report.broker_cash,
    }  # fmt: skip
    recorded = list(report.recorded)
    if not breaks:
        key = f"Reconciliation:{cycle_id}"
        if ledger.get(key) is None:  # passed once is passed: later figures do not re-record it
            ledger.append(kind, key, check, run_id=run_id, cycle_id=cycle_id)
            recorded.append(key)
        return replace(report, recorded=tuple(recorded))
    key = f"Reconciliation:{cycle_id}:{str(report.status).lower()}:{_digest(check)}"
    if ledger.get(key) is not None:  # these very findings were recorded and acted on already
        return report
    extra = [(kind, key, check)]
    incident_id = report.incident_id
    if incident_id is None:
        incident_id = f"recon-{cycle_id}"
        if ledger.get(f"IncidentOpened:{incident_id}") is not None:  # opened and closed before
            incident_id = f"{incident_id}-{key.rsplit(':', 1)[-1][:8]}"
        incident = {"incident_id": incident_id, "category": CHECK, "summary": report.summary(),
                    "evidence": check["evidence"][:20]}  # fmt: skip
        extra.append((str(EventKind.INCIDENT_OPENED), f"IncidentOpened:{incident_id}", incident))
    unresolved = report.status is ReconciliationStatus.UNRESOLVED
    trigger = Trigger.RECONCILIATION_UNRESOLVED if unresolved else Trigger.INCIDENT
    view = apply_trigger(ledger, trigger, report.summary(), evidence=check["evidence"][:20],
                         run_id=run_id, extra_events=extra, cycle_id=cycle_id)  # fmt: skip
    recorded += [k for _, k, _ in extra]
    report = replace(report, state=view.state, recorded=tuple(recorded), incident_id=incident_id)
    log.warning("%s", report.summary())
    if alert is not None:
        try:
            alert(report.summary())
        except Exception:  # the ledger holds the finding; a failed alert must not hide it
            log.exception("reconciliation alert failed for %s", cycle_id)
    return report


def _open_incident(events: Iterable[Any], cycle_id: str) -> str | None:
    """Return the id of this cycle's open reconciliation incident, or None."""
    ids = [str(i["incident_id"]) for i in compute_open_incidents(events)]
    return next((i for i in ids if f"{i}-".startswith(f"recon-{cycle_id}-")), None)
