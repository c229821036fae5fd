"""Walk-forward research: windows by hand, a constructed market whose best lookback is known,
no look-ahead, and the overfitting figures recomputed from the returned returns."""

from __future__ import annotations

import math
from datetime import date

import numpy as np
import pandas as pd
import pytest

from ops_runner.market.calendar import MarketCalendar
from ops_runner.market.sources.sample import generate_sample_market
from ops_runner.strategy.momentum import StrategySettings
from ops_runner.strategy.research import ResearchError, backtest
from ops_runner.strategy.walk_forward import (
    compute_annual_sharpe,
    compute_walk_forward_windows,
    walk_forward,
)

CALENDAR = MarketCalendar()
NO_COSTS = {"commission_per_share": 0.0, "commission_min": 0.0, "slippage_bps": 0.0}
OPTIONS = {"costs": NO_COSTS, "calendar": CALENDAR, "initial_cash": 100_000.0,
           "whole_shares": False}  # fmt: skip


def settings(risk=("A", "B"), defensive="C", cash_proxy=None) -> StrategySettings:
    return StrategySettings(
        name="rotation", risk=risk, defensive=defensive, cash_proxy=cash_proxy,
        lookbacks=((12, 1.0),), skip_months=0, top_n=1, absolute_momentum=False,
        absolute_compare="each", benchmark=None,
    )  # fmt: skip


def test_windows_when_counted_by_hand_tile_the_test_months():
    ends = [date(2020, m, 28) for m in range(1, 11)]  # ten month-ends, index 0..9
    # train 3, test 2: (0, 3, 5), (2, 5, 7), (4, 7, 9); a fourth would need index 11
    assert compute_walk_forward_windows(ends, 3, 2) == [
        (ends[0], ends[3], ends[5]),
        (ends[2], ends[5], ends[7]),
        (ends[4], ends[7], ends[9]),
    ]
    assert compute_walk_forward_windows(ends, 8, 2) == []
    with pytest.raises(ResearchError, match="at least 1"):
        compute_walk_forward_windows(ends, 0, 2)


# -- a market where the one-month lookback is right five months in six ----------------------------


