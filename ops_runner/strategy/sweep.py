"""Parameter sweeps: grids, every combination's decisions at once, one vectorbt simulation."""

from __future__ import annotations

import dataclasses
import itertools
import logging
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import date
from decimal import ROUND_DOWN, Decimal
from fractions import Fraction
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pandas as pd
import yaml
from tqdm import tqdm

from ops_runner.strategy.momentum import (
    FAILED_SLOTS,
    RULE_DEFAULTS,
    TREND_BASES,
    WEIGHT_QUANTUM,
    WEIGHTINGS,
    SeriesReader,
    StrategyError,
    StrategySettings,
    compute_daily_panel,
    compute_decision_sessions,
    compute_month_back,
    compute_month_end_panel,
    compute_price_values,
    compute_slot_targets,
    compute_tie_key,
)
from ops_runner.strategy.research import (
    METRICS,
    Costs,
    ResearchError,
    compute_finite,
    compute_marks,
    compute_metrics,
    compute_prices,
    compute_sweep_symbols,
    compute_window,
    find_untradable,
    make_untradable_error,
    resolve_inputs,
    simulate_orders,
)

log = logging.getLogger(__name__)

# Each key's kind: a name that KINDS checks, or the tuple of the values it may take.
GRID_KEYS: dict[str, str | tuple[str, ...]] = {
    "lookback_months": "int",
    "skip_months": "int",
    "top_n": "int",
    "absolute_momentum": "bool",
    "defensive": "symbol",
    "trend_length": "int",  # 0: no trend filter
    "trend_basis": TREND_BASES,
    "trend_fast": "int of at least 1",
    "failed_slot": FAILED_SLOTS,
    "canary_breadth": "int of at least 1",
    "weighting": WEIGHTINGS,
    "volatility_sessions": "int of at least 2",
    "weight_cap": "fraction above 0 and at most 1",
}
KINDS: dict[str, Callable[[Any], bool]] = {
    "int": lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0,
    "int of at least 1": lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 1,
    "int of at least 2": lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 2,
    "bool": lambda v: isinstance(v, bool),
    "symbol": lambda v: isinstance(v, str) and v.isupper() and v.strip() == v,
    "fraction above 0 and at most 1": (
        lambda v: isinstance(v, int | float) and not isinstance(v, bool) and 0 < v <= 1
    ),
}
# A sweep table's columns naming a combination: these always, then each rule of RULE_DEFAULTS
# the grid varies or the base settings use (``compute_label_keys``).
MOMENTUM_LABELS = ("lookback_months", "skip_months", "top_n", "absolute_momentum", "defensive")
# What one combination holds at the peak of a sweep's simulation: bytes per execution session
# and column (vectorbt's inputs, broadcasts and records, the cost passes' arrays), and per
# session for marking its equity; measured by tracemalloc on benchmarks/sweep.py's grid.
SIMULATION_BYTES = 200
MARK_BYTES = 64
MEMORY_SHARE = 0.25  # of the memory available when the sweep starts: the machine is shared
# Above this many combinations a simulation is no faster per combination (benchmarks/sweep.py's
# grid: 300, 600 and 1188 at once all take the same time), only larger.
MAX_CHUNK = 1000
# Where a sweep's chunks run when nobody says (``compute_placement``): a LocalCluster from this
# much work (combinations x symbols x months, ``compute_sweep_work``), this process below.
# Starting 2 worker processes that import vectorbt and load its Numba cache cost 6-12 s more
# than one process's own warm-up on the 2-core machine (under load); one run won it back from
# ~880 combinations of 100 symbols x 30 years and ~270 of 1,000 symbols x 10 years, both ~3e7,
# another never on the first and from ~64 on the second (benchmarks/sweep.py --cluster; the
# README's table). On the machine alone it paid from ~7e6 (--issue-sizes: ~214 of 100 symbols x
# 30 years, ~29 of 1,000 x 20); the shared machine's crossover is kept, since a LocalCluster
# loses outright when other work holds a core.
CLUSTER_FROM = 30_000_000
SCHEDULER_ENV = "DASK_SCHEDULER_ADDRESS"
PLACEMENTS = ("inprocess", "local")
# Which way each metric is better: a sweep's rows are ranked best first by the one chosen.
HIGHER_IS_BETTER = {
    "cagr": True,
    "volatility": False,
    "sharpe": True,
    "max_drawdown": False,  # the largest fall from a peak, as a positive fraction
    "turnover": False,
    "final_equity": True,
}
DEFAULT_GRID: dict[str, list[Any]] = {
    "lookback_months": [3, 6, 9, 12],
    "skip_months": [0, 1],
    "top_n": [1, 2, 3],
    "absolute_momentum": [True, False],
}


# -- grids ----------------------------------------------------------------------------------------


