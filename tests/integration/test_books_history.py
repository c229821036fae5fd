"""The books on real history: monthly cycles on Alpha Vantage's files with the simulated broker
paying real dividends and applying real splits (EEM, EFA and IWM on 2005-06-09, EEM on
2008-07-24, BIL's 1-for-2 on 2017-11-30), audited and marked every week.

Answers come from the vendor's raw CSV files read here with pandas (the published dividend
amounts and split coefficients), not from the code under test; the broker's net liquidation
comes from the simulated broker's own books. The 2004-2020 run is ``benchmarks/books.py``.
"""

from __future__ import annotations

import math
from datetime import date
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

import pandas as pd
import pytest

from ops_runner.core.events import EventKind
from ops_runner.ledger import open_ledger
from ops_runner.ledger.projections import compute_fills
from ops_runner.simulators.history import simulate_books_history

pytestmark = pytest.mark.realdata

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "alphavantage"
EQUITIES = {"risk": ["SPY", "QQQ", "EFA", "EEM", "IWM", "TLT"], "defensive": "IEF",
            "cash_proxy": "SHY"}  # fmt: skip
WITH_BIL = {"risk": ["SPY", "EFA", "EEM", "IWM", "TLT", "GLD", "VNQ", "BIL"], "defensive": "IEF",
            "cash_proxy": "SHY"}  # fmt: skip
# Every risk asset held (top N = all, no absolute filter): each split and dividend is met.
HOLD_ALL = {"absolute_momentum": False}
# Splits as the vendor's files publish them (split_coefficient; 3.000003 is their 3-for-1).
SPLITS = {("EEM", "2005-06-09"): 3, ("EFA", "2005-06-09"): 3, ("IWM", "2005-06-09"): 2,
          ("EEM", "2008-07-24"): 3, ("BIL", "2017-11-30"): Decimal("0.5")}  # fmt: skip
CENT = Decimal("0.01")


def require_data() -> Path:
    if not DATA.is_dir():
        pytest.skip(f"real data not present at {DATA} (it lives beside the project, not in it)")
    return DATA


def published(symbol: str) -> pd.DataFrame:
    frame = pd.read_csv(DATA / f"{symbol}.csv", parse_dates=["timestamp"])
    return frame.set_index("timestamp").sort_index()


def run(tmp_path: Path, first: str, last: str, universe: dict, **config) -> tuple:
    top = {"top_n": len(universe["risk"]), **HOLD_ALL}
    sections = {"universe": universe, "strategy": top, "risk": {"max_drawdown": 0.95}, **config}
    result = simulate_books_history(tmp_path / "wb", require_data(), "alphavantage", first, last,
                                    config=sections)  # fmt: skip
    with open_ledger(result.config(), create=False, readonly=True) as ledger:
        events = list(ledger.events())
    return result, events


def shares_before(events: list, symbol: str, day: date) -> int:
    """Shares at ``day``'s open before its fills: earlier fills, earlier splits (by hand)."""
    held = 0
    for fill in compute_fills(events).values():
        if fill["symbol"] == symbol and date.fromisoformat(fill["session"]) < day:
            held += fill["quantity"] if fill["side"] == "BUY" else -fill["quantity"]
    for event in events:
        if event.kind == EventKind.SPLIT_APPLIED and event.payload["symbol"] == symbol:
            if date.fromisoformat(event.payload["effective"]) < day:
                held += event.payload["shares_after"] - event.payload["shares_before"]
    return held


def check_books(result, events, first_day: date, last_day: date) -> None:
    # Every week: the audit is clean and the ledger's equity is the broker's to the cent.
    assert result.weeks, "no week-end audited"
    assert [w for w in result.weeks if w.audit != "CLEAN"] == []
    assert [w for w in result.weeks if w.difference != 0] == []
    # Every dividend of a held symbol in the vendor's file is entitled, at the published rate.
    entitled = {(e.payload["symbol"], e.payload["ex_date"]): e.payload
                for e in events if e.kind == EventKind.DIVIDEND_ENTITLED}  # fmt: skip
    held = {f["symbol"] for f in compute_fills(events).values()}
    expected = 0
    for symbol in held:
        rows = published(symbol)
        rows = rows.loc[(rows["dividend_amount"] > 0) & (rows.index.date > first_day)
                        & (rows.index.date <= last_day)]  # fmt: skip
        for day, row in rows.iterrows():
            shares = shares_before(events, symbol, day.date())
            if shares <= 0:
                continue
            expected += 1
            payload = entitled[(symbol, day.date().isoformat())]
            assert payload["shares"] == shares
            rate = Decimal(str(row["dividend_amount"]))  # published to 4 decimals
            by_hand = (shares * rate).quantize(CENT, rounding=ROUND_HALF_UP)
            # The store holds the unrounded amount the vendor's adjusted close implies: at most
            # half a unit of the 4th decimal per share away from the published one.
            slack = shares * Decimal("0.00005") + CENT
            assert abs(Decimal(payload["amount"]) - by_hand) <= slack, (symbol, day)
    assert len(entitled) == expected > 0


