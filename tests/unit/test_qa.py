"""Data QA: one planted fault per small hand-built world, and the finding it must produce."""

from __future__ import annotations

from datetime import date

import numpy as np
import pandas as pd
import pytest

from ops_runner.core.errors import ConfigError, DataError
from ops_runner.market.calendar import MarketCalendar, open_calendar
from ops_runner.market.importer import import_files
from ops_runner.market.prices import PriceStore, open_store
from ops_runner.market.qa import (
    Check,
    Finding,
    QAReport,
    QASettings,
    Severity,
    check_completeness,
    check_corporate_actions,
    check_cross_provider,
    check_freshness,
    check_jumps,
    check_sanity,
    check_store,
    check_universe,
    findings_frame,
    has_blocking,
    read_qa_settings,
    run_qa,
)
from ops_runner.workbook.config import compute_template_text, load_config_text

# Real NYSE sessions, January 2 to February 7 2020 (Martin Luther King Day, Jan 20, is closed).
SESSIONS = pd.DatetimeIndex(
    [
        "2020-01-02", "2020-01-03", "2020-01-06", "2020-01-07", "2020-01-08", "2020-01-09",
        "2020-01-10", "2020-01-13", "2020-01-14", "2020-01-15", "2020-01-16", "2020-01-17",
        "2020-01-21", "2020-01-22", "2020-01-23", "2020-01-24", "2020-01-27", "2020-01-28",
        "2020-01-29", "2020-01-30", "2020-01-31", "2020-02-03", "2020-02-04", "2020-02-05",
        "2020-02-06", "2020-02-07",
    ],
    name="date",
)  # fmt: skip

AS_OF = date(2020, 2, 7)
SYMBOLS = ("AAA", "BBB", "CCC")
BLOCK, WARN, INFO = Severity.BLOCKING, Severity.WARNING, Severity.INFO


def bars(base: float, dates: pd.DatetimeIndex = SESSIONS) -> pd.DataFrame:
    """A clean canonical frame: a gentle zigzag around ``base``, tight OHLC, steady volume."""
    close = base * (1 + 0.004 * np.sin(np.arange(len(dates))))
    return pd.DataFrame(
        {
            "open": close * 0.999,
            "high": close * 1.005,
            "low": close * 0.995,
            "close": close,
            "volume": np.full(len(dates), 1e6),
            "dividend": np.zeros(len(dates)),
            "split": np.ones(len(dates)),
        },
        index=pd.DatetimeIndex(dates, name="date"),
    )


def universe() -> dict[str, pd.DataFrame]:
    return {symbol: bars(50.0 + 25 * i) for i, symbol in enumerate(SYMBOLS)}


def at(day: str) -> pd.Timestamp:
    return pd.Timestamp(day)


def keys(findings: list[Finding]) -> list[tuple[str, date | None, Check, Severity]]:
    return [(f.symbol, f.date, f.check, f.severity) for f in findings]


def scale_from(frame: pd.DataFrame, day: str, factor: float) -> pd.DataFrame:
    """Multiply every price from ``day`` on by ``factor`` (a level shift, not a one-day spike)."""
    out = frame.copy()
    later = out.index >= at(day)
    out.loc[later, ["open", "high", "low", "close"]] *= factor
    return out


# -- clean worlds -----------------------------------------------------------------------------


def test_check_universe_when_bars_are_clean_finds_nothing():
    assert check_universe(universe(), SESSIONS, AS_OF, secondary=universe()) == []


def test_check_universe_when_sample_market_is_used_finds_nothing_blocking():
    from ops_runner.market.sources.sample import generate_sample_market

    market = generate_sample_market(start=date(2018, 1, 2), end=date(2020, 12, 31))
    sessions = next(iter(market.values())).index
    findings = check_universe(market, sessions, date(2020, 12, 31), secondary=market)
    assert not has_blocking(findings), findings


# -- freshness --------------------------------------------------------------------------------


def test_freshness_when_as_of_bar_is_missing_blocks():
    world = universe()
    world["BBB"] = world["BBB"].drop(at("2020-02-07"))
    findings = check_freshness(world, SESSIONS, AS_OF)
    assert keys(findings) == [("BBB", date(2020, 2, 7), Check.FRESHNESS, BLOCK)]
    assert "last bar 2020-02-06, 1 session behind" in findings[0].detail


def test_freshness_when_as_of_is_a_saturday_uses_the_friday_session():
    world = universe()
    world["CCC"] = world["CCC"].drop(at("2020-02-07"))
    findings = check_freshness(world, SESSIONS, date(2020, 2, 8))
    assert keys(findings) == [("CCC", date(2020, 2, 7), Check.FRESHNESS, BLOCK)]


def test_freshness_when_symbol_has_no_bars_blocks():
    world = universe()
    world["AAA"] = world["AAA"].iloc[:0]
    assert keys(check_freshness(world, SESSIONS, AS_OF)) == [
        ("AAA", date(2020, 2, 7), Check.FRESHNESS, BLOCK)
    ]


