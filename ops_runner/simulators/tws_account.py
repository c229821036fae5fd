"""The simulated IB account behind the TWS simulator: the venue (Market), orders, fills, cash."""

from __future__ import annotations

import threading
import zlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, time, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import NamedTuple, Protocol
from zoneinfo import ZoneInfo

NY = ZoneInfo("America/New_York")
CENT = Decimal("0.01")
OPEN = time(9, 30)
CLOSE = time(16, 0)
MOO_CUTOFF = time(9, 28)  # the venue takes market-on-open orders until two minutes before
PERM_ID_BASE = 1_200_000_000  # perm ids are large and look nothing like order ids, as at IB

# IB order status words (the simulator speaks them; the adapter maps them).
PRE_SUBMITTED = "PreSubmitted"
SUBMITTED = "Submitted"
FILLED = "Filled"
CANCELLED = "Cancelled"
INACTIVE = "Inactive"
WORKING = frozenset({PRE_SUBMITTED, SUBMITTED})


class Bar(NamedTuple):
    """One daily bar as the market hands it to the simulator's reqHistoricalData."""

    date: date
    open: float
    high: float
    low: float
    close: float
    volume: float


class Market(Protocol):
    """What the simulated venue knows about sessions and prices."""

    def session_for(self, moment: datetime) -> date | None:
        """The session whose open a MOO order entered at ``moment`` is for; None: refused."""
        ...

    def open_instant(self, session: date) -> datetime:
        """The session's opening instant (UTC aware, 09:30 New York)."""
        ...

    def opening_price(self, symbol: str, session: date) -> Decimal | None:
        """The price a MOO order of ``session`` fills at; None while the print is unknown."""
        ...

    def commission(self, symbol: str, quantity: int, price: Decimal) -> Decimal:
        """The commission charged for one fill."""
        ...

    def daily_bars(self, symbol: str, adjusted: bool) -> list[Bar]:
        """Daily bars, raw (split-adjusted) or fully adjusted; [] for an unknown symbol."""
        ...

    def mark(self, symbol: str, moment: datetime) -> Decimal | None:
        """The last close at or before ``moment`` (portfolio value); None when unknown."""
        ...

    def sessions_opened(self, after: date | None, moment: datetime) -> list[date]:
        """The sessions opened after ``after`` and at or before ``moment``, oldest first
        (``after`` None: only the last one opened)."""
        ...

    def corporate_action(self, symbol: str, session: date) -> CorporateAction | None:
        """The dividend and split of ``symbol`` at ``session``'s open, if any."""
        ...

    def quote(self, symbol: str, moment: datetime) -> tuple[Decimal, Decimal] | None:
        """The bid and ask of ``symbol`` at ``moment`` (a market-data snapshot); None: none."""
        ...


class CorporateAction(NamedTuple):
    """A dividend (per share, after the split) and a split (new shares per old) at an open,
    the prior close, and the session the dividend is paid on."""

    dividend: Decimal
    split: Decimal
    prior_close: Decimal
    pay_date: date


def compute_open_instant(session: date) -> datetime:
    """09:30 New York on ``session``, as an aware UTC datetime."""
    return datetime.combine(session, OPEN, NY).astimezone(UTC)


def compute_con_id(symbol: str) -> int:
    """A stable IB-like contract id for ``symbol`` (the same on every run)."""
    return 10_000_000 + zlib.crc32(symbol.encode()) % 800_000_000


def _price(value: Decimal | float | str) -> Decimal:
    return value if isinstance(value, Decimal) else Decimal(str(value))


