"""The schedule against tables of known NYSE instants (UTC, worked out by hand), a year-long walk
of a perfect operator, and faults with literal answers."""

from __future__ import annotations

import bisect
from collections import Counter
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

from ops_runner.core.events import State
from ops_runner.market.calendar import MarketCalendar
from ops_runner.ops.schedule import (
    Agenda,
    Job,
    ScheduleSettings,
    Slot,
    compute_agenda,
    compute_next_opening,
    compute_session_slots,
    compute_slots,
)
from ops_runner.workbook.config import check_config

TEMPLATE = Path(__file__).resolve().parents[2] / "templates" / "config.yaml"
MINUTE = timedelta(minutes=1)


def utc(text: str) -> datetime:
    """'2025-11-28 18:30' read as UTC."""
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


# One row per rebalance cycle. R is the month's last session, P the session before it, N the
# session after it. Instants in UTC, read off the NYSE calendar by hand with EST = UTC-5 and
# EDT = UTC-4 (EDT 2025-03-09 .. 2025-11-02 and 2026-03-08 .. 2026-11-01):
#   pre_p   P's close + 30 min        16:30 ET, 13:30 ET after a 13:00 early close (P's date)
#   after_r R's close + 30 min        same (R's date)
#   window  08:00 ET on N             the submission window opens (and closes 80 min later)
#   n_open  09:30 ET on N
CYCLES_2025 = [
    # cycle    pre_p               after_r             window              n_open
    ("2024-12", "2024-12-30 21:30", "2024-12-31 21:30", "2025-01-02 13:00", "2025-01-02 14:30"),
    # Friday R, Monday N
    ("2025-01", "2025-01-30 21:30", "2025-01-31 21:30", "2025-02-03 13:00", "2025-02-03 14:30"),
    ("2025-02", "2025-02-27 21:30", "2025-02-28 21:30", "2025-03-03 13:00", "2025-03-03 14:30"),
    # Monday R after a Friday P; the first EDT cycle
    ("2025-03", "2025-03-28 20:30", "2025-03-31 20:30", "2025-04-01 12:00", "2025-04-01 13:30"),
    ("2025-04", "2025-04-29 20:30", "2025-04-30 20:30", "2025-05-01 12:00", "2025-05-01 13:30"),
    # 05-31 is a Saturday
    ("2025-05", "2025-05-29 20:30", "2025-05-30 20:30", "2025-06-02 12:00", "2025-06-02 13:30"),
    # Monday R after a Friday P
    ("2025-06", "2025-06-27 20:30", "2025-06-30 20:30", "2025-07-01 12:00", "2025-07-01 13:30"),
    ("2025-07", "2025-07-30 20:30", "2025-07-31 20:30", "2025-08-01 12:00", "2025-08-01 13:30"),
    # Labor Day 09-01: a Tuesday N
    ("2025-08", "2025-08-28 20:30", "2025-08-29 20:30", "2025-09-02 12:00", "2025-09-02 13:30"),
    ("2025-09", "2025-09-29 20:30", "2025-09-30 20:30", "2025-10-01 12:00", "2025-10-01 13:30"),
    # R in EDT, N in EST (the switch on Sunday 11-02)
    ("2025-10", "2025-10-30 20:30", "2025-10-31 20:30", "2025-11-03 13:00", "2025-11-03 14:30"),
    # Thanksgiving 11-27 between P and R; R closes at 13:00
    ("2025-11", "2025-11-26 21:30", "2025-11-28 18:30", "2025-12-01 13:00", "2025-12-01 14:30"),
    # New Year's Day
    ("2025-12", "2025-12-30 21:30", "2025-12-31 21:30", "2026-01-02 13:00", "2026-01-02 14:30"),
]

CYCLES_2026 = [
    ("2026-01", "2026-01-29 21:30", "2026-01-30 21:30", "2026-02-02 13:00", "2026-02-02 14:30"),
    ("2026-02", "2026-02-26 21:30", "2026-02-27 21:30", "2026-03-02 13:00", "2026-03-02 14:30"),
    ("2026-03", "2026-03-30 20:30", "2026-03-31 20:30", "2026-04-01 12:00", "2026-04-01 13:30"),
    ("2026-04", "2026-04-29 20:30", "2026-04-30 20:30", "2026-05-01 12:00", "2026-05-01 13:30"),
    ("2026-05", "2026-05-28 20:30", "2026-05-29 20:30", "2026-06-01 12:00", "2026-06-01 13:30"),
    ("2026-06", "2026-06-29 20:30", "2026-06-30 20:30", "2026-07-01 12:00", "2026-07-01 13:30"),
    ("2026-07", "2026-07-30 20:30", "2026-07-31 20:30", "2026-08-03 12:00", "2026-08-03 13:30"),
    # Monday R after a Friday P
    ("2026-08", "2026-08-28 20:30", "2026-08-31 20:30", "2026-09-01 12:00", "2026-09-01 13:30"),
    ("2026-09", "2026-09-29 20:30", "2026-09-30 20:30", "2026-10-01 12:00", "2026-10-01 13:30"),
    # R in EDT, N in EST (the switch on Sunday 11-01)
    ("2026-10", "2026-10-29 20:30", "2026-10-30 20:30", "2026-11-02 13:00", "2026-11-02 14:30"),
    # P is the day after Thanksgiving and closes at 13:00
    ("2026-11", "2026-11-27 18:30", "2026-11-30 21:30", "2026-12-01 13:00", "2026-12-01 14:30"),
    # 2027-01-01 is a Friday
    ("2026-12", "2026-12-30 21:30", "2026-12-31 21:30", "2027-01-04 13:00", "2027-01-04 14:30"),
]

