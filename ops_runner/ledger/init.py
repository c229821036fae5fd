"""A new workbook: its config.yaml from a template, its folders, and its ledger from day one."""

from __future__ import annotations

import os
from pathlib import Path

from ops_runner.ledger.store import open_ledger
from ops_runner.workbook.config import (
    CONFIG_NAME,
    TEMPLATES,
    compute_template_text,
    load_config,
    load_config_text,
    resolve_workbook,
)


def init_workbook(workbook: str | os.PathLike[str] | None = None, template: str = "config") -> Path:
    """Create the workbook's config.yaml from a template (never overwrites). Returns its path.

    The default template names no data source: the workbook holds no prices until its user
    fetches or imports some and sets ``data.primary``. ``demo`` is the SYNTHETIC sample market.
    """
    root = resolve_workbook(workbook)
    target = root / CONFIG_NAME
    text = compute_template_text(template)
    root.mkdir(parents=True, exist_ok=True)
    if not target.exists():
        load_config_text(text, root, TEMPLATES / f"{template}.yaml")  # a template must pass
        target.write_text(text, encoding="utf-8")
    cfg = load_config(root)
    for name in ("ledger", "reports", "data"):
        cfg.path(name).mkdir(parents=True, exist_ok=True)
    cfg.path("kill_switch").parent.mkdir(parents=True, exist_ok=True)
    cfg.path("anchor").parent.mkdir(parents=True, exist_ok=True)
    # The workbook's record exists from day one.
    open_ledger(cfg, create=True).close()
    return target
