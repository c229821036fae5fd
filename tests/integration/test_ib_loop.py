"""The whole loop through Interactive Brokers: real ticks, `broker.kind: ib`, the real adapter
and client library, the loopback TWS simulator on a real socket, real notebooks in kernels.

A cycle (2025-11, orders for the 2025-12-01 open) is walked from the eve's checks to the
slippage report; each tick runs twice. Faults are set on the simulator between ticks.
"""

from __future__ import annotations

import importlib.util
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
import yaml

from ops_runner.core.events import EventKind, State, Trigger
from ops_runner.ledger import open_ledger, projections
from ops_runner.ledger.init import init_workbook
from ops_runner.market.sources.sample import write_sample
from ops_runner.ops.checks import approve_baseline
from ops_runner.ops.tick import tick
from ops_runner.workbook.config import load_config

tws_sim = pytest.importorskip("ops_runner.simulators.tws_sim")
from ops_runner.market.calendar import open_calendar  # noqa: E402
from ops_runner.market.prices import open_store  # noqa: E402
from ops_runner.runtime.notebooks import IN_PROCESS_ENV  # noqa: E402
from ops_runner.simulators.market import WorkbookMarket  # noqa: E402

CLIENTS = [
    pytest.param(
        name,
        marks=pytest.mark.skipif(
            importlib.util.find_spec(name) is None, reason=f"{name} is not installed"
        ),
    )
    for name in ("ib_async", "ib_insync")
]
ACCOUNT = "DU1234521"
START = datetime(2025, 11, 26, 21, 35, tzinfo=UTC)  # the eve's checks (P = 2025-11-26)
WINDOW_OPENS = datetime(2025, 12, 1, 13, 0, tzinfo=UTC)  # 08:00 New York
WINDOW_CLOSES = datetime(2025, 12, 1, 14, 20, tzinfo=UTC)  # 09:20 New York
END = datetime(2025, 12, 1, 19, 0, tzinfo=UTC)  # after reconciliation and the report


OPEN = datetime(2025, 12, 1, 14, 30, tzinfo=UTC)  # the orders' session opens


class Clock:
    """The simulator's clock. ``hold_open`` keeps it before the open until a client is logged
    in, so the opening fill burst happens with a session live (as at 09:30 for a Gateway that
    stays connected); ``burst_seen_by`` records how many sessions were live then."""

    def __init__(self) -> None:
        self.moment = START
        self.sim = None
        self.hold_open = False
        self.burst_seen_by: int | None = None

    def __call__(self) -> datetime:
        if self.hold_open and self.moment >= OPEN:
            live = self.sim.connections() if self.sim is not None else 0
            if not live:
                return OPEN - timedelta(seconds=1)
            self.hold_open, self.burst_seen_by = False, live
        return self.moment


def configure(root: Path, **broker) -> None:
    config = root / "config.yaml"
    values = yaml.safe_load(config.read_text())
    values["broker"].update(broker)
    config.write_text(yaml.safe_dump(values))


@pytest.fixture
def loop(tmp_path):
    """A factory (client) -> (cfg, simulator, clock): a sample workbook with an approved
    baseline, pointed at a started TWS simulator whose market is that workbook's store."""
    made = []

    def make(client: str = "ib_async"):
        root, clock = tmp_path / client, Clock()
        init_workbook(root, template="demo")
        cfg = load_config(root)
        write_sample(open_store(cfg), calendar=open_calendar(cfg))
        sim = tws_sim.TwsSimulator(WorkbookMarket(cfg), clock, account=ACCOUNT,
                                   cash=Decimal("100000"))  # fmt: skip
        made.append(sim)
        clock.sim = sim
        configure(
            root, kind="ib", simulator=True, host="127.0.0.1", port=sim.start(), account=ACCOUNT,
            client=client, connect_timeout_seconds=2, request_timeout_seconds=5,
            retry={"attempts": 2, "wait_seconds": 0.2},
        )  # fmt: skip
        cfg = load_config(root)
        approve_baseline(cfg, "reviewed")
        return cfg, sim, clock

    yield make
    for sim in made:
        sim.stop()


