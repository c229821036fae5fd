"""The decision notebook executed by papermill: records the decision once and shows it."""

from __future__ import annotations

import json
from decimal import Decimal

import nbformat
import pytest
from conftest import make_sample_workbook, ready_to_decide

from ops_runner.core.events import EventKind
from ops_runner.ledger import open_ledger
from ops_runner.runtime.notebooks import run_notebook
from ops_runner.workbook.config import load_config

pytestmark = pytest.mark.notebook


def test_decision_notebook_when_run_twice_records_one_decision(tmp_path):
    cfg = load_config(make_sample_workbook(tmp_path / "wb"))
    ready_to_decide(cfg, "2025-12-31")  # the gates: baseline, a clean QA of the session
    # as the runner runs it (a run id: not a preview)
    params = {"workbook": str(cfg.workbook), "session": "2025-12-31", "run_id": "test-run"}
    first = run_notebook("decision", tmp_path / "first.ipynb", params)
    second = run_notebook("decision", tmp_path / "second.ipynb", params)
    assert first.completion["created"] is True and second.completion["created"] is False
    assert first.completion["seq"] == second.completion["seq"]
    targets = first.scraps["targets"]
    assert sum(Decimal(w) for w in targets.values()) == Decimal(1)
    with open_ledger(cfg) as ledger:
        recorded = list(ledger.events(kind=str(EventKind.DECISION_RECORDED)))
    assert len(recorded) == 1 and recorded[0].payload["decision"]["targets"] == targets
    outputs = json.dumps([c.get("outputs", []) for c in nbformat.read(first.output, 4).cells])
    assert "image/png" in outputs  # the ranking chart
    assert recorded[0].payload["decision"]["explanation"] in outputs
