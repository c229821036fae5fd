"""Parameter sweep at scale: >= 1,000 combinations over 14 ETFs x 20 years, vs a backtest loop.

Prints a table and, last, the `RESULT {json}` line that run_all.py collects. A missed target is
printed, not a failure. Targets (2-core machine): the whole sweep under 20 s and at least 20x
the combinations per second of a plain loop calling `research.backtest` per combination (timed
on a sample of combinations). The Numba cache is warmed first; compile time is reported apart.
"""

from __future__ import annotations

import json
import resource
import sys
import time
import tracemalloc
from datetime import date

SYMBOLS = [f"S{i:02d}" for i in range(14)]
START, END = date(2005, 1, 3), date(2024, 12, 31)
RISK, CASH = tuple(SYMBOLS[:10]), SYMBOLS[13]
GRID = {
    "lookback_months": list(range(1, 13)),
    "skip_months": [0, 1, 2],
    "top_n": [1, 2, 3, 4, 5, 6],
    "absolute_momentum": [True, False],
    "defensive": SYMBOLS[10:13],
}
BASELINE_SAMPLE = 10
TARGET_SECONDS, TARGET_SPEEDUP, TARGET_COMBINATIONS = 20.0, 20.0, 1000


def main() -> int:
    import numpy as np

    from ops_runner.market.sources.sample import generate_sample_market
    from ops_runner.strategy import research
    from ops_runner.strategy import sweep as sweeps
    from ops_runner.strategy.momentum import StrategySettings

    bars = generate_sample_market(symbols=SYMBOLS, start=START, end=END)
    base = StrategySettings(
        name="bench", risk=RISK, defensive=SYMBOLS[10], cash_proxy=CASH, lookbacks=((12, 1.0),),
        skip_months=0, top_n=1, absolute_momentum=True, absolute_compare="each", benchmark=None,
    )  # fmt: skip

    # Warm-up: vectorbt's import and its Numba functions (compiled once, then read from cache).
    started = time.perf_counter()
    import vectorbt  # noqa: F401

    import_s = time.perf_counter() - started
    started = time.perf_counter()
    warm = {"lookback_months": [3], "top_n": [1, 2]}
    sweeps.sweep(base, warm, bars, start=date(2022, 1, 1))
    research.backtest(base, bars, start=date(2023, 1, 1))
    warm_s = time.perf_counter() - started

    combos, impossible = sweeps.compute_grid_settings(base, GRID)
    started = time.perf_counter()
    table = sweeps.sweep(base, GRID, bars)
    sweep_s = time.perf_counter() - started
    tracemalloc.start()
    sweeps.sweep(base, GRID, bars)
    sweep_peak_mb = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()

    # The baseline a user would write: one backtest per combination, on the sweep's window.
    picks = np.linspace(0, len(combos) - 1, BASELINE_SAMPLE).round().astype(int)
    started = time.perf_counter()
    worst = 0.0
    for n in picks:
        result = research.backtest(combos[n], bars, start=table["start"].iat[0])
        row = table.iloc[n]
        worst = max(worst, abs(result.final_equity / row["final_equity"] - 1.0))
    loop_s = time.perf_counter() - started
    process_peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux

    rate = len(table) / sweep_s
    loop_rate = len(picks) / loop_s
    speedup = rate / loop_rate
    best = table.sort_values("sharpe", ascending=False).head(5)
    print(best.to_string(index=False))
    print()
    rows = [
        ("combinations (valid)", f"{len(table)}", f"({impossible} impossible left out)"),
        ("symbols x sessions", f"{len(SYMBOLS)} x {len(next(iter(bars.values())))}", ""),
        ("vectorbt import", f"{import_s:.2f} s", ""),
        ("warm-up (Numba compile or cache load)", f"{warm_s:.2f} s", ""),
        ("sweep wall time", f"{sweep_s:.2f} s", f"< {TARGET_SECONDS:g} s"),
        ("sweep rate", f"{rate:.1f} comb/s", ""),
        ("sweep peak traced memory", f"{sweep_peak_mb:.0f} MB", ""),
        ("process peak RSS", f"{process_peak_mb:.0f} MB", ""),
        (f"backtest loop ({len(picks)} sampled)", f"{loop_s:.2f} s", ""),
        ("backtest loop rate", f"{loop_rate:.2f} comb/s", ""),
        ("speed-up", f"{speedup:.0f}x", f">= {TARGET_SPEEDUP:g}x"),
        ("max |final equity| gap, loop vs sweep", f"{worst:.1e}", "< 1e-9"),
    ]
    width = max(len(r[0]) for r in rows)
    for name, value, target in rows:
        print(f"{name.ljust(width)}  {value.rjust(14)}  {target}")
    result_rows = [
        {"metric": "combinations", "value": len(table), "unit": "",
         "target": f">= {TARGET_COMBINATIONS}"},
        {"metric": "sweep time", "value": sweep_s, "unit": "s",
         "target": f"< {TARGET_SECONDS:g} s"},
        {"metric": "sweep rate", "value": rate, "unit": "comb/s", "target": ""},
        {"metric": "loop rate", "value": loop_rate, "unit": "comb/s", "target": ""},
        {"metric": "speed-up", "value": speedup, "unit": "x", "target": f">= {TARGET_SPEEDUP:g}x"},
        {"metric": "sweep peak memory", "value": sweep_peak_mb, "unit": "MB", "target": ""},
        {"metric": "process peak RSS", "value": process_peak_mb, "unit": "MB", "target": ""},
        {"metric": "compile/warm-up", "value": warm_s, "unit": "s", "target": ""},
    ]  # fmt: skip
    print("RESULT " + json.dumps(result_rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
