"""The drill tests' world, shared by tests/integration/test_drill.py and
tests/notebooks/test_dr_drill_notebook.py: one history (the demo's 2025-11 cycle through real
ticks, then a backup after its reconciliation) built once per session, drilled once."""

from __future__ import annotations

import json
import shutil
from datetime import UTC, datetime
from pathlib import Path

import pytest

from ops_runner.demo import run_demo
from ops_runner.ops.backup import create_backup
from ops_runner.ops.drill import execute_drill
from ops_runner.runtime.notebooks import IN_PROCESS_ENV
from ops_runner.workbook.config import load_config


@pytest.fixture(autouse=True)
def inner_jobs_in_process(monkeypatch) -> None:
    """The drill's own notebook runs in a kernel (these tests are about it); the jobs it
    replays in its scratch workbook run their cells in that kernel's process, as the tick's
    tests do. Every job's notebook runs in a kernel in tests/notebooks/."""
    monkeypatch.setenv(IN_PROCESS_ENV, "1")


ACCOUNT = "DU7654321"
HMAC_KEY = "drill-hmac-key-1f2e3d4c5b6a79880f1e2d3c4b5a6978"
AFTER_CYCLE = datetime(2025, 12, 1, 18, 0, tzinfo=UTC)  # after 2025-11's reconciliation


def shared_history(factory) -> tuple[Path, Path]:
    """Return (the history workbook, its backup); built once per session."""
    base = factory.getbasetemp() / "drill-history"
    root, marker = base / "wb", base / "archive.txt"
    if not marker.exists():
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("OPS_RUNNER_APPROVAL_KEY", HMAC_KEY)
            run_demo(root, months=1, quiet=True, account=ACCOUNT, drill=False)
        made = create_backup(load_config(root), now=AFTER_CYCLE, reason="drill tests")
        marker.write_text(made.archive.name)
    return root, root / "backups" / marker.read_text()


def shared_drill(factory) -> tuple[Path, dict, Path]:
    """Return (a copy of the history, the drill's payload, its executed notebook), drilled once
    per session through ``execute_drill``."""
    history, _ = shared_history(factory)
    base = factory.getbasetemp() / "drill-history"
    root, saved = base / "drilled", base / "drilled.json"
    if not saved.exists():
        shutil.copytree(history, root)
        payload, notebook = execute_drill(load_config(root), in_kernel=True)
        saved.write_text(json.dumps({"payload": payload, "notebook": str(notebook)}))
    found = json.loads(saved.read_text())
    return root, found["payload"], Path(found["notebook"])