# -- completeness -----------------------------------------------------------------------------


def test_completeness_when_a_session_is_missing_finds_it():
    world = universe()
    world["AAA"] = world["AAA"].drop(at("2020-01-15"))
    findings = check_completeness(world, SESSIONS, AS_OF)
    assert keys(findings) == [("AAA", date(2020, 1, 15), Check.COMPLETENESS, BLOCK)]
    assert findings[0].detail == "session 2020-01-15 missing"


def test_completeness_when_a_bar_is_on_a_saturday_finds_it():
    world = universe()
    saturday = (
        world["BBB"].loc[[at("2020-01-10")]].set_axis(pd.DatetimeIndex(["2020-01-11"], name="date"))
    )
    world["BBB"] = pd.concat([world["BBB"], saturday]).sort_index()
    findings = check_completeness(world, SESSIONS, AS_OF)
    assert keys(findings) == [("BBB", date(2020, 1, 11), Check.COMPLETENESS, BLOCK)]
    assert "Sat 2020-01-11" in findings[0].detail


def test_completeness_when_mlk_day_has_a_bar_finds_it():
    world = universe()
    holiday = (
        world["AAA"].loc[[at("2020-01-17")]].set_axis(pd.DatetimeIndex(["2020-01-20"], name="date"))
    )
    world["AAA"] = pd.concat([world["AAA"], holiday]).sort_index()
    assert keys(check_completeness(world, SESSIONS, AS_OF)) == [
        ("AAA", date(2020, 1, 20), Check.COMPLETENESS, BLOCK)
    ]


def test_completeness_when_a_date_is_duplicated_finds_it():
    world = universe()
    world["CCC"] = pd.concat([world["CCC"], world["CCC"].loc[[at("2020-01-22")]]]).sort_index()
    findings = check_completeness(world, SESSIONS, AS_OF)
    assert keys(findings) == [("CCC", date(2020, 1, 22), Check.COMPLETENESS, BLOCK)]
    assert "duplicate" in findings[0].detail


def test_completeness_when_dates_are_unsorted_finds_it_and_checks_the_rest_sorted():
    world = universe()
    frame = world["AAA"]
    world["AAA"] = pd.concat([frame.iloc[:5], frame.iloc[6:9], frame.iloc[5:6], frame.iloc[9:]])
    findings = check_universe(world, SESSIONS, AS_OF)
    assert keys(findings) == [("AAA", date(2020, 1, 9), Check.COMPLETENESS, BLOCK)]
    assert "not sorted" in findings[0].detail


# -- sanity -----------------------------------------------------------------------------------


def test_sanity_when_a_close_is_nan_finds_it():
    world = universe()
    world["AAA"].loc[at("2020-01-23"), "close"] = np.nan
    findings = check_sanity(world, SESSIONS, AS_OF)
    assert keys(findings) == [("AAA", date(2020, 1, 23), Check.SANITY, BLOCK)]
    assert findings[0].detail == "missing value in close"


def test_sanity_when_a_price_is_zero_finds_it():
    world = universe()
    world["BBB"].loc[at("2020-01-06"), "low"] = 0.0
    findings = check_sanity(world, SESSIONS, AS_OF)
    assert keys(findings) == [("BBB", date(2020, 1, 6), Check.SANITY, BLOCK)]
    assert "zero or negative price" in findings[0].detail


def test_sanity_when_low_is_above_open_finds_it():
    world = universe()
    frame = world["CCC"]
    frame.loc[at("2020-01-28"), "low"] = frame.loc[at("2020-01-28"), "open"] * 1.001
    findings = check_sanity(world, SESSIONS, AS_OF)
    assert keys(findings) == [("CCC", date(2020, 1, 28), Check.SANITY, BLOCK)]
    assert "OHLC inconsistent" in findings[0].detail


def test_sanity_when_volume_is_zero_finds_it():
    world = universe()
    world["AAA"].loc[at("2020-02-04"), "volume"] = 0.0
    assert keys(check_sanity(world, SESSIONS, AS_OF)) == [
        ("AAA", date(2020, 2, 4), Check.SANITY, BLOCK)
    ]


def test_sanity_when_one_fault_repeats_lists_the_latest_and_summarises_the_rest():
    world = universe()
    world["AAA"]["volume"] = 0.0
    findings = check_sanity(world, SESSIONS, AS_OF, QASettings(max_findings_per_kind=3))
    assert [f.date for f in findings] == [
        date(2020, 2, 4), date(2020, 2, 5), date(2020, 2, 6), date(2020, 2, 7)
    ]  # fmt: skip
    assert findings[0].detail == "23 more volume findings from 2020-01-02 to 2020-02-04 not listed"


def no_trade(frame: pd.DataFrame, day: str) -> None:
    """Make ``day`` a session without a trade: a flat bar at the previous close, volume 0."""
    previous = frame["close"].iloc[frame.index.get_loc(at(day)) - 1]
    frame.loc[at(day), ["open", "high", "low", "close", "volume"]] = [previous] * 4 + [0]


