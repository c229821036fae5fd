"""Incident evidence: the rule table that classifies an incident, and the failing runs it links.

What the ledger observed around one incident (its *episode*: from the last return to RUN before it
opened to its close) is read here, by rules listed once in a table, so ``incidents`` (open, close,
snapshot, investigate) and the CLI give the same answer for the same ledger.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

import pandas as pd

from ops_runner.core.errors import IncidentError
from ops_runner.core.events import EventKind, State, Trigger
from ops_runner.ledger import Ledger
from ops_runner.workbook.config import Config


class Cause(StrEnum):
    """The runbook's incident classes (section 4.1)."""

    DATA = "Data"
    BROKER = "Broker/API"
    SCHEDULER = "Scheduler"
    STRATEGY = "Strategy logic"
    MARKET = "Market anomaly"


# --- the rule table -----------------------------------------------------------------------------
# The evidence is the incident's own category plus what the ledger observed in its episode (from
# the last return to RUN before it opened to its close). Each observation points at one cause
# with a weight; the same thing observed again (the same check, trigger, job) counts once, at its
# highest weight. The cause with the highest total wins; a tie goes to the cause listed first in
# ``Cause``; no evidence at all leaves the cause undetermined (a person decides).
#   the incident's category (which code path opened it, not why) ............... 1
#   a state trigger, a failed check, a failed job, a rejection, a blocking QA .... 2
#   a missed deadline (unambiguous) ............................................ 3
#   any of those recorded in the incident's own transaction (what opened it) .... 5
# IncidentOpened.category (what the opening code path calls it) -> cause, weight 1
CATEGORY_CAUSE: dict[str, Cause] = {
    "data": Cause.DATA,
    "broker": Cause.BROKER,
    "execution": Cause.BROKER,
    "reconciliation": Cause.BROKER,
    "scheduler": Cause.SCHEDULER,
    "strategy": Cause.STRATEGY,
    "risk": Cause.MARKET,
    "market": Cause.MARKET,
}
# StateChanged.trigger in the incident's episode -> cause, weight 2 (kill switch, the generic
# incident trigger, approvals and restorations say nothing about the cause)
TRIGGER_CAUSE: dict[Trigger, Cause] = {
    Trigger.DATA_FAULT: Cause.DATA,
    Trigger.BROKER_FAULT: Cause.BROKER,
    Trigger.SUBMISSION_WINDOW_MISSED: Cause.BROKER,
    Trigger.RECONCILIATION_UNRESOLVED: Cause.BROKER,
    Trigger.DECISION_WINDOW_MISSED: Cause.SCHEDULER,
    Trigger.LEDGER_CORRUPT: Cause.SCHEDULER,
    Trigger.DRAWDOWN_BREACH: Cause.MARKET,
}
# CheckRecorded.check with passed false -> cause, weight 2
CHECK_CAUSE: dict[str, Cause] = {
    "data_fresh": Cause.DATA,
    "broker": Cause.BROKER,
    "reconciliation": Cause.BROKER,
    "clock": Cause.SCHEDULER,
    "timezone": Cause.SCHEDULER,
    "calendar": Cause.SCHEDULER,
    "heartbeat": Cause.SCHEDULER,
    "baseline": Cause.STRATEGY,  # config, strategy or code changed since the validated baseline
    "slippage_bands": Cause.MARKET,
    "integrity": Cause.SCHEDULER,  # a registered file or the price store changed outside
}
# JobFailed.job -> cause, weight 2 (a check job that crashed is the scheduler's)
JOB_CAUSE: dict[str, Cause] = {
    "data_qa": Cause.DATA,
    "decision": Cause.STRATEGY,
    "execution": Cause.BROKER,
    "reconciliation": Cause.BROKER,
    "slippage_report": Cause.MARKET,
    "replay": Cause.STRATEGY,
    "daily_checks": Cause.SCHEDULER,
    "pre_rebalance_checks": Cause.SCHEDULER,
}
WEIGHT_CATEGORY, WEIGHT_OBSERVED, WEIGHT_MISSED, WEIGHT_OWN = 1, 2, 3, 5
# JobMissed -> Scheduler (3); OrderStatusChanged rejected -> Broker/API (2);
# JobCompleted data_qa with outcome blocking (a blocking QA finding) -> Data (2).


@dataclass(frozen=True)
class Classification:
    """The cause the evidence points at (None: nothing points anywhere), scores, evidence."""

    incident_id: str
    cause: Cause | None
    scores: dict[str, int]
    evidence: tuple[tuple[str, str], ...]  # (cause, line) for every signal, in ledger order

    @property
    def label(self) -> str:
        return str(self.cause) if self.cause else "undetermined (no evidence points anywhere)"

    def lines(self) -> list[str]:
        """Return the evidence lines that point at the chosen cause."""
        return [line for cause, line in self.evidence if cause == self.cause]

    def to_frame(self) -> pd.DataFrame:
        rows = [{"cause": c, "evidence": line} for c, line in self.evidence]
        return pd.DataFrame(rows, columns=["cause", "evidence"])

    def to_payload(self) -> dict[str, Any]:
        return {"incident_id": self.incident_id, "cause": self.cause and str(self.cause),
                "scores": dict(self.scores), "evidence": self.lines()}  # fmt: skip


