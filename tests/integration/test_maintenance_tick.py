"""The review and maintenance cadence from real ticks: the weekly audit (a real papermill run of
notebooks/audit.ipynb) and backup after the week's last close, and the incident notebook once
for every new incident. Instants: Friday 2025-11-21 closes 16:00 ET = 21:00Z, so its weekly
slots open at 21:30Z; the 2025-11 cycle's R is 2025-11-28 (an early close)."""

from __future__ import annotations

import json
import tarfile
from datetime import UTC, datetime
from pathlib import Path

import pytest
from conftest import IDLE
from conftest import make_workbook as make_sample_world

from ops_runner.core.events import EventKind, State, Trigger
from ops_runner.ledger import open_ledger
from ops_runner.ledger.states import apply_trigger, incident_event, read_state
from ops_runner.ops.backup import verify_archive
from ops_runner.ops.checks import approve_baseline
from ops_runner.ops.maintenance import compute_uninvestigated
from ops_runner.ops.tick import tick
from ops_runner.workbook.config import load_config

FRIDAY = datetime(2025, 11, 21, 21, 35, tzinfo=UTC)  # the week's last close + 35 min
THURSDAY = datetime(2025, 11, 20, 21, 35, tzinfo=UTC)  # not the week's last session


def make_workbook(root: Path, **changes) -> Path:
    """The sample workbook with ``changes`` (conftest's factory), its baseline approved."""
    made = make_sample_world(root, **changes)
    approve_baseline(load_config(made), "reviewed")
    return made


def payloads(cfg, kind) -> list[dict]:
    with open_ledger(cfg, create=False, readonly=True) as ledger:
        return [dict(e.payload) for e in ledger.events(kind=str(kind))]


def head(cfg):
    with open_ledger(cfg, create=False, readonly=True) as ledger:
        return ledger.head()


def completed(cfg) -> dict[str, str]:
    return {p["slot"]: p["outcome"] for p in payloads(cfg, EventKind.JOB_COMPLETED) if p["done"]}


def test_tick_when_the_week_closes_runs_the_audit_notebook_then_a_backup_once(tmp_path):
    cfg = load_config(make_workbook(tmp_path))
    first = tick(cfg, now=THURSDAY)
    assert [line.split()[0] for line in first.ran] == ["daily_checks:2025-11-20"]

    result = tick(cfg, now=FRIDAY)

    assert [line.split()[0] for line in result.ran] == [
        "daily_checks:2025-11-21",
        "audit:2025-11-21",
        "backup:2025-11-21",
    ]
    assert result.state is State.RUN
    audits = payloads(cfg, EventKind.AUDIT_RECORDED)
    assert [(a["session"], a["status"]) for a in audits] == [("2025-11-21", "CLEAN")]
    artifacts = [a for a in payloads(cfg, EventKind.ARTIFACT_RECORDED) if a["job"] == "audit"]
    assert len(artifacts) == 1 and artifacts[0]["outcome"] == "completed"
    assert (cfg.workbook / artifacts[0]["path"]).is_file()

    backups = payloads(cfg, EventKind.BACKUP_RECORDED)
    assert len(backups) == 1
    archive = cfg.workbook / backups[0]["archive"]
    assert verify_archive(archive).ok
    with tarfile.open(archive) as tar:  # the backup ran after the audit: its notebook is in it
        names = tar.getnames()
    assert any(name.endswith(Path(artifacts[0]["path"]).name) for name in names)
    assert completed(cfg)["backup:2025-11-21"] == f"archived {archive.name}"

    before = head(cfg)
    again = tick(cfg, now=FRIDAY)
    assert again.ran == () and head(cfg) == before  # the week's audit and backup, once


def test_tick_when_weekly_jobs_turned_off_runs_only_the_daily_checks(tmp_path):
    changes = {"schedule.weekly_audit": False, "schedule.weekly_backup": False}
    cfg = load_config(make_workbook(tmp_path, **changes))
    result = tick(cfg, now=FRIDAY)
    assert [line.split()[0] for line in result.ran] == ["daily_checks:2025-11-21"]
    assert payloads(cfg, EventKind.BACKUP_RECORDED) == []
    assert not (cfg.workbook / "backups").exists() or not any((cfg.workbook / "backups").iterdir())


