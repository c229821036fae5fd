"""Submission: send an execution plan's orders once, crash-safe, so nothing trades twice."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from ops_runner.brokers.base import (
    BrokerError,
    BrokerOrder,
    BrokerUnavailable,
    Execution,
    OrderStatus,
    Outcome,
    PlaceResult,
    find_order,
)
from ops_runner.brokers.gate import OrderIntent, OrderRefused, Side, require_gate_pass
from ops_runner.core.canonical import compute_json_ready
from ops_runner.core.events import EventKind, Purpose, State, Trigger
from ops_runner.core.faults import inject
from ops_runner.execution.plan import (
    REF_PREFIX,
    ExecutionError,
    ExecutionPlan,
    ExecutionRefused,
    _frame,
    compute_client_ref,
)
from ops_runner.execution.quotes import QuoteMoment, write_quotes
from ops_runner.ledger import Ledger
from ops_runner.ledger.states import (
    apply_trigger,
    enforce_kill_switch,
    read_kill_switch,
    read_state,
)
from ops_runner.market.calendar import open_calendar
from ops_runner.runtime.notebooks import PREVIEW_NOTE

if TYPE_CHECKING:
    import pandas as pd

    from ops_runner.brokers.base import Broker
    from ops_runner.workbook.config import Config

log = logging.getLogger(__name__)

HOOKS = ("after_intents", "before_place", "after_place", "after_record")
Hook = Callable[..., object]


class SubmissionStatus(StrEnum):
    """How a submission ended."""

    WAIT = "WAIT"  # before the window: nothing recorded, nothing sent
    SUBMITTED = "SUBMITTED"  # every intent is at the broker (sent now, earlier, or found there)
    PARTIAL = "PARTIAL"  # some intents denied or rejected; the rest went through
    STOPPED = "STOPPED"  # stopped early: kill switch, broker down, unknown or ambiguous outcome
    PREVIEW = "PREVIEW"  # a notebook run by hand: what would be sent, nothing recorded or sent


class RowOutcome(StrEnum):
    """What became of one intent (or of a plan line that never became one)."""

    SUBMITTED = "submitted"
    ADOPTED = "adopted"  # found at the broker under its reference: recorded, not sent again
    REJECTED = "rejected"
    UNKNOWN = "unknown"
    DENIED = "denied"  # refused by the order gate
    SKIPPED = "skipped"  # never sent: below the minimum, unsellable, or the run stopped first
    PREVIEW = "preview"  # would be sent by the tick or `ops-runner run`; not sent from here


@dataclass(frozen=True)
class SubmissionRow:
    """One client reference's outcome."""

    client_ref: str
    symbol: str
    side: str
    quantity: int
    outcome: RowOutcome
    broker_order_id: str | None = None
    detail: str = ""


@dataclass
class SubmissionReport:
    """A submission's status, one row per intent, and the state the system is in after it."""

    status: SubmissionStatus
    order_session: str
    window: tuple[str, str]  # UTC instants, ISO
    rows: list[SubmissionRow] = field(default_factory=list)
    detail: str = ""
    state: str = ""
    # Intents not at the broker for good (denied by the gate, not sent, outcome unknown): the
    # cycle stays open, and a later run inside the window sends them once the state allows.
    unsettled: list[str] = field(default_factory=list)

    def to_frame(self) -> pd.DataFrame:
        """Return the rows as a table indexed by client reference."""
        return _frame([{**vars(r), "outcome": str(r.outcome)} for r in self.rows], "client_ref")

    def to_payload(self) -> dict[str, Any]:
        """Return the report as JSON-ready values (no floats)."""
        return compute_json_ready(self)


class _Stop(Exception):
    """Internal: the submission stops here; the ledger already says why."""


@dataclass(frozen=True)
class _Book:
    """What the broker knows now: its orders (open and completed), executions, positions."""

    orders: list[BrokerOrder]
    executions: list[Execution]
    positions: dict[str, int]


def _read_book(broker: Broker) -> _Book:
    orders = [*broker.open_orders(), *broker.completed_orders()]
    return _Book(orders, broker.executions(), dict(broker.positions()))


def _row_of(
    intent: OrderIntent, outcome: RowOutcome, order_id: str | None, detail: str
) -> SubmissionRow:
    args = (intent.client_ref, intent.symbol, str(intent.side), intent.quantity, outcome)
    return SubmissionRow(*args, order_id, detail)


