"""Research: the backtest runs the production decisions, a hand simulation agrees with vectorbt,
the sweep agrees with the backtest, and both notebooks run on the sample workbook."""

from __future__ import annotations

import dataclasses
import json
import math
import subprocess
import sys
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ops_runner.ledger.init import init_workbook
from ops_runner.market.calendar import MarketCalendar
from ops_runner.market.prices import compute_adjustment_factors
from ops_runner.market.sources.sample import generate_sample_market
from ops_runner.strategy import research
from ops_runner.strategy import sweep as sweep_module
from ops_runner.strategy.momentum import (
    StrategySettings,
    compute_decision,
    compute_decision_series,
    compute_tie_key,
)
from ops_runner.strategy.research import Costs, ResearchError, backtest
from ops_runner.strategy.sweep import compute_grid_settings, compute_sweep_chunk, load_grid, sweep
from ops_runner.strategy.warmup import warm
from ops_runner.workbook.config import (
    TEMPLATES,
    load_config,
    load_config_text,
    read_config_text,
)

START, END = date(2012, 1, 3), date(2016, 12, 30)
CALENDAR = MarketCalendar()
RELATIVE = 1e-9


def template(name: str):
    path = TEMPLATES / f"{name}.yaml"
    return load_config_text(read_config_text(path), Path("."), path)


@pytest.fixture(scope="module")
def market() -> dict[str, pd.DataFrame]:
    """Four years of decisions on the synthetic sample (12 ETFs, 2012-2016)."""
    return generate_sample_market(start=START, end=END)


def close_to(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=RELATIVE, abs_tol=1e-12)


# -- the hand simulation: written from the cost model's words, not from the code -------------------


def simulate_by_hand(settings, bars, costs: Costs, cash: float, whole: bool):
    """Return (equity per session, orders at the minimum, orders above it).

    Units of the total-return series are held; at the open after each decision the book is
    valued at the open, sells go first and buys from the smallest; fills at the open +/- the
    slippage; commission max(min, per-share x real shares); a buy the cash cannot pay is cut
    to the most units the cash pays for. Equity is marked at the adjusted close.
    """
    decisions = compute_decision_series(settings, bars, CALENDAR, START, END)
    last = min(bars[s].index[-1].date() for s in settings.symbols())
    sessions = CALENDAR.sessions(decisions[0].session, last)
    plan = {CALENDAR.next_session(d.session): d.targets for d in decisions if d.session < last}
    symbols = settings.symbols()
    factor = {s: compute_adjustment_factors(bars[s]) for s in symbols}
    opens = {s: bars[s]["open"] * factor[s] for s in symbols}
    closes = {s: bars[s]["close"] * factor[s] for s in symbols}
    slip = costs.slippage_bps / 10_000
    per_share, minimum = costs.commission_per_share, costs.commission_min
    units = dict.fromkeys(symbols, 0.0)
    equity, at_min, above = {}, 0, 0
    for day in sessions:
        if day.date() in plan:
            targets = plan[day.date()]
            px = {s: opens[s][day] for s in symbols}
            value = cash + sum(units[s] * px[s] for s in symbols)
            weight = {s: float(targets.get(s, "0")) for s in symbols}
            order_value = {s: weight[s] * value - units[s] * px[s] for s in symbols}
            for s in sorted(symbols, key=order_value.get):
                delta = weight[s] * value / px[s] - units[s]
                f = factor[s][day]  # real shares per unit of the adjusted series
                if delta < 0:
                    q = min(-delta, units[s])
                    q = math.floor(q) if whole else q
                    proceeds = q * px[s] * (1 - slip) - costs.commission(q * f)
                    if q < 1e-9 or proceeds < 0:
                        continue
                    cash, units[s] = cash + proceeds, units[s] - q
                else:
                    fill = px[s] * (1 + slip)
                    q = math.floor(delta) if whole else delta
                    if q * fill + costs.commission(q * f) > cash:
                        q = (cash - minimum) / fill  # the most units at the minimum commission
                        if per_share * q * f > minimum:
                            q = cash / (fill + per_share * f)  # above it
                        q = math.floor(q) if whole else q
                    if q < 1e-9:
                        continue
                    cash, units[s] = cash - q * fill - costs.commission(q * f), units[s] + q
                if per_share * q * f < minimum:
                    at_min += 1
                else:
                    above += 1
        equity[day] = cash + sum(units[s] * closes[s][day] for s in symbols)
    return pd.Series(equity), at_min, above


