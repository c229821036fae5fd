"""What a reviewer looks at: the workbook banner, findings plots, executed notebooks as HTML."""

from __future__ import annotations

import functools
import html
import logging
import os
import re
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, unquote

import pandas as pd

from ops_runner.market.prices import compute_split_adjusted, open_store
from ops_runner.reports.verdicts import Verdict, compute_verdict
from ops_runner.runtime.notebooks import PREVIEW_NOTE, compute_scraps
from ops_runner.workbook.config import Config, mask_account

if TYPE_CHECKING:
    from matplotlib.figure import Figure

MAX_PLOTTED_SYMBOLS = 6


def compute_banner(cfg: Config) -> pd.DataFrame:
    """Return a one-column table saying which workbook, config and data a notebook ran on, and
    first, for a notebook run by hand, that it is a preview that records nothing."""
    store = open_store(cfg)
    rows: dict[str, Any] = {}
    if cfg.preview:  # the first thing a notebook run by hand shows
        rows["PREVIEW"] = PREVIEW_NOTE
    rows |= {
        "workbook": cfg.workbook_name,
        "config hash": cfg.hash[:16],
        "primary data": cfg.data.primary or "(not set)",
        "secondary data": cfg.data.secondary or "(none)",
        "broker": f"{cfg.broker.kind} ({cfg.broker.mode})",
        "account": mask_account(cfg.broker.account),
        "universe": ", ".join(cfg.universe_symbols),
    }
    for role, source in zip(("primary", "secondary"), cfg.data.sources, strict=True):
        if source and source in store.sources():
            symbols = store.symbols(source)
            if symbols and store.read_manifest(source, symbols[0]).get("synthetic"):
                rows[f"{role} data"] = f"{source} — SYNTHETIC sample market, not real prices"
    return pd.DataFrame({"value": rows})


SEVERITY_STYLE = {
    "blocking": ("tab:red", "X"),
    "warning": ("tab:orange", "o"),
    "info": ("grey", "."),
}


def plot_flagged(cfg: Config, report: Any, sessions: int = 300) -> Figure | None:
    """Return a figure per flagged symbol: split-adjusted closes of both providers, findings marked.

    Each panel spans from a little before the symbol's oldest finding (or the last ``sessions``
    sessions when no finding has a date) to ``as_of``; markers sit on the primary's close, red
    for blocking, orange for warning, grey for info. Returns None when nothing is flagged, so a
    clean run shows no empty chart.
    """
    import matplotlib.pyplot as plt

    flagged: dict[str, list[Any]] = {}
    for finding in report.findings:
        flagged.setdefault(finding.symbol, []).append(finding)
    if not flagged:
        return None
    rank = {"blocking": 0, "warning": 1, "info": 2}
    names = sorted(
        flagged, key=lambda s: (min(rank.get(str(f.severity), 3) for f in flagged[s]), s)
    )[:MAX_PLOTTED_SYMBOLS]
    store = open_store(cfg)
    fig, axes = plt.subplots(len(names), 1, figsize=(10, 2.4 * len(names)), squeeze=False)
    end = pd.Timestamp(report.as_of)
    for ax, symbol in zip(axes[:, 0], names, strict=True):
        dated = [f for f in flagged[symbol] if f.date is not None]
        start = min(pd.Timestamp(f.date) for f in dated) - pd.Timedelta(days=45) if dated else None
        primary = None
        for source, style in ((report.primary, "-"), (report.secondary, "--")):
            if not source or symbol not in store.symbols(source):
                continue
            bars = compute_split_adjusted(store.load_bars(source, symbol)).loc[:end]
            bars = bars.loc[start:] if start is not None else bars.tail(sessions)
            if len(bars):
                ax.plot(bars.index, bars["close"], style, lw=0.8, label=source)
                primary = bars["close"] if primary is None else primary
        for finding in dated:
            when = pd.Timestamp(finding.date)
            color, marker = SEVERITY_STYLE.get(str(finding.severity), ("black", "*"))
            level = primary.asof(when) if primary is not None and len(primary) else None
            if level is not None and level == level:  # NaN before the first bar
                ax.plot([when], [level], marker=marker, color=color, ms=8, ls="none")
            else:
                ax.axvline(when, color=color, alpha=0.5, lw=1)
        checks = sorted({str(f.check) for f in flagged[symbol]})
        title = f"{symbol}: {len(flagged[symbol])} finding(s) ({', '.join(checks)})"
        ax.set_title(title, loc="left", fontsize=10)
        ax.set_ylabel("split-adj. close")
        ax.legend(loc="upper left", fontsize=8)
    extra = len(flagged) - len(names)
    if extra > 0:
        fig.suptitle(f"{extra} more flagged symbol(s) in the findings table", fontsize=9)
    fig.tight_layout()
    return fig