def check_splits(events, wanted: list[tuple[str, str]]) -> None:
    splits = {(e.payload["symbol"], e.payload["effective"]): e.payload
              for e in events if e.kind == EventKind.SPLIT_APPLIED}  # fmt: skip
    assert sorted(splits) == sorted(wanted)
    for key in wanted:
        payload, ratio = splits[key], SPLITS[key]
        assert Decimal(payload["ratio"]) == ratio
        assert payload["shares_after"] == math.floor(payload["shares_before"] * ratio)
        assert payload["shares_before"] == shares_before(events, key[0], date.fromisoformat(key[1]))


@pytest.mark.slow
def test_books_history_when_2005_splits_and_dividends_paid_audits_clean_and_equity_matches(
    tmp_path,
):
    result, events = run(tmp_path, "2005-03", "2005-09", EQUITIES)
    assert result.skipped == {}
    check_books(result, events, date(2005, 3, 31), date(2005, 10, 3))  # to the last fills
    check_splits(events, [("EEM", "2005-06-09"), ("EFA", "2005-06-09"), ("IWM", "2005-06-09")])
    assert result.events.get("DividendPaid", 0) >= 10


@pytest.mark.slow
def test_books_history_when_tax_interest_and_fees_and_eem_2008_split_stays_clean(tmp_path):
    account = {"withholding_rate": 0.15, "interest_rate": 0.02, "monthly_fee": 10.0}
    result, events = run(
        tmp_path,
        "2008-05",
        "2008-09",
        WITH_BIL,
        broker={"sim_account": account},
        books={"withholding_rate": 0.15},
    )
    check_books(result, events, date(2008, 5, 30), date(2008, 10, 1))
    check_splits(events, [("EEM", "2008-07-24")])
    taxes = [e.payload for e in events if e.kind == EventKind.TAX_WITHHELD]
    paid = {(e.payload["symbol"], e.payload["ex_date"]): Decimal(e.payload["amount"])
            for e in events if e.kind == EventKind.DIVIDEND_PAID}  # fmt: skip
    assert taxes and len(taxes) == len(paid)
    for tax in taxes:
        gross = paid[(tax["symbol"], tax["ex_date"])]
        assert Decimal(tax["amount"]) == -(gross * Decimal("0.15")).quantize(
            CENT, rounding=ROUND_HALF_UP
        )
    fees = [e.payload for e in events if e.kind == EventKind.FEE_CHARGED]
    interest = [e.payload for e in events if e.kind == EventKind.INTEREST_BOOKED]
    # Booked at each month's first session for the month before: May (the account's first
    # month-end, before its first fills at the 2008-06-02 open) to September 2008.
    months = ["2008-05", "2008-06", "2008-07", "2008-08", "2008-09"]
    assert [f["amount"] for f in fees] == ["-10.00"] * 5
    assert [f["description"][-7:] for f in fees] == months
    assert len(interest) == 5 and all(Decimal(i["amount"]) > 0 for i in interest)
    # May's interest is on the funding itself, all cash at the month-end: 100000 x 2% / 12.
    assert interest[0]["amount"] == "166.67" and interest[0]["on"] == "2008-06-02"


@pytest.mark.slow
def test_books_history_when_bil_reverse_split_pays_cash_in_lieu_and_stays_clean(tmp_path):
    result, events = run(tmp_path, "2017-09", "2017-12", WITH_BIL)
    check_books(result, events, date(2017, 9, 29), date(2018, 1, 2))
    check_splits(events, [("BIL", "2017-11-30")])
    split = next(e.payload for e in events if e.kind == EventKind.SPLIT_APPLIED)
    if split["shares_before"] % 2:  # an odd position: half a share paid at the prior close x 2
        prior = published("BIL").loc["2017-11-29", "close"]
        lieu = (Decimal(str(prior)) * 2 / 2).quantize(CENT, rounding=ROUND_HALF_UP)
        assert Decimal(split["cash_in_lieu"]) == lieu
    else:
        assert Decimal(split["cash_in_lieu"]) == 0
