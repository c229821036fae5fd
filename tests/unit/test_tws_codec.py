"""Golden decodes: every message the TWS simulator emits, read by each client's own decoder.

Each message goes through ``ib_async.decoder.Decoder`` and ``ib_insync.decoder.Decoder`` at
server version 176 with a wrapper that records the calls; the decoded values are compared with
literals written here, and any decoder error log fails the test (the clients log and drop a
message whose field count is wrong).
"""

from __future__ import annotations

import importlib
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import pytest

from ops_runner.simulators import tws_codec as wire
from ops_runner.simulators.tws_account import SimExecution, SimOrder
from ops_runner.simulators.tws_sim import DecodeErrorWatch

SPY_CON_ID = 178359423  # compute_con_id("SPY"): stable across runs
UNSET = 1.7976931348623157e308


class RecordingWrapper:
    """Stands in for the client's Wrapper: records every call the decoder makes."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[Any, ...]]] = []
        self.defaultTimezone = UTC  # ib_async's execDetails converts to it
        self.ib = type("IB", (), {"TimezoneTWS": None})  # ib_insync's execDetails reads it

    def __getattr__(self, name: str):
        if name.startswith("_"):
            raise AttributeError(name)
        return lambda *args: self.calls.append((name, args))


@pytest.fixture(params=["ib_async", "ib_insync"])
def decode(request):
    """decode(fields) -> the wrapper calls of one client's decoder; fails on decoder errors."""
    module = importlib.import_module(f"{request.param}.decoder")

    def run(fields: list[str]) -> list[tuple[str, tuple[Any, ...]]]:
        wrapper = RecordingWrapper()
        decoder = module.Decoder(wrapper, wire.SERVER_VERSION)
        with DecodeErrorWatch() as watch:
            decoder.interpret(list(fields))
        assert not watch.failures, watch.failures
        return wrapper.calls

    return run


def one(calls: list[tuple[str, tuple[Any, ...]]], name: str) -> tuple[Any, ...]:
    assert [c[0] for c in calls] == [name], calls
    return calls[0][1]


def an_order(**changes: Any) -> SimOrder:
    values: dict[str, Any] = dict(
        order_id=7,
        client_id=3,
        perm_id=1200000001,
        symbol="SPY",
        action="BUY",
        quantity=10,
        order_ref="cyc-2025-01:SPY",
        session=date(2025, 1, 2),
        status="PreSubmitted",
        placed_at=datetime(2025, 1, 1, 21, 0, tzinfo=UTC),
        account="DU1234521",
    )
    values.update(changes)
    return SimOrder(**values)


def an_execution(**changes: Any) -> SimExecution:
    values: dict[str, Any] = dict(
        exec_id="0aa18c7f.6776a2e8.01.01",
        order_id=7,
        client_id=3,
        perm_id=1200000001,
        order_ref="cyc-2025-01:SPY",
        symbol="SPY",
        side="BOT",
        shares=10,
        price=Decimal("590.25"),
        time=datetime(2025, 1, 2, 14, 30, tzinfo=UTC),
        cum_qty=10,
        avg_price=Decimal("590.25"),
        account="DU1234521",
        charged=Decimal("1.00"),
    )
    values.update(changes)
    return SimExecution(**values)


def test_frames_when_encoded_then_decoded_round_trip_fields() -> None:
    buffer = bytearray(wire.encode_frame(["9", "1", "42"]) + wire.encode_frame(["62", "1"]))
    buffer += wire.encode_frame(["15"])[:3]  # an incomplete third frame stays in the buffer
    assert wire.decode_frames(buffer) == [["9", "1", "42"], ["62", "1"]]
    assert len(buffer) == 3


def test_handshake_reply_when_read_then_exactly_version_and_time() -> None:
    buffer = bytearray(wire.encode_handshake_reply(176, datetime(2025, 1, 2, 14, 0, tzinfo=UTC)))
    assert wire.decode_frames(buffer) == [["176", "20250102 14:00:00 UTC"]]


def test_next_valid_id_decodes(decode) -> None:
    assert one(decode(wire.msg_next_valid_id(42)), "nextValidId") == (42,)


def test_managed_accounts_decodes(decode) -> None:
    assert one(decode(wire.msg_managed_accounts(["DU1234521"])), "managedAccounts") == (
        "DU1234521",
    )


