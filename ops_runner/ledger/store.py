"""The ledger: an append-only, hash-chained SQLite record of every event, with verify and anchor."""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import sqlite3
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from enum import Enum
from json.encoder import encode_basestring
from pathlib import Path
from typing import Any

from ops_runner.core.canonical import canonical_json
from ops_runner.core.clock import format_instant, parse_instant
from ops_runner.core.errors import LedgerError
from ops_runner.core.events import EventKind
from ops_runner.core.files import fsync_folder, open_atomic
from ops_runner.core.hashing import compute_sha256
from ops_runner.workbook.config import Config

log = logging.getLogger(__name__)

LEDGER_FILE = "ledger.sqlite"
SCHEMA_VERSION = 1
GENESIS_HASH = "0" * 64
APPLICATION_ID = 0x4F50534C  # "OPSL" in the SQLite header: tells our ledger from any other file
DEFAULT_BUSY_TIMEOUT = 30.0  # seconds a writer waits for another writer's transaction
_HALT = "the system is in HALT until a person restores or repairs the ledger (ops-runner restore)"
_COLUMNS = "seq, recorded_at, kind, key, run_id, cycle_id, payload, prev_hash, hash"
_HEAD = "SELECT seq, hash FROM events ORDER BY seq DESC LIMIT 1"
_HEX64 = re.compile(r"[0-9a-f]{64}")
_OPEN_HERE: dict[str, int] = {}  # resolved ledger path -> connections open in this process
_SQLITE_PROBLEMS = {
    "SQLITE_BUSY": "another process held it past the busy timeout; try again",
    "SQLITE_FULL": "the disk is full; free space and try again",
    "SQLITE_READONLY": "the file or its folder is read-only",
}

_SCHEMA = f"""
PRAGMA journal_mode = WAL;
PRAGMA application_id = {APPLICATION_ID};
PRAGMA user_version = {SCHEMA_VERSION};
BEGIN IMMEDIATE;
CREATE TABLE meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE events (
    seq INTEGER PRIMARY KEY, recorded_at TEXT NOT NULL, kind TEXT NOT NULL,
    key TEXT NOT NULL UNIQUE, run_id TEXT, cycle_id TEXT, payload TEXT NOT NULL,
    prev_hash TEXT NOT NULL, hash TEXT NOT NULL
);
CREATE INDEX events_kind ON events (kind, seq);
CREATE INDEX events_cycle ON events (cycle_id, seq);
CREATE TRIGGER events_no_update BEFORE UPDATE ON events
BEGIN SELECT RAISE(ABORT, 'ledger events are append-only: UPDATE refused'); END;
CREATE TRIGGER events_no_delete BEFORE DELETE ON events
BEGIN SELECT RAISE(ABORT, 'ledger events are append-only: DELETE refused'); END;
CREATE TRIGGER events_chain_only BEFORE INSERT ON events
WHEN NEW.seq IS NOT (SELECT COALESCE(MAX(seq), 0) + 1 FROM events)
  OR NEW.prev_hash IS NOT COALESCE((SELECT hash FROM events WHERE seq = NEW.seq - 1),
                                   '{GENESIS_HASH}')
BEGIN SELECT RAISE(ABORT, 'ledger events are append-only: an insert must extend the head'); END;
CREATE TRIGGER meta_no_update BEFORE UPDATE ON meta
BEGIN SELECT RAISE(ABORT, 'ledger meta is write-once: UPDATE refused'); END;
CREATE TRIGGER meta_no_delete BEFORE DELETE ON meta
BEGIN SELECT RAISE(ABORT, 'ledger meta is write-once: DELETE refused'); END;
INSERT INTO meta VALUES ('schema_version', '{SCHEMA_VERSION}'), ('genesis_hash', '{GENESIS_HASH}');
COMMIT;
"""
_TRIGGERS = tuple(re.findall(r"CREATE TRIGGER (\w+)", _SCHEMA))


# -- errors -------------------------------------------------------------------------------------


class LedgerMissing(LedgerError):
    """There is no ledger file where one was expected, and it was not to be created."""


