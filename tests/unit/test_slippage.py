"""Slippage: hand-computed tables for the pure parts, then cycles on the simulated broker."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import timedelta
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

import matplotlib
import pytest
import yaml
from conftest import make_sample_workbook, ready_to_decide

from ops_runner.brokers.base import Broker
from ops_runner.brokers.sim import SimBroker
from ops_runner.core.canonical import canonical_json
from ops_runner.core.events import EventKind
from ops_runner.execution.slippage import (
    SlippageError,
    SlippageReport,
    SlippageStatus,
    SpreadStatus,
    compute_band,
    compute_cycle_summary,
    compute_half_spread_bps,
    compute_order_rows,
    compute_order_spreads,
    compute_slippage_bps,
    plot_costs,
    plot_slippage,
    read_slippage,
    write_slippage_check,
)
from ops_runner.ledger import open_ledger
from ops_runner.ledger.projections import OrderView
from ops_runner.market.calendar import open_calendar
from ops_runner.market.prices import open_store
from ops_runner.ops import jobs
from ops_runner.ops.decision import decide
from ops_runner.workbook.config import load_config

matplotlib.use("Agg")
D = Decimal
COSTS = {"slippage_band_bps": 10.0, "slippage_bands": {"EEM": 20.0}}


# -- pure parts: tables of known answers -------------------------------------------------------


@pytest.mark.parametrize(
    ("side", "price", "reference", "bps"),
    [
        ("BUY", "100.10", "100.00", "10.00"),  # paid more: a cost
        ("SELL", "99.90", "100.00", "10.00"),  # received less: a cost
        ("BUY", "99.95", "100.00", "-5.00"),  # price improvement
        ("SELL", "100.05", "100.00", "-5.00"),
        ("BUY", "100.10", "99.50", "60.30"),  # 0.60 / 99.50 = 60.3015 bps
        ("SELL", "99.90", "100.20", "29.94"),  # 0.30 / 100.20 = 29.9401 bps
    ],
)
def test_slippage_bps_when_priced_against_a_reference_is_a_signed_cost(side, price, reference, bps):
    assert compute_slippage_bps(side, D(price), D(reference)) == D(bps)


def test_band_when_symbol_has_its_own_uses_it_else_the_default():
    assert compute_band(COSTS, "EEM") == D("20.0")
    assert compute_band(COSTS, "SPY") == D("10.0")
    assert compute_band({}, "SPY") == D("10.0")  # the config default


@pytest.mark.parametrize("bad", [-1.0, "wide", True, float("nan")])
def test_band_when_not_a_number_of_bps_raises_naming_the_key(bad):
    with pytest.raises(SlippageError, match="costs.slippage_bands.SPY"):
        compute_band({"slippage_band_bps": 10.0, "slippage_bands": {"SPY": bad}}, "SPY")


def order(symbol: str, side: str, quantity: int) -> tuple[str, OrderView]:
    ref = f"mr:2025-06:{symbol}:{side}"
    return ref, OrderView(ref, symbol, side, quantity, "rebalance", True, True, status="submitted")


def fill(ref: str, quantity: int, price: str, commission: str | None = "1.00") -> dict:
    symbol, side = ref.split(":")[2:]
    return {"exec_id": f"x-{ref}-{price}", "client_ref": ref, "symbol": symbol, "side": side,
            "quantity": quantity, "price": price, "commission": commission}  # fmt: skip


ORDERS = dict([order("SPY", "BUY", 100), order("AGG", "SELL", 50), order("EEM", "SELL", 400),
               order("QQQ", "BUY", 10), order("IEF", "BUY", 20)])  # fmt: skip
# Commissions are max(1.00, 0.005 * shares): 1.00 for every fill below.
FILLS = [
    fill("mr:2025-06:SPY:BUY", 100, "100.10"),
    fill("mr:2025-06:AGG:SELL", 50, "99.90"),
    fill("mr:2025-06:EEM:SELL", 200, "49.90"),  # two fills, 300 of 400: a partial
    fill("mr:2025-06:EEM:SELL", 100, "49.95"),
    fill("mr:2025-06:QQQ:BUY", 10, "201.00"),
]
CLOSES = {"SPY": D("99.50"), "AGG": D("100.20"), "EEM": D("50.10"), "QQQ": D("199.00")}
OPENS = {"SPY": D("100.00"), "AGG": D("100.00"), "EEM": D("50.00"), "QQQ": D("200.00")}
# symbol: filled, ratio, avg, vs close, vs open, dollars lost vs open, commission, flagged, status
EXPECTED = {
    "SPY": (100, "1.0000", "100.1000", "60.30", "10.00", "10.00", "1.00", False, "filled"),
    "AGG": (50, "1.0000", "99.9000", "29.94", "10.00", "5.00", "1.00", False, "filled"),
    # 14975 / 300 = 49.91667; lost 15000 - 14975 = 25 = 16.67 bps, inside EEM's own 20 bps
    "EEM": (300, "0.7500", "49.9167", "36.59", "16.67", "25.00", "2.00", False, "partial"),
    "QQQ": (10, "1.0000", "201.0000", "100.50", "50.00", "10.00", "1.00", True, "filled"),
}


def hand_rows():
    return compute_order_rows("2025-06", "2025-07-01", ORDERS, FILLS, (CLOSES, OPENS), COSTS)


def test_order_rows_when_filled_match_the_hand_computed_table():
    rows = {r.symbol: r for r in hand_rows()}
    for symbol, want in EXPECTED.items():
        r = rows[symbol]
        got = (r.filled, r.fill_ratio, r.avg_price, r.vs_close_bps, r.vs_open_bps,
               r.slippage_cost, r.commission, r.flagged, r.status)  # fmt: skip
        assert got == (want[0], *map(D, want[1:7]), *want[7:]), symbol
        assert r.band_bps == (D(20) if symbol == "EEM" else D(10))


def test_order_rows_when_nothing_filled_leave_slippage_blank_and_unflagged():
    ief = next(r for r in hand_rows() if r.symbol == "IEF")
    assert (ief.ordered, ief.filled, ief.fill_ratio) == (20, 0, D(0))
    assert ief.avg_price is ief.vs_open_bps is ief.slippage_cost is ief.commission is None
    assert not ief.flagged and ief.status == "submitted"


def test_order_rows_when_a_commission_is_missing_leave_the_commission_blank():
    ref = "mr:2025-06:SPY:BUY"
    fills = [fill(ref, 60, "100.10"), fill(ref, 40, "100.20", commission=None)]
    (spy,) = compute_order_rows("2025-06", None, dict([order("SPY", "BUY", 100)]), fills,
                                (CLOSES, OPENS), COSTS)  # fmt: skip
    assert spy.commission is None and spy.vs_open_bps == D("14.00")  # (6.00 + 8.00) / 10000


def test_cycle_summary_when_orders_differ_averages_worst_and_costs_by_hand():
    summary = compute_cycle_summary("2025-06", "2025-07-01", hand_rows())
    # |vs open| 10 + 10 + 16.67 + 50 = 86.67 over 4 measured orders; IEF never filled
    assert (summary.orders, summary.filled, summary.flagged) == (5, 4, 1)
    assert (summary.avg_abs_bps, summary.worst_abs_bps, summary.worst_symbol) == (
        D("21.67"), D("50.00"), "QQQ")  # fmt: skip
    assert (summary.avg_vs_open_bps, summary.worst_band_bps) == (D("21.67"), D(10))
    # vs close 60.30 + 29.94 + 36.59 + 100.50 = 227.33 / 4 = 56.8325, half-even to 56.83
    assert (summary.avg_vs_close_bps, summary.worst_vs_close_bps) == (D("56.83"), D("100.50"))
    # shares 100 + 50 + 300 + 10 + 0 of 100 + 50 + 400 + 10 + 20: 460 / 580 = 0.79310
    assert (summary.fill_ratio, summary.worst_fill_ratio) == (D("0.7931"), D(0))
    assert (summary.slippage_cost, summary.commissions, summary.total_cost) == (
        D("50.00"), D("5.00"), D("55.00"))  # fmt: skip


def test_cycle_summary_when_one_order_improved_signed_and_absolute_averages_differ():
    orders = dict([order("SPY", "BUY", 100), order("AGG", "SELL", 50)])
    fills = [fill("mr:2025-06:SPY:BUY", 100, "100.05"), fill("mr:2025-06:AGG:SELL", 50, "100.03")]
    rows = compute_order_rows("2025-06", None, orders, fills, ({}, OPENS), COSTS)
    summary = compute_cycle_summary("2025-06", None, rows)
    # SPY paid 5 bps over the open; AGG sold 3 bps above it: -3, a price improvement
    assert [(r.symbol, r.vs_open_bps) for r in rows] == [("SPY", D("5.00")), ("AGG", D("-3.00"))]
    assert (summary.avg_vs_open_bps, summary.avg_abs_bps) == (D("1.00"), D("4.00"))
    assert (summary.worst_abs_bps, summary.worst_symbol) == (D("5.00"), "SPY")
    assert summary.avg_vs_close_bps is None and summary.worst_vs_close_bps is None
    assert summary.slippage_cost == D("5.00") - D("1.50")  # 100 x 0.05 less 50 x 0.03


def test_report_when_symbols_have_own_bands_tabulates_each_symbol_against_its_band():
    frame = report_of(hand_rows()).symbols_frame()
    assert list(frame.index) == ["AGG", "EEM", "IEF", "QQQ", "SPY"]
    assert list(frame["band_bps"]) == [D(10), D(20), D(10), D(10), D(10)]
    assert list(frame["worst_abs_bps"].fillna("-")) == [D(10), D("16.67"), "-", D(50), D(10)]
    assert list(frame["flagged"]) == [0, 0, 0, 1, 0]
    assert list(report_of(hand_rows()).flagged_frame().index) == ["mr:2025-06:QQQ:BUY"]


def report_of(rows, cycle: str = "2025-06") -> SlippageReport:
    cycle_summary = compute_cycle_summary(cycle, "2025-07-01", rows)
    trailing = compute_cycle_summary("trailing 1 cycle(s)", None, rows)
    return SlippageReport(cycle, "2025-07-01", tuple(rows), tuple(rows), (cycle_summary,),
                          trailing, D(10))  # fmt: skip


def floats_in(value) -> list:
    if isinstance(value, float):
        return [value]
    if isinstance(value, dict):
        return [f for v in value.values() for f in floats_in(v)]
    if isinstance(value, list):
        return [f for v in value for f in floats_in(v)]
    return []


def test_report_when_an_order_is_out_of_band_flags_it_and_says_so_in_one_line():
    report = report_of(hand_rows())
    assert [r.symbol for r in report.flagged] == ["QQQ"]
    assert report.status is SlippageStatus.OUT_OF_BAND
    line = report.summary()
    assert "\n" not in line and "1 out of band" in line and "QQQ" in line and "+50.00" in line
    assert list(report.orders_frame().index) == list(ORDERS)
    assert list(report.cycles_frame().index) == ["2025-06"]


def test_report_when_made_a_payload_is_json_safe_with_decimal_strings():
    payload = report_of(hand_rows()).to_payload()
    assert floats_in(payload) == []
    assert json.loads(canonical_json(payload))["status"] == "OUT_OF_BAND"
    qqq = next(o for o in payload["rows"] if o["symbol"] == "QQQ")
    assert qqq["vs_open_bps"] == "50.00" and payload["flagged"] == ["mr:2025-06:QQQ:BUY"]


def test_plot_slippage_when_a_symbol_has_its_own_band_shades_the_default_and_dashes_its_own():
    figure = plot_slippage(report_of(hand_rows()))
    (ax,) = figure.axes
    (shade,) = ax.patches  # axhspan: the default band, -10 to +10 bps
    assert (shade.get_y(), shade.get_height()) == (-10.0, 20.0)
    dashed = {line.get_ydata()[0] for line in ax.lines if line.get_linestyle() == "--"}
    assert dashed == {-20.0, 20.0}  # EEM's own band
    labels = ax.get_legend_handles_labels()[1]
    assert "band ±10 bps" in labels and "EEM band ±20" in labels
    assert [t.get_text() for t in ax.texts] == ["QQQ"]  # the one order out of its band
    matplotlib.pyplot.close(figure)


def test_plot_slippage_when_a_cycle_buys_and_sells_puts_them_apart_on_its_category():
    figure = plot_slippage(report_of(hand_rows()))
    (ax,) = figure.axes
    assert [t.get_text() for t in ax.get_xticklabels()] == ["2025-06"]  # a category, not a date
    xs = {c.get_label(): set(c.get_offsets()[:, 0]) for c in ax.collections}
    assert xs["buy"] and all(x < 0 for x in xs["buy"])  # left of the 2025-06 tick at 0
    assert xs["sell"] and all(x > 0 for x in xs["sell"])  # and the sells right of it
    matplotlib.pyplot.close(figure)


def test_plot_costs_when_slippage_is_negative_stacks_commissions_from_zero():
    improved = compute_order_rows(
        "2025-07", "2025-08-01", dict([order("SPY", "BUY", 100)]),
        [fill("mr:2025-06:SPY:BUY", 100, "99.90")], (CLOSES, OPENS), COSTS,
    )  # fmt: skip
    cycles = (compute_cycle_summary("2025-06", None, hand_rows()),
              compute_cycle_summary("2025-07", None, improved))  # fmt: skip
    report = SlippageReport("2025-07", None, tuple(improved), (), cycles, cycles[1], D(10))
    figure = plot_costs(report)
    (ax,) = figure.axes
    slipped, fees = ax.containers
    # 2025-06: $50 lost, $5 commissions on top; 2025-07: $10 saved (below zero), $1 from zero
    assert [(b.get_y(), b.get_height()) for b in slipped] == [(0.0, 50.0), (0.0, -10.0)]
    assert [(b.get_y(), b.get_height()) for b in fees] == [(50.0, 5.0), (0.0, 1.0)]
    totals = ax.collections[0].get_offsets()[:, 1]
    assert list(totals) == [55.0, -9.0]
    matplotlib.pyplot.close(figure)


def test_report_when_no_order_filled_says_no_fills_yet_and_plots_anyway():
    report = report_of([r for r in hand_rows() if r.symbol == "IEF"])
    assert report.status is SlippageStatus.NO_FILLS and "no fills yet" in report.summary()
    for figure in (plot_slippage(report), plot_costs(report)):
        assert figure.axes
        matplotlib.pyplot.close(figure)


# -- fills against the quotes: hand-computed mids and half-spreads -------------------------------

SPREAD_COSTS = {"vs_mid_band_bps": 10.0, "vs_mid_bands": {"SPY": 5.0},
                "half_spread_band_bps": 5.0, "half_spread_bands": {"EEM": 8.0}}  # fmt: skip
QUOTES = {
    "open": {"quotes": {"SPY": {"bid": "100.00", "ask": "100.04", "at": "t1"},
                        "EEM": {"bid": "49.90", "ask": "49.96", "at": "t1"}},
             "unquoted": {"AGG": "no market data subscription", "QQQ": "IB gave no bid"}},
    "submission": {"quotes": {"AGG": {"bid": "99.80", "ask": "100.00", "at": "t0"}},
                   "unquoted": {}},
}  # fmt: skip
# symbol: quote judged by, mid, fill vs mid bps, its band, half-spread bps, its band, flagged
SPREADS = {
    # mid 100.02; 100.10 - 100.02 = 0.08 / 100.02 = 7.9984 bps, past SPY's own 5; 0.02 / 100.02
    "SPY": ("open", "100.02", "8.00", "5", "2.00", "5", True),
    # no quote after the open: the one at submission; 0.10 / 99.90 = 10.01 bps half-spread
    "AGG": ("submission", "99.90", "0.00", "10", "10.01", "5", True),
    # sold at 49.9167 under a mid of 49.93: 0.0133 / 49.93 = 2.66 bps; 0.03 / 49.93 = 6.01 bps
    "EEM": ("open", "49.93", "2.66", "10", "6.01", "8", False),
}


@pytest.mark.parametrize(
    ("bid", "ask", "bps"),
    [("99.98", "100.02", "2.00"), ("50.00", "50.10", "9.99"), ("70.00", "70.00", "0.00")],
)
def test_half_spread_when_quoted_is_half_the_spread_over_the_mid(bid, ask, bps):
    assert compute_half_spread_bps(D(bid), D(ask)) == D(bps)


def test_order_spreads_when_quoted_match_the_hand_computed_table():
    spreads = {r.symbol: r for r in compute_order_spreads(hand_rows(), QUOTES, SPREAD_COSTS)}
    assert sorted(spreads) == ["AGG", "EEM", "QQQ", "SPY"]  # IEF never filled: not judged
    for symbol, (quote, mid, vs_mid, mid_band, half, half_band, flagged) in SPREADS.items():
        r = spreads[symbol]
        got = (r.quote, r.mid, r.vs_mid_bps, r.vs_mid_band_bps, r.half_spread_bps,
               r.half_spread_band_bps, r.flagged)  # fmt: skip
        assert got == (quote, D(mid), D(vs_mid), D(mid_band), D(half), D(half_band), flagged)
    assert spreads["AGG"].submission_half_spread_bps == D("10.01")
    qqq = spreads["QQQ"]
    assert (qqq.quote, qqq.mid, qqq.vs_mid_bps, qqq.flagged) == (None, None, None, False)
    assert qqq.note == "not quoted: IB gave no bid"


def test_report_when_spreads_are_out_of_band_says_which_in_one_line():
    rows = hand_rows()
    spreads = tuple(compute_order_spreads(rows, QUOTES, SPREAD_COSTS))
    report = replace(report_of(rows), spreads=spreads)
    assert report.spread_status is SpreadStatus.OUT_OF_BAND
    assert [r.symbol for r in report.spread_flagged] == ["SPY", "AGG"]
    line = report.spread_summary()
    assert "\n" not in line and "2 out of band" in line and "not quoted: QQQ" in line
    assert "+8.00 bps" in line and floats_in(report.to_payload()) == []
    assert list(report.spreads_frame().index) == [r.client_ref for r in report.spreads]


# -- on the simulated broker -------------------------------------------------------------------
# The sample market rotates every month-end of 2025 (AGG, QQQ, AGG, VEU, AGG from July on): each
# cycle sells the last holding and buys the next at the following session's open.


def stamp(moment) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def run_cycle(cfg, year: int, month: int) -> str:
    """Decide the month-end, submit an hour before the next open, reconcile 45 minutes after."""
    calendar = open_calendar(cfg)
    decided = calendar.rebalance_session(year, month)
    ready_to_decide(cfg, decided)
    cycle = decide(cfg, decided).record["cycle_id"]
    opened = calendar.session_open(calendar.next_session(decided)).to_pydatetime()
    jobs.open_execution(cfg, cycle, stamp(opened - timedelta(hours=1))).submit()
    jobs.run_reconciliation(cfg, cycle, stamp(opened + timedelta(minutes=45)), alert=None)
    return cycle


def workbook(tmp_path: Path, **costs) -> Path:
    root = make_sample_workbook(tmp_path / "wb")
    if costs:
        config = root / "config.yaml"
        values = yaml.safe_load(config.read_text())
        values["costs"].update(costs)
        config.write_text(yaml.safe_dump(values, sort_keys=False))
    return root


def expected_bps(cfg, symbol: str, side: str, session: str) -> tuple[Decimal, Decimal]:
    """(fill price, bps vs the open) by the sim's rule: open moved 2 bps, to cents half-up."""
    import pandas as pd

    bars = open_store(cfg).load_bars("sample", symbol)
    raw = Decimal(str(float(bars.at[pd.Timestamp(session), "open"])))
    moved = raw * (1 + D("0.0002") if side == "BUY" else 1 - D("0.0002"))
    price = moved.quantize(D("0.01"), rounding=ROUND_HALF_UP)
    opening = raw.quantize(D("0.0001"))
    cost = price - opening if side == "BUY" else opening - price
    return price, (cost / opening * 10_000).quantize(D("0.01"))


