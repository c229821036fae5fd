"""The ledger: canonical JSON, the hash chain by hand, idempotency, conflicts, append-only SQL."""

from __future__ import annotations

import contextlib
import hashlib
import json
import sqlite3
import tempfile
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ops_runner.core.errors import OpsError
from ops_runner.core.events import EventKind, State
from ops_runner.ledger.init import init_workbook
from ops_runner.ledger.store import (
    GENESIS_HASH,
    LEDGER_FILE,
    SCHEMA_VERSION,
    Event,
    Ledger,
    LedgerConflict,
    LedgerCorrupt,
    LedgerError,
    LedgerMissing,
    VerifyReport,
    canonical_json,
    open_ledger,
    read_anchor,
    write_anchor,
)
from ops_runner.workbook.config import load_config

T0 = datetime(2025, 1, 2, 14, 30, tzinfo=UTC)


class Ticks:
    """A clock for tests: T0, then one second later on every call."""

    def __init__(self, start: datetime = T0) -> None:
        self.now = start

    def __call__(self) -> datetime:
        value, self.now = self.now, self.now + timedelta(seconds=1)
        return value


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "ledger" / LEDGER_FILE


@pytest.fixture
def ledger(path: Path):
    with Ledger.open(path, clock=Ticks()) as opened:
        yield opened


def by_hand(prev_hash: str, row_json: str) -> str:
    return hashlib.sha256((prev_hash + row_json).encode("utf-8")).hexdigest()


def count(path: Path) -> int:
    with contextlib.closing(sqlite3.connect(path)) as conn:
        return conn.execute("SELECT COUNT(*) FROM events").fetchone()[0]


# -- canonical JSON -----------------------------------------------------------------------------

CANONICAL = [
    ({"b": 1, "a": "x"}, '{"a":"x","b":1}'),
    ({"t": True, "f": False, "n": None}, '{"f":false,"n":null,"t":true}'),
    ({"a": [{"c": 1, "b": 2}], "z": []}, '{"a":[{"b":2,"c":1}],"z":[]}'),
    ({"price": Decimal("1.50")}, '{"price":"1.5"}'),
    (Decimal("1E+2"), '"100"'),
    (Decimal("-0.00"), '"0"'),
    (Decimal("0.000123"), '"0.000123"'),
    (Decimal("-12.3400"), '"-12.34"'),
    (Decimal("1234567890.123456789012345678901234"), '"1234567890.123456789012345678901234"'),
    (10**30, "1000000000000000000000000000000"),
    (date(2025, 1, 2), '"2025-01-02"'),
    (
        datetime(2025, 1, 2, 9, 30, tzinfo=ZoneInfo("America/New_York")),
        '"2025-01-02T14:30:00.000000Z"',
    ),
    (datetime(2025, 7, 1, 12, 0, 0, 5, tzinfo=UTC), '"2025-07-01T12:00:00.000005Z"'),
    (EventKind.FILL_RECORDED, '"FillRecorded"'),
    ({"state": State.HALT, EventKind.STATE_CHANGED: 1}, '{"StateChanged":1,"state":"HALT"}'),
    ((1, "two", (3,)), '[1,"two",[3]]'),
    ({"city": "Zürich", "quote": 'a"b\\c\n'}, '{"city":"Zürich","quote":"a\\"b\\\\c\\n"}'),
    ({"é": 1, "e": 2, "Z": 3}, '{"Z":3,"e":2,"é":1}'),
]


@pytest.mark.parametrize(("value", "expected"), CANONICAL)
def test_canonical_json_when_given_a_supported_value_writes_the_known_text(value, expected):
    assert canonical_json(value) == expected


REFUSED = [
    ({"price": 1.5}, "payload.price is a float; use Decimal or str for money and quantities"),
    ({"fills": [{"qty": 2}, {"price": 2.0}]}, "payload.fills[1].price is a float"),
    (float("nan"), "payload is a float"),
    ({"at": datetime(2025, 1, 2, 9, 30)}, "payload.at is a naive datetime"),
    ({"x": Decimal("NaN")}, "payload.x is the Decimal NaN"),
    ({"x": Decimal("-Infinity")}, "payload.x is the Decimal -Infinity"),
    ({1: "a"}, "keys must be strings"),
    ({"s": {1, 2}}, "payload.s is a set"),
    ({"b": b"bytes"}, "payload.b is a bytes"),
    ({"s": "\ud800"}, "lone surrogate"),
]