def steps(cfg, start: datetime, end: datetime) -> list[datetime]:
    from ops_runner.ops.schedule import ScheduleSettings, compute_next_opening

    settings = ScheduleSettings.from_config(cfg.values)
    found, moment = [start], start
    while (moment := compute_next_opening(open_calendar(cfg), settings, moment)) and moment <= end:
        found.append(moment)
    return found


def head(cfg):
    with open_ledger(cfg, create=False, readonly=True) as ledger:
        return ledger.head()


def walk(cfg, sim, clock, moments, before=None) -> list[str]:
    """Tick at each moment twice; the repeat changes neither the ledger nor the broker."""
    ran = []
    for moment in moments:
        clock.moment = moment
        if before is not None:
            before(moment)
        ran.extend(tick(cfg, now=moment).ran)
        known, orders = head(cfg), len(sim.orders())
        again = tick(cfg, now=moment)
        assert again.ran == () and head(cfg) == known, (moment, again.ran)
        assert len(sim.orders()) == orders
    return ran


def events(cfg, kind=None):
    with open_ledger(cfg, create=False, readonly=True) as ledger:
        return list(ledger.events(kind=str(kind) if kind else None))


def completed(cfg, job):
    return [e.payload["outcome"] for e in events(cfg, EventKind.JOB_COMPLETED)
            if e.payload["job"] == job]  # fmt: skip


def assert_cycle_clean(cfg, sim):
    """Every order went over the socket once, every fill is in the ledger once, CLEAN."""
    submitted = [e.payload for e in events(cfg, EventKind.ORDER_SUBMITTED)]
    orders = sim.orders()
    assert submitted and len(orders) == len(submitted)
    assert sorted(o.order_ref for o in orders) == sorted(s["client_ref"] for s in submitted)
    assert {o.client_id for o in orders} == {cfg.values["broker"]["client_ids"]["orders"]}
    assert all(o.status == "Filled" and o.filled == o.quantity for o in orders)
    fills = projections.compute_fills(events(cfg))
    executions = sim.executions()
    assert sorted(fills) == sorted({e.exec_id for e in executions})
    assert len(executions) == len({e.exec_id for e in executions})
    for execution in executions:
        fill = fills[execution.exec_id]
        assert (fill["symbol"], int(fill["quantity"])) == (execution.symbol, execution.shares)
        assert Decimal(str(fill["price"])) == execution.price
        assert Decimal(str(fill["commission"])) == execution.commission
    assert completed(cfg, "reconciliation")[-1] == "CLEAN"
    with open_ledger(cfg, create=False, readonly=True) as ledger:
        from ops_runner.ledger.states import read_state

        assert read_state(ledger).state is State.RUN
    held = {o.symbol: o.quantity for o in orders if o.action == "BUY"}
    assert sim.positions() == held


@pytest.mark.slow  # 1.5 s or more: left out of make test-fast
@pytest.mark.parametrize("client", CLIENTS)
def test_a_cycle_through_ib_is_decided_sent_filled_and_reconciled_clean(loop, client):
    cfg, sim, clock = loop(client)
    ran = walk(cfg, sim, clock, steps(cfg, START, END))
    jobs = [line.split(" ")[0].split(":")[0] for line in ran]
    for job in ("data_qa", "decision", "execution", "reconciliation", "slippage_report"):
        assert job in jobs, ran
    assert_cycle_clean(cfg, sim)
    assert sim.protocol_errors() == []


@pytest.mark.notebook  # a kernel that dies (or whose connection drops) mid-cycle
@pytest.mark.parametrize("burst", ["drop", "1100"])
def test_a_fault_in_the_opening_fill_burst_ends_clean_with_every_fill_once(loop, burst):
    cfg, sim, clock = loop("ib_async")
    sim.faults.burst = burst
    clock.hold_open = True  # the first session after the open meets the burst
    walk(cfg, sim, clock, steps(cfg, START, END))
    assert clock.burst_seen_by == 1  # the tick's read-only session was live at the burst
    if burst == "drop":
        assert sim.faults.burst == "none"  # it fired (the fault clears itself)
    assert_cycle_clean(cfg, sim)


