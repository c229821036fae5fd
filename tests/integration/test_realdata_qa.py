"""Data QA on real vendor feeds: Alpha Vantage (raw prices, dividends, splits) and Yahoo
(split-adjusted as of its download, dividends inferred from its adjusted close), imported into a
price store as a user would, each as primary with the other as secondary, and each alone.

Every finding QA makes on these files was looked at against the raw CSV lines; the verdicts and
the evidence are in benchmarks/qa_findings.md. The tables below are those answers, read off the
raw files, not computed by the code under test:

- Crash days move equity ETFs 10-23% while bonds barely move: none blocks a decision, with or
  without a secondary (the market-wide rule judges a symbol against its own asset class).
- A split one vendor folds into its prices is never a finding, as of any date (closes are
  compared split-invariantly): as of a date before BIL's 2017 reverse split or EEM's, EFA's and
  IWM's 2005 splits, Yahoo's prices are 2x, 3x or 1/2 Alpha Vantage's, and only the bad prints
  known by then are found.
- Eight single closes disagree by more than 1% (seven Alpha Vantage bad prints, one of unknown
  side); fifteen distributions disagree, event by event (Yahoo doubles or inflates some, lacks
  others, Alpha Vantage lacks the iShares distributions of 2003-12-16); Yahoo's inflated IEF
  distributions of 2003 also move IEF's 12-month total return by 2.2-3.3 points.
"""

from __future__ import annotations

import re
from datetime import date
from pathlib import Path

import pandas as pd
import pytest

from ops_runner.market.calendar import MarketCalendar
from ops_runner.market.importer import import_files
from ops_runner.market.prices import PriceStore
from ops_runner.market.qa import (
    Check,
    QASettings,
    Severity,
    check_store,
    check_universe,
    findings_frame,
    has_blocking,
)

pytestmark = [pytest.mark.realdata, pytest.mark.slow]  # whole vendor histories

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
AS_OF = date(2020, 11, 30)
LAST_COMMON = date(2020, 12, 11)  # the last session both vendors' files hold
AV, YAHOO = "alphavantage", "yahoo"
AV_SYMBOLS = ("AGG", "BIL", "BND", "EEM", "EFA", "GLD", "IEF", "IWM", "QQQ", "SHY", "SPY", "TLT",
              "VEU", "VNQ")  # fmt: skip
YAHOO_SYMBOLS = ("AGG", "BIL", "DBC", "EEM", "EFA", "EWJ", "GLD", "HYG", "IEF", "IEV", "IWM",
                 "IYR", "LQD", "MDY", "QQQ", "SHY", "SPY", "TIP", "TLT", "VNQ", "VTI")  # fmt: skip
