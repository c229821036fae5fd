"""CSV layouts of daily bars (Alpha Vantage, yfinance, generic) read into canonical bars frames."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ops_runner.core.errors import ImportRefused
from ops_runner.core.hashing import compute_sha256
from ops_runner.market.bars import make_bars
from ops_runner.market.sources.base import ParsedFile

# yfinance exports store prices as float32: day-to-day steps of adj/close below this are noise
# (the 21 reference files show at most 5e-6), a real dividend is above it.
DIVIDEND_STEP_MIN = 1e-5
# A fall of adj/close this large is a split left in Close, not a dividend.
SPLIT_STEP_MIN = 0.25
# Alpha Vantage publishes dividend_amount to 4 decimals: half a unit of the last one.
AV_DIVIDEND_ROUNDING = 0.5e-4


def compute_unrounded_dividends(
    bars: pd.DataFrame, vendor_adjusted: pd.Series
) -> tuple[np.ndarray, int, int]:
    """Return (dividends, refined, kept): published amounts made exact where the vendor shows them.

    Alpha Vantage rounds ``dividend_amount`` to 4 decimals but adjusts its own series with the
    unrounded amount (SPY 2020-03-20: published 1.4056, paid 1.405559). On an ex-date t its
    adj/close ratio r steps by ``r[t-1] / r[t] = close[t] / (close[t] + D) / split[t]``; the D
    solved from that step replaces the published figure only when it rounds to it (within half a
    unit of the 4th decimal), so a refined amount can never differ from what was published by
    more than the vendor's own rounding. Every other amount is kept as published.
    """
    close = bars["close"].to_numpy()
    dividend = bars["dividend"].to_numpy().copy()
    split = bars["split"].to_numpy()
    ratio = vendor_adjusted.to_numpy() / close
    days = np.flatnonzero(dividend[1:] > 0) + 1
    step = ratio[days - 1] / ratio[days] * split[days]
    # 8 decimals: far below the vendor's 4, and an exact published amount stays exact.
    implied = np.round(close[days] * (1.0 / step - 1.0), 8)
    agrees = np.abs(implied - dividend[days]) <= AV_DIVIDEND_ROUNDING + 1e-9
    dividend[days[agrees]] = implied[agrees]
    return dividend, int(agrees.sum()), int((~agrees).sum())


_DATE_PATTERN = (
    r"^(?P<day>\d{4}-\d{2}-\d{2})"
    r"(?:[ T](?P<time>\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?))?"
    r"\s*(?P<tz>Z|[+-]\d{2}:?\d{2})?$"
)
_MIDNIGHT = {"00:00", "00:00:00"}


@dataclass(frozen=True)
class _Table:
    """A file's data rows as text, with the 1-based line number of each row."""

    path: Path
    sha256: str
    lines: np.ndarray
    columns: dict[str, pd.Series]

    def line_of(self, position: int) -> int:
        return int(self.lines[position])


def _read_lines(path: Path) -> tuple[str, list[str]]:
    """Return the file's SHA-256 and its lines; refuse unreadable, non-UTF-8 or empty files."""
    try:
        data = path.read_bytes()
    except OSError as error:
        raise ImportRefused(path, f"cannot read the file ({error.strerror})") from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = data[: error.start].count(b"\n") + 1
        raise ImportRefused(path, "not UTF-8 text", line=line) from None
    if not text.strip():
        raise ImportRefused(path, "empty file")
    lines = [line.rstrip("\r") for line in text.split("\n")]
    return compute_sha256(data), lines


def _fields(line: str) -> list[str]:
    return [field.strip() for field in next(csv.reader([line]), [])]


def _describe_header(header_lines: Sequence[str]) -> str:
    return " / ".join(repr(line) for line in header_lines if line.strip()) or "nothing"


def _table(
    path: Path, sha256: str, lines: list[str], first_data_line: int, names: Sequence[str]
) -> _Table:
    """Split the data rows (skipping blank lines) into named text columns."""
    numbers, rows = [], []
    for number, line in enumerate(lines[first_data_line - 1 :], start=first_data_line):
        if not line.strip():
            continue
        fields = _fields(line)
        if len(fields) != len(names):
            raise ImportRefused(
                path,
                f"expected {len(names)} fields ({','.join(names)}), found {len(fields)}",
                line=number,
            )
        numbers.append(number)
        rows.append(fields)
    if not rows:
        raise ImportRefused(path, "no data rows after the header")
    by_column = zip(*rows, strict=True)
    columns = {
        name: pd.Series(values, dtype=object) for name, values in zip(names, by_column, strict=True)
    }
    return _Table(path, sha256, np.asarray(numbers), columns)


