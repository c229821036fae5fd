"""The weekly reconciliation audit: every position and the cash at the broker against the ledger
folded since inception, recorded once per session; a break is an incident and SAFE_MODE.

Reconciliation judges one cycle's orders right after its open. The audit judges the whole book
whenever it runs: a manual trade, a transfer, a late fee or a corrected old fill shows up here
even in a month with no rebalance. Its breaks are reconciliation's (``BreakKind.POSITION``,
``POSITION_NOT_REPORTED``, ``CASH``), found by the same ``check_positions`` and ``check_cash``.

Before comparing, the account's events between trades are booked (``ops_runner.execution.books``):
dividends entitled and paid, tax withheld, splits, interest and fees, each with its evidence
(the broker's statement line, or the price store's dividend or split); a dividend unpaid past
its pay date and the grace is a break of its own (``BreakKind.PAYMENT_MISSING``).

Cash rule: the ledger's cash is ``compute_cash`` (CashAdjusted amounts + sell proceeds - buy
costs - commissions + dividends, tax, interest, fees and cash in lieu, each once), compared
with the broker's *total* cash, never its
settled cash: T+1 settlement moves money between settled and unsettled, not in or out. The
tolerance is reconciliation's, a cent per order, counted over every order since inception (each
client reference the ledger knows, plus each fill without one), at least one cent: each order's
money may be rounded once at the broker, and those roundings add up over the years. A ledger
with no cash history yet (no CashAdjusted, no fill) has no cash to compare: execution adopts the
broker's opening balance at the first cycle, so the audit reports the cash as not compared
rather than break a new workbook into SAFE_MODE before its first trade.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any

from ops_runner.brokers import open_broker
from ops_runner.brokers.base import Broker
from ops_runner.core.clock import format_instant, read_clock
from ops_runner.core.errors import OpsError
from ops_runner.core.events import EventKind, State, Trigger
from ops_runner.execution.books import book_account
from ops_runner.execution.breaks import Break, BreakKind
from ops_runner.execution.reconcile import CENT, CHECK, check_cash, check_positions
from ops_runner.ledger import Ledger, LedgerConflict, open_ledger
from ops_runner.ledger.projections import (
    compute_cash,
    compute_fills,
    compute_orders,
    compute_positions,
)
from ops_runner.ledger.states import apply_trigger, incident_event, read_state
from ops_runner.market.calendar import open_calendar
from ops_runner.ops.jobs import alert_console
from ops_runner.workbook.config import Config

log = logging.getLogger(__name__)

KEY_PREFIX = str(EventKind.AUDIT_RECORDED)  # one audit per session: AuditRecorded:<session>
INCIDENT_PREFIX = "audit"  # its incident: audit-<session>
_EVIDENCE_LINES = 20


class AuditError(OpsError):
    """The audit cannot run as asked (a clock without a time zone)."""


class AuditStatus(StrEnum):
    """What one audit came to."""

    CLEAN = "CLEAN"  # every position and the cash agree
    BREAK = "BREAK"  # at least one break: SAFE_MODE and an incident


@dataclass(frozen=True)
class AuditReport:
    """The outcome of one audit. ``recorded`` lists the ledger keys this call wrote: empty when
    the session's audit was recorded before and this is that record, read back."""

    session: str  # the last session closed at ``as_of``: the audit's key
    status: AuditStatus
    as_of: datetime
    state: State
    breaks: tuple[Break, ...] = ()
    ledger_positions: dict[str, int] = field(default_factory=dict)
    broker_positions: dict[str, int] = field(default_factory=dict)
    ledger_cash: Decimal | None = None  # None: the ledger has no cash history yet
    broker_cash: Decimal | None = None
    settled_cash: Decimal | None = None  # shown, never compared (T+1)
    cash_tolerance: Decimal = CENT
    orders: int = 0  # orders since inception, the tolerance's count
    incident_id: str | None = None
    recorded: tuple[str, ...] = ()

    @property
    def key(self) -> str:
        return f"{KEY_PREFIX}:{self.session}"

    def summary(self) -> str:
        """Return one line: session, status and the first break, or what was compared."""
        head = f"audit {self.session}: {self.status}"
        if self.breaks:
            more = f" (+{len(self.breaks) - 1} more)" if len(self.breaks) > 1 else ""
            return f"{head}, {len(self.breaks)} break(s): {self.breaks[0].detail}{more}"
        held = len(set(self.ledger_positions) | set(self.broker_positions))
        if self.ledger_cash is None:
            cash = "cash not compared (the ledger has no cash history yet)"
        else:
            cash = f"cash {self.broker_cash} agrees within {self.cash_tolerance}"
        return f"{head}, {held} position(s) agree, {cash}"

    def to_frame(self) -> Any:
        """Return ledger vs broker shares per symbol with the difference (broker None: no
        position reported), a DataFrame indexed by symbol."""
        import pandas as pd

        ours, theirs = self.ledger_positions, self.broker_positions
        rows = []
        for symbol in sorted(set(ours) | set(theirs)):
            want, have = ours.get(symbol, 0), theirs.get(symbol)
            agrees = have == want or (have is None and want == 0)
            rows.append((symbol, want, have, (have or 0) - want, agrees))
        columns = ["symbol", "ledger", "broker", "difference", "agrees"]
        return pd.DataFrame(rows, columns=columns).set_index("symbol")

    def cash_frame(self) -> Any:
        """Return one row: ledger vs broker total cash, the difference, the tolerance, and the
        broker's settled cash (for the eye only: settlement does not change total cash)."""
        import pandas as pd

        ours, theirs = self.ledger_cash, self.broker_cash
        diff = None if ours is None or theirs is None else theirs - ours
        agrees = None if diff is None else abs(diff) <= self.cash_tolerance
        row = {"ledger": ours, "broker": theirs, "difference": diff,
               "tolerance": self.cash_tolerance, "agrees": agrees,
               "settled_cash": self.settled_cash, "orders": self.orders}  # fmt: skip
        return pd.DataFrame([row], index=pd.Index(["cash"]))

    def breaks_frame(self) -> Any:
        """Return the breaks as a DataFrame, one row each (``what`` is the break's kind)."""
        import pandas as pd

        rows = [_break_payload(b) for b in self.breaks]
        return pd.DataFrame(rows, columns=list(Break.__dataclass_fields__))

    def to_payload(self) -> dict[str, Any]:
        """Return the AuditRecorded payload: JSON-ready values (decimal strings, no floats)."""
        ours, theirs = self.ledger_positions, self.broker_positions
        positions = {s: {"ledger": ours.get(s, 0), "broker": theirs.get(s)}
                     for s in sorted(set(ours) | set(theirs))}  # fmt: skip
        cash = {"ledger": _text(self.ledger_cash), "broker": _text(self.broker_cash),
                "settled": _text(self.settled_cash), "tolerance": _text(self.cash_tolerance),
                "orders": self.orders}  # fmt: skip
        return {"session": self.session, "status": str(self.status),
                "as_of": format_instant(self.as_of), "summary": self.summary(),
                "breaks": [_break_payload(b) for b in self.breaks], "positions": positions,
                "cash": cash, "incident_id": self.incident_id}  # fmt: skip


