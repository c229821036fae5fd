"""The IB adapter's costs against the loopback TWS simulator, per installed client library.

- login: a fresh adapter's connect (socket, handshake, startApi, the client's own start-up
  requests, then the adapter's re-sync of executions, orders and positions) and close; median.
- health: one health() on a live session (server time round trip); median.
- place: market-on-open orders sent one at a time, each waiting for its acknowledgement.
- recover: after the open filled them all, a fresh read-only adapter logs in and lists every
  execution with its commission (what reconciliation does after a dropped session).
No targets: figures for the closing note. Prints a table and, last, `RESULT {json}`.
"""

from __future__ import annotations

import importlib.util
import json
import statistics
import sys
import tempfile
import time
from datetime import UTC, date, datetime
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ops_runner.brokers.gate import OrderIntent, Side, require_gate_pass  # noqa: E402
from ops_runner.brokers.ib import IbBroker  # noqa: E402
from ops_runner.core.events import Purpose  # noqa: E402
from ops_runner.ledger import open_ledger  # noqa: E402
from ops_runner.ledger.init import init_workbook  # noqa: E402
from ops_runner.simulators.tws_sim import StaticMarket, TwsSimulator  # noqa: E402
from ops_runner.workbook.config import load_config  # noqa: E402

SESSION = date(2025, 12, 1)
BEFORE_OPEN = datetime(2025, 12, 1, 13, 30, tzinfo=UTC)
AFTER_OPEN = datetime(2025, 12, 1, 15, 0, tzinfo=UTC)
SYMBOLS = [f"E{i:03d}" for i in range(100)]
LOGINS = 7


class Clock:
    def __init__(self) -> None:
        self.now = BEFORE_OPEN

    def __call__(self) -> datetime:
        return self.now


def workbook(root: Path, port: int, client: str):
    init_workbook(root, template="demo")
    path = root / "config.yaml"
    values = yaml.safe_load(path.read_text())
    values["broker"].update(kind="ib", port=port, account="DU1234521", client=client,
                            request_timeout_seconds=30)  # fmt: skip
    values["universe"]["risk"] = SYMBOLS[:2]  # any valid universe; the orders name their own
    path.write_text(yaml.safe_dump(values))
    return load_config(root)


def measure(client: str) -> list[dict]:
    clock = Clock()
    market = StaticMarket({SESSION: {s: "50.00" for s in SYMBOLS}})
    with TwsSimulator(market, clock, cash=10**9) as sim, tempfile.TemporaryDirectory() as tmp:
        cfg = workbook(Path(tmp) / "wb", sim.port, client)
        logins = []
        for _ in range(LOGINS):
            started = time.perf_counter()
            broker = IbBroker(cfg, clock=clock, role="readonly", client=client)
            broker.connect()
            broker.close()
            logins.append(time.perf_counter() - started)
        broker = IbBroker(cfg, clock=clock, role="orders", client=client)
        broker.connect()
        rounds = []
        for _ in range(20):
            started = time.perf_counter()
            broker.health()
            rounds.append(time.perf_counter() - started)
        intents = [OrderIntent(f"mr:2025-11:{s}:BUY", s, Side.BUY, 10, Purpose.REBALANCE,
                               SESSION.isoformat()) for s in SYMBOLS]  # fmt: skip
        with open_ledger(cfg) as ledger:
            passes = [require_gate_pass(ledger, i, positions={}) for i in intents]
        started = time.perf_counter()
        for intent, gate_pass in zip(intents, passes, strict=True):
            broker.place(intent, gate_pass)
        placed = time.perf_counter() - started
        broker.close()
        clock.now = AFTER_OPEN
        sim.advance()
        started = time.perf_counter()
        reader = IbBroker(cfg, clock=clock, role="readonly", client=client)
        reader.connect()
        fills, fees = reader.executions(), reader.commissions()
        recovered = time.perf_counter() - started
        reader.close()
        assert len(fills) == len(SYMBOLS) == len(fees), (len(fills), len(fees))
    n = len(SYMBOLS)
    return [
        {"metric": f"{client} login + re-sync (median of {LOGINS})",
         "value": statistics.median(logins) * 1000, "unit": "ms"},
        {"metric": f"{client} health round trip (median of 20)",
         "value": statistics.median(rounds) * 1000, "unit": "ms"},
        {"metric": f"{client} place {n} MOO orders, each acknowledged",
         "value": placed / n * 1000, "unit": "ms/order"},
        {"metric": f"{client} login + recover {n} fills with commissions",
         "value": recovered * 1000, "unit": "ms"},
    ]  # fmt: skip


def main() -> int:
    rows = []
    for client in ("ib_async", "ib_insync"):
        if importlib.util.find_spec(client) is None:
            print(f"{client}: not installed, skipped")
            continue
        rows.extend(measure(client))
    for row in rows:
        print(f"{row['metric']:<58} {row['value']:>9.1f} {row['unit']}")
    print("RESULT " + json.dumps([{**r, "target": ""} for r in rows]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
