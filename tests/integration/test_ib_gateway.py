"""Keeping IB Gateway up (`ops-runner broker keep-up`): ib_async's real Watchdog against the
loopback TWS simulator restarting like a Gateway, the changes in the ledger, the tick's state
while the Gateway is away and back, and no order sent twice across a restart.

Real IBC needs Java and an installed Gateway: ``SimulatorApp`` stands in for it with IBC's two
coroutines, ending the app by shutting the simulator down and starting it by listening again.
The Watchdog, the client library, the sockets, the ledger and the tick are the real ones.
"""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta

import pytest
from conftest import EVE, IDLE, make_workbook
from execution_world import BUY, DEC_WINDOW, SELL, base
from ib_world import (
    ACCOUNT,
    Clock,
    cfg,
    client,
    clock,
    market,
    no_decode_errors,
    plan_of,
    sim,
    submit,
    wait_until,
    world,
    write_ib_config,
)

from ops_runner.cli import main
from ops_runner.core.events import EventKind, State, Trigger
from ops_runner.execution.submission import SubmissionStatus
from ops_runner.ledger import open_ledger
from ops_runner.ledger.states import apply_trigger, read_state
from ops_runner.ops.checks import approve_baseline
from ops_runner.ops.keeper import keep_gateway_up
from ops_runner.ops.reachability import compute_reachability
from ops_runner.ops.tick import tick
from ops_runner.simulators.tws_sim import StaticMarket, TwsSimulator
from ops_runner.workbook.config import Config

__all__ = ["base", "cfg", "client", "clock", "market", "no_decode_errors", "sim", "world"]

# Short Watchdog times: the app "starts" at once, a failed start is retried after 0.1 s, and
# the idle probe (a EURUSD midpoint request the simulator does not serve) never comes in a test.
GATEWAY = {
    "enabled": True,
    "client_id": 13,
    "restart_time": "23:45",
    "app_startup_seconds": 0.05,
    "app_timeout_seconds": 120,
    "retry_delay_seconds": 0.1,
    "probe_timeout_seconds": 1,
}
SECRETS = {"OPS_RUNNER_IB_USER_ID": "edemo", "OPS_RUNNER_IB_PASSWORD": "demouser"}


class SimulatorApp:
    """IBC's stand-in: ending the app shuts the simulator down (nothing listens), starting it
    listens again. A restart the simulator makes on its own is left to run its course."""

    def __init__(self, simulator: TwsSimulator) -> None:
        self.simulator = simulator
        self.starts = self.ends = 0
        self._ended = False

    async def startAsync(self) -> None:  # noqa: N802 (IBC's name)
        self.starts += 1
        if self._ended:
            self.simulator.listen()
            self._ended = False

    async def terminateAsync(self) -> None:  # noqa: N802
        if self.simulator.listening:  # the Watchdog also ends an app that is gone: no-op
            self.ends += 1
            self.simulator.shut_down()
            self._ended = True


@contextmanager
def keeping(cfg: Config, app: SimulatorApp, clock: Callable[[], datetime]) -> Iterator[None]:
    """Run the keeper in a thread of its own (its own event loop) until the block ends."""
    ready = threading.Event()
    holder: dict[str, object] = {}

    async def main_loop() -> None:
        stop = asyncio.Event()
        holder.update(loop=asyncio.get_running_loop(), stop=stop)
        ready.set()
        await keep_gateway_up(cfg, stop, app, clock=clock, poll_seconds=0.05)

    thread = threading.Thread(target=lambda: asyncio.run(main_loop()), daemon=True)
    thread.start()
    ready.wait(5)
    try:
        yield
    finally:
        loop, stop = holder["loop"], holder["stop"]
        loop.call_soon_threadsafe(stop.set)  # type: ignore[attr-defined]
        thread.join(10)
        assert not thread.is_alive()


def gateway_checks(cfg: Config) -> list[tuple[bool, str]]:
    """The keeper's broker checks in the ledger, in order: (passed, detail)."""
    with open_ledger(cfg, create=False, readonly=True) as ledger:
        return [
            (e.payload["passed"], e.payload["detail"])
            for e in ledger.events(kind=str(EventKind.CHECK_RECORDED))
            if e.payload["slot"].startswith("gateway:")
        ]


