"""A loopback HTTP server answering Alpha Vantage's and Tiingo's daily-bar APIs, with faults.

It serves rows in Alpha Vantage's CSV layout (the shared vendor files, or rows made from
canonical bars) as ``TIME_SERIES_DAILY_ADJUSTED`` JSON at ``/query`` and as Tiingo end-of-day
JSON at ``/tiingo/daily/<ticker>/prices``, each in the vendor's own format and with its own error
answers. ``end`` is the server's "today": no session after it is served, and the vendor's
adjusted close is re-based to it as a live vendor's would be. Faults are switched on per symbol
or for every symbol, for a number of requests or until cleared. Every request served is recorded
without its key. Standard library only, besides the project.
"""

from __future__ import annotations

import enum
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import date
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qs, urlsplit

from ops_runner.simulators.loopback import LoopbackServer
from ops_runner.simulators.vendor_feed import (
    AV_INVALID_CALL,
    AV_INVALID_KEY,
    AV_NOTE,
    NGINX_502,
    TIINGO_RATE_LIMIT,
    VendorRow,
    compute_alphavantage_json,
    compute_rebased_rows,
    compute_tiingo_row,
)

COMPACT_ROWS = 100
REVISED_CLOSE_FACTOR = 1.01  # the REVISE fault raises one past close by 1%
_TIINGO_PATH = re.compile(r"/tiingo/daily/([^/]+)/prices/?")


class Fault(enum.Enum):
    """What the server does instead of (or to) a normal answer."""

    INVALID_KEY = "invalid_key"  # the key is refused, as if revoked
    RATE_LIMIT = "rate_limit"  # Alpha Vantage's Note (HTTP 200), Tiingo's HTTP 429
    UNKNOWN_SYMBOL = "unknown_symbol"
    EMPTY_SERIES = "empty_series"
    TRUNCATED_JSON = "truncated_json"  # the body cut in half
    HTML_ERROR = "html_error"  # an nginx 502 page
    TIMEOUT = "timeout"  # no answer for hang_seconds
    FLAKY = "flaky"  # HTTP 503
    REVISE = "revise"  # one past close raised by REVISED_CLOSE_FACTOR
    ZERO_PRICE = "zero_price"  # one past close of 0
    HIGH_BELOW_LOW = "high_below_low"  # one past bar with high and low swapped
    DUPLICATE_DATE = "duplicate_date"  # one past session listed twice


@dataclass(frozen=True)
class ServedRequest:
    """A request the server answered: ``params`` without the key; ``status`` 0 for no answer."""

    vendor: str
    symbol: str
    path: str
    params: dict[str, str]
    keyed: bool
    key_in_url: bool
    status: int


