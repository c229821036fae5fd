"""The TWS simulator over real sockets, driven by the real ib_async and ib_insync clients.

Every test runs once per client. Each fault is shown as what the client sees: the exception
``IB.connect`` raises, the error codes on ``errorEvent``, the statuses of its trades, the
fills it holds. Any decoder error the client logs fails the test (DecodeErrorWatch).

Observed (both clients alike, ib_async 2.1.0 and ib_insync 0.9.86): nothing listening raises
ConnectionRefusedError at once; a connection closed on accept, a silent server, an old server
version (the client logs "TWS/gateway version must be >= 972" and hangs up) and a client id
in use (error 326 on errorEvent, then "Peer closed connection") all raise TimeoutError after
the connect timeout.
"""

from __future__ import annotations

import importlib
import socket
import time
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, timedelta
from datetime import time as wall
from decimal import Decimal
from typing import Any

import pytest

from ops_runner.simulators.tws_sim import (
    Bar,
    DecodeErrorWatch,
    StaticMarket,
    TwsFaults,
    TwsSimulator,
)

S1, S2, S3 = date(2025, 1, 2), date(2025, 1, 3), date(2025, 1, 6)
EVE = datetime(2025, 1, 1, 21, 0, tzinfo=UTC)  # 16:00 New York the day before S1
OPEN_S1 = datetime(2025, 1, 2, 14, 30, tzinfo=UTC)
OPEN_S2 = datetime(2025, 1, 3, 14, 30, tzinfo=UTC)
BARS = {
    "SPY": [
        Bar(date(2024, 12, 27), 595.0, 597.0, 590.0, 595.01, 6.0e7),
        Bar(date(2024, 12, 30), 588.0, 591.0, 584.0, 588.22, 5.6e7),
        Bar(date(2024, 12, 31), 589.0, 590.0, 585.0, 586.08, 4.1e7),
    ]
}
ADJUSTED = {
    "SPY": [
        Bar(b.date, b.open - 1, b.high - 1, b.low - 1, b.close - 1, b.volume) for b in BARS["SPY"]
    ]
}


class Clock:
    """The simulated wall clock the simulator reads (tests move it)."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture(params=["ib_async", "ib_insync"])
def lib(request):
    return importlib.import_module(request.param)


@pytest.fixture(autouse=True)
def main_thread_loop() -> Iterator[None]:
    """The clients here run on the main thread's event loop, as a user's script does: give
    each test its own. An earlier test in the same process that ran ``asyncio.run`` leaves the
    main thread with no loop set, and the clients' ``get_event_loop()`` would raise."""
    import asyncio

    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    yield
    asyncio.set_event_loop(None)
    loop.close()


@pytest.fixture(autouse=True)
def no_decode_errors() -> Iterator[None]:
    with DecodeErrorWatch() as watch:
        yield
    assert not watch.failures, watch.failures


@pytest.fixture
def clock() -> Clock:
    return Clock(EVE)


@pytest.fixture
def market() -> StaticMarket:
    return StaticMarket(
        {S1: {"SPY": "590.10", "QQQ": "510.00"}, S2: {"SPY": "592.00"}},
        sessions=[S1, S2, S3],
        bars=BARS,
        adjusted_bars=ADJUSTED,
    )


@pytest.fixture
def sim(market: StaticMarket, clock: Clock) -> Iterator[TwsSimulator]:
    with TwsSimulator(market, clock, positions={"IWM": 100}) as simulator:
        yield simulator
    assert simulator.protocol_errors() == []


@pytest.fixture
def connect(lib, sim: TwsSimulator) -> Iterator[Callable[..., Any]]:
    clients: list[Any] = []

    def open_client(client_id: int = 11, timeout: float = 2) -> Any:
        ib = lib.IB()
        clients.append(ib)
        ib.errors = []
        ib.errorEvent += lambda req_id, code, text, *rest: ib.errors.append((req_id, code, text))
        # Live fills as they arrive: the client's own fills() is emptied when a socket drops.
        ib.seen = []
        ib.execDetailsEvent += lambda trade, fill: ib.seen.append(fill.execution.orderRef)
        ib.connect("127.0.0.1", sim.port, clientId=client_id, timeout=timeout)
        return ib

    yield open_client
    for ib in clients:
        ib.disconnect()


