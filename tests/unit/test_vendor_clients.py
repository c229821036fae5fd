"""Vendor clients without a server (httpx's MockTransport), and the pure rules of a fetch."""

from __future__ import annotations

import json
import logging
from datetime import date

import httpx
import pandas as pd
import pytest

from ops_runner.core.errors import SecretError, VendorError, VendorProblem
from ops_runner.market.bars import make_bars
from ops_runner.market.calendar import MarketCalendar
from ops_runner.market.sources.alphavantage import AlphaVantageClient
from ops_runner.market.sources.fetch import (
    compute_fetch_start,
    compute_merged_bars,
    compute_span_sessions,
)
from ops_runner.market.sources.tiingo import TiingoClient
from ops_runner.market.sources.vendorapi import Refusal, require_sane_bars
from ops_runner.simulators.vendor_feed import VendorRow, compute_alphavantage_json

KEY = "unit-KEY-0451"
FAST = {"retries": 2, "backoff_initial": 1.0, "backoff_max": 60.0, "min_interval": 0.0}


def row(day: str, close: str = "10.0", dividend: str = "0.0000") -> VendorRow:
    return VendorRow(day, close, "11.0", "9.0", close, close, "1000", dividend, "1.0")


THREE_DAYS = [row("2020-12-09"), row("2020-12-10"), row("2020-12-11")]


class Vendor:
    """A MockTransport that answers from a list and remembers each request as it left."""

    def __init__(self, *answers: httpx.Response) -> None:
        self.answers = list(answers)
        self.seen: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.seen.append(request)
        return self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self)


def av_json(rows=THREE_DAYS) -> httpx.Response:
    body = compute_alphavantage_json("SPY", rows, compact=True)
    return httpx.Response(200, content=body, headers={"content-type": "application/json"})


def av(vendor: Vendor, **options) -> AlphaVantageClient:
    options = {**FAST, "sleep": lambda s: None, **options}
    return AlphaVantageClient(KEY, "https://av.test", transport=vendor.transport(), **options)


def tiingo(vendor: Vendor, **options) -> TiingoClient:
    options = {**FAST, "sleep": lambda s: None, **options}
    return TiingoClient(KEY, "https://tiingo.test", transport=vendor.transport(), **options)


# -- merging and windows ------------------------------------------------------------------------


def bars(closes: dict[str, float], dividends: dict[str, float] | None = None) -> pd.DataFrame:
    days = list(closes)
    values = list(closes.values())
    paid = [(dividends or {}).get(d, 0.0) for d in days]
    return make_bars(
        days,
        values,
        [v + 1 for v in values],
        [v - 1 for v in values],
        values,
        [100.0] * len(days),
        paid,
    )


STORED = bars({"2020-12-07": 10.0, "2020-12-08": 11.0, "2020-12-09": 12.0})
MERGES = [  # (fetched, added, revised, vanished)
    (bars({"2020-12-09": 12.0, "2020-12-10": 13.0}), ["2020-12-10"], {}, []),
    (
        bars({"2020-12-08": 11.5, "2020-12-09": 12.0}),
        [],
        {"2020-12-08": ["open", "high", "low", "close"]},
        [],
    ),
    (bars({"2020-12-07": 10.0, "2020-12-09": 12.0}), [], {}, ["2020-12-08"]),
    (bars({"2020-12-09": 12.0}, {"2020-12-09": 0.0000004}), [], {}, []),  # restoring noise
    (bars({"2020-12-09": 12.0}, {"2020-12-09": 0.25}), [], {"2020-12-09": ["dividend"]}, []),
]


@pytest.mark.parametrize(("fetched", "added", "revised", "vanished"), MERGES)
def test_merged_bars_when_fetched_overlaps_the_store_reports_added_revised_vanished(
    fetched, added, revised, vanished
):
    merged = compute_merged_bars(STORED, fetched)
    assert [d.isoformat() for d in merged.added] == added
    assert {d.isoformat(): c for d, c in merged.revised.items()} == revised
    assert [d.isoformat() for d in merged.vanished] == vanished
    for day in merged.bars.index:
        source = fetched if day.date().isoformat() in revised or day not in STORED.index else STORED
        assert merged.bars.loc[day].equals(source.loc[day])