def count(cfg, kind: EventKind, key: str) -> int:
    with open_ledger(cfg, create=False, readonly=True) as ledger:
        return sum(1 for e in ledger.events(kind=str(kind)) if e.key == key)


def test_read_when_the_sim_fills_at_the_open_measures_its_two_bps(tmp_path):
    cfg = load_config(workbook(tmp_path))
    run_cycle(cfg, 2025, 10)
    cycle = run_cycle(cfg, 2025, 11)
    report = read_slippage(cfg, cycle)
    assert report.status is SlippageStatus.WITHIN_BANDS and report.session == "2025-12-01"
    assert {(r.symbol, r.side) for r in report.rows} == {("VEU", "SELL"), ("AGG", "BUY")}
    for r in report.rows:
        price, bps = expected_bps(cfg, r.symbol, r.side, "2025-12-01")
        assert (r.avg_price, r.vs_open_bps) == (price, bps), r.symbol
        assert D(1) <= r.vs_open_bps <= D(3) and r.filled == r.ordered and not r.flagged
        assert r.commission == max(D("1.00"), (D("0.005") * r.filled).quantize(D("0.01")))
        assert r.decision_close is not None and r.vs_close_bps is not None
    check = write_slippage_check(cfg, report)
    assert check["passed"] is True and check["alert"] == {}
    assert write_slippage_check(cfg, read_slippage(cfg, cycle))["seq"] == check["seq"]
    assert count(cfg, EventKind.CHECK_RECORDED, "CheckRecorded:slippage_bands:2025-11") == 1
    assert count(cfg, EventKind.ALERT_SENT, "AlertSent:slippage:2025-11") == 0


