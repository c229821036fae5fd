"""Alpha Vantage's TIME_SERIES_DAILY_ADJUSTED over HTTP, read into canonical bars.

The endpoint has no date range: ``outputsize=compact`` gives the last 100 sessions, ``full`` the
whole history. A fetch asks for compact when the sessions it needs (plus one before, see below)
fit, and asks again for full when the compact answer does not reach back far enough.

Alpha Vantage answers its errors with HTTP 200 and a JSON object: ``Error Message`` (a bad key
names ``apikey``, anything else is an invalid call: for a well-formed request, the symbol),
``Note`` (the per-minute limit: retried) or ``Information`` (the daily limit, or a premium
endpoint). Bars are stored as the CSV layout stores them: raw OHLC, volume and split coefficient
as published, each dividend restored to the unrounded amount the vendor's adjusted close
implies where that rounds to the published one (``compute_unrounded_dividends``), which needs
the session before it: so one session before ``start`` is always read too.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any

import httpx
import pandas as pd

from ops_runner.core.errors import VendorProblem
from ops_runner.market.sources.csvfiles import compute_unrounded_dividends
from ops_runner.market.sources.vendorapi import (
    Refusal,
    VendorClientBase,
    VendorReply,
    compute_one_line,
    compute_vendor_bars,
    compute_window,
    read_json,
    require_request,
    require_sane_bars,
)

log = logging.getLogger(__name__)

AV_VENDOR = "alphavantage"
AV_LAYOUT = "alphavantage-api"
AV_BASE_URL = "https://www.alphavantage.co"
AV_FUNCTION = "TIME_SERIES_DAILY_ADJUSTED"
AV_MIN_INTERVAL = 12.0  # the free tier allows 5 calls a minute (and 25 a day)
COMPACT_SESSIONS = 100
SERIES = "Time Series (Daily)"
FIELDS = {
    "open": "1. open",
    "high": "2. high",
    "low": "3. low",
    "close": "4. close",
    "adjusted_close": "5. adjusted close",
    "volume": "6. volume",
    "dividend": "7. dividend amount",
    "split": "8. split coefficient",
}


class AlphaVantageClient(VendorClientBase):
    """A ``VendorClient`` (and a ``Source``) for Alpha Vantage daily adjusted bars.

    ``api_key`` comes from the workbook's secrets; it is sent as the ``apikey`` query parameter
    (the only way Alpha Vantage takes it) but appears in no log, message or returned string.
    """

    name = AV_VENDOR
    layout = AV_LAYOUT
    default_base_url = AV_BASE_URL
    default_min_interval = AV_MIN_INTERVAL

    def _add_key(self, request: httpx.Request) -> httpx.Request:
        return httpx.Request(
            request.method,
            request.url.copy_add_param("apikey", self._key),
            headers=request.headers,
            extensions=request.extensions,
        )

    def describe(self, symbol: str, outputsize: str) -> str:
        """Return the request for ``symbol`` in words, without the key."""
        return (
            f"{AV_VENDOR} {AV_FUNCTION} {symbol} outputsize={outputsize} from {self._http.base_url}"
        )

    def read_daily(
        self, symbol: str, start: date, end: date, *, span_sessions: int | None = None
    ) -> VendorReply:
        """Return the bars of ``start``..``end`` and the answer they came from.

        ``span_sessions``: sessions from ``start`` through the vendor's latest one; compact is
        asked when that plus one fits in 100. Raises VendorError (one line, naming the symbol).
        """
        require_request(AV_VENDOR, symbol, start, end)
        asked: list[str] = []
        if span_sessions is not None and span_sessions + 1 <= COMPACT_SESSIONS:
            try:
                return self._ask(symbol, start, end, "compact", asked)
            except _TooShort:
                log.info("%s does not reach back to %s: asking for full", asked[-1], start)
        return self._ask(symbol, start, end, "full", asked)

    def _ask(
        self, symbol: str, start: date, end: date, outputsize: str, asked: list[str]
    ) -> VendorReply:
        describe = self.describe(symbol, outputsize)
        asked.append(describe)
        params = {
            "function": AV_FUNCTION,
            "symbol": symbol,
            "outputsize": outputsize,
            "datatype": "json",
        }

        def read(response: httpx.Response) -> _Answer:
            return self._read_answer(response, symbol, start, end, outputsize)

        answer = self._http.get("query", params, symbol=symbol, describe=describe, read=read)
        log.info("%s: %d bars %s..%s", describe, len(answer.bars), start, end)
        return VendorReply(
            vendor=AV_VENDOR,
            layout=AV_LAYOUT,
            symbol=symbol,
            bars=answer.bars,
            raw=answer.raw,
            request=describe,
            requests=tuple(asked),
            notes=answer.notes,
        )

    def read_bars(self, symbols: Sequence[str], start: date, end: date) -> dict[str, pd.DataFrame]:
        """Return canonical bars per symbol for ``start``..``end`` (the ``Source`` interface)."""
        return {s: self.read_daily(s, start, end).bars for s in symbols}

    def _read_answer(
        self, response: httpx.Response, symbol: str, start: date, end: date, outputsize: str
    ) -> _Answer:
        body = read_json(response)
        if response.status_code != 200:
            raise Refusal(VendorProblem.REFUSED, f"HTTP {response.status_code}: {_said(body)}")
        if not isinstance(body, dict):
            raise Refusal(VendorProblem.BAD_JSON, f"expected a JSON object, got {_kind(body)}")
        _require_no_message(body, self._key)
        series = body.get(SERIES)
        if not isinstance(series, dict):
            keys = ", ".join(sorted(body)) or "none"
            raise Refusal(VendorProblem.BAD_JSON, f"no {SERIES!r} in the answer (keys: {keys})")
        meta = body.get("Meta Data")
        named = str(meta.get("2. Symbol", symbol)) if isinstance(meta, dict) else symbol
        if named.upper() != symbol.upper():
            raise Refusal(VendorProblem.BAD_JSON, f"the answer is for {named}, not {symbol}")
        if not series:
            raise Refusal(VendorProblem.EMPTY_SERIES, "the time series is empty")
        everything, adjusted = _read_series(series)
        if outputsize == "compact" and everything.index[0].date() >= start:
            raise _TooShort
        window = compute_window(everything, start, end, before=1)
        if not (window.index.date >= start).any():
            held = f"{everything.index[0].date()}..{everything.index[-1].date()}"
            raise Refusal(VendorProblem.EMPTY_SERIES, f"none in {start}..{end}; it holds {held}")
        require_sane_bars(window)
        vendor_adjusted = adjusted.loc[window.index]
        if (vendor_adjusted <= 0).any():
            day = vendor_adjusted.index[(vendor_adjusted <= 0).to_numpy()][0].date()
            raise Refusal(VendorProblem.BAD_BARS, f"adjusted close <= 0 on {day}")
        dividends, _, _ = compute_unrounded_dividends(window, vendor_adjusted)
        window = window.assign(dividend=dividends)
        bars = window.loc[window.index.date >= start]
        return _Answer(bars, _notes(bars, series), response.content)


class _TooShort(Exception):
    """A compact answer that starts on or after ``start``: the full history is needed."""


@dataclass(frozen=True)
class _Answer:
    bars: pd.DataFrame
    notes: str
    raw: bytes


def _read_series(series: dict[str, Any]) -> tuple[pd.DataFrame, pd.Series]:
    """Return the bars of the whole answer (ascending) and the vendor's adjusted close."""
    dates = list(series)
    rows = list(series.values())
    columns: dict[str, list[Any]] = {}
    for name, label in FIELDS.items():
        try:
            columns[name] = [row[label] for row in rows]
        except (KeyError, TypeError):
            bad = (
                d
                for d, row in zip(dates, rows, strict=True)
                if not isinstance(row, dict) or label not in row
            )
            day = next(bad)
            raise Refusal(VendorProblem.BAD_JSON, f"{day} lacks {label!r}") from None
    adjusted_text = columns.pop("adjusted_close")
    everything = compute_vendor_bars(dates, columns)
    adjusted = compute_vendor_bars(dates, {**columns, "close": adjusted_text})["close"]
    return everything, adjusted


