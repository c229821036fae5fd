"""The order gate: a table of known decisions, denials in the ledger, no broker call without it;
the risk-off intents it lets through in HALT."""

from __future__ import annotations

import dataclasses
from decimal import Decimal
from pathlib import Path

import pytest

from ops_runner.brokers.gate import (
    GatePass,
    OrderIntent,
    OrderRefused,
    Side,
    compute_gate_decision,
    compute_risk_off_intents,
    require_gate_pass,
    require_valid_pass,
)
from ops_runner.core.events import EventKind, Purpose, State, Trigger
from ops_runner.ledger.projections import StateView
from ops_runner.ledger.states import StateError, apply_trigger
from ops_runner.workbook.config import TEMPLATES, load_config_text

R, DD, BD, SM, H = "RUN", "DEGRADED_DATA", "BROKER_DOWN", "SAFE_MODE", "HALT"
REB, OFF, REC, CAN = "rebalance", "risk_off", "reconciliation", "cancel"
ALLOW, REFUSE = True, False

# (state, purpose, side, quantity, position, trigger that entered HALT) -> allowed
GATE_TABLE = [
    (R, REB, "BUY", 10, 0, None, ALLOW),
    (R, REB, "SELL", 10, 10, None, ALLOW),
    (R, REB, "SELL", 11, 10, None, REFUSE),  # would go short
    (R, REB, "BUY", 0, 0, None, REFUSE),
    (R, REB, "BUY", -5, 0, None, REFUSE),
    (R, REB, "BUY", 1.5, 0, None, REFUSE),
    (R, REB, "BUY", True, 0, None, REFUSE),
    (R, OFF, "SELL", 5, 0, None, REFUSE),  # short, whatever the purpose
    (R, REC, "BUY", 3, 0, None, ALLOW),
    (R, CAN, "SELL", 10, 0, None, ALLOW),  # withdrawing an order never adds exposure
    *[
        row
        for state in (SM, DD, BD)
        for row in [
            (state, REB, "BUY", 10, 0, None, REFUSE),
            (state, REB, "BUY", 10, 50, None, REFUSE),
            (state, REB, "SELL", 10, 10, None, ALLOW),  # reduces risk
            (state, REB, "SELL", 11, 10, None, REFUSE),
            (state, OFF, "SELL", 10, 10, None, ALLOW),
            (state, OFF, "BUY", 10, 0, None, ALLOW),  # the defensive asset
            (state, REC, "BUY", 3, 0, None, ALLOW),
            (state, REC, "SELL", 3, 3, None, ALLOW),
            (state, CAN, "BUY", 10, 0, None, ALLOW),
            (state, OFF, "SELL", 0, 10, None, REFUSE),
        ]
    ],
    (H, OFF, "SELL", 10, 10, "drawdown_breach", ALLOW),
    (H, OFF, "BUY", 10, 0, "drawdown_breach", ALLOW),
    (H, OFF, "SELL", 11, 10, "drawdown_breach", REFUSE),
    (H, REB, "SELL", 10, 10, "drawdown_breach", REFUSE),
    (H, REB, "BUY", 10, 0, "drawdown_breach", REFUSE),
    (H, REC, "SELL", 10, 10, "drawdown_breach", REFUSE),
    (H, CAN, "BUY", 10, 0, "drawdown_breach", ALLOW),
    (H, OFF, "SELL", 10, 10, "kill_switch", REFUSE),
    (H, REB, "SELL", 10, 10, "kill_switch", REFUSE),
    (H, REC, "BUY", 1, 0, "kill_switch", REFUSE),
    (H, CAN, "SELL", 10, 10, "kill_switch", ALLOW),
    (H, OFF, "SELL", 10, 10, "reconciliation_unresolved", REFUSE),
    (H, OFF, "SELL", 10, 10, "ledger_corrupt", REFUSE),
    (H, OFF, "SELL", 10, 10, "decision_window_missed", REFUSE),
    (H, CAN, "SELL", 10, 10, "ledger_corrupt", ALLOW),
]


def view_of(state: str, halt_trigger: str | None = None) -> StateView:
    trigger = Trigger(halt_trigger) if halt_trigger else None
    return StateView(state=State(state), trigger=trigger, seq=0 if state == R else 3)


def intent_of(purpose: str, side: str, quantity, ref: str = "ref-1") -> OrderIntent:
    return OrderIntent(ref, "SPY", Side(side), quantity, Purpose(purpose), "2025-03-03")


