"""HTTP vendors into the price store: Alpha Vantage and Tiingo against the loopback vendor server.

Real-data tests serve the shared Alpha Vantage files (skipped when ../shared/data is absent) and
compare what is stored with those files read here by pandas, not by ops_runner. Fault tests serve
a small synthetic market and always run: every fault is one line naming vendor, symbol and
problem, leaves the store byte-for-byte as it was, and never shows the API key anywhere.
"""

from __future__ import annotations

import gzip
import hashlib
import logging
from datetime import UTC, date, datetime
from pathlib import Path

import pandas as pd
import pytest

from ops_runner.core.errors import DataError, VendorError, VendorProblem
from ops_runner.market.calendar import MarketCalendar
from ops_runner.market.sources.alphavantage import AlphaVantageClient
from ops_runner.market.sources.fetch import fetch_into_store, raw_answer_path, read_raw_answer
from ops_runner.market.sources.sample import generate_sample_market
from ops_runner.market.sources.tiingo import TiingoClient
from ops_runner.simulators.vendor_feed import compute_rows_from_bars, load_alphavantage_folder
from ops_runner.simulators.vendor_server import Fault, VendorServer

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "alphavantage"
KEY = "k3y-DO-NOT-LEAK-7f2c9e"
CLIENTS = {"alphavantage": AlphaVantageClient, "tiingo": TiingoClient}
LAYOUTS = {"alphavantage": "alphavantage-api", "tiingo": "tiingo-api"}
RETRIES = 2
FAST = {
    "timeout": 0.3,
    "retries": RETRIES,
    "backoff_initial": 0.001,
    "backoff_max": 0.005,
    "min_interval": 0.0,
}
PAIR = ["QQQ", "SPY"]  # the synthetic market's symbols
SEED_START = date(2020, 6, 1)
PATIENT = {"timeout": 30.0}  # whole histories take longer to serve than FAST's timeout
DIVIDEND_ROUNDING = 0.5e-4  # Alpha Vantage publishes dividend_amount to 4 decimals
# Sessions known from the NYSE calendar (Thanksgiving 2020-11-26 closed).
LAST_FIVE_OF_NOVEMBER_2020 = date(2020, 11, 23)
DECEMBER_1_TO_11_2020 = 9
AFTER_CLOSE = {
    date(2020, 11, 30): datetime(2020, 11, 30, 22, tzinfo=UTC),
    date(2020, 12, 11): datetime(2020, 12, 11, 22, tzinfo=UTC),
}


def client(vendor: str, server: VendorServer, key: str = KEY, **options):
    return CLIENTS[vendor](key, server.base_url, **{**FAST, **options})


def fetch(store, vendor, server, symbols, start, end, calendar, **options):
    with client(vendor, server, **options) as c:
        return fetch_into_store(
            store, vendor, c, symbols, start, end, calendar=calendar, now=AFTER_CLOSE.get(end)
        )


def published(symbol: str, start: date, end: date) -> pd.DataFrame:
    """The vendor file's rows for the range, ascending, read by pandas alone."""
    frame = pd.read_csv(DATA / f"{symbol}.csv", parse_dates=["timestamp"])
    frame = frame.set_index("timestamp").sort_index()
    return frame.loc[pd.Timestamp(start) : pd.Timestamp(end)]


def assert_stored_equals_published(store, source, symbol, start, end, dividend_tolerance):
    bars = store.load_bars(source, symbol)
    expected = published(symbol, start, end)
    assert list(bars.index) == list(expected.index)
    for ours, theirs in [
        ("open", "open"),
        ("high", "high"),
        ("low", "low"),
        ("close", "close"),
        ("volume", "volume"),
        ("split", "split_coefficient"),
    ]:
        assert bars[ours].tolist() == expected[theirs].astype(float).tolist(), ours
    gap = (bars["dividend"] - expected["dividend_amount"].to_numpy()).abs().max()
    assert gap <= dividend_tolerance


def assert_key_nowhere(caplog, capfd, root: Path, *texts: str) -> None:
    for record in caplog.records:
        assert KEY not in record.getMessage(), record.name
    for text in texts:
        assert KEY not in text
    out, err = capfd.readouterr()
    assert KEY not in out and KEY not in err
    for path in root.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            assert KEY.encode() not in data, path
            if path.suffix == ".gz":
                assert KEY.encode() not in gzip.decompress(data), path


@pytest.fixture(scope="module")
def calendar() -> MarketCalendar:
    return MarketCalendar()


