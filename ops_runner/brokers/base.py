"""The broker interface: the base class every adapter subclasses, and the typed outcomes.

Broker vocabulary (order types, camelCase fields, error codes) stays inside each adapter; the
rest of the workbook speaks in these types. ``Broker.place`` verifies the gate pass before the
adapter's own code runs, and no adapter can override it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from enum import StrEnum
from typing import TYPE_CHECKING, Any, final

from ops_runner.brokers.gate import OrderIntent, require_valid_pass
from ops_runner.core.errors import OpsError

if TYPE_CHECKING:
    from ops_runner.brokers.gate import GatePass


class BrokerError(OpsError):
    """The broker refused or failed a request; ``code`` carries the broker's own code if any."""

    def __init__(self, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.code = code


class BrokerUnavailable(BrokerError):
    """No session with the broker (refused, dropped, timed out): BROKER_DOWN territory."""


class Outcome(StrEnum):
    """What placing an order came to. UNKNOWN is answered by looking the reference up, never
    by placing again."""

    ACCEPTED = "accepted"
    REJECTED = "rejected"  # definitive, with the broker's code and text
    UNKNOWN = "unknown"  # timeout, disconnect, lost acknowledgement


class OrderStatus(StrEnum):
    """An order's status at the broker, in the workbook's words."""

    SUBMITTED = "submitted"  # working: waiting for the open
    PARTIAL = "partial"  # partly filled, the rest still working or cancelled at the open
    FILLED = "filled"
    CANCELLED = "cancelled"
    REJECTED = "rejected"
    EXPIRED = "expired"  # a market-on-open order that did not fill at the open


@dataclass(frozen=True)
class PlaceResult:
    """The outcome of one ``place`` call."""

    outcome: Outcome
    client_ref: str
    broker_order_id: str | None = None
    code: str | None = None
    text: str = ""


@dataclass(frozen=True)
class BrokerOrder:
    """An order as the broker knows it. ``client_ref`` may be empty on completed orders (IB
    drops orderRef there): match by ``perm_id``, then by (symbol, side, quantity, session)."""

    client_ref: str
    broker_order_id: str
    perm_id: str
    symbol: str
    side: str  # "BUY" or "SELL"
    quantity: int
    filled: int
    status: OrderStatus
    session: str  # the session whose open the market-on-open order is for (ISO date)


@dataclass(frozen=True)
class Execution:
    """One fill report. The same ``exec_id`` may be reported twice; it counts once."""

    exec_id: str
    client_ref: str
    broker_order_id: str
    symbol: str
    side: str
    quantity: int
    price: Decimal
    time: datetime  # UTC
    session: str


@dataclass(frozen=True)
class Commission:
    """A commission report, joined to its execution by ``exec_id`` (it may arrive late)."""

    exec_id: str
    amount: Decimal


@dataclass(frozen=True)
class AccountValues:
    """Net liquidation, total cash and settled cash (T+1: they differ for a day after a sale)."""

    account: str
    net_liquidation: Decimal
    cash: Decimal
    settled_cash: Decimal


class CashKind(StrEnum):
    """A cash movement on the broker's statement that is not a trade."""

    DIVIDEND = "dividend"  # gross, on the pay date (+)
    WITHHOLDING = "withholding"  # tax withheld from a dividend (-), or refunded (+)
    IN_LIEU = "in_lieu"  # payment in lieu of a dividend, or cash in lieu of a fractional share
    INTEREST = "interest"  # credited (+) or charged (-) on cash
    FEE = "fee"  # a broker fee (-), or its refund (+)
    TRANSFER = "transfer"  # a deposit (+) or withdrawal (-)
    OTHER = "other"  # anything else: never booked by itself, shown as a break if it moves cash


@dataclass(frozen=True)
class CashLine:
    """One line of the broker's cash statement (IB Flex: a ``CashTransaction``).

    ``line_id`` is the broker's own id of the line (IB: transactionID), unique in the account
    and the line's idempotency key. ``amount`` is signed: + into the account. ``on`` is the
    day the cash moved (a dividend's pay date); ``ex_date`` the dividend's ex-date where the
    broker gives it. ``evidence`` is the line as the broker wrote it (for the ledger).
    """

    line_id: str
    kind: CashKind
    amount: Decimal
    currency: str
    on: date
    symbol: str | None = None
    ex_date: date | None = None
    description: str = ""
    evidence: str = ""


@dataclass(frozen=True)
class ActionLine:
    """One corporate action applied to a position (IB Flex: a ``CorporateAction``).

    ``ratio`` is new shares per old share (2 for a 2:1 split, 0.5 for a 1:2 reverse split);
    ``quantity`` the signed change in shares the broker booked; ``cash`` the cash in lieu of a
    fractional share (+). ``line_id`` is the broker's id (IB: transactionID).
    """

    line_id: str
    symbol: str
    effective: date
    ratio: Decimal
    quantity: int
    cash: Decimal = Decimal(0)
    description: str = ""
    evidence: str = ""


@dataclass(frozen=True)
class Statement:
    """What the broker's statement says happened to the account between ``start`` and ``end``
    (inclusive), apart from trades: cash movements and corporate actions, oldest first."""

    account: str
    start: date
    end: date
    cash: tuple[CashLine, ...] = ()
    actions: tuple[ActionLine, ...] = ()
    source: str = ""  # where it came from, e.g. "ib-flex <query>" or "sim books"
    sha256: str = ""  # of the raw statement, the evidence behind every line


@dataclass(frozen=True)
class Quote:
    """A bid and an ask the broker quoted for ``symbol`` at ``at`` (UTC); ``source`` says what
    quoted it (e.g. "ib live", "ib delayed", the simulated broker's spread model)."""

    symbol: str
    bid: Decimal
    ask: Decimal
    at: datetime
    source: str


@dataclass(frozen=True)
class Quotes:
    """What a broker answered when asked for quotes: a quote per symbol it quoted, and for
    every other symbol asked, why none came (a broker never invents a quote)."""

    quoted: dict[str, Quote] = field(default_factory=dict)
    unquoted: dict[str, str] = field(default_factory=dict)  # symbol -> why not quoted


@dataclass(frozen=True)
class Health:
    """Whether a session with the broker exists, and the broker's clock."""

    connected: bool
    server_time: datetime | None
    account: str | None
    paper: bool | None
    detail: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


class Broker(ABC):
    """What the workbook needs of a broker. Adapters: ``sim`` and ``ib`` (see the registry).

    ``place`` is the one door an order goes through, and it belongs to this class: it verifies
    the gate pass (OrderRefused, nothing sent, without a pass the gate minted for exactly this
    intent) and only then calls the adapter's ``_place``. A subclass that defines ``place``
    is refused when its class is created.
    """

    name: str

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "place" in cls.__dict__:
            raise TypeError(
                f"{cls.__name__} defines place(); a broker implements _place() and leaves "
                "place() to Broker, which verifies the gate pass first"
            )

    @final
    def place(self, intent: OrderIntent, gate_pass: GatePass | object) -> PlaceResult:
        """Verify ``gate_pass`` for ``intent``, then place the order; return its outcome.

        Raises OrderRefused (nothing sent) without a valid pass; otherwise what ``_place``
        raises. REJECTED outcomes are definitive; UNKNOWN means look the reference up, never
        place again.
        """
        require_valid_pass(gate_pass, intent)
        return self._place(intent)

    @abstractmethod
    def _place(self, intent: OrderIntent) -> PlaceResult:
        """Send ``intent`` to the broker (its pass already verified by ``place``)."""

    @abstractmethod
    def connect(self) -> Health: ...

    @abstractmethod
    def health(self) -> Health: ...

    @abstractmethod
    def account_values(self) -> AccountValues: ...

    @abstractmethod
    def positions(self) -> dict[str, int]: ...

    @abstractmethod
    def open_orders(self) -> list[BrokerOrder]: ...

    @abstractmethod
    def completed_orders(self) -> list[BrokerOrder]: ...

    @abstractmethod
    def executions(self, since: datetime | None = None) -> list[Execution]: ...

    @abstractmethod
    def commissions(self) -> list[Commission]: ...

    @abstractmethod
    def cancel(self, client_ref: str) -> bool: ...

    def quotes(self, symbols: list[str]) -> Quotes:
        """Return the bid and ask the broker quotes now for each of ``symbols``, where it gives
        them; this base gives none (every symbol unquoted, with the reason). Adapters that can
        quote override it. Raises BrokerUnavailable without a session."""
        return Quotes({}, {s: f"the {self.name} broker gives no quotes" for s in symbols})

    @abstractmethod
    def close(self) -> None: ...


def find_order(orders: list[BrokerOrder], intent: OrderIntent) -> list[BrokerOrder]:
    """Return the broker's orders that are ``intent``: by client reference, else (when the
    reference came back empty) by (symbol, side, quantity, session). More than one is
    ambiguous, and the caller goes to SAFE_MODE rather than guess."""
    by_ref = [o for o in orders if o.client_ref and o.client_ref == intent.client_ref]
    if by_ref:
        return by_ref
    return [
        o
        for o in orders
        if not o.client_ref
        and o.symbol == intent.symbol
        and o.side == str(intent.side)
        and o.quantity == intent.quantity
        and (intent.session is None or o.session == intent.session)
    ]