# -- backtest ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["config", "topn", "gem"])
@pytest.mark.slow
def test_backtest_when_run_targets_equal_compute_decision_on_every_month_end(market, name):
    cfg = template(name)
    result = backtest(cfg, market)
    settings = StrategySettings.from_config(cfg)
    sessions = [date.fromisoformat(d["session"]) for d in result.decisions]
    assert sessions == CALENDAR.month_end_sessions(sessions[0], END)
    assert sessions[0] == date(2013, 1, 31)  # the first with 12 months of history
    for record, session in zip(result.decisions, sessions, strict=True):
        decision = compute_decision(settings, session, market, CALENDAR)
        assert record["targets"] == decision.targets, session
        assert record["selection"] == list(decision.selection)
        executed = record["execution"]
        assert executed is None or executed == CALENDAR.next_session(session).isoformat()
    assert result.decisions[-1]["execution"] is None  # 2016-12-30 is the last bar
    assert result.equity.index[0].date() == sessions[0] and result.equity.iat[0] == 100_000


@pytest.mark.parametrize("whole", [True, False], ids=["whole-shares", "fractional"])
@pytest.mark.parametrize("name", ["config", "topn"])
@pytest.mark.slow
def test_backtest_when_checked_by_hand_matches_vectorbt(market, name, whole):
    cfg = template(name)
    costs = Costs.from_config(cfg.values)
    result = backtest(cfg, market, whole_shares=whole)
    expected, at_min, above = simulate_by_hand(
        StrategySettings.from_config(cfg), market, costs, 100_000.0, whole
    )
    assert list(result.equity.index) == list(expected.index)
    gaps = (result.equity / expected - 1).abs()
    assert gaps.max() < RELATIVE, gaps.idxmax()
    assert len(result.trades) == at_min + above
    assert above > 0
    if name == "topn":  # monthly trims of three holdings: small orders pay the minimum
        assert at_min > 0
    monthly = expected.resample("ME").last().pct_change().dropna()
    reported = result.to_dict()["monthly_returns"]
    assert list(reported) == [f"{m:%Y-%m}" for m in monthly.index]
    assert all(close_to(reported[f"{m:%Y-%m}"], v) for m, v in monthly.items())


def test_backtest_when_costs_are_zero_equals_the_hand_simulation_without_costs(market):
    cfg = template("config")
    free = Costs(0.0, 0.0, 0.0)
    result = backtest(cfg, market, costs=free, whole_shares=False)
    expected, _, _ = simulate_by_hand(StrategySettings.from_config(cfg), market, free, 1e5, False)
    assert ((result.equity / expected - 1).abs() < RELATIVE).all()
    assert result.trades["commission"].sum() == 0.0


def test_backtest_when_serialised_is_json_without_nan(market):
    result = backtest(template("gem"), market)
    text = json.dumps(result.to_dict(), allow_nan=False)
    data = json.loads(text)
    assert set(data["metrics"]) == {
        "cagr", "volatility", "sharpe", "max_drawdown", "turnover", "final_equity"
    }  # fmt: skip
    assert len(data["decisions"]) == len(result.decisions) == 48
    assert data["decisions"][0]["session"] == "2013-01-31"
    assert "CAGR" in result.summary()
    assert 0 <= result.max_drawdown < 1 and result.final_equity == result.equity.iat[-1]


def test_backtest_when_history_too_short_refuses(market):
    with pytest.raises(ResearchError, match="months of history"):
        backtest(template("config"), market, end=date(2012, 11, 30))


def test_backtest_when_a_symbol_has_no_bars_names_it(market):
    bars = {s: f for s, f in market.items() if s != "BIL"}
    with pytest.raises(ResearchError, match="BIL"):
        backtest(template("config"), bars)


