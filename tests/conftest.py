"""Shared fixtures: a price store in a temporary folder and a byte-level snapshot of a folder."""

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
