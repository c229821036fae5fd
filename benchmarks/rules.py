"""What a rule costs a sweep: milliseconds per combination for a grid the sweep vectorizes, a
trend-filter grid (months and sessions) and an inverse-volatility grid, on the same data.

The topn template (8 risk assets, IEF defensive, BIL the hurdle, a 3/6/12-month blend) on the
synthetic sample market, 8 years (2017-2024). Every grid has 12 combinations. The sweep applies
the trend filter and the slot weighing (inverse volatility, caps, a failed slot in cash) to its
own slots (``sweep.SLOT_RULES``); a combination using another rule (a canary, a signal offset
in the base) takes ``compute_decision_series``, the strategy's own decisions, whose time per
decision is the second set of figures. Medians of several runs, after a warm-up (vectorbt's
Numba cache). No target: the figures say what a rule grid costs beside the vectorized one.

On the 2-core machine, before the rule grids were vectorized and the decision series' reads
batched (commit 1e615e4) and after: per combination, vectorized 6.4 -> 5.4 ms, trend on months
52 -> 4.4 ms, trend on sessions 426 -> 9.4 ms, inverse volatility 390 -> 18 ms; per decision,
no rule 0.26 -> 0.18 ms, trend on months 0.53 -> 0.28 ms, trend on sessions 6.6 -> 2.1 ms,
inverse volatility 4.6 -> 0.89 ms.
"""

from __future__ import annotations

import dataclasses
import statistics
import time
from datetime import date
from pathlib import Path
from typing import Any

from _figures import print_figures

START, END = date(2017, 1, 1), date(2024, 12, 31)
RUNS = 3
GRIDS: dict[str, dict[str, list[Any]]] = {
    "vectorized": {"lookback_months": [3, 6, 9, 12], "top_n": [1, 2, 3]},
    "trend on months": {"trend_length": [6, 8, 10, 12], "top_n": [1, 2, 3]},
    "trend on sessions": {
        "trend_basis": ["sessions"], "trend_length": [50, 100, 150, 200], "top_n": [1, 2, 3],
    },
    "inverse volatility": {
        "weighting": ["inverse_volatility"], "volatility_sessions": [21, 42, 63, 126],
        "top_n": [1, 2, 3],
    },
}  # fmt: skip
SERIES: dict[str, dict[str, Any]] = {
    "no rule": {},
    "trend on months": {"trend_length": 10},
    "trend on sessions": {"trend_length": 200, "trend_basis": "sessions"},
    "inverse volatility": {"weighting": "inverse_volatility"},
}


def median_seconds(call: Any) -> float:
    """The median wall time of RUNS calls of ``call``."""
    times = []
    for _ in range(RUNS):
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> int:
    from ops_runner.market.calendar import MarketCalendar
    from ops_runner.market.sources.sample import generate_sample_market
    from ops_runner.strategy import sweep as sweeps
    from ops_runner.strategy.momentum import StrategySettings, compute_decision_series
    from ops_runner.workbook.config import TEMPLATES, load_config_text, read_config_text

    path = TEMPLATES / "topn.yaml"
    base = StrategySettings.from_config(load_config_text(read_config_text(path), Path("."), path))
    bars = generate_sample_market(start=date(2015, 1, 2), end=END)
    calendar = MarketCalendar()
    sweeps.sweep(base, {"top_n": [1, 2]}, bars, start=date(2023, 1, 1))  # vectorbt, Numba cache

    rows = []
    for name, grid in GRIDS.items():
        count = len(sweeps.sweep(base, grid, bars, start=START, end=END))
        seconds = median_seconds(lambda grid=grid: sweeps.sweep(base, grid, bars, START, END))
        metric = f"sweep, {name} ({count} combinations)"
        rows.append({"metric": metric, "value": seconds / count * 1000, "unit": "ms",
                     "target": "per combination"})  # fmt: skip
    for name, changes in SERIES.items():
        settings = dataclasses.replace(base, **changes)
        count = len(compute_decision_series(settings, bars, calendar, START, END))
        seconds = median_seconds(
            lambda s=settings: compute_decision_series(s, bars, calendar, START, END)
        )
        metric = f"decision series, {name} ({count} decisions)"
        rows.append({"metric": metric, "value": seconds / count * 1000, "unit": "ms",
                     "target": "per decision"})  # fmt: skip
    print_figures(rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
