"""The weekly audit on the sample workbook: cycles through the simulated broker, then the whole
book at the broker against the ledger since inception, with the broker's books edited by hand."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest
from conftest import make_sample_workbook, run_clean_cycle

from ops_runner.brokers.base import BrokerUnavailable
from ops_runner.brokers.sim import SimBroker
from ops_runner.core.events import EventKind, State
from ops_runner.execution.breaks import BreakKind
from ops_runner.ledger import open_ledger
from ops_runner.ledger.projections import compute_open_incidents
from ops_runner.ledger.states import read_state
from ops_runner.ops.audit import AuditStatus, audit_job, run_audit
from ops_runner.workbook.config import load_config

# As in test_reconcile_cycle: the sample decides VEU on 2025-10-31 (bought at the 2025-11-03
# open) and AGG on 2025-11-28 (VEU sold, AGG bought at the 2025-12-01 open).
FIRST, SECOND = ("2025-10-31", "2025-11-03"), ("2025-11-28", "2025-12-01")
OPENING_CASH = Decimal("100000.00")  # research.initial_cash of the template: the sim's funding


def utc(day: str, hhmm: str) -> datetime:
    return datetime.fromisoformat(f"{day}T{hhmm}:00+00:00").astimezone(UTC)


class Clock:
    def __init__(self) -> None:
        self.now = utc("2025-10-31", "21:00")

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def world(tmp_path: Path):
    """(cfg, ledger, broker, clock) on a new sample workbook."""
    cfg = load_config(make_sample_workbook(tmp_path / "wb"))
    clock = Clock()
    with open_ledger(cfg) as ledger:
        yield cfg, ledger, SimBroker(cfg, clock=clock), clock


def audit(cfg, ledger, broker, clock, day: str, hhmm: str = "22:00"):
    clock.now = utc(day, hhmm)
    return run_audit(cfg, ledger, broker, clock.now)


def books_path(cfg) -> Path:
    return cfg.path("broker") / "sim.json"


def edit_books(cfg, change) -> None:
    """A change at the broker the ledger never hears of (a manual trade, a fee, a correction)."""
    book = json.loads(books_path(cfg).read_text())
    change(book)
    books_path(cfg).write_text(json.dumps(book, indent=1, sort_keys=True) + "\n")


def audits(ledger) -> list:
    return list(ledger.events(kind=str(EventKind.AUDIT_RECORDED)))


def test_audit_when_cycles_reconciled_clean_is_clean_and_equals_the_brokers_books(world):
    cfg, ledger, broker, clock = world
    run_clean_cycle(cfg, ledger, broker, clock, *FIRST)
    run_clean_cycle(cfg, ledger, broker, clock, *SECOND)
    # 21:30 UTC on 2025-12-01: after its close, before the VEU sale settles at the next open.
    report = audit(cfg, ledger, broker, clock, "2025-12-01", "21:30")
    assert report.status is AuditStatus.CLEAN, report.summary()
    assert report.session == "2025-12-01" and report.breaks == ()
    assert report.recorded == ("AuditRecorded:2025-12-01",) and len(audits(ledger)) == 1
    assert read_state(ledger).state is State.RUN
    # Worked out from the broker's own books, not from the ledger's projections.
    book = json.loads(books_path(cfg).read_text())
    held: dict[str, int] = {}
    cash = OPENING_CASH
    for ex in book["executions"]:
        sign = 1 if ex["side"] == "BUY" else -1
        held[ex["symbol"]] = held.get(ex["symbol"], 0) + sign * ex["quantity"]
        cash -= sign * ex["quantity"] * Decimal(ex["price"])
    cash -= sum(Decimal(c["amount"]) for c in book["commissions"])
    held = {s: q for s, q in held.items() if q}
    assert set(held) == {"AGG"} and held == book["positions"]
    assert report.ledger_positions == report.broker_positions == held
    assert report.ledger_cash == report.broker_cash == cash == Decimal(book["cash"])
    assert report.settled_cash < report.broker_cash  # T+1: the sale is cash, not yet settled
    assert (report.orders, report.cash_tolerance) == (3, Decimal("0.03"))  # 1 + 2 orders
    frame = report.to_frame()
    assert list(frame.index) == ["AGG"] and bool(frame.loc["AGG", "agrees"])
    assert bool(report.cash_frame().loc["cash", "agrees"])


def test_audit_when_a_position_is_traded_behind_the_ledgers_back_breaks_once(world):
    cfg, ledger, broker, clock = world
    run_clean_cycle(cfg, ledger, broker, clock, *FIRST)
    run_clean_cycle(cfg, ledger, broker, clock, *SECOND)
    held = broker.positions()["AGG"]

    def manual_sale(book: dict) -> None:  # the user sells 10 AGG at 100.00 in the broker's app
        book["positions"]["AGG"] -= 10
        book["cash"] = str(Decimal(book["cash"]) + Decimal("1000.00") - Decimal("1.00"))

    edit_books(cfg, manual_sale)
    report = audit(cfg, ledger, broker, clock, "2025-12-05")
    assert report.status is AuditStatus.BREAK
    position, cash = report.breaks
    assert (position.what, position.symbol) == (BreakKind.POSITION, "AGG")
    assert (position.expected, position.actual) == (held, held - 10)
    assert cash.what is BreakKind.CASH and cash.actual - cash.expected == Decimal("999.00")
    assert report.state is State.SAFE_MODE and read_state(ledger).state is State.SAFE_MODE
    (incident,) = compute_open_incidents(ledger.events())
    assert (incident["incident_id"], incident["category"]) == ("audit-2025-12-05", "reconciliation")
    assert "AGG" in incident["summary"]
    written = ledger.head()
    again = audit(cfg, ledger, broker, clock, "2025-12-06", "15:00")  # Saturday: same session
    assert ledger.head() == written and again.recorded == ()
    assert again == replace(report, recorded=())
    assert len(audits(ledger)) == 1


@pytest.mark.parametrize(
    ("offset", "status"),
    [("0.01", AuditStatus.CLEAN), ("-0.01", AuditStatus.CLEAN),
     ("0.02", AuditStatus.BREAK), ("-250.00", AuditStatus.BREAK)],
)  # fmt: skip
def test_audit_when_cash_is_off_breaks_only_past_a_cent_per_order(world, offset, status):
    cfg, ledger, broker, clock = world
    run_clean_cycle(cfg, ledger, broker, clock, *FIRST)  # one order: a cent of tolerance

    def drift(book: dict) -> None:
        book["cash"] = str(Decimal(book["cash"]) + Decimal(offset))

    edit_books(cfg, drift)
    report = audit(cfg, ledger, broker, clock, "2025-11-07")
    assert report.cash_tolerance == Decimal("0.01")
    assert report.status is status, report.summary()
    if status is AuditStatus.BREAK:
        (only,) = report.breaks
        assert only.what is BreakKind.CASH and only.actual - only.expected == Decimal(offset)
        assert read_state(ledger).state is State.SAFE_MODE
    else:
        assert read_state(ledger).state is State.RUN


def test_audit_when_an_old_cycle_differs_at_the_broker_catches_it(world):
    cfg, ledger, broker, clock = world
    run_clean_cycle(cfg, ledger, broker, clock, *FIRST)
    run_clean_cycle(cfg, ledger, broker, clock, *SECOND)
    first_fill = f"sim.{FIRST[1]}."

    def correction(book: dict) -> None:
        # The broker corrects cycle 2025-10 after the fact: 3.00 more commission on the VEU buy,
        # and 5 VEU it says were never sold. Neither touches this cycle's symbol (AGG).
        (fee,) = [c for c in book["commissions"] if c["exec_id"].startswith(first_fill)]
        fee["amount"] = str(Decimal(fee["amount"]) + Decimal("3.00"))
        book["cash"] = str(Decimal(book["cash"]) - Decimal("3.00"))
        book["positions"]["VEU"] = 5

    edit_books(cfg, correction)
    report = audit(cfg, ledger, broker, clock, "2025-12-12")
    assert report.status is AuditStatus.BREAK
    assert [(b.what, b.symbol) for b in report.breaks] == [
        (BreakKind.POSITION, "VEU"),
        (BreakKind.CASH, None),
    ]
    position, cash = report.breaks
    assert (position.expected, position.actual) == (0, 5)
    assert cash.expected - cash.actual == Decimal("3.00")
    assert read_state(ledger).state is State.SAFE_MODE


def test_audit_when_the_broker_is_down_records_nothing_and_raises(world):
    cfg, ledger, broker, clock = world
    run_clean_cycle(cfg, ledger, broker, clock, *FIRST)
    config = cfg.workbook / "config.yaml"
    config.write_text(
        config.read_text().replace("sim_faults: {}", "sim_faults: {refuse_connection: true}")
    )
    down = load_config(cfg.workbook)
    before = ledger.head()
    with pytest.raises(BrokerUnavailable):
        run_audit(down, ledger, SimBroker(down, clock=clock), utc("2025-11-07", "22:00"))
    with pytest.raises(BrokerUnavailable):
        audit_job(down, "2025-11-07T22:00:00Z", alert=None)
    assert ledger.head() == before and audits(ledger) == []
    assert read_state(ledger).state is State.RUN


def test_audit_job_when_the_ledger_has_no_cash_history_is_clean_without_comparing_cash(tmp_path):
    cfg = load_config(make_sample_workbook(tmp_path / "wb"))
    report = audit_job(cfg, "2025-12-06T15:00:00Z", alert=None)
    assert report.status is AuditStatus.CLEAN and report.session == "2025-12-05"
    assert report.ledger_cash is None and report.broker_cash == OPENING_CASH
    assert "cash not compared" in report.summary()
    with open_ledger(cfg) as ledger:
        assert [e.key for e in audits(ledger)] == ["AuditRecorded:2025-12-05"]


@pytest.mark.parametrize(
    ("recorded", "status"), [(True, AuditStatus.CLEAN), (False, AuditStatus.BREAK)]
)
def test_audit_when_a_deposit_is_made_counts_it_only_if_the_ledger_has_it(world, recorded, status):
    cfg, ledger, broker, clock = world
    run_clean_cycle(cfg, ledger, broker, clock, *FIRST)

    def deposit(book: dict) -> None:
        book["cash"] = str(Decimal(book["cash"]) + Decimal("5000.00"))

    edit_books(cfg, deposit)
    if recorded:
        ledger.append(str(EventKind.CASH_ADJUSTED), "CashAdjusted:deposit-1",
                      {"amount": "5000.00", "reason": "deposit"})  # fmt: skip
    report = audit(cfg, ledger, broker, clock, "2025-11-07")
    assert report.status is status, report.summary()
    assert [b.what for b in report.breaks] == ([] if recorded else [BreakKind.CASH])
