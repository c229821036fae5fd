"""The state machine: a table of known transitions and the ledger record."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ops_runner.brokers.gate import (
    OrderIntent,
    OrderRefused,
    Side,
    require_gate_pass,
)
from ops_runner.core.events import EventKind, Purpose, State, Trigger
from ops_runner.ledger.states import (
    TRANSITIONS,
    IllegalTransition,
    apply_trigger,
    compute_next_state,
    read_state,
)
from ops_runner.workbook.config import TEMPLATES, load_config_text

R, DD, BD, SM, H = "RUN", "DEGRADED_DATA", "BROKER_DOWN", "SAFE_MODE", "HALT"
HALT_TRIGGERS = [
    "kill_switch",
    "drawdown_breach",
    "reconciliation_unresolved",
    "ledger_corrupt",
    "decision_window_missed",
    "submission_window_missed",
]

# (state, trigger) -> state, written out by hand from the runbook (not from TRANSITIONS).
EXPECTED: dict[tuple[str, str], str] = {
    (R, "data_fault"): DD,
    (R, "data_restored"): R,
    (R, "broker_fault"): BD,
    (R, "broker_restored"): R,
    (R, "incident"): SM,
    (DD, "data_fault"): DD,
    (DD, "data_restored"): R,
    (DD, "broker_fault"): SM,
    (DD, "broker_restored"): DD,
    (DD, "incident"): SM,
    (BD, "data_fault"): SM,
    (BD, "data_restored"): BD,
    (BD, "broker_fault"): BD,
    (BD, "broker_restored"): R,
    (BD, "incident"): SM,
    (SM, "data_fault"): SM,
    (SM, "data_restored"): SM,
    (SM, "broker_fault"): SM,
    (SM, "broker_restored"): SM,
    (SM, "incident"): SM,
    (SM, "approved_exit_safe_mode"): R,
    (H, "data_fault"): H,
    (H, "data_restored"): H,
    (H, "broker_fault"): H,
    (H, "broker_restored"): H,
    (H, "incident"): H,
    (H, "approved_exit_halt"): SM,
    **{(state, trigger): H for state in (R, DD, BD, SM, H) for trigger in HALT_TRIGGERS},
}
ILLEGAL = [
    (R, "approved_exit_safe_mode"),
    (R, "approved_exit_halt"),
    (DD, "approved_exit_safe_mode"),
    (DD, "approved_exit_halt"),
    (BD, "approved_exit_safe_mode"),
    (BD, "approved_exit_halt"),
    (SM, "approved_exit_halt"),
    (H, "approved_exit_safe_mode"),
]


def test_expected_table_when_complete_covers_every_pair_once():
    pairs = {(str(s), str(t)) for s in State for t in Trigger}
    assert set(EXPECTED) | set(ILLEGAL) == pairs
    assert not set(EXPECTED) & set(ILLEGAL)
    assert len(EXPECTED) == 57  # 5 states x 11 triggers + 2 approvals


@pytest.mark.parametrize(("pair", "expected"), sorted(EXPECTED.items()))
def test_compute_next_state_when_pair_is_legal_matches_runbook(pair, expected):
    state, trigger = pair
    assert compute_next_state(State(state), Trigger(trigger)) is State(expected)
    assert TRANSITIONS[(State(state), Trigger(trigger))] is State(expected)


@pytest.mark.parametrize(("state", "trigger"), ILLEGAL)
def test_compute_next_state_when_pair_is_illegal_raises_naming_both(state, trigger):
    with pytest.raises(IllegalTransition, match=f"cannot apply {trigger} in {state}") as info:
        compute_next_state(State(state), Trigger(trigger))
    assert info.value.state == state and info.value.trigger == trigger
    assert (State(state), Trigger(trigger)) not in TRANSITIONS


def test_compute_next_state_when_names_are_unknown_raises_illegal_transition():
    with pytest.raises(IllegalTransition, match="cannot apply coffee in RUN"):
        compute_next_state("RUN", "coffee")
    with pytest.raises(IllegalTransition, match="in PANIC"):
        compute_next_state("PANIC", "incident")


# --- against a real ledger ---------------------------------------------------------------------

TEMPLATE = (TEMPLATES / "config.yaml").read_text()


def make_config(workbook: Path):
    cfg = load_config_text(TEMPLATE, workbook)
    cfg.path("ledger").mkdir(parents=True, exist_ok=True)
    return cfg


@pytest.fixture
def ledger(tmp_path):
    from ops_runner.ledger import open_ledger

    with open_ledger(make_config(tmp_path)) as opened:
        yield opened


def state_changes(ledger) -> list:
    return list(ledger.events(kind=str(EventKind.STATE_CHANGED)))


def test_read_state_when_ledger_is_empty_is_run_since_never(ledger):
    view = read_state(ledger)
    assert (view.state, view.since, view.trigger, view.seq) == (State.RUN, None, None, 0)


def test_apply_trigger_when_state_changes_records_one_state_changed(ledger):
    view = apply_trigger(
        ledger, Trigger.DATA_FAULT, "SPY stale", evidence=["SPY last bar 2025-01-02"]
    )
    [event] = state_changes(ledger)
    assert event.key == "StateChanged:0"
    assert event.payload == {
        "from": "RUN",
        "to": "DEGRADED_DATA",
        "trigger": "data_fault",
        "reason": "SPY stale",
        "evidence": ["SPY last bar 2025-01-02"],
    }
    assert view.state is State.DEGRADED_DATA and view.seq == event.seq
    assert view.since == event.recorded_at and view.trigger is Trigger.DATA_FAULT
    assert read_state(ledger) == view


def test_apply_trigger_when_self_loop_records_nothing(ledger):
    first = apply_trigger(ledger, Trigger.DATA_FAULT, "stale")
    head = ledger.head()
    again = apply_trigger(ledger, Trigger.DATA_FAULT, "still stale")
    assert again == first and ledger.head() == head


def test_apply_trigger_when_retried_after_the_change_writes_it_once(ledger):
    apply_trigger(ledger, Trigger.INCIDENT, "job failed")
    apply_trigger(ledger, Trigger.INCIDENT, "job failed")
    assert [e.key for e in state_changes(ledger)] == ["StateChanged:0"]
    # Another writer that read the same state retries the same transition: one event.
    [event] = state_changes(ledger)
    ledger.append_many([(str(EventKind.STATE_CHANGED), event.key, event.payload)])
    assert len(state_changes(ledger)) == 1


def test_apply_trigger_when_extra_events_given_writes_them_before_the_change(ledger):
    check = {"check": "x", "passed": False, "detail": "d", "evidence": []}
    extra = [(str(EventKind.CHECK_RECORDED), "check:1", check)]
    view = apply_trigger(ledger, Trigger.INCIDENT, "check failed", extra_events=extra)
    kinds = [e.kind for e in ledger.events()]
    assert kinds == ["CheckRecorded", "StateChanged"]
    assert view.seq == ledger.head()[0]


def test_apply_trigger_when_illegal_writes_nothing(ledger):
    extra = [(str(EventKind.CASH_ADJUSTED), "cash:1", {"amount": "1", "reason": "x"})]
    with pytest.raises(IllegalTransition, match="cannot apply approved_exit_halt in RUN"):
        apply_trigger(ledger, Trigger.APPROVED_EXIT_HALT, "review 7", extra_events=extra)
    assert ledger.head() is None


def test_apply_trigger_when_halt_needs_two_approvals_to_reach_run(ledger):
    apply_trigger(ledger, Trigger.KILL_SWITCH, "operator")
    assert apply_trigger(ledger, Trigger.DATA_RESTORED, "clean").state is State.HALT
    with pytest.raises(IllegalTransition):
        apply_trigger(ledger, Trigger.APPROVED_EXIT_SAFE_MODE, "token")
    assert apply_trigger(ledger, Trigger.APPROVED_EXIT_HALT, "review").state is State.SAFE_MODE
    assert apply_trigger(ledger, Trigger.BROKER_RESTORED, "ok").state is State.SAFE_MODE
    assert apply_trigger(ledger, Trigger.APPROVED_EXIT_SAFE_MODE, "token").state is State.RUN
    assert [e.payload["to"] for e in state_changes(ledger)] == [H, SM, R]


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(triggers=st.lists(st.sampled_from(list(Trigger)), min_size=1, max_size=25))
@pytest.mark.slow
def test_apply_trigger_when_any_sequence_keeps_the_record_and_the_gate_honest(triggers):
    from ops_runner.ledger import open_ledger

    rebalance_buy = OrderIntent("rb-1", "SPY", Side.BUY, 10, Purpose.REBALANCE)
    risk_off_sell = OrderIntent("ro-1", "SPY", Side.SELL, 10, Purpose.RISK_OFF)
    with tempfile.TemporaryDirectory() as folder, open_ledger(make_config(Path(folder))) as led:
        model, halt_cause = R, None
        for number, trigger in enumerate(triggers):
            before = len(state_changes(led))
            expected = EXPECTED.get((model, str(trigger)))
            if expected is None:
                with pytest.raises(IllegalTransition):
                    apply_trigger(led, trigger, f"step {number}")
            else:
                apply_trigger(led, trigger, f"step {number}")
                if expected == H and model != H:
                    halt_cause = str(trigger)
                changed = expected != model
                model = expected
                assert len(state_changes(led)) == before + (1 if changed else 0)
            view = read_state(led)
            assert view.state in set(State) and view.state == model
            if model == H:
                with pytest.raises(OrderRefused):
                    require_gate_pass(led, rebalance_buy, {"SPY": 100})
                if halt_cause == "drawdown_breach":
                    assert require_gate_pass(led, risk_off_sell, {"SPY": 100}).state is State.HALT
                else:
                    with pytest.raises(OrderRefused):
                        require_gate_pass(led, risk_off_sell, {"SPY": 100})
        previous = R
        for event in state_changes(led):
            assert event.payload["from"] == previous and event.payload["to"] != previous
            previous = event.payload["to"]
        assert previous == model


def test_apply_trigger_when_two_writers_race_from_one_state_only_one_leaves_it(tmp_path):
    """Both read RUN; the first records RUN -> DEGRADED_DATA. The second, holding a stale view,
    must not record a second way out of RUN: it re-reads and applies its trigger from there."""
    from ops_runner.ledger import Ledger

    ledger = Ledger.open(tmp_path / "race.sqlite")
    stale = read_state(ledger)
    apply_trigger(ledger, Trigger.DATA_FAULT, "stale bars")
    # The loser's write, as it would have been computed from its stale view:
    from ops_runner.ledger import LedgerConflict

    with pytest.raises(LedgerConflict):
        ledger.append(
            "StateChanged",
            f"StateChanged:{stale.seq}",
            {"from": "RUN", "to": "BROKER_DOWN", "trigger": "broker_fault", "reason": "x",
             "evidence": []},
        )  # fmt: skip
    view = apply_trigger(ledger, Trigger.BROKER_FAULT, "disconnected")
    changes = [(e.payload["from"], e.payload["to"]) for e in state_changes(ledger)]
    assert changes == [("RUN", "DEGRADED_DATA"), ("DEGRADED_DATA", "SAFE_MODE")]
    assert view.state is State.SAFE_MODE
