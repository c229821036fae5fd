"""The simulated paper broker: file-backed books, market-on-open fills from the store, faults."""

from __future__ import annotations

import contextlib
import json
import logging
import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any

import pandas as pd

from ops_runner.brokers.base import (
    AccountValues,
    ActionLine,
    Broker,
    BrokerError,
    BrokerOrder,
    BrokerUnavailable,
    CashKind,
    CashLine,
    Commission,
    Execution,
    Health,
    OrderStatus,
    Outcome,
    PlaceResult,
    Quote,
    Quotes,
    Statement,
)
from ops_runner.brokers.gate import OrderIntent, Side
from ops_runner.core.errors import CalendarError, DataError
from ops_runner.core.files import hold_lock, write_bytes_atomic
from ops_runner.market.calendar import NY, open_calendar
from ops_runner.market.prices import compute_split_ratio, open_store

if TYPE_CHECKING:
    from ops_runner.workbook.config import Config
    from ops_runner.workbook.settings import CostsSettings

log = logging.getLogger(__name__)

BOOK_NAME = "sim.json"
LOCK_NAME = "sim.lock"
BOOK_VERSION = 1
DEFAULT_ACCOUNT = "SIM0001"
CENT = Decimal("0.01")
PERM_ID_BASE = 900_000_000  # perm ids look nothing like order ids, as at IB
# Nasdaq takes market-on-open orders until 09:28 ET: two minutes before the 09:30 open.
MOO_ENTRY_CLOSES = timedelta(minutes=2)

# The simulated venue's codes; they never leave this module except inside PlaceResult.code.
DUPLICATE_REF = "SIM103"  # duplicate order reference (IB: 103 duplicate order id)
EXCHANGE_CLOSED = "SIM201"  # order rejected: exchange closed, or no short selling
INVALID_ORDER = "SIM202"  # not a market-on-open order the venue can take

WORKING = frozenset({OrderStatus.SUBMITTED})
ROLES = ("orders", "readonly")
_DISCONNECTS = ("before_place", "after_place")


def _cents(value: Decimal) -> Decimal:
    return value.quantize(CENT, rounding=ROUND_HALF_UP)


def _decimal(value: Any) -> Decimal:
    # str() of a Python float is its shortest round-trip form: 357.8944, not 357.89439999...
    return Decimal(str(float(value)))


def compute_half_spread(costs: CostsSettings, symbol: str) -> Decimal:
    """Return the half-spread in bps the simulated brokers quote for ``symbol``:
    ``costs.quote_half_spreads[symbol]``, else ``costs.quote_half_spread_bps``. Raises
    BrokerError for a value that is not a number of bps >= 0."""
    own = symbol in costs.quote_half_spreads
    value = costs.quote_half_spreads[symbol] if own else costs.quote_half_spread_bps
    try:
        bps = Decimal(str(value))
    except InvalidOperation:
        bps = Decimal(-1)
    if isinstance(value, bool) or not bps.is_finite() or bps < 0:
        where = f"quote_half_spreads.{symbol}" if own else "quote_half_spread_bps"
        raise BrokerError(f"costs.{where}: {value!r} is not a half-spread in bps >= 0; fix "
                          "config.yaml")  # fmt: skip
    return bps


def compute_model_quote(price: Decimal, half_spread_bps: Decimal) -> tuple[Decimal, Decimal]:
    """Return (bid, ask): ``price`` less and plus ``half_spread_bps``, each to cents half-up."""
    half = half_spread_bps / Decimal(10_000)
    return _cents(price * (1 - half)), _cents(price * (1 + half))


def _without_through(book: Mapping[str, Any]) -> str:
    """Return the books as JSON without ``account_through`` (to tell a read from a change)."""
    return json.dumps({k: v for k, v in book.items() if k != "account_through"}, sort_keys=True)


def _instant(text: str) -> datetime:
    return datetime.fromisoformat(text)