def load_grid(path: str | Path) -> dict[str, list[Any]]:
    """Return the grid in a YAML file of ``key: [values]``. Raises ResearchError with one line."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ResearchError(f"grid error: cannot read {path} ({exc.strerror})") from None
    except yaml.YAMLError:
        raise ResearchError(f"grid error: {path} is not valid YAML; fix its syntax") from None
    return check_grid(raw, str(path))


def check_grid(raw: Any, where: str = "grid") -> dict[str, list[Any]]:
    """Return the grid with its values checked. Raises ResearchError naming the bad key."""
    known = ", ".join(GRID_KEYS)
    if not isinstance(raw, Mapping) or not raw:
        raise ResearchError(f"grid error: {where}: expected a mapping of {known} to lists")
    grid: dict[str, list[Any]] = {}
    for key, values in raw.items():
        if key == "signal_offset":
            raise ResearchError(
                f"grid error: {where}: signal_offset is not swept (each offset decides and "
                "trades on its own sessions); set it in the strategy's settings, or backtest "
                "each offset with research.backtest"
            )
        kind = GRID_KEYS.get(key)
        if kind is None:
            raise ResearchError(f"grid error: {where}: unknown key {key!r}; known keys: {known}")
        if not isinstance(values, list) or not values:
            raise ResearchError(f"grid error: {where}: {key}: write a non-empty list, e.g. [1, 2]")
        for value in values:
            if isinstance(kind, tuple):
                if value not in kind:
                    raise ResearchError(
                        f"grid error: {where}: {key}: {value!r} is not one of {', '.join(kind)}"
                    )
            elif not KINDS[kind](value):
                raise ResearchError(f"grid error: {where}: {key}: {value!r} is not a valid {kind}")
        if len(set(values)) != len(values):
            raise ResearchError(f"grid error: {where}: {key}: a value is listed twice")
        grid[key] = list(values)
    return grid


def compute_grid_settings(
    base: StrategySettings, grid: Mapping[str, Sequence[Any]]
) -> tuple[list[StrategySettings], int]:
    """Return the valid settings of every grid combination, and how many were impossible.

    A key the grid leaves out keeps the base value; ``lookback_months`` replaces the lookbacks
    (a blend too) by that single lookback. Impossible combinations (skip >= lookback, top_n above
    the risk assets) are left out.
    """
    grid = check_grid(dict(grid))
    keys = list(grid)
    found, impossible = [], 0
    for values in itertools.product(*(grid[k] for k in keys)):
        changes = dict(zip(keys, values, strict=True))
        if "lookback_months" in changes:
            changes["lookbacks"] = ((changes.pop("lookback_months"), 1.0),)
        try:
            found.append(dataclasses.replace(base, **changes))
        except StrategyError:
            impossible += 1
    return found, impossible


# -- sweep ----------------------------------------------------------------------------------------


def _decidable_sessions(
    bars: Mapping[str, pd.DataFrame], symbols: Sequence[str], months: int, calendar: Any,
    first: date, last: date,
) -> list[date]:  # fmt: skip
    """Month-end sessions in [first, last] whose ``months`` lookback every symbol's bars cover."""
    oldest = max(bars[s].index[0].date() for s in symbols)
    found = []
    for session in calendar.month_end_sessions(first, last):
        back = compute_month_back(session, months)
        if (
            back >= calendar.covered_from
            and calendar.month_end_sessions(back, session)[0] >= oldest
        ):
            found.append(session)
    return found


def _month_end_panel(
    union: StrategySettings, sessions: Sequence[date], depth: int,
    bars: Mapping[str, pd.DataFrame], calendar: Any,
) -> np.ndarray:  # fmt: skip
    """Closes k = 0..depth month-ends back for each session (sessions x k x symbols).

    Read by the strategy's own ``compute_month_end_panel`` (bars cut at each session) and rounded
    as its ``compute_price_text`` rounds, so every score is bit for bit the one a decision
    computes.
    """
    raw = compute_month_end_panel(union, sessions, depth, bars, calendar)
    usable = (np.isfinite(raw) & (raw > 0)).reshape(len(sessions), -1).all(axis=1)
    if not usable.all():
        session = sessions[int(np.argmin(usable))]
        raise ResearchError(
            f"a month-end close needed by the decision on {session} is missing or not "
            f"positive ({', '.join(union.symbols())}); run data QA, then re-import"
        )
    return compute_price_values(raw)


def _tie_keys(scores: np.ndarray) -> np.ndarray:
    """The strategy's tie keys (scores at 0.01%, half-even) as integers of 0.0001.

    ``score * 1e4`` in floats is within 1e-9 of the exact product for any score a price ratio
    gives, so rounding it half-even is ``compute_tie_key``'s answer unless it lies that near a
    half; those few (and any non-finite score) are asked of ``compute_tie_key`` itself.
    """
    scaled = np.asarray(scores, dtype=np.float64) * 1e4
    keys = np.rint(np.nan_to_num(scaled)).astype(np.int64)
    near_half = ~(np.abs(scaled - np.floor(scaled) - 0.5) > 1e-6 * np.maximum(1.0, np.abs(scaled)))
    for at in zip(*np.nonzero(near_half), strict=True):
        keys[at] = int(compute_tie_key(float(scores[at])).scaleb(4))
    return keys


