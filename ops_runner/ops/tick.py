"""`ops-runner tick`: the scheduler's entry point. Lock, safety checks, then the jobs due now.

A tick takes an exclusive lock (a second tick exits at once, "busy"), opens the ledger (a
corrupt ledger means HALT and nothing is written), obeys the kill switch, checks the clock
against the broker's, then asks ``schedule.compute_agenda`` what is due from the calendar and
the ledger, records missed jobs and expired decisions, and runs the due jobs in order: the
checks in-process, the others as notebooks through papermill. Every slot is keyed, so a job
done is never done again and running every tick twice changes nothing but the heartbeat file.
Alerts for what the tick recorded go out last, and never block it.

Most ticks find nothing due. So what only a due job needs (the data vendors and their HTTP
client, papermill and its kernels, the backup) is imported where the job registry runs it
(``ops/registry.py``, ``runtime/notebooks.py``), and an idle tick never loads it
(tests/integration/test_production_tick.py checks the idle tick's imports; benchmarks/tick.py
times it).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

from ops_runner.brokers import open_broker
from ops_runner.brokers.base import Broker
from ops_runner.core.clock import format_seconds, parse_instant
from ops_runner.core.deadline import TickDeadline
from ops_runner.core.errors import NotWritable, OpsError
from ops_runner.core.events import EventKind, State, Trigger
from ops_runner.core.faults import inject
from ops_runner.ledger import Ledger, open_ledger
from ops_runner.ledger.states import apply_trigger, enforce_kill_switch, incident_event, read_state
from ops_runner.market.calendar import open_calendar
from ops_runner.market.prices import open_store
from ops_runner.ops.checks import (
    compute_clock_check,
    heartbeat_path,
    record_checks,
    write_heartbeat,
)
from ops_runner.ops.maintenance import compute_audit_hold, investigate_incidents, publish_slippage
from ops_runner.ops.registry import CATEGORIES, JOBS, JobContext, JobWaiting, compute_parameters
from ops_runner.ops.schedule import RUN_ONLY, Job, Slot, compute_agenda
from ops_runner.ops.ticklock import NOTHING_RUN, hold_tick_lock
from ops_runner.runtime.alerts import pump_alerts
from ops_runner.runtime.notebooks import (
    compute_run_id,
    discard_spare_kernel,
    execute_job,
    keep_next_kernel_ready,
    kill_running_kernels,
    record_job_failure,
    record_orphaned_runs,
    start_kernel_ahead,
)
from ops_runner.workbook.config import Config

log = logging.getLogger(__name__)

MAX_JOBS_PER_TICK = 12
SCHEDULE_STARTED = "ScheduleStarted"


@dataclass(frozen=True)
class TickResult:
    """What one tick did: ``busy`` when another tick held the lock; ``ran`` one line per job."""

    busy: bool
    state: State | None
    message: str
    ran: tuple[str, ...] = field(default_factory=tuple)


def _plain(value: Any) -> Any:
    """JSON-safe and float-free (the ledger's canonical JSON refuses floats)."""
    # Not core.canonical.compute_json_ready: a notebook's outputs may hold floats, kept here as
    # their repr ("0.1"), and Decimals are left for canonical_json to spell ("1.50" -> "1.5");
    # compute_json_ready keeps a Decimal's own text and leaves floats for the ledger to refuse.
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, float):
        return repr(value)
    return value


def require_simulated_broker(cfg: Config) -> None:
    """Raise OpsError unless the broker is the simulated one: a fixed clock (``--now``) is
    for the demo, replays and tests, never for a real account."""
    if cfg.simulated:
        return
    raise OpsError(
        "--now (a simulated clock) is only accepted with broker.kind: sim, or broker.kind: ib "
        "with broker.simulator: true, mode paper, on 127.0.0.1 (the TWS simulator)"
    )


# --- what the ledger says -------------------------------------------------------------------


@dataclass
class Progress:
    """The schedule's record, folded from the ledger's job events."""

    started: datetime
    done: dict[str, datetime]
    missed: set[str]
    expired: set[str]
    held: set[str]


