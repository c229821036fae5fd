"""The data_qa notebook executed by papermill in a fresh kernel, as the production run does."""

from __future__ import annotations

import json
from pathlib import Path

import nbformat
import pandas as pd
import pytest
from conftest import make_sample_workbook, snapshot_folder

from ops_runner.ledger.init import init_workbook
from ops_runner.market.calendar import open_calendar
from ops_runner.market.prices import open_store
from ops_runner.market.sources.sample import write_sample
from ops_runner.runtime.notebooks import NotebookError, read_scraps, run_notebook
from ops_runner.workbook.config import load_config

pytestmark = pytest.mark.notebook


def _outputs_text(path: Path) -> str:
    nb = nbformat.read(str(path), as_version=4)
    return json.dumps([c.get("outputs", []) for c in nb.cells])


def test_data_qa_notebook_when_sample_is_clean_records_no_blocking(sample_workbook, tmp_path):
    out = tmp_path / "runs" / "data_qa.ipynb"
    run = run_notebook("data_qa", out, {"workbook": str(sample_workbook), "as_of": "2025-12-31"})
    assert run.completion["job"] == "data_qa"
    assert run.completion["as_of"] == "2025-12-31"
    assert run.scraps["blocking"] is False
    assert run.completion["blocking"] is False
    text = _outputs_text(out)
    assert "SYNTHETIC" in text  # the sample is labelled wherever it shows up
    assert "DU0000000" not in text and "DU*****00" in text  # account masked


def test_data_qa_notebook_when_a_session_is_missing_records_blocking(tmp_path):
    root = tmp_path / "wb"
    init_workbook(root, template="demo")
    cfg = load_config(root)
    write_sample(open_store(cfg), calendar=open_calendar(cfg))
    # Plant one fault the QA must see: drop SPY's bar of 2025-12-15 (a Monday session).
    store = open_store(cfg)
    bars = store.load_bars("sample", "SPY").drop(index=[pd.Timestamp("2025-12-15")])
    store.write_bars(
        "sample",
        "SPY",
        bars,
        {
            "layout": "sample",
            "source_file": "test: sample SPY without 2025-12-15",
            "source_sha256": "0" * 64,
            "notes": "planted gap",
        },
    )
    out = tmp_path / "data_qa.ipynb"
    run = run_notebook("data_qa", out, {"workbook": str(root), "as_of": "2025-12-31"})
    assert run.scraps["blocking"] is True
    assert "image/png" in _outputs_text(out)  # the flagged symbol's chart is shown
    findings = run.scraps["findings"]
    assert any(
        f["symbol"] == "SPY"
        and f["date"] == "2025-12-15"
        and f["check"] == "completeness"
        and f["severity"] == "blocking"
        for f in findings
    ), findings


def test_data_qa_notebook_when_defaults_used_runs_offline_on_sample(tmp_path, monkeypatch):
    home = make_sample_workbook(tmp_path / "home")
    monkeypatch.setenv("OPS_RUNNER_HOME", str(home))
    before = snapshot_folder(home)
    out = tmp_path / "default.ipynb"
    run = run_notebook("data_qa", out, {})  # by hand, on its defaults: a preview
    assert run.completion["blocking"] is False and run.completion["as_of"] == "2025-11-28"
    changed = {k for k in set(before) | set(snapshot_folder(home))
               if before.get(k) != snapshot_folder(home).get(k)}  # fmt: skip
    assert {k for k in changed if not k.endswith(("-wal", "-shm"))} == set()  # nothing recorded


def test_run_notebook_when_parameter_misspelled_refuses_before_running(tmp_path):
    with pytest.raises(NotebookError, match="as_off"):
        run_notebook("data_qa", tmp_path / "x.ipynb", {"as_off": "2025-12-31"})
    assert not (tmp_path / "x.ipynb").exists()


def test_run_notebook_when_parameter_looks_secret_refuses(tmp_path):
    with pytest.raises(Exception, match="secret"):
        run_notebook("data_qa", tmp_path / "x.ipynb", {"ib_password": "x"})


def test_run_notebook_when_cell_raises_keeps_partial_notebook(tmp_path):
    out = tmp_path / "bad.ipynb"
    with pytest.raises(NotebookError) as caught:
        run_notebook("data_qa", out, {"workbook": str(tmp_path / "wb"), "as_of": "2025-02-30"})
    assert caught.value.output == out and out.is_file()
    assert "completion" not in read_scraps(out)