def test_sanity_when_a_session_had_no_trade_warns_unless_it_is_the_as_of_session():
    world = universe()
    no_trade(world["BBB"], "2020-01-10")
    no_trade(world["CCC"], "2020-02-07")
    findings = check_sanity(world, SESSIONS, AS_OF)
    assert keys(findings) == [
        ("CCC", date(2020, 2, 7), Check.SANITY, BLOCK),  # the decision would use this close
        ("BBB", date(2020, 1, 10), Check.SANITY, WARN),
    ]
    assert all("no trade that session" in f.detail for f in findings)


# -- jumps ------------------------------------------------------------------------------------


def test_jumps_when_one_symbol_jumps_40_percent_flags_it():
    world = universe()
    world["BBB"] = scale_from(world["BBB"], "2020-01-24", 1.4)
    findings = check_jumps(world, SESSIONS, AS_OF)
    assert keys(findings) == [("BBB", date(2020, 1, 24), Check.JUMP, BLOCK)]
    assert "0 of 2 other symbols" in findings[0].detail


def test_jumps_when_every_symbol_jumps_40_percent_the_same_day_flags_nothing():
    world = {s: scale_from(f, "2020-01-24", 1.4) for s, f in universe().items()}
    assert check_jumps(world, SESSIONS, AS_OF) == []


def test_jumps_when_a_2_for_1_split_is_recorded_flags_nothing():
    world = universe()
    world["AAA"] = scale_from(world["AAA"], "2020-01-14", 0.5)
    world["AAA"].loc[at("2020-01-14"), "split"] = 2.0
    assert check_universe(world, SESSIONS, AS_OF) == []


def test_jumps_when_the_close_halves_without_a_recorded_split_flags_it():
    world = universe()
    world["AAA"] = scale_from(world["AAA"], "2020-01-14", 0.5)
    findings = check_jumps(world, SESSIONS, AS_OF)
    assert keys(findings) == [("AAA", date(2020, 1, 14), Check.JUMP, BLOCK)]
    assert "unrecorded split of ratio 2" in findings[0].detail


def test_jumps_when_the_secondary_shows_the_same_move_is_info():
    world = universe()
    world["BBB"] = scale_from(world["BBB"], "2020-01-24", 1.4)
    findings = check_jumps(world, SESSIONS, AS_OF, secondary=world)
    assert keys(findings) == [("BBB", date(2020, 1, 24), Check.JUMP, INFO)]


def crash(world: dict, moves: dict[str, float], day: str = "2020-01-24") -> dict:
    """``world`` with each named symbol's prices scaled from ``day`` on by 1 + its move."""
    return {s: scale_from(f, day, 1 + moves[s]) if s in moves else f for s, f in world.items()}


def etfs(*symbols: str) -> dict[str, pd.DataFrame]:
    return {symbol: bars(50.0 + 10 * i) for i, symbol in enumerate(symbols)}


# 2020-03-16 in the Alpha Vantage files: VNQ -17.7%, IWM -13.3%, EEM -12.5%, SPY -10.9%,
# EFA -10.3% while AGG +1.7%, IEF +2.6%, TLT +6.5%, SHY +0.2%.
MARCH_16 = {"VNQ": -0.177, "IWM": -0.133, "EEM": -0.125, "SPY": -0.109, "EFA": -0.103,
            "AGG": 0.017, "IEF": 0.026, "TLT": 0.065, "SHY": 0.002}  # fmt: skip


def test_jumps_when_equities_crash_and_bonds_do_not_flags_nothing():
    world = crash(etfs(*MARCH_16), MARCH_16)
    assert check_jumps(world, SESSIONS, AS_OF) == []  # the old rule: 4 of 8 moved, not half


def test_jumps_when_a_bond_etf_jumps_with_an_equity_rally_flags_it():
    moves = {"SPY": 0.12, "EFA": 0.13, "TLT": 0.2}  # bonds' peers are bonds, which stayed put
    world = crash(etfs("SPY", "EFA", "TLT", "IEF", "AGG"), moves)
    findings = check_jumps(world, SESSIONS, AS_OF)
    assert keys(findings) == [("TLT", date(2020, 1, 24), Check.JUMP, BLOCK)]
    assert "0 of 2 other symbols of its class, bond," in findings[0].detail


def test_jumps_when_the_only_equity_crashes_with_its_reference_flags_nothing():
    world = crash(etfs("VNQ", "AGG"), {"VNQ": -0.177})
    reference = crash(etfs("SPY"), {"SPY": -0.109})
    assert check_jumps(world, SESSIONS, AS_OF, peers=reference) == []
    alone = check_jumps(world, SESSIONS, AS_OF)  # no peer at all: it cannot be market-wide
    assert keys(alone) == [("VNQ", date(2020, 1, 24), Check.JUMP, BLOCK)]
    assert "0 of 0 other symbols" in alone[0].detail


