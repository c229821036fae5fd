"""Performance: the live (ledger) equity curve against the research backtest, month by month.

The live curve, per session from the first funded rebalance close to the last session with data:
ledger cash (opening balance + flows + sells - buys - commissions) + the shares the fills left,
marked at the session's raw close. Dividends: the ledger has no dividend event, so each cash
dividend in the store is credited to the shares held into its ex-date, as cash on the ex-date
(what a broker's net liquidation shows), never reinvested; the backtest reinvests it at the
ex-date close through its adjusted prices, so uninvested dividend cash shows as cash drag. A
``CashAdjusted`` whose reason mentions a dividend is skipped (the store already credited it).
Shares held into a split are multiplied by its ratio. The opening balance is every
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

- slippage    = -sum over the month's fills of (fill - model) x signed shares / E_L, where model
                is the raw open moved costs.slippage_bps against the trader (the backtest's price);
- commissions = -(live commissions / E_L - research commissions / E_R);
- cash_drag   = sum over intervals of (X_L - X_R) x rho_R: cash held beyond research's (the
                cash buffer, whole-share remainders, dividends waiting) times the market;
- rounding    = sum over intervals and assets both hold of (x_L,i - x_R,i X_L,c / X_R,c) x rho_i,
                X_.,c over those assets: the mix whole-share sizing on the decision close leaves,
                against the backtest's sizing on the open (zero with a single asset);
- other       = TD - (slippage + commissions + cash_drag + rounding): assets only one side holds
                (a skipped or different decision), the modelled slippage on different traded
                sizes, dividends taken as cash vs reinvested within the ex-date, flows.
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

from ops_runner.config import Config
from ops_runner.events import EventKind

if TYPE_CHECKING:
    from matplotlib.figure import Figure

log = logging.getLogger(__name__)

TOLERANCE_BPS = 50.0  # per month; config has no such key (its slippage bands are per order)
PARTS = ("slippage", "commissions", "cash_drag", "rounding", "other")
BPS = 10_000.0


class PerformanceStatus(StrEnum):
    """What a performance report can say."""

    NO_HISTORY = "NO_HISTORY"  # no ledger or no fill yet: nothing live to compare
    NO_OPENING_BALANCE = "NO_OPENING_BALANCE"  # fills without a CashAdjusted before them
    NO_DATA = "NO_DATA"  # no closed month, no price, or no backtest over the window
    TRACKING = "TRACKING"  # every month's |TD| within the tolerance
    DIVERGING = "DIVERGING"  # at least one month beyond it


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
class LiveBook:
    """What the ledger says happened: funding, fills by session, flows, dividends to skip."""

    capital: float
    fills: tuple[dict[str, Any], ...]  # symbol, session (date), signed, price, commission
    flows: tuple[tuple[date, float], ...]
    skipped_dividends: int = 0
    missing_commissions: int = 0


def compute_live_book(events: Iterable[Any], calendar: Any) -> LiveBook | PerformanceReport:
    """Return the ledger's book, or a report saying why there is none (no fill, no funding)."""
    from ops_runner.projections import compute_fills

    events = list(events)
    fills = compute_fills(events)
    if not fills:
        return PerformanceReport(PerformanceStatus.NO_HISTORY, "no fills in the ledger yet")
    first_fill = min(e.seq for e in events if e.kind == EventKind.FILL_RECORDED)
    capital, flows, skipped, funded = 0.0, [], 0, False
    for event in (e for e in events if e.kind == EventKind.CASH_ADJUSTED):
        amount = float(Decimal(str(event.payload["amount"])))
        if "dividend" in str(event.payload.get("reason") or "").lower():
            skipped += 1
        elif event.seq < first_fill:
            capital, funded = capital + amount, True
        else:
            when = event.payload.get("session") or str(event.recorded_at)[:10]
            flows.append((calendar.session_on_or_before(str(when)), amount))
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
            "price": float(Decimal(str(fill["price"]))),
            "commission": float(Decimal(str(commission))) if commission is not None else 0.0,
        })  # fmt: skip
    missing = sum(1 for f in fills.values() if f.get("commission") is None)
    rows.sort(key=lambda r: r["session"])
    return LiveBook(capital, tuple(rows), tuple(sorted(flows)), skipped, missing)


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
    dividends: pd.Series  # cash credited from the store (live only)

    def since(self, first: pd.Timestamp) -> Curve:
        """Return the curve from session ``first`` on."""
        return Curve(*(getattr(self, f).loc[first:] for f in self.__dataclass_fields__))


