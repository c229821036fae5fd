"""Exchange sessions, opens, closes and early closes, within the span the calendar is trusted."""

from __future__ import annotations

import calendar as _stdlib_calendar
import logging
import os
import re
import zipfile
from collections.abc import Iterable
from datetime import date, datetime, time, timedelta
from functools import lru_cache
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd

from ops_runner.core.errors import CalendarCoverageError, CalendarError
from ops_runner.core.files import open_atomic

if TYPE_CHECKING:
    from ops_runner.workbook.config import Config

log = logging.getLogger(__name__)

NY = ZoneInfo("America/New_York")
DEFAULT_COVERED_FROM = date(1990, 1, 2)
# Holidays the exchange has published; extend in config after checking.
DEFAULT_COVERED_THROUGH = date(2027, 12, 31)
# Nasdaq takes market-on-open orders until 09:28 ET; NYSE Arca rejects MOO cancels from 09:29.
MOO_LAST_ENTRY = time(9, 28)
REGULAR_CLOSE = time(16, 0)

DateLike = date | str
_WALL_TIME = re.compile(r"([01]?\d|2[0-3]):([0-5]\d)")
_COVERAGE_FIX = (
    "extend calendar.covered_through in config.yaml after checking the exchange's published "
    "holidays, or upgrade pandas-market-calendars"
)


def parse_wall_time(text: str) -> time:
    """Return the wall time written as "HH:MM"; raise CalendarError for anything else."""
    match = _WALL_TIME.fullmatch(text.strip()) if isinstance(text, str) else None
    if match is None:
        raise CalendarError(f"bad wall time {text!r}: expected HH:MM on a 24-hour clock")
    return time(int(match.group(1)), int(match.group(2)))


def _to_date(value: object) -> date:
    """Normalise a date, datetime, Timestamp or ISO string to a date (aware values: NY date)."""
    if isinstance(value, datetime):  # includes pd.Timestamp
        if value.tzinfo is not None:
            value = value.astimezone(NY)
        return value.date()
    if isinstance(value, date):
        return value
    if isinstance(value, str):
        try:
            return date.fromisoformat(value.strip())
        except ValueError:
            raise CalendarError(f"bad date {value!r}: expected YYYY-MM-DD") from None
    raise CalendarError(f"bad date {value!r}: expected a date, datetime or YYYY-MM-DD string")


def _to_instant(value: object) -> pd.Timestamp:
    """Return a tz-aware instant as a UTC Timestamp; raise CalendarError if naive."""
    if not isinstance(value, datetime):
        raise CalendarError(f"bad instant {value!r}: expected a tz-aware datetime")
    if value.tzinfo is None or value.utcoffset() is None:
        raise CalendarError(f"naive datetime {value.isoformat()} given as an instant; attach a tz")
    return pd.Timestamp(value).tz_convert("UTC")


def _last_day_of_month(year: int, month: int) -> date:
    return date(year, month, _stdlib_calendar.monthrange(year, month)[1])


# The schedule of a span is a pure function of the calendar libraries' versions: computed once
# per machine (0.6 s of every tick, kernel and command before), then read back in a millisecond.
CACHE_ENV = "OPS_RUNNER_CACHE_DIR"
_CACHE_FORMAT = 1
_LIBRARIES = ("pandas_market_calendars", "exchange_calendars")


