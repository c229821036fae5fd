"""The runbook's states as a transition table; kill switch and drawdown HALT."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Sequence
from datetime import date
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from ops_runner.core.errors import OpsError
from ops_runner.core.events import EventKind, State, Trigger
from ops_runner.core.files import write_bytes_atomic
from ops_runner.core.hashing import compute_sha256
from ops_runner.ledger.projections import (
    DrawdownView,
    StateView,
    compute_equity,
    compute_state,
)
from ops_runner.ledger.store import Ledger, LedgerConflict
from ops_runner.workbook.config import Config

__all__ = [
    "TRANSITIONS",
    "DrawdownView",
    "IllegalTransition",
    "StateError",
    "StateView",
    "apply_trigger",
    "incident_event",
    "compute_next_state",
    "enforce_kill_switch",
    "read_kill_switch",
    "read_state",
    "record_equity_mark",
    "record_kill_switch",
    "remove_kill_switch",
    "write_kill_switch",
]

log = logging.getLogger(__name__)

RUN, DEGRADED, BROKER_DOWN, SAFE, HALT = (
    State.RUN,
    State.DEGRADED_DATA,
    State.BROKER_DOWN,
    State.SAFE_MODE,
    State.HALT,
)
T = Trigger

# (state, trigger) -> next state. A pair missing from the table is illegal. Self-loops are
# legal and record nothing. Every HALT trigger leads to HALT from every state.
TRANSITIONS: dict[tuple[State, Trigger], State] = {
    # RUN: trading as planned.
    (RUN, T.DATA_FAULT): DEGRADED,  # stale/missing bars: no decision on bad data
    (RUN, T.DATA_RESTORED): RUN,  # a clean QA pass while healthy: nothing to restore
    (RUN, T.BROKER_FAULT): BROKER_DOWN,  # auth, disconnect, repeated rejects
    (RUN, T.BROKER_RESTORED): RUN,  # a healthy probe while healthy
    (RUN, T.INCIDENT): SAFE,  # a failed job, clock skew, a break: stop new trades
    (RUN, T.KILL_SWITCH): HALT,
    (RUN, T.DRAWDOWN_BREACH): HALT,
    (RUN, T.RECONCILIATION_UNRESOLVED): HALT,
    (RUN, T.LEDGER_CORRUPT): HALT,
    (RUN, T.DECISION_WINDOW_MISSED): HALT,
    (RUN, T.SUBMISSION_WINDOW_MISSED): HALT,
    # DEGRADED_DATA: SAFE_MODE's restrictions, left by clean data alone.
    (DEGRADED, T.DATA_FAULT): DEGRADED,  # still degraded
    (DEGRADED, T.DATA_RESTORED): RUN,  # its own cause cleared
    (DEGRADED, T.BROKER_FAULT): SAFE,  # two faults at once: escalate, approval to leave
    (DEGRADED, T.BROKER_RESTORED): DEGRADED,  # the broker was never the problem here
    (DEGRADED, T.INCIDENT): SAFE,
    (DEGRADED, T.KILL_SWITCH): HALT,
    (DEGRADED, T.DRAWDOWN_BREACH): HALT,
    (DEGRADED, T.RECONCILIATION_UNRESOLVED): HALT,
    (DEGRADED, T.LEDGER_CORRUPT): HALT,
    (DEGRADED, T.DECISION_WINDOW_MISSED): HALT,
    (DEGRADED, T.SUBMISSION_WINDOW_MISSED): HALT,
    # BROKER_DOWN: SAFE_MODE's restrictions, left by a healthy broker alone.
    (BROKER_DOWN, T.DATA_FAULT): SAFE,  # two faults at once: escalate
    (BROKER_DOWN, T.DATA_RESTORED): BROKER_DOWN,  # data was never the problem here
    (BROKER_DOWN, T.BROKER_FAULT): BROKER_DOWN,  # still down
    (BROKER_DOWN, T.BROKER_RESTORED): RUN,  # its own cause cleared
    (BROKER_DOWN, T.INCIDENT): SAFE,
    (BROKER_DOWN, T.KILL_SWITCH): HALT,
    (BROKER_DOWN, T.DRAWDOWN_BREACH): HALT,
    (BROKER_DOWN, T.RECONCILIATION_UNRESOLVED): HALT,
    (BROKER_DOWN, T.LEDGER_CORRUPT): HALT,
    (BROKER_DOWN, T.DECISION_WINDOW_MISSED): HALT,
    (BROKER_DOWN, T.SUBMISSION_WINDOW_MISSED): HALT,
    # SAFE_MODE: no new risk; only integrity checks plus an approval lead back to RUN.
    (SAFE, T.DATA_FAULT): SAFE,  # already as restricted as a fault makes it
    (SAFE, T.DATA_RESTORED): SAFE,  # clean data does not replace the approval
    (SAFE, T.BROKER_FAULT): SAFE,
    (SAFE, T.BROKER_RESTORED): SAFE,  # a healthy broker does not replace the approval
    (SAFE, T.INCIDENT): SAFE,
    (SAFE, T.APPROVED_EXIT_SAFE_MODE): RUN,  # integrity checked by the approvals code
    (SAFE, T.KILL_SWITCH): HALT,
    (SAFE, T.DRAWDOWN_BREACH): HALT,
    (SAFE, T.RECONCILIATION_UNRESOLVED): HALT,
    (SAFE, T.LEDGER_CORRUPT): HALT,
    (SAFE, T.DECISION_WINDOW_MISSED): HALT,
    (SAFE, T.SUBMISSION_WINDOW_MISSED): HALT,
    # HALT: trading disabled; only an approval naming the review leaves, and only to SAFE_MODE,
    # so integrity checks and a second approval still stand between HALT and RUN.
    (HALT, T.DATA_FAULT): HALT,
    (HALT, T.DATA_RESTORED): HALT,
    (HALT, T.BROKER_FAULT): HALT,
    (HALT, T.BROKER_RESTORED): HALT,
    (HALT, T.INCIDENT): HALT,
    (HALT, T.KILL_SWITCH): HALT,
    (HALT, T.DRAWDOWN_BREACH): HALT,
    (HALT, T.RECONCILIATION_UNRESOLVED): HALT,
    (HALT, T.LEDGER_CORRUPT): HALT,
    (HALT, T.DECISION_WINDOW_MISSED): HALT,
    (HALT, T.SUBMISSION_WINDOW_MISSED): HALT,
    (HALT, T.APPROVED_EXIT_HALT): SAFE,
    # Not in the table on purpose: an approval outside the state it leaves (exit-safe-mode in
    # RUN, DEGRADED_DATA, BROKER_DOWN or HALT; exit-halt anywhere but HALT). A token presented
    # in the wrong state must fail loudly, never be spent on a no-op.
}

KILL_SWITCH_REASON_LIMIT = 500


class StateError(OpsError):
    """A state, kill switch or risk-off request that cannot be honoured as asked."""


class IllegalTransition(StateError):
    """A trigger that the transition table does not allow in the current state.

    Fields: ``state``, ``trigger``.
    """

    def __init__(self, state: object, trigger: object) -> None:
        legal = ", ".join(str(t) for (s, t) in TRANSITIONS if s == state) or "none"
        super().__init__(f"cannot apply {trigger} in {state}; triggers legal in {state}: {legal}")
        self.state = state
        self.trigger = trigger


def compute_next_state(state: State | str, trigger: Trigger | str) -> State:
    """Return the state ``trigger`` leads to from ``state``. Raises IllegalTransition."""
    try:
        key = (State(state), Trigger(trigger))
    except ValueError:
        raise IllegalTransition(state, trigger) from None
    if key not in TRANSITIONS:
        raise IllegalTransition(key[0], key[1])
    return TRANSITIONS[key]


def read_state(ledger: Ledger) -> StateView:
    """Return the state folded from the ledger's StateChanged events (RUN when there are none)."""
    return compute_state(ledger.events(kind=str(EventKind.STATE_CHANGED)))


