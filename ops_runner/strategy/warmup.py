"""Compile vectorbt's Numba functions into their on-disk cache before anything needs them.

vectorbt compiles its simulation functions on first use and caches them beside its sources.
In a fresh environment the first backtest, sweep or performance report pays about 30 s for
that, and every process that starts before the cache is written pays it again: each test
worker, each research kernel. `make` runs ``python -m ops_runner.strategy.warmup`` once after
installing, on a small SYNTHETIC sample market held in memory (nothing is written but the
cache), so later processes load compiled code.
"""

from __future__ import annotations

import time
from datetime import date
from pathlib import Path

from ops_runner.market.sources.sample import generate_sample_market
from ops_runner.strategy.research import backtest
from ops_runner.strategy.sweep import sweep
from ops_runner.workbook.config import TEMPLATES, load_config_text, read_config_text


def warm() -> float:
    """Run one backtest per share mode and one small sweep; return the seconds it took."""
    started = time.perf_counter()
    path = TEMPLATES / "gem.yaml"
    cfg = load_config_text(read_config_text(path), Path("."), path)
    bars = generate_sample_market(start=date(2019, 1, 2), end=date(2021, 12, 31))
    for whole in (True, False):
        backtest(cfg, bars, whole_shares=whole)
    sweep(cfg, {"lookback_months": [6, 12], "top_n": [1, 2]}, bars)
    return time.perf_counter() - started


if __name__ == "__main__":
    print(f"vectorbt's Numba cache warmed in {warm():.0f} s")
