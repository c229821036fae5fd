"""The Interactive Brokers adapter: TWS / IB Gateway through ib_async (or ib_insync).

This is the only module that imports an IB client, and only when a session is first needed
(an idle tick never imports it). The client runs on a private event loop in a daemon thread
(``ib_loop``), so the synchronous Broker protocol works from plain processes and from Jupyter
kernels alike; nothing patches asyncio (neither client applies nest_asyncio on import, and this
adapter never calls their ``startLoop``/``patchAsyncio``). Every library exception, dropped
socket and timeout becomes a typed outcome: BrokerUnavailable (no session: BROKER_DOWN
territory) or BrokerError (a definitive refusal). Orders are market-on-open (MKT, time in force
OPG) with the client reference in ``orderRef``; an order's identity is its permId, the same for
every client id, in ``place``, ``open_orders``, ``completed_orders`` and ``executions``.

After every (re)connect, and when TWS reports its link to IB restored (1101/1102), the session
(``ib_session``) asks again for open orders, completed orders, executions and positions, so a
fill reported while the link or the socket was down is recovered; ``ib_book`` counts each fill
once and joins commissions by execution id.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import importlib
import logging
import math
from collections.abc import Awaitable, Callable
from datetime import UTC, date, datetime
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any

from ops_runner.brokers.base import (
    AccountValues,
    Broker,
    BrokerError,
    BrokerOrder,
    BrokerUnavailable,
    Commission,
    Execution,
    Health,
    Outcome,
    PlaceResult,
    Quote,
    Quotes,
    Statement,
)
from ops_runner.brokers.gate import OrderIntent
from ops_runner.brokers.ib_bars import compute_ib_bars
from ops_runner.brokers.ib_book import IbBook, IbOrder
from ops_runner.brokers.ib_flex import FlexClient, StatementError
from ops_runner.brokers.ib_loop import LoopThread
from ops_runner.brokers.ib_session import (
    UNKNOWN_CONTRACT,
    IbSession,
    SessionLost,
    Settings,
)
from ops_runner.core.errors import CalendarError, DataError, OpsError
from ops_runner.market.calendar import NY, open_calendar
from ops_runner.workbook.config import load_secret, mask_account

if TYPE_CHECKING:
    import pandas as pd

    from ops_runner.workbook.config import Config

ROLES = ("orders", "readonly")
CLIENTS = ("ib_async", "ib_insync")


class _MaskAccount(logging.Filter):
    """Replaces an account id in the client library's log records by its masked form."""

    def __init__(self, account: str) -> None:
        super().__init__()
        self.account = account

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if self.account in message:
            record.msg, record.args = message.replace(self.account, mask_account(self.account)), ()
        return True


def _install_mask(library: str, account: str) -> None:
    if not account:
        return
    for suffix in ("", ".ib", ".client", ".wrapper", ".decoder", ".connection", ".util"):
        logger = logging.getLogger(library + suffix)
        if not any(isinstance(f, _MaskAccount) and f.account == account for f in logger.filters):
            logger.addFilter(_MaskAccount(account))


