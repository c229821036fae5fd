"""Walk-forward research: choose a grid's best combination on a training window, trade it on
the next window, roll; the out-of-sample record beside the in-sample one, and how likely the
grid's best is overfit."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any

import numpy as np
import pandas as pd

from ops_runner.strategy.momentum import StrategySettings
from ops_runner.strategy.overfitting import (
    BacktestOverfitting,
    DeflatedSharpe,
    compute_backtest_overfitting,
    compute_deflated_sharpe,
)
from ops_runner.strategy.research import (
    TRADING_DAYS,
    Costs,
    ResearchError,
    backtest,
    compute_finite,
    compute_sweep_symbols,
    compute_window,
    resolve_inputs,
)
from ops_runner.strategy.sweep import (
    ChunkRunner,
    compute_grid_settings,
    compute_label_keys,
    compute_ranking,
    compute_sweep_work,
    require_metric,
    sweep,
)

log = logging.getLogger(__name__)

# Small enough to walk the sample market in seconds: the notebook's default.
DEFAULT_GRID: dict[str, list[Any]] = {"lookback_months": [3, 6, 12], "top_n": [1, 2]}
# A step's columns besides those naming its combination (the sweep's, ``compute_label_keys``).
STEP_COLUMNS = ("step", "train_start", "train_end", "test_start", "test_end", "combination",
                "in_sample", "out_of_sample")  # fmt: skip
OOS_NOTE = """\
Each test window is one backtest of the combination chosen on the training window before it:
it starts in cash at the training window's last month-end close, decides on that month-end
and every one after it through the test window's last, and trades at the next opens. The
stitched out-of-sample returns are these backtests' daily returns, one window after another;
the positions a window ends with are not sold at its close (the next window buys its own
from the close's value), so a window's first rebalance pays only its buys.
"""


@dataclass
class WalkForwardResult:
    """A walk-forward: one row per step, the stitched out-of-sample curve, the base settings'
    curve over the same sessions, and the overfitting figures of the whole grid."""

    metric: str
    steps: pd.DataFrame
    returns: pd.Series  # out of sample, stitched
    equity: pd.Series  # from the initial cash at the first test window's start
    base_equity: pd.Series  # the base settings' backtest over the test windows
    grid_returns: pd.DataFrame  # daily, a column per combination, over every window
    deflated_sharpe: DeflatedSharpe | None  # of the grid's best by Sharpe over grid_returns
    overfitting: BacktestOverfitting | None
    best: dict[str, Any]  # the grid's best combination by Sharpe over grid_returns

    def metrics(self) -> dict[str, float | None]:
        """Return the mean in-sample and out-of-sample metric and the overfitting figures."""
        dsr, pbo = self.deflated_sharpe, self.overfitting
        return {
            "in_sample": compute_finite(self.steps["in_sample"].mean()),
            "out_of_sample": compute_finite(self.steps["out_of_sample"].mean()),
            "stitched_sharpe": compute_finite(compute_annual_sharpe(self.returns)),
            "deflated_sharpe": None if dsr is None else dsr.probability,
            "pbo": None if pbo is None else pbo.probability,
        }

    def summary(self) -> str:
        """Return a few plain lines: windows, in vs out of sample, DSR and PBO."""
        m = self.metrics()

        def shown(value: float | None) -> str:
            return "n/a" if value is None else f"{value:.3f}"

        lines = [
            f"walk-forward by {self.metric}: {len(self.steps)} windows, out of sample "
            f"{self.steps['test_start'].iat[0]}..{self.steps['test_end'].iat[-1]}",
            f"mean {self.metric}: in sample {shown(m['in_sample'])}, out of sample "
            f"{shown(m['out_of_sample'])}; stitched out-of-sample Sharpe "
            f"{shown(m['stitched_sharpe'])}",
        ]
        if self.deflated_sharpe is not None:
            lines.append(self.deflated_sharpe.summary())
        if self.overfitting is not None:
            lines.append(self.overfitting.summary())
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """Return JSON-ready steps, metrics and overfitting figures (no NaN)."""
        steps = [
            {k: compute_finite(v) if isinstance(v, float) else _plain(v) for k, v in row.items()}
            for row in self.steps.to_dict("records")
        ]
        return {"metric": self.metric, "steps": steps, "best": self.best, **self.metrics()}


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


def compute_annual_sharpe(returns: pd.Series | np.ndarray) -> float:
    """Return the annualised Sharpe ratio of daily returns (0% risk-free, ddof 1), as the
    backtest's metrics compute it; NaN without spread."""
    values = np.asarray(returns, dtype=np.float64)
    std = values.std(ddof=1) if len(values) > 1 else math.nan
    return float(values.mean() / std * math.sqrt(TRADING_DAYS)) if std > 0 else math.nan


def compute_walk_forward_windows(
    month_ends: Sequence[date], train_months: int, test_months: int
) -> list[tuple[date, date, date]]:
    """Return (training start, training end = test start, test end) month-ends of each step.

    The training window spans ``train_months`` month-ends, the test window the next
    ``test_months``; each step moves on by one test window, so the test windows tile the
    month-ends without a gap or an overlap. A last test window shorter than ``test_months`` is
    left out. Raises ResearchError for a window under one month.
    """
    if train_months < 1 or test_months < 1:
        raise ResearchError(
            f"walk-forward windows of {train_months} and {test_months} months: give at least 1"
        )
    found = []
    at = 0
    while at + train_months + test_months < len(month_ends):
        found.append(
            (
                month_ends[at],
                month_ends[at + train_months],
                month_ends[at + train_months + test_months],
            )
        )
        at += test_months
    return found


def walk_forward(
    cfg_or_settings: Any,
    grid: Mapping[str, Sequence[Any]],
    bars: Mapping[str, pd.DataFrame],
    train_years: int = 3,
    test_months: int = 12,
    metric: str = "sharpe",
    start: Any = None,
    end: Any = None,
    costs: Costs | Mapping[str, float] | None = None,
    calendar: Any = None,
    initial_cash: float | None = None,
    whole_shares: bool | None = None,
    blocks: int = 16,
    overfitting: bool = True,
    progress: Callable[[str], None] | None = None,
    runner: ChunkRunner | None = None,
) -> WalkForwardResult:
    """Return the walk-forward of ``grid`` (keys and values as ``sweep`` takes them).

    The windows start at the first month-end with the grid's longest lookback of history (at or
    after ``start``) and end by ``end``: ``train_years`` x 12 month-ends of training, then
    ``test_months`` of test, rolled by one test window (``compute_walk_forward_windows``). At
    each step ``sweep`` runs on the training window alone (its decisions read no bar after the
    window's last month-end) and the best combination by ``metric`` (the first listed on a tie)
    is backtested on the test window (see OOS_NOTE). ``overfitting``: also backtest every
    combination over all the windows, and compute the deflated Sharpe ratio of the best of them
    by Sharpe and the PBO (``blocks`` blocks) of their daily returns. ``progress``, when
    given, is told a line as each window starts and before the overfitting backtests (the CLI
    shows them on stderr). ``runner``: who computes each training window's sweep chunks, as
    ``sweep`` takes it (``distributed.walk_forward_placed`` puts them on Dask); the result
    does not depend on it. Raises ResearchError for a bad grid or metric, or too little
    history for one step.
    """
    require_metric(metric)
    base, costs, calendar, cash, whole = resolve_inputs(
        cfg_or_settings, costs, calendar, initial_cash, whole_shares
    )
    combos, _ = compute_grid_settings(base, grid)
    if not combos:
        raise ResearchError("grid error: every combination is an impossible setting")
    symbols = compute_sweep_symbols(base, grid)
    first, last = compute_window(bars, symbols, calendar, start, end)
    deepest = max(c.months_needed() for c in combos)
    month_ends = _decidable_month_ends(bars, symbols, deepest, calendar, first, last)
    windows = compute_walk_forward_windows(month_ends, 12 * train_years, test_months)
    if not windows:
        raise ResearchError(
            f"walk-forward needs {12 * train_years + test_months + 1} month-ends with "
            f"{deepest} months of history from {first} to {last}, found {len(month_ends)}; "
            "load longer histories or shorten the windows"
        )
    options = {"costs": costs, "calendar": calendar, "initial_cash": cash, "whole_shares": whole}
    keys = compute_label_keys(base, grid)
    rows, pieces = [], []
    labels: list[dict[str, Any]] = []
    for n, (train_start, train_end, test_end) in enumerate(windows, 1):
        if progress:
            progress(f"window {n}/{len(windows)}: training {train_start}..{train_end}, "
                     f"testing to {test_end}")  # fmt: skip
        table = sweep(base, grid, bars, start=train_start, end=train_end, runner=runner, **options)
        labels = [{k: _plain(v) for k, v in r.items()} for r in table[keys].to_dict("records")]
        table["combination"] = np.arange(len(table))
        ranked = compute_ranking(table, metric)
        if not np.isfinite(ranked[metric].iat[0]):
            raise ResearchError(
                f"no combination has a {metric} on the training window {train_start}.."
                f"{train_end}; choose another metric or a longer window"
            )
        chosen = int(ranked["combination"].iat[0])
        tested = backtest(combos[chosen], bars, start=train_end, end=test_end, **options)
        pieces.append(tested.returns)
        rows.append({
            "step": n, "train_start": train_start.isoformat(), "train_end": train_end.isoformat(),
            "test_start": train_end.isoformat(), "test_end": test_end.isoformat(),
            **labels[chosen], "combination": chosen,
            "in_sample": float(ranked[metric].iat[0]),
            "out_of_sample": float(getattr(tested, metric)),
        })  # fmt: skip
        log.info(
            "walk-forward step %d: %s chosen on %s..%s", n, labels[chosen], train_start, train_end
        )
    returns = pd.concat(pieces).rename("return")
    opened = pd.Timestamp(windows[0][1])
    equity = pd.concat([pd.Series([cash], index=[opened]), cash * (1.0 + returns).cumprod()])
    equity = equity.rename("walk-forward")
    equity.index.name = "date"
    base_run = backtest(base, bars, start=windows[0][1], end=windows[-1][2], **options)
    result = WalkForwardResult(
        metric=metric, steps=pd.DataFrame(rows), returns=returns, equity=equity,
        base_equity=base_run.equity.rename("base settings"),
        grid_returns=pd.DataFrame(), deflated_sharpe=None, overfitting=None, best={},
    )  # fmt: skip
    if overfitting:
        if progress:
            progress(f"overfitting: backtesting {len(combos)} combinations over every window")
        _add_overfitting(result, combos, keys, labels, bars, windows, blocks, options)
    return result


def _add_overfitting(
    result: WalkForwardResult, combos: Sequence[StrategySettings], keys: Sequence[str],
    labels: list[dict[str, Any]], bars: Mapping[str, pd.DataFrame],
    windows: Sequence[tuple[date, date, date]], blocks: int, options: Mapping[str, Any],
) -> None:  # fmt: skip
    """Every combination's daily returns over all the windows, the DSR of the best and the PBO."""
    columns = {}
    for n, settings in enumerate(combos):
        run = backtest(settings, bars, start=windows[0][0], end=windows[-1][2], **options)
        columns[n] = run.returns
    grid_returns = pd.DataFrame(columns).dropna()
    grid_returns.columns = pd.MultiIndex.from_tuples(
        [tuple(label.values()) for label in labels], names=list(keys)
    )
    distinct = grid_returns.T.drop_duplicates().T  # a copy is one trial, not two
    sharpes = distinct.mean() / distinct.std()
    best = int(np.argmax(sharpes.to_numpy()))
    result.grid_returns = grid_returns
    result.best = dict(zip(keys, (_plain(v) for v in distinct.columns[best]), strict=True))
    result.deflated_sharpe = compute_deflated_sharpe(distinct.iloc[:, best], sharpes.to_numpy())
    result.overfitting = compute_backtest_overfitting(grid_returns, blocks=blocks)


def _decidable_month_ends(
    bars: Mapping[str, pd.DataFrame], symbols: Sequence[str], months: int, calendar: Any,
    first: date, last: date,
) -> list[date]:  # fmt: skip
    """Month-end sessions in [first, last] with ``months`` month-ends of every symbol's bars
    before them (the rule ``sweep`` decides by)."""
    oldest = max(max(bars[s].index[0].date() for s in symbols), calendar.covered_from)
    every = calendar.month_end_sessions(oldest, last)
    return [m for m in every[months:] if m >= first]


def compute_training_work(
    cfg_or_settings: Any, grid: Mapping[str, Sequence[Any]], bars: Mapping[str, pd.DataFrame],
    train_years: int, end: Any = None,
) -> int:  # fmt: skip
    """Return the work (``compute_sweep_work``) of one training window of a walk-forward: the
    sweep of ``grid`` over the ``train_years`` before ``end`` (default: the last bar)."""
    last = pd.Timestamp(end).date() if end else max(b.index[-1] for b in bars.values()).date()
    first = last.replace(year=last.year - train_years, day=1)
    return compute_sweep_work(cfg_or_settings, grid, bars, first, last)
