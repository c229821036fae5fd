"""Fetch a source's missing bars from its provider into the price store and record them: the
tick's ``data_fetch`` job and ``ops-runner data fetch`` both run this."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import UTC, date, datetime

from ops_runner.brokers.ib_source import import_from_ib
from ops_runner.ledger import open_ledger
from ops_runner.market.calendar import open_calendar
from ops_runner.market.integrity import record_prices
from ops_runner.market.prices import open_store
from ops_runner.market.sources.fetch import fetch_into_store
from ops_runner.market.sources.providers import compute_fetch_symbols, open_client, read_provider
from ops_runner.workbook.config import Config

log = logging.getLogger(__name__)


def fetch_source(
    cfg: Config,
    name: str,
    symbols: Sequence[str] | None = None,
    start: date | None = None,
    end: date | None = None,
    now: datetime | None = None,
) -> str:
    """Fetch what source ``name`` lacks from its provider, store it, record it; return one
    line saying what was done.

    ``symbols`` default to the universe and QA's references; ``start`` (for a symbol not stored
    yet) to ``data.fetch_start``; ``end`` to the last session closed at ``now`` (default: the
    real clock). Raises ConfigError, SecretError, DataError (VendorError: the vendor's own
    error, one line) or BrokerUnavailable; on any of them the store is as it was.
    """
    provider = read_provider(cfg, name)
    moment = now or datetime.now(UTC)
    wanted = list(symbols or compute_fetch_symbols(cfg))
    first = start or cfg.data.fetch_start
    last = end or moment.date()
    if provider.vendor == "ib":
        last = min(last, open_calendar(cfg).last_closed_session(moment))
        imported = import_from_ib(cfg, wanted, first, last, source=name)
        line = (
            f"{name}: imported {len(imported.imported)}, replaced {len(imported.replaced)}, "
            f"unchanged {len(imported.unchanged)} (IB historical bars {first}..{last})"
        )
    else:
        with open_client(cfg, name) as client:
            report = fetch_into_store(
                open_store(cfg), name, client, wanted, first, last,
                overlap_sessions=int(cfg.data.fetch_overlap_sessions),
                calendar=open_calendar(cfg), now=moment,
            )  # fmt: skip
        line = report.summary()
    with open_ledger(cfg) as ledger:
        record_prices(cfg, ledger, name, f"fetched from {provider.vendor}")
    log.info("%s", line)
    return line
