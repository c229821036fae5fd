"""Backtests of the production strategy under one cost model, simulated with vectorbt."""

from __future__ import annotations

import dataclasses
import gc
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ops_runner.core.errors import OpsError
from ops_runner.market.calendar import MarketCalendar, open_calendar
from ops_runner.market.prices import compute_adjustment_factors, open_store
from ops_runner.strategy.momentum import StrategySettings, compute_decision_series
from ops_runner.workbook.config import TEMPLATES, Config, load_config_text, read_config_text
from ops_runner.workbook.settings import CostsSettings, ResearchSettings

log = logging.getLogger(__name__)

TRADING_DAYS = 252
MAX_PASSES = 8  # cost passes; two are the rule, more only when an order crosses the minimum
# A simulation of this many cells (sessions x columns) or more frees each cost pass's Portfolio
# before the next; below it the full collection (about 0.15 s) costs more than it frees.
COLLECT_CELLS = 100_000
MIN_UNITS = 1e-9  # an order for fewer units than this is not placed (fractional shares)
RESEARCH_SECTIONS = ("universe", "strategy", "costs", "research")
METRICS = ("cagr", "volatility", "sharpe", "max_drawdown", "turnover", "final_equity")

COST_MODEL = """\
Simulated execution (identical in backtest and sweep):
- Prices are total-return back-adjusted (raw price x the dividend-and-split factor of
  ops_runner.market.prices, Alpha Vantage convention), for opens as for closes: holding an
  asset earns its dividends as if reinvested at the ex-date close. Returns between two days do
  not depend on any later dividend, so this reads nothing from the future.
- Targets decided at a month-end close are traded at the NEXT session's open (market-on-open).
  Each target weight is sized on the portfolio's value at that open; sells go first, then buys
  from the smallest to the largest; a buy the cash cannot pay for (costs included) is cut to
  what the cash pays for. No leverage, no shorting.
- Slippage: slippage_bps against the trader on the open (buys pay more, sells get less).
- Commission per order: max(commission_min, commission_per_share x shares), shares counted in
  REAL shares (traded value / unadjusted open), as IB's fixed pricing charges. vectorbt has no
  per-share commission with a minimum, so each order gets its own fee rate (per-share rate /
  fill price) or fixed fee (the minimum); a first pass finds every order's side and size and the
  next pass charges exactly that order's commission, repeated until no order changes. (A
  cash-limited buy within one share of the minimum's threshold can flip between the two for
  ever; after three flips it is charged the minimum, under one share's commission too little.)
- Whole shares (research.whole_shares) are whole units of the adjusted series: equal to real
  shares at the end of the data, finer before (the adjusted price is lower). Fractional
  otherwise; orders under 1e-9 units are not placed.
- Equity is marked at each session's adjusted close; metrics use sessions' daily returns
  (Sharpe with a 0% risk-free rate; 252 sessions a year; CAGR over calendar days / 365.25;
  turnover = traded value / 2 / average equity per year).
"""


class ResearchError(OpsError):
    """A backtest or sweep cannot run on these inputs; the message says which and what to do."""

    exit_code = 2


@dataclass(frozen=True)
class Costs:
    """Trading costs of the simulation; see COST_MODEL."""

    commission_per_share: float = 0.005
    commission_min: float = 1.0
    slippage_bps: float = 2.0

    @classmethod
    def from_config(cls, values: Mapping[str, Any] | None) -> Costs:
        """Return the ``costs`` section of checked config values (defaults when None)."""
        if not values:
            return cls()
        costs = CostsSettings.from_config(values)  # its slippage bands are the report's
        return cls(costs.commission_per_share, costs.commission_min, costs.slippage_bps)

    def commission(self, shares: float) -> float:
        """Return the commission of one order for ``shares`` real shares."""
        return max(self.commission_min, self.commission_per_share * abs(shares))


