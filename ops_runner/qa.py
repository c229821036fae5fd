"""Data QA: the runbook's DEGRADED_DATA triggers as vectorised checks that return findings."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import date
from enum import StrEnum
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from ops_runner.errors import CalendarError, DataError
from ops_runner.panel import (
    BAR_COLUMNS,
    Bars,
    Panel,
    build_panel,
    day_number,
    first_days,
    log_index,
    split_adjusted_close,
    to_date,
    total_return,
)

if TYPE_CHECKING:
    from ops_runner.calendar import MarketCalendar
    from ops_runner.config import Config
    from ops_runner.data import PriceStore

logger = logging.getLogger(__name__)

PRICE_COLUMNS = ("open", "high", "low", "close")
# Ratios a vendor may leave unrecorded: a raw close falling to 1/2 of itself is a 2:1 split.
_COMMON_SPLITS = np.array([2.0, 3.0, 4.0, 5.0, 10.0, 1.5, 0.5, 1 / 3, 0.25, 0.2, 0.1])


class Severity(StrEnum):
    """How a finding weighs on the decision: any BLOCKING finding means DEGRADED_DATA."""

    BLOCKING = "blocking"
    WARNING = "warning"
    INFO = "info"


class Check(StrEnum):
    """The runbook's data checks."""

    FRESHNESS = "freshness"
    COMPLETENESS = "completeness"
    SANITY = "sanity"
    JUMP = "jump"
    CORPORATE_ACTION = "corporate_action"
    CROSS_PROVIDER = "cross_provider"
    PROVENANCE = "provenance"


_SEVERITY_RANK = {Severity.BLOCKING: 0, Severity.WARNING: 1, Severity.INFO: 2}


@dataclass(frozen=True)
class Finding:
    """One QA result: what is wrong with which symbol on which date, and how much it matters."""

    symbol: str
    date: date | None
    check: Check
    severity: Severity
    detail: str

    @property
    def finding_id(self) -> str:
        """A short stable hash of (symbol, date, check, detail) that the ledger can cite."""
        day = self.date.isoformat() if self.date is not None else ""
        text = f"{self.symbol}|{day}|{self.check.value}|{self.detail}"
        return hashlib.sha256(text.encode()).hexdigest()[:12]


@dataclass(frozen=True)
class QASettings:
    """Thresholds of the checks, sensible for liquid US ETFs; config.yaml's `qa:` sets them."""

    # Findings dated in the last N sessions up to as_of are BLOCKING (the decision's lookback
    # reads them); older ones are WARNING.
    window_sessions: int = 300
    jump_band: float = 0.15  # |daily total return| beyond this is a jump
    # A jump is market-wide (genuine: Oct 2008, Mar 2020) when at least this share of the OTHER
    # symbols with a return that day moved the same way by at least half the band, and at least
    # `market_min_others` other symbols had a return that day.
    market_move_share: float = 0.5
    market_min_others: int = 2
    cross_close_tolerance: float = 0.01  # relative, split-adjusted closes
    cross_return_tolerance: float = 0.02  # absolute, trailing total return
    return_lookback_sessions: int = 252
    ohlc_tolerance: float = 1e-6  # relative; absorbs only the float representation of prices
    dividend_max_share: float = 0.2  # of the previous close
    adjusted_tolerance: float = 0.001  # relative, on a step of vendor-adjusted / raw close
    # Per symbol and kind of fault: list the latest N findings, summarise the older ones in one.
    max_findings_per_kind: int = 25


DEFAULT_SETTINGS = QASettings()


# -- context and emission of findings -----------------------------------------------------------


