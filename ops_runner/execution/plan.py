"""Execution plan: size a decision into whole-share orders from the decision session's closes."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import ROUND_FLOOR, ROUND_HALF_EVEN, Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any

from ops_runner.brokers.base import AccountValues
from ops_runner.brokers.gate import OrderIntent, Side
from ops_runner.core.canonical import compute_json_ready
from ops_runner.core.errors import OpsError
from ops_runner.core.events import Purpose
from ops_runner.market.calendar import open_calendar
from ops_runner.market.prices import open_store

if TYPE_CHECKING:
    import pandas as pd

    from ops_runner.brokers.base import Broker
    from ops_runner.workbook.config import Config

PRICE_STEP = Decimal("0.0001")  # raw closes to 4 decimals: drops float noise from storage
REF_PREFIX = "mr"
ZERO = Decimal(0)


class ExecutionError(OpsError):
    """No plan can be made or submitted from these inputs (missing price, short, bad record)."""


class ExecutionRefused(ExecutionError):
    """Orders cannot be sent now: the submission window has closed. Nothing was sent."""


# -- the plan (pure) ----------------------------------------------------------------------------


@dataclass(frozen=True)
class ExecutionSettings:
    """``execution`` from config.yaml as Decimals: the buffer, the minimum trade, the account."""

    cash_buffer: Decimal
    min_trade_value: Decimal
    cash_account: bool

    @classmethod
    def from_config(cls, cfg: Config) -> ExecutionSettings:
        values = cfg.values["execution"]
        buffer, minimum = (Decimal(str(values[k])) for k in ("cash_buffer", "min_trade_value"))
        return cls(buffer, minimum, bool(values["cash_account"]))


@dataclass(frozen=True)
class PlanLine:
    """One symbol: held, wanted, the change, and the order for it (quantity 0 when skipped)."""

    symbol: str
    weight: Decimal
    current: int
    target: int
    delta: int
    side: Side | None  # None when nothing changes
    quantity: int  # shares ordered
    price: Decimal  # the decision session's raw close
    notional: Decimal  # quantity * price
    skipped_reason: str | None = None
    note: str | None = None  # why an order is smaller than delta


@dataclass(frozen=True)
class ExecutionPlan:
    """What to trade at ``order_session``'s open, and where every dollar goes."""

    cycle_id: str
    decision_session: str
    order_session: str
    equity: Decimal
    settings: ExecutionSettings
    lines: list[PlanLine]
    cash_walk: list[tuple[str, Decimal]]
    residual_cash: Decimal
    intents: list[OrderIntent]

    def to_frame(self) -> pd.DataFrame:
        """Return the plan's lines as a table, one row per symbol (sells, buys, unchanged)."""
        return _frame([{**vars(line), "side": line.side and str(line.side)} for line in self.lines],
                      "symbol")  # fmt: skip

    def to_payload(self) -> dict[str, Any]:
        """Return the plan as JSON-ready values: decimal strings, integers, no floats."""
        return compute_json_ready(self)


def compute_client_ref(cycle_id: str, symbol: str, side: Side | str) -> str:
    """Return the deterministic client reference of a rebalance order, e.g. mr:2025-06:SPY:BUY."""
    return f"{REF_PREFIX}:{cycle_id}:{symbol}:{side}"


def _frame(rows: list[dict[str, Any]], index: str) -> pd.DataFrame:
    import pandas as pd

    return pd.DataFrame(rows).set_index(index) if rows else pd.DataFrame()


def _decimal(value: object, what: str) -> Decimal:
    if isinstance(value, float | bool):
        raise ExecutionError(f"{what}: {value!r} is not a Decimal or decimal string")
    try:
        number = Decimal(str(value))
    except InvalidOperation:
        raise ExecutionError(f"{what}: {value!r} is not a number") from None
    if not number.is_finite():
        raise ExecutionError(f"{what}: {value!r} is not a finite number")
    return number


