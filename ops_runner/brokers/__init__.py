"""Brokers: the base class and types every adapter shares (``base``), the order gate (``gate``),
the adapters (``sim``, ``ib``), and the registry that opens the configured one.

Broker vocabulary (order types, camelCase fields, error codes) stays inside each adapter; the
rest of the workbook speaks in the types re-exported here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ops_runner.brokers.base import (
    AccountValues,
    ActionLine,
    Broker,
    BrokerError,
    BrokerOrder,
    BrokerUnavailable,
    CashKind,
    CashLine,
    Commission,
    Execution,
    Health,
    OrderStatus,
    Outcome,
    PlaceResult,
    Statement,
    find_order,
)
from ops_runner.brokers.ib import IbBroker
from ops_runner.brokers.sim import SimBroker
from ops_runner.workbook.config import Config

__all__ = [
    "AccountValues",
    "ActionLine",
    "Broker",
    "BrokerError",
    "BrokerOrder",
    "BrokerRegistry",
    "BrokerUnavailable",
    "CashKind",
    "CashLine",
    "Commission",
    "Execution",
    "Health",
    "OrderStatus",
    "Outcome",
    "PlaceResult",
    "Statement",
    "brokers",
    "find_order",
    "open_broker",
]


class BrokerRegistry:
    """Holds broker classes by config name (``broker.kind``)."""

    def __init__(self) -> None:
        self._factories: dict[str, Callable[..., Broker]] = {}

    def register(self, name: str, factory: type[Broker]) -> None:
        if not (isinstance(factory, type) and issubclass(factory, Broker)):
            raise TypeError(f"broker {name!r}: {factory!r} is not a Broker subclass")
        self._factories[name] = factory

    def names(self) -> list[str]:
        return sorted(self._factories)

    def create(self, cfg: Config, **options: Any) -> Broker:
        kind = cfg.values["broker"]["kind"]
        if kind not in self._factories:
            raise BrokerError(f"broker.kind {kind!r} has no adapter in this version")
        return self._factories[kind](cfg, **options)


brokers = BrokerRegistry()
brokers.register("sim", SimBroker)
brokers.register("ib", IbBroker)  # imports no IB client until a session is needed


def open_broker(cfg: Config, **options: Any) -> Broker:
    """Return the configured broker (not yet connected). Raises BrokerError."""
    return brokers.create(cfg, **options)