@pytest.fixture(scope="module")
def real_rows():
    if not DATA.is_dir():
        pytest.skip(f"real data not present at {DATA} (it lives beside the project, not in it)")
    return load_alphavantage_folder(DATA, symbols=["SPY", "QQQ", "BIL"])


@pytest.fixture
def real_server(real_rows):
    with VendorServer(real_rows, api_key=KEY, end=date(2020, 12, 11), hang_seconds=1.0) as server:
        yield server


@pytest.fixture(scope="module")
def synthetic_rows():
    market = generate_sample_market(["SPY", "QQQ"], date(2020, 6, 1), date(2020, 12, 31))
    return {symbol: compute_rows_from_bars(bars) for symbol, bars in market.items()}


@pytest.fixture
def synthetic_server(synthetic_rows):
    with VendorServer(synthetic_rows, api_key=KEY, end=date(2020, 11, 30), hang_seconds=1.0) as s:
        yield s


@pytest.fixture(autouse=True)
def all_logs(caplog):
    caplog.set_level(logging.DEBUG)  # httpx logs every URL at INFO, httpcore more at DEBUG


# -- happy paths on the real files ---------------------------------------------------------------


@pytest.mark.realdata
@pytest.mark.parametrize(
    ("vendor", "dividend_tolerance"), [("alphavantage", DIVIDEND_ROUNDING), ("tiingo", 0.0)]
)
def test_fetch_when_symbols_are_new_stores_the_vendor_rows_with_their_raw_answer(
    vendor, dividend_tolerance, real_server, store, calendar, caplog, capfd
):
    start, end = date(1999, 11, 1), date(2020, 12, 11)
    report = fetch(
        store, vendor, real_server, ["SPY", "QQQ", "BIL"], start, end, calendar, **PATIENT
    )
    assert report.imported == ["BIL", "QQQ", "SPY"] and report.revisions == {}
    for symbol in ("SPY", "QQQ", "BIL"):  # QQQ splits 2:1 in 2000, BIL 1:2 in 2017
        assert_stored_equals_published(store, vendor, symbol, start, end, dividend_tolerance)
        manifest = store.read_manifest(vendor, symbol)
        assert manifest["layout"] == LAYOUTS[vendor]
        assert manifest["source_file"] in report.requests and symbol in manifest["source_file"]
        raw = gzip.decompress(
            raw_answer_path(store, vendor, manifest["source_sha256"]).read_bytes()
        )
        assert hashlib.sha256(raw).hexdigest() == manifest["source_sha256"]
        assert read_raw_answer(store, vendor, manifest["source_sha256"]) == raw
    served = real_server.requests
    assert len(served) == 3 and all(r.keyed for r in served)
    if vendor == "alphavantage":
        assert {r.params["outputsize"] for r in served} == {"full"}
    else:
        assert not any(r.key_in_url for r in served)
        assert {(r.params["startDate"], r.params["endDate"]) for r in served} == {
            ("1999-11-01", "2020-12-11")
        }
    assert_key_nowhere(caplog, capfd, store.root, report.summary(), *report.requests)


@pytest.mark.realdata
@pytest.mark.parametrize("vendor", ["alphavantage", "tiingo"])
def test_fetch_when_the_vendor_moves_a_day_on_asks_only_the_overlap_and_appends(
    vendor, real_server, store, calendar
):
    start = date(2020, 1, 2)
    real_server.end = date(2020, 11, 30)
    fetch(
        store, vendor, real_server, ["SPY", "QQQ"], start, date(2020, 11, 30), calendar, **PATIENT
    )
    real_server.clear_requests()
    real_server.end = date(2020, 12, 11)
    report = fetch(
        store, vendor, real_server, ["SPY", "QQQ"], start, date(2020, 12, 11), calendar, **PATIENT
    )
    assert report.updated == ["QQQ", "SPY"] and report.revisions == {}
    assert report.new_sessions == {"SPY": DECEMBER_1_TO_11_2020, "QQQ": DECEMBER_1_TO_11_2020}
    served = real_server.requests
    assert len(served) == 2
    if vendor == "alphavantage":
        assert {r.params["outputsize"] for r in served} == {"compact"}
    else:
        assert {(r.params["startDate"], r.params["endDate"]) for r in served} == {
            (LAST_FIVE_OF_NOVEMBER_2020.isoformat(), "2020-12-11")
        }
    tolerance = DIVIDEND_ROUNDING if vendor == "alphavantage" else 0.0
    for symbol in ("SPY", "QQQ"):
        assert_stored_equals_published(store, vendor, symbol, start, date(2020, 12, 11), tolerance)
        assert len(store.read_manifest(vendor, symbol)["history"]) == 1
    assert store.check_provenance(vendor) == []


