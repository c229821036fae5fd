"""The drill notebook: on its defaults (a sample workbook, no backup) it completes saying so;
run by ``execute_drill`` on a real backup it is the drill's report and glues a PASS."""

from __future__ import annotations

import hashlib

import pytest
from conftest import make_sample_workbook
from drill_world import inner_jobs_in_process, shared_drill

from ops_runner.core.events import EventKind
from ops_runner.ledger import open_ledger
from ops_runner.runtime.notebooks import read_scraps, run_notebook
from ops_runner.workbook.config import load_config

pytestmark = pytest.mark.notebook
# The fixture comes from drill_world; naming it here is what lets pytest find it.
__all__ = ["inner_jobs_in_process"]


def test_dr_drill_notebook_when_run_on_its_defaults_completes_with_no_backup(tmp_path):
    cfg = load_config(make_sample_workbook(tmp_path / "wb"))  # no backup yet

    run = run_notebook("dr_drill", tmp_path / "drill.ipynb", {"workbook": str(cfg.workbook)})

    assert run.completion == {"job": "dr_drill", "status": "NO_BACKUP",
                              "drill_id": run.scraps["drill"]["drill_id"], "cycle": None,
                              "seq": None}  # fmt: skip
    assert run.scraps["drill"]["reason"] == "no backup to drill: run `ops-runner backup` first"
    with open_ledger(cfg, create=False, readonly=True) as ledger:
        assert not list(ledger.events(kind=str(EventKind.DRILL_RECORDED)))


@pytest.mark.usefixtures("inner_jobs_in_process")
def test_dr_drill_notebook_when_executed_on_a_real_backup_glues_a_pass(tmp_path_factory):
    root, payload, notebook = shared_drill(tmp_path_factory)

    scraps = read_scraps(notebook)
    assert scraps["completion"]["status"] == "PASS" and scraps["drill"] == payload
    assert notebook.parent == root / "ledger" / "runs" / "drills"
    assert notebook.name.startswith("dr_drill-") and notebook.suffix == ".ipynb"
    cfg = load_config(root)
    with open_ledger(cfg, create=False, readonly=True) as ledger:
        artifacts = ledger.events(kind=str(EventKind.ARTIFACT_RECORDED))
        (artifact,) = [e for e in artifacts if e.payload["job"] == "dr_drill"]
        (drill,) = ledger.events(kind=str(EventKind.DRILL_RECORDED))
    assert artifact.payload["path"] == drill.payload["notebook"] == payload["notebook"]
    assert artifact.payload["outcome"] == "completed"
    assert artifact.payload["sha256"] == hashlib.sha256(notebook.read_bytes()).hexdigest()
    assert drill.seq == scraps["completion"]["seq"]
    text = notebook.read_text(encoding="utf-8")
    assert "DU7654321" not in text and "DU*****21" in text  # the account, masked