class LedgerConflict(LedgerError):
    """The same key with a different kind or payload: an incident, never an overwrite.

    Fields: ``key``; ``existing`` (the Event recorded under it); ``kind`` and ``payload_text``
    (what was refused).
    """

    def __init__(self, key: str, existing: Event, kind: str, payload_text: str) -> None:
        what = "kind" if kind != existing.kind else "payload"
        super().__init__(
            f"ledger conflict: key {key!r} already holds event {existing.seq} ({existing.kind}) "
            f"with a different {what}; nothing was written. Open an incident: a retried step "
            "must record the same payload, and a new fact needs a new key"
        )
        self.key, self.existing, self.kind, self.payload_text = key, existing, kind, payload_text


class LedgerCorrupt(LedgerError):
    """The ledger file cannot be trusted: unreadable, not ours, truncated, wrong schema version.

    Fields: ``path`` and ``problem``.
    """

    exit_code = 3

    def __init__(self, path: Path | str, problem: str) -> None:
        problem = " ".join(problem.split())  # SQLite's reports span lines; the CLI shows one
        super().__init__(f"ledger {path} is corrupt: {problem}; {_HALT}")
        self.path, self.problem = str(path), problem


# -- the hash -----------------------------------------------------------------------------------


def _json_text(value: str | None) -> str:
    return "null" if value is None else encode_basestring(value)


def compute_event_hash(
    prev_hash: str,
    seq: int,
    recorded_at: str,
    kind: str,
    key: str,
    run_id: str | None,
    cycle_id: str | None,
    payload_text: str,
) -> str:
    """Return an event's hash: SHA-256 hex of the UTF-8 of prev_hash + the canonical row.

    The canonical row is canonical_json([seq, recorded_at, kind, key, run_id, cycle_id, payload])
    with the payload as a JSON value (not a quoted string). The stored payload text is already
    canonical, so it is spliced in as stored and verify never decodes a payload.
    """
    row = (
        f"[{seq},{encode_basestring(recorded_at)},{encode_basestring(kind)},"
        f"{encode_basestring(key)},{_json_text(run_id)},{_json_text(cycle_id)},{payload_text}]"
    )
    return hashlib.sha256((prev_hash + row).encode("utf-8")).hexdigest()


# -- records ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Event:
    """One recorded event; ``payload`` is the decoded canonical JSON."""

    seq: int
    recorded_at: str
    kind: str
    key: str
    run_id: str | None
    cycle_id: str | None
    payload: dict
    prev_hash: str
    hash: str

    def to_dict(self) -> dict:
        """Return the event as plain JSON-ready data."""
        return asdict(self)


def _event(row: Sequence[Any]) -> Event:
    seq, at, kind, key, run_id, cycle_id, payload, prev_hash, digest = row
    return Event(seq, at, kind, key, run_id, cycle_id, json.loads(payload), prev_hash, digest)


@dataclass(frozen=True)
class VerifyReport:
    """What verify found.

    ``reason`` is exactly one of "gap", "broken link", "bad hash", "tail truncated", "anchor
    unreadable", "triggers missing" (None when ok); ``detail`` says it in a sentence.
    ``events_checked`` counts the events that checked good; ``head_seq``/``head_hash`` are the
    last row in the table; ``anchor`` is the anchor file's content after verify (the new head
    when ok, else what was found there).
    """

    ok: bool
    events_checked: int
    first_bad_seq: int | None
    reason: str | None
    head_seq: int | None
    head_hash: str | None
    anchor: dict | None
    detail: str | None = None

    def to_dict(self) -> dict:
        """Return the report as plain JSON-ready data."""
        return asdict(self)


# -- the anchor, kept outside the database ------------------------------------------------------


