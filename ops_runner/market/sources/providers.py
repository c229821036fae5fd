"""The workbook's data providers (``data.providers``): which vendor serves which source, and its
HTTP client. The fetch itself (``ops_runner.ops.fetch``) is run by the tick's ``data_fetch`` job
and ``ops-runner data fetch``.

A provider names a vendor (``alphavantage``, ``tiingo`` or ``ib``) and, for the HTTP vendors,
optionally its base URL (tests point it at a local server), timeout, retries and pacing. Keys
come only from the secrets (``OPS_RUNNER_ALPHAVANTAGE_API_KEY``, ``OPS_RUNNER_TIINGO_API_KEY``
or the 0600 secrets file): never from config, never into a URL kept, a log or the ledger.
Every fetch that changes the store records the new manifests in the ledger (PricesRecorded),
so the daily integrity check knows them for ops-runner's own.
"""

from __future__ import annotations

import logging
from typing import Any

from ops_runner.core.errors import ConfigError
from ops_runner.market.sources.alphavantage import AlphaVantageClient
from ops_runner.market.sources.tiingo import TiingoClient
from ops_runner.workbook.config import Config, load_secret
from ops_runner.workbook.settings import ProviderSettings

log = logging.getLogger(__name__)

KEY_NAMES = {"alphavantage": "ALPHAVANTAGE_API_KEY", "tiingo": "TIINGO_API_KEY"}


def read_provider(cfg: Config, name: str) -> ProviderSettings:
    """Return provider ``name``'s settings. Raises ConfigError naming the configured ones."""
    providers = cfg.data.providers
    if name not in providers:
        known = ", ".join(sorted(providers)) or "none"
        raise ConfigError(
            f"config error: data.providers: no provider {name!r} (configured: {known}); add "
            f"e.g. `{name}: {{vendor: alphavantage}}` under data.providers",
            "data.providers",
        )
    return providers[name]


def compute_fetched_sources(cfg: Config) -> list[str]:
    """Return the primary and the secondary where a provider serves them (what the tick's
    ``data_fetch`` job fetches), in that order."""
    return cfg.data.fetched


def compute_fetch_symbols(cfg: Config) -> list[str]:
    """Return what a fetch asks for: the universe and QA's market references."""
    symbols = list(cfg.universe_symbols)
    # The raw table, not QASettings: a fetch leaves judging a bad table to the QA that reads it.
    for reference in (cfg.values["qa"].get("market_references") or {}).values():
        if isinstance(reference, str) and reference not in symbols:
            symbols.append(reference)
    return symbols


def open_client(cfg: Config, name: str) -> Any:
    """Return the HTTP client of provider ``name`` (a context manager). Raises ConfigError for
    an unknown provider or one that is not an HTTP vendor, SecretError without its key."""
    provider = read_provider(cfg, name)
    vendor = provider.vendor
    if vendor not in KEY_NAMES:
        raise ConfigError(f"config error: data.providers.{name}: vendor {vendor} has no HTTP "
                          "client", f"data.providers.{name}")  # fmt: skip
    options: dict[str, Any] = {"timeout": provider.timeout_seconds, "retries": provider.retries}
    if provider.base_url:
        options["base_url"] = provider.base_url
    if provider.min_interval_seconds is not None:
        options["min_interval"] = provider.min_interval_seconds
    key = load_secret(cfg, KEY_NAMES[vendor])
    if vendor == "alphavantage":
        return AlphaVantageClient(key, **options)

    return TiingoClient(key, **options)
