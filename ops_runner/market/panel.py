"""Many symbols' bars stacked into flat numpy arrays, the shape the vectorised QA checks work on."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from functools import cached_property

import numpy as np
import pandas as pd

from ops_runner.core.errors import DataError

Bars = Mapping[str, pd.DataFrame]
BAR_COLUMNS = ("open", "high", "low", "close", "volume", "dividend", "split")
_EMPTY = pd.DataFrame({c: np.empty(0) for c in BAR_COLUMNS}, index=pd.DatetimeIndex([]))
_EPOCH = date(1970, 1, 1).toordinal()


@dataclass
class Panel:
    """All symbols' bars stacked by (symbol code, date): code i owns rows bounds[i]:bounds[i+1]."""

    symbols: tuple[str, ...]
    bounds: np.ndarray
    code: np.ndarray
    day: np.ndarray  # days since 1970-01-01
    col: dict[str, np.ndarray]
    adjusted: np.ndarray | None  # the vendor's adjusted close, where given
    unsorted: tuple[np.ndarray, np.ndarray]  # codes, first date out of order
    duplicates: tuple[np.ndarray, np.ndarray]  # codes, repeated dates (the first bar is kept)

    @cached_property
    def span(self) -> tuple[int, int]:
        """(first day, width): width leaves each symbol one key no date maps to."""
        return (int(self.day.min()), int(np.ptp(self.day)) + 2) if self.day.size else (0, 2)

    @cached_property
    def keys(self) -> np.ndarray:
        """Sorted keys code * width + days since the first day, one per bar."""
        return self.code * self.span[1] + (self.day - self.span[0])

    def previous(self, values: np.ndarray) -> np.ndarray:
        """Each row's value on its symbol's previous bar; NaN on each symbol's first bar."""
        out = np.empty(values.size, dtype=np.float64)
        out[1:] = values[:-1]
        starts = self.bounds[:-1]
        out[starts[starts < values.size]] = np.nan
        return out

    def locate(self, codes: np.ndarray, days: np.ndarray) -> np.ndarray:
        """Row of each (code, day) pair in this panel, -1 where it has no bar."""
        (shift, width), keys = self.span, self.keys  # out-of-range days get the unused key
        wanted = codes * width + np.clip(days - shift, -1, width - 1)
        at = np.minimum(np.searchsorted(keys, wanted), max(keys.size - 1, 0))
        return np.where(keys[at] == wanted, at, -1) if keys.size else np.full(codes.size, -1)


def build_panel(
    bars: Bars,
    symbols: tuple[str, ...],
    as_of: int,
    adjusted: Mapping[str, pd.Series] | None,
    columns: tuple[str, ...] = BAR_COLUMNS,
) -> Panel:
    """Stack the bars of ``symbols`` dated <= as_of, sorted by date, first bar of a date kept."""
    frames, picks = [], []
    faults: dict[str, list[np.ndarray]] = {k: [] for k in ("u_code", "u_day", "d_code", "d_day")}
    for code, symbol in enumerate(symbols):
        frame = bars.get(symbol, _EMPTY)
        if not isinstance(frame, pd.DataFrame) or not isinstance(frame.index, pd.DatetimeIndex):
            raise DataError(f"bars for {symbol} are not a frame indexed by date; use PriceStore")
        if frame.index.tz is not None or not set(columns) <= set(frame.columns):
            raise DataError(f"bars for {symbol} lack {columns} or have a tz; use PriceStore")
        day = frame.index.values.astype("datetime64[D]").astype(np.int64)
        keep = np.flatnonzero(day <= as_of)  # never look at bars after as_of
        step = np.diff(day[keep])
        pick: slice | np.ndarray = keep
        if (step <= 0).any():  # rare: sort, and keep the first bar of each date
            back = np.flatnonzero(step < 0)[:1] + 1
            faults["u_code"].append(np.full(back.size, code))
            faults["u_day"].append(day[keep][back])
            pick = keep[np.argsort(day[keep], kind="stable")]
            repeat = np.r_[False, np.diff(day[pick]) == 0]
            faults["d_code"].append(np.full(int(repeat.sum()), code))
            faults["d_day"].append(day[pick][repeat])
            pick = pick[~repeat]
        elif keep.size == 0 or keep[-1] == keep.size - 1:
            pick = slice(0, keep.size)  # sorted, unique, all <= as_of: the common case
        frames.append(frame)
        picks.append(pick)
    sizes = [p.stop if isinstance(p, slice) else p.size for p in picks]
    bounds = np.r_[0, np.cumsum(sizes)].astype(np.int64)
    names = (*columns, "adjusted") if adjusted is not None else columns
    # Filled in place, symbol by symbol: no second full-size copy of the data.
    col = {name: np.empty(int(bounds[-1]), dtype=np.float64) for name in names}
    day = np.empty(int(bounds[-1]), dtype=np.int64)
    for code, (frame, pick) in enumerate(zip(frames, picks, strict=True)):
        rows = slice(bounds[code], bounds[code + 1])
        day[rows] = frame.index.values.astype("datetime64[D]").astype(np.int64)[pick]
        for name in columns:
            col[name][rows] = frame[name].to_numpy(dtype=np.float64)[pick]
        if adjusted is not None:
            vendor = adjusted.get(symbols[code], pd.Series(dtype=np.float64))
            vendor = vendor[~vendor.index.duplicated()].reindex(frame.index)
            col["adjusted"][rows] = vendor.to_numpy(dtype=np.float64)[pick]
    return Panel(
        symbols=symbols,
        bounds=bounds,
        code=np.repeat(np.arange(len(symbols), dtype=np.int64), sizes),
        day=day,
        col=col,
        adjusted=col.pop("adjusted", None),
        unsorted=(_concat(faults["u_code"]), _concat(faults["u_day"])),
        duplicates=(_concat(faults["d_code"]), _concat(faults["d_day"])),
    )


