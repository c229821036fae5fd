"""The IB adapter's test world, shared by test_ib_adapter, test_ib_faults and test_ib_gateway: the
loopback TWS simulator, a workbook pointed at it, the adapter opened once per client library,
the execution tests' workbook with its account at the simulator (``world``), and helpers."""

from __future__ import annotations

import importlib.util
import logging
import shutil
import time
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime
from pathlib import Path

import pytest
import yaml
from execution_world import DEC_WINDOW, DECISION_KEY

from ops_runner.brokers.gate import GatePass, OrderIntent, Side, require_gate_pass
from ops_runner.brokers.ib import IbBroker
from ops_runner.brokers.sim import SimBroker
from ops_runner.core.events import Purpose
from ops_runner.execution.plan import read_plan
from ops_runner.execution.submission import SubmissionReport, submit_plan
from ops_runner.ledger import open_ledger
from ops_runner.ledger.init import init_workbook
from ops_runner.simulators.market import WorkbookMarket
from ops_runner.simulators.tws_sim import StaticMarket, TwsSimulator
from ops_runner.workbook.config import Config, load_config

ACCOUNT = "DU1234521"
MASKED = "DU*****21"
DEC1, DEC2 = date(2025, 12, 1), date(2025, 12, 2)
BEFORE_OPEN = datetime(2025, 12, 1, 13, 0, tzinfo=UTC)  # 08:00 New York
AFTER_OPEN = datetime(2025, 12, 1, 14, 31, tzinfo=UTC)  # 09:31 New York
DECODE_FAILURES = ("Error handling fields", "Error for ")


def _client_params() -> list:
    return [
        pytest.param(
            name,
            marks=pytest.mark.skipif(
                importlib.util.find_spec(name) is None, reason=f"{name} is not installed"
            ),
        )
        for name in ("ib_async", "ib_insync")
    ]


@pytest.fixture(params=_client_params())
def client(request) -> str:
    return request.param


