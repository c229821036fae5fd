"""A deterministic SYNTHETIC market of ETF-like bars on real exchange sessions, for demos."""

from __future__ import annotations

import enum
import json
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date

import numpy as np
import pandas as pd

from ops_runner.core.errors import DataError
from ops_runner.core.hashing import compute_sha256
from ops_runner.market.bars import BAR_COLUMNS, DATE_UNIT
from ops_runner.market.calendar import MarketCalendar
from ops_runner.market.prices import ImportReport, PriceStore

SAMPLE_SOURCE = "sample"
SAMPLE_LAYOUT = "sample"
SAMPLE_NOTES = "SYNTHETIC sample market, not real prices"
# The generator's name as hashed into every sample manifest: the module's path before the
# package was regrouped (ops_runner/market/sources/sample.py), kept so stored samples stay valid.
GENERATOR = "ops_runner.sources.sample"
# Bump when the generator's output changes for the same arguments: stored samples then refresh.
SAMPLE_VERSION = 1
DEFAULT_SAMPLE_SYMBOLS = (
    "SPY", "VEU", "EFA", "QQQ", "IWM", "EEM", "VNQ", "AGG", "IEF", "TLT", "BIL", "GLD",
)  # fmt: skip
DEFAULT_START = date(2010, 1, 4)
DEFAULT_END = date(2025, 12, 31)
DEFAULT_SEED = 20240501

TRADING_DAYS = 252
# The sample must be clean: no single-day move that data QA would flag as a bad print.
MAX_DAILY_LOG_RETURN = 0.12
_BLOCK = 64  # symbols generated together; bounds the memory of the intermediate arrays


class AssetKind(enum.Enum):
    """What drives an asset: the equity market, interest rates, gold, or the T-bill rate."""

    EQUITY = "equity"
    BOND = "bond"
    GOLD = "gold"
    CASH = "cash"


@dataclass(frozen=True)
class AssetProfile:
    """How one synthetic asset moves. Vols, drift and yield are annual; loadings are unitless."""

    kind: AssetKind
    start_price: float
    growth: float  # expected log total return per year
    market: float = 0.0  # loading on the equity market factor
    international: float = 0.0  # loading on the non-US equity factor
    rates: float = 0.0  # loading on the bond (duration) factor
    gold: float = 0.0  # loading on the gold factor
    idio_vol: float = 0.05
    dividend_yield: float = 0.0
    dividends_per_year: int = 0  # 0, 4 (quarterly) or 12 (monthly)
    volume: float = 5e6  # typical shares per session
    split_on: date | None = None  # first session on or after this date trades post-split
    split_ratio: float = 1.0


_EQ, _BOND = AssetKind.EQUITY, AssetKind.BOND
PROFILES: dict[str, AssetProfile] = {
    "SPY": AssetProfile(_EQ, 113.0, 0.10, market=1.0, idio_vol=0.02, dividend_yield=0.019,
                        dividends_per_year=4, volume=9e7),
    "VEU": AssetProfile(_EQ, 46.0, 0.06, market=0.9, international=1.0, idio_vol=0.04,
                        dividend_yield=0.029, dividends_per_year=4, volume=3e6),
    "EFA": AssetProfile(_EQ, 56.0, 0.06, market=0.9, international=0.9, idio_vol=0.035,
                        dividend_yield=0.027, dividends_per_year=4, volume=2e7),
    "QQQ": AssetProfile(_EQ, 46.0, 0.15, market=1.15, idio_vol=0.07, dividend_yield=0.007,
                        dividends_per_year=4, volume=4e7, split_on=date(2018, 6, 18),
                        split_ratio=2.0),
    "IWM": AssetProfile(_EQ, 63.0, 0.08, market=1.2, idio_vol=0.07, dividend_yield=0.013,
                        dividends_per_year=4, volume=3e7),
    "EEM": AssetProfile(_EQ, 42.0, 0.04, market=1.1, international=1.3, idio_vol=0.08,
                        dividend_yield=0.022, dividends_per_year=4, volume=5e7),
    "VNQ": AssetProfile(_EQ, 45.0, 0.08, market=1.0, idio_vol=0.12, dividend_yield=0.04,
                        dividends_per_year=4, volume=5e6),
    "AGG": AssetProfile(_BOND, 104.0, 0.03, rates=0.45, idio_vol=0.01, dividend_yield=0.026,
                        dividends_per_year=12, volume=5e6),
    "IEF": AssetProfile(_BOND, 90.0, 0.035, rates=0.7, idio_vol=0.01, dividend_yield=0.022,
                        dividends_per_year=12, volume=4e6),
    "TLT": AssetProfile(_BOND, 90.0, 0.04, rates=1.35, idio_vol=0.02, dividend_yield=0.03,
                        dividends_per_year=12, volume=9e6),
    "BIL": AssetProfile(AssetKind.CASH, 45.8, 0.012, idio_vol=0.002, dividend_yield=0.012,
                        dividends_per_year=12, volume=2e6),
    "GLD": AssetProfile(AssetKind.GOLD, 110.0, 0.04, market=0.05, gold=1.0, idio_vol=0.02,
                        volume=1e7),
}  # fmt: skip

