"""TWS API wire format at server version 176: framing, the server messages the simulator sends.

Every builder returns the message's fields as strings, in the order both ib_insync 0.9.86's
and ib_async 2.1's decoders read them at server version 176 (where the decoders unpack an
exact field count, the count is exact). ``encode_frame`` turns fields into bytes.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from datetime import UTC, datetime
from decimal import Decimal

from ops_runner.simulators.tws_account import SimExecution, SimOrder, compute_con_id

SERVER_VERSION = 176
UNSET_DOUBLE = "1.7976931348623157E308"

# Incoming (client -> server) message ids the simulator handles.
REQ_MKT_DATA = 1
PLACE_ORDER = 3
CANCEL_ORDER = 4
REQ_OPEN_ORDERS = 5
REQ_ACCOUNT_UPDATES = 6
REQ_EXECUTIONS = 7
REQ_IDS = 8
REQ_CONTRACT_DATA = 9
REQ_AUTO_OPEN_ORDERS = 15
REQ_ALL_OPEN_ORDERS = 16
REQ_MANAGED_ACCTS = 17
REQ_HISTORICAL_DATA = 20
CANCEL_HISTORICAL_DATA = 25
REQ_CURRENT_TIME = 49
REQ_POSITIONS = 61
REQ_ACCOUNT_SUMMARY = 62
CANCEL_ACCOUNT_SUMMARY = 63
CANCEL_POSITIONS = 64
START_API = 71
REQ_ACCOUNT_UPDATES_MULTI = 76
CANCEL_ACCOUNT_UPDATES_MULTI = 77
REQ_MARKET_DATA_TYPE = 59
REQ_COMPLETED_ORDERS = 99

# Tick types of a market-data snapshot: live bid and ask, and their delayed twins.
TICK_BID, TICK_ASK, DELAYED_BID, DELAYED_ASK = 1, 2, 66, 67


def encode_frame(fields: Sequence[str]) -> bytes:
    """A length-prefixed message of NUL-terminated fields."""
    body = "".join(f"{f}\0" for f in fields).encode()
    return struct.pack(">I", len(body)) + body


def encode_handshake_reply(server_version: int, when: datetime) -> bytes:
    """The two-field answer to the client's ``API\\0`` greeting: version and connection time."""
    return encode_frame([str(server_version), when.astimezone(UTC).strftime("%Y%m%d %H:%M:%S UTC")])


def decode_frames(buffer: bytearray) -> list[list[str]]:
    """Take every complete message out of ``buffer`` (consumed in place) as lists of fields."""
    messages = []
    while len(buffer) >= 4:
        size = struct.unpack(">I", buffer[:4])[0]
        if len(buffer) < 4 + size:
            break
        body = bytes(buffer[4 : 4 + size]).decode(errors="backslashreplace")
        del buffer[: 4 + size]
        fields = body.split("\0")
        if fields and fields[-1] == "":
            fields.pop()
        messages.append(fields)
    return messages


def num(value: Decimal | int | float) -> str:
    """A number as IB writes it: integers bare, decimals without exponent or trailing zeros."""
    if isinstance(value, int):
        return str(value)
    d = value if isinstance(value, Decimal) else Decimal(str(value))
    if d == d.to_integral_value():
        return str(int(d))
    return format(d.normalize(), "f")


def ib_time(moment: datetime) -> str:
    """An instant in the ``yyyymmdd hh:mm:ss UTC`` form both clients parse."""
    return moment.astimezone(UTC).strftime("%Y%m%d %H:%M:%S UTC")


def _stock(symbol: str, exchange: str = "SMART") -> list[str]:
    # conId, symbol, secType, lastTradeDate, strike, right, multiplier, exchange, currency,
    # localSymbol, tradingClass: the contract block of openOrder, completedOrder, execDetails.
    con_id = str(compute_con_id(symbol))
    return [con_id, symbol, "STK", "", "0", "", "", exchange, "USD", symbol, symbol]


def msg_next_valid_id(order_id: int) -> list[str]:
    return ["9", "1", str(order_id)]


def msg_managed_accounts(accounts: Sequence[str]) -> list[str]:
    return ["15", "1", ",".join(accounts)]


def msg_error(req_id: int, code: int, text: str, advanced_json: str = "") -> list[str]:
    """errorMsg at v176: id, version 2, reqId, code, text, advancedOrderRejectJson."""
    return ["4", "2", str(req_id), str(code), text, advanced_json]


