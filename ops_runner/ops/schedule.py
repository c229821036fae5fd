"""Which jobs are due when: the slots of each session and cycle, and the agenda at an instant.

Pure: the calendar, the schedule settings, the instant and what the ledger says is done go in;
the agenda comes out. Nothing here reads a clock, a file or the ledger.

A rebalance cycle (R = the last session of a month, N = the session after it; with
``strategy.signal_offset`` -k, R is the session k sessions before the last, the signal session,
and N the session after it):
- ``pre_rebalance_checks`` after the close of the session before R, and again after R's close;
- ``data_qa`` -> ``decision`` after R's close plus ``decision_delay_minutes``;
- ``execution`` inside N's submission window (market-on-open orders for N's open);
- ``reconciliation`` -> ``slippage_report`` after N's open plus ``reconciliation_delay_minutes``;
- ``replay`` (runbook 6, the monthly rebalance replay) after the reconciliation, due by the
  open of the session after N (an allowance of that length from a late reconciliation).
Every session: ``data_fetch`` (when a provider serves the primary or the secondary: asked at
every tick until the data QA's deadline) and ``daily_checks`` after its close plus
``decision_delay_minutes``.
The last session of each week: ``audit`` (broker vs ledger since inception), ``backup`` and,
when ``schedule.weekly_dependency_scan`` turns it on, ``dependency_scan`` (pip-audit over the
workbook's environment) at the same instant, each due by the next session's open
(``schedule.weekly_audit`` and ``schedule.weekly_backup`` turn the first two off).
The tick also runs ``incident`` (the investigation notebook) once for every new incident; that
one is not a slot of the calendar.

Each slot has an opening instant, a deadline (not done by then: missed, an incident) and for
some a closing instant (past it the slot is not run at all; a decision past its window is the
runbook's "missed decision": HALT unless ``schedule.missed_decision`` says skip_cycle).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from enum import StrEnum
from typing import Any

from ops_runner.core.cycle import Cycle
from ops_runner.core.events import State
from ops_runner.workbook.settings import ScheduleSettings


class Job(StrEnum):
    """The jobs the tick runs; the notebook jobs are notebooks/<job>.ipynb."""

    DATA_FETCH = "data_fetch"  # first: the session's prices, before any check reads them
    DAILY_CHECKS = "daily_checks"
    PRE_REBALANCE = "pre_rebalance_checks"
    DATA_QA = "data_qa"
    DECISION = "decision"
    EXECUTION = "execution"
    RECONCILIATION = "reconciliation"
    SLIPPAGE_REPORT = "slippage_report"
    REPLAY = "replay"  # the cycle's decision again from the ledger, config and code of now
    AUDIT = "audit"
    BACKUP = "backup"
    DEPENDENCY_SCAN = "dependency_scan"  # pip-audit over the workbook's environment
    INCIDENT = "incident"


WEEKLY_JOBS = (Job.AUDIT, Job.BACKUP, Job.DEPENDENCY_SCAN)
# Jobs that may only run in RUN: everything else reads, checks or reports and runs in any state.
RUN_ONLY = frozenset({Job.DECISION, Job.EXECUTION})
_ORDER = {job: i for i, job in enumerate(Job)}


@dataclass(frozen=True)
class Slot:
    """One job for one session or cycle: its idempotency key and its instants (UTC)."""

    job: Job
    key: str  # "<job>:<cycle>" for cycle jobs, "<job>:<session>" for session jobs
    session: date  # R for pre/data_qa/decision, N for execution and after; the session itself
    cycle: str | None
    opens: datetime
    deadline: datetime
    closes: datetime | None = None  # None: runs late rather than never
    after: tuple[str, ...] = ()  # keys that must be done first

    @property
    def folder(self) -> str:
        """Where its executed notebook goes under ledger/runs/: the cycle, else the session."""
        return self.cycle or self.session.isoformat()


@dataclass(frozen=True)
class Agenda:
    """What a tick should do at an instant: run ``due`` in order, record ``missed`` and
    ``expired`` (decisions whose window closed undone)."""

    due: tuple[Slot, ...]
    missed: tuple[Slot, ...]
    expired: tuple[Slot, ...]
    waiting: tuple[Slot, ...]  # open and not done, but held by the state or a prerequisite

    @property
    def idle(self) -> bool:
        return not (self.due or self.missed or self.expired)


def _utc(stamp: Any) -> datetime:
    return stamp.to_pydatetime() if hasattr(stamp, "to_pydatetime") else stamp


def compute_session_slots(calendar: Any, settings: ScheduleSettings, session: date) -> list[Slot]:
    """Return every slot that opens because of ``session``: its daily checks, and the cycle's
    jobs when it is a month-end session or the session before one."""
    close = _utc(calendar.session_close(session))
    next_session = calendar.next_session(session)
    next_open = _utc(calendar.session_open(next_session))
    after_close = close + settings.decision_delay
    deadlines = settings.deadlines
    day = session.isoformat()
    slots = [
        Slot(Job.DAILY_CHECKS, f"{Job.DAILY_CHECKS}:{day}", session, None, after_close,
             deadline=next_open, closes=next_open),
    ]  # fmt: skip
    if settings.fetch:  # asked at every tick until the data QA's deadline, then DEGRADED_DATA
        slots.insert(0, Slot(Job.DATA_FETCH, f"{Job.DATA_FETCH}:{day}", session, None,
                             after_close, deadline=after_close + deadlines["data_qa"],
                             closes=next_open))  # fmt: skip
    if next_session.isocalendar()[:2] != session.isocalendar()[:2]:  # the week's last session
        slots.extend(
            Slot(Job(job), f"{job}:{day}", session, None, after_close, deadline=next_open)
            for job in settings.weekly
        )
    if _rebalances(calendar, settings, next_session):
        slots.append(
            Slot(Job.PRE_REBALANCE, f"{Job.PRE_REBALANCE}:{day}", session,
                 str(Cycle.of(next_session)), after_close,
                 deadline=after_close + deadlines["data_qa"], closes=next_open)
        )  # fmt: skip
    if not _rebalances(calendar, settings, session):
        return slots
    cycle = str(Cycle.of(session))
    window = calendar.submission_window(next_session, settings.window_start, settings.window_end)
    window_start, window_end = (_utc(t) for t in window)
    pre = Slot(Job.PRE_REBALANCE, f"{Job.PRE_REBALANCE}:{day}", session, cycle, after_close,
               deadline=after_close + deadlines["data_qa"], closes=window_end)  # fmt: skip
    qa = Slot(Job.DATA_QA, f"{Job.DATA_QA}:{cycle}", session, cycle, after_close,
              deadline=after_close + deadlines["data_qa"], closes=window_end,
              after=(pre.key,))  # fmt: skip
    decision = Slot(Job.DECISION, f"{Job.DECISION}:{cycle}", session, cycle, after_close,
                    deadline=qa.deadline + deadlines["decision"], closes=window_end,
                    after=(qa.key,))  # fmt: skip
    execution = Slot(Job.EXECUTION, f"{Job.EXECUTION}:{cycle}", next_session, cycle,
                     window_start, deadline=window_end, closes=window_end,
                     after=(decision.key,))  # fmt: skip
    settle = next_open + settings.reconciliation_delay
    reconciliation = Slot(Job.RECONCILIATION, f"{Job.RECONCILIATION}:{cycle}", next_session,
                          cycle, settle, deadline=settle + deadlines["reconciliation"],
                          after=(execution.key,))  # fmt: skip
    report = Slot(Job.SLIPPAGE_REPORT, f"{Job.SLIPPAGE_REPORT}:{cycle}", next_session, cycle,
                  settle, deadline=settle + deadlines["slippage_report"],
                  after=(reconciliation.key,))  # fmt: skip
    # The replay only reads and records: it runs in any state, and has until the open after N
    # (not a config deadline: a new key would change every workbook's config hash).
    after_n = _utc(calendar.session_open(calendar.next_session(next_session)))
    replay = Slot(Job.REPLAY, f"{Job.REPLAY}:{cycle}", next_session, cycle, settle,
                  deadline=after_n, after=(reconciliation.key,))  # fmt: skip
    return [*slots, pre, qa, decision, execution, reconciliation, report, replay]


def _rebalances(calendar: Any, settings: ScheduleSettings, session: date) -> bool:
    """Whether a cycle decides on ``session``: its month-end, or its signal session."""
    if settings.signal_offset == 0:
        return bool(calendar.is_month_end_session(session))
    return bool(calendar.is_rebalance_session(session, settings.signal_offset))


def compute_slots(calendar: Any, settings: ScheduleSettings, first: date, last: date) -> list[Slot]:
    """Return the slots of every session from ``first`` to ``last``, ordered by opening instant
    and then by the job order (checks, QA, decision, execution, reconciliation, report)."""
    slots: list[Slot] = []
    for stamp in calendar.sessions(first, last):
        slots.extend(compute_session_slots(calendar, settings, stamp.date()))
    return sorted(slots, key=lambda s: (s.opens, _ORDER[s.job]))


def _effective_deadline(slot: Slot, done: Mapping[str, datetime], settings: ScheduleSettings):
    """A job that became runnable late (its prerequisite done late) gets its own allowance
    from then: a late QA does not make the decision after it "missed" as well. The allowance
    is the job's ``schedule.deadlines`` entry; a job without one (the replay) gets its slot's
    span from opening to deadline."""
    if not slot.after:
        return slot.deadline
    ready = max((done[key] for key in slot.after if key in done), default=None)
    if ready is None:
        return slot.deadline
    own = ready + settings.deadlines.get(str(slot.job), slot.deadline - slot.opens)
    if slot.closes is not None:
        own = min(own, slot.closes)  # never past the window (execution: the MOO cut-off)
    return max(slot.deadline, own)


def compute_agenda(
    calendar: Any,
    settings: ScheduleSettings,
    now: datetime,
    *,
    done: Mapping[str, datetime],
    state: State,
    started: datetime,
    recorded_missed: Iterable[str] = (),
    recorded_expired: Iterable[str] = (),
    lookback_days: int = 45,
) -> Agenda:
    """Return what is due, missed and expired at ``now`` (aware UTC).

    ``done`` maps the keys of completed slots to when they completed (the tick's clock);
    ``started`` is when this workbook's schedule began: a slot closed (or, without a close,
    past its deadline) before it is history; a slot still open then runs late but is never
    "missed". ``recorded_missed`` / ``recorded_expired`` are
    keys already acted on (reported once). Decision and execution are due only in RUN.
    """
    missed_before, expired_before = set(recorded_missed), set(recorded_expired)
    # Every slot opens after its own session's close: nothing of a later session is open yet.
    first = max(now.date() - timedelta(days=lookback_days), started.date() - timedelta(days=7))
    slots = compute_slots(calendar, settings, first, now.date())
    expired_keys = set(expired_before)
    # A reconciliation follows its execution once that is done or its window has closed: an
    # execution that ended short (an intent denied, the state not RUN in time) still sent
    # what it sent, and only reconciliation records those fills and shows the shortfall.
    closed = {s.key for s in slots if s.job is Job.EXECUTION and s.closes and s.closes <= now}
    due, missed, expired, waiting = [], [], [], []
    for slot in slots:
        if slot.key in done or slot.opens > now:
            continue
        end = slot.closes if slot.closes is not None else slot.deadline
        if end <= started or any(key in expired_keys for key in slot.after):
            # history from before the schedule began, or downstream of a cycle that was
            # skipped or halted: never due, never missed
            expired_keys.add(slot.key)
            continue
        if slot.key in expired_keys:
            continue
        ready = all(
            key in done or (slot.job is Job.RECONCILIATION and key in closed) for key in slot.after
        )
        is_closed = slot.closes is not None and slot.closes <= now
        if slot.job is Job.DECISION and is_closed:
            expired.append(slot)
            expired_keys.add(slot.key)
            continue
        deadline = _effective_deadline(slot, done, settings)
        if ready and started < deadline <= now and slot.key not in missed_before:
            missed.append(slot)
        if is_closed:
            continue
        if ready and (slot.job not in RUN_ONLY or state is State.RUN):
            due.append(slot)
        else:
            waiting.append(slot)
    return Agenda(tuple(due), tuple(missed), tuple(expired), tuple(waiting))


def compute_next_opening(
    calendar: Any, settings: ScheduleSettings, after: datetime, horizon_days: int = 10
) -> datetime | None:
    """Return the first slot opening strictly after ``after`` within the horizon, or None.

    The demo's simulated clock steps from one opening to the next instead of every 5 minutes.
    """
    # from the session before: a month-end's execution and reconciliation open on the next one
    first = calendar.previous_session(after.date())
    last = first + timedelta(days=horizon_days)
    last = calendar.session_on_or_before(min(last, calendar.covered_through))
    openings = [s.opens for s in compute_slots(calendar, settings, first, last) if s.opens > after]
    return min(openings) if openings else None
