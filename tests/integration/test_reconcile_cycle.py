"""Whole cycles on the sample workbook: decide, submit to the simulated broker, reconcile."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest
from conftest import make_sample_workbook, ready_to_decide

from ops_runner.brokers.sim import SimBroker
from ops_runner.core.events import EventKind, State
from ops_runner.execution.breaks import BreakKind
from ops_runner.execution.plan import read_plan
from ops_runner.execution.reconcile import ReconciliationStatus, reconcile
from ops_runner.execution.submission import SubmissionStatus, submit_plan
from ops_runner.ledger import open_ledger
from ops_runner.ledger.projections import compute_cash, compute_open_incidents, compute_positions
from ops_runner.ledger.states import read_state
from ops_runner.ops.decision import decide
from ops_runner.workbook.config import load_config

# The sample market decides VEU on 2025-10-31 and AGG on 2025-11-28 (worked out once, by hand
# from the sample's scores): cycle 2025-10 buys VEU at the 2025-11-03 open, cycle 2025-11 sells
# it and buys AGG at the 2025-12-01 open (09:30 New York = 14:30 UTC both days).
FIRST, SECOND = ("2025-10-31", "2025-11-03"), ("2025-11-28", "2025-12-01")


def utc(day: str, hhmm: str) -> datetime:
    return datetime.fromisoformat(f"{day}T{hhmm}:00+00:00").astimezone(UTC)


class Clock:
    def __init__(self) -> None:
        self.now = utc("2025-10-31", "21:00")

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def world(tmp_path: Path, request):
    """(cfg, ledger, broker, clock); ``broker.sim_faults`` from an indirect parameter."""
    root = make_sample_workbook(tmp_path)
    faults = getattr(request, "param", "{}")
    config = root / "config.yaml"
    config.write_text(config.read_text().replace("sim_faults: {}", f"sim_faults: {faults}"))
    cfg = load_config(root)
    clock = Clock()
    broker = SimBroker(cfg, clock=clock)
    with open_ledger(cfg) as ledger:
        # No funding recorded by hand: execution adopts the broker's opening balance.
        yield cfg, ledger, broker, clock


def submit(cfg, ledger, broker, clock, decided: str, session: str) -> str:
    """Decide ``decided``, plan after its close, submit at 08:30 New York on ``session``."""
    ready_to_decide(cfg, decided)
    record = decide(cfg, decided).record
    clock.now = utc(decided, "21:30")
    plan = read_plan(cfg, broker, record)
    assert plan.order_session == session
    clock.now = utc(session, "13:30")
    assert submit_plan(cfg, ledger, broker, plan, clock.now).status is SubmissionStatus.SUBMITTED
    return record["cycle_id"]


def run(cfg, ledger, broker, clock, cycle: str, session: str, hhmm: str):
    clock.now = utc(session, hhmm)
    return reconcile(cfg, ledger, broker, cycle, session, clock.now)


def second_cycle(cfg, ledger, broker, clock) -> str:
    """Run the first cycle through a late (fault-proof) reconciliation, submit the second."""
    first = submit(cfg, ledger, broker, clock, *FIRST)
    assert first == "2025-10"
    # 18:00 UTC: a 45-minute late open has long filled, and the 18:30 limit is still ahead.
    report = run(cfg, ledger, broker, clock, first, FIRST[1], "18:00")
    assert report.status is ReconciliationStatus.CLEAN, report.summary()
    return submit(cfg, ledger, broker, clock, *SECOND)


def assert_counted_once(ledger, broker) -> None:
    """The ledger's fills, positions and cash are the broker's, each execution counted once."""
    fills = {e.payload["exec_id"] for e in ledger.events(kind=str(EventKind.FILL_RECORDED))}
    assert fills == {e.exec_id for e in broker.executions()}
    assert compute_positions(ledger.events()) == broker.positions()
    assert compute_cash(ledger.events()) == broker.account_values().cash


def test_cycle_when_everything_fills_reconciles_clean(world):
    cfg, ledger, broker, clock = world
    cycle = second_cycle(cfg, ledger, broker, clock)
    early = run(cfg, ledger, broker, clock, cycle, SECOND[1], "14:45")
    assert early.status is ReconciliationStatus.WAIT and early.recorded == ()
    report = run(cfg, ledger, broker, clock, cycle, SECOND[1], "15:00")
    assert report.status is ReconciliationStatus.CLEAN, report.summary()
    assert read_state(ledger).state is State.RUN
    rows = {r.symbol: r for r in report.rows}
    assert set(rows) == {"VEU", "AGG"} and rows["VEU"].side == "SELL"
    for row in rows.values():
        assert row.filled == row.intended > 0 and row.commission >= Decimal("1.00")
        assert row.open_print is not None and row.decision_close is not None
        assert Decimal(1) <= row.slippage_bps <= Decimal(3)  # the sim's 2 bps, rounded to cents
    assert compute_positions(ledger.events()) == {"AGG": rows["AGG"].filled}
    assert_counted_once(ledger, broker)
    again = run(cfg, ledger, broker, clock, cycle, SECOND[1], "16:00")
    assert again.status is ReconciliationStatus.CLEAN and again.recorded == ()


@pytest.mark.parametrize("world", ["{duplicate_executions: true}"], indirect=True)
def test_cycle_when_executions_are_reported_twice_counts_them_once(world):
    cfg, ledger, broker, clock = world
    cycle = second_cycle(cfg, ledger, broker, clock)
    assert len(broker.executions()) == 2 * len({e.exec_id for e in broker.executions()})
    report = run(cfg, ledger, broker, clock, cycle, SECOND[1], "15:00")
    assert report.status is ReconciliationStatus.CLEAN, report.summary()
    assert_counted_once(ledger, broker)


@pytest.mark.parametrize("world", ["{partial: {AGG: 0.5}}"], indirect=True)
def test_cycle_when_a_buy_fills_partly_goes_safe_mode_then_halt_at_the_limit(world):
    cfg, ledger, broker, clock = world
    cycle = second_cycle(cfg, ledger, broker, clock)
    report = run(cfg, ledger, broker, clock, cycle, SECOND[1], "15:00")
    assert report.status is ReconciliationStatus.BREAKS
    (only,) = report.breaks
    assert (only.what, only.symbol) == (BreakKind.PARTIAL_FILL, "AGG")
    assert only.actual == only.expected // 2
    assert read_state(ledger).state is State.SAFE_MODE
    assert [i["incident_id"] for i in compute_open_incidents(ledger.events())] == ["recon-2025-11"]
    late = run(cfg, ledger, broker, clock, cycle, SECOND[1], "18:30")
    assert late.status is ReconciliationStatus.UNRESOLVED and late.state is State.HALT
    assert_counted_once(ledger, broker)


@pytest.mark.parametrize("world", ["{no_fill: [AGG]}"], indirect=True)
def test_cycle_when_a_buy_does_not_fill_goes_safe_mode(world):
    cfg, ledger, broker, clock = world
    cycle = second_cycle(cfg, ledger, broker, clock)
    report = run(cfg, ledger, broker, clock, cycle, SECOND[1], "15:00")
    assert [(b.what, b.symbol, b.actual) for b in report.breaks] == [
        (BreakKind.MISSING_FILL, "AGG", 0)
    ]
    assert read_state(ledger).state is State.SAFE_MODE
    assert_counted_once(ledger, broker)


@pytest.mark.parametrize("world", ["{delayed_open_minutes: 45}"], indirect=True)
def test_cycle_when_the_open_is_late_waits_then_reconciles_clean(world):
    cfg, ledger, broker, clock = world
    cycle = second_cycle(cfg, ledger, broker, clock)
    waiting = run(cfg, ledger, broker, clock, cycle, SECOND[1], "15:00")  # open + 30, no fill
    assert waiting.status is ReconciliationStatus.WAIT, waiting.summary()
    assert read_state(ledger).state is State.RUN
    report = run(cfg, ledger, broker, clock, cycle, SECOND[1], "15:30")  # filled at 15:15
    assert report.status is ReconciliationStatus.CLEAN, report.summary()
    assert_counted_once(ledger, broker)


@pytest.mark.parametrize("world", ["{delayed_open_minutes: 300}"], indirect=True)
def test_cycle_when_the_open_never_comes_halts_at_the_limit(world):
    cfg, ledger, broker, clock = world
    first = submit(cfg, ledger, broker, clock, *FIRST)
    assert run(cfg, ledger, broker, clock, first, FIRST[1], "16:00").status is (
        ReconciliationStatus.WAIT
    )
    report = run(cfg, ledger, broker, clock, first, FIRST[1], "18:30")
    assert report.status is ReconciliationStatus.UNRESOLVED
    assert [b.what for b in report.breaks] == [BreakKind.ORDER_WORKING]
    assert read_state(ledger).state is State.HALT
    assert_counted_once(ledger, broker)
