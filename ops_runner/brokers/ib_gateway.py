"""Keeping IB Gateway up: ib_async's ``IBC`` (starts and stops the app through IBC) and
``Watchdog`` (logs in, watches the traffic, starts the app again when it dies or goes silent),
built from ``broker.gateway`` and the secrets, with a daily restart at a quiet hour.

IB Gateway restarts daily and logs out weekly; this is the maintained way to bring it back
(the pattern thetagang uses). The IB user id and password come from the secrets IB_USER_ID
and IB_PASSWORD only: never config, never a log line, never a notebook.

``GatewayKeeper`` takes any controller with IBC's two coroutines (``startAsync``,
``terminateAsync``): real IBC needs Java and an installed Gateway, so the tests give it one
that restarts the loopback TWS simulator instead. Only `ops-runner broker keep-up` imports this
module, so ib_async loads here and in the adapter's session alone, never in an idle tick.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol
from zoneinfo import ZoneInfo

import ib_async

from ops_runner.workbook.config import Config, load_secret

log = logging.getLogger(__name__)

USER_ID_SECRET = "IB_USER_ID"
PASSWORD_SECRET = "IB_PASSWORD"
NEW_YORK = ZoneInfo("America/New_York")
LINK_ERRORS = frozenset({100, 1100})  # the Watchdog restarts on these: say why when it does


class Controller(Protocol):
    """What the Watchdog asks of IBC: start the app, and end it."""

    async def startAsync(self) -> None: ...  # noqa: N802 (ib_async's names)

    async def terminateAsync(self) -> None: ...  # noqa: N802


@dataclass(frozen=True)
class GatewayChange:
    """The app came up (a session logged in) or went away, at ``at``, and why; ``planned``:
    it went away because the keeper ended it for the daily restart."""

    at: datetime
    up: bool
    detail: str
    planned: bool = False


def build_controller(
    cfg: Config, lookup: Callable[[str], str | None] = os.environ.get
) -> ib_async.IBC:
    """Return IBC for ``broker.gateway``, logging in with the secrets. Raises SecretError
    (one line naming the secret) when either is not set."""
    gateway = cfg.broker.gateway
    return ib_async.IBC(
        twsVersion=gateway.version,
        gateway=gateway.app == "gateway",
        tradingMode=cfg.broker.mode,  # one truth: the broker's paper or live
        userid=load_secret(cfg, USER_ID_SECRET, lookup),
        password=load_secret(cfg, PASSWORD_SECRET, lookup),
        ibcPath=gateway.ibc_path,
        ibcIni=gateway.ibc_ini or "",
        twsPath=gateway.tws_path or "",
        twsSettingsPath=gateway.tws_settings_path or "",
        javaPath=gateway.java_path or "",
    )


def build_watchdog(cfg: Config, controller: Controller, ib: ib_async.IB) -> ib_async.Watchdog:
    """Return the Watchdog over ``controller`` logging ``ib`` in with the keeper's client id
    (read-only: the keeper never places an order)."""
    broker, gateway = cfg.broker, cfg.broker.gateway
    return ib_async.Watchdog(
        controller,  # type: ignore[arg-type]  # any object with IBC's two coroutines
        ib,
        host=broker.host,
        port=broker.port,
        clientId=gateway.client_id,
        connectTimeout=broker.connect_timeout_seconds,
        appStartupTime=gateway.app_startup_seconds,
        appTimeout=gateway.app_timeout_seconds,
        retryDelay=gateway.retry_delay_seconds,
        probeTimeout=gateway.probe_timeout_seconds,
        readonly=True,
        account=broker.account or "",
    )


def compute_next_restart(now: datetime, restart_time: str) -> datetime:
    """Return the first instant after ``now`` whose New York wall time is ``restart_time``
    ("HH:MM"), in UTC (pure; a daylight-saving change moves it with New York)."""
    hours, minutes = (int(part) for part in restart_time.split(":"))
    local = now.astimezone(NEW_YORK)
    day = local.date()
    while True:
        wall = datetime(day.year, day.month, day.day, hours, minutes, tzinfo=NEW_YORK)
        if wall > local:
            return wall.astimezone(UTC)
        day += timedelta(days=1)


class GatewayKeeper:
    """Runs the Watchdog until asked to stop, restarts the app daily at ``restart_time`` (New
    York), and tells ``on_change`` each time the app comes up or goes away (once per change:
    the Watchdog's failed attempts while the app stays away are one loss)."""

    def __init__(
        self,
        cfg: Config,
        controller: Controller,
        on_change: Callable[[GatewayChange], None],
        *,
        clock: Callable[[], datetime] | None = None,
        poll_seconds: float = 30.0,
    ) -> None:
        self.cfg = cfg
        self.controller = controller
        self.on_change = on_change
        self.clock = clock or (lambda: datetime.now(UTC))
        self.poll_seconds = poll_seconds
        self._up: bool | None = None
        self._stopping = False
        self._why = ""  # why the session ended, when something said so
        self._planned = False  # the keeper ended the app for its daily restart

    async def run(self, stop: asyncio.Event) -> None:
        """Keep the app up until ``stop`` is set; then stop the Watchdog and end the app."""
        gateway = self.cfg.broker.gateway
        ib = ib_async.IB()
        watchdog = build_watchdog(self.cfg, self.controller, ib)
        watchdog.startedEvent += lambda _: self._changed(True, self._started())
        watchdog.stoppedEvent += lambda _: self._changed(False, self._stopped())
        watchdog.hardTimeoutEvent += lambda _: self._note(
            f"no answer to the Watchdog's probe within {gateway.probe_timeout_seconds:g} s"
        )
        ib.errorEvent += self._on_error
        ib.disconnectedEvent += lambda: self._note("the session was dropped")
        runner = watchdog.start()
        restart_at = compute_next_restart(self.clock(), gateway.restart_time)
        log.info("keeping the IB app up; next daily restart %s", restart_at.isoformat())
        try:
            while not stop.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self.poll_seconds)
                now = self.clock()
                if not stop.is_set() and now >= restart_at:
                    await self.restart(f"the daily restart at {gateway.restart_time} New York")
                    restart_at = compute_next_restart(now, gateway.restart_time)
        finally:
            self._stopping = True
            watchdog.stop()
            runner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await runner
            await self.controller.terminateAsync()
            self._changed(False, self._stopped())

    async def restart(self, why: str) -> None:
        """End the app now; the Watchdog sees its session end and starts it again."""
        log.info("restarting the IB app: %s", why)
        self._why, self._planned = why, True
        await self.controller.terminateAsync()

    def _on_error(self, req_id: int, code: int, text: str, *rest: Any) -> None:
        if code in LINK_ERRORS:
            self._note(f"IB error {code}: {text}")

    def _note(self, why: str) -> None:
        if self._up and not self._why:  # the first cause stands (a restart, then its drop)
            self._why = why

    def _started(self) -> str:
        broker = self.cfg.broker
        client_id = broker.gateway.client_id
        return f"IB {broker.gateway.app} up: client id {client_id} logged in at {broker.host}:" \
            f"{broker.port}"  # fmt: skip

    def _stopped(self) -> str:
        if self._stopping:
            return f"IB {self.cfg.broker.gateway.app} stopped with its keeper"
        why = self._why or "it did not answer"
        return f"IB {self.cfg.broker.gateway.app} away ({why}); the Watchdog starts it again"

    def _changed(self, up: bool, detail: str) -> None:
        if self._up is up:
            return
        self._up = up
        planned = not up and self._planned and not self._stopping
        if up:
            self._why, self._planned = "", False
        change = GatewayChange(self.clock(), up, detail, planned)
        log.info("%s", detail)
        try:
            self.on_change(change)
        except Exception:  # boundary: a recording failure must not stop the keeping
            log.exception("recording the IB app's change failed")
