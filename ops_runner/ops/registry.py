"""The job registry: what each job of the tick is, in one spec per job.

``schedule`` says when a job is due; this says what it is and how it runs. A spec names the
job's notebook (``notebooks/<job>.ipynb``, run by papermill in a fresh kernel) or its
in-process callable (the checks, the backup, the data fetch, the replay and the dependency scan
need no kernel),
the notebook parameters a slot fills, how a completed run is judged (done, or the cycle still
open), and the incident category a failure opens. The tick and ``ops-runner run`` run a slot through
``tick.run_slot``, which reads only this table; the CLI lists its jobs from it.

The tick and every `ops-runner` command import this table, so each in-process job imports its
callable inside its runner: reading the table loads neither the backup, the checks nor the
data sources.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from ops_runner.brokers.base import Broker
from ops_runner.core.clock import format_seconds
from ops_runner.core.errors import OpsError
from ops_runner.core.hashing import compute_sha256
from ops_runner.ledger import Ledger
from ops_runner.ops.schedule import Job, Slot
from ops_runner.workbook.config import Config


class JobWaiting(OpsError):  # noqa: N818 - a state of the slot, not a failure
    """An in-process job could not do its work yet (a vendor down): the slot waits for the
    next tick; past its deadline the tick's missed-job rule applies."""


@dataclass(frozen=True)
class JobContext:
    """What an in-process job is given: the workbook, its open ledger, the broker (opened on
    first use; ``None`` for a drill or demo rerun, which run notebook jobs only), the slot, the
    instant and the run id its records carry."""

    cfg: Config
    ledger: Ledger
    broker: Callable[[], Broker] | None
    slot: Slot
    now: datetime
    run_id: str


@dataclass(frozen=True)
class JobDone:
    """An in-process job's result: its outcome line and the outputs its JobCompleted keeps."""

    outcome: str
    outputs: Mapping[str, Any] = field(default_factory=dict)


def judge_status(completion: Mapping[str, Any]) -> tuple[bool, str]:
    """Done once completed; the outcome is the status the notebook glued."""
    return True, str(completion.get("status", "completed"))


def judge_data_qa(completion: Mapping[str, Any]) -> tuple[bool, str]:
    """A blocking QA is not done: DEGRADED_DATA, and the decision waits for a clean one."""
    blocking = bool(completion.get("blocking"))
    return not blocking, "blocking" if blocking else "clean"


def judge_reconciliation(completion: Mapping[str, Any]) -> tuple[bool, str]:
    """Not done while it waits for fills (WAIT) or was stopped (STOPPED)."""
    status = str(completion.get("status", "completed"))
    return status not in ("WAIT", "STOPPED"), status


def judge_execution(completion: Mapping[str, Any]) -> tuple[bool, str]:
    """Not done while an intent is not at the broker (denied by the gate, stopped before it):
    the tick sends it once the state allows, inside the window; past it the job is missed."""
    status = str(completion.get("status", "completed"))
    if unsettled := list(completion.get("unsettled") or []):
        return False, f"{status}, not at the broker: {', '.join(map(str, unsettled))}"
    return judge_reconciliation(completion)


def _run_backup(ctx: JobContext) -> JobDone:
    # here, not at the top: pandas loads only when this job runs, not on every tick
    from ops_runner.ops.backup import create_backup

    result = create_backup(ctx.cfg, now=ctx.now, reason=f"weekly ({ctx.slot.key})")
    return JobDone(f"archived {result.archive.name}")


def _checks_line(checks: list[Any]) -> JobDone:
    failed = [c.name for c in checks if not c.passed]
    return JobDone("passed" if not failed else "failed: " + ", ".join(failed))


def _broker(ctx: JobContext) -> Broker:
    if ctx.broker is None:
        raise OpsError(f"{ctx.slot.job} needs the broker and none was given")
    return ctx.broker()


def _run_daily_checks(ctx: JobContext) -> JobDone:
    # here, not at the top: pandas loads only when this job runs, not on every tick
    from ops_runner.ops.checks import run_daily_checks

    slot = ctx.slot
    return _checks_line(
        run_daily_checks(ctx.cfg, ctx.ledger, _broker(ctx), slot.session, slot.key, ctx.run_id)
    )


def _run_pre_rebalance(ctx: JobContext) -> JobDone:
    # here, not at the top: pandas loads only when this job runs, not on every tick
    from ops_runner.ops.checks import run_pre_rebalance_checks

    slot = ctx.slot
    checks = run_pre_rebalance_checks(
        ctx.cfg, ctx.ledger, _broker(ctx), slot.session, slot.key, ctx.now, ctx.run_id
    )
    return _checks_line(checks)


def _run_replay(ctx: JobContext) -> JobDone:
    """The cycle's decision again from the ledger, config, code and prices of now, against
    its Decision Record: MATCH, or DIFFERS (an incident and SAFE_MODE, in the ledger)."""
    # here, not at the top: pandas loads only when this job runs, not on every tick
    from ops_runner.ops.replay import record_replay

    outcome = record_replay(ctx.cfg, ctx.ledger, str(ctx.slot.cycle), ctx.run_id)
    payload = outcome.payload
    return JobDone(
        outcome.line,
        {"result": payload["result"], "replay_seq": outcome.seq,
         "differences": len(payload["differences"]), "causes": payload["causes"],
         "incident": outcome.incident_id},
    )  # fmt: skip


