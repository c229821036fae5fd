"""The SYNTHETIC sample market: deterministic, on real sessions, and clean enough for data QA."""

from __future__ import annotations

from datetime import date

import numpy as np
import pandas as pd
import pytest

from ops_runner.market.bars import BAR_COLUMNS, require_bars_shape
from ops_runner.market.calendar import MarketCalendar
from ops_runner.market.sources.sample import (
    DEFAULT_SAMPLE_SYMBOLS,
    SAMPLE_SOURCE,
    generate_sample_market,
    write_sample,
)

EQUITY = ["SPY", "VEU", "EFA", "QQQ", "IWM", "EEM", "VNQ"]
BONDS = ["AGG", "IEF", "TLT"]


@pytest.fixture(scope="module")
def market() -> dict[str, pd.DataFrame]:
    return generate_sample_market()


def total_return(bars: pd.DataFrame) -> pd.Series:
    """Daily total return from raw prices, written out independently of ops_runner.market.prices."""
    close = bars["close"]
    return ((close + bars["dividend"]) * bars["split"] / close.shift(1) - 1.0).iloc[1:]


def test_sample_when_generated_twice_is_identical(market):
    again = generate_sample_market()
    assert list(again) == list(market)
    for symbol, bars in market.items():
        pd.testing.assert_frame_equal(again[symbol], bars)


def test_sample_when_seed_differs_differs():
    one = generate_sample_market(["SPY"], date(2020, 1, 2), date(2020, 12, 31), seed=1)
    two = generate_sample_market(["SPY"], date(2020, 1, 2), date(2020, 12, 31), seed=2)
    assert not one["SPY"]["close"].equals(two["SPY"]["close"])


def test_sample_when_symbol_generated_alone_matches_the_full_market(market):
    alone = generate_sample_market(["QQQ"])
    pd.testing.assert_frame_equal(alone["QQQ"], market["QQQ"])


def test_sample_when_default_covers_the_rotation_universe(market):
    needed = {"SPY", "VEU", "EFA", "QQQ", "IWM", "EEM", "AGG", "IEF", "TLT", "BIL", "GLD", "VNQ"}
    assert needed <= set(DEFAULT_SAMPLE_SYMBOLS) and needed <= set(market)


def test_sample_when_generated_uses_exactly_the_calendar_sessions(market):
    sessions = MarketCalendar().sessions(date(2010, 1, 4), date(2025, 12, 31))
    for bars in market.values():
        assert list(bars.index) == list(sessions)
    # 2024-07-04 and 2025-01-09 (national day of mourning) are not sessions.
    assert pd.Timestamp("2024-07-04") not in market["SPY"].index
    assert pd.Timestamp("2025-01-09") not in market["SPY"].index


def test_sample_when_calendar_has_extra_closed_day_skips_it():
    calendar = MarketCalendar(extra_closed=[date(2020, 3, 16)])
    bars = generate_sample_market(["SPY"], date(2020, 3, 2), date(2020, 3, 31), calendar=calendar)
    assert pd.Timestamp("2020-03-16") not in bars["SPY"].index
    assert len(bars["SPY"]) == 21


def test_sample_when_generated_is_canonical_and_complete(market):
    for symbol, bars in market.items():
        require_bars_shape(bars, symbol)
        assert list(bars.columns) == BAR_COLUMNS
        assert not bars.isna().any().any()


def test_sample_when_generated_ohlc_is_consistent(market):
    for symbol, bars in market.items():
        assert (bars["low"] <= bars[["open", "close"]].min(axis=1)).all(), symbol
        assert (bars["high"] >= bars[["open", "close"]].max(axis=1)).all(), symbol
        assert (bars["low"] > 0).all(), symbol
        assert (bars["high"] > bars["low"]).mean() > 0.95, symbol


def test_sample_when_generated_volume_is_positive_every_session(market):
    for symbol, bars in market.items():
        assert (bars["volume"] > 0).all(), symbol


def test_sample_when_generated_has_overnight_gaps(market):
    for symbol, bars in market.items():
        gapped = (bars["open"] != bars["close"].shift(1)).iloc[1:]
        assert gapped.mean() > 0.9, symbol


def test_sample_when_generated_qqq_splits_two_for_one(market):
    split_days = {s: bars.index[bars["split"] != 1.0] for s, bars in market.items()}
    assert sum(len(days) for days in split_days.values()) >= 1
    qqq = market["QQQ"]
    (day,) = split_days["QQQ"]
    assert qqq.at[day, "split"] == 2.0
    raw_move = qqq["close"] / qqq["close"].shift(1)
    assert 0.4 < raw_move[day] < 0.6  # the raw price halves on the split day