@pytest.mark.parametrize(
    ("state", "purpose", "side", "quantity", "position", "halt_trigger", "allowed"), GATE_TABLE
)
def test_compute_gate_decision_when_state_and_intent_match_table(
    state, purpose, side, quantity, position, halt_trigger, allowed
):
    reason = compute_gate_decision(view_of(state, halt_trigger), intent_of(purpose, side, quantity),
                                   position)  # fmt: skip
    assert (reason is None) is allowed, reason
    if not allowed:
        assert isinstance(reason, str) and reason


def test_compute_gate_decision_when_kill_switch_seen_in_drawdown_halt_refuses_risk_off():
    view = view_of(H, "drawdown_breach")
    intent = intent_of(OFF, "SELL", 10)
    assert compute_gate_decision(view, intent, 10) is None
    reason = compute_gate_decision(view, intent, 10, kill_switch_seen=True)
    assert reason is not None and "kill switch" in reason
    assert (
        compute_gate_decision(view, intent_of(CAN, "SELL", 10), 10, kill_switch_seen=True) is None
    )


@pytest.mark.parametrize(
    ("state", "purpose", "side", "quantity", "position", "words"),
    [
        (R, REB, "SELL", 11, 10, "never opens a short"),
        (R, REB, "BUY", 0, 0, "positive whole number"),
        (SM, REB, "BUY", 1, 0, "SAFE_MODE allows only risk-reducing"),
        (H, REB, "SELL", 1, 1, "HALT (entered by kill_switch) allows only cancels"),
    ],
)
def test_compute_gate_decision_when_refused_says_why(state, purpose, side, quantity, position,
                                                     words):  # fmt: skip
    view = view_of(state, "kill_switch" if state == H else None)
    reason = compute_gate_decision(view, intent_of(purpose, side, quantity), position)
    assert reason is not None and words in reason


# --- with a real ledger ------------------------------------------------------------------------


@pytest.fixture
def ledger(tmp_path: Path):
    from ops_runner.ledger import open_ledger

    cfg = load_config_text((TEMPLATES / "config.yaml").read_text(), tmp_path)
    cfg.path("ledger").mkdir(parents=True)
    with open_ledger(cfg) as opened:
        yield opened


def denials(ledger) -> list:
    return list(ledger.events(kind=str(EventKind.ORDER_DENIED)))


def test_require_gate_pass_when_allowed_returns_a_pass_for_the_state(ledger):
    intent = intent_of(REB, "BUY", 10)
    gate_pass = require_gate_pass(ledger, intent, {})
    assert gate_pass.intent == intent and gate_pass.state is State.RUN
    require_valid_pass(gate_pass, intent)
    assert denials(ledger) == []


def test_require_gate_pass_when_refused_records_order_denied_with_reason(ledger):
    view = apply_trigger(ledger, Trigger.INCIDENT, "job failed")
    intent = intent_of(REB, "BUY", 10, ref="rebal-2025-03-03-SPY-BUY")
    with pytest.raises(OrderRefused, match="rebal-2025-03-03-SPY-BUY refused in SAFE_MODE") as info:
        require_gate_pass(ledger, intent, {"SPY": 0})
    [event] = denials(ledger)
    assert event.key == f"OrderDenied:rebal-2025-03-03-SPY-BUY:{view.seq}"
    assert event.payload == {
        "client_ref": "rebal-2025-03-03-SPY-BUY",
        "symbol": "SPY",
        "side": "BUY",
        "quantity": 10,
        "purpose": "rebalance",
        "state": "SAFE_MODE",
        "reason": info.value.reason,
    }
    assert info.value.state is State.SAFE_MODE


def test_require_gate_pass_when_refused_twice_in_one_state_records_once(ledger):
    apply_trigger(ledger, Trigger.KILL_SWITCH, "operator")
    intent = intent_of(REB, "SELL", 10)
    for positions in ({"SPY": 10}, {"SPY": 10}, {"SPY": 3}):  # the last one: another reason
        with pytest.raises(OrderRefused):
            require_gate_pass(ledger, intent, positions)
    assert len(denials(ledger)) == 1
    apply_trigger(ledger, Trigger.APPROVED_EXIT_HALT, "review 1")
    apply_trigger(ledger, Trigger.KILL_SWITCH, "again")
    with pytest.raises(OrderRefused):
        require_gate_pass(ledger, intent, {"SPY": 10})
    assert len(denials(ledger)) == 2


