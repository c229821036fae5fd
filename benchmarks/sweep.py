"""Parameter sweep at scale: >= 1,000 combinations over 14 ETFs x 20 years, vs a backtest loop;
288 combinations vs a raw vectorbt broadcast of the same grid; 10,000 combinations' memory.

Prints a table and, last, the `RESULT {json}` line that run_all.py collects. A missed target is
printed, not a failure. Targets (2-core machine): the whole sweep under 20 s and at least 20x
the combinations per second of a plain loop calling `research.backtest` per combination (timed
on a sample of combinations). The Numba cache is warmed first; compile time is reported apart.

The peer of the 288-combination sweep, timed in the same run: what a vectorbt user writes, the
grid's target weights (computed apart, untimed) broadcast over every session in ONE
``Portfolio.from_orders`` call (a column per combination and symbol, grouped), one pass of
flat costs, then its value and Sharpe ratio. Target: the sweep at most 0.5x its time.

The 10,000-combination sweep runs in a child process (its own peak RSS) with the default
chunk (a quarter of the available memory, at most MAX_CHUNK combinations per simulation);
target: its peak RSS bounded, well under what one unchunked call would hold (the
per-combination bytes measured on the 1,188 sweep, times 10,000).

The large cases (``--cluster``, also run by main): 100 symbols x 30 years x 2,000 combinations
and 1,000 symbols x 10 years x 60, each swept in one process (a child: its own peak RSS) and
on a LocalCluster of one single-threaded worker per core (``ops-runner sweep --scheduler
local``): wall times, peak RSS of one process and of each worker, the cluster's start and
warm-up beyond one process's, and the grid size from which the cluster pays on this machine
(its extra start over the seconds it saves per combination). The tables must be equal.
"""

from __future__ import annotations

import json
import resource
import statistics
import subprocess
import sys
import time
import tracemalloc
from datetime import date
from typing import Any

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
GRID_288 = {
    "lookback_months": [2, 3, 4, 6, 9, 12],
    "skip_months": [0, 1],
    "top_n": [1, 2, 3, 4],
    "absolute_momentum": [True, False],
    "defensive": SYMBOLS[10:13],
}
TARGET_VS_BROADCAST, PEER_RUNS = 0.5, 3
BIG_SYMBOLS = [f"S{i:02d}" for i in range(16)]  # 10 risk, 5 defensive, 1 cash proxy
BIG_GRID = {
    "lookback_months": list(range(9, 34)),
    "skip_months": [0, 1, 2, 3],
    "top_n": list(range(1, 11)),
    "absolute_momentum": [True, False],
    "defensive": BIG_SYMBOLS[10:15],
}  # 25 x 4 x 10 x 2 x 5 = 10,000 combinations, all valid


# The large cases, one process vs a LocalCluster (one single-threaded worker per core): the
# issue asks 100 symbols x 30 years x 10,000 combinations and 1,000 symbols x 100; scaled down
# to run in a few minutes on 2 shared cores (the rates, and so the crossover, do not depend
# on the count): 2,000 and 60 combinations, the 1,000 symbols over 10 years.
CLUSTER_CASES: dict[str, dict[str, Any]] = {
    "100 symbols x 30 years": {
        "symbols": 100, "start": date(1995, 1, 3),
        "grid": {"lookback_months": list(range(4, 29)), "skip_months": [0, 1, 2, 3],
                 "top_n": [1, 2, 3, 5, 10], "absolute_momentum": [True, False],
                 "defensive": ["B0", "B1"]},
    },  # 25 x 4 x 5 x 2 x 2 = 2,000 combinations
    "1000 symbols x 10 years": {
        "symbols": 1000, "start": date(2015, 1, 2),
        "grid": {"lookback_months": [3, 6, 9, 12, 15], "top_n": [1, 5, 10],
                 "absolute_momentum": [True, False], "defensive": ["B0", "B1"]},
    },  # 5 x 3 x 2 x 2 = 60 combinations
}  # fmt: skip
# The issue's own sizes (``--issue-sizes``, not run by main: 20-40 minutes on 2 cores).
ISSUE_CASES: dict[str, dict[str, Any]] = {
    "100 symbols x 30 years": {
        "symbols": 100, "start": date(1995, 1, 3),
        "grid": {"lookback_months": list(range(5, 30)), "skip_months": [0, 1, 2, 3, 4],
                 "top_n": list(range(1, 11)), "absolute_momentum": [True, False],
                 "defensive": ["B0", "B1", "B2", "B3"]},
    },  # 25 x 5 x 10 x 2 x 4 = 10,000 combinations, all valid (skip < lookback)
    "1000 symbols x 20 years": {
        "symbols": 1000, "start": date(2005, 1, 3),
        "grid": {"lookback_months": [3, 6, 9, 12, 15], "skip_months": [0, 1],
                 "top_n": [1, 5, 10, 20, 50], "absolute_momentum": [True, False]},
    },  # 5 x 2 x 5 x 2 = 100 combinations
}  # fmt: skip


