"""The trend filter, signal offset, canary breadth and weighting rules against hand-computed
answers; and that a workbook not using them keeps its config hash and records."""

from __future__ import annotations

import dataclasses
import math
from datetime import date
from fractions import Fraction
from pathlib import Path

import pytest

from ops_runner.market.bars import make_bars
from ops_runner.market.calendar import MarketCalendar
from ops_runner.ops.schedule import compute_slots
from ops_runner.strategy.momentum import (
    RULE_DEFAULTS,
    StrategyError,
    StrategySettings,
    compute_capped_weights,
    compute_decision,
    compute_decision_series,
    compute_weighted_targets,
)
from ops_runner.strategy.research import backtest
from ops_runner.strategy.sweep import sweep
from ops_runner.workbook.config import (
    RULE_KEYS,
    SCHEMA,
    TEMPLATES,
    ConfigError,
    load_config_text,
    read_config_text,
)
from ops_runner.workbook.settings import ScheduleSettings

CAL = MarketCalendar()
T = date(2021, 12, 31)  # the month-end session of every hand-built case (a Friday)
START, END = date(2021, 6, 1), date(2022, 1, 31)


def market(levels: dict[str, dict[str, float]], days: dict[str, dict[date, float]] | None = None):
    """Daily bars on every session: a session closes at its month's level in ``levels``
    (symbol -> {"YYYY-MM": level}; months before the first listed take its level, later months
    keep the last listed), except the sessions ``days`` names (symbol -> {session: close})."""
    sessions = CAL.sessions(START, END)
    result = {}
    for symbol, by_month in levels.items():
        months = sorted(by_month)
        closes = []
        for ts in sessions:
            key = f"{ts.year}-{ts.month:02d}"
            earlier = [m for m in months if m <= key]
            close = by_month[earlier[-1]] if earlier else by_month[months[0]]
            closes.append((days or {}).get(symbol, {}).get(ts.date(), close))
        result[symbol] = make_bars(sessions, closes, closes, closes, closes, [1e6] * len(closes))
    return result


def rules(**changes) -> StrategySettings:
    """Two risk assets A and B in two slots, BIL defensive, 1-month momentum, no filter."""
    values = dict(
        name="rules",
        risk=("A", "B"),
        defensive="BIL",
        cash_proxy=None,
        lookbacks=((1, 1.0),),
        skip_months=0,
        top_n=2,
        absolute_momentum=False,
        absolute_compare="each",
        benchmark=None,
    )
    return StrategySettings(**{**values, **changes})


# Month-end closes: A 100 (Oct), 100 (Nov), 103 (Dec): 3-month average 101, close above it.
# B 100, 110, 104: average 314/3 = 104.6666666667, close below it; its 2-month average
# (110 + 104) / 2 = 107 is above it.
TREND = {
    "A": {"2021-10": 100.0, "2021-11": 100.0, "2021-12": 103.0},
    "B": {"2021-10": 100.0, "2021-11": 110.0, "2021-12": 104.0},
    "BIL": {"2021-10": 100.0},
}


def test_hand_cases_when_built_use_these_sessions():
    assert CAL.month_end_sessions(date(2021, 10, 1), T) == [
        date(2021, 10, 29), date(2021, 11, 30), T,
    ]  # fmt: skip
    assert [CAL.previous_session(d) for d in (date(2021, 10, 29), date(2021, 11, 30), T)] == [
        date(2021, 10, 28), date(2021, 11, 29), date(2021, 12, 30),
    ]  # fmt: skip


# -- trend filter ---------------------------------------------------------------------------------


def test_trend_when_close_below_its_average_hands_the_slot_to_defensive():
    decision = compute_decision(rules(trend_length=3), T, market(TREND), CAL)
    record = decision.to_record()
    assert record["targets"] == {"A": "0.5", "BIL": "0.5"}
    assert record["scores"]["A"]["trend_average"] == "101.0000000000"
    assert record["scores"]["A"]["trend_fast"] == "103.0000000000"
    assert record["scores"]["A"]["trend"] is True
    assert record["scores"]["B"]["trend_average"] == "104.6666666667"
    assert record["scores"]["B"]["trend"] is False
    assert record["scores"]["BIL"]["trend"] is None
    assert [d for d, _ in record["prices_used"]["A"]] == ["2021-10-29", "2021-11-30", "2021-12-31"]
    assert "B not above its 3-month average" in decision.explanation


def test_trend_when_failed_slot_is_cash_leaves_that_weight_uninvested():
    decision = compute_decision(rules(trend_length=3, failed_slot="cash"), T, market(TREND), CAL)
    assert decision.targets == {"A": "0.5"}
    assert decision.explanation.endswith("hold A 50%, cash 50%")