def _intent_of(payload: Mapping[str, Any]) -> OrderIntent:
    return OrderIntent(str(payload["client_ref"]), str(payload["symbol"]), Side(payload["side"]),
                       int(payload["quantity"]), Purpose(payload["purpose"]),
                       payload.get("session"))  # fmt: skip


def _new_york(moment: pd.Timestamp) -> str:
    return f"{moment.tz_convert('America/New_York'):%H:%M} New York ({moment:%H:%M} UTC)"


class _Submission:
    """One run of ``submit_plan``: the ledger, the broker, and the rows so far."""

    def __init__(self, cfg: Config, ledger: Ledger, broker: Broker, plan: ExecutionPlan,
                 run_id: str | None, hooks: Mapping[str, Hook]) -> None:  # fmt: skip
        self.cfg, self.ledger, self.broker, self.plan = cfg, ledger, broker, plan
        self.run_id, self.hooks = run_id, hooks
        self.rows: dict[str, SubmissionRow] = {}
        self.rejected: list[str] = []

    def append_once(self, kind: EventKind, key: str, payload: dict[str, Any]) -> None:
        if self.ledger.get(key) is None:
            self.ledger.append(str(kind), key, payload, run_id=self.run_id,
                               cycle_id=self.plan.cycle_id)  # fmt: skip

    def record_status(self, intent: OrderIntent, status: str, detail: str) -> None:
        payload = {"client_ref": intent.client_ref, "status": status, "detail": detail}
        key = f"OrderStatusChanged:{intent.client_ref}:{status}"
        self.append_once(EventKind.ORDER_STATUS_CHANGED, key, payload)

    def record_submitted(self, intent: OrderIntent, order_id: str, adopted: bool) -> None:
        payload = {**compute_json_ready(intent), "broker_order_id": order_id, "adopted": adopted}
        self.append_once(EventKind.ORDER_SUBMITTED, f"OrderSubmitted:{intent.client_ref}", payload)

    def trigger(
        self, trigger: Trigger, reason: str, evidence: list[str], extra: tuple = ()
    ) -> None:
        apply_trigger(self.ledger, trigger, reason, evidence, run_id=self.run_id,
                      extra_events=extra, cycle_id=self.plan.cycle_id)  # fmt: skip

    def row(self, intent: OrderIntent, outcome: RowOutcome, order_id: str | None = None,
            detail: str = "") -> None:  # fmt: skip
        self.rows[intent.client_ref] = _row_of(intent, outcome, order_id, detail)

    def hook(self, name: str, *args: object) -> None:
        inject(f"submission:{name}")  # the crash boundaries of the fault matrix (tests)
        if name in self.hooks:
            self.hooks[name](*args)

    def recorded_intents(self) -> list[OrderIntent]:
        """The cycle's plan of record: the intents recorded by the first run that got that far."""
        prefix = f"{REF_PREFIX}:{self.plan.cycle_id}:"
        kind = str(EventKind.ORDER_INTENT_RECORDED)
        events = self.ledger.events(kind=kind, cycle_id=self.plan.cycle_id)
        return [_intent_of(e.payload) for e in events
                if str(e.payload.get("client_ref", "")).startswith(prefix)]  # fmt: skip

    def settled(self, intent: OrderIntent) -> SubmissionRow | None:
        """The row for an intent the ledger already answers for good (at the broker, rejected)."""
        if (sent := self.ledger.get(f"OrderSubmitted:{intent.client_ref}")) is not None:
            outcome = RowOutcome.ADOPTED if sent.payload.get("adopted") else RowOutcome.SUBMITTED
            detail = f"recorded at event {sent.seq}"
            return _row_of(intent, outcome, sent.payload["broker_order_id"], detail)
        if rejected := self.ledger.get(f"OrderStatusChanged:{intent.client_ref}:rejected"):
            detail = str(rejected.payload.get("detail", ""))
            return _row_of(intent, RowOutcome.REJECTED, None, detail)
        return None

    def incident(self, incident_id: str, summary: str, evidence: list[str]) -> None:
        key = f"IncidentOpened:{incident_id}"
        incident = {"incident_id": incident_id, "category": "execution", "summary": summary,
                    "evidence": evidence}  # fmt: skip
        extra = [] if self.ledger.get(key) else [(str(EventKind.INCIDENT_OPENED), key, incident)]
        self.trigger(Trigger.INCIDENT, summary, evidence, tuple(extra))

    def unknown(self, intent: OrderIntent, why: str, down: bool) -> _Stop:
        detail = f"outcome unknown ({why}); the reference is not found at the broker: not resent"
        self.record_status(intent, "unknown", detail)
        self.row(intent, RowOutcome.UNKNOWN, None, detail)
        evidence = [f"{intent.client_ref}: {why}"]
        if down:
            self.trigger(Trigger.BROKER_FAULT, f"broker unavailable: {why}", evidence)
        else:
            summary = f"order {intent.client_ref}: {detail}"
            self.incident(f"order-unknown-{intent.client_ref}", summary, evidence)
        return _Stop(f"{intent.client_ref}: {detail}")

    def ambiguous(self, intent: OrderIntent, ids: list[str], recorded: str | None) -> _Stop:
        summary = (f"order {intent.client_ref} is ambiguous: broker orders {', '.join(ids)} "
                   f"match it (ledger: {recorded or 'none recorded'})")  # fmt: skip
        evidence = [f"broker order {i}" for i in ids]
        self.incident(f"order-ambiguous-{intent.client_ref}", summary, evidence)
        self.row(intent, RowOutcome.UNKNOWN, None, summary)
        return _Stop(f"{summary}; SAFE_MODE until a person resolves it")

    def match(self, book: _Book, intent: OrderIntent) -> list[tuple[str, OrderStatus | None]]:
        """The broker orders that are ``intent``: by reference (or its fallback), by executions."""
        found: dict[str, OrderStatus | None] = {
            o.broker_order_id: o.status for o in find_order(book.orders, intent)
        }
        for fill in book.executions:
            if fill.client_ref == intent.client_ref:
                found.setdefault(fill.broker_order_id, None)
        return sorted(found.items())

    def adopt(self, intent: OrderIntent, order_id: str, status: OrderStatus | None,
              why: str) -> None:  # fmt: skip
        if status == OrderStatus.REJECTED:
            detail = f"found rejected at the broker (order {order_id})"
            self.record_status(intent, "rejected", detail)
            self.row(intent, RowOutcome.REJECTED, order_id, detail)
        else:
            self.record_submitted(intent, order_id, adopted=True)
            self.row(intent, RowOutcome.ADOPTED, order_id, why)

    def resolve(self, intent: OrderIntent, why: str, down: bool) -> None:
        """An unknown outcome: look the reference up again; adopt what is found, else stop."""
        try:
            book = _read_book(self.broker)
        except BrokerUnavailable as exc:
            raise self.unknown(intent, f"{why}; lookup failed: {exc}", down=True) from None
        found = self.match(book, intent)
        if len(found) > 1:
            raise self.ambiguous(intent, [i for i, _ in found], None)
        if not found:
            raise self.unknown(intent, why, down)
        self.adopt(intent, *found[0], f"{why}; then found at the broker by its reference")

    def place(self, intent: OrderIntent, positions: Mapping[str, int]) -> None:
        ref = intent.client_ref
        earlier = self.ledger.get(f"OrderStatusChanged:{ref}:unknown")
        if earlier is not None and read_state(self.ledger).state is not State.RUN:
            detail = ("an earlier attempt's outcome is unknown and the broker does not list it; "
                      "not resent until the state is RUN again")  # fmt: skip
            return self.row(intent, RowOutcome.UNKNOWN, None, detail)
        try:
            gate_pass = require_gate_pass(self.ledger, intent, positions)
        except OrderRefused as exc:
            return self.row(intent, RowOutcome.DENIED, None, exc.reason)
        self.hook("before_place", intent)
        try:
            result = self.broker.place(intent, gate_pass)
        except BrokerUnavailable as exc:
            return self.resolve(intent, f"the broker dropped the place call: {exc}", down=True)
        except BrokerError as exc:
            result = PlaceResult(Outcome.UNKNOWN, ref, text=f"{type(exc).__name__}: {exc}")
        self.hook("after_place", intent)
        if result.outcome == Outcome.ACCEPTED and result.broker_order_id:
            self.record_submitted(intent, result.broker_order_id, adopted=False)
            self.row(intent, RowOutcome.SUBMITTED, result.broker_order_id)
            self.hook("after_record", intent)
        elif result.outcome == Outcome.REJECTED:
            detail = f"{result.code or 'no code'}: {result.text}"
            self.record_status(intent, "rejected", detail)
            self.row(intent, RowOutcome.REJECTED, None, detail)
            self.rejected.append(f"{ref}: {detail}")
            if len(self.rejected) >= 2:
                reason = f"{len(self.rejected)} orders rejected in one submission"
                self.trigger(Trigger.BROKER_FAULT, reason, self.rejected)
                raise _Stop(f"{reason}: broker fault, no further orders sent")
        else:
            self.resolve(intent, f"place returned {result.outcome} {result.text}".strip(), False)

    def cancel_open(self) -> list[str]:
        orders = [o for o in self.broker.open_orders() if o.client_ref]
        return [o.client_ref for o in orders if self.broker.cancel(o.client_ref)]

    def run(self, intents: list[OrderIntent]) -> str:
        """Adopt what the broker has, then place the rest. Returns why it stopped, or ""."""
        try:
            book = _read_book(self.broker)
        except BrokerUnavailable as exc:
            self.trigger(Trigger.BROKER_FAULT, f"broker unavailable: {exc}", [str(exc)])
            return f"broker unavailable before any order was looked up: {exc}"
        pending = []
        for intent in intents:
            done, found = self.settled(intent), self.match(book, intent)
            ids = [i for i, _ in found]
            recorded = done.broker_order_id if done else None
            if len(ids) > 1 or (recorded and ids and ids != [recorded]):
                return str(self.ambiguous(intent, ids, recorded))
            if done is not None:
                self.rows[intent.client_ref] = done
            elif found:
                self.adopt(intent, *found[0], "found at the broker by its reference: not resent")
            else:
                pending.append(intent)
        for intent in pending:
            if read_kill_switch(self.cfg) is not None:
                view = enforce_kill_switch(self.cfg, self.ledger, self.cancel_open, self.run_id)
                return f"kill switch: {view.reason if view else 'present'}; no further orders"
            try:
                self.place(intent, book.positions)
            except _Stop as stop:
                return str(stop)
        return ""


