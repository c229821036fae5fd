"""Files changed outside ops-runner are noticed by the tick, refused by backup, named by verify.

Each case starts from a workbook whose November decision a real tick took (executed notebooks
registered, the decision's snapshot written, the price store recorded by the first daily
check), changes one thing on disk as a person or a bad script would, and runs the next daily
checks by hand under the tick's rules (issue 15, hole 5).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from conftest import make_decided_november

from ops_runner.core.events import EventKind, State
from ops_runner.ledger import open_ledger
from ops_runner.ledger.states import read_state
from ops_runner.market.prices import open_store
from ops_runner.workbook.config import Config, load_config

EXE = Path(sys.executable).with_name("ops-runner")
DAILY = ("run", "daily_checks", "--as-of", "2025-12-01", "--now", "2025-12-01T21:35:00Z")


def cli(cfg: Config, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(EXE), "--workbook", str(cfg.workbook), *args],
                          capture_output=True, text=True, timeout=300)  # fmt: skip


pytestmark = pytest.mark.slow  # a decided November, built once


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    return make_decided_november(tmp_path_factory.mktemp("tamper") / "wb")


@pytest.fixture
def cfg(built: Path, tmp_path: Path) -> Config:
    """A private copy of the built workbook (each case tampers with its own)."""
    import shutil

    copy = tmp_path / "wb"
    shutil.copytree(built, copy)
    return load_config(copy)


def edit_notebook(cfg: Config) -> str:
    with open_ledger(cfg) as ledger:
        (artifact,) = [e for e in ledger.events(kind=str(EventKind.ARTIFACT_RECORDED))
                       if e.payload["job"] == "decision"]  # fmt: skip
    path = cfg.workbook / artifact.payload["path"]
    notebook = json.loads(path.read_text(encoding="utf-8"))
    notebook["cells"][0]["source"] = "# a reviewer's note added after the fact"
    path.write_text(json.dumps(notebook), encoding="utf-8")
    return f"artifact {artifact.payload['path']} changed since it was recorded"


def delete_snapshot(cfg: Config) -> str:
    with open_ledger(cfg) as ledger:
        (decision,) = ledger.events(kind=str(EventKind.DECISION_RECORDED), cycle_id="2025-11")
    relative = decision.payload["snapshot"]["path"]
    (cfg.path("ledger") / relative).unlink()
    return f"decision snapshot {relative} is missing"


def edit_prices_and_manifest(cfg: Config) -> str:
    """Raise one SPY close by 10% and make the manifest agree: the store's own check passes."""
    import hashlib

    store = open_store(cfg)
    path, manifest_path = store.bars_path("sample", "SPY"), store.manifest_path("sample", "SPY")
    bars = pd.read_parquet(path)
    bars.iloc[-30, bars.columns.get_loc("close")] *= 1.10
    bars.to_parquet(path)
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    manifest["stored_sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()
    manifest_path.write_text(json.dumps(manifest, indent=2), encoding="utf-8")
    assert store.check_provenance("sample") == []  # what QA's provenance check sees: nothing
    return "sample/SPY: the manifest changed outside ops-runner"


TAMPERING = {
    "edited-notebook": edit_notebook,
    "deleted-snapshot": delete_snapshot,
    "prices-and-manifest": edit_prices_and_manifest,
}


@pytest.mark.parametrize("case", list(TAMPERING))
@pytest.mark.subprocess
def test_tampering_when_the_daily_checks_run_is_an_incident_naming_the_file(cfg, case):
    expected = TAMPERING[case](cfg)
    done = cli(cfg, *DAILY)
    assert done.returncode == 0, done.stderr  # the job ran; its check failed
    assert "daily_checks:2025-12-01 failed: integrity" in done.stdout, done.stdout
    with open_ledger(cfg) as ledger:
        (check,) = [e for e in ledger.events(kind=str(EventKind.CHECK_RECORDED))
                    if e.payload["check"] == "integrity" and not e.payload["passed"]]  # fmt: skip
        assert any(expected in line for line in check.payload["evidence"]), check.payload
        assert read_state(ledger).state is State.SAFE_MODE
    # backup refuses to archive it, saying which, unless told to
    refused = cli(cfg, "backup")
    assert refused.returncode == 1 and "Traceback" not in refused.stderr
    (line,) = refused.stderr.strip().splitlines()
    assert "backup refused" in line and expected in line and "--force" in line
    assert not list(cfg.path("backups").glob("*.tar.gz"))
    forced = cli(cfg, "backup", "--force", "--reason", "keeping the evidence")
    assert forced.returncode == 0, forced.stderr
    with open_ledger(cfg) as ledger:
        (made,) = ledger.events(kind=str(EventKind.BACKUP_RECORDED))
    assert "forced with 1 file(s) not matching the ledger" in made.payload["reason"]
    # ledger verify names it too
    verify = cli(cfg, "ledger", "verify")
    assert verify.returncode == 1 and expected in verify.stdout, verify.stdout


@pytest.mark.subprocess
def test_integrity_when_nothing_changed_passes_and_verify_counts_the_snapshot(cfg):
    done = cli(cfg, *DAILY)
    assert "daily_checks:2025-12-01 passed" in done.stdout, done.stdout + done.stderr
    verify = cli(cfg, "ledger", "verify")
    assert verify.returncode == 0, verify.stdout
    assert "and 2 decision snapshots still have their SHA-256" in verify.stdout  # Oct, Nov
    assert "prices ok" in verify.stdout


@pytest.mark.subprocess
def test_integrity_when_prices_are_reimported_through_ops_runner_passes(cfg, tmp_path):
    bars = open_store(cfg).load_bars("sample", "SPY")
    csv = tmp_path / "SPY.csv"
    frame = pd.DataFrame({"Date": bars.index.strftime("%Y-%m-%d"), "Open": bars["open"],
                          "High": bars["high"], "Low": bars["low"], "Close": bars["close"] * 1.01,
                          "Adj Close": bars["close"] * 1.01, "Volume": bars["volume"]})  # fmt: skip
    frame.to_csv(csv, index=False)
    imported = cli(cfg, "data", "import", str(csv), "--layout", "generic", "--name", "sample")
    assert imported.returncode == 0 and "replaced 1" in imported.stdout, imported.stderr
    done = cli(cfg, *DAILY)
    assert "daily_checks:2025-12-01 passed" in done.stdout, done.stdout + done.stderr