def _slot_weights(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Weights as the strategy's ``compute_targets`` writes them, for n slots.

    Index c: a symbol holding c slots that is not the last slot's (share x c), and the last
    slot's symbol holding c slots (1 - share x (n - c)); share is 1/n cut to 10 decimals.
    """
    share = (Decimal(1) / n).quantize(WEIGHT_QUANTUM, rounding=ROUND_DOWN)
    other = np.array([float(share * c) for c in range(n + 1)])
    last = np.array([float(Decimal(1) - share * (n - c)) if c else 0.0 for c in range(n + 1)])
    return other, last


def _targets(
    settings: StrategySettings, keys: np.ndarray, columns: Sequence[str],
    trend: np.ndarray | None = None,
) -> np.ndarray:  # fmt: skip
    """Target weights (sessions x columns) by the strategy's ranking, filter and slot rules;
    ``trend`` (sessions x columns, the trend filter's verdicts) sends a kept asset that fails
    it to the defensive asset too."""
    position = {s: i for i, s in enumerate(columns)}
    risk = np.array([position[s] for s in settings.risk])
    steps, count = keys.shape[0], len(settings.risk)
    tie_break = np.broadcast_to(np.arange(count), (steps, count))
    order = risk[np.lexsort((tie_break, -keys[:, risk]), axis=-1)]  # highest key, then listed
    kept = order[:, : settings.top_n]
    rows = np.arange(steps)[:, None]
    passed = np.ones(kept.shape, dtype=bool)
    if settings.absolute_momentum:
        hurdle = keys[:, position[settings.cash_proxy]] if settings.cash_proxy else 0
        hurdle = np.broadcast_to(hurdle, (steps,))[:, None]
        if settings.absolute_compare == "benchmark":
            passed[:] = keys[:, [position[str(settings.benchmark)]]] > hurdle
        else:
            passed = keys[rows, kept] > hurdle
    if trend is not None:
        passed = passed & trend[rows, kept]
    slots = np.where(passed, kept, position[settings.defensive])
    counts = np.zeros((steps, len(columns)), dtype=np.int64)
    np.add.at(counts, (np.broadcast_to(rows, slots.shape), slots), 1)
    other, last_weight = _slot_weights(settings.top_n)
    weights = other[counts]
    last = slots[:, -1]
    weights[rows[:, 0], last] = last_weight[counts[rows[:, 0], last]]
    return weights


def _common_sessions(
    momentum: Sequence[StrategySettings], ruled: Sequence[StrategySettings],
    bars: Mapping[str, pd.DataFrame], columns: Sequence[str], calendar: Any, first: date,
    last: date,
) -> list[date]:  # fmt: skip
    """The sessions every combination decides on: from the first on which all of them can (the
    momentum rules' longest lookback; for a combination using a rule, the sessions its own
    ``compute_decision_sessions`` gives, its trend, daily rules and signal offset included).
    Raises ResearchError when one has no session, or when two decide on different sessions."""
    found = []
    if momentum:
        deepest = max(c.months_needed() for c in momentum)
        decided = _decidable_sessions(bars, columns, deepest, calendar, first, last)
        if not decided:
            raise ResearchError(
                f"no month-end session from {first} to {last} has {deepest} months of history "
                f"for {', '.join(columns)}; widen the window or shorten the grid's lookbacks"
            )
        found.append(decided)
    # Combinations needing the same history decide on the same sessions: asked once.
    needs: dict[tuple[Any, ...], StrategySettings] = {}
    for settings in ruled:
        need = (tuple(settings.symbols()), settings.months_needed(), settings.sessions_needed(),
                settings.signal_offset)  # fmt: skip
        needs.setdefault(need, settings)
    for (symbols, months, days, _), settings in needs.items():
        decided = compute_decision_sessions(settings, bars, calendar, first, last)
        if not decided:
            raise ResearchError(
                f"no decision session from {first} to {last} has the history "
                f"strategy.{', strategy.'.join(settings.rules_in_use())} need ({months} months, "
                f"{days} sessions) for {', '.join(symbols)}; widen the window or shorten the "
                "grid's rules"
            )
        found.append(decided)
    opening = max(decided[0] for decided in found)
    common = [d for d in found[0] if d >= opening]
    if any([d for d in decided if d >= opening] != common for decided in found):
        raise ResearchError(
            f"sweep error: the grid's combinations decide on different sessions from {opening} "
            f"to {last} (a bar missing for some symbol?); run data QA, or backtest each setting "
            "with research.backtest"
        )
    return common


def _union_settings(base: StrategySettings, columns: Sequence[str]) -> StrategySettings:
    """One settings object naming every column of a sweep (the base's risk assets, then the
    others), so the strategy reads all their closes at once."""
    extra = [s for s in columns if s not in base.risk]
    return StrategySettings(
        name="sweep", risk=(*base.risk, *(s for s in extra[1:] if s != base.cash_proxy)),
        defensive=extra[0],
        cash_proxy=base.cash_proxy, lookbacks=((1, 1.0),), skip_months=0, top_n=1,
        absolute_momentum=False, absolute_compare="each", benchmark=None,
    )  # fmt: skip


def _blended_scores(settings: StrategySettings, panel: np.ndarray) -> np.ndarray:
    """Each session's and column's score under ``settings``' lookbacks and skip, from the
    month-end closes k = 0..depth back (sessions x k x columns), as the strategy blends them:
    the weighted returns' sum over the weights' sum."""
    total = sum(w for _, w in settings.lookbacks)
    score = sum(
        w * (panel[:, settings.skip_months] / panel[:, m] - 1.0) for m, w in settings.lookbacks
    )
    return score / total


def _momentum_keys(
    base: StrategySettings, momentum: Sequence[StrategySettings], columns: Sequence[str],
    decided: Sequence[date], bars: Mapping[str, pd.DataFrame], calendar: Any,
) -> dict[tuple[Any, ...], np.ndarray]:  # fmt: skip
    """The tie keys (sessions x columns) of each ranking rule (lookbacks, skip) the momentum
    combinations use, from every column's month-end closes at once; none without them."""
    if not momentum:
        return {}
    deepest = max(c.months_needed() for c in momentum)
    union = _union_settings(base, columns)
    union_columns = union.symbols()
    panel = _month_end_panel(union, decided, deepest, bars, calendar)
    keys: dict[tuple[Any, ...], np.ndarray] = {}
    reorder = [union_columns.index(s) for s in columns]
    for settings in momentum:
        rule = (settings.lookbacks, settings.skip_months)
        if rule not in keys:
            keys[rule] = _tie_keys(_blended_scores(settings, panel))[:, reorder]
    return keys


# The rules the sweep applies to its own slots (``_slot_rule_keys``): the trend filter, and how
# the slots are weighed. A canary or a signal offset takes the strategy's own decisions.
SLOT_RULES = {"trend_length", "trend_basis", "trend_fast", "failed_slot", "weighting",
              "volatility_sessions", "weight_cap"}  # fmt: skip


def _slot_rules_alone(settings: StrategySettings) -> bool:
    """Whether a combination uses only the trend filter (its length, basis and fast average)
    and the rules weighing its slots, so the sweep can apply them to its own slots."""
    rules = set(settings.rules_in_use())
    return bool(rules) and rules <= SLOT_RULES and bool(settings.trend_length or rules - {
        "trend_basis", "trend_fast"})  # fmt: skip


def _slot_rule_keys(
    base: StrategySettings, ruled: Sequence[StrategySettings], columns: Sequence[str],
    decided: Sequence[date], bars: Mapping[str, pd.DataFrame], calendar: Any,
) -> tuple[dict[tuple[Any, ...], np.ndarray], dict[StrategySettings, SlotRules]]:  # fmt: skip
    """The tie keys of each ranking rule, and the slot rules (``SlotRules``) of each
    combination using only SLOT_RULES, from every column's month-end closes and last sessions'
    closes at once, as their decisions compute them: each close rounded as
    ``compute_price_text`` rounds it, each trend average Python's ``sum`` of the same points in
    the same order over their count, each sigma ``_sigmas``. A combination whose own symbols
    miss a close it reads, or whose sigma is not above 0, keeps its decisions (which say why);
    none without such combinations."""
    chosen = [c for c in ruled if _slot_rules_alone(c)]
    if not chosen:
        return {}, {}
    deepest = max(c.months_needed() for c in chosen)
    union = _union_settings(base, columns)
    raw = compute_month_end_panel(union, decided, deepest, bars, calendar)
    reorder = [union.symbols().index(s) for s in columns]
    raw = raw[:, :, reorder]
    values = compute_price_values(np.where(np.isfinite(raw) & (raw > 0), raw, np.nan))
    daily = np.empty((len(decided), 0, len(columns)))
    count = max(c.sessions_needed() for c in chosen)
    if count:
        raw = compute_daily_panel(union, decided, count, bars, calendar)[:, :, reorder]
        daily = compute_price_values(np.where(np.isfinite(raw) & (raw > 0), raw, np.nan))
    keys: dict[tuple[Any, ...], np.ndarray] = {}
    verdicts: dict[tuple[str, int, int], np.ndarray] = {}
    sigmas: dict[int, np.ndarray] = {}
    slot_rules: dict[StrategySettings, SlotRules] = {}
    risk = [columns.index(s) for s in base.risk]
    for settings in chosen:
        monthly = settings.trend_basis == "months"
        length, fast = settings.trend_length, settings.trend_fast
        read = sorted({0, settings.skip_months, *(m for m, _ in settings.lookbacks),
                       *range(length if monthly else 0)})  # fmt: skip
        own = [columns.index(s) for s in settings.symbols()]
        if not np.isfinite(values[:, read][:, :, own]).all():
            continue
        if not np.isfinite(daily[:, : settings.sessions_needed()][:, :, own]).all():
            continue
        points = values if monthly else daily
        rule = (settings.lookbacks, settings.skip_months)
        if rule not in keys:
            scores = _blended_scores(settings, values)
            # A column this combination does not read may lack a close: its key is never read.
            keys[rule] = _tie_keys(np.where(np.isfinite(scores), scores, 0.0))
        sigma = None
        if settings.weighting == "inverse_volatility":
            sigma = sigmas.get(settings.volatility_sessions)
            if sigma is None:
                sigma = sigmas[settings.volatility_sessions] = _sigmas(
                    daily, risk, settings.volatility_sessions
                )
            if not (sigma[:, risk] > 0).all():  # the decisions say which one did not move
                continue
        if not length:
            slot_rules[settings] = SlotRules(None, sigma)
            continue
        rule_of_trend = (settings.trend_basis, length, fast)
        if rule_of_trend not in verdicts:
            verdict = np.zeros((len(decided), len(columns)), dtype=bool)
            # Each risk asset's points latest first, as the decision lists them.
            lines = points[:, :length][:, :, risk].transpose(0, 2, 1).tolist()
            verdict[:, risk] = [[sum(p[:fast]) / fast > sum(p) / len(p) for p in row]
                                for row in lines]  # fmt: skip
            verdicts[rule_of_trend] = verdict
        slot_rules[settings] = SlotRules(verdicts[rule_of_trend], sigma)
    return keys, slot_rules


def _sigmas(daily: np.ndarray, risk: Sequence[int], sessions: int) -> np.ndarray:
    """Each risk column's sigma on each session (sessions x columns, NaN elsewhere): the
    standard deviation of its last ``sessions`` daily returns, computed as the decision's
    ``_volatility`` computes it, one array of closes oldest first at a time."""
    sigma = np.full(daily.shape[::2], np.nan)
    for n in range(daily.shape[0]):
        for j in risk:
            values = np.array(daily[n, : sessions + 1, j][::-1].tolist())
            sigma[n, j] = float(np.std(values[1:] / values[:-1] - 1.0, ddof=1))
    return sigma


@dataclasses.dataclass(frozen=True)
class SlotRules:
    """What the sweep applies to a combination's own slots: the trend filter's verdicts and
    the sigmas of inverse volatility (sessions x columns), None for a rule it does not use."""

    trend: np.ndarray | None
    sigma: np.ndarray | None


def sweep(
    cfg_or_settings: Any,
    grid: Mapping[str, Sequence[Any]],
    bars: Mapping[str, pd.DataFrame],
    start: Any = None,
    end: Any = None,
    costs: Costs | Mapping[str, float] | None = None,
    calendar: Any = None,
    initial_cash: float | None = None,
    whole_shares: bool | None = None,
    chunk: int | None = None,
    progress: bool = False,
    runner: ChunkRunner | None = None,
) -> pd.DataFrame:
    """Return one row per valid grid combination: its parameters, window and metrics.

    Every combination is decided on the same sessions (``_common_sessions``: month-ends, or
    the base's signal sessions, from the first on which every combination has its history,
    through ``end``). A combination using no rule of RULE_DEFAULTS has the strategy's rules
    applied to its own month-end closes and tie keys, all at once, and so has one whose rules
    are the trend filter or how its slots are weighed (SLOT_RULES, ``_slot_rule_keys``: the slots
    weighed by the strategy's own ``compute_slot_targets``); one using another rule takes the
    targets of the strategy's own decisions (``compute_decided_weights``). All are simulated
    on the execution sessions only under COST_MODEL, ``chunk``
    combinations per vectorbt ``from_orders`` call (a column per combination and symbol, grouped
    per combination). ``chunk``: None for as many as a quarter of the available memory holds,
    up to MAX_CHUNK (``compute_sweep_chunk``); the rows are the same bit for bit whatever the
    chunk. (Not a config key: config's hash counts every key with its default, so a new key
    would change every workbook's hash and void its approved baseline.) ``progress``: a bar
    over the chunks on stderr. ``runner``: who computes the chunks, ``LocalRunner`` (this
    process) by default; ``distributed.DaskRunner`` sends them to a Dask cluster's workers,
    and sizes the chunks so every worker gets some. Each chunk is ``compute_chunk_outcome``,
    pure given the chunk and the sweep's shared ``SweepPanel``: the rows are the same
    whoever computes them.
    ``backtest`` with a row's settings and ``start`` gives the same metrics
    (tests/unit/test_research.py proves it). Raises ResearchError for a bad grid, missing bars
    or no decidable session (a grid varying ``signal_offset`` among them: each offset trades on
    its own sessions, so backtest each), StrategyError from a rule's decision.
    """
    base, costs, calendar, cash, whole = resolve_inputs(
        cfg_or_settings, costs, calendar, initial_cash, whole_shares
    )
    combos, impossible = compute_grid_settings(base, grid)
    if not combos:
        raise ResearchError(f"grid error: all {impossible} combinations are impossible settings")
    if impossible:
        log.info("sweep: %d impossible combinations left out", impossible)
    columns = compute_sweep_symbols(base, grid)
    first, last = compute_window(bars, columns, calendar, start, end)
    momentum = [c for c in combos if not c.rules_in_use()]
    ruled = [c for c in combos if c.rules_in_use()]
    decided = _common_sessions(momentum, ruled, bars, columns, calendar, first, last)
    exec_days = [calendar.next_session(s) for s in decided if s < last]
    if not exec_days:
        raise ResearchError(f"no decision from {first} to {last} executes by {last}")
    sessions = pd.DatetimeIndex(calendar.sessions(decided[0], last))
    rows = sessions.get_indexer(pd.DatetimeIndex(exec_days))
    prices = compute_prices(bars, columns, sessions)
    keys = _momentum_keys(base, momentum, columns, decided, bars, calendar)
    slot_keys, slot_rules = _slot_rule_keys(base, ruled, columns, decided, bars, calendar)
    keys = {**keys, **slot_keys}
    shared = SweepPanel(
        columns=tuple(columns), keys=keys, rows=rows, sessions=sessions, prices=prices,
        tradable=prices["tradable"].to_numpy()[:, None], costs=costs, cash=cash, whole=whole,
        decided=tuple(decided), bars=dict(bars) if ruled else {}, calendar=calendar,
        slot_rules=slot_rules,
    )  # fmt: skip

    runner = runner or LocalRunner()
    if chunk is None:
        memory = compute_sweep_chunk(len(columns), len(rows), len(sessions))
        chunk = runner.size_chunk(memory, len(combos))
    if chunk < 1:
        raise ResearchError(f"sweep chunk {chunk}: give at least 1 combination per simulation")
    label_keys = compute_label_keys(base, grid)
    labels = [_combo_label(c, label_keys) for c in combos]
    chunks = [
        SweepChunk(start=lo, combos=tuple(combos[lo : lo + chunk]))
        for lo in range(0, len(combos), chunk)
    ]
    values = {name: np.empty(len(combos)) for name in METRICS}
    for part, outcome in zip(chunks, runner.run(compute_chunk_outcome, chunks, shared, progress),
                             strict=True):  # fmt: skip
        if outcome.metrics is None:
            raise _first_untradable(chunks, shared)
        for name in METRICS:
            values[name][part.start : part.start + len(part.combos)] = outcome.metrics[name]
    table = pd.DataFrame(labels)
    table["start"], table["end"] = sessions[0].date().isoformat(), sessions[-1].date().isoformat()
    for name in METRICS:
        table[name] = values[name]
    return table


# -- chunks and the runners that compute them ----------------------------------------------------


@dataclasses.dataclass(frozen=True)
class SweepPanel:
    """What every chunk of one sweep reads: the columns, the tie keys of each ranking rule
    (lookbacks, skip), the execution rows and sessions, the prices, costs and cash; for the
    combinations using a rule, the decision sessions, the bars and the calendar their own
    decisions read. Built once per sweep; a distributed runner sends it to each worker once."""

    columns: tuple[str, ...]
    keys: Mapping[tuple[Any, ...], np.ndarray]
    rows: np.ndarray
    sessions: pd.DatetimeIndex
    prices: Mapping[str, pd.DataFrame]
    tradable: np.ndarray
    costs: Costs
    cash: float
    whole: bool
    decided: tuple[date, ...] = ()
    bars: Mapping[str, pd.DataFrame] = dataclasses.field(default_factory=dict)  # none: no rule
    calendar: Any = None
    # The slot rules of each combination ``_slot_rule_keys`` applies to its own slots; the others
    # using a rule take their decisions' targets.
    slot_rules: Mapping[StrategySettings, SlotRules] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class SweepChunk:
    """The combinations one simulation takes: the grid's ``combos[start : start + len]``."""

    start: int
    combos: tuple[StrategySettings, ...]


@dataclasses.dataclass(frozen=True)
class ChunkOutcome:
    """A chunk's metrics (name -> one value per combination), or None when a combination
    holds a symbol without a usable open on an execution session (nothing was simulated)."""

    start: int
    metrics: dict[str, np.ndarray] | None


ComputeChunk = Callable[[SweepChunk, SweepPanel], ChunkOutcome]


class ChunkRunner(Protocol):
    """How a sweep's chunks are computed: here, one after another, or on a cluster's workers.

    ``run`` yields each chunk's ``compute(chunk, panel)`` in the order of ``chunks``; the
    table is the same whichever runner computed it.
    """

    def size_chunk(self, memory: int, combinations: int) -> int:
        """Return the combinations per chunk, given what a quarter of this machine's free
        memory holds (``memory``) and the grid's size."""
        ...

    def run(
        self, compute: ComputeChunk, chunks: Sequence[SweepChunk], panel: SweepPanel,
        progress: bool,
    ) -> Iterator[ChunkOutcome]: ...  # fmt: skip


class LocalRunner:
    """Chunks computed in this process, one after another, with a bar on stderr."""

    def size_chunk(self, memory: int, combinations: int) -> int:
        """Return ``memory``: one process holds one chunk at a time."""
        return memory

    def run(
        self, compute: ComputeChunk, chunks: Sequence[SweepChunk], panel: SweepPanel,
        progress: bool,
    ) -> Iterator[ChunkOutcome]:  # fmt: skip
        """Yield each chunk's outcome in order, computed here."""
        bar = tqdm(chunks, desc="sweep", unit="chunk", disable=not progress, dynamic_ncols=True)
        for part in bar:
            yield compute(part, panel)


def compute_sweep_work(
    cfg_or_settings: Any, grid: Mapping[str, Sequence[Any]], bars: Mapping[str, pd.DataFrame],
    start: Any = None, end: Any = None,
) -> int:  # fmt: skip
    """Return a sweep's work as ``compute_placement`` weighs it: valid combinations x symbols
    x the months the bars span within [start, end] (a simulation's time grows with each; the
    months are an upper bound of the executions). Raises ResearchError for a bad grid."""
    if isinstance(cfg_or_settings, StrategySettings):
        base = cfg_or_settings
    else:
        values = cfg_or_settings if isinstance(cfg_or_settings, Mapping) else cfg_or_settings.values
        base = StrategySettings.from_config(values)
    combos, _ = compute_grid_settings(base, grid)
    symbols = compute_sweep_symbols(base, grid)
    first = min(b.index[0] for b in bars.values()).date()
    last = max(b.index[-1] for b in bars.values()).date()
    first = max(first, pd.Timestamp(start).date()) if start else first
    last = min(last, pd.Timestamp(end).date()) if end else last
    months = max(0, (last.year - first.year) * 12 + last.month - first.month + 1)
    return len(combos) * len(symbols) * months


def compute_placement(
    scheduler: str | None, work: int, environ: Mapping[str, str] | None = None
) -> str:
    """Return where a sweep of ``work`` (``compute_sweep_work``) runs its chunks: "inprocess"
    (this process, ``LocalRunner``), "local" (a Dask LocalCluster started for the sweep) or a
    Dask scheduler's address. ``scheduler`` None: DASK_SCHEDULER_ADDRESS if set, else a
    LocalCluster from CLUSTER_FROM and this process below. Raises ResearchError for a scheduler
    that is none of these."""
    environ = os.environ if environ is None else environ
    chosen = scheduler or environ.get(SCHEDULER_ENV) or None
    if chosen is None:
        return "local" if work >= CLUSTER_FROM else "inprocess"
    if chosen in PLACEMENTS or "://" in chosen:
        return chosen
    raise ResearchError(
        f"--scheduler {chosen!r}: write inprocess, local or a scheduler's address (tcp://host:8786)"
    )


def compute_chunk_weights(chunk: SweepChunk, panel: SweepPanel) -> np.ndarray:
    """Return the target weights (executions x combinations x columns) of ``chunk``."""
    rows, columns = panel.rows, panel.columns
    weights = np.empty((len(rows), len(chunk.combos), len(columns)))
    reader = None
    for n, settings in enumerate(chunk.combos):
        rules = panel.slot_rules.get(settings)
        if settings.rules_in_use() and rules is None:
            # One reader for the chunk: combinations reading the same days read them once.
            reader = reader or SeriesReader(panel.bars, panel.calendar, panel.sessions[-1].date())
            weights[:, n] = compute_decided_weights(settings, panel, reader)
            continue
        keys = panel.keys[(settings.lookbacks, settings.skip_months)]
        if rules is not None and (
            rules.sigma is not None or settings.failed_slot == "cash" or settings.weight_cap < 1
        ):
            weights[:, n] = _slot_targets(settings, keys, columns, rules, len(rows))
            continue
        verdicts = None if rules is None else rules.trend
        weights[:, n] = _targets(settings, keys, columns, verdicts)[: len(rows)]
    return weights


def _slot_targets(
    settings: StrategySettings, keys: np.ndarray, columns: Sequence[str], rules: SlotRules,
    steps: int,
) -> np.ndarray:  # fmt: skip
    """Target weights (the first ``steps`` sessions x columns) of a combination whose slots
    are weighed by a rule: its slots ranked and filtered as ``_targets`` ranks and filters them,
    then weighed by the strategy's own ``compute_slot_targets``, session by session."""
    position = {s: i for i, s in enumerate(columns)}
    risk = np.array([position[s] for s in settings.risk])
    count = len(settings.risk)
    tie_break = np.broadcast_to(np.arange(count), (steps, count))
    order = risk[np.lexsort((tie_break, -keys[:steps, risk]), axis=-1)]
    kept = order[:, : settings.top_n]
    rows = np.arange(steps)[:, None]
    passed = np.ones(kept.shape, dtype=bool)
    if settings.absolute_momentum:
        hurdle = keys[:steps, position[settings.cash_proxy]] if settings.cash_proxy else 0
        hurdle = np.broadcast_to(hurdle, (steps,))[:, None]
        if settings.absolute_compare == "benchmark":
            passed[:] = keys[:steps, [position[str(settings.benchmark)]]] > hurdle
        else:
            passed = keys[rows, kept] > hurdle
    if rules.trend is not None:
        passed = passed & rules.trend[rows, kept]
    weights = np.zeros((steps, len(columns)))
    for n in range(steps):
        symbols = [columns[j] for j in kept[n]]
        sigma = (
            {} if rules.sigma is None else {columns[j]: float(rules.sigma[n, j]) for j in kept[n]}
        )
        failed = [not ok for ok in passed[n].tolist()]
        targets = compute_slot_targets(settings, symbols, failed, Fraction(0), sigma)
        for symbol, weight in targets.items():
            weights[n, position[symbol]] = float(weight)
    return weights


def compute_decided_weights(
    settings: StrategySettings, panel: SweepPanel, reader: SeriesReader | None = None
) -> np.ndarray:
    """Return the target weights (executions x columns) of a combination using a rule: the
    strategy's own decisions (``compute_decision_series``, as ``research.backtest`` reads them)
    on the sweep's decision sessions, read through ``reader`` (one over the panel's bars to
    the last session; a new one when None). Raises ResearchError if it decides on other
    sessions, and StrategyError as a decision does."""
    first, last = panel.decided[0], panel.sessions[-1].date()
    reader = reader or SeriesReader(panel.bars, panel.calendar, last)
    decisions = reader.compute_series(settings, first)
    if tuple(d.session for d in decisions) != panel.decided:
        raise ResearchError(
            f"sweep error: strategy.{', strategy.'.join(settings.rules_in_use())} decide on "
            f"other sessions than the sweep's from {first} to {last}; backtest this setting with "
            "research.backtest"
        )
    executed = decisions[: len(panel.rows)]
    return np.array([[float(d.targets.get(s, "0")) for s in panel.columns] for d in executed])


def compute_chunk_outcome(chunk: SweepChunk, panel: SweepPanel) -> ChunkOutcome:
    """Return the metrics of ``chunk``'s combinations: one vectorbt simulation. Pure given
    (chunk, panel), so any process may compute it, and compute it again."""
    weights = compute_chunk_weights(chunk, panel)
    if find_untradable(weights, panel.tradable, panel.rows) is not None:
        return ChunkOutcome(chunk.start, None)
    found = _simulate_chunk(
        weights, chunk.start, panel.columns, panel.rows, panel.sessions, panel.prices, panel.costs,
        panel.cash, panel.whole,
    )  # fmt: skip
    return ChunkOutcome(chunk.start, found)


def _simulate_chunk(
    weights: np.ndarray, start: int, columns: Sequence[str],
    rows: np.ndarray, sessions: pd.DatetimeIndex, prices: Mapping[str, pd.DataFrame],
    costs: Costs, cash: float, whole: bool,
) -> dict[str, np.ndarray]:  # fmt: skip
    """The metrics of the combinations whose target weights are ``weights``: one simulation."""
    count = weights.shape[1]
    open_, factor = prices["open"].to_numpy()[rows], prices["factor"].to_numpy()[rows]
    index = pd.MultiIndex.from_product(
        [range(start, start + count), columns], names=["combination", "symbol"]
    )
    fills, _ = simulate_orders(
        pd.DataFrame(np.tile(open_, count), index=sessions[rows], columns=index),
        np.tile(open_, count), np.tile(factor, count),
        weights.reshape(len(rows), count * len(columns)), costs, cash, whole,
        width=len(columns),
    )  # fmt: skip
    equity = compute_marks(fills, rows, prices["close"].to_numpy(), count, cash)
    orders = fills.orders
    traded = np.bincount(
        orders["col"] // len(columns), np.abs(orders["size"] * orders["price"]), count
    )
    return compute_metrics(equity, sessions, traded)


def _first_untradable(chunks: Sequence[SweepChunk], panel: SweepPanel) -> ResearchError:
    """Return what one check of the whole grid's weights raises: the first execution session
    (then the first combination) holding a symbol without a usable open, over every chunk
    (called when some chunk holds one)."""
    first = (len(panel.rows), 0)
    for part in chunks:
        found = find_untradable(compute_chunk_weights(part, panel), panel.tradable, panel.rows)
        if found is not None and found[0] < first[0]:
            first = found
    return make_untradable_error(
        panel.columns[first[1]], panel.sessions[panel.rows[first[0]]].date()
    )


def compute_sweep_chunk(
    columns: int, executions: int, sessions: int, available: int | None = None
) -> int:
    """Return how many combinations one simulation may take: as many as a quarter of
    ``available`` bytes (default: the memory available now, ``read_available_memory``) holds at
    the peak of a simulation, at least 1 and at most MAX_CHUNK."""
    available = read_available_memory() if available is None else available
    each = columns * executions * SIMULATION_BYTES + sessions * MARK_BYTES
    return max(1, min(MAX_CHUNK, int(available * MEMORY_SHARE) // each))


def read_available_memory() -> int:
    """Return the bytes of memory available to a new allocation without swapping: Linux's
    MemAvailable, else the free physical pages (os.sysconf), else 1 GiB."""
    try:
        with open("/proc/meminfo", encoding="ascii") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, AttributeError):
        return 2**30


def require_metric(metric: str) -> str:
    """Return ``metric`` if a sweep can rank by it. Raises ResearchError naming the choices."""
    if metric not in HIGHER_IS_BETTER:
        raise ResearchError(f"no metric {metric!r}; choose one of {', '.join(HIGHER_IS_BETTER)}")
    return metric


def compute_ranking(table: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Return ``sweep``'s rows best first by ``metric`` (rows without a value last), the
    index renumbered from 0. Raises ResearchError for an unknown metric."""
    require_metric(metric)
    ranked = table.sort_values(
        metric, ascending=not HIGHER_IS_BETTER[metric], na_position="last", kind="stable"
    )
    return ranked.reset_index(drop=True)


def compute_label_keys(base: StrategySettings, grid: Mapping[str, Sequence[Any]]) -> list[str]:
    """Return the columns naming a combination in a sweep of ``grid`` over ``base``: the
    momentum keys (MOMENTUM_LABELS), then each rule the grid varies or the base uses."""
    used = base.rules_in_use()
    return [*MOMENTUM_LABELS, *(k for k in RULE_DEFAULTS if k in grid or k in used)]


def _combo_label(settings: StrategySettings, keys: Sequence[str]) -> dict[str, Any]:
    months = [m for m, _ in settings.lookbacks]
    label: dict[str, Any] = {
        "lookback_months": months[0] if len(months) == 1 else "+".join(map(str, months)),
    }
    for key in keys[1:]:
        value = getattr(settings, key)
        label[key] = "+".join(value) if isinstance(value, tuple) else value
    return label


def compute_sweep_records(table: pd.DataFrame) -> list[dict[str, Any]]:
    """Return a sweep table as JSON-ready rows (None where a metric is undefined)."""
    return [{k: compute_finite(v) if isinstance(v, float) else v for k, v in row.items()}
            for row in table.to_dict("records")]  # fmt: skip
