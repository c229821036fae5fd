"""Ledger speed: durable appends per second, verify of a million events, folding ten years back.

Prints a table, then `RESULT [...]` as its last line (see run_all.py). Exits 1 when the
million-event chain does not verify (a wrong figure is no figure).
"""

from __future__ import annotations

import os
import sqlite3
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

from _figures import print_figures

from ops_runner.core.canonical import canonical_json
from ops_runner.core.clock import format_instant
from ops_runner.core.events import EventKind
from ops_runner.ledger.store import GENESIS_HASH, Ledger, compute_event_hash

APPENDS = 3_000
VERIFY_EVENTS = 1_000_000
CYCLES = 120  # ten years of monthly rebalances
SYMBOLS = ("SPY", "VEU", "AGG", "BIL")
START = datetime(2016, 1, 4, 14, 30, tzinfo=UTC)


def fill(i: int) -> dict:
    """A realistic FillRecorded payload."""
    return {
        "exec_id": f"0001f4e6.{i:08x}.01.01",
        "client_ref": f"rebal-{i // 8:06d}-{i % 8}",
        "symbol": SYMBOLS[i % 4],
        "side": "BUY" if i % 2 else "SELL",
        "quantity": 100 + i % 37,
        "price": f"{400 + (i % 977) / 100:.2f}",
        "commission": "1.00",
        "session": "2025-01-02",
    }


def cycle_items(cycle: int) -> list[tuple[str, str, dict]]:
    """About thirty events of one monthly cycle, in the order a cycle records them."""
    c = f"c{cycle:03d}"
    items: list[tuple[str, str, dict]] = []
    for job in ("data_qa", "decision", "execution", "reconciliation"):
        base = {"job": job, "session": "2025-01-02", "cycle": c}
        items.append((EventKind.JOB_STARTED, f"{c}:{job}:start", base))
        items.append(
            (
                EventKind.CHECK_RECORDED,
                f"{c}:{job}:check",
                {"check": job, "passed": True, "detail": "ok", "evidence": [f"{job}.json"]},
            )
        )
        items.append((EventKind.JOB_COMPLETED, f"{c}:{job}:done", {**base, "outputs": [job]}))
        items.append(
            (
                EventKind.ARTIFACT_RECORDED,
                f"{c}:{job}:nb",
                {
                    **base,
                    "path": f"ledger/runs/{c}/{job}.ipynb",
                    "sha256": "ab" * 32,
                    "run_id": f"run-{cycle}",
                    "slot": f"{job}:2025-01-02",
                    "duration_seconds": "12.3",
                    "outcome": "completed",
                    "reason": "",
                },
            )
        )
    weights = {s: "0.25" for s in SYMBOLS}
    items.append(
        (
            EventKind.DECISION_RECORDED,
            f"{c}:decision",
            {
                "weights": weights,
                "scores": {s: f"0.{i}1" for i, s in enumerate(SYMBOLS)},
                "as_of": "2025-01-02",
            },
        )
    )
    for i in range(4):
        order = {"client_ref": f"{c}-{i}", "symbol": SYMBOLS[i], "side": "BUY", "quantity": 10 + i}
        items.append(
            (EventKind.ORDER_INTENT_RECORDED, f"{c}:intent:{i}", {**order, "purpose": "rebalance"})
        )
        items.append(
            (
                EventKind.ORDER_SUBMITTED,
                f"{c}:submit:{i}",
                {**order, "broker_order_id": str(1000 + i)},
            )
        )
        items.append(
            (
                EventKind.ORDER_STATUS_CHANGED,
                f"{c}:status:{i}",
                {"client_ref": order["client_ref"], "status": "Filled", "detail": ""},
            )
        )
        items.append((EventKind.FILL_RECORDED, f"{c}:fill:{i}", fill(cycle * 4 + i)))
    items.append(
        (
            EventKind.EQUITY_MARKED,
            f"{c}:equity",
            {"session": "2025-01-02", "net_liquidation": "102345.67", "source": "sim"},
        )
    )
    return items


def bench_appends(folder: Path) -> float:
    """Return durable appends per second, one transaction each."""
    path = folder / "appends.sqlite"
    with Ledger.open(path) as ledger:
        started = time.perf_counter()
        for i in range(APPENDS):
            ledger.append(EventKind.FILL_RECORDED, f"fill:{i}", fill(i), run_id="bench")
        return APPENDS / (time.perf_counter() - started)