def msg_current_time(epoch: int) -> list[str]:
    return ["49", "1", str(epoch)]


def msg_order_status(order: SimOrder, status: str | None = None) -> list[str]:
    """orderStatus: 12 fields (no version at v176; mktCapPrice last)."""
    status = status or order.status
    remaining = order.quantity - order.filled if status in ("PreSubmitted", "Submitted") else 0
    return [
        "3",
        str(order.order_id),
        status,
        str(order.filled),
        str(remaining),
        num(order.avg_fill_price),
        str(order.perm_id),
        "0",  # parentId
        num(order.last_fill_price),
        str(order.client_id),
        "",  # whyHeld
        "0",  # mktCapPrice
    ]


def _order_block(order: SimOrder) -> list[str]:
    return [order.action, str(order.quantity), order.order_type, "0", "0", order.tif]


def msg_open_order(order: SimOrder, status: str | None = None) -> list[str]:
    """openOrder at v176 for a plain MKT order (no legs, algo, conditions, scale or hedge)."""
    return [
        "5",
        str(order.order_id),
        *_stock(order.symbol),
        *_order_block(order),
        "",  # ocaGroup
        order.account,
        "O",  # openClose
        "0",  # origin: customer
        order.order_ref,
        str(order.client_id),
        str(order.perm_id),
        "0",  # outsideRth
        "0",  # hidden
        "0",  # discretionaryAmt
        "",  # goodAfterTime
        "",  # (skipped: sharesAllocation)
        "", "", "", "",  # faGroup, faMethod, faPercentage, faProfile
        "",  # modelCode
        "",  # goodTillDate
        "",  # rule80A
        "",  # percentOffset
        "",  # settlingFirm
        "0",  # shortSaleSlot
        "",  # designatedLocation
        "-1",  # exemptCode
        "0",  # auctionStrategy
        "", "", "", "", "",  # startingPrice, stockRefPrice, delta, stockRangeLower/Upper
        "",  # displaySize
        "0", "0", "0",  # blockOrder, sweepToFill, allOrNone
        "",  # minQty
        "3",  # ocaType
        "0", "0",  # eTradeOnly, firmQuoteOnly
        "",  # nbboPriceCap
        "0",  # parentId
        "0",  # triggerMethod
        "",  # volatility
        "0",  # volatilityType
        "",  # deltaNeutralOrderType (empty: no delta-neutral block follows)
        "",  # deltaNeutralAuxPrice
        "0",  # continuousUpdate
        "0",  # referencePriceType
        "", "",  # trailStopPrice, trailingPercent
        "", "",  # basisPoints, basisPointsType
        "",  # comboLegsDescrip
        "0", "0", "0",  # comboLegs, orderComboLegs, smartComboRoutingParams counts
        "", "", "",  # scaleInitLevelSize, scaleSubsLevelSize, scalePriceIncrement
        "",  # hedgeType
        "0",  # optOutSmartRouting
        "", "IB", "0",  # clearingAccount, clearingIntent, notHeld
        "0",  # deltaNeutralContract present
        "",  # algoStrategy
        "0", "0",  # solicited, whatIf
        status or order.status,
        "", "", "", "", "", "", "", "", "",  # margins before/change/after
        "", "", "",  # commission, minCommission, maxCommission
        "",  # commissionCurrency
        "",  # warningText
        "0", "0",  # randomizeSize, randomizePrice
        "0",  # conditions count
        "None",  # adjustedOrderType
        "", "", "", "", "", "",  # triggerPrice .. adjustedTrailingAmount
        "0",  # adjustableTrailingUnit
        "", "", "",  # softDollarTier name, value, displayName
        "",  # cashQty
        "0", "0", "0", "0",  # dontUseAutoPriceForHedge, isOmsContainer, discUpToLimit, algo
        "",  # duration (>= 159)
        "",  # postToAts (>= 160)
        "0",  # autoCancelParent (>= 162)
        "", "", "", "", "",  # minTradeQty .. midOffsetAtHalf (>= 170)
    ]  # fmt: skip


def msg_open_order_end() -> list[str]:
    return ["53", "1"]


