"""MarketCalendar against tables of known NYSE answers (published holiday and early-close lists)."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pandas as pd
import pandas_market_calendars as mcal
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ops_runner.core.errors import CalendarCoverageError, CalendarError
from ops_runner.market import calendar as calendar_module
from ops_runner.market.calendar import (
    DEFAULT_COVERED_FROM,
    DEFAULT_COVERED_THROUGH,
    MarketCalendar,
    parse_wall_time,
)

NY = ZoneInfo("America/New_York")

# Last session of each month, 2019-01 .. 2025-12: the last weekday of the month, moved back for
# Memorial Day 2021-05-31 and Good Friday 2024-03-29. Dec 31 2021 (Fri) was a session: NYSE does not
# observe a Saturday New Year's Day on the Friday before.
MONTH_END_SESSIONS = [
    # 2019
    "2019-01-31", "2019-02-28", "2019-03-29", "2019-04-30", "2019-05-31", "2019-06-28",
    "2019-07-31", "2019-08-30", "2019-09-30", "2019-10-31", "2019-11-29", "2019-12-31",
    # 2020
    "2020-01-31", "2020-02-28", "2020-03-31", "2020-04-30", "2020-05-29", "2020-06-30",
    "2020-07-31", "2020-08-31", "2020-09-30", "2020-10-30", "2020-11-30", "2020-12-31",
    # 2021
    "2021-01-29", "2021-02-26", "2021-03-31", "2021-04-30", "2021-05-28", "2021-06-30",
    "2021-07-30", "2021-08-31", "2021-09-30", "2021-10-29", "2021-11-30", "2021-12-31",
    # 2022
    "2022-01-31", "2022-02-28", "2022-03-31", "2022-04-29", "2022-05-31", "2022-06-30",
    "2022-07-29", "2022-08-31", "2022-09-30", "2022-10-31", "2022-11-30", "2022-12-30",
    # 2023
    "2023-01-31", "2023-02-28", "2023-03-31", "2023-04-28", "2023-05-31", "2023-06-30",
    "2023-07-31", "2023-08-31", "2023-09-29", "2023-10-31", "2023-11-30", "2023-12-29",
    # 2024
    "2024-01-31", "2024-02-29", "2024-03-28", "2024-04-30", "2024-05-31", "2024-06-28",
    "2024-07-31", "2024-08-30", "2024-09-30", "2024-10-31", "2024-11-29", "2024-12-31",
    # 2025
    "2025-01-31", "2025-02-28", "2025-03-31", "2025-04-30", "2025-05-30", "2025-06-30",
    "2025-07-31", "2025-08-29", "2025-09-30", "2025-10-31", "2025-11-28", "2025-12-31",
]  # fmt: skip

# NYSE 13:00 ET early closes, with the close in UTC (17:00 under EDT in July, 18:00 under EST).
EARLY_CLOSES = {
    "2019-07-03": "2019-07-03 17:00",
    "2019-11-29": "2019-11-29 18:00",
    "2019-12-24": "2019-12-24 18:00",
    "2020-11-27": "2020-11-27 18:00",
    "2020-12-24": "2020-12-24 18:00",
    "2021-11-26": "2021-11-26 18:00",
    "2022-11-25": "2022-11-25 18:00",
    "2023-07-03": "2023-07-03 17:00",
    "2023-11-24": "2023-11-24 18:00",
    "2024-07-03": "2024-07-03 17:00",
    "2024-11-29": "2024-11-29 18:00",
    "2024-12-24": "2024-12-24 18:00",
    "2025-07-03": "2025-07-03 17:00",
    "2025-11-28": "2025-11-28 18:00",
    "2025-12-24": "2025-12-24 18:00",
}

# Sessions near those holidays that closed at the regular 16:00 ET.
FULL_DAYS_NEAR_HOLIDAYS = {
    "2020-07-02": "2020-07-02 20:00",  # July 3 2020 was the observed Independence Day
    "2021-12-23": "2021-12-23 21:00",  # Dec 24 2021 was the observed Christmas
    "2022-12-23": "2022-12-23 21:00",
    "2023-12-22": "2023-12-22 21:00",
}

GOOD_FRIDAYS = [
    "2019-04-19", "2020-04-10", "2021-04-02", "2022-04-15", "2023-04-07", "2024-03-29",
    "2025-04-18",
]  # fmt: skip

HOLIDAYS_2024 = [
    "2024-01-01", "2024-01-15", "2024-02-19", "2024-03-29", "2024-05-27", "2024-06-19",
    "2024-07-04", "2024-09-02", "2024-11-28", "2024-12-25",
]  # fmt: skip

HOLIDAYS_2025 = [
    "2025-01-01", "2025-01-09", "2025-01-20", "2025-02-17", "2025-04-18", "2025-05-26",
    "2025-06-19", "2025-07-04", "2025-09-01", "2025-11-27", "2025-12-25",
]  # fmt: skip

# (session, open UTC, close UTC) across the 2024 daylight-saving switches.
DST_SWITCH_SESSIONS = [
    ("2024-03-08", "2024-03-08 14:30", "2024-03-08 21:00"),  # Fri, EST
    ("2024-03-11", "2024-03-11 13:30", "2024-03-11 20:00"),  # Mon, EDT from Sun 03-10
    ("2024-11-01", "2024-11-01 13:30", "2024-11-01 20:00"),  # Fri, EDT
    ("2024-11-04", "2024-11-04 14:30", "2024-11-04 21:00"),  # Mon, EST from Sun 11-03
]


def d(text: str) -> date:
    return date.fromisoformat(text)


def utc(text: str) -> pd.Timestamp:
    return pd.Timestamp(text, tz="UTC")


def ny(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=NY)


@pytest.fixture(scope="module")
def cal() -> MarketCalendar:
    return MarketCalendar()


# -- month ends -------------------------------------------------------------------------------


def test_month_end_sessions_when_2019_to_2025_match_the_84_known_dates(cal: MarketCalendar) -> None:
    assert len(MONTH_END_SESSIONS) == 84
    got = cal.month_end_sessions(date(2019, 1, 1), date(2025, 12, 31))
    assert got == [d(s) for s in MONTH_END_SESSIONS]


@pytest.mark.parametrize("expected", MONTH_END_SESSIONS)
def test_rebalance_session_when_month_given_returns_known_last_session(
    cal: MarketCalendar, expected: str
) -> None:
    session = d(expected)
    assert cal.rebalance_session(session.year, session.month) == session
    assert cal.is_month_end_session(session)
    assert cal.next_session(session).month != session.month


def test_is_month_end_session_when_good_friday_ends_march_2024_thursday_is_month_end(
    cal: MarketCalendar,
) -> None:
    assert cal.is_month_end_session(date(2024, 3, 28))
    assert not cal.is_month_end_session(date(2024, 3, 29))
    assert not cal.is_month_end_session(date(2024, 3, 27))


def test_month_end_sessions_when_range_ends_mid_month_excludes_that_month(
    cal: MarketCalendar,
) -> None:
    assert cal.month_end_sessions("2024-02-29", "2024-04-29") == [d("2024-02-29"), d("2024-03-28")]


def test_rebalance_session_when_month_is_invalid_raises(cal: MarketCalendar) -> None:
    with pytest.raises(CalendarError, match="bad month 13"):
        cal.rebalance_session(2024, 13)


def test_is_month_end_session_when_coverage_ends_mid_month_raises_coverage_error() -> None:
    partial = MarketCalendar(covered_through=date(2025, 12, 30))
    assert not partial.is_month_end_session(date(2025, 12, 29))
    with pytest.raises(CalendarCoverageError, match="2025-12-31"):
        partial.is_month_end_session(date(2025, 12, 30))
    with pytest.raises(CalendarCoverageError):
        partial.rebalance_session(2025, 12)
    assert partial.rebalance_session(2025, 11) == date(2025, 11, 28)


# -- early closes -----------------------------------------------------------------------------


def test_early_closes_when_2019_to_2025_match_the_known_list(cal: MarketCalendar) -> None:
    got = cal.early_closes(date(2019, 1, 1), date(2025, 12, 31))
    assert got == [d(s) for s in EARLY_CLOSES]


@pytest.mark.parametrize(("session", "close"), EARLY_CLOSES.items())
def test_session_close_when_early_close_returns_13_00_et_in_utc(
    cal: MarketCalendar, session: str, close: str
) -> None:
    assert cal.is_early_close(session)
    assert cal.session_close(session) == utc(close)


@pytest.mark.parametrize(("session", "close"), FULL_DAYS_NEAR_HOLIDAYS.items())
def test_session_close_when_full_day_near_holiday_returns_16_00_et(
    cal: MarketCalendar, session: str, close: str
) -> None:
    assert not cal.is_early_close(session)
    assert cal.session_close(session) == utc(close)


# -- opens and closes across DST --------------------------------------------------------------


@pytest.mark.parametrize(("session", "open_utc", "close_utc"), DST_SWITCH_SESSIONS)
def test_session_open_when_dst_switch_week_returns_known_utc(
    cal: MarketCalendar, session: str, open_utc: str, close_utc: str
) -> None:
    assert cal.session_open(session) == utc(open_utc)
    assert cal.session_close(session) == utc(close_utc)
    assert str(cal.session_open(session).tz) == "UTC"


def test_session_open_when_not_a_session_raises_naming_the_date(cal: MarketCalendar) -> None:
    with pytest.raises(CalendarError, match="2024-12-25 is not a XNYS session"):
        cal.session_open(date(2024, 12, 25))
    with pytest.raises(CalendarError, match="2024-12-25 is not a XNYS session"):
        cal.session_close("2024-12-25")


# -- holidays and closures --------------------------------------------------------------------


@pytest.mark.parametrize("good_friday", GOOD_FRIDAYS)
def test_is_session_when_good_friday_returns_false(cal: MarketCalendar, good_friday: str) -> None:
    assert not cal.is_session(good_friday)


@pytest.mark.parametrize(
    ("year", "expected"), [(2024, HOLIDAYS_2024), (2025, HOLIDAYS_2025)], ids=["2024", "2025"]
)
def test_holidays_when_full_year_match_published_list(
    cal: MarketCalendar, year: int, expected: list[str]
) -> None:
    assert cal.holidays(date(year, 1, 1), date(year, 12, 31)) == [d(s) for s in expected]


def test_is_session_when_national_day_of_mourning_2025_01_09_returns_false(
    cal: MarketCalendar,
) -> None:
    assert not cal.is_session(date(2025, 1, 9))
    assert cal.next_session(date(2025, 1, 8)) == date(2025, 1, 10)
    assert cal.previous_session(date(2025, 1, 10)) == date(2025, 1, 8)


def test_sessions_when_week_with_closure_returns_tz_naive_midnights(cal: MarketCalendar) -> None:
    got = cal.sessions("2025-01-06", "2025-01-12")
    expected = ["2025-01-06", "2025-01-07", "2025-01-08", "2025-01-10"]
    assert list(got) == [pd.Timestamp(s) for s in expected]
    assert got.tz is None


def test_sessions_when_start_after_end_raises(cal: MarketCalendar) -> None:
    with pytest.raises(CalendarError, match="start 2024-02-01 is after end 2024-01-01"):
        cal.sessions("2024-02-01", "2024-01-01")


# -- extra closed -----------------------------------------------------------------------------


def test_extra_closed_when_calendar_thinks_it_a_session_removes_it_everywhere() -> None:
    # Simulates an old calendar that missed a closure on Fri 2024-05-31, May's last weekday.
    patched = MarketCalendar(extra_closed=[date(2024, 5, 31)])
    assert not patched.is_session(date(2024, 5, 31))
    assert patched.rebalance_session(2024, 5) == date(2024, 5, 30)
    assert patched.is_month_end_session(date(2024, 5, 30))
    assert patched.next_session(date(2024, 5, 30)) == date(2024, 6, 3)
    assert patched.previous_session(date(2024, 6, 3)) == date(2024, 5, 30)
    assert date(2024, 5, 30) in patched.month_end_sessions("2024-05-01", "2024-06-30")
    assert date(2024, 5, 31) in patched.holidays("2024-05-01", "2024-05-31")
    with pytest.raises(CalendarError, match="2024-05-31 is not a XNYS session"):
        patched.session_close(date(2024, 5, 31))


def test_extra_closed_when_already_closed_is_accepted_silently() -> None:
    patched = MarketCalendar(extra_closed=[date(2025, 1, 9), "2024-12-25"])
    assert patched.next_session(date(2025, 1, 8)) == date(2025, 1, 10)


def test_extra_closed_when_outside_coverage_raises_at_construction() -> None:
    with pytest.raises(CalendarCoverageError, match="2031-01-02"):
        MarketCalendar(extra_closed=[date(2031, 1, 2)])


# -- coverage ---------------------------------------------------------------------------------


@pytest.mark.parametrize("outside", [date(1989, 12, 29), date(2028, 1, 3)])
def test_is_session_when_outside_coverage_raises_coverage_error(
    cal: MarketCalendar, outside: date
) -> None:
    with pytest.raises(CalendarCoverageError) as caught:
        cal.is_session(outside)
    message = str(caught.value)
    assert outside.isoformat() in message
    assert "1990-01-02..2027-12-31" in message
    assert "extend calendar.covered_through in config.yaml" in message
    assert "\n" not in message


def test_next_session_when_stepping_past_coverage_raises_coverage_error(
    cal: MarketCalendar,
) -> None:
    assert DEFAULT_COVERED_THROUGH == date(2027, 12, 31)
    with pytest.raises(CalendarCoverageError, match="2028-01-01"):
        cal.next_session(date(2027, 12, 31))


def test_previous_session_when_stepping_before_coverage_raises_coverage_error(
    cal: MarketCalendar,
) -> None:
    assert DEFAULT_COVERED_FROM == date(1990, 1, 2)
    with pytest.raises(CalendarCoverageError, match="1990-01-01"):
        cal.previous_session(date(1990, 1, 2))


def test_sessions_when_range_crosses_coverage_raises_coverage_error(cal: MarketCalendar) -> None:
    with pytest.raises(CalendarCoverageError, match="2028-01-31"):
        cal.sessions("2027-12-01", "2028-01-31")


def test_is_month_end_session_when_range_ends_at_default_coverage_end_returns_true(
    cal: MarketCalendar,
) -> None:
    assert cal.is_month_end_session(date(2027, 12, 31))


def test_coverage_error_when_caught_as_calendar_error_is_a_calendar_error() -> None:
    assert issubclass(CalendarCoverageError, CalendarError)


def test_market_calendar_when_name_unknown_raises() -> None:
    with pytest.raises(CalendarError, match="unknown exchange calendar 'NOPE'"):
        MarketCalendar("NOPE")


def test_market_calendar_when_coverage_reversed_raises() -> None:
    with pytest.raises(CalendarError, match="coverage is empty"):
        MarketCalendar(covered_from=date(2025, 1, 1), covered_through=date(2024, 1, 1))


# -- dates in ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [date(2024, 3, 28), "2024-03-28", pd.Timestamp("2024-03-28"), datetime(2024, 3, 28, 12, 0)],
    ids=["date", "iso", "timestamp", "datetime"],
)
def test_is_session_when_given_any_date_form_normalises(cal: MarketCalendar, value: object) -> None:
    assert cal.is_session(value)  # type: ignore[arg-type]
    assert cal.next_session(value) == date(2024, 4, 1)  # type: ignore[arg-type]


@pytest.mark.parametrize("value", ["2024-13-01", "yesterday", 20240328])
def test_is_session_when_date_unreadable_raises(cal: MarketCalendar, value: object) -> None:
    with pytest.raises(CalendarError, match="bad date"):
        cal.is_session(value)  # type: ignore[arg-type]


def test_session_on_or_before_when_weekend_returns_friday(cal: MarketCalendar) -> None:
    assert cal.session_on_or_before(date(2024, 6, 9)) == date(2024, 6, 7)
    assert cal.session_on_or_before(date(2024, 6, 7)) == date(2024, 6, 7)


# -- instants ---------------------------------------------------------------------------------


def test_close_has_passed_when_exactly_at_close_returns_true(cal: MarketCalendar) -> None:
    assert cal.close_has_passed(date(2024, 1, 8), datetime(2024, 1, 8, 21, 0, tzinfo=UTC))
    assert cal.close_has_passed(date(2024, 1, 8), ny("2024-01-08T16:00:00"))


def test_close_has_passed_when_one_second_before_close_returns_false(cal: MarketCalendar) -> None:
    assert not cal.close_has_passed(date(2024, 1, 8), datetime(2024, 1, 8, 20, 59, 59, tzinfo=UTC))


def test_close_has_passed_when_early_close_uses_13_00_et(cal: MarketCalendar) -> None:
    assert cal.close_has_passed(date(2024, 11, 29), ny("2024-11-29T13:00:00"))
    assert not cal.close_has_passed(date(2024, 11, 29), ny("2024-11-29T12:59:59"))


def test_close_has_passed_when_naive_datetime_raises(cal: MarketCalendar) -> None:
    with pytest.raises(CalendarError, match="naive datetime"):
        cal.close_has_passed(date(2024, 1, 8), datetime(2024, 1, 8, 21, 0))


def test_last_closed_session_when_naive_datetime_raises(cal: MarketCalendar) -> None:
    with pytest.raises(CalendarError, match="naive datetime"):
        cal.last_closed_session(datetime(2024, 1, 8, 21, 0))


def test_last_closed_session_when_early_close_day_at_13_30_et_returns_that_day(
    cal: MarketCalendar,
) -> None:
    assert cal.last_closed_session(ny("2024-11-29T13:30:00")) == date(2024, 11, 29)
    # Before the early close the latest closed session is the Wednesday before Thanksgiving.
    assert cal.last_closed_session(ny("2024-11-29T12:59:00")) == date(2024, 11, 27)


def test_last_closed_session_when_weekend_instant_returns_friday(cal: MarketCalendar) -> None:
    assert cal.last_closed_session(ny("2024-06-08T12:00:00")) == date(2024, 6, 7)


def test_last_closed_session_when_monday_before_close_returns_previous_friday(
    cal: MarketCalendar,
) -> None:
    assert cal.last_closed_session(ny("2024-06-10T15:59:59")) == date(2024, 6, 7)
    assert cal.last_closed_session(ny("2024-06-10T16:00:00")) == date(2024, 6, 10)


def test_last_closed_session_when_after_coverage_raises_coverage_error(
    cal: MarketCalendar,
) -> None:
    with pytest.raises(CalendarCoverageError, match="2028-01-03"):
        cal.last_closed_session(ny("2028-01-03T18:00:00"))


# -- submission window ------------------------------------------------------------------------


def test_submission_window_when_winter_monday_default_returns_known_utc(
    cal: MarketCalendar,
) -> None:
    assert cal.submission_window(date(2024, 1, 8)) == (
        utc("2024-01-08 13:00"),
        utc("2024-01-08 14:20"),
    )


def test_submission_window_when_summer_monday_default_returns_known_utc(
    cal: MarketCalendar,
) -> None:
    assert cal.submission_window(date(2024, 7, 8)) == (
        utc("2024-07-08 12:00"),
        utc("2024-07-08 13:20"),
    )


def test_submission_window_when_end_is_09_28_is_allowed(cal: MarketCalendar) -> None:
    window = cal.submission_window(date(2024, 1, 8), start="09:00", end="09:28")
    assert window == (utc("2024-01-08 14:00"), utc("2024-01-08 14:28"))


@pytest.mark.parametrize(
    ("start", "end", "message"),
    [
        ("08:00", "09:29", "after 09:28 ET"),
        ("08:00", "09:45", "not before the 2024-01-08 open at 09:30 ET"),
        ("09:10", "09:00", "start 09:10 is not before end 09:00"),
        ("09:00", "09:00", "start 09:00 is not before end 09:00"),
        ("08:00", "9am", "bad wall time"),
    ],
    ids=["end-09-29", "end-after-open", "start-after-end", "start-equals-end", "unreadable"],
)
def test_submission_window_when_invalid_raises(
    cal: MarketCalendar, start: str, end: str, message: str
) -> None:
    with pytest.raises(CalendarError, match=message):
        cal.submission_window(date(2024, 1, 8), start=start, end=end)


def test_submission_window_when_not_a_session_raises(cal: MarketCalendar) -> None:
    with pytest.raises(CalendarError, match="2024-07-04 is not a XNYS session"):
        cal.submission_window(date(2024, 7, 4))


@pytest.mark.parametrize(
    ("at", "inside"),
    [
        ("2024-01-08T07:59:59", False),
        ("2024-01-08T08:00:00", True),
        ("2024-01-08T09:19:59", True),
        ("2024-01-08T09:20:00", False),
        ("2024-01-08T09:30:00", False),
    ],
)
def test_in_submission_window_when_instant_given_returns_known_answer(
    cal: MarketCalendar, at: str, inside: bool
) -> None:
    assert cal.in_submission_window(date(2024, 1, 8), ny(at)) is inside


def test_in_submission_window_when_naive_instant_raises(cal: MarketCalendar) -> None:
    with pytest.raises(CalendarError, match="naive datetime"):
        cal.in_submission_window(date(2024, 1, 8), datetime(2024, 1, 8, 8, 30))


# -- wall times -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"), [("09:20", time(9, 20)), ("8:00", time(8, 0)), ("23:59", time(23, 59))]
)
def test_parse_wall_time_when_hh_mm_returns_time(text: str, expected: time) -> None:
    assert parse_wall_time(text) == expected


@pytest.mark.parametrize("text", ["25:00", "9am", "09:60", "", "09:20:00", "0920"])
def test_parse_wall_time_when_unreadable_raises(text: str) -> None:
    with pytest.raises(CalendarError, match="bad wall time"):
        parse_wall_time(text)


# -- properties -------------------------------------------------------------------------------

_INNER_DATES = st.dates(min_value=date(1990, 2, 1), max_value=date(2027, 11, 30))


@settings(max_examples=200, deadline=None)
@given(day=_INNER_DATES)
def test_next_session_when_applied_to_previous_session_of_a_session_returns_it(day: date) -> None:
    cal = MarketCalendar()
    session = cal.session_on_or_before(day)
    assert cal.is_session(session)
    assert cal.next_session(cal.previous_session(session)) == session
    assert cal.previous_session(cal.next_session(session)) == session


@settings(max_examples=100, deadline=None)
@given(start=_INNER_DATES, length=st.integers(min_value=0, max_value=120))
def test_month_end_sessions_when_random_range_are_sessions_followed_by_a_new_month(
    start: date, length: int
) -> None:
    cal = MarketCalendar()
    end = min(start + timedelta(days=length), date(2027, 11, 30))
    expected = [
        ts.date()
        for ts in cal.sessions(start, end)
        if cal.next_session(ts.date()).month != ts.month
    ]
    assert cal.month_end_sessions(start, end) == expected


def test_session_open_when_first_call_on_a_new_calendar_answers():
    # Regression: a fresh instance's first call used to read the schedule before building it.
    assert MarketCalendar().session_open(date(2025, 12, 1)) == pd.Timestamp(
        "2025-12-01 14:30", tz="UTC"
    )
    assert MarketCalendar().session_close(date(2024, 11, 29)) == pd.Timestamp(
        "2024-11-29 18:00", tz="UTC"
    )


# -- the schedule cache: derived once per machine, never trusted blindly --------------------------

SPAN = (date(2019, 1, 2), date(2020, 12, 31))


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """An empty cache folder of this test's own; the process's memo forgotten before and after."""
    monkeypatch.setenv(calendar_module.CACHE_ENV, str(tmp_path / "cache"))
    calendar_module._base_schedule.cache_clear()
    yield tmp_path / "cache"
    calendar_module._base_schedule.cache_clear()


def published_schedule() -> pd.DataFrame:
    """The library's own answer, computed here without the module under test."""
    start, end = (d.isoformat() for d in SPAN)
    schedule = mcal.get_calendar("XNYS").schedule(start_date=start, end_date=end)
    return schedule[["market_open", "market_close"]]