@pytest.mark.parametrize(
    ("req_id", "code", "text"),
    [
        (-1, 326, "Unable to connect as the client id is already in use."),
        (-1, 1100, "Connectivity between IB and Trader Workstation has been lost."),
        (7, 201, "Order rejected - reason: Exchange is closed."),
        (7, 399, "Order Message:\nBUY 10 SPY SMART\nWarning: later"),
        (7, 103, "Duplicate order id"),
    ],
)
def test_error_decodes_with_req_id_code_text(decode, req_id: int, code: int, text: str) -> None:
    assert one(decode(wire.msg_error(req_id, code, text)), "error") == (req_id, code, text, "")


def test_current_time_decodes(decode) -> None:
    assert one(decode(wire.msg_current_time(1735826400)), "currentTime") == (1735826400,)


def test_order_status_decodes_all_eleven_values(decode) -> None:
    order = an_order(
        status="Filled",
        filled=10,
        avg_fill_price=Decimal("590.25"),
        last_fill_price=Decimal("590.25"),
    )
    args = one(decode(wire.msg_order_status(order)), "orderStatus")
    assert args == (7, "Filled", 10.0, 0.0, 590.25, 1200000001, 0, 590.25, 3, "", 0.0)


def test_order_status_when_working_reports_remaining(decode) -> None:
    args = one(decode(wire.msg_order_status(an_order())), "orderStatus")
    assert args[:5] == (7, "PreSubmitted", 0.0, 10.0, 0.0)


def test_open_order_decodes_contract_order_and_state(decode) -> None:
    order_id, contract, order, state = one(decode(wire.msg_open_order(an_order())), "openOrder")
    assert order_id == 7
    assert (contract.conId, contract.symbol, contract.secType) == (SPY_CON_ID, "SPY", "STK")
    assert (contract.exchange, contract.currency) == ("SMART", "USD")
    assert (order.orderId, order.clientId, order.permId) == (7, 3, 1200000001)
    assert (order.action, order.totalQuantity, order.orderType, order.tif) == (
        "BUY",
        10.0,
        "MKT",
        "OPG",
    )
    assert (order.orderRef, order.account) == ("cyc-2025-01:SPY", "DU1234521")
    assert order.deltaNeutralOrderType == "" and order.algoStrategy == ""
    assert state.status == "PreSubmitted"


def test_open_order_when_status_given_carries_it(decode) -> None:
    *_, state = one(decode(wire.msg_open_order(an_order(), status="Filled")), "openOrder")
    assert state.status == "Filled"


def test_open_order_end_decodes(decode) -> None:
    assert one(decode(wire.msg_open_order_end()), "openOrderEnd") == ()


def test_completed_order_decodes(decode) -> None:
    order = an_order(
        status="Filled", filled=10, completed_at=datetime(2025, 1, 2, 14, 30, tzinfo=UTC)
    )
    contract, decoded, state = one(decode(wire.msg_completed_order(order)), "completedOrder")
    assert (contract.conId, contract.symbol) == (SPY_CON_ID, "SPY")
    assert (decoded.permId, decoded.action, decoded.totalQuantity) == (1200000001, "BUY", 10.0)
    assert (decoded.orderType, decoded.tif, decoded.orderRef) == ("MKT", "OPG", "cyc-2025-01:SPY")
    assert (decoded.account, decoded.filledQuantity) == ("DU1234521", 10.0)
    assert (state.status, state.completedTime, state.completedStatus) == (
        "Filled",
        "20250102-14:30:00",
        "Filled Size: 10",
    )


def test_completed_order_when_ref_blanked_carries_empty_ref(decode) -> None:
    order = an_order(status="Cancelled", completed_at=datetime(2025, 1, 2, 14, 30, tzinfo=UTC))
    _, decoded, state = one(decode(wire.msg_completed_order(order, order_ref="")), "completedOrder")
    assert (decoded.orderRef, state.status, state.completedStatus) == (
        "",
        "Cancelled",
        "Cancelled by System",
    )


def test_completed_orders_end_decodes(decode) -> None:
    assert one(decode(wire.msg_completed_orders_end()), "completedOrdersEnd") == ()


def test_exec_details_decodes_all_fields(decode) -> None:
    req_id, contract, ex = one(decode(wire.msg_exec_details(-1, an_execution())), "execDetails")
    assert req_id == -1
    assert (contract.conId, contract.symbol, contract.exchange) == (SPY_CON_ID, "SPY", "ARCA")
    assert (ex.execId, ex.orderId, ex.clientId, ex.permId) == (
        "0aa18c7f.6776a2e8.01.01",
        7,
        3,
        1200000001,
    )
    assert ex.time == datetime(2025, 1, 2, 14, 30, tzinfo=UTC)
    assert (ex.acctNumber, ex.exchange, ex.side, ex.shares, ex.price) == (
        "DU1234521",
        "ARCA",
        "BOT",
        10.0,
        590.25,
    )
    assert (ex.cumQty, ex.avgPrice, ex.orderRef, ex.lastLiquidity) == (
        10.0,
        590.25,
        "cyc-2025-01:SPY",
        2,
    )


