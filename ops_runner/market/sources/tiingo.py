"""Tiingo's end-of-day prices over HTTP, read into canonical bars.

``GET /tiingo/daily/<ticker>/prices?startDate=&endDate=&format=json`` answers a JSON list of
sessions, each with raw ``open``/``high``/``low``/``close``/``volume``, ``divCash`` on its
ex-date and ``splitFactor``, beside adjusted fields that are not stored (ops_runner computes its
own). The key travels in the ``Authorization: Token`` header, never in a URL. Errors: 401
(invalid token), 404 (unknown ticker), 429 (over the hourly or daily allowance), and an empty
list for a range without sessions.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from datetime import date
from typing import Any

import httpx
import pandas as pd

from ops_runner.core.errors import VendorProblem
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

TIINGO_VENDOR = "tiingo"
TIINGO_LAYOUT = "tiingo-api"
TIINGO_BASE_URL = "https://api.tiingo.com"
TIINGO_MIN_INTERVAL = 72.0  # the free tier allows 50 requests an hour
FIELDS = {
    "open": "open",
    "high": "high",
    "low": "low",
    "close": "close",
    "volume": "volume",
    "dividend": "divCash",
    "split": "splitFactor",
}
# Tiingo stamps each session at midnight UTC: "2020-12-11T00:00:00.000Z".
_DATE = re.compile(r"(\d{4}-\d{2}-\d{2})(?:T00:00:00(?:\.0+)?(?:Z|\+00:?00)?)?")
NOTES = (
    f"{TIINGO_VENDOR} end-of-day prices: raw open/high/low/close/volume, divCash and "
    "splitFactor as published; adjusted fields not stored (ops_runner computes its own)"
)


class TiingoClient(VendorClientBase):
    """A ``VendorClient`` (and a ``Source``) for Tiingo end-of-day prices."""

    name = TIINGO_VENDOR
    layout = TIINGO_LAYOUT
    default_base_url = TIINGO_BASE_URL
    default_min_interval = TIINGO_MIN_INTERVAL

    def _add_key(self, request: httpx.Request) -> httpx.Request:
        headers = httpx.Headers(request.headers)
        headers["Authorization"] = f"Token {self._key}"
        return httpx.Request(
            request.method, request.url, headers=headers, extensions=request.extensions
        )

    def describe(self, symbol: str, start: date, end: date) -> str:
        """Return the request for ``symbol`` in words, without the key."""
        return f"{TIINGO_VENDOR} daily prices {symbol} {start}..{end} from {self._http.base_url}"

    def read_daily(
        self, symbol: str, start: date, end: date, *, span_sessions: int | None = None
    ) -> VendorReply:
        """Return the bars of ``start``..``end`` and the answer they came from.

        ``span_sessions`` is not needed (Tiingo takes a date range). Raises VendorError.
        """
        require_request(TIINGO_VENDOR, symbol, start, end)
        describe = self.describe(symbol, start, end)
        params = {"startDate": start.isoformat(), "endDate": end.isoformat(), "format": "json"}

        def read(response: httpx.Response) -> tuple[pd.DataFrame, bytes]:
            return _read_answer(response, start, end), response.content

        path = f"tiingo/daily/{symbol.lower()}/prices"
        bars, raw = self._http.get(path, params, symbol=symbol, describe=describe, read=read)
        log.info("%s: %d bars", describe, len(bars))
        return VendorReply(
            vendor=TIINGO_VENDOR,
            layout=TIINGO_LAYOUT,
            symbol=symbol,
            bars=bars,
            raw=raw,
            request=describe,
            requests=(describe,),
            notes=NOTES,
        )

    def read_bars(self, symbols: Sequence[str], start: date, end: date) -> dict[str, pd.DataFrame]:
        """Return canonical bars per symbol for ``start``..``end`` (the ``Source`` interface)."""
        return {s: self.read_daily(s, start, end).bars for s in symbols}


def _read_answer(response: httpx.Response, start: date, end: date) -> pd.DataFrame:
    status = response.status_code
    body = read_json(response) if status == 200 else _read_error(response)
    if status != 200 or isinstance(body, dict):
        raise _refusal(status, body)
    if not isinstance(body, list):
        raise Refusal(VendorProblem.BAD_JSON, f"expected a JSON list, got {type(body).__name__}")
    if not body:
        raise Refusal(VendorProblem.EMPTY_SERIES, f"an empty list for {start}..{end}")
    if not all(isinstance(row, dict) for row in body):
        raise Refusal(VendorProblem.BAD_JSON, "expected a list of JSON objects")
    dates = []
    for row in body:
        match = _DATE.fullmatch(str(row.get("date", "")))
        if match is None:
            shown = row.get("date", "nothing")
            raise Refusal(VendorProblem.BAD_JSON, f"date {shown!r} is not a midnight UTC date")
        dates.append(match.group(1))
    columns: dict[str, list[Any]] = {}
    for name, label in FIELDS.items():
        missing = [d for d, row in zip(dates, body, strict=True) if label not in row]
        if missing:
            raise Refusal(VendorProblem.BAD_JSON, f"{missing[0]} lacks {label!r}")
        columns[name] = [row[label] for row in body]
    bars = compute_window(compute_vendor_bars(dates, columns), start, end)
    if bars.empty:
        raise Refusal(VendorProblem.EMPTY_SERIES, f"no sessions in {start}..{end}")
    require_sane_bars(bars)
    return bars


def _read_error(response: httpx.Response) -> Any:
    try:
        return read_json(response)
    except Refusal:  # an error answer in plain text: quote it
        return {"detail": response.text}


def _refusal(status: int, body: Any) -> Refusal:
    said = compute_one_line(str(body.get("detail", body)) if isinstance(body, dict) else str(body))
    lowered = said.lower()
    if status in (401, 403) or "token" in lowered:
        return Refusal(VendorProblem.INVALID_KEY, f"HTTP {status}: {said}")
    if status == 404 or "not found" in lowered:
        return Refusal(VendorProblem.UNKNOWN_SYMBOL, f"HTTP {status}: {said}")
    return Refusal(VendorProblem.REFUSED, f"HTTP {status}: {said}")