def compute_cache_folder() -> Path:
    """Return the folder of this machine's derived caches: ``$OPS_RUNNER_CACHE_DIR``, else
    ``$XDG_CACHE_HOME/ops-runner``, else ``~/.cache/ops-runner``. Never inside a workbook."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "ops-runner"


def _schedule_cache(name: str, covered_from: date, covered_through: date) -> Path:
    versions = "-".join(metadata.version(library) for library in _LIBRARIES)
    stem = f"{name}-{covered_from}-{covered_through}-{versions}-v{_CACHE_FORMAT}"
    return compute_cache_folder() / "calendars" / f"{stem}.npz"


def _read_schedule(path: Path, covered_from: date, covered_through: date) -> pd.DataFrame | None:
    """The cached schedule, or None when it is missing, unreadable or not of this span."""
    try:
        with np.load(path, allow_pickle=False) as saved:
            days, opens, closes = saved["days"], saved["opens"], saved["closes"]
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
        if path.exists():
            log.warning("calendar cache %s unreadable (%s): computing the schedule", path, exc)
        return None
    ok = (
        days.dtype.kind == opens.dtype.kind == closes.dtype.kind == "M"
        and len(days) == len(opens) == len(closes) > 0
        and bool(np.all(days[1:] > days[:-1]))
        and days[0] >= np.datetime64(covered_from, "D")
        and days[-1] <= np.datetime64(covered_through, "D")
    )  # fmt: skip
    if not ok:
        log.warning("calendar cache %s does not hold this span: computing the schedule", path)
        return None
    index = pd.DatetimeIndex(days)
    return pd.DataFrame(
        {"market_open": pd.DatetimeIndex(opens).tz_localize("UTC"),
         "market_close": pd.DatetimeIndex(closes).tz_localize("UTC")},
        index=index,
    )  # fmt: skip


def _write_schedule(path: Path, schedule: pd.DataFrame) -> None:
    """Keep the schedule for the next process; a cache that cannot be written is only slower."""
    days = schedule.index.to_numpy()
    opens, closes = (
        pd.DatetimeIndex(schedule[column]).tz_convert("UTC").tz_localize(None).to_numpy()
        for column in ("market_open", "market_close")
    )
    try:
        with open_atomic(path) as handle:
            np.savez(handle, days=days, opens=opens, closes=closes)
    except OSError as exc:
        log.info("calendar cache %s not written (%s)", path, exc)


def _exchange(name: str) -> Any:
    """The library's calendar of ``name``; raises CalendarError for a name it does not know."""
    # Imported here, not at the top: with the schedule cached, a process never needs the two
    # calendar libraries (0.2 s of every tick, kernel and command).
    import pandas_market_calendars as mcal

    try:
        return mcal.get_calendar(name)
    except RuntimeError:
        raise CalendarError(f"unknown exchange calendar {name!r}; try 'XNYS'") from None


@lru_cache(maxsize=8)
def _base_schedule(name: str, covered_from: date, covered_through: date) -> pd.DataFrame:
    """The exchange schedule for the whole covered span, built once per machine and version
    (kept in the cache folder) and held once per process."""
    path = _schedule_cache(name, covered_from, covered_through)
    cached = _read_schedule(path, covered_from, covered_through)
    if cached is not None:
        return cached
    schedule = _exchange(name).schedule(
        start_date=covered_from.isoformat(), end_date=covered_through.isoformat()
    )[["market_open", "market_close"]]
    _write_schedule(path, schedule)
    return schedule