def compute_live_curve(
    book: LiveBook, raw: Mapping[str, pd.DataFrame], sessions: pd.DatetimeIndex, slippage_bps: float
) -> Curve:
    """Return the live curve on ``sessions`` (the first is the base: fills on or before it are
    folded in) from raw bars per symbol (open, close, dividend, split; gaps carried forward)."""
    symbols = sorted({f["symbol"] for f in book.fills})
    bars = {s: raw[s].reindex(sessions) for s in symbols}
    opens = pd.DataFrame({s: b["open"] for s, b in bars.items()}, index=sessions).ffill()
    closes = pd.DataFrame({s: b["close"] for s, b in bars.items()}, index=sessions).ffill()
    dividends = pd.DataFrame({s: b["dividend"] for s, b in bars.items()}, index=sessions).fillna(0)
    splits = pd.DataFrame({s: b["split"] for s, b in bars.items()}, index=sessions).fillna(1)
    n, slip = len(sessions), slippage_bps / BPS
    names = ("equity", "cash", "flows", "commissions", "slippage", "fills", "dividends")
    out = {k: np.zeros(n) for k in names}
    gap, day = np.zeros((n, len(symbols))), np.zeros((n, len(symbols)))
    column = {s: j for j, s in enumerate(symbols)}
    first = sessions[0].date()
    held, cash = np.zeros(len(symbols)), book.capital
    cash += sum(a for d, a in book.flows if d <= first)
    for f in (f for f in book.fills if f["session"] <= first):
        held[column[f["symbol"]]] += f["signed"]
        cash -= f["signed"] * f["price"] + f["commission"]
    by_session: dict[date, list[dict[str, Any]]] = {}
    for f in book.fills:
        by_session.setdefault(f["session"], []).append(f)
    for t in range(n):
        day_t = sessions[t].date()
        if t:
            gap[t] = held * closes.iloc[t - 1].to_numpy()
            held = held * splits.iloc[t].to_numpy()
            out["dividends"][t] = float(held @ dividends.iloc[t].to_numpy())
            cash += out["dividends"][t]
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
        out["cash"][t] = cash
        out["equity"][t] = cash + float(held @ closes.iloc[t].to_numpy())
    frames = [pd.DataFrame(v, index=sessions, columns=symbols) for v in (gap, day)]
    return Curve(**{k: pd.Series(v, index=sessions, name=k) for k, v in out.items()},
                 gap_values=frames[0], day_values=frames[1])  # fmt: skip


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
    zero = pd.Series(0.0, index=sessions)
    return Curve(result.equity.rename("equity"), cash.rename("cash"), zero, gap, day,
                 fees, zero, zero, zero)  # fmt: skip


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
                 "commissions": -(paid / e_live - modelled / e_research)}  # fmt: skip
        tracking = live_return - research_return
        parts["other"] = tracking - sum(parts.values())
        rows.append(MonthAttribution(
            f"{period}", f"{sessions[positions[0]].date()}",
            f"{sessions[end].date()}", e_live, e_research, live_return, research_return,
            tracking * BPS, *(parts[p] * BPS for p in PARTS),
            int(live.fills.iloc[took].sum()), paid, modelled, lost,
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
    from ops_runner.errors import CalendarError, DataError
    from ops_runner.ledger import LedgerMissing, open_ledger
    from ops_runner.research import ResearchError
    from ops_runner.strategy import StrategyError

    try:
        with open_ledger(cfg, create=False, readonly=True) as ledger:
            events = list(ledger.events())
    except LedgerMissing:
        return PerformanceReport(PerformanceStatus.NO_HISTORY, "no ledger yet: nothing ran live",
                                 tolerance_bps=tolerance_bps)  # fmt: skip
    try:
        book = compute_live_book(events, cfg.calendar())
        if isinstance(book, PerformanceReport):
            return PerformanceReport(book.status, book.message, tolerance_bps=tolerance_bps)
        return _compare(cfg, events, book, _day(start), _day(end), tolerance_bps)
    except (CalendarError, DataError, ResearchError, StrategyError) as exc:
        return _no_data(str(exc), tolerance_bps)


def _compare(
    cfg: Config, events: list[Any], book: LiveBook, start: date | None, end: date | None,
    tolerance: float,
) -> PerformanceReport:  # fmt: skip
    from ops_runner import research
    from ops_runner.strategy import StrategySettings

    calendar, store = cfg.calendar(), cfg.store()
    funded = calendar.previous_session(book.fills[0]["session"])
    settings = StrategySettings.from_config(cfg)
    bars = research.load_bars(cfg)
    held = sorted({f["symbol"] for f in book.fills})
    raw = store.load_many(cfg.primary_source, held)
    data_end = min(frame.index[-1].date() for frame in [*bars.values(), *raw.values()])
    last = calendar.session_on_or_before(min(end, data_end) if end else data_end)
    first = max(funded, start) if start else funded
    month_ends = calendar.month_end_sessions(first, last) if first <= last else []
    if not month_ends or month_ends[0] >= last:
        return _no_data(f"no closed month from {first} to {last} (data ends {data_end}): "
                        "compare again after the next month-end", tolerance)  # fmt: skip
    base = pd.Timestamp(month_ends[0])
    everything = pd.DatetimeIndex(calendar.sessions(funded, last))
    slippage_bps = float(cfg.values["costs"]["slippage_bps"])
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
    })  # fmt: skip
    curves.index.name = "date"
    notes = _notes(book, live, compute_decision_mismatches(events, result.decisions))
    beyond = [m.month for m in months if abs(m.tracking_bps) > tolerance]
    status = PerformanceStatus.DIVERGING if beyond else PerformanceStatus.TRACKING
    message = (f"{len(beyond)} month(s) beyond {tolerance:g} bps: {', '.join(beyond)}" if beyond
               else f"every month within {tolerance:g} bps")  # fmt: skip
    return PerformanceReport(status, message, str(base.date()), str(last), capital, tolerance,
                             curves, tuple(months), tuple(notes))  # fmt: skip


def _notes(book: LiveBook, live: Curve, mismatches: list[str]) -> list[str]:
    notes = [f"dividends: {float(live.dividends.sum()):,.2f} credited from the store as cash on "
             "their ex-dates (the ledger records none); research reinvests them"]  # fmt: skip
    if book.skipped_dividends:
        notes.append(f"{book.skipped_dividends} CashAdjusted dividend record(s) skipped: the "
                     "store's dividends are credited instead")  # fmt: skip
    if flows := [(d, a) for d, a in book.flows if pd.Timestamp(d) > live.equity.index[0]]:
        notes.append(f"{len(flows)} cash flow(s) in the window: live returns are time-weighted")
    if book.missing_commissions:
        notes.append(f"{book.missing_commissions} fill(s) still lack a commission (counted 0)")
    if mismatches:
        notes.append("live did not decide as research on " + "; ".join(mismatches))
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


PART_COLORS = {"slippage": "tab:blue", "commissions": "tab:orange", "cash_drag": "tab:green",
               "rounding": "tab:purple", "other": "tab:grey"}  # fmt: skip


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
