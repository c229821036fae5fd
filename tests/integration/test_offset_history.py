"""A simulated history of a workbook whose signal is taken before the month-end: each cycle is
decided on its signal session and filled at the open of the session after it, as the schedule
places them (the sessions here come from the calendar's list of sessions, counted back)."""

from __future__ import annotations

from datetime import date, timedelta

import pytest

from ops_runner.core.events import EventKind
from ops_runner.ledger import open_ledger
from ops_runner.market.calendar import open_calendar
from ops_runner.simulators.history import simulate_history

RULES = {
    "universe": {"risk": ["SPY", "EFA", "IEF", "VNQ", "GLD"], "defensive": "BIL",
                 "cash_proxy": None},
    "strategy": {"name": "gtaa", "lookback_months": 1, "top_n": 5, "absolute_momentum": False,
                 "benchmark": None, "trend_length": 10},
}  # fmt: skip


def sessions_of(calendar, year: int, month: int) -> list[date]:
    first = date(year, month, 1)
    days = [t.date() for t in calendar.sessions(first, first + timedelta(days=40))]
    return [d for d in days if (d.year, d.month) == (year, month)]


@pytest.mark.parametrize("offset", [-1, -2])
def test_simulate_history_when_signal_offset_decides_on_signal_sessions(tmp_path, offset):
    strategy = {**RULES["strategy"], "signal_offset": offset}
    result = simulate_history(tmp_path / "wb", cycles=3, first_cycle="2025-08",
                              config={**RULES, "strategy": strategy})  # fmt: skip
    calendar = open_calendar(result.config())
    expected = {}
    for year, month in [(2025, 8), (2025, 9), (2025, 10)]:
        days = sessions_of(calendar, year, month)
        expected[f"{year}-{month:02d}"] = (days[offset - 1].isoformat(), days[offset].isoformat())
    assert result.cycles == tuple(expected)
    assert dict(result.sessions) == expected
    with open_ledger(result.config(), create=False, readonly=True) as ledger:
        decisions = {
            e.cycle_id: e.payload for e in ledger.events(kind=str(EventKind.DECISION_RECORDED))
        }
        fills = list(ledger.events(kind=str(EventKind.FILL_RECORDED)))
    for cycle, (decided, filled) in expected.items():
        assert decisions[cycle]["session"] == decided
        assert decisions[cycle]["decision"]["signal"]["month_end_session"] == (
            sessions_of(calendar, *map(int, cycle.split("-")))[-1].isoformat()
        )
        assert {f.payload["session"] for f in fills if f.cycle_id == cycle} == {filled}