@dataclass(frozen=True)
class _Context:
    symbols: tuple[str, ...]
    sessions: np.ndarray  # session day numbers up to the as_of session
    as_of: int  # the as_of session's day number
    window_start: int  # first session whose findings are BLOCKING
    settings: QASettings

    def level(self, day: int) -> Severity:
        """The window rule: BLOCKING inside the decision's window, WARNING before it."""
        return Severity.BLOCKING if day >= self.window_start else Severity.WARNING

    def emit(
        self,
        check: Check,
        what: str,
        codes: np.ndarray,
        days: np.ndarray,
        detail: Callable[[int], str],
        rows: np.ndarray | None = None,
        severity_days: np.ndarray | None = None,
        severity: Severity | None = None,
    ) -> list[Finding]:
        """Findings for flagged rows: per symbol the latest few listed, older ones summarised.

        ``detail(rows[k])`` (rows default to 0..n-1) words finding k. Severity follows the window
        rule on ``severity_days`` (default ``days``) unless ``severity`` is given.
        """
        if codes.size == 0:
            return []
        rows = np.arange(codes.size) if rows is None else rows
        sev_days = days if severity_days is None else severity_days
        order = np.lexsort((days, codes))
        codes, days, rows, sev_days = codes[order], days[order], rows[order], sev_days[order]
        starts = np.flatnonzero(np.r_[True, codes[1:] != codes[:-1]])
        cap = max(self.settings.max_findings_per_kind, 1)
        out = []
        for start, end in zip(starts, np.r_[starts[1:], codes.size], strict=True):
            symbol = self.symbols[codes[start]]
            listed = max(start, end - cap)
            if listed > start:
                text = (
                    f"{listed - start} more {what} findings from {to_date(days[start])} "
                    f"to {to_date(days[listed - 1])} not listed"
                )
                level = severity or self.level(int(sev_days[start:listed].max()))
                out.append(Finding(symbol, to_date(days[listed - 1]), check, level, text))
            for k in range(listed, end):
                level = severity or self.level(int(sev_days[k]))
                out.append(Finding(symbol, to_date(days[k]), check, level, detail(int(rows[k]))))
        return out


def _prepare(
    bars: Bars,
    sessions: pd.DatetimeIndex,
    as_of: date,
    settings: QASettings,
    vendor_adjusted: Mapping[str, pd.Series] | None = None,
) -> tuple[Panel, _Context]:
    days = np.unique(np.asarray(sessions.values).astype("datetime64[D]").astype(np.int64))
    days = days[days <= day_number(as_of)]
    if days.size == 0:
        raise CalendarError(
            f"no session on or before as_of {as_of} among the sessions given; "
            "pass the calendar's sessions through as_of"
        )
    first = max(days.size - max(settings.window_sessions, 1), 0)
    symbols = tuple(sorted(bars))
    ctx = _Context(symbols, days, int(days[-1]), int(days[first]), settings)
    return build_panel(bars, symbols, ctx.as_of, vendor_adjusted), ctx


# -- the checks, on a panel ---------------------------------------------------------------------


def _freshness(panel: Panel, ctx: _Context) -> list[Finding]:
    sizes = np.diff(panel.bounds)
    last = np.full(sizes.size, -1, dtype=np.int64)
    last[sizes > 0] = panel.day[panel.bounds[1:][sizes > 0] - 1]
    stale = np.flatnonzero(last != ctx.as_of)
    behind = ctx.sessions.size - np.searchsorted(ctx.sessions, last[stale], side="right")
    as_of, out = to_date(ctx.as_of), []
    for code, n in zip(stale, behind, strict=True):
        text = f"no bars on or before the as_of session {as_of}"
        if sizes[code]:
            text = (
                f"no bar for the as_of session {as_of}: last bar {to_date(last[code])}, "
                f"{n} session{'s' if n != 1 else ''} behind"
            )
        out.append(Finding(panel.symbols[code], as_of, Check.FRESHNESS, Severity.BLOCKING, text))
    return out