def write_anchor(path: Path, seq: int, hash: str) -> None:
    """Write the head as JSON {seq, hash, written_at} to ``path`` atomically. Raises LedgerError."""
    if isinstance(seq, bool) or not isinstance(seq, int) or seq < 0 or not _HEX64.fullmatch(hash):
        raise LedgerError(f"anchor: ({seq!r}, {hash!r}) is not a ledger head (seq, sha256 hex)")
    path = Path(path)
    record = {"seq": seq, "hash": hash, "written_at": format_instant(datetime.now(UTC))}
    try:
        with open_atomic(path) as handle:
            handle.write((json.dumps(record, indent=2, sort_keys=True) + "\n").encode("utf-8"))
    except OSError as exc:
        raise LedgerError(
            f"cannot write the ledger anchor {path}: {exc.strerror or exc}; fix the folder's "
            "permissions or free space, then run `ops-runner ledger verify`"
        ) from exc


def read_anchor(path: Path) -> dict | None:
    """Return the anchor {seq, hash, written_at}, or None when there is none. Raises LedgerError."""
    path = Path(path)
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        problem = f"cannot be read as JSON ({exc})"
    else:
        seq = record.get("seq") if isinstance(record, dict) else None
        digest = record.get("hash") if isinstance(record, dict) else None
        if type(seq) is int and seq >= 0 and isinstance(digest, str) and _HEX64.fullmatch(digest):
            return record
        problem = "does not hold a {seq, hash} head"
    raise LedgerError(
        f"ledger anchor {path} {problem}; compare the ledger with a backup, then remove the "
        "anchor so `ops-runner ledger verify` writes a new one"
    )


# -- the file -----------------------------------------------------------------------------------


def _require_sqlite_file(path: Path) -> None:
    """Raise LedgerCorrupt unless ``path`` starts like a whole SQLite database."""
    try:
        size = path.stat().st_size
        with path.open("rb") as handle:
            header = handle.read(100)
        wal = path.with_name(path.name + "-wal")
        wal_size = wal.stat().st_size if wal.exists() else 0
    except OSError as exc:
        raise LedgerError(f"cannot read the ledger {path}: {exc.strerror or exc}") from exc
    if size == 0:
        raise LedgerCorrupt(path, "the file is empty (0 bytes)")
    if len(header) < 100 or not header.startswith(b"SQLite format 3\x00"):
        raise LedgerCorrupt(path, f"not a SQLite database (it starts {header[:16]!r})")
    page_size = int.from_bytes(header[16:18], "big")
    expected = int.from_bytes(header[28:32], "big") * (65536 if page_size == 1 else page_size)
    # The header's page count is trusted only when its change counters agree, and pages still
    # in the WAL may not have reached the main file yet: then SQLite's quick_check decides.
    if header[24:28] == header[92:96] and wal_size == 0 and size < expected:
        raise LedgerCorrupt(path, f"the file is truncated: {size} of {expected} bytes")


