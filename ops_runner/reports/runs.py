"""The runs index: one self-contained HTML page listing every executed notebook the ledger holds."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Mapping
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
from ops_runner.ledger.projections import (
    compute_cash,
    compute_equity,
    compute_open_incidents,
    compute_positions,
    compute_state,
)
from ops_runner.reports.formats import (
    MISSING,
    format_money,
    format_number,
    format_percent,
    format_when,
)
from ops_runner.reports.pages import PAGE_VERSION, read_page_version, write_html
from ops_runner.reports.slippage import compute_report_path, publish_report, read_report_source
from ops_runner.reports.verdicts import Tone, Verdict, compute_verdict
from ops_runner.runtime.notebooks import read_scraps
from ops_runner.workbook.config import Config

log = logging.getLogger(__name__)

INDEX_NAME = "index.html"
RUNS_FOLDER = "runs"

STYLE = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5em; color: #222; }
h1 { margin-bottom: 0.2em; } h2 { margin-top: 1.6em; }
table { border-collapse: collapse; width: 100%; }
th, td { border-bottom: 1px solid #ddd; padding: 4px 8px; text-align: left; vertical-align: top;
  overflow-wrap: break-word; } th, td.nw { white-space: nowrap; }
th { background: #f4f4f4; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
.meta span { margin-right: 1.5em; } .empty { color: #777; font-style: italic; }
.missing { color: #b26a00; font-weight: 600; } .note { color: #b26a00; font-weight: normal; }
.reason, .why { color: #444; font-weight: normal; }
.synthetic { background: #fff3cd; padding: 4px 8px; font-weight: 600; display: inline-block; }
.clean { color: #1a7f37; font-weight: 600; } .flagged { color: #c62828; font-weight: 600; }
.state { padding: 1px 6px; border-radius: 3px; background: #eee; font-weight: 600; }
.state-RUN { background: #d7f5dd; } .state-HALT, .state-SAFE_MODE { background: #fbd5d5; }
.state-DEGRADED_DATA, .state-BROKER_DOWN { background: #fde9c8; }
.word { font-weight: 700; padding: 1px 6px; border-radius: 3px; }
.tone-good .word { color: #1a7f37; background: #e6f6ea; }
.tone-bad .word { color: #fff; background: #c62828; }
.tone-warn .word { color: #8a5300; background: #fff3cd; }
.tone-info .word { color: #444; background: #eee; }
tr.tone-bad td { background: #fde2e2; }
#attention { border: 3px solid #c62828; background: #fde2e2; padding: 8px 14px; margin: 1em 0; }
#attention h2 { margin: 0 0 .3em; color: #c62828; font-size: 18px; }
#headline { display: grid; grid-template-columns: repeat(auto-fit, minmax(18em, 1fr));
  gap: 6px 24px; margin: 1em 0; }
#headline div { border-left: 4px solid #ddd; padding: 2px 10px; }
#headline .label { color: #666; font-size: 12px; text-transform: uppercase; display: block; }
#sparkline { vertical-align: middle; }
"""


@dataclass(frozen=True)
class RunRow:
    """One ArtifactRecorded event as the index shows it; links are relative to index.html."""

    seq: int
    payload: dict[str, Any]
    html_href: str | None
    notebook_href: str | None
    verdict: Verdict
    when: str = ""
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


def _page_of(cfg: Config, notebook: Path, reports: Path) -> Path | None:
    """The page an executed notebook under ledger/runs gets in the index, None for others."""
    runs = (cfg.path("ledger") / RUNS_FOLDER).resolve()
    return _html_target(cfg, notebook, reports) if notebook.is_relative_to(runs) else None


def _is_current(html: Path, notebook: Path) -> bool:
    return (
        html.exists()
        and html.stat().st_mtime_ns > notebook.stat().st_mtime_ns
        and read_page_version(html) == PAGE_VERSION  # a page of an older layout is made again
    )


def _read_notebook_scraps(notebook: Path) -> dict[str, Any]:
    """The notebook's scraps; none from a file that cannot be read (its row says so)."""
    try:
        return read_scraps(notebook)
    except (OSError, ValueError):
        return {}