@dataclass(frozen=True)
class SimFaults:
    """Faults injected by ``broker.sim_faults``; every field defaults to "behave normally"."""

    refuse_connection: bool = False
    disconnect_at: str | None = None  # before_place | after_place
    lost_ack: frozenset[str] = frozenset()
    reject: Mapping[str, tuple[str, str]] = field(default_factory=dict)  # symbol -> (code, text)
    partial: Mapping[str, Decimal] = field(default_factory=dict)  # symbol -> fraction filled
    no_fill: frozenset[str] = frozenset()
    delayed_open_minutes: int = 0
    duplicate_executions: bool = False
    clock_skew_seconds: int = 0  # the broker's server time runs this far ahead (negative: behind)
    # The venue takes a second order under a reference it already holds, as IB does with an
    # orderRef: only the workbook's own lookups then stand between a retry and a second trade
    # (the fault-matrix tests run with it, so a double send shows as two orders).
    accepts_duplicate_refs: bool = False
    # Dividends paid late (symbol -> extra sessions after the usual pay date) or never.
    late_dividends: Mapping[str, int] = field(default_factory=dict)
    missing_dividends: frozenset[str] = frozenset()

    @classmethod
    def from_config(cls, raw: Mapping[str, Any] | None) -> SimFaults:
        """Return the faults named in ``raw``. Raises BrokerError naming an unknown or bad key."""
        raw = dict(raw or {})
        known = set(cls.__dataclass_fields__)
        unknown = sorted(str(k) for k in raw if k not in known)
        if unknown:
            raise BrokerError(
                f"broker.sim_faults: unknown fault {', '.join(unknown)}; "
                f"known faults: {', '.join(sorted(known))}"
            )

        def bad(key: str, expected: str) -> BrokerError:
            return BrokerError(
                f"broker.sim_faults.{key}: expected {expected}, got {raw[key]!r}; fix config.yaml"
            )

        def flag(key: str) -> bool:
            value = raw.get(key, False)
            if not isinstance(value, bool):
                raise bad(key, "true or false")
            return value

        def symbols(key: str) -> frozenset[str]:
            value = raw.get(key, [])
            if not isinstance(value, list) or not all(isinstance(s, str) and s for s in value):
                raise bad(key, "a list of symbols such as [SPY]")
            return frozenset(value)

        def by_symbol(key: str) -> dict[str, Any]:
            value = raw.get(key, {})
            if not isinstance(value, dict) or not all(isinstance(s, str) for s in value):
                raise bad(key, "a mapping of symbol to value")
            return value

        disconnect_at = raw.get("disconnect_at")
        if disconnect_at is not None and disconnect_at not in _DISCONNECTS:
            raise bad("disconnect_at", "before_place or after_place")
        reject: dict[str, tuple[str, str]] = {}
        for symbol, message in by_symbol("reject").items():
            if not isinstance(message, str) or not message.strip():
                raise bad("reject", 'a mapping like {SPY: "201 Order rejected"}')
            code, _, text = message.strip().partition(" ")
            reject[symbol] = (code, text.strip())
        partial: dict[str, Decimal] = {}
        for symbol, fraction in by_symbol("partial").items():
            if isinstance(fraction, bool) or not isinstance(fraction, int | float):
                raise bad("partial", "a mapping of symbol to a fraction between 0 and 1")
            if not 0 <= fraction <= 1:
                raise bad("partial", "fractions between 0 and 1")
            partial[symbol] = _decimal(fraction)
        skew = raw.get("clock_skew_seconds", 0)
        if isinstance(skew, bool) or not isinstance(skew, int):
            raise bad("clock_skew_seconds", "a whole number of seconds")
        late: dict[str, int] = {}
        for symbol, sessions in by_symbol("late_dividends").items():
            if isinstance(sessions, bool) or not isinstance(sessions, int) or sessions < 1:
                raise bad("late_dividends", "a mapping of symbol to a whole number of sessions")
            late[symbol] = sessions
        delay = raw.get("delayed_open_minutes", 0)
        if isinstance(delay, bool) or not isinstance(delay, int) or delay < 0:
            raise bad("delayed_open_minutes", "a whole number of minutes >= 0")
        return cls(
            refuse_connection=flag("refuse_connection"),
            disconnect_at=disconnect_at,
            lost_ack=symbols("lost_ack"),
            reject=reject,
            partial=partial,
            no_fill=symbols("no_fill"),
            delayed_open_minutes=delay,
            duplicate_executions=flag("duplicate_executions"),
            clock_skew_seconds=skew,
            accepts_duplicate_refs=flag("accepts_duplicate_refs"),
            late_dividends=late,
            missing_dividends=symbols("missing_dividends"),
        )


