"""Cells of notebooks/dr_drill.ipynb (see tools/make_notebooks.py)."""

from nbformat.v4 import new_code_cell, new_markdown_cell

NAME = "dr_drill"

CELLS = [
    new_markdown_cell(
        "# Disaster-recovery drill\n\n"
        "**Purpose.** The quarterly drill: restore the latest backup into a scratch workbook "
        "(`<workbook>/drills/<drill id>/`), verify its ledger chain, its executed notebooks "
        "and the live price data against the archived manifests, switch it to paper on the "
        "simulated broker (books rebuilt from the restored ledger), then run the last "
        "reconciled cycle again twice: every tick at the cycle's instants and every job of "
        "the cycle. It passes only if nothing new was ordered or decided, no job failed, "
        "reconciliation was CLEAN both times and the second pass's ticks changed nothing. "
        "What a PASS proves and what it does not is written at the top of "
        "`ops_runner/drill.py`. This executed notebook is the drill's report.\n\n"
        "**Inputs.** The live workbook's config, backups and price store (read only). "
        'Parameters: `workbook`, `archive` ("" = the latest backup), `now` (stamps the '
        "drill), and, when `ops-runner drill` runs it, `run_id` and `notebook` (this report's "
        "path).\n\n"
        "**Outputs.** The steps, the event counts before and after, the re-run jobs and ticks "
        "(account ids masked); scraps `drill` and `completion`; a `DrillRecorded` event in the "
        "LIVE ledger (a FAIL also sends an alert; the live state never changes). Without a "
        "backup the status is NO_BACKUP and nothing is recorded."
    ),
    new_code_cell(
        'workbook = ""  # "": $OPS_RUNNER_HOME, else demo/ (make demo, SYNTHETIC)\n'
        'archive = ""  # a backup archive; "" means the newest in the workbook\'s backups\n'
        'now = ""  # the drill\'s instant (ISO, UTC); "" means the real clock\n'
        'run_id = ""  # set by `ops-runner drill`: the run that records the drill\n'
        'notebook = ""  # set by `ops-runner drill`: where this executed notebook is kept',
        metadata={"tags": ["parameters"]},
    ),
    new_code_cell(
        "import pandas as pd\nimport scrapbook as sb\n\n"
        "from ops_runner import drill, notebooks, reports\n\n"
        'pd.set_option("display.max_colwidth", 200)  # each step\'s detail in full'
    ),
    new_markdown_cell("## Live workbook"),
    new_code_cell("cfg = notebooks.open_workbook(workbook, run_id)\nreports.compute_banner(cfg)"),
    new_markdown_cell(
        "## The drill\n\nOne line per step as it runs (the re-run jobs take a few minutes), "
        "then each step's outcome."
    ),
    new_code_cell(
        "report = drill.run_drill(cfg, archive, drill.read_now(now), progress=print)\n"
        "report.steps_frame()"
    ),
    new_markdown_cell(
        "## Ledger events before and after the two passes\n\n"
        "Counted in the scratch workbook's ledger and the simulated broker's books: order "
        "events, decisions, incidents and failed jobs must not grow; job completions grow by "
        "the re-runs."
    ),
    new_code_cell("report.counts_frame()"),
    new_markdown_cell("## Jobs run again\n\nExecuted notebooks are in the scratch workbook."),
    new_code_cell("report.reruns_frame()"),
    new_markdown_cell("## Ticks at the cycle's instants"),
    new_code_cell("report.ticks_frame()"),
    new_markdown_cell("## Record"),
    new_code_cell(
        "recorded = drill.record_drill(cfg, report, run_id or None, notebook or None)\n"
        "print(report.summary(), *report.notes, sep=chr(10))\n"
        'sb.glue("drill", report.to_payload(notebook or None))\n'
        'sb.glue("completion", notebooks.completion_record("dr_drill", '
        "status=str(report.status), drill_id=report.drill_id, cycle=report.cycle, "
        "seq=recorded.seq if recorded else None))"
    ),
]