def test_merged_bars_when_nothing_differs_are_the_stored_bytes():
    merged = compute_merged_bars(STORED, STORED.iloc[1:].copy())
    assert not merged.changed and merged.bars.equals(STORED)


FETCH_STARTS = [  # (stored?, start, overlap, first date asked)
    (False, date(2020, 1, 2), 5, date(2020, 1, 2)),
    (True, date(2020, 12, 8), 2, date(2020, 12, 8)),
    (True, date(2020, 12, 8), 5, date(2020, 12, 7)),  # fewer stored than the overlap: all
    (True, date(2020, 12, 8), 0, date(2020, 12, 10)),
    (True, date(2020, 1, 2), 2, date(2020, 12, 8)),  # stored from a later date: forward only
]


@pytest.mark.parametrize(("held", "start", "overlap", "first"), FETCH_STARTS)
def test_fetch_start_when_store_holds_bars_steps_back_the_overlap(held, start, overlap, first):
    assert compute_fetch_start(STORED if held else None, start, overlap) == first


SPANS = [  # (first, last, NYSE sessions, weekdays)
    (date(2020, 11, 23), date(2020, 12, 11), 14, 15),  # Thanksgiving
    (date(2020, 12, 24), date(2021, 1, 4), 6, 8),  # Christmas and New Year
    (date(2020, 12, 12), date(2020, 12, 13), 0, 0),  # a weekend
]


@pytest.mark.parametrize(("first", "last", "sessions", "weekdays"), SPANS)
def test_span_sessions_when_calendar_given_counts_sessions_else_weekdays(
    first, last, sessions, weekdays
):
    assert compute_span_sessions(first, last, MarketCalendar()) == sessions
    assert compute_span_sessions(first, last) == weekdays


SANITY = [  # (column changed, value, detail)
    ("close", 0.0, "close 0 on 2020-12-08"),
    ("low", -1.0, "low -1 on 2020-12-08"),
    ("high", 8.5, "high 8.5 below low 10 on 2020-12-08"),
    ("volume", -5.0, "negative volume on 2020-12-08"),
    ("split", 0.0, "split ratio <= 0"),
]


@pytest.mark.parametrize(("column", "value", "detail"), SANITY)
def test_sane_bars_when_a_value_is_impossible_refuses_naming_the_date(column, value, detail):
    broken = STORED.copy()
    broken.loc[pd.Timestamp("2020-12-08"), column] = value
    with pytest.raises(Refusal) as caught:
        require_sane_bars(broken)
    assert caught.value.problem is VendorProblem.BAD_BARS and detail in caught.value.detail


# -- Alpha Vantage ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("span", "asked"), [(None, "full"), (10, "compact"), (99, "compact"), (100, "full")]
)
def test_alphavantage_when_span_is_known_asks_compact_only_if_it_fits(span, asked):
    vendor = Vendor(av_json())
    av(vendor).read_daily("SPY", date(2020, 12, 10), date(2020, 12, 11), span_sessions=span)
    assert [r.url.params["outputsize"] for r in vendor.seen] == [asked]


def test_alphavantage_when_compact_does_not_reach_back_asks_full():
    vendor = Vendor(av_json(THREE_DAYS[1:]), av_json())
    reply = av(vendor).read_daily("SPY", date(2020, 12, 10), date(2020, 12, 11), span_sessions=3)
    assert [r.url.params["outputsize"] for r in vendor.seen] == ["compact", "full"]
    assert reply.requests[0].endswith("outputsize=compact from https://av.test")
    assert reply.request.endswith("outputsize=full from https://av.test")
    assert [d.isoformat() for d in reply.bars.index.date] == ["2020-12-10", "2020-12-11"]


