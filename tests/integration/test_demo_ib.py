"""`ops-runner demo --broker ib-sim`: the demo's ticks through the IB adapter and the loopback
TWS simulator (one cycle here; the three-month walk is the same loop, see test_demo.py)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from ops_runner.core.events import EventKind
from ops_runner.ledger import open_ledger
from ops_runner.workbook.config import load_config

pytestmark = pytest.mark.slow  # the demo walked month by month

pytest.importorskip("ops_runner.simulators.tws_sim")

EXE = Path(sys.executable).with_name("ops-runner")
ACCOUNT = "DU7654321"
HMAC_KEY = "demo-ib-hmac-key-0a1b2c3d4e5f60718293a4b5c6d7e8f9"
JOBS = ("data_qa", "decision", "execution", "reconciliation", "slippage_report")


@pytest.fixture(scope="module")
def walk(tmp_path_factory):
    from ops_runner.demo import run_demo

    root = tmp_path_factory.mktemp("demo-ib") / "wb"
    patch = pytest.MonkeyPatch()
    patch.setenv("OPS_RUNNER_APPROVAL_KEY", HMAC_KEY)
    try:
        result = run_demo(root, months=1, quiet=True, account=ACCOUNT, broker="ib-sim")
    finally:
        patch.undo()
    cfg = load_config(root)
    with open_ledger(cfg, create=False, readonly=True) as ledger:
        events = list(ledger.events())
    return result, cfg, events


def _of(events, kind):
    return [e.payload for e in events if e.kind == str(kind)]


@pytest.mark.subprocess
def test_demo_ib_sim_runs_the_cycle_through_the_adapter_and_ends_clean_in_run(walk):
    result, cfg, events = walk
    assert cfg.values["broker"]["kind"] == "ib" and cfg.values["broker"]["simulator"] is True
    assert result.repeats_identical == result.ticks >= 4  # eve, close, window, open
    done = {(p["job"], p["outcome"]) for p in _of(events, EventKind.JOB_COMPLETED) if p["done"]}
    for job in JOBS:
        assert any(j == job for j, _ in done), done
    assert ("reconciliation", "CLEAN") in done
    submitted = _of(events, EventKind.ORDER_SUBMITTED)
    fills = _of(events, EventKind.FILL_RECORDED)
    assert submitted and {f["client_ref"] for f in fills} == {s["client_ref"] for s in submitted}
    assert len({f["exec_id"] for f in fills}) == len(fills)
    # the simulator's opening auction fills at the print: an IB-style exec id, not the sim's
    assert all(f["exec_id"].count(".") == 3 and not f["exec_id"].startswith("sim.") for f in fills)
    assert [p["to"] for p in _of(events, EventKind.STATE_CHANGED)] == []  # RUN throughout
    verify = subprocess.run([str(EXE), "--workbook", str(cfg.workbook), "ledger", "verify"],
                            capture_output=True, text=True, timeout=120)  # fmt: skip
    assert verify.returncode == 0, verify.stdout + verify.stderr


def test_demo_ib_sim_no_file_holds_the_account_id_or_the_key(walk):
    _, cfg, _ = walk
    needles = {ACCOUNT.encode(), HMAC_KEY.encode(), HMAC_KEY[:16].encode()}
    scanned = 0
    for path in cfg.workbook.rglob("*"):
        if not path.is_file() or path.name == "config.yaml" or path.parent.name == "broker":
            continue  # the config and simulated books (the drill's scratch) name it by design
        data = path.read_bytes()
        scanned += 1
        for needle in needles:
            assert needle not in data, f"{needle.decode()[:4]}... found in {path}"
    assert scanned > 10
