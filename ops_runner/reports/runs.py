"""The runs index: one self-contained HTML page listing every executed notebook the ledger holds."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from html import escape
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import quote

from ops_runner.core.clock import format_seconds
from ops_runner.core.events import EventKind
from ops_runner.core.files import write_bytes_atomic
from ops_runner.core.hashing import read_sha256
from ops_runner.execution.slippage import JOB
from ops_runner.ledger import open_ledger
from ops_runner.ledger.projections import compute_open_incidents, compute_state
from ops_runner.reports.pages import write_html
from ops_runner.reports.slippage import compute_report_path, publish_report, read_report_source
from ops_runner.runtime.notebooks import read_scraps
from ops_runner.workbook.config import Config

log = logging.getLogger(__name__)

INDEX_NAME = "index.html"
RUNS_FOLDER = "runs"

STYLE = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5em; color: #222; }
h1 { margin-bottom: 0.2em; } h2 { margin-top: 1.6em; }
table { border-collapse: collapse; width: 100%; }
th, td { border-bottom: 1px solid #ddd; padding: 4px 8px; text-align: left; vertical-align: top; }
th { background: #f4f4f4; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
.meta span { margin-right: 1.5em; } .empty { color: #777; font-style: italic; }
.completed { color: #1a7f37; font-weight: 600; } .failed { color: #c62828; font-weight: 600; }
.missing { color: #b26a00; font-weight: 600; } .note { color: #b26a00; font-weight: normal; }
.reason { color: #444; font-weight: normal; }
.synthetic { background: #fff3cd; padding: 4px 8px; font-weight: 600; display: inline-block; }
.clean { color: #1a7f37; font-weight: 600; } .flagged { color: #c62828; font-weight: 600; }
.state { padding: 1px 6px; border-radius: 3px; background: #eee; font-weight: 600; }
.state-RUN { background: #d7f5dd; } .state-HALT, .state-SAFE_MODE { background: #fbd5d5; }
.state-DEGRADED_DATA, .state-BROKER_DOWN { background: #fde9c8; }
"""


@dataclass(frozen=True)
class RunRow:
    """One ArtifactRecorded event as the index shows it; links are relative to index.html."""

    seq: int
    payload: dict[str, Any]
    html_href: str | None
    notebook_href: str | None
    note: str = ""

    @property
    def missing(self) -> bool:
        return self.notebook_href is None


def _e(value: Any) -> str:
    return escape("" if value is None else str(value), quote=True)


def _href(target: Path, base: Path) -> str:
    relative = PurePosixPath(*Path(os.path.relpath(target, base)).parts)
    return quote(str(relative))


def _html_target(cfg: Config, notebook: Path, reports: Path) -> Path:
    """Return where a notebook's HTML goes: <reports>/runs/<its folder under ledger/runs>/."""
    try:
        relative = notebook.relative_to((cfg.path("ledger") / RUNS_FOLDER).resolve())
    except ValueError:  # registered outside ledger/runs: keep only the name
        relative = Path(notebook.name)
    return reports / RUNS_FOLDER / relative.with_suffix(".html")


def _is_current(html: Path, notebook: Path) -> bool:
    return html.exists() and html.stat().st_mtime_ns > notebook.stat().st_mtime_ns


def _run_row(cfg: Config, seq: int, payload: dict[str, Any], reports: Path) -> RunRow:

    notebook = _notebook_of(cfg, payload)
    if notebook is None:
        return RunRow(seq, payload, None, None)
    note = ""
    if payload.get("sha256") and read_sha256(notebook) != payload["sha256"]:
        note = "file changed since it was recorded"
    html = _html_target(cfg, notebook, reports)
    html_href: str | None = _href(html, reports)
    if not _is_current(html, notebook):
        try:
            write_html(notebook, html)
        except Exception as exc:  # one unreadable notebook must not hide the other runs
            log.warning("cannot render %s: %s", notebook, exc)
            html_href, note = None, f"not rendered: {type(exc).__name__}"
    return RunRow(seq, payload, html_href, _href(notebook, reports), note)


@dataclass(frozen=True)
class SlippageRow:
    """A cycle's latest completed slippage report as the index shows it."""

    cycle: str
    seq: int
    payload: dict[str, Any]  # its ArtifactRecorded
    status: str  # CLEAN, "N flagged", NO_FILLS, INCOMPLETE or unknown
    href: str | None  # the stable page, relative to index.html
    note: str = ""


def compute_slippage_status(completion: Any) -> str:
    """Return what the index says of a report: CLEAN, "N flagged", else its status as given."""
    if not isinstance(completion, dict) or not completion.get("status"):
        return "unknown"
    status = str(completion["status"])
    if status == "WITHIN_BANDS":
        return "CLEAN"
    if status == "OUT_OF_BAND":
        return f"{completion.get('flagged', '?')} flagged"
    return status