@functools.cache
def _html_exporter() -> Any:
    """One nbconvert HTMLExporter per process: a new one compiles its Jinja templates again
    (about 0.3 s of every page; the runs index renders dozens). Code cells' inputs and prompts
    are left out of the page: the executed .ipynb keeps them as the audit record, and the page
    links to it."""
    from nbconvert import HTMLExporter  # nbconvert and its templates: only where a page is made

    return HTMLExporter(exclude_input=True, exclude_input_prompt=True, exclude_output_prompt=True)


PAGE_META = "ops-runner-page"  # stamped in each page's head: the page layout it was made with
PAGE_VERSION = "2"  # 2: verdict banner first, inputs hidden

PAGE_STYLE = """
#verdict { font: 15px/1.45 system-ui, sans-serif; margin: 0 0 1em; padding: 12px 16px;
  border-left: 8px solid #777; background: #f2f2f2; color: #111; overflow-wrap: anywhere; }
#verdict .word { font-size: 22px; font-weight: 700; margin-right: .5em; }
#verdict .job { font-weight: 600; margin-right: .5em; }
#verdict .meta { font-size: 13px; color: #333; margin-top: 4px; }
#verdict a { color: #0645ad; text-decoration: underline; }
#verdict.verdict-good { border-color: #1a7f37; background: #e6f6ea; }
.verdict-good .word { color: #1a7f37; }
#verdict.verdict-bad { border-color: #c62828; background: #fde2e2; }
.verdict-bad .word { color: #c62828; }
#verdict.verdict-warn { border-color: #b26a00; background: #fff3cd; }
.verdict-warn .word { color: #8a5300; }
.jp-RenderedHTMLCommon table { table-layout: auto !important; max-width: 100%; }
.jp-RenderedHTMLCommon td, .jp-RenderedHTMLCommon th { white-space: normal;
  overflow-wrap: break-word; max-width: 40em; }
.jp-OutputArea-output pre { white-space: pre-wrap; overflow-wrap: anywhere; }
.jp-OutputArea-output img { max-width: 100%; height: auto; }
"""


def read_page_version(page: Path) -> str | None:
    """Return the page layout a rendered page was made with, or None (absent, older layout)."""
    try:
        with open(page, "rb") as handle:
            head = handle.read(2048).decode("utf-8", errors="replace")
    except OSError:
        return None
    found = re.search(rf'<meta name="{PAGE_META}" content="([^"]*)"', head)
    return found.group(1) if found else None


def _job_of(notebook: Path, scraps: dict[str, Any]) -> str:
    completion = scraps.get("completion")
    if isinstance(completion, dict) and completion.get("job"):
        return str(completion["job"])
    return notebook.stem.split("-", 1)[0]  # <job>-<run id>.ipynb


