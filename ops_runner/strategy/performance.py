"""Performance: the live (ledger) equity curve against the research backtest, month by month.

The live curve, per session from the first funded rebalance close to the last session with data,
is the ledger's own equity (``projections.compute_ledger_equity``): cash (opening balance + flows
+ sells - buys - commissions + what the account booked between trades) + the dividends owed + the
shares the fills and splits left, marked at the session's raw close. Between trades it reads the
ledger's account events (``projections.compute_account_events``, each once):

- a ``DividendEntitled`` credits its amount net of its withholding on its ex-date, as a
  receivable (what the account is owed from that day, as a broker's net liquidation counts it);
  the first ``DividendPaid`` of its symbol and ex-date moves it to cash, so the pay date changes
  equity only by what was paid or withheld beyond the entitlement. A ``DividendPaid`` or
  ``TaxWithheld`` without an entitlement is credited on its date;
- a ``SplitApplied`` changes the shares and pays its cash in lieu at its effective session's
  open, before that session's fills;
- ``InterestBooked`` and ``FeeCharged`` are income and expense on their ``on`` session;
- a ``CashAdjusted`` whose reason mentions a dividend, recorded after the first fill, is a
  dividend on its session (the ledger's cash holds it).

Dates off the calendar count on the session on or before them. A ledger with no account events
at all (written before the books existed) is credited from the price store instead, and a note
says so: each cash dividend in the store as cash on its ex-date on the shares held into it,
shares held into a split times its ratio, a dividend ``CashAdjusted`` skipped (the store already
credited it). Live never reinvests a dividend; the backtest reinvests the store's at the ex-date
close through its adjusted prices, so the dividends waiting (owed, then cash, until the next
rebalance) are cash like the rest of the account's. The opening balance is every
``CashAdjusted`` recorded before the first fill; a later one is a flow, dated by its payload's
``session`` (else the session of its ``recorded_at``), and live returns are time-weighted.

The research curve is ``research.backtest`` of the same config from the same rebalance close with
the live equity of that close as its capital. Each month (calendar months of sessions after the
start) both returns are measured from the previous month's last close; the tracking difference
TD = live - research is split into parts that sum to it EXACTLY, each in bps of the curve's own
start-of-month equity (E_L for live, E_R for research). Each session t is two intervals, the
overnight gap (close t-1 to open t, holdings before t's fills) and the day (open t to close t,
after them); v_i is the value of asset i at an interval's start (live: raw prices; research:
adjusted), x_i = v_i / E, X = sum of x_i, rho_i the asset's adjusted (research) return over the
interval and rho_R = sum v_R,i rho_i / sum v_R,i research's invested return (0 when all cash):

- slippage      = -sum over the month's fills of (fill - model) x signed shares / E_L, where
                  model is the raw open moved costs.slippage_bps against the trader (the
                  backtest's price);
- commissions   = -(live commissions / E_L - research commissions / E_R);
- interest_fees = the month's ``InterestBooked`` and ``FeeCharged`` / E_L (research has none);
- cash_drag     = sum over intervals of (X_L - X_R) x rho_R: the money live holds outside the
                  market beyond research's (the cash buffer, whole-share remainders, dividends
                  owed or waiting for the next rebalance) times the market;
- rounding      = sum over intervals and assets both hold of (x_L,i - x_R,i X_L,c / X_R,c) x
                  rho_i, X_.,c over those assets: the mix whole-share sizing on the decision
                  close leaves, against the backtest's sizing on the open (zero with one asset);
- other         = TD - (the parts above): assets only one side holds (a skipped or different
                  decision), the modelled slippage on different traded sizes, dividends the
                  ledger credits otherwise than the store implies (withholding, a missed or
                  different entitlement, a payment other than entitled: a note names each),
                  dividends taken as cash vs reinvested within the ex-date, flows.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from enum import StrEnum
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from ops_runner.core.errors import CalendarError, DataError
from ops_runner.core.events import EventKind
from ops_runner.ledger import LedgerMissing, open_ledger
from ops_runner.ledger.projections import compute_account_events, compute_fills
from ops_runner.market.calendar import open_calendar
from ops_runner.market.prices import open_store
from ops_runner.strategy import research
from ops_runner.strategy.momentum import StrategyError, StrategySettings
from ops_runner.strategy.research import ResearchError
from ops_runner.workbook.config import Config

if TYPE_CHECKING:
    from matplotlib.figure import Figure

log = logging.getLogger(__name__)

TOLERANCE_BPS = 50.0  # per month; config has no such key (its slippage bands are per order)
PARTS = ("slippage", "commissions", "interest_fees", "cash_drag", "rounding", "other")
BPS = 10_000.0
# Dollars: an entitlement is shares x rate to the cent, so half a cent apart is no difference.
ROUNDING = 0.0051


class PerformanceStatus(StrEnum):
    """What a performance report can say."""

    NO_HISTORY = "NO_HISTORY"  # no ledger or no fill yet: nothing live to compare
    NO_OPENING_BALANCE = "NO_OPENING_BALANCE"  # fills without a CashAdjusted before them
    NO_DATA = "NO_DATA"  # no closed month, no price, or no backtest over the window
    TRACKING = "TRACKING"  # every month's |TD| within the tolerance
    DIVERGING = "DIVERGING"  # at least one month beyond it


class DividendSource(StrEnum):
    """Where the live curve's dividends and splits come from."""

    LEDGER = "ledger"  # the account events the books recorded
    STORE = "price store"  # a ledger without any: written before the books existed


