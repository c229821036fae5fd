"""Cells of notebooks/incident.ipynb (see tools/make_notebooks.py)."""

from nbformat.v4 import new_code_cell, new_markdown_cell

NAME = "incident"

CELLS = [
    new_markdown_cell(
        "# Incident investigation\n\n"
        "**Purpose.** The runbook's section 4.1 for one incident: make sure the system is in "
        "SAFE_MODE (or HALT); snapshot positions, cash and open orders from the broker where "
        "reachable (else marked unavailable) beside the ledger's, the config hash, code "
        "version and broker connectivity; classify the incident (Data, Broker/API, "
        "Scheduler, Strategy logic, Market anomaly) with the evidence that points there; link "
        "the executed notebooks of the failing runs; list the latest ledger entries.\n\n"
        "**Inputs.** The workbook's config, ledger and broker (read-only). Parameters: "
        '`workbook`, `incident` ("" = the latest open one), `now`.\n\n'
        "**Outputs.** The tables below (account ids masked); scraps `incident` and "
        "`completion`; a `StateChanged` to SAFE_MODE only when an open incident found the "
        "system outside SAFE_MODE and HALT. Close it with `ops-runner incident close`."
    ),
    new_code_cell(
        'workbook = ""  # "": $OPS_RUNNER_HOME, else demo/ (make demo, SYNTHETIC)\n'
        'run_id = ""  # set by the tick or ops-runner run; "" by hand: a preview, records nothing\n'
        'incident = ""  # "" means the latest open incident\n'
        'now = "2025-12-01T15:30:00Z"  # the snapshot\'s clock; "" means the real clock',
        metadata={"tags": ["parameters"]},
    ),
    new_code_cell(
        "import scrapbook as sb\nfrom IPython.display import Markdown\n\n"
        "from ops_runner import incidents, notebooks, reports"
    ),
    new_markdown_cell("## Workbook"),
    new_code_cell("cfg = notebooks.open_workbook(workbook, run_id)\nreports.compute_banner(cfg)"),
    new_markdown_cell("## Incident and state"),
    new_code_cell(
        "found = incidents.investigate(cfg, incident, now)\n"
        'print("no incident open: nothing to investigate" if found is None else '
        "f\"investigating {found.incident['incident_id']}\")\n"
        "found.snapshot.facts_frame() if found else None"
    ),
    new_markdown_cell("## Classification\n\nThe cause the evidence points at, and every signal."),
    new_code_cell(
        "if found:\n"
        '    print(f"classification: {found.classification.label}", found.classification.scores)\n'
        "found.classification.to_frame() if found else None"
    ),
    new_markdown_cell("## Positions: broker vs ledger"),
    new_code_cell("found.snapshot.positions_frame() if found else None"),
    new_markdown_cell("## Cash and open orders"),
    new_code_cell(
        "display(found.snapshot.cash_frame()) if found else None\n"
        "found.snapshot.orders_frame() if found else None"
    ),
    new_markdown_cell(
        "## Orders: broker vs ledger\n\nThe latest cycle's orders as the ledger records them, "
        "beside the broker's (open and completed): an order placed by a run that died before "
        "recording it shows here, and reconciliation adopts it by its client reference."
    ),
    new_code_cell("found.snapshot.orders_vs_ledger_frame() if found else None"),
    new_markdown_cell("## Failing runs\n\nExecuted notebooks of the failed or missed runs."),
    new_code_cell(
        'Markdown(incidents.compute_run_links(cfg, found.runs) if found else "_No incident open._")'
    ),
    new_markdown_cell("## Latest ledger entries"),
    new_code_cell("found.snapshot.entries_frame() if found else None"),
    new_markdown_cell("## Record"),
    new_code_cell(
        'sb.glue("incident", found.to_payload() if found else {})\n'
        'sb.glue("completion", notebooks.completion_record("incident", '
        'incident=found.incident["incident_id"] if found else None, '
        "classification=found.classification.label if found else None, "
        "state=str(found.snapshot.state.state) if found else None))"
    ),
]
