"""IB without Flex statements: the loopback TWS simulator pays a dividend as IB does (accrued
in net liquidation from the ex-date, cash on the pay date), and the weekly audit, reading the
account through the real IB adapter, books it from the price store: entitled on the ex-date,
paid when the broker's cash shows it. A dividend IB never pays is a break.

The workbook is the sample market with one VEU dividend written into its store; the ledger
holds the VEU purchase as reconciliation records it; the simulated account holds the same.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

import pandas as pd
import pytest
import yaml
from conftest import make_sample_workbook

from ops_runner.brokers.ib import IbBroker
from ops_runner.core.events import EventKind
from ops_runner.execution.breaks import BreakKind
from ops_runner.ledger import open_ledger
from ops_runner.ledger.projections import compute_cash, compute_ledger_equity
from ops_runner.market.prices import open_store
from ops_runner.ops.audit import AuditStatus, run_audit
from ops_runner.simulators.market import WorkbookMarket
from ops_runner.simulators.tws_sim import TwsSimulator
from ops_runner.workbook.config import load_config

ACCOUNT = "DU7654321"
EX, PAY = "2025-11-10", "2025-11-13"  # the pay date: three sessions after the ex-date
RATE = 0.4321
SHARES = 100
PRICE, FEE = Decimal("70.00"), Decimal("1.00")
CASH = Decimal("50000.00")  # the account's cash after the purchase, at IB and in the ledger
CENT = Decimal("0.01")


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def at(day: str, hhmm: str = "22:00") -> datetime:
    return datetime.fromisoformat(f"{day}T{hhmm}:00+00:00").astimezone(UTC)


def write_dividend(cfg) -> None:
    store, source = open_store(cfg), cfg.primary_source
    bars = store.load_bars(source, "VEU").copy()
    bars.loc[bars.index >= pd.Timestamp("2025-11-04"), "dividend"] = 0.0
    bars.loc[pd.Timestamp(EX), "dividend"] = RATE
    manifest = store.read_manifest(source, "VEU")
    provenance = {k: manifest[k] for k in ("layout", "source_file", "synthetic")}
    provenance.update(source_sha256="1" * 64, notes="test: one VEU dividend written by hand")
    store.write_bars(source, "VEU", bars, provenance)


def close_of(cfg, day: str) -> Decimal:
    bars = open_store(cfg).load_bars(cfg.primary_source, "VEU")
    return Decimal(str(float(bars.at[pd.Timestamp(day), "close"])))


@pytest.fixture
def world(tmp_path: Path):
    root = make_sample_workbook(tmp_path / "wb")
    cfg = load_config(root)
    write_dividend(cfg)
    clock = Clock(at("2025-11-07"))  # a Friday evening: the account already holds VEU
    sim = TwsSimulator(WorkbookMarket(cfg), clock, account=ACCOUNT, cash=CASH,
                       positions={"VEU": SHARES})  # fmt: skip
    sim.start()
    sim.advance()  # the account exists from this Friday on: later opens are its news
    path = root / "config.yaml"
    values = yaml.safe_load(path.read_text())
    retry = {"attempts": 2, "wait_seconds": 0.1}
    values["broker"].update(kind="ib", mode="paper", host="127.0.0.1", port=sim.port,
                            account=ACCOUNT, simulator=True, connect_timeout_seconds=1.0,
                            request_timeout_seconds=2.0, retry=retry)  # fmt: skip
    path.write_text(yaml.safe_dump(values, sort_keys=False))
    cfg = load_config(root)
    with open_ledger(cfg) as ledger:
        funding = CASH + SHARES * PRICE + FEE
        ledger.append(str(EventKind.CASH_ADJUSTED), "CashAdjusted:opening",
                      {"amount": str(funding), "reason": "opening balance"})  # fmt: skip
        fill = {"exec_id": "ib.1", "client_ref": "mr:2025-10:VEU:BUY", "symbol": "VEU",
                "side": "BUY", "quantity": SHARES, "price": str(PRICE), "commission": str(FEE),
                "session": "2025-11-03"}  # fmt: skip
        ledger.append(str(EventKind.FILL_RECORDED), "FillRecorded:ib.1", fill)
    broker = IbBroker(cfg, clock=clock, role="readonly")  # one session, as the audit's
    yield cfg, sim, clock, broker
    broker.close()
    sim.stop()
    assert sim.protocol_errors() == []


def audit(cfg, clock, broker, day: str):
    clock.now = at(day)
    with open_ledger(cfg) as ledger:
        report = run_audit(cfg, ledger, broker, clock.now)
        return report, list(ledger.events())


def test_ib_without_statements_when_it_pays_a_dividend_books_it_from_the_store(world):
    cfg, sim, clock, broker = world
    gross = (SHARES * Decimal(str(RATE))).quantize(CENT, rounding=ROUND_HALF_UP)  # 43.21

    report, events = audit(cfg, clock, broker, EX)
    assert report.status is AuditStatus.CLEAN, report.summary()
    (entitled,) = [e.payload for e in events if e.kind == EventKind.DIVIDEND_ENTITLED]
    assert (entitled["shares"], entitled["amount"], entitled["pay_date"]) == (
        SHARES,
        str(gross),
        PAY,
    )
    assert not [e for e in events if e.kind == EventKind.DIVIDEND_PAID]
    # IB counts the accrued dividend in net liquidation; so does the ledger's equity.
    values = broker.account_values()
    assert values.cash == CASH
    owed = compute_ledger_equity(events, {"VEU": close_of(cfg, EX)})
    assert values.net_liquidation == owed.quantize(CENT, rounding=ROUND_HALF_UP)

    report, events = audit(cfg, clock, broker, PAY)
    assert report.status is AuditStatus.CLEAN, report.summary()
    (paid,) = [e.payload for e in events if e.kind == EventKind.DIVIDEND_PAID]
    assert paid["amount"] == str(gross) and "explained" in paid["evidence"][0]
    assert compute_cash(events) == sim.cash() == CASH + gross


def test_ib_without_statements_when_a_dividend_is_never_paid_breaks_past_the_grace(world):
    cfg, sim, clock, broker = world
    audit(cfg, clock, broker, EX)
    with sim._account.lock:
        sim._account.accruals.clear()  # IB drops the payment
    report, _ = audit(cfg, clock, broker, "2025-11-20")  # the pay date + 5 sessions of grace
    assert report.status is AuditStatus.CLEAN, report.summary()
    report, _ = audit(cfg, clock, broker, "2025-11-21")
    assert report.status is AuditStatus.BREAK
    assert [b.what for b in report.breaks] == [BreakKind.PAYMENT_MISSING]
    assert "43.21" in report.breaks[0].detail
