"""The keeper's daily Gateway restart instant: New York's wall time, across daylight saving."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from ops_runner.brokers.ib_gateway import compute_next_restart

# (now in UTC, restart wall time in New York, the next restart in UTC), read off by hand:
# New York is UTC-5 in winter (EST) and UTC-4 in summer (EDT); 2025's changes are on Sunday
# 9 March (02:00 EST -> 03:00 EDT) and Sunday 2 November (02:00 EDT -> 01:00 EST).
KNOWN = [
    ("2025-03-08T12:00", "23:45", "2025-03-09T04:45"),  # Saturday evening, still EST
    ("2025-03-09T12:00", "23:45", "2025-03-10T03:45"),  # Sunday evening, now EDT
    ("2025-03-10T03:45", "23:45", "2025-03-11T03:45"),  # exactly at it: the next day's
    ("2025-03-10T03:44", "23:45", "2025-03-10T03:45"),  # a minute before: today's
    ("2025-11-01T12:00", "23:45", "2025-11-02T03:45"),  # Saturday evening, still EDT
    ("2025-11-02T12:00", "23:45", "2025-11-03T04:45"),  # Sunday evening, now EST
    ("2025-06-30T22:00", "05:00", "2025-07-01T09:00"),  # early morning, the next day
    ("2025-12-31T23:00", "17:30", "2026-01-01T22:30"),  # across the year's end (EST)
]


@pytest.mark.parametrize(("now", "wall", "expected"), KNOWN)
def test_next_restart_when_given_new_york_wall_time_is_that_wall_time_in_utc_after_now(
    now, wall, expected
):
    at = datetime.fromisoformat(now).replace(tzinfo=UTC)
    found = compute_next_restart(at, wall)
    assert found == datetime.fromisoformat(expected).replace(tzinfo=UTC)
    assert found.tzinfo is UTC and found > at
