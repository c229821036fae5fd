"""Kill switch and drawdown HALT with real files and a real ledger in a temporary workbook."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from pathlib import Path

import pytest

from ops_runner.brokers.gate import (
    OrderIntent,
    OrderRefused,
    Side,
    compute_risk_off_intents,
    require_gate_pass,
)
from ops_runner.core.events import EventKind, Purpose, State, Trigger
from ops_runner.ledger.init import init_workbook
from ops_runner.ledger.projections import compute_open_incidents
from ops_runner.ledger.states import (
    StateError,
    apply_trigger,
    enforce_kill_switch,
    read_kill_switch,
    read_state,
    record_equity_mark,
    remove_kill_switch,
    write_kill_switch,
)
from ops_runner.workbook.config import load_config


@pytest.fixture
def cfg(tmp_path: Path):
    init_workbook(tmp_path, template="demo")
    return load_config(tmp_path)


@pytest.fixture
def ledger(cfg):
    from ops_runner.ledger import open_ledger

    with open_ledger(cfg) as opened:
        yield opened


def kinds(ledger) -> list[str]:
    return [e.kind for e in ledger.events()]


class CancelSpy:
    def __init__(self, result: list[str] | Exception) -> None:
        self.result = result
        self.calls = 0

    def __call__(self) -> list[str]:
        self.calls += 1
        if isinstance(self.result, Exception):
            raise self.result
        return self.result


def make_unreadable(path: Path) -> None:
    """Leave something at ``path`` that cannot be read: mode 000, or a folder when run as root."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("halt: disk audit\n")
    path.chmod(0)
    try:
        path.read_bytes()
    except PermissionError:
        return
    path.chmod(0o600)  # root reads anything: simulate unreadability with a folder instead
    path.unlink()
    path.mkdir()


# --- kill switch -------------------------------------------------------------------------------


def test_read_kill_switch_when_absent_is_none(cfg):
    assert read_kill_switch(cfg) is None


def test_write_kill_switch_when_written_reads_back_its_reason_and_leaves_no_temp(cfg):
    path = write_kill_switch(cfg, "  broker shows orders we never sent  ")
    assert path == cfg.path("kill_switch") and path.read_text() == (
        "broker shows orders we never sent\n"
    )
    assert read_kill_switch(cfg) == "broker shows orders we never sent"
    assert sorted(p.name for p in path.parent.iterdir()) == ["KILL_SWITCH"]


def test_read_kill_switch_when_content_is_long_or_empty_bounds_or_explains_it(cfg):
    path = cfg.path("kill_switch")
    path.write_text("x" * 5000)
    assert read_kill_switch(cfg) == "x" * 500
    path.write_text("\n  \n")
    assert read_kill_switch(cfg) == "kill switch file present (no reason written in it)"


def test_enforce_kill_switch_when_present_halts_cancels_and_records_the_reason(cfg, ledger):
    write_kill_switch(cfg, "operator: halt all trading")
    cancel = CancelSpy(["exec-2025-03-03-SPY-BUY"])
    view = enforce_kill_switch(cfg, ledger, cancel)
    assert view is not None and view.state is State.HALT and view.trigger is Trigger.KILL_SWITCH
    assert cancel.calls == 1
    assert kinds(ledger) == ["KillSwitchSeen", "StateChanged"]
    seen = ledger.last(str(EventKind.KILL_SWITCH_SEEN))
    assert seen.payload["reason"] == "operator: halt all trading"
    assert seen.payload["path"] == str(cfg.path("kill_switch"))
    assert "pending orders cancelled: exec-2025-03-03-SPY-BUY" in view.evidence
    assert read_state(ledger) == view


def test_enforce_kill_switch_when_seen_again_records_nothing_new(cfg, ledger):
    write_kill_switch(cfg, "operator")
    cancel = CancelSpy([])
    first = enforce_kill_switch(cfg, ledger, cancel)
    head = ledger.head()
    assert enforce_kill_switch(cfg, ledger, cancel) == first
    assert enforce_kill_switch(cfg, ledger, cancel) == first
    assert ledger.head() == head and cancel.calls == 1


