"""`ops-runner broker check` says what the ledger saw of the broker's sessions (last healthy,
last lost and why, losses today), beside the live check, and still says it when the broker
cannot be reached: then the one-line error follows, and --json keeps the history in its
error object."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml
from conftest import make_sample_workbook

from ops_runner.core.events import Trigger
from ops_runner.ledger import open_ledger
from ops_runner.ledger.states import apply_trigger
from ops_runner.workbook.config import load_config

pytestmark = pytest.mark.subprocess

EXE = Path(sys.executable).with_name("ops-runner")


def lose_and_regain(root: Path) -> list[str]:
    """Monday 2025-12-01 (New York): logged out at 08:31, back at 08:50, dropped at 09:10.
    Returns the stamps of the three state changes, as the ledger recorded them."""
    cfg = load_config(root)
    stamps = []
    for at, trigger, reason in (
        (datetime(2025, 12, 1, 13, 31, tzinfo=UTC), Trigger.BROKER_FAULT, "logged out"),
        (datetime(2025, 12, 1, 13, 50, tzinfo=UTC), Trigger.BROKER_RESTORED, "healthy"),
        (datetime(2025, 12, 1, 14, 10, tzinfo=UTC), Trigger.BROKER_FAULT, "socket dropped"),
    ):
        with open_ledger(replace(cfg, simulated_now=at)) as ledger:
            apply_trigger(ledger, trigger, reason, [f"probed at {at:%H:%M}Z"])
            stamps.append(list(ledger.events())[-1].recorded_at)
    return stamps


def check(root: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(EXE), "--workbook", str(root), "broker", "check", *args],
                          capture_output=True, text=True, timeout=120)  # fmt: skip


def test_broker_check_when_the_ledger_saw_outages_shows_them_beside_the_live_check(tmp_path):
    root = make_sample_workbook(tmp_path / "wb")
    down, back, dropped = lose_and_regain(root)
    done = check(root, "--json", "--now", "2025-12-01T16:00:00Z")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["connected"] is True  # the simulated broker answers now
    assert report["history"] == {
        "as_of": "2025-12-01T11:00-05:00",
        "last_seen": back,
        "last_lost": dropped,
        "lost_detail": "socket dropped",
        "losses_today": 2,
        "down_now": True,
    }
    assert down < back < dropped and down.startswith("2025-12-01T13:31")
    text = check(root, "--now", "2025-12-01T16:00:00Z").stdout
    assert f"last lost          {dropped} (socket dropped)" in text
    assert "losses today       2 (as of 2025-12-01T11:00-05:00)" in text


def test_broker_check_when_the_broker_is_unreachable_still_shows_the_history_then_one_line(
    tmp_path,
):
    root = make_sample_workbook(tmp_path / "wb")
    _, back, dropped = lose_and_regain(root)
    config = root / "config.yaml"
    values = yaml.safe_load(config.read_text())
    values["broker"].update(kind="ib", port=1, account="DU1234521", connect_timeout_seconds=2,
                            retry={"attempts": 1, "wait_seconds": 0})  # fmt: skip
    config.write_text(yaml.safe_dump(values))  # a real broker: nothing listens on port 1
    done = check(root)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert f"last seen healthy  {back}" in done.stdout
    assert f"last lost          {dropped} (socket dropped)" in done.stdout
    assert "state              BROKER_DOWN" in done.stdout
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("ops-runner: ") and "127.0.0.1:1" in last
    done = check(root, "--json")
    assert done.returncode == 1
    error = json.loads(done.stdout)
    assert error["exit_code"] == 1 and "127.0.0.1:1" in error["error"]
    assert error["history"]["last_lost"] == dropped and error["history"]["down_now"] is True
