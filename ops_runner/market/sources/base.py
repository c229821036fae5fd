"""What a file layout and a bar source produce: the shapes the price store imports."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Protocol, runtime_checkable

import pandas as pd


@dataclass(frozen=True)
class ParsedFile:
    """One file read into a canonical bars frame, not yet stored.

    ``extra`` keeps vendor columns that are not part of the bars frame (for example the vendor's
    own ``adjusted_close``), so they can be compared with what the package computes.
    """

    symbol: str
    bars: pd.DataFrame
    source_path: Path
    source_sha256: str
    layout: str
    notes: str = ""
    extra: dict[str, pd.Series] = field(default_factory=dict)


@runtime_checkable
class Layout(Protocol):
    """A file layout: reads one file into a ParsedFile or raises ImportRefused."""

    name: str

    def read_file(self, path: Path) -> ParsedFile: ...


@runtime_checkable
class Source(Protocol):
    """A provider of bars that is not a file, such as a broker's historical bars.

    ``read_bars`` returns canonical bars frames keyed by symbol; the caller stores them with
    ``PriceStore.write_bars`` and the provenance the source describes.
    """

    name: str

    def read_bars(
        self, symbols: Sequence[str], start: date, end: date
    ) -> dict[str, pd.DataFrame]: ...
