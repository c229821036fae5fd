"""The runs index page: built from a real ledger and real notebooks, read back by a real browser."""

from __future__ import annotations

import hashlib
import logging
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote

import nbformat
import pytest
from conftest import broken_links, inspect_in_browser

from ops_runner.core.events import EventKind, State, Trigger
from ops_runner.ledger import open_ledger
from ops_runner.ledger.init import init_workbook
from ops_runner.ledger.states import apply_trigger
from ops_runner.reports.runs import write_runs_index
from ops_runner.workbook.config import load_config

# run_id, job, session, cycle, duration_seconds, outcome, reason as recorded.
RUNS = [
    ("r1", "data_qa", "2025-11-26", "2025-11", "3.25", "completed", ""),
    ("r2", "decision", "2025-11-27", "2025-11", "7.5", "failed", "CellExecutionError in cell 4"),
    ("r3", "reconcile", "2025-11-28", None, "1", "completed", ""),
]
SHOWN_DURATION = {"r1": "3.3", "r2": "7.5", "r3": "1.0"}  # seconds to one decimal, half up


def write_notebook(path: Path, text: str) -> str:
    """Write a tiny executed-looking notebook; return its sha256."""
    cell = nbformat.v4.new_code_cell("print('hello')", execution_count=1)
    cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text=text)]
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nbformat.v4.new_notebook(cells=[cell]), str(path))
    return hashlib.sha256(path.read_bytes()).hexdigest()


def record_run(workbook: Path, run: tuple, write: bool = True) -> Path:
    """Write the run's notebook (unless ``write`` is false) and append its ArtifactRecorded."""
    run_id, job, session, cycle, duration, outcome, reason = run
    relative = f"ledger/runs/2025-11/{job}-{run_id}.ipynb"
    notebook = workbook / relative
    sha256 = write_notebook(notebook, f"{job} {run_id}") if write else "0" * 64
    payload = {
        "path": relative, "sha256": sha256, "job": job, "run_id": run_id,
        "slot": f"{job}:2025-11", "session": session, "cycle": cycle,
        "duration_seconds": duration, "outcome": outcome, "reason": reason,
    }  # fmt: skip
    with open_ledger(load_config(workbook)) as ledger:
        ledger.append(str(EventKind.ARTIFACT_RECORDED), f"ArtifactRecorded:{run_id}", payload)
    return notebook


@pytest.fixture
def workbook(tmp_path) -> Path:
    init_workbook(tmp_path / "wb", template="demo")
    return tmp_path / "wb"


@pytest.fixture
def world(workbook) -> Path:
    """Three recorded runs (one failed), an incident that moved the state to SAFE_MODE."""
    for run in RUNS:
        record_run(workbook, run)
    incident = {"incident_id": "x", "category": "data", "summary": "stale bars", "evidence": []}
    with open_ledger(load_config(workbook)) as ledger:
        apply_trigger(ledger, Trigger.INCIDENT, "decision notebook failed",
                      extra_events=[("IncidentOpened", "IncidentOpened:x", incident)])  # fmt: skip
    return workbook