def wait_until(ib: Any, condition: Callable[[], bool], timeout: float = 3.0) -> list[str]:
    """Run the client's loop until ``condition``; returns what ``ib.sleep`` raised meanwhile.

    ib_async's ``sleep`` raises ConnectionError("Socket disconnect") when the socket drops
    under it (its globalErrorEvent); the drop is what these tests want to see, so it is
    collected instead of failing the wait.
    """
    raised: list[str] = []
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        try:
            ib.sleep(0.02)
        except ConnectionError as exc:
            raised.append(str(exc))
    return raised


def moo(lib, ib: Any, symbol: str = "SPY", action: str = "BUY", qty: int = 10, ref: str = "r1"):
    contract = lib.Stock(symbol, "SMART", "USD")
    order = lib.Order(action=action, totalQuantity=qty, orderType="MKT", tif="OPG", orderRef=ref)
    return ib.placeOrder(contract, order)


def placed(lib, ib: Any, symbol: str = "SPY", **kw: Any):
    """A MOO order the simulator acknowledged (ib_async sends only once its loop runs)."""
    trade = moo(lib, ib, symbol, **kw)
    wait_until(ib, lambda: trade.orderStatus.status in ("PreSubmitted", "Submitted"))
    return trade


def codes(ib: Any) -> list[int]:
    return [code for _, code, _ in ib.errors]


def attempt(lib, port: int, client_id: int = 11, timeout: float = 1.0) -> tuple[Any, Any, float]:
    """Connect; returns (client, exception or None, seconds taken)."""
    ib = lib.IB()
    ib.errors = []
    ib.errorEvent += lambda req_id, code, text, *rest: ib.errors.append((req_id, code, text))
    started = time.monotonic()
    try:
        ib.connect("127.0.0.1", port, clientId=client_id, timeout=timeout)
        failure = None
    except Exception as exc:  # the test asserts the type
        failure = exc
    took = time.monotonic() - started
    ib.disconnect()
    return ib, failure, took


# --- connecting ------------------------------------------------------------------------------


def test_connect_when_healthy_synchronises_account_positions_and_values(connect, sim) -> None:
    ib = connect()
    assert ib.isConnected()
    assert ib.managedAccounts() == ["DU1234521"]
    assert [(p.contract.symbol, p.position) for p in ib.positions()] == [("IWM", 100.0)]
    values = {v.tag: v.value for v in ib.accountValues() if v.currency == "USD"}
    assert values["TotalCashValue"] == "100000"
    assert values["SettledCash"] == "100000"
    assert sim.connections() == 1


def test_connect_when_nothing_listening_is_refused_at_once(lib) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    _, failure, took = attempt(lib, port)
    assert isinstance(failure, ConnectionRefusedError)
    assert took < 0.5


@pytest.mark.parametrize(
    "faults",
    [
        pytest.param(TwsFaults(close_on_accept=True), id="closed-on-accept"),
        pytest.param(TwsFaults(silent=True), id="silent"),
        pytest.param(TwsFaults(server_version=100), id="old-server-version"),
    ],
)
def test_connect_when_server_misbehaves_times_out(lib, market, clock, faults) -> None:
    with TwsSimulator(market, clock, faults=faults) as simulator:
        ib, failure, took = attempt(lib, simulator.port, timeout=1.0)
    assert isinstance(failure, TimeoutError)
    assert 0.9 < took < 2.0
    assert not ib.isConnected()


def test_connect_when_client_id_in_use_gets_326_then_times_out(lib, sim) -> None:
    sim.faults.client_ids_in_use = {11}
    ib, failure, _ = attempt(lib, sim.port, client_id=11)
    assert isinstance(failure, TimeoutError)
    assert ib.errors == [
        (-1, 326, "Unable to connect as the client id is already in use. "
         "Retry with a unique client id.")
    ]  # fmt: skip
    assert sim.connections() == 0