def test_check_when_fills_are_out_of_band_records_failed_and_alerts_once(tmp_path):
    cfg = load_config(workbook(tmp_path, slippage_bps=25.0))
    cycle = run_cycle(cfg, 2025, 11)  # from cash: buy AGG only
    report = read_slippage(cfg, cycle)
    (agg,) = report.flagged
    assert agg.symbol == "AGG" and D(24) <= agg.vs_open_bps <= D(26)
    assert report.status is SlippageStatus.OUT_OF_BAND
    check = write_slippage_check(cfg, report)
    assert check["passed"] is False and check["alert"]["log"] == "sent"
    again = write_slippage_check(cfg, read_slippage(cfg, cycle))
    assert again["seq"] == check["seq"]
    with open_ledger(cfg, create=False, readonly=True) as ledger:
        recorded = ledger.get("CheckRecorded:slippage_bands:2025-11").payload
        alerted = ledger.get("AlertSent:slippage:2025-11").payload
    assert recorded["passed"] is False and recorded["check"] == "slippage_bands"
    assert recorded["cycle"] == "2025-11" and "AGG" in recorded["evidence"][0]
    assert alerted["severity"] == "warning" and alerted["events"] == [check["seq"]]
    assert count(cfg, EventKind.ALERT_SENT, "AlertSent:slippage:2025-11") == 1


