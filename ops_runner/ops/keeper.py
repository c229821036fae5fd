"""`ops-runner broker keep-up`: the Gateway keeper, a long-lived process that keeps IB Gateway up
(``brokers.ib_gateway``) and records each time it comes up or goes away in the ledger.

Each change is a broker check (``CheckRecorded``, check "broker"), the event the reachability
history of `broker check` reads. A loss is a failed check and moves the state to BROKER_DOWN,
as the daily check's failure does: no new order goes out while the Gateway is away. The return
is a passed check that changes no state: the tick's own probe, which logs in as the workbook's
account, is what leaves BROKER_DOWN for RUN.

The keeper's own daily restart is a failed check too (the history counts it among the day's
restarts) but triggers nothing: it is planned, at a quiet hour, and the Watchdog brings the app
back. As a fault it would be a second one in DEGRADED_DATA and turn every nightly restart into
SAFE_MODE, an approval each morning. An app that does not come back is still found: the next
tick's probe fails and sets BROKER_DOWN.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime
from itertools import count

from ops_runner.brokers.ib_gateway import (
    Controller,
    GatewayChange,
    GatewayKeeper,
    build_controller,
)
from ops_runner.core.clock import format_seconds
from ops_runner.core.errors import ConfigError
from ops_runner.core.events import State, Trigger
from ops_runner.ledger import open_ledger
from ops_runner.ops.checks import Check, record_checks
from ops_runner.runtime.notebooks import compute_run_id
from ops_runner.workbook.config import Config

log = logging.getLogger(__name__)


def require_gateway_enabled(cfg: Config) -> None:
    """Raise ConfigError (one line) unless ``broker.gateway.enabled`` is on."""
    if not cfg.broker.gateway.enabled:
        raise ConfigError(
            "config error: broker.gateway.enabled: false, so there is no Gateway to keep up; "
            "set it to true with IBC's paths (and broker.kind: ib)",
            "broker.gateway.enabled",
        )


def record_gateway_change(cfg: Config, change: GatewayChange, slot: str) -> State:
    """Record ``change`` as a broker check keyed by ``slot``; returns the state after it.

    With a simulated broker the ledger is stamped with the change's own instant."""
    evidence = (f"{'up' if change.up else 'away'} at {format_seconds(change.at)}",)
    on_fail = None if change.planned else Trigger.BROKER_FAULT  # a planned restart: no fault
    check = Check("broker", change.up, change.detail, evidence, on_fail=on_fail, on_pass=None)
    stamped = replace(cfg, simulated_now=change.at) if cfg.simulated else cfg
    with open_ledger(stamped) as ledger:
        return record_checks(cfg, ledger, [check], slot)


async def keep_gateway_up(
    cfg: Config,
    stop: asyncio.Event,
    controller: Controller | None = None,
    *,
    clock: Callable[[], datetime] | None = None,
    poll_seconds: float = 30.0,
) -> None:
    """Keep the Gateway up until ``stop`` is set, recording every change in the ledger.

    ``controller`` defaults to IBC built from ``broker.gateway`` and the secrets. Raises
    ConfigError when the keeper is off and SecretError when a login secret is missing, both
    before anything starts."""
    require_gateway_enabled(cfg)
    controller = controller or build_controller(cfg)
    keeper_id, numbers = compute_run_id(), count(1)

    def record(change: GatewayChange) -> None:
        state = record_gateway_change(cfg, change, f"gateway:{keeper_id}:{next(numbers)}")
        log.info("recorded: %s (state %s)", change.detail, state)

    keeper = GatewayKeeper(cfg, controller, record, clock=clock, poll_seconds=poll_seconds)
    await keeper.run(stop)