def adopt_opening_balance(ledger: Ledger, broker: Broker, run_id: str | None = None) -> bool:
    """Record the broker's cash as the opening balance when the ledger has no cash history yet.

    Expected cash is folded from ``CashAdjusted`` events and fills; a new workbook starts with
    neither, so its first reconciliation would break on the funding itself. Positions held
    before the workbook existed are not adopted here: reconciliation reports them as breaks.
    Returns True when it recorded the balance.
    """
    for kind in (EventKind.CASH_ADJUSTED, EventKind.FILL_RECORDED):
        if ledger.last(str(kind)) is not None:
            return False
    try:
        cash = broker.account_values().cash
    except BrokerUnavailable:
        return False  # the submission's own lookups meet the outage and record it
    ledger.append(
        str(EventKind.CASH_ADJUSTED),
        "CashAdjusted:opening",
        {"amount": str(cash), "reason": "opening balance adopted from the broker"},
        run_id=run_id,
    )
    return True


def compute_preview(plan: ExecutionPlan, state: str) -> SubmissionReport:
    """Return what a submission of ``plan`` would send, for a notebook run by hand: nothing is
    recorded, looked up or sent (the tick or ``ops-runner run execution`` does that)."""

    rows = [_row_of(i, RowOutcome.PREVIEW, None, "not sent: preview") for i in plan.intents]
    return SubmissionReport(SubmissionStatus.PREVIEW, plan.order_session, ("", ""), rows,
                            PREVIEW_NOTE, state)  # fmt: skip