def test_trend_when_every_slot_fails_to_cash_holds_nothing():
    falling = {"A": {"2021-11": 110.0, "2021-12": 100.0}, "B": TREND["B"], "BIL": TREND["BIL"]}
    decision = compute_decision(rules(trend_length=3, failed_slot="cash"), T, market(falling), CAL)
    assert decision.targets == {}
    assert decision.explanation.endswith("hold cash 100%")


def test_trend_when_average_against_average_compares_the_fast_one():
    decision = compute_decision(rules(trend_length=3, trend_fast=2), T, market(TREND), CAL)
    # A: (103 + 100) / 2 = 101.5 > 101; B: 107 > 104.67: both hold their slot.
    assert decision.targets == {"B": "0.5", "A": "0.5"}
    assert decision.to_record()["scores"]["A"]["trend_fast"] == "101.5000000000"


def test_trend_when_on_sessions_averages_the_last_daily_closes():
    # The last three sessions 2021-12-29, 30, 31: A 103, 90, 100 (average 97.67, close above);
    # B 104, 110, 105 (average 106.33, close below).
    days = {
        "A": {date(2021, 12, 30): 90.0, date(2021, 12, 31): 100.0},
        "B": {date(2021, 12, 30): 110.0, date(2021, 12, 31): 105.0},
    }
    settings = rules(trend_length=3, trend_basis="sessions")
    record = compute_decision(settings, T, market(TREND, days), CAL).to_record()
    assert record["scores"]["A"]["trend_average"] == "97.6666666667"
    assert record["scores"]["B"]["trend_average"] == "106.3333333333"
    assert record["targets"] == {"A": "0.5", "BIL": "0.5"}
    assert [d for d, _ in record["prices_used"]["B"]][-3:] == [
        "2021-12-29", "2021-12-30", "2021-12-31",
    ]  # fmt: skip


# -- signal offset --------------------------------------------------------------------------------

# A closes 100 on the sessions before the October and November month-ends and 103 on 2021-12-30,
# but 99 on 2021-12-31: one session before the month-end it is above its 3-point average (101);
# at the month-end close (100, 100, 99: 99.67) it is not.
OFFSET_DAYS = {"A": {date(2021, 12, 30): 103.0, date(2021, 12, 31): 99.0}}
OFFSET_LEVELS = {"A": {"2021-10": 100.0}, "B": {"2021-10": 50.0}, "BIL": {"2021-10": 100.0}}


def test_offset_when_one_session_before_decides_on_that_session_from_its_closes():
    settings = rules(trend_length=3, signal_offset=-1)
    bars = market(OFFSET_LEVELS, OFFSET_DAYS)
    decision = compute_decision(settings, date(2021, 12, 30), bars, CAL)
    record = decision.to_record()
    assert record["session"] == "2021-12-30"
    assert [d for d, _ in record["prices_used"]["A"]] == ["2021-10-28", "2021-11-29", "2021-12-30"]
    assert record["scores"]["A"]["ret_1m"] == "0.0300000000"  # 103 / 100 - 1
    assert record["scores"]["A"]["trend"] is True
    assert record["targets"] == {"A": "0.5", "BIL": "0.5"}  # B is flat: not above its average
    assert record["signal"] == {
        "offset_sessions": -1,
        "session": "2021-12-30",
        "month_end_session": "2021-12-31",
        "execution": "market-on-open orders on the session after the signal session",
    }
    at_month_end = compute_decision(rules(trend_length=3), T, bars, CAL)
    assert at_month_end.targets == {"BIL": "1"}
    assert "signal" not in at_month_end.to_record()


def test_offset_when_deciding_never_reads_the_month_end_close():
    settings = rules(trend_length=3, signal_offset=-1)
    bars = market(OFFSET_LEVELS, OFFSET_DAYS)
    cut = {s: frame.loc[:"2021-12-30"] for s, frame in bars.items()}
    on = date(2021, 12, 30)
    assert compute_decision(settings, on, cut, CAL) == compute_decision(settings, on, bars, CAL)


def test_offset_when_session_is_the_month_end_refuses_naming_the_signal_session():
    with pytest.raises(StrategyError, match="taken on 2021-12-30"):
        compute_decision(rules(signal_offset=-1), T, market(OFFSET_LEVELS), CAL)