def _completeness(panel: Panel, ctx: _Context) -> list[Finding]:
    out = []
    for what, (codes, days), words in (
        ("unsorted", panel.unsorted, "dates not sorted: {} is dated before the bar above it"),
        ("duplicate-date", panel.duplicates, "duplicate bar for {}; the first one is used"),
    ):
        out += ctx.emit(
            Check.COMPLETENESS, what, codes, days,
            lambda k, days=days, words=words: words.format(to_date(days[k])),
        )  # fmt: skip
    first = int(ctx.sessions[0])
    lookup = np.full(ctx.as_of - first + 1, -1, dtype=np.int64)
    lookup[ctx.sessions - first] = np.arange(ctx.sessions.size)
    judged = panel.day >= first  # bars before the sessions given cannot be judged
    pos = np.full(panel.day.size, -1, dtype=np.int64)
    pos[judged] = lookup[panel.day[judged] - first]
    odd, day = np.flatnonzero(judged & (pos < 0)), panel.day
    out += ctx.emit(
        Check.COMPLETENESS, "non-session", panel.code[odd], day[odd],
        lambda r: f"bar on {to_date(day[r]):%a %Y-%m-%d}, which is not a session", rows=odd,
    )  # fmt: skip
    codes, spos = panel.code[pos >= 0], pos[pos >= 0]
    gap = np.flatnonzero((codes[1:] == codes[:-1]) & (np.diff(spos) > 1))
    lost_first, lost_last = ctx.sessions[spos[gap] + 1], ctx.sessions[spos[gap + 1] - 1]
    lost = spos[gap + 1] - spos[gap] - 1

    def gap_text(k: int) -> str:
        if lost[k] == 1:
            return f"session {to_date(lost_first[k])} missing"
        return f"{lost[k]} sessions missing: {to_date(lost_first[k])} to {to_date(lost_last[k])}"

    return out + ctx.emit(
        Check.COMPLETENESS, "missing-session", codes[gap], lost_first, gap_text,
        severity_days=lost_last,
    )  # fmt: skip


def _sanity(panel: Panel, ctx: _Context) -> list[Finding]:
    col, day, code = panel.col, panel.day, panel.code
    nan = np.logical_or.reduce([np.isnan(col[name]) for name in BAR_COLUMNS])
    nonpositive = np.logical_or.reduce([col[name] <= 0 for name in PRICE_COLUMNS])
    o, h, low, c = (col[name] for name in PRICE_COLUMNS)
    slack = 1 + ctx.settings.ohlc_tolerance
    crossed = (low > np.fmin(o, c) * slack) | (np.fmax(o, c) > h * slack) | (low > h)
    faults = [
        ("missing-value", nan, lambda r: "missing value in "
         + ", ".join(n for n in BAR_COLUMNS if np.isnan(col[n][r]))),
        ("non-positive-price", nonpositive, lambda r: "zero or negative price: " + _ohlc(col, r)),
        ("ohlc", crossed & ~nonpositive & ~nan,
         lambda r: "OHLC inconsistent (need low <= open, close <= high): " + _ohlc(col, r)),
        ("volume", col["volume"] <= 0,
         lambda r: f"volume {col['volume'][r]:g} on a bar where the symbol traded"),
    ]  # fmt: skip
    out = []
    for what, mask, text in faults:
        rows = np.flatnonzero(mask)
        out += ctx.emit(Check.SANITY, what, code[rows], day[rows], text, rows=rows)
    return out


def _ohlc(col: dict[str, np.ndarray], row: int) -> str:
    return ", ".join(f"{name} {col[name][row]:.4f}" for name in PRICE_COLUMNS)


