"""Where bars come from: the registry of file layouts and the interface of bar sources."""

from __future__ import annotations

from pathlib import Path

from ops_runner.core.errors import DataError, ImportRefused
from ops_runner.market.bars import SYMBOL_PATTERN
from ops_runner.market.sources import csvfiles
from ops_runner.market.sources.base import Layout, ParsedFile, Source


class LayoutRegistry:
    """The layouts ``read_path`` knows, by name."""

    def __init__(self) -> None:
        self._layouts: dict[str, Layout] = {}

    def register(self, layout: Layout) -> None:
        """Add ``layout`` under its name, replacing any layout of that name."""
        self._layouts[layout.name] = layout

    def names(self) -> list[str]:
        """Return the registered layout names, sorted."""
        return sorted(self._layouts)

    def get_layout(self, name: str) -> Layout:
        """Return the layout called ``name``; raise DataError naming the known ones."""
        layout = self._layouts.get(name)
        if layout is None:
            raise DataError(f"unknown layout {name!r}: choose one of {', '.join(self.names())}")
        return layout


layouts = LayoutRegistry()


def read_path(path: Path, layout: str) -> list[ParsedFile]:
    """Parse a file, or every ``*.csv`` in a folder, with ``layout``.

    Returns one ParsedFile per file, sorted by symbol. Raises ImportRefused on the first file
    that cannot be read (nothing is partially returned), DataError for an unknown layout.
    """
    reader = layouts.get_layout(layout)
    path = Path(path)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() == ".csv")
        if not files:
            raise ImportRefused(path, "the folder holds no *.csv files")
    elif path.is_file():
        files = [path]
    else:
        raise ImportRefused(path, "no such file or folder")
    parsed = [reader.read_file(p) for p in files]
    seen: dict[str, Path] = {}
    for item in parsed:
        if not SYMBOL_PATTERN.fullmatch(item.symbol):
            raise ImportRefused(
                item.source_path,
                f"the file name gives symbol {item.symbol!r}, which is not a ticker; rename the "
                "file <SYMBOL>.csv",
            )
        if item.symbol in seen:
            raise ImportRefused(
                item.source_path,
                f"symbol {item.symbol} also comes from {seen[item.symbol].name}; "
                "import one file per symbol",
            )
        seen[item.symbol] = item.source_path
    return sorted(parsed, key=lambda item: item.symbol)


for _layout in csvfiles.LAYOUTS:
    layouts.register(_layout)

__all__ = ["Layout", "LayoutRegistry", "ParsedFile", "Source", "layouts", "read_path"]
