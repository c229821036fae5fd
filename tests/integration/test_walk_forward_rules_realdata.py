"""Walk-forward of GTAA-5 (templates/gtaa5.yaml) over its trend filter's length on the real Yahoo
files: each window's choice checked against each candidate's own backtest on that window
(skipped without ../shared/data/yahoo)."""

from __future__ import annotations

import dataclasses
import math
from datetime import date
from pathlib import Path

import pandas as pd
import pytest

from ops_runner.market.calendar import MarketCalendar
from ops_runner.market.sources import read_path
from ops_runner.strategy.momentum import StrategySettings
from ops_runner.strategy.research import Costs, backtest
from ops_runner.strategy.walk_forward import WalkForwardResult, walk_forward
from ops_runner.workbook.config import TEMPLATES, load_config_text, read_config_text

pytestmark = [pytest.mark.realdata, pytest.mark.slow]  # whole vendor histories

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "yahoo"
GRID = {"trend_length": [4, 10]}
START, END = date(2010, 1, 1), date(2017, 12, 29)
CALENDAR = MarketCalendar()


@pytest.fixture(scope="module")
def gtaa() -> tuple[StrategySettings, Costs, dict[str, pd.DataFrame]]:
    if not DATA.is_dir():
        pytest.skip(f"real data not present at {DATA} (it lives beside the project, not in it)")
    path = TEMPLATES / "gtaa5.yaml"
    cfg = load_config_text(read_config_text(path), Path("."), path)
    settings = StrategySettings.from_config(cfg)
    bars = {s: read_path(DATA / f"{s}.csv", "yahoo")[0].bars for s in settings.symbols()}
    return settings, Costs.from_config(cfg.values), bars


@pytest.fixture(scope="module")
def run(gtaa) -> WalkForwardResult:
    settings, costs, bars = gtaa
    return walk_forward(settings, GRID, bars, train_years=3, test_months=12, start=START,
                        end=END, costs=costs, calendar=CALENDAR, overfitting=False)  # fmt: skip


def test_walk_forward_when_gtaa5_over_trend_length_chooses_each_windows_best_backtest(gtaa, run):
    settings, costs, bars = gtaa
    steps = run.steps
    assert len(steps) >= 3 and {"trend_length", "signal_offset"} <= set(steps.columns)
    for row in steps.itertuples():
        sharpe = {
            n: backtest(dataclasses.replace(settings, trend_length=n), bars,
                        start=row.train_start, end=row.train_end, costs=costs,
                        calendar=CALENDAR).sharpe
            for n in GRID["trend_length"]
        }  # fmt: skip
        best = max(GRID["trend_length"], key=lambda n: (sharpe[n], -GRID["trend_length"].index(n)))
        assert row.trend_length == best and row.signal_offset == -1, (row, sharpe)
        assert math.isclose(row.in_sample, sharpe[best], rel_tol=1e-9)


def test_walk_forward_when_gtaa5_over_trend_length_stitches_the_chosen_backtests(gtaa, run):
    settings, costs, bars = gtaa
    for row in run.steps.itertuples():
        chosen = dataclasses.replace(settings, trend_length=row.trend_length)
        tested = backtest(chosen, bars, start=row.test_start, end=row.test_end, costs=costs,
                          calendar=CALENDAR)  # fmt: skip
        window = run.returns[(run.returns.index > tested.returns.index[0] - pd.Timedelta(days=1))
                             & (run.returns.index <= row.test_end)]  # fmt: skip
        pd.testing.assert_series_equal(window, tested.returns, check_names=False, rtol=1e-12)
        assert math.isclose(row.out_of_sample, tested.sharpe, rel_tol=1e-9)
