"""The research notebooks with their default parameters run offline on a sample workbook."""

from __future__ import annotations

import pytest
from conftest import make_sample_workbook

from ops_runner.runtime.notebooks import run_notebook

pytestmark = pytest.mark.notebook


@pytest.mark.parametrize("job", ["research/backtest", "research/sweep", "research/walk_forward"])
def test_research_notebook_when_defaults_used_completes_on_sample(job, tmp_path, monkeypatch):
    monkeypatch.setenv("OPS_RUNNER_HOME", str(make_sample_workbook(tmp_path / "home")))
    run = run_notebook(job, tmp_path / "out.ipynb", {})
    assert run.completion["job"] == job
