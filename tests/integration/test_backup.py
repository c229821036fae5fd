"""Backup and restore on a real workbook: round trip, concurrent appends, refused archives."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import multiprocessing
import os
import shutil
import sqlite3
import tarfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml
from conftest import make_sample_workbook

from ops_runner.core.events import EventKind
from ops_runner.ledger import LEDGER_FILE, Ledger, open_ledger
from ops_runner.ops.backup import (
    ArchiveInvalid,
    BackupError,
    RestoreRefused,
    check_member_name,
    compute_archive_name,
    compute_expired,
    create_backup,
    restore_backup,
    verify_archive,
)
from ops_runner.workbook.config import Config, load_config

T0 = datetime(2025, 1, 31, 22, 0, tzinfo=UTC)
NOTEBOOK = "ledger/runs/2025-01-31/data_qa-20250131T220000Z-abc123.ipynb"
SNAPSHOT = "ledger/snapshots/rotation/2025-01-31/0123456789abcdef.parquet"


def _check(i: int) -> tuple[str, str, dict]:
    payload = {"check": "drill", "passed": True, "detail": f"check {i}", "evidence": []}
    return str(EventKind.CHECK_RECORDED), f"CheckRecorded:test-{i}", payload


@pytest.fixture(scope="module")
def template(tmp_path_factory) -> Path:
    return make_sample_workbook(tmp_path_factory.mktemp("backup") / "wb")


@pytest.fixture
def cfg(template: Path, tmp_path: Path) -> Config:
    """A workbook with a few events, one registered notebook, one snapshot and an anchor."""
    root = shutil.copytree(template, tmp_path / "wb")
    cfg = load_config(root)
    notebook = root / NOTEBOOK
    notebook.parent.mkdir(parents=True)
    notebook.write_text(json.dumps({"cells": [], "metadata": {"run": "abc123"}}))
    snapshot = root / SNAPSHOT
    snapshot.parent.mkdir(parents=True)
    snapshot.write_bytes(b"PAR1 snapshot bytes PAR1")
    artifact = {
        "path": NOTEBOOK,
        "sha256": hashlib.sha256(notebook.read_bytes()).hexdigest(),
        "job": "data_qa",
        "run_id": "20250131T220000Z-abc123",
        "slot": "data_qa:2025-01-31",
        "duration_seconds": "1.5",
        "outcome": "completed",
        "reason": "",
    }
    with open_ledger(cfg, clock=lambda: T0) as ledger:
        ledger.append_many([_check(i) for i in range(3)])
        ledger.append(EventKind.ARTIFACT_RECORDED, "ArtifactRecorded:abc123", artifact)
        assert ledger.verify(cfg.path("anchor")).ok
    return cfg


def _head(path: Path) -> tuple[int, str] | None:
    with Ledger.open(path, create=False, readonly=True) as ledger:
        return ledger.head()


def _members(archive: Path) -> dict[str, bytes]:
    with tarfile.open(archive, "r:gz") as tar:
        return {m.name: tar.extractfile(m).read() for m in tar}  # type: ignore[union-attr]


def _rewrite(archive: Path, edit: Callable[[dict[str, bytes]], None]) -> None:
    """Rewrite ``archive`` as a well-formed tar.gz whose members ``edit`` changed in place."""
    members = _members(archive)
    edit(members)
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    archive.write_bytes(buffer.getvalue())


def _reseal(members: dict[str, bytes], name: str) -> None:
    """Put ``name``'s new SHA-256 and size in the manifest, as a careful forger would."""
    manifest = json.loads(members["MANIFEST.json"])
    for entry in manifest["files"]:
        if entry["path"] == name:
            entry["sha256"] = hashlib.sha256(members[name]).hexdigest()
            entry["size"] = len(members[name])
    members["MANIFEST.json"] = json.dumps(manifest).encode()


# -- the round trip -----------------------------------------------------------------------------