def test_jumps_when_peers_move_too_little_flags_it():
    world = crash(etfs("SPY", "EFA", "QQQ"), {"QQQ": -0.5, "SPY": -0.05, "EFA": -0.06})
    findings = check_jumps(world, SESSIONS, AS_OF)  # peers needed 10%: an unrecorded 2:1 split
    assert keys(findings) == [("QQQ", date(2020, 1, 24), Check.JUMP, BLOCK)]
    assert "unrecorded split of ratio 2" in findings[0].detail


def test_jumps_when_asset_classes_are_configured_uses_them():
    world = crash(etfs("AAA", "BBB", "CCC"), {"AAA": -0.2, "BBB": -0.12})
    settings = QASettings(asset_classes={"AAA": "equity", "BBB": "equity", "CCC": "bond"})
    assert check_jumps(world, SESSIONS, AS_OF, settings) == []
    lonely = QASettings(asset_classes={"AAA": "equity", "BBB": "bond", "CCC": "bond"})
    assert [f.symbol for f in check_jumps(world, SESSIONS, AS_OF, lonely)] == ["AAA"]


# -- corporate actions ------------------------------------------------------------------------


def test_corporate_actions_when_split_ratio_is_not_a_simple_fraction_finds_it():
    world = universe()
    world["CCC"].loc[at("2020-01-09"), "split"] = 1.07
    findings = check_corporate_actions(world, SESSIONS, AS_OF)
    assert keys(findings) == [("CCC", date(2020, 1, 9), Check.CORPORATE_ACTION, BLOCK)]


def test_corporate_actions_when_dividend_is_a_quarter_of_the_close_finds_it():
    world = universe()
    world["AAA"].loc[at("2020-01-09"), "dividend"] = 12.5  # the close is about 50
    assert keys(check_corporate_actions(world, SESSIONS, AS_OF)) == [
        ("AAA", date(2020, 1, 9), Check.CORPORATE_ACTION, BLOCK)
    ]


def test_corporate_actions_when_vendor_adjusted_close_misses_a_dividend_finds_it():
    world = universe()
    frame = world["AAA"]
    frame.loc[at("2020-01-16"), "dividend"] = 0.5
    explained = frame["close"].copy()
    explained[explained.index < at("2020-01-16")] *= 1 - 0.5 / frame.loc[at("2020-01-15"), "close"]
    assert check_corporate_actions(world, SESSIONS, AS_OF, vendor_adjusted={"AAA": explained}) == []
    unexplained = frame["close"].copy()  # as if the vendor never applied the dividend
    findings = check_corporate_actions(world, SESSIONS, AS_OF, vendor_adjusted={"AAA": unexplained})
    assert keys(findings) == [("AAA", date(2020, 1, 16), Check.CORPORATE_ACTION, BLOCK)]


# -- cross-provider ---------------------------------------------------------------------------


def test_cross_provider_when_a_close_disagrees_reports_both_values():
    world, secondary = universe(), universe()
    secondary["BBB"].loc[at("2020-01-29"), "close"] = 80.0
    primary_close = world["BBB"].loc[at("2020-01-29"), "close"]
    findings = check_cross_provider(world, secondary, SESSIONS, AS_OF)
    assert keys(findings) == [("BBB", date(2020, 1, 29), Check.CROSS_PROVIDER, BLOCK)]
    assert f"primary {primary_close:.4f} vs secondary 80.0000" in findings[0].detail


def test_cross_provider_when_secondary_is_split_adjusted_compares_equal():
    world = universe()
    world["AAA"] = scale_from(world["AAA"], "2020-01-14", 0.5)
    world["AAA"].loc[at("2020-01-14"), "split"] = 2.0
    secondary = universe()
    secondary["AAA"] = scale_from(secondary["AAA"], "2020-01-02", 0.5)  # Yahoo-style
    assert check_cross_provider(world, secondary, SESSIONS, AS_OF) == []


def test_cross_provider_when_secondary_misses_a_date_finds_it():
    world, secondary = universe(), universe()
    secondary["CCC"] = secondary["CCC"].drop(at("2020-02-03"))
    findings = check_cross_provider(world, secondary, SESSIONS, AS_OF)
    assert keys(findings) == [("CCC", date(2020, 2, 3), Check.CROSS_PROVIDER, BLOCK)]
    assert findings[0].detail == "bar in the primary, missing in the secondary"


def test_cross_provider_when_trailing_returns_disagree_reports_both_values():
    world, secondary = universe(), universe()
    secondary["AAA"].loc[at("2020-01-27"), "dividend"] = 2.0  # a 4% dividend only it has
    settings = QASettings(return_lookback_sessions=10)
    findings = check_cross_provider(world, secondary, SESSIONS, AS_OF, settings)
    assert keys(findings) == [
        ("AAA", date(2020, 1, 27), Check.CROSS_PROVIDER, BLOCK),  # the distribution itself
        ("AAA", date(2020, 1, 31), Check.CROSS_PROVIDER, BLOCK),
        ("AAA", date(2020, 2, 7), Check.CROSS_PROVIDER, BLOCK),
    ]
    assert "in the secondary only" in findings[0].detail
    assert "primary +" in findings[1].detail and "vs secondary +" in findings[1].detail