def million_rows() -> Iterator[tuple]:
    """Rows of a 1M-event chain, hashed with the ledger's own function."""
    prev = GENESIS_HASH
    kinds = [str(k) for k in EventKind]
    texts = [canonical_json(fill(i)) for i in range(977)]  # payloads vary; encoding them once
    for seq in range(1, VERIFY_EVENTS + 1):
        at = format_instant(START + timedelta(seconds=seq))
        kind = kinds[seq % len(kinds)]
        key = f"{kind}:{seq}"
        text = texts[seq % 977]
        cycle = f"c{seq // 30:05d}"
        digest = compute_event_hash(prev, seq, at, kind, key, "bench", cycle, text)
        yield (seq, at, kind, key, "bench", cycle, text, prev, digest)
        prev = digest


def build_million(path: Path) -> float:
    """Create the ledger, then bulk-insert 1M chained events in one transaction. Returns s."""
    Ledger.open(path).close()
    started = time.perf_counter()
    conn = sqlite3.connect(path, isolation_level=None)
    # A throwaway file: no journal makes the one big transaction about 2.5x faster.
    conn.execute("PRAGMA journal_mode = OFF")
    conn.execute("BEGIN IMMEDIATE")
    conn.executemany("INSERT INTO events VALUES (?,?,?,?,?,?,?,?,?)", million_rows())
    conn.execute("COMMIT")
    conn.execute("PRAGMA journal_mode = WAL")
    conn.close()
    return time.perf_counter() - started


def bench_fold(folder: Path) -> tuple[float, float, int]:
    """Return (s to read all events and fold every projection, ms to open, events)."""
    path = folder / "fold.sqlite"
    with Ledger.open(path) as ledger:
        for cycle in range(CYCLES):
            ledger.append_many(cycle_items(cycle), run_id=f"run-{cycle}", cycle_id=f"c{cycle:03d}")
    started = time.perf_counter()
    ledger = Ledger.open(path, readonly=True)
    opened = (time.perf_counter() - started) * 1000
    from ops_runner.ledger import projections

    started = time.perf_counter()
    events = list(ledger.events())  # one read, then every projection the status page folds
    projections.compute_state(events)
    projections.compute_positions(events)
    projections.compute_cash(events)
    projections.compute_orders(events)
    projections.compute_open_incidents(events)
    projections.compute_equity(events)
    projections.compute_last_jobs(events)
    took = time.perf_counter() - started
    ledger.close()
    return took, opened, len(events)


def main() -> int:
    rows: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="bench-ledger-") as tmp:
        folder = Path(tmp)
        rate = bench_appends(folder)
        rows.append(
            {
                "metric": "durable appends (1 txn each, sync FULL)",
                "value": rate,
                "unit": "/s",
                "target": ">= 2000",
            }
        )
        fold_s, fold_open_ms, fold_events = bench_fold(folder)
        rows.append(
            {
                "metric": f"open 10-year ledger ({fold_events} events, quick_check)",
                "value": fold_open_ms,
                "unit": "ms",
                "target": "",
            }
        )
        rows.append(
            {
                "metric": f"fold {CYCLES} cycles ({fold_events} events): all projections",
                "value": fold_s * 1000,
                "unit": "ms",
                "target": "",
            }
        )
        big = folder / "million.sqlite"
        build_s = build_million(big)
        size_mb = os.path.getsize(big) / 1e6
        started = time.perf_counter()
        ledger = Ledger.open(big, readonly=True)
        open_s = time.perf_counter() - started
        started = time.perf_counter()
        report = ledger.verify()
        verify_s = time.perf_counter() - started
        ledger.close()
        if not report.ok or report.events_checked != VERIFY_EVENTS:
            print(f"verify of the 1M ledger did not pass: {report}", file=sys.stderr)
            return 1
        rows.append(
            {
                "metric": f"build 1M events (bulk, {size_mb:.0f} MB)",
                "value": build_s,
                "unit": "s",
                "target": "",
            }
        )
        rows.append(
            {"metric": "open 1M ledger (quick_check)", "value": open_s, "unit": "s", "target": ""}
        )
        rows.append({"metric": "verify 1M events", "value": verify_s, "unit": "s", "target": "< 5"})
    print_figures(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