def test_backup_when_restored_into_empty_folder_gives_same_head_and_notebooks(
    cfg: Config, tmp_path: Path
) -> None:
    live_head = _head(cfg.path("ledger") / LEDGER_FILE)
    result = create_backup(cfg, now=T0)

    assert result.archive.name == "ops-runner-backup-20250131T220000Z-000004.tar.gz"
    assert (result.ledger_seq, result.ledger_head) == live_head
    assert verify_archive(result.archive).ok
    names = set(_members(result.archive))
    assert {"MANIFEST.json", "config.yaml", "anchor.json", "ledger/ledger.sqlite"} <= names
    assert {NOTEBOOK, SNAPSHOT, "data/sample/SPY.manifest.json"} <= names
    assert not any(n.endswith(".parquet") and n.startswith("data/") for n in names)

    restored = restore_backup(result.archive, tmp_path / "restored")

    target = tmp_path / "restored"
    assert (restored.head_seq, restored.head_hash) == live_head
    assert restored.moved_aside is None
    assert _head(target / "ledger" / LEDGER_FILE) == live_head
    assert (target / NOTEBOOK).read_bytes() == (cfg.workbook / NOTEBOOK).read_bytes()
    assert (target / SNAPSHOT).read_bytes() == (cfg.workbook / SNAPSHOT).read_bytes()
    assert json.loads((target / "ops/ledger-anchor.json").read_text())["seq"] == live_head[0]
    assert any("price files are not in backups" in note for note in restored.notes)
    assert not [p for p in target.iterdir() if p.name.startswith(".restoring-")]
    with open_ledger(load_config(target), create=False) as ledger:
        assert ledger.verify(load_config(target).path("anchor")).ok


def test_backup_when_taken_records_backup_recorded_in_the_live_ledger(cfg: Config) -> None:
    result = create_backup(cfg, now=T0, reason="weekly")

    with open_ledger(cfg, create=False, readonly=True) as ledger:
        event = ledger.last(EventKind.BACKUP_RECORDED)
    assert event is not None and event.recorded_at == "2025-01-31T22:00:00.000000Z"
    assert event.payload == {
        "archive": f"backups/{result.archive.name}",
        "sha256": hashlib.sha256(result.archive.read_bytes()).hexdigest(),
        "manifest_sha256": hashlib.sha256(_members(result.archive)["MANIFEST.json"]).hexdigest(),
        "ledger_seq": 4,
        "ledger_head": result.ledger_head,
        "files": result.files,
        "bytes": result.archive.stat().st_size,
        "reason": "weekly",
    }


# -- real concurrency ---------------------------------------------------------------------------


def _append_until_stopped(path: Path, stop, count) -> None:  # runs in the child process
    with Ledger.open(path, create=False) as ledger:
        i = 100
        while not stop.is_set():
            ledger.append(*_check(i))
            i += 1
            count.value += 1


@pytest.mark.slow  # 1.5 s or more: left out of make test-fast
def test_backup_when_another_process_appends_restores_to_one_appended_state(
    cfg: Config, tmp_path: Path
) -> None:
    path = cfg.path("ledger") / LEDGER_FILE
    context = multiprocessing.get_context("fork")  # no ledger is open here at the fork
    stop, count = context.Event(), context.Value("i", 0)
    child = context.Process(target=_append_until_stopped, args=(path, stop, count))
    child.start()
    try:
        deadline = time.monotonic() + 10
        while count.value < 30 and time.monotonic() < deadline:
            time.sleep(0.01)
        result = create_backup(cfg, now=T0)
        during = count.value
        while count.value < during + 30 and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        stop.set()
        child.join(10)
    assert child.exitcode == 0
    assert result.ledger_seq > 4 + 10  # the child's events before the backup are in it

    restored = restore_backup(result.archive, tmp_path / "restored")

    with Ledger.open(path, create=False, readonly=True) as live:
        assert live.head()[0] > result.ledger_seq + 10  # and it kept appending after
        same = next(live.events(after_seq=result.ledger_seq - 1))
    assert (restored.head_seq, restored.head_hash) == (same.seq, same.hash)
    assert _head(tmp_path / "restored" / "ledger" / LEDGER_FILE) == (same.seq, same.hash)


# -- refused archives ---------------------------------------------------------------------------


def _flip_member(members: dict[str, bytes]) -> None:
    data = bytearray(members[NOTEBOOK])
    data[5] ^= 0x01
    members[NOTEBOOK] = bytes(data)


def _tamper_ledger(members: dict[str, bytes]) -> None:
    scratch = Path(os.environ["BACKUP_TEST_SCRATCH"]) / "tamper.sqlite"
    scratch.write_bytes(members["ledger/ledger.sqlite"])
    with sqlite3.connect(scratch) as conn:
        conn.execute("DROP TRIGGER events_no_update")
        conn.execute('UPDATE events SET payload = \'{"check":"forged"}\' WHERE seq = 2')
        conn.execute("CREATE TRIGGER events_no_update BEFORE UPDATE ON events BEGIN SELECT 1; END")
    conn.close()
    members["ledger/ledger.sqlite"] = scratch.read_bytes()
    _reseal(members, "ledger/ledger.sqlite")


