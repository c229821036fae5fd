"""Importing vendor files into the price store: each parsed by its layout (``sources``), all
written at once (``prices``), or nothing written when one file is refused."""

from __future__ import annotations

import logging
from pathlib import Path

from ops_runner.market.prices import ImportReport, PriceStore
from ops_runner.market.sources import read_path

log = logging.getLogger(__name__)


def import_files(
    store: PriceStore, path: Path, layout: str, source: str | None = None
) -> ImportReport:
    """Import a CSV file, or every ``*.csv`` in a folder, into ``store`` as ``source`` (default:
    the layout).

    Every file is parsed before anything is written: if one is refused, ImportRefused is
    raised and the store is left byte-for-byte unchanged. A file whose SHA-256 and layout
    match the stored manifest is reported unchanged and not rewritten; a changed file
    replaces the current version, which is kept under ``versions/`` and in ``history``.
    """
    source = layout if source is None else source
    store.require_source_name(source)
    parsed = read_path(Path(path), layout)
    items = {}
    for item in parsed:
        provenance = {
            "layout": item.layout,
            "source_file": str(item.source_path.resolve()),
            "source_sha256": item.source_sha256,
            "synthetic": False,
            "notes": item.notes,
            # The vendor's own adjusted close, kept for data QA to compare with the bars.
            "vendor_adjusted_close": item.extra.get("adjusted_close"),
        }
        items[item.symbol] = (item.bars, provenance)
    report = store.write_many(source, items, layout=layout)
    log.info("import from %s: %s", path, report)
    return report
