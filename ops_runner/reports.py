"""What a reviewer looks at: the workbook banner, findings plots, executed notebooks as HTML."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from ops_runner.config import Config, mask_account

if TYPE_CHECKING:
    from matplotlib.figure import Figure

MAX_PLOTTED_SYMBOLS = 6


def compute_banner(cfg: Config) -> pd.DataFrame:
    """Return a one-column table saying which workbook, config and data a notebook ran on."""
    store = cfg.store()
    rows: dict[str, Any] = {
        "workbook": cfg.values["workbook_name"],
        "config hash": cfg.hash[:16],
        "primary data": cfg.values["data"]["primary"],
        "secondary data": cfg.values["data"]["secondary"] or "(none)",
        "broker": f"{cfg.values['broker']['kind']} ({cfg.values['broker']['mode']})",
        "account": mask_account(cfg.values["broker"]["account"]),
        "universe": ", ".join(cfg.universe_symbols),
    }
    for role in ("primary", "secondary"):
        source = cfg.values["data"][role]
        if source and source in store.sources():
            symbols = store.symbols(source)
            if symbols and store.read_manifest(source, symbols[0]).get("synthetic"):
                rows[f"{role} data"] = f"{source} — SYNTHETIC sample market, not real prices"
    return pd.DataFrame({"value": rows})


def plot_flagged(cfg: Config, report: Any, sessions: int = 300) -> Figure | None:
    """Return a figure with the adjusted close of each flagged symbol and its finding dates.

    ``report`` is a QA report (``findings``, ``as_of``, ``primary``, ``secondary``). Returns None
    when nothing is flagged, so a clean run shows no empty chart.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    from ops_runner.data import compute_adjusted_close

    flagged: dict[str, list[Any]] = {}
    for finding in report.findings:
        if finding.symbol in cfg.universe_symbols or finding.symbol not in flagged:
            flagged.setdefault(finding.symbol, []).append(finding)
    if not flagged:
        return None
    names = sorted(flagged, key=lambda s: -len(flagged[s]))[:MAX_PLOTTED_SYMBOLS]
    store = cfg.store()
    fig, axes = plt.subplots(len(names), 1, figsize=(10, 2.6 * len(names)), squeeze=False)
    end = pd.Timestamp(report.as_of)
    for ax, symbol in zip(axes[:, 0], names, strict=True):
        for source, style in ((report.primary, "-"), (report.secondary, "--")):
            if not source or symbol not in store.symbols(source):
                continue
            bars = store.load_bars(source, symbol).loc[:end].tail(sessions)
            if len(bars):
                ax.plot(compute_adjusted_close(bars), style, lw=1, label=f"{source}")
        dates = [pd.Timestamp(f.date) for f in flagged[symbol] if f.date is not None]
        for when in dates:
            ax.axvline(when, color="tab:red", alpha=0.4, lw=1)
        checks = sorted({str(f.check) for f in flagged[symbol]})
        title = f"{symbol}: {len(flagged[symbol])} finding(s) ({', '.join(checks)})"
        ax.set_title(title, loc="left")
        ax.set_ylabel("adjusted close")
        ax.legend(loc="upper left", fontsize=8)
    extra = len(flagged) - len(names)
    if extra > 0:
        fig.suptitle(f"{extra} more flagged symbol(s) in the findings table", fontsize=9)
    fig.tight_layout()
    return fig


def write_html(notebook: Path, target: Path) -> Path:
    """Render an executed notebook to HTML at ``target`` (written atomically). Returns target."""
    import nbformat
    from nbconvert import HTMLExporter

    body, _ = HTMLExporter().from_notebook_node(nbformat.read(str(notebook), as_version=4))
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(target.suffix + ".tmp")
    tmp.write_text(body, encoding="utf-8")
    tmp.replace(target)
    return target
