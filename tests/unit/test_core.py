"""The bottom layer, ops_runner.core: the Cycle, hashing, time formats, atomic files, no pandas."""

from __future__ import annotations

import errno
import fcntl
import subprocess
import sys
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from enum import StrEnum
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from ops_runner.core import hashing
from ops_runner.core.canonical import canonical_json, compute_json_ready
from ops_runner.core.clock import format_instant, format_seconds, format_stamp, parse_instant
from ops_runner.core.cycle import Cycle
from ops_runner.core.errors import CycleError, LedgerError, OpsError
from ops_runner.core.faults import ENV
from ops_runner.core.files import hold_lock, open_atomic, write_bytes_atomic
from ops_runner.core.hashing import compute_sha256, read_sha256, read_size_and_sha256

NY = ZoneInfo("America/New_York")

# -- the Cycle -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("session", "expected"),
    [
        (date(2025, 11, 28), "2025-11"),  # the sample market's last full cycle
        (date(2025, 1, 31), "2025-01"),
        (date(2024, 12, 31), "2024-12"),
        (date(999, 6, 30), "0999-06"),
    ],
)
def test_cycle_of_when_given_a_session_names_its_year_and_month(session, expected):
    assert str(Cycle.of(session)) == expected


@pytest.mark.parametrize(
    ("text", "year", "month"), [("2025-11", 2025, 11), ("2026-01", 2026, 1), ("1999-12", 1999, 12)]
)
def test_cycle_parse_when_text_is_a_cycle_id_gives_it_back(text, year, month):
    cycle = Cycle.parse(text)
    assert (cycle.year, cycle.month) == (year, month)
    assert str(cycle) == text


@pytest.mark.parametrize(
    "text",
    ["2025-13", "2025-00", "0000-01", "2025-1", "25-11", "2025-11-01", "2025/11", " 2025-11",
     "../x", "", "２０２５-１１", None, 202511],
)  # fmt: skip
def test_cycle_parse_when_text_is_not_a_cycle_raises_one_line(text):
    with pytest.raises(CycleError) as raised:
        Cycle.parse(text)
    assert str(raised.value) == f"cycle: {text!r} is not a cycle such as 2025-11"
    assert isinstance(raised.value, OpsError) and raised.value.exit_code == 2


def test_cycle_parse_when_given_what_names_the_input_in_the_message():
    with pytest.raises(CycleError, match=r"^--cycle: '2025-13' is not a cycle such as 2025-11$"):
        Cycle.parse("2025-13", what="--cycle")


def test_cycle_when_month_is_impossible_refuses_to_exist():
    with pytest.raises(CycleError):
        Cycle(2025, 13)


def test_cycles_when_sorted_follow_time_and_step_back_across_years():
    cycles = [Cycle(2025, 1), Cycle(2024, 12), Cycle(2025, 10), Cycle(2024, 2)]
    assert [str(c) for c in sorted(cycles)] == ["2024-02", "2024-12", "2025-01", "2025-10"]
    assert str(Cycle(2025, 1).previous()) == "2024-12"
    assert str(Cycle(2025, 12).previous()) == "2025-11"
    assert Cycle.parse("2025-11") == Cycle.of(date(2025, 11, 3))
    assert len({Cycle(2025, 11), Cycle.parse("2025-11")}) == 1


# -- hashing -------------------------------------------------------------------------------------

# FIPS 180-2 / NIST examples.
EMPTY = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
ABC = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
TWO_BLOCKS = "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"
MILLION_A = "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0"


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"", EMPTY),
        ("", EMPTY),
        (b"abc", ABC),
        ("abc", ABC),
        ("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq", TWO_BLOCKS),
    ],
)
def test_compute_sha256_when_given_a_known_message_gives_the_published_digest(data, expected):
    assert compute_sha256(data) == expected


def test_compute_sha256_when_given_text_hashes_its_utf8_bytes():
    assert compute_sha256("é") == compute_sha256(b"\xc3\xa9") != compute_sha256(b"\xe9")


def test_read_sha256_when_file_spans_many_chunks_gives_the_published_digest(tmp_path, monkeypatch):
    monkeypatch.setattr(hashing, "_CHUNK", 4096)  # a million bytes: 245 chunks
    path = tmp_path / "a.bin"
    path.write_bytes(b"a" * 1_000_000)
    assert read_sha256(path) == MILLION_A
    assert read_size_and_sha256(path) == (1_000_000, MILLION_A)
    (tmp_path / "empty").write_bytes(b"")
    assert read_size_and_sha256(tmp_path / "empty") == (0, EMPTY)


# -- time formats --------------------------------------------------------------------------------

CLOSE = datetime(2025, 11, 28, 18, 0, 0, 123456, tzinfo=UTC)  # the early close, 13:00 ET


@pytest.mark.parametrize(
    ("moment", "seconds", "instant", "stamp"),
    [
        (CLOSE, "2025-11-28T18:00:00Z", "2025-11-28T18:00:00.123456Z", "20251128T180000Z"),
        (datetime(2025, 11, 28, 13, 0, 0, 999999, tzinfo=NY),
         "2025-11-28T18:00:00Z", "2025-11-28T18:00:00.999999Z", "20251128T180000Z"),
        (datetime(2025, 7, 1, 9, 30, tzinfo=NY),  # summer time: UTC-4
         "2025-07-01T13:30:00Z", "2025-07-01T13:30:00.000000Z", "20250701T133000Z"),
    ],
)  # fmt: skip
def test_time_formats_when_given_an_aware_instant_spell_it_in_utc(moment, seconds, instant, stamp):
    assert format_seconds(moment) == seconds  # fractions dropped, never rounded up
    assert format_instant(moment) == instant
    assert format_stamp(moment) == stamp