@pytest.mark.realdata
@pytest.mark.parametrize("vendor", ["alphavantage", "tiingo"])
def test_fetch_when_the_vendor_revises_a_past_close_keeps_the_old_version_and_reports_it(
    vendor, real_server, store, calendar, snapshot
):
    start, end = date(2020, 6, 1), date(2020, 12, 11)
    fetch(store, vendor, real_server, ["SPY", "QQQ"], start, end, calendar, **PATIENT)
    before = store.read_manifest(vendor, "SPY")
    real_server.set_fault(Fault.REVISE, "SPY")  # SPY 2020-12-09 close 366.85 -> 370.5185
    report = fetch(store, vendor, real_server, ["SPY", "QQQ"], start, end, calendar, **PATIENT)
    assert report.revisions == {"SPY": [date(2020, 12, 9)]}
    assert report.updated == ["SPY"] and report.unchanged == ["QQQ"]
    assert store.load_bars(vendor, "SPY").at[pd.Timestamp("2020-12-09"), "close"] == 370.5185
    kept = store.version_path(vendor, "SPY", before["stored_sha256"])
    assert pd.read_parquet(kept).at[pd.Timestamp("2020-12-09"), "close"] == 366.85
    manifest = store.read_manifest(vendor, "SPY")
    assert manifest["history"][0]["stored_sha256"] == before["stored_sha256"]
    assert "revised by the vendor: 2020-12-09 (close" in manifest["notes"]
    assert store.check_provenance(vendor) == []
    untouched = snapshot(store.root)
    again = fetch(store, vendor, real_server, ["SPY", "QQQ"], start, end, calendar, **PATIENT)
    assert again.unchanged == ["QQQ", "SPY"] and again.revisions == {}
    assert snapshot(store.root) == untouched


# -- faults, on a synthetic market ---------------------------------------------------------------

RETRIED = RETRIES + 1
FAULTS = [  # (fault, problem, attempts)
    (Fault.INVALID_KEY, VendorProblem.INVALID_KEY, 1),
    (Fault.RATE_LIMIT, VendorProblem.RATE_LIMITED, RETRIED),
    (Fault.UNKNOWN_SYMBOL, VendorProblem.UNKNOWN_SYMBOL, 1),
    (Fault.EMPTY_SERIES, VendorProblem.EMPTY_SERIES, 1),
    (Fault.TRUNCATED_JSON, VendorProblem.BAD_JSON, 1),
    (Fault.HTML_ERROR, VendorProblem.HTML_PAGE, RETRIED),
    (Fault.TIMEOUT, VendorProblem.TIMEOUT, RETRIED),
    (Fault.FLAKY, VendorProblem.SERVER_ERROR, RETRIED),
    (Fault.ZERO_PRICE, VendorProblem.BAD_BARS, 1),
    (Fault.HIGH_BELOW_LOW, VendorProblem.BAD_BARS, 1),
    (Fault.DUPLICATE_DATE, VendorProblem.BAD_BARS, 1),
]


def seeded(store, vendor, server, calendar):
    """The store after a clean fetch through 2020-11-30; the server then moves to 2020-12-11."""
    fetch(store, vendor, server, PAIR, SEED_START, date(2020, 11, 30), calendar)
    server.end = date(2020, 12, 11)
    server.clear_requests()


@pytest.mark.parametrize("vendor", ["alphavantage", "tiingo"])
@pytest.mark.parametrize(
    ("fault", "problem", "attempts"), FAULTS, ids=[f.value for f, *_ in FAULTS]
)
def test_fetch_when_the_vendor_faults_raises_one_line_and_leaves_the_store_unchanged(
    vendor, fault, problem, attempts, synthetic_server, store, calendar, snapshot, caplog, capfd
):
    seeded(store, vendor, synthetic_server, calendar)
    before = snapshot(store.root)
    synthetic_server.set_fault(fault, "SPY")  # QQQ, fetched first, succeeds but is not stored
    with pytest.raises(VendorError) as caught:
        fetch(store, vendor, synthetic_server, PAIR, SEED_START, date(2020, 12, 11), calendar)
    error = caught.value
    message = str(error)
    assert error.problem is problem and error.attempts == attempts
    assert (error.vendor, error.symbol) == (vendor, "SPY")
    assert "\n" not in message and message.startswith(f"{vendor} SPY: {problem.value}")
    assert message.endswith("nothing was stored")
    assert snapshot(store.root) == before
    assert [r.symbol for r in synthetic_server.requests] == ["QQQ"] + ["SPY"] * attempts
    assert_key_nowhere(caplog, capfd, store.root, message, repr(error.args))