def read_progress(ledger: Ledger, now: datetime, fingerprint: Callable[[], str]) -> Progress:
    """Return what is done, missed, expired and held; records ScheduleStarted on first use.

    Held (not retried by the tick): a slot whose run failed since the last approval (leaving
    SAFE_MODE is the runbook's permission to retry), and a data QA that blocked on the price
    store as it still is (a re-run can only change when the data does).
    """
    first = ledger.get(SCHEDULE_STARTED)
    if first is None:
        first = ledger.append(SCHEDULE_STARTED, SCHEDULE_STARTED, {"at": format_seconds(now)})
    done: dict[str, datetime] = {}
    blocked: dict[str, str] = {}
    for event in ledger.events(kind=str(EventKind.JOB_COMPLETED)):
        slot = str(event.payload["slot"])
        if event.payload.get("done"):
            done.setdefault(slot, parse_instant(str(event.payload["at"])))
        elif event.payload.get("fingerprint"):
            blocked[slot] = str(event.payload["fingerprint"])
    missed: set[str] = set()
    expired: set[str] = set()
    for event in ledger.events(kind=str(EventKind.JOB_MISSED)):
        (expired if event.payload.get("expired") else missed).add(str(event.payload["slot"]))
    approval = ledger.last(str(EventKind.APPROVAL_USED))
    after = approval.seq if approval is not None else 0
    held = {
        str(e.payload["slot"])
        for e in ledger.events(kind=str(EventKind.JOB_FAILED), after_seq=after)
    }
    if blocked:
        current = fingerprint()
        held |= {slot for slot, seen in blocked.items() if seen == current}
    started = parse_instant(str(first.payload["at"]))
    return Progress(started, done, missed, expired, held - set(done))


def compute_store_fingerprint(cfg: Config) -> str:
    """Return a digest of the primary source's manifests: it changes when any data does."""
    digest = hashlib.sha256()
    folder = open_store(cfg).manifest_path(cfg.primary_source, "X").parent
    for path in sorted(folder.glob("*")) if folder.is_dir() else []:
        if path.is_file() and path.suffix == ".json":
            digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


# --- the tick ---------------------------------------------------------------------------------


def tick(
    cfg: Config,
    now: datetime | None = None,
    cancel: Callable[[], list[str]] | None = None,
    on_job: Callable[[Any], None] | None = None,
) -> TickResult:
    """Run one tick and return what happened.

    ``now`` fixes the clock (simulated broker only; None: the real UTC clock, read afresh
    before each job). ``on_job(slot)`` is called before each job (the demo's progress bar).
    Raises LedgerCorrupt (the system is in HALT; nothing is written to a corrupt ledger).
    """

    if now is not None:
        require_simulated_broker(cfg)
        cfg = replace(cfg, simulated_now=now)  # the ledger's stamps, its jobs' included
    cfg.primary_source  # noqa: B018 - no prices named, no tick: one line, nothing run
    clock: Callable[[], datetime] = (
        (lambda: now) if now is not None else (lambda: datetime.now(UTC))
    )
    with open_session(cfg, clock if now is not None else None) as session:
        if session is None:
            return TickResult(True, None, "busy: another tick holds the lock")
        ledger, broker = session.ledger, session.broker
        ran: list[str] = []
        view = enforce_kill_switch(cfg, ledger, cancel=cancel or broker.cancel_all)
        try:
            write_heartbeat(cfg, clock())
        except OSError as exc:  # a tick that cannot write trades nothing
            raise NotWritable("write the heartbeat", heartbeat_path(cfg), exc,
                              NOTHING_RUN) from None  # fmt: skip
        if view is None:
            _check_clock(cfg, ledger, broker, clock())
            _probe_broker_down(ledger, broker, clock())
            simulated = now is not None

            def run_job(slot: Slot, at: datetime) -> tuple[bool, str]:
                return run_slot(cfg, ledger, broker, slot, at, simulated, session.remaining)

            try:
                ran = _run_due(cfg, ledger, broker, clock, simulated, on_job, session.remaining)
                ran += investigate_incidents(cfg, ledger, clock, run_job, on_job)
            finally:  # a kernel started ahead that no job took
                keep_next_kernel_ready(False)
                discard_spare_kernel()
        view = read_state(ledger)
    message = f"state {view.state}"
    if view.state is not State.RUN and view.reason:
        message += f" ({view.trigger}: {view.reason})"
    if ran:
        message += "; ran " + ", ".join(ran)
    return TickResult(False, view.state, message, tuple(ran))


