"""The job registry: one spec per job of the tick, and each spec true to its notebook."""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path

import papermill as pm
import pytest

from ops_runner.ledger.init import init_workbook
from ops_runner.ops.registry import JOBS, NOTEBOOK_JOBS, compute_parameters
from ops_runner.ops.schedule import Job, Slot
from ops_runner.workbook.config import load_config

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"
NOW = datetime(2025, 12, 1, 13, 30, tzinfo=UTC)
SESSION = date(2025, 11, 28)


def slot(job: Job, key: str) -> Slot:
    cycle = "2025-11" if key.endswith(":2025-11") else None
    return Slot(job, key, SESSION, cycle, NOW, NOW)


def test_registry_when_read_has_one_spec_for_every_job_of_the_schedule():
    assert set(JOBS) == set(Job)
    assert all(spec.job is job for job, spec in JOBS.items())
    # a job is either a notebook or an in-process callable, never both, never neither
    assert all((spec.notebook is None) == (spec.run is not None) for spec in JOBS.values())


@pytest.mark.parametrize("job", sorted(NOTEBOOK_JOBS), ids=str)
def test_notebook_job_when_its_notebook_is_inspected_declares_every_parameter_a_slot_gives(job):
    spec = JOBS[job]
    source = NOTEBOOKS / f"{spec.notebook}.ipynb"
    declared = set(pm.inspect_notebook(str(source)))
    # the tick fills these; run_id is added by the runner; nothing else may be sent
    assert {"workbook", "run_id", *spec.parameters} <= declared, declared


# What the tick sends each notebook, written out by hand (workbook aside).
EXPECTED = {
    "data_qa:2025-11": {"as_of": "2025-11-28", "now": "2025-12-01T13:30:00Z"},
    "decision:2025-11": {"session": "2025-11-28", "now": "2025-12-01T13:30:00Z"},
    "execution:2025-11": {"cycle": "2025-11", "now": "2025-12-01T13:30:00Z"},
    "reconciliation:2025-11": {"cycle": "2025-11", "now": "2025-12-01T13:30:00Z"},
    "slippage_report:2025-11": {"cycle": "2025-11", "now": "2025-12-01T13:30:00Z"},
    "audit:2025-11-28": {"now": "2025-12-01T13:30:00Z"},
    "incident:job-x-1": {"incident": "job-x-1", "now": "2025-12-01T13:30:00Z"},
}


@pytest.mark.parametrize("key", sorted(EXPECTED))
def test_compute_parameters_when_given_a_slot_fills_its_notebook_s_parameters(key, tmp_path):
    init_workbook(tmp_path / "wb", template="demo")
    cfg = load_config(tmp_path / "wb")
    job = Job(key.split(":")[0])
    simulated = compute_parameters(cfg, slot(job, key), NOW, simulated=True)
    assert simulated == {"workbook": str(cfg.workbook), **EXPECTED[key]}
    real = compute_parameters(cfg, slot(job, key), NOW, simulated=False)
    assert real.get("now", "") == "", "on the real clock the notebook reads the clock itself"