def test_connect_when_client_id_taken_by_live_session_gets_326(lib, connect, sim) -> None:
    connect(client_id=12)
    ib, failure, _ = attempt(lib, sim.port, client_id=12)
    assert isinstance(failure, TimeoutError)
    assert codes(ib) == [326]
    assert sim.connections() == 1


def test_connect_inside_restart_window_fails_and_window_start_drops_clients(
    lib, connect, sim, clock
) -> None:
    ib = connect()
    sim.faults.restart_window = (wall(23, 45), wall(23, 59))
    clock.now = datetime(2025, 1, 2, 4, 50, tzinfo=UTC)  # 23:50 New York
    wait_until(ib, lambda: not ib.isConnected())
    _, failure, _ = attempt(lib, sim.port, client_id=13)
    assert isinstance(failure, TimeoutError)
    clock.now = datetime(2025, 1, 2, 5, 0, tzinfo=UTC)  # 00:00: the restart is over
    assert connect(client_id=14).isConnected()


def test_gateway_restart_drops_every_client_refuses_while_away_then_listens_on_the_same_port(
    lib, connect, sim
) -> None:
    ib = connect()
    port = sim.port
    sim.restart(away_seconds=0.5)
    wait_until(ib, lambda: not ib.isConnected())
    assert not sim.listening and sim.connections() == 0
    _, failure, took = attempt(lib, port, client_id=13)
    assert isinstance(failure, ConnectionRefusedError) and took < 0.5  # nothing listens
    deadline = time.monotonic() + 3
    while not sim.listening and time.monotonic() < deadline:
        time.sleep(0.02)
    assert sim.listening and sim.port == port
    assert connect(client_id=14).isConnected()


def test_gateway_shut_down_when_listened_again_keeps_the_accounts_positions(
    lib, connect, sim
) -> None:
    sim.shut_down()
    _, failure, _ = attempt(lib, sim.port)
    assert isinstance(failure, ConnectionRefusedError)
    sim.listen()
    sim.listen()  # idempotent
    ib = connect()
    assert {p.contract.symbol: p.position for p in ib.positions()} == {"IWM": 100}


def test_current_time_and_account_summary_answer_from_the_sim(connect, clock) -> None:
    ib = connect()
    assert ib.reqCurrentTime() == EVE
    summary = {v.tag: v.value for v in ib.accountSummary()}
    assert summary["NetLiquidation"] == "100000"  # IWM has no mark: valued at 0
    assert summary["BuyingPower"] == "100000"


# --- orders ---------------------------------------------------------------------------------


def test_moo_order_is_held_presubmitted_until_the_open_then_fills(
    lib, connect, sim, clock, market
) -> None:
    ib = connect()
    market._opens[S1].pop("SPY")  # the opening print is not known yet
    trade = moo(lib, ib, ref="cyc:SPY")
    wait_until(ib, lambda: trade.orderStatus.status == "PreSubmitted")
    clock.now = OPEN_S1 + timedelta(seconds=5)
    ib.sleep(0.2)
    assert trade.orderStatus.status == "PreSubmitted"
    market.set_opening(S1, "SPY", "590.10")
    wait_until(ib, lambda: trade.orderStatus.status == "Filled")
    wait_until(ib, lambda: trade.fills and trade.fills[0].commissionReport.commission > 0)
    (fill,) = trade.fills
    assert (fill.execution.shares, fill.execution.price, fill.execution.orderRef) == (
        10.0,
        590.1,
        "cyc:SPY",
    )
    assert fill.execution.time == OPEN_S1
    assert fill.commissionReport.commission == 1.0
    assert sim.positions() == {"IWM": 100, "SPY": 10}
    assert sim.cash() == Decimal("100000") - Decimal("5901.00") - Decimal("1.00")


def test_moo_order_when_hold_off_reports_submitted(lib, connect, sim) -> None:
    sim.faults.hold_presubmitted = False
    ib = connect()
    trade = moo(lib, ib)
    wait_until(ib, lambda: trade.orderStatus.status == "Submitted")
    (order,) = sim.orders()
    assert (order.status, order.session, order.perm_id >= 10**9) == ("Submitted", S1, True)


