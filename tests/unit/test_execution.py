"""Execution plans computed by hand, the submission window, and crash-safe submission."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest

from ops_runner.brokers.base import (
    AccountValues,
    Broker,
    BrokerOrder,
    BrokerUnavailable,
    Execution,
    OrderStatus,
    Outcome,
    PlaceResult,
)
from ops_runner.brokers.gate import OrderIntent, Side, require_valid_pass
from ops_runner.core.canonical import canonical_json
from ops_runner.core.events import EventKind, Purpose, State, Trigger
from ops_runner.execution.plan import (
    ExecutionError,
    ExecutionPlan,
    ExecutionRefused,
    ExecutionSettings,
    compute_client_ref,
    compute_plan,
)
from ops_runner.execution.submission import RowOutcome, SubmissionStatus, submit_plan
from ops_runner.ledger.states import apply_trigger, read_state, write_kill_switch
from ops_runner.workbook.config import TEMPLATES, load_config_text

D = Decimal
MARGIN = ExecutionSettings(cash_buffer=D("0.02"), min_trade_value=D("100"), cash_account=False)
CASH = replace(MARGIN, cash_account=True)
SESSION = "2025-12-01"  # orders for the open after the 2025-11-28 decision
OPENS = datetime(2025, 12, 1, 13, 0, tzinfo=UTC)  # 08:00 New York (EST)
CLOSES = datetime(2025, 12, 1, 14, 20, tzinfo=UTC)  # 09:20 New York
IN_WINDOW = datetime(2025, 12, 1, 13, 30, tzinfo=UTC)


def record(targets: dict[str, str], cycle: str = "2025-11") -> dict:
    return {"cycle_id": cycle, "session": "2025-11-28", "decision": {"targets": targets}}


def account(net: str, cash: str, settled: str | None = None) -> AccountValues:
    return AccountValues("DU123", D(net), D(cash), D(settled if settled is not None else cash))


def rows(plan: ExecutionPlan) -> list[tuple]:
    return [(ln.symbol, ln.current, ln.target, ln.delta, ln.side and str(ln.side), ln.quantity,
             ln.notional) for ln in plan.lines]  # fmt: skip


# -- plans, by hand ---------------------------------------------------------------------------


def rotation(settings: ExecutionSettings = MARGIN, **kwargs) -> ExecutionPlan:
    # 200 SPY at 490.00 = 98,000 plus 2,000 cash = 100,000 net liquidation; rotate into AGG.
    return compute_plan(
        record({"AGG": "1"}),
        {"SPY": 200},
        kwargs.pop("account", account("100000", "2000")),
        {"SPY": D("490.00"), "AGG": D("98.50")},
        settings,
        SESSION,
        **kwargs,
    )


def test_compute_plan_when_rotating_sells_first_and_buys_whole_shares():
    plan = rotation()
    # AGG: 1 * 100,000 * 0.98 = 98,000 / 98.50 = 994.92 -> 994 shares = 97,909.00
    assert rows(plan) == [
        ("SPY", 200, 0, -200, "SELL", 200, D("98000.00")),
        ("AGG", 0, 994, 994, "BUY", 994, D("97909.00")),
    ]
    assert [(i.client_ref, i.side, i.quantity) for i in plan.intents] == [
        ("mr:2025-11:SPY:SELL", Side.SELL, 200),
        ("mr:2025-11:AGG:BUY", Side.BUY, 994),
    ]
    assert {(i.purpose, i.session) for i in plan.intents} == {(Purpose.REBALANCE, SESSION)}


def test_compute_plan_when_rotating_shows_the_residual_cash_walk():
    plan = rotation()
    assert plan.cash_walk == [
        ("cash", D("2000")),
        ("+ expected sale proceeds", D("98000.00")),
        ("- planned buys", D("-97909.00")),
        ("= residual cash", D("2091.00")),
        ("  of which the gap buffer", D("2000.00")),
        ("  of which rounding and skipped orders", D("91.00")),
    ]
    assert plan.residual_cash == D("2091.00")


def test_compute_plan_when_rebalancing_two_targets_sizes_each_weight():
    # 60,000 net: QQQ 0.5 -> 29,400 / 400 = 73 shares (hold 80: sell 7 = 2,800);
    # SPY 0.5 -> 29,400 / 490 = 60 shares (hold 0: buy 60 = 29,400).
    plan = compute_plan(record({"QQQ": "0.5", "SPY": "0.5"}), {"QQQ": 80},
                        account("60000", "28000"), {"QQQ": D("400"), "SPY": D("490")}, MARGIN,
                        SESSION)  # fmt: skip
    assert rows(plan) == [
        ("QQQ", 80, 73, -7, "SELL", 7, D("2800")),
        ("SPY", 0, 60, 60, "BUY", 60, D("29400")),
    ]
    # 28,000 + 2,800 - 29,400 = 1,400 left, of which 1,200 is the 2% buffer.
    assert plan.residual_cash == D("1400")


def test_compute_plan_when_an_order_is_below_the_minimum_skips_it_with_the_reason():
    # Hold 990 AGG: the target of 994 needs 4 more = 394.00, below a 500 minimum.
    plan = compute_plan(record({"AGG": "1"}), {"AGG": 990}, account("100000", "2485"),
                        {"AGG": D("98.50")}, replace(MARGIN, min_trade_value=D("500")),
                        SESSION)  # fmt: skip
    (line,) = plan.lines
    assert (line.delta, line.side, line.quantity, line.notional) == (4, Side.BUY, 0, 0)
    assert "394.00 is below execution.min_trade_value 500" in line.skipped_reason
    assert plan.intents == []
    assert plan.residual_cash == D("2485")


def test_compute_plan_when_nothing_changes_plans_no_order():
    plan = compute_plan(record({"AGG": "1"}), {"AGG": 994}, account("100000", "2091"),
                        {"AGG": D("98.50")}, MARGIN, SESSION)  # fmt: skip
    assert rows(plan) == [("AGG", 994, 994, 0, None, 0, D("0"))]
    assert plan.lines[0].skipped_reason is None and plan.intents == []


def test_compute_plan_when_cash_account_sizes_buys_from_settled_cash_only():
    # 100,000 cash of which 50,000 settled: 50,000 - 2,000 buffer = 48,000 -> 97 SPY at 490.
    plan = compute_plan(record({"SPY": "1"}), {}, account("100000", "100000", "50000"),
                        {"SPY": D("490")}, CASH, SESSION)  # fmt: skip
    (line,) = plan.lines
    assert (line.target, line.quantity, line.notional) == (200, 97, D("47530"))
    assert line.note.startswith("buy 97 of 200: settled cash 50000")
    assert plan.cash_walk[0] == ("settled cash", D("50000"))
    assert plan.cash_walk[-1] == ("unsettled cash, not spent until it settles", D("50000"))
    assert plan.residual_cash == D("2470")


def test_compute_plan_when_cash_account_never_sells_shares_bought_with_unsettled_proceeds():
    # 50 of the 200 SPY were bought with unsettled proceeds: sell 150 = 73,500; then AGG gets
    # 2,000 + 73,500 - 2,000 = 73,500 / 98.50 = 746 shares = 73,481.00.
    plan = rotation(CASH, unsettled_bought={"SPY": 50})
    assert rows(plan) == [
        ("SPY", 200, 0, -200, "SELL", 150, D("73500.00")),
        ("AGG", 0, 994, 994, "BUY", 746, D("73481.00")),
    ]
    assert "50 shares were bought with unsettled proceeds" in plan.lines[0].note
    assert "good-faith violation" in plan.lines[0].note
    assert plan.residual_cash == D("2019.00")


def test_compute_plan_when_every_share_is_unsettled_skips_the_sale_and_the_buy():
    plan = rotation(CASH, unsettled_bought={"SPY": 200})
    sell, buy = plan.lines
    assert sell.quantity == 0 and "good-faith violation" in sell.skipped_reason
    # 2,000 settled - 2,000 buffer leaves nothing for AGG.
    assert buy.quantity == 0 and buy.skipped_reason.startswith("no cash: settled cash 2000")
    assert plan.intents == []


def test_compute_plan_when_margin_account_ignores_unsettled_purchases():
    assert rows(rotation(MARGIN, unsettled_bought={"SPY": 200})) == rows(rotation())


def test_compute_plan_is_deterministic_and_payload_has_no_floats():
    first, second = rotation(), rotation()
    assert first == second
    assert compute_client_ref("2025-06", "SPY", Side.BUY) == "mr:2025-06:SPY:BUY"
    text = canonical_json(first.to_payload())  # the ledger's encoder refuses floats
    assert '"residual_cash":"2091.00"' in text
    frame = first.to_frame()
    assert list(frame.index) == ["SPY", "AGG"] and frame.loc["AGG", "quantity"] == 994


@pytest.mark.parametrize(
    ("targets", "positions", "closes", "words"),
    [
        ({"AGG": "1"}, {"SPY": 200}, {"AGG": D("98.5")}, "no raw close of SPY"),
        ({"AGG": "1"}, {"SPY": -5}, {"AGG": D("98.5"), "SPY": D("490")}, "short positions"),
        ({"AGG": "0.7", "SPY": "0.4"}, {}, {"AGG": D("98.5"), "SPY": D("490")}, "sum <= 1"),
        ({"AGG": "1"}, {}, {"AGG": D("0")}, "raw close of AGG on 2025-11-28 is 0"),
    ],
)
def test_compute_plan_when_inputs_are_impossible_raises(targets, positions, closes, words):
    with pytest.raises(ExecutionError, match=words):
        compute_plan(record(targets), positions, account("100000", "2000"), closes, MARGIN,
                     SESSION)  # fmt: skip


# -- a fake broker ----------------------------------------------------------------------------


class FakeBroker:
    """Keeps orders in memory. ``behaviour`` per symbol: accept, reject, unknown (the order
    arrives, its acknowledgement does not), lost (neither), down (place raises
    BrokerUnavailable and the broker stays unreachable)."""

    name = "fake"
    quotes = Broker.quotes  # quotes nothing, and says so, as the base class does

    def __init__(self, positions: dict[str, int] | None = None, **behaviour: str) -> None:
        self.held = dict(positions or {})
        self.behaviour = behaviour
        self.orders: list[BrokerOrder] = []
        self.fills: list[Execution] = []
        self.placed: list[str] = []
        self.cancelled: list[str] = []
        self.calls = 0
        self.reachable = True

    def _touch(self) -> None:
        self.calls += 1
        if not self.reachable:
            raise BrokerUnavailable("fake broker: connection refused")

    def positions(self) -> dict[str, int]:
        self._touch()
        return dict(self.held)

    def account_values(self) -> AccountValues:  # the opening balance; not counted as a call
        cash = Decimal("100000")
        return AccountValues("DU0000001", cash, cash, cash)

    def open_orders(self) -> list[BrokerOrder]:
        self._touch()
        return [o for o in self.orders if o.status is OrderStatus.SUBMITTED]

    def completed_orders(self) -> list[BrokerOrder]:
        self._touch()
        return [o for o in self.orders if o.status is not OrderStatus.SUBMITTED]

    def executions(self, since=None) -> list[Execution]:
        self._touch()
        return list(self.fills)

    def add(self, intent: OrderIntent, status=OrderStatus.SUBMITTED, ref: str | None = None):
        order = BrokerOrder(intent.client_ref if ref is None else ref, str(len(self.orders) + 1),
                            f"p{len(self.orders) + 1}", intent.symbol, str(intent.side),
                            intent.quantity, 0, status, intent.session or "")  # fmt: skip
        self.orders.append(order)
        return order

    def place(self, intent: OrderIntent, gate_pass) -> PlaceResult:
        require_valid_pass(gate_pass, intent)
        self._touch()
        self.placed.append(intent.client_ref)
        how = self.behaviour.get(intent.symbol, "accept")
        if how == "down":
            self.reachable = False
            raise BrokerUnavailable("fake broker: dropped while sending")
        if how == "lost":
            return PlaceResult(Outcome.UNKNOWN, intent.client_ref, text="timeout")
        if how == "reject":
            order = self.add(intent, OrderStatus.REJECTED)
            return PlaceResult(Outcome.REJECTED, intent.client_ref, order.broker_order_id,
                               "201", "Order rejected")  # fmt: skip
        order = self.add(intent)
        if how == "unknown":
            return PlaceResult(Outcome.UNKNOWN, intent.client_ref, text="no acknowledgement")
        return PlaceResult(Outcome.ACCEPTED, intent.client_ref, order.broker_order_id)

    def cancel(self, client_ref: str) -> bool:
        self._touch()
        self.cancelled.append(client_ref)
        return True


@pytest.fixture
def cfg(tmp_path: Path):
    cfg = load_config_text((TEMPLATES / "config.yaml").read_text(), tmp_path)
    cfg.path("ledger").mkdir(parents=True)
    return cfg


@pytest.fixture
def ledger(cfg):
    from ops_runner.ledger import open_ledger

    with open_ledger(cfg) as opened:
        yield opened


def kinds(ledger, kind: EventKind) -> list:
    return [e.payload for e in ledger.events(kind=str(kind))]


def outcomes(report) -> dict[str, str]:
    return {r.client_ref: str(r.outcome) for r in report.rows}


SELL, BUY = "mr:2025-11:SPY:SELL", "mr:2025-11:AGG:BUY"


# -- the window -------------------------------------------------------------------------------


def test_submit_plan_when_before_the_window_waits_and_records_nothing(cfg, ledger):
    broker = FakeBroker({"SPY": 200})
    report = submit_plan(cfg, ledger, broker, rotation(), datetime(2025, 12, 1, 12, 59, 59,
                                                                   tzinfo=UTC))  # fmt: skip
    assert report.status is SubmissionStatus.WAIT
    assert "too early" in report.detail and "08:00 New York (13:00 UTC)" in report.detail
    assert broker.calls == 0 and list(ledger.events()) == []


def test_submit_plan_when_the_window_has_closed_refuses_and_sends_nothing(cfg, ledger):
    broker = FakeBroker({"SPY": 200})
    with pytest.raises(ExecutionRefused) as caught:
        submit_plan(cfg, ledger, broker, rotation(), CLOSES)
    message = str(caught.value)
    assert message.startswith("too late: market-on-open orders for 2025-12-01 had to be in by "
                              "09:20 New York (14:20 UTC)")  # fmt: skip
    assert "never sent as plain market orders" in message
    assert broker.calls == 0 and list(ledger.events()) == []


def test_submit_plan_when_the_window_opens_submits_every_intent_once(cfg, ledger):
    broker = FakeBroker({"SPY": 200})
    report = submit_plan(cfg, ledger, broker, rotation(), OPENS)
    assert report.status is SubmissionStatus.SUBMITTED
    assert outcomes(report) == {SELL: "submitted", BUY: "submitted"}
    assert broker.placed == [SELL, BUY]  # sells first
    assert [p["client_ref"] for p in kinds(ledger, EventKind.ORDER_INTENT_RECORDED)] == [SELL, BUY]
    submitted = kinds(ledger, EventKind.ORDER_SUBMITTED)
    assert [(p["client_ref"], p["broker_order_id"], p["adopted"]) for p in submitted] == [
        (SELL, "1", False),
        (BUY, "2", False),
    ]
    again = submit_plan(cfg, ledger, broker, rotation(), IN_WINDOW)
    assert again.status is SubmissionStatus.SUBMITTED and broker.placed == [SELL, BUY]
    # 2 intents, 2 submissions, the plan of record, the opening balance and the quotes at
    # submission (none: the fake broker quotes nothing, and that is recorded): nothing more on
    # re-run
    assert len(list(ledger.events())) == 7
    (quotes,) = kinds(ledger, EventKind.QUOTES_RECORDED)
    assert (quotes["moment"], quotes["quotes"]) == ("submission", {})
    assert quotes["unquoted"] == {"SPY": "the fake broker gives no quotes",
                                  "AGG": "the fake broker gives no quotes"}  # fmt: skip
    assert len(kinds(ledger, EventKind.ORDERS_PLANNED)) == 1
    assert kinds(ledger, EventKind.CASH_ADJUSTED)[0]["amount"] == "100000"
    payload = canonical_json(report.to_payload())  # no floats anywhere
    assert '"window":["2025-12-01T13:00:00+00:00","2025-12-01T14:20:00+00:00"]' in payload
    assert list(report.to_frame().index) == [SELL, BUY]


def test_submit_plan_after_the_window_when_all_was_sent_reports_without_the_broker(cfg, ledger):
    submit_plan(cfg, ledger, FakeBroker({"SPY": 200}), rotation(), IN_WINDOW)
    late = FakeBroker({"SPY": 200})
    report = submit_plan(cfg, ledger, late, rotation(), CLOSES)
    assert report.status is SubmissionStatus.SUBMITTED and late.calls == 0
    assert outcomes(report) == {SELL: "submitted", BUY: "submitted"}


def test_submit_plan_when_now_is_naive_or_a_hook_unknown_raises(cfg, ledger):
    with pytest.raises(ExecutionError, match="naive"):
        submit_plan(cfg, ledger, FakeBroker(), rotation(), datetime(2025, 12, 1, 13, 30))
    with pytest.raises(ExecutionError, match="unknown hooks"):
        submit_plan(cfg, ledger, FakeBroker(), rotation(), IN_WINDOW, hooks={"afterplace": print})


# -- adopting what the broker already has ------------------------------------------------------


def test_submit_plan_when_the_broker_has_the_order_adopts_it_and_never_places_it(cfg, ledger):
    plan = rotation()
    broker = FakeBroker({"SPY": 200})
    broker.add(plan.intents[0])  # a crash after the broker accepted, before the ledger knew
    report = submit_plan(cfg, ledger, broker, plan, IN_WINDOW)
    assert outcomes(report) == {SELL: "adopted", BUY: "submitted"}
    assert broker.placed == [BUY]
    adopted = kinds(ledger, EventKind.ORDER_SUBMITTED)[0]
    assert (adopted["client_ref"], adopted["broker_order_id"], adopted["adopted"]) == (
        SELL, "1", True)  # fmt: skip


def test_submit_plan_when_only_an_execution_or_an_empty_ref_matches_adopts_it(cfg, ledger):
    plan = rotation()
    broker = FakeBroker({"SPY": 200})
    broker.add(plan.intents[0], OrderStatus.FILLED, ref="")  # IB drops orderRef when completed
    broker.fills.append(Execution("e1", BUY, "77", "AGG", "BUY", 994, D("98.6"),
                                  IN_WINDOW, SESSION))  # fmt: skip
    report = submit_plan(cfg, ledger, broker, plan, IN_WINDOW)
    assert report.status is SubmissionStatus.SUBMITTED
    assert [(r.outcome, r.broker_order_id) for r in report.rows] == [
        (RowOutcome.ADOPTED, "1"), (RowOutcome.ADOPTED, "77")]  # fmt: skip
    assert broker.placed == []


def test_submit_plan_when_two_orders_match_one_intent_goes_to_safe_mode(cfg, ledger):
    plan = rotation()
    broker = FakeBroker({"SPY": 200})
    broker.add(plan.intents[0])
    broker.add(plan.intents[0])
    report = submit_plan(cfg, ledger, broker, plan, IN_WINDOW)
    assert report.status is SubmissionStatus.STOPPED and "ambiguous" in report.detail
    assert read_state(ledger).state is State.SAFE_MODE
    assert broker.placed == [] and kinds(ledger, EventKind.ORDER_SUBMITTED) == []
    (incident,) = kinds(ledger, EventKind.INCIDENT_OPENED)
    assert incident["evidence"] == ["broker order 1", "broker order 2"]


# -- unknown outcomes -------------------------------------------------------------------------


def test_submit_plan_when_the_ack_is_lost_looks_up_and_adopts_never_places_twice(cfg, ledger):
    broker = FakeBroker({"SPY": 200}, SPY="unknown")
    report = submit_plan(cfg, ledger, broker, rotation(), IN_WINDOW)
    assert report.status is SubmissionStatus.SUBMITTED
    assert outcomes(report) == {SELL: "adopted", BUY: "submitted"}
    assert broker.placed == [SELL, BUY] and len(broker.orders) == 2
    assert read_state(ledger).state is State.RUN


def test_submit_plan_when_an_unknown_order_is_not_found_stops_in_safe_mode(cfg, ledger):
    broker = FakeBroker({"SPY": 200}, SPY="lost")
    report = submit_plan(cfg, ledger, broker, rotation(), IN_WINDOW)
    assert report.status is SubmissionStatus.STOPPED
    assert outcomes(report) == {SELL: "unknown", BUY: "skipped"}
    assert read_state(ledger).state is State.SAFE_MODE
    assert [p["status"] for p in kinds(ledger, EventKind.ORDER_STATUS_CHANGED)] == ["unknown"]
    # A re-run finds nothing at the broker either: still not resent while not in RUN.
    again = submit_plan(cfg, ledger, broker, rotation(), IN_WINDOW)
    assert outcomes(again)[SELL] == "unknown" and broker.placed == [SELL]
    assert outcomes(again)[BUY] == "denied"  # SAFE_MODE: no new buys


def test_submit_plan_when_the_broker_drops_and_stays_down_goes_to_broker_down(cfg, ledger):
    broker = FakeBroker({"SPY": 200}, SPY="down")
    report = submit_plan(cfg, ledger, broker, rotation(), IN_WINDOW)
    assert report.status is SubmissionStatus.STOPPED
    assert outcomes(report) == {SELL: "unknown", BUY: "skipped"}
    view = read_state(ledger)
    assert (view.state, view.trigger) == (State.BROKER_DOWN, Trigger.BROKER_FAULT)


def test_submit_plan_when_the_broker_is_unreachable_from_the_start_sends_nothing(cfg, ledger):
    broker = FakeBroker({"SPY": 200})
    broker.reachable = False
    report = submit_plan(cfg, ledger, broker, rotation(), IN_WINDOW)
    assert report.status is SubmissionStatus.STOPPED
    assert set(outcomes(report).values()) == {"skipped"}
    assert read_state(ledger).state is State.BROKER_DOWN


# -- rejections, the gate, the kill switch -----------------------------------------------------


def test_submit_plan_when_one_order_is_rejected_records_it_and_goes_on(cfg, ledger):
    broker = FakeBroker({"SPY": 200}, SPY="reject")
    report = submit_plan(cfg, ledger, broker, rotation(), IN_WINDOW)
    assert report.status is SubmissionStatus.PARTIAL
    assert outcomes(report) == {SELL: "rejected", BUY: "submitted"}
    (status,) = kinds(ledger, EventKind.ORDER_STATUS_CHANGED)
    assert status == {"client_ref": SELL, "status": "rejected", "detail": "201: Order rejected"}
    assert read_state(ledger).state is State.RUN
    submit_plan(cfg, ledger, broker, rotation(), IN_WINDOW)  # a rejection is final
    assert broker.placed == [SELL, BUY]


def test_submit_plan_when_two_orders_are_rejected_declares_a_broker_fault(cfg, ledger):
    broker = FakeBroker({"SPY": 200}, SPY="reject", AGG="reject")
    report = submit_plan(cfg, ledger, broker, rotation(), IN_WINDOW)
    assert report.status is SubmissionStatus.STOPPED
    assert read_state(ledger).state is State.BROKER_DOWN


def test_submit_plan_when_in_safe_mode_the_gate_refuses_the_buy_not_the_sell(cfg, ledger):
    apply_trigger(ledger, Trigger.INCIDENT, "a test incident")
    broker = FakeBroker({"SPY": 200})
    report = submit_plan(cfg, ledger, broker, rotation(), IN_WINDOW)
    assert report.status is SubmissionStatus.PARTIAL
    assert outcomes(report) == {SELL: "submitted", BUY: "denied"}
    assert "SAFE_MODE allows only risk-reducing" in report.rows[1].detail
    assert broker.placed == [SELL]
    assert [p["client_ref"] for p in kinds(ledger, EventKind.ORDER_DENIED)] == [BUY]


def test_submit_plan_when_the_kill_switch_appears_between_two_orders_stops_the_second(cfg, ledger):
    broker = FakeBroker({"SPY": 200})
    hooks = {"after_record": lambda intent: write_kill_switch(cfg, "stop everything")}
    report = submit_plan(cfg, ledger, broker, rotation(), IN_WINDOW, hooks=hooks)
    assert report.status is SubmissionStatus.STOPPED and "kill switch" in report.detail
    assert outcomes(report) == {SELL: "submitted", BUY: "skipped"}
    assert broker.placed == [SELL] and broker.cancelled == [SELL]
    assert read_state(ledger).state is State.HALT


# -- the plan of record -----------------------------------------------------------------------


def test_submit_plan_when_a_rerun_plans_differently_sends_the_recorded_intents(cfg, ledger):
    broker = FakeBroker({"SPY": 200}, AGG="lost")
    submit_plan(cfg, ledger, broker, rotation(), IN_WINDOW)  # SELL sent; AGG unknown
    apply_trigger(ledger, Trigger.APPROVED_EXIT_SAFE_MODE, "checked by hand: AGG never arrived")
    broker.behaviour = {}
    moved = rotation(account=account("101000", "3000"))  # net liquidation moved pre-market
    assert moved.intents[1].quantity != 994
    report = submit_plan(cfg, ledger, broker, moved, IN_WINDOW)
    assert "differs from the plan of record" in report.detail
    assert outcomes(report) == {SELL: "submitted", BUY: "submitted"}
    assert broker.orders[-1].quantity == 994 and broker.placed == [SELL, BUY, BUY]