def _jumps(panel: Panel, ctx: _Context, secondary: Panel | None) -> list[Finding]:
    """Total-return jumps beyond the band that are not market-wide. Splits and dividends are in
    the total return, so a recorded split explains itself and an unrecorded one does not."""
    band, settings = ctx.settings.jump_band, ctx.settings
    ret = total_return(panel)
    valid = np.isfinite(ret)
    slot = panel.day - panel.span[0]
    span = int(slot.max()) + 1 if slot.size else 0
    n_valid = np.bincount(slot[valid], minlength=span)
    n_up = np.bincount(slot[valid & (ret >= band / 2)], minlength=span)
    n_down = np.bincount(slot[valid & (ret <= -band / 2)], minlength=span)
    rows = np.flatnonzero(valid & (np.abs(np.nan_to_num(ret)) > band))
    others = n_valid[slot[rows]] - 1  # the jumping symbol is not its own market
    same = np.where(ret[rows] > 0, n_up[slot[rows]], n_down[slot[rows]]) - 1
    market = (others >= settings.market_min_others) & (
        same >= settings.market_move_share * np.maximum(others, 1)
    )
    rows, others, same = rows[~market], others[~market], same[~market]
    confirmed = _confirmed(panel, rows, ret, secondary, settings.cross_return_tolerance)
    close, split, dividend = panel.col["close"], panel.col["split"], panel.col["dividend"]
    prev = panel.previous(close)
    place = {int(r): k for k, r in enumerate(rows)}

    def text(r: int) -> str:
        k, raw = place[r], close[r] / prev[r]
        words = (
            f"total return {ret[r]:+.1%} beyond the {band:.0%} band (raw close {prev[r]:.4f} "
            f"-> {close[r]:.4f}, split {split[r]:g}, dividend {dividend[r]:g}); not market-wide "
            f"({same[k]} of {others[k]} other symbols moved that way by {band / 2:.1%})"
        )
        ratio = _COMMON_SPLITS[np.argmin(np.abs(_COMMON_SPLITS * raw - 1))]
        if split[r] == 1 and abs(ratio * raw - 1) < 0.05:
            words += f"; looks like an unrecorded split of ratio {ratio:g}"
        elif split[r] != 1 and abs(raw - 1) < band:
            words += "; a split is recorded but the raw close did not move: pre-adjusted prices?"
        if confirmed[k]:
            words += "; the secondary provider shows the same move"
        return words

    alone, seen = rows[~confirmed], rows[confirmed]
    out = ctx.emit(Check.JUMP, "jump", panel.code[alone], panel.day[alone], text, rows=alone)
    return out + ctx.emit(
        Check.JUMP, "confirmed-jump", panel.code[seen], panel.day[seen], text, rows=seen,
        severity=Severity.INFO,
    )  # fmt: skip


def _confirmed(
    panel: Panel, rows: np.ndarray, ret: np.ndarray, secondary: Panel | None, tol: float
) -> np.ndarray:
    """Whether the secondary shows the same move between the same two dates: a genuine move."""
    confirmed = np.zeros(rows.size, dtype=bool)
    if secondary is None or not rows.size:
        return confirmed
    index = log_index(secondary, total_return(secondary))
    prev_day = np.nan_to_num(panel.previous(panel.day.astype(np.float64))[rows], nan=-1)
    now = secondary.locate(panel.code[rows], panel.day[rows])
    before = secondary.locate(panel.code[rows], prev_day.astype(np.int64))
    ok = (now >= 0) & (before >= 0)
    moved = np.expm1(index[now[ok]] - index[before[ok]])
    confirmed[ok] = np.abs(moved - ret[rows[ok]]) <= tol
    return confirmed