_RACE_RETRIES = 3


def apply_trigger(
    ledger: Ledger,
    trigger: Trigger | str,
    reason: str,
    evidence: Iterable[object] = (),
    run_id: str | None = None,
    extra_events: Sequence[tuple[str, str, dict[str, Any]]] = (),
    *,
    cycle_id: str | None = None,
) -> StateView:
    """Apply ``trigger`` and return the state after it. Raises IllegalTransition (nothing written).

    A change appends ``extra_events`` (the cause, first) and ``StateChanged`` in one transaction,
    keyed ``StateChanged:<seq of the state left>``: each state episode has exactly one way out,
    so a retried transition is written once, and two writers racing from the same state cannot
    both leave it (the loser gets LedgerConflict, re-reads the state and applies its trigger
    there). A self-loop writes only ``extra_events`` (nothing when there are none).
    """
    trigger = Trigger(trigger)
    if isinstance(evidence, str):  # one line of evidence, not its characters
        evidence = [evidence]
    lines = [str(item) for item in evidence]
    items = [(str(kind), key, payload) for kind, key, payload in extra_events]
    for _ in range(_RACE_RETRIES):
        view = read_state(ledger)
        target = compute_next_state(view.state, trigger)
        if target is view.state:
            if items:
                ledger.append_many(items, run_id=run_id, cycle_id=cycle_id)
            return view
        change = {
            "from": str(view.state),
            "to": str(target),
            "trigger": str(trigger),
            "reason": reason,
            "evidence": lines,
        }
        key = f"StateChanged:{view.seq}"
        try:
            written = ledger.append_many(
                [*items, (str(EventKind.STATE_CHANGED), key, change)],
                run_id=run_id,
                cycle_id=cycle_id,
            )
        except LedgerConflict as exc:
            if read_state(ledger).seq == view.seq:
                raise  # the conflict is not a lost race: an incident for the caller
            log.warning("state changed under %s (%s); applying it again", trigger, exc)
            continue
        event = written[-1]
        log.warning("state %s -> %s (%s): %s", view.state, target, trigger, reason)
        return StateView(
            state=target,
            since=event.recorded_at,
            trigger=trigger,
            reason=reason,
            evidence=tuple(lines),
            seq=event.seq,
        )
    raise StateError(f"{trigger}: the state kept changing under it; run the job again")