def test_backtest_when_a_held_symbol_misses_its_execution_open_names_it(market):
    cfg = template("gem")
    held = next(d for d in backtest(cfg, market).decisions if d["selection"] == ["SPY"])
    day = pd.Timestamp(held["execution"])
    bars = {**market, "SPY": market["SPY"].drop(index=[day])}
    with pytest.raises(ResearchError, match=f"SPY has no usable open on {day.date()}"):
        backtest(cfg, bars)
    with pytest.raises(ResearchError, match="SPY has no usable open"):
        sweep(cfg, {"top_n": [1]}, bars)


def test_load_research_config_when_given_a_template_or_path_keeps_the_workbook(tmp_path):
    init_workbook(tmp_path, template="demo")
    cfg = load_config(tmp_path)
    gem = research.load_research_config(cfg, "gem")
    assert gem.values["universe"]["risk"] == ["SPY", "VEU"] and gem.workbook == cfg.workbook
    assert gem.values["paths"] == cfg.values["paths"] and gem.values["data"] == cfg.values["data"]
    (tmp_path / "mine.yaml").write_text(read_config_text(TEMPLATES / "topn.yaml"))
    assert research.load_research_config(cfg, "mine.yaml").values["strategy"]["top_n"] == 3
    assert research.load_research_config(cfg, "") is cfg
    with pytest.raises(ResearchError, match="no config 'nope'"):
        research.load_research_config(cfg, "nope")


# -- sweep -------------------------------------------------------------------------------------


def check_rows_against_backtest(table, base, market, **kwargs) -> None:
    combos, _ = compute_grid_settings(base, kwargs.pop("grid"))
    assert len(combos) == len(table)
    for n, settings in enumerate(combos):
        result = backtest(settings, market, start=table["start"].iat[n], **kwargs)
        for name, value in result.metrics().items():
            assert close_to(table[name].iat[n], value), (n, name, table.iloc[n].to_dict())


@pytest.mark.slow
def test_sweep_when_compared_with_backtest_metrics_agree(market):
    cfg = template("config")
    grid = {"lookback_months": [6, 12], "skip_months": [0, 1], "top_n": [1, 3],
            "absolute_momentum": [True, False], "defensive": ["AGG", "IEF"]}  # fmt: skip
    table = sweep(cfg, grid, market)
    assert len(table) == 32
    assert (table["start"] == "2013-01-31").all()  # every combination on the same month-ends
    picks = table.iloc[[0, 7, 13, 22, 31]]
    base = StrategySettings.from_config(cfg)
    for _, row in picks.iterrows():
        months = int(row["lookback_months"])
        settings = dataclasses.replace(
            base, lookbacks=((months, 1.0),), skip_months=int(row["skip_months"]),
            top_n=int(row["top_n"]), absolute_momentum=bool(row["absolute_momentum"]),
            defensive=row["defensive"],
        )  # fmt: skip
        result = backtest(settings, market, start=row["start"])
        for name, value in result.metrics().items():
            assert close_to(row[name], value), (name, row.to_dict())


@pytest.mark.slow
def test_sweep_when_base_is_a_blend_keeps_the_blend_and_agrees(market):
    cfg = template("topn")  # 3/6/12 blend, top 3 of 8, each filtered against BIL
    grid = {"top_n": [1, 3], "absolute_momentum": [True, False]}
    table = sweep(cfg, grid, market, whole_shares=False)
    assert list(table["lookback_months"].unique()) == ["3+6+12"]
    check_rows_against_backtest(
        table, StrategySettings.from_config(cfg), market, grid=grid, whole_shares=False
    )


@pytest.mark.slow  # 1.5 s or more: left out of make test-fast
def test_sweep_when_benchmark_compare_agrees_with_backtest(market):
    cfg = template("gem")
    grid = {"lookback_months": [3, 12], "defensive": ["AGG", "TLT"]}
    table = sweep(cfg, grid, market)
    check_rows_against_backtest(table, StrategySettings.from_config(cfg), market, grid=grid)


def test_sweep_when_combination_impossible_leaves_it_out(market):
    grid = {"lookback_months": [1, 3], "skip_months": [0, 1]}
    table = sweep(template("config"), grid, market, start=date(2015, 1, 1))
    assert len(table) == 3  # 1 month skipping 1 is not a lookback
    assert not ((table["lookback_months"] == 1) & (table["skip_months"] == 1)).any()


