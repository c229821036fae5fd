"""The tick's in-process checks: the clock, the daily checks and runbook 3.1's pre-rebalance checks.

Each check is a ``Check`` (name, passed, detail, evidence, what a failure and a pass trigger),
recorded as a ``CheckRecorded`` event keyed by the check and the slot, so running a slot twice
records it once. A failure moves the state the runbook's way: data -> DEGRADED_DATA, broker ->
BROKER_DOWN, anything else (clock, time zone, calendar, baseline) -> an incident and SAFE_MODE.
No kernel starts here: these run inside the tick.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from ops_runner.brokers.base import AccountValues, Broker
from ops_runner.core.canonical import canonical_json
from ops_runner.core.clock import format_seconds, parse_instant
from ops_runner.core.errors import CalendarError, DataError, OpsError
from ops_runner.core.events import EventKind, State, Trigger
from ops_runner.core.files import write_bytes_atomic
from ops_runner.core.hashing import compute_sha256
from ops_runner.core.version import compute_code_version
from ops_runner.ledger import Ledger, open_ledger
from ops_runner.ledger.states import apply_trigger, incident_event, read_state, record_equity_mark
from ops_runner.market.calendar import open_calendar
from ops_runner.market.integrity import CHECK, compute_data_fingerprint, compute_integrity
from ops_runner.market.prices import open_store
from ops_runner.runtime.alerts import Alert, send_alert
from ops_runner.strategy.momentum import STRATEGY_VERSION
from ops_runner.workbook.config import Config, mask_account

log = logging.getLogger(__name__)

EXCHANGE_TIMEZONE = "America/New_York"
HEARTBEAT_NAME = "heartbeat.json"


@dataclass(frozen=True)
class Check:
    """One check's result and what it means for the state."""

    name: str
    passed: bool
    detail: str
    evidence: tuple[str, ...] = ()
    on_fail: Trigger | None = Trigger.INCIDENT
    on_pass: Trigger | None = None
    alert_only: bool = False  # a failure is worth an alert, not a state change

    def to_payload(self, slot: str) -> dict[str, Any]:
        return {
            "check": self.name,
            "slot": slot,
            "passed": self.passed,
            "detail": self.detail,
            "evidence": list(self.evidence),
        }


# --- the checks ---------------------------------------------------------------------------------


def compute_clock_check(server_time: datetime | None, local: datetime, limit_seconds: int) -> Check:
    """Return the clock check: |local - broker server time| within ``limit_seconds``."""
    if server_time is None:
        return Check(
            "clock",
            False,
            "the broker gave no server time to compare the clock with",
            on_fail=Trigger.BROKER_FAULT,
        )
    skew = (local - server_time).total_seconds()
    evidence = (
        f"local {format_seconds(local)}",
        f"broker {format_seconds(server_time)}",
        f"skew {skew:+.1f} s",
        f"limit {limit_seconds} s",
    )
    if abs(skew) > limit_seconds:
        return Check(
            "clock",
            False,
            f"clock off the broker's by {skew:+.1f} s (limit "
            f"{limit_seconds} s); fix NTP before trading",
            evidence,
        )
    return Check("clock", True, f"clock within {abs(skew):.1f} s of the broker's", evidence)


def check_timezone(cfg: Config) -> Check:
    """Return whether the schedule works in the exchange's time zone."""
    zone = cfg.schedule.timezone
    if zone != EXCHANGE_TIMEZONE:
        return Check(
            "timezone",
            False,
            f"schedule.timezone is {zone}, not the exchange's "
            f"{EXCHANGE_TIMEZONE}; windows and closes would be read wrongly",
        )
    return Check("timezone", True, f"schedule in {zone}, the exchange's time zone")