def _require_no_message(body: dict[str, Any], key: str) -> None:
    """Raise Refusal for Alpha Vantage's HTTP-200 error objects."""
    if "Error Message" in body:
        said = compute_one_line(str(body["Error Message"]), key)
        problem = VendorProblem.INVALID_KEY if "apikey" in said else VendorProblem.UNKNOWN_SYMBOL
        raise Refusal(problem, f"vendor said {said!r}")
    if "Note" in body:  # the per-minute limit: it passes within a minute
        said = compute_one_line(str(body["Note"]), key)
        raise Refusal(VendorProblem.RATE_LIMITED, f"vendor said {said!r}", retryable=True)
    if "Information" in body:
        said = compute_one_line(str(body["Information"]), key)
        lowered = said.lower()
        if "rate limit" in lowered or "per day" in lowered:  # the daily limit: not today
            raise Refusal(VendorProblem.RATE_LIMITED, f"vendor said {said!r}")
        problem = VendorProblem.INVALID_KEY if "apikey" in lowered else VendorProblem.REFUSED
        raise Refusal(problem, f"vendor said {said!r}")


def _notes(bars: pd.DataFrame, series: dict[str, Any]) -> str:
    paid = int((bars["dividend"] > 0).sum())
    label = FIELDS["dividend"]
    exact = sum(
        1
        for day in bars.index[bars["dividend"] > 0]
        if float(series[day.date().isoformat()][label]) == bars.at[day, "dividend"]
    )
    notes = (
        f"{AV_VENDOR} {AV_FUNCTION}: raw OHLC, volume and split coefficient as published; "
        f"{paid} dividends, {paid - exact} of them restored to the unrounded amount the vendor's "
        "adjusted close implies (each within 0.00005 of the published 4-decimal amount); vendor "
        "adjusted close not stored (ops_runner computes its own)"
    )
    splits = bars.index[bars["split"] != 1.0]
    if len(splits):
        listed = ", ".join(f"{d.date()} x{bars.at[d, 'split']:g}" for d in splits)
        notes += f"; splits as published: {listed}"
    return notes


def _said(body: Any) -> str:
    if isinstance(body, dict):
        return compute_one_line("; ".join(f"{k}: {v}" for k, v in body.items()))
    return _kind(body)


def _kind(body: Any) -> str:
    return type(body).__name__