def _banner(job: str, verdict: Verdict, notebook: Path, located_at: Path) -> str:
    audit = Path(os.path.relpath(notebook, located_at.parent)).as_posix()
    return (
        f'<div id="verdict" class="verdict verdict-{verdict.tone}" role="status" data-verdict>'
        f'<span class="job">{html.escape(job)}</span>'
        f'<span class="word">{html.escape(verdict.word)}</span>'
        f'<span class="why">{html.escape(verdict.why)}</span>'
        f'<div class="meta">The executed notebook, with its code, is the audit record: '
        f'<a id="audit-record" href="{quote(audit)}">{html.escape(notebook.name)}</a></div></div>'
    )


_NOTEBOOK_HREF = re.compile(r'href="([^"#?:]+\.ipynb)"')


def _link_pages(
    body: str, notebook: Path, located_at: Path, page_of: Callable[[Path], Path | None] | None
) -> str:
    """Point each link to an executed notebook at that run's rendered page (``page_of``), and
    make every such link relative to where the page is served: a notebook's Markdown links
    other runs by absolute path, which no copied or served folder can follow."""

    def relink(found: re.Match[str]) -> str:
        href = unquote(found.group(1))
        linked = Path(href) if Path(href).is_absolute() else notebook.parent / href
        page = page_of(linked.resolve()) if page_of is not None else None
        goal = page if page is not None else linked
        relative = Path(os.path.relpath(goal.resolve(), located_at.parent)).as_posix()
        return f'href="{quote(relative)}"'

    return _NOTEBOOK_HREF.sub(relink, body)


def write_html(
    notebook: Path,
    target: Path,
    *,
    verdict: Verdict | None = None,
    located_at: Path | None = None,
    page_of: Callable[[Path], Path | None] | None = None,
) -> Path:
    """Render an executed notebook to HTML at ``target`` (written atomically). Returns target.

    The page opens with the run's verdict (``verdict``, else read from the notebook's own
    completion record and scraps), coloured, and a relative link to the executed notebook as
    ``located_at`` (default ``target``: where the page will be served from) sees it; code
    inputs are hidden. Links the notebook shows to other executed notebooks go to their pages
    where ``page_of`` names one, and are relative either way.
    """
    import nbformat

    exporter = _html_exporter()
    # nbconvert nags about alt text on every chart, through the logger it was given: traitlets'
    # own, or inside a kernel (a drill's ticks publish pages there) the kernel app's.
    exporter_log = getattr(exporter.log, "logger", exporter.log)
    level = exporter_log.level
    exporter_log.setLevel(logging.ERROR)
    with warnings.catch_warnings():
        # Scrapbook's scraps have no HTML form; they are read from the .ipynb, not the page.
        warnings.filterwarnings(
            "ignore", message=".*not able to be represented", category=UserWarning
        )
        try:
            notebook_node = nbformat.read(str(notebook), as_version=4)
            body, _ = exporter.from_notebook_node(notebook_node)
        finally:
            exporter_log.setLevel(level)
    scraps = compute_scraps(notebook_node)
    job = _job_of(notebook, scraps)
    if verdict is None:
        verdict = compute_verdict(job, scraps.get("completion"), scraps)
    head = (f'<meta name="{PAGE_META}" content="{PAGE_VERSION}">'
            f"<style>{PAGE_STYLE}</style>")  # fmt: skip
    body = re.sub(r"<head[^>]*>", lambda m: m.group(0) + head, body, count=1)
    where = (located_at or target).resolve()
    body = _link_pages(body, Path(notebook).resolve(), where, page_of)
    banner = _banner(job, verdict, Path(notebook).resolve(), where)
    body, found = re.subn(r"<main[^>]*>", lambda m: m.group(0) + banner, body, count=1)
    if not found:
        body = re.sub(r"<body[^>]*>", lambda m: m.group(0) + banner, body, count=1)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(target.suffix + ".tmp")
    tmp.write_text(body, encoding="utf-8")
    tmp.replace(target)
    return target