def _parse_dates(table: _Table, name: str) -> pd.DatetimeIndex:
    """Return the date column as midnight dates; refuse bad, timed, zoned or duplicate dates."""
    text = table.columns[name]
    parts = text.str.extract(_DATE_PATTERN)
    bad = parts["day"].isna().to_numpy()
    if bad.any():
        i = int(np.argmax(bad))
        raise ImportRefused(
            table.path, f"unparseable date {text[i]!r} (expected YYYY-MM-DD)", line=table.line_of(i)
        )
    zoned = parts["tz"].notna().to_numpy()
    if zoned.any():
        offsets = parts["tz"][zoned].unique()
        i = int(np.argmax(zoned))
        if len(offsets) > 1 or not zoned.all():
            other = int(np.argmax(parts["tz"].to_numpy() != parts["tz"][i]))
            problem = (
                f"mixed timezones in the date column: {text[i]!r} here, {text[other]!r} on line "
                f"{table.line_of(other)}"
            )
        else:
            problem = f"timezone offset in date {text[i]!r}"
        raise ImportRefused(
            table.path,
            f"{problem}; daily bars need plain exchange-local dates (YYYY-MM-DD)",
            line=table.line_of(i),
        )
    timed = (parts["time"].notna() & ~parts["time"].isin(_MIDNIGHT)).to_numpy()
    if timed.any():
        i = int(np.argmax(timed))
        raise ImportRefused(
            table.path,
            f"date {text[i]!r} has a time of day; daily bars need plain dates",
            line=table.line_of(i),
        )
    days = pd.to_datetime(parts["day"], format="%Y-%m-%d", errors="coerce")
    if days.isna().any():
        i = int(np.argmax(days.isna().to_numpy()))
        raise ImportRefused(
            table.path, f"unparseable date {text[i]!r} (no such day)", line=table.line_of(i)
        )
    duplicated = days.duplicated(keep="first").to_numpy()
    if duplicated.any():
        i = int(np.argmax(duplicated))
        first = int(np.argmax((days == days[i]).to_numpy()))
        raise ImportRefused(
            table.path,
            f"duplicate date {parts['day'][i]} (first on line {table.line_of(first)})",
            line=table.line_of(i),
        )
    return pd.DatetimeIndex(days)


def _parse_numbers(table: _Table, name: str) -> np.ndarray:
    """Return a numeric column as float64; refuse empty, non-numeric or infinite values."""
    text = table.columns[name]
    values = pd.to_numeric(text, errors="coerce").to_numpy(dtype=np.float64)
    bad = ~np.isfinite(values)
    if bad.any():
        i = int(np.argmax(bad))
        shown = repr(text[i]) if text[i] else "an empty field"
        raise ImportRefused(table.path, f"non-numeric {name}: {shown}", line=table.line_of(i))
    return values


def _require_positive(table: _Table, name: str, values: np.ndarray, allow_zero: bool) -> None:
    bad = values < 0 if allow_zero else values <= 0
    if bad.any():
        i = int(np.argmax(bad))
        limit = ">= 0" if allow_zero else "> 0"
        raise ImportRefused(
            table.path,
            f"{name} must be {limit}, found {table.columns[name][i]!r}",
            line=table.line_of(i),
        )


def _require_header(path: Path, asked: str, found: list[str], expected: list[str]) -> None:
    """Refuse unless the header lines match; the message names the layout and both headers."""
    if [_fields(line) for line in found] == [_fields(line) for line in expected]:
        return
    hint = ""
    for layout in LAYOUTS:
        if layout.name != asked and layout.matches_header(found):
            hint = f" (it looks like the {layout.name!r} layout: use --layout {layout.name})"
            break
    raise ImportRefused(
        path,
        f"header does not match the {asked!r} layout: expected {_describe_header(expected)}, "
        f"found {_describe_header(found)}{hint}",
        line=1,
    )


def compute_inferred_dividends(
    close: np.ndarray, adjusted: np.ndarray, step_min: float = DIVIDEND_STEP_MIN
) -> np.ndarray:
    """Return cash dividends implied by steps in the adjusted/close ratio ``r``.

    Vendors that publish a dividend-adjusted close multiply every day before an ex-date t by
    ``1 - D_t / close_{t-1}``, so ``r_{t-1} / r_t = 1 - D_t / close_{t-1}`` and
    ``D_t = close_{t-1} * (1 - r_{t-1} / r_t)``. Steps at or below ``step_min`` are rounding
    noise and give 0.0. Dividends are rounded to 6 decimals.
    """
    ratio = adjusted / close
    dividends = np.zeros(len(close))
    if len(close) > 1:
        step = 1.0 - ratio[:-1] / ratio[1:]
        dividends[1:] = np.where(step > step_min, np.round(close[:-1] * step, 6), 0.0)
    return dividends