# The replay's deadline: the open of the session after N (09:30 ET, UTC), read off the NYSE
# calendar by hand: the next weekday that is no holiday.
AFTER_N_OPEN = {
    "2024-12": "2025-01-03 14:30", "2025-01": "2025-02-04 14:30", "2025-02": "2025-03-04 14:30",
    "2025-03": "2025-04-02 13:30", "2025-04": "2025-05-02 13:30", "2025-05": "2025-06-03 13:30",
    "2025-06": "2025-07-02 13:30", "2025-07": "2025-08-04 13:30", "2025-08": "2025-09-03 13:30",
    "2025-09": "2025-10-02 13:30", "2025-10": "2025-11-04 14:30", "2025-11": "2025-12-02 14:30",
    "2025-12": "2026-01-05 14:30",  # N a Friday: Monday
    "2026-01": "2026-02-03 14:30", "2026-02": "2026-03-03 14:30", "2026-03": "2026-04-02 13:30",
    "2026-04": "2026-05-04 13:30", "2026-05": "2026-06-02 13:30", "2026-06": "2026-07-02 13:30",
    "2026-07": "2026-08-04 13:30", "2026-08": "2026-09-02 13:30", "2026-09": "2026-10-02 13:30",
    "2026-10": "2026-11-03 14:30", "2026-11": "2026-12-02 14:30", "2026-12": "2027-01-05 14:30",
}  # fmt: skip

# Daily checks: the session's close + 30 min, closing at the next session's open (UTC).
DAILY_CHECKS = [
    # session       opens               closes
    ("2025-01-08", "2025-01-08 21:30", "2025-01-10 14:30"),  # 01-09: national day of mourning
    ("2025-03-07", "2025-03-07 21:30", "2025-03-10 13:30"),  # EST Friday, EDT Monday
    ("2025-03-10", "2025-03-10 20:30", "2025-03-11 13:30"),
    ("2025-04-17", "2025-04-17 20:30", "2025-04-21 13:30"),  # Good Friday 04-18
    ("2025-07-02", "2025-07-02 20:30", "2025-07-03 13:30"),
    ("2025-07-03", "2025-07-03 17:30", "2025-07-07 13:30"),  # 13:00 early close; 07-04 closed
    ("2025-08-29", "2025-08-29 20:30", "2025-09-02 13:30"),  # Labor Day 09-01
    ("2025-10-31", "2025-10-31 20:30", "2025-11-03 14:30"),  # EDT Friday, EST Monday
    ("2025-11-03", "2025-11-03 21:30", "2025-11-04 14:30"),
    ("2025-11-26", "2025-11-26 21:30", "2025-11-28 14:30"),  # Thanksgiving 11-27
    ("2025-11-28", "2025-11-28 18:30", "2025-12-01 14:30"),  # 13:00 early close
    ("2025-12-24", "2025-12-24 18:30", "2025-12-26 14:30"),  # 13:00 early close; 12-25 closed
    ("2025-12-31", "2025-12-31 21:30", "2026-01-02 14:30"),  # 2026-01-01 closed
    ("2026-11-27", "2026-11-27 18:30", "2026-11-30 14:30"),  # 13:00 early close
]

# NYSE weekdays without a session, 2024-12-31 .. 2026-01-02 (published holiday list).
HOLIDAYS = [
    "2025-01-01", "2025-01-09", "2025-01-20", "2025-02-17", "2025-04-18", "2025-05-26",
    "2025-06-19", "2025-07-04", "2025-09-01", "2025-11-27", "2025-12-25", "2026-01-01",
]  # fmt: skip
EARLY_CLOSES = ["2025-07-03", "2025-11-28", "2025-12-24"]  # 13:00 ET
EDT_2025 = (date(2025, 3, 9), date(2025, 11, 2))  # [start, end) of daylight saving time

# Within one instant the code orders by job: pre-rebalance checks before daily checks, then the
# cycle's chain. The walk asserts this order.
JOB_RANK = {  # at equal instants: the daily checks first (a weaker freshness requirement
    "daily_checks": 0,  # must not pass after the pre-rebalance one failed and clear it)
    "pre_rebalance_checks": 1,
    "data_qa": 2,
    "decision": 3,
    "execution": 4,
    "reconciliation": 5,
    "slippage_report": 6,
    "replay": 7,
    "audit": 8,
    "backup": 9,
}

WALK_START = utc("2024-12-31 15:00")  # after daily_checks:2024-12-30 closed: nothing open
WALK_END = utc("2026-01-02 18:00")  # cycle 2025-12 reconciled, before 2026-01-02's close


class _MemoCalendar:
    """The calendar with every answer memoised: the walk asks the same questions 20,000 times."""

    def __init__(self, calendar: MarketCalendar) -> None:
        self._calendar = calendar

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._calendar, name)
        if callable(value):
            value = cache(value)
        setattr(self, name, value)
        return value


@pytest.fixture(scope="module")
def full_settings() -> ScheduleSettings:
    """The template's schedule: the cycle's jobs, the daily checks and the weekly jobs."""
    values = check_config(yaml.safe_load(TEMPLATE.read_text()))
    return ScheduleSettings.from_config(values)


@pytest.fixture(scope="module")
def settings(full_settings) -> ScheduleSettings:
    """The template's schedule without the weekly audit and backup: the tables below are about
    the cycle's jobs and the daily checks (the weekly slots have their own tests)."""
    return replace(full_settings, weekly=())


@pytest.fixture(scope="module")
def cal() -> MarketCalendar:
    return MarketCalendar()


def keys(slots: tuple[Slot, ...] | list[Slot]) -> list[str]:
    return [s.key for s in slots]


def agenda_keys(agenda: Agenda) -> dict[str, list[str]]:
    return {
        "due": keys(agenda.due),
        "missed": keys(agenda.missed),
        "expired": keys(agenda.expired),
        "waiting": keys(agenda.waiting),
    }