COMMON = tuple(s for s in AV_SYMBOLS if s in YAHOO_SYMBOLS)
SETUPS = {  # name: (primary, secondary, universe)
    AV: (AV, None, AV_SYMBOLS),
    YAHOO: (YAHOO, None, YAHOO_SYMBOLS),
    f"{AV}+{YAHOO}": (AV, YAHOO, COMMON),
    f"{YAHOO}+{AV}": (YAHOO, AV, COMMON),
}
# Splits Alpha Vantage records in split_coefficient (data/README.md); Yahoo folds them in.
KNOWN_SPLITS = [
    ("QQQ", date(2000, 3, 20)), ("EFA", date(2005, 6, 9)), ("IWM", date(2005, 6, 9)),
    ("EEM", date(2005, 6, 9)), ("EEM", date(2008, 7, 24)), ("BIL", date(2017, 11, 30)),
]  # fmt: skip
# (symbol, source, session, close the session before, close that session): moves beyond the 15%
# band on crash days, from the raw files.
CRASH_DAYS = [
    ("EEM", AV, date(2008, 10, 13), 24.55, 30.14),
    ("EFA", AV, date(2008, 10, 13), 42.36, 49.09),
    ("EWJ", YAHOO, date(2008, 10, 13), 32.36, 37.48),
    ("EEM", AV, date(2008, 10, 15), 28.64, 24.01),
    ("EEM", AV, date(2008, 10, 28), 19.30, 23.34),
    ("VNQ", AV, date(2008, 10, 28), 33.19, 38.38),
    ("VNQ", AV, date(2008, 11, 24), 25.99, 30.41),
    ("VNQ", AV, date(2008, 12, 1), 32.08, 25.819),
    ("IYR", YAHOO, date(2008, 12, 1), 33.38, 26.50),
    ("VNQ", AV, date(2009, 3, 23), 23.00, 26.72),
    ("VNQ", AV, date(2020, 3, 16), 79.48, 65.39),
    ("IYR", YAHOO, date(2020, 3, 16), 81.15, 67.46),
]
CRASH_MONTH_ENDS = [date(2008, 10, 31), date(2009, 3, 31), date(2020, 3, 31)]
# Single closes more than 1% out of line with the other vendor on the sessions around them.
BAD_CLOSES = {
    ("EFA", date(2001, 9, 25)),  # AV 107.3 flat bar repeating the day before; Yahoo 36.17 (x3)
    ("EFA", date(2002, 2, 5)),  # AV 118.3 = its high, 108.9 the next day; Yahoo 36.34 (x3)
    ("EFA", date(2014, 7, 3)),  # AV bar 66.03-66.48 between 69.08 and 68.68; Yahoo 69.22
    ("GLD", date(2006, 6, 9)),  # AV 59.76 = its low; Yahoo 60.45
    ("IWM", date(2007, 7, 9)),  # AV 85.74 = its high; Yahoo 84.72
    ("QQQ", date(2000, 1, 5)),  # AV 176.6 (88.30 split-adjusted); Yahoo 86.00
    ("QQQ", date(2001, 8, 31)),  # AV 36.17 repeating the day before; Yahoo 36.63
    ("VNQ", date(2007, 6, 20)),  # AV 73.10; Yahoo 72.00 = its low
}
# (symbol, ex-date, which vendor has it: AV, YAHOO, or "both" when the amounts differ).
DISTRIBUTIONS = {
    ("AGG", date(2018, 11, 1), "both"),  # AV 0.2563; Yahoo's adj/close step implies 0.5130
    ("IEF", date(2003, 7, 1), "both"),  # AV 0.2403; Yahoo 0.6630
    ("IEF", date(2003, 8, 1), "both"),  # AV 0.2529; Yahoo 0.7170
    ("IEF", date(2003, 9, 2), "both"),  # AV 0.2758; Yahoo 0.7640
    ("IEF", date(2003, 10, 1), "both"),  # AV 0.2741; Yahoo 0.7310
    ("IEF", date(2003, 12, 1), "both"),  # AV 0.2662; Yahoo 0.2260
    ("EFA", date(2003, 12, 16), YAHOO),  # 0.1567
    ("IEF", date(2003, 12, 16), YAHOO),  # 0.8401
    ("IWM", date(2003, 12, 16), YAHOO),  # 0.1150
    ("SHY", date(2003, 12, 16), YAHOO),  # 0.3350
    ("QQQ", date(2010, 6, 25), YAHOO),  # 0.0890, a week after the 0.0893 of 2010-06-18
    ("QQQ", date(2011, 12, 27), YAHOO),  # 0.0490
    ("SHY", date(2012, 11, 1), AV),  # 0.0223
    ("TLT", date(2012, 11, 1), AV),  # 0.2696
    ("QQQ", date(2020, 9, 21), AV),  # 0.3882
}
# IEF's 12-month total return as of these month ends, moved by Yahoo's 2003 distributions.
IEF_RETURN_MONTHS = [
    date(2003, 10, 31), date(2003, 11, 28), date(2003, 12, 31), date(2004, 1, 30),
    date(2004, 2, 27), date(2004, 3, 31), date(2004, 4, 30), date(2004, 5, 28),
    date(2004, 6, 30), date(2004, 7, 30), date(2004, 8, 31),
]  # fmt: skip
# Alpha Vantage's zero volumes on IEF month ends that Yahoo fills (631,800 on 2009-07-31).
IEF_ZERO_VOLUME = [
    date(2009, 7, 31), date(2009, 8, 31), date(2009, 9, 30), date(2009, 11, 30),
    date(2009, 12, 28), date(2010, 1, 29), date(2010, 2, 26), date(2010, 3, 31),
    date(2010, 4, 30),
]  # fmt: skip
BOTH_VALUES = re.compile(r"primary [-+]?[\d.]+%? vs secondary [-+]?[\d.]+%?")
CALENDAR = MarketCalendar()


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> PriceStore:
    """Both vendors' files imported once, as a user would."""
    for folder in (AV, YAHOO):
        if not (DATA / folder).is_dir():
            pytest.skip(f"real data not present at {DATA / folder} (it lives beside the project)")
    store = PriceStore(tmp_path_factory.mktemp("realdata") / "data")
    import_files(store, DATA / AV, layout=AV, source=AV)
    import_files(store, DATA / YAHOO, layout=YAHOO, source=YAHOO)
    return store