class Page(HTMLParser):
    """The parts of the page a test reads: rows of each table by id, and every href."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: dict[str, list[dict]] = {}
        self.hrefs: list[str] = []
        self.ids: dict[str, str] = {}
        self._table: str | None = None
        self._row: dict | None = None
        self._cell: list[str] | None = None
        self._id_text: tuple[str, list[str]] | None = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "table":
            self._table = attrs.get("id")
            self.tables[self._table] = []
        elif tag == "tr" and self._table and "data-seq" in attrs:
            self._row = {"attrs": attrs, "cells": [], "classes": [], "links": []}
        elif tag == "td" and self._row is not None:
            self._cell = []
            self._row["classes"].append(attrs.get("class") or "")
        elif tag == "a" and "href" in attrs:
            self.hrefs.append(attrs["href"])
            if self._row is not None:
                self._row["links"].append(attrs["href"])
        if attrs.get("id") in ("state", "head-seq", "generated-at"):
            self._id_text = (attrs["id"], [])

    def handle_endtag(self, tag):
        if tag == "td" and self._cell is not None:
            self._row["cells"].append(" ".join("".join(self._cell).split()))
            self._cell = None
        elif tag == "tr" and self._row is not None:
            self.tables[self._table].append(self._row)
            self._row = None
        elif tag == "table":
            self._table = None
        elif self._id_text and tag in ("span", "code", "time"):
            self.ids[self._id_text[0]] = "".join(self._id_text[1]).strip()
            self._id_text = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)
        if self._id_text:
            self._id_text[1].append(data)


def parse(text: str) -> Page:
    page = Page()
    page.feed(text)
    return page


@pytest.mark.slow  # 1.5 s or more: left out of make test-fast
def test_runs_index_when_opened_in_headless_chromium_shows_runs_links_incident_and_state(
    world, tmp_path
):
    index = write_runs_index(load_config(world))
    seen = inspect_in_browser(index, tmp_path / "browser")
    dom = seen["dom"]
    page = parse(dom)
    assert seen["wide"] == [] and broken_links(index, seen) == []
    assert seen["verdict"]["bottom"] <= seen["height"]  # the failed run, without scrolling

    rows = page.tables["runs"]
    assert [r["attrs"]["data-run-id"] for r in rows] == ["r3", "r2", "r1"]  # newest first
    for row, (run_id, job, session, cycle, _, outcome, reason) in zip(
        rows, reversed(RUNS), strict=True
    ):
        session_cell, cycle_cell, job_cell, result_cell, duration_cell = row["cells"][1:6]
        assert (session_cell, cycle_cell, job_cell) == (session, cycle or "-", job)
        # no completion record in these notebooks: the runner's word, never a green one
        word = "FAILED" if outcome == "failed" else "COMPLETED"
        assert result_cell.startswith(word) and reason in result_cell
        assert duration_cell == SHOWN_DURATION[run_id]
        assert row["cells"][6] == run_id
        assert len(row["links"]) == 1 and "missing" not in row["cells"]  # its page
    failed = next(r for r in rows if r["attrs"]["data-run-id"] == "r2")
    assert failed["cells"][4].startswith("FAILED") and "tone-bad" in failed["classes"][4].split()
    assert "tone-bad" in failed["attrs"]["class"].split()
    # the failed run is listed again at the top, above the tables
    assert dom.index('id="attention"') < dom.index('id="runs"')
    assert 'data-run-id="r2"' in dom[dom.index('id="attention"') : dom.index('id="runs"')]
    rendered = [h for h in page.hrefs if h.endswith(".html")]
    expected = [f"runs/2025-11/{job}-{run_id}.html" for run_id, job, *_ in RUNS]
    assert sorted(set(rendered)) == expected
    assert not [h for h in page.hrefs if h.endswith(".ipynb")]  # pages, not notebook JSON

    [incident] = page.tables["incidents"]
    assert incident["cells"][:3] == ["x", "data", "stale bars"]
    [change] = page.tables["timeline"]
    assert change["cells"][1:] == ["RUN", "SAFE_MODE", "incident", "decision notebook failed"]
    assert page.ids["state"] == str(State.SAFE_MODE)
    with open_ledger(load_config(world), create=False, readonly=True) as ledger:
        assert page.ids["head-seq"] == str(ledger.head()[0])


def test_runs_index_when_notebook_missing_lists_it_as_missing(workbook):
    record_run(workbook, RUNS[0], write=False)
    index = write_runs_index(load_config(workbook))
    [row] = parse(index.read_text(encoding="utf-8")).tables["runs"]
    assert row["attrs"]["data-run-id"] == "r1"
    assert row["cells"][7:] == ["missing"] and row["links"] == []
    assert not (index.parent / "runs").exists()


def test_runs_index_when_reason_holds_markup_escapes_it(workbook):
    script = "<script>alert(1)</script>"
    hostile = ("r9", "data_qa", "2025-11-26", "<b>x</b>", "2", "failed", script)
    record_run(workbook, hostile, write=False)
    text = write_runs_index(load_config(workbook)).read_text(encoding="utf-8")
    assert "<script>" not in text and "<b>x</b>" not in text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text
    [row] = parse(text).tables["runs"]
    assert row["cells"][2] == "<b>x</b>" and script in row["cells"][4]


def test_runs_index_when_html_is_current_does_not_render_again(workbook):
    notebook = record_run(workbook, RUNS[0])
    cfg = load_config(workbook)
    html = write_runs_index(cfg).parent / "runs/2025-11/data_qa-r1.html"
    assert html.is_file() and "data_qa r1" in html.read_text(encoding="utf-8")
    before = html.stat().st_mtime_ns
    write_runs_index(cfg)
    assert html.stat().st_mtime_ns == before
    write_notebook(notebook, "data_qa r1 again")  # a newer notebook is rendered again
    write_runs_index(cfg)
    assert html.stat().st_mtime_ns > before and "r1 again" in html.read_text(encoding="utf-8")


def test_runs_index_when_ledger_is_empty_says_so(workbook):
    text = write_runs_index(load_config(workbook)).read_text(encoding="utf-8")
    assert 'id="runs-empty"' in text and 'id="incidents-empty"' in text
    assert 'id="timeline-empty"' in text and "RUN" in text
    assert 'id="slippage-empty"' in text


# -- the slippage reports section --------------------------------------------------------------


def scrap(name: str, data: dict) -> dict:
    """A display output as scrapbook's glue writes it."""
    return nbformat.v4.new_output(
        "display_data",
        data={"application/scrapbook.scrap.json+json":
              {"name": name, "data": data, "encoder": "json", "version": 1}},
        metadata={"scrapbook": {"name": name, "data": True, "display": False}},
    )  # fmt: skip


