"""The TWS simulator's market on a workbook: which open a MOO order is for, prints, bars."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest

from ops_runner.market.prices import open_store
from ops_runner.simulators.market import WorkbookMarket
from ops_runner.workbook.config import load_config

NY = ZoneInfo("America/New_York")


def ny(day: str, hour: int, minute: int = 0) -> datetime:
    return datetime.fromisoformat(day).replace(hour=hour, minute=minute, tzinfo=NY)


@pytest.fixture(scope="module")
def market(sample_workbook):
    return WorkbookMarket(load_config(sample_workbook))


@pytest.fixture(scope="module")
def spy(sample_workbook):
    cfg = load_config(sample_workbook)
    return open_store(cfg).load_bars("sample", "SPY")


# Known answers from the NYSE calendar: Thanksgiving 2025-11-27 closed, 2025-11-28 closes at
# 13:00, Monday 2025-12-01 a full session.
@pytest.mark.parametrize(
    ("moment", "session"),
    [
        (ny("2025-11-26", 16, 30), date(2025, 11, 28)),  # after the close, across Thanksgiving
        (ny("2025-11-27", 12, 0), date(2025, 11, 28)),  # a holiday: the next session
        (ny("2025-11-28", 9, 27), date(2025, 11, 28)),  # before 09:28 entry cutoff
        (ny("2025-11-28", 9, 28), None),  # entry closed for today's open
        (ny("2025-11-28", 12, 59), None),  # the session is trading
        (ny("2025-11-28", 13, 0), date(2025, 12, 1)),  # the early close has passed
        (ny("2025-11-29", 10, 0), date(2025, 12, 1)),  # a Saturday
        (ny("2025-12-01", 8, 0), date(2025, 12, 1)),
    ],
)
def test_session_for_a_moo_order_follows_the_entry_cutoff_and_the_calendar(market, moment, session):
    assert market.session_for(moment.astimezone(UTC)) == session


def test_open_instant_is_0930_new_york_in_utc(market):
    assert market.open_instant(date(2025, 12, 1)) == datetime(2025, 12, 1, 14, 30, tzinfo=UTC)
    assert market.open_instant(date(2025, 7, 1)) == datetime(2025, 7, 1, 13, 30, tzinfo=UTC)


def test_opening_price_is_the_stored_open_to_the_cent_and_none_past_the_store(market, spy):
    stored = Decimal(str(float(spy.at["2025-12-01", "open"])))
    price = market.opening_price("SPY", date(2025, 12, 1))
    assert abs(price - stored) <= Decimal("0.005") and price == price.quantize(Decimal("0.01"))
    assert market.opening_price("SPY", date(2026, 1, 2)) is None  # the sample ends 2025-12-31
    assert market.opening_price("NOPE", date(2025, 12, 1)) is None


@pytest.mark.parametrize(("quantity", "fee"), [(1, "1.00"), (199, "1.00"), (201, "1.01"),
                                               (1000, "5.00")])  # fmt: skip
def test_commission_is_per_share_with_a_one_dollar_minimum(market, quantity, fee):
    assert market.commission("SPY", quantity, Decimal("500")) == Decimal(fee)


def test_mark_is_the_last_close_before_the_moment(market, spy):
    before_close = ny("2025-12-01", 15, 0).astimezone(UTC)
    after_close = ny("2025-12-01", 16, 0).astimezone(UTC)
    assert market.mark("SPY", before_close) == Decimal(str(float(spy.at["2025-11-28", "close"])))
    assert market.mark("SPY", after_close) == Decimal(str(float(spy.at["2025-12-01", "close"])))


def test_adjusted_bars_give_back_the_stored_dividends_from_their_ratio(market, sample_workbook):
    """The dividend a user's import derives from IB's two series, D_t = close_{t-1} x
    (1 - f_{t-1} / f_t) with f = adjusted / raw, is the dividend the store holds."""
    bars = open_store(load_config(sample_workbook)).load_bars("sample", "AGG")
    raw = market.daily_bars("AGG", adjusted=False)
    adjusted = market.daily_bars("AGG", adjusted=True)
    assert [b[0] for b in raw] == [b[0] for b in adjusted] == [d.date() for d in bars.index]
    assert raw[-1][1:5] == adjusted[-1][1:5]  # the last day is not adjusted
    paid = bars[bars["dividend"] > 0]
    assert len(paid) >= 10  # the sample's bond fund pays monthly
    position = {b[0]: i for i, b in enumerate(raw)}
    for day, row in paid.iterrows():
        i = position[day.date()]
        f_before = adjusted[i - 1][4] / raw[i - 1][4]
        f_on = adjusted[i][4] / raw[i][4]
        derived = raw[i - 1][4] * (1 - f_before / f_on)
        assert derived == pytest.approx(row["dividend"], rel=1e-9, abs=1e-9)


def test_quote_when_asked_is_one_bps_either_side_of_the_last_print(market, spy):
    cent = Decimal("0.01")

    def around(price: float) -> tuple[Decimal, Decimal]:
        exact = Decimal(str(price))
        return ((exact * Decimal("0.9999")).quantize(cent, "ROUND_HALF_UP"),
                (exact * Decimal("1.0001")).quantize(cent, "ROUND_HALF_UP"))  # fmt: skip

    before, after = ny("2025-12-01", 8, 30), ny("2025-12-01", 10, 15)
    assert market.quote("SPY", before) == around(float(spy.loc["2025-11-28", "close"]))
    assert market.quote("SPY", after) == around(float(spy.loc["2025-12-01", "open"]))
    assert market.quote("ZZZZ", after) is None
