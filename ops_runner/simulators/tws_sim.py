"""A loopback TWS API server at server version 176 for the IB adapter's tests, with faults.

The simulator speaks the TWS socket protocol on 127.0.0.1 to the real ib_async and ib_insync
clients: the handshake, startApi, the requests ``IB.connect`` makes, market-on-open orders,
executions, commissions, positions, account values, contract details and daily bars.
Orders, executions and positions belong to the simulated account (``tws_account.Account``),
not to a connection: a client that reconnects, under any client id, sees all of them.

Accepts: startApi 71, placeOrder 3 (MKT + OPG only), cancelOrder 4, reqOpenOrders 5 and
reqAllOpenOrders 16 (every working order of the account), reqCompletedOrders 99,
reqExecutions 7, reqPositions 61, reqAccountUpdates 6, reqAccountUpdatesMulti 76,
reqAccountSummary 62, reqIds 8, reqCurrentTime 49, reqManagedAccts 17, reqContractDetails 9,
reqHistoricalData 20 (daily TRADES / ADJUSTED_LAST), reqMktData 1 (snapshots of the bid and
ask) and reqMarketDataType 59; cancels and reqAutoOpenOrders are
accepted silently; anything else is listed by ``protocol_errors()``.
Emits: nextValidId 9, managedAccounts 15, error 4, orderStatus 3, openOrder 5 / end 53,
completedOrder 101 / end 102, execDetails 11 / end 55, commissionReport 59, position 61 /
end 62, updateAccountValue 6, updatePortfolio 7, updateAccountTime 8, accountDownloadEnd 54,
accountSummary 63 / end 64, accountUpdateMulti 73 / end 74, currentTime 49,
contractDetails 10 / end 52, historicalData 17 (its end is implied at v176), tickReqParams 81,
marketDataType 58, tickPrice 1, tickSnapshotEnd 57.
Error codes: 103, 162, 200, 201, 202, 321, 326, 354, 399, 1100, 1102, 10147, 10148, 10167.

A Gateway restart (``restart``, or ``shut_down`` then ``listen``): every socket dropped, the
port refusing connections while the Gateway is away, then listening again; the account, its
orders and executions survive it, as they do at IB.

Threads: ``start()`` runs an asyncio loop in a daemon thread; every socket and every change
to the account happens on that loop. Tests read snapshots from their own thread.
"""

from __future__ import annotations

import asyncio
import logging
import re
import struct
import threading
import traceback
from collections.abc import Callable, Coroutine, Mapping
from datetime import datetime
from decimal import Decimal
from typing import Any

from ops_runner.simulators import tws_codec as wire
from ops_runner.simulators import tws_orders as orders
from ops_runner.simulators.tws_account import (
    NY,
    Account,
    Bar,
    Market,
    SimExecution,
    SimOrder,
    StaticMarket,
    compute_con_id,
)
from ops_runner.simulators.tws_codec import SERVER_VERSION
from ops_runner.simulators.tws_link import Connection, TwsFaults

__all__ = [
    "SERVER_VERSION",
    "Bar",
    "Market",
    "SimExecution",
    "SimOrder",
    "StaticMarket",
    "DecodeErrorWatch",
    "TwsFaults",
    "TwsSimulator",
    "compute_con_id",
]

log = logging.getLogger(__name__)

TICK_SECONDS = 0.05  # the account advances on this timer as well as on every request
TEXT_326 = "Unable to connect as the client id is already in use. Retry with a unique client id."


class DecodeErrorWatch(logging.Handler):
    """Collects the clients' decoder failures, which they only log (and then drop the message).

    ``with DecodeErrorWatch() as watch: ...`` then ``assert not watch.failures``. It listens to
    the "ib_async" and "ib_insync" loggers for ERROR records that say a message could not be
    decoded ("Error handling fields", "Error for <method>").
    """

    MARKERS = ("Error handling fields", "Error for ")
    LOGGERS = ("ib_async", "ib_insync")

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.failures: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if any(message.startswith(m) for m in self.MARKERS):
            self.failures.append(f"{record.name}: {message}")

    def __enter__(self) -> DecodeErrorWatch:
        for name in self.LOGGERS:
            logging.getLogger(name).addHandler(self)
        return self

    def __exit__(self, *exc: object) -> None:
        for name in self.LOGGERS:
            logging.getLogger(name).removeHandler(self)


