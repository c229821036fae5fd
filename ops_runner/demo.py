"""`ops-runner demo`: one monthly cycle on the SYNTHETIC sample market and the simulated broker."""

from __future__ import annotations

from datetime import date
from pathlib import Path

from ops_runner.config import init_workbook, load_config
from ops_runner.notebooks import NOTEBOOKS, SAMPLE_DECIDED_SESSION, run_notebook
from ops_runner.reports import write_html

DEFAULT_DEMO = NOTEBOOKS.parent / "demo"
# The simulated broker's clock for the demo: inside the MOO window before the 2025-12-01 open,
# then after the open plus the reconciliation delay.
SUBMIT_AT = "2025-12-01T13:30:00Z"
RECONCILE_AT = "2025-12-01T15:30:00Z"


def run_demo(workbook: Path | None = None, session: date | None = None) -> int:
    """Run data QA, decision, execution and reconciliation notebooks on a sample workbook.

    Returns 0 when every notebook completed; raises the first job's error otherwise.
    """
    from ops_runner.sources.sample import write_sample

    root = (workbook or DEFAULT_DEMO).resolve()
    print(f"[1/6] workbook {root} (simulated broker, SYNTHETIC sample market: not real prices)")
    init_workbook(root)
    cfg = load_config(root)
    report = write_sample(cfg.store(), calendar=cfg.calendar())
    print(f"[2/6] price store: {len(report.imported)} symbols written, "
          f"{len(report.unchanged)} unchanged")  # fmt: skip
    day = (session or date.fromisoformat(SAMPLE_DECIDED_SESSION)).isoformat()
    cycle = day[:7]
    params = {"workbook": str(root)}
    steps = [
        ("data_qa", {"as_of": day}),
        ("decision", {"session": day}),
        ("execution", {"cycle": cycle, "now": SUBMIT_AT}),
        ("reconciliation", {"cycle": cycle, "now": RECONCILE_AT}),
    ]
    for number, (job, extra) in enumerate(steps, start=3):
        run = run_notebook(job, cfg.path("ledger") / "runs" / cycle / f"{job}.ipynb",
                           {**params, **extra})  # fmt: skip
        html = write_html(run.output, cfg.path("reports") / f"{job}-{cycle}.html")
        outcome = {k: v for k, v in run.completion.items() if k not in ("job", "config_hash")}
        print(f"[{number}/6] {job}: {outcome}")
        print(f"      {run.output.relative_to(root)} (sha256 {run.sha256[:16]}), {html.name}")
    print(
        "Done: decision -> market-on-open orders -> fills at the next open -> reconciliation,\n"
        f"all recorded in {root / 'ledger' / 'ledger.sqlite'}. Try `ops-runner --workbook "
        f"{root} status`,\n`... ledger verify` and `... replay --all`; open the executed "
        "notebooks in JupyterLab (`make lab`)."
    )
    return 0