@pytest.fixture(scope="module")
def qa(store):
    """QA of a setup as of a session, each run once for the module."""
    done: dict[tuple[str, date], list] = {}

    def run(setup: str, as_of: date) -> list:
        if (setup, as_of) not in done:
            primary, secondary, symbols = SETUPS[setup]
            done[setup, as_of] = check_store(store, CALENDAR, symbols, as_of, primary, secondary)
        return done[setup, as_of]

    return run


@pytest.fixture(scope="module")
def feeds(store) -> dict:
    cut = pd.Timestamp(LAST_COMMON)
    primary = {s: store.load_bars(AV, s).loc[:cut] for s in COMMON}
    first = min(frame.index[0] for frame in primary.values()).date()
    return {
        "primary": primary,
        "secondary": {s: store.load_bars(YAHOO, s).loc[:cut] for s in COMMON},
        "adjusted": {s: store.load_vendor_adjusted(AV, s) for s in COMMON},
        "sessions": CALENDAR.sessions(first, AS_OF),
    }


@pytest.fixture(scope="module")
def findings(feeds) -> list:
    return check_universe(
        feeds["primary"], feeds["sessions"], AS_OF,
        secondary=feeds["secondary"], vendor_adjusted=feeds["adjusted"],
    )  # fmt: skip


def closes(findings: list) -> set:
    return {(f.symbol, f.date) for f in findings if f.detail.startswith("close:")}


# -- what QA found before, still found ---------------------------------------------------------


def test_realdata_qa_when_run_on_both_feeds_returns_findings_for_common_symbols(feeds, findings):
    frame = findings_frame(findings)
    print("\n" + frame.drop(columns="finding_id").to_string())  # pytest -s shows what was found
    assert set(frame["symbol"]) <= set(feeds["primary"])
    assert frame["finding_id"].is_unique


def test_realdata_qa_when_splits_are_recorded_does_not_flag_them_as_jumps(feeds, findings):
    for symbol, day in KNOWN_SPLITS:
        assert feeds["primary"][symbol].loc[pd.Timestamp(day), "split"] != 1.0
    jumps = {(f.symbol, f.date) for f in findings if f.check is Check.JUMP}
    assert not jumps & set(KNOWN_SPLITS)


def test_realdata_qa_when_providers_disagree_the_detail_carries_both_values(findings):
    cross = [f for f in findings if f.check is Check.CROSS_PROVIDER and f.symbol and f.date]
    disagreements = [f for f in cross if "vs secondary" in f.detail]
    assert disagreements, "the known Alpha Vantage bad prints should disagree with Yahoo"
    for finding in disagreements:
        assert BOTH_VALUES.search(finding.detail), finding.detail


def test_realdata_qa_when_vendor_adjusted_close_is_given_it_matches_raw_and_actions(
    feeds, findings
):
    assert all(series is not None for series in feeds["adjusted"].values())  # kept by the store
    adjusted = [f for f in findings if "vendor adjusted close" in f.detail]
    assert adjusted == []  # Alpha Vantage's adjusted_close agrees with its raw closes + actions


def test_realdata_qa_when_as_of_is_2020_11_30_all_feeds_are_fresh(findings):
    assert [f for f in findings if f.check is Check.FRESHNESS] == []


def test_realdata_qa_when_the_secondary_confirms_a_march_2020_move_it_does_not_block(findings):
    blocking_jumps = [
        f for f in findings if f.check is Check.JUMP and f.severity is Severity.BLOCKING
    ]
    assert blocking_jumps == [], blocking_jumps


def test_realdata_qa_when_bars_after_as_of_are_dropped_finds_the_same(feeds, findings):
    cut = pd.Timestamp(AS_OF)
    primary = {s: f.loc[f.index <= cut] for s, f in feeds["primary"].items()}
    secondary = {s: f.loc[f.index <= cut] for s, f in feeds["secondary"].items()}
    again = check_universe(
        primary, feeds["sessions"], AS_OF, secondary=secondary, vendor_adjusted=feeds["adjusted"]
    )
    assert again == findings


@pytest.mark.parametrize("setup", [f"{AV}+{YAHOO}", f"{YAHOO}+{AV}"])
def test_realdata_qa_when_a_close_is_a_bad_print_finds_it(qa, setup):
    assert closes(qa(setup, LAST_COMMON)) == BAD_CLOSES


def test_realdata_qa_when_alphavantage_has_zero_volumes_finds_them(qa):
    volume = [f for f in qa(AV, LAST_COMMON) if "on a bar where the symbol traded" in f.detail]
    assert [(f.symbol, f.date) for f in volume] == [("IEF", day) for day in IEF_ZERO_VOLUME]
    no_trade = [(f.symbol, f.date) for f in qa(AV, LAST_COMMON) if "no trade" in f.detail]
    assert no_trade == [("EFA", date(2001, 8, 20))]  # 126.1 all day, as the day before


