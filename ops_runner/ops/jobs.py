"""The execution and reconciliation jobs as the notebooks call them: one object, one step each."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pandas as pd

from ops_runner.brokers import open_broker
from ops_runner.brokers.base import Broker
from ops_runner.core.clock import read_clock
from ops_runner.execution.plan import read_plan
from ops_runner.execution.reconcile import reconcile
from ops_runner.execution.submission import compute_preview, submit_plan
from ops_runner.ledger import open_ledger
from ops_runner.ledger.states import read_state
from ops_runner.market.calendar import open_calendar
from ops_runner.ops.decision import read_record
from ops_runner.workbook.config import Config

log = logging.getLogger(__name__)


@dataclass
class ExecutionJob:
    """One cycle's execution: the plan from the broker's books, then the crash-safe submission."""

    cfg: Config
    cycle_id: str
    clock: Callable[[], datetime]
    record: dict[str, Any]
    broker: Broker
    plan: Any

    def cash_walk_frame(self) -> pd.DataFrame:
        return pd.DataFrame(
            [{"step": step, "amount": str(amount)} for step, amount in self.plan.cash_walk]
        ).set_index("step")

    def submit(self) -> Any:
        """Submit the plan (or the plan of record on a re-run); returns the SubmissionReport.
        A preview (a notebook run by hand) sends nothing: it shows what would be sent."""

        with open_ledger(self.cfg) as ledger:
            if self.cfg.preview:
                return compute_preview(self.plan, str(read_state(ledger).state))
            return submit_plan(self.cfg, ledger, self.broker, self.plan, self.clock())


def open_execution(cfg: Config, cycle_id: str, now: str = "") -> ExecutionJob:
    """Return the execution job of ``cycle_id`` with its plan computed. Raises OpsError."""

    clock = read_clock(now)
    record = read_record(cfg, cycle_id)
    broker = open_broker(cfg, clock=clock)
    broker.connect()
    return ExecutionJob(cfg, cycle_id, clock, record, broker, read_plan(cfg, broker, record))


def alert_console(text: str) -> None:
    """The alert channel every workbook has: the log and the job's own output (stderr).

    Email and webhook channels come with the production-run issue; until then a break shows
    in red in the executed notebook and in the scheduler's log.
    """
    log.error("ALERT: %s", text)
    print(f"ALERT: {text}", file=sys.stderr)


def run_reconciliation(
    cfg: Config, cycle_id: str, now: str = "", alert: Callable[[str], None] | None = alert_console
) -> Any:
    """Reconcile the cycle's orders at the broker against the ledger; returns the report."""

    clock = read_clock(now)
    record = read_record(cfg, cycle_id)
    order_session = open_calendar(cfg).next_session(str(record["session"])).isoformat()
    broker = open_broker(cfg, clock=clock, role="readonly")
    broker.connect()
    with open_ledger(cfg) as ledger:
        return reconcile(cfg, ledger, broker, cycle_id, order_session, clock(), alert=alert)
