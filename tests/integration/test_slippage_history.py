"""The slippage report on three years of simulated cycles, checked against the raw records.

One 36-cycle history (2022-12 .. 2025-11) is built per module without a kernel: three cycles
fill wide of the open (12, 25 and 30 bps instead of the sim's 2) and AGG has a 15 bps band of
its own. Expected figures are computed here from the ledger's rows (read with sqlite3) and the
store's raw bars, never through ops_runner.execution.slippage.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import shutil
import sqlite3
from datetime import timedelta
from decimal import Decimal
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote

import nbformat
import pytest

from ops_runner.core.events import EventKind
from ops_runner.execution.slippage import SlippageError, read_slippage, write_slippage_check
from ops_runner.ledger import open_ledger
from ops_runner.market.calendar import open_calendar
from ops_runner.market.prices import open_store
from ops_runner.reports.slippage import publish_report, read_report_source
from ops_runner.simulators.history import HistoryError, simulate_history
from ops_runner.workbook.config import load_config

D = Decimal
CENT, BP = D("0.01"), D("0.0001")
WIDE = {"2024-03": 25.0, "2025-03": 12.0, "2025-09": 30.0}  # the sim's slippage that cycle
BANDS = {"AGG": D(15)}  # every other symbol: the default 10 bps
# The spread bands of the config template: fill vs mid and the quoted half-spread, in bps.
VS_MID_BAND, HALF_SPREAD_BAND = D(10), D(5)
# Known answers of the sample market: which cycles trade, so which wide cycles get flagged.
# 2025-03 at 12 bps: QQQ beyond its 10 bps band, AGG inside its own 15 bps.
FLAGGED = {"2024-03": {"AGG", "QQQ"}, "2025-03": {"QQQ"}, "2025-09": {"AGG", "QQQ"}}


pytestmark = pytest.mark.slow  # three years of simulated cycles, built once


@pytest.fixture(scope="module")
def history(tmp_path_factory):
    return simulate_history(
        tmp_path_factory.mktemp("history") / "wb", 36, out_of_band=WIDE,
        config={"costs": {"slippage_bands": {"AGG": 15.0}}},
    )  # fmt: skip


def ledger_rows(cfg) -> list[tuple[str, str, dict]]:
    """(kind, key, payload) of every event, read straight from the SQLite file."""
    path = cfg.path("ledger") / "ledger.sqlite"
    # Closed at once: a connection the ledger does not know of must not outlive this read (the
    # ledger's first open in a process reads the file's header, which drops this process's
    # POSIX locks on it, SQLite's included).
    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as con:
        rows = con.execute("SELECT kind, key, payload FROM events ORDER BY seq").fetchall()
    return [(kind, key, json.loads(payload)) for kind, key, payload in rows]


def raw_price(cfg, symbol: str, session: str, column: str) -> Decimal:
    import pandas as pd

    bars = pd.read_parquet(open_store(cfg).bars_path("sample", symbol))
    return D(repr(float(bars.at[pd.Timestamp(session), column]))).quantize(BP)


def bps(side: str, price: Decimal, reference: Decimal) -> Decimal:
    cost = price - reference if side == "BUY" else reference - price
    return (cost / reference * 10_000).quantize(CENT)


def expected_orders(cfg) -> dict[str, list[dict]]:
    """Per cycle, its orders as this test computes them from intents, fills and raw bars."""
    rows = ledger_rows(cfg)
    decided = {p["cycle_id"]: p["session"] for k, _, p in rows if k == "DecisionRecorded"}
    fills: dict[str, dict] = {}
    for kind, _, p in rows:
        if kind == "FillRecorded":
            known = fills.setdefault(p["exec_id"], dict(p))
            known["commission"] = known["commission"] or p["commission"]
    by_cycle: dict[str, list[dict]] = {cycle: [] for cycle in decided}
    quoted = {(p["cycle_id"], p["moment"]): p["quotes"] for k, _, p in rows
              if k == "QuotesRecorded"}  # fmt: skip
    for kind, _, intent in rows:
        if kind != "OrderIntentRecorded":
            continue
        cycle, symbol, side = intent["client_ref"].split(":")[1:4]
        mine = [f for f in fills.values() if f["client_ref"] == intent["client_ref"]]
        shares = sum(f["quantity"] for f in mine)
        paid = sum(f["quantity"] * D(f["price"]) for f in mine)
        opening = raw_price(cfg, symbol, intent["session"], "open")
        close = raw_price(cfg, symbol, decided[cycle], "close")
        vs_open = bps(side, paid / shares, opening)
        band = BANDS.get(symbol, D(10))
        quote = quoted.get((cycle, "open"), {}).get(symbol) or quoted.get(
            (cycle, "submission"), {}).get(symbol)  # fmt: skip
        vs_mid = half = None
        if quote is not None:
            bid, ask = D(quote["bid"]), D(quote["ask"])
            mid = (bid + ask) / 2
            vs_mid = bps(side, paid / shares, mid)
            half = ((ask - bid) / 2 / mid * 10_000).quantize(CENT)
        by_cycle[cycle].append({
            "vs_mid": vs_mid, "half_spread": half,
            "spread_flagged": vs_mid is not None and (abs(vs_mid) > VS_MID_BAND
                                                      or half > HALF_SPREAD_BAND),
            "symbol": symbol, "ordered": intent["quantity"], "filled": shares,
            "vs_open": vs_open, "vs_close": bps(side, paid / shares, close), "band": band,
            "lost": (paid - opening * shares) * (1 if side == "BUY" else -1),
            "commission": sum(D(f["commission"]) for f in mine), "flagged": abs(vs_open) > band,
        })  # fmt: skip
    return by_cycle


def figures(orders: list[dict]) -> dict:
    """What a cycle (or the trailing cycles) should show, from this test's own rows."""

    def mean(values):
        return (sum(values, D(0)) / len(values)).quantize(CENT) if values else None

    worst = max(orders, key=lambda o: abs(o["vs_open"]), default=None)
    ordered = sum(o["ordered"] for o in orders)
    return {
        "orders": len(orders),
        "fill_ratio": (D(sum(o["filled"] for o in orders)) / ordered).quantize(BP)
        if ordered else None,
        "avg_vs_open_bps": mean([o["vs_open"] for o in orders]),
        "avg_abs_bps": mean([abs(o["vs_open"]) for o in orders]),
        "worst_abs_bps": abs(worst["vs_open"]) if worst else None,
        "worst_symbol": worst["symbol"] if worst else None,
        "avg_vs_close_bps": mean([o["vs_close"] for o in orders]),
        "worst_vs_close_bps": max((abs(o["vs_close"]) for o in orders), default=None),
        "slippage_cost": sum((o["lost"] for o in orders), D(0)),
        "commissions": sum((o["commission"] for o in orders), D(0)),
        "flagged": sum(1 for o in orders if o["flagged"]),
    }  # fmt: skip