def _notebook_of(cfg: Config, payload: dict[str, Any]) -> Path | None:
    """Return the registered notebook when it is an .ipynb file inside the workbook or ledger."""
    relative = PurePosixPath(str(payload.get("path") or ""))
    notebook = (cfg.workbook / relative).resolve()
    # An absolute path is a ledger folder configured outside the workbook; nothing else is read.
    roots = (cfg.workbook.resolve(), cfg.path("ledger").resolve())
    inside = any(notebook.is_relative_to(root) for root in roots)
    return notebook if inside and relative.suffix == ".ipynb" and notebook.is_file() else None


def _slippage_rows(cfg: Config, events: list[Any], reports: Path) -> list[SlippageRow]:
    """The latest completed slippage_report run per cycle, newest cycle first, each published
    to its stable page (rendered again only when that page is not from this run)."""

    outputs = {e.payload.get("run_id"): e.payload.get("outputs") for e in events
               if e.kind == EventKind.JOB_COMPLETED and e.payload.get("job") == JOB}  # fmt: skip
    latest: dict[str, Any] = {}
    last: dict[str, Any] = {}
    for e in events:
        if e.kind != EventKind.ARTIFACT_RECORDED or e.payload.get("job") != JOB:
            continue
        cycle = str(e.payload.get("cycle") or "")
        last[cycle] = e
        if e.payload.get("outcome") == "completed":
            latest[cycle] = e
    rows = []
    for cycle in sorted(latest, reverse=True):
        event, note = latest[cycle], ""
        if last[cycle].seq != event.seq:
            note = f"a later run failed ({last[cycle].payload.get('run_id')})"
        notebook = _notebook_of(cfg, event.payload)
        completion = outputs.get(event.payload.get("run_id"))
        href: str | None = None
        try:
            if notebook is None:
                raise FileNotFoundError("notebook missing")
            if completion is None:  # run by hand, outside the tick: the notebook says it
                completion = read_scraps(notebook).get("completion")
            page = compute_report_path(cfg, cycle)
            source = read_report_source(page) or {}
            if source.get("sha256") != read_sha256(notebook):
                page = publish_report(cfg, notebook, cycle)
            href = _href(page.resolve(), reports)
        except Exception as exc:  # one bad report must not hide the others or the runs
            log.warning("cannot publish the slippage report of %s: %s", cycle, exc)
            note = "; ".join(filter(None, [f"not published: {exc}", note]))
        status = compute_slippage_status(completion)
        rows.append(SlippageRow(cycle, event.seq, event.payload, status, href, note))
    return rows


def _slippage_table(rows: list[SlippageRow]) -> str:
    head = "<tr><th>cycle</th><th>status</th><th>session</th><th>run id</th><th>report</th></tr>"
    body = []
    for row in rows:
        klass = "clean" if row.status == "CLEAN" else "flagged" if "flagged" in row.status else ""
        note = f'<br><span class="note">{_e(row.note)}</span>' if row.note else ""
        link = f'<a href="{_e(row.href)}">{_e(row.cycle)}.html</a>' if row.href else "-"
        body.append(
            f'<tr data-cycle="{_e(row.cycle)}" data-seq="{row.seq}"><td>{_e(row.cycle)}</td>'
            f'<td class="status {klass}">{_e(row.status)}{note}</td>'
            f"<td>{_e(row.payload.get('session'))}</td>"
            f"<td><code>{_e(row.payload.get('run_id'))}</code></td><td>{link}</td></tr>"
        )
    return _table("slippage", head, body, "no slippage report run yet")


def _duration(text: Any) -> str:
    try:
        return str(Decimal(str(text)).quantize(Decimal("0.1"), ROUND_HALF_UP))
    except (InvalidOperation, ValueError):
        return _e(text)


def _runs_table(rows: list[RunRow]) -> str:
    head = (
        "<tr><th>session</th><th>cycle</th><th>job</th><th>outcome</th><th>duration (s)</th>"
        "<th>run id</th><th>page</th><th>notebook</th></tr>"
    )
    body = []
    for row in rows:
        p = row.payload
        outcome = str(p.get("outcome") or "")
        klass = outcome if outcome in ("completed", "failed") else ""
        why = f'<br><span class="reason">{_e(p["reason"])}</span>' if p.get("reason") else ""
        note = f'<br><span class="note">{_e(row.note)}</span>' if row.note else ""
        if row.missing:
            links = '<td class="missing">missing</td><td class="missing">missing</td>'
        else:
            page = f'<a href="{_e(row.html_href)}">html</a>' if row.html_href else "-"
            links = f'<td>{page}</td><td><a href="{_e(row.notebook_href)}">ipynb</a></td>'
        body.append(
            f'<tr data-run-id="{_e(p.get("run_id"))}" data-seq="{row.seq}">'
            f"<td>{_e(p.get('session'))}</td><td>{_e(p.get('cycle') or '-')}</td>"
            f"<td>{_e(p.get('job'))}</td>"
            f'<td class="outcome {klass}">{_e(outcome)}{why}{note}</td>'
            f'<td class="num">{_duration(p.get("duration_seconds"))}</td>'
            f"<td><code>{_e(p.get('run_id'))}</code></td>{links}</tr>"
        )
    return _table("runs", head, body, "no executed notebook recorded yet")