def leadership_market(start: date, end: date) -> dict[str, pd.DataFrame]:
    """A and B trade the lead every six calendar months (+0.3% a session for the leader, -0.3%
    for the other); C earns 0.01% a session. Opens are the previous close.

    Deciding on month-end t, a one-month lookback sees the new leader from the first month-end
    of its regime on: wrong only in the month after a switch (5 of 6 right). Three months are
    wrong for two months (4 of 6); twelve see a whole cycle, a tie kept by A (3 of 6). So one
    month is the best lookback on any training window of whole years.
    """
    sessions = pd.DatetimeIndex(CALENDAR.sessions(start, end), name="date")
    a_leads = ((sessions.year * 12 + sessions.month - 1) // 6) % 2 == 0
    daily = {"A": np.where(a_leads, 0.003, -0.003), "B": np.where(a_leads, -0.003, 0.003),
             "C": np.full(len(sessions), 0.0001)}  # fmt: skip
    market = {}
    for symbol, moves in daily.items():
        close = 100.0 * np.cumprod(1.0 + moves)
        open_ = np.concatenate([[100.0], close[:-1]])
        market[symbol] = pd.DataFrame(
            {"open": open_, "high": np.maximum(open_, close), "low": np.minimum(open_, close),
             "close": close, "volume": 1e6, "dividend": 0.0, "split": 1.0},
            index=sessions,
        )  # fmt: skip
    return market


@pytest.mark.slow
def test_walk_forward_when_one_lookback_is_best_chooses_it_every_window():
    market = leadership_market(date(2014, 1, 2), date(2018, 12, 31))
    grid = {"lookback_months": [1, 3, 12]}
    found = walk_forward(settings(), grid, market, train_years=1, test_months=6,
                         overfitting=False, **OPTIONS)  # fmt: skip
    assert len(found.steps) >= 4
    assert (found.steps["lookback_months"] == 1).all()
    # Out of sample it is right five months in six as well: its Sharpe stays high.
    assert (found.steps["out_of_sample"] > 3).all()


# -- no look-ahead, structure and recomputation on the sample market ------------------------------

SAMPLE_BASE = settings(risk=("SPY", "EFA", "EEM", "QQQ"), defensive="AGG", cash_proxy="BIL")
SAMPLE_GRID = {"lookback_months": [3, 6, 12], "top_n": [1, 2]}


@pytest.fixture(scope="module")
def sample() -> dict[str, pd.DataFrame]:
    return generate_sample_market(start=date(2010, 1, 4), end=date(2016, 12, 30))


@pytest.fixture(scope="module")
def sample_run(sample):
    return walk_forward(SAMPLE_BASE, SAMPLE_GRID, sample, train_years=2, test_months=12,
                        blocks=8, **OPTIONS)  # fmt: skip


def test_walk_forward_when_prices_after_a_training_window_change_keeps_that_choice(
    sample, sample_run
):
    first = sample_run.steps.iloc[0]
    cut = pd.Timestamp(first["train_end"])
    rng = np.random.default_rng(5)
    changed = {}
    for symbol, frame in sample.items():
        later = frame.index > cut
        shock = np.cumprod(1.0 + rng.normal(0.0, 0.03, int(later.sum())))  # a different future
        frame = frame.copy()
        for column in ("open", "high", "low", "close"):
            frame.loc[later, column] = frame.loc[later, column] * shock
        changed[symbol] = frame
    again = walk_forward(SAMPLE_BASE, SAMPLE_GRID, changed, train_years=2, test_months=12,
                         overfitting=False, **OPTIONS)  # fmt: skip
    kept = again.steps.iloc[0]
    assert kept["combination"] == first["combination"]
    # Equal but for rounding: prices are back-adjusted by every later dividend's factor, and a
    # later close changes that factor, scaling every earlier price alike (returns unchanged).
    assert kept["in_sample"] == pytest.approx(first["in_sample"], rel=1e-12)
    assert kept["out_of_sample"] != first["out_of_sample"]  # the future did change


def check_structure(found, metric: str = "sharpe") -> None:
    """Windows contiguous, out-of-sample returns exactly the test windows' sessions, and each
    window's out-of-sample metric recomputed from the stitched returns."""
    steps = found.steps
    assert (steps["test_start"] == steps["train_end"]).all()
    assert (steps["test_start"].iloc[1:].to_numpy() == steps["test_end"].iloc[:-1].to_numpy()).all()
    first, last = steps["test_start"].iat[0], steps["test_end"].iat[-1]
    expected = pd.DatetimeIndex(CALENDAR.sessions(first, last))[1:]
    assert found.returns.index.equals(expected)
    assert found.equity.iat[0] == 100_000.0
    assert found.equity.index[0] == pd.Timestamp(first)
    for row in steps.itertuples():
        window = found.returns[(found.returns.index > row.test_start)
                               & (found.returns.index <= row.test_end)]  # fmt: skip
        if metric == "sharpe":
            by_hand = window.mean() / window.std(ddof=1) * math.sqrt(252)
            assert row.out_of_sample == pytest.approx(by_hand, rel=1e-9)


def test_walk_forward_when_run_on_sample_has_contiguous_windows_and_recomputable_metrics(
    sample_run,
):
    check_structure(sample_run)
    assert sample_run.steps["step"].tolist() == list(range(1, len(sample_run.steps) + 1))


def test_walk_forward_when_checked_against_a_backtest_of_the_choice_agrees(sample, sample_run):
    # In sample: the sweep's figure is the chosen combination's own backtest on the window.
    row = sample_run.steps.iloc[1]
    chosen = StrategySettings(
        **{**SAMPLE_BASE.__dict__, "lookbacks": ((int(row["lookback_months"]), 1.0),),
           "top_n": int(row["top_n"])}
    )  # fmt: skip
    again = backtest(chosen, sample, start=row["train_start"], end=row["train_end"], **OPTIONS)
    assert row["in_sample"] == pytest.approx(again.sharpe, rel=1e-9)


def test_walk_forward_when_overfitting_asked_recomputes_from_grid_returns(sample_run):
    grid_returns = sample_run.grid_returns
    assert grid_returns.shape[1] == 6
    assert grid_returns.index[-1] == pd.Timestamp(sample_run.steps["test_end"].iat[-1])
    sharpes = grid_returns.mean() / grid_returns.std()
    best = sharpes.idxmax()
    assert tuple(sample_run.best.values()) == best
    assert sample_run.deflated_sharpe.sharpe == pytest.approx(sharpes.max(), rel=1e-12)
    assert compute_annual_sharpe(grid_returns[best]) == pytest.approx(
        sharpes.max() * math.sqrt(252), rel=1e-12
    )
    assert 0.0 <= sample_run.overfitting.probability <= 1.0
    assert len(sample_run.overfitting.logits) == math.comb(8, 4)
    record = sample_run.to_dict()
    assert record["pbo"] == sample_run.overfitting.probability
    assert len(record["steps"]) == len(sample_run.steps)
    assert "deflated Sharpe ratio" in sample_run.summary()


def test_walk_forward_when_history_is_too_short_refuses_with_one_line(sample):
    with pytest.raises(ResearchError, match="walk-forward needs"):
        walk_forward(SAMPLE_BASE, SAMPLE_GRID, sample, train_years=6, test_months=12, **OPTIONS)


def test_walk_forward_when_metric_unknown_refuses_with_one_line(sample):
    with pytest.raises(ResearchError, match="no metric 'alpha'"):
        walk_forward(SAMPLE_BASE, SAMPLE_GRID, sample, metric="alpha", **OPTIONS)


def test_charts_when_drawn_show_every_window_and_only_the_parameters_that_changed(sample_run):
    import matplotlib

    matplotlib.use("Agg")
    from ops_runner.reports import walk_forward as charts

    steps = sample_run.steps
    bars = charts.plot_in_and_out_of_sample(steps)
    assert len(bars.axes[0].patches) == 2 * len(steps)
    chosen = charts.plot_chosen_parameters(steps)
    varied = [k for k in ("lookback_months", "top_n") if steps[k].nunique() > 1]
    assert len(chosen.axes) == max(1, len(varied))
    line = chosen.axes[0].lines[0]
    assert len(line.get_xdata()) == len(steps) + 1  # the last choice drawn to its window's end
