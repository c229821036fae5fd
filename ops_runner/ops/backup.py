"""Backups: one verified archive of the ledger and its evidence, checked again before any restore.

An archive is a gzip-compressed tar, ``<paths.backups>/ops-runner-backup-<UTC stamp>-<seq>.tar.gz``
(``seq`` the ledger head it holds, zero-padded so names sort), with ``MANIFEST.json`` first and
every other member listed in it with its size and SHA-256. Members use logical roots, so a
restore maps them onto the restored config's paths:

- ``config.yaml``: the workbook's config (never secrets: config.yaml refuses them);
- ``ledger/ledger.sqlite``: a copy through SQLite's online backup API (one step, so one
  consistent snapshot while ticks append), in rollback-journal mode: one self-contained file;
- ``ledger/runs/**``: the executed notebooks; ``ledger/snapshots/**``: the decision snapshots;
- ``data/<source>/<SYMBOL>.manifest.json``: the price-store manifests. The Parquet bars are not
  copied: they are re-importable from their recorded source file, the manifests pin their
  SHA-256, and the decision snapshots already hold the exact bars every decision used;
- ``anchor.json``: the ledger anchor (the head witnessed outside the database), when there is one.

The secrets file and the environment are never read into an archive.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gzip
import hashlib
import io
import json
import logging
import os
import re
import shutil
import tarfile
import tempfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any

from ops_runner.core.clock import format_instant, format_stamp
from ops_runner.core.errors import OpsError
from ops_runner.core.events import EventKind
from ops_runner.core.faults import inject
from ops_runner.core.files import open_atomic
from ops_runner.core.hashing import compute_sha256, read_size_and_sha256
from ops_runner.ledger.store import (
    _OPEN_HERE,
    LEDGER_FILE,
    Ledger,
    LedgerError,
    open_ledger,
    read_anchor,
)
from ops_runner.market.integrity import check_prices, check_registered
from ops_runner.market.prices import open_store
from ops_runner.ops.ticklock import hold_tick_lock
from ops_runner.workbook.config import CONFIG_NAME, Config, load_config_text

log = logging.getLogger(__name__)

FORMAT = "ops-runner-backup"
FORMAT_VERSION = 1
MANIFEST = "MANIFEST.json"
LEDGER_MEMBER = f"ledger/{LEDGER_FILE}"
ANCHOR_MEMBER = "anchor.json"
ARCHIVE_PATTERN = re.compile(r"ops-runner-backup-(\d{8}T\d{6}Z)-(\d{6,})\.tar\.gz")
_LEDGER_FOLDERS = ("runs", "snapshots")  # what of paths.ledger is evidence, besides the database
_LEDGER_SIDE = ("-wal", "-shm", "-journal")  # never left beside a restored database
_SECRET_NAME = re.compile(r"KEY|SECRET|TOKEN|PASS|CREDENTIAL", re.IGNORECASE)
_CHUNK = 1 << 20


# -- errors and results -------------------------------------------------------------------------


class BackupError(OpsError):
    """A backup or restore could not be done; nothing live was changed unless it says so."""


class ArchiveInvalid(BackupError):
    """The archive does not verify. Fields: ``path`` and ``reasons`` (one line each)."""

    exit_code = 3

    def __init__(self, path: Path, reasons: list[str]) -> None:
        more = f" (and {len(reasons) - 1} more)" if len(reasons) > 1 else ""
        super().__init__(
            f"backup {path} refused: {reasons[0]}{more}; take another archive or a fresh backup"
        )
        self.path, self.reasons = path, reasons


class RestoreRefused(BackupError):
    """The restore target is live (or busy) and ``force`` was not given; nothing was changed."""

    exit_code = 2


@dataclass(frozen=True)
class BackupResult:
    """What create_backup wrote: the archive, its SHA-256s, the ledger head it holds."""

    archive: Path
    sha256: str
    manifest_sha256: str
    ledger_seq: int
    ledger_head: str | None
    files: int
    bytes: int
    deleted: tuple[Path, ...] = ()


@dataclass(frozen=True)
class ArchiveReport:
    """What verify_archive found; ``reasons`` is empty when ``ok``."""

    path: Path
    reasons: tuple[str, ...]
    manifest: dict | None = None
    manifest_sha256: str | None = None
    head_seq: int | None = None
    head_hash: str | None = None

    @property
    def ok(self) -> bool:
        return not self.reasons


@dataclass(frozen=True)
class RestoreResult:
    """What restore_backup did: where, which head, what it moved aside, what is left to do."""

    target: Path
    archive: Path
    head_seq: int
    head_hash: str | None
    files: int
    moved_aside: Path | None
    notes: tuple[str, ...] = field(default_factory=tuple)


# -- pure helpers -------------------------------------------------------------------------------


def compute_archive_name(created_at: datetime, head_seq: int) -> str:
    """Return the archive's file name for a UTC instant and a ledger head seq."""
    return f"ops-runner-backup-{format_stamp(created_at)}-{head_seq:06d}.tar.gz"