class VendorServer(LoopbackServer[Fault, ServedRequest]):
    """Both vendors' daily-bar endpoints on 127.0.0.1, for tests and benchmarks.

    ``rows`` maps symbol to its sessions (oldest first). ``api_key`` is the only key accepted.
    ``revise_back`` picks the session the bar faults change: that many before the last served.
    """

    thread_name = "vendor-server"

    def __init__(
        self,
        rows: Mapping[str, Sequence[VendorRow]],
        *,
        api_key: str = "test-key",
        end: date | None = None,
        hang_seconds: float = 2.0,
        revise_back: int = 2,
        retry_after: float | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self._rows = {symbol.upper(): list(r) for symbol, r in rows.items()}
        self.api_key = api_key
        self.end = end
        self.hang_seconds = hang_seconds
        self.revise_back = revise_back
        self.retry_after = retry_after
        super().__init__(host, port)
        self._rebased: dict[tuple[str, date | None], list[VendorRow]] = {}

    # -- what tests set and read -------------------------------------------------------------

    def set_fault(self, fault: Fault, symbol: str | None = None, times: int | None = None) -> None:
        """Apply ``fault`` to ``symbol`` (every symbol when None) for ``times`` requests (until
        cleared when None); a symbol's own fault wins over the global one."""
        self._put_fault(symbol.upper() if symbol else None, fault, times)

    def symbols(self) -> list[str]:
        return sorted(self._rows)

    def _served_rows(self, symbol: str, fault: Fault | None) -> list[VendorRow]:
        """The symbol's rows through ``end``, adjusted close re-based to it, with bar faults."""
        key = (symbol, self.end)
        if key not in self._rebased:  # the same rows for every request until ``end`` moves
            self._rebased[key] = compute_rebased_rows(self._rows[symbol], self.end)
        rows = list(self._rebased[key])
        at = len(rows) - 1 - self.revise_back
        if at < 0 or fault not in _BAR_FAULTS:
            return rows
        row = rows[at]
        if fault is Fault.REVISE:
            close = f"{float(row.close) * REVISED_CLOSE_FACTOR:.4f}"
            adjusted = repr(float(row.adjusted_close) * REVISED_CLOSE_FACTOR)
            high = max(row.high, close, key=float)
            rows[at] = replace(row, close=close, high=high, adjusted_close=adjusted)
        elif fault is Fault.ZERO_PRICE:
            rows[at] = replace(row, close="0.0000")
        elif fault is Fault.HIGH_BELOW_LOW:
            low = row.low if float(row.low) < float(row.high) else f"{float(row.high) + 0.01:.4f}"
            rows[at] = replace(row, high=low, low=row.high)
        else:
            rows.insert(at + 1, row)
        return rows

    # -- answering ---------------------------------------------------------------------------

    def answer(self, handler: BaseHTTPRequestHandler) -> None:
        """Answer one GET (called by the request handler's thread)."""
        url = urlsplit(handler.path)
        params = {k: v[-1] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
        tiingo = _TIINGO_PATH.fullmatch(url.path)
        if url.path.rstrip("/") == "/query":
            self._alphavantage(handler, url.path, params)
        elif tiingo:
            self._tiingo(handler, url.path, tiingo.group(1).upper(), params)
        else:
            self._send(
                handler,
                ServedRequest("unknown", "", url.path, {}, False, False, 404),
                b"Not Found",
                "text/plain",
            )

    def _alphavantage(self, handler: Any, path: str, params: dict[str, str]) -> None:
        key = params.pop("apikey", None)
        symbol = params.get("symbol", "").upper()
        seen = ServedRequest(
            "alphavantage", symbol, path, dict(params), bool(key), key is not None, 200
        )
        if key != self.api_key:
            return self._send_json(handler, seen, {"Error Message": AV_INVALID_KEY})
        fault = self._take_fault(symbol)
        if self._common_fault(handler, seen, fault):
            return None
        if fault is Fault.RATE_LIMIT:
            return self._send_json(handler, seen, {"Note": AV_NOTE})
        if fault is Fault.INVALID_KEY:
            return self._send_json(handler, seen, {"Error Message": AV_INVALID_KEY})
        function = params.get("function")
        if function != "TIME_SERIES_DAILY_ADJUSTED" or fault is Fault.UNKNOWN_SYMBOL:
            return self._send_json(handler, seen, {"Error Message": AV_INVALID_CALL})
        if symbol not in self._rows:
            return self._send_json(handler, seen, {"Error Message": AV_INVALID_CALL})
        rows = [] if fault is Fault.EMPTY_SERIES else self._served_rows(symbol, fault)
        compact = params.get("outputsize", "compact") != "full"
        body = compute_alphavantage_json(symbol, rows[-COMPACT_ROWS:] if compact else rows, compact)
        if fault is Fault.TRUNCATED_JSON:
            body = body[: len(body) // 2]
        return self._send(handler, seen, body, "application/json")

    def _tiingo(self, handler: Any, path: str, symbol: str, params: dict[str, str]) -> None:
        in_url = params.pop("token", None)
        header = handler.headers.get("Authorization", "")
        key = header.removeprefix("Token ").strip() if header.startswith("Token ") else in_url
        seen = ServedRequest(
            "tiingo", symbol, path, dict(params), bool(key), in_url is not None, 200
        )
        if not key:
            detail = {"detail": "Authentication credentials were not provided."}
            return self._send_json(handler, seen, detail, 401)
        fault = self._take_fault(symbol)
        if key != self.api_key or fault is Fault.INVALID_KEY:
            return self._send_json(handler, seen, {"detail": "Invalid token."}, 401)
        if self._common_fault(handler, seen, fault):
            return None
        if fault is Fault.RATE_LIMIT:
            extra = {"Retry-After": f"{self.retry_after:g}"} if self.retry_after else {}
            return self._send(
                handler, replace(seen, status=429), TIINGO_RATE_LIMIT.encode(), "text/plain", extra
            )
        if symbol not in self._rows or fault is Fault.UNKNOWN_SYMBOL:
            detail = {"detail": f"Error: Ticker '{symbol}' not found"}
            return self._send_json(handler, seen, detail, 404)
        rows = [] if fault is Fault.EMPTY_SERIES else self._served_rows(symbol, fault)
        first, last = params.get("startDate"), params.get("endDate")
        if first is None:
            rows = rows[-1:]  # without a start date Tiingo answers the latest session only
        rows = [r for r in rows if (first or "") <= r.date <= (last or "9999-12-31")]
        body = json.dumps([compute_tiingo_row(r) for r in rows]).encode()
        if fault is Fault.TRUNCATED_JSON:
            body = body[: len(body) // 2]
        return self._send(handler, seen, body, "application/json")

    def _common_fault(self, handler: Any, seen: ServedRequest, fault: Fault | None) -> bool:
        """Answer the faults both vendors show alike; return whether one was answered."""
        if fault is Fault.TIMEOUT:
            self._record(replace(seen, status=0))
            self._stopping.wait(self.hang_seconds)
            handler.close_connection = True
            return True
        if fault is Fault.HTML_ERROR:
            self._send(handler, replace(seen, status=502), NGINX_502.encode(), "text/html")
            return True
        if fault is Fault.FLAKY:
            body = b'{"detail": "Service Unavailable"}'
            self._send(handler, replace(seen, status=503), body, "application/json")
            return True
        return False

    def _send_json(self, handler: Any, seen: ServedRequest, body: Any, status: int = 200) -> None:
        self._send(
            handler, replace(seen, status=status), json.dumps(body).encode(), "application/json"
        )

    def _send(
        self,
        handler: Any,
        seen: ServedRequest,
        body: bytes,
        content_type: str,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self._write(handler, seen, seen.status, body, content_type, headers)


_BAR_FAULTS = {Fault.REVISE, Fault.ZERO_PRICE, Fault.HIGH_BELOW_LOW, Fault.DUPLICATE_DATE}