def check_calendar(cfg: Config, session: date) -> Check:
    """Return whether the calendar knows the coming rebalance session, its close and the open
    after it (early closes included): a calendar that ends too soon is an incident. With
    ``strategy.signal_offset`` the rebalance is decided on the signal session, so that is the
    session named, with its month-end."""
    calendar = open_calendar(cfg)
    offset = cfg.schedule.signal_offset
    try:
        following = calendar.next_session(session)
        rebalance = following if calendar.is_rebalance_session(following, offset) else session
        if not calendar.is_rebalance_session(rebalance, offset):
            rebalance = calendar.rebalance_session(session.year, session.month, offset)
        close = calendar.session_close(rebalance).tz_convert(EXCHANGE_TIMEZONE)
        after = calendar.next_session(rebalance)
        month_end = calendar.rebalance_session(rebalance.year, rebalance.month)
    except CalendarError as exc:
        return Check("calendar", False, f"the calendar cannot place the rebalance: {exc}")
    early = " (early close)" if calendar.is_early_close(rebalance) else ""
    named = (
        f"rebalance session {rebalance}"
        if offset == 0
        else f"signal session {rebalance} (month-end {month_end}, signal_offset {offset})"
    )
    return Check(
        "calendar",
        True,
        f"{named} closes {close:%H:%M} ET{early}; orders for the {after} open",
        (f"covered through {calendar.covered_through}",),
    )


def check_data_fresh(cfg: Config, through: date) -> Check:
    """Return whether every universe symbol has a bar for ``through`` in the primary source."""
    source = cfg.primary_source
    store = open_store(cfg)
    stale = []
    for symbol in cfg.universe_symbols:
        try:
            last = store.load_bars(source, symbol).index.max()
        except DataError as exc:
            stale.append(f"{symbol}: {exc}")
            continue
        last_day = last.date() if hasattr(last, "date") else last
        if last_day < through:
            stale.append(f"{symbol}: last bar {last_day}")
    if stale:
        return Check(
            "data_fresh",
            False,
            f"{len(stale)} symbol(s) not fresh through {through}",
            tuple(stale),
            on_fail=Trigger.DATA_FAULT,
        )
    return Check(
        "data_fresh",
        True,
        f"{len(cfg.universe_symbols)} symbols fresh through {through}",
        on_pass=Trigger.DATA_RESTORED,
    )


def check_broker(cfg: Config, broker: Broker) -> tuple[Check, AccountValues | None]:
    """Return the broker health check and the account values (None when unreachable).

    Healthy means: a session exists, the account answers (permissions intact), it is the
    configured account when one is configured, and paper or live as ``broker.mode`` says
    (IB paper accounts are the ones starting with DU).
    """

    wanted = cfg.broker
    try:
        health = broker.connect()
        values = broker.account_values()
    except OpsError as exc:
        return Check(
            "broker",
            False,
            f"broker unreachable: {exc}",
            on_fail=Trigger.BROKER_FAULT,
            on_pass=None,
        ), None
    problems = []
    if not health.connected:
        problems.append(f"no session: {health.detail}")
    account = values.account or health.account or ""
    if wanted.account and account != wanted.account:
        problems.append(
            f"account {mask_account(account)} is not the configured {mask_account(wanted.account)}"
        )
    paper = health.paper if health.paper is not None else account.startswith("DU")
    if (wanted.mode == "paper") != bool(paper):
        problems.append(
            f"the broker session is {'paper' if paper else 'live'} but broker.mode is {wanted.mode}"
        )
    evidence = (
        f"account {mask_account(account)}",
        f"mode {'paper' if paper else 'live'}",
        f"net liquidation {values.net_liquidation}",
    )
    if problems:
        return Check(
            "broker", False, "; ".join(problems), evidence, on_fail=Trigger.BROKER_FAULT
        ), values
    return Check(
        "broker", True, "broker session healthy", evidence, on_pass=Trigger.BROKER_RESTORED
    ), values


def compute_baseline(cfg: Config) -> dict[str, Any]:
    """Return what a validated baseline pins: config hash, strategy version, code version."""

    return {
        "config_hash": cfg.hash,
        # The name as written: StrategySettings would refuse rules a decision refuses, and the
        # baseline must still be computed (and compared) for them.
        "strategy_version": f"{cfg.values['strategy']['name']}/v{STRATEGY_VERSION}",
        "code_version": compute_code_version(),
    }