def test_sample_when_generated_pays_quarterly_equity_and_monthly_bond_dividends(market):
    years = 16
    for symbol in EQUITY:
        paid = market[symbol].loc[market[symbol]["dividend"] > 0]
        assert len(paid) == 4 * years, symbol
        assert set(paid.index.month) == {3, 6, 9, 12}, symbol
    for symbol in [*BONDS, "BIL"]:
        assert (market[symbol]["dividend"] > 0).sum() == 12 * years - 1, symbol  # not on day 1
    assert (market["GLD"]["dividend"] == 0).all()


def test_sample_when_returns_checked_has_no_lone_jump_beyond_15_percent(market):
    returns = pd.DataFrame({s: total_return(bars) for s, bars in market.items()})
    big = returns.abs() > 0.15
    for day in returns.index[big.any(axis=1)]:
        moved = (returns.loc[day, EQUITY].abs() > 0.05).mean()
        assert moved >= 0.5, f"lone jump on {day.date()}: {returns.loc[day][big.loc[day]]}"


def test_sample_when_stress_episodes_occur_they_are_market_wide(market):
    returns = pd.DataFrame({s: total_return(market[s]) for s in EQUITY})
    crash_days = returns.index[(returns < -0.04).sum(axis=1) >= len(EQUITY) - 1]
    assert len(crash_days) >= 2


def test_sample_when_asset_classes_compared_vols_are_ordered(market):
    vol = {s: total_return(bars).std() * np.sqrt(252) for s, bars in market.items()}
    assert vol["BIL"] < 0.01
    assert vol["BIL"] < vol["AGG"] < vol["TLT"] < vol["SPY"] < vol["EEM"]
    assert 0.10 < vol["SPY"] < 0.25


def test_sample_when_bil_checked_returns_small_and_steady(market):
    growth = (1.0 + total_return(market["BIL"])).prod() ** (1 / 16) - 1
    assert 0.002 < growth < 0.03
    assert (total_return(market["BIL"]).abs() < 0.002).all()


@pytest.mark.slow  # 1.5 s or more: left out of make test-fast
def test_sample_when_500_symbols_over_30_years_has_every_session_of_each():
    # its speed is benchmarks/qa.py's figure (a timed assertion would fail on a busy machine)
    market = generate_sample_market(
        symbols=[f"S{i:03d}" for i in range(500)], start=date(1995, 1, 3), end=date(2024, 12, 31)
    )
    assert len(market) == 500 and len(market["S499"]) == 7552
    require_bars_shape(market["S000"])
    returns = pd.DataFrame({s: total_return(b) for s, b in list(market.items())[:50]})
    assert returns.abs().max().max() < 0.15


def test_write_sample_when_written_is_marked_synthetic(store):
    report = write_sample(store, symbols=["SPY", "AGG"], start=date(2024, 1, 2),
                          end=date(2024, 3, 28))  # fmt: skip
    assert report.imported == ["AGG", "SPY"]
    manifest = store.read_manifest(SAMPLE_SOURCE, "SPY")
    assert manifest["synthetic"] is True and manifest["layout"] == "sample"
    assert manifest["notes"] == "SYNTHETIC sample market, not real prices"
    assert len(manifest["source_sha256"]) == 64
    loaded = store.load_bars(SAMPLE_SOURCE, "SPY")
    expected = generate_sample_market(["SPY", "AGG"], date(2024, 1, 2), date(2024, 3, 28))
    pd.testing.assert_frame_equal(loaded, expected["SPY"])


def test_write_sample_when_run_again_is_a_no_op(store, snapshot):
    arguments = {"symbols": ["SPY"], "start": date(2024, 1, 2), "end": date(2024, 3, 28)}
    write_sample(store, **arguments)
    before = snapshot(store.root)
    report = write_sample(store, **arguments)
    assert report.unchanged == ["SPY"] and report.imported == []
    assert snapshot(store.root) == before


def test_write_sample_when_seed_changes_replaces_and_keeps_history(store):
    arguments = {"symbols": ["SPY"], "start": date(2024, 1, 2), "end": date(2024, 3, 28)}
    write_sample(store, **arguments)
    report = write_sample(store, seed=7, **arguments)
    assert report.replaced == ["SPY"]
    assert len(store.read_manifest(SAMPLE_SOURCE, "SPY")["history"]) == 1