@dataclass(frozen=True)
class MonthAttribution:
    """One calendar month: both returns, the tracking difference and its parts (bps)."""

    month: str  # YYYY-MM
    first_session: str
    last_session: str
    live_start_equity: float
    research_start_equity: float
    live_return: float
    research_return: float
    tracking_bps: float
    slippage_bps: float
    commissions_bps: float
    interest_fees_bps: float
    cash_drag_bps: float
    rounding_bps: float
    other_bps: float
    fills: int
    live_commissions: float
    research_commissions: float
    slippage_dollars: float  # live fills vs the backtest's price, + = cost

    def parts(self) -> dict[str, float]:
        """Return the parts by name (bps); they sum to ``tracking_bps``."""
        return {name: getattr(self, f"{name}_bps") for name in PARTS}


@dataclass(frozen=True)
class PerformanceReport:
    """Live vs research over one window; ``curves`` is per session, ``months`` oldest first."""

    status: PerformanceStatus
    message: str
    start: str | None = None
    end: str | None = None
    capital: float | None = None
    tolerance_bps: float = TOLERANCE_BPS
    curves: pd.DataFrame = field(default_factory=pd.DataFrame, repr=False)
    months: tuple[MonthAttribution, ...] = ()
    notes: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return self.status in (PerformanceStatus.TRACKING, PerformanceStatus.DIVERGING)

    def total_returns(self) -> tuple[float, float]:
        """Return (live, research) returns over the whole window; live time-weighted."""
        live = float(np.prod([1 + m.live_return for m in self.months]) - 1)
        research = float(np.prod([1 + m.research_return for m in self.months]) - 1)
        return live, research

    def part_totals(self) -> dict[str, float]:
        """Return each part summed over the months (bps)."""
        return {p: float(sum(m.parts()[p] for m in self.months)) for p in PARTS}

    def summary(self) -> str:
        """Return one line: does production behave like research, and why (or why not known)."""
        if not self.ok:
            return f"performance: {self.status}: {self.message}"
        live, research = self.total_returns()
        worst = max(self.months, key=lambda m: abs(m.tracking_bps))
        part, value = max(self.part_totals().items(), key=lambda kv: abs(kv[1]))
        beyond = sum(1 for m in self.months if abs(m.tracking_bps) > self.tolerance_bps)
        verdict = (f"production DIVERGES from research in {beyond} month(s)" if beyond
                   else "production behaves like research")  # fmt: skip
        default = " (default)" if self.tolerance_bps == TOLERANCE_BPS else ""
        return (
            f"performance {self.start}..{self.end}, {len(self.months)} month(s): live "
            f"{live:+.2%} vs research {research:+.2%}, tracking {(live - research) * BPS:+.1f} "
            f"bps; worst month {worst.month} {worst.tracking_bps:+.1f} bps; largest part "
            f"{part.replace('_', ' ')} {value:+.1f} bps; tolerance {self.tolerance_bps:g} "
            f"bps/month{default}: {verdict}"
        )

    def to_frame(self) -> pd.DataFrame:
        """Return the per-session curves: live and research equity and cash, live flows."""
        return self.curves.copy()

    def months_frame(self) -> pd.DataFrame:
        """Return one row per month: returns, tracking difference and its parts (bps)."""
        names = list(MonthAttribution.__dataclass_fields__)
        return pd.DataFrame([vars(m) for m in self.months], columns=names).set_index("month")

    def to_payload(self) -> dict[str, Any]:
        """Return the report JSON-safe (floats rounded, no NaN), summary and months included."""
        live, research = self.total_returns() if self.months else (None, None)
        return {
            "status": str(self.status), "summary": self.summary(), "message": self.message,
            "start": self.start, "end": self.end, "capital": _round(self.capital, 2),
            "tolerance_bps": self.tolerance_bps, "live_return": _round(live, 8),
            "research_return": _round(research, 8),
            "parts_bps": {k: _round(v, 4) for k, v in self.part_totals().items()},
            "months": [{k: _round(v, 8) for k, v in vars(m).items()} for m in self.months],
            "notes": list(self.notes),
        }  # fmt: skip


def _round(value: Any, digits: int) -> Any:
    if isinstance(value, float | np.floating):
        return round(float(value), digits) if math.isfinite(value) else None
    return value


# -- the live book ------------------------------------------------------------------------------


@dataclass(frozen=True)
class AccountMove:
    """One thing the ledger booked between trades, on the session it counts: the change of
    shares (a split of ``symbol``), of cash and of the dividends owed, and what it adds to equity
    as a dividend or as interest and fees."""

    session: date
    symbol: str | None = None  # the split's
    shares: int = 0
    cash: float = 0.0
    receivable: float = 0.0
    dividend: float = 0.0
    income: float = 0.0