def _run_dependency_scan(ctx: JobContext) -> JobDone:
    """pip-audit over the workbook's environment: CLEAN, VULNERABLE (a warning alert; with
    ``schedule.dependency_scan_safe_mode`` an incident and SAFE_MODE) or NOT_SCANNED (a
    warning alert: the scan did not happen), recorded as DependencyScanRecorded."""
    # here, not at the top: the tick's table loads no job's module until the job runs
    from ops_runner.ops.dependency_scan import record_dependency_scan

    outcome = record_dependency_scan(ctx.cfg, ctx.ledger, ctx.slot.key, ctx.run_id)
    payload = outcome.payload
    return JobDone(
        outcome.line,
        {"result": payload["result"], "scan_seq": outcome.seq, "audited": payload["audited"],
         "findings": len(payload["findings"]), "incident": outcome.incident_id},
    )  # fmt: skip


FETCH_CHECK = "data_fetch"


def _run_fetch(ctx: JobContext) -> JobDone:
    """The session's prices from every provider serving the primary or the secondary. A vendor
    that is down or answers garbage leaves the store as it was: its error is recorded (once
    per distinct error) and the slot waits (JobWaiting); past the data QA's deadline the
    tick's missed-job rule makes it DEGRADED_DATA with that error in the incident."""
    # pandas and the vendors' clients: imported when a fetch runs, never by the idle tick
    from ops_runner.core.events import EventKind

    # here, not at the top: pandas loads only when this job runs, not on every tick
    from ops_runner.market.sources.providers import compute_fetched_sources
    from ops_runner.ops.fetch import fetch_source

    slot, lines = ctx.slot, []
    for source in compute_fetched_sources(ctx.cfg):
        try:
            lines.append(fetch_source(ctx.cfg, source, end=slot.session, now=ctx.now))
        except OpsError as exc:  # a vendor's own one-line error: the store is unchanged
            detail = " ".join(f"{source}: {exc}".split())
            key = f"CheckRecorded:{FETCH_CHECK}:{slot.key}:{compute_sha256(detail)[:12]}"
            payload = {"check": FETCH_CHECK, "slot": slot.key, "passed": False,
                       "detail": detail, "evidence": [f"at {format_seconds(ctx.now)}"]}  # fmt: skip
            if ctx.ledger.get(key) is None:
                ctx.ledger.append(str(EventKind.CHECK_RECORDED), key, payload, run_id=ctx.run_id)
            raise JobWaiting(detail) from None
    return JobDone("fetched", {"fetched": lines})


@dataclass(frozen=True)
class JobSpec:
    """One job: its notebook or its in-process callable, the parameters a slot gives its
    notebook (besides ``workbook`` and ``run_id``), how its completion is judged, and the
    category of the incident its failure opens."""

    job: Job
    notebook: str | None = None
    parameters: tuple[str, ...] = ()
    judge: Callable[[Mapping[str, Any]], tuple[bool, str]] = judge_status
    run: Callable[[JobContext], JobDone] | None = None
    category: str = "scheduler"
    by_hand: bool = True  # `ops-runner run <job>`; the others have verbs of their own
    per_cycle: bool = False  # an in-process job of a cycle (a notebook's says "cycle")

    @property
    def in_process(self) -> bool:
        return self.notebook is None

    @property
    def cycle_job(self) -> bool:
        """A cycle's job: `ops-runner run` names its slot with --cycle, not --as-of."""
        return self.per_cycle or "cycle" in self.parameters


JOBS: dict[Job, JobSpec] = {
    spec.job: spec
    for spec in (
        JobSpec(Job.DATA_FETCH, run=_run_fetch, by_hand=False),  # `ops-runner data fetch`
        JobSpec(Job.DAILY_CHECKS, run=_run_daily_checks),
        JobSpec(Job.PRE_REBALANCE, run=_run_pre_rebalance),
        JobSpec(Job.DATA_QA, "data_qa", ("as_of", "now"), judge_data_qa, category="data"),
        JobSpec(Job.DECISION, "decision", ("session", "now"), category="strategy"),
        JobSpec(
            Job.EXECUTION, "execution", ("cycle", "now"), judge_execution, category="broker"
        ),  # fmt: skip
        JobSpec(
            Job.RECONCILIATION,
            "reconciliation",
            ("cycle", "now"),
            judge_reconciliation,
            category="broker",
        ),  # fmt: skip
        JobSpec(Job.SLIPPAGE_REPORT, "slippage_report", ("cycle", "now")),
        JobSpec(Job.REPLAY, run=_run_replay, category="strategy", per_cycle=True),
        JobSpec(Job.AUDIT, "audit", ("now",), category="broker", by_hand=False),  # `audit`
        JobSpec(Job.BACKUP, run=_run_backup, by_hand=False),  # `ops-runner backup`
        JobSpec(Job.DEPENDENCY_SCAN, run=_run_dependency_scan),
        JobSpec(Job.INCIDENT, "incident", ("incident", "now"), by_hand=False),  # `incident`
    )
}
NOTEBOOK_JOBS = frozenset(job for job, spec in JOBS.items() if not spec.in_process)
CATEGORIES = {str(spec.job): spec.category for spec in JOBS.values()}


def judge_completion(job: str, completion: Mapping[str, Any]) -> tuple[bool, str]:
    """Return (done, outcome) of a completed run of ``job``'s notebook, by its spec."""
    return JOBS[Job(job)].judge(completion)


def compute_parameters(cfg: Config, slot: Slot, now: datetime, simulated: bool) -> dict[str, str]:
    """Return the notebook parameters of ``slot`` (never a secret: papermill writes them).
    ``now`` is passed only on a simulated clock; "" makes the notebook read the real one."""
    values = {
        "as_of": slot.session.isoformat(),
        "session": slot.session.isoformat(),
        "cycle": str(slot.cycle),
        "now": format_seconds(now) if simulated else "",
        "incident": slot.key.split(":", 1)[1],
    }
    return {"workbook": str(cfg.workbook)} | {p: values[p] for p in JOBS[slot.job].parameters}