def only_file(folder: Path) -> Path:
    (path,) = folder.rglob("*.npz")
    return path


def test_schedule_when_cached_is_read_back_equal_without_asking_the_library(cache, monkeypatch):
    first = calendar_module._base_schedule("XNYS", *SPAN)
    assert only_file(cache).name.startswith("XNYS-2019-01-02-2020-12-31-")
    calendar_module._base_schedule.cache_clear()

    def refuse(name: str):
        raise AssertionError("the cached schedule should have been read")

    monkeypatch.setattr(mcal, "get_calendar", refuse)
    again = calendar_module._base_schedule("XNYS", *SPAN)
    monkeypatch.undo()
    expected = published_schedule()
    pd.testing.assert_frame_equal(first, expected, check_freq=False)
    pd.testing.assert_frame_equal(again, expected, check_freq=False)
    cal = MarketCalendar(covered_from=SPAN[0], covered_through=SPAN[1])
    assert cal.session_close("2019-11-29") == pd.Timestamp("2019-11-29 18:00", tz="UTC")  # early


@pytest.mark.parametrize(
    "damage",
    [
        lambda data: data[: len(data) // 2],  # cut short (power loss mid-write of an old version)
        lambda data: b"not a cache file at all",
        lambda data: b"",
    ],
    ids=["truncated", "garbage", "empty"],
)
def test_schedule_when_the_cache_file_is_damaged_is_computed_again_and_rewritten(cache, damage):
    calendar_module._base_schedule("XNYS", *SPAN)
    path = only_file(cache)
    path.write_bytes(damage(path.read_bytes()))
    calendar_module._base_schedule.cache_clear()

    schedule = calendar_module._base_schedule("XNYS", *SPAN)

    pd.testing.assert_frame_equal(schedule, published_schedule(), check_freq=False)
    calendar_module._base_schedule.cache_clear()
    pd.testing.assert_frame_equal(calendar_module._read_schedule(path, *SPAN),
                                  published_schedule(), check_freq=False)  # fmt: skip


def test_schedule_when_the_cache_holds_another_span_is_not_believed(cache):
    calendar_module._base_schedule("XNYS", *SPAN)
    path = only_file(cache)
    wider = (date(2018, 1, 2), SPAN[1])  # a session before this span's start
    calendar_module._base_schedule("XNYS", *wider)
    other = next(p for p in cache.rglob("*.npz") if p != path)
    path.write_bytes(other.read_bytes())
    calendar_module._base_schedule.cache_clear()

    schedule = calendar_module._base_schedule("XNYS", *SPAN)

    pd.testing.assert_frame_equal(schedule, published_schedule(), check_freq=False)


def test_schedule_when_the_cache_folder_cannot_be_written_still_answers(cache):
    cache.parent.mkdir(parents=True, exist_ok=True)
    cache.write_text("a file where the folder should be")

    schedule = calendar_module._base_schedule("XNYS", *SPAN)

    pd.testing.assert_frame_equal(schedule, published_schedule(), check_freq=False)
    assert cache.read_text() == "a file where the folder should be"


def test_cache_folder_when_asked_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.delenv(calendar_module.CACHE_ENV, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert calendar_module.compute_cache_folder() == tmp_path / "xdg" / "ops-runner"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert calendar_module.compute_cache_folder() == tmp_path / "home" / ".cache" / "ops-runner"
    monkeypatch.setenv(calendar_module.CACHE_ENV, str(tmp_path / "mine"))
    assert calendar_module.compute_cache_folder() == tmp_path / "mine"