def test_cross_provider_when_secondary_lacks_a_symbol_notes_it():
    world, secondary = universe(), universe()
    del secondary["CCC"]
    assert keys(check_cross_provider(world, secondary, SESSIONS, AS_OF)) == [
        ("CCC", None, Check.CROSS_PROVIDER, INFO)
    ]


def test_cross_provider_when_the_secondary_folds_in_a_split_after_as_of_compares_equal():
    world, secondary = universe(), universe()
    secondary["AAA"] = scale_from(secondary["AAA"], "2020-01-02", 0.5)  # a split still to come
    secondary["BBB"] = scale_from(secondary["BBB"], "2020-01-02", 3.0)  # a reverse split
    assert check_cross_provider(world, secondary, SESSIONS, AS_OF) == []


def test_cross_provider_when_the_primary_misses_a_split_finds_one_step():
    world, secondary = universe(), universe()
    world["AAA"] = scale_from(world["AAA"], "2020-01-14", 0.5)  # no split recorded
    findings = check_cross_provider(world, secondary, SESSIONS, AS_OF)
    assert keys(findings) == [("AAA", date(2020, 1, 14), Check.CROSS_PROVIDER, BLOCK)]
    assert "-50.00% off their ratio on 2020-01-13" in findings[0].detail
    assert "unrecorded split" in findings[0].detail


def test_cross_provider_when_the_last_close_disagrees_finds_it():
    world, secondary = universe(), universe()
    secondary["CCC"].loc[at("2020-02-07"), "close"] *= 1.03
    findings = check_cross_provider(world, secondary, SESSIONS, AS_OF)
    assert keys(findings) == [("CCC", date(2020, 2, 7), Check.CROSS_PROVIDER, BLOCK)]


def test_cross_provider_when_a_distribution_is_doubled_finds_it_by_ex_date():
    world, secondary = universe(), universe()
    world["AAA"].loc[at("2020-01-16"), "dividend"] = 0.125  # 0.25% of a close near 50
    secondary["AAA"].loc[at("2020-01-16"), "dividend"] = 0.25  # doubled
    findings = check_cross_provider(world, secondary, SESSIONS, AS_OF)
    assert keys(findings) == [("AAA", date(2020, 1, 16), Check.CROSS_PROVIDER, BLOCK)]
    # The close before, 2020-01-15, is 50 * (1 + 0.004 * sin 9) = 50.0824.
    assert "primary 0.250% vs secondary 0.499% of the previous close" in findings[0].detail


def test_cross_provider_when_amounts_are_split_adjusted_compares_the_yield():
    world, secondary = universe(), universe()
    world["BBB"].loc[at("2020-01-16"), "dividend"] = 0.3
    secondary["BBB"] = scale_from(secondary["BBB"], "2020-01-02", 1 / 3)  # a later 3:1 split
    secondary["BBB"].loc[at("2020-01-16"), "dividend"] = 0.1
    assert check_cross_provider(world, secondary, SESSIONS, AS_OF) == []


def test_cross_provider_when_ex_dates_differ_by_a_session_finds_one_finding():
    world, secondary = universe(), universe()
    world["CCC"].loc[at("2020-01-16"), "dividend"] = 0.3
    secondary["CCC"].loc[at("2020-01-17"), "dividend"] = 0.3
    findings = check_cross_provider(world, secondary, SESSIONS, AS_OF)
    assert keys(findings) == [("CCC", date(2020, 1, 17), Check.CROSS_PROVIDER, BLOCK)]
    assert "ex-date 2020-01-16 in the primary, 2020-01-17 in the secondary" in findings[0].detail
    tolerant = QASettings(cross_dividend_sessions=1)
    assert check_cross_provider(world, secondary, SESSIONS, AS_OF, tolerant) == []


def test_cross_provider_when_an_immaterial_distribution_is_missing_finds_nothing():
    world, secondary = universe(), universe()
    world["AAA"].loc[at("2020-01-16"), "dividend"] = 0.005  # 0.01% of the close: below 0.02%
    assert check_cross_provider(world, secondary, SESSIONS, AS_OF) == []


def test_cross_provider_when_the_secondary_stops_updating_finds_it_once():
    world, secondary = universe(), universe()
    secondary["BBB"] = secondary["BBB"].loc[: at("2020-01-24")]
    findings = check_cross_provider(world, secondary, SESSIONS, AS_OF)
    assert keys(findings) == [("BBB", date(2020, 1, 27), Check.CROSS_PROVIDER, BLOCK)]
    assert findings[0].detail.startswith("secondary stale since 2020-01-24: ")
    assert "10 primary bars from 2020-01-27 to 2020-02-07" in findings[0].detail