@dataclass(frozen=True)
class Entitlement:
    """A dividend the ledger says the account is owed from its ex-date (withholding negative)."""

    symbol: str
    ex_date: date
    gross: float
    withholding: float


@dataclass(frozen=True)
class LiveBook:
    """What the ledger says happened: funding, fills by session, flows, and between trades the
    account's moves (from the ledger, or none when the store's dividends and splits stand in)."""

    capital: float
    fills: tuple[dict[str, Any], ...]  # symbol, session (date), signed, price, commission
    flows: tuple[tuple[date, float], ...]
    skipped_dividends: int = 0  # dividend CashAdjusted left out (the store credits instead)
    missing_commissions: int = 0
    source: DividendSource = DividendSource.STORE
    moves: tuple[AccountMove, ...] = ()
    entitlements: tuple[Entitlement, ...] = ()
    remarks: tuple[tuple[date, str], ...] = ()  # dividend cash beyond the entitlements

    @property
    def symbols(self) -> list[str]:
        """Return every symbol the account held: traded, or split."""
        traded = {str(f["symbol"]) for f in self.fills}
        return sorted(traded | {m.symbol for m in self.moves if m.shares and m.symbol})


def _money(value: Any) -> float:
    return float(Decimal(str(value if value not in (None, "") else "0")))


def compute_live_book(events: Iterable[Any], calendar: Any) -> LiveBook | PerformanceReport:
    """Return the ledger's book, or a report saying why there is none (no fill, no funding)."""
    events = list(events)
    fills = compute_fills(events)
    if not fills:
        return PerformanceReport(PerformanceStatus.NO_HISTORY, "no fills in the ledger yet")
    account = compute_account_events(events)
    source = DividendSource.LEDGER if account else DividendSource.STORE
    moves, entitlements, remarks = compute_account_moves(account, calendar)
    first_fill = min(e.seq for e in events if e.kind == EventKind.FILL_RECORDED)
    capital, flows, skipped, funded = 0.0, [], 0, False
    for event in (e for e in events if e.kind == EventKind.CASH_ADJUSTED):
        amount = _money(event.payload["amount"])
        reason = str(event.payload.get("reason") or "")
        dividend = "dividend" in reason.lower()
        if dividend and source is DividendSource.STORE:
            skipped += 1
        elif event.seq < first_fill:
            capital, funded = capital + amount, True
        else:
            when = event.payload.get("session") or str(event.recorded_at)[:10]
            day = calendar.session_on_or_before(str(when))
            if dividend:
                moves.append(AccountMove(day, cash=amount, dividend=amount))
                remarks.append((day, f"CashAdjusted {amount:,.2f} on {day} ({reason}) "
                                     "counted as a dividend"))  # fmt: skip
            else:
                flows.append((day, amount))
    if not funded:
        return PerformanceReport(PerformanceStatus.NO_OPENING_BALANCE, "fills but no opening "
                                 "balance (no CashAdjusted before the first fill); record the "
                                 "funding as a CashAdjusted to compare with research")  # fmt: skip
    rows = []
    for fill in fills.values():
        quantity = int(fill["quantity"])
        when = fill.get("session") or str(fill.get("time") or "")[:10]
        commission = fill.get("commission")
        rows.append({
            "symbol": str(fill["symbol"]), "session": calendar.session_on_or_before(str(when)),
            "side": str(fill["side"]), "signed": quantity if fill["side"] == "BUY" else -quantity,
            "price": _money(fill["price"]),
            "commission": _money(commission) if commission is not None else 0.0,
        })  # fmt: skip
    missing = sum(1 for f in fills.values() if f.get("commission") is None)
    rows.sort(key=lambda r: r["session"])
    return LiveBook(capital, tuple(rows), tuple(sorted(flows)), skipped, missing, source,
                    tuple(moves), tuple(entitlements), tuple(remarks))  # fmt: skip