def test_offset_series_when_backtested_decides_on_each_signal_session():
    decisions = compute_decision_series(
        rules(signal_offset=-1), market(OFFSET_LEVELS), CAL, date(2021, 9, 1), T
    )
    assert [d.session for d in decisions] == [
        date(2021, 9, 29), date(2021, 10, 28), date(2021, 11, 29), date(2021, 12, 30),
    ]  # fmt: skip
    bars = market(OFFSET_LEVELS)
    assert decisions[-1] == compute_decision(rules(signal_offset=-1), date(2021, 12, 30), bars, CAL)


# -- canary breadth -------------------------------------------------------------------------------


def canary_market(c1: float, c2: float) -> dict:
    """A up 5% and B up 2% over December; canaries C1 and C2 from 100 to the given levels."""
    return market({
        "A": {"2021-11": 100.0, "2021-12": 105.0},
        "B": {"2021-11": 100.0, "2021-12": 102.0},
        "C1": {"2021-11": 100.0, "2021-12": c1},
        "C2": {"2021-11": 100.0, "2021-12": c2},
        "BIL": {"2021-11": 100.0},
    })  # fmt: skip


def canary(**changes) -> StrategySettings:
    return rules(**{"top_n": 1, "canary": ("C1", "C2"), "canary_breadth": 2, **changes})


@pytest.mark.parametrize(
    ("c1", "c2", "breadth", "targets", "bad"),
    [
        (101.0, 101.0, 2, {"A": "1"}, 0),  # both canaries up: fully in the best risk asset
        (98.0, 101.0, 2, {"A": "0.5", "BIL": "0.5"}, 1),  # one of two bad: half defensive
        (98.0, 99.0, 2, {"BIL": "1"}, 2),  # both bad
        (98.0, 101.0, 1, {"BIL": "1"}, 1),  # breadth 1 (VAA): any bad canary, all defensive
        (100.0, 101.0, 2, {"A": "0.5", "BIL": "0.5"}, 1),  # 0% does not beat the 0% hurdle
    ],
)
def test_canary_when_some_are_bad_holds_that_share_defensively(c1, c2, breadth, targets, bad):
    settings = canary(canary_breadth=breadth)
    decision = compute_decision(settings, T, canary_market(c1, c2), CAL)
    record = decision.to_record()
    assert record["targets"] == targets
    assert record["canary"]["bad"] == bad
    assert record["scores"]["C1"]["canary"] is (c1 > 100)
    assert record["scores"]["A"]["canary"] is None


def test_canary_when_three_of_four_slots_share_the_rest_cuts_to_ten_decimals():
    # One of two canaries bad: 1/2 defensive; three slots share 1/2: 1/6 each = 0.1666666666
    # cut; BIL, the last part, takes 1 - 2 x 0.1666666666 - 0.1666666666 = 0.5000000002.
    settings = rules(risk=("A", "B", "C1"), top_n=3, canary=("C1", "C2"), canary_breadth=2)
    decision = compute_decision(settings, T, canary_market(101.0, 99.0), CAL)
    assert decision.targets == {
        "A": "0.1666666666", "B": "0.1666666666", "C1": "0.1666666666", "BIL": "0.5000000002",
    }  # fmt: skip


# -- weights --------------------------------------------------------------------------------------

# The last three closes: A 100, 110, 99 (daily returns +10%, -10%: sigma = sqrt(0.02) =
# 0.1414213562); B 100, 105, 99.75 (+5%, -5%: sigma 0.0707106781). 1/sigma: A 1, B 2 in
# proportion: A a third, B two thirds.
VOL_DAYS = {
    "A": {date(2021, 12, 29): 100.0, date(2021, 12, 30): 110.0, date(2021, 12, 31): 99.0},
    "B": {date(2021, 12, 29): 100.0, date(2021, 12, 30): 105.0, date(2021, 12, 31): 99.75},
}
VOL_LEVELS = {"A": {"2021-11": 90.0}, "B": {"2021-11": 90.0}, "BIL": {"2021-11": 100.0}}


def test_inverse_volatility_when_b_moves_half_as_much_gives_it_twice_the_weight():
    settings = rules(weighting="inverse_volatility", volatility_sessions=2)
    record = compute_decision(settings, T, market(VOL_LEVELS, VOL_DAYS), CAL).to_record()
    assert record["scores"]["A"]["volatility"] == "0.1414213562"
    assert record["scores"]["B"]["volatility"] == "0.0707106781"
    # A ranks first (99 / 90 > 99.75 / 90 is false: B 10.8% ranks above A 10%)
    assert record["targets"] == {"B": "0.6666666666", "A": "0.3333333334"}