def test_check_when_recorded_then_the_band_changes_refuses_to_record_other_figures(tmp_path):
    cfg = load_config(workbook(tmp_path, slippage_bps=25.0))
    cycle = run_cycle(cfg, 2025, 11)
    write_slippage_check(cfg, read_slippage(cfg, cycle))
    config = cfg.workbook / "config.yaml"
    values = yaml.safe_load(config.read_text())
    values["costs"]["slippage_bands"] = {"AGG": 30.0}
    config.write_text(yaml.safe_dump(values, sort_keys=False))
    relaxed = load_config(cfg.workbook)
    report = read_slippage(relaxed, cycle)
    assert report.flagged == [] and report.rows[0].band_bps == D(30)
    with pytest.raises(SlippageError, match="first record stands"):
        write_slippage_check(relaxed, report)


def test_check_when_nothing_has_filled_says_no_fills_yet_and_records_nothing(tmp_path):
    cfg = load_config(workbook(tmp_path))
    ready_to_decide(cfg, "2025-11-28")
    decide(cfg, "2025-11-28")
    report = read_slippage(cfg, "2025-11")
    assert report.status is SlippageStatus.NO_FILLS and report.rows == ()
    check = write_slippage_check(cfg, report)
    assert check["key"] is None and "no fills yet" in check["detail"]
    assert count(cfg, EventKind.CHECK_RECORDED, "CheckRecorded:slippage_bands:2025-11") == 0