class StaticMarket:
    """A dict-backed Market for tests: explicit sessions, opening prints and daily bars.

    ``opens`` maps session -> symbol -> opening price (slippage included); a session listed
    in ``sessions`` but missing a symbol in ``opens`` has no known print yet, so MOO orders
    for it stay working until a test calls ``set_opening``. ``sessions`` defaults to the keys
    of ``opens``. ``bars`` holds raw daily bars per symbol, ``adjusted_bars`` the adjusted
    ones (default: the raw ones). Commission: ``per_share`` a share, at least ``minimum``,
    at most 1% of the fill's value, rounded to the cent (IB's fixed pricing).
    ``mark`` is the latest print at or before the moment: a bar's close or an opening print.
    ``quotes`` maps symbol -> (bid, ask), the snapshot a market-data request gets (none for a
    symbol not listed).
    """

    def __init__(
        self,
        opens: Mapping[date, Mapping[str, Decimal | float | str]] | None = None,
        *,
        sessions: Iterable[date] | None = None,
        bars: Mapping[str, Sequence[Bar]] | None = None,
        adjusted_bars: Mapping[str, Sequence[Bar]] | None = None,
        per_share: Decimal = Decimal("0.005"),
        minimum: Decimal = Decimal("1.00"),
        quotes: Mapping[str, tuple[Decimal | float | str, Decimal | float | str]] | None = None,
    ) -> None:
        self._opens = {s: {k: _price(v) for k, v in m.items()} for s, m in (opens or {}).items()}
        self._sessions = sorted(set(sessions if sessions is not None else self._opens))
        self._bars = {k: [Bar(*b) for b in v] for k, v in (bars or {}).items()}
        adjusted = adjusted_bars if adjusted_bars is not None else bars
        self._adjusted = {k: [Bar(*b) for b in v] for k, v in (adjusted or {}).items()}
        self.per_share = per_share
        self.minimum = minimum
        self._quotes = {k: (_price(b), _price(a)) for k, (b, a) in (quotes or {}).items()}

    @property
    def sessions(self) -> list[date]:
        """The venue's sessions, ascending."""
        return list(self._sessions)

    def set_opening(self, session: date, symbol: str, price: Decimal | float | str) -> None:
        """Publish the opening print of ``symbol`` for ``session``."""
        self._opens.setdefault(session, {})[symbol] = _price(price)

    def session_for(self, moment: datetime) -> date | None:
        local = moment.astimezone(NY)
        if local.date() in self._sessions and MOO_CUTOFF <= local.time() < CLOSE:
            return None
        for session in self._sessions:
            if session > local.date() or (session == local.date() and local.time() < OPEN):
                return session
        return None

    def open_instant(self, session: date) -> datetime:
        return compute_open_instant(session)

    def opening_price(self, symbol: str, session: date) -> Decimal | None:
        return self._opens.get(session, {}).get(symbol)

    def commission(self, symbol: str, quantity: int, price: Decimal) -> Decimal:
        fee = max(self.minimum, self.per_share * abs(quantity))
        fee = min(fee, abs(quantity) * price / 100) if price > 0 else fee
        return fee.quantize(CENT, rounding=ROUND_HALF_UP)

    def daily_bars(self, symbol: str, adjusted: bool) -> list[Bar]:
        return list((self._adjusted if adjusted else self._bars).get(symbol, []))

    def sessions_opened(self, after: date | None, moment: datetime) -> list[date]:
        opened = [s for s in self._sessions if compute_open_instant(s) <= moment]
        if after is None:
            return opened[-1:]
        return [s for s in opened if s > after]

    def corporate_action(self, symbol: str, session: date) -> CorporateAction | None:
        return None  # a static venue pays no dividends and splits nothing

    def set_quote(
        self, symbol: str, bid: Decimal | float | str, ask: Decimal | float | str
    ) -> None:
        """Quote ``symbol`` at ``bid`` / ``ask`` from now on."""
        self._quotes[symbol] = (_price(bid), _price(ask))

    def quote(self, symbol: str, moment: datetime) -> tuple[Decimal, Decimal] | None:
        return self._quotes.get(symbol)  # the same at every moment: a test sets what it wants

    def mark(self, symbol: str, moment: datetime) -> Decimal | None:
        # The latest print at or before the moment: a bar's close (16:00) or an opening print.
        prints = [
            (datetime.combine(b.date, CLOSE, NY), _price(b.close))
            for b in self._bars.get(symbol, [])
        ] + [
            (compute_open_instant(s), self._opens[s][symbol])
            for s in self._opens
            if symbol in self._opens[s]
        ]
        known = sorted((t, p) for t, p in prints if t <= moment)
        return known[-1][1] if known else None


@dataclass
class SimOrder:
    """An order the simulated account accepted (a snapshot when read through the simulator)."""

    order_id: int
    client_id: int
    perm_id: int
    symbol: str
    action: str  # BUY | SELL
    quantity: int
    order_ref: str
    session: date | None
    status: str  # PreSubmitted | Submitted | Filled | Cancelled | Inactive
    placed_at: datetime
    account: str
    order_type: str = "MKT"
    tif: str = "OPG"
    filled: int = 0
    avg_fill_price: Decimal = Decimal(0)
    last_fill_price: Decimal = Decimal(0)
    completed_at: datetime | None = None

    @property
    def con_id(self) -> int:
        return compute_con_id(self.symbol)

    @property
    def remaining(self) -> int:
        return 0 if self.status not in WORKING else self.quantity - self.filled