def case_named(name: str) -> dict[str, Any]:
    """A large case by name, from the scaled-down cases or the issue's sizes."""
    return {**CLUSTER_CASES, **ISSUE_CASES}[name]


def cluster_case(name: str) -> tuple[dict, Any]:
    """The bars and base settings of a large case: risk symbols R..., defensive B0..B3, cash C."""
    from ops_runner.market.sources.sample import generate_sample_market
    from ops_runner.strategy.momentum import StrategySettings

    case = case_named(name)
    risk = [f"R{i:04d}" for i in range(case["symbols"] - 5)]
    symbols = [*risk, "B0", "B1", "B2", "B3", "C"]
    bars = generate_sample_market(symbols=symbols, start=case["start"], end=END)
    base = StrategySettings(
        name="bench", risk=tuple(risk), defensive="B0", cash_proxy="C", lookbacks=((12, 1.0),),
        skip_months=0, top_n=1, absolute_momentum=True, absolute_compare="each", benchmark=None,
    )  # fmt: skip
    return bars, base


def digest(table: Any) -> str:
    """A fingerprint of a sweep table's every value: equal tables, equal digests."""
    import hashlib

    import pandas as pd

    return hashlib.sha256(pd.util.hash_pandas_object(table).to_numpy().tobytes()).hexdigest()


def one_process_case(name: str) -> int:
    """The child process: a large case swept here, as `ops-runner sweep --scheduler inprocess`
    does; prints one JSON line (its warm-up, wall time, peak RSS and the table's digest)."""
    from ops_runner.strategy import sweep as sweeps

    bars, base = cluster_case(name)
    started = time.perf_counter()
    sweeps.sweep(base, {"top_n": [1]}, bars, start=date(2023, 1, 1))  # vectorbt, Numba cache
    warm_s = time.perf_counter() - started
    started = time.perf_counter()
    table = sweeps.sweep(base, case_named(name)["grid"], bars)
    took = time.perf_counter() - started
    print(json.dumps({"warm_s": warm_s, "seconds": took, "peak_mb": peak_rss_mb(),
                      "combinations": len(table), "digest": digest(table)}))  # fmt: skip
    return 0