def compute_expired(names: list[str], keep: int) -> list[str]:
    """Return the archive names past the newest ``keep`` (by stamp, then seq); others ignored."""
    ours = [(m.group(1), int(m.group(2)), n) for n in names if (m := ARCHIVE_PATTERN.fullmatch(n))]
    ours.sort(reverse=True)
    return [name for _, _, name in ours[keep:]]


def check_member_name(name: str) -> str | None:
    """Return why ``name`` cannot be a member of a backup, or None when it can."""
    path = PurePosixPath(name)
    if path.is_absolute() or ".." in path.parts or name != path.as_posix():
        return f"{name}: not a plain relative path"
    if name in (MANIFEST, CONFIG_NAME, ANCHOR_MEMBER, LEDGER_MEMBER):
        return None
    if path.parts[0] == "ledger" and len(path.parts) > 2 and path.parts[1] in _LEDGER_FOLDERS:
        return None
    if path.parts[0] == "data" and len(path.parts) == 3 and name.endswith(".manifest.json"):
        return None
    return f"{name}: not a path a backup holds"


def check_manifest(manifest: Any, found: dict[str, tuple[int, str]]) -> list[str]:
    """Return one line per disagreement between a manifest and the members found (size, sha)."""
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        return [f"{MANIFEST}: not an ops-runner backup manifest"]
    if manifest.get("version") != FORMAT_VERSION:
        return [f"{MANIFEST}: format version {manifest.get('version')!r}, this reads 1 only"]
    files = manifest.get("files")
    ledger = manifest.get("ledger")
    if not isinstance(files, list) or not isinstance(ledger, dict):
        return [f"{MANIFEST}: no files list or ledger head"]
    problems, listed = [], set()
    for entry in files:
        name = entry.get("path") if isinstance(entry, dict) else None
        if not isinstance(name, str) or name in listed:
            problems.append(f"{MANIFEST}: a bad or repeated entry {entry!r}")
            continue
        listed.add(name)
        if name not in found:
            problems.append(f"{name}: missing from the archive")
        elif found[name][0] != entry.get("size"):
            problems.append(f"{name}: size {found[name][0]}, the manifest says {entry.get('size')}")
        elif found[name][1] != entry.get("sha256"):
            problems.append(f"{name}: sha256 mismatch")
    problems += [f"{name}: not in the manifest" for name in sorted(set(found) - listed)]
    if LEDGER_MEMBER not in listed:
        problems.append(f"{LEDGER_MEMBER}: not in the manifest")
    if CONFIG_NAME not in listed:
        problems.append(f"{CONFIG_NAME}: not in the manifest")
    return problems


def _relative(path: Path, root: Path) -> str:
    """Return ``path`` relative to ``root`` when inside it, else the absolute path."""
    try:
        return path.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return str(path)


# -- creating -----------------------------------------------------------------------------------