def _corporate_actions(panel: Panel, ctx: _Context) -> list[Finding]:
    col, day, code = panel.col, panel.day, panel.code
    split, dividend, close = col["split"], col["dividend"], col["close"]
    prev = panel.previous(close)
    base = np.where(np.isfinite(prev), prev, close)
    with np.errstate(divide="ignore", invalid="ignore"):
        odd_split = np.isfinite(split) & (split != 1)
        odd_split[odd_split] = ~_plausible_split(split[odd_split])
        odd_dividend = (dividend < 0) | (dividend >= ctx.settings.dividend_max_share * base)
    faults = [
        ("split-ratio", odd_split,
         lambda r: f"split ratio {split[r]:g} is not a plausible split (like 2, 3, 1.5, 0.5)"),
        ("dividend", odd_dividend & (dividend != 0),
         lambda r: f"dividend {dividend[r]:g} against a previous close of {base[r]:.4f} "
         f"({dividend[r] / base[r]:.1%}) is implausible"),
    ]  # fmt: skip
    if panel.adjusted is not None:
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = panel.adjusted / close
            step = panel.previous(ratio) / ratio
            # Vendors scale earlier prices by close/(close + D) (Alpha Vantage) or 1 - D/prev
            # (Yahoo, CRSP); a step matching either is explained.
            by_close = close / (close + dividend) / split
            by_prev = (1 - dividend * split / prev) / split
            gap = np.fmin(np.abs(step / by_close - 1), np.abs(step / by_prev - 1))
        faults.append((
            "adjusted-series", np.isfinite(gap) & (gap > ctx.settings.adjusted_tolerance),
            lambda r: f"vendor adjusted close disagrees with raw close and actions: "
            f"adjusted/raw stepped by {step[r]:.5f} where dividend {dividend[r]:g} and split "
            f"{split[r]:g} imply {by_close[r]:.5f}",
        ))  # fmt: skip
    out = []
    for what, mask, text in faults:
        rows = np.flatnonzero(mask)
        out += ctx.emit(Check.CORPORATE_ACTION, what, code[rows], day[rows], text, rows=rows)
    return out


def _plausible_split(ratio: np.ndarray) -> np.ndarray:
    """Whether each ratio is a simple fraction p/q (q <= 4) between 1:100 and 100:1."""
    big = np.where(ratio >= 1, ratio, 1 / ratio)
    simple = np.logical_or.reduce(
        [np.abs(big * q - np.round(big * q)) <= 1e-3 * big * q for q in (1, 2, 3, 4)]
    )
    return simple & (ratio > 0) & (big <= 100)


def _cross_provider(primary: Panel, secondary: Panel, ctx: _Context) -> list[Finding]:
    tol, out = ctx.settings.cross_close_tolerance, _cross_returns(primary, secondary, ctx)
    p_close, s_close = split_adjusted_close(primary), split_adjusted_close(secondary)
    match = secondary.locate(primary.code, primary.day)
    with np.errstate(divide="ignore", invalid="ignore"):
        apart = np.abs(p_close / s_close[np.maximum(match, 0)] - 1)
    bad = np.flatnonzero((match >= 0) & np.isfinite(apart) & (apart > tol))
    out += ctx.emit(
        Check.CROSS_PROVIDER, "close", primary.code[bad], primary.day[bad],
        lambda r: f"split-adjusted close: primary {p_close[r]:.4f} vs secondary "
        f"{s_close[match[r]]:.4f} ({apart[r]:.2%} apart > {tol:.2%})", rows=bad,
    )  # fmt: skip
    back = primary.locate(secondary.code, secondary.day)
    # Dates are compared where both have begun: a provider's shorter history is not a gap.
    begun = np.maximum(first_days(primary), first_days(secondary))
    for name, panel, other, absent in (
        ("primary", primary, "secondary", match < 0),
        ("secondary", secondary, "primary", back < 0),
    ):
        rows = np.flatnonzero((panel.day >= begun[panel.code]) & absent)
        out += ctx.emit(
            Check.CROSS_PROVIDER, f"date-only-in-{name}", panel.code[rows], panel.day[rows],
            lambda r, name=name, other=other: f"bar in the {name}, missing in the {other}",
            rows=rows,
        )  # fmt: skip
    return out