def msg_completed_order(order: SimOrder, order_ref: str | None = None) -> list[str]:
    """completedOrder at v176 (no order id on the wire: completed orders carry permId)."""
    done = order.completed_at or order.placed_at
    completed_status = {
        "Filled": "Filled Size: " + str(order.filled),
        "Cancelled": "Cancelled by System",
        "Inactive": "Rejected",
    }.get(order.status, order.status)
    return [
        "101",
        *_stock(order.symbol),
        *_order_block(order),
        "",  # ocaGroup
        order.account,
        "O",  # openClose
        "0",  # origin
        order.order_ref if order_ref is None else order_ref,
        str(order.perm_id),
        "0", "0", "0",  # outsideRth, hidden, discretionaryAmt
        "",  # goodAfterTime
        "", "", "", "",  # faGroup, faMethod, faPercentage, faProfile
        "",  # modelCode
        "",  # goodTillDate
        "",  # rule80A
        "",  # percentOffset
        "",  # settlingFirm
        "0",  # shortSaleSlot
        "",  # designatedLocation
        "-1",  # exemptCode
        "", "", "", "", "",  # startingPrice .. stockRangeUpper
        "",  # displaySize
        "0", "0",  # sweepToFill, allOrNone
        "",  # minQty
        "3",  # ocaType
        "0",  # triggerMethod
        "", "0",  # volatility, volatilityType
        "", "",  # deltaNeutralOrderType, deltaNeutralAuxPrice
        "0", "0",  # continuousUpdate, referencePriceType
        "", "",  # trailStopPrice, trailingPercent
        "",  # comboLegsDescrip
        "0", "0", "0",  # comboLegs, orderComboLegs, smartComboRoutingParams counts
        "", "", "",  # scale sizes and increment
        "",  # hedgeType
        "", "IB", "0",  # clearingAccount, clearingIntent, notHeld
        "0",  # deltaNeutralContract present
        "",  # algoStrategy
        "0",  # solicited
        order.status,
        "0", "0",  # randomizeSize, randomizePrice
        "0",  # conditions count
        "", "", "",  # trailStopPrice, lmtPriceOffset, cashQty
        "0", "0",  # dontUseAutoPriceForHedge, isOmsContainer
        "",  # autoCancelDate
        str(order.filled),  # filledQuantity
        "0",  # refFuturesConId
        "0",  # autoCancelParent
        "",  # shareholder
        "0", "0",  # imbalanceOnly, routeMarketableToBbo
        "",  # parentPermId
        done.astimezone(UTC).strftime("%Y%m%d-%H:%M:%S"),  # completedTime
        completed_status,
        "", "", "", "", "",  # minTradeQty .. midOffsetAtHalf (>= 170)
    ]  # fmt: skip


def msg_completed_orders_end() -> list[str]:
    return ["102"]


def msg_exec_details(req_id: int, e: SimExecution, order_ref: str | None = None) -> list[str]:
    """execDetails at v176: exactly 31 fields (ib_insync unpacks an exact count)."""
    return [
        "11",
        str(req_id),
        str(e.order_id),
        *_stock(e.symbol, exchange="ARCA"),
        e.exec_id,
        ib_time(e.time),
        e.account,
        "ARCA",  # exchange
        e.side,
        str(e.shares),
        num(e.price),
        str(e.perm_id),
        str(e.client_id),
        "0",  # liquidation
        str(e.cum_qty),
        num(e.avg_price),
        e.order_ref if order_ref is None else order_ref,
        "",  # evRule
        "",  # evMultiplier
        "",  # modelCode
        "2",  # lastLiquidity: removed liquidity (an auction fill)
    ]


def msg_exec_details_end(req_id: int) -> list[str]:
    return ["55", "1", str(req_id)]


def msg_commission_report(e: SimExecution) -> list[str]:
    """commissionReport: exactly 8 fields."""
    pnl = num(e.realized_pnl) if e.side == "SLD" else UNSET_DOUBLE
    return ["59", "1", e.exec_id, num(e.charged), "USD", pnl, UNSET_DOUBLE, ""]


def msg_position(account: str, symbol: str, quantity: int, avg_cost: Decimal) -> list[str]:
    """position: exactly 16 fields (contract without primaryExchange)."""
    return ["61", "3", account, *_stock(symbol, exchange="ARCA"), str(quantity), num(avg_cost)]


def msg_position_end() -> list[str]:
    return ["62", "1"]


def msg_account_value(key: str, value: Decimal | str, currency: str, account: str) -> list[str]:
    text = value if isinstance(value, str) else num(value)
    return ["6", "2", key, text, currency, account]


