"""Momentum scores, the monthly selection and its target weights, from bars cut at the session.

The rules, for the decision on month-end session t (the calendar's last session of a month):

- Month k back is the calendar's month-end session k months before t. A lookback of L months with
  S skipped months returns ``close(t-S) / close(t-L) - 1`` on the total-return (dividend and
  split) back-adjusted close, adjusted from bars cut at t: no bar after t's close is ever read.
  A blend is the weighted average of its lookbacks' returns, weights normalised to sum to 1.
- The closes read are those at t-S, at t-L for every lookback, and at t itself (a missing bar
  on any of them is an error, never a guess). Each is first rounded to 10 significant digits,
  the text recorded in ``prices_used``; the scores are computed from those numbers, so anyone
  holding the record can recompute every score bit for bit.
- Ranking and ties: risk assets are ranked on the score rounded to 4 decimals (0.01%, half-even
  on the exact float), highest first; assets equal at that resolution rank in the order they are
  listed in ``universe.risk``. So 0.123451 (0.1235) ranks above 0.123449 (0.1234) whatever the
  listing order, while 0.12341 and 0.12344 (both 0.1234) tie and the one listed first wins; float
  noise cannot reorder assets unless it straddles a 0.00005 boundary.
- Absolute momentum: "beat" is strictly greater at the same 4-decimal resolution, so a tie with
  the hurdle fails and the slot goes defensive. The hurdle is the cash proxy's score over the same
  lookbacks (0 with no cash proxy). ``each``: each kept asset must beat it. ``benchmark``
  (Antonacci's GEM): the benchmark asset must beat it, else every slot goes defensive.
- The top N kept assets fill N slots in rank order; a failed slot holds the defensive asset.
  Each slot weighs 1/N cut to 10 decimals; the symbol holding the last slot takes what is left,
  so the weights sum to exactly 1 (N=3: 0.3333333333, 0.3333333333, 0.3333333334).

Rules people run, each off by default (a setting at its default leaves every decision, record
and config hash exactly as before):

- Trend filter (``trend_length`` N > 0; Faber's 10-month rule): a kept asset holds its slot only
  while its fast average is strictly above its N-point simple average of adjusted closes, both
  ending at the signal session. ``trend_basis`` months: the points are the signal sessions of the
  last N months (the decision's own included); sessions: the last N sessions' closes.
  ``trend_fast`` 1 compares the close itself; F > 1 compares the F-point average (average vs
  average). A failing slot goes where ``failed_slot`` says: the defensive asset, or cash (its
  weight left out of the targets, which then sum below 1).
- Signal offset (``signal_offset`` -k): the decision of a month is taken on the session k
  sessions before its month-end session, from bars cut at that session's close; every monthly
  point it reads (lookbacks, trend) is the same offset session of its month. The record says so
  under ``signal`` and names the execution: the next session's open, as for any decision.
- Canary breadth (``canary`` assets, ``canary_breadth`` B; Keller's protective and vigilant
  allocations): a canary is bad when its score does not beat the hurdle (the cash proxy's score,
  or 0 without one), judged like absolute momentum. With b bad canaries, min(1, b/B) of the
  portfolio goes to the defensive asset and the risk slots share the rest.
- Weights (``weighting``): equal, or inverse volatility (each kept slot in proportion to 1/sigma,
  sigma the standard deviation of its last ``volatility_sessions`` daily returns). ``weight_cap``
  c < 1 caps every risk asset's weight at c; the excess goes to the uncapped risk assets in
  proportion to their weights, and what none can take goes where ``failed_slot`` says.
- With canaries, cash or inverse volatility, each symbol's weight is cut to 10 decimals and,
  when nothing is left in cash, the symbol of the last part takes what is left; with none of
  them, the slots are weighed as above.
"""

from __future__ import annotations

import bisect
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from datetime import date, datetime, timedelta
from decimal import ROUND_DOWN, ROUND_HALF_EVEN, Decimal
from fractions import Fraction
from functools import cached_property
from typing import Any

import numpy as np
import pandas as pd

from ops_runner.core.errors import OpsError
from ops_runner.market.prices import AdjustedCloses
from ops_runner.workbook.config import Config
from ops_runner.workbook.settings import UniverseSettings

# Bumped whenever the rules above change: a new version needs a new validated baseline
# (`ops-runner baseline approve`) before the tick decides with it.
STRATEGY_VERSION = "1"

TIE_QUANTUM = Decimal("0.0001")  # scores equal at 0.01% are tied
WEIGHT_QUANTUM = Decimal("0.0000000001")
PRICE_DIGITS = 10
_DECIMALS = [f".{n}f" for n in range(23)]  # compute_price_texts' formats, by decimal places
COMPARES = ("each", "benchmark")
TREND_BASES = ("months", "sessions")
FAILED_SLOTS = ("defensive", "cash")
WEIGHTINGS = ("equal", "inverse_volatility")
MAX_SIGNAL_OFFSET = 10  # sessions before the month-end
EPOCH_ORDINAL = date(1970, 1, 1).toordinal()  # datetime64[D] counts days from it

# The rules added after the first records: their settings at these defaults are the rules as
# they were, and are left out of a record's settings (and out of config's hash) so that every
# earlier record, replay and approved baseline stays byte for byte as it was.
RULE_DEFAULTS: dict[str, Any] = {
    "trend_length": 0,
    "trend_basis": "months",
    "trend_fast": 1,
    "failed_slot": "defensive",
    "signal_offset": 0,
    "canary": (),
    "canary_breadth": 1,
    "weighting": "equal",
    "volatility_sessions": 63,
    "weight_cap": 1.0,
}


class StrategyError(OpsError):
    """No honest decision from these settings and bars. Carries ``symbol`` and ``session``."""

    exit_code = 2

    def __init__(self, message: str, symbol: str | None = None, session: date | None = None):
        super().__init__(message)
        self.symbol = symbol
        self.session = session


class InsufficientHistory(StrategyError):
    """The bars (or the calendar) do not reach back to the longest lookback's start."""