def expected_agenda(due=(), missed=(), expired=(), waiting=()) -> dict[str, list[str]]:
    return {
        "due": list(due),
        "missed": list(missed),
        "expired": list(expired),
        "waiting": list(waiting),
    }


# -- settings ---------------------------------------------------------------------------------


def test_settings_when_default_template_durations_and_window_as_written(settings):
    assert settings.decision_delay == timedelta(minutes=30)
    assert (settings.window_start, settings.window_end) == ("08:00", "09:20")
    assert settings.reconciliation_delay == timedelta(minutes=30)
    assert dict(settings.deadlines) == {
        "data_qa": timedelta(minutes=30),
        "decision": timedelta(minutes=30),
        "execution": timedelta(minutes=60),
        "reconciliation": timedelta(minutes=60),
        "slippage_report": timedelta(minutes=120),
    }


# -- slots of one session ---------------------------------------------------------------------


@pytest.mark.parametrize("row", CYCLES_2025 + CYCLES_2026, ids=lambda row: row[0])
def test_session_slots_when_month_end_session_cycle_opens_at_literal_instants(cal, settings, row):
    cycle, _, after_r, window, n_open = row
    r, n = after_r[:10], window[:10]
    after_r, window, n_open = utc(after_r), utc(window), utc(n_open)
    m = MINUTE
    r_day, n_day = date.fromisoformat(r), date.fromisoformat(n)
    # key: (session, cycle, opens, deadline, closes, after)
    expected = {
        f"daily_checks:{r}": (r_day, None, after_r, n_open, n_open, ()),
        f"data_qa:{cycle}": (r_day, cycle, after_r, after_r + 30 * m, window + 80 * m,
                             (f"pre_rebalance_checks:{r}",)),
        f"decision:{cycle}": (r_day, cycle, after_r, after_r + 60 * m, window + 80 * m,
                              (f"data_qa:{cycle}",)),
        f"execution:{cycle}": (n_day, cycle, window, window + 80 * m, window + 80 * m,
                               (f"decision:{cycle}",)),
        f"reconciliation:{cycle}": (n_day, cycle, n_open + 30 * m, n_open + 90 * m, None,
                                    (f"execution:{cycle}",)),
        f"slippage_report:{cycle}": (n_day, cycle, n_open + 30 * m, n_open + 150 * m, None,
                                     (f"reconciliation:{cycle}",)),
        f"replay:{cycle}": (n_day, cycle, n_open + 30 * m, utc(AFTER_N_OPEN[cycle]), None,
                            (f"reconciliation:{cycle}",)),
    }  # fmt: skip
    slots = {s.key: s for s in compute_session_slots(cal, settings, r_day)}
    pre = slots.pop(f"pre_rebalance_checks:{r}")
    assert (pre.job, pre.session, pre.cycle, pre.opens) == (
        Job.PRE_REBALANCE,
        r_day,
        cycle,
        after_r,
    )
    got = {
        k: (s.session, s.cycle, s.opens, s.deadline, s.closes, s.after) for k, s in slots.items()
    }
    assert got == expected


@pytest.mark.parametrize("row", CYCLES_2025 + CYCLES_2026, ids=lambda row: row[0])
def test_session_slots_when_session_before_month_end_pre_rebalance_checks_opens(cal, settings, row):
    cycle, pre_p, *_ = row
    p = pre_p[:10]
    slots = {s.key: s for s in compute_session_slots(cal, settings, date.fromisoformat(p))}
    assert sorted(slots) == sorted([f"daily_checks:{p}", f"pre_rebalance_checks:{p}"])
    pre, daily = slots[f"pre_rebalance_checks:{p}"], slots[f"daily_checks:{p}"]
    assert (pre.cycle, pre.opens, daily.opens) == (cycle, utc(pre_p), utc(pre_p))


@pytest.mark.parametrize("session, opens, closes", DAILY_CHECKS, ids=[r[0] for r in DAILY_CHECKS])
def test_session_slots_when_ordinary_session_daily_checks_at_literal_instants(
    cal, settings, session, opens, closes
):
    day = date.fromisoformat(session)
    slots = {s.key: s for s in compute_session_slots(cal, settings, day)}
    daily = slots[f"daily_checks:{session}"]
    assert (daily.job, daily.opens, daily.deadline, daily.closes) == (
        Job.DAILY_CHECKS,
        utc(opens),
        utc(closes),
        utc(closes),
    )
    assert (daily.session, daily.cycle, daily.after) == (day, None, ())


@pytest.mark.parametrize("holiday", HOLIDAYS)
def test_slots_when_holiday_no_slot_for_that_day(cal, settings, holiday):
    day = date.fromisoformat(holiday)
    slots = compute_slots(cal, settings, day - timedelta(days=4), day + timedelta(days=4))
    assert [s.key for s in slots if s.session == day or s.key.endswith(holiday)] == []


def test_slots_when_openings_tie_ordered_daily_pre_qa_decision(cal, settings):
    slots = compute_slots(cal, settings, date(2025, 11, 28), date(2025, 12, 1))
    assert [(s.key, s.opens) for s in slots] == [
        ("daily_checks:2025-11-28", utc("2025-11-28 18:30")),
        ("pre_rebalance_checks:2025-11-28", utc("2025-11-28 18:30")),
        ("data_qa:2025-11", utc("2025-11-28 18:30")),
        ("decision:2025-11", utc("2025-11-28 18:30")),
        ("execution:2025-11", utc("2025-12-01 13:00")),
        ("reconciliation:2025-11", utc("2025-12-01 15:00")),
        ("slippage_report:2025-11", utc("2025-12-01 15:00")),
        ("replay:2025-11", utc("2025-12-01 15:00")),
        ("daily_checks:2025-12-01", utc("2025-12-01 21:30")),
    ]


