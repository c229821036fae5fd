"""Requests to a data vendor's HTTP API: timeouts, bounded retries, pacing, and keys kept hidden.

The API key is added by the transport, on the way to the wire: the request the HTTP client
holds, logs (httpx logs every URL) and attaches to its exceptions never carries it. Every
failure leaves as one VendorError, whose detail is redacted of the key as well.
"""

from __future__ import annotations

import json
import logging
import re
import ssl
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import Any, Protocol, Self, TypeVar, runtime_checkable

import httpx
import numpy as np
import pandas as pd
import tenacity

from ops_runner.core.errors import DataError, SecretError, VendorError, VendorProblem
from ops_runner.core.hashing import compute_sha256
from ops_runner.market.bars import (
    BAR_COLUMNS,
    DATE_UNIT,
    PRICE_COLUMNS,
    SYMBOL_PATTERN,
    require_bars_shape,
)

log = logging.getLogger(__name__)

T = TypeVar("T")
_SSL: list[ssl.SSLContext] = []  # one per process: building one reads the CA bundle (~14 ms)
DETAIL_CHARS = 160  # a vendor's text quoted in a message is cut to this many characters
_ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_TITLE = re.compile(rb"<title[^>]*>(.*?)</title>", re.IGNORECASE | re.DOTALL)


@dataclass(frozen=True)
class VendorReply:
    """One symbol's daily bars as a vendor served them, with the answer they came from.

    ``raw`` is the response body exactly as received (the evidence kept beside the store),
    ``request`` the request that produced it described without the key, ``requests`` every
    request made for it (a second one when a short answer did not reach back far enough).
    """

    vendor: str
    layout: str
    symbol: str
    bars: pd.DataFrame
    raw: bytes
    request: str
    requests: tuple[str, ...]
    notes: str = ""

    @property
    def raw_sha256(self) -> str:
        """Return the SHA-256 of the raw response body."""
        return compute_sha256(self.raw)


@runtime_checkable
class VendorClient(Protocol):
    """A vendor of daily bars over HTTP (Alpha Vantage, Tiingo).

    ``read_daily`` returns the canonical bars of ``start``..``end`` with the raw answer, or
    raises VendorError. ``span_sessions`` (sessions from ``start`` through the vendor's latest
    session, when the caller knows) lets a vendor without date ranges ask for less.
    """

    name: str
    layout: str

    def read_daily(
        self, symbol: str, start: date, end: date, *, span_sessions: int | None = None
    ) -> VendorReply: ...