def _concat(parts: list[np.ndarray]) -> np.ndarray:
    return np.concatenate(parts).astype(np.int64) if parts else np.empty(0, dtype=np.int64)


def total_return(panel: Panel) -> np.ndarray:
    """Daily total return bar over bar, (close + dividend) * split / previous close - 1.

    The dividend is per post-split share; these are exactly the daily returns of
    ``data.compute_adjusted_close``. NaN on each symbol's first bar and where inputs are bad.
    """
    close, split, dividend = panel.col["close"], panel.col["split"], panel.col["dividend"]
    prev = panel.previous(close)
    with np.errstate(divide="ignore", invalid="ignore"):
        ret = (close + dividend) * split / prev - 1.0
        ok = (close > 0) & (prev > 0) & (split > 0) & (dividend >= 0) & np.isfinite(ret)
    return np.where(ok, ret, np.nan)


def log_index(panel: Panel, ret: np.ndarray) -> np.ndarray:
    """Log of each symbol's total-return index, 0 on its first bar (bad returns count as 0)."""
    running = np.cumsum(np.log1p(np.where(np.isfinite(ret), ret, 0.0)))
    return running - running[panel.bounds[panel.code]] if running.size else running


def split_adjusted_close(panel: Panel) -> np.ndarray:
    """Close divided by the product of the symbol's later splits (the split day is post-split)."""
    split = panel.col["split"]
    running = np.cumsum(np.log(np.where(np.isfinite(split) & (split > 0), split, 1.0)))
    if not running.size:
        return running
    total = running[np.maximum(panel.bounds[1:] - 1, 0)][panel.code]
    return panel.col["close"] / np.exp(total - running)


def first_days(panel: Panel) -> np.ndarray:
    """Return each symbol's first day number, int64 max for a symbol without bars."""
    first = np.full(len(panel.symbols), np.iinfo(np.int64).max)  # none: never begun
    has = np.diff(panel.bounds) > 0
    first[has] = panel.day[panel.bounds[:-1][has]]
    return first


def last_days(panel: Panel) -> np.ndarray:
    """Return each symbol's last day number, int64 min for a symbol without bars."""
    last = np.full(len(panel.symbols), np.iinfo(np.int64).min)  # none: ended before anything
    has = np.diff(panel.bounds) > 0
    last[has] = panel.day[panel.bounds[1:][has] - 1]
    return last


def day_number(day: date) -> int:
    """Return the day number of ``day``: days since 1970-01-01, as in ``Panel.day``."""
    return day.toordinal() - _EPOCH


def to_date(day: int | np.integer) -> date:
    """Return the date of a day number (days since 1970-01-01)."""
    return date.fromordinal(int(day) + _EPOCH)