def incident_event(
    incident_id: str, category: str, summary: str, evidence: Iterable[object]
) -> tuple[str, str, dict[str, Any]]:
    """Return the IncidentOpened (kind, key, payload) to pass to ``apply_trigger``'s extras."""
    payload = {"incident_id": incident_id, "category": category, "summary": summary,
               "evidence": [str(item) for item in evidence]}  # fmt: skip
    return str(EventKind.INCIDENT_OPENED), f"IncidentOpened:{incident_id}", payload


# --- kill switch -------------------------------------------------------------------------------


def read_kill_switch(cfg: Config) -> str | None:
    """Return the kill switch's reason (its content), or None when the file is absent.

    A file that exists but cannot be read counts as present (fail closed).
    """
    path = cfg.path("kill_switch")
    try:
        os.lstat(path)  # lstat: a dangling symlink in its place is present too
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as exc:  # cannot even tell whether it exists (a folder we may not enter)
        return f"kill switch file present but unreadable: {exc}"
    try:
        with path.open("rb") as handle:
            raw = handle.read(4 * KILL_SWITCH_REASON_LIMIT)
    except OSError as exc:
        return f"kill switch file present but unreadable: {exc}"
    text = raw.decode("utf-8", errors="replace").strip()[:KILL_SWITCH_REASON_LIMIT].strip()
    return text or "kill switch file present (no reason written in it)"


def write_kill_switch(cfg: Config, reason: str) -> Path:
    """Write the kill switch file atomically with ``reason`` as content. Returns its path."""
    path = cfg.path("kill_switch")
    path.parent.mkdir(parents=True, exist_ok=True)
    write_bytes_atomic(path, ((reason.strip() or "kill switch engaged") + "\n").encode("utf-8"))
    return path


def remove_kill_switch(cfg: Config) -> bool:
    """Remove the kill switch file; True if one was removed. The state stays HALT regardless.

    Raises StateError when the path is a folder (remove it by hand).
    """
    path = cfg.path("kill_switch")
    if path.is_dir() and not path.is_symlink():
        raise StateError(f"kill switch path {path} is a folder; remove it by hand")
    try:
        path.unlink()
    except FileNotFoundError:
        return False
    return True


def _call_cancel(cancel: Callable[[], list[str]] | None) -> str:
    if cancel is None:
        return "pending orders: no cancel function given, none cancelled"
    try:
        cancelled = cancel()
    except Exception as exc:  # best effort: a failed cancel never stops the HALT
        log.exception("kill switch: cancelling pending orders failed")
        return f"pending orders: cancel failed: {type(exc).__name__}: {exc}"
    refs = ", ".join(str(ref) for ref in cancelled or [])
    return f"pending orders cancelled: {refs}" if refs else "pending orders: none to cancel"


def _digest(text: str) -> str:
    return compute_sha256(text)[:16]


def enforce_kill_switch(
    cfg: Config,
    ledger: Ledger,
    cancel: Callable[[], list[str]] | None = None,
    run_id: str | None = None,
) -> StateView | None:
    """Go to HALT when the kill switch is present; return the state then, or None when absent.

    On a new sighting: cancel() is called (best effort, its outcome kept as evidence),
    KillSwitchSeen is recorded and the state moves to HALT with trigger KILL_SWITCH. The same file
    seen again in the same HALT records nothing and cancels nothing again.
    """
    reason = read_kill_switch(cfg)
    if reason is None:
        return None
    view = read_state(ledger)
    digest = _digest(reason)
    key = f"KillSwitchSeen:{digest}:{view.seq}"
    if ledger.get(key) is not None:
        return view
    if view.state is State.HALT and view.trigger is Trigger.KILL_SWITCH:
        last = ledger.last(str(EventKind.KILL_SWITCH_SEEN))
        if last is not None and _digest(str(last.payload.get("reason"))) == digest:
            return view
    return record_kill_switch(cfg, ledger, reason, cancel, run_id=run_id)