def _edit_manifest(members: dict[str, bytes]) -> None:
    manifest = json.loads(members["MANIFEST.json"])
    manifest["ledger"]["head_seq"] = 3
    members["MANIFEST.json"] = json.dumps(manifest).encode()


def _add_unlisted(members: dict[str, bytes]) -> None:
    members["ledger/runs/2025-01-31/extra.ipynb"] = b"{}"


REFUSED = [
    ("flipped byte in a notebook", lambda m: _flip_member(m), f"{NOTEBOOK}: sha256 mismatch"),
    ("missing notebook", lambda m: m.pop(NOTEBOOK), f"{NOTEBOOK}: missing from the archive"),
    ("missing manifest", lambda m: m.pop("MANIFEST.json"), "MANIFEST.json missing"),
    ("edited manifest head", _edit_manifest, "ledger/ledger.sqlite: head is seq 4, the manifest"),
    ("unlisted file", _add_unlisted, "ledger/runs/2025-01-31/extra.ipynb: not in the manifest"),
    ("resealed forged ledger", _tamper_ledger, "chain does not verify at seq 2: bad hash"),
    ("path escaping", lambda m: m.update({"../evil": b"x"}), "../evil: not a plain relative"),
]


@pytest.mark.parametrize(("case", "edit", "reason"), REFUSED, ids=[c[0] for c in REFUSED])
def test_archive_when_altered_is_refused_with_its_reason(
    cfg: Config, tmp_path: Path, monkeypatch, case: str, edit, reason: str
) -> None:
    monkeypatch.setenv("BACKUP_TEST_SCRATCH", str(tmp_path))
    archive = create_backup(cfg, now=T0).archive
    _rewrite(archive, edit)

    report = verify_archive(archive)

    assert not report.ok
    assert any(reason in line for line in report.reasons), report.reasons
    assert all("\n" not in line for line in report.reasons)
    with pytest.raises(ArchiveInvalid, match="refused"):
        restore_backup(archive, tmp_path / "restored")
    assert [p.name for p in (tmp_path / "restored").iterdir()] == []  # nothing was restored


def test_archive_when_truncated_is_refused(cfg: Config) -> None:
    archive = create_backup(cfg, now=T0).archive
    archive.write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])

    assert verify_archive(archive).reasons[0].startswith("archive truncated: ")