# The week's last session, its audit/backup opening (close + 30 min) and the next open (their
# deadline), UTC, by hand: Good Friday, Juneteenth on a Thursday, the 4th of July on a Friday
# after an early close, Thanksgiving's half day, Christmas on a Thursday, a plain week.
WEEKLY = [
    ("2025-04-17", "2025-04-17 20:30", "2025-04-21 13:30"),  # Good Friday 04-18 closed
    ("2025-06-20", "2025-06-20 20:30", "2025-06-23 13:30"),  # Juneteenth Thursday closed
    ("2025-07-03", "2025-07-03 17:30", "2025-07-07 13:30"),  # early close; the 4th a Friday
    ("2025-11-28", "2025-11-28 18:30", "2025-12-01 14:30"),  # the half day after Thanksgiving
    ("2025-12-26", "2025-12-26 21:30", "2025-12-29 14:30"),  # Christmas Thursday closed
    ("2025-03-07", "2025-03-07 21:30", "2025-03-10 13:30"),  # EST Friday, EDT Monday
]


@pytest.mark.parametrize("session, opens, deadline", WEEKLY, ids=[r[0] for r in WEEKLY])
def test_weekly_slots_when_week_ends_audit_then_backup_at_literal_instants(
    cal, full_settings, session, opens, deadline
):
    day = date.fromisoformat(session)
    slots = compute_slots(cal, full_settings, day - timedelta(days=6), day + timedelta(days=3))
    weekly = [s for s in slots if s.job in (Job.AUDIT, Job.BACKUP) and s.session <= day]
    assert [(s.key, s.opens, s.deadline, s.closes, s.after) for s in weekly[-2:]] == [
        (f"audit:{session}", utc(opens), utc(deadline), None, ()),
        (f"backup:{session}", utc(opens), utc(deadline), None, ()),
    ]
    week = day.isocalendar()[:2]
    assert [s for s in weekly if s.session.isocalendar()[:2] == week] == weekly[-2:]


def test_weekly_slots_when_2025_one_audit_and_one_backup_per_week(cal, full_settings):
    slots = compute_slots(cal, full_settings, date(2025, 1, 1), date(2025, 12, 31))
    audits = [s.session for s in slots if s.job is Job.AUDIT]
    backups = [s.session for s in slots if s.job is Job.BACKUP]
    assert audits == backups
    # 2025-01-02 Thursday .. 2025-12-31 Wednesday: ISO weeks 1 to 52, and week 1 of 2026
    # (Monday 2025-12-29) closes on Friday 2026-01-02, outside the range.
    assert len(audits) == 52
    assert len({d.isocalendar()[:2] for d in audits}) == 52


@pytest.mark.parametrize("off", ["weekly_audit", "weekly_backup"])
def test_weekly_slots_when_turned_off_in_config_not_scheduled(cal, off):
    raw = yaml.safe_load(TEMPLATE.read_text())
    raw["schedule"][off] = False
    settings = ScheduleSettings.from_config(check_config(raw))
    slots = compute_slots(cal, settings, date(2025, 11, 24), date(2025, 11, 28))
    assert [s.key for s in slots if s.job in (Job.AUDIT, Job.BACKUP)] == [
        f"{job}:2025-11-28" for job in ("audit", "backup") if f"weekly_{job}" != off
    ]


def test_weekly_slots_when_the_dependency_scan_is_on_it_follows_the_backup_at_its_instants(cal):
    raw = yaml.safe_load(TEMPLATE.read_text())
    assert raw["schedule"]["weekly_dependency_scan"] is False  # off unless a config says so
    off = compute_slots(cal, ScheduleSettings.from_config(check_config(raw)),
                        date(2025, 1, 1), date(2025, 12, 31))  # fmt: skip
    assert [s for s in off if s.job is Job.DEPENDENCY_SCAN] == []
    raw["schedule"]["weekly_dependency_scan"] = True
    settings = ScheduleSettings.from_config(check_config(raw))
    slots = compute_slots(cal, settings, date(2025, 11, 24), date(2025, 11, 28))
    weekly = (Job.AUDIT, Job.BACKUP, Job.DEPENDENCY_SCAN)
    # the half day after Thanksgiving: 13:00 ET close + 30 min, due by Monday's open
    assert [(s.key, s.opens, s.deadline, s.closes) for s in slots if s.job in weekly] == [
        (f"{job}:2025-11-28", utc("2025-11-28 18:30"), utc("2025-12-01 14:30"), None)
        for job in ("audit", "backup", "dependency_scan")
    ]
    year = compute_slots(cal, settings, date(2025, 1, 1), date(2025, 12, 31))
    assert len([s for s in year if s.job is Job.DEPENDENCY_SCAN]) == 52  # as the audits


# -- a year of instants, a perfect operator ---------------------------------------------------


def _et_to_utc(day: date, hour: int, minute: int) -> datetime:
    offset = 4 if EDT_2025[0] <= day < EDT_2025[1] else 5
    return datetime(day.year, day.month, day.day, hour + offset, minute, tzinfo=UTC)