def state_of(cfg: Config) -> State:
    with open_ledger(cfg, create=False, readonly=True) as ledger:
        return read_state(ledger).state


def seen(cfg: Config, *passed: bool) -> Callable[[], bool]:
    return lambda: [p for p, _ in gateway_checks(cfg)] == list(passed)


# -- the Watchdog and the ledger ----------------------------------------------------------------


def test_keeper_when_the_gateway_restarts_records_the_loss_and_logs_in_again(tmp_path, sim, clock):
    cfg = write_ib_config(tmp_path / "wb", sim.port, simulator=True, gateway=GATEWAY)
    app = SimulatorApp(sim)
    with keeping(cfg, app, clock):
        wait_until(seen(cfg, True))
        assert sim.connections() == 1 and state_of(cfg) is State.RUN
        sim.restart(away_seconds=0.6)  # the Gateway restarts on its own
        wait_until(seen(cfg, True, False))
        assert state_of(cfg) is State.BROKER_DOWN  # no new order while it is away
        wait_until(seen(cfg, True, False, True))  # the Watchdog logged in again
        assert sim.connections() == 1
    checks = gateway_checks(cfg)
    assert checks[0][1] == f"IB gateway up: client id 13 logged in at 127.0.0.1:{sim.port}"
    assert checks[1][1] == (
        "IB gateway away (the session was dropped); the Watchdog starts it again"
    )
    assert checks[3] == (False, "IB gateway stopped with its keeper")
    with open_ledger(cfg, create=False, readonly=True) as ledger:
        events = list(ledger.events())
    history = compute_reachability(events, clock.now + timedelta(minutes=1), "America/New_York")
    assert history.losses_today == 2 and history.down_now  # the restart, then the keeper's stop
    assert history.lost_detail == "IB gateway stopped with its keeper"
    assert sim.protocol_errors() == []


def test_keeper_at_the_daily_restart_time_restarts_the_app_once_and_logs_in_again(
    tmp_path, sim, clock
):
    clock.now = datetime(2025, 12, 2, 4, 40, tzinfo=UTC)  # 23:40 New York
    cfg = write_ib_config(tmp_path / "wb", sim.port, simulator=True, gateway=GATEWAY)
    with open_ledger(cfg) as ledger:  # a vendor outage earlier: a second fault would be SAFE_MODE
        apply_trigger(ledger, Trigger.DATA_FAULT, "the vendor was late", ())
    app = SimulatorApp(sim)
    with keeping(cfg, app, clock):
        wait_until(seen(cfg, True))
        assert app.ends == 0
        clock.now = datetime(2025, 12, 2, 4, 46, tzinfo=UTC)  # 23:46: past the restart time
        wait_until(seen(cfg, True, False, True))
        assert app.ends == 1 and app.starts == 2  # ended by the keeper once, started again
        # The planned restart is in the history but is no fault: the state stays as it was.
        assert state_of(cfg) is State.DEGRADED_DATA
    detail = gateway_checks(cfg)[1][1]
    assert detail == (
        "IB gateway away (the daily restart at 23:45 New York); the Watchdog starts it again"
    )


# -- the tick while the Gateway is away and back ------------------------------------------------


@pytest.fixture
def quiet(tmp_path) -> Iterator[tuple[Config, TwsSimulator, Clock]]:
    """A sample workbook at the TWS simulator whose eve's checks passed: ticks on Thanksgiving
    (IDLE) find nothing due, so they show the state and the broker probe alone."""
    clock = Clock(EVE)
    with TwsSimulator(StaticMarket({}), clock, account=ACCOUNT) as simulator:
        root = make_workbook(tmp_path / "wb")
        cfg = write_ib_config(root, simulator.port, simulator=True, gateway=GATEWAY)
        approve_baseline(cfg, "reviewed", now=EVE)
        assert tick(cfg, now=EVE).ran == (
            "daily_checks:2025-11-26 passed",
            "pre_rebalance_checks:2025-11-26 passed",
        )
        clock.now = IDLE
        yield cfg, simulator, clock
    assert simulator.protocol_errors() == []