def compute_account_moves(
    account: Mapping[tuple[str, str], Mapping[str, Any]], calendar: Any
) -> tuple[list[AccountMove], list[Entitlement], list[tuple[date, str]]]:
    """Return the moves of ``projections.compute_account_events``'s answer (see the module
    docstring), the entitlements, and a remark per payment or withholding beyond them: dated
    without an entitlement, or a payment whose lines differ from the amount entitled."""
    on = calendar.session_on_or_before
    entitled = {  # the last one of a symbol and ex-date counts, as in compute_receivables
        (str(payload["symbol"]), str(payload["ex_date"])): payload
        for (kind, _), payload in account.items()
        if kind == EventKind.DIVIDEND_ENTITLED
    }
    owed: dict[tuple[str, str], float] = {}
    moves: list[AccountMove] = []
    entitlements: list[Entitlement] = []
    remarks: list[tuple[date, str]] = []
    for key, payload in entitled.items():
        gross, withholding = _money(payload["amount"]), _money(payload.get("withholding"))
        owed[key] = net = gross + withholding
        entitlements.append(Entitlement(key[0], on(key[1]), gross, withholding))
        moves.append(AccountMove(on(key[1]), receivable=net, dividend=net))
    lines: dict[tuple[str, str], float] = {}
    settled: dict[tuple[str, str], date] = {}
    for (kind, _), payload in account.items():
        if kind in (EventKind.DIVIDEND_PAID, EventKind.TAX_WITHHELD):
            key = (str(payload.get("symbol")), str(payload.get("ex_date")))
            day, amount = on(str(payload["on"])), _money(payload["amount"])
            moves.append(AccountMove(day, cash=amount, dividend=amount))
            if key not in owed:
                what = "paid" if kind == EventKind.DIVIDEND_PAID else "withheld"
                remarks.append((day, f"{_dividend_name(*key)}: {amount:,.2f} {what} on {day} "
                                     "without an entitlement"))  # fmt: skip
                continue
            lines[key] = lines.get(key, 0.0) + amount
            if kind == EventKind.DIVIDEND_PAID and key not in settled:
                settled[key] = day
                moves.append(AccountMove(day, receivable=-owed[key], dividend=-owed[key]))
        elif kind == EventKind.SPLIT_APPLIED:
            change = int(payload["shares_after"]) - int(payload["shares_before"])
            day, lieu = on(str(payload["effective"])), _money(payload.get("cash_in_lieu"))
            moves.append(AccountMove(day, str(payload["symbol"]), shares=change, cash=lieu))
        elif kind in (EventKind.INTEREST_BOOKED, EventKind.FEE_CHARGED):
            amount = _money(payload["amount"])
            moves.append(AccountMove(on(str(payload["on"])), cash=amount, income=amount))
    for key, day in settled.items():
        if abs(lines[key] - owed[key]) >= ROUNDING:
            remarks.append((day, f"{_dividend_name(*key)}: {lines[key]:,.2f} paid net of tax "
                                 f"against {owed[key]:,.2f} entitled"))  # fmt: skip
    return moves, entitlements, remarks


def _dividend_name(symbol: str, ex_date: str) -> str:
    return f"{symbol} ex {ex_date}" if ex_date not in ("None", "") else symbol


# -- curves -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Curve:
    """One side per session: equity, cash, flows, and the value of each asset at the start of
    each session's gap (before its fills, at the previous close) and day (after, at its open)."""

    equity: pd.Series
    cash: pd.Series
    flows: pd.Series
    gap_values: pd.DataFrame
    day_values: pd.DataFrame
    commissions: pd.Series
    slippage: pd.Series  # dollars vs the backtest's price, + = cost (live only)
    fills: pd.Series
    dividends: pd.Series  # credited to equity: the ledger's, or the store's (live only)
    receivables: pd.Series  # dividends owed at the close (live only)
    income: pd.Series  # interest and fees (live only)
    implied: pd.DataFrame  # per symbol, the store's dividend on the shares held (live only)

    def since(self, first: pd.Timestamp) -> Curve:
        """Return the curve from session ``first`` on."""
        return Curve(*(getattr(self, f).loc[first:] for f in self.__dataclass_fields__))


def _fold(
    moves: Iterable[AccountMove], column: Mapping[str, int]
) -> tuple[np.ndarray, float, float, float, float]:
    """Return what ``moves`` add up to: (shares per column, cash, receivable, dividend, income)."""
    shares, cash, receivable, dividend, income = np.zeros(len(column)), 0.0, 0.0, 0.0, 0.0
    for move in moves:
        if move.shares and move.symbol is not None:
            shares[column[move.symbol]] += move.shares
        cash, receivable = cash + move.cash, receivable + move.receivable
        dividend, income = dividend + move.dividend, income + move.income
    return shares, cash, receivable, dividend, income