def _expected_openings() -> list[tuple[str, datetime]]:
    """Every slot opening in the walk, from the literal tables: (key, opens) in order."""
    m = MINUTE
    openings: list[tuple[str, datetime]] = []
    holidays, early = set(HOLIDAYS), set(EARLY_CLOSES)

    def trading(d: date) -> bool:
        return d.weekday() < 5 and d.isoformat() not in holidays

    day = WALK_START.date()
    while day <= WALK_END.date():
        if trading(day):
            hour = 13 if day.isoformat() in early else 16
            openings.append((f"daily_checks:{day}", _et_to_utc(day, hour, 30)))
            following = next(
                day + timedelta(days=k) for k in range(1, 8) if trading(day + timedelta(days=k))
            )
            if following.isocalendar()[:2] != day.isocalendar()[:2]:  # the week's last session
                openings += [
                    (f"{job}:{day}", _et_to_utc(day, hour, 30)) for job in ("audit", "backup")
                ]
        day += timedelta(days=1)
    for cycle, pre_p, after_r, window, n_open in CYCLES_2025:
        p, r = pre_p[:10], after_r[:10]
        openings += [
            (f"pre_rebalance_checks:{p}", utc(pre_p)),
            (f"pre_rebalance_checks:{r}", utc(after_r)),
            (f"data_qa:{cycle}", utc(after_r)),
            (f"decision:{cycle}", utc(after_r)),
            (f"execution:{cycle}", utc(window)),
            (f"reconciliation:{cycle}", utc(n_open) + 30 * m),
            (f"slippage_report:{cycle}", utc(n_open) + 30 * m),
            (f"replay:{cycle}", utc(n_open) + 30 * m),
        ]
    inside = [(k, t) for k, t in openings if WALK_START <= t <= WALK_END]
    return sorted(inside, key=lambda kt: (kt[1], JOB_RANK[kt[0].split(":")[0]]))


def _walk_steps() -> list[datetime]:
    """Every 30 minutes, and every 5 minutes from an hour before to two hours after each of a
    cycle's openings."""
    steps = set()
    t = WALK_START
    while t <= WALK_END:
        steps.add(t)
        t += timedelta(minutes=30)
    for _, *instants in CYCLES_2025:
        for instant in map(utc, instants):
            steps.update(instant + timedelta(minutes=5 * k) for k in range(-12, 25))
    return sorted(s for s in steps if WALK_START <= s <= WALK_END)


@dataclass
class Walk:
    steps: list[datetime]
    became_due: list[tuple[str, datetime]]
    missed: list[tuple[str, datetime]]
    expired: list[tuple[str, datetime]]


@pytest.fixture(scope="module")
def walk(cal, full_settings) -> Walk:
    """A perfect operator in RUN: at each step, runs (marks done) the first due slot, as the
    tick does, and asks again at the same instant until nothing more is due. Ten days of
    lookback (not 45) keep the walk fast and still reach from any N back past its R (at most
    four days)."""
    memo = _MemoCalendar(cal)
    steps = _walk_steps()
    done: dict[str, datetime] = {}
    record = Walk(steps, [], [], [])
    for now in steps:
        while True:
            agenda = compute_agenda(
                memo, full_settings, now, done=done, state=State.RUN, started=WALK_START,
                lookback_days=10, recorded_missed=[k for k, _ in record.missed],
                recorded_expired=[k for k, _ in record.expired],
            )  # fmt: skip
            record.missed += [(s.key, now) for s in agenda.missed]
            record.expired += [(s.key, now) for s in agenda.expired]
            if not agenda.due:
                break
            slot = agenda.due[0]  # as the tick does: run the first, then ask again
            record.became_due.append((slot.key, now))
            done[slot.key] = now
    return record


@pytest.mark.slow
def test_walk_when_perfect_operator_every_slot_due_exactly_once(walk):
    counts = Counter(key for key, _ in walk.became_due)
    assert [key for key, n in counts.items() if n != 1] == []
    assert set(counts) == {key for key, _ in _expected_openings()}


@pytest.mark.slow  # 1.5 s or more: left out of make test-fast
def test_walk_when_perfect_operator_each_slot_due_at_first_step_from_its_opening(walk):
    def first_step(instant: datetime) -> datetime:
        return walk.steps[bisect.bisect_left(walk.steps, instant)]

    expected = {key: first_step(opens) for key, opens in _expected_openings()}
    assert dict(walk.became_due) == expected


@pytest.mark.slow  # the year walked at every 15 minutes (module fixture)
def test_walk_when_perfect_operator_slots_due_in_literal_order(walk):
    assert [key for key, _ in walk.became_due] == [key for key, _ in _expected_openings()]


@pytest.mark.slow  # the year walked at every 15 minutes (module fixture)
def test_walk_when_perfect_operator_nothing_missed_or_expired(walk):
    assert (walk.missed, walk.expired) == ([], [])


@pytest.mark.slow  # the year walked at every 15 minutes (module fixture)
def test_walk_when_year_2025_one_daily_check_per_session_and_twelve_cycles(walk):
    due = [key for key, _ in walk.became_due]
    assert sum(k.startswith("daily_checks:2025-") for k in due) == 250  # NYSE sessions in 2025
    executions = [(k, t) for k, t in walk.became_due if k.startswith("execution:2025-")]
    assert executions == [
        ("execution:2025-01", utc("2025-02-03 13:00")),
        ("execution:2025-02", utc("2025-03-03 13:00")),
        ("execution:2025-03", utc("2025-04-01 12:00")),
        ("execution:2025-04", utc("2025-05-01 12:00")),
        ("execution:2025-05", utc("2025-06-02 12:00")),
        ("execution:2025-06", utc("2025-07-01 12:00")),
        ("execution:2025-07", utc("2025-08-01 12:00")),
        ("execution:2025-08", utc("2025-09-02 12:00")),
        ("execution:2025-09", utc("2025-10-01 12:00")),
        ("execution:2025-10", utc("2025-11-03 13:00")),
        ("execution:2025-11", utc("2025-12-01 13:00")),
        ("execution:2025-12", utc("2026-01-02 13:00")),
    ]


@pytest.mark.slow  # the year walked at every 15 minutes (module fixture)
def test_walk_when_dst_switch_week_daily_checks_shift_by_an_hour(walk):
    due = dict(walk.became_due)
    assert [due[f"daily_checks:2025-03-{d:02d}"] for d in (6, 7, 10, 11)] == [
        utc("2025-03-06 21:30"),
        utc("2025-03-07 21:30"),
        utc("2025-03-10 20:30"),
        utc("2025-03-11 20:30"),
    ]
    assert [due[k] for k in ("daily_checks:2025-10-31", "daily_checks:2025-11-03")] == [
        utc("2025-10-31 20:30"),
        utc("2025-11-03 21:30"),
    ]