def test_cross_provider_when_the_primary_stops_leaves_it_to_freshness():
    world, secondary = universe(), universe()
    world["BBB"] = world["BBB"].loc[: at("2020-01-24")]
    assert check_cross_provider(world, secondary, SESSIONS, AS_OF) == []
    assert [f.check for f in check_universe(world, SESSIONS, AS_OF, secondary=secondary)] == [
        Check.FRESHNESS
    ]


def test_cross_provider_when_one_fault_repeats_keeps_to_the_cap():
    world, secondary = universe(), universe()
    lost = [at(d) for d in ("2020-01-06", "2020-01-08", "2020-01-10", "2020-01-14", "2020-01-16")]
    secondary["AAA"] = secondary["AAA"].drop(lost)
    settings = QASettings(max_findings_per_kind=2)
    findings = check_cross_provider(world, secondary, SESSIONS, AS_OF, settings)
    assert [f.date for f in findings] == [date(2020, 1, 10), date(2020, 1, 14), date(2020, 1, 16)]
    assert findings[0].detail == (
        "3 more date-only-in-primary findings from 2020-01-06 to 2020-01-10 not listed"
    )


# -- the window rule, as_of and the public helpers --------------------------------------------


def test_severity_when_fault_is_older_than_the_window_is_warning():
    world = universe()
    world["AAA"] = world["AAA"].drop([at("2020-01-07"), at("2020-02-04")])
    findings = check_completeness(world, SESSIONS, AS_OF, QASettings(window_sessions=5))
    assert keys(findings) == [
        ("AAA", date(2020, 2, 4), Check.COMPLETENESS, BLOCK),  # the window: Feb 3 to Feb 7
        ("AAA", date(2020, 1, 7), Check.COMPLETENESS, WARN),
    ]
    assert not has_blocking(findings[1:]) and has_blocking(findings)


def test_check_universe_when_bars_after_as_of_change_finds_the_same():
    as_of = date(2020, 1, 31)
    world, secondary = universe(), universe()
    world["AAA"].loc[at("2020-01-15"), "volume"] = 0.0  # one fault before as_of
    before = check_universe(world, SESSIONS, as_of, secondary=secondary)
    world["AAA"].loc[at("2020-02-04"), "close"] = np.nan
    world["BBB"] = scale_from(world["BBB"], "2020-02-05", 3.0).drop(at("2020-02-03"))
    secondary["CCC"].loc[at("2020-02-06"), "close"] = 1.0
    assert check_universe(world, SESSIONS, as_of, secondary=secondary) == before
    assert keys(before) == [("AAA", date(2020, 1, 15), Check.SANITY, BLOCK)]


def test_check_universe_when_frame_lacks_a_column_raises_data_error():
    world = universe()
    world["AAA"] = world["AAA"].drop(columns="split")
    with pytest.raises(DataError, match="AAA"):
        check_universe(world, SESSIONS, AS_OF)


def test_findings_frame_when_mixed_severities_sorts_blocking_first():
    findings = [
        Finding("ZZZ", date(2020, 1, 2), Check.SANITY, WARN, "old"),
        Finding("AAA", None, Check.CROSS_PROVIDER, INFO, "note"),
        Finding("MMM", date(2020, 2, 7), Check.FRESHNESS, BLOCK, "stale"),
    ]
    frame = findings_frame(findings)
    assert list(frame.columns) == ["symbol", "date", "check", "severity", "detail", "finding_id"]
    assert list(frame["symbol"]) == ["MMM", "ZZZ", "AAA"]
    assert list(frame["severity"]) == ["blocking", "warning", "info"]


def test_finding_id_when_details_differ_differs_and_is_stable_otherwise():
    one = Finding("AAA", date(2020, 1, 2), Check.SANITY, BLOCK, "volume 0")
    same = Finding("AAA", date(2020, 1, 2), Check.SANITY, WARN, "volume 0")
    other = Finding("AAA", date(2020, 1, 2), Check.SANITY, BLOCK, "volume -1")
    assert one.finding_id == same.finding_id != other.finding_id
    assert len(one.finding_id) == 12 and int(one.finding_id, 16) >= 0


# -- check_store ------------------------------------------------------------------------------


class FakeStore:
    """The PriceStore calls check_store makes, over in-memory frames."""

    def __init__(self, sources: dict[str, dict[str, pd.DataFrame]], broken: list) -> None:
        self.sources, self.broken = sources, broken

    def load_bars(self, source: str, symbol: str) -> pd.DataFrame:
        if symbol not in self.sources.get(source, {}):
            raise DataError(f"no bars for {symbol} in {source}")
        return self.sources[source][symbol].copy()

    def check_provenance(self, source: str) -> list[tuple[str, str]]:
        return [(s, problem) for src, s, problem in self.broken if src == source]

    def load_vendor_adjusted(self, source: str, symbol: str) -> None:
        return None  # these in-memory sources have no vendor adjusted close


class FakeCalendar:
    covered_from = date(1990, 1, 2)

    def session_on_or_before(self, d: date) -> date:
        return max(s for s in SESSIONS if s.date() <= d).date()

    def sessions(self, start: date, end: date) -> pd.DatetimeIndex:
        return SESSIONS[(SESSIONS >= at(str(start))) & (SESSIONS <= at(str(end)))]


