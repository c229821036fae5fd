"""Shared fixtures: price stores, sample workbooks, and a byte-level snapshot of a folder."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest


def snapshot_folder(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (relative path -> bytes); empty when the folder is absent."""
    if not folder.exists():
        return {}
    return {
        str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
    }


@pytest.fixture
def snapshot() -> Callable[[Path], dict[str, bytes]]:
    return snapshot_folder


@pytest.fixture
def store_root(tmp_path: Path) -> Path:
    return tmp_path / "workbook" / "data"


@pytest.fixture
def store(store_root: Path):
    from ops_runner.data import PriceStore

    return PriceStore(store_root)


def make_sample_workbook(root: Path) -> Path:
    """Initialise a workbook at ``root`` with the SYNTHETIC sample market in its store."""
    from ops_runner.config import init_workbook, load_config
    from ops_runner.sources.sample import write_sample

    init_workbook(root)
    cfg = load_config(root)
    write_sample(cfg.store(), calendar=cfg.calendar())
    return root


@pytest.fixture(scope="module")
def sample_workbook(tmp_path_factory) -> Path:
    """A sample workbook shared by one test module (tests must not change its data)."""
    return make_sample_workbook(tmp_path_factory.mktemp("sample-wb"))


NOVEMBER_DECIDED_AT = "2025-11-28T21:30:00Z"  # Friday's 13:00 early close + the decision delay


def make_decided_november(root: Path) -> Path:
    """A workbook one real cycle old (October 2025 holds 1,358 VEU) whose November decision
    (100% AGG) was taken by a real tick: data QA and the decision notebooks ran and are done.

    Only the cycle's own jobs run (no weekly audit, backup or investigation notebooks), the
    baseline is approved, so the pre-rebalance checks leave it in RUN.
    """
    from datetime import datetime

    import yaml

    from ops_runner.checks import approve_baseline
    from ops_runner.config import load_config
    from ops_runner.orchestrator import tick
    from ops_runner.testing.history import simulate_history

    result = simulate_history(root, cycles=1, first_cycle="2025-10")
    config = result.workbook / "config.yaml"
    raw = yaml.safe_load(config.read_text(encoding="utf-8"))
    raw["schedule"].update(weekly_audit=False, weekly_backup=False, investigate_incidents=False)
    config.write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
    cfg = load_config(result.workbook)
    approve_baseline(cfg, "the simulated history as built")
    first = tick(cfg, now=datetime.fromisoformat(NOVEMBER_DECIDED_AT.replace("Z", "+00:00")))
    assert "decision:2025-11" in first.message and str(first.state) == "RUN", first.message
    return result.workbook