def _secrets_path(cfg: Config) -> Path | None:
    value = cfg.secrets.file
    path = Path(value).expanduser() if value else None
    return None if path is None else (path if path.is_absolute() else cfg.workbook / path).resolve()


def _secret_values(cfg: Config) -> dict[str, str]:
    """Return secret name -> value from the environment and the secrets file, to keep out."""
    found = {
        name: value
        for name, value in os.environ.items()
        if name.startswith("OPS_RUNNER_") and _SECRET_NAME.search(name) and len(value) >= 6
    }
    path = _secrets_path(cfg)
    if path is not None:
        with contextlib.suppress(OSError, UnicodeDecodeError):
            for line in path.read_text(encoding="utf-8").splitlines():
                name, sep, value = line.partition("=")
                if sep and len(value.strip()) >= 6:
                    found[name.strip()] = value.strip()
    return found


def _copy_ledger(cfg: Config, folder: Path) -> tuple[Path, int, str | None, bytes | None]:
    """Copy the live ledger into ``folder``; return (copy, head seq, head hash, anchor bytes).

    Raises BackupError when the copy does not verify (chain, or the anchored head).
    """
    import sqlite3

    anchor_path = cfg.path("anchor")
    try:
        read_anchor(anchor_path)  # a bad anchor is a broken ledger: refuse now, not at restore
        anchor = anchor_path.read_bytes() if anchor_path.is_file() else None
    except LedgerError as exc:
        raise BackupError(f"backup refused: {exc}") from exc
    copy = folder / LEDGER_FILE
    # The anchor is read first: it only moves forward, so it names a head the copy holds.
    with open_ledger(cfg, create=False, readonly=True) as live:
        target = sqlite3.connect(copy, isolation_level=None)
        try:
            live.conn.backup(target)  # pages=-1: one step, one read transaction, one snapshot
            target.execute("PRAGMA journal_mode = DELETE")
        finally:
            target.close()
    check_anchor = folder / "anchor-check.json"
    if anchor is not None:
        check_anchor.write_bytes(anchor)
    try:
        with Ledger.open(copy, create=False, readonly=True) as copied:
            report = copied.verify(check_anchor)
    except LedgerError as exc:
        raise BackupError(f"backup refused: the ledger copy cannot be read: {exc}") from exc
    if not report.ok:
        raise BackupError(
            f"backup refused: the ledger does not verify at seq {report.first_bad_seq} "
            f"({report.reason}: {report.detail}); run `ops-runner ledger verify`"
        )
    return copy, report.head_seq or 0, report.head_hash, anchor


def _evidence(cfg: Config) -> Iterator[tuple[str, Path]]:
    """Yield (member name, file) for the notebooks, snapshots and price-store manifests."""
    for folder in _LEDGER_FOLDERS:
        root = cfg.path("ledger") / folder
        for path in sorted(root.rglob("*")) if root.is_dir() else []:
            if path.is_file() and not path.name.startswith("."):  # dot files: writes in flight
                yield f"ledger/{path.relative_to(cfg.path('ledger')).as_posix()}", path
    data = cfg.path("data")
    for path in sorted(data.glob("*/*.manifest.json")) if data.is_dir() else []:
        yield f"data/{path.relative_to(data).as_posix()}", path


def _add(tar: tarfile.TarFile, name: str, data: bytes | Path, mtime: float) -> None:
    """Add ``data`` (bytes, or a file to stream) as member ``name``, owned by nobody, 0644."""
    info = tarfile.TarInfo(name)
    info.mtime, info.mode = int(mtime), 0o644
    info.size = data.stat().st_size if isinstance(data, Path) else len(data)
    with data.open("rb") if isinstance(data, Path) else io.BytesIO(data) as handle:
        tar.addfile(info, handle)


