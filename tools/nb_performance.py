"""Cells of notebooks/performance.ipynb (see tools/make_notebooks.py)."""

from nbformat.v4 import new_code_cell, new_markdown_cell

NAME = "performance"

CELLS = [
    new_markdown_cell(
        "# Performance: live vs research\n\n"
        "**Purpose.** Does production behave like research? The live equity curve folded from "
        "the ledger (fills, commissions, cash, marked at each session's close; between trades "
        "the books' dividends, owed from their ex-dates net of withholding, splits, interest "
        "and fees; for a ledger without them, the store's dividends and splits) against the "
        "research backtest of the same config from the same rebalance close with the same "
        "capital. Per month: the tracking difference (live - research) and where it came "
        "from, in bps of the month's starting equity: slippage (fills vs the backtest's "
        "price), commissions (paid vs modelled), interest and fees (booked in the ledger), "
        "cash drag (cash held beyond research's, times the market), rounding (the mix whole "
        "shares leave) and other, which makes the parts sum exactly to the total and holds "
        "what the ledger's dividends differ from the store's, named in the notes (the formulas "
        "are in `ops_runner.performance`). A month beyond the tolerance (50 bps by default) "
        "says production diverges.\n\n"
        "**Inputs.** The workbook's config (strategy, costs, research), ledger (opening "
        "balance, fills, decisions, the account between trades) and price store (raw and "
        "adjusted prices, dividends, splits). "
        "Parameters: `workbook`, `start`, `end` (empty: from the first funded rebalance to the "
        "last session with data).\n\n"
        "**Outputs.** The summary line, the equity chart, the attribution chart and the monthly "
        "table; scraps `performance` and `completion`. Nothing is written to the ledger."
    ),
    new_code_cell(
        'workbook = ""  # "": $OPS_RUNNER_HOME, else demo/ (make demo, SYNTHETIC)\n'
        'run_id = ""  # set by the tick or ops-runner run; "" by hand: a preview, records nothing\n'
        'start = ""  # "" from the first funded rebalance close; else an ISO date\n'
        'end = ""  # "" to the last session with data; else an ISO date',
        metadata={"tags": ["parameters"]},
    ),
    new_code_cell(
        "import scrapbook as sb\n\nfrom ops_runner import notebooks, performance, reports"
    ),
    new_code_cell("cfg = notebooks.open_workbook(workbook, run_id)\nreports.compute_banner(cfg)"),
    new_code_cell(
        "report = performance.read_performance(cfg, start or None, end or None)\n"
        "print(report.summary())"
    ),
    new_markdown_cell("## Live vs research equity"),
    new_code_cell("performance.plot_equity(report);"),
    new_markdown_cell(
        "## Tracking difference per month\n\n"
        "Bars: the parts (bps of the month's starting equity, + = live ahead); diamond: the "
        "total; dashed: the tolerance."
    ),
    new_code_cell("performance.plot_attribution(report);"),
    new_markdown_cell("## Months"),
    new_code_cell("print(*report.notes, sep='\\n')\nreport.months_frame()"),
    new_markdown_cell("## Workbook"),
    new_code_cell("reports.compute_banner(cfg)"),
    new_markdown_cell("## Record"),
    new_code_cell(
        'sb.glue("performance", report.to_payload())\n'
        'sb.glue("completion", notebooks.completion_record("performance", '
        "status=str(report.status), start=report.start, end=report.end, "
        "months=len(report.months)))"
    ),
]