def test_sweep_when_every_combination_impossible_refuses(market):
    with pytest.raises(ResearchError, match="impossible"):
        sweep(template("gem"), {"top_n": [3, 4]}, market)


@pytest.mark.parametrize("chunk", [1, 3, 7])
def test_sweep_when_chunked_small_gives_the_whole_sweep_bit_for_bit(market, chunk):
    cfg = template("config")
    grid = {"lookback_months": [3, 12], "skip_months": [0, 1], "top_n": [1, 2],
            "absolute_momentum": [True, False]}  # fmt: skip
    whole = sweep(cfg, grid, market, start=date(2014, 1, 1), chunk=10_000)
    chunked = sweep(cfg, grid, market, start=date(2014, 1, 1), chunk=chunk)
    assert len(whole) == 16
    pd.testing.assert_frame_equal(chunked, whole, check_exact=True)


@pytest.mark.parametrize(
    "grid",
    [
        {"trend_length": [0, 4, 10], "trend_basis": ["months", "sessions"]},
        {"trend_length": [6], "trend_fast": [1, 2], "failed_slot": ["defensive", "cash"]},
        {"weighting": ["equal", "inverse_volatility"], "volatility_sessions": [20, 63],
         "weight_cap": [0.4, 1.0]},
    ],
    ids=["trend-months-and-sessions", "trend-fast-failed-slot-cash", "inverse-volatility-cap"],
)  # fmt: skip
@pytest.mark.slow
def test_sweep_when_grid_varies_rules_agrees_with_backtest(market, grid):
    cfg = template("topn")  # 3/6/12 blend, top 3 of 8: a trend failure, a cap that spills
    table = sweep(cfg, grid, market)
    assert set(grid) <= set(table.columns)
    check_rows_against_backtest(table, StrategySettings.from_config(cfg), market, grid=grid)


@pytest.mark.parametrize(
    "changes",
    [{}, {"absolute_compare": "benchmark", "benchmark": "SPY"}],
    ids=["each", "benchmark"],
)
@pytest.mark.slow
def test_sweep_when_the_trend_filter_is_vectorized_equals_its_decisions_bit_for_bit(
    market, monkeypatch, changes
):
    """The trend filter (on months and on sessions) applied to the vectorized slots against the
    same grid taken from the strategy's own decisions, combination by combination; and against
    backtests."""
    base = dataclasses.replace(StrategySettings.from_config(template("topn")), **changes)
    grid = {"trend_length": [0, 3, 10], "trend_basis": ["months", "sessions"],
            "trend_fast": [1, 2], "top_n": [1, 3], "defensive": ["IEF", "AGG"]}  # fmt: skip
    decided = []
    original = sweep_module.compute_decided_weights
    monkeypatch.setattr(sweep_module, "compute_decided_weights",
                        lambda s, *rest: decided.append(s) or original(s, *rest))  # fmt: skip
    fast = sweep(base, grid, market)
    # Only a trend basis or fast average without a trend length (rules in use, but no filter)
    # is still decided.
    combos, _ = compute_grid_settings(base, grid)
    assert decided == [c for c in combos if c.trend_length == 0 and c.rules_in_use()]
    monkeypatch.setattr(sweep_module, "_slot_rules_alone", lambda settings: False)
    slow = sweep(base, grid, market)
    assert len(fast) == 48 and len(decided) == 12 + 44
    pd.testing.assert_frame_equal(fast, slow, check_exact=True)
    check_rows_against_backtest(fast, base, market, grid=grid)