def _shares(amount: Decimal, price: Decimal) -> int:
    return max(int((amount / price).to_integral_value(rounding=ROUND_FLOOR)), 0)


def compute_plan(
    record: Mapping[str, Any],
    positions: Mapping[str, int],
    account: AccountValues,
    raw_closes: Mapping[str, Decimal],
    settings: ExecutionSettings,
    order_session: str,
    unsettled_bought: Mapping[str, int] | None = None,
) -> ExecutionPlan:
    """Return the Execution Plan that moves ``positions`` to the record's target weights.

    Target shares = floor(weight * net liquidation * (1 - cash_buffer) / raw close). Sells come
    first. An order below ``min_trade_value`` is skipped with its reason. Buys are paid from
    cash (settled cash in a cash account) + expected sale proceeds - the gap buffer (net
    liquidation * cash_buffer); when that falls short, the largest weights are bought first and
    the rest cut. In a cash account, the shares in ``unsettled_bought`` (bought with proceeds not
    yet settled) are never sold. Raises ExecutionError for a missing or non-positive price, a
    short position, weights outside [0, 1], or non-positive equity.
    """
    cycle_id, decided = str(record["cycle_id"]), str(record["session"])
    targets = record["decision"]["targets"]
    weights = {str(s): _decimal(w, f"target weight of {s}") for s, w in targets.items()}
    if any(w < 0 for w in weights.values()) or sum(weights.values(), ZERO) > 1:
        raise ExecutionError(f"decision {decided}: target weights {weights} must be >= 0, sum <= 1")
    held = {str(s): int(q) for s, q in positions.items() if int(q) != 0}
    if shorts := sorted(s for s, q in held.items() if q < 0):
        raise ExecutionError(
            f"short positions in {', '.join(shorts)}: a long-only rotation does not plan from a "
            "short; reconcile the account first"
        )
    equity = _decimal(account.net_liquidation, "net liquidation")
    if equity <= 0:
        raise ExecutionError(f"net liquidation is {equity}; nothing to size orders from")
    investable, buffer = equity * (1 - settings.cash_buffer), equity * settings.cash_buffer
    locked = dict(unsettled_bought or {}) if settings.cash_account else {}
    sizing: dict[str, tuple[Decimal, Decimal, int, int]] = {}  # weight, price, current, target
    for symbol in sorted(set(weights) | set(held)):
        if symbol not in raw_closes:
            raise ExecutionError(f"no raw close of {symbol} on {decided}; cannot size its order")
        price = _decimal(raw_closes[symbol], f"raw close of {symbol}")
        if price <= 0:
            raise ExecutionError(f"raw close of {symbol} on {decided} is {price}")
        weight = weights.get(symbol, ZERO)
        sizing[symbol] = (weight, price, held.get(symbol, 0), _shares(weight * investable, price))

    def line(symbol: str, side: Side | None, quantity: int, note: str | None = None) -> PlanLine:
        weight, price, current, target = sizing[symbol]
        skipped, minimum = None, settings.min_trade_value
        if side is not None and quantity == 0:
            skipped, note = note, None
        elif side is not None and quantity * price < minimum:
            skipped = (f"{quantity} shares at {price} = {quantity * price} is below "
                       f"execution.min_trade_value {minimum}: no order sent")  # fmt: skip
        quantity = 0 if skipped else quantity
        return PlanLine(symbol, weight, current, target, target - current, side, quantity,
                        price, quantity * price, skipped, note)  # fmt: skip

    sells, buys, steady = [], [], []
    for symbol, (_, _, current, target) in sizing.items():
        if target < current:
            wanted, blocked = current - target, min(int(locked.get(symbol, 0)), current)
            quantity, note = min(wanted, current - blocked), None
            if quantity < wanted:
                note = (f"{blocked} shares were bought with unsettled proceeds: selling them "
                        "before the funding sale settles is a good-faith violation")  # fmt: skip
                note = f"sell {quantity} of {wanted}: {note}" if quantity else note
            sells.append(line(symbol, Side.SELL, quantity, note))
        elif target == current:
            steady.append(line(symbol, None, 0))
    proceeds = sum((s.notional for s in sells), ZERO)
    label = "settled cash" if settings.cash_account else "cash"
    start = _decimal(account.settled_cash if settings.cash_account else account.cash, label)
    available = start + proceeds - buffer
    wanted_buys = [s for s, (_, _, current, target) in sizing.items() if target > current]
    for symbol in sorted(wanted_buys, key=lambda s: (-sizing[s][0], s)):
        _, price, current, target = sizing[symbol]
        wanted = target - current
        quantity, note = min(wanted, _shares(available, price)), None
        if quantity < wanted:
            note = (f"{label} {start} + expected sale proceeds {proceeds} - gap buffer {buffer} "
                    f"leaves {max(available, ZERO)} for it")  # fmt: skip
            note = f"buy {quantity} of {wanted}: {note}" if quantity else f"no cash: {note}"
        buys.append(line(symbol, Side.BUY, quantity, note))
        available -= buys[-1].notional
    spent = sum((b.notional for b in buys), ZERO)
    residual = start + proceeds - spent
    walk = [(label, start), ("+ expected sale proceeds", proceeds), ("- planned buys", -spent),
            ("= residual cash", residual), ("  of which the gap buffer", buffer),
            ("  of which rounding and skipped orders", residual - buffer)]  # fmt: skip
    if settings.cash_account and account.cash != account.settled_cash:
        walk.append(("unsettled cash, not spent until it settles", account.cash - start))
    ordered = sells + sorted(buys, key=lambda b: b.symbol)
    intents = [
        OrderIntent(compute_client_ref(cycle_id, o.symbol, o.side), o.symbol, o.side, o.quantity,
                    Purpose.REBALANCE, str(order_session))
        for o in ordered if o.side is not None and o.quantity > 0
    ]  # fmt: skip
    return ExecutionPlan(cycle_id, decided, str(order_session), equity, settings,
                         ordered + steady, walk, residual, intents)  # fmt: skip


