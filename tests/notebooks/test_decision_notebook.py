"""The decision notebook executed by papermill: records the decision once and shows it."""

from __future__ import annotations

import json
from decimal import Decimal

import nbformat
import pytest
from conftest import make_sample_workbook, ready_to_decide

from ops_runner.core.events import EventKind
from ops_runner.ledger import open_ledger
from ops_runner.runtime.notebooks import run_notebook
from ops_runner.workbook.config import load_config

pytestmark = pytest.mark.notebook


def test_decision_notebook_when_run_twice_records_one_decision(tmp_path):
    cfg = load_config(make_sample_workbook(tmp_path / "wb"))
    ready_to_decide(cfg, "2025-12-31")  # the gates: baseline, a clean QA of the session
    # as the runner runs it (a run id: not a preview)
    params = {"workbook": str(cfg.workbook), "session": "2025-12-31", "run_id": "test-run"}
    first = run_notebook("decision", tmp_path / "first.ipynb", params)
    second = run_notebook("decision", tmp_path / "second.ipynb", params)
    assert first.completion["created"] is True and second.completion["created"] is False
    assert first.completion["seq"] == second.completion["seq"]
    targets = first.scraps["targets"]
    assert sum(Decimal(w) for w in targets.values()) == Decimal(1)
    with open_ledger(cfg) as ledger:
        recorded = list(ledger.events(kind=str(EventKind.DECISION_RECORDED)))
    assert len(recorded) == 1 and recorded[0].payload["decision"]["targets"] == targets
    outputs = json.dumps([c.get("outputs", []) for c in nbformat.read(first.output, 4).cells])
    assert "image/png" in outputs  # the ranking chart
    assert recorded[0].payload["decision"]["explanation"] in outputs

    # ... and its page, the one a reviewer signs (the same run, no second kernel): DECIDED
    # first, code hidden, every price used with the file it came from and that file's SHA-256,
    # the snapshot's SHA-256; it fits 1400 px, its chart loads, its links resolve.
    from conftest import broken_links, inspect_in_browser

    from ops_runner.reports.pages import write_html

    record = recorded[0].payload
    page = write_html(first.output, tmp_path / "pages" / "decision.html")
    shot = tmp_path / "decision.png"
    seen = inspect_in_browser(page, tmp_path / "browser", shot)
    print(f"screenshot decision: {shot}")
    verdict = seen["verdict"]
    assert verdict and verdict["bottom"] <= seen["height"] and "DECIDED" in verdict["text"]
    for symbol, weight in targets.items():
        assert f"{symbol} {Decimal(weight) * 100:.0f}%" in verdict["text"]
    dom = seen["dom"]
    assert "decision.decide(" not in dom  # the code stays in the .ipynb
    assert record["snapshot"]["sha256"] in dom
    for symbol, about in record["provenance"].items():
        assert symbol in dom and about["source_sha256"] in dom and about["stored_sha256"] in dom
    closes = [float(points[-1][1]) for points in record["decision"]["prices_used"].values()]
    assert all(f"${close:,.2f}" in dom for close in closes)  # each close as money
    assert ">None<" not in dom and ">NaN<" not in dom and "..." not in dom.split("<main")[-1]
    assert seen["wide"] == [] and seen["scroll_width"] <= seen["width"]
    assert seen["images"] and all(image["ok"] for image in seen["images"])  # the ranking chart
    assert broken_links(page, seen) == []
    assert any(link["href"] == "../first.ipynb" for link in seen["links"])
