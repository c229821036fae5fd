"""Performance: live vs research on tiny hand-built worlds, every figure computed by hand.

Each world is a real workbook: a price store holding a few symbols on XNYS sessions from
2023-12-01 to 2024-03-28, a ledger written through the ledger API (the opening balance and fills
as the broker would report them), and a one-month-lookback strategy that always holds its risk
assets (no absolute filter), so the backtest's holdings are known without running it in the head:
it decides on 2024-01-31 and buys at the 2024-02-01 open, as the live fills do.

Prices are flat except for steps: from a step's date on, open = close = its level, so an asset's
return sits in the overnight gap of the step date and every named part is one line of
arithmetic. Research costs are zero unless a test says otherwise.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import matplotlib
import pandas as pd
import pytest
import yaml

from ops_runner.config import init_workbook, load_config
from ops_runner.data import make_bars
from ops_runner.events import EventKind
from ops_runner.ledger import open_ledger
from ops_runner.performance import (
    PARTS,
    PerformanceStatus,
    plot_attribution,
    plot_equity,
    read_performance,
)

matplotlib.use("Agg")

FIRST, LAST = "2023-12-01", "2024-03-28"
FLAT = {FIRST: 100.0, "2024-02-02": 110.0}  # AAA: +10% in the 2024-02-02 gap, flat otherwise
BPS = 1e4
EXACT = 1e-9  # bps: the parts are floats summed, equal to the tracking difference up to noise


def make_world(
    root: Path, steps: dict[str, dict[str, float]], *, whole_shares: bool = True,
    commission_min: float = 0.0, dividends: dict[str, dict[str, float]] | None = None,
) -> object:  # fmt: skip
    """A workbook holding ``steps`` per symbol (risk: all but BBB), its config and an empty
    ledger; returns the Config."""
    init_workbook(root, template="demo")
    values = yaml.safe_load((root / "config.yaml").read_text(encoding="utf-8"))
    risk = [s for s in steps if s != "BBB"]
    values["universe"] = {"risk": risk, "defensive": "BBB", "cash_proxy": None}
    values["strategy"].update(
        lookback_months=1, top_n=len(risk), absolute_momentum=False, benchmark=risk[0]
    )  # the backtest's buy-and-hold reads it
    values["data"] = {"primary": "hand", "secondary": None}
    values["costs"].update(commission_per_share=0.0, commission_min=commission_min,
                           slippage_bps=0.0)  # fmt: skip
    values["research"] = {"initial_cash": 10000.0, "whole_shares": whole_shares}
    (root / "config.yaml").write_text(yaml.safe_dump(values), encoding="utf-8")
    cfg = load_config(root)
    sessions = cfg.calendar().sessions(FIRST, LAST)
    for symbol, path in steps.items():
        level = pd.Series(path).rename(index=pd.Timestamp).reindex(sessions).ffill()
        paid = pd.Series(0.0, index=sessions)
        for day, amount in ((dividends or {}).get(symbol) or {}).items():
            paid[pd.Timestamp(day)] = amount
        bars = make_bars(sessions, level, level, level, level, [1e6] * len(sessions), paid)
        provenance = {"layout": "hand", "source_file": "test", "source_sha256": symbol}
        cfg.store().write_bars("hand", symbol, bars, provenance)
    return cfg


def record(cfg, capital: str | None, *fills: tuple, flows: tuple = ()) -> None:
    """The opening balance, then fills (symbol, side, quantity, price, commission, session) and
    later CashAdjusted flows (amount, session), through the ledger API."""
    with open_ledger(cfg) as ledger:
        if capital is not None:
            ledger.append(str(EventKind.CASH_ADJUSTED), "CashAdjusted:opening",
                          {"amount": capital, "reason": "opening balance"})  # fmt: skip
        for n, (symbol, side, quantity, price, commission, session) in enumerate(fills):
            payload = {"exec_id": f"x{n}", "client_ref": f"mr:2024-01:{symbol}:{side}",
                       "symbol": symbol, "side": side, "quantity": quantity, "price": price,
                       "commission": commission, "session": session}  # fmt: skip
            ledger.append(str(EventKind.FILL_RECORDED), f"FillRecorded:x{n}", payload)
        for n, (amount, session) in enumerate(flows):
            ledger.append(str(EventKind.CASH_ADJUSTED), f"CashAdjusted:flow{n}",
                          {"amount": amount, "reason": "deposit", "session": session})  # fmt: skip


def month(report, name: str):
    return next(m for m in report.months if m.month == name)


def assert_parts(m, tracking: float, **parts: float) -> None:
    """The month's tracking difference and parts (bps) as given, unnamed parts zero, and the
    parts summing to the total."""
    assert m.tracking_bps == pytest.approx(tracking, abs=1e-6)
    for name in PARTS:
        assert m.parts()[name] == pytest.approx(parts.get(name, 0.0), abs=1e-6), name
    assert abs(sum(m.parts().values()) - m.tracking_bps) < EXACT


def test_performance_when_fills_cost_more_than_the_model_slippage_is_the_whole_difference(
    tmp_path,
):
    cfg = make_world(tmp_path, {"AAA": FLAT, "BBB": {FIRST: 50.0}})
    record(cfg, "10000", ("AAA", "BUY", 100, "100.10", "0", "2024-02-01"))
    report = read_performance(cfg)
    assert (report.status, report.start, report.end) == (PerformanceStatus.TRACKING,
                                                        "2024-01-31", "2024-03-28")  # fmt: skip
    assert report.capital == 10000.0 and [m.month for m in report.months] == ["2024-02", "2024-03"]
    feb = month(report, "2024-02")
    # live: 100 x 110 - 10 cash overdrawn = 10990; research: 100 units x 110 = 11000
    assert report.curves.at[pd.Timestamp("2024-02-29"), "live_equity"] == pytest.approx(10990.0)
    assert (feb.live_return, feb.research_return) == (pytest.approx(0.099), pytest.approx(0.10))
    assert_parts(feb, -10.0, slippage=-10.0)  # 0.10 x 100 shares / 10000
    assert feb.slippage_dollars == pytest.approx(10.0) and feb.fills == 1
    assert_parts(month(report, "2024-03"), 0.0)  # flat: both hold the same shares


def test_performance_when_live_pays_more_commission_than_modelled_commissions_explain_it(
    tmp_path,
):
    cfg = make_world(tmp_path, {"AAA": FLAT, "BBB": {FIRST: 50.0}}, commission_min=1.0)
    # Research pays its $1 minimum out of 10001 and buys 100 units; live pays $5.
    record(cfg, "10001", ("AAA", "BUY", 100, "100.00", "5.00", "2024-02-01"))
    feb = month(read_performance(cfg), "2024-02")
    assert (feb.live_commissions, feb.research_commissions) == (5.0, 1.0)
    assert feb.live_return == pytest.approx(10996 / 10001 - 1)
    assert feb.research_return == pytest.approx(11000 / 10001 - 1)
    assert_parts(feb, -4 / 10001 * BPS, commissions=-4 / 10001 * BPS)


def test_performance_when_live_keeps_cash_back_the_market_move_on_it_is_cash_drag(tmp_path):
    cfg = make_world(tmp_path, {"AAA": FLAT, "BBB": {FIRST: 50.0}})
    record(cfg, "10000", ("AAA", "BUY", 98, "100.00", "0", "2024-02-01"))  # 200 (2%) kept
    feb = month(read_performance(cfg), "2024-02")
    # live: 98 x 110 + 200 = 10980 (+9.8%) vs +10%: 2% of equity missed the 10% gap
    assert (feb.live_return, feb.research_return) == (pytest.approx(0.098), pytest.approx(0.10))
    assert_parts(feb, -20.0, cash_drag=-20.0)


def test_performance_when_whole_shares_tilt_the_mix_rounding_and_cash_drag_split_it(tmp_path):
    steps = {"AAA": FLAT, "CCC": {FIRST: 300.0}, "BBB": {FIRST: 50.0}}
    cfg = make_world(tmp_path, steps, whole_shares=False)
    # Research holds 50 AAA and 16.667 CCC (5000 each); live's whole shares: 50 AAA and 16 CCC
    # (4800), 200 left in cash. Both end February at 10500 (+5%).
    record(cfg, "10000", ("AAA", "BUY", 50, "100.00", "0", "2024-02-01"),
           ("CCC", "BUY", 16, "300.00", "0", "2024-02-01"))  # fmt: skip
    feb = month(read_performance(cfg), "2024-02")
    assert (feb.live_return, feb.research_return) == (pytest.approx(0.05), pytest.approx(0.05))
    # cash drag: (0.98 - 1.00) x research's invested return (5000 x 10% + 5000 x 0) / 10000;
    # rounding: AAA (0.50 - 0.50 x 0.98) x 10% + CCC (0.48 - 0.50 x 0.98) x 0% = +10 bps
    assert_parts(feb, 0.0, cash_drag=-10.0, rounding=10.0)


def test_performance_when_a_dividend_waits_in_cash_it_is_credited_and_drags(tmp_path):
    aaa = {FIRST: 100.0, "2024-02-02": 110.0, "2024-02-15": 108.0, "2024-02-20": 118.8}
    cfg = make_world(tmp_path, {"AAA": aaa, "BBB": {FIRST: 50.0}}, whole_shares=False,
                     dividends={"AAA": {"2024-02-15": 2.0}})  # fmt: skip
    record(cfg, "10000", ("AAA", "BUY", 100, "100.00", "0", "2024-02-01"))
    report = read_performance(cfg)
    curves = report.curves
    # 2024-02-15: 100 x 108 + the $200 dividend = 11000, as research's reinvested holding.
    assert curves.at[pd.Timestamp("2024-02-15"), "live_equity"] == pytest.approx(11000.0)
    assert curves["live_dividends"].sum() == pytest.approx(200.0)
    feb = month(report, "2024-02")
    # live 100 x 118.8 + 200 = 12080; research 11000 x 1.1 = 12100; the $200 sat in cash
    # through the +10% of 2024-02-20: (100 x 108 - 11000) / 10000 x 10% = -20 bps
    assert (feb.live_return, feb.research_return) == (pytest.approx(0.208), pytest.approx(0.21))
    assert_parts(feb, -20.0, cash_drag=-20.0)
    assert any("200.00 credited" in note for note in report.notes)


def test_performance_when_everything_at_once_the_parts_sum_to_the_tracking_difference(tmp_path):
    aaa = {FIRST: 100.0, "2024-02-02": 110.0, "2024-03-01": 121.0}
    cfg = make_world(tmp_path, {"AAA": aaa, "BBB": {FIRST: 50.0}})
    record(cfg, "10000", ("AAA", "BUY", 98, "100.10", "2.00", "2024-02-01"))
    with open_ledger(cfg) as ledger:  # January's decision as research's; February's missed
        decided = {"cycle_id": "2024-01", "session": "2024-01-31",
                   "decision": {"targets": {"AAA": "1"}}}  # fmt: skip
        ledger.append(str(EventKind.DECISION_RECORDED), "DecisionRecorded:2024-01", decided)
    report = read_performance(cfg)
    # cash 10000 - 98 x 100.10 - 2 = 188.20; February ends at 98 x 110 + 188.20 = 10968.20
    feb, mar = month(report, "2024-02"), month(report, "2024-03")
    assert feb.live_return == pytest.approx(0.09682)
    assert_parts(feb, -31.8, slippage=-9.8, commissions=-2.0, cash_drag=-20.0)
    # March: 98 x 121 + 188.20 = 12046.20; invested 10780 of 10968.20 caught the 10% gap
    assert mar.live_return == pytest.approx(12046.2 / 10968.2 - 1)
    drag = (10780 / 10968.2 - 1.0) * 0.10 * BPS
    assert_parts(mar, (12046.2 / 10968.2 - 1.10) * BPS, cash_drag=drag)
    live, research = report.total_returns()
    assert (live, research) == (pytest.approx(0.20462), pytest.approx(0.21))
    assert report.status is PerformanceStatus.TRACKING  # -31.8 and -17.2 within 50
    line = report.summary()
    assert "worst month 2024-02 -31.8 bps" in line and "largest part cash drag -37.2" in line
    assert "tolerance 50 bps/month (default): production behaves like research" in line
    missed = "live did not decide as research on 2024-02-29 (live no decision, research "
    assert [n for n in report.notes if n.startswith("live did")] == [f"{missed}{{'AAA': '1'}})"]
    strict = read_performance(cfg, tolerance_bps=20.0)
    assert strict.status is PerformanceStatus.DIVERGING and "2024-02" in strict.message
    assert "DIVERGES from research in 1 month(s)" in strict.summary()
    payload = json.loads(json.dumps(report.to_payload(), allow_nan=False))
    assert [m["month"] for m in payload["months"]] == ["2024-02", "2024-03"]
    assert payload["parts_bps"]["slippage"] == -9.8 and payload["status"] == "TRACKING"
    assert list(report.months_frame().index) == ["2024-02", "2024-03"]
    assert plot_equity(report).axes and plot_attribution(report).axes


def test_performance_when_cash_is_deposited_mid_month_live_returns_are_time_weighted(tmp_path):
    cfg = make_world(tmp_path, {"AAA": FLAT, "BBB": {FIRST: 50.0}})
    record(cfg, "10000", ("AAA", "BUY", 100, "100.00", "0", "2024-02-01"),
           flows=(("5000", "2024-02-15"),))  # fmt: skip
    report = read_performance(cfg)
    assert report.curves.at[pd.Timestamp("2024-02-29"), "live_equity"] == pytest.approx(16000)
    assert report.curves.at[pd.Timestamp("2024-02-29"), "live_growth"] == pytest.approx(11000)
    assert_parts(month(report, "2024-02"), 0.0)
    assert any("1 cash flow(s)" in note for note in report.notes)


@pytest.mark.parametrize(
    ("capital", "fills", "start", "status", "words"),
    [
        (None, (), None, PerformanceStatus.NO_HISTORY, "no fills in the ledger yet"),
        ("10000", (), None, PerformanceStatus.NO_HISTORY, "no fills in the ledger yet"),
        (None, (("AAA", "BUY", 1, "100", "0", "2024-02-01"),), None,
         PerformanceStatus.NO_OPENING_BALANCE, "no opening balance"),
        ("10000", (("AAA", "BUY", 1, "100", "0", "2024-02-01"),), "2024-03-01",
         PerformanceStatus.NO_DATA, "no closed month from 2024-03-01 to 2024-03-28"),
    ],
)  # fmt: skip
def test_performance_when_nothing_to_compare_says_why_in_one_line(
    tmp_path, capital, fills, start, status, words
):
    cfg = make_world(tmp_path, {"AAA": FLAT, "BBB": {FIRST: 50.0}})
    record(cfg, capital, *fills)
    report = read_performance(cfg, start=start)
    assert report.status is status and words in report.message
    assert report.summary() == f"performance: {status}: {report.message}"
    assert report.months == () and report.months_frame().empty
    assert json.dumps(report.to_payload(), allow_nan=False)
    assert plot_equity(report).axes and plot_attribution(report).axes


def test_performance_when_no_ledger_exists_says_nothing_ran_live(tmp_path):
    cfg = make_world(tmp_path / "wb", {"AAA": FLAT, "BBB": {FIRST: 50.0}})
    paths = {**cfg.values["paths"], "ledger": str(tmp_path / "nowhere")}
    report = read_performance(replace(cfg, values={**cfg.values, "paths": paths}))
    assert report.status is PerformanceStatus.NO_HISTORY and "no ledger" in report.message