def test_require_gate_pass_when_float_quantity_still_records_the_denial(ledger):
    with pytest.raises(OrderRefused, match="positive whole number"):
        require_gate_pass(ledger, intent_of(REB, "BUY", 2.5), {})
    assert denials(ledger)[0].payload["quantity"] == "2.5"


def test_require_gate_pass_when_kill_switch_seen_after_drawdown_halt_refuses_risk_off(ledger):
    apply_trigger(ledger, Trigger.DRAWDOWN_BREACH, "drawdown 26%")
    risk_off = intent_of(OFF, "SELL", 10)
    assert require_gate_pass(ledger, risk_off, {"SPY": 10}).state is State.HALT
    ledger.append(str(EventKind.KILL_SWITCH_SEEN), "KillSwitchSeen:x:1",
                  {"path": "ops/KILL_SWITCH", "reason": "stop"})  # fmt: skip
    with pytest.raises(OrderRefused, match="kill switch"):
        require_gate_pass(ledger, risk_off, {"SPY": 10})


# --- the proof: no broker place call without a pass the gate minted ----------------------------


class BrokerDouble:
    """A broker whose place call checks the pass first, as every real broker must.

    ``minted`` holds the passes the gate returned in this test; an order placed with anything
    else means a code path got past require_valid_pass, and fails the test.
    """

    def __init__(self) -> None:
        self.placed: list[OrderIntent] = []
        self.minted: list[GatePass] = []

    def place(self, intent: OrderIntent, gate_pass: object) -> str:
        require_valid_pass(gate_pass, intent)
        if not any(gate_pass is p and p.intent == intent for p in self.minted):
            pytest.fail(f"{intent.client_ref} reached the broker without a pass from the gate")
        self.placed.append(intent)
        return f"broker-{len(self.placed)}"


def submit(ledger, broker: BrokerDouble, intent: OrderIntent, positions) -> str:
    """The only sanctioned path: gate, then broker."""
    gate_pass = require_gate_pass(ledger, intent, positions)
    broker.minted.append(gate_pass)
    return broker.place(intent, gate_pass)


@pytest.mark.parametrize(
    ("state", "purpose", "side", "quantity", "position", "halt_trigger", "allowed"), GATE_TABLE
)
def test_broker_double_when_submitting_through_the_gate_places_only_allowed_orders(
    ledger, state, purpose, side, quantity, position, halt_trigger, allowed
):
    steps = {
        DD: [Trigger.DATA_FAULT],
        BD: [Trigger.BROKER_FAULT],
        SM: [Trigger.INCIDENT],
        H: [Trigger(halt_trigger)] if halt_trigger else [],
    }.get(state, [])
    for trigger in steps:
        apply_trigger(ledger, trigger, "set up")
    broker = BrokerDouble()
    intent = intent_of(purpose, side, quantity)
    if allowed:
        submit(ledger, broker, intent, {"SPY": position})
        assert broker.placed == [intent]
    else:
        with pytest.raises(OrderRefused):
            submit(ledger, broker, intent, {"SPY": position})
        assert broker.placed == [] and len(denials(ledger)) == 1


def forgeries(real: GatePass, other: OrderIntent) -> dict[str, object]:
    flipped = ("0" if real.signature[0] != "0" else "1") + real.signature[1:]
    return {
        "no pass": None,
        "a dict": dataclasses.asdict(real),
        "built by hand": GatePass(real.intent, State.RUN, real.ledger_seq, "0" * 64),
        "signature altered": dataclasses.replace(real, signature=flipped),
        "state altered": dataclasses.replace(real, state=State.SAFE_MODE),
        "seq altered": dataclasses.replace(real, ledger_seq=real.ledger_seq + 1),
        "intent swapped": dataclasses.replace(real, intent=other),
        "quantity raised": dataclasses.replace(
            real, intent=dataclasses.replace(real.intent, quantity=1000)
        ),
    }


@pytest.mark.parametrize(
    "forgery",
    ["no pass", "a dict", "built by hand", "signature altered", "state altered", "seq altered",
     "intent swapped", "quantity raised"],
)  # fmt: skip
def test_broker_double_when_pass_is_forged_refuses_and_places_nothing(ledger, forgery):
    broker = BrokerDouble()
    intent = intent_of(REB, "BUY", 10, ref="a")
    other = intent_of(REB, "BUY", 10, ref="b")
    real = require_gate_pass(ledger, intent, {})
    fake = forgeries(real, other)[forgery]
    target = fake.intent if isinstance(fake, GatePass) else intent
    with pytest.raises(OrderRefused):
        broker.place(target, fake)
    assert broker.placed == []