# Annual vols of the common factors, and what a stress episode does to them.
_MARKET_VOL, _INTL_VOL, _RATES_VOL, _GOLD_VOL = 0.15, 0.08, 0.10, 0.15
_STRESS_SHOCK = -0.06  # the market's log return on an episode's first session
_STRESS_DAYS = 30
_STRESS_VOL_MULTIPLIER = 2.5
_STRESS_DRIFT = {"market": -0.004, "rates": 0.0008, "gold": 0.0006}  # per session


def compute_generic_profile(symbol: str, seed: int) -> AssetProfile:
    """Return a deterministic profile for a symbol with no hand-written profile (benchmarks)."""
    rng = np.random.default_rng([seed, zlib.crc32(symbol.encode()), 1])
    draw = rng.random()
    if draw < 0.8:
        kind, market, rates, gold = _EQ, rng.uniform(0.6, 1.4), 0.0, 0.0
        yield_, per_year, idio = rng.uniform(0.0, 0.035), 4, rng.uniform(0.05, 0.25)
    elif draw < 0.95:
        kind, market, rates, gold = _BOND, 0.0, rng.uniform(0.2, 1.4), 0.0
        yield_, per_year, idio = rng.uniform(0.01, 0.05), 12, rng.uniform(0.005, 0.03)
    else:
        kind, market, rates, gold = AssetKind.GOLD, 0.05, 0.0, 1.0
        yield_, per_year, idio = 0.0, 0, rng.uniform(0.02, 0.08)
    splits = kind is _EQ and rng.random() < 0.1
    return AssetProfile(
        kind=kind,
        start_price=float(rng.uniform(20.0, 200.0)),
        growth=float(rng.normal(0.06, 0.03)),
        market=float(market),
        international=float(rng.uniform(0.0, 1.0)) if kind is _EQ and rng.random() < 0.3 else 0.0,
        rates=float(rates),
        gold=float(gold),
        idio_vol=float(idio),
        dividend_yield=float(yield_),
        dividends_per_year=per_year if yield_ > 0 else 0,
        volume=float(np.exp(rng.uniform(np.log(1e5), np.log(5e7)))),
        split_on=date.fromordinal(int(rng.integers(date(1990, 1, 1).toordinal(),
                                                   date(2030, 1, 1).toordinal())))
        if splits else None,
        split_ratio=2.0 if splits else 1.0,
    )  # fmt: skip


def _ex_date_masks(sessions: pd.DatetimeIndex) -> dict[int, np.ndarray]:
    """Ex-dates by dividends per year: 4 = first session on/after the 15th of Mar/Jun/Sep/Dec,
    12 = first session of each month."""
    days = sessions.day.to_numpy()
    months = sessions.month.to_numpy()
    new_month = np.concatenate([[False], months[1:] != months[:-1]])
    mid = days >= 15
    first_mid = mid & ~np.concatenate([[False], mid[:-1] & ~new_month[1:]])
    quarterly = first_mid & np.isin(months, (3, 6, 9, 12))
    return {0: np.zeros(len(days), dtype=bool), 4: quarterly, 12: new_month}