@dataclass(frozen=True)
class Session:
    """What the tick's frame holds for the work inside it."""

    ledger: Ledger
    broker: LazyBroker
    remaining: Callable[[], float]  # seconds left before the tick's deadline


@contextlib.contextmanager
def open_session(
    cfg: Config, clock: Callable[[], datetime] | None = None
) -> Iterator[Session | None]:
    """The tick's frame around any work, the tick's own or a job run by hand: its lock (None
    is yielded when another process holds it), its deadline, the ledger (a cut tail refused
    with LedgerCorrupt, nothing written), the broker opened when first needed, and the runs
    whose process died recorded as failed. On the way out: the broker closed, the alerts sent,
    the head anchored outside the file. ``clock`` fixes the broker's clock (simulated only).
    """

    limit = 60.0 * float(cfg.schedule.tick_deadline_minutes)
    watch = TickDeadline(limit, kill=kill_running_kernels, expire=lambda: _record_deadline(cfg))
    with hold_tick_lock(cfg) as held:
        if not held:
            yield None
            return
        with watch, open_ledger(cfg) as ledger:
            ledger.require_anchored(cfg.path("anchor"))
            broker = LazyBroker(cfg, clock)
            try:
                record_orphaned_runs(cfg, ledger, ORPHANED, CATEGORIES)
                yield Session(ledger, broker, watch.remaining)
            finally:
                broker.close()
                send_pending_alerts(cfg, ledger)
                _advance_anchor(cfg, ledger)


ORPHANED = "the run never ended: its process died (killed, power lost or stopped at a deadline)"


def _record_deadline(cfg: Config) -> None:
    """From the deadline's watchdog, the tick still stuck: record what it was running as
    failed (SAFE_MODE, an incident) and send the alerts, on a connection of its own."""

    minutes = float(cfg.schedule.tick_deadline_minutes)
    why = f"the tick's deadline of {minutes:g} min passed while this run was in progress"
    with open_ledger(cfg, busy_timeout=5.0) as ledger:
        if not record_orphaned_runs(cfg, ledger, why, CATEGORIES):
            _record_stuck_tick(ledger, why)
        send_pending_alerts(cfg, ledger)


def _record_stuck_tick(ledger: Ledger, why: str) -> None:
    """A tick stuck outside any notebook run: an incident and SAFE_MODE all the same."""

    incident_id = f"tick-deadline-{compute_run_id()}"
    summary = why.replace("this run was", "the tick was")
    opened = incident_event(incident_id, "scheduler", summary, [summary])
    apply_trigger(ledger, Trigger.INCIDENT, summary, [summary], extra_events=[opened])


def compute_refusal(slot: Slot, view: Any, done: Collection[str], now: datetime) -> str | None:
    """Return why the tick would not run ``slot`` at ``now``, or None when it would.

    The tick's rules, whoever asks: decision and execution only in RUN; nothing before its
    slot opens or after it closes (execution: the submission window); nothing before the
    jobs it follows are done. A slot done already may run again by hand: every job is safe
    to repeat (the ledger's keys and the broker lookups see to that).
    """
    if slot.job in RUN_ONLY and view.state is not State.RUN:
        why = f" ({view.reason})" if view.reason else ""
        return (
            f"{slot.job} runs only in RUN and the state is {view.state}{why}; "
            "leave it with an approval first (`ops-runner approve`, `ops-runner resume`)"
        )
    if slot.opens > now:
        return f"{slot.key} opens at {format_seconds(slot.opens)}; it is {format_seconds(now)}"
    if slot.closes is not None and slot.closes <= now:
        if slot.job is Job.EXECUTION:
            closed = format_seconds(slot.closes)
            return (
                f"the submission window for {slot.session} closed at {closed}; "
                "market-on-open orders are never sent late or as plain market orders"
            )
        return f"{slot.key} closed at {format_seconds(slot.closes)}; it is {format_seconds(now)}"
    if missing := [key for key in slot.after if key not in done]:
        return f"{', '.join(missing)} not done yet; {slot.key} follows it"
    return None


