"""The IB adapter against the loopback TWS simulator, once per installed client library.

No mock of the client classes: ib_async and ib_insync talk to ``ops_runner.simulators.tws_sim``
over 127.0.0.1 sockets. Fault cases live in test_ib_faults.py; this file holds the normal life
of a session (connect, place, fill, read back, cancel, bars) and the adapter's promises (lazy
import, no asyncio patching, a running caller loop, masked account ids).
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from datetime import UTC, datetime
from decimal import Decimal
from types import SimpleNamespace

import pytest
from ib_world import (
    ACCOUNT,
    AFTER_OPEN,
    MASKED,
    cfg,
    client,
    clock,
    daily_bars,
    gate_pass,
    intent,
    market,
    no_decode_errors,
    open_ib,
    sim,
    sim_orders,
    wait_until,
    write_ib_config,
)

from ops_runner.brokers import open_broker
from ops_runner.brokers.base import BrokerError, OrderStatus, Outcome
from ops_runner.brokers.gate import OrderRefused, Side
from ops_runner.brokers.ib import IbBroker
from ops_runner.brokers.ib_book import IbBook
from ops_runner.brokers.ib_session import IbSession, Settings
from ops_runner.core.errors import DataError
from ops_runner.simulators.tws_sim import TwsFaults

# The fixtures come from ib_world; naming them here is what lets pytest find them.
__all__ = ["cfg", "client", "clock", "market", "no_decode_errors", "open_ib", "sim"]


def test_connect_when_the_gateway_answers_reports_the_server_clock_and_paper_account(
    open_ib, sim, clock
):
    health = open_ib().connect()
    assert health.connected and health.paper is True
    assert health.account == ACCOUNT  # raw for the caller, which masks it
    assert health.server_time == clock.now
    assert health.extra["client_id"] == 11 and health.extra["server_version"] == 176
    assert open_ib("readonly").health().extra["client_id"] == 12


def test_account_values_and_positions_when_connected_match_the_simulated_account(open_ib, sim):
    broker = open_ib()
    values = broker.account_values()
    assert values.account == ACCOUNT
    assert values.cash == sim.cash() == Decimal("100000")
    assert values.net_liquidation == sim.account_values()["NetLiquidation"]
    assert broker.positions() == {"VEU": 100}


def test_open_broker_when_kind_is_ib_returns_the_adapter_for_each_role(cfg, clock):
    orders, readonly = open_broker(cfg, clock=clock), open_broker(cfg, role="readonly")
    assert isinstance(orders, IbBroker) and isinstance(readonly, IbBroker)
    assert "client_id=11" in repr(orders) and "client_id=12" in repr(readonly)
    orders.close(), readonly.close()


@pytest.mark.subprocess
def test_importing_the_adapter_when_idle_imports_no_ib_client_and_patches_no_loop():
    code = (
        "import asyncio, sys\nrun = asyncio.run\nimport ops_runner.brokers.ib\n"
        "from ops_runner.brokers import open_broker\n"
        "print(sorted(m for m in ('ib_async', 'ib_insync', 'nest_asyncio', 'eventkit') "
        "if m in sys.modules), asyncio.run is run)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.stdout.strip() == "[] True", done.stderr


def test_adapter_when_called_from_a_running_event_loop_works_and_leaves_asyncio_unpatched(
    open_ib, sim
):
    run, loop_class = asyncio.run, asyncio.BaseEventLoop.run_until_complete
    broker = open_ib()

    async def notebook_cell() -> dict[str, int]:  # a Jupyter kernel's main thread runs a loop
        broker.connect()
        return broker.positions()

    assert asyncio.run(notebook_cell()) == {"VEU": 100}
    assert asyncio.run is run and asyncio.BaseEventLoop.run_until_complete is loop_class
    assert "nest_asyncio" not in sys.modules


def test_execution_when_its_time_is_not_a_datetime_is_kept_at_the_adapter_clock():
    # A client that hands over an execution time it could not parse: the fill is still booked,
    # stamped with the adapter's clock, instead of failing the handler and losing the fill.
    book = IbBook(lambda: "", lambda session: None, lambda: AFTER_OPEN)
    settings = Settings("127.0.0.1", 4002, 11, "orders", ACCOUNT, 1.0, 2.0, 1, 0.1)
    session = IbSession(settings, book, lambda: None, lambda: AFTER_OPEN)
    contract = SimpleNamespace(symbol="SPY")
    execution = SimpleNamespace(
        acctNumber=ACCOUNT, price=610.0, time="not a time", execId="0001.01", permId=7,
        orderId=3, clientId=11, orderRef="c-1", side="BOT", shares=5.0,
    )  # fmt: skip
    session._on_exec_details(1, contract, execution)
    [fill] = book.executions()
    assert (fill.exec_id, fill.quantity, fill.time) == ("0001.01", 5, AFTER_OPEN)
    assert fill.price == Decimal("610.0")


# -- orders ------------------------------------------------------------------------------------


def test_place_when_accepted_sends_a_market_on_open_order_identified_by_perm_id(cfg, open_ib, sim):
    broker = open_ib()
    order = intent("mr:2025-11:SPY:BUY", "SPY", Side.BUY, 10)
    result = broker.place(order, gate_pass(cfg, order))
    assert result.outcome is Outcome.ACCEPTED
    [sent] = sim_orders(sim, order.client_ref)
    assert (sent.order_type, sent.tif, sent.action, sent.quantity) == ("MKT", "OPG", "BUY", 10)
    assert sent.account == ACCOUNT and sent.client_id == 11
    assert result.broker_order_id == str(sent.perm_id)
    [working] = broker.open_orders()
    assert (working.client_ref, working.broker_order_id, working.perm_id) == (
        order.client_ref,
        str(sent.perm_id),
        str(sent.perm_id),
    )
    assert (working.status, working.session, working.filled) == (
        OrderStatus.SUBMITTED,
        "2025-12-01",
        0,
    )


def test_place_when_the_reference_is_already_at_the_broker_adopts_it_without_sending(
    cfg, open_ib, sim
):
    order = intent("mr:2025-11:SPY:BUY", "SPY", Side.BUY, 10)
    broker = open_ib()
    first = broker.place(order, gate_pass(cfg, order))
    broker.close()  # a fresh process (same client id): it syncs before anything else
    again = open_ib().place(order, gate_pass(cfg, order))
    assert again.outcome is Outcome.ACCEPTED and again.broker_order_id == first.broker_order_id
    assert len(sim_orders(sim, order.client_ref)) == 1


def test_place_without_a_gate_pass_is_refused_before_anything_is_sent(cfg, open_ib, sim):
    order = intent("mr:2025-11:SPY:BUY", "SPY", Side.BUY, 10)
    other = intent("mr:2025-11:AGG:BUY", "AGG", Side.BUY, 10)
    with pytest.raises(OrderRefused):
        open_ib().place(order, None)
    with pytest.raises(OrderRefused):
        open_ib().place(order, gate_pass(cfg, other))
    assert sim.orders() == []


def test_readonly_role_when_asked_to_place_or_cancel_refuses_and_sends_nothing(cfg, open_ib, sim):
    readonly = open_ib("readonly")
    order = intent("mr:2025-11:SPY:BUY", "SPY", Side.BUY, 10)
    with pytest.raises(BrokerError, match="read-only"):
        readonly.place(order, gate_pass(cfg, order))
    with pytest.raises(BrokerError, match="read-only"):
        readonly.cancel(order.client_ref)
    assert sim.orders() == []


def test_fills_at_the_open_when_read_by_the_readonly_role_count_once_with_commissions(
    cfg, open_ib, sim, clock
):
    orders, readonly = open_ib(), open_ib("readonly")
    buy, sell = (
        intent("mr:2025-11:SPY:BUY", "SPY", Side.BUY, 10),
        intent("mr:2025-11:VEU:SELL", "VEU", Side.SELL, 100),
    )
    for order in (sell, buy):
        assert orders.place(order, gate_pass(cfg, order)).outcome is Outcome.ACCEPTED
    assert {o.client_ref for o in readonly.open_orders()} == {buy.client_ref, sell.client_ref}
    clock.now = AFTER_OPEN
    wait_until(lambda: len(sim.executions()) == 2)
    for broker in (orders, readonly):
        fills = broker.executions()
        assert sorted((f.client_ref, f.side, f.quantity, f.session) for f in fills) == [
            (buy.client_ref, "BUY", 10, "2025-12-01"),
            (sell.client_ref, "SELL", 100, "2025-12-01"),
        ]
        assert {f.exec_id for f in fills} == {e.exec_id for e in sim.executions()}
        by_perm = {str(e.perm_id): e for e in sim.executions()}
        assert all(by_perm[f.broker_order_id].exec_id == f.exec_id for f in fills)
        assert {c.exec_id: c.amount for c in broker.commissions()} == {
            e.exec_id: e.commission for e in sim.executions()
        }
        assert broker.open_orders() == []
        done = {o.client_ref: (o.status, o.filled, o.session) for o in broker.completed_orders()}
        assert done == {
            buy.client_ref: (OrderStatus.FILLED, 10, "2025-12-01"),
            sell.client_ref: (OrderStatus.FILLED, 100, "2025-12-01"),
        }
        assert broker.positions() == {"SPY": 10}
    assert readonly.executions(since=AFTER_OPEN) == []


def test_cancel_when_the_order_is_working_cancels_it_once(cfg, open_ib, sim):
    broker = open_ib()
    order = intent("mr:2025-11:SPY:BUY", "SPY", Side.BUY, 10)
    broker.place(order, gate_pass(cfg, order))
    assert broker.cancel(order.client_ref) is True
    assert broker.cancel(order.client_ref) is False  # nothing working any more
    [sent] = sim_orders(sim, order.client_ref)
    assert sent.status == "Cancelled"
    assert [(o.client_ref, o.status) for o in broker.completed_orders()] == [
        (order.client_ref, OrderStatus.CANCELLED)
    ]


# -- bars --------------------------------------------------------------------------------------


def test_historical_bars_when_the_symbol_is_known_give_canonical_bars_with_dividends(
    open_ib, sim, clock
):
    clock.now = datetime(2025, 12, 2, 1, 0, tzinfo=UTC)
    bars = open_ib("readonly").historical_bars("SPY", "2025-11-24", "2025-12-01")
    raw, _ = daily_bars()
    assert list(bars.index.date) == [d for d, *_ in raw["SPY"]]
    assert list(bars["close"]) == [c for *_, c, _v in raw["SPY"]]
    assert bars["dividend"].round(6).tolist() == [0.0, 0.0, 2.0, 0.0, 0.0]
    assert set(bars["split"]) == {1.0}


def test_historical_bars_when_the_symbol_is_unknown_raise_data_error(open_ib, sim):
    with pytest.raises(DataError, match="NOPE"):
        open_ib("readonly").historical_bars("NOPE", "2025-11-24", "2025-12-01")


def test_account_id_when_logged_by_the_client_at_debug_is_masked(cfg, open_ib, sim, caplog):
    broker = open_ib()
    order = intent("mr:2025-11:SPY:BUY", "SPY", Side.BUY, 10)
    broker.place(order, gate_pass(cfg, order))
    broker.executions()
    assert any(MASKED in r.getMessage() for r in caplog.records)  # the fixture checks the rest


def test_faults_default_when_unchanged_are_a_clean_market(sim):
    assert sim.faults == TwsFaults()


# -- quotes: a market-data snapshot over the wire -------------------------------------------------


def test_quotes_when_the_gateway_has_a_snapshot_are_its_bid_and_ask(open_ib, market, clock):
    market.set_quote("SPY", "609.95", "610.05")
    market.set_quote("AGG", "99.98", "100.02")
    answer = open_ib("readonly").quotes(["SPY", "AGG", "VEU", "SPY"])
    assert sorted(answer.quoted) == ["AGG", "SPY"]
    spy, agg = answer.quoted["SPY"], answer.quoted["AGG"]
    assert (spy.bid, spy.ask, agg.bid, agg.ask) == tuple(
        Decimal(p) for p in ("609.95", "610.05", "99.98", "100.02"))  # fmt: skip
    assert spy.at == clock.now and spy.source == "ib live snapshot"
    assert answer.unquoted["VEU"].startswith("IB sent no bid")  # the venue quotes no VEU


def test_quotes_when_live_data_is_not_subscribed_come_only_as_delayed_data(
    tmp_path, sim, market, clock, client
):
    market.set_quote("SPY", "609.95", "610.05")
    sim.faults.quotes_subscribed = False
    answers = []
    for quotes in ("live", "delayed", "none"):  # one session at a time: one client id
        cfg = write_ib_config(tmp_path / quotes, sim.port, quotes=quotes)
        broker = IbBroker(cfg, clock=clock, role="readonly", client=client)
        try:
            answers.append(broker.quotes(["SPY"]))
        finally:
            broker.close()
    live, delayed, asked_nothing = answers
    assert live.quoted == {} and "354" in live.unquoted["SPY"]  # not subscribed
    quote = delayed.quoted["SPY"]
    assert (quote.bid, quote.ask, quote.source) == (Decimal("609.95"), Decimal("610.05"),
                                                    "ib delayed snapshot")  # fmt: skip
    assert asked_nothing.quoted == {} and "not asked" in asked_nothing.unquoted["SPY"]