@pytest.mark.slow
def test_sweep_when_slots_are_weighed_by_rules_equals_their_decisions_bit_for_bit(
    market, monkeypatch
):
    """Inverse volatility, caps and a failed slot in cash, with and without the trend filter,
    weighed on the sweep's own slots against the same grid taken from the strategy's own
    decisions, combination by combination; and against backtests."""
    base = StrategySettings.from_config(template("topn"))
    grid = {"weighting": ["equal", "inverse_volatility"], "volatility_sessions": [21, 63],
            "weight_cap": [0.4, 1.0], "failed_slot": ["defensive", "cash"],
            "trend_length": [0, 6]}  # fmt: skip
    decided = []
    original = sweep_module.compute_decided_weights
    monkeypatch.setattr(sweep_module, "compute_decided_weights",
                        lambda s, *rest: decided.append(s) or original(s, *rest))  # fmt: skip
    fast = sweep(base, grid, market)
    assert decided == []
    monkeypatch.setattr(sweep_module, "_slot_rules_alone", lambda settings: False)
    slow = sweep(base, grid, market)
    assert len(fast) == 32 and len(decided) == 32 - 1  # all but the one without a rule
    pd.testing.assert_frame_equal(fast, slow, check_exact=True)
    check_rows_against_backtest(fast, base, market, grid=grid)


@pytest.mark.slow
def test_sweep_when_base_has_canaries_sweeps_their_breadth_and_agrees(market):
    base = dataclasses.replace(
        StrategySettings.from_config(template("topn")), canary=("EEM", "AGG"), top_n=2
    )
    grid = {"canary_breadth": [1, 2], "absolute_momentum": [True, False]}
    table = sweep(base, grid, market)
    assert list(table["canary"].unique()) == ["EEM+AGG"]
    check_rows_against_backtest(table, base, market, grid=grid)


@pytest.mark.parametrize(
    ("grid", "needs"),
    [({"trend_length": [0, 16]}, "months"), ({"weighting": ["inverse_volatility"],
      "volatility_sessions": [300]}, "sessions")],
    ids=["trend-15-months-back", "volatility-300-sessions"],
)  # fmt: skip
def test_sweep_when_a_rule_needs_more_history_starts_where_every_combination_can(
    market, grid, needs
):
    cfg = template("gem")  # 12-month lookback: the rule reaches further back
    base = StrategySettings.from_config(cfg)
    table = sweep(cfg, grid, market)
    longest = dataclasses.replace(base, **{k: v[-1] for k, v in grid.items()})
    alone = backtest(longest, market)  # its own first decision: no sooner than its history
    assert table["start"].iat[0] == alone.decisions[0]["session"] > "2013-01-31"
    check_rows_against_backtest(table, base, market, grid=grid)


@pytest.mark.slow
def test_sweep_when_base_offsets_its_signal_decides_on_the_signal_sessions(market):
    base = dataclasses.replace(
        StrategySettings.from_config(template("topn")), signal_offset=-1, trend_length=10
    )
    grid = {"trend_length": [6, 10], "top_n": [2, 3]}
    table = sweep(base, grid, market, start=date(2014, 1, 1))
    assert set(table["signal_offset"]) == {-1}
    first = backtest(base, market, start=date(2014, 1, 1)).decisions[0]
    assert table["start"].iat[0] == first["session"] and first["execution"] == "2014-01-31"
    check_rows_against_backtest(table, base, market, grid=grid)


def test_sweep_when_grid_offsets_the_signal_refuses_in_one_line(market):
    with pytest.raises(ResearchError, match="signal_offset is not swept") as caught:
        sweep(template("gem"), {"signal_offset": [0, -1]}, market)
    assert "research.backtest" in str(caught.value) and "\n" not in str(caught.value)


@pytest.mark.parametrize("chunk", [1, 3, 7])
def test_sweep_when_chunked_small_with_rule_combinations_gives_the_whole_sweep(market, chunk):
    cfg = template("config")
    grid = {"trend_length": [0, 6], "failed_slot": ["defensive", "cash"], "top_n": [1, 2]}
    whole = sweep(cfg, grid, market, start=date(2014, 1, 1), chunk=10_000)
    chunked = sweep(cfg, grid, market, start=date(2014, 1, 1), chunk=chunk)
    assert len(whole) == 8
    pd.testing.assert_frame_equal(chunked, whole, check_exact=True)


def test_sweep_when_chunk_is_below_one_refuses(market):
    with pytest.raises(ResearchError, match="at least 1"):
        sweep(template("gem"), {"top_n": [1]}, market, chunk=0)