def compute_run_verdict(payload: Mapping[str, Any], completion: Any, scraps: Any) -> Verdict:
    """Return the verdict of a recorded run: FAILED with the runner's reason when the runner
    recorded it failed, else its job's words from ``completion`` (the ledger's JobCompleted
    outputs, else the notebook's own record), COMPLETED when neither says more."""
    job = str(payload.get("job") or "")
    if payload.get("outcome") == "failed":
        return compute_verdict(job, completion, scraps, failed=str(payload.get("reason") or ""))
    if completion is None and not (scraps or {}).get("completion"):
        return Verdict("COMPLETED", Tone.INFO, "no completion record to read the result from")
    return compute_verdict(job, completion or (scraps or {}).get("completion"), scraps)


def _run_row(
    cfg: Config, seq: int, payload: dict[str, Any], reports: Path, facts: _RunFacts
) -> RunRow:

    run_id = payload.get("run_id")
    when = facts.started.get(str(run_id)) or facts.drills.get(str(payload.get("path"))) or ""
    completion = facts.completions.get(str(run_id))
    notebook = _notebook_of(cfg, payload)
    if notebook is None:
        verdict = compute_run_verdict(payload, completion, {})
        return RunRow(seq, payload, None, None, verdict, when)
    scraps = _read_notebook_scraps(notebook)
    verdict = compute_run_verdict(payload, completion, scraps)
    note = ""
    if payload.get("sha256") and read_sha256(notebook) != payload["sha256"]:
        note = "file changed since it was recorded"
    html = _html_target(cfg, notebook, reports)
    html_href: str | None = _href(html, reports)
    if not _is_current(html, notebook):
        try:
            write_html(
                notebook, html, verdict=verdict, page_of=lambda nb: _page_of(cfg, nb, reports)
            )
        except Exception as exc:  # one unreadable notebook must not hide the other runs
            log.warning("cannot render %s: %s", notebook, exc)
            html_href, note = None, f"not rendered: {type(exc).__name__}"
    return RunRow(seq, payload, html_href, _href(notebook, reports), verdict, when, note)


@dataclass(frozen=True)
class _RunFacts:
    """What the ledger says of each run beside its ArtifactRecorded: when it started on the
    tick's clock (run id -> instant; drills by notebook path) and its completion record."""

    started: dict[str, str]
    drills: dict[str, str]
    completions: dict[str, Any]


def _run_facts(events: list[Any]) -> _RunFacts:
    started: dict[str, str] = {}
    drills: dict[str, str] = {}
    completions: dict[str, Any] = {}
    for e in events:
        if e.kind == EventKind.JOB_STARTED and e.payload.get("at"):
            started[str(e.payload.get("run_id"))] = str(e.payload["at"])
        elif e.kind == EventKind.JOB_COMPLETED and isinstance(e.payload.get("outputs"), dict):
            if e.payload["outputs"]:  # the in-tick checks complete with no outputs
                completions[str(e.payload.get("run_id"))] = e.payload["outputs"]
        elif e.kind == EventKind.DRILL_RECORDED and e.payload.get("at"):
            drills[str(e.payload.get("notebook"))] = str(e.payload["at"])
    return _RunFacts(started, drills, completions)


INSTANT_KEYS = ("at", "closed_at", "issued_at")


def compute_event_instants(events: Iterable[Any]) -> dict[int, str]:
    """Return each event's instant on the clock the jobs ran by (seq -> ISO text).

    An event carrying its instant (``at``, ``closed_at``, ``issued_at``) says it; any other
    says its ``recorded_at``, which is that clock's too: the real one in production, the
    simulated one in a demo or a drill (``Config.simulated_now`` stamps the ledger). An
    operator's resume at 21:15 shows at 21:15, not at the instant of the job before it.
    """
    instants: dict[int, str] = {}
    for e in events:
        own = next((str(e.payload[k]) for k in INSTANT_KEYS if e.payload.get(k)), None)
        instants[e.seq] = own or str(e.recorded_at)
    return instants


@dataclass(frozen=True)
class SlippageRow:
    """A cycle's latest completed slippage report as the index shows it."""

    cycle: str
    seq: int
    payload: dict[str, Any]  # its ArtifactRecorded
    status: str  # WITHIN_BANDS, "FLAGGED: N order(s)", NO_FILLS, INCOMPLETE or unknown
    href: str | None  # the stable page, relative to index.html
    note: str = ""


