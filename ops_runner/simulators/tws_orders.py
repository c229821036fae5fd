"""The TWS simulator's request handlers and its 09:30 fill burst (orders, account, data).

Each handler takes (simulator, connection, fields) and answers on the loop thread; the
field positions are those the clients encode at server version 176 (client.py of each).
"""

from __future__ import annotations

import asyncio
import calendar
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Protocol
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from ops_runner.simulators import tws_codec as wire
from ops_runner.simulators.tws_account import (
    CANCELLED,
    FILLED,
    INACTIVE,
    NY,
    PRE_SUBMITTED,
    SUBMITTED,
    Account,
    Market,
    SimOrder,
    compute_settles_at,
)
from ops_runner.simulators.tws_link import Connection, TwsFaults


class TwsSimulator(Protocol):
    """What the handlers need of the simulator (``tws_sim.TwsSimulator`` is the one)."""

    market: Market
    clock: Callable[[], datetime]
    faults: TwsFaults
    _account: Account
    _loop: asyncio.AbstractEventLoop | None

    def _broadcast(self, fields: list[str]) -> None: ...

    def _drop_all(self) -> None: ...

    def _live(self) -> list[Connection]: ...


ACCOUNT_TAGS = ("NetLiquidation", "TotalCashValue", "SettledCash", "AvailableFunds", "BuyingPower")
TEXT_1100 = "Connectivity between IB and Trader Workstation has been lost."
TEXT_1102 = (
    "Connectivity between IB and Trader Workstation has been restored - data maintained. "
    "All data farms are connected: usfarm; ushmds."
)
TEXT_103 = "Duplicate order id"
TEXT_CLOSED = "Order rejected - reason: Exchange is closed."
TEXT_MOO_ONLY = (
    "Order rejected - reason: the simulator takes market-on-open orders only (MKT, OPG)."
)
TEXT_202 = "Order Canceled - reason:"
TEXT_200 = "No security definition has been found for the request"
TEXT_354 = "Requested market data is not subscribed. Delayed market data is available."
TEXT_10167 = "Requested market data is not subscribed. Displaying delayed market data."

# placeOrder field positions at v176 (3, orderId, 12 contract fields, secIdType, secId, ...).
P_ORDER_ID, P_SYMBOL, P_SEC_TYPE, P_CURRENCY = 1, 3, 4, 11
P_ACTION, P_QUANTITY, P_ORDER_TYPE, P_TIF, P_ACCOUNT, P_ORDER_REF = 16, 17, 18, 21, 23, 26


# --- orders ---------------------------------------------------------------------------------


def place_order(sim: TwsSimulator, conn: Connection, f: list[str], acknowledge: bool) -> None:
    """Accept, reject (201, 103) or warn (399) one placeOrder; see TwsFaults for the faults."""
    account, faults = sim._account, sim.faults
    order_id, symbol = int(f[P_ORDER_ID]), f[P_SYMBOL]
    reply = conn.send if acknowledge else (lambda fields: None)
    if faults.duplicate_order_id > 0 or account.find(conn.client_id or 0, order_id):
        faults.duplicate_order_id = max(0, faults.duplicate_order_id - 1)
        reply(wire.msg_error(order_id, 103, TEXT_103))
        return
    now = sim.clock()
    try:
        quantity = Decimal(f[P_QUANTITY])
    except InvalidOperation:
        quantity = Decimal(0)
    order = SimOrder(
        order_id=order_id,
        client_id=conn.client_id or 0,
        perm_id=account.new_perm_id(),
        symbol=symbol,
        action=f[P_ACTION],
        quantity=int(quantity),
        order_ref=f[P_ORDER_REF],
        session=None,
        status=INACTIVE,
        placed_at=now,
        account=f[P_ACCOUNT] or account.name,
        order_type=f[P_ORDER_TYPE],
        tif=f[P_TIF],
    )
    rejection: tuple[int, str] | None = None
    plain = (
        f[P_SEC_TYPE] == "STK"
        and f[P_CURRENCY] in ("USD", "")
        and order.order_type == "MKT"
        and order.tif == "OPG"
        and order.action in ("BUY", "SELL")
        and quantity > 0
        and quantity == quantity.to_integral_value()
    )
    session = sim.market.session_for(now) if plain else None
    if not plain:
        rejection = (201, TEXT_MOO_ONLY)
    elif symbol in faults.reject:
        rejection = faults.reject[symbol]
    elif session is None:
        rejection = (201, TEXT_CLOSED)
    if rejection:
        order.completed_at = now
        with account.lock:
            account.orders.append(order)
        reply(wire.msg_error(order_id, *rejection))
        reply(wire.msg_order_status(order))
        return
    order.session = session
    order.status = PRE_SUBMITTED if faults.hold_presubmitted else SUBMITTED
    with account.lock:
        account.orders.append(order)
    if symbol in faults.order_warning_399:
        opens = sim.market.open_instant(session).astimezone(NY) if session else now
        text = (
            f"Order Message:\n{order.action} {order.quantity} {symbol} SMART\nWarning: your "
            f"order will not be placed at the exchange until {opens:%Y-%m-%d %H:%M:%S} US/Eastern"
        )
        reply(wire.msg_error(order_id, 399, text))
    reply(wire.msg_open_order(order))
    reply(wire.msg_order_status(order))