@pytest.mark.slow
def test_read_when_several_cycles_ran_has_one_row_per_trailing_cycle(tmp_path):
    cfg = load_config(workbook(tmp_path))
    cycles = [run_cycle(cfg, 2025, month) for month in (8, 9, 10, 11)]
    report = read_slippage(cfg, "2025-11")
    frame = report.cycles_frame()
    assert list(frame.index) == cycles == ["2025-08", "2025-09", "2025-10", "2025-11"]
    assert list(frame["orders"]) == [1, 2, 2, 2]  # the first buys QQQ from cash
    assert len(report.history) == 7 and report.trailing.orders == 7
    assert list(read_slippage(cfg, "2025-11", trailing=2).cycles_frame().index) == cycles[2:]
    assert list(read_slippage(cfg, "2025-09").cycles_frame().index) == cycles[:2]
    for figure in (plot_slippage(report), plot_costs(report)):
        matplotlib.pyplot.close(figure)


# -- quotes on the simulated broker: recorded at submission and after the open, then judged -------


def quotes_of(cfg, cycle: str) -> dict:
    with open_ledger(cfg, create=False, readonly=True) as ledger:
        return {m: ledger.get(f"QuotesRecorded:{cycle}:{m}") for m in ("submission", "open")}


def model_quote(cfg, symbol: str, session: str, column: str, half: str) -> tuple[D, D]:
    """The spread model by hand: the stored print less and plus ``half`` bps, to cents."""
    import pandas as pd

    bars = open_store(cfg).load_bars("sample", symbol)
    price = Decimal(str(float(bars.at[pd.Timestamp(session), column])))
    step = price * D(half) / 10_000
    return ((price - step).quantize(D("0.01"), ROUND_HALF_UP),
            (price + step).quantize(D("0.01"), ROUND_HALF_UP))  # fmt: skip