@pytest.mark.parametrize(
    ("cap", "targets"),
    [
        (0.5, {"B": "0.5", "A": "0.5"}),  # B at the cap, A takes the sixth B gave up
        (0.4, {"B": "0.4", "A": "0.4", "BIL": "0.2"}),  # both capped: the rest to BIL
    ],
)
def test_weight_cap_when_above_it_hands_the_excess_on(cap, targets):
    settings = rules(weighting="inverse_volatility", volatility_sessions=2, weight_cap=cap)
    decision = compute_decision(settings, T, market(VOL_LEVELS, VOL_DAYS), CAL)
    assert decision.targets == targets


def test_capped_weights_when_redistributing_repeats_until_none_is_above():
    weights = {"X": Fraction(6, 10), "Y": Fraction(3, 10), "Z": Fraction(1, 10)}
    capped, excess = compute_capped_weights(weights, Fraction(4, 10))
    assert capped == {"X": Fraction(4, 10), "Y": Fraction(4, 10), "Z": Fraction(2, 10)}
    assert excess == 0


def test_weighted_targets_when_parts_sum_below_one_leaves_cash():
    thirds = [("X", Fraction(1, 3)), ("Y", Fraction(1, 3))]
    assert compute_weighted_targets(thirds) == {"X": "0.3333333333", "Y": "0.3333333333"}
    assert compute_weighted_targets([*thirds, ("Z", Fraction(1, 3))]) == {
        "X": "0.3333333333", "Y": "0.3333333333", "Z": "0.3333333334",
    }  # fmt: skip


# -- settings, records and config hash ------------------------------------------------------------


def test_settings_when_rules_are_off_record_exactly_the_old_keys():
    assert list(rules().to_dict()) == [
        "name", "risk", "defensive", "cash_proxy", "lookbacks", "skip_months", "top_n",
        "absolute_momentum", "absolute_compare", "benchmark",
    ]  # fmt: skip


def test_settings_when_rules_are_on_round_trip_through_the_record():
    settings = rules(trend_length=10, signal_offset=-1, canary=("A",), weight_cap=0.25)
    written = settings.to_dict()
    assert written["canary"] == ["A"] and written["weight_cap"] == "0.25"
    assert StrategySettings.from_dict(written) == settings


def test_rule_defaults_when_compared_with_the_schema_agree():
    assert tuple(RULE_DEFAULTS) == RULE_KEYS
    for key, default in RULE_DEFAULTS.items():
        assert SCHEMA["strategy"][key].default == (list(default) if key == "canary" else default)


# The hashes main's code (before these rules) gives the shipped templates.
HASHES_BEFORE = {
    "config": "bce849baff3a4a1345dbb3186fffa8c294c57fa3d8b1b64b0804eae41fef6c46",
    "gem": "f9d3f959f29c51746ef2ace60d011c9c1463a5330f8e58053c1cb3cee5ee7c41",
    "topn": "c452e9e9a735925c7367fc2c058af2da5f6b0d8f14d2dfce2e500ac2eda6ec01",
}


@pytest.mark.parametrize("name", sorted(HASHES_BEFORE))
def test_config_hash_when_template_uses_no_new_rule_is_unchanged(name):
    cfg = load_config_text(read_config_text(TEMPLATES / f"{name}.yaml"), Path("/tmp/wb"))
    assert cfg.hash == HASHES_BEFORE[name]


def test_config_hash_when_rule_keys_are_written_at_their_defaults_is_the_same():
    text = read_config_text(TEMPLATES / "gem.yaml")
    defaults = (
        "  trend_length: 0\n  trend_basis: months\n  trend_fast: 1\n  failed_slot: defensive\n"
        "  signal_offset: 0\n  canary: []\n  canary_breadth: 1\n  weighting: equal\n"
        "  volatility_sessions: 63\n  weight_cap: 1\n"
    )
    written = text.replace("\nstrategy:\n", "\nstrategy:\n" + defaults, 1)
    assert written != text
    plain = load_config_text(text, Path("/tmp/wb"))
    assert load_config_text(written, Path("/tmp/wb")).hash == plain.hash
    trend = text.replace("\nstrategy:\n", "\nstrategy:\n  trend_length: 10\n", 1)
    assert load_config_text(trend, Path("/tmp/wb")).hash != plain.hash


@pytest.mark.parametrize(
    ("line", "key"),
    [
        ("trend_length: 3\n  trend_fast: 3", "strategy.trend_fast"),
        ("canary: [SPY]\n  canary_breadth: 2", "strategy.canary_breadth"),
        ("signal_offset: 1", "strategy.signal_offset"),
        ("weight_cap: 0", "strategy.weight_cap"),
        ("failed_slot: bonds", "strategy.failed_slot"),
    ],
)
def test_config_when_a_rule_key_is_impossible_names_it_in_one_line(line, key):
    text = read_config_text(TEMPLATES / "gem.yaml").replace(
        "\nstrategy:\n", f"\nstrategy:\n  {line}\n", 1
    )
    with pytest.raises(ConfigError) as caught:
        load_config_text(text, Path("/tmp/wb"))
    assert key in str(caught.value)
    assert all("\n" not in str(p) for p in getattr(caught.value, "problems", [caught.value]))