@pytest.mark.parametrize(("value", "message"), REFUSED)
def test_canonical_json_when_given_an_ambiguous_value_refuses_naming_the_field(value, message):
    with pytest.raises(LedgerError) as caught:
        canonical_json(value)
    assert message in str(caught.value)
    assert isinstance(caught.value, OpsError)


def test_canonical_json_when_given_a_root_name_uses_it_in_the_message():
    with pytest.raises(LedgerError, match=r"^order\.legs\[0\]\.price is a float"):
        canonical_json({"legs": [{"price": 0.1}]}, root="order")


@given(st.dictionaries(st.text(max_size=4), st.integers() | st.text(max_size=4), max_size=6))
@pytest.mark.slow
def test_canonical_json_when_keys_arrive_in_any_order_writes_one_text(mapping):
    reordered = dict(reversed(list(mapping.items())))
    assert canonical_json(reordered) == canonical_json(mapping)
    assert json.loads(canonical_json(mapping)) == mapping


# -- the hash chain, recomputed by hand -----------------------------------------------------------


def test_append_when_first_events_computes_the_documented_hash(path):
    clock = Ticks(datetime(2025, 1, 2, 9, 30, tzinfo=ZoneInfo("America/New_York")))
    with Ledger.open(path, clock=clock) as ledger:
        first = ledger.append(
            EventKind.FILL_RECORDED,
            "fill:1",
            {"quantity": 3, "price": Decimal("101.50")},
            run_id="run-1",
            cycle_id="2025-01",
        )
        second = ledger.append("JobStarted", "job:é", {"job": "qa"})
    row1 = '[1,"2025-01-02T14:30:00.000000Z","FillRecorded","fill:1","run-1","2025-01",'
    row1 += '{"price":"101.5","quantity":3}]'
    row2 = '[2,"2025-01-02T14:30:01.000000Z","JobStarted","job:é",null,null,{"job":"qa"}]'
    assert first.prev_hash == GENESIS_HASH
    assert first.hash == by_hand(GENESIS_HASH, row1)
    assert second.prev_hash == first.hash
    assert second.hash == by_hand(first.hash, row2)
    assert (first.seq, first.recorded_at, first.payload) == (
        1,
        "2025-01-02T14:30:00.000000Z",
        {"price": "101.5", "quantity": 3},
    )


def test_open_when_new_creates_the_schema_with_the_version_and_wal(path):
    Ledger.open(path).close()
    with contextlib.closing(sqlite3.connect(path)) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        meta = dict(conn.execute("SELECT name, value FROM meta"))
        columns = [r[1] for r in conn.execute("PRAGMA table_info(events)")]
    assert meta["schema_version"] == "1"
    assert columns == [
        "seq",
        "recorded_at",
        "kind",
        "key",
        "run_id",
        "cycle_id",
        "payload",
        "prev_hash",
        "hash",
    ]
    assert not [p for p in path.parent.iterdir() if p.name.endswith(".creating")]


def test_append_when_clock_is_naive_refuses(path):
    with Ledger.open(path, clock=lambda: datetime(2025, 1, 2)) as ledger:
        with pytest.raises(LedgerError, match="naive"):
            ledger.append("JobStarted", "k", {})
        assert ledger.head() is None


# -- idempotency and conflicts ------------------------------------------------------------------


def test_append_when_same_key_and_same_payload_returns_the_existing_event(ledger, path):
    first = ledger.append("FillRecorded", "fill:1", {"price": Decimal("1.50"), "qty": 2})
    again = ledger.append("FillRecorded", "fill:1", {"qty": 2, "price": "1.5"}, run_id="retry")
    assert again == first
    assert ledger.head() == (1, first.hash)
    assert count(path) == 1


def test_append_when_kind_is_an_event_kind_records_its_text_as_the_string_would(ledger):
    first = ledger.append(EventKind.FILL_RECORDED, "fill:1", {"qty": 2})
    again = ledger.append("FillRecorded", "fill:1", {"qty": 2})
    assert first.kind == "FillRecorded" and type(first.kind) is str
    assert again == first
    assert [e.key for e in ledger.events(kind=EventKind.FILL_RECORDED)] == ["fill:1"]
    assert ledger.last(EventKind.FILL_RECORDED) == first


