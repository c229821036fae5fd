"""Cells of notebooks/slippage_report.ipynb (see tools/make_notebooks.py)."""

from nbformat.v4 import new_code_cell, new_markdown_cell

NAME = "slippage_report"

CELLS = [
    new_markdown_cell(
        "# Slippage report\n\n"
        "**Purpose.** Once a cycle's orders have filled, compare each fill with the raw close "
        "the decision sized it with and with the order session's opening print, in basis "
        "points signed as a cost (positive: a buy paid more, a sell received less), and add up "
        "what the cycle cost in dollars (slippage against the open plus commissions). Orders "
        "whose |slippage vs the open| is beyond their band (`costs.slippage_band_bps`, or "
        "`costs.slippage_bands` per symbol) are flagged and alerted. The trailing 12 cycles "
        "show whether the expected costs still hold.\n\n"
        "**Inputs.** The workbook's config (bands), ledger (plan, orders, fills) and price store "
        "(raw opens and closes). Parameters: `workbook`, `cycle`.\n\n"
        "**Outputs.** The orders table, the slippage chart, the trailing-cycles and per-symbol "
        "tables, the out-of-band orders and the cost chart; scraps `slippage`, `check` and "
        "`completion`; a `CheckRecorded` event (check `slippage_bands`) once the cycle's fills "
        "are complete, and an `AlertSent` event when an order is out of band. The tick "
        "publishes this executed notebook as `reports/slippage/<cycle>.html`, linked from the "
        "runs index."
    ),
    new_code_cell(
        'workbook = ""  # "": $OPS_RUNNER_HOME, else demo/ (make demo, SYNTHETIC)\n'
        'run_id = ""  # set by the tick or ops-runner run; "" by hand: a preview, records nothing\n'
        'cycle = "2025-11"  # decided on 2025-11-28; filled at the 2025-12-01 open',
        metadata={"tags": ["parameters"]},
    ),
    new_code_cell("import scrapbook as sb\n\nfrom ops_runner import notebooks, reports, slippage"),
    new_markdown_cell("## Workbook"),
    new_code_cell("cfg = notebooks.open_workbook(workbook, run_id)\nreports.compute_banner(cfg)"),
    new_markdown_cell(
        "## Orders of the cycle\n\n"
        "Per order: ordered, filled and the fill ratio, decision close, opening print, average "
        "fill, slippage vs each (bps, + = cost), dollars lost vs the open, commission, band."
    ),
    new_code_cell(
        "report = slippage.read_slippage(cfg, cycle)\nprint(report.summary())\n"
        "report.orders_frame()"
    ),
    new_markdown_cell(
        "## Slippage vs the open over time\n\n"
        "Every order of the trailing cycles. The shaded area is the default band; dashed lines "
        "are the symbols with a band of their own; red orders are out of their band."
    ),
    new_code_cell("slippage.plot_slippage(report);"),
    new_markdown_cell(
        "## Trailing cycles\n\n"
        "One row per cycle, at most 12, oldest first (a cycle that traded nothing counts, at no "
        "cost): fill ratio, signed and absolute average and worst slippage vs the open (with the "
        "worst order's band) and vs the decision close, dollars, orders out of band."
    ),
    new_code_cell("print(report.trailing_summary())\nreport.cycles_frame()"),
    new_markdown_cell("## Per symbol, against its band\n\nThe same figures, symbol by symbol."),
    new_code_cell("report.symbols_frame()"),
    new_markdown_cell("## Out-of-band orders of the trailing cycles"),
    new_code_cell("report.flagged_frame()"),
    new_markdown_cell(
        "## Cost in dollars per cycle\n\n"
        "Slippage against the open with commissions stacked on top; the bar marks the total."
    ),
    new_code_cell("slippage.plot_costs(report);"),
    new_markdown_cell("## Check against the bands"),
    new_code_cell("check = slippage.write_slippage_check(cfg, report)\nprint(check['detail'])"),
    new_markdown_cell("## Record"),
    new_code_cell(
        'sb.glue("slippage", report.to_payload())\n'
        'sb.glue("check", check)\n'
        'sb.glue("completion", notebooks.completion_record("slippage_report", cycle=cycle, '
        "status=str(report.status), passed=check['passed'], flagged=len(report.flagged)))"
    ),
]