def test_check_store_when_a_symbol_is_missing_blocks_and_provenance_breaks_block():
    primary = universe()
    del primary["CCC"]
    store = FakeStore({"av": primary, "yahoo": universe()}, [("yahoo", "AAA", "sha mismatch")])
    findings = check_store(store, FakeCalendar(), SYMBOLS, date(2020, 1, 31), "av", "yahoo")
    assert keys(findings) == [
        ("AAA", None, Check.PROVENANCE, BLOCK),
        ("CCC", date(2020, 1, 31), Check.FRESHNESS, BLOCK),
    ]
    assert findings[0].detail == "yahoo: sha mismatch"


def test_check_store_when_stored_bars_run_past_as_of_ignores_them():
    primary = universe()
    primary["AAA"].loc[at("2020-02-05"), "close"] = -1.0
    store = FakeStore({"av": primary}, [])
    assert check_store(store, FakeCalendar(), SYMBOLS, date(2020, 2, 1), "av") == []


def test_check_store_when_a_stored_file_is_altered_blocks_on_provenance(tmp_path):
    from ops_runner.market.calendar import MarketCalendar
    from ops_runner.market.prices import PriceStore
    from ops_runner.market.sources.sample import write_sample

    store = PriceStore(tmp_path / "data")
    write_sample(store, symbols=["SPY", "AGG"], start=date(2019, 1, 2), end=date(2020, 12, 31))
    calendar = MarketCalendar()
    assert check_store(store, calendar, ["SPY", "AGG"], date(2020, 11, 30), "sample") == []
    path = store.bars_path("sample", "AGG")
    path.write_bytes(path.read_bytes() + b"tampered")
    findings = check_store(store, calendar, ["SPY", "AGG"], date(2020, 11, 30), "sample")
    assert keys(findings) == [
        ("AGG", None, Check.PROVENANCE, BLOCK),
        ("AGG", date(2020, 11, 30), Check.FRESHNESS, BLOCK),  # the store refuses to load it
    ]


def test_check_store_when_the_universe_has_no_equity_peer_reads_the_reference():
    primary = crash(etfs("VNQ", "AGG", "SPY"), {"VNQ": -0.177, "SPY": -0.109})
    store = FakeStore({"av": primary}, [])
    assert check_store(store, FakeCalendar(), ["VNQ", "AGG"], AS_OF, "av") == []
    del primary["SPY"]  # no reference stored: VNQ has no peer left to share its fall
    findings = check_store(store, FakeCalendar(), ["VNQ", "AGG"], AS_OF, "av")
    assert keys(findings) == [("VNQ", date(2020, 1, 24), Check.JUMP, BLOCK)]


AV_HEADER = "timestamp,open,high,low,close,adjusted_close,volume,dividend_amount,split_coefficient"


def write_alphavantage_file(path, frame: pd.DataFrame, adjusted: pd.Series) -> None:
    """Write ``frame`` in Alpha Vantage's daily-adjusted layout, newest first."""
    lines = [AV_HEADER] + [
        f"{day.date()},{r.open:.4f},{r.high:.4f},{r.low:.4f},{r.close:.4f},{adjusted[day]:.6f},"
        f"{r.volume:.0f},{r.dividend:.4f},{r.split:.1f}"
        for day, r in frame.iloc[::-1].iterrows()
    ]
    path.write_text("\n".join(lines) + "\n")


@pytest.mark.parametrize("applied", [True, False])
def test_check_store_when_the_vendor_adjusted_close_is_kept_checks_it(tmp_path, applied):
    frame = bars(50.0).round(4)
    frame.loc[at("2020-01-16"), "dividend"] = 0.5
    adjusted = frame["close"].copy()
    if applied:  # Alpha Vantage scales earlier closes by close / (close + dividend)
        ex_close = frame.loc[at("2020-01-16"), "close"]
        adjusted[adjusted.index < at("2020-01-16")] *= ex_close / (ex_close + 0.5)
    write_alphavantage_file(tmp_path / "AAA.csv", frame, adjusted)
    store = PriceStore(tmp_path / "data")
    import_files(store, tmp_path / "AAA.csv", "alphavantage", "av")
    assert store.load_vendor_adjusted("av", "AAA") is not None
    findings = check_store(store, MarketCalendar(), ["AAA"], AS_OF, "av")
    if applied:
        assert findings == []
    else:  # the vendor's adjusted close never applied the dividend it published
        assert keys(findings) == [("AAA", date(2020, 1, 16), Check.CORPORATE_ACTION, BLOCK)]
        assert "vendor adjusted close disagrees" in findings[0].detail