def cancel_order(sim: TwsSimulator, conn: Connection, f: list[str]) -> None:
    """Cancel a working order of this client id: orderStatus Cancelled, then error 202."""
    order_id = int(f[2])
    order = sim._account.find(conn.client_id or 0, order_id)
    if order is None:
        conn.send(
            wire.msg_error(
                order_id, 10147, f"OrderId {order_id} that needs to be cancelled is not found."
            )
        )
        return
    with sim._account.lock:
        working = order.remaining > 0
        if working:
            order.status = CANCELLED
            order.completed_at = sim.clock()
    if not working:
        conn.send(
            wire.msg_error(
                order_id,
                10148,
                f"OrderId {order_id} that needs to be "
                f"cancelled cannot be cancelled, state: {order.status}.",
            )
        )
        return
    conn.send(wire.msg_order_status(order))
    conn.send(wire.msg_error(order_id, 202, TEXT_202))


def send_open_orders(sim: TwsSimulator, conn: Connection, f: list[str]) -> None:
    """Every working order of the account (reqOpenOrders and reqAllOpenOrders alike)."""
    for order in sim._account.working():
        conn.send(wire.msg_open_order(order))
        conn.send(wire.msg_order_status(order))
    conn.send(wire.msg_open_order_end())


def send_completed_orders(sim: TwsSimulator, conn: Connection, f: list[str]) -> None:
    ref = "" if sim.faults.empty_order_ref_completed else None
    for order in sim._account.completed():
        conn.send(wire.msg_completed_order(order, order_ref=ref))
    conn.send(wire.msg_completed_orders_end())


def _parse_ib_time(text: str) -> datetime | None:
    """An IB request time: 'yyyymmdd hh:mm:ss[ tz]', 'yyyymmdd-hh:mm:ss' (UTC), 'yyyymmdd'."""
    text = text.strip()
    if not text:
        return None
    if len(text) == 8:
        return datetime.strptime(text + " 23:59:59", "%Y%m%d %H:%M:%S").replace(tzinfo=NY)
    if text[8] == "-":
        return datetime.strptime(text[:17], "%Y%m%d-%H:%M:%S").replace(tzinfo=UTC)
    day, clock, *zone = text.split()
    try:
        tz = ZoneInfo(zone[0]) if zone else NY
    except ZoneInfoNotFoundError:
        tz = NY
    return datetime.strptime(day + clock, "%Y%m%d%H:%M:%S").replace(tzinfo=tz)


def send_executions(sim: TwsSimulator, conn: Connection, f: list[str]) -> None:
    """Every execution of the account (filter: time and symbol only), commissions after."""
    req_id = int(f[2])
    since = _parse_ib_time(f[5]) if len(f) > 5 else None
    symbol = f[6] if len(f) > 6 else ""
    for e in sim._account.snapshot_executions():
        if (since and e.time < since) or (symbol and e.symbol != symbol):
            continue
        _send_fill(sim, conn.send, req_id, e)
    conn.send(wire.msg_exec_details_end(req_id))


def _send_fill(sim: TwsSimulator, send, req_id: int, e) -> None:
    faults = sim.faults
    ref = "" if faults.empty_order_ref_executions else None
    details = [wire.msg_exec_details(req_id, e, order_ref=ref)]
    if faults.duplicate_exec_details:
        details.append(details[0])
    report = [] if e.symbol in faults.commission_missing else [wire.msg_commission_report(e)]
    for fields in (report + details) if faults.commission_first else (details + report):
        send(fields)


# --- account ------------------------------------------------------------------------------


def send_positions(sim: TwsSimulator, conn: Connection, f: list[str]) -> None:
    account = sim._account
    with account.lock:
        held = [(s, q, account.avg_cost.get(s, Decimal(0))) for s, q in account.positions.items()]
    for symbol, quantity, cost in held:
        if quantity:
            conn.send(wire.msg_position(account.name, symbol, quantity, cost))
    conn.send(wire.msg_position_end())