def test_sweep_when_a_rule_is_on_sweeps_each_combination_as_its_backtest():
    bars, grid = market(TREND), {"top_n": [1, 2], "failed_slot": ["defensive", "cash"]}
    table = sweep(rules(trend_length=3), grid, bars, calendar=CAL)
    assert len(table) == 4 and set(table["trend_length"]) == {3}
    for _, row in table.iterrows():
        settings = rules(trend_length=3, top_n=row["top_n"], failed_slot=row["failed_slot"])
        result = backtest(settings, bars, start=row["start"], calendar=CAL)
        for name, value in result.metrics().items():
            assert value is None or math.isclose(row[name], value, rel_tol=1e-9), (name, row)


def test_settings_when_rules_change_nothing_else_compare_equal_to_replace():
    assert dataclasses.replace(rules(), trend_length=3) == rules(trend_length=3)


def test_gtaa5_template_when_read_is_faber_with_the_signal_one_session_early():
    text = (TEMPLATES / "gtaa5.yaml").read_text()
    assert 'A Quantitative Approach to Tactical Asset\n# Allocation"' in text and "2007" in text
    settings = StrategySettings.from_config(
        load_config_text(read_config_text(TEMPLATES / "gtaa5.yaml"), Path("/tmp/wb"))
    )
    assert settings.risk == ("SPY", "EFA", "IEF", "VNQ", "DBC") and settings.top_n == 5
    assert (settings.trend_length, settings.trend_basis, settings.trend_fast) == (10, "months", 1)
    assert (settings.defensive, settings.failed_slot) == ("BIL", "defensive")
    assert settings.signal_offset == -1
    assert not settings.absolute_momentum


def test_daa_template_when_read_is_breadth_momentum_with_two_canaries():
    text = (TEMPLATES / "daa.yaml").read_text()
    assert "Defensive Asset Allocation (DAA)" in text and "Keller" in text
    settings = StrategySettings.from_config(
        load_config_text(read_config_text(TEMPLATES / "daa.yaml"), Path("/tmp/wb"))
    )
    assert settings.lookbacks == ((1, 12.0), (3, 4.0), (6, 2.0), (12, 1.0))
    assert (settings.canary, settings.canary_breadth, settings.top_n) == (("EEM", "AGG"), 2, 6)
    assert settings.cash_proxy is None and settings.defensive == "IEF"
    assert settings.symbols()[-1] == "AGG"  # EEM, a risk asset too, is read once


# -- the schedule with a signal offset ------------------------------------------------------------


def test_schedule_when_signal_is_one_session_early_decides_then_and_executes_at_the_month_end():
    values = load_config_text(read_config_text(TEMPLATES / "gtaa5.yaml"), Path("/tmp/wb")).values
    settings = dataclasses.replace(ScheduleSettings.from_config(values), weekly=())
    assert settings.signal_offset == -1
    slots = {s.key: s for s in compute_slots(CAL, settings, date(2021, 12, 28), T)}
    # 2021-12-30 is the signal session (the one before the month-end 2021-12-31), N is 12-31.
    assert slots["decision:2021-12"].session == date(2021, 12, 30)
    assert slots["data_qa:2021-12"].session == date(2021, 12, 30)
    assert slots["execution:2021-12"].session == T
    assert slots["reconciliation:2021-12"].session == T
    assert {s.session for s in slots.values() if s.job == "pre_rebalance_checks"} == {
        date(2021, 12, 29), date(2021, 12, 30),
    }  # fmt: skip
    assert CAL.rebalance_session(2021, 12, -1) == date(2021, 12, 30)
    assert CAL.is_rebalance_session(date(2021, 12, 30), -1)
    assert not CAL.is_rebalance_session(T, -1) and CAL.is_rebalance_session(T)


def test_schedule_when_no_offset_decides_on_the_month_end_as_before():
    values = load_config_text(read_config_text(TEMPLATES / "gem.yaml"), Path("/tmp/wb")).values
    settings = dataclasses.replace(ScheduleSettings.from_config(values), weekly=())
    slots = {s.key: s for s in compute_slots(CAL, settings, date(2021, 12, 28), T)}
    assert slots["decision:2021-12"].session == T