def _text(value: Decimal | None) -> str | None:
    return None if value is None else str(value)


def _number(value: Any) -> Decimal | None:
    return None if value is None else Decimal(str(value))


def _break_payload(b: Break) -> dict[str, Any]:
    def plain(v: Any) -> Any:
        return str(v) if isinstance(v, Decimal) else v

    return {"what": str(b.what), "symbol": b.symbol, "expected": plain(b.expected),
            "actual": plain(b.actual), "detail": b.detail, "client_ref": b.client_ref}  # fmt: skip


def _read_break(raw: Mapping[str, Any]) -> Break:
    what = BreakKind(raw["what"])
    read = _number if what in (BreakKind.CASH, BreakKind.PAYMENT_MISSING) else (lambda v: v)
    return Break(what, raw.get("symbol"), read(raw.get("expected")), read(raw.get("actual")),
                 str(raw["detail"]), raw.get("client_ref"))  # fmt: skip


def read_audit(payload: Mapping[str, Any], state: State) -> AuditReport:
    """Return the AuditReport an AuditRecorded ``payload`` holds (``recorded`` empty)."""
    positions, cash = payload["positions"], payload["cash"]
    return AuditReport(
        session=str(payload["session"]),
        status=AuditStatus(payload["status"]),
        as_of=datetime.fromisoformat(str(payload["as_of"])),
        state=state,
        breaks=tuple(_read_break(b) for b in payload["breaks"]),
        ledger_positions={s: int(v["ledger"]) for s, v in positions.items() if v["ledger"]},
        broker_positions={
            s: int(v["broker"]) for s, v in positions.items() if v["broker"] is not None
        },  # fmt: skip
        ledger_cash=_number(cash["ledger"]),
        broker_cash=_number(cash["broker"]),
        settled_cash=_number(cash["settled"]),
        cash_tolerance=Decimal(str(cash["tolerance"])),
        orders=int(cash["orders"]),
        incident_id=payload.get("incident_id"),
    )


# -- pure parts ----------------------------------------------------------------------------------


def compute_order_count(events: list[Any]) -> int:
    """Return the orders since inception: each client reference the ledger knows (intended,
    submitted, denied or filled) plus each fill recorded without one (a manual trade)."""
    unreferenced = sum(1 for f in compute_fills(events).values() if not f.get("client_ref"))
    return len(compute_orders(events)) + unreferenced


def compute_cash_tolerance(orders: int) -> Decimal:
    """Return reconciliation's cash tolerance over ``orders`` orders: a cent each, at least one."""
    return CENT * max(1, orders)


def compute_ledger_cash(events: list[Any]) -> Decimal | None:
    """Return the ledger's cash since inception, or None when it has no cash history yet."""
    kinds = {EventKind.CASH_ADJUSTED, EventKind.FILL_RECORDED}
    if not any(e.kind in kinds for e in events):
        return None
    return compute_cash(events)