@dataclass(frozen=True)
class FailingRun:
    """A failed or missed run related to an incident, and its executed notebook if any."""

    job: str
    slot: str
    run_id: str | None
    outcome: str  # failed | missed | the artifact's outcome for an earlier attempt
    detail: str
    path: str | None  # workbook-relative (absolute when the ledger lives outside it)
    exists: bool
    seq: int


# --- the incident's events ----------------------------------------------------------------------


def _events(ledger: Ledger) -> list[Any]:
    return list(ledger.events())


def compute_opened_closed(events: Sequence[Any], incident_id: str) -> tuple[Any | None, Any | None]:
    """Return the incident's IncidentOpened and IncidentClosed events (None where there is none)."""
    opened = closed = None
    for event in events:
        if event.kind not in (EventKind.INCIDENT_OPENED, EventKind.INCIDENT_CLOSED):
            continue
        if event.payload["incident_id"] != incident_id:
            continue
        if event.kind == EventKind.INCIDENT_OPENED and opened is None:
            opened = event
        elif event.kind == EventKind.INCIDENT_CLOSED and closed is None:
            closed = event
    return opened, closed


def _unknown(incident_id: str) -> IncidentError:
    return IncidentError(f"no incident {incident_id!r} in the ledger")


def compute_episode(events: Sequence[Any], opened: Any, closed: Any | None) -> list[Any]:
    """Return the incident's episode: the events from the last return to RUN before ``opened``
    to ``closed`` (or now), what went wrong since the system was last healthy."""
    start = 0
    for event in events:
        if event.seq > opened.seq:
            break
        if event.kind == EventKind.STATE_CHANGED and event.payload.get("to") == str(State.RUN):
            start = event.seq
    end = closed.seq if closed is not None else float("inf")
    return [e for e in events if start < e.seq <= end]


def _run_ids(incident: Mapping[str, Any], opened: Any) -> set[str]:
    ids = {str(opened.run_id)} if getattr(opened, "run_id", None) else set()
    for line in incident.get("evidence") or ():
        match = re.match(r"run (\S+)", str(line))
        if match:
            ids.add(match.group(1))
    return ids


# --- the classification -------------------------------------------------------------------------


@dataclass(frozen=True)
class Signal:
    """One piece of evidence: the cause it points at, its weight, a line, and what it observed
    (``key``: repeated observations of the same thing count once, at their highest weight)."""

    cause: Cause
    weight: int
    line: str
    key: str


def compute_signals(events: Sequence[Any], incident_id: str) -> list[Signal]:
    """Return the evidence about ``incident_id`` among ``events``, by the rule table."""
    opened, closed = compute_opened_closed(events, incident_id)
    if opened is None:
        raise _unknown(incident_id)
    incident = opened.payload
    signals: list[Signal] = []
    category = str(incident.get("category") or "")
    if category in CATEGORY_CAUSE:
        line = f"incident category {category}: {incident.get('summary')}"
        signals.append(Signal(CATEGORY_CAUSE[category], WEIGHT_CATEGORY, line, "category"))
    for event in compute_episode(events, opened, closed):
        # recorded in the incident's own transaction: the cause that opened it
        own = event.recorded_at == opened.recorded_at
        p = event.payload
        where = f"event {event.seq}" + (" (recorded with the incident)" if own else "")
        found: tuple[Cause, int, str, str] | None = None
        if event.kind == EventKind.STATE_CHANGED:
            trigger = Trigger(p["trigger"]) if p.get("trigger") in set(Trigger) else None
            if trigger in TRIGGER_CAUSE:
                line = f"{where}: {p.get('from')} -> {p.get('to')} ({trigger}): {p.get('reason')}"
                found = (TRIGGER_CAUSE[trigger], WEIGHT_OBSERVED, line, f"trigger:{trigger}")
        elif event.kind == EventKind.CHECK_RECORDED and p.get("passed") is False:
            cause = CHECK_CAUSE.get(str(p.get("check")))
            if cause is not None:
                line = f"{where}: check {p.get('check')} failed: {p.get('detail')}"
                found = (cause, WEIGHT_OBSERVED, line, f"check:{p.get('check')}")
        elif event.kind == EventKind.JOB_FAILED:
            cause = JOB_CAUSE.get(str(p.get("job")), Cause.SCHEDULER)
            line = f"{where}: job {p.get('job')} ({p.get('slot')}) failed: {p.get('error')}"
            found = (cause, WEIGHT_OBSERVED, line, f"failed:{p.get('job')}")
        elif event.kind == EventKind.JOB_MISSED:
            line = f"{where}: job {p.get('job')} ({p.get('slot')}) missed {p.get('deadline')}"
            found = (Cause.SCHEDULER, WEIGHT_MISSED, line, f"missed:{p.get('job')}")
        elif event.kind == EventKind.ORDER_STATUS_CHANGED and p.get("status") == "rejected":
            line = f"{where}: order {p.get('client_ref')} rejected: {p.get('detail')}"
            found = (Cause.BROKER, WEIGHT_OBSERVED, line, "rejected")
        elif (
            event.kind == EventKind.JOB_COMPLETED
            and p.get("job") == "data_qa"
            and p.get("outcome") == "blocking"
        ):
            outputs = p.get("outputs") or {}
            line = (f"{where}: data QA as of {outputs.get('as_of', p.get('session'))} found "
                    f"blocking findings ({outputs.get('findings', '?')} findings)")  # fmt: skip
            found = (Cause.DATA, WEIGHT_OBSERVED, line, "qa:blocking")
        if found is not None:
            cause, weight, line, key = found
            signals.append(Signal(cause, WEIGHT_OWN if own else weight, line, key))
    return signals