class TwsSimulator:
    """The loopback TWS: one simulated account, any number of client connections."""

    def __init__(
        self,
        market: Market,
        clock: Callable[[], datetime],
        *,
        account: str = "DU1234521",
        cash: Decimal = Decimal("100000"),
        positions: Mapping[str, int] | None = None,
        faults: TwsFaults | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.market = market
        self.clock = clock
        self.faults = faults or TwsFaults()
        self.host = host
        self._port = port
        self._account = Account(account, Decimal(cash))
        for symbol, quantity in (positions or {}).items():
            self._account.positions[symbol] = int(quantity)
            mark = market.mark(symbol, clock())
            self._account.avg_cost[symbol] = mark if mark is not None else Decimal(0)
        self._conns: list[Connection] = []
        self._errors: list[str] = []
        self._orders_received = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.Server | None = None
        self._ticker: asyncio.Task | None = None
        self._in_window = False
        self._coming_back: asyncio.TimerHandle | None = None

    # --- lifecycle -------------------------------------------------------------------------

    def start(self) -> int:
        """Start the server in a daemon thread; returns the port it listens on."""
        if self._thread:
            return self._port
        ready = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            try:
                loop.run_until_complete(self._open())
            except BaseException as exc:  # reported to start()'s caller below
                failure.append(exc)
                ready.set()
                return
            ready.set()
            loop.run_forever()
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

        self._thread = threading.Thread(target=run, name="tws-sim", daemon=True)
        self._thread.start()
        ready.wait(10)
        if failure:
            self._thread = None
            raise failure[0]
        return self._port

    async def _open(self) -> None:
        self._server = await asyncio.start_server(self._serve, self.host, self._port)
        self._port = self._server.sockets[0].getsockname()[1]
        self._ticker = asyncio.get_running_loop().create_task(self._tick())

    def stop(self) -> None:
        """Close every connection and the server; idempotent."""
        loop, thread = self._loop, self._thread
        if not loop or not thread or not loop.is_running():
            return
        asyncio.run_coroutine_threadsafe(self._close(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        self._thread = None

    async def _close(self) -> None:
        if self._ticker:
            self._ticker.cancel()
        if self._coming_back is not None:
            self._coming_back.cancel()
        for conn in list(self._conns):
            conn.abort()
        if self._server:
            self._server.close()

    def __enter__(self) -> TwsSimulator:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        return self._port

    # --- what tests read -------------------------------------------------------------------

    def orders(self) -> list[SimOrder]:
        """Every order the account took (rejected ones too, status Inactive), as copies."""
        return self._account.snapshot_orders()

    def executions(self) -> list[SimExecution]:
        return self._account.snapshot_executions()

    def positions(self) -> dict[str, int]:
        with self._account.lock:
            return {k: v for k, v in self._account.positions.items() if v}

    def cash(self) -> Decimal:
        """TotalCashValue."""
        with self._account.lock:
            return self._account.cash

    def settled_cash(self) -> Decimal:
        return self._account.settled_cash(self.clock())

    def account_values(self) -> dict[str, Decimal]:
        return self._account.values(self.clock(), self.market)

    def connections(self) -> int:
        """Live client sockets."""
        return sum(1 for c in self._conns if not c.closed)

    def protocol_errors(self) -> list[str]:
        """Messages the simulator could not parse or does not know (empty in a clean run)."""
        return list(self._errors)

    def advance(self) -> None:
        """Fill whatever the clock and the market allow now, pushing to connected clients."""
        loop = self._loop
        if loop is None or not loop.is_running():
            return
        if threading.current_thread() is self._thread:
            self._advance()
            return

        async def step() -> None:
            self._advance()

        asyncio.run_coroutine_threadsafe(step(), loop).result(10)

    def drop_clients(self) -> None:
        """Abort every client socket now (a test's hand on the network cable)."""
        if self._loop:
            self._loop.call_soon_threadsafe(self._drop_all)

    # --- a Gateway restart -------------------------------------------------------------------

    @property
    def listening(self) -> bool:
        """Whether the port takes connections (False between ``shut_down`` and ``listen``)."""
        return self._server is not None and self._server.is_serving()

    def shut_down(self) -> None:
        """The Gateway goes away: every client socket is dropped and nothing listens on the
        port (a client is refused) until ``listen``. The account, its orders and executions
        stay: they live at IB, not in the Gateway."""
        self._on_loop(self._shut_down)

    def listen(self) -> None:
        """The Gateway is back on the same port (idempotent)."""
        self._on_loop(self._listen)

    def restart(self, away_seconds: float) -> None:
        """A Gateway restart: ``shut_down`` now, ``listen`` again ``away_seconds`` later (real
        seconds: a client's reconnect loop lives in real time)."""

        async def restart() -> None:
            if self._coming_back is not None:
                self._coming_back.cancel()
            await self._shut_down()
            loop = asyncio.get_running_loop()
            self._coming_back = loop.call_later(
                away_seconds, lambda: loop.create_task(self._listen())
            )

        self._on_loop(restart)

    def _on_loop(self, step: Callable[[], Coroutine[Any, Any, None]]) -> None:
        loop = self._loop
        if loop is None or not loop.is_running():
            raise RuntimeError("the TWS simulator is not started")
        asyncio.run_coroutine_threadsafe(step(), loop).result(10)

    async def _shut_down(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        self._drop_all()

    async def _listen(self) -> None:
        self._coming_back = None
        if self._server is None:
            self._server = await asyncio.start_server(self._serve, self.host, self._port)

    # --- sockets ---------------------------------------------------------------------------

    def _restarting(self) -> bool:
        window = self.faults.restart_window
        if not window:
            return False
        now = self.clock().astimezone(NY).time()
        start, end = window
        return start <= now < end if start <= end else (now >= start or now < end)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.faults.close_on_accept or self._restarting():
            writer.close()
            return
        conn = Connection(writer)
        self._conns.append(conn)
        try:
            if await self._handshake(reader, conn) and not self.faults.silent:
                buffer = bytearray()
                while not conn.closed and (data := await reader.read(65536)):
                    buffer += data
                    for fields in wire.decode_frames(buffer):
                        self._dispatch(conn, fields)
                        if conn.closed:
                            break
            else:
                while await reader.read(65536):  # silent: swallow everything until EOF
                    pass
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self._conns.remove(conn)
            if not conn.closed:
                conn.closed = True
                writer.close()

    async def _handshake(self, reader: asyncio.StreamReader, conn: Connection) -> bool:
        prefix = await reader.readexactly(4)
        if prefix != b"API\0":
            self._errors.append(f"handshake: expected API\\0, got {prefix!r}")
            return False
        size = struct.unpack(">I", await reader.readexactly(4))[0]
        text = (await reader.readexactly(size)).decode(errors="replace")
        match = re.match(r"v(\d+)\.\.(\d+)", text)
        if not match:
            self._errors.append(f"handshake: no version range in {text!r}")
            return False
        conn.client_versions = (int(match[1]), int(match[2]))
        if self.faults.silent:
            return False
        conn.writer.write(wire.encode_handshake_reply(self.faults.server_version, self.clock()))
        return True

    def _drop_all(self) -> None:
        for conn in list(self._conns):
            conn.abort()

    def _broadcast(self, fields: list[str]) -> None:
        for conn in self._live():
            conn.send(fields)

    def _live(self) -> list[Connection]:
        return [c for c in self._conns if c.client_id is not None and not c.closed]

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(TICK_SECONDS)
            try:
                inside = self._restarting()
                if inside and not self._in_window:
                    self._drop_all()
                self._in_window = inside
                self._advance()
            except Exception:  # the timer must survive a failing market; the test sees it
                self._errors.append("advance: " + traceback.format_exc(limit=3))

    # --- requests --------------------------------------------------------------------------

    def _dispatch(self, conn: Connection, fields: list[str]) -> None:
        try:
            msg_id = int(fields[0])
        except (IndexError, ValueError):
            self._errors.append(f"unreadable message: {fields!r}")
            return
        if conn.client_id is None and msg_id != wire.START_API:
            self._errors.append(f"message {msg_id} before startApi: {fields!r}")
            return
        handler = _HANDLERS.get(msg_id)
        if handler is None:
            if msg_id not in _IGNORED:
                self._errors.append(f"unhandled message id {msg_id}: {fields!r}")
            return
        try:
            handler(self, conn, fields)
        except Exception:
            self._errors.append(f"message {fields!r}: " + traceback.format_exc(limit=3))
        if not conn.closed:
            self._advance()

    def _start_api(self, conn: Connection, fields: list[str]) -> None:
        client_id = int(fields[2])
        taken = client_id in self.faults.client_ids_in_use or any(
            c.client_id == client_id for c in self._live()
        )
        if taken:
            conn.send(wire.msg_error(-1, 326, TEXT_326))
            conn.closed = True
            conn.writer.close()
            return
        conn.client_id = client_id
        conn.send(wire.msg_next_valid_id(self._account.next_order_id()))
        conn.send(wire.msg_managed_accounts([self._account.name]))

    def _req_ids(self, conn: Connection, fields: list[str]) -> None:
        conn.send(wire.msg_next_valid_id(self._account.next_order_id()))

    def _req_current_time(self, conn: Connection, fields: list[str]) -> None:
        conn.send(wire.msg_current_time(int(self.clock().timestamp())))

    def _req_managed_accounts(self, conn: Connection, fields: list[str]) -> None:
        conn.send(wire.msg_managed_accounts([self._account.name]))

    def _place_order(self, conn: Connection, fields: list[str]) -> None:
        self._orders_received += 1
        limit = self.faults.drop_after_orders
        dropping = limit is not None and self._orders_received >= limit
        orders.place_order(self, conn, fields, acknowledge=not dropping)
        if dropping:
            self.faults.drop_after_orders = None
            self._orders_received = 0
            conn.abort()

    def _advance(self) -> None:
        orders.fill_due_orders(self)


# Requests the simulator accepts and has nothing to answer (cancels, subscriptions it ignores).
_IGNORED = frozenset(
    {
        wire.REQ_AUTO_OPEN_ORDERS,
        wire.CANCEL_HISTORICAL_DATA,
        wire.CANCEL_ACCOUNT_SUMMARY,
        wire.CANCEL_POSITIONS,
        wire.CANCEL_ACCOUNT_UPDATES_MULTI,
    }
)

_HANDLERS: dict[int, Callable[[TwsSimulator, Connection, list[str]], None]] = {
    wire.START_API: TwsSimulator._start_api,
    wire.REQ_IDS: TwsSimulator._req_ids,
    wire.REQ_CURRENT_TIME: TwsSimulator._req_current_time,
    wire.REQ_MANAGED_ACCTS: TwsSimulator._req_managed_accounts,
    wire.PLACE_ORDER: TwsSimulator._place_order,
    wire.CANCEL_ORDER: orders.cancel_order,
    wire.REQ_OPEN_ORDERS: orders.send_open_orders,
    wire.REQ_ALL_OPEN_ORDERS: orders.send_open_orders,
    wire.REQ_COMPLETED_ORDERS: orders.send_completed_orders,
    wire.REQ_EXECUTIONS: orders.send_executions,
    wire.REQ_POSITIONS: orders.send_positions,
    wire.REQ_ACCOUNT_UPDATES: orders.send_account_updates,
    wire.REQ_ACCOUNT_UPDATES_MULTI: orders.send_account_updates_multi,
    wire.REQ_ACCOUNT_SUMMARY: orders.send_account_summary,
    wire.REQ_CONTRACT_DATA: orders.send_contract_details,
    wire.REQ_HISTORICAL_DATA: orders.send_historical_data,
    wire.REQ_MKT_DATA: orders.send_market_data,
    wire.REQ_MARKET_DATA_TYPE: orders.set_market_data_type,
}