def read_raw_closes(cfg: Config, session: str, symbols: list[str]) -> dict[str, Decimal]:
    """Return each symbol's raw (unadjusted) close on ``session`` from the primary source.

    The Decision Record's ``prices_used`` are adjusted closes, right for scores but not for the
    shares a broker fills: sizing uses the raw close, rounded to 4 decimals. Raises
    ExecutionError when a symbol has no bar on the session (DataError when none is stored).
    """
    import pandas as pd

    store, source = open_store(cfg), cfg.primary_source
    stamp, closes = pd.Timestamp(session), {}
    for symbol in symbols:
        bars = store.load_bars(source, symbol)
        if stamp not in bars.index:
            raise ExecutionError(f"{source}/{symbol} has no bar on {session}; cannot size orders")
        raw = Decimal(repr(float(bars.at[stamp, "close"])))
        closes[symbol] = raw.quantize(PRICE_STEP, rounding=ROUND_HALF_EVEN)
    return closes


def read_plan(
    cfg: Config,
    broker: Broker,
    record: Mapping[str, Any],
    unsettled_bought: Mapping[str, int] | None = None,
) -> ExecutionPlan:
    """Return the plan for ``record`` from the broker's positions and account values now.

    Orders go to the session after the decision session. With T+1 settlement and orders sent
    before the open, nothing bought on an earlier session is unsettled by then, so
    ``unsettled_bought`` matters only for same-session trades. Raises ExecutionError,
    BrokerError, DataError.
    """
    positions, account = broker.positions(), broker.account_values()
    symbols = sorted(set(record["decision"]["targets"]) | {s for s, q in positions.items() if q})
    closes = read_raw_closes(cfg, str(record["session"]), symbols)
    order_session = open_calendar(cfg).next_session(str(record["session"])).isoformat()
    settings = ExecutionSettings.from_config(cfg)
    return compute_plan(record, positions, account, closes, settings, order_session,
                        unsettled_bought)  # fmt: skip
