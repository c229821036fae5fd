"""Cells of notebooks/decision.ipynb (see tools/make_notebooks.py)."""

from nbformat.v4 import new_code_cell, new_markdown_cell

NAME = "decision"

CELLS = [
    new_markdown_cell(
        "# Decision\n\n"
        "**Purpose.** Decide the monthly rotation for one rebalance session (the last session of "
        "the month) from the bars known at its close, and record the Decision Record once: "
        "scores, selection, target weights, the prices used with their provenance, a snapshot "
        "of the exact input bars, the config hash and the code version. Deciding again with the "
        "same inputs returns the same record; other inputs for a decided session are an "
        "incident.\n\n"
        "**Inputs.** The workbook's `config.yaml` (universe and strategy) and its price store. "
        "Parameters: `workbook`, `session`.\n\n"
        "**Outputs.** The scores table, the ranking chart, the targets and the explanation; "
        "scraps `decision`, `targets` and `completion`; a `DecisionRecorded` ledger event."
    ),
    new_code_cell(
        'workbook = ""  # "": $OPS_RUNNER_HOME, else demo/ (make demo, SYNTHETIC)\n'
        'run_id = ""  # set by the tick or ops-runner run; "" by hand: a preview, records nothing\n'
        'session = "2025-11-28"  # the rebalance session (the demo decides 2025-11)',
        metadata={"tags": ["parameters"]},
    ),
    new_code_cell("import scrapbook as sb\n\nfrom ops_runner import decision, notebooks, reports"),
    new_markdown_cell("## Workbook, config and data sources"),
    new_code_cell("cfg = notebooks.open_workbook(workbook, run_id)\nreports.compute_banner(cfg)"),
    new_markdown_cell(
        "## Scores\n\nTotal return over the lookback, measured on month-end sessions."
    ),
    new_code_cell(
        "outcome = decision.decide(cfg, session)\n"
        'print("recorded now" if outcome.created else f"already decided (event {outcome.seq})")\n'
        "outcome.scores_frame()"
    ),
    new_code_cell("reports.plot_scores(outcome);"),
    new_markdown_cell("## Selection and targets"),
    new_code_cell("print(outcome.explanation)\noutcome.targets_frame()"),
    new_markdown_cell("## Record"),
    new_code_cell(
        'sb.glue("decision", outcome.record["decision"])\n'
        'sb.glue("targets", outcome.targets)\n'
        'sb.glue("completion", notebooks.completion_record("decision", session=session, '
        "seq=outcome.seq, created=outcome.created, targets=outcome.targets))"
    ),
]