def _cross_returns(primary: Panel, secondary: Panel, ctx: _Context) -> list[Finding]:
    """Trailing total returns at as_of and each month end in the window, compared where both
    providers have bars on the end session and on the session ``lookback`` before it."""
    lookback, tol = ctx.settings.return_lookback_sessions, ctx.settings.cross_return_tolerance
    months = ctx.sessions.astype("datetime64[D]").astype("datetime64[M]")
    month_end = np.r_[months[1:] != months[:-1], True]  # the as_of session counts as an end
    position = np.arange(ctx.sessions.size)
    ends = np.flatnonzero(month_end & (ctx.sessions >= ctx.window_start) & (position >= lookback))
    n = len(primary.symbols)
    codes = np.repeat(np.arange(n), ends.size)
    end_day, start_day = np.tile(ctx.sessions[ends], n), np.tile(ctx.sessions[ends - lookback], n)
    found = [p.locate(codes, d) for p in (primary, secondary) for d in (end_day, start_day)]
    ok = np.all(np.stack(found) >= 0, axis=0) if found else np.zeros(0, dtype=bool)
    ret_p, ret_s = (
        np.expm1(index[end[ok]] - index[start[ok]])
        for panel, end, start in ((primary, *found[:2]), (secondary, *found[2:]))
        for index in [log_index(panel, total_return(panel))]  # one panel's index at a time
    )
    bad = np.flatnonzero(np.abs(ret_p - ret_s) > tol)
    codes, end_day, start_day = codes[ok], end_day[ok], start_day[ok]
    return ctx.emit(
        Check.CROSS_PROVIDER, "total-return", codes[bad], end_day[bad],
        lambda k: f"{lookback}-session total return {to_date(start_day[k])} to "
        f"{to_date(end_day[k])}: primary {ret_p[k]:+.2%} vs secondary {ret_s[k]:+.2%} "
        f"({abs(ret_p[k] - ret_s[k]) * 100:.2f} points apart > {tol * 100:.2f})", rows=bad,
    )  # fmt: skip


# -- the public checks --------------------------------------------------------------------------


def _secondary(secondary: Bars, ctx: _Context) -> tuple[Panel, list[Finding]]:
    """The secondary's bars for the primary's symbols; a symbol it lacks is noted INFO."""
    notes = [
        Finding(s, None, Check.CROSS_PROVIDER, Severity.INFO, "no secondary bars: not compared")
        for s in ctx.symbols
        if s not in secondary
    ]
    # Only what total returns and split-adjusted closes need: a secondary serves comparisons.
    columns = ("close", "dividend", "split")
    return build_panel(secondary, ctx.symbols, ctx.as_of, None, columns), notes


def check_universe(
    bars_by_symbol: Bars,
    sessions: pd.DatetimeIndex,
    as_of: date,
    settings: QASettings = DEFAULT_SETTINGS,
    secondary: Bars | None = None,
    vendor_adjusted: Mapping[str, pd.Series] | None = None,
) -> list[Finding]:
    """Return the findings of every pure check on the universe's bars dated <= as_of.

    ``sessions`` are the calendar's sessions over the bars through as_of; the as_of session is
    the last of them on or before ``as_of``. ``vendor_adjusted`` (symbol -> the vendor's adjusted
    close) feeds the corporate-action check. Findings come blocking first. Raises DataError for a
    frame not in the store's shape, CalendarError when no session is on or before as_of.
    """
    panel, ctx = _prepare(bars_by_symbol, sessions, as_of, settings, vendor_adjusted)
    second, notes = (None, []) if secondary is None else _secondary(secondary, ctx)
    findings = _freshness(panel, ctx) + _completeness(panel, ctx) + _sanity(panel, ctx)
    findings += _jumps(panel, ctx, second) + _corporate_actions(panel, ctx)
    if second is not None:
        findings += notes + _cross_provider(panel, second, ctx)
    logger.info(
        "data QA as of %s: %d symbols, %d bars, %d findings, %d blocking",
        to_date(ctx.as_of), len(ctx.symbols), panel.day.size, len(findings),
        sum(f.severity is Severity.BLOCKING for f in findings),
    )  # fmt: skip
    return sort_findings(findings)


def check_freshness(
    bars_by_symbol: Bars, sessions: pd.DatetimeIndex, as_of: date,
    settings: QASettings = DEFAULT_SETTINGS,
) -> list[Finding]:  # fmt: skip
    """Return a BLOCKING finding for each symbol without a bar for the as_of session."""
    return sort_findings(_freshness(*_prepare(bars_by_symbol, sessions, as_of, settings)))


