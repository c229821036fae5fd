"""What the ledger vouches for, checked against the files it names.

The ledger registers each executed notebook (ArtifactRecorded: path, SHA-256), each decision's
snapshot of its input bars (DecisionRecorded.snapshot: path, SHA-256) and, with
PricesRecorded, the price store's manifests as ops-runner wrote them (each manifest names its
file's SHA-256, so a manifest pinned here pins its prices). A file changed outside ops-runner no
longer matches: ``ledger verify`` checks every one, ``backup`` refuses to archive a workbook
that does not match (unless told to), and the tick's daily ``integrity`` check looks at what was
registered since its last pass and at the whole price store, which stays cheap when idle.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ops_runner.core.events import EventKind
from ops_runner.core.hashing import compute_sha256, read_sha256
from ops_runner.ledger import Ledger, projections
from ops_runner.market import qa
from ops_runner.market.calendar import open_calendar
from ops_runner.market.prices import open_store
from ops_runner.workbook.config import Config

log = logging.getLogger(__name__)

CHECK = "integrity"


def _file_problem(path: Path, sha256: str, what: str, seq: int) -> str | None:
    if not path.is_file():
        return f"event {seq}: {what} is missing"
    if read_sha256(path) != sha256:
        return f"event {seq}: {what} changed since it was recorded"
    return None


def check_registered(cfg: Config, events: Iterable[Any]) -> list[str]:
    """Return one line per executed notebook or decision snapshot among ``events`` that is
    missing or no longer has the SHA-256 the ledger recorded."""
    problems = []
    ledger_folder = cfg.path("ledger")
    for event in events:
        if event.kind == EventKind.ARTIFACT_RECORDED:
            relative = str(event.payload["path"])
            path = Path(relative) if Path(relative).is_absolute() else cfg.workbook / relative
            found = _file_problem(path, str(event.payload["sha256"]), f"artifact {relative}",
                                  event.seq)  # fmt: skip
        elif event.kind == EventKind.DECISION_RECORDED and event.payload.get("snapshot"):
            snap = event.payload["snapshot"]
            found = _file_problem(ledger_folder / str(snap["path"]), str(snap["sha256"]),
                                  f"decision snapshot {snap['path']}", event.seq)  # fmt: skip
        else:
            continue
        if found:
            problems.append(found)
    return problems


# --- the price store ---------------------------------------------------------------------------


def compute_manifest_digests(cfg: Config, source: str) -> dict[str, str]:
    """Return symbol -> SHA-256 of its manifest file, for every symbol ``source`` stores."""
    store = open_store(cfg)
    return {
        symbol: read_sha256(store.manifest_path(source, symbol)) for symbol in store.symbols(source)
    }


def compute_data_fingerprint(cfg: Config) -> str:
    """Return a digest of the primary's and the secondary's manifests: it changes whenever
    the data a QA run or a decision reads does."""
    digest = hashlib.sha256()
    for source in cfg.data.sources:
        for symbol, sha in sorted(compute_manifest_digests(cfg, source).items()) if source else []:
            digest.update(f"{source}/{symbol}:{sha}\n".encode())
    return digest.hexdigest()[:16]


def _sources(cfg: Config) -> list[str]:
    stored = set(open_store(cfg).sources())
    return [s for s in cfg.data.sources if s and s in stored]


def read_recorded_prices(ledger: Ledger) -> dict[str, dict[str, str]]:
    """Return source -> symbol -> manifest SHA-256 as the PricesRecorded events left them."""
    recorded: dict[str, dict[str, str]] = {}
    for event in ledger.events(kind=str(EventKind.PRICES_RECORDED)):
        recorded.setdefault(str(event.payload["source"]), {}).update(event.payload["manifests"])
    return recorded


def record_prices(
    cfg: Config, ledger: Ledger, source: str, reason: str, run_id: str | None = None
) -> bool:
    """Record the manifests ``source`` holds now (PricesRecorded), once per content; returns
    True when something new was recorded. Every write to the store by ops-runner calls it."""
    manifests = compute_manifest_digests(cfg, source)
    known = read_recorded_prices(ledger).get(source, {})
    if manifests and all(known.get(symbol) == d for symbol, d in manifests.items()):
        return False
    digest = compute_sha256(repr(sorted(manifests.items())))[:16]
    key = f"PricesRecorded:{source}:{digest}"
    if ledger.get(key) is not None:
        return False
    payload = {"source": source, "reason": reason, "manifests": manifests}
    ledger.append(str(EventKind.PRICES_RECORDED), key, payload, run_id=run_id)
    return True


def check_prices(cfg: Config, ledger: Ledger, adopt: bool = True) -> tuple[list[str], list[str]]:
    """Return (problems, adopted sources) for the configured sources in the store.

    Each stored file must match its manifest, and each manifest the one ops-runner recorded:
    a price file edited together with its manifest shows here. A source the ledger has never
    recorded (a workbook from before this check) is recorded as it is now, once, and said so;
    with ``adopt`` False (a read-only ledger) it is only named.
    """
    problems: list[str] = []
    adopted: list[str] = []
    recorded = read_recorded_prices(ledger)
    store = open_store(cfg)
    for source in _sources(cfg):
        problems += [f"{source}/{s}: {what}" for s, what in store.check_provenance(source)]
        if source not in recorded:
            if adopt:
                record_prices(cfg, ledger, source, "adopted at the first integrity check")
            adopted.append(source)
            continue
        known = recorded[source]
        for symbol, digest in compute_manifest_digests(cfg, source).items():
            if symbol not in known:
                problems.append(f"{source}/{symbol}: prices ops-runner never recorded writing")
            elif known[symbol] != digest:
                problems.append(
                    f"{source}/{symbol}: the manifest changed outside ops-runner (prices and "
                    "manifest edited together)"
                )
    return problems, adopted


# --- the daily check ---------------------------------------------------------------------------


def compute_integrity(cfg: Config, ledger: Ledger) -> tuple[bool, str, list[str]]:
    """Return (passed, detail, evidence): what was registered since the last passed integrity
    check (notebooks, snapshots) and the whole price store against the ledger."""
    last = None
    for event in ledger.events(kind=str(EventKind.CHECK_RECORDED)):
        if event.payload.get("check") == CHECK and event.payload.get("passed"):
            last = event
    since = last.seq if last is not None else 0
    kinds = (EventKind.ARTIFACT_RECORDED, EventKind.DECISION_RECORDED)
    fresh = sorted((e for k in kinds for e in ledger.events(kind=str(k), after_seq=since)),
                   key=lambda e: e.seq)  # fmt: skip
    problems = check_registered(cfg, fresh)
    price_problems, adopted = check_prices(cfg, ledger)
    problems += price_problems
    if problems:
        more = f" (+{len(problems) - 1} more)" if len(problems) > 1 else ""
        return False, f"{problems[0]}{more}", problems[:20]
    detail = f"{len(fresh)} registered file(s) since event {since} and the price store verify"
    if adopted:
        detail += f"; price manifests of {', '.join(adopted)} recorded as found"
    return True, detail, []


def check_integrity(cfg: Config, ledger: Ledger, now: datetime | None = None) -> list[str]:
    """Return the problems that keep SAFE_MODE closed: ledger chain, data QA as of the last
    session closed at ``now`` (default: the real clock), open reconciliation breaks."""

    problems: list[str] = []
    report = ledger.verify(cfg.path("anchor"))
    if not report.ok:
        problems.append(
            f"ledger verify: event {report.first_bad_seq}: {report.detail or report.reason}"
        )
    as_of = open_calendar(cfg).last_closed_session(now or datetime.now(UTC))
    qa_report = qa.run_qa(cfg, as_of)
    if qa_report.blocking:
        problems.append(f"data QA as of {as_of}: {qa_report.summary()}")
    breaks = [
        i
        for i in projections.compute_open_incidents(ledger.events())
        if i.get("category") == "reconciliation"
    ]
    if breaks:
        problems.append(f"{len(breaks)} reconciliation break(s) still open")
    return problems
