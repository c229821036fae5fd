"""`ops-runner demo`: run what exists of the production path on the SYNTHETIC sample market."""

from __future__ import annotations

from datetime import date
from pathlib import Path

from ops_runner.config import init_workbook, load_config
from ops_runner.notebooks import NOTEBOOKS, run_notebook
from ops_runner.reports import write_html

DEFAULT_DEMO = NOTEBOOKS.parent / "demo"


def run_demo(workbook: Path | None = None, as_of: date | None = None) -> int:
    """Set up a sample workbook, import the sample market, run the QA and decision notebooks.

    Returns the exit code: 0 when both notebooks completed, else the error's (raised).
    """
    from ops_runner import qa
    from ops_runner.sources.sample import DEFAULT_END, write_sample

    root = (workbook or DEFAULT_DEMO).resolve()
    print(f"[1/5] workbook {root}")
    init_workbook(root)
    cfg = load_config(root)
    print("[2/5] price store: writing the SYNTHETIC sample market (not real prices)")
    report = write_sample(cfg.store(), calendar=cfg.calendar())
    print(f"      {len(report.imported)} symbols written, {len(report.unchanged)} unchanged")
    session = as_of or cfg.calendar().session_on_or_before(DEFAULT_END)
    result = qa.run_qa(cfg, session)
    print(f"[3/5] data QA as of {session}: {result.summary()}")
    runs = cfg.path("ledger") / "runs" / session.isoformat()
    params = {"workbook": str(root)}
    for step, job, extra in (
        ("[4/5]", "data_qa", {"as_of": session.isoformat()}),
        ("[5/5]", "decision", {"session": session.isoformat()}),
    ):
        print(f"{step} executing notebooks/{job}.ipynb with papermill in a fresh kernel")
        run = run_notebook(job, runs / f"{job}.ipynb", {**params, **extra})
        html = write_html(run.output, cfg.path("reports") / f"{job}-{session.isoformat()}.html")
        print(f"      executed notebook: {run.output}")
        print(f"      sha256 {run.sha256}; rendered: {html}")
        if job == "decision":
            state = "recorded in the ledger" if run.completion["created"] else "already decided"
            print(f"      decision {state}: {run.completion['targets']}")
    print(
        "Done. This demo runs what exists so far: data import, data QA, the decision and its\n"
        "ledger record. Orders on the simulated broker and reconciliation land with the next\n"
        "issues; `ops-runner status` and `ops-runner replay --all` work on this workbook now."
    )
    return 0