def test_alphavantage_when_dividend_is_rounded_restores_it_from_the_adjusted_close():
    # adjusted/close steps from 0.99 to 1.0 on 12-11: D = 10 * (1/0.99 - 1) = 0.10101010.
    rows = [
        replace_adjusted(THREE_DAYS[0], "9.9"),
        replace_adjusted(THREE_DAYS[1], "9.9"),
        row("2020-12-11", dividend="0.1010"),
    ]
    reply = av(Vendor(av_json(rows))).read_daily("SPY", date(2020, 12, 10), date(2020, 12, 11))
    assert reply.bars["dividend"].tolist() == [0.0, 0.10101010]
    assert "1 of them restored" in reply.notes


def replace_adjusted(r: VendorRow, adjusted: str) -> VendorRow:
    return VendorRow(
        r.date, r.open, r.high, r.low, r.close, adjusted, r.volume, r.dividend, r.split
    )


AV_ERRORS = [  # (body, problem, requests made)
    ({"Error Message": "the parameter apikey is invalid or missing."}, "INVALID_KEY", 1),
    ({"Error Message": "Invalid API call. Please retry."}, "UNKNOWN_SYMBOL", 1),
    ({"Note": "Our standard API call frequency is 5 calls per minute"}, "RATE_LIMITED", 3),
    ({"Information": "Our standard API rate limit is 25 requests per day."}, "RATE_LIMITED", 1),
    ({"Information": "Thank you! This is a premium endpoint."}, "REFUSED", 1),
    ({"Meta Data": {"2. Symbol": "QQQ"}, "Time Series (Daily)": {}}, "BAD_JSON", 1),
]


@pytest.mark.parametrize(("body", "problem", "requests"), AV_ERRORS)
def test_alphavantage_when_it_answers_an_error_object_raises_that_problem(body, problem, requests):
    vendor = Vendor(httpx.Response(200, json=body))
    with pytest.raises(VendorError) as caught:
        av(vendor).read_daily("SPY", date(2020, 12, 10), date(2020, 12, 11))
    assert caught.value.problem is VendorProblem[problem]
    assert len(vendor.seen) == requests == caught.value.attempts


def test_alphavantage_when_a_request_leaves_only_the_wire_carries_the_key(caplog):
    caplog.set_level(logging.DEBUG)
    vendor = Vendor(av_json())
    client = av(vendor)
    client.read_daily("SPY", date(2020, 12, 10), date(2020, 12, 11))
    assert vendor.seen[0].url.params["apikey"] == KEY
    assert all(KEY not in r.getMessage() for r in caplog.records)
    assert any("outputsize=full" in r.getMessage() for r in caplog.records if r.name == "httpx")
    assert KEY not in repr(client)


def test_alphavantage_when_key_is_empty_raises_secret_error():
    with pytest.raises(SecretError, match="no API key"):
        AlphaVantageClient("  ")


# -- Tiingo -------------------------------------------------------------------------------------


def tiingo_rows(*days: str) -> httpx.Response:
    rows = [
        {
            "date": f"{d}T00:00:00.000Z",
            "open": 10.0,
            "high": 11.0,
            "low": 9.0,
            "close": 10.0,
            "volume": 1000,
            "divCash": 0.0,
            "splitFactor": 1.0,
        }
        for d in days
    ]
    return httpx.Response(200, json=rows)


def test_tiingo_when_fetching_sends_the_key_in_the_header_and_the_range_in_the_query():
    vendor = Vendor(tiingo_rows("2020-12-10", "2020-12-11"))
    reply = tiingo(vendor).read_daily("SPY", date(2020, 12, 10), date(2020, 12, 11))
    sent = vendor.seen[0]
    assert sent.headers["Authorization"] == f"Token {KEY}" and KEY not in str(sent.url)
    assert sent.url.path == "/tiingo/daily/spy/prices"
    assert dict(sent.url.params) == {
        "startDate": "2020-12-10",
        "endDate": "2020-12-11",
        "format": "json",
    }
    assert reply.bars["close"].tolist() == [10.0, 10.0]