def msg_portfolio(
    account: str, symbol: str, quantity: int, mark: Decimal, avg_cost: Decimal
) -> list[str]:
    """updatePortfolio: exactly 20 fields (version 8: primaryExchange instead of exchange)."""
    value = mark * quantity
    unrealized = (mark - avg_cost) * quantity
    con_id = str(compute_con_id(symbol))
    contract = [con_id, symbol, "STK", "", "0", "", "", "ARCA", "USD", symbol, symbol]
    return [
        "7", "8", *contract, str(quantity), num(mark), num(value), num(avg_cost),
        num(unrealized), "0", account,
    ]  # fmt: skip


def msg_account_time(moment: datetime) -> list[str]:
    return ["8", "1", moment.strftime("%H:%M")]


def msg_account_download_end(account: str) -> list[str]:
    return ["54", "1", account]


def msg_account_summary(
    req_id: int, account: str, tag: str, value: Decimal, currency: str = "USD"
) -> list[str]:
    return ["63", "1", str(req_id), account, tag, num(value), currency]


def msg_account_summary_end(req_id: int) -> list[str]:
    return ["64", "1", str(req_id)]


def msg_account_update_multi(
    req_id: int, account: str, key: str, value: Decimal, currency: str = "USD"
) -> list[str]:
    return ["73", "1", str(req_id), account, "", key, num(value), currency]


def msg_account_update_multi_end(req_id: int) -> list[str]:
    return ["74", "1", str(req_id)]


def msg_contract_details(req_id: int, symbol: str) -> list[str]:
    """contractDetails at v176 (no version field; minSize and increments at the end)."""
    return [
        "10", str(req_id), symbol, "STK", "", "0", "", "SMART", "USD", symbol,
        symbol,  # marketName
        symbol,  # tradingClass
        str(compute_con_id(symbol)),
        "0.01",  # minTick
        "",  # multiplier
        "ACTIVETIM,AD,ADJUST,ALERT,ALLOC,MKT,MOC,MOO,OPG",  # orderTypes
        "SMART,ARCA,NYSE,NASDAQ",  # validExchanges
        "1",  # priceMagnifier
        "0",  # underConId
        symbol,  # longName
        "ARCA",  # primaryExchange
        "",  # contractMonth
        "", "", "",  # industry, category, subcategory
        "US/Eastern",  # timeZoneId
        "", "",  # tradingHours, liquidHours
        "", "",  # evRule, evMultiplier
        "0",  # secIdList count
        "1",  # aggGroup
        "", "",  # underSymbol, underSecType
        "26",  # marketRuleIds
        "",  # realExpirationDate
        "ETF",  # stockType
        "0.0001", "0.0001", "100",  # minSize, sizeIncrement, suggestedSizeIncrement
    ]  # fmt: skip


def msg_contract_details_end(req_id: int) -> list[str]:
    return ["52", "1", str(req_id)]


def msg_historical_data(
    req_id: int, start: str, end: str, bars: Sequence[tuple[str, float, float, float, float, float]]
) -> list[str]:
    """historicalData at v176 (no version field; the end is implied: no message 108)."""
    fields = ["17", str(req_id), start, end, str(len(bars))]
    for day, o, h, low, c, v in bars:
        fields += [day, num(o), num(h), num(low), num(c), num(v), num(c), "1"]
    return fields


def msg_tick_req_params(req_id: int, min_tick: str = "0.01", bbo_exchange: str = "9c0001",
                        snapshot_permissions: int = 3) -> list[str]:  # fmt: skip
    """tickReqParams (81): the first answer to reqMktData at v176 (no version field)."""
    return ["81", str(req_id), min_tick, bbo_exchange, str(snapshot_permissions)]


def msg_market_data_type(req_id: int, data_type: int) -> list[str]:
    """marketDataType (58): 1 live, 3 delayed, before the ticks it describes."""
    return ["58", "1", str(req_id), str(data_type)]


def msg_tick_price(req_id: int, tick_type: int, price: Decimal, size: int) -> list[str]:
    """tickPrice (1) at version 6: reqId, tickType, price, size, attribute mask."""
    return ["1", "6", str(req_id), str(tick_type), num(price), str(size), "0"]


def msg_tick_snapshot_end(req_id: int) -> list[str]:
    """tickSnapshotEnd (57): a snapshot request is answered in full."""
    return ["57", "1", str(req_id)]
