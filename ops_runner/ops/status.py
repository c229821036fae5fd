"""`ops-runner status`: what state the workbook is in and why, read without writing anything."""

from __future__ import annotations

from typing import Any

from ops_runner.core.events import State
from ops_runner.ledger import LEDGER_FILE, LedgerCorrupt, open_ledger, projections
from ops_runner.ledger.states import read_kill_switch
from ops_runner.workbook.config import Config


def read_status(cfg: Config) -> dict[str, Any]:
    """Return the state, since when and why, incidents, last jobs, kill switch, head, drawdown.

    Opens the ledger read-only, so it is safe while a tick writes. A ledger that cannot be read
    is reported as HALT, which is what every other part of the workbook will treat it as.
    """

    kill = read_kill_switch(cfg)
    report: dict[str, Any] = {
        "workbook": str(cfg.workbook),
        "kill_switch": {"present": kill is not None, "reason": kill,
                        "path": str(cfg.path("kill_switch"))},
    }  # fmt: skip
    path = cfg.path("ledger") / LEDGER_FILE
    if not path.exists():
        report.update(
            state=str(State.RUN), since=None, trigger=None, reason="no ledger yet",
            evidence=[], open_incidents=[], last_jobs={}, ledger_head=None, drawdown=None,
        )  # fmt: skip
        return report
    try:
        with open_ledger(cfg, create=False, readonly=True) as ledger:
            ledger.require_anchored(cfg.path("anchor"))  # a cut tail is what the tick sees too
            events = list(ledger.events())
            head = ledger.head()
    except LedgerCorrupt as exc:
        report.update(
            state=str(State.HALT), since=None, trigger="ledger_corrupt", reason=str(exc),
            evidence=[], open_incidents=[], last_jobs={}, ledger_head=None, drawdown=None,
        )  # fmt: skip
        return report
    view = projections.compute_state(events)
    equity = projections.compute_equity(events)
    report.update(
        state=str(view.state),
        since=view.since,
        trigger=str(view.trigger) if view.trigger else None,
        reason=view.reason,
        evidence=list(view.evidence or []),
        open_incidents=projections.compute_open_incidents(events),
        last_jobs={
            job: {"seq": e.seq, "at": e.recorded_at, "session": e.payload.get("session")}
            for job, e in projections.compute_last_jobs(events).items()
        },
        ledger_head={"seq": head[0], "hash": head[1]} if head else None,
        drawdown=None
        if not equity.marks
        else {
            "last": str(equity.last),
            "peak": str(equity.peak),
            "drawdown": str(equity.drawdown),
            "limit": str(cfg.risk.max_drawdown),
        },
    )
    return report


def format_status(report: dict[str, Any]) -> str:
    """Return the status report as a few lines for a terminal."""
    lines = [
        f"state      {report['state']}" + (f" since {report['since']}" if report["since"] else "")
    ]
    if report.get("trigger") or report.get("reason"):
        lines.append(f"why        {report.get('trigger') or '-'}: {report.get('reason') or '-'}")
    kill = report["kill_switch"]
    lines.append(f"kill       {'PRESENT: ' + str(kill['reason']) if kill['present'] else 'absent'}")
    head = report.get("ledger_head")
    lines.append(
        f"ledger     {'event ' + str(head['seq']) + ' ' + head['hash'][:16] if head else '-'}"
    )
    incidents = report.get("open_incidents") or []
    lines.append(f"incidents  {len(incidents)} open")
    for incident in incidents:
        lines.append(f"           {incident.get('incident_id')}: {incident.get('summary')}")
    for job, info in sorted((report.get("last_jobs") or {}).items()):
        lines.append(f"last job   {job}: {info.get('session') or '-'} at {info['at']}")
    drawdown = report.get("drawdown")
    if drawdown:
        lines.append(
            f"drawdown   {float(drawdown['drawdown']):.2%} of peak {drawdown['peak']} "
            f"(limit {float(drawdown['limit']):.0%})"
        )
    return "\n".join(lines)
