"""Reconciliation against a small fake broker and a real ledger, answers worked out by hand."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest

from ops_runner.brokers.base import (
    AccountValues,
    Broker,
    BrokerOrder,
    BrokerUnavailable,
    Commission,
    Execution,
    OrderStatus,
)
from ops_runner.core.canonical import canonical_json
from ops_runner.core.events import EventKind, State
from ops_runner.execution.breaks import BreakKind
from ops_runner.execution.reconcile import (
    ReconciliationError,
    ReconciliationStatus,
    check_cash,
    check_positions,
    compute_times,
    reconcile,
)
from ops_runner.ledger import open_ledger
from ops_runner.ledger.init import init_workbook
from ops_runner.ledger.projections import compute_cash, compute_open_incidents, compute_positions
from ops_runner.ledger.states import read_state
from ops_runner.workbook.config import load_config

CYCLE, SESSION = "2025-11", "2025-12-01"
AGG_SELL, SPY_BUY = "mr:2025-11:AGG:SELL", "mr:2025-11:SPY:BUY"
# 2025-12-01 opens 09:30 New York = 14:30 UTC; delay 30 min, limit 240 min (the template's).
EARLY = datetime(2025, 12, 1, 14, 45, tzinfo=UTC)
AFTER = datetime(2025, 12, 1, 15, 30, tzinfo=UTC)
LATE = datetime(2025, 12, 1, 18, 30, tzinfo=UTC)
FILL_TIME = datetime(2025, 12, 1, 14, 30, 5, tzinfo=UTC)
D = Decimal

# The world, by hand: deposit 100000; October bought AGG 100 @ 99.00 (fee 1.00) -> 90099.
# Cycle 2025-11 sells AGG 100 @ 100.00 (fee 1.00), buys SPY 150 @ 600.00 (fee 1.00):
# 90099 + 10000 - 1 - 90000 - 1 = 10097; the broker then holds SPY 150 and no AGG.
CLEAN_CASH = D("10097.00")


class FakeBroker:
    """Answers from attributes; ``fail`` makes every call raise BrokerUnavailable."""

    name = "fake"
    quotes = Broker.quotes  # quotes nothing, and says so, as the base class does

    def __init__(self) -> None:
        self.execs: list[Execution] = []
        self.fees: list[Commission] = []
        self.open: list[BrokerOrder] = []
        self.done: list[BrokerOrder] = []
        self.held: dict[str, int] = {}
        self.cash = D(0)
        self.calls = 0
        self.fail = False

    def _call(self) -> None:
        self.calls += 1
        if self.fail:
            raise BrokerUnavailable("connection refused")

    def executions(self, since=None):
        self._call()
        return list(self.execs)

    def commissions(self):
        self._call()
        return list(self.fees)

    def open_orders(self):
        self._call()
        return list(self.open)

    def completed_orders(self):
        self._call()
        return list(self.done)

    def positions(self):
        self._call()
        return dict(self.held)

    def account_values(self):
        self._call()
        return AccountValues("DU0000000", self.cash + 90000, self.cash, self.cash)


def execution(exec_id, ref, order_id, symbol, side, qty, price) -> Execution:
    return Execution(exec_id, ref, order_id, symbol, side, qty, D(price), FILL_TIME, SESSION)


def order(ref, order_id, symbol, side, qty, filled, status) -> BrokerOrder:
    return BrokerOrder(ref, order_id, f"p{order_id}", symbol, side, qty, filled, status, SESSION)


@pytest.fixture
def cfg(tmp_path):
    init_workbook(tmp_path, template="demo")
    return load_config(tmp_path)


@pytest.fixture
def ledger(cfg):
    with open_ledger(cfg) as opened:
        opened.append(str(EventKind.CASH_ADJUSTED), "CashAdjusted:seed",
                      {"amount": "100000", "reason": "deposit"})  # fmt: skip
        opened.append(str(EventKind.FILL_RECORDED), "FillRecorded:oct-1",
                      {"exec_id": "oct-1", "client_ref": "mr:2025-10:AGG:BUY", "symbol": "AGG",
                       "side": "BUY", "quantity": 100, "price": "99.00", "commission": "1.00",
                       "session": "2025-10-01"})  # fmt: skip
        for ref, order_id, symbol, side, qty in ((AGG_SELL, "1", "AGG", "SELL", 100),
                                                 (SPY_BUY, "2", "SPY", "BUY", 150)):  # fmt: skip
            intent = {"client_ref": ref, "symbol": symbol, "side": side, "quantity": qty,
                      "purpose": "rebalance"}  # fmt: skip
            opened.append(str(EventKind.ORDER_INTENT_RECORDED), f"OrderIntentRecorded:{ref}",
                          intent, cycle_id=CYCLE)  # fmt: skip
            opened.append(str(EventKind.ORDER_SUBMITTED), f"OrderSubmitted:{ref}",
                          {**intent, "broker_order_id": order_id}, cycle_id=CYCLE)  # fmt: skip
        yield opened


@pytest.fixture
def broker() -> FakeBroker:
    """The broker after a clean cycle."""
    fake = FakeBroker()
    fake.execs = [execution("e1", AGG_SELL, "1", "AGG", "SELL", 100, "100.00"),
                  execution("e2", SPY_BUY, "2", "SPY", "BUY", 150, "600.00")]  # fmt: skip
    fake.fees = [Commission("e1", D("1.00")), Commission("e2", D("1.00"))]
    fake.done = [order(AGG_SELL, "1", "AGG", "SELL", 100, 100, OrderStatus.FILLED),
                 order(SPY_BUY, "2", "SPY", "BUY", 150, 150, OrderStatus.FILLED)]  # fmt: skip
    fake.held = {"SPY": 150}
    fake.cash = CLEAN_CASH
    return fake


def run(cfg, ledger, broker, now=AFTER, **options):
    return reconcile(cfg, ledger, broker, CYCLE, SESSION, now, **options)


def checks(ledger) -> list[dict]:
    return [e.payload for e in ledger.events(kind=str(EventKind.CHECK_RECORDED))]


def incidents(ledger) -> list[dict]:
    return [e.payload for e in ledger.events(kind=str(EventKind.INCIDENT_OPENED))]


def partial_spy(broker: FakeBroker, filled: int = 90) -> None:
    """SPY fills ``filled`` of 150 at 600.00; the rest expired at the open."""
    broker.execs[1] = execution("e2", SPY_BUY, "2", "SPY", "BUY", filled, "600.00")
    broker.done[1] = order(SPY_BUY, "2", "SPY", "BUY", 150, filled, OrderStatus.PARTIAL)
    broker.held = {"SPY": filled}
    broker.cash = D("100097.00") - 600 * filled  # 90099 + 10000 - 1 - 1 - 600 * filled


# -- timing ------------------------------------------------------------------------------------


def test_compute_times_when_template_config_gives_open_delay_and_limit(cfg):
    times = compute_times(cfg, SESSION)
    assert times.open == datetime(2025, 12, 1, 14, 30, tzinfo=UTC)
    assert times.ready_at == datetime(2025, 12, 1, 15, 0, tzinfo=UTC)
    assert times.deadline == datetime(2025, 12, 1, 18, 30, tzinfo=UTC)


def test_reconcile_when_before_open_plus_delay_waits_without_asking_the_broker(cfg, ledger, broker):
    head = ledger.head()
    report = run(cfg, ledger, broker, now=EARLY)
    assert report.status is ReconciliationStatus.WAIT
    assert broker.calls == 0 and ledger.head() == head and report.recorded == ()


def test_reconcile_when_now_is_naive_refuses(cfg, ledger, broker):
    with pytest.raises(ReconciliationError, match="naive"):
        run(cfg, ledger, broker, now=datetime(2025, 12, 1, 15, 30))


# -- clean -------------------------------------------------------------------------------------


def test_reconcile_when_cycle_filled_as_intended_is_clean(cfg, ledger, broker):
    alerts: list[str] = []
    report = run(cfg, ledger, broker, alert=alerts.append)
    assert report.status is ReconciliationStatus.CLEAN and report.breaks == ()
    assert report.recorded == ("FillRecorded:e1", "FillRecorded:e2", "Reconciliation:2025-11")
    assert [c["passed"] for c in checks(ledger)] == [True]
    assert ledger.get("Reconciliation:2025-11").payload["check"] == "reconciliation"
    assert read_state(ledger).state is State.RUN and alerts == []
    rows = {r.client_ref: r for r in report.rows}
    assert (rows[SPY_BUY].intended, rows[SPY_BUY].filled) == (150, 150)
    assert (rows[SPY_BUY].avg_price, rows[SPY_BUY].commission) == (D("600"), D("1.00"))
    assert rows[AGG_SELL].status == "filled"
    assert report.expected_cash == CLEAN_CASH and report.expected_positions == {"SPY": 150}
    assert report.residual_weight == D("0.1009")  # 10097 / 100097


def test_reconcile_when_run_twice_records_nothing_the_second_time(cfg, ledger, broker):
    run(cfg, ledger, broker)
    head = ledger.head()
    again = run(cfg, ledger, broker, now=LATE)
    assert again.status is ReconciliationStatus.CLEAN
    assert again.recorded == () and ledger.head() == head


def test_reconcile_when_report_is_written_out_is_canonical_json_and_frames(cfg, ledger, broker):
    report = run(cfg, ledger, broker)
    payload = report.to_payload()
    canonical_json(payload)  # no floats, nothing the ledger could not store
    assert payload["status"] == "CLEAN" and payload["expected_cash"] == "10097.00"
    frame = report.to_frame()
    assert list(frame.index) == [AGG_SELL, SPY_BUY]
    assert {"intended", "filled", "avg_price", "slippage_bps", "open_print"} <= set(frame.columns)
    assert report.breaks_frame().empty
    assert report.positions_frame().loc["SPY", "broker"] == 150


# -- partial and missing fills -----------------------------------------------------------------


def test_reconcile_when_partially_filled_breaks_into_safe_mode_with_an_incident(
    cfg, ledger, broker
):
    partial_spy(broker)
    alerts: list[str] = []
    report = run(cfg, ledger, broker, alert=alerts.append)
    assert report.status is ReconciliationStatus.BREAKS
    assert [(b.what, b.symbol, b.expected, b.actual) for b in report.breaks] == [
        (BreakKind.PARTIAL_FILL, "SPY", 150, 90)
    ]
    assert read_state(ledger).state is State.SAFE_MODE and report.state is State.SAFE_MODE
    (incident,) = compute_open_incidents(ledger.events())
    assert incident["incident_id"] == "recon-2025-11" and incident["category"] == "reconciliation"
    assert [c["passed"] for c in checks(ledger)] == [False]
    assert len(alerts) == 1 and "SPY" in alerts[0] and "\n" not in alerts[0]


def test_reconcile_when_breaks_rerun_records_and_alerts_once(cfg, ledger, broker):
    partial_spy(broker)
    alerts: list[str] = []
    run(cfg, ledger, broker, alert=alerts.append)
    head = ledger.head()
    again = run(cfg, ledger, broker, alert=alerts.append)
    assert again.status is ReconciliationStatus.BREAKS and again.recorded == ()
    assert ledger.head() == head and len(alerts) == 1


@pytest.mark.parametrize(
    ("now", "status", "state"),
    [
        (EARLY, ReconciliationStatus.WAIT, State.RUN),  # before open + delay
        (AFTER, ReconciliationStatus.BREAKS, State.SAFE_MODE),  # after delay, before the limit
        (LATE, ReconciliationStatus.UNRESOLVED, State.HALT),  # at the limit
    ],
)
def test_reconcile_when_a_fill_is_missing_follows_the_clock(
    cfg, ledger, broker, now, status, state
):
    del broker.execs[1], broker.fees[1]
    broker.done[1] = order(SPY_BUY, "2", "SPY", "BUY", 150, 0, OrderStatus.EXPIRED)
    broker.held, broker.cash = {}, D("100098.00")  # 90099 + 10000 - 1
    report = run(cfg, ledger, broker, now=now)
    assert report.status is status and read_state(ledger).state is state
    if status is not ReconciliationStatus.WAIT:
        assert [(b.what, b.expected, b.actual) for b in report.breaks] == [
            (BreakKind.MISSING_FILL, 150, 0)
        ]
        assert len(incidents(ledger)) == 1


def test_reconcile_when_order_still_working_waits_then_halts_at_the_limit(cfg, ledger, broker):
    del broker.execs[1], broker.fees[1], broker.done[1]
    broker.open = [order(SPY_BUY, "2", "SPY", "BUY", 150, 0, OrderStatus.SUBMITTED)]
    broker.held, broker.cash = {}, D("100098.00")  # 90099 + 10000 - 1
    waiting = run(cfg, ledger, broker)  # a late open: wait, never "unfilled" early
    assert waiting.status is ReconciliationStatus.WAIT and "still working" in waiting.pending[0]
    assert waiting.recorded == ("FillRecorded:e1",) and checks(ledger) == []
    assert read_state(ledger).state is State.RUN
    late = run(cfg, ledger, broker, now=LATE)
    assert late.status is ReconciliationStatus.UNRESOLVED
    assert [b.what for b in late.breaks] == [BreakKind.ORDER_WORKING]
    assert read_state(ledger).state is State.HALT


def test_reconcile_when_breaks_stay_past_the_limit_escalates_to_halt_with_one_incident(
    cfg, ledger, broker
):
    partial_spy(broker)
    assert run(cfg, ledger, broker).state is State.SAFE_MODE
    late = run(cfg, ledger, broker, now=LATE)
    assert late.status is ReconciliationStatus.UNRESOLVED and late.state is State.HALT
    assert [i["incident_id"] for i in incidents(ledger)] == ["recon-2025-11"]
    assert [c["status"] for c in checks(ledger)] == ["BREAKS", "UNRESOLVED"]
    assert run(cfg, ledger, broker, now=LATE).recorded == ()


def test_reconcile_when_filled_beyond_the_intent_is_an_overfill(cfg, ledger, broker):
    broker.execs.append(execution("e3", SPY_BUY, "2", "SPY", "BUY", 10, "600.00"))
    broker.fees.append(Commission("e3", D("0")))
    broker.held, broker.cash = {"SPY": 160}, CLEAN_CASH - 6000
    report = run(cfg, ledger, broker)
    assert [(b.what, b.expected, b.actual) for b in report.breaks] == [
        (BreakKind.OVERFILL, 150, 160)
    ]


# -- reports the broker repeats, delays or leaves out -----------------------------------------


def test_reconcile_when_executions_are_reported_twice_counts_each_once(cfg, ledger, broker):
    broker.execs = broker.execs + broker.execs  # a reconnect re-requested every execution
    broker.fees = broker.fees + broker.fees
    report = run(cfg, ledger, broker)
    assert report.status is ReconciliationStatus.CLEAN
    assert len(list(ledger.events(kind=str(EventKind.FILL_RECORDED)))) == 3  # oct-1, e1, e2
    assert compute_positions(ledger.events()) == {"SPY": 150}
    assert compute_cash(ledger.events()) == CLEAN_CASH


def test_reconcile_when_an_execution_is_re_reported_with_another_price_breaks(cfg, ledger, broker):
    run(cfg, ledger, broker)
    broker.execs[1] = execution("e2", SPY_BUY, "2", "SPY", "BUY", 150, "601.00")
    report = run(cfg, ledger, broker)
    assert [b.what for b in report.breaks] == [BreakKind.FILL_CHANGED]
    assert ledger.get("FillRecorded:e2").payload["price"] == "600"  # the first report stands


def test_reconcile_when_commission_arrives_in_a_later_call_joins_it_once(cfg, ledger, broker):
    fees, broker.fees = broker.fees, []
    first = run(cfg, ledger, broker)  # broker cash already net of fees: wait for their reports
    assert first.status is ReconciliationStatus.WAIT
    assert first.recorded == ("FillRecorded:e1", "FillRecorded:e2")
    assert ledger.get("FillRecorded:e2").payload["commission"] is None
    broker.fees = fees
    second = run(cfg, ledger, broker)
    assert second.status is ReconciliationStatus.CLEAN
    assert second.recorded == (
        "FillRecorded:e1:commission", "FillRecorded:e2:commission", "Reconciliation:2025-11"
    )  # fmt: skip
    assert ledger.get("FillRecorded:e2:commission").payload["commission"] == "1"
    assert compute_cash(ledger.events()) == CLEAN_CASH
    assert run(cfg, ledger, broker).recorded == ()


def test_reconcile_when_commission_comes_before_its_execution_joins_it(cfg, ledger, broker):
    execs, broker.execs = broker.execs, broker.execs[:1]
    broker.done[1] = order(SPY_BUY, "2", "SPY", "BUY", 150, 0, OrderStatus.SUBMITTED)
    broker.open, broker.done = [broker.done[1]], broker.done[:1]
    assert run(cfg, ledger, broker).status is ReconciliationStatus.WAIT
    broker.execs, broker.open = execs, []
    assert run(cfg, ledger, broker).status is ReconciliationStatus.CLEAN
    assert ledger.get("FillRecorded:e2").payload["commission"] == "1"


def test_reconcile_when_commission_never_comes_breaks_at_the_limit(cfg, ledger, broker):
    broker.fees = broker.fees[:1]
    report = run(cfg, ledger, broker, now=LATE)
    assert report.status is ReconciliationStatus.UNRESOLVED
    kinds = [b.what for b in report.breaks]
    assert BreakKind.COMMISSION_MISSING in kinds and BreakKind.CASH in kinds


def test_reconcile_when_execution_lost_its_reference_matches_by_order_id(cfg, ledger, broker):
    broker.execs[1] = execution("e2", "", "2", "SPY", "BUY", 150, "600.00")
    report = run(cfg, ledger, broker)
    assert report.status is ReconciliationStatus.CLEAN
    fill = ledger.get("FillRecorded:e2").payload
    assert (fill["client_ref"], fill["matched_by"]) == (SPY_BUY, "broker_order_id")


def test_reconcile_when_an_execution_is_no_intent_of_the_cycle_breaks(cfg, ledger, broker):
    broker.execs.append(execution("x1", "", "99", "VEU", "BUY", 5, "60.00"))
    broker.fees.append(Commission("x1", D("1.00")))
    broker.held, broker.cash = {"SPY": 150, "VEU": 5}, CLEAN_CASH - 301
    report = run(cfg, ledger, broker)
    assert [(b.what, b.symbol) for b in report.breaks] == [(BreakKind.UNEXPECTED_FILL, "VEU")]
    assert compute_positions(ledger.events()) == {"SPY": 150, "VEU": 5}  # recorded all the same


def test_reconcile_when_the_broker_drops_mid_way_writes_nothing(cfg, ledger, broker):
    head = ledger.head()
    broker.fail = True
    with pytest.raises(BrokerUnavailable):
        run(cfg, ledger, broker)
    assert ledger.head() == head


# -- positions and cash ------------------------------------------------------------------------


def test_reconcile_when_the_broker_lists_no_position_for_a_holding_breaks(cfg, ledger, broker):
    broker.held = {}
    report = run(cfg, ledger, broker)
    assert report.status is ReconciliationStatus.BREAKS
    (only,) = report.breaks
    assert (only.what, only.symbol, only.expected, only.actual) == (
        BreakKind.POSITION_NOT_REPORTED, "SPY", 150, None
    )  # fmt: skip
    assert only.detail == "broker reported no position for SPY; ledger expects 150"


@pytest.mark.parametrize(
    ("expected", "reported", "found"),
    [
        ({"SPY": 150}, {"SPY": 150}, []),
        ({"SPY": 150}, {"SPY": 150, "AGG": 0}, []),  # an explicit flat agrees with a flat
        ({"SPY": 150}, {}, [(BreakKind.POSITION_NOT_REPORTED, "SPY", 150, None)]),
        ({"SPY": 150}, {"SPY": 0}, [(BreakKind.POSITION, "SPY", 150, 0)]),
        ({"SPY": 150}, {"SPY": 149}, [(BreakKind.POSITION, "SPY", 150, 149)]),
        ({}, {"VEU": 5}, [(BreakKind.POSITION, "VEU", 0, 5)]),
    ],
)
def test_check_positions_when_compared_gives_known_breaks(expected, reported, found):
    breaks = check_positions(expected, reported)
    assert [(b.what, b.symbol, b.expected, b.actual) for b in breaks] == found


@pytest.mark.parametrize(
    ("off", "clean"),
    [("0", True), ("0.009", True), ("-0.02", True), ("0.021", False), ("1.00", False),
     ("-1.00", False)],
)  # fmt: skip
def test_reconcile_when_cash_is_off_breaks_beyond_a_cent_per_order(cfg, ledger, broker, off, clean):
    broker.cash = CLEAN_CASH + D(off)
    report = run(cfg, ledger, broker)
    assert report.cash_tolerance == D("0.02")  # two orders in the cycle
    if clean:
        assert report.status is ReconciliationStatus.CLEAN
    else:
        (only,) = report.breaks
        assert (only.what, only.expected, only.actual) == (
            BreakKind.CASH, CLEAN_CASH, CLEAN_CASH + D(off)
        )  # fmt: skip
        assert read_state(ledger).state is State.SAFE_MODE


def test_check_cash_when_within_tolerance_finds_nothing():
    assert check_cash(D("100.00"), D("100.01"), D("0.01")) == []
    assert [b.what for b in check_cash(D("100.00"), D("101.00"), D("0.01"))] == [BreakKind.CASH]


def test_reconcile_when_a_denied_intent_has_no_fill_finds_no_break(cfg, ledger, broker):
    denied = {"client_ref": "mr:2025-11:VEU:BUY", "symbol": "VEU", "side": "BUY", "quantity": 7,
              "purpose": "rebalance", "state": "SAFE_MODE",
              "reason": "SAFE_MODE: no new buys"}  # fmt: skip
    ledger.append(str(EventKind.ORDER_DENIED), "OrderDenied:veu", denied, cycle_id=CYCLE)
    report = run(cfg, ledger, broker)
    assert report.status is ReconciliationStatus.CLEAN
    assert {r.client_ref: r.status for r in report.rows}["mr:2025-11:VEU:BUY"] == "denied"


def test_reconcile_when_the_incident_was_closed_opens_a_new_one_for_new_breaks(cfg, ledger, broker):
    partial_spy(broker, filled=90)
    run(cfg, ledger, broker)
    closed = {"incident_id": "recon-2025-11", "resolution": "reviewed", "postmortem": None}
    ledger.append(str(EventKind.INCIDENT_CLOSED), "IncidentClosed:recon-2025-11", closed)
    broker.cash += D("5.00")  # a new finding: the broker's cash moved
    report = run(cfg, ledger, broker)
    assert report.incident_id is not None and report.incident_id.startswith("recon-2025-11-")
    assert [i["incident_id"] for i in compute_open_incidents(ledger.events())] == [
        report.incident_id
    ]


# -- the account against the cycle's targets ------------------------------------------------
# (targets, planned positions or None, broker positions, explained) -> (symbol, expected, actual)
TARGET_CASES = [
    # the plan's BUY denied: sold, never bought
    ({"AGG": "1"}, {"VEU": 0, "AGG": 844}, {}, (), [("AGG", 844, 0)]),
    # everything where the plan put it: no break (a skipped line keeps what it held)
    ({"AGG": "1"}, {"VEU": 0, "AGG": 844, "BIL": 12}, {"AGG": 844, "BIL": 12}, (), []),
    # an order's own break already names AGG: not reported twice
    ({"AGG": "1"}, {"VEU": 0, "AGG": 844}, {"AGG": 400}, ("AGG",), []),
    # no plan was recorded (the execution never ran): against the decision's weights
    ({"AGG": "1"}, None, {"VEU": 1358}, (), [("AGG", "1", 0), ("VEU", "0", 1358)]),
    ({"AGG": "1"}, None, {"AGG": 800}, (), []),
    ({"SPY": "0.5", "QQQ": "0.5"}, None, {"SPY": 10}, (), [("QQQ", "0.5", 0)]),
]


@pytest.mark.parametrize(("targets", "planned", "reported", "explained", "expected"),
                         TARGET_CASES)  # fmt: skip
def test_check_targets_when_the_account_is_short_of_the_cycle_breaks_with_both_numbers(
    targets, planned, reported, explained, expected
):
    from ops_runner.execution.breaks import BreakKind
    from ops_runner.execution.reconcile import check_targets

    breaks = check_targets(targets, planned, reported, explained)
    assert [(b.symbol, b.expected, b.actual) for b in breaks] == expected
    assert all(b.what is BreakKind.TARGET for b in breaks)


def test_compute_planned_positions_when_lines_sell_buy_and_skip_adds_each_order():
    from types import SimpleNamespace

    from ops_runner.execution.reconcile import compute_planned_positions

    lines = [
        {"symbol": "VEU", "current": 1358, "side": "SELL", "quantity": 1358},
        {"symbol": "AGG", "current": 0, "side": "BUY", "quantity": 844},
        {"symbol": "BIL", "current": 12, "side": "SELL", "quantity": 0},  # below the minimum
        {"symbol": "SPY", "current": 5, "side": None, "quantity": 0},
    ]
    planned = SimpleNamespace(kind=str(EventKind.ORDERS_PLANNED),
                              payload={"cycle_id": "2025-11", "lines": lines})  # fmt: skip
    other = SimpleNamespace(kind=str(EventKind.ORDERS_PLANNED),
                            payload={"cycle_id": "2025-10", "lines": []})  # fmt: skip
    assert compute_planned_positions([other, planned], "2025-11") == {
        "VEU": 0, "AGG": 844, "BIL": 12, "SPY": 5
    }  # fmt: skip
    assert compute_planned_positions([other], "2025-11") is None