def check_completeness(
    bars_by_symbol: Bars, sessions: pd.DatetimeIndex, as_of: date,
    settings: QASettings = DEFAULT_SETTINGS,
) -> list[Finding]:  # fmt: skip
    """Return findings for unsorted or duplicate dates, bars on non-sessions and sessions missing
    between a symbol's first and last bar (a stale tail is the freshness check's finding)."""
    return sort_findings(_completeness(*_prepare(bars_by_symbol, sessions, as_of, settings)))


def check_sanity(
    bars_by_symbol: Bars, sessions: pd.DatetimeIndex, as_of: date,
    settings: QASettings = DEFAULT_SETTINGS,
) -> list[Finding]:  # fmt: skip
    """Return findings for NaN values, prices <= 0, OHLC out of order and volume <= 0."""
    return sort_findings(_sanity(*_prepare(bars_by_symbol, sessions, as_of, settings)))


def check_jumps(
    bars_by_symbol: Bars, sessions: pd.DatetimeIndex, as_of: date,
    settings: QASettings = DEFAULT_SETTINGS, secondary: Bars | None = None,
) -> list[Finding]:  # fmt: skip
    """Return findings for daily total returns beyond the band that are not market-wide; a jump
    the secondary shows too between the same dates is INFO (a genuine move)."""
    panel, ctx = _prepare(bars_by_symbol, sessions, as_of, settings)
    return sort_findings(
        _jumps(panel, ctx, None if secondary is None else _secondary(secondary, ctx)[0])
    )


def check_corporate_actions(
    bars_by_symbol: Bars, sessions: pd.DatetimeIndex, as_of: date,
    settings: QASettings = DEFAULT_SETTINGS,
    vendor_adjusted: Mapping[str, pd.Series] | None = None,
) -> list[Finding]:  # fmt: skip
    """Return findings for implausible split ratios and dividends and, given the vendor's
    adjusted closes, for steps of adjusted/raw close that no dividend or split explains."""
    return sort_findings(
        _corporate_actions(*_prepare(bars_by_symbol, sessions, as_of, settings, vendor_adjusted))
    )


def check_cross_provider(
    bars_by_symbol: Bars, secondary: Bars, sessions: pd.DatetimeIndex, as_of: date,
    settings: QASettings = DEFAULT_SETTINGS,
) -> list[Finding]:  # fmt: skip
    """Return findings where the providers disagree: split-adjusted closes, trailing total
    returns at as_of and each month end in the window, and dates only one of them has."""
    panel, ctx = _prepare(bars_by_symbol, sessions, as_of, settings)
    second, notes = _secondary(secondary, ctx)
    return sort_findings(notes + _cross_provider(panel, second, ctx))


def check_provenance(store: PriceStore, source: str) -> list[Finding]:
    """Return a BLOCKING finding for each stored file that no longer matches its manifest."""
    return [
        Finding(symbol, None, Check.PROVENANCE, Severity.BLOCKING, f"{source}: {problem}")
        for symbol, problem in store.check_provenance(source)
    ]


def check_store(
    store: PriceStore,
    calendar: MarketCalendar,
    symbols: Iterable[str],
    as_of: date,
    primary: str,
    secondary: str | None = None,
    settings: QASettings = DEFAULT_SETTINGS,
) -> list[Finding]:
    """Return the findings of every check on the stored universe as of ``as_of``.

    Bars after as_of are dropped as they load. A symbol the primary lacks is a BLOCKING
    freshness finding (one the secondary lacks is INFO), not an exception. Raises
    CalendarCoverageError when as_of is outside the calendar's coverage.
    """
    session, symbols = calendar.session_on_or_before(as_of), tuple(symbols)
    findings: list[Finding] = []
    loaded: dict[str, dict[str, pd.DataFrame]] = {}
    for source in dict.fromkeys((primary, secondary or primary)):  # each source once
        loaded[source] = {}
        for symbol in symbols:
            try:
                frame = store.load_bars(source, symbol)
            except DataError as error:
                if source == primary:  # the secondary's gaps are cross-provider INFO notes
                    text = f"no stored data in {source}: {error}"
                    findings.append(
                        Finding(symbol, session, Check.FRESHNESS, Severity.BLOCKING, text)
                    )
                continue
            loaded[source][symbol] = frame.loc[frame.index <= pd.Timestamp(session)]
        findings += check_provenance(store, source)
    second = None if secondary is None else loaded[secondary]
    firsts = [f.index[0].date() for s in loaded.values() for f in s.values() if len(f)]
    start = max(min([session, *firsts]), calendar.covered_from)
    sessions = calendar.sessions(start, session)
    findings += check_universe(loaded[primary], sessions, session, settings, second)
    return sort_findings(findings)