TIINGO_ERRORS = [  # (answer, problem, requests made)
    (httpx.Response(401, json={"detail": "Invalid token."}), "INVALID_KEY", 1),
    (httpx.Response(404, json={"detail": "Error: Ticker 'SPY' not found"}), "UNKNOWN_SYMBOL", 1),
    (
        httpx.Response(429, text="You have run over your hourly request allocation."),
        "RATE_LIMITED",
        3,
    ),
    (httpx.Response(200, json=[]), "EMPTY_SERIES", 1),
    (httpx.Response(200, text="<html><title>Login</title></html>"), "HTML_PAGE", 1),
    (httpx.Response(503, text="<html><title>503</title></html>"), "HTML_PAGE", 3),
    (httpx.Response(500, json={"detail": "oops"}), "SERVER_ERROR", 3),
    (httpx.Response(200, content=b'[{"date": "2020-12-10T00:00'), "BAD_JSON", 1),
    (tiingo_rows("2020-12-10T14:30"), "BAD_JSON", 1),  # a time of day, not a session
    (tiingo_rows("2020-12-10", "2020-12-10"), "BAD_BARS", 1),
]


@pytest.mark.parametrize(("answer", "problem", "requests"), TIINGO_ERRORS)
def test_tiingo_when_it_answers_an_error_raises_that_problem_in_one_line(answer, problem, requests):
    vendor = Vendor(answer)
    with pytest.raises(VendorError) as caught:
        tiingo(vendor).read_daily("SPY", date(2020, 12, 10), date(2020, 12, 11))
    assert caught.value.problem is VendorProblem[problem]
    assert len(vendor.seen) == requests == caught.value.attempts
    assert "\n" not in str(caught.value) and str(caught.value).startswith("tiingo SPY: ")


def test_tiingo_when_calls_come_quickly_waits_out_the_minimum_interval():
    now = [100.0]
    waits: list[float] = []

    def sleep(seconds: float) -> None:
        waits.append(seconds)
        now[0] += seconds

    vendor = Vendor(tiingo_rows("2020-12-10"))
    client = tiingo(vendor, min_interval=72.0, sleep=sleep, clock=lambda: now[0])
    client.read_daily("SPY", date(2020, 12, 10), date(2020, 12, 10))
    now[0] += 30.0
    client.read_daily("QQQ", date(2020, 12, 10), date(2020, 12, 10))
    assert waits == [42.0]


def test_vendor_error_when_built_reads_vendor_symbol_problem_and_what_to_do():
    error = VendorError("tiingo", "SPY", VendorProblem.SERVER_ERROR, "HTTP 503: busy", attempts=4)
    assert str(error) == (
        "tiingo SPY: server error (HTTP 503: busy) after 4 attempts; tiingo is failing: fetch "
        "again later; nothing was stored"
    )


def test_json_body_when_vendor_repeats_a_date_key_is_refused():
    text = '{"Meta Data": {}, "Time Series (Daily)": {"2020-12-10": {}, "2020-12-10": {}}}'
    vendor = Vendor(httpx.Response(200, content=text.encode()))
    with pytest.raises(VendorError, match="duplicate date 2020-12-10"):
        av(vendor).read_daily("SPY", date(2020, 12, 10), date(2020, 12, 11))
    assert json.loads(text)  # plain json would have kept the last silently


def test_tiingo_when_the_vendor_cannot_be_reached_retries_then_raises_unreachable():
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("[Errno 111] Connection refused", request=request)

    client = TiingoClient(
        KEY,
        "https://tiingo.test",
        transport=httpx.MockTransport(refuse),
        sleep=lambda s: None,
        **FAST,
    )
    with pytest.raises(VendorError) as caught:
        client.read_daily("SPY", date(2020, 12, 10), date(2020, 12, 11))
    assert caught.value.problem is VendorProblem.UNREACHABLE and caught.value.attempts == 3
    assert "https://tiingo.test" in str(caught.value) and KEY not in str(caught.value)
