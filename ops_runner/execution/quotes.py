"""Quotes: the bid and ask the broker gave at submission and just after the open, recorded once.

Each moment of a cycle is one ``QuotesRecorded`` event holding every symbol the cycle trades:
the quotes the broker gave and, for the others, why none came. A broker that gives no quote
is recorded as such; nothing here ever makes one up. The slippage report reads them back.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from enum import StrEnum
from typing import Any

from ops_runner.brokers.base import Broker, BrokerError, BrokerUnavailable, Quotes
from ops_runner.core.clock import format_instant
from ops_runner.core.events import EventKind
from ops_runner.ledger import Event, Ledger

log = logging.getLogger(__name__)


class QuoteMoment(StrEnum):
    """When a cycle's quotes were asked for."""

    SUBMISSION = "submission"  # as the orders are submitted, before they are placed
    OPEN = "open"  # just after the order session's open, as the fills are reconciled


def compute_quotes_key(cycle_id: str, moment: QuoteMoment) -> str:
    """Return the idempotency key of a cycle's quotes at ``moment``."""
    return f"{EventKind.QUOTES_RECORDED}:{cycle_id}:{moment}"


def compute_quotes_payload(
    cycle_id: str, moment: QuoteMoment, session: str, broker: str, answer: Quotes
) -> dict[str, Any]:
    """Return the ``QuotesRecorded`` payload of ``answer`` (decimal strings, UTC instants)."""
    quotes = {
        s: {"bid": str(q.bid), "ask": str(q.ask), "at": format_instant(q.at), "source": q.source}
        for s, q in sorted(answer.quoted.items())
    }
    return {"cycle_id": cycle_id, "moment": str(moment), "session": session, "broker": broker,
            "quotes": quotes, "unquoted": dict(sorted(answer.unquoted.items()))}  # fmt: skip


def write_quotes(
    ledger: Ledger,
    broker: Broker,
    cycle_id: str,
    session: str,
    moment: QuoteMoment,
    symbols: Iterable[str],
    *,
    run_id: str | None = None,
) -> Event | None:
    """Ask ``broker`` for quotes of ``symbols`` and record them once as ``QuotesRecorded``;
    return the event (on a re-run, the one recorded before: the broker is not asked again).

    A broker's refusal is recorded with every symbol unquoted and the reason. Returns None,
    recording nothing, when there is nothing to quote or the broker is unavailable (a later
    run asks again): quotes are evidence, and never stop the job that asks for them.
    """
    key = compute_quotes_key(cycle_id, moment)
    if (earlier := ledger.get(key)) is not None:
        return earlier
    wanted = sorted(set(symbols))
    if not wanted:
        return None
    try:
        answer = broker.quotes(wanted)
    except BrokerUnavailable as exc:
        log.warning("quotes %s %s: broker unavailable, nothing recorded: %s", cycle_id, moment,
                    exc)  # fmt: skip
        return None
    except BrokerError as exc:
        answer = Quotes({}, {s: f"the broker refused the quote: {exc}" for s in wanted})
    missing = {s: "the broker did not answer for it" for s in wanted
               if s not in answer.quoted and s not in answer.unquoted}  # fmt: skip
    answer = Quotes(dict(answer.quoted), {**answer.unquoted, **missing})
    payload = compute_quotes_payload(cycle_id, moment, session, broker.name, answer)
    return ledger.append(str(EventKind.QUOTES_RECORDED), key, payload, run_id=run_id,
                         cycle_id=cycle_id)  # fmt: skip


def read_cycle_quotes(
    events: Iterable[Event], cycle_id: str
) -> dict[QuoteMoment, Mapping[str, Any]]:
    """Return the ``QuotesRecorded`` payloads of ``cycle_id`` by moment."""
    kind = str(EventKind.QUOTES_RECORDED)
    return {QuoteMoment(e.payload["moment"]): e.payload for e in events
            if e.kind == kind and e.payload.get("cycle_id") == cycle_id}  # fmt: skip