def test_reconnecting_client_gets_open_orders_then_missed_fills(lib, connect, sim, clock) -> None:
    first = connect(client_id=11)
    trade = moo(lib, first, ref="cyc:SPY")
    wait_until(first, lambda: trade.orderStatus.status == "PreSubmitted")
    first.disconnect()
    second = connect(client_id=21)
    assert [(t.order.orderRef, t.orderStatus.status) for t in second.openTrades()] == [
        ("cyc:SPY", "PreSubmitted")
    ]
    second.disconnect()
    clock.now = OPEN_S1 + timedelta(minutes=1)
    sim.advance()
    third = connect(client_id=22)
    assert [(f.execution.orderRef, f.execution.shares) for f in third.fills()] == [
        ("cyc:SPY", 10.0)
    ]
    assert [f.commissionReport.commission for f in third.fills()] == [1.0]
    assert [(t.order.orderRef, t.orderStatus.status) for t in third.trades()] == [
        ("cyc:SPY", "Filled")
    ]


def test_cancel_order_reports_cancelled_and_202(lib, connect, sim) -> None:
    ib = connect()
    trade = moo(lib, ib)
    wait_until(ib, lambda: trade.orderStatus.status == "PreSubmitted")
    ib.cancelOrder(trade.order)
    wait_until(ib, lambda: trade.orderStatus.status == "Cancelled")
    wait_until(ib, lambda: 202 in codes(ib))
    assert [o.status for o in sim.orders()] == ["Cancelled"]


def test_rejection_201_for_a_symbol_ends_inactive(lib, connect, sim) -> None:
    sim.faults.reject = {"SPY": (201, "Order rejected - reason: no short selling")}
    ib = connect()
    trade = moo(lib, ib)
    wait_until(ib, lambda: trade.orderStatus.status == "Inactive")
    assert ib.errors == [(trade.order.orderId, 201, "Order rejected - reason: no short selling")]
    assert [o.status for o in sim.orders()] == ["Inactive"]


def test_moo_order_when_exchange_open_is_rejected_201(lib, connect, sim, clock) -> None:
    clock.now = datetime(2025, 1, 2, 15, 0, tzinfo=UTC)  # 10:00 New York on a session
    ib = connect()
    trade = moo(lib, ib)
    wait_until(ib, lambda: trade.orderStatus.status == "Inactive")
    assert ib.errors == [(trade.order.orderId, 201, "Order rejected - reason: Exchange is closed.")]


def test_order_that_is_not_market_on_open_is_rejected_201(lib, connect) -> None:
    ib = connect()
    order = lib.Order(action="BUY", totalQuantity=1, orderType="LMT", lmtPrice=1.0, tif="DAY")
    trade = ib.placeOrder(lib.Stock("SPY", "SMART", "USD"), order)
    wait_until(ib, lambda: trade.orderStatus.status == "Inactive")
    assert codes(ib) == [201]


def test_duplicate_order_id_103_is_not_accepted(lib, connect, sim) -> None:
    sim.faults.duplicate_order_id = 1
    ib = connect()
    trade = moo(lib, ib)
    wait_until(ib, lambda: 103 in codes(ib))
    assert ib.errors == [(trade.order.orderId, 103, "Duplicate order id")]
    assert trade.orderStatus.status == "Cancelled"  # the client cancels it on the error
    assert sim.orders() == []
    assert moo(lib, ib) and sim.faults.duplicate_order_id == 0


def test_warning_399_still_accepts_and_fills(lib, connect, sim, clock) -> None:
    sim.faults.order_warning_399 = {"SPY"}
    ib = connect()
    trade = moo(lib, ib)
    wait_until(ib, lambda: trade.orderStatus.status == "PreSubmitted")
    assert codes(ib) == [399]
    assert "2025-01-02 09:30:00 US/Eastern" in ib.errors[0][2]
    clock.now = OPEN_S1
    wait_until(ib, lambda: trade.orderStatus.status == "Filled")