def _advance_anchor(cfg: Config, ledger: Ledger) -> None:
    """Anchor the head the tick leaves outside the file: a later cut shows at the next tick."""
    try:
        ledger.advance_anchor(cfg.path("anchor"))
    except OpsError as exc:  # the tick's work stands; the anchor only lags (verify catches up)
        log.error("%s", exc)


class LazyBroker:
    """The broker, opened only when a step needs it: an idle tick on the simulated broker
    never touches the broker's books. Checks read through the read-only role; only the kill
    switch's cancels open the orders role (at IB: another client id)."""

    def __init__(self, cfg: Config, clock: Callable[[], datetime] | None) -> None:
        self._cfg, self._clock = cfg, clock
        self._brokers: dict[str, Broker] = {}

    def get(self, role: str = "readonly") -> Broker:
        if role not in self._brokers:
            options = {"clock": self._clock} if self._clock is not None else {}
            self._brokers[role] = open_broker(self._cfg, role=role, **options)
        return self._brokers[role]

    def cancel_all(self) -> list[str]:
        broker = self.get("orders")
        broker.connect()
        return [o.client_ref for o in broker.open_orders() if broker.cancel(o.client_ref)]

    def close(self) -> None:
        for broker in self._brokers.values():
            broker.close()
        self._brokers.clear()


def send_pending_alerts(cfg: Config, ledger: Ledger) -> None:

    try:
        pump_alerts(cfg, ledger)
    except Exception:  # boundary: an alert failure never undoes or blocks the tick's work
        log.exception("sending alerts failed; the ledger holds what happened")


def _check_clock(cfg: Config, ledger: Ledger, broker: LazyBroker, now: datetime) -> None:
    """Clock against the broker's server time; beyond the limit: an incident and SAFE_MODE,
    recorded once per day. A broker without a session is the daily check's business."""

    try:
        health = broker.get().health()
    except OpsError as exc:
        log.warning("clock check skipped: %s", exc)
        return
    if not health.connected or health.server_time is None:
        return
    limit = int(cfg.schedule.max_clock_skew_seconds)
    check = compute_clock_check(health.server_time, now, limit)
    if not check.passed:
        record_checks(cfg, ledger, [check], f"tick:{now.date().isoformat()}")


def _probe_broker_down(ledger: Ledger, broker: LazyBroker, now: datetime) -> None:
    """In BROKER_DOWN every tick asks the broker again (its own retry policy included); a
    healthy session restores RUN, so a submission can still go out inside its window."""

    if read_state(ledger).state is not State.BROKER_DOWN:
        return
    try:
        health = broker.get().health()
    except OpsError as exc:
        log.warning("broker probe failed: %s", exc)
        return
    if health.connected:
        apply_trigger(ledger, Trigger.BROKER_RESTORED,
                      f"broker session healthy at {format_seconds(now)}",
                      [health.detail or "connected"])  # fmt: skip


def _probe_orders_session(
    ledger: Ledger, broker: Broker | LazyBroker | None, slot: Slot, now: datetime
) -> str | None:
    """Before the execution notebook: can the orders client id log in? When not, BROKER_DOWN
    (not a failed job: the next tick asks again until the window closes). The probe's session
    is closed before the kernel logs in with the same client id. Returns why not, or None."""

    if not isinstance(broker, LazyBroker):
        return None
    try:
        health = broker.get("orders").health()
    finally:
        broker.close()
    if health.connected:
        return None
    detail = health.detail or "no session"
    apply_trigger(ledger, Trigger.BROKER_FAULT, f"broker unavailable for {slot.key}: {detail}",
                  [f"probed at {format_seconds(now)}"], cycle_id=slot.cycle)  # fmt: skip
    return detail