@dataclass
class BacktestResult:
    """One backtest: the equity curve, its metrics and every monthly decision behind it."""

    settings: StrategySettings
    costs: Costs
    initial_cash: float
    whole_shares: bool
    equity: pd.Series
    returns: pd.Series
    buy_and_hold: pd.Series
    cagr: float
    volatility: float
    sharpe: float
    max_drawdown: float
    turnover: float
    final_equity: float
    decisions: list[dict[str, Any]]
    trades: pd.DataFrame
    portfolio: Any = field(default=None, repr=False)  # vectorbt's, of the execution sessions

    def metrics(self) -> dict[str, float | None]:
        """Return the metrics by name; None where undefined (no NaN)."""
        return {name: compute_finite(getattr(self, name)) for name in METRICS}

    def metrics_frame(self) -> pd.DataFrame:
        """Return the metrics as a one-column table, with the window and the costs."""
        rows: dict[str, Any] = {
            "start": self.equity.index[0].date().isoformat(),
            "end": self.equity.index[-1].date().isoformat(),
            "decisions": len(self.decisions),
            **self.metrics(),
            "orders": len(self.trades),
            "commissions": float(self.trades["commission"].sum()) if len(self.trades) else 0.0,
        }
        return pd.DataFrame({"value": rows})

    def decisions_frame(self) -> pd.DataFrame:
        """Return one row per monthly decision: execution session, targets, explanation."""
        rows = [
            {"session": d["session"], "execution": d["execution"],
             "targets": ", ".join(f"{s} {w}" for s, w in d["targets"].items()),
             "explanation": d["explanation"]}
            for d in self.decisions
        ]  # fmt: skip
        return pd.DataFrame(rows).set_index("session")

    def summary(self) -> str:
        """Return one line with the window and the headline metrics."""
        m = self.metrics()
        shown = {k: "n/a" if v is None else f"{v:.2%}" for k, v in m.items() if k != "sharpe"}
        sharpe = "n/a" if m["sharpe"] is None else f"{m['sharpe']:.2f}"
        return (
            f"{self.settings.name} {self.equity.index[0].date()}..{self.equity.index[-1].date()}"
            f" ({len(self.decisions)} decisions): CAGR {shown['cagr']}, vol "
            f"{shown['volatility']}, Sharpe {sharpe}, max drawdown {shown['max_drawdown']}, "
            f"turnover {shown['turnover']}/yr, final equity {self.final_equity:,.2f}"
        )

    def to_dict(self) -> dict[str, Any]:
        """Return JSON-ready metrics, settings, costs, monthly returns and decisions (no NaN)."""
        monthly = self.equity.resample("ME").last().pct_change().iloc[1:]
        return {
            "strategy": self.settings.to_dict(),
            "costs": dataclasses.asdict(self.costs),
            "initial_cash": self.initial_cash,
            "whole_shares": self.whole_shares,
            "start": self.equity.index[0].date().isoformat(),
            "end": self.equity.index[-1].date().isoformat(),
            "metrics": self.metrics(),
            "monthly_returns": {f"{t:%Y-%m}": compute_finite(v) for t, v in monthly.items()},
            "decisions": self.decisions,
        }


# -- inputs ---------------------------------------------------------------------------------------


def resolve_inputs(
    cfg_or_settings: Any, costs: Any, calendar: Any, initial_cash: Any, whole_shares: Any
) -> tuple[StrategySettings, Costs, Any, float, bool]:
    """Settings, costs, calendar, initial cash and whole-shares flag from the arguments."""
    if isinstance(cfg_or_settings, StrategySettings):
        settings, values = cfg_or_settings, None
    else:
        values = cfg_or_settings if isinstance(cfg_or_settings, Mapping) else cfg_or_settings.values
        settings = StrategySettings.from_config(values)
    if costs is None:
        costs = Costs.from_config(values)
    elif isinstance(costs, Mapping):
        costs = Costs(**costs)
    if calendar is None and values is not None:
        calendar = open_calendar(Config(workbook=Path.cwd(), values=dict(values)))
    elif calendar is None:
        calendar = MarketCalendar()
    research = ResearchSettings.from_config(values) if values else ResearchSettings(100000.0, True)
    cash = float(research.initial_cash if initial_cash is None else initial_cash)
    whole = bool(research.whole_shares if whole_shares is None else whole_shares)
    return settings, costs, calendar, cash, whole


