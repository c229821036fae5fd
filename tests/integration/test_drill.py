"""The disaster-recovery drill on real archives: a good backup of a month run by real ticks
passes and proves nothing was ordered or decided twice; damaged ones fail loudly.

One history (the demo's 2025-11 cycle through ticks, then a backup after its reconciliation)
is built once per session and drilled once through ``execute_drill`` (its notebook): both
drill test files share them through tests/drill_world.py. Every other test drills a copy.
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import tarfile
from collections import Counter
from pathlib import Path

import pytest
from conftest import make_sample_workbook
from drill_world import ACCOUNT, AFTER_CYCLE, inner_jobs_in_process, shared_drill, shared_history

from ops_runner.cli import main
from ops_runner.core.events import EventKind
from ops_runner.ledger import open_ledger
from ops_runner.ledger.projections import compute_positions, compute_state
from ops_runner.ops.backup import create_backup, verify_archive
from ops_runner.ops.checks import approve_baseline
from ops_runner.workbook.config import load_config

pytestmark = pytest.mark.notebook


# The fixture comes from drill_world; naming it here is what lets pytest find it.
__all__ = ["inner_jobs_in_process"]

ORDER_KINDS = {"OrdersPlanned", "OrderIntentRecorded", "OrderSubmitted", "OrderDenied",
               "OrderStatusChanged", "FillRecorded"}  # fmt: skip


@pytest.fixture
def copy(tmp_path_factory, tmp_path) -> Path:
    """A copy of the shared history (tests may damage it)."""
    return shutil.copytree(shared_history(tmp_path_factory)[0], tmp_path / "wb")


def _events(root: Path) -> list:
    cfg = load_config(root)
    with open_ledger(cfg, create=False, readonly=True) as ledger:
        return list(ledger.events())


def _drill_cli(capsys, root: Path, *more: str) -> tuple[int, str, str]:
    code = main(["--workbook", str(root), "drill", *more])
    out = capsys.readouterr()
    return code, out.out, out.err


# -- a good backup ---------------------------------------------------------------------------------


def test_drill_when_backup_is_good_passes_and_the_live_ledger_gains_one_pass(tmp_path_factory):
    root, payload, _ = shared_drill(tmp_path_factory)
    history, archive = shared_history(tmp_path_factory)

    assert payload["status"] == "PASS" and payload["passed"], payload["reasons"]
    assert payload["cycle"] == "2025-11"  # the backup was taken after its reconciliation
    assert Path(payload["archive"]).name == archive.name
    before, after = _events(history), _events(root)
    drills = [e for e in after if e.kind == EventKind.DRILL_RECORDED]
    assert len(drills) == 1 and drills[0].payload == payload
    # the live ledger gained the record and its report's registration, nothing else
    assert Counter(e.kind for e in after[len(before):]) == {"DrillRecorded": 1,
                                                            "ArtifactRecorded": 1}  # fmt: skip
    assert [e.hash for e in after[: len(before)]] == [e.hash for e in before]


def test_drill_when_backup_is_good_the_scratch_ledger_has_no_new_order_or_decision(
    tmp_path_factory,
):
    root, payload, _ = shared_drill(tmp_path_factory)
    _, archive = shared_history(tmp_path_factory)
    head = verify_archive(archive).head_seq  # what the restore started from
    scratch = Path(payload["scratch"])
    assert scratch.parent == root / "drills"

    events = _events(scratch)
    restored = Counter(e.kind for e in events if e.seq <= head)
    rerun = Counter(e.kind for e in events if e.seq > head)
    assert not {kind: n for kind, n in rerun.items() if kind in ORDER_KINDS}
    assert rerun["DecisionRecorded"] == rerun["IncidentOpened"] == rerun["JobFailed"] == 0
    assert rerun["JobCompleted"] == 10  # five jobs, twice
    reconciled = [e.payload["outcome"] for e in events
                  if e.seq > head and e.kind == EventKind.JOB_COMPLETED
                  and e.payload["job"] == "reconciliation"]  # fmt: skip
    assert reconciled == ["CLEAN", "CLEAN"]
    # the simulated broker got no order: one per submission the restored ledger holds
    books = json.loads((scratch / "broker" / "sim.json").read_text())
    assert len(books["orders"]) == restored["OrderSubmitted"] > 0
    cfg = load_config(scratch)
    with open_ledger(cfg, create=False, readonly=True) as ledger:
        assert ledger.verify().ok
    assert load_config(scratch).values["broker"]["kind"] == "sim"


# -- damaged backups -------------------------------------------------------------------------------


def _flip(data: bytes) -> bytes:
    middle = len(data) // 2
    return data[:middle] + bytes([data[middle] ^ 0xFF]) + data[middle + 1 :]


def _without_a_notebook(data: bytes) -> bytes:
    """The archive rewritten well-formed, one executed notebook left out (the manifest kept)."""
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        members = {m.name: tar.extractfile(m).read() for m in tar}  # type: ignore[union-attr]
    dropped = next(n for n in members if n.startswith("ledger/runs/"))
    del members[dropped]
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, body in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(body)
            tar.addfile(info, io.BytesIO(body))
    return buffer.getvalue()


DAMAGES = {
    "flipped_byte": (_flip, "archive corrupt"),
    "truncated": (lambda data: data[: len(data) // 2], "archive truncated"),
    "missing_file": (_without_a_notebook, "missing from the archive"),
}


@pytest.mark.parametrize("damage", list(DAMAGES))
def test_drill_when_archive_is_damaged_fails_loudly_with_the_reason(copy, capsys, damage):
    spoil, reason = DAMAGES[damage]
    good = max((copy / "backups").glob("*.tar.gz"))
    bad = copy / "backups" / f"damaged-{good.name}"
    bad.write_bytes(spoil(good.read_bytes()))
    before = _events(copy)

    code, out, err = _drill_cli(capsys, copy, "--archive", str(bad))

    assert code == 1, out + err
    assert "FAIL: verify: " in out and reason in out
    new = _events(copy)[len(before) :]
    assert Counter(e.kind for e in new) == {"DrillRecorded": 1, "AlertSent": 1,
                                            "ArtifactRecorded": 1}  # fmt: skip
    drill, alert = new[0].payload, new[1]
    assert drill["passed"] is False and reason in drill["reason"] and drill["scratch"] is None
    assert alert.key == f"AlertSent:drill:{drill['drill_id']}"
    assert alert.payload["events"] == [new[0].seq] and alert.payload["channels"]["log"] == "sent"
    assert "disaster-recovery drill FAILED" in (copy / "ops" / "alerts.log").read_text()
    assert not (copy / "drills").exists()  # nothing restored from a bad archive
    events = _events(copy)
    assert compute_state(events) == compute_state(before)
    assert compute_positions(events) == compute_positions(before)


def test_drill_when_a_store_file_differs_from_the_archived_manifest_fails_naming_it(copy, capsys):
    spy = copy / "data" / "sample" / "SPY.parquet"
    spy.write_bytes(spy.read_bytes() + b"\0")  # other bytes than the manifest pins
    before = _events(copy)

    code, out, _ = _drill_cli(capsys, copy)

    assert code == 1
    assert "FAIL: store: data/sample/SPY.parquet: no live file has the archived manifest's" in out
    new = _events(copy)[len(before) :]
    drill = new[0].payload
    assert [s["step"] for s in drill["steps"]] == ["verify", "restore", "chain", "store"]
    assert drill["steps"][-1]["ok"] is False and "SPY.parquet" in drill["reason"]
    assert Counter(e.kind for e in new)["AlertSent"] == 1
    assert compute_state(_events(copy)) == compute_state(before)


# -- no backup, and archives a drill must not restore ----------------------------------------------


def test_drill_when_there_is_no_backup_says_so_in_one_line(tmp_path, capsys):
    root = make_sample_workbook(tmp_path / "wb")
    before = _events(root)

    code, out, err = _drill_cli(capsys, root)

    assert code == 2 and out == ""
    assert err == "ops-runner: no backup to drill: run `ops-runner backup` first\n"
    assert len(_events(root)) == len(before)


def test_drill_when_the_archived_anchor_lies_outside_the_workbook_writes_nothing_there(tmp_path):
    from ops_runner.ops.drill import DrillStatus, run_drill

    root = make_sample_workbook(tmp_path / "wb")
    anchor = tmp_path / "elsewhere" / "anchor.json"
    config = root / "config.yaml"
    config.write_text(config.read_text().replace(
        "  anchor: ops/ledger-anchor.json", f"  anchor: {anchor}"))  # fmt: skip
    cfg = load_config(root)
    approve_baseline(cfg, "reviewed")  # an event, so the ledger has a head to anchor
    with open_ledger(cfg) as ledger:
        assert ledger.verify(cfg.path("anchor")).ok  # the live anchor, outside the workbook
    create_backup(cfg, now=AFTER_CYCLE)
    witnessed = hashlib.sha256(anchor.read_bytes()).hexdigest()

    report = run_drill(cfg)

    assert report.status is DrillStatus.FAIL
    assert report.reasons == [
        "restore: the archived config puts paths.anchor outside its workbook; a drill restores "
        "only into its scratch folder"
    ]
    assert hashlib.sha256(anchor.read_bytes()).hexdigest() == witnessed
    assert not any((root / "drills").rglob("ledger.sqlite"))


def test_compute_paper_config_when_paths_point_outside_brings_them_in(tmp_path):
    from ops_runner.ops.drill_scratch import compute_paper_config

    raw = {"broker": {"kind": "ib", "mode": "live", "account": "U1234567"},
           "paths": {"backups": "/mnt/offsite/backups", "reports": "reports",
                     "broker": "../shared/broker"},
           "alerts": {"log_file": "/var/log/ops.log", "email": {"to": "ops@example.com"},
                      "webhook": {"url": None}},
           "secrets": {"file": "/etc/ops/secrets"}}  # fmt: skip

    values, changes = compute_paper_config(raw, tmp_path)

    assert values["broker"] == {"kind": "sim", "mode": "paper", "account": "U1234567",
                                "sim_faults": {}}  # fmt: skip
    assert values["paths"] == {"backups": "backups", "reports": "reports", "broker": "broker"}
    assert values["alerts"]["log_file"] == "ops/alerts.log"
    assert values["alerts"]["email"]["to"] is None and values["secrets"]["file"] is None
    assert len(changes) == 8 and raw["broker"]["kind"] == "ib"  # the input is left alone


def test_compute_paper_config_when_push_channels_are_named_silences_them(tmp_path):
    from ops_runner.ops.drill_scratch import compute_paper_config

    raw = {"alerts": {"push": {"channels": ["ntfy_phone"], "timeout_seconds": 5}}}

    values, changes = compute_paper_config(raw, tmp_path)

    assert values["alerts"]["push"] == {"channels": [], "timeout_seconds": 5}
    assert "alerts.push.channels: ['ntfy_phone'] -> []" in changes
    assert raw["alerts"]["push"]["channels"] == ["ntfy_phone"]  # the input is left alone


def test_drill_when_json_is_asked_prints_the_record_and_the_exit_code(copy, capsys, monkeypatch):
    from ops_runner.runtime.notebooks import IN_PROCESS_ENV

    monkeypatch.setenv(IN_PROCESS_ENV, "1")  # the kernel's way is the tests above: here, the CLI
    spy = copy / "data" / "sample" / "SPY.parquet"
    spy.write_bytes(spy.read_bytes() + b"\0")  # a FAIL after four steps, cheaply

    code, out, _ = _drill_cli(capsys, copy, "--json")

    answer = json.loads(out)
    assert code == 1 and answer["exit_code"] == 1 and answer["status"] == "FAIL"
    assert "SPY.parquet" in answer["reason"] and answer["report"].endswith(".ipynb")
    assert ACCOUNT not in out


def test_drill_when_there_is_no_backup_and_json_is_asked_stdout_holds_the_error(tmp_path, capsys):
    root = make_sample_workbook(tmp_path / "wb")
    code, out, _ = _drill_cli(capsys, root, "--json")
    assert code == 2 and json.loads(out) == {
        "error": "no backup to drill: run `ops-runner backup` first",
        "exit_code": 2,
    }