def test_sweep_when_a_later_chunk_misses_an_earlier_open_names_the_earliest(market):
    cfg = template("gem")
    decisions = backtest(cfg, market).decisions
    agg = next(d for d in decisions if d["selection"] == ["AGG"])
    spy = next(d for d in decisions if d["selection"] == ["SPY"] and d["session"] > agg["session"])
    bars = {**market, "SPY": market["SPY"].drop(index=[pd.Timestamp(spy["execution"])]),
            "TLT": market["TLT"].drop(index=[pd.Timestamp(agg["execution"])])}  # fmt: skip
    grid = {"defensive": ["AGG", "TLT"]}  # the second chunk holds TLT where the first held AGG
    with pytest.raises(ResearchError) as whole:
        sweep(cfg, grid, bars, chunk=2)
    with pytest.raises(ResearchError) as chunked:
        sweep(cfg, grid, bars, chunk=1)
    assert str(chunked.value) == str(whole.value)
    assert f"TLT has no usable open on {agg['execution']}" in str(whole.value)


def test_sweep_chunk_when_memory_is_given_fits_a_quarter_of_it():
    each = 14 * 228 * sweep_module.SIMULATION_BYTES + 5033 * sweep_module.MARK_BYTES
    assert compute_sweep_chunk(14, 228, 5033, available=4 * 100 * each) == 100
    assert compute_sweep_chunk(14, 228, 5033, available=10) == 1
    assert compute_sweep_chunk(14, 228, 5033, available=2**50) == sweep_module.MAX_CHUNK
    assert compute_sweep_chunk(14, 228, 5033) >= 1  # the machine's own memory


def test_sweep_tie_keys_when_a_score_sits_on_a_half_round_as_the_strategy_does():
    halves = [(k + 0.5) / 1e4 for k in range(-300, 300)]
    near = [math.nextafter(v, d) for v in halves for d in (-1.0, 1.0)]
    scores = [0.0, -0.0, 0.00005, -0.00005, 0.00015, 1.23445, 12.5, -0.99995, *halves, *near]
    keys = sweep_module._tie_keys(np.array(scores).reshape(-1, 2))
    expected = [int(compute_tie_key(v).scaleb(4)) for v in scores]
    assert keys.ravel().tolist() == expected


# -- grid files --------------------------------------------------------------------------------


def test_load_grid_when_valid_returns_lists(tmp_path):
    path = tmp_path / "grid.yaml"
    path.write_text(
        "lookback_months: [3, 6, 9, 12]\nskip_months: [0, 1]\ntop_n: [1, 2, 3]\n"
        "absolute_momentum: [true, false]\ndefensive: [AGG, IEF]\n"
    )
    grid = load_grid(path)
    assert grid["defensive"] == ["AGG", "IEF"] and grid["absolute_momentum"] == [True, False]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("lookbacks: [3, 6]\n", "unknown key 'lookbacks'; known keys: lookback_months"),
        ("top_n: 3\n", "top_n: write a non-empty list"),
        ("top_n: [1, two]\n", "top_n: 'two' is not a valid int"),
        ("absolute_momentum: [yes, 0]\n", "absolute_momentum: 0 is not a valid bool"),
        ("defensive: [agg]\n", "defensive: 'agg' is not a valid symbol"),
        ("skip_months: [0, 0]\n", "listed twice"),
        ("[1, 2]\n", "expected a mapping"),
        ("top_n: [1\n", "not valid YAML"),
        # the rules' keys
        ("trend_length: [-1]\n", "trend_length: -1 is not a valid int"),
        ("trend_basis: [weeks]\n", "trend_basis: 'weeks' is not one of months, sessions"),
        ("trend_fast: [0, 2]\n", "trend_fast: 0 is not a valid int of at least 1"),
        ("failed_slot: [bonds]\n", "failed_slot: 'bonds' is not one of defensive, cash"),
        ("canary_breadth: [0]\n", "canary_breadth: 0 is not a valid int of at least 1"),
        ("weighting: [risk_parity]\n", "weighting: 'risk_parity' is not one of equal"),
        ("volatility_sessions: [1]\n", "volatility_sessions: 1 is not a valid int of at least 2"),
        ("weight_cap: [0.5, 1.5]\n", "weight_cap: 1.5 is not a valid fraction above 0"),
        ("weight_cap: [true]\n", "weight_cap: True is not a valid fraction"),
        ("signal_offset: [0, -1]\n", "signal_offset is not swept"),
    ],
)
def test_load_grid_when_invalid_refuses_with_one_line(tmp_path, text, message):
    path = tmp_path / "grid.yaml"
    path.write_text(text)
    with pytest.raises(ResearchError, match="grid error") as caught:
        load_grid(path)
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_grid_settings_when_rule_combination_impossible_leaves_it_out():
    base = StrategySettings.from_config(template("daa"))  # two canaries
    grid = {"canary_breadth": [1, 2, 3], "trend_length": [0, 2], "trend_fast": [1, 2]}
    combos, impossible = compute_grid_settings(base, grid)
    # breadth 3 of 2 canaries (4 combinations), and fast 2 on a 2-point trend (2 more)
    assert impossible == 6
    assert {(c.canary_breadth, c.trend_length, c.trend_fast) for c in combos} == {
        (1, 0, 1), (1, 0, 2), (2, 0, 1), (2, 0, 2), (1, 2, 1), (2, 2, 1)
    }  # fmt: skip