class AlphaVantageLayout:
    """Alpha Vantage TIME_SERIES_DAILY_ADJUSTED CSV: raw OHLC, dividends, splits; newest first."""

    name = "alphavantage"
    header = [
        "timestamp,open,high,low,close,adjusted_close,volume,dividend_amount,split_coefficient"
    ]

    def matches_header(self, found: list[str]) -> bool:
        return bool(found) and _fields(found[0]) == _fields(self.header[0])

    def read_file(self, path: Path) -> ParsedFile:
        """Return the file as raw bars with the vendor's adjusted close in ``extra``."""
        sha256, lines = _read_lines(path)
        _require_header(path, self.name, lines[:1], self.header)
        table = _table(path, sha256, lines, 2, _fields(self.header[0]))
        dates = _parse_dates(table, "timestamp")
        values = {
            name: _parse_numbers(table, name)
            for name in (
                "open",
                "high",
                "low",
                "close",
                "adjusted_close",
                "volume",
                "dividend_amount",
                "split_coefficient",
            )
        }
        for name in ("open", "high", "low", "close", "adjusted_close"):
            _require_positive(table, name, values[name], allow_zero=False)
        for name in ("volume", "dividend_amount"):
            _require_positive(table, name, values[name], allow_zero=True)
        _require_positive(table, "split_coefficient", values["split_coefficient"], False)
        order = np.argsort(dates.to_numpy(), kind="stable")  # the file is newest first
        bars = make_bars(
            dates[order],
            *(
                values[name][order]
                for name in (
                    "open",
                    "high",
                    "low",
                    "close",
                    "volume",
                    "dividend_amount",
                    "split_coefficient",
                )
            ),
        )
        adjusted = pd.Series(values["adjusted_close"][order], index=bars.index)
        dividends, refined, kept = compute_unrounded_dividends(bars, adjusted)
        bars["dividend"] = dividends
        splits = bars.index[bars["split"] != 1.0]
        notes = (
            "alphavantage: raw OHLC and split_coefficient as published; "
            f"{refined + kept} dividends, {refined} of them restored to the unrounded amount "
            "the vendor's adjusted_close implies (each within 0.00005 of the published "
            f"4-decimal dividend_amount), {kept} kept as published"
        )
        if len(splits):
            listed = ", ".join(f"{d.date()} x{bars.at[d, 'split']:g}" for d in splits)
            notes += f"; splits as published: {listed}"
        notes += "; vendor adjusted_close kept for QA (ops_runner computes its own)"
        return ParsedFile(
            symbol=path.stem.upper(),
            bars=bars,
            source_path=path,
            source_sha256=sha256,
            layout=self.name,
            notes=notes,
            extra={"adjusted_close": adjusted.rename("adjusted_close")},
        )


