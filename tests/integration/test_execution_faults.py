"""Execution against the simulated broker: crash-kills at every step, and the runbook's faults."""

from __future__ import annotations

import multiprocessing
import os
import signal
from decimal import ROUND_FLOOR, Decimal

import pandas as pd
import pytest
from execution_world import (
    BUY,
    DEC_FILLED,
    DEC_WINDOW,
    DECISION_KEY,
    SELL,
    at,
    base,
    ledger_facts,
    orders_by_ref,
    outcomes,
    submit,
    workbook,
)

from ops_runner.brokers.sim import SimBroker
from ops_runner.core.events import EventKind, State, Trigger
from ops_runner.execution.plan import read_plan
from ops_runner.execution.submission import SubmissionStatus
from ops_runner.ledger import open_ledger
from ops_runner.ledger.states import apply_trigger, write_kill_switch
from ops_runner.market.prices import open_store
from ops_runner.workbook.config import load_config

# The fixture comes from execution_world; naming it here is what lets pytest find it.
__all__ = ["base"]


def test_read_plan_sizes_from_the_raw_close_of_the_decision_session(base, tmp_path):
    cfg = workbook(base, tmp_path)
    broker = SimBroker(cfg, clock=at(DEC_WINDOW))
    with open_ledger(cfg) as ledger:
        plan = read_plan(cfg, broker, ledger.get(DECISION_KEY).payload)
    bars = open_store(cfg).load_bars("sample", "AGG")
    raw = Decimal(repr(float(bars.at[pd.Timestamp("2025-11-28"), "close"])))
    agg = next(line for line in plan.lines if line.symbol == "AGG")
    assert agg.price == raw.quantize(Decimal("0.0001"))
    investable = broker.account_values().net_liquidation * Decimal("0.98")
    assert agg.target == int((investable / agg.price).to_integral_value(ROUND_FLOOR))
    assert plan.order_session == "2025-12-01"
    assert [i.client_ref for i in plan.intents] == [SELL, BUY]


# -- crash-kills: SIGKILL at each step, then run again ----------------------------------------


def _submit_then_die(root: str, hook: str, nth: int) -> None:
    """Child process: submit, and SIGKILL itself at the ``nth`` call of ``hook``."""
    calls = []

    def die(*_: object) -> None:
        calls.append(hook)
        if len(calls) == nth:
            os.kill(os.getpid(), signal.SIGKILL)

    submit(load_config(root), hooks={hook: die})


@pytest.mark.slow  # 1.5 s or more: left out of make test-fast
@pytest.mark.parametrize(
    ("hook", "nth", "after_rerun"),
    [
        ("after_intents", 1, {SELL: "submitted", BUY: "submitted"}),
        ("before_place", 1, {SELL: "submitted", BUY: "submitted"}),
        ("after_place", 1, {SELL: "adopted", BUY: "submitted"}),  # accepted, never recorded
        ("after_record", 1, {SELL: "submitted", BUY: "submitted"}),
        ("after_place", 2, {SELL: "submitted", BUY: "adopted"}),
        ("after_record", 2, {SELL: "submitted", BUY: "submitted"}),
    ],
)
def test_submit_plan_when_killed_at_a_step_then_rerun_sends_each_order_once(
    base, tmp_path, hook, nth, after_rerun
):
    cfg = workbook(base, tmp_path)
    child = multiprocessing.get_context("spawn").Process(
        target=_submit_then_die, args=(str(cfg.workbook), hook, nth)
    )
    child.start()
    child.join(120)
    assert child.exitcode == -signal.SIGKILL
    report = submit(cfg)
    assert report.status is SubmissionStatus.SUBMITTED
    assert outcomes(report) == after_rerun
    assert orders_by_ref(cfg) == {SELL: 1, BUY: 1}
    state, submitted, verified = ledger_facts(cfg)
    assert state is State.RUN and verified
    assert sorted(p["client_ref"] for p in submitted) == sorted([SELL, BUY])
    assert submit(cfg).status is SubmissionStatus.SUBMITTED  # and a third run changes nothing
    assert orders_by_ref(cfg) == {SELL: 1, BUY: 1}


# -- faults from broker.sim_faults ------------------------------------------------------------