class Refusal(Exception):
    """Raised while reading one answer; VendorHttp turns it into a VendorError.

    ``retryable`` says whether asking again may help (rate limits, server errors, timeouts);
    ``retry_after`` is the vendor's own advice in seconds, when it gave one.
    """

    def __init__(
        self,
        problem: VendorProblem,
        detail: str = "",
        retryable: bool = False,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(problem.value)
        self.problem = problem
        self.detail = detail
        self.retryable = retryable
        self.retry_after = retry_after


def compute_one_line(text: str, secret: str = "", limit: int = DETAIL_CHARS) -> str:
    """Return ``text`` on one line, at most ``limit`` characters, with ``secret`` masked."""
    if secret:
        text = text.replace(secret, "***")
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


class _KeyTransport(httpx.BaseTransport):
    """Adds the key to each request as it leaves, so no URL or header above it holds the key."""

    def __init__(
        self, inner: httpx.BaseTransport, add_key: Callable[[httpx.Request], httpx.Request]
    ) -> None:
        self._inner = inner
        self._add_key = add_key

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        return self._inner.handle_request(self._add_key(request))

    def close(self) -> None:
        self._inner.close()


@dataclass
class VendorHttp:
    """One vendor's HTTP session: timeouts, retries with exponential backoff, minimum spacing.

    ``retries`` more attempts follow a retryable failure (HTTP 429 and 5xx, timeouts, lost
    connections, a rate-limit note), waiting ``backoff_initial`` x 2^n seconds (at most
    ``backoff_max``, at least the vendor's Retry-After up to that cap). Every request starts at
    least ``min_interval`` seconds after the previous one. ``sleep`` and ``clock`` are for tests.
    """

    vendor: str
    base_url: str
    add_key: Callable[[httpx.Request], httpx.Request] = field(repr=False)
    secret: str = field(repr=False)
    timeout: float = 30.0
    retries: int = 3
    backoff_initial: float = 2.0
    backoff_max: float = 60.0
    min_interval: float = 0.0
    transport: httpx.BaseTransport | None = field(default=None, repr=False)
    sleep: Callable[[float], None] = field(default=time.sleep, repr=False)
    clock: Callable[[], float] = field(default=time.monotonic, repr=False)
    _last_start: float | None = field(default=None, init=False, repr=False)
    _client: httpx.Client | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.timeout <= 0 or self.retries < 0 or self.min_interval < 0:
            raise DataError(
                f"{self.vendor}: timeout must be > 0, retries and min_interval >= 0 (got "
                f"{self.timeout}, {self.retries}, {self.min_interval}); fix data.providers"
            )
        self.base_url = self.base_url.rstrip("/")

    def _session(self) -> httpx.Client:
        if self._client is None:
            inner = self.transport or httpx.HTTPTransport(verify=_ssl_context())
            self._client = httpx.Client(
                base_url=self.base_url,
                timeout=httpx.Timeout(self.timeout),
                transport=_KeyTransport(inner, self.add_key),
                follow_redirects=False,  # a redirect would carry the key to another address
                headers={"Accept": "application/json", "User-Agent": "ops-runner"},
            )
        return self._client

    def close(self) -> None:
        """Close the connections; the next request opens new ones."""
        if self._client is not None:
            self._client.close()
            self._client = None

    def _pace(self) -> None:
        if self._last_start is not None and self.min_interval > 0:
            wait = self.min_interval - (self.clock() - self._last_start)
            if wait > 0:
                self.sleep(wait)
        self._last_start = self.clock()

    def _wait(self, state: tenacity.RetryCallState) -> float:
        backoff = min(self.backoff_initial * 2 ** (state.attempt_number - 1), self.backoff_max)
        error = state.outcome.exception() if state.outcome else None
        advised = getattr(error, "retry_after", None)
        return max(backoff, min(advised, self.backoff_max)) if advised else backoff

    def get(
        self,
        path: str,
        params: dict[str, str],
        *,
        symbol: str,
        describe: str,
        read: Callable[[httpx.Response], T],
    ) -> T:
        """GET ``path`` and return ``read(response)``, retrying what may pass.

        ``read`` raises Refusal for an answer it cannot use. Raises VendorError (never naming
        the key) once a failure cannot be retried or the retries are spent.
        """
        attempts = 0

        def attempt() -> T:
            nonlocal attempts
            attempts += 1
            self._pace()
            response = self._send(path, params)
            require_not_failed(response, self.secret)
            return read(response)

        def before_sleep(state: tenacity.RetryCallState) -> None:
            error = state.outcome.exception() if state.outcome else None
            what = error.problem.value if isinstance(error, Refusal) else "failure"
            log.warning(
                "%s: %s on attempt %d, retrying in %.3g s",
                describe,
                what,
                state.attempt_number,
                state.upcoming_sleep,
            )

        retrying = tenacity.Retrying(
            stop=tenacity.stop_after_attempt(self.retries + 1),
            wait=self._wait,
            retry=tenacity.retry_if_exception(lambda e: isinstance(e, Refusal) and e.retryable),
            sleep=self.sleep,
            before_sleep=before_sleep,
            reraise=True,
        )
        try:
            return retrying(attempt)
        except Refusal as refusal:
            detail = compute_one_line(refusal.detail, self.secret)
            log.warning("%s: %s (%s) after %d attempts", describe, refusal, detail, attempts)
            raise VendorError(
                self.vendor, symbol, refusal.problem, detail, attempts=attempts
            ) from None

    def _send(self, path: str, params: dict[str, str]) -> httpx.Response:
        try:
            return self._session().get(path, params=params)
        except httpx.TimeoutException:
            raise Refusal(
                VendorProblem.TIMEOUT, f"{self.timeout:g} s timeout", retryable=True
            ) from None
        except httpx.TransportError as error:
            # The message of a connection error names the host at most, never the query.
            detail = f"{self.base_url}: {type(error).__name__} {error}"
            raise Refusal(VendorProblem.UNREACHABLE, detail, retryable=True) from None


def _ssl_context() -> ssl.SSLContext:
    """httpx's default verifying context (certifi's CA bundle, or SSL_CERT_FILE / SSL_CERT_DIR),
    made once per process and shared: a nightly fetch opens a session per vendor and symbol."""
    if not _SSL:
        _SSL.append(httpx.create_ssl_context())
    return _SSL[0]


def require_not_failed(response: httpx.Response, secret: str = "") -> None:
    """Raise Refusal for a rate limit, a server error or an HTML page; vendor-neutral."""
    status = response.status_code
    body = response.content
    kind = response.headers.get("content-type", "").lower()
    html = kind.startswith("text/html") or body.lstrip()[:1] == b"<"
    shown = _describe_html(body) if html else compute_one_line(response.text, secret)
    if status == 429:
        advised = _retry_after(response)
        raise Refusal(
            VendorProblem.RATE_LIMITED, f"HTTP 429: {shown}", retryable=True, retry_after=advised
        )
    if status >= 500:
        problem = VendorProblem.HTML_PAGE if html else VendorProblem.SERVER_ERROR
        raise Refusal(problem, f"HTTP {status}: {shown}", retryable=True)
    if html:
        raise Refusal(VendorProblem.HTML_PAGE, f"HTTP {status}: {shown}")


def _describe_html(body: bytes) -> str:
    title = _TITLE.search(body[:4096])
    text = title.group(1).decode("utf-8", "replace") if title else "no title"
    return f"page {compute_one_line(text, limit=60)!r}"


def _retry_after(response: httpx.Response) -> float | None:
    try:
        return max(0.0, float(response.headers.get("retry-after", "")))
    except ValueError:
        return None


def read_json(response: httpx.Response) -> Any:
    """Return the parsed JSON body, with duplicate object keys refused; raise Refusal."""

    def unique(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        seen: dict[str, Any] = {}
        for key, value in pairs:
            if key in seen and _ISO_DATE.fullmatch(key):
                raise Refusal(VendorProblem.BAD_BARS, f"duplicate date {key}")
            if key in seen:
                raise Refusal(VendorProblem.BAD_JSON, f"duplicate key {key!r}")
            seen[key] = value
        return seen

    try:
        return json.loads(response.content, object_pairs_hook=unique)
    except (ValueError, UnicodeDecodeError) as error:
        size = len(response.content)
        raise Refusal(VendorProblem.BAD_JSON, f"{error} in {size} bytes") from None


def compute_vendor_bars(dates: Sequence[str], columns: Mapping[str, Sequence[Any]]) -> pd.DataFrame:
    """Return a bars frame (unchecked) from text dates ``YYYY-MM-DD`` and named columns.

    ``columns`` holds open, high, low, close, volume, dividend and split. Raises Refusal for a
    malformed date, a duplicate date or a value that is not a number.
    """
    days = list(dates)
    parsed = pd.to_datetime(pd.Series(days, dtype=object), format="%Y-%m-%d", errors="coerce")
    if parsed.isna().any():
        bad = days[int(np.argmax(parsed.isna().to_numpy()))]
        raise Refusal(VendorProblem.BAD_JSON, f"unparseable date {bad!r}")
    duplicated = parsed.duplicated().to_numpy()
    if duplicated.any():
        raise Refusal(VendorProblem.BAD_BARS, f"duplicate date {days[int(np.argmax(duplicated))]}")
    values = {}
    for name, raw in columns.items():
        texts = list(raw)
        numbers = pd.to_numeric(pd.Series(texts, dtype=object), errors="coerce")
        numbers = numbers.to_numpy(dtype=np.float64)
        if not np.isfinite(numbers).all():
            i = int(np.argmax(~np.isfinite(numbers)))
            raise Refusal(VendorProblem.BAD_BARS, f"{name} is {texts[i]!r} on {days[i]}")
        values[name] = numbers
    index = pd.DatetimeIndex(parsed, name="date").as_unit(DATE_UNIT)
    frame = pd.DataFrame({name: values[name] for name in BAR_COLUMNS}, index=index)
    return frame.sort_index(kind="stable")


def require_sane_bars(bars: pd.DataFrame) -> None:
    """Raise Refusal (BAD_BARS) for prices <= 0, high < low, negative volume or dividend, a
    split ratio <= 0, or anything else that is not a canonical bars frame."""

    def first(mask: pd.Series) -> tuple[int, str]:
        i = int(np.argmax(mask.to_numpy()))
        return i, str(bars.index[i].date())

    for column in PRICE_COLUMNS:
        bad = bars[column] <= 0
        if bad.any():
            i, day = first(bad)
            raise Refusal(VendorProblem.BAD_BARS, f"{column} {bars[column].iat[i]:g} on {day}")
    inverted = bars["high"] < bars["low"]
    if inverted.any():
        i, day = first(inverted)
        high, low = bars["high"].iat[i], bars["low"].iat[i]
        raise Refusal(VendorProblem.BAD_BARS, f"high {high:g} below low {low:g} on {day}")
    for column in ("volume", "dividend"):
        if (bars[column] < 0).any():
            raise Refusal(
                VendorProblem.BAD_BARS, f"negative {column} on {first(bars[column] < 0)[1]}"
            )
    try:
        require_bars_shape(bars, "vendor bars")
    except DataError as error:
        raise Refusal(VendorProblem.BAD_BARS, str(error)) from None


def compute_window(bars: pd.DataFrame, start: date, end: date, before: int = 0) -> pd.DataFrame:
    """Return the rows dated ``start``..``end``, plus up to ``before`` rows just before start."""
    dates = bars.index.to_numpy()
    first = int(np.searchsorted(dates, np.datetime64(start, "us"), side="left"))
    last = int(np.searchsorted(dates, np.datetime64(end, "us"), side="right"))
    return bars.iloc[max(0, first - before) : last]


def require_api_key(vendor: str, api_key: str) -> None:
    """Raise SecretError when ``api_key`` is empty (the message never shows a key)."""
    if not isinstance(api_key, str) or not api_key.strip():
        raise SecretError(f"{vendor}: no API key given; put it in the workbook's secrets")


def require_request(vendor: str, symbol: str, start: date, end: date) -> None:
    """Raise DataError for a bad ticker or ``start`` after ``end``."""
    if not SYMBOL_PATTERN.fullmatch(symbol):
        raise DataError(f"{vendor}: {symbol!r} is not a ticker symbol; nothing was fetched")
    if start > end:
        raise DataError(f"{vendor} {symbol}: start {start} is after end {end}; nothing was fetched")


class VendorClientBase:
    """What both HTTP vendors' clients share: the key held apart, the HTTP session with its
    timeouts, retries and pacing, and a context manager. A subclass names its ``name``,
    ``layout``, ``base_url`` and ``min_interval`` defaults and how the key goes into a request
    (``_add_key``, called at the very last step, so no log or error ever holds it)."""

    name: str
    layout: str
    default_base_url: str
    default_min_interval: float

    def __init__(
        self,
        api_key: str,
        base_url: str | None = None,
        *,
        timeout: float = 30.0,
        retries: int = 3,
        backoff_initial: float = 2.0,
        backoff_max: float = 60.0,
        min_interval: float | None = None,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        require_api_key(self.name, api_key)
        self._key = api_key
        self._http = VendorHttp(
            self.name,
            base_url or self.default_base_url,
            add_key=self._add_key,
            secret=api_key,
            timeout=timeout,
            retries=retries,
            backoff_initial=backoff_initial,
            backoff_max=backoff_max,
            min_interval=self.default_min_interval if min_interval is None else min_interval,
            transport=transport,
            sleep=sleep,
            clock=clock,
        )

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._http.base_url!r})"

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the HTTP connections."""
        self._http.close()

    def _add_key(self, request: httpx.Request) -> httpx.Request:
        raise NotImplementedError