@pytest.mark.slow  # 1.5 s or more: left out of make test-fast
def test_broker_down_in_the_window_waits_then_sends_once_the_session_is_back(loop):
    cfg, sim, clock = loop("ib_async")
    walk(cfg, sim, clock, [m for m in steps(cfg, START, END) if m < WINDOW_OPENS])
    sim.faults.close_on_accept = True
    ran = walk(cfg, sim, clock, [WINDOW_OPENS])
    assert any("execution:2025-11 waiting: broker unavailable" in line for line in ran), ran
    changes = [e.payload for e in events(cfg, EventKind.STATE_CHANGED)]
    assert changes[-1]["to"] == "BROKER_DOWN" and sim.orders() == []
    sim.faults.close_on_accept = False
    later = WINDOW_OPENS + timedelta(minutes=10)
    walk(cfg, sim, clock, [later, *[m for m in steps(cfg, later, END) if m > later]])
    triggers = [e.payload["trigger"] for e in events(cfg, EventKind.STATE_CHANGED)]
    assert str(Trigger.BROKER_RESTORED) in triggers
    assert_cycle_clean(cfg, sim)


@pytest.mark.slow  # 1.5 s or more: left out of make test-fast
def test_broker_still_down_when_the_window_closes_is_halt_with_an_alert(loop):
    cfg, sim, clock = loop("ib_async")
    walk(cfg, sim, clock, [m for m in steps(cfg, START, END) if m < WINDOW_OPENS])
    sim.faults.close_on_accept = True
    walk(cfg, sim, clock, [WINDOW_OPENS, WINDOW_OPENS + timedelta(minutes=40),
                           WINDOW_CLOSES + timedelta(minutes=5)])  # fmt: skip
    with open_ledger(cfg, create=False, readonly=True) as ledger:
        from ops_runner.ledger.states import read_state

        view = read_state(ledger)
    assert view.state is State.HALT and view.trigger is Trigger.SUBMISSION_WINDOW_MISSED
    assert sim.orders() == []
    assert [e.payload["job"] for e in events(cfg, EventKind.JOB_MISSED)] == ["execution"]
    alerts = [e.payload for e in events(cfg, EventKind.ALERT_SENT)]
    assert any("HALT" in a["subject"] for a in alerts), alerts


@pytest.mark.notebook  # a kernel that dies (or whose connection drops) mid-cycle
def test_an_order_placed_before_the_kernel_died_is_adopted_through_ib(loop, monkeypatch):
    cfg, sim, clock = loop("ib_async")
    # Only the execution that dies runs in a kernel; the jobs around it run their cells in this
    # process, as the tick's tests do (each job's notebook runs in a kernel in tests/notebooks/).
    monkeypatch.setenv(IN_PROCESS_ENV, "1")
    walk(cfg, sim, clock, [m for m in steps(cfg, START, END) if m < WINDOW_OPENS])
    clock.moment = WINDOW_OPENS
    monkeypatch.delenv(IN_PROCESS_ENV)
    monkeypatch.setenv("OPS_RUNNER_FAULT", "crash@submission:after_place")  # in the kernel
    died = tick(cfg, now=WINDOW_OPENS)
    monkeypatch.delenv("OPS_RUNNER_FAULT")
    assert any("execution:2025-11 FAILED" in line for line in died.ran), died.ran
    assert any("kernel died" in line for line in died.ran), died.ran
    (placed,) = sim.orders()  # at the broker over the socket, never recorded
    assert events(cfg, EventKind.ORDER_SUBMITTED) == []
    monkeypatch.setenv(IN_PROCESS_ENV, "1")
    walk(cfg, sim, clock, [m for m in steps(cfg, WINDOW_OPENS, END) if m > WINDOW_OPENS])
    (adopted,) = [e.payload for e in events(cfg, EventKind.ORDER_SUBMITTED)]
    assert adopted["client_ref"] == placed.order_ref and adopted["adopted"] is True
    assert len(sim.orders()) == 1  # nothing sent twice
    fills = projections.compute_fills(events(cfg))
    assert sorted(fills) == sorted({e.exec_id for e in sim.executions()})
    with open_ledger(cfg, create=False, readonly=True) as ledger:
        positions = {s: q for s, q in projections.compute_positions(ledger.events()).items() if q}
    assert positions == sim.positions() == {placed.symbol: placed.quantity}
    assert completed(cfg, "reconciliation")[-1] == "CLEAN"