def submit_plan(
    cfg: Config,
    ledger: Ledger,
    broker: Broker,
    plan: ExecutionPlan,
    now: datetime,
    *,
    run_id: str | None = None,
    hooks: Mapping[str, Hook] | None = None,
) -> SubmissionReport:
    """Submit ``plan``'s market-on-open orders once, whatever ran before; return the report.

    Before the submission window: WAIT, nothing recorded or sent. In it: the intents are
    recorded (a cycle's first recorded set is its plan of record: a re-run sends those, not a
    fresh plan's), orders already at the broker under their reference are adopted, and only the
    rest pass the kill switch and the order gate to ``broker.place``. An unknown outcome is
    looked up, never resent. ``hooks`` is a test seam called by name: after_intents(intents),
    before_place(intent), after_place(intent), after_record(intent). Raises ExecutionRefused
    at or after the window's end when anything is still unsent, ExecutionError for a naive
    ``now``, an unknown hook or intents recorded for another session.
    """
    import pandas as pd

    if unknown := set(hooks or {}) - set(HOOKS):
        raise ExecutionError(f"unknown hooks {sorted(unknown)}; known: {', '.join(HOOKS)}")
    if now.tzinfo is None or now.utcoffset() is None:
        raise ExecutionError(f"now={now!r} is naive; give the instant in UTC")
    session, schedule, calendar = plan.order_session, cfg.schedule, open_calendar(cfg)
    if not calendar.is_session(session):
        raise ExecutionError(f"{session} is not a session; orders go to a session's open")
    start, end = calendar.submission_window(session, schedule.window_start, schedule.window_end)
    instant = pd.Timestamp(now).tz_convert("UTC")
    report = SubmissionReport(SubmissionStatus.WAIT, session, (start.isoformat(), end.isoformat()))
    job = _Submission(cfg, ledger, broker, plan, run_id, dict(hooks or {}))
    if start <= instant < end:
        adopt_opening_balance(ledger, broker, run_id=run_id)
    if instant < start:
        report.detail = f"too early: the window for {session} opens at {_new_york(start)}"
    intents = [] if instant < start else job.recorded_intents()
    if instant >= end:
        if unsent := [i.client_ref for i in intents or plan.intents if job.settled(i) is None]:
            raise ExecutionRefused(
                f"too late: market-on-open orders for {session} had to be in by {_new_york(end)};"
                f" {', '.join(unsent)} not sent, and never sent as plain market orders"
            )
        report.rows = [row for i in intents if (row := job.settled(i)) is not None]
        report.status = SubmissionStatus.SUBMITTED
        report.detail = "every intent was settled earlier" if intents else "nothing to send"
    if instant < start or instant >= end:
        report.state = str(read_state(ledger).state)
        return report
    if intents and (wrong := sorted({str(i.session) for i in intents} - {session})):
        raise ExecutionError(f"cycle {plan.cycle_id}'s intents were recorded for {wrong}, not "
                             f"{session}; open an incident")  # fmt: skip
    if intents and compute_json_ready(intents) != compute_json_ready(plan.intents):
        report.detail = "this plan differs from the plan of record: the recorded intents are sent"
    elif not intents and plan.intents:
        kind = str(EventKind.ORDER_INTENT_RECORDED)
        items = [(kind, f"OrderIntentRecorded:{i.client_ref}", compute_json_ready(i))
                 for i in plan.intents]  # fmt: skip
        # The plan of record (lines, cash walk, residual) goes in with its intents, atomically.
        planned = (str(EventKind.ORDERS_PLANNED), f"OrdersPlanned:{plan.cycle_id}",
                   plan.to_payload())  # fmt: skip
        ledger.append_many([planned, *items], run_id=run_id, cycle_id=plan.cycle_id)
        intents = list(plan.intents)
    job.hook("after_intents", intents)
    # The quotes the orders meet, once per cycle and before any is placed (a broker that
    # quotes nothing is recorded so); the slippage report judges fills against them.
    write_quotes(ledger, broker, plan.cycle_id, session, QuoteMoment.SUBMISSION,
                 [i.symbol for i in intents], run_id=run_id)  # fmt: skip
    stopped = job.run(intents) if intents else ""
    for intent in intents:
        if intent.client_ref not in job.rows:
            job.row(intent, RowOutcome.SKIPPED, None, f"not sent: {stopped}")
    report.rows = [job.rows[i.client_ref] for i in intents]
    for line in plan.lines:
        ref = line.side and compute_client_ref(plan.cycle_id, line.symbol, line.side)
        if ref and line.skipped_reason and ref not in job.rows:
            skip = (ref, line.symbol, str(line.side), abs(line.delta), RowOutcome.SKIPPED)
            report.rows.append(SubmissionRow(*skip, None, line.skipped_reason))
    good = {RowOutcome.SUBMITTED, RowOutcome.ADOPTED}
    partial = any(job.rows[i.client_ref].outcome not in good for i in intents)
    final = good | {RowOutcome.REJECTED}  # the broker's no is an answer: reconciliation shows it
    report.unsettled = [i.client_ref for i in intents if job.rows[i.client_ref].outcome
                        not in final]  # fmt: skip
    report.status = SubmissionStatus.PARTIAL if partial else SubmissionStatus.SUBMITTED
    report.status = SubmissionStatus.STOPPED if stopped else report.status
    details = [report.detail, stopped, "" if intents else "nothing to send"]
    report.detail = "; ".join(d for d in details if d)
    report.state = str(read_state(ledger).state)
    log.info("submission %s for %s: %s", report.status, session, report.detail)
    return report
