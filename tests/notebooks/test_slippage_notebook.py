"""The slippage report notebook: offline on defaults, and over four simulated cycles."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from conftest import make_sample_workbook, ready_to_decide

from ops_runner.core.events import EventKind
from ops_runner.ledger import open_ledger
from ops_runner.market.calendar import open_calendar
from ops_runner.ops import jobs
from ops_runner.ops.decision import decide
from ops_runner.runtime.notebooks import run_notebook
from ops_runner.workbook.config import load_config

pytestmark = pytest.mark.notebook


def run_cycle(cfg, year: int, month: int) -> str:
    """Decide the month-end, submit an hour before the next open, reconcile 45 minutes after."""
    calendar = open_calendar(cfg)
    decided = calendar.rebalance_session(year, month)
    ready_to_decide(cfg, decided)
    cycle = decide(cfg, decided).record["cycle_id"]
    opened = calendar.session_open(calendar.next_session(decided)).to_pydatetime()
    at = lambda moment: moment.strftime("%Y-%m-%dT%H:%M:%SZ")  # noqa: E731 - a local formatter
    jobs.open_execution(cfg, cycle, at(opened - timedelta(hours=1))).submit()
    jobs.run_reconciliation(cfg, cycle, at(opened + timedelta(minutes=45)), alert=None)
    return cycle


def test_slippage_notebook_when_defaults_and_no_fills_says_so_and_records_nothing(
    tmp_path, monkeypatch
):
    monkeypatch.setenv("OPS_RUNNER_HOME", str(make_sample_workbook(tmp_path / "home")))
    run = run_notebook("slippage_report", tmp_path / "slippage.ipynb", {})
    assert run.completion == {"job": "slippage_report", "cycle": "2025-11",
                              "status": "NO_FILLS", "passed": None, "flagged": 0,
                              "spread_status": "NO_FILLS", "spread_passed": None,
                              "spread_flagged": 0}  # fmt: skip
    assert "no fills yet" in run.scraps["slippage"]["summary"]
    assert run.scraps["check"]["key"] is None


def test_slippage_notebook_when_four_cycles_filled_checks_bands_and_lists_each_cycle(tmp_path):
    root = make_sample_workbook(tmp_path / "wb")
    cfg = load_config(root)
    cycles = [run_cycle(cfg, 2025, month) for month in (8, 9, 10, 11)]
    params = {"workbook": str(root), "cycle": "2025-11", "run_id": "test-run"}  # it records
    run = run_notebook("slippage_report", tmp_path / "slippage.ipynb", params)
    assert run.completion["status"] == "WITHIN_BANDS" and run.completion["passed"] is True
    # the sim quotes 1 bps either side: each fill within its bands against the quote after the open
    assert (run.completion["spread_status"], run.completion["spread_passed"]) == (
        "WITHIN_BANDS", True)  # fmt: skip
    assert {s["quote"] for s in run.scraps["slippage"]["spreads"]} == {"open"}
    report = run.scraps["slippage"]
    assert [c["cycle_id"] for c in report["cycles"]] == cycles
    assert {(o["symbol"], o["side"]) for o in report["rows"]} == {("VEU", "SELL"), ("AGG", "BUY")}
    for order in report["rows"]:  # the sim's 2 bps against the trader, rounded to cents
        assert Decimal("1") <= Decimal(order["vs_open_bps"]) <= Decimal("3")
    # QQQ bought from cash, then QQQ -> AGG -> VEU -> AGG: one row per symbol, 7 orders in all
    symbols = {s["cycle_id"]: s["orders"] for s in report["symbols"]}
    assert symbols == {"AGG": 3, "QQQ": 2, "VEU": 2}
    assert report["trailing"]["orders"] == 7 and report["trailing"]["fill_ratio"] == "1.0000"
    with open_ledger(cfg, create=False, readonly=True) as ledger:
        check = ledger.get("CheckRecorded:slippage_bands:2025-11")
    assert check is not None and check.seq == run.scraps["check"]["seq"]
    assert check.payload["passed"] is True and check.kind == EventKind.CHECK_RECORDED

    # ... and its page, as a reviewer opens it in a browser (no second kernel: the same run)
    from conftest import broken_links, inspect_in_browser

    from ops_runner.reports.pages import write_html

    page = write_html(run.output, tmp_path / "pages" / "slippage.html")
    shot = tmp_path / "slippage-2025-11.png"
    seen = inspect_in_browser(page, tmp_path / "browser", shot)
    print(f"screenshot slippage 2025-11: {shot}")
    verdict = seen["verdict"]
    assert verdict and verdict["bottom"] <= seen["height"]  # first, without scrolling
    assert "WITHIN_BANDS" in verdict["text"] and "2 of 2 order(s) filled" in verdict["text"]
    assert seen["wide"] == [] and seen["scroll_width"] <= seen["width"]  # the wide tables fit
    assert len(seen["images"]) == 2 and all(image["ok"] for image in seen["images"])
    assert broken_links(page, seen) == []
    assert [link["href"] for link in seen["links"] if link["href"].endswith(".ipynb")] == [
        "../slippage.ipynb"
    ]
    dom = seen["dom"]
    for order in report["rows"]:  # each order's slippage as bps, each fill as money
        assert f"{Decimal(order['vs_open_bps']):+.1f} bps" in dom
        assert f"${Decimal(order['avg_price']):,.2f}" in dom
    assert ">NaN<" not in dom and ">None<" not in dom and "run_notebook" not in dom