@dataclass(frozen=True)
class QAReport:
    """One QA run: the session checked, the sources and universe it read, and what it found."""

    as_of: date
    primary: str
    secondary: str | None
    symbols: tuple[str, ...]
    findings: tuple[Finding, ...]

    @property
    def blocking(self) -> bool:
        """Whether any finding blocks the decision (DEGRADED_DATA)."""
        return has_blocking(self.findings)

    def summary(self) -> str:
        """Return one line: the verdict and the findings counted by severity."""
        counts = ", ".join(f"{sum(f.severity is s for f in self.findings)} {s}" for s in Severity)
        if self.blocking:
            verdict = "DEGRADED_DATA (no decision)"
        else:
            verdict = "clean" if not self.findings else "usable, nothing blocking"
        against = f"vs {self.secondary}" if self.secondary else "(no secondary)"
        return (
            f"{verdict}: {len(self.findings)} findings ({counts}) for {len(self.symbols)} "
            f"symbols as of {self.as_of}, {self.primary} {against}"
        )

    def to_dict(self) -> dict[str, Any]:
        """Return the report as JSON-ready values (dates as ISO strings)."""
        records = findings_frame(self.findings).astype({"date": str}).to_dict("records")
        return {
            "as_of": self.as_of.isoformat(), "primary": self.primary,
            "secondary": self.secondary, "symbols": list(self.symbols),
            "blocking": self.blocking, "summary": self.summary(), "findings": records,
        }  # fmt: skip


def run_qa(cfg: Config, as_of: date | str) -> QAReport:
    """Return the QA report of the workbook's universe and sources for the session ``as_of``.

    ``as_of`` (a date or YYYY-MM-DD) becomes the session on or before it. Raises CalendarError
    for a bad date or one outside the calendar's coverage.
    """
    calendar = cfg.calendar()
    session = calendar.session_on_or_before(as_of)
    primary, secondary = cfg.values["data"]["primary"], cfg.values["data"]["secondary"]
    symbols = tuple(cfg.universe_symbols)
    found = check_store(
        cfg.store(), calendar, symbols, session, primary, secondary, cfg.qa_settings()
    )
    return QAReport(session, primary, secondary, symbols, tuple(found))


def sort_findings(findings: Iterable[Finding]) -> list[Finding]:
    """Return the findings blocking first, then by symbol, date, check and detail."""
    return sorted(
        findings,
        key=lambda f: (_SEVERITY_RANK[f.severity], f.symbol, f.date or date.min, f.check, f.detail),
    )


def findings_frame(findings: Iterable[Finding]) -> pd.DataFrame:
    """Return the findings as a table (symbol, date, check, severity, detail, finding_id)."""
    columns = ["symbol", "date", "check", "severity", "detail", "finding_id"]
    rows = [
        (f.symbol, f.date, f.check.value, f.severity.value, f.detail, f.finding_id)
        for f in sort_findings(findings)
    ]
    return pd.DataFrame(rows, columns=columns)


def has_blocking(findings: Iterable[Finding]) -> bool:
    """Return whether any finding is BLOCKING (the runbook's DEGRADED_DATA)."""
    return any(f.severity is Severity.BLOCKING for f in findings)