def record_report(
    workbook: Path,
    run_id: str,
    cycle: str,
    completion: dict | None,
    outcome: str = "completed",
    job_completed: bool = True,
) -> Path:
    """Write a slippage_report notebook (its completion glued unless None) and record the run
    as execute_job does (ArtifactRecorded) and, when ``job_completed``, as run_slot does."""
    relative = f"ledger/runs/{cycle}/slippage_report-{run_id}.ipynb"
    notebook = workbook / relative
    cell = nbformat.v4.new_code_cell("report.summary()", execution_count=1)
    cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text=f"report {run_id}")]
    if completion is not None:
        cell.outputs.append(scrap("completion", {"job": "slippage_report", "cycle": cycle,
                                                 **completion}))  # fmt: skip
    notebook.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nbformat.v4.new_notebook(cells=[cell]), str(notebook))
    about = {"job": "slippage_report", "run_id": run_id, "slot": f"slippage_report:{cycle}",
             "session": f"{cycle}-28", "cycle": cycle}  # fmt: skip
    artifact = {
        **about,
        "path": relative,
        "duration_seconds": "4.0",
        "outcome": outcome,
        "sha256": hashlib.sha256(notebook.read_bytes()).hexdigest(),
        "reason": "",
    }
    with open_ledger(load_config(workbook)) as ledger:
        ledger.append(str(EventKind.ARTIFACT_RECORDED), f"ArtifactRecorded:{run_id}", artifact)
        if job_completed and outcome == "completed":
            done = {
                **about,
                "done": True,
                "outcome": completion["status"],
                "outputs": {"job": "slippage_report", "cycle": cycle, **completion},
            }
            ledger.append(str(EventKind.JOB_COMPLETED), f"JobCompleted:{run_id}", done)
    return notebook


CLEAN = {"status": "WITHIN_BANDS", "passed": True, "flagged": 0}


def flagged(count: int) -> dict:
    return {"status": "OUT_OF_BAND", "passed": False, "flagged": count}


@pytest.fixture
def reports(workbook) -> dict[str, Path]:
    """Four cycles of slippage runs: re-runs, a later failure, one run by hand."""
    return {
        "s1": record_report(workbook, "s1", "2025-10", CLEAN),
        "s2": record_report(workbook, "s2", "2025-11", flagged(1)),
        "s3": record_report(workbook, "s3", "2025-11", flagged(2)),  # the latest completed
        "s4": record_report(workbook, "s4", "2025-11", None, outcome="failed"),
        # run by hand (no JobCompleted): the notebook's own completion record says it
        "s5": record_report(workbook, "s5", "2025-09", {"status": "NO_FILLS", "passed": None,
                                                        "flagged": 0}, job_completed=False),
    }  # fmt: skip


