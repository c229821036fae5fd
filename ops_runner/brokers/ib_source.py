"""Daily bars from Interactive Brokers' historical data, stored with the same provenance.

What IB serves and what is stored (documented in the README):
- ``reqHistoricalData`` with ``whatToShow`` TRADES gives daily bars adjusted for splits as of
  the request, not for dividends; ADJUSTED_LAST gives the same bars adjusted for dividends too.
- The stored bars are the TRADES bars, ``split`` 1.0 (so prices are split-adjusted as of the
  download date, like Yahoo's), and a ``dividend`` derived on each ex-date from the two series:
  ``D_t = close_{t-1} x (1 - f_{t-1} / f_t)`` with ``f = adjusted / trades``.
- Provenance: layout ``ib-historical``, the endpoint and request as ``source_file``, and the
  SHA-256 of the canonical bars as ``source_sha256`` (a download that changed nothing is
  reported unchanged, and one that changed keeps the earlier version).

The client library is imported by the broker adapter only (``ops_runner.brokers.ib``).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date
from typing import TYPE_CHECKING, Any

import pandas as pd

from ops_runner.brokers.base import Broker
from ops_runner.brokers.ib import IbBroker
from ops_runner.core.errors import DataError
from ops_runner.core.hashing import compute_sha256
from ops_runner.market.prices import ImportReport, compute_parquet_bytes, open_store

if TYPE_CHECKING:
    from ops_runner.workbook.config import Config

IB_LAYOUT = "ib-historical"
IB_SOURCE = "ib"
IB_NOTES = (
    "IB reqHistoricalData 1 day, TRADES (split-adjusted as of the download) with dividends "
    "derived from ADJUSTED_LAST"
)


class IbBarsSource:
    """A ``Source`` of daily bars from the broker, through the read-only client id."""

    name = IB_SOURCE

    def __init__(self, cfg: Config, broker: Broker | None = None) -> None:
        self._cfg = cfg
        self._broker = broker

    def _open(self) -> Any:
        if self._broker is None:
            self._broker = IbBroker(self._cfg, role="readonly")
        return self._broker

    def endpoint(self) -> str:
        broker = self._cfg.broker
        return f"ib://{broker.host}:{broker.port}"

    def read_bars(self, symbols: Sequence[str], start: date, end: date) -> dict[str, pd.DataFrame]:
        """Return canonical bars per symbol for ``start``..``end``. Raises DataError (one line
        naming the symbol) and BrokerUnavailable when there is no session."""
        if start > end:
            raise DataError(f"start {start} is after end {end}; nothing was fetched")
        broker = self._open()
        frames = {}
        for symbol in symbols:
            bars = broker.historical_bars(symbol, start, end)
            if len(bars) == 0:
                raise DataError(f"IB returned no bars for {symbol} in {start}..{end}")
            frames[symbol] = bars
        return frames

    def close(self) -> None:
        if self._broker is not None:
            self._broker.close()


def import_from_ib(
    cfg: Config,
    symbols: Sequence[str],
    start: date,
    end: date,
    source: str = IB_SOURCE,
    bars_source: IbBarsSource | None = None,
) -> ImportReport:
    """Fetch ``symbols`` from IB and store them as ``source``: all or none. Raises DataError,
    BrokerUnavailable."""
    reader = bars_source or IbBarsSource(cfg)
    try:
        frames = reader.read_bars(symbols, start, end)
    finally:
        if bars_source is None:
            reader.close()
    request = f"reqHistoricalData 1 day TRADES+ADJUSTED_LAST {start}..{end}"
    items = {
        symbol: (
            bars,
            {
                "layout": IB_LAYOUT,
                "source_file": f"{reader.endpoint()}/{symbol} {request}",
                "source_sha256": compute_sha256(compute_parquet_bytes(bars)),
                "synthetic": False,
                "notes": IB_NOTES,
            },
        )
        for symbol, bars in frames.items()
    }
    return open_store(cfg).write_many(source, items, layout=IB_LAYOUT)
