"""Time formatting: the spellings of an instant that the ledger, ids, logs and pages use."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

from ops_runner.core.errors import LedgerError, OpsError


def format_instant(moment: datetime) -> str:
    """Return an aware datetime as UTC ISO-8601 with microseconds and "Z". Raises LedgerError.

    The ledger's spelling (canonical JSON): 2025-11-28T21:00:00.000000Z.
    """
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise LedgerError(f"{moment!r} is a naive datetime; give it a time zone (UTC)")
    return moment.astimezone(UTC).replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


def format_seconds(moment: datetime) -> str:
    """Return ``moment`` as UTC ISO-8601 to the second with "Z": 2025-11-28T21:00:00Z.

    Fractions of a second are dropped, not rounded. A naive datetime is taken as local time
    (``astimezone``), as every caller has always done.
    """
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def format_stamp(moment: datetime) -> str:
    """Return ``moment`` as a compact UTC stamp for ids and file names: 20251128T210000Z."""
    return f"{moment.astimezone(UTC):%Y%m%dT%H%M%SZ}"


def parse_instant(text: str) -> datetime:
    """Return the datetime an ISO-8601 text names, reading a trailing "Z" as UTC.

    Raises ValueError for text that is not ISO-8601.
    """
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def read_clock(now: str) -> Callable[[], datetime]:
    """Return the job's clock: the real UTC clock for "", else a fixed instant (replays, demos).

    Raises OpsError for an instant without a time zone.
    """
    if not now:
        return lambda: datetime.now(UTC)
    try:
        instant = parse_instant(now)
    except ValueError:
        raise OpsError(f"now: {now!r} is not an ISO instant such as 2025-12-01T13:30:00Z") from None
    if instant.tzinfo is None:
        raise OpsError(f"now: {now!r} has no time zone; end it with Z for UTC")
    fixed = instant.astimezone(UTC)
    return lambda: fixed
