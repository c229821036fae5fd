"""The vendors' daily series as they publish them, for the loopback vendor server.

Rows in Alpha Vantage's CSV layout (read from the shared vendor files, or made from canonical
bars), written as Alpha Vantage's ``TIME_SERIES_DAILY_ADJUSTED`` JSON or Tiingo's end-of-day
JSON, and the vendors' own error texts. Standard library only, besides the project.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import date
from pathlib import Path
from typing import Any

import pandas as pd

from ops_runner.market.prices import compute_adjusted_close

SHARED_ALPHAVANTAGE = (
    Path(__file__).resolve().parents[2].parent / "shared" / "data" / "alphavantage"
)
AV_FIELDS = (
    "1. open",
    "2. high",
    "3. low",
    "4. close",
    "5. adjusted close",
    "6. volume",
    "7. dividend amount",
    "8. split coefficient",
)
AV_INVALID_KEY = (
    "the parameter apikey is invalid or missing. Please claim your free API key on "
    "(https://www.alphavantage.co/support/#api-key). It should take less than 20 seconds."
)
AV_INVALID_CALL = (
    "Invalid API call. Please retry or visit the documentation "
    "(https://www.alphavantage.co/documentation/) for TIME_SERIES_DAILY_ADJUSTED."
)
AV_NOTE = (
    "Thank you for using Alpha Vantage! Our standard API call frequency is 5 calls per minute "
    "and 500 calls per day. Please visit https://www.alphavantage.co/premium/ if you would "
    "like to target a higher API call frequency."
)
TIINGO_RATE_LIMIT = (
    "Error: You have run over your hourly request allocation. Please upgrade at "
    "https://api.tiingo.com/pricing to have your limits increased."
)
NGINX_502 = (
    "<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n<center><h1>502 Bad "
    "Gateway</h1></center>\r\n<hr><center>nginx/1.18.0 (Ubuntu)</center>\r\n</body>\r\n</html>\r\n"
)


@dataclass(frozen=True)
class VendorRow:
    """One session in Alpha Vantage's CSV layout, every field as text."""

    date: str
    open: str
    high: str
    low: str
    close: str
    adjusted_close: str
    volume: str
    dividend: str
    split: str

    def published(self) -> tuple[str, ...]:
        """Return the fields after the date, in the CSV's (and the JSON's) order."""
        return (
            self.open,
            self.high,
            self.low,
            self.close,
            self.adjusted_close,
            self.volume,
            self.dividend,
            self.split,
        )


def read_alphavantage_rows(path: Path) -> list[VendorRow]:
    """Return the rows of an Alpha Vantage daily-adjusted CSV file, oldest first."""
    with Path(path).open(newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle)
        next(reader)  # the header
        rows = [VendorRow(*fields) for fields in reader if fields]
    return sorted(rows, key=lambda row: row.date)


def load_alphavantage_folder(
    folder: Path = SHARED_ALPHAVANTAGE,
    symbols: Sequence[str] | None = None,
    aliases: Mapping[str, str] | None = None,
) -> dict[str, list[VendorRow]]:
    """Return rows per symbol from ``<folder>/<SYMBOL>.csv`` (all files when ``symbols`` is
    None); ``aliases`` maps extra symbols to the file symbol whose rows they repeat."""
    folder = Path(folder)
    names = symbols or sorted(p.stem.upper() for p in folder.glob("*.csv"))
    rows = {s: read_alphavantage_rows(folder / f"{s}.csv") for s in names}
    for alias, symbol in (aliases or {}).items():
        rows[alias] = (
            rows[symbol] if symbol in rows else read_alphavantage_rows(folder / f"{symbol}.csv")
        )
    return rows


def compute_rows_from_bars(bars: pd.DataFrame) -> list[VendorRow]:
    """Return VendorRows for a canonical bars frame (for synthetic markets), the adjusted close
    computed the way Alpha Vantage computes it."""
    frame = bars.assign(adjusted=compute_adjusted_close(bars))
    return [
        VendorRow(
            day.date().isoformat(),
            repr(float(o)),
            repr(float(h)),
            repr(float(lo)),
            repr(float(c)),
            repr(float(a)),
            str(int(v)),
            f"{d:.4f}",
            repr(float(s)),
        )
        for day, o, h, lo, c, v, d, s, a in frame.itertuples(name=None)
    ]


def compute_rebased_rows(rows: Sequence[VendorRow], end: date | None) -> list[VendorRow]:
    """Return the rows through ``end`` with the adjusted close re-based to its last session, as
    a vendor publishing on ``end`` would have it."""
    if end is not None:
        rows = [row for row in rows if row.date <= end.isoformat()]
    if not rows:
        return []
    factor = float(rows[-1].close) / float(rows[-1].adjusted_close)
    if factor == 1.0:
        return list(rows)
    return [replace(r, adjusted_close=repr(float(r.adjusted_close) * factor)) for r in rows]


def compute_alphavantage_json(symbol: str, rows: Sequence[VendorRow], compact: bool) -> bytes:
    """Return Alpha Vantage's JSON for ``rows``, newest first; written by hand so that a
    date can appear twice."""
    meta = {
        "1. Information": "Daily Time Series with Splits and Dividend Events",
        "2. Symbol": symbol,
        "3. Last Refreshed": rows[-1].date if rows else "",
        "4. Output Size": "Compact" if compact else "Full size",
        "5. Time Zone": "US/Eastern",
    }
    values = (json.dumps(dict(zip(AV_FIELDS, r.published(), strict=True))) for r in rows[::-1])
    entries = ",\n".join(
        f"        {json.dumps(r.date)}: {v}" for r, v in zip(rows[::-1], values, strict=True)
    )
    text = (
        f'{{\n    "Meta Data": {json.dumps(meta)},\n    "Time Series (Daily)": {{\n{entries}\n'
        "    }\n}"
    )
    return text.encode()


def compute_tiingo_row(row: VendorRow) -> dict[str, Any]:
    """Return one session as Tiingo's end-of-day JSON object."""
    close, adjusted = float(row.close), float(row.adjusted_close)
    ratio = adjusted / close if close else 1.0
    return {
        "date": f"{row.date}T00:00:00.000Z",
        "close": close,
        "high": float(row.high),
        "low": float(row.low),
        "open": float(row.open),
        "volume": int(float(row.volume)),
        "adjClose": adjusted,
        "adjHigh": float(row.high) * ratio,
        "adjLow": float(row.low) * ratio,
        "adjOpen": float(row.open) * ratio,
        "adjVolume": int(float(row.volume)),  # Tiingo adjusts volume for splits; not used here
        "divCash": float(row.dividend),
        "splitFactor": float(row.split),
    }