def compute_classification(events: Sequence[Any], incident_id: str) -> Classification:
    """Return the classification of ``incident_id`` from ``events`` (pure; see the rule table)."""
    signals = compute_signals(events, incident_id)
    counted: dict[tuple[Cause, str], int] = {}
    for signal in signals:
        slot = (signal.cause, signal.key)
        counted[slot] = max(counted.get(slot, 0), signal.weight)
    scores = {str(cause): 0 for cause in Cause}
    for (cause, _), weight in counted.items():
        scores[str(cause)] += weight
    best = max(Cause, key=lambda c: (scores[str(c)], -list(Cause).index(c)))
    chosen = best if scores[str(best)] > 0 else None
    evidence = tuple((str(s.cause), s.line) for s in signals)
    return Classification(incident_id, chosen, scores, evidence)


def classify(ledger: Ledger, incident: Mapping[str, Any] | str) -> Classification:
    """Return the cause the ledger's evidence points at for ``incident`` (a row or an id).

    Raises IncidentError for an unknown id."""
    incident_id = incident if isinstance(incident, str) else str(incident["incident_id"])
    return compute_classification(_events(ledger), incident_id)


# --- the failing runs ---------------------------------------------------------------------------


def failing_runs(
    cfg: Config, ledger: Ledger, incident: Mapping[str, Any] | str
) -> list[FailingRun]:
    """Return the failed and missed runs related to ``incident`` (same run id, or in its
    episode), each with its executed notebook (ArtifactRecorded path) and whether it exists.

    A missed slot lists the notebooks of its earlier attempts (same slot) when any were run.
    """
    incident_id = incident if isinstance(incident, str) else str(incident["incident_id"])
    events = _events(ledger)
    opened, closed = compute_opened_closed(events, incident_id)
    if opened is None:
        raise _unknown(incident_id)
    run_ids = _run_ids(opened.payload, opened)
    episode = {e.seq for e in compute_episode(events, opened, closed)}
    artifacts = [e for e in events if e.kind == EventKind.ARTIFACT_RECORDED]
    found: list[FailingRun] = []

    def notebook(path: str | None) -> tuple[str | None, bool]:
        if not path:
            return None, False
        target = Path(path) if Path(path).is_absolute() else cfg.workbook / path
        return path, target.is_file()

    for event in events:
        p = event.payload
        related = event.seq in episode or str(p.get("run_id")) in run_ids
        if event.kind == EventKind.JOB_FAILED and related:
            art = next((a for a in artifacts if a.payload.get("run_id") == p.get("run_id")), None)
            path, exists = notebook(art.payload.get("path") if art else None)
            error = str(p.get("error") or "")
            run = FailingRun(str(p.get("job")), str(p.get("slot")), str(p.get("run_id")),
                             "failed", error, path, exists, event.seq)  # fmt: skip
            found.append(run)
        elif event.kind == EventKind.JOB_MISSED and related:
            tries = [a for a in artifacts if a.payload.get("slot") == p.get("slot")]
            for art in tries or [None]:
                path, exists = notebook(art.payload.get("path") if art else None)
                found.append(FailingRun(
                    str(p.get("job")), str(p.get("slot")),
                    str(art.payload.get("run_id")) if art else None, "missed",
                    f"deadline {p.get('deadline')}" + (
                        f"; attempt {art.payload.get('outcome')}" if art else "; never run"),
                    path, exists, event.seq))  # fmt: skip
    return found


def compute_run_links(cfg: Config, runs: Sequence[FailingRun], base: Path | None = None) -> str:
    """Return a Markdown list linking each run's notebook (relative to ``base``, else absolute)."""
    if not runs:
        return "_No failed or missed run is related to this incident._"
    lines = []
    for run in runs:
        head = f"- **{run.job}** `{run.slot}` {run.outcome}: {run.detail}"
        if run.path is None:
            lines.append(f"{head} — no executed notebook")
            continue
        target = Path(run.path) if Path(run.path).is_absolute() else cfg.workbook / run.path
        href = Path(os.path.relpath(target, base)) if base is not None else target.resolve()
        state = "" if run.exists else " (MISSING)"
        lines.append(f"{head} — [{run.path}]({href.as_posix()}){state}")
    return "\n".join(lines)