def check_audit(
    ledger_positions: Mapping[str, int],
    broker_positions: Mapping[str, int],
    ledger_cash: Decimal | None,
    broker_cash: Decimal,
    tolerance: Decimal,
) -> list[Break]:
    """Return the breaks: reconciliation's position checks, then its cash check (skipped when
    the ledger has no cash history)."""
    breaks = check_positions(ledger_positions, broker_positions)
    if ledger_cash is not None:
        breaks += check_cash(ledger_cash, broker_cash, tolerance)
    return breaks


# -- the job -------------------------------------------------------------------------------------


def run_audit(
    cfg: Config,
    ledger: Ledger,
    broker: Broker,
    now: datetime,
    *,
    alert: Callable[[str], None] | None = None,
    run_id: str | None = None,
) -> AuditReport:
    """Audit every position and the cash at the broker against the ledger; return the report.

    The audit's session is the last one closed at ``now``, its key ``AuditRecorded:<session>``.
    Recorded before: that record is returned, the broker not asked, nothing written. Else the
    broker is asked first (positions, account values), then the ledger folded since inception.
    Clean: AuditRecorded. A break: AuditRecorded + IncidentOpened (category reconciliation) +
    SAFE_MODE in one transaction, then ``alert(summary)``. Raises AuditError (naive ``now``),
    BrokerUnavailable (nothing written: retry later), CalendarError and the ledger's errors.
    """

    if now.tzinfo is None or now.utcoffset() is None:
        raise AuditError(f"now {now.isoformat()} is naive; give the clock a time zone")
    session = open_calendar(cfg).last_closed_session(now).isoformat()
    key = f"{KEY_PREFIX}:{session}"
    done = ledger.get(key)
    if done is not None:
        return read_audit(done.payload, read_state(ledger).state)

    # The broker first: an outage leaves nothing written, and the caller retries.
    reported, account = dict(broker.positions()), broker.account_values()
    # Then what happened to the account between trades, booked with its evidence.
    books = book_account(cfg, ledger, broker, now, account=account, run_id=run_id)

    events = list(ledger.events())
    orders = compute_order_count(events)
    report = AuditReport(
        session=session, status=AuditStatus.CLEAN, as_of=now, state=read_state(ledger).state,
        ledger_positions=compute_positions(events), broker_positions=reported,
        ledger_cash=compute_ledger_cash(events), broker_cash=account.cash,
        settled_cash=account.settled_cash, cash_tolerance=compute_cash_tolerance(orders),
        orders=orders,
    )  # fmt: skip
    breaks = check_audit(report.ledger_positions, reported, report.ledger_cash, account.cash,
                         report.cash_tolerance) + list(books.breaks)  # fmt: skip
    if breaks:
        report = replace(report, status=AuditStatus.BREAK, breaks=tuple(breaks),
                         incident_id=f"{INCIDENT_PREFIX}-{session}")  # fmt: skip
    try:
        report = _record(ledger, report, run_id)
    except LedgerConflict:
        done = ledger.get(key)
        if done is None:
            raise
        log.info("audit %s was recorded by another run meanwhile; returning that", session)
        return read_audit(done.payload, read_state(ledger).state)
    if report.breaks:
        log.warning("%s", report.summary())
        if alert is not None:
            try:
                alert(report.summary())
            except Exception:  # the ledger holds the finding; a failed alert must not hide it
                log.exception("audit alert failed for %s", session)
    else:
        log.info("%s", report.summary())
    return report


def _record(ledger: Ledger, report: AuditReport, run_id: str | None) -> AuditReport:
    """Record the audit; with breaks, its incident and SAFE_MODE in the same transaction."""

    item = (str(EventKind.AUDIT_RECORDED), report.key, report.to_payload())
    if not report.breaks:
        ledger.append(*item, run_id=run_id)
        return replace(report, recorded=(report.key,))
    evidence = [b.detail for b in report.breaks][:_EVIDENCE_LINES]
    incident = incident_event(str(report.incident_id), CHECK, report.summary(), evidence)
    extra = [item, incident]
    view = apply_trigger(ledger, Trigger.INCIDENT, report.summary(), evidence=evidence,
                         run_id=run_id, extra_events=extra)  # fmt: skip
    return replace(report, state=view.state, recorded=tuple(k for _, k, _ in extra))


def audit_job(
    cfg: Config, now: str = "", alert: Callable[[str], None] | None = alert_console
) -> AuditReport:
    """Audit the workbook's broker (read-only session) against its ledger as of ``now`` (""
    the real clock); return the report. Raises as ``run_audit`` (BrokerUnavailable: nothing
    recorded, retry later) and OpsError for a bad ``now``."""

    clock = read_clock(now)
    broker = open_broker(cfg, clock=clock, role="readonly")
    try:
        broker.connect()
        with open_ledger(cfg) as ledger:
            return run_audit(cfg, ledger, broker, clock(), alert=alert)
    finally:
        broker.close()