@pytest.mark.parametrize(
    ("kind", "payload"),
    [("FillRecorded", {"qty": 3}), ("OrderSubmitted", {"qty": 2})],
    ids=["payload", "kind"],
)
def test_append_when_same_key_differs_raises_conflict_and_writes_nothing(
    ledger, path, kind, payload
):
    first = ledger.append("FillRecorded", "fill:1", {"qty": 2})
    with pytest.raises(LedgerConflict) as caught:
        ledger.append(kind, "fill:1", payload)
    assert caught.value.key == "fill:1"
    assert caught.value.existing == first
    assert "fill:1" in str(caught.value) and "nothing was written" in str(caught.value)
    assert count(path) == 1
    assert ledger.get("fill:1") == first


def test_append_many_when_item_three_conflicts_writes_none_of_them(ledger, path):
    ledger.append("JobStarted", "taken", {"job": "qa"})
    items = [
        ("JobStarted", "a", {"n": 1}),
        ("JobStarted", "b", {"n": 2}),
        ("JobStarted", "taken", {"job": "other"}),
    ]
    with pytest.raises(LedgerConflict):
        ledger.append_many(items)
    assert ledger.get("a") is None and ledger.get("b") is None
    assert count(path) == 1
    assert ledger.append("JobStarted", "a", {"n": 1}).seq == 2  # the chain went on unharmed


def test_append_many_when_all_new_writes_one_transaction_in_order(ledger):
    ledger.append("JobStarted", "old", {})
    events = ledger.append_many(
        [("JobStarted", "x", {"n": 1}), ("JobStarted", "old", {}), ("JobCompleted", "y", {})],
        run_id="run-9",
        cycle_id="2025-02",
    )
    assert [e.seq for e in events] == [2, 1, 3]
    assert events[0].recorded_at == events[2].recorded_at  # one transaction, one instant
    assert events[2].prev_hash == events[0].hash
    assert (events[0].run_id, events[0].cycle_id) == ("run-9", "2025-02")


# -- the stamps of a simulated clock ---------------------------------------------------------------


def test_append_when_a_simulated_clock_reads_one_instant_stamps_each_transaction_apart(path):
    with Ledger.open(path, clock=lambda: T0, simulated=True) as ledger:
        first = ledger.append_many([("JobStarted", "a", {}), ("JobCompleted", "b", {})])
        second = ledger.append("JobStarted", "c", {})
        third = ledger.append("JobStarted", "d", {})
    assert [e.recorded_at for e in first] == ["2025-01-02T14:30:00.000000Z"] * 2
    assert second.recorded_at == "2025-01-02T14:30:00.000001Z"
    assert third.recorded_at == "2025-01-02T14:30:00.000002Z"


def test_append_when_a_simulated_clock_is_set_before_the_head_stamps_just_after_it(path):
    later = T0 + timedelta(minutes=5)
    with Ledger.open(path, clock=lambda: later, simulated=True) as ledger:
        ledger.append("JobStarted", "a", {})
    with Ledger.open(path, clock=lambda: T0, simulated=True) as ledger:  # an earlier step
        back = ledger.append("JobStarted", "b", {})
    with Ledger.open(path, clock=lambda: T0 + timedelta(hours=1), simulated=True) as ledger:
        ahead = ledger.append("JobStarted", "c", {})
    assert back.recorded_at == "2025-01-02T14:35:00.000001Z"
    assert ahead.recorded_at == "2025-01-02T15:30:00.000000Z"


def test_append_when_the_clock_is_not_simulated_stamps_its_reading_even_if_repeated(path):
    with Ledger.open(path, clock=lambda: T0) as ledger:
        stamps = {ledger.append("JobStarted", k, {}).recorded_at for k in "abc"}
    assert stamps == {"2025-01-02T14:30:00.000000Z"}


def test_open_ledger_when_the_config_is_on_a_simulated_clock_stamps_its_instant(tmp_path):
    init_workbook(tmp_path / "wb", template="demo")
    cfg = replace(load_config(tmp_path / "wb"), simulated_now=T0)
    with open_ledger(cfg) as ledger:
        a = ledger.append("JobStarted", "a", {})
        b = ledger.append("JobStarted", "b", {})
    with open_ledger(cfg, clock=lambda: T0 + timedelta(days=1)) as ledger:  # the caller's own
        c = ledger.append("JobStarted", "c", {})
    with open_ledger(replace(cfg, preview=True)) as preview:
        d = preview.append("JobStarted", "d", {})
    assert [a.recorded_at, b.recorded_at, c.recorded_at] == [
        "2025-01-02T14:30:00.000000Z", "2025-01-02T14:30:00.000001Z",
        "2025-01-03T14:30:00.000000Z"]  # fmt: skip
    assert d.recorded_at == "2025-01-03T14:30:00.000001Z"  # the copy goes on from the file