def check_baseline(cfg: Config, ledger: Ledger) -> Check:
    """Return whether config, strategy and code are the validated baseline's."""
    approved = ledger.last(str(EventKind.BASELINE_APPROVED))
    if approved is None:
        return Check(
            "baseline",
            False,
            "no validated baseline: review the config and code, "
            "then run `ops-runner baseline approve --reason ...`",
        )
    now = compute_baseline(cfg)
    changed = [
        f"{name}: approved {json.dumps(approved.payload.get(name), sort_keys=True)}, "
        f"now {json.dumps(value, sort_keys=True)}"
        for name, value in now.items()
        if approved.payload.get(name) != value
    ]
    if changed:
        return Check(
            "baseline",
            False,
            "changed since the validated baseline (event "
            f"{approved.seq}); review and approve a new baseline",
            tuple(changed),
        )
    return Check("baseline", True, f"unchanged since the baseline of event {approved.seq}")


def record_data_qa(cfg: Config, report: Any, run_id: str | None = None) -> Any:
    """Record a data QA run (QARecorded) and return the event: its session, sources, whether
    it blocked, its findings by severity, and the fingerprint of the stored data it read. A
    decision needs a clean one for its session on the data as it still is. The same result on
    the same data records nothing new."""
    from collections import Counter

    fingerprint = compute_data_fingerprint(cfg)
    session = report.as_of.isoformat()
    payload = {
        "session": session,
        "primary": report.primary,
        "secondary": report.secondary,
        "blocking": bool(report.blocking),
        "findings": dict(sorted(Counter(str(f.severity) for f in report.findings).items())),
        "fingerprint": fingerprint,
    }
    key = f"QARecorded:{session}:{fingerprint}:{'blocking' if report.blocking else 'clean'}"
    with open_ledger(cfg) as ledger:
        return ledger.get(key) or ledger.append(str(EventKind.QA_RECORDED), key, payload,
                                                run_id=run_id)  # fmt: skip


def approve_baseline(cfg: Config, reason: str, now: datetime | None = None) -> dict[str, Any]:
    """Record the current config, strategy and code as the validated baseline; returns it."""

    if not reason.strip():
        raise OpsError("baseline approve: say what was reviewed with --reason")
    payload = {
        **compute_baseline(cfg),
        "reason": reason.strip(),
        "approved_at": format_seconds(now or datetime.now(UTC)),
    }
    pinned = canonical_json({k: payload[k] for k in compute_baseline(cfg)})
    key = f"BaselineApproved:{compute_sha256(pinned)[:16]}"
    with open_ledger(cfg) as ledger:
        existing = ledger.get(key)
        if existing is not None:
            return dict(existing.payload)
        return dict(ledger.append(str(EventKind.BASELINE_APPROVED), key, payload).payload)


def heartbeat_path(cfg: Config) -> Path:
    return cfg.path("kill_switch").parent / HEARTBEAT_NAME


