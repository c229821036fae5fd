"""Cells of notebooks/data_qa.ipynb (see tools/make_notebooks.py)."""

from nbformat.v4 import new_code_cell, new_markdown_cell

NAME = "data_qa"  # notebooks/<NAME>.ipynb; a NAME with a slash goes in a subfolder

CELLS = [
    new_markdown_cell(
        "# Data QA\n\n"
        "**Purpose.** Before a decision, check that the universe's prices are fresh through the "
        "session's close, complete, sane, free of unexplained jumps, consistent with their "
        "corporate actions, in agreement with the secondary provider, and still match the "
        "checksums recorded when they were imported. Blocking findings mean DEGRADED_DATA: "
        "no decision.\n\n"
        "**Inputs.** The workbook's `config.yaml` (universe, data sources, QA bands) and its "
        "price store. Parameters: `workbook`, `as_of`.\n\n"
        "**Outputs.** The findings table, a chart per flagged symbol, and scraps `findings`, "
        "`blocking` and `completion` for the orchestrator."
    ),
    new_code_cell(
        'workbook = ""  # "": $OPS_RUNNER_HOME, else demo/ (make demo, SYNTHETIC)\n'
        'run_id = ""  # set by the tick or ops-runner run; "" by hand: a preview, records nothing\n'
        'as_of = "2025-11-28"  # the session being decided (the demo decides 2025-11)',
        metadata={"tags": ["parameters"]},
    ),
    new_code_cell(
        "import scrapbook as sb\n\nfrom ops_runner import checks, notebooks, qa, reports"
    ),
    new_markdown_cell("## Workbook, config and data sources"),
    new_code_cell("cfg = notebooks.open_workbook(workbook, run_id)\nreports.compute_banner(cfg)"),
    new_markdown_cell("## Findings"),
    new_code_cell(
        "result = qa.run_qa(cfg, as_of)\n"
        "print(result.summary())\n"
        "qa.findings_frame(result.findings)"
    ),
    new_markdown_cell("## Flagged symbols\n\nRed lines mark the dates of findings."),
    new_code_cell("reports.plot_flagged(cfg, result);"),
    new_markdown_cell("## Record"),
    new_code_cell(
        "recorded = checks.record_data_qa(cfg, result, run_id or None)  # a decision needs it\n"
        'sb.glue("findings", qa.findings_frame(result.findings).astype(str).to_dict("records"))\n'
        'sb.glue("blocking", result.blocking)\n'
        'sb.glue("completion", notebooks.completion_record("data_qa", as_of=result.as_of, '
        "blocking=result.blocking, findings=len(result.findings), config_hash=cfg.hash, "
        "fingerprint=recorded.payload['fingerprint']))"
    ),
]
