"""The TWS simulator's market on a workbook: its calendar, its price store and its costs.

``WorkbookMarket`` answers the simulator's questions (which open a market-on-open order is for,
the opening print, commissions, marks, historical bars) from the same sources the workbook's
own jobs read, so a cycle run through the simulator reconciles against the store's prints.

One difference from the file-backed simulated broker: a market-on-open order here fills at the
opening print itself, as an opening auction does, not at the print moved by
``costs.slippage_bps``. The slippage report then shows what IB would: about zero vs the open.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time
from decimal import ROUND_HALF_UP, Decimal
from typing import TYPE_CHECKING

import pandas as pd

from ops_runner.brokers.sim import compute_half_spread, compute_model_quote
from ops_runner.core.errors import DataError
from ops_runner.market.calendar import NY, open_calendar
from ops_runner.market.prices import (
    DividendConvention,
    compute_adjustment_factors,
    compute_split_adjusted,
    compute_split_ratio,
    open_store,
)
from ops_runner.simulators.tws_account import Bar, CorporateAction

if TYPE_CHECKING:
    from ops_runner.workbook.config import Config

CENT = Decimal("0.01")
MOO_ENTRY_CLOSES = time(9, 28)  # Nasdaq takes market-on-open orders until 09:28 ET


def _decimal(value: float) -> Decimal:
    return Decimal(str(float(value)))


class WorkbookMarket:
    """Sessions from ``open_calendar(cfg)``, prints from the store's ``data.primary`` source."""

    def __init__(self, cfg: Config) -> None:
        self._calendar = open_calendar(cfg)
        self._store = open_store(cfg)
        self._source = cfg.primary_source
        costs = self._costs = cfg.costs
        self._per_share = _decimal(costs.commission_per_share)
        self._minimum = _decimal(costs.commission_min)
        self._bars: dict[str, tuple[str, pd.DataFrame]] = {}
        # IB pays a dividend some sessions after its ex-date: the simulated broker's lag.
        self._pay_lag = int(cfg.broker.sim_account.dividend_pay_lag_sessions)

    def _load(self, symbol: str) -> pd.DataFrame | None:
        """The stored raw bars of ``symbol`` (cached by checksum), None when it has none."""
        try:
            sha = str(self._store.read_manifest(self._source, symbol).get("stored_sha256", ""))
            cached = self._bars.get(symbol)
            if cached is not None and cached[0] == sha:
                return cached[1]
            bars = self._store.load_bars(self._source, symbol)
        except DataError:
            return None
        self._bars[symbol] = (sha, bars)
        return bars

    def session_for(self, moment: datetime) -> date | None:
        """The session whose open a market-on-open order entered at ``moment`` is for; None
        from 09:28 New York until that session's close (the venue refuses the order then)."""
        local = moment.astimezone(NY)
        day = local.date()
        if self._calendar.is_session(day):
            if local.time() < MOO_ENTRY_CLOSES:
                return day
            if moment < self._calendar.session_close(day).to_pydatetime():
                return None
        return self._calendar.next_session(day)

    def open_instant(self, session: date) -> datetime:
        """The session's opening instant (UTC)."""
        self._calendar.is_session(session)
        return self._calendar.session_open(session).to_pydatetime().astimezone(UTC)

    def opening_price(self, symbol: str, session: date) -> Decimal | None:
        """The session's opening print to the cent; None while the store lacks that bar."""
        bars = self._load(symbol)
        day = pd.Timestamp(session)
        if bars is None or day not in bars.index:
            return None
        return _decimal(bars.at[day, "open"]).quantize(CENT, rounding=ROUND_HALF_UP)

    def commission(self, symbol: str, quantity: int, price: Decimal) -> Decimal:
        """max(commission_min, commission_per_share x quantity), to the cent (as the sim)."""
        del symbol, price
        fee = max(self._minimum, self._per_share * abs(quantity))
        return fee.quantize(CENT, rounding=ROUND_HALF_UP)

    def quote(self, symbol: str, moment: datetime) -> tuple[Decimal, Decimal] | None:
        """The simulated broker's spread model (``costs.quote_half_spread_bps``, per symbol
        ``quote_half_spreads``) around the last print at ``moment``: the session's open once it
        opened, else the last close. None without a print."""
        bars = self._load(symbol)
        if bars is None:
            return None
        day = moment.astimezone(NY).date()
        closed = self._calendar.last_closed_session(moment)
        if closed != day and self._calendar.is_session(day) and pd.Timestamp(day) in bars.index:
            if moment >= self.open_instant(day):
                opening = _decimal(bars.at[pd.Timestamp(day), "open"])
                return compute_model_quote(opening, compute_half_spread(self._costs, symbol))
        closing = self.mark(symbol, moment)
        if closing is None:
            return None
        return compute_model_quote(closing, compute_half_spread(self._costs, symbol))

    def mark(self, symbol: str, moment: datetime) -> Decimal | None:
        """The close of the last session closed at ``moment``; None without one."""
        bars = self._load(symbol)
        if bars is None:
            return None
        closed = pd.Timestamp(self._calendar.last_closed_session(moment))
        closes = bars["close"].loc[:closed]
        return _decimal(closes.iloc[-1]) if len(closes) else None

    def sessions_opened(self, after: date | None, moment: datetime) -> list[date]:
        """The sessions opened after ``after`` and at or before ``moment`` (``after`` None:
        the last one opened)."""
        local = moment.astimezone(NY).date()
        last = local if self._calendar.is_session(local) else self._calendar.previous_session(local)
        if moment < self.open_instant(last):
            last = self._calendar.previous_session(last)
        if after is None:
            return [last]
        days, day = [], after
        while (day := self._calendar.next_session(day)) <= last:
            days.append(day)
        return days

    def corporate_action(self, symbol: str, session: date) -> CorporateAction | None:
        """The store's dividend and split of ``symbol`` at ``session``, None when neither."""
        bars = self._load(symbol)
        day = pd.Timestamp(session)
        if bars is None or day not in bars.index:
            return None
        dividend, split = float(bars.at[day, "dividend"]), float(bars.at[day, "split"])
        if dividend <= 0 and split == 1.0:
            return None
        closes = bars["close"].loc[: day - pd.Timedelta(days=1)]
        prior = _decimal(closes.iloc[-1]) if len(closes) else Decimal(0)
        pay = session
        for _ in range(self._pay_lag):
            pay = self._calendar.next_session(pay)
        return CorporateAction(_decimal(dividend), compute_split_ratio(split), prior, pay)

    def daily_bars(self, symbol: str, adjusted: bool) -> list[Bar]:
        """Daily bars as IB serves them: TRADES split-adjusted as of today (``adjusted`` False)
        or ADJUSTED_LAST, dividend- and split-adjusted with factors 1 - D_t / close_{t-1}."""
        bars = self._load(symbol)
        if bars is None:
            return []
        if adjusted:
            factors = compute_adjustment_factors(bars, DividendConvention.PREVIOUS_CLOSE)
            prices = bars[["open", "high", "low", "close"]].mul(factors, axis=0)
            volume = compute_split_adjusted(bars)["volume"]
        else:
            split = compute_split_adjusted(bars)
            prices, volume = split[["open", "high", "low", "close"]], split["volume"]
        return [
            Bar(day.date(), float(o), float(h), float(lo), float(c), float(v))
            for day, o, h, lo, c, v in zip(
                prices.index,
                prices["open"],
                prices["high"],
                prices["low"],
                prices["close"],
                volume,
                strict=True,
            )
        ]