def _create_file(path: Path) -> None:
    """Build an empty ledger beside ``path`` and link it into place: no half-made file shows."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".creating")
    os.close(fd)
    tmp = Path(name)
    try:
        conn = sqlite3.connect(tmp, isolation_level=None)
        try:
            conn.executescript(_SCHEMA)
        finally:
            conn.close()
        with tmp.open("rb+") as handle:
            os.fsync(handle.fileno())
        with contextlib.suppress(FileExistsError):  # a ledger another process just made wins
            os.link(tmp, path)  # unlike rename, never replaces an existing file
        fsync_folder(path.parent)
    except (OSError, sqlite3.Error) as exc:
        raise LedgerError(f"cannot create the ledger {path}: {exc}") from exc
    finally:
        for leftover in (tmp, Path(f"{tmp}-wal"), Path(f"{tmp}-shm")):
            with contextlib.suppress(FileNotFoundError):
                leftover.unlink()


def _text(value: Any, name: str) -> str:
    if isinstance(value, Enum):
        value = value.value
    if not isinstance(value, str) or not value:
        raise LedgerError(f"{name} must be a non-empty string, got {value!r}; nothing was written")
    return str(value)


def _explain_io_error(path: Path, problem: str) -> str:
    """SQLite says "disk I/O error" when its WAL or shared-memory file cannot grow: name a full
    disk when that is what it is."""
    try:
        free = os.statvfs(path.parent)
    except OSError:
        return problem
    left = free.f_bavail * free.f_frsize
    if left < 1 << 20:
        return f"{problem}: the disk is full ({left} bytes free); free space and try again"
    return problem


# -- the ledger ---------------------------------------------------------------------------------

_Bad = tuple[int | None, str, str]  # (first bad seq, reason, detail)


class Ledger:
    """An open ledger file. Writers serialize on SQLite's write lock; readers never block them."""

    def __init__(
        self,
        path: Path,
        conn: sqlite3.Connection,
        readonly: bool,
        clock: Callable[[], datetime],
        simulated: bool = False,
    ) -> None:
        self.path = path
        self.readonly = readonly
        self.preview = False  # an in-memory copy (``open_preview``): nothing reaches the file
        self._conn: sqlite3.Connection | None = conn
        self._clock = clock
        # A simulated clock reads one instant for a whole tick: its stamps are kept after the
        # head's (see ``_stamp``), so no two transactions share one, as on the real clock.
        self._simulated = simulated

    @classmethod
    def open(
        cls,
        path: Path,
        create: bool = True,
        readonly: bool = False,
        *,
        clock: Callable[[], datetime] | None = None,
        busy_timeout: float = DEFAULT_BUSY_TIMEOUT,
        simulated: bool = False,
    ) -> Ledger:
        """Return the open ledger at ``path`` (the file), creating it when allowed.

        ``clock`` returns the aware datetime stamped on appends (default: now, UTC);
        ``simulated`` says it is a simulated clock (stamps kept after the head's). Raises
        LedgerMissing (no file, and not to create one), LedgerCorrupt (not a sound ledger of
        this schema version) or LedgerError. Never writes to a file that is not our ledger.
        """
        path = Path(path)
        if path.is_dir():
            raise LedgerError(f"{path} is a folder; give the file, e.g. {path / LEDGER_FILE}")
        if not path.exists():
            if readonly or not create:
                raise LedgerMissing(f"no ledger at {path}; `ops-runner init` or a tick makes one")
            _create_file(path)
        # Closing any descriptor of a file drops every POSIX lock this process holds on it,
        # SQLite's included: reading the header while another connection here is open would
        # let a second process write under that connection's feet (a corrupt file). Check the
        # header only on the process's first open; quick_check covers the rest.
        resolved = str(path.resolve())
        if not _OPEN_HERE.get(resolved):
            _require_sqlite_file(path)
        uri = f"{path.resolve().as_uri()}?mode={'ro' if readonly else 'rw'}"
        try:
            conn = sqlite3.connect(uri, uri=True, timeout=busy_timeout, isolation_level=None)
        except sqlite3.Error as exc:
            raise LedgerError(f"cannot open the ledger {path}: {exc}") from exc
        ledger = cls(path, conn, readonly, clock or (lambda: datetime.now(UTC)), simulated)
        _OPEN_HERE[resolved] = _OPEN_HERE.get(resolved, 0) + 1
        try:
            ledger._require_sound()
        except BaseException:
            ledger.close()
            raise
        return ledger

    @property
    def conn(self) -> sqlite3.Connection:
        """The SQLite connection. Raises LedgerError once closed."""
        if self._conn is None:
            raise LedgerError(f"ledger {self.path} is closed")
        return self._conn

    @contextlib.contextmanager
    def _guard(self, action: str) -> Iterator[None]:
        """Turn SQLite's errors into the ledger's: corrupt, busy, disk full, refused."""
        try:
            yield
        except json.JSONDecodeError as exc:  # a payload edited outside ops-runner
            raise LedgerCorrupt(
                self.path, f"a payload is not JSON ({exc}) (while {action})"
            ) from exc
        except sqlite3.Error as exc:
            name = getattr(exc, "sqlite_errorname", None) or ""
            if name.startswith(("SQLITE_CORRUPT", "SQLITE_NOTADB")) or "malformed" in str(exc):
                raise LedgerCorrupt(self.path, f"{exc} (while {action})") from exc
            family = "_".join(name.split("_")[:2])  # SQLITE_BUSY_SNAPSHOT -> SQLITE_BUSY
            problem = _SQLITE_PROBLEMS.get(family, str(exc))
            if family == "SQLITE_IOERR" or "disk I/O error" in str(exc):
                problem = _explain_io_error(self.path, problem)
            raise LedgerError(f"ledger {self.path}: {action} failed: {problem}") from exc

    def _require_sound(self) -> None:
        """Raise LedgerCorrupt unless the file is our ledger, at our schema version, intact."""
        conn = self.conn
        with self._guard("opening"):
            app_id = conn.execute("PRAGMA application_id").fetchone()[0]
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            found = "SELECT name FROM sqlite_master WHERE type = 'table'"
            if app_id != APPLICATION_ID or not {"events", "meta"} <= {
                r[0] for r in conn.execute(found)
            }:
                raise LedgerCorrupt(self.path, "a SQLite database that is not an ops-runner ledger")
            meta = dict(conn.execute("SELECT name, value FROM meta").fetchall())
            if version != SCHEMA_VERSION or meta.get("schema_version") != str(SCHEMA_VERSION):
                raise LedgerCorrupt(
                    self.path,
                    f"schema version {version} (meta says {meta.get('schema_version')}); this "
                    f"ops-runner reads version {SCHEMA_VERSION} only",
                )
            columns = ", ".join(r[1] for r in conn.execute("PRAGMA table_info(events)"))
            if columns != _COLUMNS:
                raise LedgerCorrupt(self.path, f"the events table has columns {columns}")
            # quick_check reads every page but does not compare indexes with their table, which
            # integrity_check adds at about 5x the cost. Measured on 2 cores: 0.5 ms for a decade
            # of monthly cycles (4,080 events, 1.6 MB), 0.3 s per million: fine for every open.
            problems = [r[0] for r in conn.execute("PRAGMA quick_check(5)")]
            if problems != ["ok"]:
                raise LedgerCorrupt(self.path, "quick_check: " + "; ".join(problems))
            conn.execute("PRAGMA synchronous = FULL")
            conn.execute("PRAGMA foreign_keys = ON")
            if not self.readonly and conn.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                conn.execute("PRAGMA journal_mode = WAL")  # e.g. after a restore from a copy

    def close(self) -> None:
        """Close the connection (safe to call twice)."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None
            if not self.preview:
                resolved = str(self.path.resolve())
                _OPEN_HERE[resolved] = max(0, _OPEN_HERE.get(resolved, 0) - 1)

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- writing

    def append(
        self,
        kind: EventKind | str,
        key: str,
        payload: Mapping[str, Any],
        *,
        run_id: str | None = None,
        cycle_id: str | None = None,
    ) -> Event:
        """Record one event and return it (durable on return); an identical repeat returns it.

        The same key, kind and canonical payload returns the existing event and writes nothing.
        Raises LedgerConflict (same key, different kind or payload), LedgerError (bad input,
        read-only, busy, disk full) or LedgerCorrupt.
        """
        return self.append_many([(kind, key, payload)], run_id=run_id, cycle_id=cycle_id)[0]

    def append_many(
        self,
        items: Sequence[tuple[EventKind | str, str, Mapping[str, Any]]],
        *,
        run_id: str | None = None,
        cycle_id: str | None = None,
    ) -> list[Event]:
        """Record (kind, key, payload) items in one transaction, all or nothing; return them.

        Each item is idempotent as in ``append``; one conflict writes none of them.
        """
        if self.readonly:
            raise LedgerError(f"ledger {self.path} is open read-only; nothing was written")
        run = None if run_id is None else _text(run_id, "run_id")
        cycle = None if cycle_id is None else _text(cycle_id, "cycle_id")
        prepared = []
        for i, item in enumerate(items):
            if not isinstance(item, tuple | list) or len(item) != 3:
                raise LedgerError(f"item {i} is not a (kind, key, payload); nothing was written")
            kind, key, payload = item
            if not isinstance(payload, Mapping):
                raise LedgerError(
                    f"the payload of {key!r} is a {type(payload).__name__}, not a dict"
                )
            prepared.append((_text(kind, "kind"), _text(key, "key"), canonical_json(payload)))
        conn = self.conn
        with self._guard("append"):
            conn.execute("BEGIN IMMEDIATE")  # the write lock first: the head cannot move under us
            try:
                events = self._insert(prepared, run, cycle)
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
        return events

    def _insert(
        self, prepared: list[tuple[str, str, str]], run_id: str | None, cycle_id: str | None
    ) -> list[Event]:
        """Inside the write transaction: extend the chain from the head as it is now."""
        conn = self.conn
        top = conn.execute(_HEAD).fetchone()
        seq, prev = top if top else (0, GENESIS_HASH)
        recorded_at = self._stamp(seq)
        events: list[Event] = []
        for kind, key, text in prepared:
            row = conn.execute(f"SELECT {_COLUMNS} FROM events WHERE key = ?", (key,)).fetchone()
            if row is not None:
                if row[2] != kind or row[6] != text:
                    raise LedgerConflict(key, _event(row), kind, text)
                events.append(_event(row))
                continue
            seq += 1
            digest = compute_event_hash(prev, seq, recorded_at, kind, key, run_id, cycle_id, text)
            values = (seq, recorded_at, kind, key, run_id, cycle_id, text, prev, digest)
            conn.execute(f"INSERT INTO events ({_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?)", values)
            events.append(_event(values))
            prev = digest
        return events

    def _stamp(self, head: int) -> str:
        """Return the stamp of a transaction after event ``head``: the clock's reading, or on a
        simulated clock one microsecond past the head's stamp when the reading is not after it
        (every tick of a simulated walk reads one instant; an operator's step may be set a
        little before the tick it follows). The real clock's reading is kept as it is."""
        stamp = format_instant(self._clock())
        if not self._simulated or head == 0:
            return stamp
        (last,) = self.conn.execute(
            "SELECT recorded_at FROM events WHERE seq = ?", (head,)
        ).fetchone()
        if stamp > last:  # one fixed-width spelling: text order is time order
            return stamp
        return format_instant(parse_instant(last) + timedelta(microseconds=1))

    # -- reading

    def _one(self, where: str, params: Sequence[Any]) -> Event | None:
        with self._guard("reading"):
            row = self.conn.execute(f"SELECT {_COLUMNS} FROM events {where}", params).fetchone()
            return _event(row) if row else None

    def get(self, key: str) -> Event | None:
        """Return the event recorded under ``key``, or None."""
        return self._one("WHERE key = ?", (_text(key, "key"),))

    def last(self, kind: EventKind | str) -> Event | None:
        """Return the latest event of ``kind``, or None."""
        return self._one("WHERE kind = ? ORDER BY seq DESC LIMIT 1", (_text(kind, "kind"),))

    def head(self) -> tuple[int, str] | None:
        """Return (seq, hash) of the last event, or None for an empty ledger."""
        with self._guard("reading"):
            row = self.conn.execute(_HEAD).fetchone()
        return (row[0], row[1]) if row else None

    def run_ids(self, kinds: Sequence[EventKind | str]) -> set[str]:
        """Return the run ids recorded with events of ``kinds`` (no payload is decoded: the
        tick asks at every run which runs ended)."""
        marks = ", ".join("?" * len(kinds))
        with self._guard("reading"):
            query = f"SELECT DISTINCT run_id FROM events WHERE kind IN ({marks})"
            rows = self.conn.execute(query, [_text(k, "kind") for k in kinds]).fetchall()
        return {str(r[0]) for r in rows if r[0] is not None}

    def events(
        self, kind: EventKind | str | None = None, cycle_id: str | None = None, after_seq: int = 0
    ) -> Iterator[Event]:
        """Yield events in ascending seq: all, or of one kind, one cycle, after a seq."""
        where = "seq > ?"
        params: list[object] = [after_seq]
        if kind is not None:
            where, params = where + " AND kind = ?", [*params, _text(kind, "kind")]
        if cycle_id is not None:
            where, params = where + " AND cycle_id = ?", [*params, _text(cycle_id, "cycle_id")]
        with self._guard("reading"):
            cursor = self.conn.execute(
                f"SELECT {_COLUMNS} FROM events WHERE {where} ORDER BY seq", params
            )
            while batch := cursor.fetchmany(1000):
                yield from map(_event, batch)

    # -- verifying

    def verify(self, anchor: Path | None = None) -> VerifyReport:
        """Recompute the chain from the first event; check the anchored head is still in it.

        Returns a VerifyReport naming the first bad seq and why. When all is sound and
        ``anchor`` is given, writes the head there atomically, so a tail cut later shows.
        Works on a read-only ledger (the anchor lives outside the database). Raises
        LedgerCorrupt when SQLite cannot read the file, LedgerError when the anchor cannot be
        written.
        """
        anchored: dict | None = None
        bad: _Bad | None = None
        if anchor is not None:
            try:
                anchored = read_anchor(anchor)
            except LedgerError as exc:
                bad = (None, "anchor unreadable", str(exc))
        checked, last_hash, chain_bad = self._verify_chain()
        bad = chain_bad or bad
        # head_*: the last event verified when the chain holds (what the anchor gets, even if a
        # writer has appended since), else the table's last row.
        top = (checked, last_hash) if checked and not chain_bad else self.head()
        head_seq, head_hash = top if top else (None, None)
        if bad is None and anchored is not None and anchored["seq"] > 0:
            bad = self._check_anchor(anchored, head_seq)
        if bad is None:
            with self._guard("verifying"):
                found = self.conn.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'")
                missing = ", ".join(sorted(set(_TRIGGERS) - {r[0] for r in found}))
            if missing:
                bad = (
                    None,
                    "triggers missing",
                    f"triggers {missing} were dropped outside ops-runner",
                )
        if bad is not None:
            log.error("ledger %s failed verify at seq %s: %s", self.path, bad[0], bad[2])
            return VerifyReport(
                False, checked, bad[0], bad[1], head_seq, head_hash, anchored, bad[2]
            )
        if anchor is not None and head_seq is not None and head_hash is not None:
            if self.preview:  # an in-memory copy anchors nothing
                return VerifyReport(True, checked, None, None, head_seq, head_hash, anchored)
            latest = read_anchor(anchor)  # another verify may have anchored a later head meanwhile
            if latest is None or latest["seq"] <= head_seq:
                write_anchor(anchor, head_seq, head_hash)
            anchored = read_anchor(anchor)
        return VerifyReport(True, checked, None, None, head_seq, head_hash, anchored)

    def _verify_chain(self) -> tuple[int, str, _Bad | None]:
        """Return (events that checked good, the last good hash, the first problem or None).

        Hashes the stored payload text as stored, fetching in big batches: about 2 s per
        million events on one core.
        """
        expected, prev, compute = 1, GENESIS_HASH, compute_event_hash
        with self._guard("verifying"):
            cursor = self.conn.execute(f"SELECT {_COLUMNS} FROM events ORDER BY seq")
            while batch := cursor.fetchmany(10_000):
                for seq, at, kind, key, run_id, cycle_id, payload, prev_hash, digest in batch:
                    if seq != expected:
                        detail = f"seq {expected} is missing (seq {seq} follows {expected - 1})"
                        return expected - 1, prev, (expected, "gap", detail)
                    if prev_hash != prev:
                        detail = f"seq {seq}'s prev_hash is not the hash of seq {seq - 1}"
                        return expected - 1, prev, (seq, "broken link", detail)
                    try:
                        good = digest == compute(
                            prev, seq, at, kind, key, run_id, cycle_id, payload
                        )
                    except (TypeError, AttributeError, UnicodeEncodeError):
                        good = False  # a field of the wrong type, written outside ops-runner
                    if not good:
                        detail = f"seq {seq}'s stored hash does not match its fields: altered"
                        return expected - 1, prev, (seq, "bad hash", detail)
                    prev, expected = digest, expected + 1
        return expected - 1, prev, None

    def require_anchored(self, anchor: Path) -> None:
        """Raise LedgerCorrupt when the head anchored outside the file is no longer in it: the
        tail was cut (an older copy of the file put back, the last events lost). Cheap: one
        row is read. No anchor yet: nothing to compare."""
        anchored = read_anchor(anchor)
        if anchored is None or anchored["seq"] == 0:
            return
        head = self.head()
        bad = self._check_anchor(anchored, head[0] if head else None)
        if bad is not None:
            raise LedgerCorrupt(self.path, f"tail truncated: {bad[2]}")

    def advance_anchor(self, anchor: Path) -> None:
        """Anchor the current head outside the file when it moved past the anchored one (the
        tick does this as it ends; ``verify`` checks the whole chain before anchoring)."""
        if self.preview:
            return
        head = self.head()
        anchored = read_anchor(anchor)
        if head is not None and (anchored is None or anchored["seq"] < head[0]):
            write_anchor(anchor, head[0], head[1])

    def _check_anchor(self, anchored: dict, head_seq: int | None) -> _Bad | None:
        seq, digest, when = anchored["seq"], anchored["hash"], anchored.get("written_at")
        if head_seq is None or head_seq < seq:
            end = head_seq or 0
            detail = f"the anchor ({when}) names seq {seq}, the ledger ends at {end}: tail cut off"
            return end + 1, "tail truncated", detail
        with self._guard("verifying"):
            row = self.conn.execute("SELECT hash FROM events WHERE seq = ?", (seq,)).fetchone()
        if row is None or row[0] != digest:
            detail = f"seq {seq} no longer has the hash anchored {when}: cut and regrown"
            return seq, "tail truncated", detail
        return None


