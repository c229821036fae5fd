"""The maintenance verbs as a person types them: backup, backup verify, restore, audit,
incident open|show|close (the modules behind them have their own tests)."""

from __future__ import annotations

import gzip
from datetime import UTC, datetime
from pathlib import Path

import pytest

from ops_runner.cli import main
from ops_runner.core.events import EventKind, State
from ops_runner.ledger import open_ledger
from ops_runner.ledger.init import init_workbook
from ops_runner.ledger.states import read_state
from ops_runner.market.calendar import open_calendar
from ops_runner.market.prices import open_store
from ops_runner.market.sources.sample import write_sample
from ops_runner.ops.checks import approve_baseline
from ops_runner.ops.tick import tick
from ops_runner.workbook.config import load_config

EVE = datetime(2025, 11, 26, 21, 35, tzinfo=UTC)


@pytest.fixture
def workbook(tmp_path) -> Path:
    root = tmp_path / "wb"
    init_workbook(root, template="demo")
    cfg = load_config(root)
    write_sample(open_store(cfg), calendar=open_calendar(cfg))
    approve_baseline(cfg, "reviewed")
    tick(cfg, now=EVE)  # the eve's checks: a ledger with real events
    return root


def run(capsys, *argv) -> tuple[int, str, str]:
    code = main([*argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_backup_verify_and_restore_from_the_command_line(workbook, tmp_path, capsys):
    code, out, _ = run(capsys, "--workbook", str(workbook), "backup", "--reason", "before upgrade")
    assert code == 0 and out.startswith("backup ")
    [archive] = sorted((workbook / "backups").glob("ops-runner-backup-*.tar.gz"))
    code, out, _ = run(capsys, "backup", "verify", str(archive))
    assert code == 0 and out.startswith("archive ok")
    with open_ledger(load_config(workbook), create=False, readonly=True) as ledger:
        recorded = [e.payload for e in ledger.events(kind=str(EventKind.BACKUP_RECORDED))]
        head = ledger.head()
    assert [r["reason"] for r in recorded] == ["before upgrade"]

    code, _, err = run(capsys, "--workbook", str(workbook), "restore", str(archive))
    assert code == 2 and "--force" in err  # a live workbook is never overwritten silently
    target = tmp_path / "restored"
    code, out, _ = run(capsys, "restore", str(archive), "--to", str(target))
    assert code == 0 and "verifies" in out
    with open_ledger(load_config(target), create=False, readonly=True) as ledger:
        assert ledger.head()[0] == head[0] - 1  # the backup's own record came after the copy

    damaged = tmp_path / "damaged.tar.gz"
    data = bytearray(gzip.decompress(archive.read_bytes()))
    data[len(data) // 2] ^= 0xFF
    damaged.write_bytes(gzip.compress(bytes(data)))
    code, _, err = run(capsys, "backup", "verify", str(damaged))
    assert code == 3 and "does not verify" in err and len(err.strip().splitlines()) >= 2
    code, _, err = run(capsys, "restore", str(damaged), "--to", str(tmp_path / "never"))
    assert code == 3 and not (tmp_path / "never" / "config.yaml").exists()


def test_incident_open_show_close_from_the_command_line(workbook, capsys):
    wb = ("--workbook", str(workbook))
    code, out, _ = run(capsys, *wb, "incident", "show")
    assert code == 0 and out.strip() == "no incident open"
    code, out, _ = run(capsys, *wb, "incident", "open", "--summary", "fills look odd",
                       "--category", "broker", "--evidence", "AGG fill 3 bps off")  # fmt: skip
    assert code == 0 and "state SAFE_MODE" in out
    incident_id = out.split()[1]
    code, out, _ = run(capsys, *wb, "incident", "show")
    assert code == 0 and incident_id in out and "open" in out
    code, out, _ = run(capsys, *wb, "incident", "show", incident_id)
    assert code == 0 and "cause      Broker/API" in out
    code, _, err = run(capsys, *wb, "incident", "close", incident_id, "--resolution", " ")
    assert code != 0 and err.startswith("ops-runner: ")
    code, out, _ = run(capsys, *wb, "incident", "close", incident_id, "--resolution", "explained")
    assert code == 0
    code, out, _ = run(capsys, *wb, "incident", "show")
    assert out.strip() == "no incident open"
    with open_ledger(load_config(workbook), create=False, readonly=True) as ledger:
        assert read_state(ledger).state is State.SAFE_MODE  # closing never changes the state


def test_audit_from_the_command_line_is_clean_on_an_untouched_workbook(workbook, capsys):
    code, out, _ = run(capsys, "--workbook", str(workbook), "audit", "--now",
                       "2025-11-29T15:00:00Z")  # fmt: skip
    assert code == 0 and "CLEAN" in out
    with open_ledger(load_config(workbook), create=False, readonly=True) as ledger:
        assert len(list(ledger.events(kind=str(EventKind.AUDIT_RECORDED)))) == 1


def test_report_performance_when_nothing_traded_yet_says_so_and_writes_the_page(workbook, capsys):
    code, out, err = run(capsys, "--workbook", str(workbook), "--progress", "report", "performance")
    assert code == 0, err
    assert out.startswith("performance NO_HISTORY:")
    said = err.splitlines()  # asked for: what runs, on stderr, each line timed
    assert any("running the performance notebook" in line for line in said), err
    assert all(line.startswith("[") and " s] " in line for line in said), err
    page = workbook / "reports" / "performance.html"
    assert page.is_file() and "Performance" in page.read_text(encoding="utf-8")
    cfg = load_config(workbook)
    with open_ledger(cfg, create=False, readonly=True) as ledger:
        runs = [e.payload for e in ledger.events(kind=str(EventKind.ARTIFACT_RECORDED))]
    assert [(r["job"], r["outcome"]) for r in runs] == [("performance", "completed")]


def test_report_performance_when_a_date_is_not_a_date_one_line_and_no_run(workbook, capsys):
    code, out, err = run(capsys, "--workbook", str(workbook), "report", "performance",
                         "--start", "2025-13-01")  # fmt: skip
    assert code != 0 and "--start: '2025-13-01' is not a date" in err
    assert "Traceback" not in err and not (workbook / "reports" / "performance.html").exists()


def test_read_verbs_when_json_is_asked_answer_in_json(workbook, tmp_path, capsys):
    """incident show, baseline show, backup verify and audit: the same answers as their text,
    as JSON a script can read."""
    import json

    wb = ("--workbook", str(workbook))
    code, out, _ = run(capsys, *wb, "incident", "show", "--json")
    assert code == 0 and json.loads(out) == []
    code, out, _ = run(capsys, *wb, "incident", "open", "--summary", "fills look odd",
                       "--category", "broker", "--evidence", "AGG fill 3 bps off")  # fmt: skip
    incident_id = out.split()[1]
    code, out, _ = run(capsys, *wb, "incident", "show", "--json")
    assert [i["incident_id"] for i in json.loads(out)] == [incident_id]
    code, out, _ = run(capsys, *wb, "incident", "show", incident_id, "--json")
    shown = json.loads(out)
    assert code == 0 and shown["incident_id"] == incident_id
    assert shown["classification"]["cause"] == "Broker/API" and shown["summary"] == "fills look odd"

    code, out, _ = run(capsys, *wb, "baseline", "show", "--json")
    baseline = json.loads(out)
    assert code == 0 and baseline["unchanged"] is True
    assert baseline["current"]["config_hash"] == load_config(workbook).hash

    code, out, _ = run(capsys, *wb, "audit", "--now", "2025-11-29T15:00:00Z", "--json")
    audit = json.loads(out)
    assert code == 0 and audit["status"] == "CLEAN" and audit["session"] == "2025-11-28"

    code, _, _ = run(capsys, *wb, "backup", "--reason", "json")
    [archive] = sorted((workbook / "backups").glob("ops-runner-backup-*.tar.gz"))
    code, out, _ = run(capsys, "backup", "verify", str(archive), "--json")
    assert code == 0 and json.loads(out)["ok"] is True
    cut = tmp_path / "cut.tar.gz"
    cut.write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])
    code, out, err = run(capsys, "backup", "verify", str(cut), "--json")
    answer = json.loads(out)
    assert code == 3 and answer["ok"] is False and answer["exit_code"] == 3 and answer["reasons"]