def test_exec_details_has_exactly_31_fields() -> None:
    assert len(wire.msg_exec_details(5, an_execution())) == 31


def test_exec_details_when_ref_blanked_carries_empty_ref(decode) -> None:
    _, _, ex = one(decode(wire.msg_exec_details(5, an_execution(), order_ref="")), "execDetails")
    assert ex.orderRef == ""


def test_exec_details_end_decodes(decode) -> None:
    assert one(decode(wire.msg_exec_details_end(5)), "execDetailsEnd") == (5,)


def test_commission_report_for_a_buy_has_unset_realized_pnl(decode) -> None:
    (report,) = one(decode(wire.msg_commission_report(an_execution())), "commissionReport")
    assert (report.execId, report.commission, report.currency) == (
        "0aa18c7f.6776a2e8.01.01",
        1.0,
        "USD",
    )
    assert (report.realizedPNL, report.yield_, report.yieldRedemptionDate) == (UNSET, UNSET, 0)


def test_commission_report_for_a_sale_carries_realized_pnl(decode) -> None:
    sale = an_execution(side="SLD", realized_pnl=Decimal("101.50"), charged=Decimal("1.25"))
    (report,) = one(decode(wire.msg_commission_report(sale)), "commissionReport")
    assert (report.commission, report.realizedPNL) == (1.25, 101.5)


def test_position_decodes(decode) -> None:
    fields = wire.msg_position("DU1234521", "SPY", 15, Decimal("393.9"))
    assert len(fields) == 16
    account, contract, position, avg_cost = one(decode(fields), "position")
    assert (account, contract.conId, contract.symbol, position, avg_cost) == (
        "DU1234521",
        SPY_CON_ID,
        "SPY",
        15.0,
        393.9,
    )


def test_position_end_decodes(decode) -> None:
    assert one(decode(wire.msg_position_end()), "positionEnd") == ()


def test_account_value_decodes(decode) -> None:
    fields = wire.msg_account_value("SettledCash", Decimal("94098.00"), "USD", "DU1234521")
    assert one(decode(fields), "updateAccountValue") == (
        "SettledCash",
        "94098",
        "USD",
        "DU1234521",
    )


def test_portfolio_decodes(decode) -> None:
    fields = wire.msg_portfolio("DU1234521", "SPY", 10, Decimal("591"), Decimal("590.25"))
    assert len(fields) == 20
    contract, *values, account = one(decode(fields), "updatePortfolio")
    assert (contract.conId, contract.primaryExchange) == (SPY_CON_ID, "ARCA")
    assert values == [10.0, 591.0, 5910.0, 590.25, 7.5, 0.0]
    assert account == "DU1234521"


def test_account_time_decodes(decode) -> None:
    moment = datetime(2025, 1, 2, 9, 31, tzinfo=UTC)
    assert one(decode(wire.msg_account_time(moment)), "updateAccountTime") == ("09:31",)


def test_account_download_end_decodes(decode) -> None:
    assert one(decode(wire.msg_account_download_end("DU1234521")), "accountDownloadEnd") == (
        "DU1234521",
    )


def test_account_summary_decodes(decode) -> None:
    fields = wire.msg_account_summary(9, "DU1234521", "NetLiquidation", Decimal("102949.50"))
    assert one(decode(fields), "accountSummary") == (
        9,
        "DU1234521",
        "NetLiquidation",
        "102949.5",
        "USD",
    )


def test_account_summary_end_decodes(decode) -> None:
    assert one(decode(wire.msg_account_summary_end(9)), "accountSummaryEnd") == (9,)


def test_account_update_multi_decodes(decode) -> None:
    fields = wire.msg_account_update_multi(4, "DU1234521", "TotalCashValue", Decimal("100000"))
    assert one(decode(fields), "accountUpdateMulti") == (
        4,
        "DU1234521",
        "",
        "TotalCashValue",
        "100000",
        "USD",
    )


def test_account_update_multi_end_decodes(decode) -> None:
    assert one(decode(wire.msg_account_update_multi_end(4)), "accountUpdateMultiEnd") == (4,)