def test_quotes_when_a_cycle_runs_are_recorded_at_submission_and_after_the_open(tmp_path):
    cfg = load_config(workbook(tmp_path))
    cycle = run_cycle(cfg, 2025, 11)  # from cash: buy AGG at the 2025-12-01 open
    recorded = quotes_of(cfg, cycle)
    early, late = recorded["submission"].payload, recorded["open"].payload
    assert (early["moment"], early["session"], early["broker"]) == ("submission", "2025-12-01",
                                                                    "sim")  # fmt: skip
    assert early["unquoted"] == {} and late["unquoted"] == {}
    bid, ask = model_quote(cfg, "AGG", "2025-11-28", "close", "1")  # 08:30 New York
    assert (early["quotes"]["AGG"]["bid"], early["quotes"]["AGG"]["ask"]) == (str(bid), str(ask))
    assert early["quotes"]["AGG"]["at"] == "2025-12-01T13:30:00.000000Z"
    bid, ask = model_quote(cfg, "AGG", "2025-12-01", "open", "1")  # 10:15 New York
    assert (late["quotes"]["AGG"]["bid"], late["quotes"]["AGG"]["ask"]) == (str(bid), str(ask))
    calendar = open_calendar(cfg)
    opened = calendar.session_open("2025-12-01").to_pydatetime()
    jobs.open_execution(cfg, cycle, stamp(opened - timedelta(minutes=30))).submit()
    jobs.run_reconciliation(cfg, cycle, stamp(opened + timedelta(minutes=50)), alert=None)
    assert {m: e.seq for m, e in quotes_of(cfg, cycle).items()} == {
        m: e.seq for m, e in recorded.items()}  # fmt: skip
    report = read_slippage(cfg, cycle)
    (agg,) = report.spreads
    mid = (bid + ask) / 2
    assert (agg.quote, agg.bid, agg.ask, agg.mid) == ("open", bid, ask, mid)
    assert agg.vs_mid_bps == ((agg.avg_price - mid) / mid * 10_000).quantize(D("0.01"))
    assert agg.half_spread_bps == ((ask - bid) / 2 / mid * 10_000).quantize(D("0.01"))
    assert report.spread_status is SpreadStatus.WITHIN_BANDS and not agg.flagged
    check = write_slippage_check(cfg, report)
    assert check["spread"]["passed"] is True and check["spread"]["alert"] == {}
    assert count(cfg, EventKind.CHECK_RECORDED, "CheckRecorded:spread_bands:2025-11") == 1


