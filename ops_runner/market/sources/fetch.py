"""Incremental fetches from a data vendor into the price store, each version with its raw answer.

For each symbol only what the store lacks is asked for: from ``overlap_sessions`` stored sessions
back (to see revisions) through ``end``, or everything from ``start`` for a symbol not stored yet
(a stored symbol is only extended forward).
Fetched bars are merged into the stored ones; a stored bar the vendor now reports differently is
a revision: the fetched bar replaces it, the earlier version stays under ``versions/`` and the
report names the dates. Every symbol is fetched and checked before anything is written, then all
are written as one change (``PriceStore.write_many``) together with each raw answer, kept
gzip-compressed as ``<store>/<source>/raw/<sha256>.json.gz`` where ``sha256`` is that of the
answer's bytes and the manifest's ``source_sha256``. Any failure leaves the store as it was.
"""

from __future__ import annotations

import gzip
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd

from ops_runner.core.errors import CalendarError, DataError
from ops_runner.core.hashing import compute_sha256
from ops_runner.market.bars import BAR_COLUMNS
from ops_runner.market.calendar import MarketCalendar
from ops_runner.market.prices import PriceStore
from ops_runner.market.sources.vendorapi import VendorClient, VendorReply

log = logging.getLogger(__name__)

RAW_FOLDER = "raw"
DEFAULT_OVERLAP_SESSIONS = 5
# A stored bar is revised when a price, the volume or the split differs by more than float noise,
# or the dividend by more than the noise of restoring it from a vendor's adjusted close.
PRICE_RTOL = 1e-9
DIVIDEND_ATOL = 1e-6
_LISTED_REVISIONS = 10  # revised dates spelled out in a manifest's notes


@dataclass(frozen=True)
class MergedBars:
    """Stored bars with fetched ones merged in.

    ``added``: dates that were not stored; ``revised``: stored dates the vendor now reports
    differently, with the columns that changed; ``vanished``: stored dates inside the fetched
    range that the vendor no longer lists (kept as stored).
    """

    bars: pd.DataFrame
    added: list[date]
    revised: dict[date, list[str]]
    vanished: list[date]

    @property
    def changed(self) -> bool:
        """Return whether the merged bars differ from the stored ones."""
        return bool(self.added or self.revised)


@dataclass
class FetchReport:
    """What one fetch did, symbol by symbol; ``requests`` describes each request, keyless."""

    source: str
    vendor: str
    start: date
    end: date
    fetched_at: datetime | None = None
    imported: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    new_sessions: dict[str, int] = field(default_factory=dict)
    revisions: dict[str, list[date]] = field(default_factory=dict)
    vanished: dict[str, list[date]] = field(default_factory=dict)
    requests: list[str] = field(default_factory=list)
    evidence: dict[str, str] = field(default_factory=dict)

    def summary(self) -> str:
        """Return the report on one line, for the CLI and the log."""
        revised = sum(len(dates) for dates in self.revisions.values())
        return (
            f"{self.vendor} -> {self.source} {self.start}..{self.end}: imported "
            f"{len(self.imported)}, updated {len(self.updated)}, unchanged {len(self.unchanged)}, "
            f"{sum(self.new_sessions.values())} new sessions, {revised} revised bars in "
            f"{len(self.revisions)} symbols, {len(self.requests)} requests"
        )


def compute_merged_bars(stored: pd.DataFrame | None, fetched: pd.DataFrame) -> MergedBars:
    """Return ``fetched`` merged into ``stored``: fetched bars win where they differ.

    A stored bar equal to the fetched one (within PRICE_RTOL, DIVIDEND_ATOL) is kept as stored,
    so an unchanged answer leaves the stored bytes as they are.
    """
    if stored is None or stored.empty:
        added = [d.date() for d in fetched.index]
        return MergedBars(fetched.copy(), added, {}, [])
    common = stored.index.intersection(fetched.index)
    old, new = stored.loc[common, BAR_COLUMNS], fetched.loc[common, BAR_COLUMNS]
    differs = pd.DataFrame(False, index=common, columns=BAR_COLUMNS)
    for column in BAR_COLUMNS:
        a, b = old[column].to_numpy(), new[column].to_numpy()
        if column == "dividend":
            differs[column] = np.abs(a - b) > DIVIDEND_ATOL
        else:
            differs[column] = ~np.isclose(a, b, rtol=PRICE_RTOL, atol=0.0)
    rows = differs.any(axis=1)
    revised = {
        day.date(): [c for c in BAR_COLUMNS if differs.at[day, c]]
        for day in common[rows.to_numpy()]
    }
    fresh = fetched.index.difference(stored.index)
    inside = (stored.index >= fetched.index[0]) & (stored.index <= fetched.index[-1])
    vanished = [d.date() for d in stored.index[inside].difference(fetched.index)]
    merged = stored.copy()
    if revised:
        merged.loc[common[rows.to_numpy()]] = fetched.loc[common[rows.to_numpy()]]
    if len(fresh):
        merged = pd.concat([merged, fetched.loc[fresh]]).sort_index(kind="stable")
    return MergedBars(merged, [d.date() for d in fresh], revised, vanished)


def compute_fetch_start(
    stored: pd.DataFrame | None, start: date, overlap_sessions: int = DEFAULT_OVERLAP_SESSIONS
) -> date:
    """Return the first date to ask for: ``start`` for a symbol not stored yet, else
    ``overlap_sessions`` stored sessions back from the last stored one.

    A stored symbol is only extended forward: its first stored date is often the vendor's first
    session (an ETF's inception), after any ``start`` a configuration names.
    """
    if stored is None or stored.empty:
        return start
    if overlap_sessions <= 0:
        return stored.index[-1].date() + timedelta(days=1)
    return stored.index[max(0, len(stored) - overlap_sessions)].date()