def test_append_many_when_a_key_repeats_in_the_batch_treats_it_as_idempotent(ledger):
    events = ledger.append_many([("A", "k", {"v": 1}), ("A", "k", {"v": 1})])
    assert events[0] == events[1] and ledger.head()[0] == 1
    with pytest.raises(LedgerConflict):
        ledger.append_many([("A", "j", {"v": 1}), ("A", "j", {"v": 2})])
    assert ledger.get("j") is None


@pytest.mark.parametrize(
    ("kind", "key", "payload", "message"),
    [
        ("", "k", {}, "kind must be"),
        ("A", "", {}, "key must be"),
        ("A", "k", ["x"], "not a dict"),
        ("A", "k", {"p": 0.5}, "payload.p is a float"),
    ],
)
def test_append_when_input_is_bad_refuses_and_writes_nothing(
    ledger, path, kind, key, payload, message
):
    with pytest.raises(LedgerError, match=message):
        ledger.append(kind, key, payload)
    assert count(path) == 0


# -- the database itself refuses edits ------------------------------------------------------------


@pytest.mark.parametrize(
    "sql",
    [
        "UPDATE events SET payload = '{\"qty\":9}' WHERE seq = 1",
        "DELETE FROM events WHERE seq = 2",
        "DELETE FROM events",
        "UPDATE meta SET value = '2' WHERE name = 'schema_version'",
        f"INSERT INTO events VALUES (1, 'x', 'A', 'new', NULL, NULL, '{{}}', '{GENESIS_HASH}', '')",
        "INSERT INTO events VALUES (3, 'x', 'A', 'new', NULL, NULL, '{}', 'not-the-head', 'h')",
    ],
    ids=["update", "delete-one", "delete-all", "meta-update", "insert-reused-seq", "insert-fork"],
)
def test_raw_sqlite_when_editing_events_is_refused_by_triggers(ledger, path, sql):
    ledger.append("A", "one", {"qty": 1})
    ledger.append("A", "two", {"qty": 2})
    conn = sqlite3.connect(path)
    with pytest.raises(sqlite3.IntegrityError, match="append-only|write-once"):
        conn.execute(sql)
    conn.rollback()
    conn.close()
    assert ledger.verify().ok and count(path) == 2


# -- reading ------------------------------------------------------------------------------------


def test_events_when_filtered_yield_ascending_matches(ledger):
    ledger.append_many([("A", "a1", {}), ("B", "b1", {})], cycle_id="c1")
    ledger.append_many([("A", "a2", {}), ("B", "b2", {})], cycle_id="c2")
    assert [e.key for e in ledger.events()] == ["a1", "b1", "a2", "b2"]
    assert [e.key for e in ledger.events(kind="A")] == ["a1", "a2"]
    assert [e.key for e in ledger.events(cycle_id="c2")] == ["a2", "b2"]
    assert [e.key for e in ledger.events(kind="B", after_seq=2)] == ["b2"]
    assert ledger.last("A").key == "a2" and ledger.last("C") is None
    assert ledger.get("b1").seq == 2 and ledger.get("nope") is None


def test_event_to_dict_when_dumped_is_plain_json(ledger):
    event = ledger.append("A", "k", {"amount": Decimal("2.10")}, run_id="r")
    data = json.loads(json.dumps(event.to_dict()))
    assert data["payload"] == {"amount": "2.1"} and data["seq"] == 1 and data["run_id"] == "r"
    assert Event(**data) == event


def test_open_when_readonly_reads_but_refuses_appends(ledger, path):
    ledger.append("A", "k", {})
    with Ledger.open(path, readonly=True) as reader:
        assert reader.head() == ledger.head()
        with pytest.raises(LedgerError, match="read-only"):
            reader.append("A", "k2", {})
        ledger.append("A", "k3", {})  # a writer goes on while the reader is open
        assert reader.head()[0] == 2


@pytest.mark.parametrize(("create", "readonly"), [(False, False), (True, True), (False, True)])
def test_open_when_no_file_and_not_to_create_raises_missing(path, create, readonly):
    with pytest.raises(LedgerMissing, match="no ledger"):
        Ledger.open(path, create=create, readonly=readonly)
    assert not path.exists()


def test_open_when_given_a_folder_refuses(tmp_path):
    with pytest.raises(LedgerError, match="is a folder"):
        Ledger.open(tmp_path)