def _require_matching(cfg: Config, reason: str, force: bool) -> str:
    """Return the backup's reason; raise BackupError when registered files or the price store
    do not match the ledger, naming them, unless ``force`` (then the reason says so)."""

    with open_ledger(cfg, create=False, readonly=True) as ledger:
        problems = check_registered(cfg, ledger.events())
        problems += check_prices(cfg, ledger, adopt=False)[0]
    if problems and not force:
        more = "".join(f"; {p}" for p in problems[1:5]) + (
            f"; +{len(problems) - 5} more" if len(problems) > 5 else "")  # fmt: skip
        raise BackupError(
            f"backup refused: {len(problems)} file(s) do not match the ledger: {problems[0]}"
            f"{more}; restore them from an earlier backup, or archive them as they are with "
            "`ops-runner backup --force` (the reason records it)"
        )
    if problems:
        return f"{reason}; forced with {len(problems)} file(s) not matching the ledger"
    return reason


def create_backup(
    cfg: Config, now: datetime | None = None, reason: str = "on demand", force: bool = False
) -> BackupResult:
    """Write one verified archive of the workbook, record it in the ledger, apply retention.

    A registered notebook or decision snapshot that is missing or changed, or a price store
    that no longer matches what the ledger recorded, refuses the backup, naming each, unless
    ``force`` (then the archive keeps the files as they are and its reason says so).
    Returns the BackupResult. Raises BackupError (the ledger or its anchor does not verify, a
    file does not match the ledger, a secret value shows in a file, the archive cannot be
    written) or LedgerError; on error no archive is left behind and nothing is recorded.
    """
    created = (now or datetime.now(UTC)).astimezone(UTC)
    folder = cfg.path("backups")
    folder.mkdir(parents=True, exist_ok=True)
    secrets = _secret_values(cfg)
    secrets_file = _secrets_path(cfg)
    with tempfile.TemporaryDirectory(prefix=".backup-", dir=folder) as scratch:
        copy, seq, head, anchor = _copy_ledger(cfg, Path(scratch))
        # Files are read once, after the ledger copy: every notebook the copy registers is
        # already in its final form, and what is hashed is exactly what is archived.
        contents: dict[str, bytes] = {CONFIG_NAME: (cfg.workbook / CONFIG_NAME).read_bytes()}
        for name, path in _evidence(cfg):
            if path.resolve() == secrets_file:
                continue
            contents[name] = path.read_bytes()
        if anchor is not None:
            contents[ANCHOR_MEMBER] = anchor
        for name, data in contents.items():
            for secret, value in secrets.items():
                if value.encode() in data:
                    raise BackupError(
                        f"backup refused: {name} holds the value of secret {secret}; remove it "
                        "from that file (secrets never enter an artifact), then back up again"
                    )
        reason = _require_matching(cfg, reason, force)
        size, sha = read_size_and_sha256(copy)
        entries = [{"path": LEDGER_MEMBER, "size": size, "sha256": sha}]
        entries += [
            {"path": n, "size": len(d), "sha256": compute_sha256(d)} for n, d in contents.items()
        ]
        manifest = {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "created_at": format_instant(created),
            "reason": reason,
            "workbook_name": cfg.workbook_name,
            "config_hash": cfg.hash,
            "ledger": {"path": LEDGER_MEMBER, "head_seq": seq, "head_hash": head},
            "files": sorted(entries, key=lambda e: str(e["path"])),
        }
        manifest_bytes = (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode()
        archive = folder / compute_archive_name(created, seq)
        if archive.exists():
            raise BackupError(f"backup refused: {archive} already exists; try again in a second")
        try:
            with open_atomic(archive) as handle, tarfile.open(fileobj=handle, mode="w:gz") as tar:
                _add(tar, MANIFEST, manifest_bytes, created.timestamp())
                _add(tar, LEDGER_MEMBER, copy, created.timestamp())
                for name in sorted(contents):
                    _add(tar, name, contents[name], created.timestamp())
        except OSError as exc:
            raise BackupError(f"cannot write the backup {archive}: {exc.strerror or exc}") from exc
    inject("backup:after_archive")
    archive_size, archive_sha = read_size_and_sha256(archive)
    result = BackupResult(
        archive, archive_sha, compute_sha256(manifest_bytes), seq, head, len(entries), archive_size
    )
    _record(cfg, result, reason, now)
    deleted = apply_retention(folder, cfg.backup.keep)
    log.info(
        "backup %s: ledger seq %s, %s files, %s bytes", archive, seq, len(entries), archive_size
    )
    return dataclasses.replace(result, deleted=tuple(deleted))


def _record(cfg: Config, result: BackupResult, reason: str, now: datetime | None) -> None:
    payload = {
        "archive": _relative(result.archive, cfg.workbook),
        "sha256": result.sha256,
        "manifest_sha256": result.manifest_sha256,
        "ledger_seq": result.ledger_seq,
        "ledger_head": result.ledger_head,
        "files": result.files,
        "bytes": result.bytes,
        "reason": reason,
    }
    options: dict[str, Any] = {} if now is None else {"clock": lambda: now}
    with open_ledger(cfg, create=False, **options) as ledger:
        kind = EventKind.BACKUP_RECORDED
        ledger.append(kind, f"{kind}:{result.archive.name}", payload)


def apply_retention(folder: Path, keep: int) -> list[Path]:
    """Delete the archives past the newest ``keep`` in ``folder``; return what was deleted."""
    names = [p.name for p in folder.iterdir() if p.is_file()] if folder.is_dir() else []
    deleted = []
    for name in compute_expired(names, keep):
        with contextlib.suppress(FileNotFoundError):
            (folder / name).unlink()
            deleted.append(folder / name)
    return deleted


# -- verifying ----------------------------------------------------------------------------------


def _read_members(path: Path, scratch: Path) -> tuple[dict[str, tuple[int, str]], dict[str, Path]]:
    """Return (name -> (size, sha256), name -> extracted file) for the archive's members.

    Every member is written under ``scratch`` (the restore moves them from there). Raises
    ValueError for a member that is not a regular file at an allowed path, or repeated.
    """
    found: dict[str, tuple[int, str]] = {}
    files: dict[str, Path] = {}
    with tarfile.open(path, mode="r:gz") as tar:
        for info in tar:
            problem = check_member_name(info.name)
            if problem is None and not info.isfile():
                problem = f"{info.name}: not a regular file"
            if problem is None and info.name in found:
                problem = f"{info.name}: appears twice"
            if problem:
                raise ValueError(problem)
            source = tar.extractfile(info)
            target = scratch / "members" / info.name
            target.parent.mkdir(parents=True, exist_ok=True)
            digest, size = hashlib.sha256(), 0
            with source as reader, target.open("wb") as writer:  # type: ignore[union-attr]
                while chunk := reader.read(_CHUNK):
                    digest.update(chunk)
                    writer.write(chunk)
                    size += len(chunk)
            found[info.name], files[info.name] = (size, digest.hexdigest()), target
    return found, files


def _check_ledger_copy(files: dict[str, Path], manifest: dict, scratch: Path) -> list[str]:
    head = manifest["ledger"]
    anchor = scratch / "anchor-check.json"
    if ANCHOR_MEMBER in files:
        shutil.copyfile(files[ANCHOR_MEMBER], anchor)
    try:
        with Ledger.open(files[LEDGER_MEMBER], create=False, readonly=True) as copied:
            report = copied.verify(anchor)
    except LedgerError as exc:  # a corrupt copy: its problem, without the live ledger's advice
        return [f"{LEDGER_MEMBER}: {getattr(exc, 'problem', None) or ' '.join(str(exc).split())}"]
    if not report.ok:
        return [
            f"{LEDGER_MEMBER}: the chain does not verify at seq {report.first_bad_seq}: "
            f"{report.reason} ({report.detail})"
        ]
    if (report.head_seq or 0, report.head_hash) != (head.get("head_seq"), head.get("head_hash")):
        return [
            f"{LEDGER_MEMBER}: head is seq {report.head_seq}, the manifest says "
            f"{head.get('head_seq')}"
        ]
    return []


def _verify_into(path: Path, scratch: Path) -> tuple[ArchiveReport, dict[str, Path]]:
    path = Path(path)

    def fail(reason: str) -> tuple[ArchiveReport, dict[str, Path]]:
        return ArchiveReport(path, (reason,)), {}

    if not path.is_file():
        return fail(f"{path}: no such archive file")
    try:  # the whole gzip stream first: its length and CRC show truncation and flipped bytes
        with gzip.open(path, "rb") as stream:
            while stream.read(_CHUNK):
                pass
    except EOFError as exc:
        return fail(f"archive truncated: {exc}")
    except (OSError, zlib.error) as exc:
        return fail(f"archive corrupt: {exc}")
    try:
        found, files = _read_members(path, scratch)
    except ValueError as exc:
        return fail(f"archive refused: {exc}")
    except (tarfile.TarError, EOFError, OSError, zlib.error) as exc:
        return fail(f"archive corrupt: not a readable tar ({exc})")
    if MANIFEST not in found:
        return fail(f"{MANIFEST} missing")
    manifest_bytes = files[MANIFEST].read_bytes()
    try:
        manifest = json.loads(manifest_bytes)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        return fail(f"{MANIFEST}: not JSON ({exc})")
    del found[MANIFEST]
    reasons = check_manifest(manifest, found)
    if not reasons:
        reasons = _check_ledger_copy(files, manifest, scratch)
    head = manifest.get("ledger", {}) if isinstance(manifest, dict) else {}
    report = ArchiveReport(
        path,
        tuple(reasons),
        manifest if isinstance(manifest, dict) else None,
        compute_sha256(manifest_bytes),
        head.get("head_seq") if isinstance(head, dict) else None,
        head.get("head_hash") if isinstance(head, dict) else None,
    )
    return report, files


def verify_archive(path: Path) -> ArchiveReport:
    """Return what a check of the archive found: manifest, every file's size and SHA-256, no
    unlisted file, and the ledger copy's chain and head (checked in a temporary folder).

    Never raises for a bad archive: the reasons say what is wrong, one line each.
    """
    with tempfile.TemporaryDirectory(prefix="ops-runner-verify-") as scratch:
        report, _ = _verify_into(Path(path), Path(scratch))
    if not report.ok:
        log.warning("backup %s does not verify: %s", path, "; ".join(report.reasons))
    return report


# -- restoring ----------------------------------------------------------------------------------


def _destination(cfg: Config, name: str) -> Path:
    """Return where archive member ``name`` belongs in the workbook of ``cfg``."""
    if name == CONFIG_NAME:
        return cfg.workbook / CONFIG_NAME
    if name == ANCHOR_MEMBER:
        return cfg.path("anchor")
    root, _, rest = name.partition("/")
    return cfg.path("ledger" if root == "ledger" else "data") / rest


def _live_paths(cfg: Config, names: list[str]) -> list[tuple[str, Path]]:
    """Return (name in the aside folder, path) for what a restore would replace, if present."""
    ledger = cfg.path("ledger") / LEDGER_FILE
    candidates = [(CONFIG_NAME, cfg.workbook / CONFIG_NAME), (ANCHOR_MEMBER, cfg.path("anchor"))]
    candidates += [(f"{LEDGER_MEMBER}{side}", Path(f"{ledger}{side}")) for side in _LEDGER_SIDE]
    candidates.append((LEDGER_MEMBER, ledger))
    candidates += [(f"ledger/{f}", cfg.path("ledger") / f) for f in _LEDGER_FOLDERS]
    candidates += [(n, _destination(cfg, n)) for n in names if n.startswith("data/")]
    return [(name, path) for name, path in candidates if path.exists()]


def restore_backup(archive: Path, target_workbook: Path, force: bool = False) -> RestoreResult:
    """Restore ``archive`` into ``target_workbook`` and verify the result; return what was done.

    Raises ArchiveInvalid (the archive does not verify: nothing was changed), RestoreRefused
    (the target holds a workbook and ``force`` is off, or a tick holds its lock) or BackupError
    (the restored ledger or notebooks do not verify: the files stay for inspection, and what
    was there before stays in ``.before-restore-<stamp>/``).
    """
    archive, target = Path(archive).resolve(), Path(target_workbook).resolve()
    target.mkdir(parents=True, exist_ok=True)
    stamp = f"{datetime.now(UTC):%Y%m%dT%H%M%S%fZ}"
    with tempfile.TemporaryDirectory(prefix=f".restoring-{stamp}-", dir=target) as scratch:
        report, files = _verify_into(archive, Path(scratch))
        if not report.ok:
            raise ArchiveInvalid(archive, list(report.reasons))
        config_text = files[CONFIG_NAME].read_text(encoding="utf-8")
        cfg = load_config_text(config_text, target, target / CONFIG_NAME)
        names = sorted(n for n in files if n != MANIFEST)
        live = _live_paths(cfg, names)
        ledger_path = (cfg.path("ledger") / LEDGER_FILE).resolve()

        if _OPEN_HERE.get(str(ledger_path)):
            raise RestoreRefused(
                f"restore refused: this process has {ledger_path} open; close it first"
            )
        if live and not force:
            shown = ", ".join(_relative(p, target) for _, p in live[:3])
            raise RestoreRefused(
                f"restore refused: {target} holds a workbook ({shown}); nothing was changed. "
                "Pass --force to move it aside into .before-restore-<stamp>/ and restore"
            )
        aside = target / f".before-restore-{stamp}"
        with _tick_lock(cfg, target):
            for name, path in live:
                (aside / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.move(path, aside / name)
            for name in names:
                destination = _destination(cfg, name)
                destination.parent.mkdir(parents=True, exist_ok=True)
                shutil.move(files[name], destination)
            head_seq, head_hash = _verify_restored(cfg, report)
    notes = [f"the workbook that was there is kept in {aside}"] if live else []
    store = open_store(cfg)
    missing = sum(
        1 for s in store.sources() for y in store.symbols(s) if not store.bars_path(s, y).is_file()
    )
    if missing:
        notes.append(
            f"{missing} price files are not in backups (by design): re-import them from the "
            "source files their manifests name, then run data QA"
        )
    log.info("restored %s into %s at ledger seq %s", archive, target, head_seq)
    moved = aside if live else None
    return RestoreResult(target, archive, head_seq, head_hash, len(names), moved, tuple(notes))


@contextlib.contextmanager
def _tick_lock(cfg: Config, target: Path) -> Iterator[None]:
    with hold_tick_lock(cfg) as held:
        if not held:
            raise RestoreRefused(
                f"restore refused: a tick is running in {target}; stop the scheduler and retry"
            )
        yield


def _verify_restored(cfg: Config, report: ArchiveReport) -> tuple[int, str | None]:
    """Open the restored ledger read-write (back to WAL), verify it, anchor it, check artifacts."""

    with open_ledger(cfg, create=False) as ledger:
        verified = ledger.verify(cfg.path("anchor"))
        if not verified.ok:
            raise BackupError(
                f"restore failed: the restored ledger does not verify at seq "
                f"{verified.first_bad_seq} ({verified.reason}); restore another archive"
            )
        problems = check_registered(cfg, ledger.events())
    if (verified.head_seq or 0, verified.head_hash) != (report.head_seq, report.head_hash):
        raise BackupError(
            f"restore failed: the restored ledger ends at seq {verified.head_seq}, the archive "
            f"at {report.head_seq}; restore again"
        )
    if problems:
        raise BackupError(f"restore failed: {problems[0]} ({len(problems)} in all)")
    return verified.head_seq or 0, verified.head_hash
