"""Cells of notebooks/execution.ipynb (see tools/make_notebooks.py)."""

from nbformat.v4 import new_code_cell, new_markdown_cell

NAME = "execution"

CELLS = [
    new_markdown_cell(
        "# Execution\n\n"
        "**Purpose.** Turn the cycle's Decision Record, the broker's positions and cash into an "
        "Execution Plan (whole shares, sells before buys, a cash buffer against overnight gaps, "
        "a minimum trade size, settlement-aware cash) and submit market-on-open orders for the "
        "next session inside the submission window. Submission is crash-safe: the plan and its "
        "intents are recorded first, every client reference is looked up at the broker, and "
        "only unsent intents go through the order gate.\n\n"
        "**Inputs.** The workbook's config, ledger (the Decision Record) and broker. Parameters: "
        "`workbook`, `cycle`, `now`.\n\n"
        "**Outputs.** The plan table, the cash walk, the submission results; scraps `plan`, "
        "`submission` and `completion`; `OrdersPlanned`, `OrderIntentRecorded` and "
        "`OrderSubmitted` ledger events."
    ),
    new_code_cell(
        'workbook = ""  # "": $OPS_RUNNER_HOME, else demo/ (make demo, SYNTHETIC)\n'
        'run_id = ""  # set by the tick or ops-runner run; "" by hand: a preview, records nothing\n'
        'cycle = "2025-11"  # decided on 2025-11-28; orders for the 2025-12-01 open\n'
        'now = "2025-12-01T13:30:00Z"  # 08:30 New York; "" means the real clock',
        metadata={"tags": ["parameters"]},
    ),
    new_code_cell("import scrapbook as sb\n\nfrom ops_runner import jobs, notebooks, reports"),
    new_markdown_cell("## Workbook and broker"),
    new_code_cell("cfg = notebooks.open_workbook(workbook, run_id)\nreports.compute_banner(cfg)"),
    new_markdown_cell("## Plan\n\nCurrent, target and delta per symbol at the decision close."),
    new_code_cell("job = jobs.open_execution(cfg, cycle, now)\njob.plan.to_frame()"),
    new_markdown_cell("## Cash walk\n\nWhere the money goes, residual from rounding included."),
    new_code_cell("job.cash_walk_frame()"),
    new_markdown_cell("## Submission"),
    new_code_cell(
        "submission = job.submit()\nprint(submission.detail or submission.status)\n"
        "submission.to_frame()"
    ),
    new_markdown_cell("## Record"),
    new_code_cell(
        'sb.glue("plan", job.plan.to_payload())\n'
        'sb.glue("submission", submission.to_payload())\n'
        'sb.glue("completion", notebooks.completion_record("execution", cycle=cycle, '
        "status=str(submission.status), state=submission.state, unsettled=submission.unsettled))"
    ),
]