def compute_prices_frame(record: dict[str, Any]) -> pd.DataFrame:
    """Return the prices a Decision Record used, one row per symbol: the first and last
    session of its lookback with the adjusted close of each, and where they came from (source,
    source file, its SHA-256, the stored file's SHA-256)."""
    used = (record.get("decision") or {}).get("prices_used") or {}
    provenance = record.get("provenance") or {}
    rows = []
    for symbol, points in sorted(used.items()):
        first, last = (points[0], points[-1]) if points else ((None, None), (None, None))
        about = provenance.get(symbol) or {}
        rows.append({"symbol": symbol, "from": first[0], "adj_close_from": first[1],
                     "to": last[0], "adj_close_to": last[1], "source": about.get("source"),
                     "source_file": about.get("source_file"),
                     "source_sha256": about.get("source_sha256"),
                     "stored_sha256": about.get("stored_sha256")})  # fmt: skip
    return pd.DataFrame(rows).set_index("symbol") if rows else pd.DataFrame()


def compute_record_frame(record: dict[str, Any]) -> pd.DataFrame:
    """Return what makes a Decision Record reproducible, one row each: the snapshot of the
    input bars (path and SHA-256), the config hash, the code version and when it was decided."""
    snapshot = record.get("snapshot") or {}
    code = record.get("code_version") or {}
    dirty = " (uncommitted changes)" if code.get("git_dirty") else ""
    rows = {
        "snapshot": snapshot.get("path"),
        "snapshot SHA-256": snapshot.get("sha256"),
        "config hash": record.get("config_hash"),
        "code version": f"{code.get('package')} ({code.get('git_commit')}){dirty}",
        "strategy": record.get("strategy"),
        "decided at": record.get("decided_at"),
    }
    return pd.DataFrame({"value": rows})


def plot_scores(outcome: Any) -> Figure:
    """Return the ranking chart of a decision: each asset's score, the hurdle, what was chosen."""
    import matplotlib.pyplot as plt

    scores = outcome.scores_frame()
    values = scores["score"].astype(float).sort_values(ascending=True)
    targets = outcome.targets
    colors = ["tab:green" if s in targets else "tab:grey" for s in values.index]
    fig, ax = plt.subplots(figsize=(8, 0.45 * len(values) + 1.2))
    ax.barh(values.index, values.to_numpy() * 100, color=colors)
    hurdle = outcome.record["decision"].get("hurdle")
    if hurdle is not None:
        ax.axvline(float(hurdle) * 100, color="tab:red", ls="--", lw=1, label="hurdle")
        ax.legend(loc="lower right", fontsize=8)
    ax.axvline(0, color="black", lw=0.5)
    ax.set_xlabel("score (% total return over the lookback)")
    chosen = ", ".join(f"{s} {float(w):.0%}" for s, w in targets.items())
    ax.set_title(f"{outcome.record['session']}: hold {chosen}", loc="left", fontsize=10)
    fig.tight_layout()
    return fig