def compute_slippage_status(completion: Any) -> str:
    """Return what the index says of a report, in the words its run's row uses (WITHIN_BANDS,
    FLAGGED with the number of orders), else its status as given."""
    if not isinstance(completion, dict) or not completion.get("status"):
        return "unknown"
    status = str(completion["status"])
    if status == "OUT_OF_BAND":
        return f"FLAGGED: {completion.get('flagged', '?')} order(s)"
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
        klass = "clean" if row.status == "WITHIN_BANDS" else ""
        klass = "flagged" if row.status.startswith("FLAGGED") else klass
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


def _verdict_cell(verdict: Verdict, extra: str = "") -> str:
    why = f' <span class="why">{_e(verdict.why)}</span>' if verdict.why else ""
    return (f'<td class="outcome tone-{verdict.tone}"><span class="word">{_e(verdict.word)}'
            f"</span>{why}{extra}</td>")  # fmt: skip


def _runs_table(rows: list[RunRow]) -> str:
    head = (
        "<tr><th>when</th><th>session</th><th>cycle</th><th>job</th><th>result</th>"
        "<th>duration (s)</th><th>run id</th><th>page</th></tr>"
    )
    body = []
    for row in rows:
        p = row.payload
        note = f'<br><span class="note">{_e(row.note)}</span>' if row.note else ""
        when = format_when(row.when) if row.when else MISSING
        # The page, which links its executed .ipynb (the audit record); the .ipynb itself only
        # where no page could be rendered, so the run is never without a link.
        if row.missing:
            links = '<td class="missing">missing</td>'
        elif row.html_href:
            links = f'<td class="nw"><a href="{_e(row.html_href)}">report</a></td>'
        else:
            links = f'<td class="nw"><a href="{_e(row.notebook_href)}">.ipynb</a></td>'
        body.append(
            f'<tr class="tone-{row.verdict.tone}" data-run-id="{_e(p.get("run_id"))}" '
            f'data-seq="{row.seq}" data-outcome="{_e(p.get("outcome"))}" '
            f'data-result="{_e(row.verdict.word)}"><td class="nw">{_e(when)}</td>'
            f'<td class="nw">{_e(p.get("session"))}</td><td class="nw">{_e(p.get("cycle") or "-")}'
            f'</td><td class="nw">{_e(p.get("job"))}</td>{_verdict_cell(row.verdict, note)}'
            f'<td class="num nw">{_duration(p.get("duration_seconds"))}</td>'
            f"<td><code>{_e(p.get('run_id'))}</code></td>{links}</tr>"
        )
    return _table("runs", head, body, "no executed notebook recorded yet")


def _table(table_id: str, head: str, body: list[str], empty: str) -> str:
    if not body:
        return f'<p class="empty" id="{table_id}-empty">{_e(empty)}</p>'
    return f'<table id="{table_id}"><thead>{head}</thead><tbody>{"".join(body)}</tbody></table>'


def _timeline_table(events: list[Any], instants: dict[int, str]) -> str:
    head = "<tr><th>when</th><th>from</th><th>to</th><th>trigger</th><th>reason</th></tr>"
    body = [
        f'<tr data-seq="{e.seq}"><td>{_e(format_when(instants.get(e.seq)))}</td>'
        f'<td><span class="state state-{_e(e.payload.get("from"))}">{_e(e.payload.get("from"))}'
        f'</span></td><td><span class="state state-{_e(e.payload.get("to"))}">'
        f"{_e(e.payload.get('to'))}</span></td><td>{_e(e.payload.get('trigger'))}</td>"
        f"<td>{_e(e.payload.get('reason'))}</td></tr>"
        for e in reversed(events)
        if e.kind == EventKind.STATE_CHANGED
    ]
    return _table("timeline", head, body, "no state change recorded yet")


