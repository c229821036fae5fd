"""`ops-runner run execution --dry-run` and `decide --dry-run` as an operator types them: the
orders a run would send, planned on the broker's real positions and cash (the simulated broker
and IB through the loopback TWS simulator), the same rules and order gate as a run, and nothing
sent, recorded or written."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest
import yaml
from conftest import make_decided_november, snapshot_folder

from ops_runner.cli import main
from ops_runner.core.events import EventKind
from ops_runner.ledger import open_ledger
from ops_runner.workbook.config import load_config

EXE = Path(sys.executable).with_name("ops-runner")
IN_WINDOW = "2025-12-01T13:30:00Z"  # 08:30 New York: inside the market-on-open window
EVENING = "2025-11-30T23:00:00Z"  # the window of 2025-12-01 has not opened yet


def _ledger_and_books(root: Path) -> dict[str, bytes]:
    """What a dry run must leave as it was: the ledger's files and the broker's books. SQLite
    leaves its shared-memory index beside a database any reader opened; its write-ahead log
    must hold nothing (a reader writes no page)."""
    kept = {**snapshot_folder(root / "ledger"), **snapshot_folder(root / "broker")}
    assert kept.pop("ledger.sqlite-wal", b"") == b""
    kept.pop("ledger.sqlite-shm", None)
    return kept


def _events(root: Path) -> list:
    with open_ledger(load_config(root), create=False, readonly=True) as ledger:
        return list(ledger.events())


def _orders(stdout: str) -> list[tuple[str, str, int]]:
    """(side, symbol, quantity) of each order line the dry run prints."""
    rows = [line.split() for line in stdout.splitlines()]
    return [(r[0], r[1], int(r[2])) for r in rows if r and r[0] in ("BUY", "SELL")]


@pytest.mark.subprocess
@pytest.mark.slow  # a child process, then the real run
def test_run_execution_dry_run_when_in_the_window_prints_the_orders_a_run_then_sends(
    tmp_path, capsys
):
    root = make_decided_november(tmp_path / "wb")
    before, count = _ledger_and_books(root), len(_events(root))

    done = subprocess.run([str(EXE), "--workbook", str(root), "run", "execution", "--cycle",
                           "2025-11", "--dry-run", "--now", IN_WINDOW],
                          capture_output=True, text=True, timeout=300)  # fmt: skip

    assert done.returncode == 0, done.stderr
    assert "nothing sent, nothing recorded" in done.stdout.splitlines()[0]
    planned = _orders(done.stdout)
    assert planned[0] == ("SELL", "VEU", 1358)  # October's holding, from the broker's books
    assert [side for side, _, _ in planned] == ["SELL", "BUY"] and planned[1][1] == "AGG"
    assert done.stdout.strip().endswith("a run now would send 2 order(s)")
    assert _ledger_and_books(root) == before and len(_events(root)) == count

    # The real run at the same instant sends exactly what the dry run printed.
    assert main(["--workbook", str(root), "run", "execution", "--cycle", "2025-11",
                 "--now", IN_WINDOW, "--json"]) == 0  # fmt: skip
    result = json.loads(capsys.readouterr().out)
    assert result["ok"] is True and result["slot"] == "execution:2025-11"
    sent = [(e.payload["side"], e.payload["symbol"], e.payload["quantity"])
            for e in _events(root)
            if e.kind == EventKind.ORDER_INTENT_RECORDED and e.cycle_id == "2025-11"]  # fmt: skip
    assert sent == planned

    # Asked again, the dry run says a re-run sends the plan of record, not a fresh plan.
    assert main(["--workbook", str(root), "run", "execution", "--cycle", "2025-11", "--dry-run",
                 "--now", IN_WINDOW, "--json"]) == 0  # fmt: skip
    again = json.loads(capsys.readouterr().out)
    assert again["recorded_intents"] == 2 and again["would_send"] is None


def test_run_execution_dry_run_when_the_window_is_not_open_says_why_a_run_would_be_refused(
    tmp_path, capsys
):
    root = make_decided_november(tmp_path / "wb")
    before = _ledger_and_books(root)

    code = main(["--workbook", str(root), "run", "execution", "--cycle", "2025-11", "--dry-run",
                 "--now", EVENING, "--json"])  # fmt: skip

    seen = json.loads(capsys.readouterr().out)
    assert code == 1 and seen["exit_code"] == 1 and seen["would_send"] == 0
    assert "opens at 2025-12-01T13:00:00Z" in seen["refusal"]
    planned = [(i["side"], i["symbol"]) for i in seen["plan"]["intents"]]
    assert planned == [("SELL", "VEU"), ("BUY", "AGG")]
    assert set(seen["gate"].values()) == {None}  # RUN: the gate itself would pass each
    assert _ledger_and_books(root) == before


def test_run_execution_dry_run_when_the_kill_switch_is_present_shows_the_refusal(
    tmp_path, capsys, monkeypatch
):
    from ops_runner.brokers.base import Broker
    from ops_runner.brokers.sim import SimBroker

    root = make_decided_november(tmp_path / "wb")
    (root / "ops" / "KILL_SWITCH").write_text("stop: testing")
    before = _ledger_and_books(root)
    reached: list = []
    for owner, name in ((Broker, "place"), (SimBroker, "cancel")):  # a dry run reaches neither
        monkeypatch.setattr(owner, name, lambda *a, _n=name, **k: reached.append(_n))

    code = main(["--workbook", str(root), "run", "execution", "--cycle", "2025-11", "--dry-run",
                 "--now", IN_WINDOW])  # fmt: skip

    out = capsys.readouterr().out
    assert code == 1 and "a run now would be refused: the kill switch is present: stop" in out
    assert "SELL  VEU" in out and reached == []  # the plan shown, nothing sent or cancelled
    assert _ledger_and_books(root) == before  # no HALT recorded


@pytest.mark.subprocess
@pytest.mark.slow  # a child process, the IB client library and a loopback TWS session
def test_run_execution_dry_run_when_the_broker_is_ib_plans_on_its_positions_and_places_nothing(
    tmp_path,
):
    from ib_world import write_ib_config

    from ops_runner.simulators.market import WorkbookMarket
    from ops_runner.simulators.tws_sim import TwsSimulator

    root = make_decided_november(tmp_path / "wb")
    at = datetime(2025, 12, 1, 13, 30, tzinfo=UTC)
    # The account at IB is not the ledger's: 1,000 VEU (the ledger says 1,358) and $5,000.
    with TwsSimulator(WorkbookMarket(load_config(root)), lambda: at, account="DU1234521",
                      cash=Decimal("5000"), positions={"VEU": 1000}) as sim:  # fmt: skip
        write_ib_config(root, sim.port, simulator=True)
        before, count = _ledger_and_books(root), len(_events(root))
        done = subprocess.run([str(EXE), "--workbook", str(root), "run", "execution", "--cycle",
                               "2025-11", "--dry-run", "--now", IN_WINDOW, "--json"],
                              capture_output=True, text=True, timeout=300)  # fmt: skip
        placed = sim.orders()
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout)
    intents = [(i["side"], i["symbol"], i["quantity"]) for i in seen["plan"]["intents"]]
    assert intents[0] == ("SELL", "VEU", 1000)  # the broker's positions, not the ledger's
    assert intents[1][:2] == ("BUY", "AGG") and seen["would_send"] == 2
    assert placed == []  # nothing reached the venue
    assert "DU1234521" not in done.stdout + done.stderr
    assert _ledger_and_books(root) == before and len(_events(root)) == count


@pytest.mark.slow  # the strategy on the sample market, three times
def test_decide_dry_run_shows_the_record_a_decision_would_hold_and_records_nothing(
    tmp_path, capsys
):
    from conftest import make_undecided_november, ready_to_decide

    root = make_undecided_november(tmp_path / "wb")
    cfg = load_config(root)
    ready_to_decide(cfg, "2025-11-28")  # the gates a decision passes, done the real way
    before, count = _ledger_and_books(root), len(_events(root))
    snapshots = snapshot_folder(root / "ledger")

    code = main(["--workbook", str(root), "decide", "--session", "2025-11-28", "--dry-run"])

    out = capsys.readouterr().out
    assert code == 0, out
    assert out.startswith("DRY RUN") and "would be recorded; nothing recorded" in out
    assert "targets AGG 1" in out  # November: 100% AGG
    assert _ledger_and_books(root) == before and len(_events(root)) == count
    assert snapshot_folder(root / "ledger") == snapshots  # no decision snapshot written

    assert main(["--workbook", str(root), "decide", "--session", "2025-11-28", "--json"]) == 0
    recorded = json.loads(capsys.readouterr().out)
    assert main(["--workbook", str(root), "decide", "--session", "2025-11-28", "--dry-run",
                 "--json"]) == 0  # fmt: skip
    seen = json.loads(capsys.readouterr().out)
    assert seen["same_as_recorded"] is True and seen["existing_seq"] is not None
    assert seen["record"]["decision"] == recorded["decision"]


@pytest.mark.subprocess
@pytest.mark.slow
def test_decide_dry_run_when_a_gate_refuses_is_one_line_like_decide(tmp_path):
    root = make_decided_november(tmp_path / "wb")
    config = root / "config.yaml"
    raw = yaml.safe_load(config.read_text(encoding="utf-8"))
    raw["execution"]["cash_buffer"] = 0.03  # the baseline no longer matches the config
    config.write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
    before = _ledger_and_books(root)
    argv = [str(EXE), "--workbook", str(root), "decide", "--session", "2025-11-28", "--dry-run"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=300)
    assert done.returncode == 1 and done.stdout == ""
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith("ops-runner: decision of 2025-11-28 refused:") and "baseline" in line
    assert _ledger_and_books(root) == before


README = Path(__file__).resolve().parents[2] / "README.md"


def _readme_command_lines() -> list[str]:
    """The command lines of the README's "The command" section, comments cut."""
    section = README.read_text(encoding="utf-8").split("### The command\n", 1)[1]
    block = section.split("```sh\n", 1)[1].split("```", 1)[0]
    return [line.split("#")[0].strip() for line in block.splitlines() if line.strip()]