class IbBroker(Broker):
    """A TWS / IB Gateway session for one role: ``orders`` places and cancels, ``readonly``
    only reads (reconciliation, reports, checks) yet sees every client id's orders. Each role
    has its own client id (``broker.client_ids``).

    ``client`` picks the library ("ib_async", "ib_insync"); None takes ``broker.client`` from
    the config, where "auto" means ib_async if installed, else ib_insync. Connection attempts
    follow ``broker.retry``; requests wait ``broker.request_timeout_seconds``. Account ids
    never appear raw in a message, an exception or the client's log records.
    """

    name = "ib"

    def __init__(
        self,
        cfg: Config,
        clock: Callable[[], datetime] | None = None,
        role: str = "orders",
        client: str | None = None,
    ) -> None:
        if role not in ROLES:
            raise BrokerError(f"IB role {role!r} is unknown; roles: {', '.join(ROLES)}")
        broker = cfg.broker
        self._cfg, self._role = cfg, role
        self._clock = clock or (lambda: datetime.now(UTC))
        self._client_name = str(client or broker.client or "auto")
        if self._client_name not in (*CLIENTS, "auto"):
            raise BrokerError(
                f"IB client {self._client_name!r} is unknown; use ib_async, ib_insync or auto"
            )
        self._settings = Settings(
            host=str(broker.host),
            port=int(broker.port),
            client_id=int(broker.client_ids.of(role)),
            role=role,
            account=str(broker.account or ""),
            connect_timeout=float(broker.connect_timeout_seconds),
            request_timeout=float(broker.request_timeout_seconds),
            attempts=max(1, int(broker.retry.attempts)),
            wait=float(broker.retry.wait_seconds),
        )
        self._account = self._settings.account
        self._loop = LoopThread(f"ib-{role}-{self._settings.client_id}")
        self._book = IbBook(self._working_session, self._open_of, self._now)
        self._session = IbSession(self._settings, self._book, self._library, self._now)
        self._lib: Any = None

    def __repr__(self) -> str:
        s = self._settings
        return f"IbBroker({s.where}, role={s.role}, client_id={s.client_id})"

    # -- plumbing --------------------------------------------------------------------------------

    def _now(self) -> datetime:
        return self._clock().astimezone(UTC)

    def _mask(self, text: str) -> str:
        return text.replace(self._account, mask_account(self._account)) if self._account else text

    def _budget(self) -> float:
        """How long a caller waits for one call: every connect attempt plus the requests."""
        s = self._settings
        login = 3 * s.connect_timeout + 4 * s.request_timeout
        return s.attempts * (login + s.wait) + 6 * s.request_timeout + 5

    def _run(self, make: Callable[[], Awaitable[Any]], what: str) -> Any:
        """Run a coroutine on the client's loop; whatever it raises leaves typed."""
        try:
            return self._loop.run(make, self._budget())  # type: ignore[arg-type]
        except OpsError:
            raise
        except TimeoutError:
            raise BrokerUnavailable(
                f"IB {what}: no outcome within {self._budget():.0f} s from "
                f"{self._settings.where}; check that TWS/Gateway is responsive"
            ) from None
        except (SessionLost, ConnectionError) as exc:
            raise BrokerUnavailable(self._mask(f"IB {what}: session lost ({exc})")) from None
        except Exception as exc:  # boundary: a library surprise is a refusal, not a crash
            raise BrokerError(
                self._mask(f"IB {what} failed: {type(exc).__name__}: {exc}")
            ) from None

    def _library(self) -> Any:
        """Import the client library (only here, only when a session is first needed)."""
        if self._lib is not None:
            return self._lib
        names = CLIENTS if self._client_name == "auto" else (self._client_name,)
        for name in names:
            try:
                self._lib = importlib.import_module(name)
            except ImportError:
                continue
            _install_mask(name, self._account)
            return self._lib
        raise BrokerError(
            f"the IB client {' or '.join(names)} is not installed; pip install ib_async "
            "(or set broker.client to an installed one)"
        )

    def _working_session(self) -> str:
        """The session a still-working market-on-open order is for: today until its close,
        else the next session (no MOO order is taken from 09:28 until the close)."""
        now = self._now()
        day = now.astimezone(NY).date()
        calendar = open_calendar(self._cfg)
        try:
            if calendar.is_session(day) and now < calendar.session_close(day).to_pydatetime():
                return day.isoformat()
            return calendar.next_session(day).isoformat()
        except CalendarError:
            return day.isoformat()

    def _open_of(self, session: str) -> datetime | None:
        calendar = open_calendar(self._cfg)
        try:
            if not calendar.is_session(session):
                return None
            return calendar.session_open(session).to_pydatetime()
        except CalendarError:
            return None

    # -- session ---------------------------------------------------------------------------------

    def connect(self) -> Health:
        """Return the broker's health once a session exists (retried per ``broker.retry``).
        Raises BrokerUnavailable naming what failed and what to check."""
        return self._run(lambda: self._health_async(self._settings.attempts), "connect")

    def health(self) -> Health:
        """Return whether a session exists and the server's clock (it feeds the tick's clock
        check); one connection attempt, and never raises (connected=False, reason in detail)."""
        try:
            return self._run(lambda: self._health_async(1), "health")
        except Exception as exc:  # boundary: a probe reports, it never raises
            paper = self._account.startswith("DU") if self._account else None
            return Health(False, None, self._account or None, paper, self._mask(str(exc)))

    async def _health_async(self, attempts: int) -> Health:
        session = self._session
        async with session.guard():
            for attempt in (1, 2):
                ib = await session.ready(attempts)
                try:
                    server_time = await session.request("current time", ib.reqCurrentTimeAsync)
                    break
                except SessionLost as lost:
                    if attempt == 2:
                        raise BrokerUnavailable(f"IB health: {lost}") from None
        accounts = session.accounts
        account = self._account if self._account in accounts else next(iter(accounts), "")
        s = self._settings
        return Health(
            connected=True,
            server_time=server_time.astimezone(UTC) if server_time else None,
            account=account or None,
            paper=account.startswith("DU") if account else None,
            detail=f"{self._lib.__name__} session on {s.where} as client id {s.client_id} "
            f"({s.role})",
            extra={
                "client": self._lib.__name__,
                "client_id": s.client_id,
                "role": s.role,
                "server_version": ib.client.serverVersion(),
                "commissions_without_execution": len(self._book.unmatched_commissions()),
            },
        )

    def close(self) -> None:
        """End the session and stop the client's thread (idempotent, never raises)."""

        async def end() -> None:
            self._session.drop("closed by the workbook")

        if self._lib is not None:
            with contextlib.suppress(OpsError, RuntimeError, TimeoutError):
                self._loop.run(end, 10)
        self._loop.stop()

    # -- queries ---------------------------------------------------------------------------------

    def account_values(self) -> AccountValues:
        """Return net liquidation, total cash and settled cash (USD) of the configured account.
        Raises BrokerUnavailable without a session, BrokerError when a value is missing."""
        session = self._session

        async def fetch(ib: Any) -> list[Any]:
            await session.request(
                "account values", lambda: ib.reqAccountUpdatesAsync(self._account)
            )
            return list(ib.accountValues(self._account))

        values = self._run(lambda: session.read("account values", fetch), "account values")
        tags: dict[str, Decimal] = {}
        for value in values:
            if value.currency in ("USD", "BASE") and value.tag not in tags:
                with contextlib.suppress(InvalidOperation):
                    tags[value.tag] = Decimal(str(value.value))
        missing = [t for t in ("NetLiquidation", "TotalCashValue") if t not in tags]
        if missing:
            raise BrokerError(
                f"IB account {mask_account(self._account)} reported no {', '.join(missing)}; "
                "check the account's permissions"
            )
        cash = tags["TotalCashValue"]
        account = self._account or next(iter(self._session.accounts), "")
        return AccountValues(account, tags["NetLiquidation"], cash, tags.get("SettledCash", cash))

    def statement(self) -> Statement | None:
        """Return the account's cash movements and corporate actions from IB's Flex statement
        (``broker.flex.enabled``; token and query id from the secrets IB_FLEX_TOKEN and
        IB_FLEX_QUERY_ID), or None when statements are not configured: the books then explain
        differences from the price store. Raises BrokerUnavailable when IB does not answer
        (nothing is booked; the audit waits), SecretError for a missing secret."""

        flex = self._cfg.broker.flex
        if not flex.enabled:
            return None
        token = load_secret(self._cfg, "ib_flex_token")
        query = load_secret(self._cfg, "ib_flex_query_id")
        client = FlexClient(token, query, base_url=str(flex.base_url))
        try:
            return client.read(self._account or None)
        except StatementError as error:
            raise BrokerUnavailable(f"IB statement: {self._mask(str(error))}") from None

    def positions(self) -> dict[str, int]:
        """Return the position of every symbol held in the configured account (no zero rows)."""
        session = self._session

        async def fetch(ib: Any) -> dict[str, int]:
            if not session.fresh:
                await session.refresh_positions()
            return dict(sorted(session.positions.items()))

        return self._run(lambda: session.read("positions", fetch), "positions")

    def _book_read(self, what: str, pick: Callable[[], Any]) -> Any:
        session = self._session

        async def fetch(ib: Any) -> Any:
            if not session.fresh:  # open, completed, executions: a status never lags a fill
                await session.sync()
            return pick()

        return self._run(lambda: session.read(what, fetch), what)

    def open_orders(self) -> list[BrokerOrder]:
        """Return every working order of the account (all client ids, TWS's too)."""
        return self._book_read("open orders", self._book.open_orders)

    def completed_orders(self) -> list[BrokerOrder]:
        """Return filled, partly filled, cancelled, expired and rejected orders. ``client_ref``
        is recovered by permId when IB sends orderRef empty; else it stays empty (and
        ``find_order`` falls back to symbol, side, quantity and session)."""
        return self._book_read("completed orders", self._book.completed_orders)

    def executions(self, since: datetime | None = None) -> list[Execution]:
        """Return each fill once (deduplicated by execution id), oldest first; ``session`` is
        the New York date of the fill."""
        return self._book_read("executions", lambda: self._book.executions(since))

    def commissions(self) -> list[Commission]:
        """Return one commission per execution id, whether it came before or after its fill
        (none for a fill whose report never came)."""
        return self._book_read("commissions", self._book.commissions)

    # -- orders ----------------------------------------------------------------------------------

    def _require_orders_role(self, what: str) -> None:
        if self._role != "orders":
            raise BrokerError(
                f"the read-only IB session (client id {self._settings.client_id}) never "
                f"{what}s orders; open the broker with role='orders'"
            )

    def _place(self, intent: OrderIntent) -> PlaceResult:
        """Place a market-on-open order (MKT, OPG) carrying ``intent.client_ref`` (its pass
        verified by ``Broker.place``); return its outcome.

        Raises BrokerError for the read-only role, BrokerUnavailable when there is no session
        or it drops around the send (look the reference up, never resend). REJECTED is
        definitive (IB 201 and the like); UNKNOWN (no acknowledgement in time, or IB 103
        duplicate order id) means look the reference up. A reference already at the broker is
        adopted, never sent twice.
        """
        self._require_orders_role("place")
        return self._run(lambda: self._place_async(intent), f"place {intent.client_ref}")

    async def _place_async(self, intent: OrderIntent) -> PlaceResult:
        ref, session = intent.client_ref, self._session
        async with session.guard():
            await session.ready()
            existing = self._book.find_ref(ref)
            if existing is not None:
                return self._adopt(ref, existing)
            quantity = intent.quantity
            if not isinstance(quantity, int) or isinstance(quantity, bool) or quantity <= 0:
                text = f"quantity must be a positive whole number of shares, got {quantity!r}"
                return PlaceResult(Outcome.REJECTED, ref, code="quantity", text=text)
            lib = session.lib
            contract = lib.Stock(intent.symbol, "SMART", "USD")
            order = lib.Order(
                action=str(intent.side),
                totalQuantity=quantity,
                orderType="MKT",
                tif="OPG",
                orderRef=ref,
                account=self._account,
            )
            kind, placed, code, text = await session.send_order(
                contract, order, intent.session or ""
            )
        if kind == "accepted":
            return PlaceResult(Outcome.ACCEPTED, ref, placed.broker_order_id, text=text)
        if kind == "rejected":
            return PlaceResult(Outcome.REJECTED, ref, None, code, text)
        return PlaceResult(Outcome.UNKNOWN, ref, None, code or None, text)

    def _adopt(self, ref: str, order: IbOrder) -> PlaceResult:
        known = [*self._book.open_orders(), *self._book.completed_orders()]
        found = next((o for o in known if o.broker_order_id == order.broker_order_id), None)
        if order.working or (found is not None and found.filled > 0):
            text = "already at the broker under this reference: not sent again"
            return PlaceResult(Outcome.ACCEPTED, ref, order.broker_order_id, text=text)
        status = found.status if found is not None else order.ib_status
        return PlaceResult(
            Outcome.REJECTED,
            ref,
            order.broker_order_id,
            "duplicate_ref",
            f"reference {ref} already used by order {order.broker_order_id} ({status}); a new "
            "order needs a new reference",
        )

    def cancel(self, client_ref: str) -> bool:
        """Cancel the working order carrying ``client_ref``; return whether IB cancelled it.
        Raises BrokerError for the read-only role, BrokerUnavailable without a session."""
        self._require_orders_role("cancel")
        return self._run(lambda: self._cancel_async(client_ref), f"cancel {client_ref}")

    async def _cancel_async(self, client_ref: str) -> bool:
        session = self._session
        async with session.guard():
            await session.ready()
            order = self._book.find_ref(client_ref)
            if order is None or not order.working or order.order_id <= 0:
                return False
            return await session.cancel_order(order)

    # -- data ------------------------------------------------------------------------------------

    def quotes(self, symbols: list[str]) -> Quotes:
        """Return IB's bid and ask per symbol from one market-data snapshot (reqMktData with
        snapshot=True, through the client's reqTickers): live data, or with ``broker.quotes``
        delayed IB's delayed data where live is not subscribed (reqMarketDataType 3); with
        ``none`` IB is not asked. A symbol IB sends no bid or ask for, or none within the
        request timeout, is unquoted with the reason. Raises BrokerUnavailable without a
        session."""
        wanted = sorted(set(symbols))
        mode = str(self._cfg.broker.quotes)
        if mode == "none":
            return Quotes({}, {s: "broker.quotes is none: IB was not asked" for s in wanted})
        if not wanted:
            return Quotes()
        fetch = functools.partial(self._quotes_async, wanted, mode)
        return self._run(lambda: self._session.read("quotes", fetch), "quotes")

    async def _quotes_async(self, symbols: list[str], mode: str, ib: Any) -> Quotes:
        lib, timeout = self._session.lib, self._settings.request_timeout
        ib.reqMarketDataType(3 if mode == "delayed" else 1)
        contracts = [lib.Stock(symbol, "SMART", "USD") for symbol in symbols]
        quoted: dict[str, Quote] = {}
        unquoted: dict[str, str] = {}
        try:
            # Not session.request: a snapshot IB leaves unanswered is no quote, not a lost
            # session (an unsubscribed symbol may simply never tick). The client keys a
            # snapshot by contract id: each contract is qualified first (in place).
            await asyncio.wait_for(ib.qualifyContractsAsync(*contracts), timeout)
            known = [c for c in contracts if c.conId]
            # One snapshot per symbol: IB refusing one (354, not subscribed) spoils no other.
            asked = [ib.reqTickersAsync(c) for c in known]
            answers = await asyncio.wait_for(asyncio.gather(*asked, return_exceptions=True),
                                             timeout)  # fmt: skip
        except TimeoutError:
            why = f"no snapshot from IB within {timeout:g} s"
            return Quotes({}, {symbol: why for symbol in symbols})
        for contract in contracts:
            if not contract.conId:
                unquoted[contract.symbol] = "IB does not know it (no contract details)"
        now = self._now()
        for contract, answer in zip(known, answers, strict=True):
            symbol = contract.symbol
            if isinstance(answer, BaseException):
                unquoted[symbol] = self._mask(f"IB refused the snapshot: {answer}")
                continue
            (ticker,) = answer
            bid, ask = _quoted_price(ticker.bid), _quoted_price(ticker.ask)
            if bid is None or ask is None:
                hint = (
                    ""
                    if mode == "delayed"
                    else "; without a subscription set broker.quotes: delayed"
                )
                unquoted[symbol] = f"IB sent no {'bid' if bid is None else 'ask'}{hint}"
                continue
            kind = "delayed" if getattr(ticker, "marketDataType", 1) in (3, 4) else "live"
            quoted[symbol] = Quote(symbol, bid, ask, now, f"ib {kind} snapshot")
        return Quotes(quoted, unquoted)

    def historical_bars(self, symbol: str, start: date | str, end: date | str) -> pd.DataFrame:
        """Return canonical daily bars of ``symbol`` for ``start``..``end`` from IB.

        Prices are IB's TRADES bars (regular hours), split-adjusted as of the download, as
        Yahoo's are; the dividend column comes from the ADJUSTED_LAST/TRADES ratio on ex-dates
        (see ``ib_bars``); split is 1.0. Raises DataError for a symbol IB does not know
        (162/200) or no bars, BrokerUnavailable without a session.
        """

        first, last = date.fromisoformat(str(start)), date.fromisoformat(str(end))
        trades, adjusted = self._run(lambda: self._bars_async(symbol, first), f"bars {symbol}")
        return compute_ib_bars(symbol, trades, adjusted, first, last)

    async def _bars_async(self, symbol: str, start: date) -> tuple[list[Any], list[Any]]:
        today = self._now().astimezone(NY).date()
        days = max(1, (today - start).days + 1)
        duration = f"{days} D" if days <= 365 else f"{math.ceil(days / 365)} Y"
        session, series = self._session, []

        async def fetch(ib: Any, what: str) -> list[Any]:
            contract = session.lib.Stock(symbol, "SMART", "USD")
            # ADJUSTED_LAST takes no end date at IB: both series are asked "as of now".
            return await session.request(
                f"{what} bars of {symbol}",
                lambda: ib.reqHistoricalDataAsync(
                    contract, "", duration, "1 day", what, True, 1, timeout=0
                ),
            )

        for what in ("TRADES", "ADJUSTED_LAST"):
            try:
                bars = await session.read(
                    f"{what} bars of {symbol}", functools.partial(fetch, what=what)
                )
            except BrokerError as exc:
                if exc.code and exc.code.isdigit() and int(exc.code) in UNKNOWN_CONTRACT:
                    raise DataError(
                        f"IB does not know {symbol} ({exc}); check the symbol (a US ETF at "
                        "SMART in USD)"
                    ) from None
                raise
            rows = [(_bar_date(b.date), b.open, b.high, b.low, b.close, b.volume) for b in bars]
            series.append([(d, *(float(v) for v in values)) for d, *values in rows])
        return series[0], series[1]


def _quoted_price(value: Any) -> Decimal | None:
    """A bid or ask as IB's client holds it (nan or -1 when none came), as a Decimal or None."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return Decimal(str(number)) if math.isfinite(number) and number > 0 else None


def _bar_date(value: Any) -> date:
    if isinstance(value, datetime):
        return value.astimezone(NY).date() if value.tzinfo else value.date()
    if isinstance(value, date):
        return value
    return datetime.strptime(str(value)[:8], "%Y%m%d").date()
