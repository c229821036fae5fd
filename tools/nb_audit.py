"""Cells of notebooks/audit.ipynb (see tools/make_notebooks.py)."""

from nbformat.v4 import new_code_cell, new_markdown_cell

NAME = "audit"

CELLS = [
    new_markdown_cell(
        "# Weekly reconciliation audit\n\n"
        "**Purpose.** Compare every open position and the cash balance at the broker with the "
        "ledger's projection since inception (not only this cycle): a manual trade, a transfer, "
        "a late fee or a corrected old fill shows up here in any week. Cash is total cash "
        "(settlement does not change it), within a cent per order since inception. Clean: "
        "recorded. A break: SAFE_MODE and an incident, as in reconciliation. One audit per "
        "session: a re-run reads the recorded one back.\n\n"
        "**Inputs.** The workbook's config, ledger and broker (a read-only session). "
        "Parameters: `workbook`, `now` (the audit's session is the last one closed at `now`).\n\n"
        "**Outputs.** The positions, cash and breaks tables; scraps `audit` and `completion`; "
        "an `AuditRecorded` event (with a break, `IncidentOpened` and `StateChanged` too)."
    ),
    new_code_cell(
        'workbook = ""  # "": $OPS_RUNNER_HOME, else demo/ (make demo, SYNTHETIC)\n'
        'run_id = ""  # set by the tick or ops-runner run; "" by hand: a preview, records nothing\n'
        'now = "2025-12-06T15:00:00Z"  # Saturday: audits session 2025-12-05; "" the real clock',
        metadata={"tags": ["parameters"]},
    ),
    new_code_cell("import scrapbook as sb\n\nfrom ops_runner import audit, notebooks, reports"),
    new_markdown_cell("## Workbook and broker"),
    new_code_cell("cfg = notebooks.open_workbook(workbook, run_id)\nreports.compute_banner(cfg)"),
    new_markdown_cell("## Positions: ledger vs broker\n\nEvery symbol either side holds."),
    new_code_cell("report = audit.audit_job(cfg, now)\nprint(report.summary())\nreport.to_frame()"),
    new_markdown_cell("## Cash: ledger vs broker\n\nSettled cash is shown, never compared (T+1)."),
    new_code_cell("report.cash_frame()"),
    new_markdown_cell("## Breaks"),
    new_code_cell("report.breaks_frame()"),
    new_markdown_cell("## Record"),
    new_code_cell(
        'sb.glue("audit", report.to_payload())\n'
        'sb.glue("completion", notebooks.completion_record("audit", session=report.session, '
        "status=str(report.status), state=str(report.state)))"
    ),
]
