"""One backtest on real data vs a plain pandas loop doing the same monthly rotation.

Eight ETFs (SPY EFA EEM IWM TLT GLD VNQ QQQ; IEF defensive, SHY the hurdle), top 3 by 12-month
total return, 2008-01..2020-11, on Alpha Vantage's files in ``../shared/data`` (the benchmark
prints no figure without them, and run_all.py reports it as failed). The peer, timed in the same
run: the loop a pandas user writes, adjusting each history once, taking month-end closes,
ranking each month, trading whole shares at the next open with the same commission and
slippage, and marking the held shares at every close until the next rebalance. Target:
``research.backtest`` faster than the peer (ratio below 1). Medians of several runs each,
interleaved, so a busy machine slows both alike. A missed target is printed, not a failure.
"""

from __future__ import annotations

import statistics
import sys
import time
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
from _figures import print_figures

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "alphavantage"
RISK = ("SPY", "EFA", "EEM", "IWM", "TLT", "GLD", "VNQ", "QQQ")
DEFENSIVE, HURDLE = "IEF", "SHY"
START, END = date(2008, 1, 1), date(2020, 11, 30)
LOOKBACK, TOP_N, CASH = 12, 3, 100_000.0
PER_SHARE, MINIMUM, SLIPPAGE = 0.005, 1.0, 2.0 / 10_000
RUNS = 7


def pandas_rotation(bars: dict[str, pd.DataFrame]) -> pd.Series:
    """The same rotation, written the plain way: a loop over month-ends. Returns the equity."""
    symbols = [*RISK, DEFENSIVE, HURDLE]
    close = pd.DataFrame({s: bars[s]["close"] for s in symbols}).loc[: str(END)]
    opens = pd.DataFrame({s: bars[s]["open"] for s in symbols}).loc[close.index]
    dividend = pd.DataFrame({s: bars[s]["dividend"] for s in symbols}).loc[close.index]
    split = pd.DataFrame({s: bars[s]["split"] for s in symbols}).loc[close.index]
    event = close / (close + dividend.fillna(0.0)) / split.fillna(1.0)
    factor = event.iloc[::-1].cumprod().iloc[::-1].shift(-1).fillna(1.0)
    adj_close, adj_open = close * factor, opens * factor
    month_end = adj_close.groupby(adj_close.index.to_period("M")).tail(1)
    momentum = month_end / month_end.shift(LOOKBACK) - 1.0
    decided = momentum.loc[str(START) :].dropna()
    days = adj_close.loc[decided.index[0] :].index
    shares = pd.Series(0.0, index=symbols)
    cash, equity = CASH, []
    for n, when in enumerate(decided.index):
        scores = decided.loc[when]
        kept = scores[list(RISK)].sort_values(ascending=False, kind="stable").index[:TOP_N]
        slots = [s if scores[s] > scores[HURDLE] else DEFENSIVE for s in kept]
        target = pd.Series(slots).value_counts() / TOP_N
        at = days.searchsorted(when, side="right")  # the next session: trade at its open
        nxt = decided.index[n + 1] if n + 1 < len(decided) else days[-1]
        if at < len(days):
            price = adj_open.loc[days[at]]
            value = cash + float((shares * price).sum())
            want = (target.reindex(symbols, fill_value=0.0) * value / price).fillna(0.0)
            order = np.floor(want) - shares
            for side in (order < 0, order > 0):  # sells first, then buys
                for symbol in order[side].index:
                    fill = price[symbol] * (1.0 + SLIPPAGE * np.sign(order[symbol]))
                    real = abs(order[symbol]) * factor.loc[days[at], symbol]
                    fee = max(MINIMUM, PER_SHARE * real)
                    cost = order[symbol] * fill + fee
                    if cost > cash:  # a buy the cash cannot pay for is cut
                        order[symbol] = np.floor((cash - fee) / fill)
                        cost = order[symbol] * fill + fee
                    if order[symbol] != 0:
                        cash -= cost
                        shares[symbol] += order[symbol]
        held = adj_close.loc[when:nxt].iloc[1 if n else 0 :]
        equity.append(cash + held.mul(shares, axis=1).sum(axis=1))
    return pd.concat(equity)


def main() -> int:
    if not DATA.is_dir():
        print(f"benchmark skipped: no real data at {DATA}")
        return 0
    from ops_runner.market.sources import read_path
    from ops_runner.strategy import research
    from ops_runner.strategy.momentum import StrategySettings

    symbols = [*RISK, DEFENSIVE, HURDLE]
    bars = {s: read_path(DATA / f"{s}.csv", "alphavantage")[0].bars for s in symbols}
    settings = StrategySettings(
        name="bench", risk=RISK, defensive=DEFENSIVE, cash_proxy=HURDLE,
        lookbacks=((LOOKBACK, 1.0),), skip_months=0, top_n=TOP_N, absolute_momentum=True,
        absolute_compare="each", benchmark=None,
    )  # fmt: skip
    costs = research.Costs(PER_SHARE, MINIMUM, SLIPPAGE * 10_000)
    started = time.perf_counter()
    result = research.backtest(settings, bars, start=START, end=END, costs=costs)  # warm-up
    first_s = time.perf_counter() - started
    peer = pandas_rotation(bars)
    ours_s, peer_s = [], []
    for _ in range(RUNS):
        started = time.perf_counter()
        research.backtest(settings, bars, start=START, end=END, costs=costs)
        ours_s.append(time.perf_counter() - started)
        started = time.perf_counter()
        pandas_rotation(bars)
        peer_s.append(time.perf_counter() - started)
    ours, theirs = statistics.median(ours_s), statistics.median(peer_s)
    gap = abs(peer.iloc[-1] / result.final_equity - 1.0)
    print(result.summary())
    print(f"pandas loop final equity {peer.iloc[-1]:,.2f} ({gap:.2%} from the backtest's)")
    rows = [
        {"metric": f"backtest, {len(result.decisions)} decisions (median of {RUNS})",
         "value": ours * 1000, "unit": "ms", "target": ""},
        {"metric": f"plain pandas loop, same rotation (median of {RUNS})",
         "value": theirs * 1000, "unit": "ms", "target": ""},
        {"metric": "backtest / pandas loop", "value": ours / theirs, "unit": "x",
         "target": "< 1"},
        {"metric": "first backtest (vectorbt import, Numba cache)", "value": first_s,
         "unit": "s", "target": ""},
    ]  # fmt: skip
    print_figures(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