def test_archive_when_a_raw_byte_is_flipped_is_refused(cfg: Config) -> None:
    archive = create_backup(cfg, now=T0).archive
    data = bytearray(archive.read_bytes())
    data[len(data) // 2] ^= 0x40
    archive.write_bytes(bytes(data))

    report = verify_archive(archive)

    assert not report.ok
    assert report.reasons[0].startswith(("archive corrupt: ", "archive truncated: "))


def test_backup_when_ledger_is_altered_is_refused_and_writes_no_archive(cfg: Config) -> None:
    path = cfg.path("ledger") / LEDGER_FILE
    with sqlite3.connect(path) as conn:
        conn.execute("DROP TRIGGER events_no_update")
        conn.execute("UPDATE events SET key = 'forged' WHERE seq = 2")
    conn.close()

    with pytest.raises(BackupError, match="does not verify at seq 2"):
        create_backup(cfg, now=T0)
    assert [p.name for p in cfg.path("backups").iterdir()] == []


# -- restoring onto a live workbook -------------------------------------------------------------


def test_restore_when_target_is_live_is_refused_without_force_and_moves_it_aside_with_force(
    cfg: Config, snapshot
) -> None:
    archive = create_backup(cfg, now=T0).archive  # the live ledger now has BackupRecorded too
    with open_ledger(cfg, create=False) as ledger:
        ledger.append(*_check(50))
        live_head = ledger.head()
    before = snapshot(cfg.workbook / "ledger")

    with pytest.raises(RestoreRefused, match="--force"):
        restore_backup(archive, cfg.workbook)
    assert snapshot(cfg.workbook / "ledger") == before

    restored = restore_backup(archive, cfg.workbook, force=True)

    assert restored.head_seq == 4
    assert _head(cfg.path("ledger") / LEDGER_FILE)[0] == 4
    aside = restored.moved_aside
    assert aside is not None and aside.name.startswith(".before-restore-")
    assert _head(aside / "ledger" / LEDGER_FILE) == live_head  # the old ledger is kept whole
    assert (aside / "config.yaml").is_file() and (aside / NOTEBOOK).is_file()
    assert (cfg.path("data") / "sample" / "SPY.parquet").is_file()  # bars are left in place


# -- retention ----------------------------------------------------------------------------------


def test_retention_when_more_archives_than_keep_deletes_only_the_oldest_archives(
    cfg: Config,
) -> None:
    cfg.values["backup"]["keep"] = 2
    folder = cfg.path("backups")
    folder.mkdir()
    (folder / "notes.txt").write_text("mine")
    (folder / "ops-runner-backup-latest.tar.gz").write_text("not ours")

    results = [create_backup(cfg, now=T0 + timedelta(days=7 * i)) for i in range(4)]

    kept = sorted(p.name for p in folder.iterdir())
    assert kept == sorted(
        [results[2].archive.name, results[3].archive.name, "notes.txt"]
        + ["ops-runner-backup-latest.tar.gz"]
    )
    assert results[3].deleted == (results[1].archive,)


EXPIRED = [
    (["ops-runner-backup-20250101T000000Z-000001.tar.gz"], 1, []),
    (
        [
            "ops-runner-backup-20250108T000000Z-000009.tar.gz",
            "ops-runner-backup-20250101T000000Z-000012.tar.gz",
            "ops-runner-backup-20250108T000000Z-000010.tar.gz",
            "other.tar.gz",
        ],
        2,
        ["ops-runner-backup-20250101T000000Z-000012.tar.gz"],
    ),
    (["ops-runner-backup-20250101T000000Z-1.tar.gz", "x-20250101T000000Z-000001.tar.gz"], 1, []),
]


@pytest.mark.parametrize(("names", "keep", "expired"), EXPIRED)
def test_compute_expired_when_given_names_returns_past_the_newest_keep(names, keep, expired):
    assert compute_expired(names, keep) == expired


MEMBER_NAMES = [
    ("ledger/ledger.sqlite", True),
    ("ledger/runs/2025-01-31/a.ipynb", True),
    ("ledger/snapshots/rotation/2025-01-31/x.parquet", True),
    ("data/sample/SPY.manifest.json", True),
    ("data/sample/SPY.parquet", False),
    ("ledger/other.db", False),
    ("/etc/passwd", False),
    ("ledger/runs/../../x", False),
    ("ops/secrets.env", False),
]


@pytest.mark.parametrize(("name", "allowed"), MEMBER_NAMES)
def test_check_member_name_when_given_a_path_allows_only_backup_paths(name, allowed):
    assert (check_member_name(name) is None) is allowed


def test_compute_archive_name_when_given_an_aware_instant_uses_utc():
    eastern = T0.astimezone(__import__("zoneinfo").ZoneInfo("America/New_York"))
    assert compute_archive_name(eastern, 42) == "ops-runner-backup-20250131T220000Z-000042.tar.gz"


# -- secrets ------------------------------------------------------------------------------------


def _with_secrets_file(cfg: Config, relative: str, text: str) -> Config:
    secrets = cfg.workbook / relative
    secrets.parent.mkdir(parents=True, exist_ok=True)
    secrets.write_text(text)
    secrets.chmod(0o600)
    config = cfg.workbook / "config.yaml"
    values = yaml.safe_load(config.read_text())
    values["secrets"] = {"file": relative}
    config.write_text(yaml.safe_dump(values))
    return load_config(cfg.workbook)


def test_backup_when_secrets_exist_holds_none_of_them(cfg: Config, monkeypatch) -> None:
    monkeypatch.setenv("OPS_RUNNER_APPROVAL_KEY", "env-approval-key-7f3a9c")
    # A secrets file inside a folder the backup sweeps must still be left out.
    cfg = _with_secrets_file(cfg, "ledger/runs/secrets.env", "IB_PASSWORD=file-secret-42b7e1\n")

    archive = create_backup(cfg, now=T0).archive

    raw = gzip.decompress(archive.read_bytes())
    assert b"env-approval-key-7f3a9c" not in raw
    assert b"file-secret-42b7e1" not in raw
    assert b"secrets.env\x00" not in raw and "ledger/runs/secrets.env" not in _members(archive)


def test_backup_when_a_notebook_holds_a_secret_value_is_refused(cfg: Config, monkeypatch) -> None:
    monkeypatch.setenv("OPS_RUNNER_APPROVAL_KEY", "env-approval-key-7f3a9c")
    (cfg.workbook / NOTEBOOK).write_text('{"source": "key = env-approval-key-7f3a9c"}')

    with pytest.raises(BackupError, match=f"{NOTEBOOK} holds the value of secret"):
        create_backup(cfg, now=T0)
    assert [p.name for p in cfg.path("backups").iterdir()] == []
