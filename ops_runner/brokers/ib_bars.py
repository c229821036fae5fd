"""Canonical daily bars from IB's two historical series: TRADES and ADJUSTED_LAST.

IB serves no dividend column. TRADES bars are split-adjusted as of the request (like Yahoo's
"raw" prices: a split after ``end`` rescales them, so a re-download can differ from an earlier
one) and ADJUSTED_LAST bars are dividend- and split-adjusted. Their ratio ``f = adjusted/raw``
is constant between ex-dates and steps up on each: the dividend of ex-date t is
``D_t = close_{t-1} * (1 - f_{t-1} / f_t)`` (the previous-close convention, as CRSP and Yahoo).
The split column is 1.0 everywhere, because the raw prices already carry every split.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date

import numpy as np
import pandas as pd

from ops_runner.core.errors import DataError
from ops_runner.market.bars import make_bars, require_bars_shape

RawBar = tuple[date, float, float, float, float, float]  # date, open, high, low, close, volume
# IB rounds both series to the cent: a ratio step smaller than the rounding of the two prices
# on both days is noise, not a dividend.
CENT = 0.01
DIVIDEND_DECIMALS = 6


def compute_dividends(raw_close: np.ndarray, adjusted_close: np.ndarray) -> np.ndarray:
    """Return the dividend of each day implied by the adjusted/raw ratio (0.0 where none)."""
    factor = adjusted_close / raw_close
    dividends = np.zeros(len(raw_close))
    for t in range(1, len(raw_close)):
        step = 1.0 - factor[t - 1] / factor[t]
        noise = CENT * (
            1 / raw_close[t - 1] + 1 / raw_close[t] + 1 / adjusted_close[t - 1]
            + 1 / adjusted_close[t]
        )  # fmt: skip
        if step > noise:
            dividends[t] = round(raw_close[t - 1] * step, DIVIDEND_DECIMALS)
    return dividends


def compute_ib_bars(
    symbol: str,
    trades: Sequence[RawBar],
    adjusted: Sequence[RawBar],
    start: date,
    end: date,
) -> pd.DataFrame:
    """Return canonical bars of ``symbol`` for ``start``..``end`` from IB's two series.

    Raises DataError naming the symbol when the series are empty or do not cover each other.
    """
    if not trades:
        raise DataError(
            f"IB returned no daily TRADES bars for {symbol} between {start} and {end}; "
            "check the symbol and market data permissions"
        )
    raw = {bar[0]: bar for bar in trades}
    adj = {bar[0]: bar for bar in adjusted}
    missing = sorted(set(raw) - set(adj))
    if missing:
        raise DataError(
            f"IB's ADJUSTED_LAST bars for {symbol} lack {len(missing)} TRADES dates (first "
            f"{missing[0]}); download again"
        )
    days = sorted(raw)
    close = np.array([raw[d][4] for d in days], dtype=np.float64)
    adjusted_close = np.array([adj[d][4] for d in days], dtype=np.float64)
    if (close <= 0).any() or (adjusted_close <= 0).any():
        raise DataError(f"IB's daily bars for {symbol} hold a close <= 0; download again")
    dividends = compute_dividends(close, adjusted_close)
    frame = make_bars(
        pd.DatetimeIndex([pd.Timestamp(d) for d in days]),
        [raw[d][1] for d in days],
        [raw[d][2] for d in days],
        [raw[d][3] for d in days],
        close,
        [raw[d][5] for d in days],
        dividends,
    )
    frame = frame.loc[pd.Timestamp(start) : pd.Timestamp(end)]
    require_bars_shape(frame, f"IB daily bars of {symbol}")
    return frame