def compute_live_curve(
    book: LiveBook, raw: Mapping[str, pd.DataFrame], sessions: pd.DatetimeIndex, slippage_bps: float
) -> Curve:
    """Return the live curve on ``sessions`` (the first is the base: fills and account moves on
    or before it are folded in) from raw bars per symbol (open, close, dividend, split; gaps
    carried forward); dividends and splits from the book's moves, or from the store's bars when
    the book's source is the store."""
    symbols = book.symbols
    bars = {s: raw[s].reindex(sessions) for s in symbols}
    opens = pd.DataFrame({s: b["open"] for s, b in bars.items()}, index=sessions).ffill()
    closes = pd.DataFrame({s: b["close"] for s, b in bars.items()}, index=sessions).ffill()
    dividends = pd.DataFrame({s: b["dividend"] for s, b in bars.items()}, index=sessions).fillna(0)
    splits = pd.DataFrame({s: b["split"] for s, b in bars.items()}, index=sessions).fillna(1)
    n, slip = len(sessions), slippage_bps / BPS
    names = ("equity", "cash", "flows", "commissions", "slippage", "fills", "dividends",
             "receivables", "income")  # fmt: skip
    out = {k: np.zeros(n) for k in names}
    gap, day = np.zeros((n, len(symbols))), np.zeros((n, len(symbols)))
    implied = np.zeros((n, len(symbols)))
    column = {s: j for j, s in enumerate(symbols)}
    first, ledger = sessions[0].date(), book.source is DividendSource.LEDGER
    moves: dict[date, list[AccountMove]] = {}
    for move in book.moves:
        moves.setdefault(max(move.session, first), []).append(move)
    held, cash, owed = np.zeros(len(symbols)), book.capital, 0.0
    cash += sum(a for d, a in book.flows if d <= first)
    for f in (f for f in book.fills if f["session"] <= first):
        held[column[f["symbol"]]] += f["signed"]
        cash -= f["signed"] * f["price"] + f["commission"]
    shares, moved, owing, _, _ = _fold(moves.get(first, ()), column)
    held, cash, owed = held + shares, cash + moved, owed + owing
    by_session: dict[date, list[dict[str, Any]]] = {}
    for f in book.fills:
        by_session.setdefault(f["session"], []).append(f)
    for t in range(n):
        day_t = sessions[t].date()
        if t:
            gap[t] = held * closes.iloc[t - 1].to_numpy()
            if ledger:
                shares, moved, owing, out["dividends"][t], out["income"][t] = _fold(
                    moves.get(day_t, ()), column
                )
                held, cash, owed = held + shares, cash + moved, owed + owing
            else:
                held = held * splits.iloc[t].to_numpy()
                out["dividends"][t] = float(held @ dividends.iloc[t].to_numpy())
                cash += out["dividends"][t]
            implied[t] = held * dividends.iloc[t].to_numpy()
            for f in by_session.get(day_t, ()):
                j, opening = column[f["symbol"]], float(opens.iat[t, column[f["symbol"]]])
                held[j] += f["signed"]
                cash -= f["signed"] * f["price"] + f["commission"]
                model = opening * (1 + slip if f["signed"] > 0 else 1 - slip)
                out["slippage"][t] += (f["price"] - model) * f["signed"]
                out["commissions"][t] += f["commission"]
                out["fills"][t] += 1
            out["flows"][t] = sum(a for d, a in book.flows if d == day_t)
            cash += out["flows"][t]
        day[t] = held * opens.iloc[t].to_numpy()
        out["cash"][t], out["receivables"][t] = cash, owed
        out["equity"][t] = cash + owed + float(held @ closes.iloc[t].to_numpy())
    frames = [pd.DataFrame(v, index=sessions, columns=symbols) for v in (gap, day, implied)]
    return Curve(**{k: pd.Series(v, index=sessions, name=k) for k, v in out.items()},
                 gap_values=frames[0], day_values=frames[1], implied=frames[2])  # fmt: skip


def compute_research_curve(result: Any, prices: Mapping[str, pd.DataFrame]) -> Curve:
    """Return the backtest as a Curve: units from its trades, values at adjusted prices."""
    sessions = result.equity.index
    symbols = list(prices["close"].columns)
    trades = result.trades
    signed = np.where(trades["side"] == "buy", trades["units"], -trades["units"])
    moves = pd.DataFrame({"session": trades["session"], "symbol": trades["symbol"], "u": signed})
    units = (moves.pivot_table(index="session", columns="symbol", values="u", aggfunc="sum")
             .reindex(index=sessions, columns=symbols).fillna(0.0).cumsum())  # fmt: skip
    opens, closes = prices["open"].reindex(sessions), prices["close"].reindex(sessions)
    gap = (units.shift().fillna(0.0) * closes.shift()).fillna(0.0)
    day = units * opens
    cash = result.equity - (units * closes).sum(axis=1)
    fees = trades.groupby("session")["commission"].sum().reindex(sessions).fillna(0.0)
    zero, none = pd.Series(0.0, index=sessions), pd.DataFrame(0.0, index=sessions, columns=symbols)
    return Curve(result.equity.rename("equity"), cash.rename("cash"), zero, gap, day, fees,
                 slippage=zero, fills=zero, dividends=zero, receivables=zero, income=zero,
                 implied=none)  # fmt: skip