class SimBroker(Broker):
    """A paper broker that fills market-on-open orders at the stored opening print.

    The books (cash, settlements, positions, orders, executions, commissions) live in
    ``paths.broker``/sim.json, apart from the ledger as a real broker's are, and survive
    restarts. Every call takes an exclusive flock on ``sim.lock`` and writes atomically.

    Rules the books follow:
    - Fills: a working order fills once its session's open (plus ``delayed_open_minutes``) is
      at or before now AND the price store holds that session's bar; without the bar it stays
      working (a late opening print). Price: the bar's open moved ``slippage_bps`` against the
      trader, rounded to cents half-up. Commission: max(commission_min, per_share * qty), to
      cents, reported apart and joined by ``exec_id``.
    - Partial fills (``partial`` fault): floor(qty * fraction) shares fill at the open; the rest
      expires with the open. The order ends as PARTIAL (final, not working) with
      filled < quantity; a fraction that fills nothing ends EXPIRED.
    - Settlement, T+1: a buy takes cash and settled cash at the fill. A sale's proceeds net of
      commission raise cash at the fill and settled cash at the open of the next session.
    - net_liquidation: cash plus each position at the close of the last session whose official
      close is at or before now (no look-ahead: before today's close, yesterday's close), plus
      the dividends accrued and not yet paid (net of withholding), as IB counts them.
    - Between trades, at each session's open and before its fills, from the price store: a
      split multiplies the position (floor; the fraction paid in cash at the prior close over
      the ratio) and the working orders' quantities; a dividend whose ex-date it is accrues on
      the shares held at the prior close (cents, half-up) and is paid ``broker.sim_account``
      ``dividend_pay_lag_sessions`` later, tax withheld at ``withholding_rate``; at a month's
      first session the previous month's interest (closing cash x ``interest_rate`` / 12) and
      ``monthly_fee`` are booked. Each is a statement line (``statement``) with its own id.
    """

    name = "sim"

    def __init__(
        self, cfg: Config, clock: Callable[[], datetime] | None = None, role: str = "orders"
    ) -> None:
        if role not in ROLES:
            raise BrokerError(f"broker role {role!r}: expected one of {', '.join(ROLES)}")
        self.role = role  # one set of books serves both roles; IB gives each its client id
        self._clock = clock or (lambda: datetime.now(UTC))
        broker = cfg.broker
        self._faults = SimFaults.from_config(broker.sim_faults)
        self._folder = cfg.path("broker")
        self._book_path = self._folder / BOOK_NAME
        self._lock_path = self._folder / LOCK_NAME
        self._account = str(broker.account or DEFAULT_ACCOUNT)
        costs = self._costs = cfg.costs
        self._per_share = _decimal(costs.commission_per_share)
        self._minimum = _decimal(costs.commission_min)
        self._slippage = _decimal(costs.slippage_bps) / Decimal(10_000)
        self._initial_cash = _cents(_decimal(cfg.research.initial_cash))
        self._source = cfg.primary_source
        self._store = open_store(cfg)
        self._calendar = open_calendar(cfg)
        self._bars: dict[str, tuple[str, pd.DataFrame]] = {}
        self._checked: set[str] = set()
        self._action_days: dict[str, tuple[pd.DataFrame, dict[date, tuple[float, float]]]] = {}
        account = broker.sim_account
        self._pay_lag = int(account.dividend_pay_lag_sessions)
        self._withholding = _decimal(account.withholding_rate)
        self._interest = _decimal(account.interest_rate)
        self._fee = _cents(_decimal(account.monthly_fee))

    def __repr__(self) -> str:
        return f"SimBroker({str(self._book_path)!r})"

    # -- session -------------------------------------------------------------------------------

    def connect(self) -> Health:
        """Return the broker's health once connected. Raises BrokerUnavailable if refused."""
        self._require_connection()
        with self._locked_book() as book:
            self._advance(book, self._now())
        return self._health(self._now())

    def health(self) -> Health:
        """Return whether a session exists (never raises for a refused connection)."""
        if self._faults.refuse_connection:
            return Health(
                connected=False,
                server_time=None,
                account=None,
                paper=True,
                detail="simulated broker refused the connection (sim_faults.refuse_connection)",
            )
        return self._health(self._now())

    def close(self) -> None:
        """Nothing to release: every call opens, locks and closes the books itself."""

    def _health(self, now: datetime) -> Health:
        return Health(
            connected=True,
            server_time=now + timedelta(seconds=self._faults.clock_skew_seconds),
            account=self._account,
            paper=True,
            detail="simulated paper broker",
            extra={"books": str(self._book_path)},
        )

    def _require_connection(self) -> None:
        if self._faults.refuse_connection:
            raise BrokerUnavailable(
                "simulated broker refused the connection (broker.sim_faults.refuse_connection); "
                "remove the fault to reconnect"
            )

    def _now(self) -> datetime:
        now = self._clock()
        if not isinstance(now, datetime) or now.tzinfo is None or now.utcoffset() is None:
            raise BrokerError(f"the simulated broker's clock gave {now!r}, not an aware datetime")
        return now.astimezone(UTC)

    # -- queries -------------------------------------------------------------------------------

    def _current(self) -> tuple[dict[str, Any], datetime]:
        """Return the books advanced to now, and now."""
        self._require_connection()
        now = self._now()
        with self._locked_book() as book:
            self._advance(book, now)
        return book, now

    def account_values(self) -> AccountValues:
        """Return net liquidation, cash and settled cash as of now."""
        book, now = self._current()
        cash = Decimal(book["cash"])
        pending = sum((Decimal(s["amount"]) for s in book["settlements"]), Decimal(0))
        marks = sum(
            (qty * self._mark(book, symbol, now) for symbol, qty in book["positions"].items()),
            Decimal(0),
        )
        accrued = sum(
            (Decimal(a["gross"]) + Decimal(a["withholding"]) for a in book["accruals"]),
            Decimal(0),
        )
        return AccountValues(
            account=self._account,
            net_liquidation=_cents(cash + marks + accrued),
            cash=cash,
            settled_cash=cash - pending,
        )

    def positions(self) -> dict[str, int]:
        """Return the long position of every symbol held (no zero rows)."""
        book, _ = self._current()
        return {s: q for s, q in sorted(book["positions"].items()) if q}

    def open_orders(self) -> list[BrokerOrder]:
        """Return the orders still working (waiting for their open, or for its print)."""
        book, _ = self._current()
        return [_order(o) for o in book["orders"] if OrderStatus(o["status"]) in WORKING]

    def completed_orders(self) -> list[BrokerOrder]:
        """Return filled, partly filled, cancelled, rejected and expired orders."""
        book, _ = self._current()
        return [_order(o) for o in book["orders"] if OrderStatus(o["status"]) not in WORKING]

    def executions(self, since: datetime | None = None) -> list[Execution]:
        """Return fills at or after ``since`` (all when None), oldest first."""
        book, _ = self._current()
        found = [_execution(e) for e in book["executions"]]
        if since is not None:
            found = [e for e in found if e.time >= since]
        if self._faults.duplicate_executions:
            found = [e for e in found for _ in range(2)]
        return found

    def commissions(self) -> list[Commission]:
        """Return one commission report per execution, joined by ``exec_id``."""
        book, _ = self._current()
        return [Commission(c["exec_id"], Decimal(c["amount"])) for c in book["commissions"]]

    def quotes(self, symbols: list[str]) -> Quotes:
        """Return a quote per symbol from the spread model: ``costs.quote_half_spread_bps``
        (or the symbol's ``quote_half_spreads``) either side of the store's last print at or
        before now (the session's open once it opened, else the last close). A symbol without
        a print is unquoted. Raises BrokerUnavailable when the connection is refused,
        BrokerError for a bad half-spread in config."""
        self._require_connection()
        now = self._now()
        quoted: dict[str, Quote] = {}
        unquoted: dict[str, str] = {}
        for symbol in sorted(set(symbols)):
            found = self._last_print(symbol, now)
            if found is None:
                unquoted[symbol] = "no print in the price store at or before now"
                continue
            price, what = found
            half = compute_half_spread(self._costs, symbol)
            bid, ask = compute_model_quote(price, half)
            quoted[symbol] = Quote(symbol, bid, ask, now, f"sim: {half} bps either side of {what}")
        return Quotes(quoted, unquoted)

    def _last_print(self, symbol: str, now: datetime) -> tuple[Decimal, str] | None:
        """Return the store's last print of ``symbol`` at or before ``now`` and what it is."""
        bars = self._load(symbol)
        if bars is None:
            return None
        today = now.astimezone(NY).date()
        try:
            opened = self._calendar.is_session(today) and now >= self._open_of(today)
            closed = self._calendar.last_closed_session(now)
        except CalendarError:
            return None
        if opened and closed != today and pd.Timestamp(today) in bars.index:
            return _decimal(bars.at[pd.Timestamp(today), "open"]), f"the {today} open"
        closes = bars["close"].loc[: pd.Timestamp(closed)]
        if not len(closes):
            return None
        return _decimal(closes.iloc[-1]), f"the {closes.index[-1].date()} close"

    # -- orders --------------------------------------------------------------------------------

    def _place(self, intent: OrderIntent) -> PlaceResult:
        """Place a market-on-open order for ``intent.session`` (its pass verified by
        ``Broker.place``); return its outcome.

        Raises BrokerUnavailable when the connection is refused or drops. REJECTED outcomes
        are definitive; UNKNOWN means look the reference up, never place again.
        """
        self._require_connection()
        if self._faults.disconnect_at == "before_place":
            raise BrokerUnavailable(
                f"connection to the simulated broker dropped before {intent.client_ref} was "
                "sent (sim_faults.disconnect_at: before_place); nothing reached the broker"
            )
        now = self._now()
        with self._locked_book() as book:
            self._advance(book, now)
            result = self._enter(book, intent, now)
        if self._faults.disconnect_at == "after_place":
            raise BrokerUnavailable(
                f"connection to the simulated broker dropped after {intent.client_ref} was sent "
                "(sim_faults.disconnect_at: after_place); look the reference up before acting"
            )
        if intent.symbol in self._faults.lost_ack:
            return PlaceResult(
                Outcome.UNKNOWN, intent.client_ref, text="acknowledgement lost (sim_faults)"
            )
        return result

    def cancel(self, client_ref: str) -> bool:
        """Cancel the working order carrying ``client_ref``; return whether one was cancelled."""
        self._require_connection()
        now = self._now()
        with self._locked_book() as book:
            self._advance(book, now)
            for order in book["orders"]:
                if order["client_ref"] == client_ref and OrderStatus(order["status"]) in WORKING:
                    order["status"] = str(OrderStatus.CANCELLED)
                    log.info("sim: cancelled %s (order %s)", client_ref, order["broker_order_id"])
                    return True
        return False

    def _enter(self, book: dict[str, Any], intent: OrderIntent, now: datetime) -> PlaceResult:
        ref = intent.client_ref
        quantity = intent.quantity
        if not isinstance(quantity, int) or isinstance(quantity, bool) or quantity <= 0:
            text = f"quantity must be a positive whole number of shares, got {quantity!r}"
            return PlaceResult(Outcome.REJECTED, ref, code=INVALID_ORDER, text=text)
        for order in book["orders"] if not self._faults.accepts_duplicate_refs else []:
            status = OrderStatus(order["status"])
            if order["client_ref"] == ref and (status in WORKING or order["filled"] > 0):
                # Not recorded: the reference already names an order; look it up instead.
                text = (
                    f"duplicate order reference {ref}: order {order['broker_order_id']} is {status}"
                )
                return PlaceResult(
                    Outcome.REJECTED, ref, order["broker_order_id"], DUPLICATE_REF, text
                )
        code, text = self._rejection(book, intent, now)
        book["next_order_id"] += 1
        order_id = str(book["next_order_id"])
        status = OrderStatus.SUBMITTED if code is None else OrderStatus.REJECTED
        book["orders"].append(
            {
                "broker_order_id": order_id,
                "perm_id": str(PERM_ID_BASE + book["next_order_id"]),
                "client_ref": ref,
                "symbol": intent.symbol,
                "side": str(intent.side),
                "quantity": quantity,
                "filled": 0,
                "status": str(status),
                "session": intent.session or "",
                "placed_at": now.isoformat(),
                "order_type": "MOO",
                "code": code,
                "text": text,
            }
        )
        if code is not None:
            log.info("sim: rejected %s: %s %s", ref, code, text)
            return PlaceResult(Outcome.REJECTED, ref, order_id, code, text)
        log.info("sim: accepted %s as order %s for %s", ref, order_id, intent.session)
        return PlaceResult(Outcome.ACCEPTED, ref, order_id)

    def _rejection(
        self, book: dict[str, Any], intent: OrderIntent, now: datetime
    ) -> tuple[str | None, str]:
        """Return (code, text) of the venue's refusal, or (None, "") when it takes the order."""
        if intent.symbol in self._faults.reject:
            return self._faults.reject[intent.symbol]
        session = intent.session
        try:
            if not session or not self._calendar.is_session(session):
                return INVALID_ORDER, f"market-on-open needs a session date, got {session!r}"
            if now >= self._entry_closes(session):
                return EXCHANGE_CLOSED, (
                    f"exchange is closed for market-on-open orders for {session} (entry "
                    f"closes 09:28 ET; now {now.astimezone(NY):%Y-%m-%d %H:%M} ET)"
                )
            nearest = self._next_open_session(now)
        except CalendarError as error:
            return INVALID_ORDER, f"market-on-open for {session!r} refused: {error}"
        if session != nearest:
            return INVALID_ORDER, (
                f"market-on-open orders are taken only for the next open ({nearest}), not {session}"
            )
        if intent.side == Side.SELL:
            held = book["positions"].get(intent.symbol, 0)
            selling = sum(
                o["quantity"] - o["filled"]
                for o in book["orders"]
                if o["symbol"] == intent.symbol
                and o["side"] == str(Side.SELL)
                and OrderStatus(o["status"]) in WORKING
            )
            if intent.quantity > held - selling:
                return EXCHANGE_CLOSED, (
                    f"no short selling: SELL {intent.quantity} {intent.symbol} exceeds the "
                    f"position of {held} less {selling} already working"
                )
        return None, ""

    def _entry_closes(self, session: Any) -> datetime:
        return self._open_of(session) - MOO_ENTRY_CLOSES

    def _next_open_session(self, now: datetime) -> str:
        """Return the session (ISO) whose market-on-open entry is the next one still open."""
        today = now.astimezone(NY).date()
        day = today if self._calendar.is_session(today) else self._calendar.next_session(today)
        if now >= self._entry_closes(day):
            day = self._calendar.next_session(day)
        return day.isoformat()

    # -- the open: fills, expiries, settlement --------------------------------------------------

    def _open_of(self, session: Any) -> datetime:
        self._calendar.is_session(session)  # builds the schedule before session_open reads it
        return self._calendar.session_open(session).to_pydatetime()

    def _fill_time(self, session: str) -> datetime:
        return self._open_of(session) + timedelta(minutes=self._faults.delayed_open_minutes)

    def _advance(self, book: dict[str, Any], now: datetime) -> None:
        """Session by session up to now: the account's events at the open, then that open's
        fills; then fill or expire every working order whose open has come; settle what is
        due."""
        self._checked.clear()  # re-read each manifest once per advance, not once per session
        through, unchanged = book.get("account_through"), _without_through(book)
        for session in self._sessions_opened(book, now):
            self._account_events(book, session)
            self._fill_working(book, now, session.isoformat())
            book["account_through"] = session.isoformat()
        self._fill_working(book, now, None)
        book["settlements"] = [s for s in book["settlements"] if _instant(s["settles_at"]) > now]
        if through is not None and _without_through(book) == unchanged:
            # Nothing happened in those sessions: a read leaves the books byte for byte as they
            # were (a preview records nothing); the next change books them from ``through`` on.
            book["account_through"] = through

    def _fill_working(self, book: dict[str, Any], now: datetime, session: str | None) -> None:
        """Fill or expire the working orders whose open has come (only ``session``'s if given)."""
        for order in book["orders"]:
            if OrderStatus(order["status"]) not in WORKING:
                continue
            if session is not None and order["session"] != session:
                continue
            filled_at = self._fill_time(order["session"])
            if now < filled_at:
                continue
            symbol = order["symbol"]
            if symbol in self._faults.no_fill:
                order["status"] = str(OrderStatus.EXPIRED)
                log.info("sim: %s expired unfilled at the open", order["client_ref"])
                continue
            opening = self._opening_print(symbol, order["session"])
            if opening is None:
                continue  # no opening print yet: the order keeps working
            quantity = order["quantity"]
            filled = quantity
            if symbol in self._faults.partial:
                filled = math.floor(quantity * self._faults.partial[symbol])
            if filled <= 0:
                order["status"] = str(OrderStatus.EXPIRED)
                continue
            self._fill(book, order, filled, opening, filled_at)
            order["status"] = str(OrderStatus.FILLED if filled == quantity else OrderStatus.PARTIAL)

    # -- between trades: splits, dividends, interest, fees ---------------------------------------

    def _sessions_opened(self, book: dict[str, Any], now: datetime) -> list[date]:
        """Return the sessions opened after ``account_through`` and at or before ``now``.

        A new account starts at the last session opened: nothing happened to it before.
        """
        today = now.astimezone(NY).date()
        last = today if self._calendar.is_session(today) else self._calendar.previous_session(today)
        if now < self._open_of(last):
            last = self._calendar.previous_session(last)
        through = book.get("account_through")
        if through is None:
            book["account_through"] = last.isoformat()
            return []
        days: list[date] = []
        day = date.fromisoformat(through)
        while True:
            day = self._calendar.next_session(day)
            if day > last:
                return days
            days.append(day)

    def _account_events(self, book: dict[str, Any], session: date) -> None:
        """Book what happens to the account at ``session``'s open, before its fills."""
        previous = self._calendar.previous_session(session)
        if previous.month != session.month:
            self._month_end(book, previous)
        # A split applies to the working orders of a symbol not held too (a buy at this open).
        working = {o["symbol"] for o in book["orders"] if OrderStatus(o["status"]) in WORKING}
        for symbol in sorted(set(book["positions"]) | working):
            split = self._actions(symbol).get(session, (0.0, 1.0))[1]
            if split != 1.0:
                self._split(book, symbol, session, previous, compute_split_ratio(split))
        for symbol in sorted(book["positions"]):
            dividend = self._actions(symbol).get(session, (0.0, 1.0))[0]
            if dividend > 0:
                self._accrue(book, symbol, session, _decimal(dividend))
        due = [a for a in book["accruals"] if a["pay_date"] and a["pay_date"] <= str(session)]
        for accrual in due:
            self._pay(book, accrual, session)
        book["accruals"] = [a for a in book["accruals"] if a not in due]

    def _line(self, book: dict[str, Any], **line: Any) -> None:
        book["cash_lines"].append(line)
        book["cash"] = str(Decimal(book["cash"]) + Decimal(line["amount"]))

    def _month_end(self, book: dict[str, Any], last_session: date) -> None:
        month = f"{last_session:%Y-%m}"
        cash = Decimal(book["cash"])
        interest = _cents(cash * self._interest / 12)
        on = self._calendar.next_session(last_session).isoformat()
        if interest:
            self._line(book, line_id=f"sim.interest.{month}", kind=str(CashKind.INTEREST),
                       amount=str(interest), on=on, symbol=None, ex_date=None,
                       description=f"interest on cash {cash} for {month}")  # fmt: skip
        if self._fee:
            self._line(book, line_id=f"sim.fee.{month}", kind=str(CashKind.FEE),
                       amount=str(-self._fee), on=on, symbol=None, ex_date=None,
                       description=f"monthly fee for {month}")  # fmt: skip

    def _split(
        self, book: dict[str, Any], symbol: str, session: date, previous: date, ratio: Decimal
    ) -> None:
        for order in book["orders"]:
            if order["symbol"] == symbol and OrderStatus(order["status"]) in WORKING:
                order["quantity"] = math.floor(order["quantity"] * ratio)
        before = book["positions"].get(symbol, 0)
        if not before:
            return
        exact = before * ratio
        after = math.floor(exact)
        prior = self._bar(symbol, previous)
        price = _decimal(prior["close"]) / ratio if prior is not None else Decimal(0)
        cash = _cents((exact - after) * price)
        book["positions"][symbol] = after
        if after == 0:
            del book["positions"][symbol]
        if cash:
            book["cash"] = str(Decimal(book["cash"]) + cash)
        book["action_lines"].append(
            {"line_id": f"sim.split.{symbol}.{session}", "symbol": symbol,
             "effective": session.isoformat(), "ratio": str(ratio), "quantity": after - before,
             "cash": str(cash),
             "description": f"{symbol} split {ratio} for 1: {before} -> {after} shares"}
        )  # fmt: skip
        log.info("sim: %s split %s on %s: %d -> %d, cash in lieu %s", symbol, ratio, session,
                 before, after, cash)  # fmt: skip

    def _accrue(self, book: dict[str, Any], symbol: str, session: date, rate: Decimal) -> None:
        shares = book["positions"][symbol]
        gross = _cents(shares * rate)
        withheld = -_cents(gross * self._withholding)
        paid = session
        for _ in range(self._pay_lag + self._faults.late_dividends.get(symbol, 0)):
            paid = self._calendar.next_session(paid)
        pay: date | None = None if symbol in self._faults.missing_dividends else paid
        book["accruals"].append(
            {"symbol": symbol, "ex_date": session.isoformat(), "shares": shares,
             "rate": str(rate), "gross": str(gross), "withholding": str(withheld),
             "pay_date": pay.isoformat() if pay else None}
        )  # fmt: skip

    def _pay(self, book: dict[str, Any], accrual: dict[str, Any], session: date) -> None:
        symbol, ex_date = accrual["symbol"], accrual["ex_date"]
        what = f"{symbol} cash dividend {accrual['rate']} per share, {accrual['shares']} shares"
        self._line(book, line_id=f"sim.div.{symbol}.{ex_date}", kind=str(CashKind.DIVIDEND),
                   amount=accrual["gross"], on=session.isoformat(), symbol=symbol,
                   ex_date=ex_date, description=what)  # fmt: skip
        if Decimal(accrual["withholding"]):
            self._line(book, line_id=f"sim.tax.{symbol}.{ex_date}",
                       kind=str(CashKind.WITHHOLDING), amount=accrual["withholding"],
                       on=session.isoformat(), symbol=symbol, ex_date=ex_date,
                       description=f"{symbol} withholding tax on {what}")  # fmt: skip

    def statement(self, start: date | None = None, end: date | None = None) -> Statement:
        """Return the account's cash lines and corporate actions from ``start`` to ``end``
        (inclusive; None: unbounded), as of now."""
        book, now = self._current()
        first, last = start or date.min, end or now.astimezone(NY).date()

        def inside(day: str) -> bool:
            return first <= date.fromisoformat(day) <= last

        cash = tuple(
            CashLine(
                line["line_id"],
                CashKind(line["kind"]),
                Decimal(line["amount"]),
                "USD",
                date.fromisoformat(line["on"]),
                line["symbol"],
                date.fromisoformat(line["ex_date"]) if line["ex_date"] else None,
                line["description"],
                json.dumps(line, sort_keys=True),
            )  # fmt: skip
            for line in book["cash_lines"]
            if inside(line["on"])
        )
        actions = tuple(
            ActionLine(
                line["line_id"],
                line["symbol"],
                date.fromisoformat(line["effective"]),
                Decimal(line["ratio"]),
                int(line["quantity"]),
                Decimal(line["cash"]),
                line["description"],
                json.dumps(line, sort_keys=True),
            )  # fmt: skip
            for line in book["action_lines"]
            if inside(line["effective"])
        )
        return Statement(self._account, first, last, cash, actions, source="sim books")

    def _actions(self, symbol: str) -> dict[date, tuple[float, float]]:
        """Return ``symbol``'s sessions with a dividend or a split: (dividend, split ratio)."""
        bars = self._load(symbol)
        if bars is None:
            return {}
        cached = self._action_days.get(symbol)
        if cached is not None and cached[0] is bars:
            return cached[1]
        rows = bars.loc[(bars["dividend"] > 0) | (bars["split"] != 1.0), ["dividend", "split"]]
        found = {day.date(): (float(d), float(r)) for day, d, r in rows.itertuples()}
        self._action_days[symbol] = (bars, found)
        return found

    def _bar(self, symbol: str, session: date) -> pd.Series | None:
        bars = self._load(symbol)
        day = pd.Timestamp(session)
        if bars is None or day not in bars.index:
            return None
        return bars.loc[day]

    def _fill(
        self, book: dict[str, Any], order: dict[str, Any], qty: int, opening: Decimal, at: datetime
    ) -> None:
        buying = order["side"] == str(Side.BUY)
        price = _cents(opening * (1 + self._slippage if buying else 1 - self._slippage))
        commission = _cents(max(self._minimum, self._per_share * qty))
        session = order["session"]
        exec_id = f"sim.{session}.{order['broker_order_id']}.1"
        value = price * qty
        cash = Decimal(book["cash"])
        positions = book["positions"]
        if buying:
            book["cash"] = str(cash - value - commission)
            positions[order["symbol"]] = positions.get(order["symbol"], 0) + qty
        else:
            proceeds = value - commission
            book["cash"] = str(cash + proceeds)
            positions[order["symbol"]] = positions.get(order["symbol"], 0) - qty
            settles_at = self._open_of(self._calendar.next_session(session))
            book["settlements"].append(
                {"exec_id": exec_id, "amount": str(proceeds), "settles_at": settles_at.isoformat()}
            )
        if positions[order["symbol"]] == 0:
            del positions[order["symbol"]]
        order["filled"] = qty
        book["executions"].append(
            {
                "exec_id": exec_id,
                "client_ref": order["client_ref"],
                "broker_order_id": order["broker_order_id"],
                "symbol": order["symbol"],
                "side": order["side"],
                "quantity": qty,
                "price": str(price),
                "time": at.isoformat(),
                "session": session,
            }
        )
        book["commissions"].append({"exec_id": exec_id, "amount": str(commission)})
        log.info("sim: %s %s %d %s at %s", exec_id, order["side"], qty, order["symbol"], price)

    # -- prices --------------------------------------------------------------------------------

    def _load(self, symbol: str) -> pd.DataFrame | None:
        """Return the stored raw bars of ``symbol`` (cached by file checksum), None if absent."""
        cached = self._bars.get(symbol)
        if cached is not None and symbol in self._checked:
            return cached[1]
        try:
            sha = self._store.read_manifest(self._source, symbol).get("stored_sha256", "")
            self._checked.add(symbol)
            if cached is not None and cached[0] == sha:
                return cached[1]
            bars = self._store.load_bars(self._source, symbol)
        except DataError as error:
            log.warning("sim: no usable bars for %s: %s", symbol, error)
            return None
        self._bars[symbol] = (sha, bars)
        return bars

    def _opening_print(self, symbol: str, session: str) -> Decimal | None:
        bars = self._load(symbol)
        day = pd.Timestamp(session)
        if bars is None or day not in bars.index:
            return None
        return _decimal(bars.at[day, "open"])

    def _mark(self, book: dict[str, Any], symbol: str, now: datetime) -> Decimal:
        bars = self._load(symbol)
        if bars is not None:
            closed = pd.Timestamp(self._calendar.last_closed_session(now))
            closes = bars["close"].loc[:closed]
            if len(closes):
                return _decimal(closes.iloc[-1])
        fills = [e for e in book["executions"] if e["symbol"] == symbol]
        if fills:
            return Decimal(fills[-1]["price"])
        raise BrokerError(f"simulated broker cannot mark {symbol}: no close and no fill for it")

    # -- the books on disk ---------------------------------------------------------------------

    def _new_book(self) -> dict[str, Any]:
        return {
            "version": BOOK_VERSION,
            "account": self._account,
            "cash": str(self._initial_cash),
            "settlements": [],
            "positions": {},
            "next_order_id": 0,
            "orders": [],
            "executions": [],
            "commissions": [],
            "accruals": [],
            "cash_lines": [],
            "action_lines": [],
        }

    @contextlib.contextmanager
    def _locked_book(self) -> Iterator[dict[str, Any]]:
        """Yield the books under an exclusive lock; write them back (atomically) if changed.

        An exception inside the block leaves the file as it was.
        """
        self._folder.mkdir(parents=True, exist_ok=True)
        with hold_lock(self._lock_path):
            before = self._book_path.read_bytes() if self._book_path.exists() else None
            book = self._new_book() if before is None else self._decode(before)
            yield book
            after = json.dumps(book, indent=1, sort_keys=True).encode("utf-8") + b"\n"
            if after != before:
                write_bytes_atomic(self._book_path, after)

    def _decode(self, data: bytes) -> dict[str, Any]:
        try:
            book = json.loads(data)
            Decimal(book["cash"])
        except (ValueError, KeyError, TypeError, InvalidOperation) as error:
            raise BrokerError(
                f"the simulated broker's books {self._book_path} are unreadable ({error}); "
                "restore them from the last backup"
            ) from None
        if book.get("version") != BOOK_VERSION:
            raise BrokerError(
                f"{self._book_path} has books version {book.get('version')!r}, this code reads "
                f"{BOOK_VERSION}; upgrade ops-runner or restore a matching backup"
            )
        for name in ("accruals", "cash_lines", "action_lines"):
            book.setdefault(name, [])  # books written before the account's events existed
        if book.get("account") != self._account:
            raise BrokerError(
                f"{self._book_path} holds the books of account {book.get('account')!r}, but "
                f"broker.account is {self._account!r}; point paths.broker at that account's books"
            )
        return book


def _order(raw: dict[str, Any]) -> BrokerOrder:
    values = {name: raw[name] for name in BrokerOrder.__dataclass_fields__}
    return BrokerOrder(**{**values, "status": OrderStatus(raw["status"])})


def _execution(raw: dict[str, Any]) -> Execution:
    values = {name: raw[name] for name in Execution.__dataclass_fields__}
    return Execution(**{**values, "price": Decimal(raw["price"]), "time": _instant(raw["time"])})
