"""The canonical bars frame every source produces and the price store keeps: one row per
session, the columns of BAR_COLUMNS as float64, raw prices with the session's dividend and split."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

import numpy as np
import pandas as pd

from ops_runner.core.errors import DataError

BAR_COLUMNS = ["open", "high", "low", "close", "volume", "dividend", "split"]
PRICE_COLUMNS = ["open", "high", "low", "close"]
DATE_UNIT = "us"  # pandas' default resolution for parsed dates; every frame we build uses it
SYMBOL_PATTERN = re.compile(r"[A-Z0-9][A-Z0-9._^=-]{0,31}")


def make_bars(
    dates: Iterable[Any],
    open: Iterable[float],
    high: Iterable[float],
    low: Iterable[float],
    close: Iterable[float],
    volume: Iterable[float],
    dividend: Iterable[float] | None = None,
    split: Iterable[float] | None = None,
) -> pd.DataFrame:
    """Return a canonical bars frame sorted by date (dividend 0.0 and split 1.0 when omitted).

    Does not check the result; call ``require_bars_shape`` for that.
    """
    index = pd.DatetimeIndex(pd.to_datetime(list(dates)), name="date").as_unit(DATE_UNIT)
    n = len(index)
    values = (open, high, low, close, volume, np.zeros(n) if dividend is None else dividend,
              np.ones(n) if split is None else split)  # fmt: skip
    columns = zip(BAR_COLUMNS, values, strict=True)
    frame = pd.DataFrame({c: np.asarray(v, dtype=np.float64) for c, v in columns}, index=index)
    return frame.sort_index(kind="stable")


def require_bars_shape(frame: pd.DataFrame, what: str = "bars") -> None:
    """Raise DataError unless ``frame`` is a canonical bars frame.

    Canonical: a tz-naive DatetimeIndex named ``date`` of midnight dates, ascending and unique;
    columns exactly BAR_COLUMNS, all float64 and finite; split > 0, dividend >= 0.
    """
    problems = []
    if not isinstance(frame, pd.DataFrame):
        raise DataError(f"{what}: expected a DataFrame, got {type(frame).__name__}")
    index = frame.index
    if not isinstance(index, pd.DatetimeIndex):
        problems.append(f"index is {type(index).__name__}, not a DatetimeIndex")
    else:
        if index.name != "date":
            problems.append(f"index is named {index.name!r}, not 'date'")
        if index.tz is not None:
            problems.append(f"index has timezone {index.tz}; dates must be tz-naive")
        elif not (index == index.normalize()).all():
            problems.append("index holds times of day; dates must be midnight")
        if not index.is_unique:
            problems.append("index has duplicate dates")
        if not index.is_monotonic_increasing:
            problems.append("index is not sorted ascending")
    if list(frame.columns) != BAR_COLUMNS:
        problems.append(f"columns are {list(frame.columns)}, expected {BAR_COLUMNS}")
    else:
        wrong = [c for c in BAR_COLUMNS if frame[c].dtype != np.float64]
        if wrong:
            problems.append(f"columns not float64: {wrong}")
        else:
            values = frame.to_numpy()
            if not np.isfinite(values).all():
                problems.append("NaN or infinite values")
            elif (frame["split"] <= 0).any():
                problems.append("split ratio <= 0")
            elif (frame["dividend"] < 0).any():
                problems.append("negative dividend")
    if problems:
        raise DataError(f"{what} is not a canonical bars frame: {'; '.join(problems)}")
