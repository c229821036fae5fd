"""Ledger faults: tampered rows, cut tails, corrupt files, eight writers at once, a killed one."""

from __future__ import annotations

import contextlib
import hashlib
import json
import multiprocessing
import os
import signal
import sqlite3
import sys
from pathlib import Path

import pytest

from ops_runner.ledger import LEDGER_FILE, Ledger, LedgerCorrupt

WRITERS, PER_WRITER = 8, 200


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "ledger" / LEDGER_FILE


@pytest.fixture
def anchor(tmp_path: Path) -> Path:
    return tmp_path / "ops" / "ledger-anchor.json"


def build(path: Path, n: int = 10) -> None:
    with Ledger.open(path) as ledger:
        for i in range(1, n + 1):
            ledger.append("FillRecorded", f"fill:{i}", {"note": f"event-{i:04d}", "qty": i})


def tamper(path: Path, *statements: str, params: tuple = (), rearm: bool = False) -> None:
    """Edit the file as an intruder would: drop the append-only triggers, run SQL, and (a
    careful intruder) put the triggers back when ``rearm``."""
    with contextlib.closing(sqlite3.connect(path)) as conn:
        found = "SELECT name, sql FROM sqlite_master WHERE type = 'trigger' AND tbl_name = 'events'"
        triggers = conn.execute(found).fetchall()
        for name, _ in triggers:
            conn.execute(f"DROP TRIGGER {name}")
        for sql in statements:
            conn.execute(sql, params if "?" in sql else ())
        for _, sql in triggers if rearm else ():
            conn.execute(sql)
        conn.commit()


def hash_by_hand(prev_hash: str, row: tuple) -> str:
    """The documented hash, from json and hashlib alone: sha256(prev_hash + canonical row)."""
    seq, recorded_at, kind, key, run_id, cycle_id, payload = row
    text = json.dumps(
        [seq, recorded_at, kind, key, run_id, cycle_id, json.loads(payload)],
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
    )
    return hashlib.sha256((prev_hash + text).encode("utf-8")).hexdigest()


def verify(path: Path, anchor: Path | None = None):
    with Ledger.open(path, readonly=True) as ledger:
        return ledger.verify(anchor)


def files(folder: Path) -> dict[str, bytes]:
    """The folder's files, but for the -shm WAL index that every reader of a WAL file updates."""
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.suffix != ".sqlite-shm"}


# -- tampering that only the chain can show -------------------------------------------------------


def test_verify_when_a_payload_byte_is_flipped_in_the_file_finds_bad_hash_at_that_seq(path):
    build(path)
    data = path.read_bytes()
    assert data.count(b'"note":"event-0006"') == 1  # checkpointed into the main file on close
    path.write_bytes(data.replace(b'"note":"event-0006"', b'"note":"event-0O06"'))
    report = verify(path)
    assert (report.ok, report.first_bad_seq, report.reason) == (False, 6, "bad hash")
    assert report.events_checked == 5


def test_verify_when_a_payload_is_updated_with_triggers_dropped_finds_bad_hash(path):
    build(path)
    tamper(path, """UPDATE events SET payload = '{"note":"event-0003","qty":30}' WHERE seq = 3""")
    report = verify(path)
    assert (report.first_bad_seq, report.reason) == (3, "bad hash")


@pytest.mark.parametrize("deleted", [1, 5, 9])
def test_verify_when_a_row_is_deleted_finds_the_gap_at_its_seq(path, deleted):
    build(path)
    tamper(path, f"DELETE FROM events WHERE seq = {deleted}")
    report = verify(path)
    assert (report.ok, report.first_bad_seq, report.reason) == (False, deleted, "gap")
    assert report.events_checked == deleted - 1 and report.head_seq == 10


def test_verify_when_a_link_is_rewired_finds_the_broken_link(path):
    build(path)
    with contextlib.closing(sqlite3.connect(path)) as conn:
        row = conn.execute(
            "SELECT seq, recorded_at, kind, key, run_id, cycle_id, payload FROM events "
            "WHERE seq = 6"
        ).fetchone()
    forged_prev = "f" * 64
    # The forger recomputes seq 6's own hash, so only its link to seq 5 is wrong.
    tamper(
        path,
        "UPDATE events SET prev_hash = ?, hash = ? WHERE seq = 6",
        params=(forged_prev, hash_by_hand(forged_prev, row)),
    )
    report = verify(path)
    assert (report.first_bad_seq, report.reason) == (6, "broken link")