# -- crash days ----------------------------------------------------------------------------------


def test_realdata_qa_when_read_back_the_crash_days_move_past_the_band(store):
    for symbol, source, day, before, close in CRASH_DAYS:
        bars = store.load_bars(source, symbol)["close"]
        at = bars.index.get_loc(pd.Timestamp(day))
        assert (bars.iloc[at - 1], bars.iloc[at]) == pytest.approx((before, close), abs=1e-4)
        assert abs(close / before - 1) > 0.15


@pytest.mark.parametrize("as_of", CRASH_MONTH_ENDS)
@pytest.mark.parametrize("setup", list(SETUPS))
def test_realdata_qa_when_a_crash_month_ends_nothing_blocks_the_decision(qa, setup, as_of):
    found = qa(setup, as_of)
    assert not has_blocking(found), [f for f in found if f.severity is Severity.BLOCKING]
    crash = {(symbol, day) for symbol, _, day, _, _ in CRASH_DAYS}
    assert [f for f in found if f.check is Check.JUMP and (f.symbol, f.date) in crash] == []


# -- splits one vendor folds into its prices ----------------------------------------------------


@pytest.mark.parametrize(
    "as_of", [date(2000, 2, 29), date(2004, 12, 31), date(2008, 6, 30), date(2017, 6, 30)]
)
@pytest.mark.parametrize("setup", [f"{AV}+{YAHOO}", f"{YAHOO}+{AV}"])
def test_realdata_qa_when_a_split_comes_after_as_of_no_close_disagrees(qa, setup, as_of):
    later = [(s, d) for s, d in KNOWN_SPLITS if d > as_of]
    assert later  # Yahoo's prices already fold these in; Alpha Vantage's do not yet
    # Only the bad prints known by then: not one of the thousands of bars Yahoo has at 2x, 3x
    # or 1/2 of Alpha Vantage's raw prices before the split.
    assert closes(qa(setup, as_of)) == {(s, d) for s, d in BAD_CLOSES if d <= as_of}


# -- distributions and returns ------------------------------------------------------------------


@pytest.mark.parametrize("setup", [f"{AV}+{YAHOO}", f"{YAHOO}+{AV}"])
def test_realdata_qa_when_vendors_disagree_on_distributions_finds_each(qa, setup):
    primary, secondary, _ = SETUPS[setup]
    where = {"distribution:": "both", "in the primary only": primary,
             "in the secondary only": secondary}  # fmt: skip
    found = {
        (f.symbol, f.date, next(side for words, side in where.items() if words in f.detail))
        for f in qa(setup, LAST_COMMON)
        if "distribution" in f.detail
    }
    assert found == DISTRIBUTIONS
    blocking = [
        (f.symbol, f.date) for f in qa(setup, LAST_COMMON) if f.severity is Severity.BLOCKING
    ]
    assert blocking == [("QQQ", date(2020, 9, 21))]  # the only one inside the window


@pytest.mark.parametrize("setup", [f"{AV}+{YAHOO}", f"{YAHOO}+{AV}"])
def test_realdata_qa_when_distributions_move_a_12_month_return_finds_it(qa, setup):
    found = [
        (f.symbol, f.date) for f in qa(setup, date(2004, 12, 31)) if "total return" in f.detail
    ]
    assert found == [("IEF", day) for day in IEF_RETURN_MONTHS]


# -- a secondary that stops, and the cap --------------------------------------------------------


def test_realdata_qa_when_the_secondary_stops_finds_it_once_per_symbol(qa):
    found = qa(f"{YAHOO}+{AV}", date(2021, 1, 29))  # Alpha Vantage's files end 2020-12-11
    stale = [f for f in found if f.detail.startswith("secondary stale since 2020-12-11")]
    assert sorted(f.symbol for f in stale) == sorted(COMMON)
    assert all(f.severity is Severity.BLOCKING for f in stale)
    assert [f for f in found if "missing in the" in f.detail] == []


def test_realdata_qa_when_findings_repeat_keeps_to_the_cap(store):
    settings = QASettings(max_findings_per_kind=3)
    found = check_store(store, CALENDAR, ["IEF"], LAST_COMMON, AV, settings=settings)
    volume = [f for f in found if "volume" in f.detail]
    assert [f.date for f in volume] == [date(2010, 1, 29), *IEF_ZERO_VOLUME[-3:]]
    assert volume[0].detail == "6 more volume findings from 2009-07-31 to 2010-01-29 not listed"
