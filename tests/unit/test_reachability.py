"""The broker's reachability folded from hand-built events, against answers worked out by hand."""

from __future__ import annotations

from datetime import UTC, datetime

from ops_runner.core.events import EventKind
from ops_runner.ledger import Event
from ops_runner.ops.reachability import compute_reachability

NY = "America/New_York"


def build(*rows: tuple[str, EventKind, dict]) -> list[Event]:
    return [
        Event(seq=seq, recorded_at=at, kind=str(kind), key=f"{kind}:{seq}", run_id=None,
              cycle_id=None, payload=payload, prev_hash="0" * 64, hash=f"{seq:064d}")
        for seq, (at, kind, payload) in enumerate(rows, start=1)
    ]  # fmt: skip


def check(passed: bool, detail: str) -> tuple[EventKind, dict]:
    return EventKind.CHECK_RECORDED, {"check": "broker", "passed": passed, "detail": detail}


def change(frm: str, to: str, trigger: str, reason: str) -> tuple[EventKind, dict]:
    return EventKind.STATE_CHANGED, {"from": frm, "to": to, "trigger": trigger, "reason": reason,
                                     "evidence": []}  # fmt: skip


# Monday 2025-12-01 in New York: 05:00Z is midnight EST, so 04:30Z still belongs to Sunday.
HISTORY = build(
    ("2025-11-28T14:00:00Z", *check(True, "broker session healthy")),
    ("2025-12-01T04:30:00Z", *check(False, "no session: Gateway restarting")),  # Sunday, NY
    ("2025-12-01T04:30:00Z", *change("RUN", "BROKER_DOWN", "broker_fault", "nightly restart")),
    ("2025-12-01T05:10:00Z", *change("BROKER_DOWN", "RUN", "broker_restored", "healthy")),
    ("2025-12-01T13:31:00Z", *check(False, "no session: logged out")),  # Monday 08:31 NY
    ("2025-12-01T13:31:00Z", *change("RUN", "BROKER_DOWN", "broker_fault", "logged out")),
    ("2025-12-01T13:40:00Z", *check(False, "no session: still logged out")),  # the same outage
    ("2025-12-01T13:50:00Z", *change("BROKER_DOWN", "RUN", "broker_restored", "healthy")),
    ("2025-12-01T14:10:00Z", *change("RUN", "BROKER_DOWN", "broker_fault", "socket dropped")),
    ("2025-12-01T20:00:00Z", *change("BROKER_DOWN", "RUN", "broker_restored", "healthy")),
)


def test_reachability_when_the_session_was_lost_twice_today_counts_each_outage_once():
    seen = compute_reachability(HISTORY, datetime(2025, 12, 1, 16, 0, tzinfo=UTC), NY)
    assert seen.losses_today == 2  # 08:31 (its later failed check is the same outage) and 09:10
    assert (seen.last_seen, seen.last_lost) == ("2025-12-01T13:50:00Z", "2025-12-01T14:10:00Z")
    assert seen.lost_detail == "socket dropped" and seen.down_now is True
    assert seen.as_of == "2025-12-01T11:00-05:00"


def test_reachability_when_asked_for_an_earlier_instant_sees_only_what_was_recorded_by_then():
    seen = compute_reachability(HISTORY, datetime(2025, 12, 1, 13, 45, tzinfo=UTC), NY)
    assert seen.losses_today == 1 and seen.down_now is True
    assert (seen.last_seen, seen.last_lost) == ("2025-12-01T05:10:00Z", "2025-12-01T13:31:00Z")
    assert seen.lost_detail == "no session: logged out"  # the outage's first word, not a repeat


def test_reachability_when_the_day_is_new_york_s_counts_the_sunday_night_restart_on_sunday():
    sunday = compute_reachability(HISTORY[:4], datetime(2025, 12, 1, 4, 45, tzinfo=UTC), NY)
    monday = compute_reachability(HISTORY[:4], datetime(2025, 12, 1, 12, 0, tzinfo=UTC), NY)
    assert (sunday.losses_today, monday.losses_today) == (1, 0)
    assert monday.down_now is False and monday.last_seen == "2025-12-01T05:10:00Z"


def test_reachability_when_nothing_was_recorded_says_never():
    seen = compute_reachability([], datetime(2025, 12, 1, 16, 0, tzinfo=UTC), NY)
    assert (seen.last_seen, seen.last_lost, seen.losses_today, seen.down_now) == (
        None, None, 0, False)  # fmt: skip
    assert "never" in seen.lines()[0] and seen.lines()[1].endswith("never")
