"""A whole cycle through the production notebooks on the simulated broker."""

from __future__ import annotations

import pytest
from conftest import make_decided_november

from ops_runner.core.events import EventKind, State
from ops_runner.ledger import open_ledger
from ops_runner.runtime.notebooks import run_notebook
from ops_runner.workbook.config import load_config

pytestmark = pytest.mark.notebook


def test_cycle_when_run_by_notebooks_fills_once_and_reconciles_clean(tmp_path, monkeypatch):
    home = make_decided_november(tmp_path / "home")  # 2025-11 decided by a real tick
    monkeypatch.setenv("OPS_RUNNER_HOME", str(home))
    # Defaults (cycle 2025-11, its window and its open) on $OPS_RUNNER_HOME, with a run id as
    # the runner gives one: each run records.
    run = {"run_id": "test-run"}
    execution = run_notebook("execution", tmp_path / "execution.ipynb", run)
    assert execution.completion["status"] == "SUBMITTED", execution.completion
    again = run_notebook("execution", tmp_path / "execution-again.ipynb", run)
    assert again.completion["status"] == "SUBMITTED"
    recon = run_notebook("reconciliation", tmp_path / "reconciliation.ipynb", run)
    assert recon.completion["status"] == "CLEAN", recon.scraps["reconciliation"]
    assert recon.completion["state"] == str(State.RUN)
    cfg = load_config(home)
    with open_ledger(cfg) as ledger:
        submitted = [
            e.payload["client_ref"] for e in ledger.events(kind=str(EventKind.ORDER_SUBMITTED))
        ]
        fills = list(ledger.events(kind=str(EventKind.FILL_RECORDED)))
        assert ledger.verify().ok
    assert len(submitted) == len(set(submitted)) >= 1  # one order per intent, even run twice
    assert {f.payload["client_ref"] for f in fills} <= set(submitted)
    for artifact in (execution.output, recon.output):  # account ids never shown unmasked
        assert "DU0000000" not in artifact.read_text(encoding="utf-8")


def test_cycle_when_the_open_leaves_an_order_unfilled_alerts_and_goes_safe_mode(tmp_path):
    import json

    import nbformat

    cfg = load_config(make_decided_november(tmp_path / "wb"))  # 2025-11 decided by a tick
    config = cfg.workbook / "config.yaml"
    with open_ledger(cfg) as ledger:
        decided = ledger.last(str(EventKind.DECISION_RECORDED)).payload["decision"]
    unfilled = sorted(decided["targets"])
    config.write_text(
        config.read_text().replace("sim_faults: {}", f"sim_faults: {{no_fill: {unfilled}}}")
    )
    params = {"workbook": str(cfg.workbook), "run_id": "test-run"}
    run_notebook("execution", tmp_path / "execution.ipynb", params)
    recon = run_notebook("reconciliation", tmp_path / "reconciliation.ipynb", params)
    assert recon.completion["status"] == "BREAKS"
    assert recon.completion["state"] == str(State.SAFE_MODE)
    outputs = json.dumps([c.get("outputs", []) for c in nbformat.read(recon.output, 4).cells])
    assert "ALERT:" in outputs  # the operator sees it in the executed notebook