def _run_due(
    cfg: Config,
    ledger: Ledger,
    broker: LazyBroker,
    clock: Callable[[], datetime],
    simulated: bool,
    on_job: Callable[[Any], None] | None,
    remaining: Callable[[], float] | None = None,
) -> list[str]:

    settings = cfg.schedule
    calendar = open_calendar(cfg)
    ran: list[str] = []
    tried: set[str] = set()  # a slot runs once per tick: one that waits is asked next tick
    for _ in range(MAX_JOBS_PER_TICK):
        now = clock()
        progress = read_progress(ledger, now, lambda: compute_store_fingerprint(cfg))
        agenda = compute_agenda(
            calendar,
            settings,
            now,
            done=progress.done,
            state=read_state(ledger).state,
            started=progress.started,
            recorded_missed=progress.missed,
            recorded_expired=progress.expired,
        )
        for slot in agenda.expired:
            _record_expired(cfg, ledger, slot, now)
        for slot in agenda.missed:
            _record_missed(ledger, slot, now, read_state(ledger).state)
        due = [s for s in agenda.due if s.key not in progress.held and s.key not in tried]
        # fresh prices first: a job that opened earlier and still waits may need them
        due.sort(key=lambda s: s.job != "data_fetch")
        if not due:
            break
        slot = due[0]
        tried.add(slot.key)
        if on_job is not None:
            on_job(slot)
        # A notebook's kernel boots while its run prepares; another notebook due after this one
        # has its kernel start while this one's cells run.
        if JOBS[slot.job].notebook is not None:
            start_kernel_ahead()
        keep_next_kernel_ready(
            JOBS[slot.job].notebook is not None and any(JOBS[s.job].notebook for s in due[1:])
        )
        ok, line = run_slot(cfg, ledger, broker, slot, now, simulated, remaining)
        ran.append(line)
        if not ok:
            break
    return ran


def _record_missed(ledger: Ledger, slot: Slot, now: datetime, state: State | None = None) -> None:
    """Playbook A: a job not done by its deadline opens an incident and moves to SAFE_MODE.
    An execution whose submission window closed with the broker still down is HALT."""

    payload = {
        "job": str(slot.job),
        "slot": slot.key,
        "session": slot.session.isoformat(),
        "cycle": slot.cycle,
        "deadline": format_seconds(slot.deadline),
        "at": format_seconds(now),
    }
    incident_id = f"missed-{slot.key.replace(':', '-')}"
    summary = f"{slot.job} ({slot.key}) not done by its deadline {format_seconds(slot.deadline)}"
    trigger = Trigger.INCIDENT
    if slot.job is Job.DATA_FETCH:  # no fresh prices: no decision on them (runbook, playbook C)
        trigger = Trigger.DATA_FAULT
        summary += f": {read_fetch_error(ledger, slot.key) or 'no answer from the providers'}"
    if slot.job is Job.EXECUTION and state is State.BROKER_DOWN:
        trigger = Trigger.SUBMISSION_WINDOW_MISSED
        summary = (
            f"the submission window closed at {format_seconds(slot.deadline)} with the broker down"
        )
    apply_trigger(
        ledger,
        trigger,
        summary,
        [f"checked at {format_seconds(now)}"],
        cycle_id=slot.cycle,
        extra_events=[
            (str(EventKind.JOB_MISSED), f"JobMissed:{slot.key}", payload),
            incident_event(incident_id, "scheduler", summary,
                           [f"deadline {format_seconds(slot.deadline)}",
                            f"checked at {format_seconds(now)}"]),
        ],
    )  # fmt: skip


