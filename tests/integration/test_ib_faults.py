"""The IB adapter under the runbook's broker faults, once per installed client library.

Each fault is injected in the loopback TWS simulator; the adapter must end in a typed outcome
(never a library exception), and where the workbook acts on it (``submit_plan`` on a real
ledger) in the runbook's state, with no lost fill and no duplicate order. Whole-tick outcomes
(HALT when the submission window closes while the broker stays down) are the tick's tests.
"""

from __future__ import annotations

import socket
import threading
import time
from collections import Counter
from datetime import UTC, datetime
from datetime import time as wall

import pytest
from execution_world import BUY, SELL, base, ledger_facts
from ib_world import (
    ACCOUNT,
    AFTER_OPEN,
    cfg,
    client,
    clock,
    gate_pass,
    intent,
    market,
    no_decode_errors,
    open_ib,
    plan_of,
    sim,
    sim_orders,
    submit,
    wait_until,
    world,
    write_ib_config,
)

from ops_runner.brokers.base import BrokerUnavailable, OrderStatus, Outcome, find_order
from ops_runner.brokers.gate import Side
from ops_runner.brokers.ib import IbBroker
from ops_runner.core.events import State
from ops_runner.execution.submission import SubmissionReport, SubmissionStatus
from ops_runner.simulators.tws_sim import TwsSimulator

__all__ = [
    "base", "cfg", "client", "clock", "market", "no_decode_errors", "open_ib", "sim", "world"
]  # fmt: skip

BUY_SPY = intent("mr:2025-11:SPY:BUY", "SPY", Side.BUY, 10)
SELL_VEU = intent("mr:2025-11:VEU:SELL", "VEU", Side.SELL, 100)


