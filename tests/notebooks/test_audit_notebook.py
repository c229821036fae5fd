"""The audit notebook executed on the sample workbook after a cycle through the simulated broker."""

from __future__ import annotations

import pytest
from conftest import make_decided_november

from ops_runner.core.events import EventKind, State
from ops_runner.ledger import open_ledger
from ops_runner.ops import jobs
from ops_runner.runtime.notebooks import run_notebook
from ops_runner.workbook.config import load_config

pytestmark = pytest.mark.notebook


def test_audit_notebook_when_run_after_a_clean_cycle_records_a_clean_audit(tmp_path):
    cfg = load_config(make_decided_november(tmp_path / "wb"))  # 2025-11 decided by a tick
    # The cycle as its notebooks' defaults run it: orders for the 2025-12-01 open.
    jobs.open_execution(cfg, "2025-11", "2025-12-01T13:30:00Z").submit()
    recon = jobs.run_reconciliation(cfg, "2025-11", "2025-12-01T15:30:00Z", alert=None)
    assert str(recon.status) == "CLEAN", recon.summary()
    # `now` stays the default (a Saturday after); a run id as the runner gives one: it records
    params = {"workbook": str(cfg.workbook), "run_id": "test-run"}
    run = run_notebook("audit", tmp_path / "audit.ipynb", params)
    assert run.completion == {"job": "audit", "session": "2025-12-05", "status": "CLEAN",
                              "state": str(State.RUN)}  # fmt: skip
    scrap = run.scraps["audit"]
    assert scrap["breaks"] == [] and scrap["positions"]  # the cycle's holding, both sides
    assert all(p["ledger"] == p["broker"] for p in scrap["positions"].values())
    assert scrap["cash"]["ledger"] is not None
    with open_ledger(load_config(cfg.workbook)) as ledger:
        (event,) = ledger.events(kind=str(EventKind.AUDIT_RECORDED))
        assert event.key == "AuditRecorded:2025-12-05" and event.payload == scrap
    assert "DU0000000" not in run.output.read_text(encoding="utf-8")