def cluster_cases(cases: dict[str, dict[str, Any]] = CLUSTER_CASES) -> int:
    """The child process: each large case in one process (a grandchild) and on a LocalCluster
    started here; prints its table and, last, its RESULT line (main() adds it to its own)."""
    from ops_runner.strategy import sweep as sweeps
    from ops_runner.strategy.distributed import open_dask_runner

    ones = {}
    for name in cases:
        done = subprocess.run([sys.executable, __file__, "--one-process", name],
                              capture_output=True, text=True, check=True)  # fmt: skip
        ones[name] = json.loads(done.stdout.strip().splitlines()[-1])
    rows: list[dict[str, Any]] = []
    started = time.perf_counter()
    with open_dask_runner("local", sys.stderr) as runner:
        start_s = time.perf_counter() - started
        bars, base = cluster_case(next(iter(cases)))
        started = time.perf_counter()
        sweeps.sweep(base, {"top_n": [1, 2]}, bars, start=date(2023, 1, 1), runner=runner)
        warm_s = time.perf_counter() - started  # each worker imports vectorbt, loads Numba
        workers = runner.workers()
        extra = start_s + warm_s - ones[next(iter(cases))]["warm_s"]
        print(f"local cluster of {workers}: start {start_s:.1f} s, workers' warm-up "
              f"{warm_s:.1f} s; beyond one process's warm-up: {extra:.1f} s")  # fmt: skip
        rows += [
            {"metric": "local cluster start", "value": start_s, "unit": "s", "target": ""},
            {"metric": "local cluster workers' warm-up", "value": warm_s, "unit": "s",
             "target": ""},
            {"metric": "local cluster cost beyond one process", "value": extra, "unit": "s",
             "target": ""},
        ]  # fmt: skip
        for name in cases:
            bars, base = cluster_case(name)
            started = time.perf_counter()
            table = sweeps.sweep(base, cases[name]["grid"], bars, runner=runner)
            took = time.perf_counter() - started
            peaks = runner.client.run(peak_rss_mb)  # each worker's peak so far (all cases)
            one = ones[name]
            local_rate, cluster_rate = one["combinations"] / one["seconds"], len(table) / took
            gain = 1 / local_rate - 1 / cluster_rate  # seconds saved per combination
            crossover = extra / gain if gain > 0 else float("inf")
            same = digest(table) == one["digest"]
            print(f"{name} x {len(table)} combinations: one process {one['seconds']:.1f} s "
                  f"(peak {one['peak_mb']:.0f} MB), cluster {took:.1f} s (peak per worker "
                  f"{max(peaks.values()):.0f} MB); pays from {crossover:.0f} combinations "
                  f"({crossover / local_rate:.0f} s in one process); "
                  f"tables {'equal' if same else 'DIFFER'}")  # fmt: skip
            rows += [
                {"metric": f"{name} x {len(table)}: one process", "value": one["seconds"],
                 "unit": "s", "target": ""},
                {"metric": f"{name} x {len(table)}: one process peak RSS",
                 "value": one["peak_mb"], "unit": "MB", "target": ""},
                {"metric": f"{name} x {len(table)}: local cluster", "value": took, "unit": "s",
                 "target": "< one process"},
                {"metric": f"{name} x {len(table)}: peak RSS per worker",
                 "value": max(peaks.values()), "unit": "MB", "target": ""},
                {"metric": f"{name}: cluster pays from", "value": crossover,
                 "unit": "combinations", "target": ""},
                {"metric": f"{name}: cluster pays from (one process's time)",
                 "value": crossover / local_rate, "unit": "s", "target": ""},
                {"metric": f"{name}: cluster table equals one process's", "value": int(same),
                 "unit": "", "target": "1"},
            ]  # fmt: skip
    print("RESULT " + json.dumps(rows))
    return 0


def settings_for(symbols: list[str]) -> Any:
    from ops_runner.strategy.momentum import StrategySettings

    return StrategySettings(
        name="bench", risk=tuple(symbols[:10]), defensive=symbols[10], cash_proxy=symbols[-1],
        lookbacks=((12, 1.0),), skip_months=0, top_n=1, absolute_momentum=True,
        absolute_compare="each", benchmark=None,
    )  # fmt: skip