def test_enforce_kill_switch_when_reason_changes_in_halt_records_the_new_reason_only(cfg, ledger):
    write_kill_switch(cfg, "first")
    enforce_kill_switch(cfg, ledger)
    write_kill_switch(cfg, "second: broker unreachable too")
    view = enforce_kill_switch(cfg, ledger)
    assert kinds(ledger) == ["KillSwitchSeen", "StateChanged", "KillSwitchSeen"]
    assert ledger.last(str(EventKind.KILL_SWITCH_SEEN)).payload["reason"].startswith("second")
    assert view.state is State.HALT
    enforce_kill_switch(cfg, ledger)
    assert len(kinds(ledger)) == 3


def test_remove_kill_switch_when_halted_keeps_halt(cfg, ledger):
    write_kill_switch(cfg, "operator")
    halted = enforce_kill_switch(cfg, ledger)
    assert remove_kill_switch(cfg) is True
    assert remove_kill_switch(cfg) is False
    assert read_kill_switch(cfg) is None
    assert enforce_kill_switch(cfg, ledger) is None
    assert read_state(ledger) == halted


def test_enforce_kill_switch_when_still_present_after_approved_exit_halts_again(cfg, ledger):
    write_kill_switch(cfg, "operator")
    enforce_kill_switch(cfg, ledger)
    apply_trigger(ledger, Trigger.APPROVED_EXIT_HALT, "review 12")
    view = enforce_kill_switch(cfg, ledger)
    assert view is not None and view.state is State.HALT
    assert kinds(ledger) == ["KillSwitchSeen", "StateChanged", "StateChanged", "KillSwitchSeen",
                             "StateChanged"]  # fmt: skip


def test_enforce_kill_switch_when_file_is_unreadable_counts_as_present(cfg, ledger):
    path = cfg.path("kill_switch")
    make_unreadable(path)
    try:
        reason = read_kill_switch(cfg)
        assert reason is not None
        assert reason.startswith("kill switch file present but unreadable: ")
        view = enforce_kill_switch(cfg, ledger, CancelSpy([]))
        assert view is not None and view.state is State.HALT
        seen = ledger.last(str(EventKind.KILL_SWITCH_SEEN))
        assert seen.payload["reason"] == reason
        head = ledger.head()
        enforce_kill_switch(cfg, ledger, CancelSpy([]))
        assert ledger.head() == head
    finally:
        if path.is_dir():
            path.rmdir()
        else:
            path.chmod(0o600)


def test_remove_kill_switch_when_path_is_a_folder_says_remove_by_hand(cfg):
    cfg.path("kill_switch").mkdir(parents=True)
    with pytest.raises(StateError, match="remove it by hand"):
        remove_kill_switch(cfg)


def test_enforce_kill_switch_when_cancel_fails_still_halts_with_the_failure_as_evidence(
    cfg, ledger
):
    write_kill_switch(cfg, "operator")
    view = enforce_kill_switch(cfg, ledger, CancelSpy(ConnectionError("gateway down")))
    assert view is not None and view.state is State.HALT
    assert "pending orders: cancel failed: ConnectionError: gateway down" in view.evidence
    seen = ledger.last(str(EventKind.KILL_SWITCH_SEEN))
    assert (
        "pending orders: cancel failed: ConnectionError: gateway down" in seen.payload["evidence"]
    )


def test_enforce_kill_switch_when_already_halted_by_drawdown_records_it_and_stops_risk_off(
    cfg, ledger
):
    apply_trigger(ledger, Trigger.DRAWDOWN_BREACH, "drawdown 26%")
    risk_off = OrderIntent("riskoff-2025-03-03-SPY-SELL", "SPY", Side.SELL, 10, Purpose.RISK_OFF)
    require_gate_pass(ledger, risk_off, {"SPY": 10})
    write_kill_switch(cfg, "operator")
    view = enforce_kill_switch(cfg, ledger)
    assert view.state is State.HALT and view.trigger is Trigger.DRAWDOWN_BREACH
    assert kinds(ledger) == ["StateChanged", "KillSwitchSeen"]
    with pytest.raises(OrderRefused, match="kill switch"):
        require_gate_pass(ledger, risk_off, {"SPY": 10})
    enforce_kill_switch(cfg, ledger)
    assert len(kinds(ledger)) == 3


# --- drawdown ----------------------------------------------------------------------------------

# (session, net liquidation, state after the mark); max_drawdown 0.25 in the template.
EQUITY_PATH = [
    (date(2025, 1, 31), "100000", State.RUN),
    (date(2025, 2, 28), "110000", State.RUN),
    (date(2025, 3, 31), "95000", State.RUN),  # 13.64% from 110000
    (date(2025, 4, 30), "82000", State.HALT),  # 25.45% from 110000: breach
]


