"""The IB session behind ``IbBroker``: login with retries, re-sync, and the raw messages.

Runs only on the adapter's private event loop (``ib_loop``). It receives the client library
from ``ops_runner.brokers.ib`` (the only module that imports it), chains its own handlers
before the client's for the messages that matter (open/completed orders, order status,
executions, commissions, errors), and feeds ``ib_book``. Every failure leaves here typed:
BrokerUnavailable, BrokerError, or an internal ``SessionLost`` the broker turns into one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from ops_runner.brokers.base import BrokerError, BrokerUnavailable
from ops_runner.brokers.ib_book import (
    ACKNOWLEDGED,
    CANCELLED,
    INACTIVE,
    UNSET,
    IbBook,
    IbFill,
    IbOrder,
    parse_ib_time,
    shares,
)
from ops_runner.core.errors import OpsError
from ops_runner.workbook.config import mask_account

log = logging.getLogger(__name__)

# IB message codes (TWS API "Message Codes"); they never leave this module except as
# PlaceResult.code and inside one-line details.
DUPLICATE_ORDER_ID = 103
UNKNOWN_CONTRACT = frozenset({162, 200})  # HMDS query error; no security definition
ORDER_REJECTED = 201
ORDER_CANCELLED = 202
CLIENT_ID_IN_USE = 326
NOT_CONNECTED = frozenset({502, 504})
LINK_LOST = 1100  # TWS lost its connection to IB's servers
LINK_RESTORED = frozenset({1101, 1102})  # restored, data lost / data maintained: re-sync
ORDER_WARNINGS = frozenset({399, 404, 434, 492, 10167})  # the order still works
INFORMATIONAL = frozenset({2104, 2106, 2158})  # market data farm connection is OK


class SessionLost(Exception):
    """Internal: the session dropped or went silent during a request."""


class _LoginRefused(Exception):
    """Internal: the server said why it refused the login (fail fast, no full timeout)."""


@dataclass(frozen=True)
class Settings:
    """Where and how to log in, from ``broker.*`` in the config."""

    host: str
    port: int
    client_id: int
    role: str
    account: str
    connect_timeout: float
    request_timeout: float
    attempts: int
    wait: float

    @property
    def where(self) -> str:
        return f"{self.host}:{self.port}"


class IbSession:
    """One role's connection to TWS/Gateway, re-established on demand, and its message
    handlers. ``library`` returns the imported client module (ib_async or ib_insync); ``now``
    is the adapter's clock (UTC)."""

    def __init__(
        self,
        settings: Settings,
        book: IbBook,
        library: Callable[[], Any],
        now: Callable[[], datetime],
    ) -> None:
        self._s, self._book, self._import, self._now = settings, book, library, now
        self.lib: Any = None
        self.ib: Any = None
        self.accounts: list[str] = []
        self.positions: dict[str, int] = {}
        self.fresh = False  # the book was re-requested during the current call
        self._lock: asyncio.Lock | None = None
        self._login: asyncio.Future[str] | None = None
        self._login_errors: list[str] = []
        self._lost = ""  # TWS's link to IB is down (1100) until 1101/1102
        self._restored: asyncio.Event | None = None
        self._stale = True  # the book needs a full re-request
        self._down = ""  # why the last session ended
        self._acks: dict[int, asyncio.Future[tuple[str, ...]]] = {}
        self._warnings: dict[int, str] = {}
        self._cancels: dict[int, asyncio.Future[bool]] = {}

    def _mask(self, text: str) -> str:
        return (
            text.replace(self._s.account, mask_account(self._s.account))
            if self._s.account
            else text
        )

    def guard(self) -> asyncio.Lock:
        if self._lock is None:
            self._lock = asyncio.Lock()
        return self._lock

    # -- the session (loop thread) ---------------------------------------------------------------

    async def ready(self, attempts: int | None = None) -> Any:
        """Return a ready, synchronised client (a session lost while re-synchronising is
        reconnected once). Raises BrokerUnavailable, BrokerError for a refused request."""
        for attempt in (1, 2):
            if self.ib is not None and not self.ib.client.isReady():
                self.drop(self._down or "TWS/Gateway closed the connection")
            if self.ib is None:
                await self._connect(attempts or self._s.attempts)
            if self._lost:
                await self._await_restore()
            if not self._stale:
                return self.ib
            try:
                await self.sync()
            except SessionLost as lost:
                if attempt == 2:
                    raise BrokerUnavailable(
                        f"IB session lost while re-synchronising: {lost}"
                    ) from None
                continue
            except OpsError:
                raise
            except Exception as exc:  # a library refusal: typed, one line
                raise BrokerError(self._mask(f"IB re-synchronisation failed: {exc}")) from None
            self.fresh = True
            return self.ib
        raise BrokerUnavailable("IB: no session")  # pragma: no cover

    async def _await_restore(self) -> None:
        if self._restored is None:
            self._restored = asyncio.Event()
        try:
            await asyncio.wait_for(self._restored.wait(), self._s.request_timeout)
        except TimeoutError:
            raise BrokerUnavailable(
                f"TWS/Gateway at {self._s.where} reports its connection to IB lost (error "
                f"{LINK_LOST}: {self._lost}) and not restored within "
                f"{self._s.request_timeout:g} s; check the Gateway's internet link"
            ) from None

    async def _connect(self, attempts: int) -> None:
        last = ""
        for attempt in range(1, attempts + 1):
            try:
                await self._connect_once()
                self._down = ""
                return
            except BrokerUnavailable as exc:
                last = str(exc)
                log.warning(
                    "IB %s: connect attempt %d of %d: %s", self._s.role, attempt, attempts, last
                )
                if attempt < attempts:
                    await asyncio.sleep(self._s.wait)
        tries = f"{attempts} attempt{'s' if attempts > 1 else ''}"
        raise BrokerUnavailable(self._mask(f"{last} ({tries}, {self._s.wait:g} s apart)"))

    async def _connect_once(self) -> None:
        lib = self.lib = self._import()
        ib = lib.IB()
        ib.RaiseRequestErrors = True
        ib.MaxSyncedSubAccounts = 0  # no reqAccountUpdatesMulti at login: one account here
        self._hook(ib)
        loop = asyncio.get_running_loop()
        self._login, self._login_errors = loop.create_future(), []
        login = asyncio.ensure_future(
            ib.connectAsync(
                self._s.host,
                self._s.port,
                self._s.client_id,
                timeout=self._s.connect_timeout,
                readonly=True,
            )
        )
        try:
            done, _ = await asyncio.wait(
                {login, self._login},
                timeout=3 * self._s.connect_timeout,
                return_when=asyncio.FIRST_COMPLETED,
            )
            if login in done:
                login.result()
            elif self._login in done:
                raise _LoginRefused(self._login.result())
            else:
                raise TimeoutError
            self.accounts = list(ib.client.getAccounts())
        except asyncio.CancelledError:
            login.cancel()
            self._discard(ib)
            raise
        except Exception as exc:  # every library exception becomes a typed outcome
            login.cancel()
            self._discard(ib)
            # Our own timeout closes the socket too: then the timeout is the reason.
            timed_out = isinstance(exc, TimeoutError)
            said = self._login.result() if self._login.done() and not timed_out else ""
            raise (BrokerUnavailable(said) if said else self._login_failure(exc)) from None
        finally:
            self._login = None
        self.ib, self._stale, self._lost = ib, True, ""
        if self._s.account and self._s.account not in self.accounts:
            seen = ", ".join(mask_account(a) for a in self.accounts) or "none"
            self.drop("wrong account")
            raise BrokerUnavailable(
                f"IB session at {self._s.where} manages accounts {seen}, not the configured "
                f"{mask_account(self._s.account)}; fix broker.account or log in to that account"
            )
        log.info(
            "IB %s: session on %s as client id %d (server version %s, %s)",
            self._s.role,
            self._s.where,
            self._s.client_id,
            ib.client.serverVersion(),
            self.lib.__name__,
        )

    def _login_failure(self, exc: BaseException) -> BrokerUnavailable:
        """The one-line reason a login failed, and what to check."""
        heard = f"; TWS said: {self._login_errors[-1]}" if self._login_errors else ""
        if isinstance(exc, ConnectionRefusedError):
            text = (
                f"no TWS/Gateway listening on {self._s.where}: start IB Gateway/TWS or fix "
                "broker.host / broker.port"
            )
        elif isinstance(exc, _LoginRefused):
            text = str(exc)
        elif isinstance(exc, TimeoutError):
            text = (
                f"login to {self._s.where} timed out after {self._s.connect_timeout:g} s: client"
                f" id {self._s.client_id} in use, API access off, or Gateway still starting"
                f"{heard}"
            )
        elif isinstance(exc, ConnectionError):
            text = f"{self._s.where} dropped the connection during login ({exc}){heard}"
        elif isinstance(exc, OSError):
            text = f"cannot reach {self._s.where}: {exc.strerror or exc}"
        else:  # any library exception: a typed outcome, never a crash of the tick
            text = f"login to {self._s.where} failed: {type(exc).__name__}: {exc}{heard}"
        return BrokerUnavailable(self._mask(text))

    def _discard(self, ib: Any) -> None:
        """Close ``ib``'s socket, whatever state the client thinks it is in."""
        with contextlib.suppress(OSError, RuntimeError, ConnectionError):
            ib.disconnect()
        with contextlib.suppress(OSError, RuntimeError, AttributeError):
            ib.client.conn.disconnect()  # a refused handshake leaves the transport open

    def drop(self, why: str) -> None:
        """End the current session (if any) and fail whatever waits on it."""
        if self.ib is not None:
            ib, self.ib = self.ib, None
            self._discard(ib)
        self._down, self._stale = self._mask(why), True
        for future in self._acks.values():
            if not future.done():
                future.set_result(("dropped", self._down))
        for waiter in self._cancels.values():
            if not waiter.done():
                waiter.set_result(False)

    async def request(self, what: str, make: Callable[[], Awaitable[Any]]) -> Any:
        """One request on the current session; a silent or dropped session ends it."""
        try:
            return await asyncio.wait_for(make(), self._s.request_timeout)
        except TimeoutError:
            self.drop(f"no answer to {what} within {self._s.request_timeout:g} s")
        except ConnectionError as exc:
            self.drop(f"connection to {self._s.where} dropped during {what} ({exc})")
        raise SessionLost(self._down)

    async def sync(self) -> None:
        """Re-request everything a dropped link may have hidden: open orders (every client
        id's), completed orders (not only the API's), executions (empty filter), positions."""
        ib, lib = self.ib, self.lib
        await self.request("open orders", ib.reqAllOpenOrdersAsync)
        await self.request("completed orders", lambda: ib.reqCompletedOrdersAsync(False))
        await self.request("executions", lambda: ib.reqExecutionsAsync(lib.ExecutionFilter()))
        await self.refresh_positions()
        self._stale = False

    async def refresh_positions(self) -> None:
        positions = await self.request("positions", self.ib.reqPositionsAsync)
        self.positions = {
            p.contract.symbol: shares(p.position)
            for p in positions
            if (not self._s.account or p.account == self._s.account) and shares(p.position)
        }

    async def _resync_after_restore(self) -> None:
        async with self.guard():
            if self.ib is None or not self._stale or self._lost:
                return
            try:
                await self.sync()
            except Exception as exc:  # a background task: log it, the next call reconnects
                log.warning("IB %s: re-sync after restore failed: %s", self._s.role, exc)
            else:
                log.info("IB %s: re-synchronised after TWS restored its link", self._s.role)

    async def read(self, what: str, fetch: Callable[[Any], Awaitable[Any]]) -> Any:
        """Run ``fetch(ib)`` on a ready session; a dropped session is reconnected once."""
        async with self.guard():
            for attempt in (1, 2):
                self.fresh = False
                ib = await self.ready()
                try:
                    return await fetch(ib)
                except SessionLost as lost:
                    if attempt == 2:
                        raise BrokerUnavailable(f"IB {what}: {lost}") from None
                except OpsError:
                    raise
                except Exception as exc:  # a library refusal: typed, one line
                    code = getattr(exc, "code", None)
                    raise BrokerError(
                        self._mask(f"IB {what} failed: {exc}"), str(code) if code else None
                    ) from None
        raise BrokerUnavailable(f"IB {what}: no session")  # pragma: no cover

    # -- the client's raw messages (loop thread) -------------------------------------------------

    def _hook(self, ib: Any) -> None:
        """Chain our handlers before the client's own, on this client only."""
        wrapper = ib.wrapper
        for name, mine in (
            ("openOrder", self._on_open_order),
            ("completedOrder", self._on_completed_order),
            ("orderStatus", self._on_order_status),
            ("execDetails", self._on_exec_details),
            ("commissionReport", self._on_commission),
            ("error", self._on_error),
            ("nextValidId", lambda order_id: self._on_next_valid_id(ib, order_id)),
        ):
            setattr(wrapper, name, _chained(name, mine, getattr(wrapper, name)))
        ib.client.conn.disconnected += lambda msg="": self._on_socket_closed(ib, msg)
        ib.client.apiError += lambda msg="": self._on_api_error(ib, msg)

    def _on_open_order(self, order_id: int, contract: Any, order: Any, state: Any) -> None:
        if getattr(order, "whatIf", False):
            return
        found = self._book.on_order(**_order_fields(contract, order, state, order_id))
        self._acknowledge(found)

    def _on_completed_order(self, contract: Any, order: Any, state: Any) -> None:
        self._book.on_order(
            **_order_fields(contract, order, state, order.orderId or 0),
            completed_at=parse_ib_time(getattr(state, "completedTime", "")),
        )

    def _on_order_status(self, order_id: int, status: str, filled: float, *rest: Any) -> None:
        perm_id, client_id = int(rest[2]), int(rest[5])
        found = self._book.on_status(int(order_id), client_id, perm_id, status, shares(filled))
        if found is not None:
            self._acknowledge(found)
            if status in CANCELLED and (waiter := self._cancels.get(found.order_id)):
                if not waiter.done():
                    waiter.set_result(True)

    def _acknowledge(self, order: IbOrder) -> None:
        """Settle a pending place() once the broker says what became of the order."""
        if order.client_id != self._s.client_id:
            return
        future = self._acks.get(order.order_id)
        if future is None or future.done():
            return
        if order.ib_status in ACKNOWLEDGED and order.perm_id > 0:
            future.set_result(("accepted", self._warnings.get(order.order_id, "")))
        elif order.ib_status in CANCELLED or order.ib_status == INACTIVE:
            code, text = order.rejected or (order.ib_status, f"order {order.ib_status} at once")
            future.set_result(("rejected", code, text))

    def _on_exec_details(self, req_id: int, contract: Any, execution: Any) -> None:
        if self._s.account and execution.acctNumber and execution.acctNumber != self._s.account:
            return
        try:
            price = Decimal(str(execution.price))
        except InvalidOperation:
            price = Decimal(0)
        moment = execution.time
        if not isinstance(moment, datetime):
            moment = parse_ib_time(str(moment)) or self._now()
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        self._book.on_fill(
            IbFill(
                exec_id=execution.execId,
                perm_id=int(execution.permId or 0),
                order_id=int(execution.orderId or 0),
                client_id=int(execution.clientId or 0),
                order_ref=execution.orderRef or "",
                symbol=contract.symbol,
                side=execution.side,
                shares=shares(execution.shares),
                price=price,
                time=moment.astimezone(UTC),
            )
        )

    def _on_commission(self, report: Any) -> None:
        amount = float(report.commission)
        if not math.isnan(amount) and abs(amount) < UNSET:
            self._book.on_commission(report.execId, Decimal(str(amount)))

    def _on_next_valid_id(self, ib: Any, order_id: int) -> None:
        if ib is self.ib:  # after reqIds (error 103): never reuse an id the server refused
            ib.client.updateReqId(int(order_id))

    def _on_error(self, req_id: int, code: int, text: str, *_: Any) -> None:
        req_id, code, text = int(req_id), int(code), self._mask(str(text))
        if code == LINK_LOST:
            self._lost, self._stale = text or "connectivity lost", True
            if self._restored is None:
                self._restored = asyncio.Event()
            self._restored.clear()
            log.warning("IB %s: TWS lost its link to IB (%d): %s", self._s.role, code, text)
        elif code in LINK_RESTORED:
            self._lost, self._stale = "", True
            if self._restored is not None:
                self._restored.set()
            log.info(
                "IB %s: TWS link restored (%d): re-requesting orders and fills", self._s.role, code
            )
            asyncio.get_running_loop().create_task(self._resync_after_restore())
        elif code in INFORMATIONAL or 2100 <= code < 2200:
            log.debug("IB %s: %d %s", self._s.role, code, text)
        elif code == CLIENT_ID_IN_USE:
            self._refuse_login(
                f"client id {self._s.client_id} is already in use at {self._s.where} (IB error "
                f"{code}): another session holds broker.client_ids.{self._s.role}; close it or "
                "change the id"
            )
        elif req_id > 0 and (
            req_id in self._acks or self._book.order_for(self._s.client_id, req_id)
        ):
            self._on_order_error(req_id, code, text)
        else:
            self._login_errors.append(f"{code} {text}")
            if code in NOT_CONNECTED:
                log.warning("IB %s: not connected (%d): %s", self._s.role, code, text)

    def _on_order_error(self, order_id: int, code: int, text: str) -> None:
        future = self._acks.get(order_id)
        if code in ORDER_WARNINGS:
            self._warnings[order_id] = f"warning {code}: {text}"
            log.info("IB %s: order %d warning %d: %s", self._s.role, order_id, code, text)
            return
        if code == ORDER_CANCELLED:
            if (waiter := self._cancels.get(order_id)) and not waiter.done():
                waiter.set_result(True)
            return
        if code == DUPLICATE_ORDER_ID:
            if future is not None and not future.done():
                future.set_result(("duplicate_id", text))
            return
        if (waiter := self._cancels.get(order_id)) and not waiter.done():
            waiter.set_result(False)
            return
        self._book.on_rejected(order_id, self._s.client_id, str(code), text)
        if future is not None and not future.done():
            future.set_result(("rejected", str(code), text))

    def _refuse_login(self, why: str) -> None:
        if self._login is not None and not self._login.done():
            self._login.set_result(why)
        self._login_errors.append(why)

    def _on_api_error(self, ib: Any, message: str) -> None:
        text = str(message)
        if "version" in text.lower():
            self._refuse_login(
                f"TWS/Gateway at {self._s.where} runs an API version too old for "
                f"{self.lib.__name__} ({text}); upgrade TWS/IB Gateway"
            )
        elif not text.startswith("API connection failed"):  # the client's echo of our failure
            self._login_errors.append(text)

    def _on_socket_closed(self, ib: Any, message: str) -> None:
        if self._login is not None and not self._login.done() and ib is not self.ib:
            heard = "; ".join(self._login_errors[-2:])
            self._refuse_login(
                self._mask(
                    f"TWS/Gateway at {self._s.where} accepted the connection and closed it during "
                    f"login{f' ({heard})' if heard else ''}: daily restart, this IP not trusted, or"
                    f" client id {self._s.client_id} in use"
                )
            )
        elif ib is self.ib:
            self.drop(
                f"TWS/Gateway at {self._s.where} closed the connection"
                f"{f' ({message})' if message else ''}"
            )

    # -- orders (called with the guard held) -----------------------------------------------------

    async def send_order(
        self, contract: Any, order: Any, session: str
    ) -> tuple[str, IbOrder, str, str]:
        """Send ``order`` and wait for what the broker makes of it. Returns (kind, order, code,
        text): kind accepted (text: a warning), rejected, duplicate_id (IB 103: fresh ids were
        requested, nothing is resent) or unknown (no answer in time). Raises BrokerUnavailable
        when the socket drops before or after sending."""
        ref = order.orderRef
        try:
            trade = self.ib.placeOrder(contract, order)
        except ConnectionError as exc:
            self.drop(f"connection to {self._s.where} dropped ({exc})")
            raise BrokerUnavailable(
                f"the IB connection dropped before {ref} was sent; nothing reached the broker"
            ) from None
        order_id = int(trade.order.orderId)
        placed = self._book.note_placed(
            order_id,
            self._s.client_id,
            ref,
            contract.symbol,
            order.action,
            int(order.totalQuantity),
            session,
        )
        future = self._acks[order_id] = asyncio.get_running_loop().create_future()
        try:
            verdict = await asyncio.wait_for(asyncio.shield(future), self._s.request_timeout)
        except TimeoutError:
            return (
                "unknown",
                placed,
                "",
                f"no acknowledgement of order {order_id} within {self._s.request_timeout:g} s",
            )
        finally:
            self._acks.pop(order_id, None)
            self._warnings.pop(order_id, None)
        kind = verdict[0]
        if kind == "dropped":
            raise BrokerUnavailable(
                f"the IB connection dropped after {ref} was sent "
                f"({verdict[1]}); look the reference up before acting"
            )
        if kind == "duplicate_id":
            with contextlib.suppress(ConnectionError):
                self.ib.client.reqIds(-1)  # the next order takes a fresh id
            return (
                kind,
                placed,
                str(DUPLICATE_ORDER_ID),
                f"duplicate order id {order_id}: {verdict[1]}",
            )
        if kind == "rejected":
            return kind, placed, verdict[1], verdict[2]
        return kind, placed, "", verdict[1]

    async def cancel_order(self, order: IbOrder) -> bool:
        """Ask IB to cancel ``order``; True once it reports the order cancelled."""
        order.cancel_requested = True
        waiter = self._cancels[order.order_id] = asyncio.get_running_loop().create_future()
        try:
            self.ib.client.cancelOrder(order.order_id, "")
            return await asyncio.wait_for(asyncio.shield(waiter), self._s.request_timeout)
        except TimeoutError:
            return False
        except ConnectionError as exc:
            self.drop(f"connection dropped during a cancel ({exc})")
            raise BrokerUnavailable(
                f"the IB connection dropped while cancelling {order.client_ref}; look it up again"
            ) from None
        finally:
            self._cancels.pop(order.order_id, None)


def _chained(name: str, mine: Callable[..., None], theirs: Callable[..., Any]) -> Callable:
    def handler(*args: Any) -> Any:
        try:
            mine(*args)
        except Exception:  # our bookkeeping must not starve the client of the message
            log.exception("IB adapter: the %s handler failed; the book may lag", name)
        return theirs(*args)

    return handler


def _order_fields(contract: Any, order: Any, state: Any, order_id: int) -> dict[str, Any]:
    """The book's view of an openOrder or completedOrder message."""
    return {
        "perm_id": int(order.permId or 0),
        "order_id": int(order_id),
        "client_id": int(order.clientId or 0),
        "ref": order.orderRef or "",
        "symbol": contract.symbol,
        "side": order.action,
        "quantity": shares(order.totalQuantity),
        "status": state.status,
        "filled": shares(getattr(order, "filledQuantity", 0)),
    }