def test_open_ledger_when_given_a_config_uses_the_ledger_path(tmp_path):
    class Cfg:
        def path(self, name: str) -> Path:
            return tmp_path / {"ledger": "books"}[name]

    with open_ledger(Cfg()) as ledger:
        assert ledger.path == tmp_path / "books" / LEDGER_FILE
    assert (tmp_path / "books" / LEDGER_FILE).is_file()


def test_ledger_when_closed_refuses_to_work(ledger):
    ledger.close()
    ledger.close()
    with pytest.raises(LedgerError, match="closed"):
        ledger.head()


# -- verify and the anchor ----------------------------------------------------------------------


def test_verify_when_empty_is_ok_and_writes_no_anchor(ledger, tmp_path):
    report = ledger.verify(tmp_path / "anchor.json")
    assert report == VerifyReport(True, 0, None, None, None, None, None)
    assert not (tmp_path / "anchor.json").exists()


def test_verify_when_sound_writes_the_head_to_the_anchor(ledger, path, tmp_path):
    anchor = tmp_path / "ops" / "anchor.json"
    for i in range(5):
        ledger.append("A", f"k{i}", {"i": i})
    with Ledger.open(path, readonly=True) as reader:  # as `ops-runner ledger verify` does
        report = reader.verify(anchor)
    assert (report.ok, report.events_checked, report.head_seq) == (True, 5, 5)
    stored = json.loads(anchor.read_text())
    assert stored["seq"] == 5 and stored["hash"] == ledger.head()[1]
    assert stored["written_at"].endswith("Z") and report.anchor == stored
    assert json.loads(json.dumps(report.to_dict()))["head_seq"] == 5


def test_read_anchor_when_garbage_raises_and_verify_reports_it(ledger, tmp_path):
    ledger.append("A", "k", {})
    anchor = tmp_path / "anchor.json"
    anchor.write_text("{not json")
    with pytest.raises(LedgerError, match="cannot be read as JSON"):
        read_anchor(anchor)
    report = ledger.verify(anchor)
    assert (report.ok, report.reason) == (False, "anchor unreadable")
    assert anchor.read_text() == "{not json"  # left for a person to judge


def test_write_anchor_when_head_is_malformed_refuses(tmp_path):
    with pytest.raises(LedgerError, match="not a ledger head"):
        write_anchor(tmp_path / "a.json", 3, "abc")
    write_anchor(tmp_path / "a.json", 3, "a" * 64)
    assert read_anchor(tmp_path / "a.json")["seq"] == 3
    assert read_anchor(tmp_path / "none.json") is None


def test_open_when_file_is_not_a_database_is_corrupt_with_one_line(path):
    path.parent.mkdir(parents=True)
    path.write_text("hello, I am a spreadsheet\n" * 10)
    with pytest.raises(LedgerCorrupt) as caught:
        Ledger.open(path)
    message = str(caught.value)
    assert "\n" not in message and "not a SQLite database" in message
    assert "HALT until a person restores or repairs the ledger (ops-runner restore)" in message
    assert caught.value.exit_code == 3


# -- any sequence of appends --------------------------------------------------------------------


def record(ledger: Ledger, key: str, payload: dict, batch: bool) -> Event:
    return (
        ledger.append_many([("A", key, payload)])[0] if batch else ledger.append("A", key, payload)
    )


STEPS = st.lists(st.tuples(st.integers(0, 7), st.integers(0, 2), st.booleans()), max_size=25)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(STEPS)
@pytest.mark.slow
def test_append_when_any_sequence_verifies_ok_with_seqs_one_to_n(steps):
    recorded: dict[str, int] = {}  # key -> payload variant first recorded
    with tempfile.TemporaryDirectory() as tmp, Ledger.open(Path(tmp) / LEDGER_FILE) as ledger:
        for key_no, variant, batch in steps:
            key, payload = f"key-{key_no}", {"variant": variant, "amount": Decimal(f"{variant}.10")}
            expected_conflict = key in recorded and recorded[key] != variant
            if expected_conflict:
                with pytest.raises(LedgerConflict):
                    record(ledger, key, payload, batch)
                continue
            event = record(ledger, key, payload, batch)
            if key not in recorded:
                recorded[key] = variant
                assert event.seq == len(recorded)
            assert event.payload == {"variant": recorded[key], "amount": f"{recorded[key]}.1"}
            assert ledger.head()[0] == len(recorded)  # a repeat wrote nothing
        report = ledger.verify()
        seqs = [e.seq for e in ledger.events()]
    assert report.ok and report.events_checked == len(recorded)
    assert seqs == list(range(1, len(recorded) + 1))
