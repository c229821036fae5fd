"""The tick's review and maintenance jobs: which incidents still need their investigation
notebook, when the weekly audit must wait, and publishing a cycle's slippage page.

The tick (``ops_runner.ops.tick``) decides when; this module decides what each needs.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from ops_runner.core.events import EventKind, State
from ops_runner.ledger import Ledger
from ops_runner.ledger.projections import compute_open_incidents, compute_state
from ops_runner.ops.schedule import Job, Slot
from ops_runner.reports.runs import write_runs_index
from ops_runner.reports.slippage import publish_report
from ops_runner.workbook.config import Config

log = logging.getLogger(__name__)

MAX_INVESTIGATIONS_PER_TICK = 3  # incident notebooks per tick; the rest wait for the next


def compute_uninvestigated(events: Any, limit: int = MAX_INVESTIGATIONS_PER_TICK) -> list[str]:
    """Return the open incidents no investigation notebook has started for, oldest first.

    An incident opened because an investigation itself failed is not investigated again
    (that would loop); its own notebook is linked from the incident it failed on.
    """

    events = list(events)
    started = {
        str(e.payload.get("slot"))
        for e in events
        if e.kind == str(EventKind.JOB_STARTED) and e.payload.get("job") == "incident"
    }
    return [
        str(i["incident_id"])
        for i in compute_open_incidents(events)
        if f"incident:{i['incident_id']}" not in started
        and not str(i["incident_id"]).startswith("job-incident-")
    ][:limit]


def read_incident_events(ledger: Ledger) -> list[Any]:
    """Return only what ``compute_uninvestigated`` reads (incidents opened and closed, jobs
    started), in ledger order: every tick asks, so an idle one must not decode the whole ledger."""
    kinds = (EventKind.INCIDENT_OPENED, EventKind.INCIDENT_CLOSED, EventKind.JOB_STARTED)
    events = [e for kind in kinds for e in ledger.events(kind=str(kind))]
    return sorted(events, key=lambda e: e.seq)


def investigate_incidents(
    cfg: Config,
    ledger: Ledger,
    clock: Callable[[], datetime],
    run_job: Callable[[Slot, datetime], tuple[bool, str]],
    on_job: Callable[[Any], None] | None,
) -> list[str]:
    """Runbook 4.1 on every new incident: the incident notebook, once per incident (its
    executed copy is the investigation's record, linked from the runs index). ``run_job`` runs
    a slot at an instant the tick's way (``tick.run_slot``)."""
    if not cfg.schedule.investigate_incidents:
        return []
    ran = []
    for incident_id in compute_uninvestigated(read_incident_events(ledger)):
        now = clock()
        slot = Slot(Job.INCIDENT, f"incident:{incident_id}", now.date(), None, now, now)
        if on_job is not None:
            on_job(slot)
        ran.append(run_job(slot, now)[1])
    return ran


def compute_audit_hold(events: Any) -> str | None:
    """Return why the weekly audit must wait, or None: the broker is down (the audit would
    only fail), or a cycle's orders went out and its reconciliation has not recorded the
    fills yet (the broker's positions would read as breaks). It runs at a later tick."""

    events = list(events)
    if compute_state(events).state is State.BROKER_DOWN:
        return "the broker is down"
    done = {
        str(e.payload["slot"])
        for e in events
        if e.kind == str(EventKind.JOB_COMPLETED) and e.payload.get("done")
    }
    for key in sorted(done):
        job, _, cycle = key.partition(":")
        if job == "execution" and f"reconciliation:{cycle}" not in done:
            return f"the {cycle} orders are not reconciled yet"
    return None


def publish_slippage(cfg: Config, notebook: Path, cycle: str, now: datetime | None = None) -> None:
    """The cycle's slippage page in reports/slippage/, linked from the runs index. Publishing
    is a view of a recorded run: when it fails, the run still counts and says so in the log."""

    try:
        page = publish_report(cfg, notebook, cycle)
        write_runs_index(cfg, now=now)
    except Exception as exc:  # boundary: a page that cannot render never undoes the report
        log.warning("slippage report of %s not published: %s", cycle, exc)
    else:
        log.info("slippage report of %s: %s", cycle, page)
