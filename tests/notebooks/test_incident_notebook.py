"""The incident notebook: offline on defaults with no incident, and on an open incident."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
import yaml
from conftest import make_sample_workbook

from ops_runner.ledger import open_ledger
from ops_runner.ops.incidents import open_incident
from ops_runner.runtime.notebooks import run_notebook
from ops_runner.workbook.config import load_config

pytestmark = pytest.mark.notebook
ACCOUNT = "DU1234567"


def test_incident_notebook_when_no_incident_open_says_so_and_completes(tmp_path):
    root = make_sample_workbook(tmp_path / "wb")
    run = run_notebook("incident", tmp_path / "incident.ipynb", {"workbook": str(root)})
    assert run.completion == {"job": "incident", "incident": None, "classification": None,
                              "state": None}  # fmt: skip
    assert "no incident open" in run.output.read_text()


def test_incident_notebook_when_incident_open_shows_classification_and_masked_account(tmp_path):
    root = make_sample_workbook(tmp_path / "wb")
    config = root / "config.yaml"
    values = yaml.safe_load(config.read_text())
    values["broker"]["account"] = ACCOUNT
    config.write_text(yaml.safe_dump(values))
    cfg = load_config(root)
    with open_ledger(cfg) as ledger:
        ledger.append("CheckRecorded", "CheckRecorded:broker:test", {
            "check": "broker", "slot": "test", "passed": False,
            "detail": f"account {ACCOUNT} refused", "evidence": []})  # fmt: skip
        incident_id = open_incident(cfg, ledger, f"broker odd for {ACCOUNT}",
                                    now=datetime(2025, 12, 1, 15, 0, tzinfo=UTC))  # fmt: skip
    run = run_notebook("incident", tmp_path / "incident.ipynb", {"workbook": str(root)})
    assert run.completion["incident"] == incident_id
    assert run.completion["classification"] == "Broker/API"
    assert run.completion["state"] == "SAFE_MODE"
    text = run.output.read_text()
    assert "Broker/API" in text and "DU*****67" in text
    assert ACCOUNT not in text