def dead_port() -> int:
    """A port nothing listens on (bound, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def timed(call):
    started = time.monotonic()
    try:
        return call(), time.monotonic() - started
    except BrokerUnavailable as exc:
        return exc, time.monotonic() - started


def place_both(cfg, broker) -> None:
    for order in (SELL_VEU, BUY_SPY):
        assert broker.place(order, gate_pass(cfg, order)).outcome is Outcome.ACCEPTED


def fills_once(broker, sim) -> None:
    """Every fill of the account reported once, with its reference and commission."""
    fills = broker.executions()
    assert sorted(f.exec_id for f in fills) == sorted(e.exec_id for e in sim.executions())
    assert Counter(f.client_ref for f in fills) == Counter(e.order_ref for e in sim.executions())


# -- logging in ---------------------------------------------------------------------------------


def test_connect_when_nothing_listens_is_unavailable_at_once(tmp_path, clock, client):
    port = dead_port()
    broker = IbBroker(write_ib_config(tmp_path / "wb", port), clock=clock, client=client)
    error, took = timed(broker.connect)
    assert isinstance(error, BrokerUnavailable)
    assert f"no TWS/Gateway listening on 127.0.0.1:{port}" in str(error)
    assert "2 attempts" in str(error) and took < 1.0
    health = broker.health()
    assert not health.connected and "no TWS/Gateway listening" in health.detail
    broker.close()


@pytest.mark.slow  # 1.5 s or more: left out of make test-fast
@pytest.mark.parametrize(
    ("fault", "value", "says", "fast"),
    [
        ("close_on_accept", True, "accepted the connection and closed it during login", True),
        ("silent", True, "timed out after 1 s", False),
        ("client_ids_in_use", {11}, "client id 11 is already in use", True),
        ("server_version", 100, "API version too old", True),
    ],
)
def test_connect_when_the_login_is_refused_is_unavailable_with_the_reason(
    open_ib, sim, fault, value, says, fast
):
    setattr(sim.faults, fault, value)
    error, took = timed(open_ib().connect)
    assert isinstance(error, BrokerUnavailable) and says in str(error)
    assert took < 1.0 if fast else 2.0 <= took < 4.0  # two attempts of 1 s, or no wait at all
    wait_until(lambda: sim.connections() == 0)
    if fault == "client_ids_in_use":
        assert open_ib("readonly").connect().connected  # client id 12 is free


def test_connect_when_the_gateway_comes_back_between_attempts_succeeds(open_ib, sim):
    sim.faults.close_on_accept = True
    threading.Timer(0.03, lambda: setattr(sim.faults, "close_on_accept", False)).start()
    assert open_ib().connect().connected


# -- placing -----------------------------------------------------------------------------------


def test_place_when_the_connection_drops_after_the_order_is_sent_adopts_after_reconnect(
    cfg, open_ib, sim
):
    broker = open_ib()
    sim.faults.drop_after_orders = 2
    assert broker.place(SELL_VEU, gate_pass(cfg, SELL_VEU)).outcome is Outcome.ACCEPTED
    with pytest.raises(BrokerUnavailable, match="dropped after mr:2025-11:SPY:BUY was sent"):
        broker.place(BUY_SPY, gate_pass(cfg, BUY_SPY))
    found = find_order(broker.open_orders(), BUY_SPY)  # the lookup reconnects and re-syncs
    assert [o.broker_order_id for o in found] == [
        str(sim_orders(sim, BUY_SPY.client_ref)[0].perm_id)
    ]
    again = broker.place(BUY_SPY, gate_pass(cfg, BUY_SPY))
    assert again.outcome is Outcome.ACCEPTED and again.broker_order_id == found[0].broker_order_id
    assert Counter(o.order_ref for o in sim.orders()) == {
        SELL_VEU.client_ref: 1,
        BUY_SPY.client_ref: 1,
    }


def test_place_when_rejected_201_is_definitive_and_listed_as_rejected(cfg, open_ib, sim):
    sim.faults.reject = {"SPY": (201, "Order rejected - reason: no trading permission")}
    broker = open_ib()
    result = broker.place(BUY_SPY, gate_pass(cfg, BUY_SPY))
    assert (result.outcome, result.code) == (Outcome.REJECTED, "201")
    assert "no trading permission" in result.text
    assert [(o.client_ref, o.status) for o in open_ib("readonly").completed_orders()] == [
        (BUY_SPY.client_ref, OrderStatus.REJECTED)
    ]
    assert broker.place(BUY_SPY, gate_pass(cfg, BUY_SPY)).outcome is Outcome.REJECTED  # not resent
    assert len(sim_orders(sim, BUY_SPY.client_ref)) == 1


def test_place_when_the_order_id_is_a_duplicate_103_is_unknown_and_never_resent(cfg, open_ib, sim):
    sim.faults.duplicate_order_id = 1
    broker = open_ib()
    result = broker.place(BUY_SPY, gate_pass(cfg, BUY_SPY))
    assert (result.outcome, result.code) == (Outcome.UNKNOWN, "103")
    assert sim.orders() == [] and find_order(broker.open_orders(), BUY_SPY) == []
    assert broker.place(SELL_VEU, gate_pass(cfg, SELL_VEU)).outcome is Outcome.ACCEPTED  # fresh id
    assert [o.order_ref for o in sim.orders()] == [SELL_VEU.client_ref]


def test_place_when_the_order_draws_a_399_warning_is_accepted_and_fills(cfg, open_ib, sim, clock):
    sim.faults.order_warning_399 = {"SPY"}
    broker = open_ib()
    result = broker.place(BUY_SPY, gate_pass(cfg, BUY_SPY))
    assert result.outcome is Outcome.ACCEPTED and "399" in result.text
    assert [o.status for o in broker.open_orders()] == [OrderStatus.SUBMITTED]
    clock.now = AFTER_OPEN
    wait_until(lambda: len(sim.executions()) == 1)
    assert [(o.status, o.filled) for o in broker.completed_orders()] == [(OrderStatus.FILLED, 10)]


@pytest.mark.parametrize("held", [True, False])
def test_market_on_open_when_held_until_the_open_stays_working_then_fills(
    cfg, open_ib, sim, clock, held
):
    sim.faults.hold_presubmitted = held
    broker = open_ib()
    assert broker.place(BUY_SPY, gate_pass(cfg, BUY_SPY)).outcome is Outcome.ACCEPTED
    clock.now = datetime(2025, 12, 1, 14, 29, tzinfo=UTC)  # 09:29: still before the open
    sim.advance()
    assert [(o.status, o.session) for o in broker.open_orders()] == [
        (OrderStatus.SUBMITTED, "2025-12-01")
    ]
    clock.now = AFTER_OPEN
    wait_until(lambda: len(sim.executions()) == 1)
    assert broker.open_orders() == [] and broker.positions() == {"SPY": 10, "VEU": 100}


def test_partial_fill_when_the_rest_is_cancelled_reports_partial_and_each_fill_once(
    cfg, open_ib, sim, clock
):
    sim.faults.partial = {"SPY": 0.5}
    broker = open_ib()
    broker.place(BUY_SPY, gate_pass(cfg, BUY_SPY))
    clock.now = AFTER_OPEN
    wait_until(lambda: len(sim.executions()) == 1)
    [done] = broker.completed_orders()
    assert (done.client_ref, done.status, done.filled, done.quantity) == (
        BUY_SPY.client_ref,
        OrderStatus.PARTIAL,
        5,
        10,
    )
    assert [(f.quantity, f.client_ref) for f in broker.executions()] == [(5, BUY_SPY.client_ref)]
    assert broker.open_orders() == []


# -- the 09:30 fill burst --------------------------------------------------------------------


def test_fill_burst_when_1100_then_1102_recovers_every_fill_once(cfg, open_ib, sim, clock, caplog):
    orders, readonly = open_ib(), open_ib("readonly")
    place_both(cfg, orders)
    readonly.connect()
    sim.faults.burst = "1100"
    clock.now = AFTER_OPEN
    wait_until(lambda: len(sim.executions()) == 2)  # filled while TWS's link was down
    restored = "re-synchronised after TWS restored its link"
    wait_until(lambda: sum(restored in r.getMessage() for r in caplog.records) == 2)  # unasked
    for broker in (orders, readonly):
        fills_once(broker, sim)
        assert len(broker.commissions()) == 2
        assert broker.positions() == {"SPY": 10}
        assert {o.status for o in broker.completed_orders()} == {OrderStatus.FILLED}


@pytest.mark.slow
def test_fill_burst_when_1100_is_not_restored_reads_are_unavailable_not_stale(
    cfg, open_ib, sim, clock
):
    broker = open_ib()
    place_both(cfg, broker)
    sim.faults.burst, sim.faults.restore_after_seconds = "1100", 30.0
    clock.now = AFTER_OPEN
    wait_until(lambda: len(sim.executions()) == 2)
    with pytest.raises(BrokerUnavailable, match="error 1100"):
        broker.executions()
    assert not broker.health().connected


def test_fill_burst_when_the_socket_drops_recovers_every_fill_once_after_reconnect(
    cfg, open_ib, sim, clock
):
    orders, readonly = open_ib(), open_ib("readonly")
    place_both(cfg, orders)
    readonly.connect()
    sim.faults.burst = "drop"
    clock.now = AFTER_OPEN
    wait_until(lambda: len(sim.executions()) == 2)
    for broker in (readonly, orders):
        fills_once(broker, sim)
        assert len(broker.commissions()) == 2 and broker.positions() == {"SPY": 10}


@pytest.mark.parametrize(
    "fault",
    [
        {"duplicate_exec_details": True},
        {"commission_first": True},
        {"commission_missing": {"SPY"}},
    ],
)
def test_fill_reports_when_duplicated_or_out_of_order_count_once_and_join_by_exec_id(
    cfg, open_ib, sim, clock, fault
):
    orders, readonly = open_ib(), open_ib("readonly")
    place_both(cfg, orders)
    readonly.connect()
    for name, value in fault.items():
        setattr(sim.faults, name, value)
    clock.now = AFTER_OPEN
    wait_until(lambda: len(sim.executions()) == 2)
    charged = {e.exec_id: e.commission for e in sim.executions() if e.commission is not None}
    for broker in (orders, readonly):
        fills_once(broker, sim)
        assert {c.exec_id: c.amount for c in broker.commissions()} == charged
        assert broker.health().extra["commissions_without_execution"] == 0
    assert len(charged) == (1 if "commission_missing" in fault else 2)


# -- empty orderRef -------------------------------------------------------------------------


@pytest.mark.parametrize("executions_too", [False, True])
def test_completed_orders_when_order_ref_comes_back_empty_match_by_perm_id_or_fields(
    cfg, open_ib, sim, clock, executions_too
):
    orders = open_ib()
    place_both(cfg, orders)
    orders.close()
    sim.faults.empty_order_ref_completed = True
    sim.faults.empty_order_ref_executions = executions_too
    clock.now = AFTER_OPEN
    wait_until(lambda: len(sim.executions()) == 2)
    fresh = open_ib("readonly")  # knows nothing from before: only what IB sends now
    done = fresh.completed_orders()
    perm = {o.order_ref: str(o.perm_id) for o in sim.orders()}
    if executions_too:
        assert {o.client_ref for o in done} == {""}
        [found] = find_order(done, BUY_SPY)  # by symbol, side, quantity, session
    else:
        assert {o.client_ref for o in done} == {BUY_SPY.client_ref, SELL_VEU.client_ref}
        [found] = find_order(done, BUY_SPY)
    assert found.broker_order_id == perm[BUY_SPY.client_ref]


# -- the daily restart ---------------------------------------------------------------------------


def test_daily_restart_when_the_window_begins_drops_the_session_until_it_ends(open_ib, sim, clock):
    clock.now = datetime(2025, 12, 2, 4, 40, tzinfo=UTC)  # 23:40 New York
    sim.faults.restart_window = (wall(23, 45), wall(0, 15))
    broker = open_ib("readonly")
    assert broker.health().connected
    clock.now = datetime(2025, 12, 2, 4, 50, tzinfo=UTC)  # 23:50: the Gateway restarts
    wait_until(lambda: sim.connections() == 0)
    with pytest.raises(BrokerUnavailable, match="closed it during login"):
        broker.positions()
    assert not broker.health().connected
    clock.now = datetime(2025, 12, 2, 5, 20, tzinfo=UTC)  # 00:20: back
    assert broker.positions() == {"VEU": 100} and broker.health().connected


# -- submit_plan on a real ledger ----------------------------------------------------------------


def outcomes(report: SubmissionReport) -> dict[str, str]:
    return {r.client_ref: str(r.outcome) for r in report.rows}


def refs(simulator: TwsSimulator) -> Counter:
    return Counter(o.order_ref for o in simulator.orders())


def test_submit_plan_when_the_gateway_refuses_goes_to_broker_down(world):
    cfg, simulator, clock, open_world = world
    plan = plan_of(cfg, open_world())
    simulator.faults.close_on_accept = True
    report = submit(cfg, open_world(), plan)
    assert report.status is SubmissionStatus.STOPPED
    assert ledger_facts(cfg)[0] is State.BROKER_DOWN
    assert "closed it during login" in report.detail and refs(simulator) == {}


def test_submit_plan_when_nothing_listens_goes_to_broker_down(world):
    cfg, simulator, clock, open_world = world
    plan = plan_of(cfg, open_world())
    simulator.stop()
    report = submit(cfg, open_world(), plan)
    assert report.status is SubmissionStatus.STOPPED and "no TWS/Gateway listening" in report.detail
    assert ledger_facts(cfg)[0] is State.BROKER_DOWN


def test_submit_plan_when_the_connection_drops_after_an_order_adopts_it_and_goes_on(world):
    cfg, simulator, clock, open_world = world
    broker = open_world()
    plan = plan_of(cfg, broker)
    simulator.faults.drop_after_orders = 1
    report = submit(cfg, broker, plan)
    assert outcomes(report) == {SELL: "adopted", BUY: "submitted"}
    assert refs(simulator) == {SELL: 1, BUY: 1}
    state, submitted, verified = ledger_facts(cfg)
    assert state is State.RUN and verified and len(submitted) == 2
    assert submit(cfg, broker, plan).status is SubmissionStatus.SUBMITTED
    assert refs(simulator) == {SELL: 1, BUY: 1}


def test_submit_plan_when_an_order_is_rejected_records_it_and_sends_the_rest(world):
    cfg, simulator, clock, open_world = world
    simulator.faults.reject = {"AGG": (201, "Order rejected - reason: no trading permission")}
    report = submit(cfg, open_world())
    assert report.status is SubmissionStatus.PARTIAL
    assert outcomes(report) == {SELL: "submitted", BUY: "rejected"}
    assert report.rows[1].detail.startswith("201: Order rejected")
    assert ledger_facts(cfg)[0] is State.RUN and refs(simulator) == {SELL: 1, BUY: 1}


def test_submit_plan_when_the_order_id_is_a_duplicate_stops_in_safe_mode_without_resending(
    world,
):
    cfg, simulator, clock, open_world = world
    broker = open_world()
    plan = plan_of(cfg, broker)
    simulator.faults.duplicate_order_id = 1
    report = submit(cfg, broker, plan)
    assert report.status is SubmissionStatus.STOPPED
    assert outcomes(report) == {SELL: "unknown", BUY: "skipped"}
    assert ledger_facts(cfg)[0] is State.SAFE_MODE and refs(simulator) == {}
    again = submit(cfg, broker, plan)  # never a resend loop: SAFE_MODE waits for a person
    assert outcomes(again) == {SELL: "unknown", BUY: "denied"}
    assert refs(simulator) == {}


class _Crash(Exception):
    pass


def _crash_after_second_place():
    calls = []

    def hook(intent) -> None:
        calls.append(intent)
        if len(calls) == 2:
            raise _Crash("the process died after sending the second order")

    return {"after_place": hook}


@pytest.mark.parametrize("duplicate", [False, True])
def test_submit_plan_when_order_refs_come_back_empty_adopts_by_fields_or_stops_if_ambiguous(
    world, duplicate
):
    cfg, simulator, clock, open_world = world
    broker = open_world()
    plan = plan_of(cfg, broker)
    with pytest.raises(_Crash):  # BUY reached the broker, the ledger never heard of it
        submit(cfg, broker, plan, hooks=_crash_after_second_place())
    if duplicate:  # somebody placed the same order by hand
        [buy] = [i for i in plan.intents if i.client_ref == BUY]
        twin = intent("manual:twin", buy.symbol, buy.side, buy.quantity)
        assert broker.place(twin, gate_pass(cfg, twin, {})).outcome is Outcome.ACCEPTED
    broker.close()
    simulator.faults.empty_order_ref_completed = simulator.faults.empty_order_ref_executions = True
    clock.now = datetime(2025, 12, 1, 15, 0, tzinfo=UTC)  # filled at the open
    wait_until(lambda: len(simulator.executions()) == len(simulator.orders()))
    report = submit(cfg, open_world(), plan)
    state = ledger_facts(cfg)[0]
    if duplicate:
        assert report.status is SubmissionStatus.STOPPED and "ambiguous" in report.detail
        assert state is State.SAFE_MODE
    else:
        assert outcomes(report) == {SELL: "submitted", BUY: "adopted"}
        assert state is State.RUN
    assert refs(simulator) == (
        {SELL: 1, BUY: 1, "manual:twin": 1} if duplicate else {SELL: 1, BUY: 1}
    )
    filled = Counter(e.order_ref for e in simulator.executions())  # each fill once, none lost
    assert filled == refs(simulator)


def test_submit_plan_when_every_order_is_rejected_goes_to_broker_down(world):
    cfg, simulator, clock, open_world = world
    simulator.faults.reject = {
        "VEU": (201, "Order rejected - reason: account restricted"),
        "AGG": (201, "Order rejected - reason: account restricted"),
    }
    report = submit(cfg, open_world())
    assert report.status is SubmissionStatus.STOPPED
    assert outcomes(report) == {SELL: "rejected", BUY: "rejected"}
    assert ledger_facts(cfg)[0] is State.BROKER_DOWN


def test_connect_when_the_session_holds_another_account_is_unavailable_with_ids_masked(
    tmp_path, sim, clock, client
):
    other = "DU7654399"
    broker = IbBroker(
        write_ib_config(tmp_path / "wb", sim.port, account=other), clock=clock, client=client
    )
    with pytest.raises(BrokerUnavailable) as caught:
        broker.connect()
    text = str(caught.value)
    assert "manages accounts DU*****21, not the configured DU*****99" in text
    assert ACCOUNT not in text and other not in text
    assert other not in broker.health().detail
    broker.close()