def big_sweep() -> int:
    """The child process: the 10,000-combination sweep; prints one JSON line of its figures."""
    from ops_runner.market.calendar import MarketCalendar
    from ops_runner.market.sources.sample import generate_sample_market
    from ops_runner.strategy import sweep as sweeps

    bars = generate_sample_market(symbols=BIG_SYMBOLS, start=START, end=END)
    base = settings_for(BIG_SYMBOLS)
    sweeps.sweep(base, {"lookback_months": [3], "top_n": [1, 2]}, bars, start=date(2022, 1, 1))
    before_mb = peak_rss_mb()
    started = time.perf_counter()
    table = sweeps.sweep(base, BIG_GRID, bars)
    took = time.perf_counter() - started
    peak_mb = peak_rss_mb()
    steps = executions(table["start"].iat[0])
    sessions = len(MarketCalendar().sessions(table["start"].iat[0], END))
    chunk = sweeps.compute_sweep_chunk(len(BIG_SYMBOLS), steps, sessions)
    print(json.dumps({"combinations": len(table), "seconds": took, "peak_mb": peak_mb,
                      "before_mb": before_mb, "chunk": chunk, "executions": steps}))  # fmt: skip
    return 0


def peak_rss_mb() -> float:
    """This process's peak resident memory, MB: Linux's VmHWM (of this program's image alone:
    ru_maxrss keeps the forking parent's size across exec), else ru_maxrss."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def executions(start: str) -> int:
    """The execution sessions of a sweep whose first decision is on ``start``."""
    from ops_runner.market.calendar import MarketCalendar

    return len(MarketCalendar().month_end_sessions(date.fromisoformat(start), END)) - 1


def broadcast_weights(bars: dict, base: Any, grid: dict, sessions: Any) -> tuple[Any, Any, Any]:
    """The grid's target weights on every session (NaN but at executions), from plain numpy
    momentum on month-end adjusted closes; with the daily adjusted opens and closes."""
    import numpy as np
    import pandas as pd

    from ops_runner.market.prices import compute_adjustment_factors
    from ops_runner.strategy import sweep as sweeps

    symbols = base.symbols() + [s for s in grid["defensive"] if s not in base.symbols()]
    factor = {s: compute_adjustment_factors(bars[s]).reindex(sessions) for s in symbols}
    close = pd.DataFrame({s: bars[s]["close"].reindex(sessions) * factor[s] for s in symbols})
    opens = pd.DataFrame({s: bars[s]["open"].reindex(sessions) * factor[s] for s in symbols})
    ends = close.groupby(close.index.to_period("M")).tail(1)
    execute = sessions.searchsorted(ends.index, side="right")
    combos, _ = sweeps.compute_grid_settings(base, grid)
    weights = np.full((len(sessions), len(combos), len(symbols)), np.nan)
    column = {s: i for i, s in enumerate(symbols)}
    risk = [column[s] for s in base.risk]
    for n, c in enumerate(combos):
        months, skip = c.lookbacks[0][0], c.skip_months
        score = (ends.shift(skip) / ends.shift(months) - 1.0).to_numpy()
        hurdle = score[:, column[base.cash_proxy]]
        for k, row in enumerate(execute):
            if row >= len(sessions) or np.isnan(score[k, risk]).any():
                continue
            top = np.array(risk)[np.argsort(-score[k, risk], kind="stable")[: c.top_n]]
            slots = [t if not c.absolute_momentum or score[k, t] > hurdle[k] else
                     column[c.defensive] for t in top]  # fmt: skip
            weights[row, n] = 0.0
            for t in slots:
                weights[row, n, t] += 1.0 / c.top_n
    return weights.reshape(len(sessions), -1), close.to_numpy(), opens.to_numpy()


def raw_broadcast(close: Any, opens: Any, weights: Any, groups: int) -> float:
    """One vectorbt call over every session and the whole grid; returns the best Sharpe."""
    import numpy as np
    import vectorbt as vbt

    width = close.shape[1]
    portfolio = vbt.Portfolio.from_orders(
        np.tile(close, groups), size=weights, size_type="targetpercent", direction="longonly",
        price=np.tile(opens, groups), fees=0.0001, fixed_fees=1.0, slippage=0.0002,
        size_granularity=1.0, init_cash=100_000.0, cash_sharing=True,
        group_by=np.repeat(np.arange(groups), width), call_seq="auto", freq="1D",
    )  # fmt: skip
    portfolio.value()
    return float(np.nanmax(portfolio.sharpe_ratio().to_numpy()))


def measure_vs_broadcast(bars: dict, base: Any) -> tuple[float, float, int]:
    """Medians of the 288-combination sweep and of its raw broadcast, interleaved."""
    import pandas as pd

    from ops_runner.market.calendar import MarketCalendar
    from ops_runner.strategy import sweep as sweeps

    table = sweeps.sweep(base, GRID_288, bars)
    sessions = pd.DatetimeIndex(MarketCalendar().sessions(START, END))
    weights, close, opens = broadcast_weights(bars, base, GRID_288, sessions)
    ours, theirs = [], []
    for _ in range(PEER_RUNS):
        started = time.perf_counter()
        sweeps.sweep(base, GRID_288, bars)
        ours.append(time.perf_counter() - started)
        started = time.perf_counter()
        raw_broadcast(close, opens, weights, len(table))
        theirs.append(time.perf_counter() - started)
    return statistics.median(ours), statistics.median(theirs), len(table)


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

    grid_s, broadcast_s, grid_count = measure_vs_broadcast(bars, base)
    done = subprocess.run([sys.executable, __file__, "--big"], capture_output=True, text=True,
                          check=True)  # fmt: skip
    big = json.loads(done.stdout.strip().splitlines()[-1])
    per_cell = sweep_peak_mb / (len(table) * len(SYMBOLS) * executions(table["start"].iat[0]))
    unchunked_mb = per_cell * big["combinations"] * len(BIG_SYMBOLS) * big["executions"]

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
        (f"sweep of {grid_count} (median of {PEER_RUNS})", f"{grid_s:.2f} s", ""),
        (f"raw vectorbt broadcast of the {grid_count}", f"{broadcast_s:.2f} s", ""),
        ("sweep / broadcast", f"{grid_s / broadcast_s:.2f}x", f"<= {TARGET_VS_BROADCAST:g}x"),
        (f"sweep of {big['combinations']}: wall time", f"{big['seconds']:.1f} s", ""),
        (f"sweep of {big['combinations']}: chunk", f"{big['chunk']} comb", ""),
        (f"sweep of {big['combinations']}: peak RSS", f"{big['peak_mb']:.0f} MB",
         f"bounded (one call: ~{unchunked_mb:.0f} MB traced)"),
    ]  # fmt: skip
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
        {"metric": f"sweep of {grid_count}", "value": grid_s, "unit": "s", "target": ""},
        {"metric": f"raw vectorbt broadcast of {grid_count}", "value": broadcast_s, "unit": "s",
         "target": ""},
        {"metric": "sweep / broadcast", "value": grid_s / broadcast_s, "unit": "x",
         "target": f"<= {TARGET_VS_BROADCAST:g}x"},
        {"metric": f"sweep of {big['combinations']}", "value": big["seconds"], "unit": "s",
         "target": ""},
        {"metric": f"sweep of {big['combinations']}: peak RSS", "value": big["peak_mb"],
         "unit": "MB", "target": f"bounded (one call ~{unchunked_mb:.0f} MB traced)"},
    ]  # fmt: skip
    done = subprocess.run([sys.executable, __file__, "--cluster"], capture_output=True, text=True,
                          check=True)  # fmt: skip
    lines = done.stdout.strip().splitlines()
    print("\n".join(lines[:-1]))
    result_rows += json.loads(lines[-1].removeprefix("RESULT "))
    print("RESULT " + json.dumps(result_rows))
    return 0


if __name__ == "__main__":
    if sys.argv[1:] == ["--big"]:
        sys.exit(big_sweep())
    if sys.argv[1:2] == ["--one-process"]:
        sys.exit(one_process_case(sys.argv[2]))
    if sys.argv[1:] == ["--cluster"]:  # the large cases alone: python benchmarks/sweep.py --cluster
        sys.exit(cluster_cases())
    if sys.argv[1:] == ["--issue-sizes"]:  # python benchmarks/sweep.py --issue-sizes
        sys.exit(cluster_cases(ISSUE_CASES))
    sys.exit(main())