def _record_job(cfg, slot: str) -> None:
    with open_ledger(cfg) as ledger:
        payload = {"job": slot.split(":")[0], "slot": slot, "session": "2025-11-03",
                   "cycle": "2025-10", "at": "2025-11-03T15:00:00Z", "run_id": slot,
                   "done": True, "outcome": "SUBMITTED", "outputs": {}}  # fmt: skip
        ledger.append(str(EventKind.JOB_COMPLETED), f"JobCompleted:{slot}", payload)


def test_tick_when_a_cycle_is_not_reconciled_the_audit_waits_and_the_backup_runs(tmp_path):
    cfg = load_config(make_workbook(tmp_path, **{"schedule.investigate_incidents": False}))
    tick(cfg, now=THURSDAY)
    _record_job(cfg, "execution:2025-10")  # orders went out; their fills are not recorded yet

    result = tick(cfg, now=FRIDAY)

    assert result.ran[1] == "audit:2025-11-21 waiting: the 2025-10 orders are not reconciled yet"
    assert [line.split()[0] for line in result.ran] == [
        "daily_checks:2025-11-21",
        "audit:2025-11-21",  # asked once, not again and again in the same tick
        "backup:2025-11-21",
    ]
    assert payloads(cfg, EventKind.AUDIT_RECORDED) == []
    assert "audit:2025-11-21" not in completed(cfg)

    _record_job(cfg, "reconciliation:2025-10")
    later = tick(cfg, now=FRIDAY)
    assert [line.split()[0] for line in later.ran] == ["audit:2025-11-21"]
    assert [a["status"] for a in payloads(cfg, EventKind.AUDIT_RECORDED)] == ["CLEAN"]


def test_tick_when_incidents_open_runs_the_incident_notebook_once_for_each(tmp_path):
    cfg = load_config(make_workbook(tmp_path, **{"broker.sim_faults": {"clock_skew_seconds": 42}}))

    result = tick(cfg, now=IDLE)  # the skew opens an incident (and fails the late daily checks)

    ids = [i["incident_id"] for i in payloads(cfg, EventKind.INCIDENT_OPENED)]
    assert ids and any("clock" in i["summary"] for i in payloads(cfg, EventKind.INCIDENT_OPENED))
    investigated = [line.split()[0] for line in result.ran if line.startswith("incident:")]
    assert investigated == [f"incident:{i}" for i in ids]
    assert result.state is State.SAFE_MODE
    runs = [a for a in payloads(cfg, EventKind.ARTIFACT_RECORDED) if a["job"] == "incident"]
    assert [(r["slot"], r["outcome"]) for r in runs] == [
        (f"incident:{i}", "completed") for i in ids
    ]
    for run, incident_id in zip(runs, ids, strict=True):
        notebook = json.loads((cfg.workbook / run["path"]).read_text())
        injected = next(
            c for c in notebook["cells"] if "injected-parameters" in c["metadata"].get("tags", [])
        )
        assert f'incident = "{incident_id}"' in "".join(injected["source"])
        assert completed(cfg)[f"incident:{incident_id}"] == "completed"

    before = head(cfg)
    assert tick(cfg, now=IDLE).ran == () and head(cfg) == before  # each investigated once


def test_uninvestigated_when_an_investigation_itself_failed_it_is_not_investigated_again(tmp_path):
    cfg = load_config(make_workbook(tmp_path))
    with open_ledger(cfg) as ledger:
        for incident_id in ("data-stale-1", "job-incident-data-stale-1-20251127T150000Z-abc123"):
            opened = incident_event(incident_id, "data", incident_id, [])
            apply_trigger(ledger, Trigger.INCIDENT, incident_id, [], extra_events=[opened])
        assert compute_uninvestigated(ledger.events()) == ["data-stale-1"]
        assert read_state(ledger).state is State.SAFE_MODE


@pytest.mark.parametrize("count, expected", [(2, 2), (5, 3)])
def test_uninvestigated_when_many_open_at_most_three_per_tick(tmp_path, count, expected):
    cfg = load_config(make_workbook(tmp_path))
    with open_ledger(cfg) as ledger:
        for i in range(count):
            apply_trigger(ledger, Trigger.INCIDENT, f"i{i}", [],
                          extra_events=[incident_event(f"i{i}", "data", f"i{i}", [])])  # fmt: skip
        assert compute_uninvestigated(ledger.events()) == [f"i{i}" for i in range(expected)]