def test_drop_after_nth_order_accepts_it_but_never_acknowledges(lib, connect, sim) -> None:
    sim.faults.drop_after_orders = 2
    ib = connect()
    first = moo(lib, ib, symbol="SPY", ref="a")
    second = moo(lib, ib, symbol="QQQ", ref="b")
    wait_until(ib, lambda: not ib.isConnected())
    assert first.orderStatus.status == "PreSubmitted"
    assert second.orderStatus.status == "PendingSubmit"  # the client never heard back
    assert [(o.order_ref, o.status) for o in sim.orders()] == [
        ("a", "PreSubmitted"),
        ("b", "PreSubmitted"),
    ]
    again = connect(client_id=12)
    assert sorted(t.order.orderRef for t in again.openTrades()) == ["a", "b"]
    assert sim.faults.drop_after_orders is None


# --- the open -------------------------------------------------------------------------------


def test_partial_fill_leaves_remainder_cancelled(lib, connect, sim, clock) -> None:
    sim.faults.partial = {"SPY": 0.5}
    ib = connect()
    trade = moo(lib, ib, qty=11)
    wait_until(ib, lambda: trade.orderStatus.status == "PreSubmitted")
    clock.now = OPEN_S1
    wait_until(ib, lambda: trade.orderStatus.status == "Cancelled")
    assert (trade.orderStatus.filled, trade.orderStatus.remaining) == (5.0, 0.0)
    assert [f.execution.shares for f in trade.fills] == [5.0]
    assert [(o.filled, o.status) for o in sim.orders()] == [(5, "Cancelled")]


def test_burst_1100_fills_silently_then_1102_and_executions_recover(
    lib, connect, sim, clock
) -> None:
    sim.faults.burst = "1100"
    ib = connect()
    spy, qqq = moo(lib, ib, "SPY", ref="a"), moo(lib, ib, "QQQ", ref="b")
    wait_until(ib, lambda: qqq.orderStatus.status == "PreSubmitted")
    clock.now = OPEN_S1
    wait_until(ib, lambda: 1100 in codes(ib))
    assert (spy.orderStatus.status, qqq.orderStatus.status, ib.fills()) == (
        "PreSubmitted",
        "PreSubmitted",
        [],
    )
    wait_until(ib, lambda: 1102 in codes(ib))
    assert [(r, c) for r, c, _ in ib.errors] == [(-1, 1100), (-1, 1102)]
    assert ib.isConnected()
    recovered = ib.reqExecutions()
    assert sorted((f.execution.orderRef, f.execution.shares) for f in recovered) == [
        ("a", 10.0),
        ("b", 10.0),
    ]
    assert [o.status for o in sim.orders()] == ["Filled", "Filled"]


def test_burst_drop_pushes_first_fill_then_drops_and_reconnect_gets_rest(
    lib, connect, sim, clock
) -> None:
    sim.faults.burst = "drop"
    ib = connect()
    moo(lib, ib, "SPY", ref="a")
    qqq = moo(lib, ib, "QQQ", ref="b")
    wait_until(ib, lambda: qqq.orderStatus.status == "PreSubmitted")
    clock.now = OPEN_S1
    wait_until(ib, lambda: not ib.isConnected())
    assert ib.seen == ["a"]
    assert ib.fills() == []  # a dropped socket resets the client's state (wrapper.reset)
    assert qqq.orderStatus.status == "PreSubmitted"
    assert sim.faults.burst == "none"
    again = connect(client_id=12)
    assert sorted(f.execution.orderRef for f in again.fills()) == ["a", "b"]


def test_duplicate_exec_details_reach_the_client_twice(lib, connect, sim, clock) -> None:
    sim.faults.duplicate_exec_details = True
    ib = connect()
    seen: list[str] = []
    ib.execDetailsEvent += lambda trade, fill: seen.append(fill.execution.execId)
    trade = placed(lib, ib)
    clock.now = OPEN_S1
    wait_until(ib, lambda: trade.orderStatus.status == "Filled")
    assert len(seen) == 1  # live: the client keys fills by execId
    fills = ib.reqExecutions()
    assert len(fills) == 2 and fills[0].execution.execId == fills[1].execution.execId


