"""The smaller holes of issue 15 (hole 7): an unreadable price file in QA, a refused --now that
must write nothing, and resuming a demo or drill workbook at its simulated instant."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import make_sample_workbook

from ops_runner.core.events import State, Trigger
from ops_runner.ledger import open_ledger
from ops_runner.ledger.states import apply_trigger, read_state
from ops_runner.market.prices import open_store
from ops_runner.workbook.config import load_config

EXE = Path(sys.executable).with_name("ops-runner")
KEY = "0123456789abcdef" * 4


def cli(workbook: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OPS_RUNNER_APPROVAL_KEY": KEY}
    return subprocess.run([str(EXE), "--workbook", str(workbook), *args], capture_output=True,
                          text=True, timeout=300, env=env)  # fmt: skip


@pytest.fixture
def workbook(tmp_path: Path) -> Path:
    return make_sample_workbook(tmp_path / "wb")


@pytest.mark.subprocess
@pytest.mark.slow
def test_qa_when_a_price_file_is_empty_with_a_matching_manifest_blocks_in_one_finding(workbook):
    store = open_store(load_config(workbook))
    store.bars_path("sample", "SPY").write_bytes(b"")
    manifest_path = store.manifest_path("sample", "SPY")
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    manifest["stored_sha256"] = hashlib.sha256(b"").hexdigest()  # edited to match the empty file
    manifest_path.write_text(json.dumps(manifest), encoding="utf-8")
    done = cli(workbook, "qa", "--as-of", "2025-11-28", "--json")
    assert "Traceback" not in done.stderr, done.stderr
    assert done.returncode == 1
    report = json.loads(done.stdout)
    (finding,) = [f for f in report["findings"] if f["symbol"] == "SPY"]
    assert finding["severity"] == "blocking" and "cannot be read as Parquet" in finding["detail"]


def _real_broker(workbook: Path) -> None:
    config = workbook / "config.yaml"
    text = config.read_text(encoding="utf-8").replace("kind: sim ", "kind: ib ")
    config.write_text(text.replace("account: DU0000000", "account: DU1234567"), encoding="utf-8")


@pytest.mark.parametrize(
    "args",
    [
        ("tick", "--now", "2025-11-26T15:00:00Z"),
        ("run", "data_qa", "--as-of", "2025-11-28", "--now", "2025-11-28T19:00:00Z"),
        ("resume", "--token", "x", "--now", "2025-11-28T19:00:00Z"),
        ("approve", "--action", "exit-safe-mode", "--reason", "x", "--now",
         "2025-11-28T19:00:00Z"),
    ],
    ids=lambda a: a[0],
)  # fmt: skip
@pytest.mark.subprocess
@pytest.mark.slow
def test_now_when_refused_for_a_real_broker_writes_nothing(workbook, args):
    _real_broker(workbook)
    cfg = load_config(workbook)
    with open_ledger(cfg) as ledger:
        head = ledger.head()
    before = sorted(p.relative_to(workbook) for p in workbook.rglob("*") if p.is_file())
    done = cli(workbook, *args)
    assert done.returncode != 0
    (line,) = done.stderr.strip().splitlines()
    assert "--now (a simulated clock) is only accepted with broker.kind: sim" in line
    after = sorted(p.relative_to(workbook) for p in workbook.rglob("*") if p.is_file())
    assert after == before and not (workbook / "ops" / "heartbeat.json").exists()
    with open_ledger(cfg) as ledger:
        assert ledger.head() == head


@pytest.mark.subprocess
@pytest.mark.slow
def test_resume_when_given_the_simulated_instant_leaves_safe_mode_as_of_then(workbook):
    cfg = load_config(workbook)
    with open_ledger(cfg) as ledger:
        apply_trigger(ledger, Trigger.INCIDENT, "a test incident", ["test"])
    at = "2025-11-28T19:00:00Z"
    token = cli(workbook, "approve", "--action", "exit-safe-mode", "--reason", "checked", "--now",
                at)  # fmt: skip
    assert token.returncode == 0, token.stderr
    # Without --now the integrity checks run QA as of the real clock's last session, which
    # the SYNTHETIC sample (it ends 2025-12-31) cannot pass: a demo workbook could not resume.
    done = cli(workbook, "resume", "--token", token.stdout.strip(), "--now", "2025-11-28T19:05:00Z")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "approval used: the system is now in RUN"
    with open_ledger(cfg) as ledger:
        assert read_state(ledger).state is State.RUN