# -- faults -----------------------------------------------------------------------------------


# (a) Cycle 2025-03: R = 2025-03-31 (Mon, EDT), R's close 20:00Z, data_qa and decision open at
# 20:30Z, data_qa's deadline 21:00Z, the decision's 21:30Z.
@pytest.mark.parametrize(
    "now, done, expected",
    [
        ("2025-03-31 20:30", ["pre_rebalance_checks:2025-03-31"],
         expected_agenda(due=["daily_checks:2025-03-31", "data_qa:2025-03"],
                         waiting=["decision:2025-03"])),
        ("2025-03-31 20:45", ["daily_checks:2025-03-31", "pre_rebalance_checks:2025-03-31",
                              "data_qa:2025-03"],
         expected_agenda(waiting=["decision:2025-03"])),
        ("2025-03-31 21:30", ["daily_checks:2025-03-31", "pre_rebalance_checks:2025-03-31",
                              "data_qa:2025-03"],
         expected_agenda(missed=["decision:2025-03"], waiting=["decision:2025-03"])),
    ],
    ids=["qa-due", "qa-done-decision-waits", "decision-missed-while-waiting"],
)  # fmt: skip
def test_agenda_when_degraded_data_on_rebalance_session_decision_waits(
    cal, settings, now, done, expected
):
    agenda = compute_agenda(
        cal, settings, utc(now), done={k: utc("2025-03-31 20:30") for k in done},
        state=State.DEGRADED_DATA, started=utc("2025-03-31 20:00"),
    )  # fmt: skip
    assert agenda_keys(agenda) == expected


def test_agenda_when_degraded_data_then_run_decision_due(cal, settings):
    done = ["daily_checks:2025-03-31", "pre_rebalance_checks:2025-03-31", "data_qa:2025-03"]
    agenda = compute_agenda(
        cal, settings, utc("2025-03-31 20:45"), done={k: utc("2025-03-31 20:30") for k in done},
        state=State.RUN, started=utc("2025-03-31 20:00"),
    )  # fmt: skip
    assert agenda_keys(agenda) == expected_agenda(due=["decision:2025-03"])


# (b) Cycle 2025-10: R = 2025-10-31 (Fri, EDT, close 20:00Z), N = 2025-11-03 (Mon, EST): window
# 13:00Z..14:20Z, open 14:30Z, reconciliation 15:00Z. Nothing is done after R's close.
R_CLOSE_2025_10 = utc("2025-10-31 20:00")


@pytest.mark.parametrize(
    "now, expected",
    [
        ("2025-10-31 20:30",
         expected_agenda(due=["daily_checks:2025-10-31", "pre_rebalance_checks:2025-10-31"],
                         waiting=["data_qa:2025-10", "decision:2025-10"])),
        ("2025-10-31 21:00",
         expected_agenda(due=["daily_checks:2025-10-31", "pre_rebalance_checks:2025-10-31"],
                         missed=["pre_rebalance_checks:2025-10-31"],
                         waiting=["data_qa:2025-10", "decision:2025-10"])),
        ("2025-11-03 13:00",
         expected_agenda(due=["daily_checks:2025-10-31", "pre_rebalance_checks:2025-10-31"],
                         missed=["pre_rebalance_checks:2025-10-31"],
                         waiting=["data_qa:2025-10", "decision:2025-10", "execution:2025-10"])),
        ("2025-11-03 14:21",  # 09:21 ET
         expected_agenda(due=["daily_checks:2025-10-31"],
                         missed=["pre_rebalance_checks:2025-10-31"],
                         expired=["decision:2025-10"])),
    ],
    ids=["r-close", "pre-deadline", "window-opens", "window-closed"],
)  # fmt: skip
def test_agenda_when_nothing_done_after_rebalance_close_decision_expires(
    cal, settings, now, expected
):
    agenda = compute_agenda(
        cal, settings, utc(now), done={}, state=State.RUN, started=R_CLOSE_2025_10
    )
    assert agenda_keys(agenda) == expected


@pytest.mark.parametrize(
    "now, recorded_missed, recorded_expired, expected",
    [
        ("2025-11-03 14:21", [], [],
         expected_agenda(missed=["data_qa:2025-10"], expired=["decision:2025-10"])),
        ("2025-11-03 14:25", ["data_qa:2025-10"], [],
         expected_agenda(expired=["decision:2025-10"])),
        ("2025-11-03 14:25", ["data_qa:2025-10"], ["decision:2025-10"], expected_agenda()),
        ("2025-11-03 15:00", ["data_qa:2025-10"], ["decision:2025-10"], expected_agenda()),
        ("2025-11-03 18:00", ["data_qa:2025-10"], ["decision:2025-10"], expected_agenda()),
    ],
    ids=["first-report", "qa-recorded", "both-recorded", "reconciliation-time", "afternoon"],
)  # fmt: skip
def test_agenda_when_only_pre_checks_done_data_qa_missed_once_and_cycle_dropped(
    cal, settings, now, recorded_missed, recorded_expired, expected
):
    done = {
        "pre_rebalance_checks:2025-10-31": utc("2025-10-31 20:30"),
        "daily_checks:2025-10-31": utc("2025-10-31 20:30"),
    }
    agenda = compute_agenda(
        cal, settings, utc(now), done=done, state=State.RUN, started=R_CLOSE_2025_10,
        recorded_missed=recorded_missed, recorded_expired=recorded_expired,
    )  # fmt: skip
    assert agenda_keys(agenda) == expected