def test_tick_when_the_gateway_is_away_is_broker_down_and_when_it_is_back_run(quiet):
    cfg, simulator, clock = quiet
    app = SimulatorApp(simulator)
    with keeping(cfg, app, clock):
        wait_until(seen(cfg, True))
        assert tick(cfg, now=IDLE).state is State.RUN
        simulator.shut_down()  # the Gateway is away until it listens again
        wait_until(seen(cfg, True, False))
        clock.now = IDLE + timedelta(minutes=5)  # the simulator's clock is the tick's
        away = tick(cfg, now=clock.now)
        assert away.state is State.BROKER_DOWN and away.ran == ()
        simulator.listen()
        wait_until(seen(cfg, True, False, True))
        clock.now = IDLE + timedelta(minutes=10)
        back = tick(cfg, now=clock.now)
        assert back.state is State.RUN
    with open_ledger(cfg, create=False, readonly=True) as ledger:
        changes = [e.payload for e in ledger.events(kind=str(EventKind.STATE_CHANGED))]
    assert [(c["from"], c["to"], c["trigger"]) for c in changes[-3:]] == [
        ("RUN", "BROKER_DOWN", str(Trigger.BROKER_FAULT)),
        ("BROKER_DOWN", "RUN", str(Trigger.BROKER_RESTORED)),  # the tick's probe, not the keeper
        ("RUN", "BROKER_DOWN", str(Trigger.BROKER_FAULT)),  # the keeper stopped, and its app
    ]
    assert changes[-1]["reason"] == "broker check failed: IB gateway stopped with its keeper"


# -- orders across a restart --------------------------------------------------------------------


def test_orders_sent_before_a_gateway_restart_are_found_after_it_and_never_sent_again(world):
    cfg, simulator, clock, open_world = world
    cfg = write_ib_config(cfg.workbook, simulator.port, simulator=True, gateway=GATEWAY)
    app = SimulatorApp(simulator)
    with keeping(cfg, app, clock):
        wait_until(seen(cfg, True))
        broker = open_world()
        plan = plan_of(cfg, broker)
        assert submit(cfg, broker, plan).status is SubmissionStatus.SUBMITTED
        simulator.restart(away_seconds=0.6)
        wait_until(seen(cfg, True, False, True))
        again = submit(cfg, open_world(), plan)  # the execution job run again after it
    assert again.status is SubmissionStatus.SUBMITTED
    assert Counter(o.order_ref for o in simulator.orders()) == {SELL: 1, BUY: 1}
    with open_ledger(cfg, create=False, readonly=True) as ledger:
        submitted = ledger.events(kind=str(EventKind.ORDER_SUBMITTED))
        recorded = [e.payload["client_ref"] for e in submitted if e.cycle_id == "2025-11"]
    assert sorted(recorded) == sorted([SELL, BUY])
    assert clock.now == DEC_WINDOW


# -- the verb -----------------------------------------------------------------------------------


def test_keep_up_when_a_login_secret_is_missing_fails_in_one_line_naming_it(
    tmp_path, sim, monkeypatch, capsys
):
    root = tmp_path / "wb"
    write_ib_config(root, sim.port, gateway=GATEWAY)
    monkeypatch.setenv("OPS_RUNNER_IB_USER_ID", SECRETS["OPS_RUNNER_IB_USER_ID"])
    monkeypatch.delenv("OPS_RUNNER_IB_PASSWORD", raising=False)
    assert main(["--workbook", str(root), "broker", "keep-up"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        "ops-runner: secret IB_PASSWORD is not set; export OPS_RUNNER_IB_PASSWORD or add "
        "IB_PASSWORD=... to the 0600 file named by secrets.file"
    ]
    assert "edemo" not in capsys.readouterr().out


def test_keep_up_when_the_keeper_is_off_fails_in_one_line(tmp_path, sim, capsys):
    root = tmp_path / "wb"
    write_ib_config(root, sim.port)
    assert main(["--workbook", str(root), "broker", "keep-up"]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("ops-runner: config error: broker.gateway.enabled: false")