def test_costs_when_order_is_small_charge_the_minimum():
    costs = Costs(commission_per_share=0.005, commission_min=1.0, slippage_bps=2.0)
    assert costs.commission(100) == 1.0 and costs.commission(1000) == 5.0


@pytest.mark.subprocess
def test_research_when_imported_leaves_vectorbt_unloaded():
    code = "import sys, ops_runner.strategy.research; print('vectorbt' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"


# -- notebooks ---------------------------------------------------------------------------------


def count_images(path: Path) -> int:
    cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
    return sum("image/png" in o.get("data", {}) for c in cells for o in c.get("outputs", []))


@pytest.mark.notebook
def test_backtest_notebook_when_run_on_sample_records_metrics(sample_workbook, tmp_path):
    from ops_runner.runtime.notebooks import run_notebook

    out = tmp_path / "runs" / "backtest.ipynb"
    params = {"workbook": str(sample_workbook), "config": "gem", "start": "2015-01-01",
              "end": "2019-12-31"}  # fmt: skip
    run = run_notebook("research/backtest", out, params)
    assert run.completion["job"] == "research/backtest"
    metrics = run.scraps["metrics"]
    expected = backtest(
        load_config_text(read_config_text(TEMPLATES / "gem.yaml"), sample_workbook),
        generate_sample_market(["SPY", "VEU", "AGG", "BIL"]),
        start=date(2015, 1, 1), end=date(2019, 12, 31),
    )  # fmt: skip
    assert metrics == pytest.approx(expected.metrics(), rel=RELATIVE)
    assert run.completion["decisions"] == len(expected.decisions) == 60
    assert count_images(out) >= 3  # equity, drawdown, monthly heatmap


@pytest.mark.notebook
def test_sweep_notebook_when_run_with_a_grid_file_records_the_table(sample_workbook, tmp_path):
    from ops_runner.runtime.notebooks import run_notebook

    grid = tmp_path / "grid.yaml"
    grid.write_text("lookback_months: [6, 12]\ntop_n: [1, 2]\n")
    out = tmp_path / "sweep.ipynb"
    params = {"workbook": str(sample_workbook), "start": "2018-01-01", "grid": str(grid)}
    run = run_notebook("research/sweep", out, params)
    table = run.scraps["table"]
    assert len(table) == 4 and {row["top_n"] for row in table} == {1, 2}
    assert run.completion["combinations"] == 4
    assert count_images(out) >= 2  # Sharpe and CAGR heatmaps


@pytest.mark.slow
def test_warmup_when_run_fills_the_numba_cache_and_writes_nothing_else(tmp_path, monkeypatch):
    import vectorbt  # here, not at the top: 3 s that collection in every worker need not pay

    monkeypatch.chdir(tmp_path)
    assert warm() > 0
    assert list(tmp_path.iterdir()) == []  # a research run in memory: no workbook, no file
    cache = Path(vectorbt.__file__).parent / "portfolio" / "__pycache__"
    assert sorted(cache.glob("nb.*.nbi")), "from_orders' Numba functions were not cached"