def _table(table_id: str, head: str, body: list[str], empty: str) -> str:
    if not body:
        return f'<p class="empty" id="{table_id}-empty">{_e(empty)}</p>'
    return f'<table id="{table_id}"><thead>{head}</thead><tbody>{"".join(body)}</tbody></table>'


def _timeline_table(events: list[Any]) -> str:
    head = "<tr><th>recorded at</th><th>from</th><th>to</th><th>trigger</th><th>reason</th></tr>"
    body = [
        f'<tr data-seq="{e.seq}"><td>{_e(e.recorded_at)}</td>'
        f'<td><span class="state state-{_e(e.payload.get("from"))}">{_e(e.payload.get("from"))}'
        f'</span></td><td><span class="state state-{_e(e.payload.get("to"))}">'
        f"{_e(e.payload.get('to'))}</span></td><td>{_e(e.payload.get('trigger'))}</td>"
        f"<td>{_e(e.payload.get('reason'))}</td></tr>"
        for e in reversed(events)
        if e.kind == EventKind.STATE_CHANGED
    ]
    return _table("timeline", head, body, "no state change recorded yet")


def _incidents_table(incidents: list[dict[str, Any]]) -> str:
    head = "<tr><th>incident</th><th>category</th><th>summary</th><th>opened at</th></tr>"
    body = [
        f'<tr data-incident-id="{_e(i.get("incident_id"))}" data-seq="{_e(i.get("seq"))}">'
        f"<td>{_e(i.get('incident_id'))}</td>"
        f"<td>{_e(i.get('category'))}</td><td>{_e(i.get('summary'))}</td>"
        f"<td>{_e(i.get('opened_at'))}</td></tr>"
        for i in incidents
    ]
    return _table("incidents", head, body, "no open incident")


def write_runs_index(cfg: Config) -> Path:
    """Render every registered notebook to HTML and write <reports>/index.html. Returns its path.

    Opens the ledger read-only. A notebook already rendered and unchanged since is not rendered
    again; a registered notebook missing on disk is listed as missing. The "Slippage reports"
    section links each cycle's stable page (<reports>/slippage/<cycle>.html, published here
    when it is not from the cycle's latest completed run) with its status: CLEAN or the number
    of flagged orders. Raises LedgerMissing when the workbook has no ledger, LedgerCorrupt when
    it cannot be read.
    """

    with open_ledger(cfg, create=False, readonly=True) as ledger:
        events = list(ledger.events())
        head = ledger.head()
    reports = cfg.path("reports").resolve()  # links are computed between resolved paths
    artifacts = [e for e in events if e.kind == EventKind.ARTIFACT_RECORDED]
    rows = [_run_row(cfg, e.seq, e.payload, reports) for e in reversed(artifacts)]
    view = compute_state(events)
    generated = format_seconds(datetime.now(UTC))
    since = f" since {_e(view.since)}" if view.since else ""
    name = _e(cfg.values["workbook_name"])
    synthetic = (  # a demo workbook says what its prices are, on every page a person reads
        '<p class="synthetic" id="synthetic">SYNTHETIC sample market: not real prices</p>'
        if cfg.values["data"]["primary"] == "sample"
        else ""
    )
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{name}: runs</title>
<style>{STYLE}</style></head><body>
<header id="summary"><h1>{name}</h1>{synthetic}<p class="meta">
<span>state <span class="state state-{_e(view.state)}" id="state">{_e(view.state)}</span>{since}
</span><span>why: {_e(view.reason or "-")}</span></p><p class="meta">
<span>generated at <time id="generated-at">{generated}</time></span>
<span>ledger head seq <code id="head-seq">{head[0] if head else "empty"}</code></span>
<span>{len(rows)} run(s)</span></p></header>
<h2>Runs (newest first)</h2>
{_runs_table(rows)}
<h2>Slippage reports (newest cycle first)</h2>
{_slippage_table(_slippage_rows(cfg, events, reports))}
<h2>Open incidents</h2>
{_incidents_table(compute_open_incidents(events))}
<h2>State timeline (newest first)</h2>
{_timeline_table(events)}
</body></html>
"""
    target = reports / INDEX_NAME
    write_bytes_atomic(target, page.encode("utf-8"))
    log.info("runs index: %d run(s) -> %s", len(rows), target)
    return target