def _record_expired(cfg: Config, ledger: Ledger, slot: Slot, now: datetime) -> None:
    """A decision found after its window is not caught up: HALT, or with
    ``schedule.missed_decision: skip_cycle`` the cycle is skipped (positions held) in SAFE_MODE."""

    policy = cfg.schedule.missed_decision
    closes = cast(datetime, slot.closes)  # only a slot with a window can expire
    payload = {
        "job": str(slot.job),
        "slot": slot.key,
        "session": slot.session.isoformat(),
        "cycle": slot.cycle,
        "deadline": format_seconds(closes),
        "at": format_seconds(now),
        "expired": True,
    }
    summary = (
        f"the {slot.cycle} decision's window closed at {format_seconds(closes)} without a "
        f"decision; policy {policy}"
    )
    incident_id = f"expired-{slot.key.replace(':', '-')}"
    events = [
        (str(EventKind.JOB_MISSED), f"JobMissed:{slot.key}:expired", payload),
        incident_event(incident_id, "scheduler", summary,
                       [f"window closed {format_seconds(closes)}",
                        f"found at {format_seconds(now)}"]),
    ]  # fmt: skip
    trigger = Trigger.DECISION_WINDOW_MISSED
    if policy == "skip_cycle":
        trigger = Trigger.INCIDENT
        events.append(
            (
                str(EventKind.CYCLE_SKIPPED),
                f"CycleSkipped:{slot.cycle}",
                {
                    "cycle": slot.cycle,
                    "session": slot.session.isoformat(),
                    "reason": "decision window missed; positions held to the next cycle",
                },
            )
        )
    apply_trigger(
        ledger,
        trigger,
        summary,
        [f"found at {format_seconds(now)}"],
        cycle_id=slot.cycle,
        extra_events=events,
    )


# --- running one slot ---------------------------------------------------------------------------


def run_slot(
    cfg: Config,
    ledger: Ledger,
    broker: Broker | LazyBroker | None,
    slot: Slot,
    now: datetime,
    simulated: bool,
    remaining: Callable[[], float] | None = None,
) -> tuple[bool, str]:
    """Run one slot and record its JobCompleted; returns (ran without failing, summary line).

    ``remaining()`` is the tick's time left: a notebook that could not finish inside it (its
    own deadline is longer) waits for the next tick instead of starting.
    """

    about = {
        "job": str(slot.job),
        "slot": slot.key,
        "session": slot.session.isoformat(),
        "cycle": slot.cycle,
        "at": format_seconds(now),
    }
    spec = JOBS[slot.job]
    if spec.in_process:
        return _run_in_process(cfg, ledger, broker, slot, now, about)
    if slot.job in RUN_ONLY and (why := _refusal_now(ledger, slot, now)):
        return True, f"{slot.key} waiting: {why}"
    if remaining is not None:
        needed = 60.0 * float(cfg.schedule.notebook_deadline_minutes)
        if remaining() < needed:
            return True, f"{slot.key} waiting: the tick's deadline is too near to start it"
    if slot.job is Job.EXECUTION:
        if down := _probe_orders_session(ledger, broker, slot, now):
            return True, f"{slot.key} waiting: broker unavailable ({down})"
    if slot.job is Job.AUDIT and (why := compute_audit_hold(ledger.events())):
        return True, f"{slot.key} waiting: {why}"
    if isinstance(broker, LazyBroker):
        broker.close()  # the kernel logs in with the same client ids: free them first
    run = execute_job(
        cfg,
        str(spec.notebook),
        slot.folder,
        compute_parameters(cfg, slot, now, simulated),
        slot=slot.key,
        session=slot.session.isoformat(),
        cycle=slot.cycle,
        at=now,
        category=spec.category,
    )
    if not run.ok:
        return False, f"{slot.key} FAILED: {run.error}"
    if slot.job is Job.SLIPPAGE_REPORT:
        publish_slippage(cfg, cast(Path, run.output), str(slot.cycle), now)  # ok: it has its output
    done, outcome = spec.judge(run.completion or {})
    payload = {
        **about,
        "run_id": run.run_id,
        "done": done,
        "outcome": outcome,
        "outputs": _plain(run.completion),
    }
    if str(slot.job) == "data_qa" and not done:
        payload["fingerprint"] = compute_store_fingerprint(cfg)
    _record_qa_state(ledger, slot, outcome, run.run_id)
    inject("job:before_completed")
    ledger.append(
        str(EventKind.JOB_COMPLETED),
        f"JobCompleted:{run.run_id}",
        payload,
        run_id=run.run_id,
        cycle_id=slot.cycle,
    )
    return True, f"{slot.key} {outcome}"


