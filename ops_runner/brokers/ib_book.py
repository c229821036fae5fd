"""The IB account as the adapter has seen it: orders by permId, fills by execution id, commissions.

Fed with plain values by ``ops_runner.brokers.ib`` (the only module that imports the IB client)
from the raw messages of every session, it outlives reconnects: a fill reported twice counts
once, a commission report joins its fill by execution id whichever of the two arrives first,
and an order's reference survives a completed-orders reply that drops ``orderRef``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from ops_runner.brokers.base import BrokerOrder, Commission, Execution, OrderStatus
from ops_runner.market.calendar import NY

# IB order status words: still working at the venue, or done.
WORKING = frozenset(
    {"PendingSubmit", "ApiPending", "PreSubmitted", "Submitted", "PendingCancel", "ApiUpdate"}
)
ACKNOWLEDGED = frozenset({"PreSubmitted", "Submitted", "Filled", "PendingCancel"})
CANCELLED = frozenset({"Cancelled", "ApiCancelled"})
INACTIVE = "Inactive"  # IB: rejected, or held and never released
FILLED = "Filled"
DONE = CANCELLED | {INACTIVE, FILLED}  # any other word (even an unknown one) is still working
SIDES = {"BOT": "BUY", "SLD": "SELL", "BUY": "BUY", "SELL": "SELL"}
UNSET = 1e300  # the clients' "no value" doubles are ~1.8e308


def _ny_date(moment: datetime) -> str:
    return moment.astimezone(NY).date().isoformat()


def shares(value: Any) -> int:
    """A share count from an IB number (0 for the clients' unset value)."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return 0
    return 0 if math.isnan(number) or abs(number) >= UNSET else int(round(number))


def parse_ib_time(text: str) -> datetime | None:
    """'20251201 09:30:00 America/New_York', '20251201-14:30:00' (UTC) or None."""
    text = (text or "").strip()
    try:
        if "-" in text[:9] and " " not in text:
            return datetime.strptime(text, "%Y%m%d-%H:%M:%S").replace(tzinfo=UTC)
        parts = text.split(" ")
        stamp = " ".join(parts[:2])
        zone = ZoneInfo(parts[2]) if len(parts) > 2 else UTC
        return datetime.strptime(stamp, "%Y%m%d %H:%M:%S").replace(tzinfo=zone).astimezone(UTC)
    except (ValueError, IndexError, ZoneInfoNotFoundError):
        return None


@dataclass
class IbOrder:
    """One order as reported by openOrder, orderStatus, completedOrder and our own placement."""

    perm_id: int
    order_id: int
    client_id: int
    client_ref: str
    symbol: str
    side: str  # BUY or SELL
    quantity: int
    filled: int = 0
    ib_status: str = "PendingSubmit"
    session: str = ""  # known when this adapter placed it
    rejected: tuple[str, str] | None = None  # (code, text) of the venue's refusal
    cancel_requested: bool = False
    completed_at: datetime | None = None

    @property
    def working(self) -> bool:
        return self.ib_status not in DONE

    @property
    def broker_order_id(self) -> str:
        """permId when known (it is the same for every client id), else the local order id."""
        return str(self.perm_id) if self.perm_id > 0 else str(self.order_id)


@dataclass(frozen=True)
class IbFill:
    """One execution report, before it is joined to its order's reference."""

    exec_id: str
    perm_id: int
    order_id: int
    client_id: int
    order_ref: str
    symbol: str
    side: str
    shares: int
    price: Decimal
    time: datetime


class IbBook:
    """Orders, fills and commissions of one account, kept across sessions.

    ``working_session`` returns the session a still-working market-on-open order is for when
    the adapter did not place it itself (IB does not report it); ``open_of`` returns a
    session's opening instant (UTC), used to tell an order that expired at the open from one
    cancelled before it; ``now`` is the adapter's clock.
    """

    def __init__(
        self,
        working_session: Callable[[], str],
        open_of: Callable[[str], datetime | None],
        now: Callable[[], datetime],
    ) -> None:
        self._working_session = working_session
        self._open_of = open_of
        self._now = now
        self._orders: list[IbOrder] = []
        self._by_perm: dict[int, IbOrder] = {}
        self._by_local: dict[tuple[int, int], IbOrder] = {}
        self._fills: dict[str, IbFill] = {}
        self._commissions: dict[str, Decimal] = {}

    # -- feeding ---------------------------------------------------------------------------------

    def _find(self, perm_id: int, client_id: int, order_id: int) -> IbOrder | None:
        if perm_id > 0 and perm_id in self._by_perm:
            return self._by_perm[perm_id]
        if order_id > 0:
            found = self._by_local.get((client_id, order_id))
            if found is not None and (found.perm_id <= 0 or perm_id <= 0):
                return found
        return None

    def _index(self, order: IbOrder) -> None:
        if order.perm_id > 0:
            self._by_perm[order.perm_id] = order
        if order.order_id > 0:
            self._by_local[(order.client_id, order.order_id)] = order

    def note_placed(
        self, order_id: int, client_id: int, ref: str, symbol: str, side: str, qty: int,
        session: str,
    ) -> IbOrder:  # fmt: skip
        """Record an order this adapter is sending (newest wins the local id: ids roll back
        after a Gateway restart)."""
        order = IbOrder(0, order_id, client_id, ref, symbol, side, qty, session=session)
        self._orders.append(order)
        self._by_local[(client_id, order_id)] = order
        return order

    def on_order(
        self, *, perm_id: int, order_id: int, client_id: int, ref: str, symbol: str, side: str,
        quantity: int, status: str, filled: int | None = None,
        completed_at: datetime | None = None,
    ) -> IbOrder:  # fmt: skip
        """Record an openOrder or completedOrder report. An empty ``ref`` never overwrites a
        known one (IB drops orderRef on completed orders)."""
        order = self._find(perm_id, client_id, order_id)
        if order is None:
            order = IbOrder(perm_id, order_id, client_id, ref, symbol, SIDES.get(side, side),
                            quantity)  # fmt: skip
            self._orders.append(order)
        if perm_id > 0:
            order.perm_id = perm_id
        if order_id > 0 and order.order_id <= 0:
            order.order_id = order_id
        order.client_ref = ref or order.client_ref
        order.symbol = symbol or order.symbol
        order.side = SIDES.get(side, side) or order.side
        order.quantity = quantity or order.quantity
        if status:
            order.ib_status = status
        if filled is not None:
            order.filled = max(order.filled, filled)
        if completed_at is not None:
            order.completed_at = completed_at
        self._index(order)
        return order

    def on_status(
        self, order_id: int, client_id: int, perm_id: int, status: str, filled: int
    ) -> IbOrder | None:
        """Record an orderStatus report; returns the order (None when it is not known yet)."""
        order = self._find(perm_id, client_id, order_id)
        if order is None:
            return None
        if perm_id > 0:
            order.perm_id = perm_id
        order.ib_status = status or order.ib_status
        order.filled = max(order.filled, filled)
        self._index(order)
        return order

    def on_rejected(self, order_id: int, client_id: int, code: str, text: str) -> None:
        """Record the venue's refusal of an order (its status follows as Inactive/Cancelled)."""
        order = self._find(0, client_id, order_id)
        if order is not None:
            order.rejected = (code, text)
            if order.ib_status in WORKING:
                order.ib_status = INACTIVE

    def on_fill(self, fill: IbFill) -> bool:
        """Record an execution; returns False when its execution id was seen before."""
        seen = self._fills.get(fill.exec_id)
        if seen is not None:
            if not seen.order_ref and fill.order_ref:
                self._fills[fill.exec_id] = fill
            return False
        self._fills[fill.exec_id] = fill
        order = self._find(fill.perm_id, fill.client_id, fill.order_id)
        if order is not None and fill.order_ref and not order.client_ref:
            order.client_ref = fill.order_ref
        return True

    def on_commission(self, exec_id: str, amount: Decimal) -> None:
        """Record a commission report, before or after its execution."""
        self._commissions[exec_id] = amount

    def find_ref(self, ref: str) -> IbOrder | None:
        """The latest order carrying ``ref`` (by orderRef or by its fills' orderRef)."""
        for order in reversed(self._orders):
            if self._ref_of(order) == ref:
                return order
        return None

    def order_for(self, client_id: int, order_id: int) -> IbOrder | None:
        return self._by_local.get((client_id, order_id))

    # -- reading ---------------------------------------------------------------------------------

    def _fills_of(self, order: IbOrder) -> list[IbFill]:
        return [f for f in self._fills.values() if order.perm_id > 0 and f.perm_id == order.perm_id]

    def _ref_of(self, order: IbOrder) -> str:
        if order.client_ref:
            return order.client_ref
        return next((f.order_ref for f in self._fills_of(order) if f.order_ref), "")

    def _status(self, order: IbOrder, filled: int) -> OrderStatus:
        if order.working:
            return OrderStatus.PARTIAL if filled else OrderStatus.SUBMITTED
        if order.rejected is not None or order.ib_status == INACTIVE:
            return OrderStatus.PARTIAL if filled else OrderStatus.REJECTED
        if order.ib_status == FILLED or filled >= order.quantity > 0:
            return OrderStatus.FILLED if filled >= order.quantity else OrderStatus.PARTIAL
        if filled:
            return OrderStatus.PARTIAL  # the rest was cancelled at (or after) the open
        if not order.cancel_requested and order.session:
            opens = self._open_of(order.session)
            ended = order.completed_at or self._now()
            if opens is not None and ended >= opens:
                return OrderStatus.EXPIRED  # a market-on-open order the open did not fill
        return OrderStatus.CANCELLED

    def _session(self, order: IbOrder, fills: list[IbFill]) -> str:
        if fills:
            return _ny_date(min(f.time for f in fills))
        if order.session:
            return order.session
        if not order.working and order.completed_at is not None:
            return _ny_date(order.completed_at)
        return self._working_session()

    def _broker_order(self, order: IbOrder) -> BrokerOrder:
        fills = self._fills_of(order)
        filled = max(order.filled, sum(f.shares for f in fills))
        return BrokerOrder(
            client_ref=self._ref_of(order),
            broker_order_id=order.broker_order_id,
            perm_id=str(order.perm_id) if order.perm_id > 0 else "",
            symbol=order.symbol,
            side=order.side,
            quantity=order.quantity,
            filled=filled,
            status=self._status(order, filled),
            session=self._session(order, fills),
        )

    def _reported(self) -> list[IbOrder]:
        """Orders the broker has reported (an order only we know of is not at the broker)."""
        return [o for o in self._orders if o.perm_id > 0 or o.ib_status != "PendingSubmit"]

    def open_orders(self) -> list[BrokerOrder]:
        """Orders still working at the broker."""
        return [self._broker_order(o) for o in self._reported() if o.working]

    def completed_orders(self) -> list[BrokerOrder]:
        """Filled, partly filled, cancelled, expired and rejected orders."""
        return [self._broker_order(o) for o in self._reported() if not o.working]

    def executions(self, since: datetime | None = None) -> list[Execution]:
        """Each fill once, oldest first; ``client_ref`` from the fill, else from its order."""
        found = []
        for fill in sorted(self._fills.values(), key=lambda f: (f.time, f.exec_id)):
            if since is not None and fill.time < since:
                continue
            order = self._find(fill.perm_id, fill.client_id, fill.order_id)
            ref = fill.order_ref or (self._ref_of(order) if order is not None else "")
            found.append(
                Execution(
                    exec_id=fill.exec_id,
                    client_ref=ref,
                    broker_order_id=str(fill.perm_id) if fill.perm_id > 0 else str(fill.order_id),
                    symbol=fill.symbol,
                    side=SIDES.get(fill.side, fill.side),
                    quantity=fill.shares,
                    price=fill.price,
                    time=fill.time,
                    session=_ny_date(fill.time),
                )
            )
        return found

    def commissions(self) -> list[Commission]:
        """Every commission report, one per execution id, in the order of the fills."""
        order = {e: i for i, e in enumerate(sorted(self._fills, key=lambda e: self._fills[e].time))}
        ids = sorted(self._commissions, key=lambda e: (order.get(e, len(order)), e))
        return [Commission(e, self._commissions[e]) for e in ids]

    def unmatched_commissions(self) -> list[str]:
        """Execution ids with a commission report but no execution report (yet)."""
        return sorted(set(self._commissions) - set(self._fills))
