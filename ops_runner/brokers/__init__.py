"""Brokers: the registry that opens the configured adapter. Beside it: the base class and the
types every adapter shares (``base``), the order gate (``gate``), the adapters (``sim``, ``ib``).

Broker vocabulary (order types, camelCase fields, error codes) stays inside each adapter; the
rest of the workbook speaks in the types of ``base``.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from ops_runner.brokers.base import Broker, BrokerError
from ops_runner.workbook.config import Config


class BrokerRegistry:
    """Broker adapters by config name (``broker.kind``), each a Broker subclass named by its
    ``module:Class`` path and imported only when a workbook opens that broker: a job that
    never opens the IB adapter never loads it (nor its HTTP client)."""

    def __init__(self) -> None:
        self._paths: dict[str, str] = {}

    def register(self, name: str, path: str) -> None:
        self._paths[name] = path

    def names(self) -> list[str]:
        return sorted(self._paths)

    def resolve(self, name: str) -> type[Broker]:
        """Return the adapter class for ``name``. Raises BrokerError for an unknown name and
        TypeError for a registered path that is not a Broker subclass."""
        if name not in self._paths:
            raise BrokerError(f"broker.kind {name!r} has no adapter in this version")
        module, _, attribute = self._paths[name].partition(":")
        found = getattr(importlib.import_module(module), attribute)
        if not (isinstance(found, type) and issubclass(found, Broker)):
            raise TypeError(f"broker {name!r}: {self._paths[name]} is not a Broker subclass")
        return found

    def create(self, cfg: Config, **options: Any) -> Broker:
        # Each adapter's constructor takes the config and its own options (clock, role, ...).
        adapter: Callable[..., Broker] = self.resolve(cfg.broker.kind)
        return adapter(cfg, **options)


brokers = BrokerRegistry()
brokers.register("sim", "ops_runner.brokers.sim:SimBroker")
brokers.register("ib", "ops_runner.brokers.ib:IbBroker")


def open_broker(cfg: Config, **options: Any) -> Broker:
    """Return the configured broker (not yet connected). Raises BrokerError."""
    return brokers.create(cfg, **options)