def test_verify_when_stored_hashes_match_the_documented_definition(path):
    build(path, 3)
    with contextlib.closing(sqlite3.connect(path)) as conn:
        rows = conn.execute(
            "SELECT seq, recorded_at, kind, key, run_id, cycle_id, payload, prev_hash, hash "
            "FROM events ORDER BY seq"
        ).fetchall()
    prev = "0" * 64
    for row in rows:
        assert row[7] == prev and row[8] == hash_by_hand(prev, row[:7])
        prev = row[8]


# -- the tail, seen only against the anchor -------------------------------------------------------


def test_verify_when_the_last_row_is_deleted_finds_it_only_with_the_anchor(path, anchor):
    build(path)
    assert verify(path, anchor).ok and json.loads(anchor.read_text())["seq"] == 10
    tamper(path, "DELETE FROM events WHERE seq = 10", rearm=True)
    assert verify(path).ok  # a chain alone cannot see its cut tail
    report = verify(path, anchor)
    assert (report.ok, report.first_bad_seq, report.reason) == (False, 10, "tail truncated")
    assert report.head_seq == 9 and report.events_checked == 9
    assert json.loads(anchor.read_text())["seq"] == 10  # the anchor is not moved back


def test_verify_when_the_tail_is_cut_and_regrown_finds_the_anchored_hash_gone(path, anchor):
    build(path)
    verify(path, anchor)
    tamper(path, "DELETE FROM events WHERE seq >= 9", rearm=True)
    with Ledger.open(path) as ledger:
        ledger.append("FillRecorded", "fill:9", {"note": "event-0009", "qty": 9})
        ledger.append("FillRecorded", "fill:10x", {"note": "other", "qty": 10})
        ledger.append("FillRecorded", "fill:11", {"note": "more", "qty": 11})
    report = verify(path, anchor)
    assert (report.first_bad_seq, report.reason) == (10, "tail truncated")


def test_verify_when_triggers_were_dropped_but_rows_are_intact_reports_it(path, anchor):
    build(path)
    tamper(path)
    report = verify(path, anchor)
    assert (report.ok, report.first_bad_seq, report.reason) == (False, None, "triggers missing")
    assert not anchor.exists()


# -- corrupt files: refused at open, never written ----------------------------------------------


def corrupt_open(path: Path, readonly: bool = False) -> LedgerCorrupt:
    before = files(path.parent)
    with pytest.raises(LedgerCorrupt) as caught:
        Ledger.open(path, readonly=readonly)
    assert files(path.parent) == before  # nothing written: no tables, no journal
    message = str(caught.value)
    assert "\n" not in message
    assert "HALT until a person restores or repairs the ledger (ops-runner restore)" in message
    return caught.value


@pytest.mark.parametrize("readonly", [False, True])
def test_open_when_the_file_is_garbage_bytes_is_corrupt(path, readonly):
    path.parent.mkdir(parents=True)
    path.write_bytes(os.urandom(64 * 1024))
    assert "not a SQLite database" in corrupt_open(path, readonly).problem


def test_open_when_the_file_is_empty_is_corrupt(path):
    path.parent.mkdir(parents=True)
    path.touch()
    assert "empty" in corrupt_open(path).problem