class Clock:
    """A settable clock shared by the simulator and the adapter."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def wait_until(condition: Callable[[], object], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        time.sleep(0.02)


def daily_bars() -> tuple[dict, dict]:
    """Raw and adjusted bars of SPY over five sessions with a 2.00 dividend ex 2025-11-26."""
    days = [date(2025, 11, 24), date(2025, 11, 25), date(2025, 11, 26), date(2025, 11, 28), DEC1]
    closes = [600.0, 605.0, 604.0, 606.0, 610.0]
    raw = [(d, c - 1, c + 2, c - 3, c, 1e6) for d, c in zip(days, closes, strict=True)]
    factor = [1 - 2.0 / 605.0] * 2 + [1.0] * 3  # the previous-close convention
    adjusted = [
        (d, o * f, h * f, lo * f, c * f, v)
        for (d, o, h, lo, c, v), f in zip(raw, factor, strict=True)
    ]
    return {"SPY": raw}, {"SPY": adjusted}


@pytest.fixture
def clock() -> Clock:
    return Clock(BEFORE_OPEN)


@pytest.fixture
def market() -> StaticMarket:
    raw, adjusted = daily_bars()
    return StaticMarket(
        {DEC1: {"SPY": "610.00", "AGG": "100.00", "VEU": "70.00"}, DEC2: {}},
        bars=raw,
        adjusted_bars=adjusted,
    )


@pytest.fixture
def sim(market, clock) -> Iterator[TwsSimulator]:
    with TwsSimulator(market, clock, account=ACCOUNT, positions={"VEU": 100}) as running:
        yield running
    assert running.protocol_errors() == []


def write_ib_config(root: Path, port: int, **broker: object) -> Config:
    """A workbook at ``root`` whose broker is IB at ``port`` with short test timeouts."""
    if not (root / "config.yaml").exists():
        init_workbook(root, template="demo")
    path = root / "config.yaml"
    values = yaml.safe_load(path.read_text())
    values["broker"].update(
        {
            "kind": "ib",
            "mode": "paper",
            "host": "127.0.0.1",
            "port": port,
            "account": ACCOUNT,
            "client_ids": {"orders": 11, "readonly": 12},
            "connect_timeout_seconds": 1.0,
            "request_timeout_seconds": 2.0,
            "retry": {"attempts": 2, "wait_seconds": 0.1},
        }
    )
    values["broker"].update(broker)
    path.write_text(yaml.safe_dump(values, sort_keys=False))
    return load_config(root)


@pytest.fixture
def cfg(tmp_path, sim) -> Config:
    return write_ib_config(tmp_path / "wb", sim.port)


@pytest.fixture
def open_ib(cfg, clock, client) -> Iterator[Callable[..., IbBroker]]:
    """Factory of adapters on ``cfg`` (closed at teardown)."""
    made: list[IbBroker] = []

    def make(role: str = "orders", config: Config | None = None) -> IbBroker:
        broker = IbBroker(config or cfg, clock=clock, role=role, client=client)
        made.append(broker)
        return broker

    yield make
    for broker in made:
        broker.close()


@pytest.fixture(autouse=True)
def no_decode_errors(caplog) -> Iterator[None]:
    """Fail on a client decoder error, a failed adapter handler, or a raw account id."""
    caplog.set_level(logging.DEBUG)
    for library in ("ib_async", "ib_insync"):  # the CLI quiets them; a test must hear them
        caplog.set_level(logging.DEBUG, logger=library)
    yield
    bad = [
        r.getMessage()
        for r in caplog.records
        if (
            r.name.startswith(("ib_async", "ib_insync"))
            and r.levelno >= logging.ERROR
            and r.getMessage().startswith(DECODE_FAILURES)
        )
        or (r.name.startswith("ops_runner.brokers.ib") and "handler failed" in r.getMessage())
    ]
    assert bad == []
    leaked = [r.getMessage() for r in caplog.records if ACCOUNT in r.getMessage()]
    assert leaked == []


def intent(ref: str, symbol: str, side: Side, quantity: int, session: date = DEC1) -> OrderIntent:
    return OrderIntent(ref, symbol, side, quantity, Purpose.REBALANCE, session.isoformat())


def gate_pass(cfg: Config, order: OrderIntent, held: dict[str, int] | None = None) -> GatePass:
    """A pass from the workbook's own order gate (the adapter checks it first)."""
    with open_ledger(cfg) as ledger:
        return require_gate_pass(ledger, order, positions=held or {"VEU": 100})


def sim_orders(sim: TwsSimulator, ref: str) -> list:
    return [o for o in sim.orders() if o.order_ref == ref]


# -- submit_plan on a real ledger: the execution tests' workbook at the TWS simulator ----------


@pytest.fixture
def world(base, tmp_path, client):
    """The execution tests' workbook (VEU held, AGG decided) with its account at the TWS sim."""
    root = tmp_path / "wb"
    shutil.copytree(base, root)
    books = SimBroker(load_config(root), clock=lambda: DEC_WINDOW)
    positions, cash = books.positions(), books.account_values().cash
    clock = Clock(DEC_WINDOW)
    simulator = TwsSimulator(
        WorkbookMarket(load_config(root)), clock, account=ACCOUNT, cash=cash, positions=positions
    )
    simulator.start()
    cfg = write_ib_config(root, simulator.port)
    made: list[IbBroker] = []

    def open_ib_world(role: str = "orders") -> IbBroker:
        made.append(IbBroker(cfg, clock=clock, role=role, client=client))
        return made[-1]

    yield cfg, simulator, clock, open_ib_world
    for broker in made:
        broker.close()
    simulator.stop()
    assert simulator.protocol_errors() == []


def plan_of(cfg: Config, broker: IbBroker):
    with open_ledger(cfg) as ledger:
        return read_plan(cfg, broker, ledger.get(DECISION_KEY).payload)


def submit(cfg: Config, broker: IbBroker, plan=None, hooks=None) -> SubmissionReport:
    plan = plan or plan_of(cfg, broker)
    with open_ledger(cfg) as ledger:
        return submit_plan(cfg, ledger, broker, plan, DEC_WINDOW, hooks=hooks)