def compute_window(
    bars: Mapping[str, pd.DataFrame], symbols: Sequence[str], calendar: Any, start: Any, end: Any
) -> tuple[date, date]:
    """[start, end] clamped to the calendar's coverage and to the last bar every symbol has."""
    if missing := [s for s in symbols if s not in bars or len(bars[s]) == 0]:
        raise ResearchError(
            f"no bars for {', '.join(missing)}; load every symbol the strategy and the grid "
            "name, e.g. with research.load_bars(cfg, grid)"
        )
    first = max(min(bars[s].index[0].date() for s in symbols), calendar.covered_from)
    last = min(bars[s].index[-1].date() for s in symbols)
    start = max(pd.Timestamp(start).date(), first) if start else first
    end = min(pd.Timestamp(end).date(), last) if end else last
    if start > end:
        raise ResearchError(f"empty window: start {start} is after end {end} (data ends {last})")
    return start, calendar.session_on_or_before(end)


def compute_prices(
    bars: Mapping[str, pd.DataFrame], symbols: Sequence[str], sessions: pd.DatetimeIndex
) -> dict[str, pd.DataFrame]:
    """Return the simulation's prices on ``sessions``, a column per symbol.

    ``open`` and ``close``: total-return back-adjusted; ``factor``: the adjustment factor
    (adjusted / raw); ``tradable``: whether the symbol has a bar with a positive open. Where it
    has none, prices are carried from the nearest bar: nothing may trade or be held there (see
    ``_require_tradable``), but vectorbt values and sorts orders with every column's price.
    """
    parts: dict[str, dict[str, pd.Series]] = {"open": {}, "close": {}, "factor": {}}
    for symbol in symbols:
        frame = bars[symbol]
        factor = compute_adjustment_factors(frame)
        parts["open"][symbol] = (frame["open"] * factor).reindex(sessions)
        parts["close"][symbol] = (frame["close"] * factor).reindex(sessions)
        parts["factor"][symbol] = factor.reindex(sessions)
    prices = {name: pd.DataFrame(columns, index=sessions) for name, columns in parts.items()}
    prices["tradable"] = prices["open"].gt(0) & prices["close"].gt(0)
    for name in ("open", "close", "factor"):
        prices[name] = prices[name].where(prices["tradable"]).ffill().bfill().fillna(1.0)
    return prices


def find_untradable(
    weights: np.ndarray, tradable: np.ndarray, rows: Sequence[int] | np.ndarray
) -> tuple[int, int] | None:
    """Return (execution n, column) of the first symbol bought or held into an execution session
    without a usable open (the first portfolio's first, when ``weights`` holds several), or None."""
    previous = np.zeros(weights.shape[1:], dtype=bool)
    for n, row in enumerate(rows):
        held = (weights[n] > 0) | previous
        bad = held & ~tradable[row]
        if bad.any():
            return n, int(np.argwhere(bad)[0][-1])
        previous = weights[n] > 0
    return None


def _require_tradable(
    weights: np.ndarray, tradable: np.ndarray, rows: Sequence[int],
    sessions: pd.DatetimeIndex, symbols: Sequence[str],
) -> None:  # fmt: skip
    """Raise unless every symbol bought or held into an execution session trades at its open."""
    found = find_untradable(weights, tradable, rows)
    if found is not None:
        raise make_untradable_error(symbols[found[1]], sessions[rows[found[0]]].date())


def make_untradable_error(symbol: str, session: date) -> ResearchError:
    return ResearchError(
        f"{symbol} has no usable open on {session}, an execution session; re-import it and run "
        "data QA before backtesting this window"
    )


# -- simulation -----------------------------------------------------------------------------------


@dataclass
class Fills:
    """What a simulation left: vectorbt's order records (``col`` numbered across all columns),
    then the units of each column and the cash of each group after every simulated session."""

    orders: np.ndarray
    assets: np.ndarray
    cash: np.ndarray


