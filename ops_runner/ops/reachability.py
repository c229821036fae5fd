"""The broker's reachability as the ledger saw it: when a session was last healthy, when it was
last lost and why, and how often it was lost today (IB Gateway restarts daily and logs out
weekly). Read by `ops-runner broker check`, which shows it even when the broker cannot be
reached: that is when an operator asks."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from ops_runner.core.clock import format_instant, parse_instant
from ops_runner.core.events import EventKind, State, Trigger
from ops_runner.ledger import projections
from ops_runner.ledger.projections import EventLike


@dataclass(frozen=True)
class Reachability:
    """What the ledger says of the broker's sessions, as of ``as_of``.

    ``last_seen``: the latest healthy broker check or restored session; ``last_lost`` and
    ``lost_detail``: the latest failed broker check or move to BROKER_DOWN, and why;
    ``losses_today``: moves to BROKER_DOWN and failed broker checks on ``as_of``'s day in the
    schedule's time zone; ``down_now``: the state is BROKER_DOWN.
    """

    as_of: str
    last_seen: str | None
    last_lost: str | None
    lost_detail: str | None
    losses_today: int
    down_now: bool

    def to_payload(self) -> dict[str, Any]:
        return asdict(self)

    def lines(self) -> list[str]:
        """The history as `broker check` prints it, one fact a line."""
        lost = "never" if self.last_lost is None else f"{self.last_lost} ({self.lost_detail})"
        return [
            f"last seen healthy  {self.last_seen or 'never (no broker check in the ledger)'}",
            f"last lost          {lost}",
            f"losses today       {self.losses_today} (as of {self.as_of})",
            f"state              {'BROKER_DOWN' if self.down_now else 'not BROKER_DOWN'}",
        ]


def _is_loss(event: EventLike) -> tuple[bool, str]:
    """Whether ``event`` says a broker session was lost, and why."""
    p = event.payload
    if event.kind == EventKind.CHECK_RECORDED and p.get("check") == "broker":
        return not p.get("passed"), str(p.get("detail") or "")
    if event.kind == EventKind.STATE_CHANGED and p.get("to") == str(State.BROKER_DOWN):
        return p.get("from") != str(State.BROKER_DOWN), str(p.get("reason") or "")
    return False, ""


def _is_seen(event: EventLike) -> bool:
    p = event.payload
    if event.kind == EventKind.CHECK_RECORDED and p.get("check") == "broker":
        return bool(p.get("passed"))
    return event.kind == EventKind.STATE_CHANGED and p.get("trigger") == str(
        Trigger.BROKER_RESTORED
    )


def compute_reachability(events: Iterable[EventLike], now: datetime, zone: str) -> Reachability:
    """Return the broker's reachability from ``events`` recorded up to ``now`` (pure).

    A loss counts once: a failed check and the move to BROKER_DOWN it caused are one, and so
    are the failed checks that follow while no session came back in between."""
    until = format_instant(now)  # as of then: a later event (a simulated clock) is not seen
    events = [e for e in events if str(e.recorded_at) <= until]
    tz = ZoneInfo(zone)
    today = now.astimezone(tz).date()
    last_seen = last_lost = detail = None
    losses, up = 0, True
    for event in events:
        lost, why = _is_loss(event)
        if lost:
            if up and parse_instant(str(event.recorded_at)).astimezone(tz).date() == today:
                losses += 1
            if up or last_lost is None:
                last_lost, detail = str(event.recorded_at), why
            up = False
        elif _is_seen(event):
            last_seen, up = str(event.recorded_at), True
    state = projections.compute_state(events).state
    return Reachability(now.astimezone(tz).isoformat(timespec="minutes"), last_seen, last_lost,
                        detail, losses, state is State.BROKER_DOWN)  # fmt: skip
