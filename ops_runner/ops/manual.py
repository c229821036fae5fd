"""The operator's hands: a job run by hand and the kill switch, under the tick's own rules.

``ops-runner run`` obeys exactly what the tick obeys (its lock, deadline, kill switch, the
state, the windows and the order of the jobs), so a manual run can never do what the tick
would refuse. ``ops-runner kill`` must stop trading even when the workbook cannot be written.
"""

from __future__ import annotations

import logging
import sqlite3
from dataclasses import replace
from datetime import datetime
from pathlib import Path

from ops_runner.core.errors import NotWritable, OpsError
from ops_runner.ledger import open_ledger
from ops_runner.ledger.states import (
    enforce_kill_switch,
    read_state,
    record_kill_switch,
    write_kill_switch,
)
from ops_runner.ops.schedule import WEEKLY_JOBS, Slot
from ops_runner.ops.tick import (
    LazyBroker,
    compute_refusal,
    open_session,
    read_done,
    require_simulated_broker,
    run_slot,
    send_pending_alerts,
)
from ops_runner.ops.ticklock import lock_path
from ops_runner.workbook.config import Config

log = logging.getLogger(__name__)


class RunRefused(OpsError):
    """A job asked for by hand that the tick would not run now; nothing was run or recorded."""


def run_by_hand(cfg: Config, slot: Slot, now: datetime, simulated: bool) -> tuple[bool, str]:
    """Run one slot as ``ops-runner run`` does, inside the tick's frame (lock, deadline, the
    ledger's anchor, runs that died) and under its rules (kill switch, state, windows, order).
    Returns run_slot's (ok, line); raises RunRefused, saying why, when the tick would not.

    ``simulated``: ``now`` is a fixed instant (simulated brokers only).
    """

    if slot.job in WEEKLY_JOBS and str(slot.job) not in cfg.schedule.weekly:
        raise RunRefused(
            f"run {slot.job}: schedule.weekly_{slot.job} is off, so the tick would not run it "
            "either; turn it on in config.yaml first"
        )
    if simulated:
        require_simulated_broker(cfg)
        cfg = replace(cfg, simulated_now=now)  # the ledger's stamps too
    with open_session(cfg, (lambda: now) if simulated else None) as session:
        if session is None:
            raise RunRefused(
                "a tick or another run holds the workbook's lock; nothing was run: try again "
                f"when it ends (the lock is {lock_path(cfg)})"
            )
        ledger, broker = session.ledger, session.broker
        if (halted := enforce_kill_switch(cfg, ledger, broker.cancel_all)) is not None:
            raise RunRefused(f"the kill switch is present: {halted.reason}; nothing run")
        why = compute_refusal(slot, read_state(ledger), read_done(ledger), now)
        if why is not None:
            raise RunRefused(f"run {slot.job}: {why}; the tick would not run it either")
        return run_slot(cfg, ledger, broker, slot, now, simulated, session.remaining)


def engage_kill_switch(cfg: Config, reason: str) -> Path:
    """``ops-runner kill``: write the kill switch file (the next tick cancels pending orders and
    goes to HALT). Returns its path.

    When the file cannot be written (a read-only or full workbook) trading must stop all the
    same: the HALT goes straight into the ledger, pending orders cancelled first, and
    NotWritable says so (the caller exits non-zero). When the ledger cannot record it either,
    NotWritable says that trading is NOT stopped and how to stop it by hand.
    """

    path = cfg.path("kill_switch")
    try:
        return write_kill_switch(cfg, reason)
    except OSError as exc:
        failed = exc
    note = f"the kill switch file could not be written ({failed.strerror or failed})"
    try:
        # no tick lock: its file may be what cannot be written, and a state change is
        # race-safe on its own (one way out of each state episode)
        with open_ledger(cfg, busy_timeout=10.0) as ledger:
            broker = LazyBroker(cfg, None)
            try:
                record_kill_switch(cfg, ledger, reason, broker.cancel_all, note=note)
            finally:
                broker.close()
                send_pending_alerts(cfg, ledger)
    except (OpsError, OSError, sqlite3.Error) as exc:
        raise NotWritable(
            "write the kill switch", path, failed,
            f"the ledger could not record the HALT either ({exc}): trading is NOT stopped; stop "
            "the scheduler (systemctl stop ops-runner-tick.timer, or comment out the crontab "
            "line) and cancel open orders at the broker",
        ) from None  # fmt: skip
    raise NotWritable(
        "write the kill switch", path, failed,
        "HALT recorded in the ledger instead and pending orders cancelled: no tick will "
        "trade; once fixed, run `ops-runner kill` again so the file stands",
    )  # fmt: skip