def test_record_equity_mark_when_path_breaches_halts_at_the_breaching_mark(cfg, ledger):
    assert cfg.values["risk"]["max_drawdown"] == 0.25
    for session, value, state_after in EQUITY_PATH:
        view = record_equity_mark(ledger, cfg, session, Decimal(value), "ib")
        assert view.last == Decimal(value)
        assert read_state(ledger).state is state_after, session
    assert view.peak == Decimal("110000")
    assert view.drawdown.quantize(Decimal("0.0001")) == Decimal("0.2545")
    state = read_state(ledger)
    assert state.trigger is Trigger.DRAWDOWN_BREACH
    assert "25.45%" in state.reason and "110000" in state.reason
    assert kinds(ledger)[-3:] == ["EquityMarked", "IncidentOpened", "StateChanged"]
    [incident] = compute_open_incidents(ledger.events())
    assert incident["category"] == "risk" and incident["incident_id"] == "drawdown-2025-04-30"
    assert "25.45%" in incident["summary"]


def test_record_equity_mark_when_repeated_or_still_breached_records_only_the_mark(cfg, ledger):
    for session, value, _ in EQUITY_PATH:
        record_equity_mark(ledger, cfg, session, Decimal(value), "ib")
    head = ledger.head()
    record_equity_mark(ledger, cfg, date(2025, 4, 30), Decimal("82000"), "ib")
    assert ledger.head() == head
    record_equity_mark(ledger, cfg, date(2025, 5, 1), Decimal("80000"), "ib")
    assert kinds(ledger)[-1] == "EquityMarked"
    assert len(compute_open_incidents(ledger.events())) == 1


def test_record_equity_mark_when_drawdown_equals_the_limit_halts(cfg, ledger):
    record_equity_mark(ledger, cfg, date(2025, 1, 31), Decimal("100000"), "ib")
    record_equity_mark(ledger, cfg, date(2025, 2, 28), Decimal("75000.01"), "ib")
    assert read_state(ledger).state is State.RUN
    record_equity_mark(ledger, cfg, date(2025, 3, 3), Decimal("75000"), "ib")
    assert read_state(ledger).state is State.HALT


def test_record_equity_mark_when_value_is_a_float_refuses(cfg, ledger):
    with pytest.raises(StateError, match="float"):
        record_equity_mark(ledger, cfg, date(2025, 1, 31), 100000.0, "ib")  # type: ignore[arg-type]
    assert ledger.head() is None


def test_record_equity_mark_when_session_remarked_with_another_value_is_a_conflict(cfg, ledger):
    from ops_runner.ledger import LedgerConflict

    record_equity_mark(ledger, cfg, date(2025, 1, 31), Decimal("100000"), "ib")
    with pytest.raises(LedgerConflict):
        record_equity_mark(ledger, cfg, date(2025, 1, 31), Decimal("99000"), "ib")


def test_drawdown_halt_when_risk_off_intents_go_through_the_gate_and_rebalance_does_not(
    cfg, ledger
):
    for session, value, _ in EQUITY_PATH:
        record_equity_mark(ledger, cfg, session, Decimal(value), "ib")
    positions = {"SPY": 150, "VEU": 20}
    prices = {"SPY": Decimal("520.00"), "VEU": Decimal("60.00"), "AGG": Decimal("98.00")}
    intents = compute_risk_off_intents(
        positions,
        cfg.values["risk"]["risk_off"],
        cfg.values["universe"]["defensive"],
        prices,
        Decimal("1500"),
        date(2025, 5, 1),
    )
    # (150*520 + 20*60 + 1500) * 0.98 / 98 = 80700 * 0.98 / 98 = 807 shares of AGG
    assert [(i.symbol, str(i.side), i.quantity) for i in intents] == [
        ("SPY", "SELL", 150),
        ("VEU", "SELL", 20),
        ("AGG", "BUY", 807),
    ]
    passes = [require_gate_pass(ledger, intent, positions) for intent in intents]
    assert all(p.state is State.HALT for p in passes)
    rebalance = OrderIntent("rebal-2025-05-01-QQQ-BUY", "QQQ", Side.BUY, 5, Purpose.REBALANCE)
    with pytest.raises(OrderRefused, match="HALT"):
        require_gate_pass(ledger, rebalance, positions)
    assert ledger.last(str(EventKind.ORDER_DENIED)).payload["client_ref"] == rebalance.client_ref