def test_broker_double_when_pass_copied_to_another_intent_refuses(ledger):
    broker = BrokerDouble()
    allowed = intent_of(OFF, "SELL", 10, ref="riskoff-SPY")
    apply_trigger(ledger, Trigger.DRAWDOWN_BREACH, "drawdown")
    gate_pass = require_gate_pass(ledger, allowed, {"SPY": 10})
    broker.minted.append(gate_pass)
    rebalance_buy = intent_of(REB, "BUY", 10, ref="riskoff-SPY")
    with pytest.raises(OrderRefused, match="not this intent"):
        broker.place(rebalance_buy, gate_pass)
    broker.place(allowed, gate_pass)
    assert broker.placed == [allowed]


# --- risk-off intents --------------------------------------------------------------------------

PRICES = {"SPY": Decimal("500.00"), "QQQ": Decimal("400.00"), "AGG": Decimal("100.00")}


def refs(intents) -> list[tuple[str, str, str, int, str]]:
    return [(i.client_ref, i.symbol, str(i.side), i.quantity, str(i.purpose)) for i in intents]


def test_compute_risk_off_intents_when_policy_none_is_empty():
    assert (
        compute_risk_off_intents({"SPY": 10}, "none", "AGG", PRICES, Decimal(0), "2025-03-03") == []
    )


def test_compute_risk_off_intents_when_policy_cash_sells_everything():
    positions = {"SPY": 10, "AGG": 5, "QQQ": 3, "IWM": 0}
    intents = compute_risk_off_intents(positions, "cash", "AGG", {}, Decimal(0), "2025-03-03")
    assert refs(intents) == [
        ("riskoff-2025-03-03-AGG-SELL", "AGG", "SELL", 5, "risk_off"),
        ("riskoff-2025-03-03-QQQ-SELL", "QQQ", "SELL", 3, "risk_off"),
        ("riskoff-2025-03-03-SPY-SELL", "SPY", "SELL", 10, "risk_off"),
    ]


def test_compute_risk_off_intents_when_policy_defensive_buys_whole_shares_after_sells():
    # proceeds 100*500 + 20*400 = 58000, plus cash 1000 = 59000; less 2% = 57820; /100 = 578.2
    positions = {"SPY": 100, "QQQ": 20, "AGG": 7}
    intents = compute_risk_off_intents(
        positions, "defensive", "AGG", PRICES, Decimal("1000"), "2025-03-03"
    )
    assert refs(intents) == [
        ("riskoff-2025-03-03-QQQ-SELL", "QQQ", "SELL", 20, "risk_off"),
        ("riskoff-2025-03-03-SPY-SELL", "SPY", "SELL", 100, "risk_off"),
        ("riskoff-2025-03-03-AGG-BUY", "AGG", "BUY", 578, "risk_off"),
    ]
    assert all(i.session == "2025-03-03" for i in intents)


def test_compute_risk_off_intents_when_budget_is_below_one_share_buys_nothing():
    intents = compute_risk_off_intents({}, "defensive", "AGG", PRICES, Decimal("100"), "2025-03-03")
    assert intents == []  # 100 * 0.98 = 98 < one share at 100


def test_compute_risk_off_intents_when_short_position_leaves_it_to_reconciliation():
    intents = compute_risk_off_intents({"SPY": -5}, "cash", "AGG", {}, Decimal(0), "2025-03-03")
    assert intents == []


@pytest.mark.parametrize(
    ("policy", "prices", "match"),
    [
        ("hedge", PRICES, "unknown policy"),
        ("defensive", {"AGG": Decimal(100)}, "no price for SPY"),
        ("defensive", {"SPY": Decimal(500)}, "no price for AGG"),
        ("defensive", {"SPY": Decimal(500), "AGG": Decimal(0)}, "must be positive"),
        ("defensive", {"SPY": 500.0, "AGG": Decimal(100)}, "float"),
    ],
)
def test_compute_risk_off_intents_when_input_is_unusable_raises(policy, prices, match):
    with pytest.raises(StateError, match=match):
        compute_risk_off_intents({"SPY": 1}, policy, "AGG", prices, Decimal(0), "2025-03-03")