class MarketCalendar:
    """Sessions of one exchange between ``covered_from`` and ``covered_through`` inclusive."""

    # Filled once by _build() on first use; positions are shared by all five arrays.
    _index: pd.DatetimeIndex  # sessions as tz-naive midnights
    _days: np.ndarray  # the same as datetime64[D], for searchsorted
    _opens: pd.DatetimeIndex  # UTC
    _closes: pd.DatetimeIndex  # UTC, from the schedule (early closes included)
    _month_end: np.ndarray  # True where the session is its month's last
    _trailing_month_unknown: bool  # coverage ends before the last covered session's month does

    def __init__(
        self,
        name: str = "XNYS",
        extra_closed: Iterable[DateLike] = (),
        covered_from: DateLike = DEFAULT_COVERED_FROM,
        covered_through: DateLike = DEFAULT_COVERED_THROUGH,
    ) -> None:
        self.name = name
        self.covered_from = _to_date(covered_from)
        self.covered_through = _to_date(covered_through)
        if self.covered_from > self.covered_through:
            raise CalendarError(
                f"calendar coverage is empty: covered_from {self.covered_from} is after "
                f"covered_through {self.covered_through}"
            )
        self.extra_closed = frozenset(_to_date(d) for d in extra_closed)
        for d in sorted(self.extra_closed):
            self._require_covered(d)
        self._built = False
        # Built now, not on first use: attribute reads such as ``self._opens[...]`` would
        # otherwise race the lazy build (the base schedule is cached per process anyway).
        self._build()

    def __repr__(self) -> str:
        return (
            f"MarketCalendar({self.name!r}, covered {self.covered_from}..{self.covered_through}, "
            f"{len(self.extra_closed)} extra closed)"
        )

    # -- schedule ------------------------------------------------------------------------------

    def _build(self) -> None:
        if self._built:
            return
        schedule = _base_schedule(self.name, self.covered_from, self.covered_through)
        if self.extra_closed:
            closed = pd.DatetimeIndex([pd.Timestamp(d) for d in self.extra_closed])
            schedule = schedule.loc[~schedule.index.isin(closed)]
        self._index = pd.DatetimeIndex(schedule.index)
        self._days = self._index.values.astype("datetime64[D]")
        self._opens = pd.DatetimeIndex(schedule["market_open"]).tz_convert("UTC")
        self._closes = pd.DatetimeIndex(schedule["market_close"]).tz_convert("UTC")
        months = self._days.astype("datetime64[M]")
        # A session ends its month when the next session is in another month. The last covered
        # session ends its month only if the whole month is covered; otherwise nobody knows.
        after_coverage = (np.datetime64(self.covered_through, "D") + 1).astype("datetime64[M]")
        month_end = np.append(months[1:] != months[:-1], after_coverage > months[-1:])
        self._trailing_month_unknown = bool(len(months) > 0 and not month_end[-1])
        self._month_end = month_end
        self._built = True

    def _coverage_error(self, d: date) -> CalendarCoverageError:
        return CalendarCoverageError(
            f"{d} is outside the {self.name} calendar's coverage "
            f"{self.covered_from}..{self.covered_through}: {_COVERAGE_FIX}"
        )

    def _require_covered(self, d: date) -> None:
        if not self.covered_from <= d <= self.covered_through:
            raise self._coverage_error(d)

    def _position(self, d: date) -> int:
        """Index of the first session on or after ``d`` (len if none)."""
        self._build()
        return int(np.searchsorted(self._days, np.datetime64(d, "D"), side="left"))

    def _session_position(self, value: DateLike) -> int:
        d = _to_date(value)
        self._require_covered(d)
        pos = self._position(d)
        if pos >= len(self._days) or self._days[pos] != np.datetime64(d, "D"):
            raise CalendarError(f"{d} is not a {self.name} session")
        return pos

    def _day_at(self, pos: int) -> date:
        return self._index[pos].date()

    def _span(self, start: DateLike, end: DateLike) -> tuple[int, int]:
        """Positions [lo, hi) of the sessions from ``start`` to ``end`` inclusive."""
        first, last = _to_date(start), _to_date(end)
        self._require_covered(first)
        self._require_covered(last)
        if first > last:
            raise CalendarError(f"empty date range: start {first} is after end {last}")
        return self._position(first), self._position(last + timedelta(days=1))

    # -- sessions ------------------------------------------------------------------------------

    def sessions(self, start: DateLike, end: DateLike) -> pd.DatetimeIndex:
        """Return the sessions from start to end inclusive as tz-naive midnight dates."""
        lo, hi = self._span(start, end)
        return self._index[lo:hi]

    def is_session(self, d: DateLike) -> bool:
        """Return whether ``d`` is a session; raise CalendarCoverageError outside coverage."""
        day = _to_date(d)
        self._require_covered(day)
        pos = self._position(day)
        return pos < len(self._days) and self._days[pos] == np.datetime64(day, "D")

    def holidays(self, start: DateLike, end: DateLike) -> list[date]:
        """Return the weekdays from start to end inclusive that are not sessions."""
        lo, hi = self._span(start, end)
        weekdays = pd.bdate_range(_to_date(start), _to_date(end))
        return [ts.date() for ts in weekdays.difference(self._index[lo:hi])]

    def session_open(self, d: DateLike) -> pd.Timestamp:
        """Return the open of session ``d`` in UTC; raise CalendarError if not a session."""
        return self._opens[self._session_position(d)]

    def session_close(self, d: DateLike) -> pd.Timestamp:
        """Return the official close of session ``d`` in UTC, early closes included."""
        # From the schedule, never close_time_on(): pandas_market_calendars #390 reports 16:00
        # on 13:00 early closes.
        return self._closes[self._session_position(d)]

    def is_early_close(self, d: DateLike) -> bool:
        """Return whether session ``d`` closes before the regular 16:00 ET close."""
        return self._is_early(self._closes[self._session_position(d)])

    def _is_early(self, close: pd.Timestamp) -> bool:
        return close.tz_convert(NY).time() < REGULAR_CLOSE

    def early_closes(self, start: DateLike, end: DateLike) -> list[date]:
        """Return the early-close sessions from start to end inclusive."""
        lo, hi = self._span(start, end)
        local = self._closes[lo:hi].tz_convert(NY)
        early = (local.hour * 60 + local.minute) < REGULAR_CLOSE.hour * 60 + REGULAR_CLOSE.minute
        return [ts.date() for ts in self._index[lo:hi][early]]

    # -- stepping ------------------------------------------------------------------------------

    def next_session(self, d: DateLike) -> date:
        """Return the first session strictly after ``d`` (which need not be a session)."""
        day = _to_date(d)
        self._require_covered(day)
        pos = self._position(day + timedelta(days=1))
        if pos >= len(self._days):
            raise self._coverage_error(self.covered_through + timedelta(days=1))
        return self._day_at(pos)

    def previous_session(self, d: DateLike) -> date:
        """Return the last session strictly before ``d`` (which need not be a session)."""
        day = _to_date(d)
        self._require_covered(day)
        pos = self._position(day) - 1
        if pos < 0:
            raise self._coverage_error(self.covered_from - timedelta(days=1))
        return self._day_at(pos)

    def session_on_or_before(self, d: DateLike) -> date:
        """Return ``d`` if it is a session, else the last session before it."""
        day = _to_date(d)
        return day if self.is_session(day) else self.previous_session(day)

    # -- month ends ----------------------------------------------------------------------------

    def month_end_sessions(self, start: DateLike, end: DateLike) -> list[date]:
        """Return the last session of each month whose last session is in [start, end]."""
        lo, hi = self._span(start, end)
        if self._trailing_month_unknown and hi == len(self._days) and hi > lo:
            raise self._coverage_error(self._month_after_coverage())
        return [ts.date() for ts in self._index[lo:hi][self._month_end[lo:hi]]]

    def is_month_end_session(self, d: DateLike) -> bool:
        """Return whether ``d`` is the last session of its month (the rebalance session)."""
        day = _to_date(d)
        if not self.is_session(day):
            return False
        pos = self._position(day)
        if self._trailing_month_unknown and pos == len(self._days) - 1:
            raise self._coverage_error(self._month_after_coverage())
        return bool(self._month_end[pos])

    def rebalance_session(self, year: int, month: int, offset: int = 0) -> date:
        """Return the last session of ``month`` in ``year``; raise if the month has none. With
        ``offset`` -k, the session k sessions before it: the month's signal session."""
        if not 1 <= month <= 12:
            raise CalendarError(f"bad month {month}: expected 1..12")
        last_day = _last_day_of_month(year, month)
        self._require_covered(last_day)
        session = self.session_on_or_before(last_day)
        if (session.year, session.month) != (year, month):
            raise CalendarError(f"{year}-{month:02d} has no {self.name} session")
        for _ in range(-offset):
            session = self.previous_session(session)
        return session

    def is_rebalance_session(self, d: DateLike, offset: int = 0) -> bool:
        """Return whether ``d`` is its month's ``rebalance_session`` with ``offset`` (with 0,
        ``is_month_end_session``)."""
        day = _to_date(d)
        if offset == 0:
            return self.is_month_end_session(day)
        return self.is_session(day) and self.rebalance_session(day.year, day.month, offset) == day

    def _month_after_coverage(self) -> date:
        t = self.covered_through
        return _last_day_of_month(t.year, t.month)

    # -- instants ------------------------------------------------------------------------------

    def close_has_passed(self, d: DateLike, at: datetime) -> bool:
        """Return whether the official close of session ``d`` is at or before ``at``."""
        return self.session_close(d) <= _to_instant(at)

    def last_closed_session(self, at: datetime) -> date:
        """Return the latest session whose official close is at or before ``at``."""
        instant = _to_instant(at)
        self._require_covered(instant.tz_convert(NY).date())
        self._build()
        pos = int(self._closes.searchsorted(instant, side="right")) - 1
        if pos < 0:
            raise self._coverage_error(self.covered_from - timedelta(days=1))
        return self._day_at(pos)

    def submission_window(
        self, session: DateLike, start: str | time = "08:00", end: str | time = "09:20"
    ) -> tuple[pd.Timestamp, pd.Timestamp]:
        """Return the UTC window in which market-on-open orders for ``session`` may be sent.

        ``start`` and ``end`` are America/New_York wall times on the session's own date. Raises
        CalendarError when start >= end, when end is not before the open, or when end is later
        than 09:28 ET (the last minute every venue accepts market-on-open orders).
        """
        day = _to_date(session)
        opens = self.session_open(day)
        first = start if isinstance(start, time) else parse_wall_time(start)
        last = end if isinstance(end, time) else parse_wall_time(end)
        if first >= last:
            raise CalendarError(
                f"submission window start {first:%H:%M} is not before end {last:%H:%M}"
            )
        window_start = pd.Timestamp(datetime.combine(day, first, tzinfo=NY)).tz_convert("UTC")
        window_end = pd.Timestamp(datetime.combine(day, last, tzinfo=NY)).tz_convert("UTC")
        if window_end >= opens:
            raise CalendarError(
                f"submission window end {last:%H:%M} ET is not before the {day} open at "
                f"{opens.tz_convert(NY):%H:%M} ET"
            )
        if last > MOO_LAST_ENTRY:
            raise CalendarError(
                f"submission window end {last:%H:%M} ET is after {MOO_LAST_ENTRY:%H:%M} ET: Nasdaq "
                "takes market-on-open orders only until 09:28 and NYSE Arca rejects MOO cancels "
                "from 09:29"
            )
        return window_start, window_end

    def in_submission_window(
        self,
        session: DateLike,
        at: datetime,
        start: str | time = "08:00",
        end: str | time = "09:20",
    ) -> bool:
        """Return whether ``at`` is in the submission window for ``session``: [start, end)."""
        window_start, window_end = self.submission_window(session, start, end)
        return window_start <= _to_instant(at) < window_end


# One calendar per (name, extra closures, coverage) and process: a tick asks many times.
_CALENDARS: dict[tuple[str, tuple[date, ...], date], MarketCalendar] = {}


def open_calendar(cfg: Config) -> MarketCalendar:
    """Return the workbook's trading calendar (config ``calendar:``), built once per process."""
    cal = cfg.calendar
    key = (cal.name, cal.extra_closed, cal.covered_through)
    if key not in _CALENDARS:
        _CALENDARS[key] = MarketCalendar(
            name=cal.name, extra_closed=cal.extra_closed, covered_through=cal.covered_through
        )
    return _CALENDARS[key]