# (c) Cycle 2025-01: R = 2025-01-31 (Fri, EST, close 21:00Z); data_qa opens 21:30Z, deadline
# 22:00Z; the decision's deadline 22:30Z, its window closes 2025-02-03 14:20Z.
@pytest.mark.parametrize(
    "qa_done, now, expected",
    [
        ("2025-01-31 23:10", "2025-01-31 23:10", expected_agenda(due=["decision:2025-01"])),
        ("2025-01-31 23:10", "2025-01-31 23:39", expected_agenda(due=["decision:2025-01"])),
        ("2025-01-31 23:10", "2025-01-31 23:40",
         expected_agenda(due=["decision:2025-01"], missed=["decision:2025-01"])),
        # on time: its own 30 minutes never shorten the decision's deadline
        ("2025-01-31 21:45", "2025-01-31 22:29", expected_agenda(due=["decision:2025-01"])),
        ("2025-01-31 21:45", "2025-01-31 22:30",
         expected_agenda(due=["decision:2025-01"], missed=["decision:2025-01"])),
        # late into the night: the allowance stops at the window's end, and past it: expired
        ("2025-02-03 14:00", "2025-02-03 14:19",
         expected_agenda(due=["decision:2025-01"], waiting=["execution:2025-01"])),
        ("2025-02-03 14:00", "2025-02-03 14:20", expected_agenda(expired=["decision:2025-01"])),
    ],
    ids=["qa-late", "late-allowance", "late-missed", "on-time", "on-time-missed",
         "near-window-end", "window-end"],
)  # fmt: skip
def test_agenda_when_data_qa_done_late_decision_gets_thirty_minutes_from_then(
    cal, settings, qa_done, now, expected
):
    done = {
        "pre_rebalance_checks:2025-01-31": utc("2025-01-31 21:30"),
        "daily_checks:2025-01-31": utc("2025-01-31 21:30"),
        "data_qa:2025-01": utc(qa_done),
    }
    agenda = compute_agenda(
        cal, settings, utc(now), done=done, state=State.RUN, started=utc("2025-01-31 21:00"),
        recorded_missed=["data_qa:2025-01"],
    )  # fmt: skip
    assert agenda_keys(agenda) == expected


def test_agenda_when_data_qa_done_late_it_was_missed_at_its_deadline(cal, settings):
    done = {
        "pre_rebalance_checks:2025-01-31": utc("2025-01-31 21:30"),
        "daily_checks:2025-01-31": utc("2025-01-31 21:30"),
    }
    agenda = compute_agenda(
        cal, settings, utc("2025-01-31 22:00"), done=done, state=State.RUN,
        started=utc("2025-01-31 21:00"),
    )  # fmt: skip
    assert agenda_keys(agenda) == expected_agenda(
        due=["data_qa:2025-01"], missed=["data_qa:2025-01"], waiting=["decision:2025-01"]
    )


# (d) Cycle 2025-06: R = 2025-06-30 (Mon, EDT): opens 20:30Z, data_qa deadline 21:00Z, decision
# deadline 21:30Z; N = 2025-07-01: window 12:00Z..13:20Z, open 13:30Z, reconciliation 14:00Z.
# A schedule that starts once the window has closed finds the cycle history.
@pytest.mark.parametrize(
    "now, expected",
    [
        ("2025-07-01 13:20", expected_agenda(due=["daily_checks:2025-06-30"])),
        ("2025-07-01 14:00", expected_agenda(missed=["daily_checks:2025-06-30"])),
        ("2025-07-01 18:00", expected_agenda(missed=["daily_checks:2025-06-30"])),
    ],
    ids=["window-closed", "reconciliation-time", "afternoon"],
)  # fmt: skip
def test_agenda_when_started_after_the_window_closed_cycle_is_history(cal, settings, now, expected):
    agenda = compute_agenda(
        cal, settings, utc(now), done={}, state=State.RUN, started=utc("2025-07-01 13:20")
    )
    assert agenda_keys(agenda) == expected


# A schedule that starts at the decision's deadline, with the window still open, runs the cycle
# late: nothing before the start counts as missed, but a decision left undone past the window
# is expired like any other.
@pytest.mark.parametrize(
    "now, expected",
    [
        ("2025-06-30 21:30", expected_agenda(
            due=["daily_checks:2025-06-30", "pre_rebalance_checks:2025-06-30"],
            waiting=["data_qa:2025-06", "decision:2025-06"])),
        ("2025-07-01 13:21", expected_agenda(
            due=["daily_checks:2025-06-30"], expired=["decision:2025-06"])),
    ],
    ids=["start", "window-closed"],
)  # fmt: skip
def test_agenda_when_started_at_the_decision_deadline_cycle_runs_late(cal, settings, now, expected):
    agenda = compute_agenda(
        cal, settings, utc(now), done={}, state=State.RUN, started=utc("2025-06-30 21:30")
    )
    assert agenda_keys(agenda) == expected


def decided_2025_05() -> dict[str, datetime]:
    """What the ledger holds done once cycle 2025-05 is decided (R = 2025-05-30)."""
    keys = ("daily_checks:2025-05-30", "pre_rebalance_checks:2025-05-30", "data_qa:2025-05",
            "decision:2025-05")  # fmt: skip
    return dict.fromkeys(keys, utc("2025-05-30 20:30"))


# Execution held by the state: cycle 2025-05, N = 2025-06-02 (Mon, EDT), window 12:00Z..13:20Z.
@pytest.mark.parametrize(
    "now, state, expected",
    [
        ("2025-06-02 11:55", State.RUN, expected_agenda()),
        ("2025-06-02 12:00", State.RUN, expected_agenda(due=["execution:2025-05"])),
        ("2025-06-02 12:00", State.SAFE_MODE, expected_agenda(waiting=["execution:2025-05"])),
        ("2025-06-02 13:19", State.HALT, expected_agenda(waiting=["execution:2025-05"])),
        ("2025-06-02 13:20", State.SAFE_MODE, expected_agenda(missed=["execution:2025-05"])),
    ],
    ids=["before-window", "run", "safe-mode", "halt", "window-closed"],
)  # fmt: skip
def test_agenda_when_decision_done_execution_due_only_in_run_inside_window(
    cal, settings, now, state, expected
):
    done = decided_2025_05()
    agenda = compute_agenda(
        cal, settings, utc(now), done=done, state=state, started=utc("2025-05-30 20:00")
    )
    assert agenda_keys(agenda) == expected


