"""Walk-forward on the real Alpha Vantage ETF histories (skipped without ../shared/data)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ops_runner.market.calendar import MarketCalendar
from ops_runner.market.sources import read_path
from ops_runner.strategy.momentum import StrategySettings
from ops_runner.strategy.research import backtest
from ops_runner.strategy.walk_forward import walk_forward

pytestmark = [pytest.mark.realdata, pytest.mark.slow]

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
SYMBOLS = ("SPY", "EFA", "EEM", "IWM", "QQQ", "AGG", "SHY")
BASE = StrategySettings(
    name="rotation", risk=("SPY", "EFA", "EEM", "IWM", "QQQ"), defensive="AGG",
    cash_proxy="SHY", lookbacks=((12, 1.0),), skip_months=0, top_n=1, absolute_momentum=True,
    absolute_compare="each", benchmark="SPY",
)  # fmt: skip
GRID = {"lookback_months": [3, 6, 9, 12], "top_n": [1, 2], "absolute_momentum": [True, False]}
CALENDAR = MarketCalendar()


@pytest.fixture(scope="module")
def bars() -> dict[str, pd.DataFrame]:
    if not (DATA / "alphavantage").is_dir():
        pytest.skip(f"real data not present at {DATA} (it lives beside the project, not in it)")
    return {s: read_path(DATA / "alphavantage" / f"{s}.csv", "alphavantage")[0].bars
            for s in SYMBOLS}  # fmt: skip


@pytest.fixture(scope="module")
def run(bars):
    return walk_forward(BASE, GRID, bars, train_years=3, test_months=12, calendar=CALENDAR)


def test_walk_forward_when_on_alphavantage_tiles_the_test_windows(run):
    steps = run.steps
    # AGG (2003-09-26) is the youngest; with 12 months of history the first month-end is
    # 2004-09-30, so the first test window opens three years later.
    assert steps["train_start"].iat[0] == "2004-09-30"
    assert steps["test_start"].iat[0] == "2007-09-28"
    assert (steps["test_start"] == steps["train_end"]).all()
    assert (steps["test_start"].iloc[1:].to_numpy() == steps["test_end"].iloc[:-1].to_numpy()).all()
    expected = pd.DatetimeIndex(CALENDAR.sessions(steps["test_start"].iat[0],
                                                  steps["test_end"].iat[-1]))[1:]  # fmt: skip
    assert run.returns.index.equals(expected)
    assert run.returns.index[-1] <= pd.Timestamp("2020-12-11")


def test_walk_forward_when_on_alphavantage_metrics_recompute_from_the_returns(bars, run):
    for row in run.steps.itertuples():
        window = run.returns[(run.returns.index > row.test_start)
                             & (run.returns.index <= row.test_end)]  # fmt: skip
        by_hand = window.mean() / window.std(ddof=1) * math.sqrt(252)
        assert row.out_of_sample == pytest.approx(by_hand, rel=1e-9)
    last = run.steps.iloc[-1]
    chosen = StrategySettings(**{
        **BASE.__dict__, "lookbacks": ((int(last["lookback_months"]), 1.0),),
        "top_n": int(last["top_n"]), "absolute_momentum": bool(last["absolute_momentum"]),
    })  # fmt: skip
    again = backtest(chosen, bars, start=last["train_start"], end=last["train_end"],
                     calendar=CALENDAR)  # fmt: skip
    assert last["in_sample"] == pytest.approx(again.sharpe, rel=1e-9)
    equity = run.equity.iat[0] * np.prod(1.0 + run.returns.to_numpy())
    assert run.equity.iat[-1] == pytest.approx(equity, rel=1e-12)


def test_walk_forward_when_on_alphavantage_reports_dsr_and_pbo(run):
    assert run.grid_returns.shape[1] == 16
    assert 0.0 <= run.deflated_sharpe.probability <= 1.0
    assert run.deflated_sharpe.trials == run.overfitting.strategies <= 16
    assert 0.0 <= run.overfitting.probability <= 1.0
    assert len(run.overfitting.logits) == math.comb(16, 8)
