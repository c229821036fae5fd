"""GEM (SPY vs EFA, AGG defensive, BIL hurdle, 12 months) backtested on two vendors' real files.

The month-by-month selections must agree except where the vendors' data genuinely differ: a
month may disagree only when its deciding margin (benchmark vs hurdle, leader vs runner-up) is
within the vendors' own score difference, and such months must be few.
"""

from __future__ import annotations

import dataclasses
from datetime import date
from pathlib import Path

import pandas as pd
import pytest

from ops_runner.market.sources import read_path
from ops_runner.strategy.momentum import StrategySettings
from ops_runner.strategy.research import BacktestResult, Costs, backtest
from ops_runner.workbook.config import TEMPLATES, load_config_text, read_config_text

pytestmark = [pytest.mark.realdata, pytest.mark.slow]  # whole vendor histories

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
SYMBOLS = ("SPY", "EFA", "AGG", "BIL")
START, END = date(2008, 1, 1), date(2020, 11, 30)
MAX_DISAGREEMENTS = 3
TIE_RESOLUTION = 1e-4  # the strategy ranks scores at 0.01%


@pytest.fixture(scope="module")
def gem() -> tuple[StrategySettings, Costs]:
    path = TEMPLATES / "gem.yaml"
    cfg = load_config_text(read_config_text(path), Path("."), path)
    settings = dataclasses.replace(StrategySettings.from_config(cfg), risk=("SPY", "EFA"))
    assert settings.absolute_compare == "benchmark" and settings.benchmark == "SPY"
    return settings, Costs.from_config(cfg.values)


def run_vendor(folder: str, gem) -> BacktestResult:
    path = DATA / folder
    if not path.is_dir():
        pytest.skip(f"real data not present at {path} (it lives beside the project, not in it)")
    bars = {s: read_path(path / f"{s}.csv", folder)[0].bars for s in SYMBOLS}
    settings, costs = gem
    return backtest(settings, bars, start=START, end=END, costs=costs)


@pytest.fixture(scope="module")
def vendors(gem) -> dict[str, BacktestResult]:
    return {name: run_vendor(name, gem) for name in ("alphavantage", "yahoo")}


def deciding_margin(scores: dict[str, float]) -> float:
    """The smallest gap that decided a GEM month: SPY vs the BIL hurdle, SPY vs EFA."""
    return min(abs(scores["SPY"] - scores["BIL"]), abs(scores["SPY"] - scores["EFA"]))


def compare(vendors: dict[str, BacktestResult]) -> pd.DataFrame:
    """One row per month-end: both vendors' selection, scores, margin and score difference."""
    rows = []
    av, yh = (vendors[n].decisions for n in ("alphavantage", "yahoo"))
    for a, y in zip(av, yh, strict=True):
        diff = max(abs(a["scores"][s] - y["scores"][s]) for s in SYMBOLS)
        rows.append({
            "session": a["session"], "av": a["selection"][0], "yahoo": y["selection"][0],
            "av_scores": a["scores"], "yahoo_scores": y["scores"], "score_diff": diff,
            "margin": min(deciding_margin(a["scores"]), deciding_margin(y["scores"])),
        })  # fmt: skip
    return pd.DataFrame(rows).set_index("session")


def test_gem_when_backtested_on_both_vendors_decides_the_same_month_ends(vendors):
    sessions = {n: [d["session"] for d in r.decisions] for n, r in vendors.items()}
    assert sessions["alphavantage"] == sessions["yahoo"]
    # BIL starts 2007-05-30: the first month-end with 12 months of its history is 2008-05-30.
    assert sessions["yahoo"][0] == "2008-05-30" and sessions["yahoo"][-1] == "2020-11-30"
    assert len(sessions["yahoo"]) == 151


def test_gem_when_vendors_disagree_it_is_a_genuine_near_tie(vendors):
    table = compare(vendors)
    differ = table[table["av"] != table["yahoo"]]
    report = differ[["av", "yahoo", "av_scores", "yahoo_scores", "margin", "score_diff"]]
    assert len(differ) <= MAX_DISAGREEMENTS, report.to_string()
    for session, row in differ.iterrows():
        # Only a data difference at least as large as the margin can flip a decision.
        assert row["margin"] <= 2 * row["score_diff"] + TIE_RESOLUTION, (session, row.to_dict())
    # Everywhere else the vendors agree, and their scores are close on most months.
    agree = table[table["av"] == table["yahoo"]]
    assert len(agree) == len(table) - len(differ)
    assert table["score_diff"].median() < 1e-3


def test_gem_when_backtested_on_both_vendors_gives_close_results(vendors):
    av, yh = vendors["alphavantage"], vendors["yahoo"]
    assert abs(av.cagr - yh.cagr) < 0.002  # dividend conventions and prints differ slightly
    assert abs(av.max_drawdown - yh.max_drawdown) < 0.01
    assert av.equity.index.equals(yh.equity.index)