def simulate_orders(
    close: pd.DataFrame, price: np.ndarray, factor: np.ndarray, weights: np.ndarray,
    costs: Costs, initial_cash: float, whole_shares: bool, width: int,
) -> tuple[Fills, Any]:  # fmt: skip
    """Return the fills in which every order paid exactly the COST_MODEL commission, and the
    last pass's vectorbt Portfolio (every column's, when one group settles all at once).

    Each ``width`` columns are one portfolio (a group sharing its cash). A pass simulates only
    the groups an earlier pass charged wrongly: groups never touch each other, and a group
    charged right is charged the same on any later pass, so its first right pass is its answer.
    """
    import vectorbt as vbt  # 2.5-4 s to import and a Numba cache: kept to research calls

    slip = costs.slippage_bps / 10_000.0
    per_share, minimum = costs.commission_per_share, costs.commission_min
    with np.errstate(divide="ignore", invalid="ignore"):
        rate = {side: np.nan_to_num(per_share * factor / (price * (1.0 + sign * slip)))
                for side, sign in ((0, 1.0), (1, -1.0))}  # fmt: skip
    # First guess from the weight change: up buys, down sells, unchanged trims a drift (small).
    before = pd.DataFrame(weights).ffill().shift().fillna(0.0).to_numpy()
    fees = np.where(weights > before, rate[0], np.where(weights < before, rate[1], 0.0))
    fixed = np.where(weights == before, minimum, 0.0)
    flips = np.zeros(price.shape, dtype=np.int8)
    groups = weights.shape[1] // width
    assets, cash = np.empty(weights.shape), np.empty((len(weights), groups))
    records, pinned_count = [], 0
    active = np.arange(groups)  # the groups this pass simulates
    for _ in range(MAX_PASSES):
        cols = (active[:, None] * width + np.arange(width)).ravel()
        portfolio = vbt.Portfolio.from_orders(
            close.iloc[:, cols], size=weights[:, cols], size_type="targetpercent",
            direction="longonly", price=price[:, cols], fees=fees[:, cols],
            fixed_fees=fixed[:, cols], slippage=slip, min_size=MIN_UNITS,
            size_granularity=1.0 if whole_shares else np.nan, init_cash=initial_cash,
            cash_sharing=True, group_by=np.repeat(np.arange(len(active)), width),
            call_seq="auto", freq="1D",
        )  # fmt: skip
        orders = portfolio.orders.values.copy()
        i, j = orders["idx"], cols[orders["col"]]
        shares = orders["size"] * factor[i, j]
        # A buy within a share of the minimum can flip between the two regimes for ever: pin it.
        pinned = (flips[i, j] >= 3) & (per_share * (shares - factor[i, j]) < minimum)
        at_minimum = (per_share * shares < minimum) | pinned
        want_fees = np.where(
            at_minimum, 0.0, np.where(orders["side"] == 0, rate[0][i, j], rate[1][i, j])
        )
        want_fixed = np.where(at_minimum, minimum, 0.0)
        wrong = (fees[i, j] != want_fees) | (fixed[i, j] != want_fixed)
        unsettled = np.zeros(len(active), dtype=bool)
        unsettled[orders["col"][wrong] // width] = True
        kept = ~unsettled[orders["col"] // width]
        orders["col"] = j
        records.append(orders[kept])
        pinned_count += int(pinned[kept].sum())
        settled = np.repeat(~unsettled, width)
        steps = len(weights)  # a lone group's or column's series comes 1-D: made 2-D
        assets[:, cols[settled]] = portfolio.assets().to_numpy().reshape(steps, -1)[:, settled]
        cash[:, active[~unsettled]] = portfolio.cash().to_numpy().reshape(steps, -1)[:, ~unsettled]
        if not unsettled.any():
            if pinned_count:
                log.warning("%d order(s) pinned at the commission minimum", pinned_count)
            return Fills(np.concatenate(records), assets, cash), portfolio
        i, j = i[wrong], j[wrong]
        fees[i, j], fixed[i, j] = want_fees[wrong], want_fixed[wrong]
        flips[i, j] += 1
        active = active[unsettled]
        del portfolio, orders
        if price.size >= COLLECT_CELLS:
            gc.collect()  # a Portfolio sits in reference cycles: free each pass before the next
    raise ResearchError(
        f"commissions did not settle after {MAX_PASSES} passes; report the case with its "
        "settings (try whole_shares: false meanwhile)"
    )


def compute_marks(
    fills: Fills, rows: np.ndarray, close: np.ndarray, groups: int, initial_cash: float
) -> np.ndarray:
    """Equity at every session's close (sessions x combinations) from the fills at the opens.

    Positions and cash after an execution session's open hold until the next one; the sum runs
    over symbols in column order, as vectorbt's own value does.
    """
    steps = len(rows)
    units = fills.assets.reshape(steps, groups, -1)
    units = np.concatenate([np.zeros((1, *units.shape[1:])), units])
    cash = fills.cash.reshape(steps, groups)
    cash = np.concatenate([np.full((1, groups), initial_cash), cash])
    at = np.searchsorted(rows, np.arange(len(close)), side="right")  # 0 = before the first fill
    held = np.zeros((len(close), groups))
    for k in range(units.shape[2]):
        held += units[at, :, k] * close[:, k, None]
    return cash[at] + held


def compute_metrics(
    equity: np.ndarray, dates: pd.DatetimeIndex, traded: np.ndarray
) -> dict[str, np.ndarray]:
    """Return each metric per column of ``equity`` (sessions down, portfolios across).

    Each portfolio's sums run over its own contiguous row of the transposed curve, so a
    portfolio's metrics do not depend on how many others share the call (a sweep in chunks
    gives every bit a whole sweep gives).
    """
    curve = np.ascontiguousarray(np.asarray(equity, dtype=np.float64).T)  # portfolios x sessions
    returns = curve[:, 1:] / curve[:, :-1] - 1.0
    years = (dates[-1] - dates[0]).days / 365.25
    with np.errstate(divide="ignore", invalid="ignore"):
        cagr = (
            (curve[:, -1] / curve[:, 0]) ** (1.0 / years) - 1.0
            if years > 0
            else curve[:, 0] * np.nan
        )
        std = returns.std(axis=1, ddof=1) if returns.shape[1] > 1 else np.full(len(curve), np.nan)
        sharpe = np.where(std > 0, returns.mean(axis=1) / std * math.sqrt(TRADING_DAYS), np.nan)
        turnover = traded / 2.0 / curve.mean(axis=1) / years if years > 0 else traded * np.nan
    drawdown = 1.0 - curve / np.maximum.accumulate(curve, axis=1)
    return {
        "cagr": cagr,
        "volatility": std * math.sqrt(TRADING_DAYS),
        "sharpe": sharpe,
        "max_drawdown": drawdown.max(axis=1),
        "turnover": turnover,
        "final_equity": curve[:, -1],
    }


def compute_finite(value: Any) -> float | None:
    """Return ``value`` as a float, None where it is NaN or infinite (JSON has neither)."""
    value = float(value)
    return value if math.isfinite(value) else None


# -- backtest -------------------------------------------------------------------------------------


def backtest(
    cfg_or_settings: Any,
    bars: Mapping[str, pd.DataFrame],
    start: Any = None,
    end: Any = None,
    costs: Costs | Mapping[str, float] | None = None,
    calendar: Any = None,
    initial_cash: float | None = None,
    whole_shares: bool | None = None,
) -> BacktestResult:
    """Return the backtest of the production decisions on every month-end in [start, end].

    ``cfg_or_settings``: a Config, checked config values, or StrategySettings (then costs and
    research defaults apply unless given). Decisions come from ``strategy.compute_decision_series``
    (the production code); execution and costs follow COST_MODEL. The equity curve runs from the
    first decision's close to ``end`` (default: the last bar every symbol has). Raises
    ResearchError (no decidable session, a missing open) and StrategyError from the strategy.
    """
    settings, costs, calendar, cash, whole = resolve_inputs(
        cfg_or_settings, costs, calendar, initial_cash, whole_shares
    )
    symbols = settings.symbols()
    first, last = compute_window(bars, symbols, calendar, start, end)
    decisions = compute_decision_series(settings, bars, calendar, first, last)
    if not decisions:
        raise ResearchError(
            f"no month-end session from {first} to {last} has {settings.months_needed()} months "
            f"of history for {', '.join(symbols)}; widen the window or load longer histories"
        )
    sessions = pd.DatetimeIndex(calendar.sessions(decisions[0].session, last))
    prices = compute_prices(bars, symbols, sessions)
    weights = np.full((len(sessions), len(symbols)), np.nan)
    records, rows = [], []
    for decision in decisions:
        nxt = calendar.next_session(decision.session) if decision.session < last else None
        row = int(sessions.get_loc(pd.Timestamp(nxt))) if nxt else None
        if row is not None:
            weights[row] = [float(decision.targets.get(s, "0")) for s in symbols]
            rows.append(row)
        records.append({
            "session": decision.session.isoformat(),
            "execution": nxt.isoformat() if nxt else None,
            "selection": list(decision.selection),
            "targets": dict(decision.targets),
            "scores": decision.compute_score_map(),
            "explanation": decision.explanation,
        })  # fmt: skip
    open_, factor = prices["open"].to_numpy(), prices["factor"].to_numpy()
    _require_tradable(weights[rows], prices["tradable"].to_numpy(), rows, sessions, symbols)
    # Only the execution sessions are simulated (nothing trades between them); the equity is
    # marked at every session's close from the positions and cash they leave.
    simulated = np.array(rows or [0], dtype=np.intp)  # one session without orders: none left
    fills, portfolio = simulate_orders(
        pd.DataFrame(open_[simulated], index=sessions[simulated], columns=symbols),
        open_[simulated], factor[simulated], weights[simulated], costs, cash, whole,
        width=len(symbols),
    )  # fmt: skip
    marked = compute_marks(fills, simulated, prices["close"].to_numpy(), 1, cash)[:, 0]
    equity = pd.Series(marked, index=sessions.rename("date"), name="equity")
    orders = fills.orders
    i, j = simulated[orders["idx"]], orders["col"]
    trades = pd.DataFrame({
        "session": sessions[i], "symbol": np.asarray(symbols, dtype=object)[j],
        "side": np.where(orders["side"] == 0, "buy", "sell"), "units": orders["size"],
        "shares": orders["size"] * factor[i, j], "price": orders["price"],
        "commission": orders["fees"],
    })  # fmt: skip
    traded = np.array([float((trades["units"] * trades["price"]).sum())])
    values = compute_metrics(equity.to_numpy()[:, None], sessions, traded)
    anchor = settings.benchmark or settings.risk[0]
    hold = prices["close"][anchor]
    return BacktestResult(
        settings=settings, costs=costs, initial_cash=cash, whole_shares=whole,
        equity=equity, returns=equity.pct_change().iloc[1:].rename("return"),
        buy_and_hold=(cash * hold / hold.iloc[0]).rename(f"{anchor} buy and hold"),
        **{name: float(v[0]) for name, v in values.items()},
        decisions=records, trades=trades, portfolio=portfolio,
    )  # fmt: skip


# -- notebooks ------------------------------------------------------------------------------------


def load_research_config(cfg: Config, config: str = "") -> Config:
    """Return ``cfg`` with universe, strategy, costs and research taken from ``config``.

    ``config``: "" for the workbook's own, a template name ("gem", "topn") or a YAML path
    (relative paths from the workbook). Data, paths and calendar stay the workbook's.
    Raises ResearchError when no such template or file exists, ConfigError when it is invalid.
    """
    if not config:
        return cfg
    template = TEMPLATES / f"{config}.yaml"
    path = template if template.is_file() else Path(config).expanduser()
    path = path if path.is_absolute() else cfg.workbook / path
    if not path.is_file():
        names = ", ".join(sorted(p.stem for p in TEMPLATES.glob("*.yaml")))
        raise ResearchError(f"no config {config!r}: give a YAML path or a template ({names})")
    other = load_config_text(read_config_text(path), cfg.workbook, path)
    values = {**cfg.values, **{k: other.values[k] for k in RESEARCH_SECTIONS}}
    return Config(workbook=cfg.workbook, values=values, source_path=path)


def compute_sweep_symbols(base: StrategySettings, grid: Mapping[str, Sequence[Any]]) -> list[str]:
    """Return every symbol a sweep reads: risk, each defensive asset, the cash proxy, then the
    canaries."""
    found = [*base.risk, *(grid.get("defensive") or [base.defensive])]
    if base.cash_proxy:
        found.append(base.cash_proxy)
    return list(dict.fromkeys([*found, *base.canary]))


def load_bars(
    cfg: Config, grid: Mapping[str, Sequence[Any]] | None = None
) -> dict[str, pd.DataFrame]:
    """Return the primary source's bars of every symbol the strategy (and ``grid``) reads.

    Raises DataError naming the symbols the price store lacks.
    """
    symbols = compute_sweep_symbols(StrategySettings.from_config(cfg), grid or {})
    return open_store(cfg).load_many(cfg.primary_source, symbols)