def test_submit_plan_when_the_broker_rejects_an_order_records_the_rejection(base, tmp_path):
    cfg = workbook(base, tmp_path, {"reject": {"AGG": "201 Order rejected: no trading permission"}})
    report = submit(cfg)
    assert report.status is SubmissionStatus.PARTIAL
    assert outcomes(report) == {SELL: "submitted", BUY: "rejected"}
    assert report.rows[1].detail == "201: Order rejected: no trading permission"
    with open_ledger(cfg) as ledger:
        statuses = [e.payload for e in ledger.events(kind=str(EventKind.ORDER_STATUS_CHANGED))]
        assert statuses == [{"client_ref": BUY, "status": "rejected",
                             "detail": "201: Order rejected: no trading permission"}]  # fmt: skip
    assert submit(cfg).status is SubmissionStatus.PARTIAL  # a rejection is final: not resent
    assert orders_by_ref(cfg) == {SELL: 1, BUY: 1}
    assert ledger_facts(cfg)[0] is State.RUN


def test_submit_plan_when_the_connection_drops_before_sending_goes_to_broker_down(base, tmp_path):
    cfg = workbook(base, tmp_path, {"disconnect_at": "before_place"})
    report = submit(cfg)
    assert report.status is SubmissionStatus.STOPPED
    assert outcomes(report) == {SELL: "unknown", BUY: "skipped"}
    assert ledger_facts(cfg)[0] is State.BROKER_DOWN
    assert orders_by_ref(cfg) == {}
    (cfg.workbook / "config.yaml").write_text((base / "config.yaml").read_text())
    healthy = load_config(cfg.workbook)  # the connection is back
    assert outcomes(submit(healthy)) == {SELL: "unknown", BUY: "denied"}  # BROKER_DOWN still
    assert orders_by_ref(healthy) == {}
    with open_ledger(healthy) as ledger:
        apply_trigger(ledger, Trigger.BROKER_RESTORED, "health check passed")
    assert submit(healthy).status is SubmissionStatus.SUBMITTED
    assert orders_by_ref(healthy) == {SELL: 1, BUY: 1}


def test_submit_plan_when_the_connection_drops_after_sending_adopts_by_lookup(base, tmp_path):
    cfg = workbook(base, tmp_path, {"disconnect_at": "after_place"})
    report = submit(cfg)
    assert report.status is SubmissionStatus.SUBMITTED
    assert outcomes(report) == {SELL: "adopted", BUY: "adopted"}
    assert orders_by_ref(cfg) == {SELL: 1, BUY: 1}
    assert submit(cfg).status is SubmissionStatus.SUBMITTED
    assert orders_by_ref(cfg) == {SELL: 1, BUY: 1}


def test_submit_plan_when_an_acknowledgement_is_lost_adopts_by_lookup(base, tmp_path):
    cfg = workbook(base, tmp_path, {"lost_ack": ["VEU"]})
    report = submit(cfg)
    assert outcomes(report) == {SELL: "adopted", BUY: "submitted"}
    assert orders_by_ref(cfg) == {SELL: 1, BUY: 1}
    state, submitted, verified = ledger_facts(cfg)
    assert state is State.RUN and verified
    assert [(p["client_ref"], p["adopted"]) for p in submitted] == [(SELL, True), (BUY, False)]
    # After the open the books hold exactly the plan: VEU sold once, AGG bought once.
    assert list(SimBroker(cfg, clock=at(DEC_FILLED)).positions()) == ["AGG"]


def test_submit_plan_when_the_kill_switch_appears_between_two_orders_halts(base, tmp_path):
    cfg = workbook(base, tmp_path)
    hooks = {"after_record": lambda intent: write_kill_switch(cfg, "operator: stop now")}
    report = submit(cfg, hooks)
    assert report.status is SubmissionStatus.STOPPED
    assert outcomes(report) == {SELL: "submitted", BUY: "skipped"}
    assert ledger_facts(cfg)[0] is State.HALT
    broker = SimBroker(cfg, clock=at(DEC_WINDOW))
    assert [(o.client_ref, str(o.status)) for o in broker.completed_orders()
            if o.client_ref.startswith("mr:2025-11")] == [(SELL, "cancelled")]  # fmt: skip
    assert submit(cfg).status is SubmissionStatus.STOPPED  # still halted: nothing new
    assert orders_by_ref(cfg) == {SELL: 1}
