"""Random interleavings of the execution's steps, crashes, state changes and broker faults
(hypothesis), against the simulated broker: nothing is ever sent twice and no fill is lost.

The steps are the calls the execution and reconciliation notebooks make (``submit_plan`` and
``reconcile`` on the plan of record), in time order, each maybe cut short at one of the
submission's named boundaries (an exception raised there drops everything the run held, as
the death of its kernel would), with the state falling to SAFE_MODE or returning to RUN and the
broker refusing, dropping or losing acknowledgements in between. Whatever happened, once the
faults clear and the operator returns to RUN inside the window, a last submission and a
reconciliation after the open leave the broker with at most one order per client reference,
every execution recorded exactly once, the ledger's positions equal to the broker's, and a
ledger that verifies.
"""

from __future__ import annotations

import shutil
import tempfile
from collections import Counter
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from conftest import ready_to_decide
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ops_runner.brokers import open_broker
from ops_runner.core.errors import OpsError
from ops_runner.core.events import EventKind, State, Trigger
from ops_runner.execution.plan import read_plan
from ops_runner.execution.reconcile import reconcile
from ops_runner.execution.submission import HOOKS, submit_plan
from ops_runner.ledger import open_ledger
from ops_runner.ledger.projections import compute_positions
from ops_runner.ledger.states import apply_trigger, read_state
from ops_runner.ops.decision import decide, read_record
from ops_runner.simulators.history import simulate_history
from ops_runner.workbook.config import Config, load_config

WINDOW_OPENS = datetime(2025, 12, 1, 13, 0, tzinfo=UTC)  # 08:00 New York; closes 14:20Z
OPEN = datetime(2025, 12, 1, 14, 30, tzinfo=UTC)
FAULTS = [
    {},
    {"refuse_connection": True},
    {"disconnect_at": "before_place"},
    {"disconnect_at": "after_place"},
    {"lost_ack": ["VEU"]},
    {"lost_ack": ["VEU", "AGG"]},
]


class Crash(Exception):
    """The run dies here: nothing after this point runs, nothing it held survives."""


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    """October filled (1,358 VEU held), November decided (100% AGG) in the ledger."""
    root = simulate_history(tmp_path_factory.mktemp("interleave") / "wb", 1, "2025-10").workbook
    ready_to_decide(load_config(root), "2025-11-28")
    decide(load_config(root), "2025-11-28", now=datetime(2025, 11, 28, 18, 30, tzinfo=UTC))
    return root


def with_faults(cfg: Config, faults: dict) -> Config:
    """``cfg`` with these broker faults, on a venue that takes a second order under a reference
    it holds (as IB does): a double send would show as two orders."""
    broker = {**cfg.values["broker"], "sim_faults": {**faults, "accepts_duplicate_refs": True}}
    return replace(cfg, values={**cfg.values, "broker": broker})


def submit(cfg: Config, now: datetime, crash_at: str | None) -> None:
    def crash(*_: object) -> None:
        raise Crash(crash_at)

    broker = open_broker(cfg, clock=lambda: now)
    try:
        broker.connect()
        plan = read_plan(cfg, broker, read_record(cfg, "2025-11"))
        with open_ledger(cfg) as ledger:
            submit_plan(cfg, ledger, broker, plan, now,
                        hooks={crash_at: crash} if crash_at else {})  # fmt: skip
    except (Crash, OpsError):  # a dead run, a refused or unreachable broker: all expected here
        pass
    finally:
        broker.close()


def reconcile_at(cfg: Config, now: datetime) -> None:
    broker = open_broker(cfg, clock=lambda: now, role="readonly")
    try:
        broker.connect()
        with open_ledger(cfg) as ledger:
            reconcile(cfg, ledger, broker, "2025-11", "2025-12-01", now)
    except OpsError:
        pass
    finally:
        broker.close()


def set_state(cfg: Config, to_safe: bool) -> None:
    with open_ledger(cfg) as ledger:
        state = read_state(ledger).state
        if to_safe:
            apply_trigger(ledger, Trigger.INCIDENT, "something to review", ["test"])
        elif state is State.SAFE_MODE:
            apply_trigger(ledger, Trigger.APPROVED_EXIT_SAFE_MODE, "reviewed", ["test"])
        elif state is State.BROKER_DOWN:
            apply_trigger(ledger, Trigger.BROKER_RESTORED, "broker back", ["test"])


step = st.one_of(
    st.tuples(st.just("submit"), st.integers(0, 79), st.sampled_from([None, *HOOKS])),
    st.tuples(st.just("safe_mode"), st.integers(0, 79), st.none()),
    st.tuples(st.just("run"), st.integers(0, 79), st.none()),
    st.tuples(st.just("faults"), st.integers(0, 79), st.integers(0, len(FAULTS) - 1)),
)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(steps=st.lists(step, min_size=1, max_size=8))
@pytest.mark.slow
def test_any_interleaving_sends_each_order_once_and_loses_no_fill(base, steps):
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch) / "wb"
        shutil.copytree(base, root)
        cfg = with_faults(load_config(root), {})
        live = cfg
        for kind, minute, arg in sorted(steps, key=lambda s: s[1]):  # in time order
            now = WINDOW_OPENS + timedelta(minutes=minute)
            if kind == "submit":
                submit(live, now, arg)
            elif kind in ("safe_mode", "run"):
                set_state(cfg, kind == "safe_mode")
            else:
                live = with_faults(cfg, FAULTS[arg])
        # the faults clear and the operator returns to RUN before the window closes
        set_state(cfg, False)
        set_state(cfg, False)
        submit(cfg, WINDOW_OPENS + timedelta(minutes=79), None)
        reconcile_at(cfg, OPEN + timedelta(minutes=45))

        broker = open_broker(cfg, clock=lambda: OPEN + timedelta(hours=2), role="readonly")
        broker.connect()
        orders = Counter(o.client_ref for o in [*broker.open_orders(), *broker.completed_orders()])
        executions = {e.exec_id for e in broker.executions()}
        positions = broker.positions()
        broker.close()
        assert all(n == 1 for ref, n in orders.items() if ref.startswith("mr:2025-11:")), orders
        with open_ledger(cfg) as ledger:
            events = list(ledger.events())
            assert ledger.verify().ok
        recorded = Counter(e.payload["exec_id"] for e in events
                           if e.kind == EventKind.FILL_RECORDED
                           and not e.key.endswith(":commission"))  # fmt: skip
        assert set(recorded) == executions and all(n == 1 for n in recorded.values())
        assert {s: q for s, q in compute_positions(events).items() if q} == positions
        # and the cycle ended where the plan said: 844 AGG, the VEU sold
        assert positions == {"AGG": 844}, (steps, positions)