def test_commission_before_execution_is_lost_by_the_client(lib, connect, sim, clock) -> None:
    sim.faults.commission_first = True
    ib = connect()
    trade = placed(lib, ib)
    clock.now = OPEN_S1
    wait_until(ib, lambda: trade.orderStatus.status == "Filled")
    assert trade.fills[0].commissionReport.commission == 0.0  # it came before its fill
    assert [e.commission for e in sim.executions()] == [Decimal("1.00")]


def test_commission_missing_is_never_reported_but_charged(lib, connect, sim, clock) -> None:
    sim.faults.commission_missing = {"SPY"}
    ib = connect()
    trade = placed(lib, ib)
    clock.now = OPEN_S1
    wait_until(ib, lambda: trade.orderStatus.status == "Filled")
    ib.sleep(0.1)
    assert trade.fills[0].commissionReport.execId == ""
    (execution,) = sim.executions()
    assert (execution.commission, execution.charged) == (None, Decimal("1.00"))
    assert sim.cash() == Decimal("100000") - Decimal("5901.00") - Decimal("1.00")


def test_empty_order_ref_on_completed_orders_only(lib, connect, sim, clock) -> None:
    sim.faults.empty_order_ref_completed = True
    ib = connect()
    trade = placed(lib, ib, ref="cyc:SPY")
    clock.now = OPEN_S1
    wait_until(ib, lambda: trade.orderStatus.status == "Filled")
    completed = ib.reqCompletedOrders(False)
    assert [(t.order.orderRef, t.orderStatus.status) for t in completed] == [("", "Filled")]
    assert [f.execution.orderRef for f in ib.reqExecutions()] == ["cyc:SPY"]
    sim.faults.empty_order_ref_executions = True
    assert [f.execution.orderRef for f in ib.reqExecutions()] == [""]


def test_sale_proceeds_settle_at_next_open(lib, connect, sim, clock) -> None:
    ib = connect()
    placed(lib, ib, "SPY", ref="buy")
    clock.now = OPEN_S1
    sim.advance()
    clock.now = datetime(2025, 1, 2, 22, 0, tzinfo=UTC)  # after the close: an order for S2
    sale = moo(lib, ib, "SPY", action="SELL", ref="sell")
    wait_until(ib, lambda: sale.orderStatus.status == "PreSubmitted")
    clock.now = OPEN_S2
    wait_until(ib, lambda: sale.orderStatus.status == "Filled")
    after_buy = Decimal("100000") - Decimal("5901.00") - Decimal("1.00")
    assert sim.cash() == after_buy + Decimal("5920.00") - Decimal("1.00")
    assert sim.settled_cash() == after_buy - Decimal("1.00")  # proceeds settle at S3's open
    assert sim.positions() == {"IWM": 100}


# --- reference and market data ----------------------------------------------------------------


def test_contract_details_qualify_a_stock(lib, connect) -> None:
    ib = connect()
    (contract,) = ib.qualifyContracts(lib.Stock("SPY", "SMART", "USD"))
    assert (contract.conId, contract.primaryExchange) == (178359423, "ARCA")


@pytest.mark.parametrize(
    ("what", "closes"),
    [("TRADES", [588.22, 586.08]), ("ADJUSTED_LAST", [587.22, 585.08])],
)
def test_historical_daily_bars_filter_by_end_and_duration(lib, connect, what, closes) -> None:
    ib = connect()
    bars = ib.reqHistoricalData(
        lib.Stock("SPY", "SMART", "USD"),
        endDateTime="20241231 23:00:00 US/Eastern" if what == "TRADES" else "",
        durationStr="2 D",
        barSizeSetting="1 day",
        whatToShow=what,
        useRTH=True,
    )
    assert [(b.date, b.close) for b in bars] == list(
        zip([date(2024, 12, 30), date(2024, 12, 31)], closes, strict=True)
    )


def test_historical_data_for_unknown_symbol_is_error_162(lib, connect) -> None:
    ib = connect()
    bars = ib.reqHistoricalData(
        lib.Stock("NOPE", "SMART", "USD"), "", "1 M", "1 day", "TRADES", True
    )
    assert list(bars) == []
    assert codes(ib) == [162]