def read_heartbeat(cfg: Config) -> dict[str, Any]:
    """Return the heartbeat file's content ({} when absent or unreadable)."""
    try:
        return json.loads(heartbeat_path(cfg).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def write_heartbeat(cfg: Config, now: datetime) -> None:
    """Record this tick's instant and the longest gap between ticks of the day so far.

    A file, not the ledger: the heartbeat changes every tick and the ledger stays identical
    when nothing happened. The daily check reads the day's longest gap from it.
    """
    beat = read_heartbeat(cfg)
    previous = beat.get("last")
    gap = 0.0
    if previous:
        try:
            gap = (now - parse_instant(previous)).total_seconds()
        except ValueError:
            gap = 0.0
    day = now.date().isoformat()
    longest = max(gap, float(beat.get("longest_gap_seconds", 0))) if beat.get("day") == day else gap
    beat = {
        "last": format_seconds(now),
        "day": day,
        "longest_gap_seconds": round(max(longest, 0.0), 1),
    }
    path = heartbeat_path(cfg)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_bytes_atomic(path, (json.dumps(beat) + "\n").encode())


def check_heartbeat(beat: dict[str, Any], max_gap_minutes: int) -> Check:
    """Return whether the scheduler ticked at least every ``max_gap_minutes`` today."""
    gap = float(beat.get("longest_gap_seconds", 0.0))
    detail = f"longest gap between ticks today {gap / 60:.1f} min (limit {max_gap_minutes})"
    passed = gap <= max_gap_minutes * 60
    return Check(
        "heartbeat",
        passed,
        detail if passed else detail + ": is the scheduler running?",
        alert_only=True,
        on_fail=None,
    )


# --- recording ----------------------------------------------------------------------------------


def _degraded_by_freshness(ledger: Ledger) -> bool:

    view = read_state(ledger)
    return view.state is State.DEGRADED_DATA and view.reason.startswith("data_fresh check")


def record_checks(
    cfg: Config, ledger: Ledger, checks: Iterable[Check], slot: str, run_id: str | None = None
) -> State:
    """Record each check once for ``slot`` and apply its trigger; returns the state after."""

    for check in checks:
        key = f"CheckRecorded:{check.name}:{slot}"
        event = (str(EventKind.CHECK_RECORDED), key, check.to_payload(slot))
        if ledger.get(key) is not None:
            continue
        trigger = check.on_pass if check.passed else check.on_fail
        if trigger is Trigger.DATA_RESTORED and not _degraded_by_freshness(ledger):
            trigger = None  # fresh bars do not clear a QA fault: only a clean data QA does
        if trigger is None:
            ledger.append(*event, run_id=run_id)
            if not check.passed and check.alert_only:
                send_alert(
                    cfg,
                    Alert(f"check {check.name} failed", check.detail, "warning"),
                    ledger=ledger,
                    key=key,
                )
            continue
        extra = [event]
        if trigger is Trigger.INCIDENT:
            incident_id = f"check-{check.name}-{slot.replace(':', '-')}"
            summary = f"{check.name} check failed: {check.detail}"
            extra.append(incident_event(incident_id, "scheduler", summary, check.evidence))
        reason = f"{check.name} check {'passed' if check.passed else 'failed'}: {check.detail}"
        apply_trigger(ledger, trigger, reason, check.evidence, run_id=run_id, extra_events=extra)
    return read_state(ledger).state


def run_daily_checks(
    cfg: Config, ledger: Ledger, broker: Broker, session: date, slot: str, run_id: str | None = None
) -> list[Check]:
    """The daily checks after ``session``'s close: data freshness, broker health, heartbeat,
    integrity (registered notebooks and snapshots, the price store), the equity mark and
    drawdown (which may HALT). Returns the checks."""

    calendar = open_calendar(cfg)
    checks = [check_data_fresh(cfg, calendar.previous_session(session))]
    broker_check, values = check_broker(cfg, broker)
    checks.append(broker_check)
    gap = int(cfg.schedule.heartbeat_max_gap_minutes)
    checks.append(check_heartbeat(read_heartbeat(cfg), gap))
    if ledger.get(f"CheckRecorded:integrity:{slot}") is None:  # hashing once per session
        passed, detail, evidence = compute_integrity(cfg, ledger)
        checks.append(Check(CHECK, passed, detail, tuple(evidence)))
    record_checks(cfg, ledger, checks, slot, run_id)
    if values is not None and ledger.get(f"EquityMarked:{session.isoformat()}") is None:
        source = f"broker:{cfg.broker.kind}"
        record_equity_mark(ledger, cfg, session, values.net_liquidation, source, run_id=run_id)
    return checks


def run_pre_rebalance_checks(
    cfg: Config,
    ledger: Ledger,
    broker: Broker,
    session: date,
    slot: str,
    now: datetime,
    run_id: str | None = None,
) -> list[Check]:
    """Runbook 3.1 after ``session``'s close: clock, time zone, calendar, data fresh through
    the close, broker session and mode, baseline unchanged. Returns the checks."""
    try:
        server_time = broker.health().server_time
    except OpsError:
        server_time = None
    limit = int(cfg.schedule.max_clock_skew_seconds)
    checks = [
        compute_clock_check(server_time, now, limit),
        check_timezone(cfg),
        check_calendar(cfg, session),
        check_data_fresh(cfg, session),
        check_broker(cfg, broker)[0],
        check_baseline(cfg, ledger),
    ]
    record_checks(cfg, ledger, checks, slot, run_id)
    return checks
