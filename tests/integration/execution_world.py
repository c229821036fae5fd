"""The execution fault tests' world, shared by test_execution_faults and test_ib_faults: a
workbook holding VEU with 2025-11-28 decided (AGG), and helpers to submit and read it back."""

from __future__ import annotations

import shutil
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml
from conftest import make_sample_workbook, ready_to_decide

from ops_runner.brokers.sim import SimBroker
from ops_runner.core.events import EventKind, State
from ops_runner.execution.plan import read_plan
from ops_runner.execution.submission import SubmissionReport, SubmissionStatus, submit_plan
from ops_runner.ledger import open_ledger
from ops_runner.ledger.states import read_state
from ops_runner.ops.decision import decide
from ops_runner.workbook.config import Config, load_config

NOV_WINDOW = datetime(2025, 11, 3, 13, 30, tzinfo=UTC)  # 08:30 New York, orders for 11-03
NOV_FILLED = datetime(2025, 11, 3, 15, 0, tzinfo=UTC)  # after the 09:30 open
DEC_WINDOW = datetime(2025, 12, 1, 13, 30, tzinfo=UTC)  # 08:30 New York, orders for 12-01
DEC_FILLED = datetime(2025, 12, 1, 15, 0, tzinfo=UTC)
SELL, BUY = "mr:2025-11:VEU:SELL", "mr:2025-11:AGG:BUY"  # 2025-11-28 rotates VEU -> AGG
DECISION_KEY = "DecisionRecorded:rotation:2025-11-28"


def at(moment: datetime):
    return lambda: moment


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    """A workbook holding VEU (bought at the 2025-11-03 open) with 2025-11-28 decided: AGG."""
    root = make_sample_workbook(tmp_path_factory.mktemp("execution"))
    cfg = load_config(root)
    ready_to_decide(cfg, "2025-10-31")
    october = decide(cfg, "2025-10-31")
    assert october.targets == {"VEU": "1"}
    broker = SimBroker(cfg, clock=at(NOV_WINDOW))
    with open_ledger(cfg) as ledger:
        report = submit_plan(cfg, ledger, broker, read_plan(cfg, broker, october.record),
                             NOV_WINDOW)  # fmt: skip
    assert report.status is SubmissionStatus.SUBMITTED
    assert list(SimBroker(cfg, clock=at(NOV_FILLED)).positions()) == ["VEU"]
    ready_to_decide(cfg, "2025-11-28")
    assert decide(cfg, "2025-11-28").targets == {"AGG": "1"}
    return root


def workbook(base: Path, tmp_path: Path, faults: dict | None = None) -> Config:
    root = tmp_path / "wb"
    shutil.copytree(base, root)
    if faults:
        path = root / "config.yaml"
        values = yaml.safe_load(path.read_text())
        values["broker"]["sim_faults"] = faults
        path.write_text(yaml.safe_dump(values, sort_keys=False))
    return load_config(root)


def submit(cfg: Config, hooks: dict | None = None) -> SubmissionReport:
    broker = SimBroker(cfg, clock=at(DEC_WINDOW))
    with open_ledger(cfg) as ledger:
        record = ledger.get(DECISION_KEY).payload
        plan = read_plan(cfg, broker, record)
        return submit_plan(cfg, ledger, broker, plan, DEC_WINDOW, hooks=hooks)


def orders_by_ref(cfg: Config) -> Counter:
    broker = SimBroker(cfg, clock=at(DEC_WINDOW))
    orders = [*broker.open_orders(), *broker.completed_orders()]
    return Counter(o.client_ref for o in orders if o.client_ref.startswith("mr:2025-11:"))


def outcomes(report: SubmissionReport) -> dict[str, str]:
    return {r.client_ref: str(r.outcome) for r in report.rows}


def ledger_facts(cfg: Config) -> tuple[State, list[dict], bool]:
    with open_ledger(cfg) as ledger:
        submitted = [e.payload for e in ledger.events(kind=str(EventKind.ORDER_SUBMITTED))
                     if e.cycle_id == "2025-11"]  # fmt: skip
        return read_state(ledger).state, submitted, ledger.verify().ok