def test_format_instant_when_naive_raises_ledger_error():
    with pytest.raises(LedgerError, match="naive datetime"):
        format_instant(datetime(2025, 11, 28, 21, 0))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2025-11-28T21:00:00Z", datetime(2025, 11, 28, 21, 0, tzinfo=UTC)),
        ("2025-11-28T21:00:00.123456Z", datetime(2025, 11, 28, 21, 0, 0, 123456, tzinfo=UTC)),
        ("2025-11-28T16:00:00-05:00", datetime(2025, 11, 28, 21, 0, tzinfo=UTC)),
    ],
)
def test_parse_instant_when_given_iso_text_reads_z_as_utc(text, expected):
    parsed = parse_instant(text)
    assert parsed == expected and parsed.utcoffset() is not None
    assert format_seconds(parsed) == "2025-11-28T21:00:00Z"


def test_parse_instant_when_text_is_not_iso_raises_value_error():
    with pytest.raises(ValueError):
        parse_instant("yesterday")


# -- JSON-ready values ---------------------------------------------------------------------------


class _Side(StrEnum):
    BUY = "BUY"


@dataclass(frozen=True)
class _Line:
    symbol: str
    side: _Side
    price: Decimal
    walk: tuple[tuple[str, Decimal], ...]


def test_compute_json_ready_when_given_report_values_keeps_decimal_text():
    line = _Line("SPY", _Side.BUY, Decimal("612.50"), (("cash", Decimal("0.10")),))
    at = datetime(2025, 12, 1, 14, 30, tzinfo=UTC)
    value = {"line": line, 7: [at, date(2025, 12, 1), None, True, 3, 0.5]}
    assert compute_json_ready(value) == {
        "line": {"symbol": "SPY", "side": "BUY", "price": "612.50", "walk": [["cash", "0.10"]]},
        "7": ["2025-12-01T14:30:00+00:00", date(2025, 12, 1), None, True, 3, 0.5],
    }


def test_canonical_json_when_given_the_same_decimal_spells_it_without_trailing_zeros():
    # canonical_json is the ledger's spelling; compute_json_ready keeps a report's own text.
    assert canonical_json({"price": Decimal("612.50")}) == '{"price":"612.5"}'
    assert canonical_json(compute_json_ready({"price": Decimal("612.50")})) == '{"price":"612.50"}'


# -- files ---------------------------------------------------------------------------------------


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


def test_write_bytes_atomic_when_file_exists_replaces_it_whole(tmp_path):
    path = tmp_path / "deep" / "books.json"
    write_bytes_atomic(path, b"old\n")
    write_bytes_atomic(path, b"new\n")
    assert path.read_bytes() == b"new\n"
    assert _leftovers(path.parent) == []


def test_write_bytes_atomic_when_disk_fills_midway_leaves_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "heartbeat.json"
    path.write_bytes(b"old content\n")
    monkeypatch.setenv(ENV, "enospc@write:heartbeat.json")
    with pytest.raises(OSError) as raised:
        write_bytes_atomic(path, b"new content that never lands\n")
    assert raised.value.errno == errno.ENOSPC
    assert path.read_bytes() == b"old content\n"
    assert _leftovers(tmp_path) == []


def test_open_atomic_when_block_raises_leaves_the_old_file(tmp_path):
    path = tmp_path / "archive.tar.gz"
    path.write_bytes(b"old")
    with pytest.raises(RuntimeError), open_atomic(path) as handle:
        handle.write(b"half of the new")
        raise RuntimeError("the writer died")
    assert path.read_bytes() == b"old"
    assert _leftovers(tmp_path) == []


def test_hold_lock_when_held_blocks_another_holder_until_released(tmp_path):
    lock = tmp_path / "sim.lock"

    def try_lock() -> bool:
        with open(lock, "a+b") as other:  # another open file: flock treats it as another holder
            try:
                fcntl.flock(other.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return False
            fcntl.flock(other.fileno(), fcntl.LOCK_UN)
            return True

    with hold_lock(lock):
        assert not try_lock()
    assert try_lock()


# -- the layer's promise -------------------------------------------------------------------------


@pytest.mark.subprocess
def test_core_when_imported_alone_loads_no_pandas_and_no_upper_module():
    code = (
        "import importlib, pkgutil, sys\n"
        "import ops_runner.core as core\n"
        "for m in pkgutil.iter_modules(core.__path__, 'ops_runner.core.'):\n"
        "    importlib.import_module(m.name)\n"
        "print(sorted(n for n in ('pandas', 'numpy') if n in sys.modules))\n"
        "print(sorted(n for n in sys.modules if n.startswith('ops_runner')\n"
        "             and n != 'ops_runner' and not n.startswith('ops_runner.core')))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.splitlines() == ["[]", "[]"], done.stderr