def _incidents_table(incidents: list[dict[str, Any]], instants: dict[int, str]) -> str:
    head = "<tr><th>incident</th><th>category</th><th>summary</th><th>opened</th></tr>"
    body = [
        f'<tr class="tone-bad" data-incident-id="{_e(i.get("incident_id"))}" '
        f'data-seq="{_e(i.get("seq"))}"><td>{_e(i.get("incident_id"))}</td>'
        f"<td>{_e(i.get('category'))}</td><td>{_e(i.get('summary'))}</td>"
        f"<td>{_e(format_when(instants.get(int(i.get('seq') or 0), i.get('opened_at'))))}</td>"
        "</tr>"
        for i in incidents
    ]
    return _table("incidents", head, body, "no open incident")


def _attention(rows: list[RunRow]) -> str:
    """A red box above everything listing each run whose result is bad (failed, blocked,
    a break, a failed drill, flagged slippage), newest first, each linked to its page."""
    bad = [r for r in rows if r.verdict.tone is Tone.BAD]
    if not bad:
        return ""
    items = []
    for row in bad:
        p = row.payload
        what = f"{p.get('job')} {p.get('cycle') or p.get('session') or ''}".strip()
        link = f' <a href="{_e(row.html_href)}">report</a>' if row.html_href else ""
        items.append(
            f'<li data-run-id="{_e(p.get("run_id"))}"><strong>{_e(row.verdict.word)}</strong> '
            f"{_e(what)} ({_e(format_when(row.when) if row.when else p.get('session'))}): "
            f"{_e(row.verdict.why)}{link}</li>"
        )
    return (f'<section id="attention" data-verdict><h2>{len(bad)} run(s) need a look</h2>'
            f"<ul>{''.join(items)}</ul></section>")  # fmt: skip


def compute_sparkline(values: list[float], width: int = 240, height: int = 40) -> str:
    """Return an inline SVG polyline of ``values`` (oldest first), scaled to the box, or ""
    for fewer than two values."""
    if len(values) < 2:
        return ""
    low, high = min(values), max(values)
    span = (high - low) or 1.0
    step = (width - 4) / (len(values) - 1)
    points = " ".join(
        f"{2 + i * step:.1f},{2 + (height - 4) * (1 - (v - low) / span):.1f}"
        for i, v in enumerate(values)
    )
    return (
        f'<svg id="sparkline" width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
        f'role="img" aria-label="equity, {len(values)} marks"><polyline fill="none" '
        f'stroke="#1f6feb" stroke-width="1.5" points="{points}"/></svg>'
    )


def _headline(
    events: list[Any],
    instants: dict[int, str],
    reports: Path,
    slippage: list[SlippageRow],
    calm: bool,
) -> str:
    """State and why, holdings and cash, the last decision, drawdown with a sparkline, open
    incidents, and links to the performance page and the latest slippage page."""
    view = compute_state(events)
    since = f" since {format_when(instants.get(view.seq))}" if view.seq else ""
    positions = compute_positions(events)
    holdings = ", ".join(f"{s} {format_number(q)} sh" for s, q in positions.items()) or "none"
    equity = compute_equity(events)
    if equity.marks:
        day, last = equity.marks[-1]
        drawdown = (f"{format_percent(equity.drawdown)} below the peak of "
                    f"{format_money(equity.peak)} (equity {format_money(last)} on {day}; "
                    f"deepest seen {format_percent(equity.max_drawdown_seen)})")  # fmt: skip
        spark = compute_sparkline([float(v) for _, v in equity.marks])
    else:
        drawdown, spark = "no equity mark yet", ""
    decisions = [e for e in events if e.kind == EventKind.DECISION_RECORDED]
    if decisions:
        record = decisions[-1].payload
        decision = record.get("decision") or {}
        targets = ", ".join(f"{s} {format_percent(w, 0)}"
                            for s, w in (decision.get("targets") or {}).items())  # fmt: skip
        explanation = _e(decision.get("explanation"))
        last_decision = (f"{_e(record.get('session'))}: hold {_e(targets or 'nothing')}"
                         f'<br><span class="why">{explanation}</span>')  # fmt: skip
    else:
        last_decision = "none yet"
    incidents = compute_open_incidents(events)
    opened = (f'<a href="#incidents">{len(incidents)} open</a>' if incidents
              else "none open")  # fmt: skip
    performance = reports / "performance.html"
    links = [
        '<a id="performance-link" href="performance.html">performance: live vs research</a>'
        if performance.is_file()
        else "performance page not made yet (<code>ops-runner report performance</code>)"
    ]
    latest = next((row for row in slippage if row.href), None)
    if latest is not None:
        links.append(f'<a id="slippage-link" href="{_e(latest.href)}">slippage {_e(latest.cycle)}'
                     f"</a> ({_e(latest.status)})")  # fmt: skip
    attention = " data-verdict" if calm else ""  # with no bad run, the state is the verdict
    return f"""<section id="headline">
<div{attention}><span class="label">state</span>
<span class="state state-{_e(view.state)}" id="state">{_e(view.state)}</span>{_e(since)}<br>
<span class="why" id="state-why">{_e(view.reason or "-")}</span></div>
<div><span class="label">holdings (ledger)</span><span id="holdings">{_e(holdings)}</span>; cash
<span id="cash">{_e(format_money(compute_cash(events)))}</span></div>
<div><span class="label">last decision</span><span id="last-decision">{last_decision}</span></div>
<div><span class="label">drawdown from peak</span><span id="drawdown">{_e(drawdown)}</span>
<br>{spark}</div>
<div><span class="label">incidents</span><span id="open-incidents">{opened}</span></div>
<div><span class="label">reports</span>{" · ".join(links)}</div>
</section>"""


