"""`ops-runner backtest` and `ops-runner sweep` on the sample workbook, as a user runs them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ready_to_decide

from ops_runner.ops.decision import decide
from ops_runner.workbook.config import load_config

EXE = Path(sys.executable).with_name("ops-runner")


@pytest.fixture(scope="module")
def workbook(sample_workbook) -> Path:
    return sample_workbook


def cli(workbook: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(EXE), "--workbook", str(workbook), *args], capture_output=True,
                          text=True, timeout=600)  # fmt: skip


@pytest.mark.subprocess
@pytest.mark.slow
def test_backtest_when_run_lists_the_decisions_production_would_record(workbook):
    done = cli(workbook, "backtest", "--start", "2024-01-01", "--json")
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout)
    months = {d["session"]: d["targets"] for d in result["decisions"]}
    assert "2025-12-31" in months and "2024-01-31" in months
    cfg = load_config(workbook)
    for session in ("2024-06-28", "2025-12-31"):  # research and production agree
        ready_to_decide(cfg, session)
        assert decide(cfg, session).targets == months[session]
    assert {"cagr", "sharpe", "max_drawdown", "turnover"} <= set(result["metrics"])


@pytest.mark.subprocess
@pytest.mark.slow
def test_sweep_when_grid_has_defensive_choices_loads_their_bars(workbook, tmp_path):
    grid = tmp_path / "grid.yaml"
    grid.write_text("lookback_months: [6, 12]\ntop_n: [1, 2]\ndefensive: [AGG, IEF]\n")
    done = cli(workbook, "sweep", "--grid", str(grid), "--config", "gem", "--start", "2020-01-01",
               "--json")  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    rows = json.loads(done.stdout)
    assert len(rows) == 2 * 2 * 2
    assert {r["defensive"] for r in rows} == {"AGG", "IEF"}


@pytest.mark.subprocess
def test_sweep_when_grid_has_unknown_key_exits_with_one_line(workbook, tmp_path):
    grid = tmp_path / "bad.yaml"
    grid.write_text("lookbacks: [6, 12]\n")
    done = cli(workbook, "sweep", "--grid", str(grid))
    assert done.returncode != 0 and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and "lookbacks" in done.stderr