def read_fetch_error(ledger: Ledger, slot_key: str) -> str | None:
    """Return the last error a slot's data fetch recorded, or None."""
    found = None
    for event in ledger.events(kind=str(EventKind.CHECK_RECORDED)):
        if event.payload.get("check") == "data_fetch" and event.payload.get("slot") == slot_key:
            found = str(event.payload.get("detail"))
    return found


def _refusal_now(ledger: Ledger, slot: Slot, now: datetime) -> str | None:
    """The tick's rules again at the last moment, for every caller of run_slot (the demo,
    the drill, a library call): a decision or execution never runs where the tick would not."""

    return compute_refusal(slot, read_state(ledger), read_done(ledger), now)


def read_done(ledger: Ledger) -> set[str]:
    """Return the keys of the slots the ledger records as done."""
    return {
        str(e.payload["slot"])
        for e in ledger.events(kind=str(EventKind.JOB_COMPLETED))
        if e.payload.get("done")
    }


def _record_qa_state(ledger: Ledger, slot: Slot, outcome: str, run_id: str) -> None:
    """A blocking data QA is DEGRADED_DATA (no decision); a clean one restores the data."""

    if str(slot.job) != "data_qa":
        return
    if outcome == "blocking":
        apply_trigger(
            ledger,
            Trigger.DATA_FAULT,
            f"data QA of {slot.session} found blocking findings",
            [f"run {run_id}"],
            run_id=run_id,
        )
    else:
        apply_trigger(
            ledger,
            Trigger.DATA_RESTORED,
            f"data QA of {slot.session} clean",
            [f"run {run_id}"],
            run_id=run_id,
        )


def _run_in_process(
    cfg: Config,
    ledger: Ledger,
    broker: Broker | LazyBroker | None,
    slot: Slot,
    now: datetime,
    about: dict[str, Any],
) -> tuple[bool, str]:
    """Run a job that needs no kernel (checks, backup, data fetch) and record its JobCompleted.
    One that waits (a vendor down) records nothing more; one that crashes is a failed job."""

    run_id = compute_run_id(now)
    opener = broker.get if isinstance(broker, LazyBroker) else (lambda: cast(Broker, broker))
    context = JobContext(cfg, ledger, opener if broker is not None else None, slot, now, run_id)
    try:
        done = cast(Callable, JOBS[slot.job].run)(context)
    except JobWaiting as exc:
        log.warning("%s waiting: %s", slot.key, exc)
        return True, f"{slot.key} waiting: {exc}"
    except Exception as exc:  # boundary: a check, backup or fetch that crashes is a failed job
        _record_crash(ledger, slot, about, run_id, exc)
        return False, f"{slot.key} FAILED ({type(exc).__name__})"
    ledger.append(
        str(EventKind.JOB_COMPLETED),
        f"JobCompleted:{run_id}",
        {**about, "run_id": run_id, "done": True, "outcome": done.outcome,
         "outputs": dict(done.outputs)},
        run_id=run_id,
        cycle_id=slot.cycle,
    )  # fmt: skip
    return True, f"{slot.key} {done.outcome}"


def _record_crash(ledger: Ledger, slot: Slot, about: dict, run_id: str, exc: Exception) -> None:

    log.exception("%s crashed", slot.key)
    error = f"{type(exc).__name__}: {exc}"
    record_job_failure(ledger, {**about, "run_id": run_id}, error, "scheduler", [f"run {run_id}"])
