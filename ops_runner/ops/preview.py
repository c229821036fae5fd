"""A dry run: what a job run by hand would do now, asked of the same rules, with nothing done.

``ops-runner run execution --dry-run`` asks the tick's rules, the kill switch and the order gate
exactly as a run asks them, and plans against the broker's real positions and cash through its
read-only role; it takes no lock, opens the ledger read-only and never reaches the broker's
place. (``decide --dry-run`` is ``ops.decision.preview_decision``, beside the gates it passes.)
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from ops_runner.brokers import open_broker
from ops_runner.brokers.gate import compute_gate_decision
from ops_runner.core.events import EventKind, State
from ops_runner.execution.plan import ExecutionPlan, read_plan
from ops_runner.ledger import open_ledger
from ops_runner.ledger.states import read_kill_switch, read_state
from ops_runner.ops.decision import read_record
from ops_runner.ops.schedule import Slot
from ops_runner.ops.tick import compute_refusal, read_done, require_simulated_broker
from ops_runner.workbook.config import Config


@dataclass(frozen=True)
class ExecutionPreview:
    """What ``run execution --dry-run`` shows: the plan against the broker's books now, each
    intent's verdict at the order gate (client_ref -> its reason to refuse, None when it
    passes), and why a run now would be refused (None: it would send). ``recorded`` counts the
    cycle's intents already in the ledger: a run then sends those, its plan of record."""

    plan: ExecutionPlan
    state: State
    refusal: str | None
    gate: dict[str, str | None]
    recorded: int

    @property
    def would_send(self) -> int | None:
        """How many orders a run now would send: 0 when it would be refused; None when the
        cycle has recorded intents, as a run then sends those of them the broker does not
        hold yet (known only by looking each up, which a dry run leaves to the run)."""
        if self.refusal is not None:
            return 0
        if self.recorded:
            return None
        return sum(1 for why in self.gate.values() if why is None)


def preview_execution(
    cfg: Config, slot: Slot, cycle_id: str, now: datetime, simulated: bool
) -> ExecutionPreview:
    """Return what ``run execution`` would do at ``now`` (``simulated``: a fixed instant, for
    simulated brokers only). Raises OpsError: no Decision Record, the broker unreachable, a
    cut ledger (LedgerCorrupt)."""

    if simulated:
        require_simulated_broker(cfg)
    with open_ledger(cfg, create=False, readonly=True) as ledger:
        ledger.require_anchored(cfg.path("anchor"))
        view, done = read_state(ledger), read_done(ledger)
        recorded = sum(1 for e in ledger.events(kind=str(EventKind.ORDER_INTENT_RECORDED))
                       if e.cycle_id == cycle_id)  # fmt: skip
    killed = read_kill_switch(cfg)
    refusal = (
        f"the kill switch is present: {killed}"
        if killed is not None
        else compute_refusal(slot, view, done, now)
    )
    record = read_record(cfg, cycle_id)
    broker = open_broker(cfg, clock=(lambda: now) if simulated else None, role="readonly")
    try:
        broker.connect()
        plan = read_plan(cfg, broker, record)
    finally:
        broker.close()
    held = {line.symbol: line.current for line in plan.lines}
    gate = {
        intent.client_ref: compute_gate_decision(
            view, intent, held.get(intent.symbol, 0), kill_switch_seen=killed is not None
        )
        for intent in plan.intents
    }
    return ExecutionPreview(plan, State(view.state), refusal, gate, recorded)