@pytest.mark.parametrize("readonly", [False, True])
def test_open_when_the_file_is_cut_to_half_its_size_is_corrupt(path, readonly):
    build(path, 300)
    with path.open("r+b") as handle:
        handle.truncate(path.stat().st_size // 2)
    assert "truncated" in corrupt_open(path, readonly).problem


def test_open_when_a_middle_page_is_overwritten_with_garbage_is_corrupt(path):
    build(path, 300)
    page = 4096
    data = bytearray(path.read_bytes())
    assert len(data) > 8 * page
    data[4 * page : 5 * page] = os.urandom(page)
    path.write_bytes(bytes(data))
    problem = corrupt_open(path).problem
    assert "quick_check" in problem or "malformed" in problem


def test_open_when_the_schema_version_is_wrong_is_corrupt(path):
    build(path, 2)
    with contextlib.closing(sqlite3.connect(path)) as conn:
        conn.execute("PRAGMA user_version = 2")
    assert "schema version 2" in corrupt_open(path).problem


def test_open_when_the_file_is_another_sqlite_database_is_corrupt_and_left_alone(path):
    path.parent.mkdir(parents=True)
    with contextlib.closing(sqlite3.connect(path)) as conn:
        conn.execute("CREATE TABLE prices (symbol TEXT, close TEXT)")
        conn.commit()
    assert "not an ops-runner ledger" in corrupt_open(path).problem
    with contextlib.closing(sqlite3.connect(path)) as conn:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master")]
    assert tables == ["prices"]


# -- real processes -----------------------------------------------------------------------------


def append_burst(path: str, writer: int, barrier, results) -> None:
    """A writer process: wait for the others, then append PER_WRITER events, one txn each."""
    barrier.wait()
    with Ledger.open(Path(path)) as ledger:
        seqs = [
            ledger.append("FillRecorded", f"w{writer}:{i}", {"writer": writer, "i": i}).seq
            for i in range(PER_WRITER)
        ]
    results.put((writer, seqs))


@pytest.mark.slow
def test_append_when_eight_processes_write_at_once_loses_nothing_and_never_forks(path):
    Ledger.open(path).close()
    ctx = multiprocessing.get_context("spawn")
    barrier, results = ctx.Barrier(WRITERS), ctx.Queue()
    workers = [
        ctx.Process(target=append_burst, args=(str(path), n, barrier, results))
        for n in range(WRITERS)
    ]
    for worker in workers:
        worker.start()
    got = dict(results.get(timeout=120) for _ in workers)
    for worker in workers:
        worker.join(timeout=30)
        assert worker.exitcode == 0
    every = sorted(seq for seqs in got.values() for seq in seqs)
    assert every == list(range(1, WRITERS * PER_WRITER + 1))
    assert all(seqs == sorted(seqs) for seqs in got.values())
    report = verify(path)
    assert report.ok and report.events_checked == WRITERS * PER_WRITER == 1600
    with Ledger.open(path, readonly=True) as ledger:
        assert [e.seq for e in ledger.events()] == list(range(1, 1601))
        assert ledger.get("w7:199").payload == {"writer": 7, "i": 199}


def append_until_killed(path: str, start: int, pipe) -> None:
    """A writer process: append forever, reporting each committed (seq, key) through the pipe."""
    with Ledger.open(Path(path)) as ledger:
        for i in range(start, start + 1_000_000):
            event = ledger.append("FillRecorded", f"burst:{i}", {"i": i, "pad": "x" * (i % 300)})
            pipe.send((event.seq, event.key))


@pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL is POSIX")
def test_append_when_the_writer_is_killed_mid_burst_keeps_every_committed_event(path, anchor):
    Ledger.open(path).close()
    ctx = multiprocessing.get_context("spawn")
    reported: list[tuple[int, str]] = []
    for round_no, kill_after in enumerate((40, 150, 400)):
        receiver, sender = ctx.Pipe(duplex=False)
        child = ctx.Process(target=append_until_killed, args=(str(path), round_no * 10**6, sender))
        child.start()
        sender.close()  # so the pipe reports EOF once the child is dead
        seen = 0
        while seen < kill_after:
            reported.append(receiver.recv())
            seen += 1
        os.kill(child.pid, signal.SIGKILL)
        child.join(timeout=30)
        assert child.exitcode == -signal.SIGKILL
        while True:  # what the child committed and sent before it died
            try:
                reported.append(receiver.recv())
            except (EOFError, OSError):
                break
        receiver.close()
        report = verify(path, anchor)
        assert report.ok, report
        with Ledger.open(path, readonly=True) as ledger:
            for seq, key in reported:
                found = ledger.get(key)
                assert found is not None and found.seq == seq
            assert ledger.head()[0] >= max(seq for seq, _ in reported)
    seqs = [seq for seq, _ in reported]
    assert seqs == sorted(set(seqs))  # each round went on from the last committed head