@pytest.mark.slow  # the decided world, a dry run and a dry decision
def test_readme_command_lines_when_run_as_written_do_what_the_readme_says(
    tmp_path, monkeypatch, capsys
):
    """Each line as written, from a folder of its own on a decided workbook ($OPS_RUNNER_HOME),
    at an instant inside the cycle's submission window ($OPS_RUNNER_NOW, as the scheduler
    entries' tests fix theirs); `lab` stops at the command line it would exec."""
    import shlex

    root = make_decided_november(tmp_path / "wb")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("OPS_RUNNER_HOME", str(root))
    monkeypatch.setenv("OPS_RUNNER_NOW", IN_WINDOW)
    monkeypatch.setenv("OPS_RUNNER_CACHE_DIR", str(tmp_path / "cache"))
    started: list[list[str]] = []
    monkeypatch.setattr(os, "execvpe", lambda file, argv, env: started.append(argv))
    before = _ledger_and_books(root)
    answers: dict[str, tuple[int | None, str]] = {}
    lines = _readme_command_lines()
    assert len(lines) == 5, lines
    for line in lines:
        words = shlex.split(line)
        assert words[0] == "ops-runner"
        try:
            code: int | None = main(words[1:])
        except SystemExit as stop:  # --help
            code = int(stop.code or 0)
        answers[words[1]] = (code, capsys.readouterr().out)

    assert answers["--help"][0] == 0 and "start here:" in answers["--help"][1]
    assert answers["incident"] == (0, "[]\n")
    code, out = answers["run"]
    assert code == 0 and out.strip().endswith("a run now would send 2 order(s)")
    code, out = answers["decide"]
    assert code == 0 and "already decided at event" in out and "same inputs" in out
    assert answers["lab"][0] == 0 and started[0][-2:] == ["--port=8890", "--no-browser"]
    assert _ledger_and_books(root) == before