def _decimal_text(value: Decimal) -> str:
    text = format(value, "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return "0" if text in ("", "-0") else text


def compute_price_text(value: float) -> str:
    """Return ``value`` rounded to 10 significant digits as plain decimal text ("24.50000000")."""
    return format(Decimal(format(value, f".{PRICE_DIGITS - 1}e")), "f")


def _price_digits(values: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each value (flattened) at 10 significant digits without Decimal, where that is safe:
    the nearest float to those digits, the decimal places k they print with, and whether the
    value took this way. A value v in [1e-13, 1e10) has exponent E and the 10-digit integer
    M = round(v * 10**k), k = 9 - E; a float product rounds once, off by at most 1.2e-6 from
    the exact one at that size, so M is right unless the product lies within 1e-5 of a half.
    M / 10**k is one correctly rounded division (10**k exact): the nearest float to the
    decimal M * 10**-k, as ``float`` reads its text; printed with k decimals it is M's digits,
    as Decimal prints them. Any other value (a near-half, a wrong exponent from log10, a value
    out of range) is left to the caller."""
    v = np.asarray(values, dtype=np.float64).ravel()
    with np.errstate(all="ignore"):
        k = 9 - np.floor(np.log10(v))
        fast = np.isfinite(v) & (v > 0) & (k >= 0) & (k <= 22)
        k = np.where(fast, k, 0).astype(np.int64)
        scaled = v * 10.0**k
        digits = np.rint(scaled)
        fast &= (np.abs(scaled - np.floor(scaled) - 0.5) > 1e-5) & (digits >= 1e9)
        fast &= digits < 1e10
        rounded = digits / 10.0**k
    return rounded, k, fast


def compute_price_texts(values: np.ndarray) -> list[str]:
    """Return ``compute_price_text(v)`` for every value (flattened), bit for bit, most of them
    without Decimal (``_price_digits``)."""
    v = np.asarray(values, dtype=np.float64).ravel()
    rounded, k, fast = _price_digits(v)
    texts = list(map(format, rounded[fast].tolist(), [_DECIMALS[n] for n in k[fast].tolist()]))
    if fast.all():
        return texts
    slow = iter([compute_price_text(value) for value in v[~fast].tolist()])
    quick = iter(texts)
    return [next(quick) if ok else next(slow) for ok in fast.tolist()]


def compute_price_values(values: np.ndarray) -> np.ndarray:
    """Return ``float(compute_price_text(v))`` for every value: the nearest float to the same
    10 significant digits (both texts name one decimal number), most of them without text
    (``_price_digits``)."""
    v = np.asarray(values, dtype=np.float64)
    rounded, _, fast = _price_digits(v)
    slow = [float(format(x, f".{PRICE_DIGITS - 1}e")) for x in v.ravel()[~fast].tolist()]
    rounded[~fast] = slow
    return rounded.reshape(np.shape(values))


def compute_tie_key(score: float) -> Decimal:
    """Return the score at ranking resolution: rounded half-even to 4 decimals (0.01%)."""
    return Decimal(score).quantize(TIE_QUANTUM, rounding=ROUND_HALF_EVEN)


@dataclass(frozen=True)
class StrategySettings:
    """The strategy's rules, read from config.yaml's ``universe`` and ``strategy`` sections."""

    name: str
    risk: tuple[str, ...]
    defensive: str
    cash_proxy: str | None  # None means a fixed 0% hurdle
    lookbacks: tuple[tuple[int, float], ...]  # (months, weight)
    skip_months: int
    top_n: int
    absolute_momentum: bool
    absolute_compare: str  # "each" or "benchmark"
    benchmark: str | None
    trend_length: int = 0  # 0: no trend filter
    trend_basis: str = "months"  # "months": monthly signal-session closes; "sessions": daily
    trend_fast: int = 1  # 1: the close against the average; F > 1: F-point average against it
    failed_slot: str = "defensive"  # or "cash"
    signal_offset: int = 0  # sessions from the month-end session: 0 its close, -1 the one before
    canary: tuple[str, ...] = ()
    canary_breadth: int = 1
    weighting: str = "equal"  # or "inverse_volatility"
    volatility_sessions: int = 63
    weight_cap: float = 1.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "risk", tuple(self.risk))
        object.__setattr__(self, "canary", tuple(self.canary))
        object.__setattr__(self, "weight_cap", float(self.weight_cap))
        object.__setattr__(self, "lookbacks", tuple((int(m), float(w)) for m, w in self.lookbacks))
        problem = self._problem()
        if problem:
            raise StrategyError(f"strategy settings: {problem}; fix config.yaml")

    def _problem(self) -> str | None:
        months = [m for m, _ in self.lookbacks]
        if not self.risk or len(set(self.risk)) != len(self.risk):
            return f"risk must list distinct symbols, got {list(self.risk)}"
        if self.defensive in self.risk or (self.cash_proxy and self.cash_proxy in self.risk):
            return "the defensive asset and the cash proxy must sit outside the risk universe"
        if not months or len(set(months)) != len(months) or min(months) < 1:
            return f"lookbacks need distinct month counts of at least 1, got {months}"
        if any(not (w > 0 and np.isfinite(w)) for _, w in self.lookbacks):
            return "every lookback weight must be a finite number above 0"
        if not 0 <= self.skip_months < min(months):
            return f"skip_months {self.skip_months} must be 0 or more and below every lookback"
        if not 1 <= self.top_n <= len(self.risk):
            return f"top_n {self.top_n} must be between 1 and the {len(self.risk)} risk assets"
        if self.absolute_compare not in COMPARES:
            return f"absolute_compare {self.absolute_compare!r} must be one of {COMPARES}"
        if self.absolute_compare == "benchmark" and self.benchmark not in self.risk:
            return f"benchmark {self.benchmark} must be one of the risk assets"
        return self._rule_problem()

    def _rule_problem(self) -> str | None:
        if self.trend_length < 0 or self.trend_basis not in TREND_BASES:
            return f"trend_length must be 0 or more and trend_basis one of {TREND_BASES}"
        if self.trend_length and not 1 <= self.trend_fast < self.trend_length:
            return (
                f"trend_fast {self.trend_fast} must be at least 1 and below trend_length "
                f"{self.trend_length} (0 turns the trend filter off)"
            )
        if self.failed_slot not in FAILED_SLOTS:
            return f"failed_slot {self.failed_slot!r} must be one of {FAILED_SLOTS}"
        if not -MAX_SIGNAL_OFFSET <= self.signal_offset <= 0:
            return f"signal_offset {self.signal_offset} must be between -{MAX_SIGNAL_OFFSET} and 0"
        if len(set(self.canary)) != len(self.canary):
            return f"canary must list distinct symbols, got {list(self.canary)}"
        if self.canary and not 1 <= self.canary_breadth <= len(self.canary):
            return (
                f"canary_breadth {self.canary_breadth} must be between 1 and the "
                f"{len(self.canary)} canary assets"
            )
        if self.weighting not in WEIGHTINGS:
            return f"weighting {self.weighting!r} must be one of {WEIGHTINGS}"
        if self.volatility_sessions < 2:
            return f"volatility_sessions {self.volatility_sessions} must be at least 2"
        if not 0 < self.weight_cap <= 1:
            return f"weight_cap {self.weight_cap} must be above 0 and at most 1"
        return None

    def rules_in_use(self) -> list[str]:
        """Return the names of the settings in RULE_DEFAULTS that differ from their default."""
        return [k for k, v in RULE_DEFAULTS.items() if getattr(self, k) != v]

    @classmethod
    def from_config(cls, cfg: Config | Mapping[str, Any]) -> StrategySettings:
        """Return the settings of a Config (or of its checked ``values`` dict)."""
        values = cfg if isinstance(cfg, Mapping) else cfg.values
        uni, strat = UniverseSettings.from_config(values), values["strategy"]
        blend = [(b["lookback_months"], b["weight"]) for b in strat["blend"]]
        return cls(
            name=strat["name"],
            risk=uni.risk,
            defensive=uni.defensive,
            cash_proxy=uni.cash_proxy,
            lookbacks=tuple(blend) or ((strat["lookback_months"], 1.0),),
            skip_months=strat["skip_months"],
            top_n=strat["top_n"],
            absolute_momentum=strat["absolute_momentum"],
            absolute_compare=strat["absolute_compare"],
            benchmark=strat["benchmark"],
            **{k: strat.get(k, v) for k, v in RULE_DEFAULTS.items()},
        )

    def to_dict(self) -> dict[str, Any]:
        """Return JSON-ready settings without floats (weights as decimal text); see from_dict."""
        return {
            "name": self.name,
            "risk": list(self.risk),
            "defensive": self.defensive,
            "cash_proxy": self.cash_proxy,
            "lookbacks": [
                {"months": m, "weight": _decimal_text(Decimal(repr(w)))} for m, w in self.lookbacks
            ],
            "skip_months": self.skip_months,
            "top_n": self.top_n,
            "absolute_momentum": self.absolute_momentum,
            "absolute_compare": self.absolute_compare,
            "benchmark": self.benchmark,
            **{k: _plain(getattr(self, k)) for k in self.rules_in_use()},
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> StrategySettings:
        """Return the settings that ``to_dict`` wrote. Raises StrategyError naming a bad field."""
        try:
            lookbacks = tuple((int(b["months"]), float(b["weight"])) for b in d["lookbacks"])
            fields = {
                k: d[k] if k in d or k not in RULE_DEFAULTS else RULE_DEFAULTS[k]
                for k in cls.__dataclass_fields__
                if k != "lookbacks"
            }
            if "weight_cap" in d:
                fields["weight_cap"] = float(d["weight_cap"])
        except (KeyError, TypeError, ValueError) as exc:
            raise StrategyError(f"strategy settings record is malformed ({exc!r})") from None
        return cls(**{**fields, "lookbacks": lookbacks})

    def symbols(self) -> list[str]:
        """Return the risk assets, the defensive asset, the cash proxy, then the canaries, once
        each."""
        found = [*self.risk, self.defensive]
        for symbol in [self.cash_proxy, *self.canary]:
            if symbol and symbol not in found:
                found.append(symbol)
        return found

    def months_needed(self) -> int:
        """Return how many month-ends back the earliest close read is: the longest lookback L
        (or the trend filter's N-1 on the months basis, when longer).

        The decision on month-end session t reads closes at t-S and at t-L for every lookback L,
        so the bars must hold a bar on the month-end session max(L) months before t.
        """
        trend = self.trend_length - 1 if self.trend_basis == "months" else 0
        return max(trend, *(m for m, _ in self.lookbacks))

    def sessions_needed(self) -> int:
        """Return how many daily closes through the signal session the daily rules read (the
        trend filter on the sessions basis, inverse volatility); 0 when none does."""
        trend = self.trend_length if self.trend_basis == "sessions" else 0
        volatility = self.volatility_sessions + 1 if self.weighting == "inverse_volatility" else 0
        return max(trend, volatility)


def _plain(value: Any) -> Any:
    """A setting as JSON-ready values without floats (a tuple as a list, a float as text)."""
    if isinstance(value, tuple):
        return list(value)
    if isinstance(value, float):
        return _decimal_text(Decimal(repr(value)))
    return value


@dataclass(frozen=True, eq=False)
class Decision:
    """One month's scores, selection and targets, and the exact prices they came from.

    ``score_table`` holds the scores by column, a value per symbol in ``symbols()`` order:
    score, ret_<m>m per lookback, rank (NaN outside the risk assets), kept, passed (None when
    not judged), start_session, end_session. ``scores`` shows it as a frame, built when first
    read: a backtest decides every month and reads no frame. Two decisions are equal when their
    records are (a frame has no plain ``==``).
    """

    strategy: str
    session: date
    symbols: tuple[str, ...]
    score_table: dict[str, list[Any]]
    selection: tuple[str, ...]
    targets: dict[str, str]
    hurdle: float | None
    explanation: str
    prices_used: dict[str, list[tuple[str, str]]]
    # What the rules of RULE_DEFAULTS add to the record (signal, canary); empty without them.
    extra: dict[str, Any] = dataclass_field(default_factory=dict)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Decision):
            return NotImplemented
        return self.to_record() == other.to_record()

    __hash__ = None  # type: ignore[assignment]  # equal by value, yet holds mutable tables

    @cached_property
    def scores(self) -> pd.DataFrame:
        """Return the score table as a frame indexed by symbol."""
        columns = {
            c: pd.Series(v, dtype=object).to_numpy() if c == "passed" else v
            for c, v in self.score_table.items()
        }
        return pd.DataFrame(columns, index=pd.Index(list(self.symbols), name="symbol"))

    def compute_score_map(self) -> dict[str, float]:
        """Return symbol -> score (the blend's return, a float)."""
        return dict(zip(self.symbols, self.score_table["score"], strict=True))

    def to_record(self) -> dict[str, Any]:
        """Return the decision as JSON-ready values with no floats (numbers as decimal text)."""
        table = self.score_table
        columns = [c for c in table if c == "score" or c.startswith("ret_")]
        rows: dict[str, Any] = {}
        for i, symbol in enumerate(self.symbols):
            row: dict[str, Any] = {c: format(float(table[c][i]), ".10f") for c in columns}
            rank = table["rank"][i]
            passed = table["passed"][i]
            row["rank"] = None if pd.isna(rank) else int(rank)
            row["kept"] = bool(table["kept"][i])
            row["passed"] = None if passed is None else bool(passed)
            row["start_session"] = table["start_session"][i].isoformat()
            row["end_session"] = table["end_session"][i].isoformat()
            for column in ("trend_fast", "trend_average", "volatility"):
                if column in table:
                    value = table[column][i]
                    row[column] = None if pd.isna(value) else format(float(value), ".10f")
            for column in ("trend", "canary"):
                if column in table:
                    row[column] = None if table[column][i] is None else bool(table[column][i])
            rows[str(symbol)] = row
        return {
            "strategy": self.strategy,
            "session": self.session.isoformat(),
            "scores": rows,
            "selection": list(self.selection),
            "targets": dict(self.targets),
            "hurdle": None if self.hurdle is None else format(self.hurdle, ".10f"),
            "explanation": self.explanation,
            "prices_used": {s: [[d, p] for d, p in v] for s, v in self.prices_used.items()},
            **self.extra,
        }


# -- reading bars ---------------------------------------------------------------------------------


def _require_frame(bars: Mapping[str, pd.DataFrame], symbol: str, session: date) -> pd.DataFrame:
    frame = bars.get(symbol)
    if frame is None or len(frame) == 0:
        raise StrategyError(
            f"no bars for {symbol}, needed by the decision on {session}; import its history or "
            "take it out of universe",
            symbol,
            session,
        )
    index = frame.index
    if not (
        isinstance(index, pd.DatetimeIndex) and index.is_monotonic_increasing and index.is_unique
    ):
        raise StrategyError(
            f"bars for {symbol} are not indexed by unique ascending dates; read them through "
            f"the price store before deciding on {session}",
            symbol,
            session,
        )
    return frame


def _adjusted_as_of(adjusted: AdjustedCloses, session: date, days: Sequence[date]) -> np.ndarray:
    """The back-adjusted closes on ``days`` computed from the bars on or before ``session`` only;
    NaN on a day with no bar."""
    cut = adjusted.cut(session)
    values = np.full(len(days), np.nan)
    if cut == 0:
        return values
    wanted = np.array(days, dtype="datetime64[D]")
    found = np.minimum(np.searchsorted(adjusted.dates, wanted), cut - 1)
    present = adjusted.dates[found] == wanted
    values[present] = adjusted.as_of(cut, found[present])
    return values


def _adjusted_as_of_each(
    adjusted: AdjustedCloses, sessions: Sequence[date], wanted: np.ndarray
) -> np.ndarray:
    """``_adjusted_as_of`` on each of ``sessions``, its days a line of ``wanted`` (datetime64[D],
    sessions x days): every session in one pass, bit for bit."""
    cuts = np.searchsorted(adjusted.dates, np.array(sessions, dtype="datetime64[ns]"), "right")
    found = np.clip(np.searchsorted(adjusted.dates, wanted), 0, np.maximum(cuts, 1)[:, None] - 1)
    present = (cuts[:, None] > 0) & (adjusted.dates[found] == wanted)
    return np.where(present, adjusted.as_of_each(np.maximum(cuts, 1), found), np.nan)


class _Prepared(dict[str, AdjustedCloses]):
    """The strategy's symbols' bars, each checked and made ready when first read (so errors come
    in the order the decision reads them), then read as of any session."""

    def __init__(self, bars: Mapping[str, pd.DataFrame], session: date) -> None:
        super().__init__()
        self._bars, self._session = bars, session

    def __missing__(self, symbol: str) -> AdjustedCloses:
        self[symbol] = AdjustedCloses(_require_frame(self._bars, symbol, self._session))
        return self[symbol]


def _as_date(value: Any) -> date:
    """A session given as a date, datetime, Timestamp or ISO text, as a plain date."""
    if isinstance(value, datetime):  # includes pd.Timestamp
        return value.date()
    if isinstance(value, date):
        return value
    try:
        return date.fromisoformat(str(value))
    except ValueError:
        raise StrategyError(f"bad session {value!r}: expected a date such as 2025-12-31") from None


def compute_month_back(session: date, months: int) -> date:
    """Return the first day of the month ``months`` months before ``session``'s."""
    year, month = divmod(session.year * 12 + session.month - 1 - months, 12)
    return date(year, month + 1, 1)


def _window(settings: StrategySettings, session: date, calendar: Any) -> list[date] | None:
    """Month-end sessions from ``months_needed`` months before ``session`` through it, or None."""
    first = compute_month_back(session, settings.months_needed())
    if first < calendar.covered_from:
        return None
    return list(calendar.month_end_sessions(first, session))


def compute_month_end_closes(
    settings: StrategySettings, session: date, bars: Mapping[str, pd.DataFrame], calendar: Any
) -> pd.DataFrame:
    """Return adjusted closes at the month-end sessions up to ``session``, a column per symbol.

    Each symbol's bars are cut at ``session`` before adjusting, so the values are as of that
    close. Rows run from the month of the earliest first bar; NaN where a symbol has no bar on a
    month-end session (never filled). Full precision, not the rounded ``prices_used``. Raises
    StrategyError when a symbol of ``settings.symbols()`` has no bars.
    """
    session = _as_date(session)
    prepared = _Prepared(bars, session)
    return _month_end_closes({s: prepared[s] for s in settings.symbols()}, session, calendar)


def compute_month_end_panel(
    settings: StrategySettings,
    sessions: Sequence[date],
    depth: int,
    bars: Mapping[str, pd.DataFrame],
    calendar: Any,
) -> np.ndarray:
    """Return ``compute_month_end_closes`` on each of ``sessions``, its last ``depth + 1`` rows
    latest first: an array (sessions x k = 0..depth month-ends back x ``settings.symbols()``),
    bit for bit, NaN where that frame has no such row or no bar. The bars are prepared once and
    each symbol's closes read for every session in one pass."""
    if not sessions:
        return np.empty((0, depth + 1, len(settings.symbols())))
    days = [_as_date(s) for s in sessions]
    prepared = _Prepared(bars, max(days))
    ready = {s: prepared[s] for s in settings.symbols()}
    first = max(min(a.first_date for a in ready.values()), calendar.covered_from)
    ends = list(calendar.month_end_sessions(first, max(days))) if first <= max(days) else []
    back = (
        np.array([bisect.bisect_right(ends, d) for d in days])[:, None] - 1 - np.arange(depth + 1)
    )
    wanted = np.array(ends or [first], dtype="datetime64[D]")[np.maximum(back, 0)]
    panel = np.stack([_adjusted_as_of_each(a, days, wanted) for a in ready.values()], axis=-1)
    panel[back < 0] = np.nan
    return panel


def compute_daily_panel(
    settings: StrategySettings,
    sessions: Sequence[date],
    count: int,
    bars: Mapping[str, pd.DataFrame],
    calendar: Any,
) -> np.ndarray:
    """Return the adjusted closes of the last ``count`` sessions through each of ``sessions``
    (the daily rules' sessions), latest first, each as of that session's close: an array
    (sessions x k = 0..count-1 sessions back x ``settings.symbols()``), bit for bit the closes
    a decision reads before rounding, NaN where the calendar's coverage or a symbol's bars have
    no such session."""
    if not sessions:
        return np.empty((0, count, len(settings.symbols())))
    days = [_as_date(s) for s in sessions]
    prepared = _Prepared(bars, max(days))
    ready = {s: prepared[s] for s in settings.symbols()}
    first = max(calendar.covered_from, min(days) - timedelta(days=2 * count + 14))
    known = [ts.date() for ts in calendar.sessions(first, max(days))]
    back = np.array([bisect.bisect_right(known, d) for d in days])[:, None] - 1 - np.arange(count)
    wanted = np.array(known or [first], dtype="datetime64[D]")[np.maximum(back, 0)]
    panel = np.stack([_adjusted_as_of_each(a, days, wanted) for a in ready.values()], axis=-1)
    panel[back < 0] = np.nan
    return panel


def _month_end_closes(
    prepared: Mapping[str, AdjustedCloses], session: date, calendar: Any
) -> pd.DataFrame:
    first_bar = min(a.first_date for a in prepared.values())
    first = max(first_bar, calendar.covered_from)
    ends = list(calendar.month_end_sessions(first, session)) if first <= session else []
    index = pd.DatetimeIndex(ends, name="session")
    columns = {s: _adjusted_as_of(a, session, ends) for s, a in prepared.items()}
    return pd.DataFrame(columns, index=index)


def _read_prices(
    symbol: str, adjusted: AdjustedCloses, session: date, days: list[date]
) -> dict[date, str]:
    """Return the adjusted closes on ``days`` as 10-digit text; raise if one is absent."""
    first = adjusted.first_date
    if first > days[0]:
        raise InsufficientHistory(
            f"history too short: {symbol}'s bars start {first}, the decision on "
            f"{session} needs its close on {days[0]}; decide on a later session or shorten the "
            "lookback",
            symbol,
            session,
        )
    values = _adjusted_as_of(adjusted, session, days)
    wanted = np.array(days, dtype="datetime64[D]")
    prices = {}
    for at, day in enumerate(days):
        if np.isnan(values[at]) and wanted[at] not in adjusted.dates.astype("datetime64[D]"):
            raise StrategyError(
                f"no bar for {symbol} on month-end session {day}, needed by the decision on "
                f"{session}; re-import {symbol} (no price is guessed or carried forward)",
                symbol,
                session,
            )
        if not (np.isfinite(values[at]) and values[at] > 0):
            raise StrategyError(
                f"adjusted close of {symbol} on {day} is {values[at]}; run data QA on {symbol} "
                f"before deciding on {session}",
                symbol,
                session,
            )
        prices[day] = compute_price_text(float(values[at]))
    return prices


# -- deciding -------------------------------------------------------------------------------------


def compute_targets(slots: list[str]) -> dict[str, str]:
    """Return symbol -> weight text for equal slots; keys in first-slot order, sum exactly 1.

    Each slot weighs 1/N cut to 10 decimals; the symbol holding the last slot takes the rest.
    """
    share = (Decimal(1) / len(slots)).quantize(WEIGHT_QUANTUM, rounding=ROUND_DOWN)
    counts: dict[str, int] = {}
    for symbol in slots:
        counts[symbol] = counts.get(symbol, 0) + 1
    weights = {s: share * n for s, n in counts.items() if s != slots[-1]}
    weights[slots[-1]] = Decimal(1) - sum(weights.values(), Decimal(0))
    return {s: _decimal_text(weights[s]) for s in counts}


def _cut(weight: Fraction) -> Decimal:
    """An exact weight cut (rounded down) to 10 decimals."""
    return Decimal(weight.numerator * 10**10 // weight.denominator).scaleb(-10)


def compute_weighted_targets(parts: Sequence[tuple[str, Fraction]]) -> dict[str, str]:
    """Return symbol -> weight text from (symbol, exact weight) parts that sum to at most 1.

    A symbol's parts are added and the sum cut to 10 decimals; when the parts sum to exactly 1,
    the symbol of the last part above 0 takes what the others leave, so the weights sum to 1.
    Otherwise the rest is cash. Keys in first-part order; a symbol whose weight cuts to 0 is left
    out.
    """
    weights: dict[str, Fraction] = {}
    for symbol, weight in parts:
        if weight > 0:
            weights[symbol] = weights.get(symbol, Fraction(0)) + weight
    cut = {s: _cut(w) for s, w in weights.items()}
    if weights and sum(weights.values()) == 1:
        last = [s for s, w in parts if w > 0][-1]
        cut[last] = Decimal(1) - sum((v for s, v in cut.items() if s != last), Decimal(0))
    return {s: _decimal_text(v) for s, v in cut.items() if v > 0}


def compute_capped_weights(
    weights: Mapping[str, Fraction], cap: Fraction
) -> tuple[dict[str, Fraction], Fraction]:
    """Return the weights with none above ``cap``, and the excess none of them could take.

    An asset above the cap is held at the cap; what it gives up goes to the others in proportion
    to their weights, again and again until none is above it (0.6, 0.3, 0.1 capped at 0.4:
    0.4, 0.45, 0.15, then 0.4, 0.4, 0.2 with nothing left over).
    """
    total = sum(weights.values(), Fraction(0))
    capped: set[str] = set()
    scaled = dict(weights)
    while True:
        free = {s: w for s, w in weights.items() if s not in capped}
        budget, free_total = total - cap * len(capped), sum(free.values(), Fraction(0))
        scaled = {s: w * budget / free_total for s, w in free.items()} if free_total else free
        over = [s for s, w in scaled.items() if w > cap]
        if not over:
            break
        capped.update(over)
    result = {s: cap if s in capped else scaled[s] for s in weights}
    return result, total - sum(result.values(), Fraction(0))


def _pct(value: float) -> str:
    return f"{value:+.1%}"


def _label(settings: StrategySettings) -> str:
    months = [m for m, _ in settings.lookbacks]
    label = f"{months[0]}m" if len(months) == 1 else "/".join(map(str, months)) + "m blend"
    return label + (f" skipping {settings.skip_months}m" if settings.skip_months else "")


def _explain(
    settings: StrategySettings,
    order: list[str],
    score: dict[str, float],
    passed: dict[str, bool | None],
    hurdle: float | None,
    targets: dict[str, str],
    notes: Sequence[str] = (),
) -> str:
    n = settings.top_n
    kept, rest = order[:n], order[n:]
    listed = ", ".join(f"{s} {_pct(score[s])}" for s in kept)
    parts = []
    if not rest:
        parts.append(f"{_label(settings)}: {listed}")
    elif n == 1:
        others = " and ".join(f"{s} {_pct(score[s])}" for s in rest)
        parts.append(f"{kept[0]} {_label(settings)} {_pct(score[kept[0]])} beat {others}")
    else:
        others = ", ".join(f"{s} {_pct(score[s])}" for s in rest)
        parts.append(f"{_label(settings)} top {n}: {listed}, ahead of {others}")
    if rest and compute_tie_key(score[kept[-1]]) == compute_tie_key(score[rest[0]]):
        parts[-1] += f" ({kept[-1]} tied {rest[0]} at 0.01% and is listed first)"
    if hurdle is not None:
        bar = f"{settings.cash_proxy} {_pct(hurdle)}" if settings.cash_proxy else "the 0% hurdle"
        judged = [settings.benchmark] if settings.absolute_compare == "benchmark" else kept
        won = [s for s in judged if s is not None and passed[s]]
        lost = [s for s in judged if s is not None and not passed[s]]
        if won:
            parts.append(f"{', '.join(won)} beat {bar}")
        if lost:
            losers = ", ".join(f"{s} {_pct(score[s])}" for s in lost)
            parts.append(f"{losers} did not beat {bar}")
    parts.extend(notes)
    held = [f"{s} {float(w) * 100:.4g}%" for s, w in targets.items()]
    cash = Decimal(1) - sum((Decimal(w) for w in targets.values()), Decimal(0))
    if cash > 0:
        held.append(f"cash {float(cash) * 100:.4g}%")
    return "; ".join(parts) + f": hold {', '.join(held)}"


def compute_decision(
    settings: StrategySettings, session: date, bars: Mapping[str, pd.DataFrame], calendar: Any
) -> Decision:
    """Return the decision on month-end session ``session`` from bars cut at its close (with a
    ``signal_offset``, on the month's signal session: that many sessions before its month-end).

    Raises StrategyError (InsufficientHistory when the bars or the calendar start too late) when
    ``session`` is not a month-end (signal) session, a symbol has no bars, or a needed session
    has no usable bar for a symbol; the calendar's errors for dates outside its coverage.
    """
    session = _as_date(session)
    return _decide(settings, session, _Prepared(bars, session), calendar)


def compute_signal_session(calendar: Any, month_end: date, offset: int) -> date:
    """Return the session ``-offset`` sessions before month-end session ``month_end`` (itself
    for 0, without asking the calendar): the session a month's decision is taken on."""
    if offset == 0:
        return month_end
    return calendar.rebalance_session(month_end.year, month_end.month, offset)


def _month_end_of(settings: StrategySettings, session: date, calendar: Any) -> date:
    """The month-end session whose decision is taken on ``session``; raise if there is none."""
    if settings.signal_offset == 0:
        if not calendar.is_month_end_session(session):
            raise StrategyError(
                f"{session} is not a month-end (rebalance) session of {calendar.name}; decide "
                "on the last session of a month",
                None,
                session,
            )
        return session
    month_end = calendar.rebalance_session(session.year, session.month)
    signal = calendar.rebalance_session(session.year, session.month, settings.signal_offset)
    if signal != session:
        raise StrategyError(
            f"{session} is not a signal session: with signal_offset {settings.signal_offset} "
            f"the decision of {month_end:%Y-%m} is taken on {signal}; decide on that session",
            None,
            session,
        )
    return month_end


def _decide(
    settings: StrategySettings,
    session: date,
    prepared: Mapping[str, AdjustedCloses],
    calendar: Any,
) -> Decision:
    month_end = _month_end_of(settings, session, calendar)
    window = _window(settings, month_end, calendar)
    if window is None:
        raise InsufficientHistory(
            f"history too short: the {settings.months_needed()}-month lookback on {session} "
            f"starts before the calendar's coverage ({calendar.covered_from}); decide later",
            None,
            session,
        )
    at, days, daily = _reading_days(settings, window, calendar)
    read = {s: _read_prices(s, prepared[s], session, days) for s in settings.symbols()}
    return _decide_on(settings, session, at, days, daily, read, month_end)


def _reading_days(
    settings: StrategySettings,
    window: Sequence[date],
    calendar: Any,
    known: _SessionSpan | None = None,
) -> tuple[dict[int, date], list[date], list[date]]:
    """The (signal) session k months back for each k the decision reads, the sessions of the
    daily rules (oldest first, the signal session last; none without them), and every session
    read. ``known``: the calendar's sessions over a span, read once for many decisions."""
    # The session's own close anchors the adjustment: it is read even when months are skipped.
    ks = [0, settings.skip_months, *(m for m, _ in settings.lookbacks)]
    if settings.trend_length and settings.trend_basis == "months":
        ks.extend(range(settings.trend_length))
    offset = settings.signal_offset
    at = {k: compute_signal_session(calendar, window[-1 - k], offset) for k in ks}
    daily = _daily_sessions(settings, at[0], calendar, known)
    return at, sorted(set(at.values()) | set(daily)), daily


class _SessionSpan:
    """The calendar's sessions from ``start`` through ``end`` as dates, read once; a question
    about days outside the span goes to the calendar itself."""

    def __init__(self, calendar: Any, start: date, end: date) -> None:
        self._calendar, self._start, self._end = calendar, start, end
        self._days = [ts.date() for ts in calendar.sessions(start, end)]

    def sessions(self, start: date, end: date) -> list[date]:
        """The sessions from ``start`` through ``end``, as ``calendar.sessions`` gives them."""
        if not (self._start <= start and end <= self._end):
            return [ts.date() for ts in self._calendar.sessions(start, end)]
        lo, hi = bisect.bisect_left(self._days, start), bisect.bisect_right(self._days, end)
        return self._days[lo:hi]


def _daily_sessions(
    settings: StrategySettings, session: date, calendar: Any, known: _SessionSpan | None = None
) -> list[date]:
    """The last ``sessions_needed`` sessions through ``session``; raise if the calendar has
    fewer."""
    n = settings.sessions_needed()
    if n == 0:
        return []
    start = max(calendar.covered_from, session - timedelta(days=2 * n + 14))
    if known is None:
        found = [ts.date() for ts in calendar.sessions(start, session)][-n:]
    else:
        found = known.sessions(start, session)[-n:]
    if len(found) < n:
        raise InsufficientHistory(
            f"history too short: the daily rules on {session} read {n} sessions and the "
            f"calendar starts {calendar.covered_from}; decide later",
            None,
            session,
        )
    return found


def _points(
    settings: StrategySettings,
    at: Mapping[int, date],
    daily: Sequence[date],
    closes: Mapping[date, float],
) -> list[float]:
    """The trend filter's closes, latest first."""
    if settings.trend_basis == "months":
        return [closes[at[k]] for k in range(settings.trend_length)]
    return [closes[d] for d in reversed(daily[-settings.trend_length :])]


def _volatility(symbol: str, session: date, daily: Sequence[date], closes: Mapping[date, float],
                sessions: int) -> float:  # fmt: skip
    values = np.array([closes[d] for d in daily[-(sessions + 1) :]])
    sigma = float(np.std(values[1:] / values[:-1] - 1.0, ddof=1))
    if not sigma > 0:
        raise StrategyError(
            f"{symbol}'s closes did not move over the {sessions} sessions to {session}; inverse "
            "volatility has no weight for it: run data QA on it",
            symbol,
            session,
        )
    return sigma


def compute_slot_targets(
    settings: StrategySettings,
    kept: Sequence[str],
    failed: Sequence[bool],
    share: Fraction,
    sigma: Mapping[str, float],
) -> dict[str, str]:
    """Return a decision's targets (symbol -> weight text) from its kept assets in rank order,
    which of their slots failed a filter, the canaries' defensive share and, with inverse
    volatility, each kept asset's sigma: the slots weighed, capped and spilled as the rules
    above say."""
    if settings.weighting == "inverse_volatility":
        inverse = [Fraction(1 / sigma[s]) for s in kept]
        base = [w / sum(inverse, Fraction(0)) for w in inverse]
    else:
        base = [Fraction(1, len(kept))] * len(kept)
    simple = not (
        settings.canary
        or settings.failed_slot == "cash"
        or settings.weighting != "equal"
        or settings.weight_cap < 1
    )
    if simple:
        return compute_targets(
            [settings.defensive if f else s for s, f in zip(kept, failed, strict=True)]
        )
    held = {s: (1 - share) * w for s, w, f in zip(kept, base, failed, strict=True) if not f}
    spill = sum(((1 - share) * w for w, f in zip(base, failed, strict=True) if f), Fraction(0))
    cap = Fraction(Decimal(repr(settings.weight_cap)))
    held, excess = compute_capped_weights(held, cap)
    spill += excess
    to_defensive = share + (spill if settings.failed_slot == "defensive" else 0)
    return compute_weighted_targets([*held.items(), (settings.defensive, to_defensive)])


class _CloseValues(dict[str, dict[date, float]]):
    """Each symbol's closes as numbers (day -> float of its 10-digit text), made when first
    read: a decision's rules read a few symbols' closes of the many it records."""

    def __init__(self, read: Mapping[str, Mapping[date, str]]) -> None:
        super().__init__()
        self._read = read

    def __missing__(self, symbol: str) -> dict[date, float]:
        texts = self._read[symbol]
        self[symbol] = dict(zip(texts, map(float, texts.values()), strict=True))
        return self[symbol]


def _decide_on(
    settings: StrategySettings,
    session: date,
    at: Mapping[int, date],
    days: Sequence[date],
    daily: Sequence[date],
    read: Mapping[str, Mapping[date, str]],
    month_end: date,
) -> Decision:
    """The decision from the 10-digit closes ``read`` (symbol -> day -> text) on ``days``."""
    symbols = settings.symbols()
    prices_used: dict[str, list[tuple[str, str]]] = {}
    returns: dict[int, dict[str, float]] = {m: {} for m, _ in settings.lookbacks}
    score: dict[str, float] = {}
    total_weight = sum(w for _, w in settings.lookbacks)
    day_texts = [d.isoformat() for d in days]
    for symbol in symbols:
        texts = read[symbol]
        prices_used[symbol] = list(zip(day_texts, map(texts.__getitem__, days), strict=True))
        end = float(texts[at[settings.skip_months]])
        for m, _ in settings.lookbacks:
            returns[m][symbol] = end / float(texts[at[m]]) - 1.0
        score[symbol] = sum(w * returns[m][symbol] for m, w in settings.lookbacks) / total_weight

    position = {s: i for i, s in enumerate(settings.risk)}
    order = sorted(settings.risk, key=lambda s: (-compute_tie_key(score[s]), position[s]))
    kept = order[: settings.top_n]
    passed: dict[str, bool | None] = dict.fromkeys(symbols)
    hurdle: float | None = None
    if settings.absolute_momentum:
        hurdle = score[settings.cash_proxy] if settings.cash_proxy else 0.0
        bar = compute_tie_key(hurdle)
        if settings.absolute_compare == "benchmark":
            benchmark = str(settings.benchmark)  # one of the risk assets: settings check it
            verdict = compute_tie_key(score[benchmark]) > bar
            passed.update(dict.fromkeys([*kept, benchmark], verdict))
        else:
            passed.update({s: compute_tie_key(score[s]) > bar for s in kept})

    longest = settings.months_needed()
    rank = {s: float(i + 1) for i, s in enumerate(order)}
    table: dict[str, list[Any]] = {
        "score": [score[s] for s in symbols],
        **{f"ret_{m}m": [returns[m][s] for s in symbols] for m, _ in settings.lookbacks},
        "rank": [rank.get(s, np.nan) for s in symbols],
        "kept": [s in kept for s in symbols],
        "passed": [passed[s] if s in kept else None for s in symbols],
        "start_session": [at[longest]] * len(symbols),
        "end_session": [at[settings.skip_months]] * len(symbols),
    }
    # The rules read closes of the risk assets alone (every one's trend, the kept ones' sigma).
    closes = _CloseValues(read)
    notes: list[str] = []
    extra: dict[str, Any] = {}

    trend: dict[str, bool] = {}
    if settings.trend_length:
        fast, average = {}, {}
        for s in settings.risk:
            points = _points(settings, at, daily, closes[s])
            fast[s] = sum(points[: settings.trend_fast]) / settings.trend_fast
            average[s] = sum(points) / len(points)
            trend[s] = fast[s] > average[s]
        table["trend_fast"] = [fast.get(s, np.nan) for s in symbols]
        table["trend_average"] = [average.get(s, np.nan) for s in symbols]
        table["trend"] = [trend.get(s) for s in symbols]
        unit = "month" if settings.trend_basis == "months" else "session"
        what = "" if settings.trend_fast == 1 else f"{settings.trend_fast}-{unit} average "
        notes.append(
            ", ".join(
                f"{s} {what}{'above' if trend[s] else 'not above'} its "
                f"{settings.trend_length}-{unit} average"
                for s in kept
            )
        )
    failed = [passed[s] is False or trend.get(s) is False for s in kept]

    share = Fraction(0)
    if settings.canary:
        bar_score = score[settings.cash_proxy] if settings.cash_proxy else 0.0
        good = {c: compute_tie_key(score[c]) > compute_tie_key(bar_score) for c in settings.canary}
        bad = sum(not g for g in good.values())
        share = min(Fraction(1), Fraction(bad, settings.canary_breadth))
        table["canary"] = [good.get(s) for s in symbols]
        listed = ", ".join(f"{c} {_pct(score[c])}" for c in settings.canary)
        notes.append(
            f"canary {listed}: {bad} of {len(settings.canary)} not above "
            f"{settings.cash_proxy or '0%'}, {float(share) * 100:.4g}% defensive"
        )
        extra["canary"] = {
            "bad": bad,
            "breadth": settings.canary_breadth,
            "defensive_share": _decimal_text(_cut(share)),
        }

    if settings.weighting == "inverse_volatility":
        sigma = {s: _volatility(s, session, daily, closes[s], settings.volatility_sessions)
                 for s in kept}  # fmt: skip
        table["volatility"] = [sigma.get(s, np.nan) for s in symbols]
    else:
        sigma = {}
    targets = compute_slot_targets(settings, kept, failed, share, sigma)

    if settings.signal_offset:
        extra["signal"] = {
            "offset_sessions": settings.signal_offset,
            "session": session.isoformat(),
            "month_end_session": month_end.isoformat(),
            "execution": "market-on-open orders on the session after the signal session",
        }
        notes.append(f"signal taken {-settings.signal_offset} session(s) before {month_end}")
    return Decision(
        strategy=settings.name,
        session=session,
        symbols=tuple(symbols),
        score_table=table,
        selection=tuple(targets),
        targets=targets,
        hurdle=hurdle,
        explanation=_explain(settings, order, score, passed, hurdle, targets, notes),
        prices_used=prices_used,
        extra=extra,
    )


def compute_decision_series(
    settings: StrategySettings,
    bars: Mapping[str, pd.DataFrame],
    calendar: Any,
    start: date,
    end: date,
) -> list[Decision]:
    """Return ``compute_decision`` on every month-end (signal) session in [start, end] with the
    history.

    Sessions whose longest lookback (or daily rule) starts before a symbol's first bar (or the
    calendar's coverage) are skipped; every other problem raises as in ``compute_decision``.
    """
    return SeriesReader(bars, calendar, end).compute_series(settings, start)


class SeriesReader:
    """Decision series of many settings on the same bars through the same last session (a
    sweep's combinations): the bars prepared once, and a symbol's closes read once for all the
    settings that read the same days on the same sessions (those of the last ``keep`` such
    readings are kept). Every series is ``compute_decision_series``'s: the same reads."""

    def __init__(
        self, bars: Mapping[str, pd.DataFrame], calendar: Any, end: date, keep: int = 8
    ) -> None:
        self._end = _as_date(end)
        self._prepared = _Prepared(bars, self._end)  # once: each decision reads its own cut
        self._calendar, self._keep = calendar, keep
        self._reads: dict[tuple[Any, ...], dict[str, list[dict[date, str] | None]]] = {}

    def compute_series(self, settings: StrategySettings, start: date) -> list[Decision]:
        """Return ``compute_decision_series(settings, bars, calendar, start, end)``."""
        prepared = self._prepared
        symbols = settings.symbols()
        plans = _plans(settings, prepared, self._calendar, _as_date(start), self._end)
        sessions = [at[0] for _, at, _, _ in plans]
        ready = self._read(symbols, sessions, [p[2] for p in plans])
        decisions = []
        for n, (month_end, at, days, daily) in enumerate(plans):
            session = at[0]
            # A session the batch could not read is read alone, symbol by symbol: it raises
            # the error compute_decision raises, for the first session and symbol that has one.
            read = {s: ready[s][n] or _read_prices(s, prepared[s], session, days) for s in symbols}
            decisions.append(_decide_on(settings, session, at, days, daily, read, month_end))
        return decisions

    def _read(
        self, symbols: Sequence[str], sessions: Sequence[date], days: Sequence[list[date]]
    ) -> dict[str, list[dict[date, str] | None]]:
        """``_read_prices_each`` of each symbol on ``sessions``, from the kept readings when an
        earlier series read the same days."""
        key = (tuple(sessions), tuple(map(tuple, days)))
        kept = self._reads.pop(key, None) or {}
        self._reads[key] = kept  # the latest reading last: the oldest is dropped first
        while len(self._reads) > self._keep:
            del self._reads[next(iter(self._reads))]
        missing = [s for s in symbols if s not in kept]
        if missing:
            wanted = _wanted_days(days)
            for s in missing:
                kept[s] = _read_prices_each(self._prepared[s], sessions, days, wanted)
        return {s: kept[s] for s in symbols}


def compute_decision_sessions(
    settings: StrategySettings,
    bars: Mapping[str, pd.DataFrame],
    calendar: Any,
    start: date,
    end: date,
) -> list[date]:
    """Return the sessions ``compute_decision_series`` decides on in [start, end], reading no
    price: each month-end's signal session whose lookbacks and daily rules the calendar and
    every symbol's bars cover. Raises StrategyError for a symbol without bars."""
    start, end = _as_date(start), _as_date(end)
    plans = _plans(settings, _Prepared(bars, end), calendar, start, end)
    return [at[0] for _, at, _, _ in plans]


def _plans(
    settings: StrategySettings, prepared: Mapping[str, AdjustedCloses], calendar: Any,
    start: date, end: date,
) -> list[tuple[date, dict[int, date], list[date], list[date]]]:  # fmt: skip
    """Each decidable month-end in [start, end] with its reading days (``_reading_days``)."""
    first_bar = max(prepared[s].first_date for s in settings.symbols())
    planned = _decidable(settings, calendar.month_end_sessions(start, end), calendar, first_bar)
    known = None
    if planned and settings.sessions_needed():
        # From the first month-end's earliest daily session (a signal session lies at most
        # MAX_SIGNAL_OFFSET sessions, so a few weeks, before its month-end) to the last.
        reach = timedelta(days=2 * settings.sessions_needed() + 14 + 31)
        first = max(calendar.covered_from, planned[0][0] - reach)
        known = _SessionSpan(calendar, first, planned[-1][0])
    plans = []
    for month_end, window in planned:
        try:
            at, days, daily = _reading_days(settings, window, calendar, known)
        except InsufficientHistory:
            continue
        if days[0] >= first_bar and at[0] >= start:
            plans.append((month_end, at, days, daily))
    return plans


def _decidable(
    settings: StrategySettings, sessions: Sequence[date], calendar: Any, first_bar: date
) -> list[tuple[date, list[date]]]:
    """Each month-end session whose window (``_window``) the calendar and the bars cover, with
    that window: the calendar's month-ends are read once, then sliced."""
    if not sessions:
        return []
    longest = settings.months_needed()
    oldest = max(compute_month_back(sessions[0], longest), calendar.covered_from)
    ends = list(calendar.month_end_sessions(oldest, sessions[-1]))
    planned = []
    for session in sessions:
        first = compute_month_back(session, longest)
        if first < calendar.covered_from:
            continue
        window = ends[bisect.bisect_left(ends, first) : bisect.bisect_right(ends, session)]
        if first_bar <= window[0]:
            planned.append((session, window))
    return planned


def _wanted_days(days: Sequence[list[date]]) -> np.ndarray:
    """The days of each session as a line of datetime64[D] (sessions x days). Sessions read
    different numbers of days when a month-end falls among the daily rules' sessions; each
    line is padded with its own last day, which reads what that day reads."""
    if not days:
        return np.empty((0, 0), dtype="datetime64[D]")
    width = max(len(d) for d in days)
    ordinal = {d: d.toordinal() - EPOCH_ORDINAL for d in {d for line in days for d in line}}
    lines = [[ordinal[d] for d in (*line, *[line[-1]] * (width - len(line)))] for line in days]
    return np.array(lines, dtype=np.int64).astype("datetime64[D]")


def _read_prices_each(
    adjusted: AdjustedCloses, sessions: Sequence[date], days: Sequence[list[date]],
    wanted: np.ndarray,
) -> list[dict[date, str] | None]:  # fmt: skip
    """``_read_prices`` of one symbol on each of ``sessions`` (with its ``days``, padded in
    ``wanted``: ``_wanted_days``), every session adjusted in one pass; None for a session that
    ``_read_prices`` would refuse."""
    if not sessions:
        return []
    values = _adjusted_as_of_each(adjusted, sessions, wanted)
    usable = (np.isfinite(values) & (values > 0)).all(axis=1)
    usable &= wanted[:, 0] >= np.datetime64(adjusted.first_date, "D")
    # The windows of consecutive sessions overlap: each distinct close is written once.
    distinct = np.unique(values[usable])
    texts = dict(zip(distinct.tolist(), compute_price_texts(distinct), strict=True))
    return [
        dict(zip(day, map(texts.__getitem__, row[: len(day)]), strict=True)) if ok else None
        for day, row, ok in zip(days, values.tolist(), usable.tolist(), strict=True)
    ]