# Reconciliation follows an execution that is done, or whose window closed undone (it ended
# short, or never ran in RUN): only reconciliation records what was sent and the shortfall.
# Cycle 2025-05: window 12:00Z..13:20Z on N = 2025-06-02, open 13:30Z, reconciliation 14:00Z.
@pytest.mark.parametrize(
    "now, execution_done, expected",
    [
        ("2025-06-02 14:05", True,
         expected_agenda(due=["reconciliation:2025-05"],
                         waiting=["slippage_report:2025-05", "replay:2025-05"])),
        ("2025-06-02 14:05", False,
         expected_agenda(due=["reconciliation:2025-05"], missed=["execution:2025-05"],
                         waiting=["slippage_report:2025-05", "replay:2025-05"])),
        ("2025-06-02 13:10", False, expected_agenda(waiting=["execution:2025-05"])),
        ("2025-06-02 13:45", False, expected_agenda(missed=["execution:2025-05"])),
    ],
    ids=["done", "window-closed-undone", "window-open", "closed-before-the-reconciliation"],
)  # fmt: skip
def test_agenda_when_the_execution_window_closed_reconciliation_is_due(
    cal, settings, now, execution_done, expected
):
    done = decided_2025_05()
    if execution_done:
        done["execution:2025-05"] = utc("2025-06-02 12:05")
    agenda = compute_agenda(cal, settings, utc(now), done=done, state=State.SAFE_MODE,
                            started=utc("2025-05-30 20:00"))  # fmt: skip
    found = {k: [x for x in v if not x.startswith("daily")] for k, v in agenda_keys(agenda).items()}
    assert found == expected


# The replay follows the reconciliation in any state (it only reads and records). Cycle 2025-05:
# it opens at 14:00Z on N = 2025-06-02 and is due by the next open, 13:30Z on 2025-06-03; a
# reconciliation done late gives it that span (23 h 30 min) from then: 12:00Z + 23:30 is
# 11:30Z on 2025-06-04.
@pytest.mark.parametrize(
    "now, reconciled, expected",
    [
        ("2025-06-02 14:05", "2025-06-02 14:05", expected_agenda(due=["replay:2025-05"])),
        ("2025-06-03 13:45", "2025-06-03 12:00", expected_agenda(due=["replay:2025-05"])),
        ("2025-06-04 11:30", "2025-06-03 12:00",
         expected_agenda(due=["replay:2025-05"], missed=["replay:2025-05"])),
    ],
    ids=["on-time", "late-reconciliation-own-allowance", "own-allowance-passed"],
)  # fmt: skip
def test_agenda_when_reconciled_replay_due_in_halt_with_its_own_allowance(
    cal, settings, now, reconciled, expected
):
    done = decided_2025_05() | {"execution:2025-05": utc("2025-06-02 12:05")}
    done |= dict.fromkeys(("reconciliation:2025-05", "slippage_report:2025-05"), utc(reconciled))
    agenda = compute_agenda(cal, settings, utc(now), done=done, state=State.HALT,
                            started=utc("2025-05-30 20:00"))  # fmt: skip
    found = {k: [x for x in v if not x.startswith("daily")] for k, v in agenda_keys(agenda).items()}
    assert found == expected


# -- the next opening -------------------------------------------------------------------------

NEXT_OPENINGS = [
    # after               next opening
    ("2025-11-28 19:00", "2025-12-01 13:00"),  # after the early close's slots: execution
    ("2025-11-28 18:00", "2025-11-28 18:30"),  # at the 13:00 early close
    ("2025-11-28 18:30", "2025-12-01 13:00"),  # strictly after
    ("2025-11-30 12:00", "2025-12-01 13:00"),  # a Sunday
    ("2025-10-31 21:00", "2025-11-03 13:00"),  # EDT Friday to an EST Monday window
    ("2025-07-03 17:00", "2025-07-03 17:30"),  # 13:00 early close
    ("2025-07-03 18:00", "2025-07-07 20:30"),  # Independence Day and a weekend
    ("2025-12-24 19:00", "2025-12-26 21:30"),  # Christmas
    ("2025-12-31 22:00", "2026-01-02 13:00"),  # New Year's Day
    ("2025-03-28 20:30", "2025-03-31 20:30"),  # Friday P to a Monday R
]

# On N's own (UTC) date the search starts at N, so it never sees R's execution, reconciliation
# and slippage report openings, which open on N but belong to R's slots.
NEXT_OPENINGS_ON_N = [
    ("2025-12-01 00:30", "2025-12-01 13:00"),  # Sunday evening in New York
    ("2025-12-01 12:00", "2025-12-01 13:00"),
    ("2025-12-01 13:00", "2025-12-01 15:00"),
    ("2025-11-03 14:30", "2025-11-03 15:00"),
]


@pytest.mark.parametrize("after, expected", NEXT_OPENINGS, ids=[a for a, _ in NEXT_OPENINGS])
def test_next_opening_when_after_an_instant_first_literal_opening(cal, settings, after, expected):
    assert compute_next_opening(cal, settings, utc(after)) == utc(expected)


@pytest.mark.parametrize(
    "after, expected", NEXT_OPENINGS_ON_N, ids=[a for a, _ in NEXT_OPENINGS_ON_N]
)
def test_next_opening_when_on_next_session_before_its_cycle_jobs_finds_them(
    cal, settings, after, expected
):
    assert compute_next_opening(cal, settings, utc(after)) == utc(expected)