class _AdjustedCloseLayout:
    """Shared reading for layouts with split-adjusted OHLC and an adjusted close, no dividends."""

    name = ""
    header: list[str] = []
    first_data_line = 2
    columns: list[str] = []
    date_column = ""
    adjusted_column = ""
    price_columns: dict[str, str] = {}

    def matches_header(self, found: list[str]) -> bool:
        return [_fields(line) for line in found[: len(self.header)]] == [
            _fields(line) for line in self.header
        ]

    def _check_header(self, path: Path, lines: list[str]) -> list[str]:
        _require_header(path, self.name, lines[: len(self.header)], self.header)
        return []

    def read_file(self, path: Path) -> ParsedFile:
        """Return split-adjusted bars with dividends inferred from the adjusted close."""
        sha256, lines = _read_lines(path)
        notes = self._check_header(path, lines)
        table = _table(path, sha256, lines, self.first_data_line, self.columns)
        dates = _parse_dates(table, self.date_column)
        values = {name: _parse_numbers(table, name) for name in self.columns[1:]}
        for name in self.columns[1:]:
            _require_positive(table, name, values[name], allow_zero=name == "Volume")
        order = np.argsort(dates.to_numpy(), kind="stable")
        close = values[self.price_columns["close"]][order]
        adjusted = values[self.adjusted_column][order]
        ratio = adjusted / close
        step = np.concatenate([[0.0], 1.0 - ratio[:-1] / ratio[1:]])
        if (step > SPLIT_STEP_MIN).any():
            k = int(np.argmax(step > SPLIT_STEP_MIN))
            raise ImportRefused(
                path,
                f"the {self.adjusted_column}/{self.price_columns['close']} ratio falls "
                f"{step[k]:.0%} here: Close looks unadjusted for a split; the {self.name!r} "
                "layout needs split-adjusted prices",
                line=table.line_of(int(order[k])),
            )
        dividends = compute_inferred_dividends(close, adjusted)
        rises = step < -DIVIDEND_STEP_MIN
        price = {c: values[self.price_columns[c]][order] for c in ("open", "high", "low")}
        bars = make_bars(
            dates[order],
            price["open"],
            price["high"],
            price["low"],
            close,
            values["Volume"][order],
            dividends,
        )
        notes.append(
            f"{self.name}: Open/High/Low/Close are split-adjusted as published, so split is "
            f"1.0 throughout; {int((dividends > 0).sum())} cash dividends inferred from the "
            f"adjusted/close ratio r as D_t = close_(t-1) * (1 - r_(t-1)/r_t) where that step "
            f"exceeds {DIVIDEND_STEP_MIN:g}"
        )
        if rises.any():
            notes.append(
                f"{int(rises.sum())} unexplained rises of the adjusted/close ratio ignored "
                f"(first on {bars.index[int(np.argmax(rises))].date()})"
            )
        notes.append("vendor adjusted close kept for QA (ops_runner computes its own)")
        vendor = pd.Series(adjusted, index=bars.index, name="adjusted_close")
        return ParsedFile(
            symbol=path.stem.upper(),
            bars=bars,
            source_path=path,
            source_sha256=sha256,
            layout=self.name,
            notes="; ".join(notes),
            extra={"adjusted_close": vendor},
        )


class YahooLayout(_AdjustedCloseLayout):
    """yfinance ``download(auto_adjust=False)`` export: four header lines, adj close second."""

    name = "yahoo"
    header = [
        "Price,Price,Close,High,Low,Open,Volume",
        "Ticker,*,*,*,*,*,*",
        "Ticker,*,*,*,*,*,*",
        "Date,,,,,,",
    ]
    first_data_line = 5
    columns = ["Date", "Price", "Close", "High", "Low", "Open", "Volume"]
    date_column = "Date"
    adjusted_column = "Price"
    price_columns = {"open": "Open", "high": "High", "low": "Low", "close": "Close"}

    def matches_header(self, found: list[str]) -> bool:
        if len(found) < 4:
            return False
        first, tickers, tickers_again, date_line = (_fields(line) for line in found[:4])
        return (
            first == _fields(self.header[0])
            and tickers[:1] == ["Ticker"]
            and len(tickers) == 7
            and tickers_again == tickers
            and len(set(tickers[1:])) == 1
            and date_line == _fields(self.header[3])
        )

    def _check_header(self, path: Path, lines: list[str]) -> list[str]:
        if not self.matches_header(lines[:4]):
            tickers = "Ticker,<T>,<T>,<T>,<T>,<T>,<T>"
            expected = [self.header[0], tickers, tickers, self.header[3]]
            _require_header(path, self.name, lines[:4], expected)
        ticker = _fields(lines[1])[1]
        if ticker.upper() != path.stem.upper():
            return [
                f"file ticker {ticker} differs from the file name; symbol is {path.stem.upper()}"
            ]
        return []


class GenericLayout(_AdjustedCloseLayout):
    """``Date,Open,High,Low,Close,Adj Close,Volume``: split-adjusted OHLC plus an adjusted close."""

    name = "generic"
    header = ["Date,Open,High,Low,Close,Adj Close,Volume"]
    columns = ["Date", "Open", "High", "Low", "Close", "Adj Close", "Volume"]
    date_column = "Date"
    adjusted_column = "Adj Close"
    price_columns = {"open": "Open", "high": "High", "low": "Low", "close": "Close"}


def read_vendor_adjusted(path: Path, layout: str = "alphavantage") -> pd.Series:
    """Return the vendor's own adjusted close from a file, indexed by date ascending.

    Raises ImportRefused when the file cannot be read with ``layout``.
    """
    for candidate in LAYOUTS:
        if candidate.name == layout:
            return candidate.read_file(Path(path)).extra["adjusted_close"]
    raise ImportRefused(path, f"unknown layout {layout!r}")


LAYOUTS = (AlphaVantageLayout(), YahooLayout(), GenericLayout())