def plot_equity(equity: pd.Series, reference: pd.Series | None = None, title: str = "") -> Figure:
    """Return the equity curve on a log scale, beside a reference such as buy-and-hold."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(10, 4))
    ax.plot(equity.index, equity.to_numpy(), lw=1.2, label=str(equity.name or "strategy"))
    if reference is not None:
        ax.plot(reference.index, reference.to_numpy(), lw=0.9, color="grey",
                label=str(reference.name or "reference"))  # fmt: skip
    ax.set_yscale("log")
    ax.set_ylabel("equity (log scale)")
    ax.legend(loc="upper left", fontsize=8)
    ax.set_title(title or f"equity {equity.index[0]:%Y-%m-%d} to {equity.index[-1]:%Y-%m-%d}",
                 loc="left", fontsize=10)  # fmt: skip
    fig.tight_layout()
    return fig


def plot_drawdown(equity: pd.Series) -> Figure:
    """Return the drawdown from the running peak in percent, the deepest point marked."""
    import matplotlib.pyplot as plt

    drawdown = (equity / equity.cummax() - 1.0) * 100
    fig, ax = plt.subplots(figsize=(10, 2.8))
    ax.fill_between(drawdown.index, drawdown.to_numpy(), 0, color="tab:red", alpha=0.4, lw=0)
    worst = drawdown.idxmin()
    ax.annotate(f"{drawdown[worst]:.1f}% on {worst:%Y-%m-%d}", (worst, drawdown[worst]),
                fontsize=8, xytext=(5, 5), textcoords="offset points")  # fmt: skip
    ax.set_ylabel("drawdown (%)")
    ax.set_title("drawdown from the running peak", loc="left", fontsize=10)
    fig.tight_layout()
    return fig


def plot_monthly_heatmap(equity: pd.Series) -> Figure:
    """Return a year x month heatmap of the calendar-month returns (%), each year's total beside."""
    import matplotlib.pyplot as plt

    monthly = equity.resample("ME").last().pct_change().iloc[1:] * 100
    table = monthly.groupby([monthly.index.year, monthly.index.month]).first().unstack()
    table = table.reindex(columns=range(1, 13))
    year_end = equity.groupby(equity.index.year).last()
    # The first year runs from the first session, not from January.
    yearly = ((year_end / year_end.shift().fillna(equity.iloc[0]) - 1) * 100).reindex(table.index)
    limit = max(float(abs(table).max().max()), 1.0)
    fig, ax = plt.subplots(figsize=(11, 0.35 * len(table) + 1.2))
    ax.imshow(table.to_numpy(), cmap="RdYlGn", vmin=-limit, vmax=limit, aspect="auto")
    for (row, col), value in pd.DataFrame(table.to_numpy()).stack().dropna().items():
        ax.text(col, row, f"{value:.1f}", ha="center", va="center", fontsize=7)
    for row, value in enumerate(yearly.to_numpy()):
        ax.text(12.2, row, f"{value:+.1f}%", va="center", fontsize=8)
    ax.set_xticks(range(12), ["J", "F", "M", "A", "M", "J", "J", "A", "S", "O", "N", "D"])
    ax.set_yticks(range(len(table)), [str(y) for y in table.index])
    ax.set_xlim(-0.5, 13.3)
    ax.set_title("monthly returns (%), year's total at right", loc="left", fontsize=10)
    fig.tight_layout()
    return fig


def plot_sweep_heatmap(
    table: pd.DataFrame,
    metric: str = "sharpe",
    rows: str = "lookback_months",
    columns: str = "top_n",
    aggfunc: str = "median",
) -> Figure:
    """Return a heatmap of a sweep table's ``metric`` over ``rows`` x ``columns``.

    Combinations that differ only in other parameters are summarised by ``aggfunc`` (named in
    the title), so one cell never hides a lucky or unlucky neighbour.
    """
    import matplotlib.pyplot as plt

    grid = table.pivot_table(index=rows, columns=columns, values=metric, aggfunc=aggfunc)
    shown = grid * 100 if metric in ("cagr", "volatility", "max_drawdown", "turnover") else grid
    fig, ax = plt.subplots(figsize=(1.1 * len(grid.columns) + 2.5, 0.5 * len(grid) + 1.5))
    image = ax.imshow(shown.to_numpy(dtype=float), cmap="RdYlGn", aspect="auto")
    fig.colorbar(image, ax=ax, fraction=0.05)
    for (row, col), value in pd.DataFrame(shown.to_numpy(dtype=float)).stack().dropna().items():
        ax.text(col, row, f"{value:.2f}", ha="center", va="center", fontsize=8)
    ax.set_xticks(range(len(grid.columns)), [str(c) for c in grid.columns])
    ax.set_yticks(range(len(grid.index)), [str(r) for r in grid.index])
    ax.set_xlabel(columns)
    ax.set_ylabel(rows)
    others = len(table) // max(grid.notna().to_numpy().sum(), 1)
    unit = " (%)" if shown is not grid else ""
    note = f", {aggfunc} of {others} combinations per cell" if others > 1 else ""
    ax.set_title(f"{metric}{unit}{note}", loc="left", fontsize=10)
    fig.tight_layout()
    return fig