@pytest.mark.slow
def test_runs_index_when_slippage_reports_ran_links_each_cycles_latest_with_its_status(
    workbook, reports
):
    from ops_runner.reports.slippage import read_report_source

    index = write_runs_index(load_config(workbook))
    page = parse(index.read_text(encoding="utf-8"))
    rows = page.tables["slippage"]
    assert [r["attrs"]["data-cycle"] for r in rows] == ["2025-11", "2025-10", "2025-09"]
    statuses = [r["cells"][1] for r in rows]  # a note follows the status on its own line
    assert statuses == ["FLAGGED: 2 order(s)a later run failed (s4)", "WITHIN_BANDS", "NO_FILLS"]
    assert "flagged" in rows[0]["classes"][1] and "clean" in rows[1]["classes"][1]
    assert [r["cells"][3] for r in rows] == ["s3", "s1", "s5"]
    for row, run_id in zip(rows, ("s3", "s1", "s5"), strict=True):
        (href,) = row["links"]
        assert href == f"slippage/{row['attrs']['data-cycle']}.html"
        target = index.parent / unquote(href)
        assert target.is_file() and f"report {run_id}" in target.read_text(encoding="utf-8")
        stamp = read_report_source(target)
        assert stamp["run_id"] == run_id and stamp["notebook"].endswith(f"-{run_id}.ipynb")


@pytest.mark.slow
def test_runs_index_when_indexed_again_does_not_publish_the_reports_again(workbook, reports):
    cfg = load_config(workbook)
    pages = cfg.path("reports") / "slippage"
    write_runs_index(cfg)
    before = {p.name: p.stat().st_mtime_ns for p in pages.glob("*.html")}
    assert sorted(before) == ["2025-09.html", "2025-10.html", "2025-11.html"]
    write_runs_index(cfg)
    assert {p.name: p.stat().st_mtime_ns for p in pages.glob("*.html")} == before
    newer = record_report(workbook, "s6", "2025-10", flagged(1))  # a re-run replaces the page
    text = parse(write_runs_index(cfg).read_text(encoding="utf-8"))
    row = next(r for r in text.tables["slippage"] if r["attrs"]["data-cycle"] == "2025-10")
    assert row["cells"][1] == "FLAGGED: 1 order(s)" and row["cells"][3] == "s6"
    assert "report s6" in (pages / "2025-10.html").read_text(encoding="utf-8")
    assert newer.is_file()


@pytest.mark.slow
def test_runs_index_when_a_reports_notebook_is_missing_says_so_and_lists_the_rest(
    workbook, reports
):
    reports["s1"].unlink()
    page = parse(write_runs_index(load_config(workbook)).read_text(encoding="utf-8"))
    row = next(r for r in page.tables["slippage"] if r["attrs"]["data-cycle"] == "2025-10")
    assert row["cells"][1] == "WITHIN_BANDSnot published: notebook missing" and row["links"] == []
    assert len(page.tables["slippage"]) == 3


@pytest.mark.parametrize(("template", "says"), [("demo", True), ("config", False)])
def test_runs_index_when_the_workbook_is_a_demo_says_synthetic(tmp_path, template, says):
    init_workbook(tmp_path / "wb", template=template)
    text = write_runs_index(load_config(tmp_path / "wb")).read_text(encoding="utf-8")
    assert ('id="synthetic"' in text) is says
    assert ("SYNTHETIC sample market: not real prices" in text) is says


@pytest.mark.parametrize("inside_an_app", [False, True], ids=["process", "kernel-like"])
def test_page_when_a_chart_has_no_alt_text_renders_it_without_a_warning(
    tmp_path, caplog, capfd, inside_an_app
):
    """nbconvert warns of missing alt text on every chart through the logger it was given:
    traitlets' own, or inside a kernel the kernel app's (a drill's ticks publish pages there).
    Neither reaches the log; the chart is on the page."""
    from traitlets.config import Application

    from ops_runner.reports import pages

    png = (  # one pixel
        "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
    )
    cell = nbformat.v4.new_code_cell("plot()", execution_count=1)
    cell.outputs = [nbformat.v4.new_output("display_data", data={"image/png": png})]
    notebook = tmp_path / "chart.ipynb"
    nbformat.write(nbformat.v4.new_notebook(cells=[cell]), str(notebook))
    pages._html_exporter.cache_clear()  # made again, under the logger this case gives it
    app = Application.instance() if inside_an_app else None
    try:
        with caplog.at_level(logging.WARNING):
            page = pages.write_html(notebook, tmp_path / "chart.html")
    finally:
        pages._html_exporter.cache_clear()
        if app is not None:
            Application.clear_instance()
    assert f"data:image/png;base64,{png}" in page.read_text(encoding="utf-8")
    assert not [r for r in caplog.records if "Alternative text" in r.getMessage()]
    assert "Alternative text" not in capfd.readouterr().err  # an app's log writes to stderr


