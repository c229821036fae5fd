"""The account between trades, pure parts: the split, entitlement, explanation and
shares-at arithmetic of ``ops_runner.execution.books`` and the projections' folds of the new
events, checked on hand-built events against answers worked out by hand."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from typing import Any

import pytest

from ops_runner.core.events import EventKind
from ops_runner.execution.books import (
    compute_entitlement,
    compute_explained,
    compute_shares_at,
    compute_split,
)
from ops_runner.ledger.projections import (
    compute_account_cash,
    compute_account_events,
    compute_cash,
    compute_ledger_equity,
    compute_positions,
    compute_receivables,
    compute_splits,
)

D = Decimal


@dataclass(frozen=True)
class Ev:
    """An event as a projection reads it."""

    seq: int
    kind: str
    payload: Mapping[str, Any] = field(default_factory=dict)
    recorded_at: str = "2025-11-03T15:00:00Z"


def events(*rows: tuple[EventKind, dict[str, Any]]) -> list[Ev]:
    return [Ev(seq, str(kind), payload) for seq, (kind, payload) in enumerate(rows, start=1)]


def opening(amount: str) -> tuple[EventKind, dict[str, Any]]:
    return EventKind.CASH_ADJUSTED, {"amount": amount, "reason": "opening balance"}


def fill(exec_id: str, symbol: str, side: str, qty: int, price: str, session: str):
    return EventKind.FILL_RECORDED, {
        "exec_id": exec_id, "client_ref": f"r-{exec_id}", "symbol": symbol, "side": side,
        "quantity": qty, "price": price, "commission": "1.00", "session": session,
    }  # fmt: skip


def split(symbol: str, effective: str, ratio: str, before: int, after: int, lieu: str = "0.00"):
    key = f"SplitApplied:{symbol}:{effective}"
    return EventKind.SPLIT_APPLIED, {
        "id": key, "symbol": symbol, "effective": effective, "ratio": ratio,
        "shares_before": before, "shares_after": after, "cash_in_lieu": lieu, "evidence": ["t"],
    }  # fmt: skip


def entitled(symbol: str, ex_date: str, amount: str, withholding: str = "0.00"):
    return EventKind.DIVIDEND_ENTITLED, {
        "id": f"DividendEntitled:{symbol}:{ex_date}", "symbol": symbol, "ex_date": ex_date,
        "pay_date": "2025-11-13", "shares": 100, "rate": "0.01", "amount": amount,
        "withholding": withholding, "evidence": ["t"],
    }  # fmt: skip


def cash_line(kind: EventKind, line_id: str, amount: str, **more: str):
    return kind, {"id": f"{kind}:{line_id}", "on": "2025-11-13", "amount": amount, **more}


# -- compute_split -------------------------------------------------------------------------------

SPLITS = [
    # before, ratio (new per old), prior close, shares after, cash in lieu
    (1358, D(3), "72.14", 4074, "0.00"),  # 3 for 1: no fraction
    (1359, D("0.5"), "25.125", 679, "25.13"),  # 1 for 2: half a new share = one old, half-up
    (1359, D("0.5"), "25.115", 679, "25.12"),
    (7, D(1) / D(3), "30", 2, "30.00"),  # 1 for 3: a third of a new share = one old share
    (3, D("0.25"), "40", 0, "120.00"),  # 1 for 4 on 3 shares: all cashed out at 40
    (1, D("2.5"), "10.01", 2, "2.00"),  # 5 for 2: half a new share worth 10.01 / 2.5 = 2.002
    (100, D("1.5"), "10", 150, "0.00"),  # 3 for 2
    (0, D(3), "72.14", 0, "0.00"),
]


@pytest.mark.parametrize(("before", "ratio", "close", "after", "lieu"), SPLITS)
def test_compute_split_when_known_splits_gives_whole_shares_and_cash_in_lieu(
    before, ratio, close, after, lieu
):
    assert compute_split(before, ratio, D(close)) == (after, D(lieu))


# -- compute_entitlement -------------------------------------------------------------------------

ENTITLEMENTS = [
    # shares, rate, withholding rate, gross, withheld
    (1358, "0.4321", "0", "586.79", "0.00"),  # 586.7918
    (1358, "0.4321", "0.15", "586.79", "-88.02"),  # 88.0185
    (4074, "0.2", "0.30", "814.80", "-244.44"),
    (3, "0.125", "0.15", "0.38", "-0.06"),  # 0.375 and 0.057, half-up
    (1, "0.005", "0.1", "0.01", "0.00"),  # half a cent rounds up; its tax is 0.001
    (0, "0.5", "0.15", "0.00", "0.00"),
]


@pytest.mark.parametrize(("shares", "rate", "tax", "gross", "withheld"), ENTITLEMENTS)
def test_compute_entitlement_when_known_dividends_gives_cents_half_up(
    shares, rate, tax, gross, withheld
):
    assert compute_entitlement(shares, D(rate), D(tax)) == (D(gross), D(withheld))


# -- compute_explained ---------------------------------------------------------------------------

A, B, C = ("VEU", "2025-11-10"), ("AGG", "2025-11-03"), ("TLT", "2025-11-03")
THIRTEEN = [((f"S{i:02d}", "2025-11-10"), D("1.00")) for i in range(13)]
EXPLAINED = [
    # due (key, net amount), the broker's cash minus the ledger's, the keys that explain it
    ([], "5.00", None),
    ([(A, D("10.00")), (B, D("5.00"))], "15.00", [A, B]),  # all of them
    ([(A, D("10.00")), (B, D("5.00"))], "15.009", [A, B]),  # within the cent
    ([(A, D("10.00")), (B, D("5.00"))], "15.01", None),
    ([(A, D("10.00")), (B, D("5.00"))], "5.00", [B]),  # one arrived, one still owed
    ([(A, D("10.00")), (B, D("5.00"))], "10.00", [A]),
    ([(A, D("10.00")), (B, D("5.00"))], "7.00", None),  # nothing explains it: a cash break
    ([(A, D("10.00")), (B, D("5.00")), (C, D("5.00"))], "10.00", [B, C]),  # larger first
    ([(A, D("-1.50"))], "-1.50", [A]),  # a net debit
    (THIRTEEN, "13.00", [key for key, _ in THIRTEEN]),
    (THIRTEEN, "12.00", [key for key, _ in THIRTEEN[:12]]),  # the first twelve combined
]


@pytest.mark.parametrize(("due", "difference", "keys"), EXPLAINED)
def test_compute_explained_when_a_cash_difference_names_the_payments_behind_it(
    due, difference, keys
):
    assert compute_explained(due, D(difference)) == keys


# -- compute_shares_at ---------------------------------------------------------------------------

HISTORY = events(
    opening("100000.00"),
    fill("e1", "VEU", "BUY", 100, "72.00", "2025-11-03"),
    split("VEU", "2025-11-10", "3", 100, 300),
    fill("e2", "VEU", "SELL", 50, "25.00", "2025-11-12"),
    fill("e2", "VEU", "SELL", 50, "25.00", "2025-11-12"),  # reported again after a reconnect
    split("VEU", "2025-11-17", "0.5", 250, 125),
    split("VEU", "2025-11-17", "0.5", 250, 125),  # the same split booked again
    fill("e3", "AGG", "BUY", 10, "100.00", "2025-11-12"),
)
SHARES_AT = [
    # symbol, day, count that day's splits, shares at that day's open before its fills
    ("VEU", "2025-11-03", False, 0),  # bought at this open
    ("VEU", "2025-11-04", False, 100),
    ("VEU", "2025-11-10", False, 100),
    ("VEU", "2025-11-10", True, 300),
    ("VEU", "2025-11-12", True, 300),  # the sale is this session's fill
    ("VEU", "2025-11-13", False, 250),
    ("VEU", "2025-11-17", False, 250),
    ("VEU", "2025-11-17", True, 125),
    ("VEU", "2025-12-01", False, 125),
    ("AGG", "2025-11-13", True, 10),
    ("SPY", "2025-11-13", True, 0),
]


@pytest.mark.parametrize(("symbol", "day", "splits", "shares"), SHARES_AT)
def test_compute_shares_at_when_fills_and_splits_counts_those_before_the_open(
    symbol, day, splits, shares
):
    assert compute_shares_at(HISTORY, symbol, date.fromisoformat(day), splits=splits) == shares


# -- the projections' folds ----------------------------------------------------------------------

ACCOUNT = events(
    opening("10000.00"),
    fill("e1", "VEU", "BUY", 101, "50.00", "2025-11-03"),  # 5050.00 + 1.00
    split("VEU", "2025-11-10", "0.5", 101, 50, "49.98"),  # half a new share: one old at 49.98
    entitled("VEU", "2025-11-12", "25.00", "-3.75"),
    entitled("VEU", "2025-11-19", "30.00", "-4.50"),
    cash_line(EventKind.DIVIDEND_PAID, "d1", "25.00", symbol="VEU", ex_date="2025-11-12"),
    cash_line(EventKind.TAX_WITHHELD, "t1", "-3.75", symbol="VEU", ex_date="2025-11-12"),
    cash_line(EventKind.INTEREST_BOOKED, "i1", "8.73"),
    cash_line(EventKind.FEE_CHARGED, "f1", "-10.00", description="monthly fee"),
)
# 10000 - 5051.00 + 49.98 + 25.00 - 3.75 + 8.73 - 10.00
CASH = D("5018.96")
BETWEEN_TRADES = D("69.96")  # 49.98 + 25.00 - 3.75 + 8.73 - 10.00


def test_compute_positions_when_a_split_applied_adds_its_change_in_shares():
    assert compute_positions(ACCOUNT) == {"VEU": 50}
    assert compute_positions(HISTORY) == {"AGG": 10, "VEU": 125}
    gone = events(
        fill("e1", "X", "BUY", 3, "1", "2025-11-03"), split("X", "2025-11-10", "0.25", 3, 0)
    )
    assert compute_positions(gone) == {}  # a reverse split that cashed the position out


def test_compute_account_cash_when_every_kind_present_sums_them_signed():
    assert compute_account_cash(ACCOUNT) == BETWEEN_TRADES
    assert compute_cash(ACCOUNT) == CASH


def test_folds_when_events_folded_twice_count_each_account_event_once():
    doubled = ACCOUNT + [e for e in ACCOUNT if e.kind != EventKind.CASH_ADJUSTED]
    renumbered = ACCOUNT + [Ev(e.seq + 100, e.kind, e.payload) for e in ACCOUNT[1:]]
    for twice in (doubled, renumbered):  # the same ids, under the same or other seqs
        assert compute_account_cash(twice) == BETWEEN_TRADES
        assert compute_cash(twice) == CASH
        assert compute_positions(twice) == {"VEU": 50}
        assert compute_receivables(twice) == {("VEU", "2025-11-19"): D("25.50")}
        assert len(compute_splits(twice)) == 1


def test_compute_account_events_when_no_id_keys_by_seq_and_first_wins():
    fee = {"on": "2025-12-01", "amount": "-10.00", "description": "monthly fee"}
    rows = [Ev(1, str(EventKind.FEE_CHARGED), fee), Ev(2, str(EventKind.FEE_CHARGED), fee)]
    assert compute_account_cash(rows) == D("-20.00")  # two fees, no id: both count
    first = {"id": "k", "on": "2025-12-01", "amount": "-10.00"}
    later = {"id": "k", "on": "2025-12-01", "amount": "-99.00"}
    rows = [Ev(1, str(EventKind.FEE_CHARGED), first), Ev(2, str(EventKind.FEE_CHARGED), later)]
    assert compute_account_events(rows) == {(str(EventKind.FEE_CHARGED), "k"): first}
    assert compute_account_cash(rows) == D("-10.00")


RECEIVABLES = [
    # events, dividends owed (symbol, ex_date) -> gross + withholding
    (events(), {}),
    (events(entitled("VEU", "2025-11-10", "586.79")), {("VEU", "2025-11-10"): D("586.79")}),
    (events(entitled("VEU", "2025-11-10", "586.79", "-88.02")),
     {("VEU", "2025-11-10"): D("498.77")}),
    (events(entitled("VEU", "2025-11-10", "586.79", "-88.02"),
            cash_line(EventKind.DIVIDEND_PAID, "d", "586.79", symbol="VEU",
                      ex_date="2025-11-10")), {}),
    (events(entitled("VEU", "2025-11-10", "586.79"),  # another ex-date's payment
            cash_line(EventKind.DIVIDEND_PAID, "d", "1.00", symbol="VEU",
                      ex_date="2025-08-11")), {("VEU", "2025-11-10"): D("586.79")}),
    (events(entitled("VEU", "2025-11-10", "1.00"), entitled("AGG", "2025-11-03", "2.00")),
     {("AGG", "2025-11-03"): D("2.00"), ("VEU", "2025-11-10"): D("1.00")}),
]  # fmt: skip


@pytest.mark.parametrize(("rows", "owed"), RECEIVABLES)
def test_compute_receivables_when_entitled_and_unpaid_owes_the_net_amount(rows, owed):
    assert compute_receivables(rows) == owed


def test_compute_ledger_equity_when_a_dividend_is_owed_counts_it_unless_asked_not_to():
    closes = {"VEU": D("100.00")}
    # CASH + 50 x 100.00 + the 2025-11-19 dividend owed, 30.00 - 4.50
    assert compute_ledger_equity(ACCOUNT, closes) == CASH + D("5000.00") + D("25.50")
    assert compute_ledger_equity(ACCOUNT, closes, receivables=False) == CASH + D("5000.00")
    with pytest.raises(KeyError, match="VEU"):
        compute_ledger_equity(ACCOUNT, {"AGG": D("1")})