def shown(summary) -> dict:
    return {name: getattr(summary, name) for name in figures([])}


def test_history_when_simulated_holds_36_clean_cycles(history):
    result = history  # how long it takes is benchmarks/slippage.py's figure
    assert result.cycles[0] == "2022-12" and result.cycles[-1] == "2025-11"
    assert len(result.cycles) == 36 and result.sessions["2025-11"] == ("2025-11-28", "2025-12-01")
    cfg = result.config()
    rows = ledger_rows(cfg)
    keys = {key for _, key, _ in rows}
    for cycle in result.cycles:
        assert f"Reconciliation:{cycle}" in keys, cycle  # the clean check: no breaks anywhere
    checks = [p for k, _, p in rows if k == "CheckRecorded" and p["check"] == "reconciliation"]
    assert len(checks) == 36 and all(p["passed"] for p in checks)
    fills = {p["exec_id"] for k, _, p in rows if k == "FillRecorded"}
    assert result.orders == len(fills) > 36  # every order filled once; most cycles rotate
    assert not [k for k, _, _ in rows if k in ("IncidentOpened", "StateChanged")]
    with open_ledger(cfg, create=False, readonly=True) as ledger:
        assert ledger.verify().ok


def test_history_when_the_folder_is_in_use_refuses_to_write(tmp_path):
    (tmp_path / "wb").mkdir()
    (tmp_path / "wb" / "notes.txt").write_text("mine")
    with pytest.raises(HistoryError, match="not empty"):
        simulate_history(tmp_path / "wb", 2)
    with pytest.raises(HistoryError, match="outside the sample"):
        simulate_history(tmp_path / "late", 3, first_cycle="2025-11")
    with pytest.raises(HistoryError, match="outside the history"):
        simulate_history(tmp_path / "odd", 2, out_of_band={"2019-01": 30.0})