def test_contract_details_decodes(decode) -> None:
    req_id, details = one(decode(wire.msg_contract_details(3, "SPY")), "contractDetails")
    c = details.contract
    assert req_id == 3
    assert (c.conId, c.symbol, c.secType, c.exchange, c.primaryExchange, c.currency) == (
        SPY_CON_ID,
        "SPY",
        "STK",
        "SMART",
        "ARCA",
        "USD",
    )
    assert (details.minTick, details.longName, details.timeZoneId, details.stockType) == (
        0.01,
        "SPY",
        "US/Eastern",
        "ETF",
    )
    assert (details.minSize, details.sizeIncrement, details.suggestedSizeIncrement) == (
        0.0001,
        0.0001,
        100.0,
    )


def test_contract_details_end_decodes(decode) -> None:
    assert one(decode(wire.msg_contract_details_end(3)), "contractDetailsEnd") == (3,)


def test_historical_data_decodes_bars_then_end(decode) -> None:
    bars = [
        ("20241230", 585.5, 590.0, 584.25, 588.22, 5.6e7),
        ("20241231", 588.0, 589.5, 585.0, 586.08, 4.1e7),
    ]
    calls = decode(wire.msg_historical_data(8, "20241201 00:00:00", "20241231 23:59:59", bars))
    assert [c[0] for c in calls] == ["historicalData", "historicalData", "historicalDataEnd"]
    first, second = calls[0][1][1], calls[1][1][1]
    assert calls[0][1][0] == 8
    assert (first.date, first.open, first.high, first.low, first.close, first.volume) == (
        "20241230",
        585.5,
        590.0,
        584.25,
        588.22,
        56000000.0,
    )
    assert (second.date, second.close, second.volume) == ("20241231", 586.08, 41000000.0)
    assert calls[2][1] == (8, "20241201 00:00:00", "20241231 23:59:59")


COVERED = {
    "msg_next_valid_id",
    "msg_managed_accounts",
    "msg_error",
    "msg_current_time",
    "msg_order_status",
    "msg_open_order",
    "msg_open_order_end",
    "msg_completed_order",
    "msg_completed_orders_end",
    "msg_exec_details",
    "msg_exec_details_end",
    "msg_commission_report",
    "msg_position",
    "msg_position_end",
    "msg_account_value",
    "msg_portfolio",
    "msg_account_time",
    "msg_account_download_end",
    "msg_account_summary",
    "msg_account_summary_end",
    "msg_account_update_multi",
    "msg_account_update_multi_end",
    "msg_contract_details",
    "msg_contract_details_end",
    "msg_historical_data",
    "msg_tick_req_params",
    "msg_market_data_type",
    "msg_tick_price",
    "msg_tick_snapshot_end",
}


# -- a market-data snapshot (reqMktData with snapshot=True): the quotes of the spread report --


def test_tick_req_params_decodes_to_min_tick_exchange_and_permissions(decode) -> None:
    assert one(decode(wire.msg_tick_req_params(5)), "tickReqParams") == (5, 0.01, "9c0001", 3)


def test_market_data_type_decodes_to_delayed(decode) -> None:
    assert one(decode(wire.msg_market_data_type(5, 3)), "marketDataType") == (5, 3)


@pytest.mark.parametrize(("tick_type", "price", "size"), [(1, "101.45", 300), (2, "101.47", 200)])
def test_tick_price_decodes_to_the_bid_or_ask_with_its_size(decode, tick_type, price, size) -> None:
    # TWS tick types: 1 bid, 2 ask; both clients hand price and size on as floats
    fields = wire.msg_tick_price(5, tick_type, Decimal(price), size)
    assert one(decode(fields), "priceSizeTick") == (5, tick_type, float(price), float(size))


def test_tick_snapshot_end_decodes_to_its_request(decode) -> None:
    assert one(decode(wire.msg_tick_snapshot_end(5)), "tickSnapshotEnd") == (5,)


def test_every_message_builder_has_a_golden_decode() -> None:
    builders = {name for name in dir(wire) if name.startswith("msg_")}
    assert builders == COVERED


@pytest.mark.parametrize("client", ["ib_async", "ib_insync"])
def test_decode_error_watch_when_field_count_wrong_records_the_drop(client: str) -> None:
    module = importlib.import_module(f"{client}.decoder")
    wrapper = RecordingWrapper()
    short = wire.msg_position("DU1234521", "SPY", 15, Decimal("393.9"))[:-1]  # 15 fields
    with DecodeErrorWatch() as watch:
        module.Decoder(wrapper, wire.SERVER_VERSION).interpret(short)
    assert wrapper.calls == []  # the client drops the message silently...
    assert len(watch.failures) == 1  # ...and only its log says so
    assert "Error handling fields" in watch.failures[0]
