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