def test_spread_check_when_the_quoted_spread_is_out_of_band_records_failed_and_alerts_once(
    tmp_path,
):
    cfg = load_config(workbook(tmp_path, quote_half_spread_bps=8.0))  # the band is 5 bps
    cycle = run_cycle(cfg, 2025, 11)
    report = read_slippage(cfg, cycle)
    (agg,) = report.spread_flagged
    # 8 bps of about $117 is 9 cents either side once quoted in cents: about 7.7 bps
    assert agg.symbol == "AGG" and D(7) <= agg.half_spread_bps <= D(9)
    assert report.status is SlippageStatus.WITHIN_BANDS  # slippage itself is fine
    check = write_slippage_check(cfg, report)
    assert check["passed"] is True and check["alert"] == {}
    spread = check["spread"]
    assert spread["passed"] is False and spread["alert"]["log"] == "sent"
    again = write_slippage_check(cfg, read_slippage(cfg, cycle))["spread"]
    assert again["seq"] == spread["seq"]
    with open_ledger(cfg, create=False, readonly=True) as ledger:
        recorded = ledger.get("CheckRecorded:spread_bands:2025-11").payload
        alerted = ledger.get("AlertSent:spread:2025-11").payload
    assert recorded["passed"] is False and "half-spread" in recorded["evidence"][0]
    assert alerted["severity"] == "warning" and alerted["events"] == [spread["seq"]]
    assert alerted["subject"] == "spread 2025-11: 1 order(s) out of band"
    assert count(cfg, EventKind.ALERT_SENT, "AlertSent:spread:2025-11") == 1
    assert count(cfg, EventKind.ALERT_SENT, "AlertSent:slippage:2025-11") == 0


def test_spread_when_the_broker_quotes_nothing_records_that_and_judges_nothing(
    tmp_path, monkeypatch
):
    monkeypatch.setattr(SimBroker, "quotes", Broker.quotes)  # a broker that gives no quotes
    cfg = load_config(workbook(tmp_path))
    cycle = run_cycle(cfg, 2025, 11)
    for moment, event in quotes_of(cfg, cycle).items():
        assert event.payload["quotes"] == {}, moment
        assert event.payload["unquoted"] == {"AGG": "the sim broker gives no quotes"}, moment
    report = read_slippage(cfg, cycle)
    assert report.spread_status is SpreadStatus.NOT_QUOTED
    (agg,) = report.spreads
    assert (agg.quote, agg.bid, agg.ask, agg.vs_mid_bps, agg.flagged) == (None,) * 4 + (False,)
    assert "the sim broker gives no quotes" in agg.note
    check = write_slippage_check(cfg, report)
    assert check["passed"] is True and check["spread"]["key"] is None
    assert count(cfg, EventKind.CHECK_RECORDED, "CheckRecorded:spread_bands:2025-11") == 0
