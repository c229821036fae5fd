"""Projections folded from hand-built events, checked against answers worked out by hand."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

import pytest

from ops_runner.core.events import EventKind, State, Trigger
from ops_runner.ledger.projections import (
    DrawdownView,
    StateView,
    compute_approvals_used,
    compute_cash,
    compute_equity,
    compute_last_jobs,
    compute_open_incidents,
    compute_orders,
    compute_positions,
    compute_state,
    compute_state_history,
)


def build(*rows: tuple[EventKind, dict]) -> list:
    """Events numbered from 1, as the ledger would hand them back."""
    from ops_runner.ledger import Event

    return [
        Event(
            seq=seq,
            recorded_at=f"2025-03-03T14:{seq:02d}:00Z",
            kind=str(kind),
            key=f"{kind}:{seq}",
            run_id=None,
            cycle_id=None,
            payload=payload,
            prev_hash="0" * 64,
            hash=f"{seq:064d}",
        )
        for seq, (kind, payload) in enumerate(rows, start=1)
    ]


def fill(exec_id, ref, symbol, side, qty, price, commission=None):
    return (
        EventKind.FILL_RECORDED,
        {"exec_id": exec_id, "client_ref": ref, "symbol": symbol, "side": side, "quantity": qty,
         "price": price, "commission": commission, "session": "2025-03-03"},
    )  # fmt: skip


def cash(amount: str):
    return EventKind.CASH_ADJUSTED, {"amount": amount, "reason": "deposit"}


def mark(session: str, value: str):
    return EventKind.EQUITY_MARKED, {"session": session, "net_liquidation": value, "source": "ib"}


TRADES = build(
    cash("100000"),
    fill("e1", "r-spy", "SPY", "BUY", 60, "500.25", "1.00"),
    fill("e2", "r-spy", "SPY", "BUY", 40, "500.50", None),  # partial fill, commission later
    fill("e1", "r-spy", "SPY", "BUY", 60, "500.25", "1.00"),  # re-reported after a reconnect
    fill("e3", "r-agg", "AGG", "BUY", 10, "99.10", "0.35"),
    fill("e2", "r-spy", "SPY", "BUY", 40, "500.50", "0.65"),  # e2's commission arrives
    fill("e4", "r-agg-out", "AGG", "SELL", 10, "99.30", "0.35"),
    fill("e5", None, "VEU", "BUY", 5, "60.00", "0.00"),  # a manual trade: no client ref
)


def test_compute_positions_when_exec_id_repeats_counts_it_once():
    assert compute_positions(TRADES) == {"SPY": 100, "VEU": 5}  # AGG bought and sold: flat


def test_compute_cash_when_commissions_arrive_late_counts_each_once():
    # 100000 - 60*500.25 - 1.00 - 40*500.50 - 0.65 - 10*99.10 - 0.35 + 10*99.30 - 0.35 - 5*60
    expected = Decimal("100000") - Decimal("30015.00") - Decimal("1.00") - Decimal("20020.00")
    expected += -Decimal("0.65") - Decimal("991.00") - Decimal("0.35") + Decimal("993.00")
    expected += -Decimal("0.35") - Decimal("300.00")
    assert expected == Decimal("49664.65")
    assert compute_cash(TRADES) == expected


def test_compute_cash_when_only_deposits_and_withdrawals_sums_them():
    assert compute_cash(build(cash("5000"), cash("-1200.50"))) == Decimal("3799.50")
    assert compute_cash([]) == Decimal(0)


def test_compute_orders_when_partially_filled_reports_intent_status_and_filled():
    events = build(
        (EventKind.ORDER_INTENT_RECORDED, {"client_ref": "r-spy", "symbol": "SPY", "side": "BUY",
                                           "quantity": 120, "purpose": "rebalance"}),
        (EventKind.ORDER_SUBMITTED, {"client_ref": "r-spy", "broker_order_id": "77",
                                     "symbol": "SPY", "side": "BUY", "quantity": 120}),
        (EventKind.ORDER_STATUS_CHANGED, {"client_ref": "r-spy", "status": "PreSubmitted",
                                          "detail": ""}),
        fill("e1", "r-spy", "SPY", "BUY", 60, "500.25"),
        fill("e2", "r-spy", "SPY", "BUY", 40, "500.50"),
        fill("e1", "r-spy", "SPY", "BUY", 60, "500.25"),
        (EventKind.ORDER_STATUS_CHANGED, {"client_ref": "r-spy", "status": "PartiallyFilled",
                                          "detail": "100/120"}),
        (EventKind.ORDER_INTENT_RECORDED, {"client_ref": "r-qqq", "symbol": "QQQ", "side": "BUY",
                                           "quantity": 5, "purpose": "rebalance"}),
        (EventKind.ORDER_DENIED, {"client_ref": "r-qqq", "symbol": "QQQ", "side": "BUY",
                                  "quantity": 5, "purpose": "rebalance", "state": "SAFE_MODE",
                                  "reason": "SAFE_MODE allows only risk-reducing orders"}),
    )  # fmt: skip
    orders = compute_orders(events)
    spy = orders["r-spy"]
    assert (spy.symbol, spy.side, spy.quantity, spy.purpose) == ("SPY", "BUY", 120, "rebalance")
    assert spy.intended and spy.submitted and spy.broker_order_id == "77"
    assert (spy.status, spy.filled) == ("PartiallyFilled", 100)
    qqq = orders["r-qqq"]
    assert (qqq.status, qqq.submitted, qqq.filled) == ("denied", False, 0)
    assert qqq.denied_reason == "SAFE_MODE allows only risk-reducing orders"
    assert set(orders) == {"r-spy", "r-qqq"}


def change(frm: str, to: str, trigger: str, reason: str = "why"):
    return EventKind.STATE_CHANGED, {"from": frm, "to": to, "trigger": trigger, "reason": reason,
                                     "evidence": ["e"]}  # fmt: skip


def test_compute_state_when_no_change_is_run_since_never():
    assert compute_state([]) == StateView(state=State.RUN, reason="no state change recorded yet")


def test_compute_state_and_history_when_changes_recorded_follow_them():
    events = build(
        change("RUN", "DEGRADED_DATA", "data_fault"),
        cash("1"),
        change("DEGRADED_DATA", "HALT", "drawdown_breach", "drawdown 26%"),
    )
    view = compute_state(events)
    assert view == StateView(
        state=State.HALT,
        since="2025-03-03T14:03:00Z",
        trigger=Trigger.DRAWDOWN_BREACH,
        reason="drawdown 26%",
        evidence=("e",),
        seq=3,
    )
    history = compute_state_history(events)
    assert [(row.state, row.seq) for row in history] == [(State.DEGRADED_DATA, 1), (State.HALT, 3)]


def test_compute_open_incidents_when_one_closed_lists_the_other():
    events = build(
        (EventKind.INCIDENT_OPENED, {"incident_id": "i1", "category": "risk", "summary": "dd",
                                     "evidence": []}),
        (EventKind.INCIDENT_OPENED, {"incident_id": "i2", "category": "reconciliation",
                                     "summary": "break", "evidence": ["SPY 3"]}),
        (EventKind.INCIDENT_CLOSED, {"incident_id": "i1", "resolution": "ok", "postmortem": None}),
    )  # fmt: skip
    [open_one] = compute_open_incidents(events)
    assert open_one["incident_id"] == "i2" and open_one["category"] == "reconciliation"
    assert (open_one["seq"], open_one["opened_at"]) == (2, "2025-03-03T14:02:00Z")


def test_compute_approvals_used_when_tokens_used_returns_their_ids():
    events = build(
        (EventKind.APPROVAL_USED, {"token_id": "t1", "action": "exit-halt"}),
        cash("1"),
        (EventKind.APPROVAL_USED, {"token_id": "t2", "action": "exit-safe-mode"}),
    )
    assert compute_approvals_used(events) == {"t1", "t2"}


def test_compute_equity_when_scripted_path_finds_peak_and_drawdown():
    events = build(
        mark("2025-01-31", "100000"),
        mark("2025-02-28", "110000"),
        mark("2025-03-31", "95000"),
        mark("2025-04-30", "82000"),
    )
    view = compute_equity(events)
    assert view.peak == Decimal("110000") and view.last == Decimal("82000")
    assert view.drawdown == Decimal(28000) / Decimal(110000)
    assert view.drawdown.quantize(Decimal("0.0001")) == Decimal("0.2545")
    assert view.max_drawdown_seen == view.drawdown
    assert view.marks[0] == (date(2025, 1, 31), Decimal("100000"))


def test_compute_equity_when_recovering_keeps_the_deepest_drawdown_seen():
    events = build(
        mark("2025-01-31", "200"),
        mark("2025-03-31", "190"),
        mark("2025-02-28", "150"),  # backfilled: lands between January and March
        mark("2025-04-30", "210"),
    )
    view = compute_equity(events)
    assert [m[0].month for m in view.marks] == [1, 2, 3, 4]
    assert (view.peak, view.last, view.drawdown) == (Decimal(210), Decimal(210), Decimal(0))
    assert view.max_drawdown_seen == Decimal("0.25")


def test_compute_equity_when_no_marks_is_all_zero():
    assert compute_equity(build(cash("1"))) == DrawdownView()


def test_compute_last_jobs_when_job_ran_twice_keeps_the_latest():
    events = build(
        (EventKind.JOB_COMPLETED, {"job": "data_qa", "session": "2025-02-28", "cycle": "c",
                                   "outputs": {}}),
        (EventKind.JOB_COMPLETED, {"job": "decision", "session": "2025-02-28", "cycle": "c",
                                   "outputs": {}}),
        (EventKind.JOB_COMPLETED, {"job": "data_qa", "session": "2025-03-31", "cycle": "d",
                                   "outputs": {}}),
    )  # fmt: skip
    jobs = compute_last_jobs(events)
    assert {job: e.seq for job, e in jobs.items()} == {"data_qa": 3, "decision": 2}


@pytest.mark.parametrize(
    "fold",
    [compute_positions, compute_cash, compute_orders, compute_state, compute_open_incidents,
     compute_approvals_used, compute_equity, compute_last_jobs, compute_state_history],
)  # fmt: skip
def test_projections_when_given_a_generator_read_it_once(fold):
    # Ledger.events() is an iterator: a fold must not need to read it twice.
    assert fold(iter(TRADES)) == fold(list(TRADES))
