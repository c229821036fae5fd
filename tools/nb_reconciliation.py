"""Cells of notebooks/reconciliation.ipynb (see tools/make_notebooks.py)."""

from nbformat.v4 import new_code_cell, new_markdown_cell

NAME = "reconciliation"

CELLS = [
    new_markdown_cell(
        "# Reconciliation\n\n"
        "**Purpose.** After the next session's open (plus the configured delay), fetch "
        "executions, commissions, positions and cash from the broker and compare them with "
        "the ledger: target vs filled, expected vs broker positions and cash, partial and "
        "missing fills. Duplicate reports count once; a missing position report is not a flat "
        "position. Clean: recorded. A break: SAFE_MODE and an incident; a break unresolved "
        "past its time limit: HALT.\n\n"
        "**Inputs.** The workbook's config, ledger and broker. Parameters: `workbook`, "
        "`cycle`, `now`.\n\n"
        "**Outputs.** The fills (with slippage against the open), breaks and positions tables; "
        "scraps `reconciliation` and `completion`; `FillRecorded` and `CheckRecorded` events."
    ),
    new_code_cell(
        'workbook = ""  # "": $OPS_RUNNER_HOME, else demo/ (make demo, SYNTHETIC)\n'
        'run_id = ""  # set by the tick or ops-runner run; "" by hand: a preview, records nothing\n'
        'cycle = "2025-11"  # orders for the 2025-12-01 open\n'
        'now = "2025-12-01T15:30:00Z"  # 10:30 New York; "" means the real clock',
        metadata={"tags": ["parameters"]},
    ),
    new_code_cell("import scrapbook as sb\n\nfrom ops_runner import jobs, notebooks, reports"),
    new_markdown_cell("## Workbook and broker"),
    new_code_cell("cfg = notebooks.open_workbook(workbook, run_id)\nreports.compute_banner(cfg)"),
    new_markdown_cell("## Fills\n\nPer order: intended, filled, price, commission, slippage."),
    new_code_cell(
        "report = jobs.run_reconciliation(cfg, cycle, now)\nprint(report.summary())\n"
        "report.to_frame()"
    ),
    new_markdown_cell("## Breaks"),
    new_code_cell("report.breaks_frame()"),
    new_markdown_cell("## Positions: ledger vs broker"),
    new_code_cell("report.positions_frame()"),
    new_markdown_cell("## Record"),
    new_code_cell(
        'sb.glue("reconciliation", report.to_payload())\n'
        'sb.glue("completion", notebooks.completion_record("reconciliation", cycle=cycle, '
        "status=str(report.status), state=str(report.state)))"
    ),
]