def _factors(n: int, seed: int) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Daily log returns of the common factors, and a 0/1 stress indicator per session."""
    rng = np.random.default_rng([seed, 0])
    root = np.sqrt(TRADING_DAYS)
    z = rng.standard_normal((4, n))
    stress = np.zeros(n)
    shock = np.zeros(n)
    episodes = max(1, round(n / TRADING_DAYS / 5))
    segment = n // episodes
    if segment > 3 * _STRESS_DAYS:
        for k in range(episodes):  # a handful of episodes, not a per-row loop
            first = k * segment + int(rng.integers(segment // 5, segment - 2 * _STRESS_DAYS))
            stress[first : first + _STRESS_DAYS] = 1.0
            shock[first] = _STRESS_SHOCK
    vol_scale = 1.0 + (_STRESS_VOL_MULTIPLIER - 1.0) * stress
    factors = {
        "market": _MARKET_VOL / root * vol_scale * z[0] + _STRESS_DRIFT["market"] * stress + shock,
        "international": _INTL_VOL / root * vol_scale * z[1],
        "rates": _RATES_VOL / root * z[2] + _STRESS_DRIFT["rates"] * stress,
        "gold": _GOLD_VOL / root * z[3] + _STRESS_DRIFT["gold"] * stress,
    }
    # Centre each factor so an asset's growth is its own parameter, not the factors' luck.
    for name, values in factors.items():
        factors[name] = values - values.mean()
    return factors, stress


def _block(
    profiles: Sequence[AssetProfile],
    symbols: Sequence[str],
    sessions: pd.DatetimeIndex,
    factors: dict[str, np.ndarray],
    stress: np.ndarray,
    ex_dates: dict[int, np.ndarray],
    seed: int,
) -> dict[str, np.ndarray]:
    """Bars for a block of symbols as (sessions x symbols) arrays."""
    n, k = len(sessions), len(profiles)
    root = np.sqrt(TRADING_DAYS)

    def column(attribute: str) -> np.ndarray:
        return np.array([getattr(p, attribute) for p in profiles], dtype=np.float64)

    noise = np.empty((5, n, k))
    for j, symbol in enumerate(symbols):
        rng = np.random.default_rng([seed, zlib.crc32(symbol.encode()), 2])
        noise[:, :, j] = rng.standard_normal((5, n))
    idio = column("idio_vol") / root
    loadings = {name: column(name) for name in ("market", "international", "rates", "gold")}
    log_return = column("growth") / TRADING_DAYS + idio * noise[0]
    for name, loading in loadings.items():
        log_return += np.outer(factors[name], loading)
    np.clip(log_return, -MAX_DAILY_LOG_RETURN, MAX_DAILY_LOG_RETURN, out=log_return)
    log_return[0] = 0.0
    # An overnight part of the day's move, with its own noise: open differs from last close.
    overnight = 0.3 * log_return + 0.3 * idio * noise[1]

    payout = np.zeros((n, k))
    for j, profile in enumerate(profiles):
        if profile.dividends_per_year:
            payout[ex_dates[profile.dividends_per_year], j] = (
                profile.dividend_yield / profile.dividends_per_year
            )
    payout[0] = 0.0
    split = np.ones((n, k))
    session_days = sessions.to_numpy().astype("datetime64[D]")
    for j, profile in enumerate(profiles):
        if profile.split_on is not None:
            at = int(np.searchsorted(session_days, np.datetime64(profile.split_on, "D")))
            if 0 < at < n:
                split[at, j] = profile.split_ratio
    shares = np.cumprod(split, axis=0)  # post-split shares per original share

    # Level per original share after paying dividends: the raw close times the split factor.
    level = column("start_price") * np.exp(np.cumsum(log_return + np.log1p(-payout), axis=0))
    previous = np.vstack([level[:1], level[:-1]])
    close = level / shares
    dividend = level * payout / (1.0 - payout) / shares
    open_ = previous * np.exp(overnight) * (1.0 - payout) / shares
    daily_vol = np.sqrt(
        idio**2 + sum(loading**2 for loading in loadings.values()) * (_MARKET_VOL / root) ** 2
    )
    close, open_ = np.round(close, 4), np.round(open_, 4)
    high = np.round(np.maximum(open_, close) * np.exp(0.5 * daily_vol * np.abs(noise[2])), 4)
    low = np.round(np.minimum(open_, close) * np.exp(-0.5 * daily_vol * np.abs(noise[3])), 4)
    volume = np.round(
        column("volume") * np.exp(0.35 * noise[4] - 0.06) * (1.0 + 1.5 * stress)[:, None] * shares
    )
    return {
        "open": open_,
        "high": np.maximum(high, np.maximum(open_, close)),
        "low": np.minimum(low, np.minimum(open_, close)),
        "close": close,
        "volume": np.maximum(volume, 1.0),
        "dividend": np.round(dividend, 4),
        "split": split,
    }


def generate_sample_market(
    symbols: Sequence[str] = DEFAULT_SAMPLE_SYMBOLS,
    start: date = DEFAULT_START,
    end: date = DEFAULT_END,
    seed: int = DEFAULT_SEED,
    calendar: MarketCalendar | None = None,
) -> dict[str, pd.DataFrame]:
    """Return SYNTHETIC canonical bars per symbol on the calendar's sessions from start to end.

    The same arguments always give identical frames. Symbols without a hand-written profile get
    a generated one (mostly equity-like). Raises DataError for no or repeated symbols, and the
    calendar's errors for a span outside its coverage.
    """
    symbols = [str(s) for s in symbols]
    if not symbols:
        raise DataError("generate_sample_market: no symbols given")
    if len(set(symbols)) != len(symbols):
        raise DataError(f"generate_sample_market: repeated symbols in {symbols}")
    calendar = MarketCalendar() if calendar is None else calendar
    sessions = pd.DatetimeIndex(calendar.sessions(start, end), name="date").as_unit(DATE_UNIT)
    if len(sessions) < 2:
        raise DataError(f"generate_sample_market: fewer than 2 sessions from {start} to {end}")
    factors, stress = _factors(len(sessions), seed)
    ex_dates = _ex_date_masks(sessions)
    profiles = [PROFILES.get(s) or compute_generic_profile(s, seed) for s in symbols]
    market: dict[str, pd.DataFrame] = {}
    for lo in range(0, len(symbols), _BLOCK):
        names = symbols[lo : lo + _BLOCK]
        arrays = _block(
            profiles[lo : lo + _BLOCK], names, sessions, factors, stress, ex_dates, seed
        )
        for j, symbol in enumerate(names):
            market[symbol] = pd.DataFrame(
                {column: arrays[column][:, j] for column in BAR_COLUMNS}, index=sessions
            )
    return market


def compute_sample_description(
    symbols: Sequence[str], start: date, end: date, seed: int, calendar: MarketCalendar
) -> str:
    """Return the canonical JSON that identifies one sample market (hashed into manifests)."""
    return json.dumps(
        {
            "generator": GENERATOR,
            "version": SAMPLE_VERSION,
            "seed": seed,
            "symbols": list(symbols),
            "start": start.isoformat(),
            "end": end.isoformat(),
            "calendar": calendar.name,
            "extra_closed": sorted(d.isoformat() for d in calendar.extra_closed),
        },
        sort_keys=True,
        separators=(",", ":"),
    )


def write_sample(
    store: PriceStore,
    symbols: Sequence[str] = DEFAULT_SAMPLE_SYMBOLS,
    start: date = DEFAULT_START,
    end: date = DEFAULT_END,
    seed: int = DEFAULT_SEED,
    calendar: MarketCalendar | None = None,
) -> ImportReport:
    """Write the sample market into ``store`` as source ``sample`` (manifests say synthetic).

    Re-running with the same arguments is a no-op reported as unchanged. Returns what was done.
    """
    calendar = MarketCalendar() if calendar is None else calendar
    symbols = [str(s) for s in symbols]
    description = compute_sample_description(symbols, start, end, seed, calendar)
    digest = compute_sha256(description.encode("utf-8"))
    stored = set(store.symbols(SAMPLE_SOURCE))
    if all(
        s in stored and store.read_manifest(SAMPLE_SOURCE, s).get("source_sha256") == digest
        for s in symbols
    ):
        return ImportReport(SAMPLE_SOURCE, SAMPLE_LAYOUT, unchanged=sorted(symbols))
    provenance = {
        "layout": SAMPLE_LAYOUT,
        "source_file": f"generated by {GENERATOR} v{SAMPLE_VERSION} seed {seed}",
        "source_sha256": digest,
        "synthetic": True,
        "notes": SAMPLE_NOTES,
    }
    market = generate_sample_market(symbols, start, end, seed, calendar)
    items = {symbol: (bars, provenance) for symbol, bars in market.items()}
    return store.write_many(SAMPLE_SOURCE, items, layout=SAMPLE_LAYOUT)