def test_check_store_when_the_kept_vendor_adjusted_close_is_altered_blocks(tmp_path):
    frame = bars(50.0).round(4)
    write_alphavantage_file(tmp_path / "AAA.csv", frame, frame["close"])
    store = PriceStore(tmp_path / "data")
    import_files(store, tmp_path / "AAA.csv", "alphavantage", "av")
    sha256 = store.read_manifest("av", "AAA")["vendor_adjusted_sha256"]
    kept = store.vendor_adjusted_path("av", "AAA", sha256)
    kept.write_bytes(kept.read_bytes() + b"tampered")
    findings = check_store(store, MarketCalendar(), ["AAA"], AS_OF, "av")
    assert keys(findings) == [("AAA", None, Check.PROVENANCE, BLOCK)]
    assert "vendor adjusted close" in findings[0].detail


def test_qa_settings_when_config_sets_the_qa_keys_reads_them(tmp_path):
    text = compute_template_text("config")
    text = text.replace("max_findings_per_kind: 25", "max_findings_per_kind: 3")
    text = text.replace("asset_classes: {}", "asset_classes: {XYZ: bond}")
    settings = read_qa_settings(load_config_text(text, tmp_path))
    assert (settings.max_findings_per_kind, settings.asset_class("XYZ")) == (3, "bond")
    assert settings.asset_class("VNQ") == "equity" and settings.asset_class("TLT") == "bond"
    assert dict(settings.market_references) == {"equity": "SPY"}


def test_qa_settings_when_an_asset_class_is_not_a_name_raises_config_error(tmp_path):
    text = compute_template_text("config").replace("asset_classes: {}", "asset_classes: {XYZ: 3}")
    with pytest.raises(ConfigError, match="qa.asset_classes") as caught:
        read_qa_settings(load_config_text(text, tmp_path))
    assert caught.value.key == "qa.asset_classes"


def test_freshness_when_no_symbol_has_bars_blocks_each():
    world = {symbol: frame.iloc[:0] for symbol, frame in universe().items()}
    assert keys(check_universe(world, SESSIONS, AS_OF)) == [
        (symbol, date(2020, 2, 7), Check.FRESHNESS, BLOCK) for symbol in SYMBOLS
    ]


def test_qa_report_when_one_finding_blocks_says_degraded_data():
    findings = (
        Finding("SPY", date(2025, 12, 15), Check.COMPLETENESS, BLOCK, "session 2025-12-15 missing"),
        Finding("AGG", None, Check.CROSS_PROVIDER, INFO, "no secondary bars: not compared"),
    )
    report = QAReport(date(2025, 12, 31), "sample", None, ("SPY", "AGG"), findings)
    assert report.blocking is True
    assert report.summary() == (
        "DEGRADED_DATA (no decision): 2 findings (1 blocking, 0 warning, 1 info) for 2 symbols "
        "as of 2025-12-31, sample (no secondary)"
    )
    record = report.to_dict()["findings"][0]
    assert (record["symbol"], record["date"], record["check"]) == (
        "SPY",
        "2025-12-15",
        "completeness",
    )


def test_run_qa_when_workbook_holds_the_clean_sample_is_not_blocking(tmp_path):
    from ops_runner.ledger.init import init_workbook
    from ops_runner.market.sources.sample import write_sample
    from ops_runner.workbook.config import load_config

    init_workbook(tmp_path / "wb", template="demo")
    cfg = load_config(tmp_path / "wb")
    write_sample(open_store(cfg), calendar=open_calendar(cfg))
    report = run_qa(cfg, "2025-12-31")
    assert (report.as_of, report.blocking, report.findings) == (date(2025, 12, 31), False, ())


@pytest.mark.parametrize("block", [1, 2, 3])
def test_check_universe_when_checked_in_small_blocks_finds_what_one_block_finds(monkeypatch, block):
    world = crash(etfs(*MARCH_16), {**MARCH_16, "VNQ": -0.4})  # with its peers: market-wide
    world = crash(world, {"TLT": 0.3, "AGG": 0.25}, day="2020-01-10")  # two bonds, not all
    world["SPY"] = world["SPY"].drop(index=[at("2020-01-15")])  # a missing session
    secondary = {s: f.copy() for s, f in world.items() if s != "SHY"}
    secondary["EFA"].loc[at("2020-02-03"), "close"] *= 1.03  # the providers disagree
    secondary["AGG"] = etfs(*MARCH_16)["AGG"]  # the secondary shows TLT's move, not AGG's
    monkeypatch.setattr("ops_runner.market.qa.QA_BLOCK", 10_000)
    whole = check_universe(world, SESSIONS, AS_OF, secondary=secondary)
    monkeypatch.setattr("ops_runner.market.qa.QA_BLOCK", block)
    assert check_universe(world, SESSIONS, AS_OF, secondary=secondary) == whole
    found = {(f.symbol, f.check, f.severity) for f in whole}
    assert {("AGG", Check.JUMP, BLOCK), ("TLT", Check.JUMP, INFO),
            ("SPY", Check.COMPLETENESS, BLOCK), ("EFA", Check.CROSS_PROVIDER, BLOCK),
            ("SHY", Check.CROSS_PROVIDER, INFO)} <= found  # fmt: skip
    assert not any(f.symbol == "VNQ" for f in whole)  # its peers sit in other blocks