def record_kill_switch(
    cfg: Config,
    ledger: Ledger,
    reason: str,
    cancel: Callable[[], list[str]] | None,
    *,
    note: str = "",
    run_id: str | None = None,
) -> StateView:
    """Cancel pending orders (best effort), record KillSwitchSeen and go to HALT; return the
    state. ``note`` joins the evidence (e.g. why the file itself could not be written)."""
    view = read_state(ledger)
    key = f"KillSwitchSeen:{_digest(reason)}:{view.seq}"
    path = str(cfg.path("kill_switch"))
    evidence = [f"kill switch file: {path}", _call_cancel(cancel), *([note] if note else [])]
    seen = {"path": path, "reason": reason, "evidence": evidence}
    return apply_trigger(
        ledger,
        Trigger.KILL_SWITCH,
        f"kill switch: {reason}",
        evidence=evidence,
        run_id=run_id,
        extra_events=[(str(EventKind.KILL_SWITCH_SEEN), key, seen)],
    )


# --- drawdown and risk-off ---------------------------------------------------------------------


def require_decimal(value: object, what: str) -> Decimal:
    """Return ``value`` as a finite Decimal; raises StateError for a float, bool or non-number."""
    if isinstance(value, float) or isinstance(value, bool):
        raise StateError(f"{what}: {value!r} is a float; pass a Decimal or a decimal string")
    try:
        number = Decimal(str(value))
    except InvalidOperation:
        raise StateError(f"{what}: {value!r} is not a number") from None
    if not number.is_finite():
        raise StateError(f"{what}: {value!r} is not a finite number")
    return number


def _percent(ratio: Decimal) -> str:
    return f"{(ratio * 100).quantize(Decimal('0.01'))}%"


class _PendingMark:
    """A mark not yet in the ledger, shaped like an event so the equity fold can include it."""

    kind = str(EventKind.EQUITY_MARKED)
    seq = 1 << 62  # after everything recorded
    recorded_at = ""

    def __init__(self, payload: dict[str, Any]) -> None:
        self.payload = payload


def record_equity_mark(
    ledger: Ledger,
    cfg: Config,
    session: date,
    net_liquidation: Decimal,
    source: str,
    run_id: str | None = None,
) -> DrawdownView:
    """Record the session's equity mark and return the drawdown including it.

    A drawdown at or beyond ``risk.max_drawdown`` moves to HALT (trigger DRAWDOWN_BREACH) and
    opens a risk incident in the same transaction as the mark. Raises StateError for a bad value,
    LedgerConflict when the session was already marked with another value.
    """
    value = require_decimal(net_liquidation, "net_liquidation")
    limit = require_decimal(str(cfg.risk.max_drawdown), "risk.max_drawdown")
    day = session.isoformat()
    mark = (
        str(EventKind.EQUITY_MARKED),
        f"EquityMarked:{day}",
        {"session": day, "net_liquidation": str(value), "source": source},
    )
    previous = sorted(
        [
            *ledger.events(kind=str(EventKind.EQUITY_MARKED)),
            *ledger.events(kind=str(EventKind.APPROVAL_USED)),
        ],
        key=lambda e: e.seq,
    )
    view = compute_equity([*previous, _PendingMark(mark[2])])
    # Only the newest session can breach: a backfilled older mark changes the peak at most.
    if view.drawdown < limit or view.marks[-1][0] != session:
        ledger.append(*mark, run_id=run_id)
        return view
    state = read_state(ledger)
    if state.state is State.HALT and state.trigger is Trigger.DRAWDOWN_BREACH:
        ledger.append(*mark, run_id=run_id)  # already halted for this: the mark is the news
        return view
    summary = (
        f"drawdown {_percent(view.drawdown)} from peak {view.peak} to {value} on {day} "
        f"breached risk.max_drawdown {_percent(limit)}"
    )
    evidence = [
        f"peak {view.peak}",
        f"mark {value} on {day} from {source}",
        f"drawdown {view.drawdown.quantize(Decimal('0.0001'))}",
        f"limit {limit}",
        f"risk_off policy {cfg.risk.risk_off}",
    ]
    incident = (
        str(EventKind.INCIDENT_OPENED),
        f"IncidentOpened:drawdown-{day}",
        {"incident_id": f"drawdown-{day}", "category": "risk", "summary": summary,
         "evidence": evidence},
    )  # fmt: skip
    apply_trigger(
        ledger,
        Trigger.DRAWDOWN_BREACH,
        summary,
        evidence=evidence,
        run_id=run_id,
        extra_events=[mark, incident],
    )
    return view