def open_ledger(cfg: Config, create: bool = True, readonly: bool = False, **options: Any) -> Ledger:
    """Return the workbook's ledger, ``paths.ledger``/ledger.sqlite; see ``Ledger.open``.

    For a preview config (a notebook run by hand) a writable open returns the preview copy
    instead (``open_preview``): the notebook runs as it would, and nothing reaches the file.
    """
    path = cfg.path("ledger") / LEDGER_FILE
    at = getattr(cfg, "simulated_now", None)  # a Config, or anything with a path()
    if at is not None:  # a simulated clock: its instant, unless the caller gave its own
        options = {"clock": lambda: at, **options, "simulated": True}
    if getattr(cfg, "preview", False) and not readonly:
        return open_preview(path, options.get("clock"), options.get("simulated", False))
    return Ledger.open(path, create=create, readonly=readonly, **options)


# In-memory copies of ledgers taken by previews in this process: ledger path -> the connection
# that keeps the shared in-memory database alive while the process runs.
_PREVIEWS: dict[str, sqlite3.Connection] = {}


def open_preview(
    path: Path, clock: Callable[[], datetime] | None = None, simulated: bool = False
) -> Ledger:
    """Return a writable ledger over an in-memory copy of the file at ``path`` (empty when
    there is none), the same copy for every open in this process: what a preview appends is
    read back by its later steps and vanishes with the process. The file is only read."""
    key = str(Path(path).resolve())
    name = compute_sha256(key)[:16]
    uri = f"file:opsr-preview-{name}?mode=memory&cache=shared"
    if key not in _PREVIEWS:
        keeper = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
        if Path(path).is_file():
            source = sqlite3.connect(f"{Path(path).resolve().as_uri()}?mode=ro", uri=True)
            try:
                source.backup(keeper)
            except sqlite3.Error as exc:
                raise LedgerCorrupt(path, f"{exc} (while copying it for a preview)") from exc
            finally:
                source.close()
        else:
            keeper.executescript(_SCHEMA.replace("PRAGMA journal_mode = WAL;", ""))
        _PREVIEWS[key] = keeper
    conn = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
    ledger = Ledger(Path(path), conn, False, clock or (lambda: datetime.now(UTC)), simulated)
    ledger.preview = True
    return ledger