def test_page_when_rendered_opens_with_the_verdict_and_keeps_the_code_in_the_notebook(tmp_path):
    from ops_runner.reports.pages import write_html

    cell = nbformat.v4.new_code_cell("report = compute_the_drill()", execution_count=1)
    cell.outputs = [
        nbformat.v4.new_output("stream", name="stdout", text="steps shown to the reviewer"),
        scrap("drill", {"reasons": ["verify: archive truncated"], "summary": "drill x: FAIL"}),
        scrap("completion", {"job": "dr_drill", "status": "FAIL"}),
    ]
    notebook = tmp_path / "runs" / "dr_drill-r1.ipynb"
    notebook.parent.mkdir()
    nbformat.write(nbformat.v4.new_notebook(cells=[cell]), str(notebook))
    page = write_html(notebook, tmp_path / "pages" / "dr_drill-r1.html")
    text = page.read_text(encoding="utf-8")
    parsed = parse(text)
    verdict = text[
        text.index('id="verdict"') : text.index("</div></div>", text.index('id="verdict"'))
    ]
    assert "FAIL" in verdict and "verify: archive truncated" in verdict and "verdict-bad" in verdict
    assert text.index('id="verdict"') < text.index("steps shown to the reviewer")  # first
    assert "compute_the_drill" not in text  # the code is in the .ipynb, which the page links
    assert parsed.hrefs == ["../runs/dr_drill-r1.ipynb"]
    assert (page.parent / unquote(parsed.hrefs[0])).resolve() == notebook.resolve()


def test_runs_index_when_a_page_has_an_older_layout_renders_it_again(workbook):
    record_run(workbook, RUNS[0])
    cfg = load_config(workbook)
    html = write_runs_index(cfg).parent / "runs/2025-11/data_qa-r1.html"
    html.write_text("<html><body>a page from before the verdict banner</body></html>")
    write_runs_index(cfg)
    assert 'id="verdict"' in html.read_text(encoding="utf-8")


def test_runs_index_when_a_page_links_another_run_points_at_its_page_relatively(workbook):
    """An incident's page lists the failing runs' notebooks by absolute path (as the notebook
    shows them in JupyterLab); on the page they go to those runs' pages, relative, so the
    reports folder works copied or served."""
    failing = record_run(workbook, RUNS[0])
    cell = nbformat.v4.new_code_cell("Markdown(links)", execution_count=1)
    cell.outputs = [nbformat.v4.new_output(
        "display_data", data={"text/markdown": f"- **data_qa** [its notebook]({failing})"}
    )]  # fmt: skip
    relative = "ledger/runs/2025-10-31/incident-r9.ipynb"
    incident = workbook / relative
    incident.parent.mkdir(parents=True)
    nbformat.write(nbformat.v4.new_notebook(cells=[cell]), str(incident))
    payload = {
        "path": relative, "sha256": hashlib.sha256(incident.read_bytes()).hexdigest(),
        "job": "incident", "run_id": "r9", "slot": "incident:x", "session": "2025-10-31",
        "cycle": None, "duration_seconds": "1", "outcome": "completed", "reason": "",
    }  # fmt: skip
    with open_ledger(load_config(workbook)) as ledger:
        ledger.append(str(EventKind.ARTIFACT_RECORDED), "ArtifactRecorded:r9", payload)
    index = write_runs_index(load_config(workbook))
    page = index.parent / "runs/2025-10-31/incident-r9.html"
    hrefs = parse(page.read_text(encoding="utf-8")).hrefs
    assert "../2025-11/data_qa-r1.html" in hrefs and str(failing) not in hrefs
    assert all((page.parent / unquote(h)).is_file() for h in hrefs if not h.startswith("#"))