def compute_returns(prices: Mapping[str, pd.DataFrame]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Return each asset's adjusted (gap, day) returns per session: open over the previous
    close, and close over the open (the first session's gap is 0)."""
    opens, closes = prices["open"], prices["close"]
    return (opens / closes.shift() - 1).fillna(0.0), closes / opens - 1


# -- months -------------------------------------------------------------------------------------


def _interval_parts(
    live: pd.Series, research: pd.Series, rho: pd.Series, e_live: float, e_research: float
) -> tuple[float, float]:
    """Return (cash drag, rounding) of one interval as fractions; see the module docstring."""
    x_live, x_research = live / e_live, research.reindex(live.index.union(research.index))
    x_research = x_research.fillna(0.0) / e_research
    invested = float(research.sum())
    market = float((research * rho.reindex(research.index)).sum()) / invested if invested else 0.0
    drag = (float(x_live.sum()) - float(x_research.sum())) * market
    both = [s for s in live.index if live[s] > 0 and s in research.index and research[s] > 0]
    if not both:
        return drag, 0.0
    scale = float(x_live[both].sum()) / float(x_research[both].sum())
    rounding = float(((x_live[both] - x_research[both] * scale) * rho[both]).sum())
    return drag, rounding


def compute_months(live: Curve, research: Curve, gap: pd.DataFrame, day: pd.DataFrame
                   ) -> list[MonthAttribution]:  # fmt: skip
    """Return the monthly attribution of two curves on the same sessions (the first the base);
    ``gap`` and ``day`` are the adjusted returns of ``compute_returns``."""
    sessions = live.equity.index
    periods, rows = sessions.to_period("M"), []
    for period in periods[1:].unique():
        positions = [t for t in np.flatnonzero(periods == period) if t > 0]
        base = positions[0] - 1
        e_live, e_research = float(live.equity.iat[base]), float(research.equity.iat[base])
        drag, rounding, growth = 0.0, 0.0, 1.0
        for t in positions:
            for ours, theirs, rho in ((live.gap_values, research.gap_values, gap),
                                      (live.day_values, research.day_values, day)):  # fmt: skip
                d, r = _interval_parts(ours.iloc[t], theirs.iloc[t], rho.iloc[t], e_live,
                                       e_research)  # fmt: skip
                drag, rounding = drag + d, rounding + r
            before = float(live.equity.iat[t - 1])
            growth *= (float(live.equity.iat[t]) - float(live.flows.iat[t])) / before
        end = positions[-1]
        live_return = growth - 1
        research_return = float(research.equity.iat[end]) / e_research - 1
        took = slice(positions[0], end + 1)
        paid = float(live.commissions.iloc[took].sum())
        modelled = float(research.commissions.iloc[took].sum())
        lost = float(live.slippage.iloc[took].sum())
        parts = {"slippage": -lost / e_live, "cash_drag": drag, "rounding": rounding,
                 "commissions": -(paid / e_live - modelled / e_research),
                 "interest_fees": float(live.income.iloc[took].sum()) / e_live}  # fmt: skip
        tracking = live_return - research_return
        parts["other"] = tracking - sum(parts.values())
        bps = {p: parts[p] * BPS for p in PARTS}
        rows.append(MonthAttribution(
            f"{period}", f"{sessions[positions[0]].date()}",
            f"{sessions[end].date()}", e_live, e_research, live_return, research_return,
            tracking * BPS, slippage_bps=bps["slippage"], commissions_bps=bps["commissions"],
            interest_fees_bps=bps["interest_fees"], cash_drag_bps=bps["cash_drag"],
            rounding_bps=bps["rounding"], other_bps=bps["other"],
            fills=int(live.fills.iloc[took].sum()), live_commissions=paid,
            research_commissions=modelled, slippage_dollars=lost,
        ))  # fmt: skip
    return rows


# -- the report ---------------------------------------------------------------------------------


def _day(value: Any) -> date | None:
    return pd.Timestamp(value).date() if value not in (None, "") else None


def compute_decision_mismatches(
    events: Iterable[Any], decisions: Iterable[Mapping[str, Any]]
) -> list[str]:
    """Return the backtest's traded decisions that the ledger recorded with other targets, or
    never recorded (a skipped or missed cycle), one line each."""
    ours = {str(e.payload["session"]): dict(e.payload["decision"]["targets"])
            for e in events if e.kind == EventKind.DECISION_RECORDED}  # fmt: skip
    traded = [d for d in decisions if d["execution"] and ours.get(d["session"]) != d["targets"]]
    return [f"{d['session']} (live {ours.get(d['session'], 'no decision')}, research "
            f"{d['targets']})" for d in traded]  # fmt: skip


def _no_data(message: str, tolerance: float) -> PerformanceReport:
    return PerformanceReport(PerformanceStatus.NO_DATA, message, tolerance_bps=tolerance)


def read_performance(
    cfg: Config, start: Any = None, end: Any = None, tolerance_bps: float = TOLERANCE_BPS
) -> PerformanceReport:
    """Return live vs research from the first funded rebalance close (or the first month-end on
    or after ``start``) to the last session with data (or ``end``); see the module docstring.

    Expected gaps (no ledger, no fill, no opening balance, no data or no decidable month over the
    window) come back as a report whose status and message say so, never as an error. Raises
    LedgerError for a ledger that cannot be read.
    """

    try:
        with open_ledger(cfg, create=False, readonly=True) as ledger:
            events = list(ledger.events())
    except LedgerMissing:
        return PerformanceReport(PerformanceStatus.NO_HISTORY, "no ledger yet: nothing ran live",
                                 tolerance_bps=tolerance_bps)  # fmt: skip
    try:
        book = compute_live_book(events, open_calendar(cfg))
        if isinstance(book, PerformanceReport):
            return PerformanceReport(book.status, book.message, tolerance_bps=tolerance_bps)
        return _compare(cfg, events, book, _day(start), _day(end), tolerance_bps)
    except (CalendarError, DataError, ResearchError, StrategyError) as exc:
        return _no_data(str(exc), tolerance_bps)


def _compare(
    cfg: Config, events: list[Any], book: LiveBook, start: date | None, end: date | None,
    tolerance: float,
) -> PerformanceReport:  # fmt: skip

    calendar, store = open_calendar(cfg), open_store(cfg)
    funded = calendar.previous_session(book.fills[0]["session"])
    settings = StrategySettings.from_config(cfg)
    bars = research.load_bars(cfg)
    raw = store.load_many(cfg.primary_source, book.symbols)
    data_end = min(frame.index[-1].date() for frame in [*bars.values(), *raw.values()])
    last = calendar.session_on_or_before(min(end, data_end) if end else data_end)
    first = max(funded, start) if start else funded
    month_ends = calendar.month_end_sessions(first, last) if first <= last else []
    if not month_ends or month_ends[0] >= last:
        return _no_data(f"no closed month from {first} to {last} (data ends {data_end}): "
                        "compare again after the next month-end", tolerance)  # fmt: skip
    base = pd.Timestamp(month_ends[0])
    everything = pd.DatetimeIndex(calendar.sessions(funded, last))
    slippage_bps = float(cfg.costs.slippage_bps)
    live = compute_live_curve(book, raw, everything, slippage_bps).since(base)
    capital = float(live.equity.iat[0])
    result = research.backtest(cfg, bars, start=base.date(), end=last, initial_cash=capital)
    if result.equity.index[0] != base:
        found = result.equity.index[0].date()
        return _no_data(f"research's first decidable month-end is {found}, not {base.date()}",
                        tolerance)  # fmt: skip
    prices = research.compute_prices(bars, settings.symbols(), result.equity.index)
    gap, day = compute_returns(prices)
    theirs = compute_research_curve(result, prices)
    months = compute_months(live, theirs, gap, day)
    growth = ((live.equity - live.flows) / live.equity.shift()).fillna(1.0).cumprod()
    curves = pd.DataFrame({
        "live_equity": live.equity, "research_equity": theirs.equity,
        "live_growth": capital * growth, "live_cash": live.cash, "research_cash": theirs.cash,
        "live_flows": live.flows, "live_dividends": live.dividends,
        "live_receivables": live.receivables, "live_interest_fees": live.income,
    })  # fmt: skip
    curves.index.name = "date"
    notes = _notes(book, live, raw, compute_decision_mismatches(events, result.decisions))
    beyond = [m.month for m in months if abs(m.tracking_bps) > tolerance]
    status = PerformanceStatus.DIVERGING if beyond else PerformanceStatus.TRACKING
    message = (f"{len(beyond)} month(s) beyond {tolerance:g} bps: {', '.join(beyond)}" if beyond
               else f"every month within {tolerance:g} bps")  # fmt: skip
    return PerformanceReport(status, message, str(base.date()), str(last), capital, tolerance,
                             curves, tuple(months), tuple(notes))  # fmt: skip


def _notes(
    book: LiveBook, live: Curve, raw: Mapping[str, pd.DataFrame], mismatches: list[str]
) -> list[str]:
    window = live.equity.index[1:]  # the sessions after the base close
    notes = _dividend_notes(book, live, raw) if len(window) else []
    if income := float(live.income.iloc[1:].sum()):
        notes.append(f"interest and fees: {income:+,.2f} booked in the ledger, their own part "
                     "(research has none)")  # fmt: skip
    if flows := [(d, a) for d, a in book.flows if pd.Timestamp(d) > live.equity.index[0]]:
        notes.append(f"{len(flows)} cash flow(s) in the window: live returns are time-weighted")
    if book.missing_commissions:
        notes.append(f"{book.missing_commissions} fill(s) still lack a commission (counted 0)")
    if mismatches:
        notes.append("live did not decide as research on " + "; ".join(mismatches))
    return notes


def _dividend_notes(book: LiveBook, live: Curve, raw: Mapping[str, pd.DataFrame]) -> list[str]:
    """Return where the dividends came from and, from the ledger, how they differ from what
    the price store implies on the shares held (the difference is in "other")."""
    window = live.equity.index[1:]
    base, last = live.equity.index[0].date(), window[-1].date()
    credited = float(live.dividends.iloc[1:].sum())
    if book.source is DividendSource.STORE:
        acted = [s for s in book.symbols
                 if (raw[s]["dividend"].reindex(window).fillna(0.0) > 0).any()
                 or (raw[s]["split"].reindex(window).fillna(1.0) != 1.0).any()]  # fmt: skip
        notes = []
        if acted:
            notes.append(f"dividends credited from the price store: the ledger has no "
                         f"entitlements ({credited:,.2f} as cash on their ex-dates, splits by "
                         "the store's ratios); research reinvests them")  # fmt: skip
        if book.skipped_dividends:
            notes.append(f"{book.skipped_dividends} CashAdjusted dividend record(s) skipped: "
                         "the store's dividends are credited instead")  # fmt: skip
        return notes
    entitled = [e for e in book.entitlements if base < e.ex_date <= last]
    implied = live.implied.iloc[1:]
    ours = {(e.symbol, e.ex_date): e.gross for e in entitled}
    theirs = {(s, d.date()): float(v) for s in implied.columns
              for d, v in implied[s].items() if v}  # fmt: skip
    withheld = sum(e.withholding for e in entitled)
    notes = []
    if ours or theirs or credited:
        net = f" net of {-withheld:,.2f} withholding" if withheld else ""
        notes.append(
            f"dividends credited from the ledger: {credited:,.2f} (entitled on their "
            f"ex-dates{net}, owed until paid); research reinvests the store's"
        )
    found = [f"withholding {withheld:,.2f}"] if withheld else []
    for symbol, ex_date in sorted(ours.keys() | theirs.keys()):
        gross, store = ours.get((symbol, ex_date)), theirs.get((symbol, ex_date))
        if gross is None:
            found.append(f"{symbol} ex {ex_date}: no entitlement, the store implies {store:,.2f}")
        elif store is None:
            found.append(f"{symbol} ex {ex_date}: entitled {gross:,.2f}, the store implies none")
        elif abs(gross - store) >= ROUNDING:
            found.append(f"{symbol} ex {ex_date}: entitled {gross:,.2f}, the store implies "
                         f"{store:,.2f}")  # fmt: skip
    found += [remark for day, remark in book.remarks if base < day <= last]
    if found:
        store_total = sum(theirs.values())
        notes.append(f"the ledger's dividends differ from the {store_total:,.2f} the price store "
                     f"implies by {credited - store_total:+,.2f}, in other: "
                     + "; ".join(found))  # fmt: skip
    split = {(m.symbol, m.session) for m in book.moves if m.shares}
    for symbol in book.symbols:
        ratios = raw[symbol]["split"].reindex(window).fillna(1.0)
        for day, ratio in ratios[ratios != 1.0].items():
            if live.gap_values.at[day, symbol] and (symbol, day.date()) not in split:
                notes.append(
                    f"{symbol} split {ratio:g} on {day.date()} in the price store: the "
                    "ledger has no SplitApplied (its shares are off until it has)"
                )
    return notes


# -- plots --------------------------------------------------------------------------------------


def _empty(ax: Any, report: PerformanceReport) -> None:
    ax.text(0.5, 0.5, f"{report.status}: {report.message}", transform=ax.transAxes,
            ha="center", va="center", wrap=True, fontsize=9)  # fmt: skip
    ax.set_xticks([])
    ax.set_yticks([])


def plot_equity(report: PerformanceReport) -> Figure:
    """Return live (time-weighted growth of the capital) and research equity on one chart."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(10, 3.6))
    if report.curves.empty:
        _empty(ax, report)
    else:
        curves = report.curves
        ax.plot(curves.index, curves["live_growth"], lw=1.4, label="live (ledger)")
        ax.plot(curves.index, curves["research_equity"], lw=1.0, ls="--", color="tab:orange",
                label="research backtest")  # fmt: skip
        ax.set_ylabel("equity ($)")
        ax.legend(loc="upper left", fontsize=8)
        live, research = report.total_returns()
        title = (f"live {live:+.2%} vs research {research:+.2%}, {report.start} to "
                 f"{report.end}, from {report.capital:,.2f}")  # fmt: skip
        ax.set_title(title, loc="left", fontsize=10)
    fig.tight_layout()
    return fig


PART_COLORS = {"slippage": "tab:blue", "commissions": "tab:orange", "interest_fees": "tab:olive",
               "cash_drag": "tab:green", "rounding": "tab:purple", "other": "tab:grey"}  # fmt: skip


def plot_attribution(report: PerformanceReport) -> Figure:
    """Return the monthly tracking difference as stacked bars of its parts (bps), the total
    marked by a black diamond, the tolerance dashed."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(10, 3.6))
    if not report.months:
        _empty(ax, report)
        fig.tight_layout()
        return fig
    frame = report.months_frame()
    x = np.arange(len(frame))
    up, down = np.zeros(len(frame)), np.zeros(len(frame))
    for part in PARTS:
        values = frame[f"{part}_bps"].to_numpy(dtype=float)
        bottom = np.where(values >= 0, up, down)
        ax.bar(x, values, bottom=bottom, color=PART_COLORS[part], label=part.replace("_", " "))
        up, down = up + np.clip(values, 0, None), down + np.clip(values, None, 0)
    ax.plot(x, frame["tracking_bps"], "D", color="black", ms=5, label="tracking difference")
    for edge in (-report.tolerance_bps, report.tolerance_bps):
        ax.axhline(edge, color="tab:red", ls="--", lw=0.8)
    ax.axhline(0, color="black", lw=0.5)
    ax.set_xticks(x, list(frame.index), rotation=45 if len(frame) > 12 else 0, fontsize=8)
    ax.set_ylabel("live - research (bps)")
    ax.set_title(f"tracking difference per month and where it came from; tolerance "
                 f"±{report.tolerance_bps:g} bps", loc="left", fontsize=10)  # fmt: skip
    ax.legend(loc="upper left", fontsize=7, ncol=3)
    fig.tight_layout()
    return fig
