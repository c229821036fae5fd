"""IB's statements booked in the ledger: the IB adapter reads the Flex statement from the
loopback Flex Web Service (recorded statement XML in IB's format), and the books record each
cash line and corporate action with the statement line as evidence, once.

The ledger holds hand-written fills (as reconciliation records them); the store is the sample
market with the statement's dividends written into it, so the entitlement on the ex-date comes
from the price store and the cash from the statement.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pandas as pd
import pytest
import yaml
from conftest import make_sample_workbook

from ops_runner.brokers.base import BrokerUnavailable
from ops_runner.brokers.ib import IbBroker
from ops_runner.core.events import EventKind
from ops_runner.execution.books import book_account
from ops_runner.ledger import open_ledger
from ops_runner.ledger.projections import compute_cash, compute_positions, compute_receivables
from ops_runner.market.prices import open_store
from ops_runner.simulators.flex_server import Fault, FlexServer
from ops_runner.workbook.config import load_config

FLEX = Path(__file__).resolve().parents[1] / "data" / "flex"
TOKEN = "flex-token-never-shown-31415"
QUERY = "700001"
ACCOUNT = "U1234567"
OPENING = Decimal("100000.00")


def workbook(root: Path, server: FlexServer) -> object:
    make_sample_workbook(root)
    path = root / "config.yaml"
    values = yaml.safe_load(path.read_text())
    values["broker"]["account"] = ACCOUNT
    values["broker"]["flex"] = {"enabled": True, "base_url": server.flex_url}
    path.write_text(yaml.safe_dump(values, sort_keys=False))
    return load_config(root)


def set_dividend(cfg, symbol: str, day: str, amount: float, split: float = 1.0) -> None:
    """Write ``symbol``'s stored bars back with one dividend (and split) on ``day`` and no
    other dividend within 90 days of it."""
    store, source = open_store(cfg), cfg.primary_source
    bars = store.load_bars(source, symbol).copy()
    near = (bars.index >= pd.Timestamp(day) - pd.Timedelta(days=90)) & (
        bars.index <= pd.Timestamp(day) + pd.Timedelta(days=90)
    )
    bars.loc[near, "dividend"] = 0.0  # the sample's own dividends out of the way
    bars.loc[pd.Timestamp(day), "dividend"] = amount
    bars.loc[pd.Timestamp(day), "split"] = split
    manifest = store.read_manifest(source, symbol)
    provenance = {k: manifest[k] for k in ("layout", "source_file", "synthetic")}
    provenance.update(source_sha256="0" * 64, notes="test: one dividend written by hand")
    store.write_bars(source, symbol, bars, provenance)


def fund(ledger) -> None:
    payload = {"amount": str(OPENING), "reason": "opening balance"}
    ledger.append(str(EventKind.CASH_ADJUSTED), "CashAdjusted:opening", payload)


def fill(ledger, exec_id: str, symbol: str, side: str, quantity: int, price: str, session: str):
    payload = {
        "exec_id": exec_id,
        "client_ref": None,
        "symbol": symbol,
        "side": side,
        "quantity": quantity,
        "price": price,
        "commission": "1.00",
        "session": session,
    }
    ledger.append(str(EventKind.FILL_RECORDED), f"FillRecorded:{exec_id}", payload)


@pytest.fixture
def env(monkeypatch):
    monkeypatch.setenv("OPS_RUNNER_IB_FLEX_TOKEN", TOKEN)
    monkeypatch.setenv("OPS_RUNNER_IB_FLEX_QUERY_ID", QUERY)


def at(day: str, hhmm: str = "22:00") -> datetime:
    return datetime.fromisoformat(f"{day}T{hhmm}:00+00:00").astimezone(UTC)


def test_books_when_ib_statement_has_dividend_tax_interest_fee_books_each_line_once(tmp_path, env):
    with FlexServer({QUERY: FLEX / "flex_2020_10_cash.xml"}, token=TOKEN) as server:
        cfg = workbook(tmp_path / "wb", server)
        set_dividend(cfg, "SPY", "2020-09-18", 1.3392)
        broker = IbBroker(cfg)
        with open_ledger(cfg) as ledger:
            fund(ledger)
            fill(ledger, "e1", "SPY", "BUY", 150, "330.00", "2020-09-01")
            report = book_account(cfg, ledger, broker, at("2020-11-02"))
            events = list(ledger.events())
            again = book_account(cfg, ledger, broker, at("2020-11-03"))
            assert again.recorded == () and len(list(ledger.events())) == len(events)
        served = len(server.requests)

    kinds = sorted(key.split(":")[0] for key in report.recorded)
    assert kinds == ["CashAdjusted", "DividendEntitled", "DividendPaid", "FeeCharged",
                     "InterestBooked", "TaxWithheld"]  # fmt: skip
    by_kind = {e.kind: e.payload for e in events if e.kind not in ("FillRecorded",)}
    deposit = next(e for e in events if e.key == "CashAdjusted:13987000103").payload
    entitled = by_kind[EventKind.DIVIDEND_ENTITLED]
    # 150 shares held at the 2020-09-17 close x 1.3392 = 200.88, from the price store.
    assert (entitled["shares"], entitled["amount"], entitled["ex_date"]) == (
        150,
        "200.88",
        "2020-09-18",
    )
    assert "price store sample/SPY 2020-09-18: dividend 1.3392" in entitled["evidence"][0]
    paid = by_kind[EventKind.DIVIDEND_PAID]
    assert (paid["amount"], paid["ex_date"], paid["on"]) == ("200.88", "2020-09-18", "2020-10-30")
    assert "line 13987000104" in paid["evidence"][0]
    assert by_kind[EventKind.TAX_WITHHELD]["amount"] == "-30.13"
    assert by_kind[EventKind.INTEREST_BOOKED]["amount"] == "1.37"
    assert by_kind[EventKind.FEE_CHARGED]["amount"] == "-10"
    # The deposit is the operator's CashAdjusted, never booked from a statement line.
    # The deposit (its DETAIL row, not IB's SUMMARY copy) is a flow, dated as it settled.
    assert (deposit["amount"], deposit["session"]) == ("5000", "2020-10-15")
    assert "line 13987000103" in deposit["evidence"][0]
    # Cash: opening - 150 x 330 - 1 commission + 200.88 - 30.13 + 1.37 - 10 + 5000, by hand.
    assert compute_cash(events) == Decimal("100000.00") - 49500 - 1 + Decimal("5162.12")
    assert compute_receivables(events) == {}  # paid: nothing owed any more
    for event in events:
        text = str(event.payload)
        assert ACCOUNT not in text and TOKEN not in text
    assert served >= 4  # two statements read: SendRequest + GetStatement each


def test_books_when_ib_statement_has_reverse_split_books_shares_and_cash_in_lieu(tmp_path, env):
    with FlexServer({QUERY: FLEX / "flex_2017_11_bil_reverse_split.xml"}, token=TOKEN) as server:
        cfg = workbook(tmp_path / "wb", server)
        broker = IbBroker(cfg)
        with open_ledger(cfg) as ledger:
            fund(ledger)
            fill(ledger, "b1", "BIL", "BUY", 301, "45.70", "2017-10-02")
            report = book_account(cfg, ledger, broker, at("2017-12-15"))
            events = list(ledger.events())
    split = next(e.payload for e in events if e.kind == EventKind.SPLIT_APPLIED)
    # 301 shares, 1 for 2: 150 whole shares and half a share sold as cash in lieu (45.74).
    assert (split["shares_before"], split["shares_after"]) == (301, 150)
    assert (split["ratio"], split["cash_in_lieu"], split["effective"]) == (
        "0.5",
        "45.74",
        "2017-11-30",
    )
    assert compute_positions(events) == {"BIL": 150}
    assert any(key.startswith("SplitApplied:BIL") for key in report.recorded)


def test_books_when_flex_service_refuses_the_token_records_nothing_and_waits(tmp_path, env):
    with FlexServer({QUERY: FLEX / "flex_2020_10_cash.xml"}, token=TOKEN) as server:
        cfg = workbook(tmp_path / "wb", server)
        server.set_fault(Fault.EXPIRED_TOKEN, None, 10)
        broker = IbBroker(cfg)
        with open_ledger(cfg) as ledger:
            fill(ledger, "e1", "SPY", "BUY", 150, "330.00", "2020-09-01")
            before = len(list(ledger.events()))
            with pytest.raises(BrokerUnavailable) as caught:
                book_account(cfg, ledger, broker, at("2020-11-02"))
            assert len(list(ledger.events())) == before
    message = str(caught.value)
    assert "1012" in message and TOKEN not in message and ACCOUNT not in message
    assert "\n" not in message


def test_books_when_flex_not_enabled_ib_gives_no_statement(tmp_path):
    root = tmp_path / "wb"
    make_sample_workbook(root)
    cfg = load_config(root)
    assert IbBroker(cfg).statement() is None