@pytest.mark.parametrize("vendor", ["alphavantage", "tiingo"])
def test_fetch_when_the_key_is_wrong_raises_invalid_key_without_showing_either_key(
    vendor, synthetic_server, store, calendar, snapshot, caplog, capfd
):
    wrong = f"{KEY}-revoked"
    with client(vendor, synthetic_server, key=wrong) as c, pytest.raises(VendorError) as caught:
        fetch_into_store(store, vendor, c, ["SPY"], SEED_START, date(2020, 11, 30))
    assert caught.value.problem is VendorProblem.INVALID_KEY
    assert snapshot(store.root) == {}
    assert wrong not in str(caught.value) and wrong not in repr(c)
    assert_key_nowhere(caplog, capfd, store.root, str(caught.value))


@pytest.mark.parametrize("vendor", ["alphavantage", "tiingo"])
def test_fetch_when_the_ticker_is_unknown_to_the_vendor_raises_unknown_symbol(
    vendor, synthetic_server, store, calendar
):
    with pytest.raises(VendorError, match=f"^{vendor} ZZZZ: unknown symbol") as caught:
        fetch(store, vendor, synthetic_server, ["ZZZZ"], SEED_START, date(2020, 11, 30), calendar)
    assert caught.value.problem is VendorProblem.UNKNOWN_SYMBOL


@pytest.mark.parametrize("vendor", ["alphavantage", "tiingo"])
def test_fetch_when_the_disk_fills_mid_write_leaves_the_store_unchanged(
    vendor, synthetic_server, store, calendar, snapshot, monkeypatch
):
    seeded(store, vendor, synthetic_server, calendar)
    before = snapshot(store.root)
    # The disk fills while keeping SPY's replaced version: the raw answers and QQQ's new version
    # are already written by then and must go back out.
    replaced = store.read_manifest(vendor, "SPY")["stored_sha256"]
    monkeypatch.setenv("OPS_RUNNER_FAULT", f"enospc@write:{replaced}.parquet")
    with pytest.raises(OSError):
        fetch(store, vendor, synthetic_server, PAIR, SEED_START, date(2020, 12, 11), calendar)
    assert snapshot(store.root) == before


# -- retries -------------------------------------------------------------------------------------


@pytest.mark.parametrize("vendor", ["alphavantage", "tiingo"])
@pytest.mark.parametrize(("fault", "times"), [(Fault.FLAKY, RETRIES), (Fault.RATE_LIMIT, 1)])
def test_fetch_when_the_vendor_fails_within_the_retry_budget_stores_after_backing_off(
    vendor, fault, times, synthetic_server, store, calendar
):
    waits: list[float] = []
    synthetic_server.set_fault(fault, "SPY", times=times)
    with client(
        vendor, synthetic_server, backoff_initial=0.5, backoff_max=8.0, sleep=waits.append
    ) as c:
        report = fetch_into_store(store, vendor, c, ["SPY"], SEED_START, date(2020, 11, 30))
    assert report.imported == ["SPY"]
    assert [r.status for r in synthetic_server.requests][-1] == 200
    assert len(synthetic_server.requests) == times + 1
    assert waits == [0.5, 1.0][:times]  # exponential backoff: 0.5 s, then 1 s


def test_tiingo_when_429_says_retry_after_waits_that_long_up_to_the_cap(synthetic_server, store):
    waits: list[float] = []
    synthetic_server.retry_after = 3.0
    synthetic_server.set_fault(Fault.RATE_LIMIT, "SPY", times=2)
    with client(
        "tiingo", synthetic_server, backoff_initial=0.5, backoff_max=2.0, sleep=waits.append
    ) as c:
        fetch_into_store(store, "tiingo", c, ["SPY"], SEED_START, date(2020, 11, 30))
    assert waits == [2.0, 2.0]  # Retry-After 3 s, capped at backoff_max


def test_fetch_when_start_is_after_end_raises_before_any_request(synthetic_server, store):
    with client("tiingo", synthetic_server) as c, pytest.raises(DataError, match="after end"):
        fetch_into_store(store, "tiingo", c, ["SPY"], date(2020, 12, 1), date(2020, 11, 30))
    assert synthetic_server.requests == []