def test_read_slippage_when_36_cycles_trails_12_equal_to_an_independent_computation(history):
    cfg = history.config()
    orders = expected_orders(cfg)
    report = read_slippage(cfg, "2025-11")
    trailing = sorted(orders)[-12:]
    assert trailing[0] == "2024-12" and [c.cycle_id for c in report.cycles] == trailing
    assert any(not orders[c] for c in trailing)  # a month that traded nothing still counts
    for summary in report.cycles:
        assert shown(summary) == figures(orders[summary.cycle_id]), summary.cycle_id
    everything = [o for cycle in trailing for o in orders[cycle]]
    assert shown(report.trailing) == figures(everything)
    assert report.trailing.cycle_id == "trailing 12 cycle(s)"
    for symbol in report.symbols():
        assert shown(symbol) == figures([o for o in everything if o["symbol"] == symbol.cycle_id])
    flagged = {c: {o["symbol"] for o in orders[c] if o["flagged"]} for c in orders}
    assert {c: s for c, s in flagged.items() if s} == FLAGGED


def alerts(cfg) -> dict[str, dict]:
    return {key.removeprefix("AlertSent:slippage:"): p for kind, key, p in ledger_rows(cfg)
            if kind == "AlertSent" and key.startswith("AlertSent:slippage:")}  # fmt: skip


def test_check_when_orders_are_out_of_band_alerts_once_per_cycle_and_never_again(history):
    cfg = history.config()
    orders = expected_orders(cfg)
    results = {c: write_slippage_check(cfg, read_slippage(cfg, c)) for c in history.cycles}
    sent = alerts(cfg)
    assert set(sent) == set(FLAGGED)
    for cycle, payload in sent.items():
        assert payload["channels"]["log"] == "sent" and payload["severity"] == "warning"
        assert payload["subject"] == f"slippage {cycle}: {len(FLAGGED[cycle])} order(s) out of band"
        assert results[cycle]["passed"] is False
    traded = {c for c, o in orders.items() if o}
    checked = {c for c, r in results.items() if r["key"]}
    assert checked == traded  # a cycle without fills records nothing
    assert all(results[c]["passed"] for c in traded - set(FLAGGED))
    with open_ledger(cfg, create=False, readonly=True) as ledger:
        head = ledger.head()
    for cycle in history.cycles:  # the monthly job run again: no new check, no new alert
        assert write_slippage_check(cfg, read_slippage(cfg, cycle))["seq"] == results[cycle]["seq"]
    with open_ledger(cfg, create=False, readonly=True) as ledger:
        assert ledger.head() == head
    log = (cfg.path("kill_switch").parent / "alerts.log").read_text(encoding="utf-8")
    assert sum(log.count(f"slippage {c}:") for c in FLAGGED) == len(FLAGGED)


class Links(HTMLParser):
    """The slippage section's rows: cycle -> (status text, hrefs)."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: dict[str, tuple[list[str], list[str]]] = {}
        self._inside = False
        self._cycle: str | None = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "table":
            self._inside = attrs.get("id") == "slippage"
        elif tag == "tr" and self._inside and "data-cycle" in attrs:
            self._cycle = attrs["data-cycle"]
            self.rows[self._cycle] = ([], [])
        elif tag == "a" and self._cycle:
            self.rows[self._cycle][1].append(attrs["href"])

    def handle_endtag(self, tag):
        if tag == "tr":
            self._cycle = None
        elif tag == "table":
            self._inside = False

    def handle_data(self, data):
        if self._cycle and data.strip():
            self.rows[self._cycle][0].append(data.strip())


def run_report_job(cfg, cycle: str) -> Path:
    """Run the slippage_report slot as the tick does; return the executed notebook's path."""
    from ops_runner.ops.schedule import Job, ScheduleSettings, compute_session_slots
    from ops_runner.ops.tick import run_slot

    calendar = open_calendar(cfg)
    session = calendar.rebalance_session(*map(int, cycle.split("-")))
    slots = compute_session_slots(calendar, ScheduleSettings.from_config(cfg.values), session)
    slot = next(s for s in slots if s.job is Job.SLIPPAGE_REPORT)
    now = calendar.session_open(calendar.next_session(session)).to_pydatetime()
    with open_ledger(cfg) as ledger:
        ok, line = run_slot(cfg, ledger, None, slot, now + timedelta(hours=2), True)
        assert ok, line
        artifact = ledger.last(str(EventKind.ARTIFACT_RECORDED)).payload
    assert artifact["job"] == "slippage_report" and artifact["cycle"] == cycle
    return cfg.workbook / artifact["path"]