def _push_account(sim: TwsSimulator, conn: Connection) -> None:
    account, now = sim._account, sim.clock()
    values = account.values(now, sim.market)
    conn.send(wire.msg_account_value("AccountCode", account.name, "", account.name))
    for tag in ACCOUNT_TAGS:
        conn.send(wire.msg_account_value(tag, values[tag], "USD", account.name))
    with account.lock:
        held = [(s, q, account.avg_cost.get(s, Decimal(0))) for s, q in account.positions.items()]
    for symbol, quantity, cost in held:
        if quantity:
            mark = account.mark(symbol, now, sim.market)
            conn.send(wire.msg_portfolio(account.name, symbol, quantity, mark, cost))
    conn.send(wire.msg_account_time(now.astimezone(NY)))


def send_account_updates(sim: TwsSimulator, conn: Connection, f: list[str]) -> None:
    """reqAccountUpdates: values, portfolio, time, accountDownloadEnd; then pushes on fills."""
    conn.account_updates = f[2] not in ("0", "")
    if conn.account_updates:
        _push_account(sim, conn)
        conn.send(wire.msg_account_download_end(sim._account.name))


def send_account_updates_multi(sim: TwsSimulator, conn: Connection, f: list[str]) -> None:
    req_id = int(f[2])
    values = sim._account.values(sim.clock(), sim.market)
    for tag in ACCOUNT_TAGS:
        conn.send(wire.msg_account_update_multi(req_id, sim._account.name, tag, values[tag]))
    conn.send(wire.msg_account_update_multi_end(req_id))


def send_account_summary(sim: TwsSimulator, conn: Connection, f: list[str]) -> None:
    req_id, wanted = int(f[2]), {t for t in f[4].split(",") if t} if len(f) > 4 else set()
    values = sim._account.values(sim.clock(), sim.market)
    for tag in ACCOUNT_TAGS:
        if not wanted or tag in wanted:
            conn.send(wire.msg_account_summary(req_id, sim._account.name, tag, values[tag]))
    conn.send(wire.msg_account_summary_end(req_id))


# --- reference and market data --------------------------------------------------------------


def send_contract_details(sim: TwsSimulator, conn: Connection, f: list[str]) -> None:
    """One STK/SMART/USD contract for any symbol; error 200 for anything else."""
    req_id, symbol, sec_type, currency = int(f[2]), f[4], f[5], f[12]
    if symbol and sec_type in ("STK", "") and currency in ("USD", ""):
        conn.send(wire.msg_contract_details(req_id, symbol))
        conn.send(wire.msg_contract_details_end(req_id))
    else:
        conn.send(wire.msg_error(req_id, 200, TEXT_200))


def set_market_data_type(sim: TwsSimulator, conn: Connection, f: list[str]) -> None:
    """reqMarketDataType (59, version 1): the data type of this connection's next requests."""
    conn.market_data_type = int(f[2])


def send_market_data(sim: TwsSimulator, conn: Connection, f: list[str]) -> None:
    """A snapshot of the bid and ask (reqMktData with snapshot=1): tickReqParams, the data
    type, a tickPrice for the bid and one for the ask, tickSnapshotEnd. Without a live
    subscription: 354 for a live request, 10167 and the delayed ticks (66, 67) for a delayed
    one. A symbol the market does not quote gets the snapshot's end alone.

    Fields at v176: 1, version 11, reqId, 12 contract fields, deltaNeutral flag,
    genericTickList, snapshot, regulatorySnapshot, mktDataOptions.
    """
    req_id, symbol, snapshot = int(f[2]), f[4], f[17]
    if snapshot not in ("1", "True"):
        text = "Error validating request:-'bP' : the simulator answers snapshots only"
        conn.send(wire.msg_error(req_id, 321, text))
        return
    delayed = not sim.faults.quotes_subscribed
    if delayed and conn.market_data_type not in (3, 4):
        conn.send(wire.msg_error(req_id, 354, TEXT_354))
        return
    conn.send(wire.msg_tick_req_params(req_id))
    if delayed:
        conn.send(wire.msg_error(req_id, 10167, TEXT_10167))
    conn.send(wire.msg_market_data_type(req_id, 3 if delayed else 1))
    quote = sim.market.quote(symbol, sim.clock())
    if quote is not None:
        bid, ask = quote
        bid_tick, ask_tick = (wire.DELAYED_BID, wire.DELAYED_ASK) if delayed else (
            wire.TICK_BID, wire.TICK_ASK)  # fmt: skip
        conn.send(wire.msg_tick_price(req_id, bid_tick, bid, 100))
        conn.send(wire.msg_tick_price(req_id, ask_tick, ask, 100))
    conn.send(wire.msg_tick_snapshot_end(req_id))


def _minus(end: date, duration: str) -> date | None:
    try:
        count, unit = duration.split()
        n = int(count)
    except ValueError:
        return None
    if unit == "D":
        return end - timedelta(days=n)
    if unit == "W":
        return end - timedelta(weeks=n)
    if unit in ("M", "Y"):
        months = end.year * 12 + end.month - 1 - (n if unit == "M" else 12 * n)
        year, month = divmod(months, 12)
        day = min(end.day, calendar.monthrange(year, month + 1)[1])
        return date(year, month + 1, day)
    return None