def write_runs_index(cfg: Config, now: datetime | None = None) -> Path:
    """Render every registered notebook to HTML and write <reports>/index.html. Returns its path.

    Opens the ledger read-only. ``now`` is the instant the page says it was made (default the
    real clock; a demo or a drill gives its simulated one). Each run shows its result in its
    job's words, and every bad result is listed again in a red box at the top; a headline says
    the state and why, holdings and cash, the last decision, the drawdown and open incidents.
    A notebook already rendered and unchanged since is not rendered again; a registered
    notebook missing on disk is listed as missing. The "Slippage reports" section links each
    cycle's stable page (<reports>/slippage/<cycle>.html, published here when it is not from
    the cycle's latest completed run) with its status in its run's words: WITHIN_BANDS, or
    FLAGGED with the number of orders flagged.
    Every link is relative, so the folder can be copied or served. Raises LedgerMissing when
    the workbook has no ledger, LedgerCorrupt when it cannot be read.
    """

    with open_ledger(cfg, create=False, readonly=True) as ledger:
        events = list(ledger.events())
        head = ledger.head()
    reports = cfg.path("reports").resolve()  # links are computed between resolved paths
    artifacts = [e for e in events if e.kind == EventKind.ARTIFACT_RECORDED]
    facts = _run_facts(events)
    rows = [_run_row(cfg, e.seq, e.payload, reports, facts) for e in reversed(artifacts)]
    instants = compute_event_instants(events)
    slippage = _slippage_rows(cfg, events, reports)
    calm = not any(r.verdict.tone is Tone.BAD for r in rows)
    generated = format_when(format_seconds(now or datetime.now(UTC)))
    name = _e(cfg.workbook_name)
    synthetic = (  # a demo workbook says what its prices are, on every page a person reads
        '<p class="synthetic" id="synthetic">SYNTHETIC sample market: not real prices</p>'
        if cfg.data.primary == "sample"
        else ""
    )
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{name}: runs</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>{STYLE}</style></head><body>
<header id="summary"><h1>{name}</h1>{synthetic}
{_attention(rows)}
{_headline(events, instants, reports, slippage, calm)}
<p class="meta"><span>generated at <time id="generated-at">{generated}</time></span>
<span>ledger head seq <code id="head-seq">{head[0] if head else "empty"}</code></span>
<span>{len(rows)} run(s)</span></p></header>
<h2>Runs (newest first)</h2>
{_runs_table(rows)}
<h2>Slippage reports (newest cycle first)</h2>
{_slippage_table(slippage)}
<h2>Open incidents</h2>
{_incidents_table(compute_open_incidents(events), instants)}
<h2>State timeline (newest first)</h2>
{_timeline_table(events, instants)}
</body></html>
"""
    target = reports / INDEX_NAME
    write_bytes_atomic(target, page.encode("utf-8"))
    log.info("runs index: %d run(s) -> %s", len(rows), target)
    return target
