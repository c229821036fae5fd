"""An order placed just before the kernel died (issue 15, hole 4).

The tick's execution notebook places the November SELL, then its kernel dies
(``OPS_RUNNER_FAULT=crash@submission:after_place``) before OrderSubmitted is recorded: the
order is at the broker and fills at the open, the ledger holds only its intent. The incident's
investigation must show the broker's order beside the ledger's intent, and reconciliation,
which the runbook allows in SAFE_MODE, must adopt it by its client reference so the ledger's
position is the account's before anyone approves anything.
"""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml
from conftest import make_decided_november

from ops_runner.brokers import open_broker
from ops_runner.core.events import EventKind, State
from ops_runner.ledger import open_ledger
from ops_runner.ledger.projections import compute_positions
from ops_runner.ledger.states import read_state
from ops_runner.runtime.notebooks import IN_PROCESS_ENV, read_scraps
from ops_runner.workbook.config import Config, load_config

EXE = Path(sys.executable).with_name("ops-runner")
SELL, BUY = "mr:2025-11:VEU:SELL", "mr:2025-11:AGG:BUY"


def tick(cfg: Config, now: str, fault: str = "") -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "OPS_RUNNER_FAULT"}
    if fault:
        env["OPS_RUNNER_FAULT"] = fault
    return subprocess.run([str(EXE), "--workbook", str(cfg.workbook), "tick", "--now", now],
                          capture_output=True, text=True, timeout=600, env=env)  # fmt: skip


def events(cfg: Config, kind: EventKind) -> list:
    with open_ledger(cfg) as ledger:
        return list(ledger.events(kind=str(kind)))


@pytest.fixture
def cfg(tmp_path: Path) -> Config:
    root = make_decided_november(tmp_path / "wb")
    config = root / "config.yaml"
    raw = yaml.safe_load(config.read_text(encoding="utf-8"))
    raw["schedule"]["investigate_incidents"] = True  # the investigation is what is under test
    config.write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
    return load_config(root)


@pytest.mark.notebook
def test_order_placed_before_the_kernel_died_is_shown_then_adopted_by_reconciliation(
    cfg, monkeypatch
):
    died = tick(cfg, "2025-12-01T13:30:00Z", fault="crash@submission:after_place")
    assert died.returncode == 0, died.stderr
    assert "execution:2025-11 FAILED" in died.stdout and "kernel died" in died.stdout
    (failed,) = events(cfg, EventKind.JOB_FAILED)
    assert failed.payload["job"] == "execution"
    assert [e.payload["client_ref"] for e in events(cfg, EventKind.ORDER_SUBMITTED)
            if e.cycle_id == "2025-11"] == []  # fmt: skip
    broker = open_broker(cfg, clock=lambda: datetime(2025, 12, 1, 13, 31, tzinfo=UTC))
    broker.connect()
    at_broker = {o.client_ref: o for o in broker.open_orders()}
    broker.close()
    assert list(at_broker) == [SELL]  # placed, never recorded

    # The same tick investigated the incident: the broker's order beside the ledger's intents.
    (artifact,) = [e for e in events(cfg, EventKind.ARTIFACT_RECORDED)
                   if e.payload["job"] == "incident"]  # fmt: skip
    scraps = read_scraps(cfg.workbook / artifact.payload["path"])
    rows = {row["client_ref"]: row for row in scraps["incident"]["snapshot"]["orders"]}
    assert rows[SELL]["ledger"] == "intended"
    assert rows[SELL]["broker"].startswith("submitted, 0 of 1358 filled")
    assert "placed but not recorded" in rows[SELL]["meaning"]
    assert rows[BUY] == {**rows[BUY], "ledger": "intended", "broker": "not at the broker",
                         "meaning": "never sent"}  # fmt: skip

    # After the open, reconciliation (in SAFE_MODE) adopts the SELL and records its fill. The
    # kernel's death and its investigation are the subject: the recovery's jobs run their cells
    # in the tick's process, as the tick's tests do (tests/notebooks/ runs each in a kernel).
    monkeypatch.setenv(IN_PROCESS_ENV, "1")
    after = tick(cfg, "2025-12-01T15:10:00Z")
    assert after.returncode == 0, after.stderr
    assert "reconciliation:2025-11 BREAKS" in after.stdout, after.stdout  # the BUY never went
    (adopted,) = [e for e in events(cfg, EventKind.ORDER_SUBMITTED) if e.cycle_id == "2025-11"]
    assert adopted.payload["client_ref"] == SELL and adopted.payload["adopted"] is True
    assert adopted.payload["broker_order_id"] == at_broker[SELL].broker_order_id
    fills = [e for e in events(cfg, EventKind.FILL_RECORDED)
             if e.payload["client_ref"] == SELL]  # fmt: skip
    assert sum(f.payload["quantity"] for f in fills) == 1358
    with open_ledger(cfg) as ledger:
        ledger_positions = compute_positions(ledger.events())
        assert read_state(ledger).state is State.SAFE_MODE
        assert ledger.verify().ok
    broker = open_broker(cfg, clock=lambda: datetime(2025, 12, 1, 15, 11, tzinfo=UTC))
    broker.connect()
    assert broker.positions() == {} == {s: q for s, q in ledger_positions.items() if q}
    broker.close()
    (check,) = [e for e in events(cfg, EventKind.CHECK_RECORDED)
                if e.payload.get("check") == "reconciliation"
                and e.payload.get("cycle_id") == "2025-11"]  # fmt: skip
    kinds = {(b["what"], b["symbol"]) for b in check.payload["breaks"]}
    assert kinds == {("missing_fill", "AGG")}  # the SELL is no break: adopted and filled