def send_historical_data(sim: TwsSimulator, conn: Connection, f: list[str]) -> None:
    """Daily bars up to the end date: "N D" the last N bars, "N W|M|Y" those after end minus
    the duration; error 162 when none, 321 for a request the simulator cannot serve.

    Fields at v176: 20, reqId, 12 contract fields, includeExpired, endDateTime, barSize,
    durationStr, useRTH, whatToShow, formatDate, keepUpToDate, chartOptions.
    """
    req_id, symbol = int(f[1]), f[3]
    end_text, bar_size, duration, what = f[15], f[16], f[17], f[19]
    end_at = _parse_ib_time(end_text) or sim.clock()
    end = end_at.astimezone(NY).date()
    start = _minus(end, duration)
    if bar_size != "1 day" or what not in ("TRADES", "ADJUSTED_LAST") or start is None:
        text = f"Error validating request:-'bP' : cause - {bar_size}/{what}/{duration} unsupported"
        conn.send(wire.msg_error(req_id, 321, text))
        return
    kept = [
        b for b in sim.market.daily_bars(symbol, adjusted=what == "ADJUSTED_LAST") if b.date <= end
    ]
    if duration.endswith(" D"):  # IB counts days of a daily request in sessions: N bars
        kept = kept[-int(duration.split()[0]) :]
    else:
        kept = [b for b in kept if start < b.date]
    bars = [(b.date.strftime("%Y%m%d"), b.open, b.high, b.low, b.close, b.volume) for b in kept]
    if not bars:
        text = "Historical Market Data Service error message:HMDS query returned no data: "
        conn.send(wire.msg_error(req_id, 162, f"{text}{symbol}@SMART Trades"))
        return
    conn.send(
        wire.msg_historical_data(req_id, f"{start:%Y%m%d} 00:00:00", f"{end:%Y%m%d} 23:59:59", bars)
    )


# --- the open ---------------------------------------------------------------------------------


def fill_due_orders(sim: TwsSimulator) -> None:
    """Fill every working order whose session opened and whose opening print is known.

    Pushes to every connected client, per fill: openOrder (final status), execDetails
    (reqId -1), orderStatus, commissionReport. Burst faults: "1100" sends error 1100, fills
    the batch without pushing, and sends 1102 ``restore_after_seconds`` later; "drop" pushes
    the first fill, aborts every client socket, fills the rest silently, then clears itself.
    """
    market, account, faults = sim.market, sim._account, sim.faults
    now = sim.clock()
    due = sorted(
        (
            o
            for o in account.working()
            if o.session is not None
            and now >= market.open_instant(o.session)
            and market.opening_price(o.symbol, o.session) is not None
        ),
        key=lambda o: o.session or date.min,
    )
    if not due:
        account.apply_corporate_actions(market, date.max, now)
        return
    burst = faults.burst
    silent = False
    if burst == "1100":
        sim._broadcast(wire.msg_error(-1, 1100, TEXT_1100))
        silent = True
        if sim._loop:
            sim._loop.call_later(
                faults.restore_after_seconds,
                lambda: sim._broadcast(wire.msg_error(-1, 1102, TEXT_1102)),
            )
    for i, order in enumerate(due):
        # The account's corporate actions of every open up to this order's come first.
        account.apply_corporate_actions(market, order.session or date.max, now)
        _fill(sim, order, push=not silent)
        if burst == "drop" and i == 0:
            faults.burst = "none"
            sim._drop_all()
            silent = True
    account.apply_corporate_actions(market, date.max, now)
    if not silent:
        for conn in sim._live():
            if conn.account_updates:
                _push_account(sim, conn)


def _fill(sim: TwsSimulator, order: SimOrder, push: bool) -> None:
    market, account, faults = sim.market, sim._account, sim.faults
    session = order.session
    price = market.opening_price(order.symbol, session) if session else None
    if session is None or price is None:
        return
    when = market.open_instant(session)
    fraction = faults.partial.get(order.symbol, 1.0)
    shares = order.quantity if fraction >= 1 else int(order.quantity * fraction)
    execution = None
    if shares > 0:
        fee = market.commission(order.symbol, shares, price)
        execution = account.record_fill(
            order, shares, price, when, fee, compute_settles_at(market, when)
        )
    with account.lock:
        order.status = FILLED if shares == order.quantity else CANCELLED
        order.completed_at = when
        if execution and order.symbol not in faults.commission_missing:
            execution.commission = execution.charged
    if not push:
        return
    for conn in sim._live():
        conn.send(wire.msg_open_order(order))
        if execution:
            _send_fill(sim, conn.send, -1, execution)
        conn.send(wire.msg_order_status(order))
