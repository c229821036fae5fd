"""The production and research notebooks on real vendor data (skipped without ../shared/data)."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import pytest
from conftest import snapshot_folder

from ops_runner.ledger.init import init_workbook
from ops_runner.market.importer import import_files
from ops_runner.market.prices import open_store
from ops_runner.ops.checks import approve_baseline
from ops_runner.runtime.notebooks import run_notebook
from ops_runner.strategy.research import load_bars, load_research_config
from ops_runner.strategy.walk_forward import walk_forward
from ops_runner.workbook.config import load_config

pytestmark = [pytest.mark.notebook, pytest.mark.realdata]

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"


@pytest.fixture(scope="module")
def av_workbook(tmp_path_factory) -> Path:
    if not (DATA / "alphavantage").is_dir():
        pytest.skip(f"real data not present at {DATA} (it lives beside the project, not in it)")
    root = tmp_path_factory.mktemp("av")
    init_workbook(root, template="demo")
    config = root / "config.yaml"
    text = config.read_text()
    text = text.replace("  primary: sample", "  primary: alphavantage")
    text = text.replace("risk: [SPY, VEU, QQQ, IWM, EEM]", "risk: [SPY, EFA]")
    text = text.replace("  absolute_compare: each", "  absolute_compare: benchmark")
    config.write_text(text)
    store = open_store(load_config(root))
    import_files(store, DATA / "alphavantage", "alphavantage", "alphavantage")
    approve_baseline(load_config(root), "the real-data workbook as set up")
    return root


def test_data_qa_and_decision_notebooks_when_on_alphavantage_complete(av_workbook, tmp_path):
    # as the runner runs them (a run id): the QA is recorded, and the decision's gate needs it
    qa = run_notebook("data_qa", tmp_path / "qa.ipynb",
                      {"workbook": str(av_workbook), "as_of": "2020-11-30",
                       "run_id": "qa"})  # fmt: skip
    assert qa.scraps["blocking"] is False
    run = run_notebook("decision", tmp_path / "decision.ipynb",
                       {"workbook": str(av_workbook), "session": "2020-11-30",
                        "run_id": "decision"})  # fmt: skip
    targets = run.completion["targets"]
    assert sum(Decimal(w) for w in targets.values()) == Decimal(1)
    assert set(targets) <= {"SPY", "EFA", "AGG"}


def test_backtest_notebook_when_on_alphavantage_completes(av_workbook, tmp_path):
    run = run_notebook("research/backtest", tmp_path / "backtest.ipynb",
                       {"workbook": str(av_workbook), "start": "2008-01-01"})  # fmt: skip
    assert run.completion["job"] == "research/backtest"


@pytest.mark.slow
def test_walk_forward_notebook_when_on_alphavantage_records_the_walk_and_no_ledger_event(
    av_workbook, tmp_path
):
    """The research notebook pointed at a real-data workbook and another config (GEM's SPY,
    VEU, AGG, BIL): it completes, what it records is the walk the library computes here on the
    same store, and it leaves the workbook's ledger as it was (research writes no event)."""
    grid = tmp_path / "grid.yaml"
    grid.write_text("lookback_months: [3, 6, 12]\ntop_n: [1, 2]\n")
    ledger = snapshot_folder(av_workbook / "ledger")
    assert ledger  # the baseline's approval is in it: there is something to keep
    run = run_notebook("research/walk_forward", tmp_path / "walk_forward.ipynb",
                       {"workbook": str(av_workbook), "config": "gem", "grid": str(grid),
                        "train_years": 3, "test_months": 12, "metric": "sharpe"})  # fmt: skip
    assert run.completion["job"] == "research/walk_forward"
    assert snapshot_folder(av_workbook / "ledger") == ledger

    cfg = load_research_config(load_config(av_workbook), "gem")
    values = {"lookback_months": [3, 6, 12], "top_n": [1, 2]}
    expected = walk_forward(cfg, values, load_bars(cfg, values), train_years=3, test_months=12,
                            metric="sharpe")  # fmt: skip
    as_json = json.loads(json.dumps(expected.to_dict()))
    assert run.scraps["steps"] == as_json["steps"]
    assert run.scraps["metrics"] == json.loads(json.dumps(expected.metrics()))
    assert len(expected.steps) >= 8  # VEU and BIL start in 2007: real windows from 2008 on
    assert run.completion["windows"] == len(expected.steps)
    assert (run.completion["start"], run.completion["end"]) == (
        expected.steps["test_start"].iat[0], expected.steps["test_end"].iat[-1])  # fmt: skip
    assert run.completion["grid"] == values and run.completion["config_hash"] == cfg.hash