@pytest.fixture(scope="module")
def published(history):
    """The 2025-09 report run through its slot as the tick runs it (its cells in this process,
    as in every test of the tick; a kernel in production), then published."""
    cfg = history.config()
    notebook = run_report_job(cfg, "2025-09")
    return cfg, notebook, publish_report(cfg, notebook, "2025-09")


def test_report_when_run_on_the_history_is_published_and_linked_from_the_runs_index(published):
    from ops_runner.reports.runs import write_runs_index
    from ops_runner.runtime.notebooks import read_scraps

    cfg, notebook, page = published
    completion = read_scraps(notebook)["completion"]
    spread_flagged = sum(o["spread_flagged"] for o in expected_orders(cfg)["2025-09"])
    assert spread_flagged > 0  # the wide open of 2025-09 is out of the vs-mid band too
    assert completion == {"job": "slippage_report", "cycle": "2025-09", "status": "OUT_OF_BAND",
                          "passed": False, "flagged": 2, "spread_status": "OUT_OF_BAND",
                          "spread_passed": False, "spread_flagged": spread_flagged}  # fmt: skip
    assert page == cfg.path("reports") / "slippage" / "2025-09.html" and page.is_file()
    stamp = read_report_source(page)
    assert stamp["notebook"] == notebook.relative_to(cfg.workbook).as_posix()
    assert "trailing 12 cycle(s)" in page.read_text(encoding="utf-8")
    with open_ledger(cfg, create=False, readonly=True) as ledger:
        assert ledger.get("AlertSent:slippage:2025-09") is not None
    index = write_runs_index(cfg)
    links = Links()
    links.feed(index.read_text(encoding="utf-8"))
    assert list(links.rows) == ["2025-09"]
    texts, hrefs = links.rows["2025-09"]
    assert "FLAGGED: 2 order(s)" in texts and hrefs == ["slippage/2025-09.html"]
    assert (index.parent / unquote(hrefs[0])).resolve() == page.resolve()


def test_publish_when_run_again_keeps_the_newest_run_and_refuses_partial_notebooks(published):
    cfg, notebook, page = published
    before = page.stat().st_mtime_ns
    assert publish_report(cfg, notebook, "2025-09") == page
    assert page.stat().st_mtime_ns == before  # the same notebook: nothing rendered again
    with pytest.raises(SlippageError, match="cycle: '../x'"):
        publish_report(cfg, notebook, "../x")
    with pytest.raises(SlippageError, match="no completed slippage report of cycle 2025-10"):
        publish_report(cfg, notebook, "2025-10")
    partial = notebook.with_name("partial.ipynb")
    nb = nbformat.read(str(notebook), as_version=4)
    nb.cells[-1].outputs = []  # the last cell never ran: no completion record
    nbformat.write(nb, str(partial))
    with pytest.raises(SlippageError, match="failed or partial"):
        publish_report(cfg, partial, "2025-09")
    assert page.stat().st_mtime_ns == before


def test_publish_when_an_older_run_comes_late_leaves_the_newer_page(published, tmp_path):
    cfg, notebook, _ = published
    root = tmp_path / "copy"
    shutil.copytree(cfg.workbook, root, ignore=shutil.ignore_patterns("reports"))
    cfg = load_config(root)
    older = root / notebook.relative_to(published[0].workbook)
    newer = older.with_name("slippage_report-later.ipynb")
    nb = nbformat.read(str(older), as_version=4)
    nb.metadata["rerun"] = True  # another run's file: other bytes, same report
    nbformat.write(nb, str(newer))
    with open_ledger(cfg) as ledger:
        first = ledger.last(str(EventKind.ARTIFACT_RECORDED))
        payload = {**first.payload, "path": newer.relative_to(root).as_posix(), "run_id": "later",
                   "sha256": hashlib.sha256(newer.read_bytes()).hexdigest()}  # fmt: skip
        later = ledger.append(str(EventKind.ARTIFACT_RECORDED), "ArtifactRecorded:later", payload)
    page = publish_report(cfg, newer, "2025-09")
    assert read_report_source(page)["seq"] == later.seq
    assert publish_report(cfg, older, "2025-09") == page
    assert read_report_source(page)["seq"] == later.seq  # the older run did not replace it
    assert read_report_source(page)["run_id"] == "later" and first.seq < later.seq