@dataclass
class SimExecution:
    """One fill of the simulated account."""

    exec_id: str
    order_id: int
    client_id: int
    perm_id: int
    order_ref: str
    symbol: str
    side: str  # BOT | SLD
    shares: int
    price: Decimal
    time: datetime
    cum_qty: int
    avg_price: Decimal
    account: str
    # Charged to cash at the fill; None until the commission report is sent. The
    # commission_missing fault charges it but never reports it (commission stays None).
    commission: Decimal | None = None
    charged: Decimal = Decimal(0)
    realized_pnl: Decimal = Decimal(0)

    @property
    def con_id(self) -> int:
        return compute_con_id(self.symbol)


@dataclass
class _Settlement:
    amount: Decimal
    settles_at: datetime | None  # None: settled at once


@dataclass
class Account:
    """Orders, executions, positions and cash of one simulated account, behind one lock.

    Settlement rule: a buy's cost and every commission leave TotalCashValue and SettledCash
    at the fill; a sale's proceeds raise TotalCashValue at the fill and SettledCash at the
    open of the next session (T+1): the session ``market.session_for`` names twelve hours
    after the fill. When the market names none, the proceeds settle at once.
    """

    name: str
    cash: Decimal
    positions: dict[str, int] = field(default_factory=dict)
    avg_cost: dict[str, Decimal] = field(default_factory=dict)
    orders: list[SimOrder] = field(default_factory=list)
    executions: list[SimExecution] = field(default_factory=list)
    settlements: list[_Settlement] = field(default_factory=list)
    lock: threading.RLock = field(default_factory=threading.RLock)
    # Dividends owed (symbol, ex-date, gross, pay date) and the last session whose open's
    # corporate actions were applied.
    accruals: list[tuple[str, date, Decimal, date]] = field(default_factory=list)
    through: date | None = None
    _next_perm: int = PERM_ID_BASE
    _next_exec: int = 0

    def new_perm_id(self) -> int:
        with self.lock:
            self._next_perm += 1
            return self._next_perm

    def next_order_id(self) -> int:
        """The smallest order id larger than every order id the account has seen."""
        with self.lock:
            return max((o.order_id for o in self.orders), default=0) + 1

    def find(self, client_id: int, order_id: int) -> SimOrder | None:
        with self.lock:
            return next(
                (o for o in self.orders if o.client_id == client_id and o.order_id == order_id),
                None,
            )

    def working(self) -> list[SimOrder]:
        with self.lock:
            return [o for o in self.orders if o.status in WORKING]

    def completed(self) -> list[SimOrder]:
        with self.lock:
            return [o for o in self.orders if o.status not in WORKING]

    def settled_cash(self, now: datetime) -> Decimal:
        with self.lock:
            pending = sum(
                (s.amount for s in self.settlements if s.settles_at and s.settles_at > now),
                Decimal(0),
            )
            return self.cash - pending

    def record_fill(
        self,
        order: SimOrder,
        shares: int,
        price: Decimal,
        when: datetime,
        fee: Decimal,
        settles_at: datetime | None,
    ) -> SimExecution:
        """Book a fill of ``shares`` at ``price``: order, position, cash, settlement."""
        with self.lock:
            self._next_exec += 1
            sign = 1 if order.action == "BUY" else -1
            held = self.positions.get(order.symbol, 0)
            cost = self.avg_cost.get(order.symbol, Decimal(0))
            realized = Decimal(0)
            if sign > 0:
                total = held + shares
                self.avg_cost[order.symbol] = (
                    (cost * held + price * shares) / total if total else Decimal(0)
                )
            else:
                realized = (price - cost) * shares - fee
            self.positions[order.symbol] = held + sign * shares
            if self.positions[order.symbol] == 0:
                self.avg_cost.pop(order.symbol, None)
            value = price * shares
            self.cash += -value - fee if sign > 0 else value - fee
            if sign < 0:
                self.settlements.append(_Settlement(value, settles_at))
            new_filled = order.filled + shares
            order.avg_fill_price = (order.avg_fill_price * order.filled + value) / new_filled
            order.filled = new_filled
            order.last_fill_price = price
            stamp = int(when.timestamp())
            execution = SimExecution(
                exec_id=f"{order.con_id & 0xFFFFFFFF:08x}.{stamp:08x}.{self._next_exec:02d}.01",
                order_id=order.order_id,
                client_id=order.client_id,
                perm_id=order.perm_id,
                order_ref=order.order_ref,
                symbol=order.symbol,
                side="BOT" if sign > 0 else "SLD",
                shares=shares,
                price=price,
                time=when,
                cum_qty=new_filled,
                avg_price=order.avg_fill_price,
                account=self.name,
                charged=fee,
                realized_pnl=realized.quantize(CENT, rounding=ROUND_HALF_UP),
            )
            self.executions.append(execution)
            return execution

    def apply_corporate_actions(self, market: Market, through: date, now: datetime) -> None:
        """Apply each opened session's corporate actions up to ``through``, as IB does before
        the open: a split multiplies positions (floor; the fraction paid at the prior close
        over the ratio) and working orders; a dividend accrues on the shares held at the prior
        close and is paid on its pay date. A new account starts at the last session opened."""
        with self.lock:
            for session in market.sessions_opened(self.through, now):
                if session > through:
                    break
                if self.through is not None:
                    self._apply(market, session)
                self.through = session

    def _apply(self, market: Market, session: date) -> None:
        for symbol in sorted({*self.positions, *(o.symbol for o in self.working())}):
            action = market.corporate_action(symbol, session)
            if action is None:
                continue
            if action.split != 1:
                held = self.positions.get(symbol, 0)
                after = int(held * action.split)  # floor for a long position
                self.cash += ((held * action.split - after) * action.prior_close / action.split
                              ).quantize(CENT, rounding=ROUND_HALF_UP)  # fmt: skip
                self.positions[symbol] = after
                for order in self.working():
                    if order.symbol == symbol:
                        order.quantity = int(order.quantity * action.split)
            if action.dividend > 0 and self.positions.get(symbol, 0) > 0:
                gross = (self.positions[symbol] * action.dividend).quantize(
                    CENT, rounding=ROUND_HALF_UP
                )
                self.accruals.append((symbol, session, gross, action.pay_date))
        due = [a for a in self.accruals if a[3] <= session]
        for accrual in due:
            self.cash += accrual[2]
            self.accruals.remove(accrual)

    def accrued(self) -> Decimal:
        with self.lock:
            return sum((a[2] for a in self.accruals), Decimal(0))

    def snapshot_orders(self) -> list[SimOrder]:
        with self.lock:
            return [replace(o) for o in self.orders]

    def snapshot_executions(self) -> list[SimExecution]:
        with self.lock:
            return [replace(e) for e in self.executions]

    def values(self, now: datetime, market: Market) -> dict[str, Decimal]:
        """Account tags in USD: NetLiquidation, TotalCashValue, SettledCash, funds, power."""
        with self.lock:
            stock = sum((self.market_value(s, now, market) for s in self.positions), Decimal(0))
            cash = self.cash
            settled = self.settled_cash(now)
        # A cash account: it may trade with unsettled proceeds, so funds are the whole cash.
        return {
            "NetLiquidation": cash + stock + self.accrued(),
            "TotalCashValue": cash,
            "SettledCash": settled,
            "AvailableFunds": cash,
            "BuyingPower": cash,
            "GrossPositionValue": stock,
        }

    def mark(self, symbol: str, now: datetime, market: Market) -> Decimal:
        """Market's mark, else the last fill price, else the average cost."""
        price = market.mark(symbol, now)
        if price is not None:
            return price
        with self.lock:
            fills = [e.price for e in self.executions if e.symbol == symbol]
            return fills[-1] if fills else self.avg_cost.get(symbol, Decimal(0))

    def market_value(self, symbol: str, now: datetime, market: Market) -> Decimal:
        return self.positions.get(symbol, 0) * self.mark(symbol, now, market)


def compute_settles_at(market: Market, when: datetime) -> datetime | None:
    """T+1: the open of the session the market names twelve hours after ``when``."""
    session = market.session_for(when + timedelta(hours=12))
    return market.open_instant(session) if session else None
