"""The performance notebook: offline on defaults, and over seven cycles of the simulated broker.

Why live must track research closely here: the simulated broker fills a market-on-open order at
the stored opening print moved ``costs.slippage_bps`` against the trader, rounded to the cent,
and charges ``max(commission_min, commission_per_share x shares)``: the backtest's own price and
commission formula. So slippage differs from the model only by the cent rounding (at most half
a cent a share: under 1 bps of equity at these sizes) and commissions only by the shares traded
(the backtest sizes without a buffer: a few cents a month, far under 0.5 bps). What remains is
cash: execution keeps ``execution.cash_buffer`` (2%) back, whole shares leave a remainder, and
the dividends the simulated broker pays (booked in the ledger as entitled on the ex-date and
paid a few sessions later) wait in cash until the next rebalance, never reinvested in between
(research reinvests them: a few more tenths of a percent over these months). That cash misses
the market's move, so each month's tracking difference is the cash drag, within 5% of equity
times the month's move, give or take a bps of the rest.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from conftest import broken_links, inspect_in_browser, make_sample_workbook, ready_to_decide

from ops_runner.market.calendar import open_calendar
from ops_runner.ops import jobs
from ops_runner.ops.decision import decide
from ops_runner.reports.pages import write_html
from ops_runner.runtime.notebooks import run_notebook
from ops_runner.workbook.config import load_config

pytestmark = pytest.mark.notebook

MONTHS = range(5, 12)  # decided 2025-05 .. 2025-11, filled at the next month's first open


def run_cycle(cfg, year: int, month: int) -> str:
    """Decide the month-end, submit an hour before the next open, reconcile 45 minutes after:
    the jobs the tick runs, without their notebooks."""
    calendar = open_calendar(cfg)
    decided = calendar.rebalance_session(year, month)
    ready_to_decide(cfg, decided)
    cycle = decide(cfg, decided).record["cycle_id"]
    opened = calendar.session_open(calendar.next_session(decided)).to_pydatetime()
    at = lambda moment: moment.strftime("%Y-%m-%dT%H:%M:%SZ")  # noqa: E731 - a local formatter
    jobs.open_execution(cfg, cycle, at(opened - timedelta(hours=1))).submit()
    jobs.run_reconciliation(cfg, cycle, at(opened + timedelta(minutes=45)), alert=None)
    return cycle


@pytest.fixture(scope="module")
def seven_cycles(tmp_path_factory):
    root = make_sample_workbook(tmp_path_factory.mktemp("perf") / "wb")
    cfg = load_config(root)
    return root, [run_cycle(cfg, 2025, month) for month in MONTHS]


def test_performance_notebook_when_defaults_and_no_fills_says_so_and_completes(
    tmp_path, monkeypatch
):
    monkeypatch.setenv("OPS_RUNNER_HOME", str(make_sample_workbook(tmp_path / "home")))
    run = run_notebook("performance", tmp_path / "performance.ipynb", {})
    assert run.completion == {"job": "performance", "status": "NO_HISTORY", "start": None,
                              "end": None, "months": 0}  # fmt: skip
    scrap = run.scraps["performance"]
    assert scrap["summary"] == "performance: NO_HISTORY: no fills in the ledger yet"
    assert scrap["months"] == []


@pytest.fixture(scope="module")
def seven_cycles_report(seven_cycles):
    """The performance notebook run once over the seven cycles, where the CLI keeps it."""
    root, cycles = seven_cycles
    executed = root / "ledger" / "runs" / "performance" / "performance.ipynb"
    return root, cycles, run_notebook("performance", executed, {"workbook": str(root)})


def test_performance_notebook_when_seven_cycles_filled_live_tracks_research(seven_cycles_report):
    root, cycles, run = seven_cycles_report
    scrap = run.scraps["performance"]
    assert run.completion["status"] == "TRACKING", scrap["summary"]
    assert scrap["start"] == "2025-05-30" and scrap["end"] == "2025-12-31"
    # Every cycle's fills land in the month after its decision: June .. December.
    months = {m["month"]: m for m in scrap["months"]}
    assert list(months) == ["2025-06", "2025-07", "2025-08", "2025-09", "2025-10", "2025-11",
                            "2025-12"]  # fmt: skip
    assert len(cycles) == 7 and sum(m["fills"] for m in months.values()) >= 7
    for m in months.values():
        parts = sum(m[f"{p}_bps"] for p in ("slippage", "commissions", "cash_drag", "rounding",
                                              "other"))  # fmt: skip
        assert abs(parts - m["tracking_bps"]) < 1e-6, m["month"]
        assert abs(m["slippage_bps"]) < 1.0 and abs(m["commissions_bps"]) < 0.5, m
        assert m["rounding_bps"] == 0.0  # one asset at a time: no mix to tilt
        move = abs(m["research_return"]) * 1e4
        assert abs(m["cash_drag_bps"]) <= 0.05 * move + 0.1, m
        assert abs(m["tracking_bps"] - m["cash_drag_bps"]) < 1.5, m
        assert abs(m["tracking_bps"]) <= scrap["tolerance_bps"]
    assert "production behaves like research" in scrap["summary"]
    assert not [n for n in scrap["notes"] if n.startswith("live did not decide")]  # same code
    assert "DU0000000" not in run.output.read_text(encoding="utf-8")


def test_performance_page_when_opened_in_a_browser_says_its_result_first_and_fits(
    tmp_path, seven_cycles_report
):
    root, _, run = seven_cycles_report
    page = write_html(run.output, root / "reports" / "performance.html")  # as the CLI renders it
    seen = inspect_in_browser(page, tmp_path / "browser", tmp_path / "performance.png")
    verdict = seen["verdict"]
    assert verdict and verdict["bottom"] <= seen["height"], verdict  # no scrolling to find it
    assert "TRACKING" in verdict["text"], verdict["text"]
    assert seen["wide"] == [] and seen["scroll_width"] <= seen["width"]  # nothing off the edge
    assert seen["images"] and all(image["ok"] for image in seen["images"])  # the charts drew
    assert broken_links(page, seen) == []
    assert any(link["href"].endswith(".ipynb") for link in seen["links"])  # the audit record
    assert (tmp_path / "performance.png").stat().st_size > 10_000
