"""`ops-runner demo`: run what exists of the production path on the SYNTHETIC sample market."""

from __future__ import annotations

from datetime import date
from pathlib import Path

from ops_runner.config import init_workbook, load_config
from ops_runner.notebooks import NOTEBOOKS, run_notebook
from ops_runner.reports import write_html

DEFAULT_DEMO = NOTEBOOKS.parent / "demo"


def run_demo(workbook: Path | None = None, as_of: date | None = None) -> int:
    """Set up a sample workbook, import the sample market, run QA and the QA notebook.

    Returns the exit code: 0 when the notebook completed (whatever QA found), else the error's.
    """
    from ops_runner import qa
    from ops_runner.sources.sample import DEFAULT_END, write_sample

    root = (workbook or DEFAULT_DEMO).resolve()
    print(f"[1/4] workbook {root}")
    init_workbook(root)
    cfg = load_config(root)
    print("[2/4] price store: writing the SYNTHETIC sample market (not real prices)")
    report = write_sample(cfg.store(), calendar=cfg.calendar())
    print(f"      {len(report.imported)} symbols written, {len(report.unchanged)} unchanged")
    session = as_of or cfg.calendar().session_on_or_before(DEFAULT_END)
    result = qa.run_qa(cfg, session)
    print(f"[3/4] data QA as of {session}: {result.summary()}")
    output = cfg.path("ledger") / "runs" / session.isoformat() / "data_qa.ipynb"
    print("[4/4] executing notebooks/data_qa.ipynb with papermill in a fresh kernel")
    run = run_notebook("data_qa", output, {"workbook": str(root), "as_of": session.isoformat()})
    html = write_html(run.output, cfg.path("reports") / f"data_qa-{session.isoformat()}.html")
    print(f"      executed notebook: {run.output}")
    print(f"      sha256 {run.sha256}")
    print(f"      rendered: {html}")
    print(
        "Done. This demo runs what exists so far: data import, data QA and the QA notebook.\n"
        "The decision, execution, reconciliation and the ledger land with the next issues."
    )
    return 0