def compute_span_sessions(first: date, last: date, calendar: MarketCalendar | None = None) -> int:
    """Return the sessions from ``first`` through ``last``: the calendar's, or weekdays (an
    upper bound) without one or outside its coverage."""
    if first > last:
        return 0
    if calendar is not None:
        try:
            return len(calendar.sessions(first, last))
        except CalendarError:
            pass  # outside the calendar's coverage: weekdays never undercount
    return int(np.busday_count(first, last + timedelta(days=1)))


def raw_answer_path(store: PriceStore, source: str, sha256: str) -> Path:
    """Return where the raw answer with ``sha256`` is kept for ``source``."""
    return store.root / source / RAW_FOLDER / f"{sha256}.json.gz"


def read_raw_answer(store: PriceStore, source: str, sha256: str) -> bytes:
    """Return a kept raw answer's bytes; raise DataError when missing or not matching."""
    path = raw_answer_path(store, source, sha256)
    try:
        data = gzip.decompress(path.read_bytes())
    except (OSError, EOFError) as error:
        raise DataError(
            f"raw answer {path} cannot be read ({error}); fetch the symbol again"
        ) from None
    if compute_sha256(data) != sha256:
        raise DataError(f"raw answer {path} does not match its SHA-256; it was altered")
    return data


def fetch_into_store(
    store: PriceStore,
    source: str,
    client: VendorClient,
    symbols: Sequence[str],
    start: date,
    end: date,
    *,
    overlap_sessions: int = DEFAULT_OVERLAP_SESSIONS,
    calendar: MarketCalendar | None = None,
    now: datetime | None = None,
) -> FetchReport:
    """Fetch what ``store`` lacks of ``symbols`` from ``client`` and store it as ``source``.

    With ``calendar`` and ``now``, ``end`` is cut to the last session closed at ``now`` (a bar
    of a session still trading is never stored). Returns the FetchReport. Raises VendorError
    (or another DataError) on the first failure, before anything is written.
    """
    symbols = [str(s) for s in symbols]
    if not symbols or len(set(symbols)) != len(symbols):
        raise DataError(f"fetch from {client.name}: give distinct symbols, got {symbols}")
    if overlap_sessions < 0:
        raise DataError(f"fetch from {client.name}: overlap_sessions {overlap_sessions} < 0")
    if calendar is not None and now is not None:
        end = min(end, calendar.last_closed_session(now))
    if start > end:
        raise DataError(f"fetch from {client.name}: start {start} is after end {end}")
    latest = max(end, now.date()) if now is not None else end
    report = FetchReport(source, client.name, start, end, fetched_at=now)
    items = {}
    evidence: dict[str, bytes] = {}
    for symbol in symbols:
        stored = _load_stored(store, source, symbol)
        first = compute_fetch_start(stored, start, overlap_sessions)
        if first > end:
            report.unchanged.append(symbol)
            continue
        span = compute_span_sessions(first, latest, calendar)
        reply = client.read_daily(symbol, first, end, span_sessions=span)
        report.requests.extend(reply.requests)
        merged = compute_merged_bars(stored, reply.bars)
        if merged.vanished:
            report.vanished[symbol] = merged.vanished
            log.warning(
                "%s no longer lists %d stored sessions", reply.request, len(merged.vanished)
            )
        if stored is not None and not merged.changed:
            report.unchanged.append(symbol)
            continue
        report.new_sessions[symbol] = len(merged.added)
        if merged.revised:
            report.revisions[symbol] = sorted(merged.revised)
        provenance = {
            "layout": reply.layout,
            "source_file": reply.request,
            "source_sha256": reply.raw_sha256,
            "synthetic": False,
            "notes": _notes(reply, merged, stored is None),
        }
        items[symbol] = (merged.bars, provenance)
        evidence[f"{RAW_FOLDER}/{reply.raw_sha256}.json.gz"] = gzip.compress(reply.raw, mtime=0)
        report.evidence[symbol] = reply.raw_sha256
    if items:
        written = store.write_many(source, items, layout=client.layout, evidence=evidence)
        report.imported = written.imported
        report.updated = written.replaced
        report.unchanged.extend(written.unchanged)
    report.unchanged.sort()
    log.info("fetch %s", report.summary())
    return report


def _load_stored(store: PriceStore, source: str, symbol: str) -> pd.DataFrame | None:
    if not store.manifest_path(source, symbol).is_file():
        return None
    return store.load_bars(source, symbol)


def _notes(reply: VendorReply, merged: MergedBars, new: bool) -> str:
    first, last = reply.bars.index[0].date(), reply.bars.index[-1].date()
    parts = [f"{reply.request}: bars {first}..{last} from this answer"]
    if not new:
        parts.append(
            f"{len(merged.added)} new sessions; bars outside {first}..{last} as in the earlier "
            "versions listed in history"
        )
    if merged.revised:
        listed = ", ".join(
            f"{day} ({'/'.join(columns)})"
            for day, columns in sorted(merged.revised.items())[:_LISTED_REVISIONS]
        )
        more = len(merged.revised) - _LISTED_REVISIONS
        parts.append(f"revised by the vendor: {listed}{f' and {more} more' if more > 0 else ''}")
    if merged.vanished:
        parts.append(f"{len(merged.vanished)} stored sessions no longer listed (kept)")
    parts.append(reply.notes)
    return "; ".join(p for p in parts if p)
