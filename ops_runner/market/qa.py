"""Data QA: the runbook's DEGRADED_DATA triggers as vectorised checks that return findings."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date
from enum import StrEnum
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from ops_runner.core.errors import CalendarError, ConfigError, DataError
from ops_runner.core.hashing import compute_sha256
from ops_runner.market.asset_classes import EQUITY, compute_asset_class
from ops_runner.market.calendar import open_calendar
from ops_runner.market.panel import (
    BAR_COLUMNS,
    Bars,
    Panel,
    build_panel,
    day_number,
    first_days,
    last_days,
    log_index,
    split_adjusted_close,
    to_date,
    total_return,
)
from ops_runner.market.prices import open_store

if TYPE_CHECKING:
    from ops_runner.market.calendar import MarketCalendar
    from ops_runner.market.prices import PriceStore
    from ops_runner.workbook.config import Config

logger = logging.getLogger(__name__)

PRICE_COLUMNS = ("open", "high", "low", "close")
QA_BLOCK = 32  # symbols checked together by check_universe (their arrays at once)
_NONE = (np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int64))
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
        return compute_sha256(text)[:12]


@dataclass(frozen=True)
class QASettings:
    """Thresholds of the checks, sensible for liquid US ETFs; config.yaml's `qa:` sets them."""

    # Findings dated in the last N sessions up to as_of are BLOCKING (the decision's lookback
    # reads them); older ones are WARNING.
    window_sessions: int = 300
    jump_band: float = 0.15  # |daily total return| beyond this is a jump
    # A jump is market-wide (genuine: Oct 2008, Mar 2020) when at least this share of its PEERS
    # moved the same way that session by at least `market_move_ratio` of its own move, and at
    # least `market_min_others` peers had a return that session. Peers are the other symbols of
    # its asset class (asset_classes.py, overridden by `asset_classes`) and the class's
    # reference symbol (`market_references`, read from the primary even outside the universe):
    # bonds do not move with an equity crash, so they are never an equity's peers.
    market_move_share: float = 0.5
    market_move_ratio: float = 0.2
    market_min_others: int = 1
    asset_classes: Mapping[str, str] = field(default_factory=dict)  # symbol -> class
    market_references: Mapping[str, str] = field(default_factory=lambda: {EQUITY: "SPY"})
    # Closes are compared split-invariantly: each provider's close relative to its own closes on
    # the common sessions around it, so a split one provider folds into its prices (or that the
    # primary has not seen yet, as of a past date) cancels out. Relative.
    cross_close_tolerance: float = 0.01
    cross_return_tolerance: float = 0.02  # absolute, trailing total return
    # Distributions are compared event by event, as a share of the previous close (a yield is
    # split-invariant): amounts further apart than this, or one provider's distribution the
    # other lacks, are findings; ex-dates more than `cross_dividend_sessions` apart too.
    cross_dividend_tolerance: float = 0.0002
    cross_dividend_sessions: int = 0
    return_lookback_sessions: int = 252
    ohlc_tolerance: float = 1e-6  # relative; absorbs only the float representation of prices
    dividend_max_share: float = 0.2  # of the previous close
    adjusted_tolerance: float = 0.001  # relative, on a step of vendor-adjusted / raw close
    # Per symbol and kind of fault: list the latest N findings, summarise the older ones in one.
    max_findings_per_kind: int = 25

    @classmethod
    def from_config(cls, values: Mapping[str, Any]) -> QASettings:
        """Return the thresholds of checked config values' ``qa`` section."""
        return cls(**values["qa"])

    def __post_init__(self) -> None:
        for key, table, words in (
            ("qa.asset_classes", self.asset_classes, "SYMBOL: class, e.g. {VNQ: equity}"),
            ("qa.market_references", self.market_references, "class: SYMBOL, e.g. {equity: SPY}"),
        ):
            if not isinstance(table, Mapping):
                raise ConfigError(f"config error: {key}: expected a mapping of {words}", key)
            for name, value in table.items():
                if not (isinstance(name, str) and isinstance(value, str) and name and value):
                    raise ConfigError(
                        f"config error: {key}: {name!r}: {value!r} is not {words}", key
                    )

    def asset_class(self, symbol: str) -> str:
        """Return the asset class ``symbol`` is judged in (its peers share it)."""
        return compute_asset_class(symbol, self.asset_classes)


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
    ctx = _context(tuple(sorted(bars)), sessions, as_of, settings)
    return build_panel(bars, ctx.symbols, ctx.as_of, vendor_adjusted), ctx


def _context(
    symbols: tuple[str, ...], sessions: pd.DatetimeIndex, as_of: date, settings: QASettings
) -> _Context:
    days = np.unique(np.asarray(sessions.values).astype("datetime64[D]").astype(np.int64))
    days = days[days <= day_number(as_of)]
    if days.size == 0:
        raise CalendarError(
            f"no session on or before as_of {as_of} among the sessions given; "
            "pass the calendar's sessions through as_of"
        )
    first = max(days.size - max(settings.window_sessions, 1), 0)
    return _Context(symbols, days, int(days[-1]), int(days[first]), settings)


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

        def detail(k: int, days: np.ndarray = days, words: str = words) -> str:
            return words.format(to_date(days[k]))

        out += ctx.emit(Check.COMPLETENESS, what, codes, days, detail)
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
    no_volume = col["volume"] <= 0
    traded = _traded(panel, no_volume)
    faults = [
        ("missing-value", nan, lambda r: "missing value in "
         + ", ".join(n for n in BAR_COLUMNS if np.isnan(col[n][r]))),
        ("non-positive-price", nonpositive, lambda r: "zero or negative price: " + _ohlc(col, r)),
        ("ohlc", crossed & ~nonpositive & ~nan,
         lambda r: "OHLC inconsistent (need low <= open, close <= high): " + _ohlc(col, r)),
        ("volume", traded,
         lambda r: f"volume {col['volume'][r]:g} on a bar where the symbol traded"),
    ]  # fmt: skip
    out = []
    for what, mask, text in faults:
        rows = np.flatnonzero(mask)
        out += ctx.emit(Check.SANITY, what, code[rows], day[rows], text, rows=rows)
    # A session without a trade is a market fact (young, thin ETFs) that moves a momentum score
    # by a day's move at most; only a decision made on one (the as_of session) is blocked.
    idle = np.flatnonzero(no_volume & ~traded)
    for rows, severity in ((idle[day[idle] == ctx.as_of], None),
                           (idle[day[idle] != ctx.as_of], Severity.WARNING)):  # fmt: skip
        out += ctx.emit(
            Check.SANITY, "no-trade", code[rows], day[rows],
            lambda r: f"volume {col['volume'][r]:g} and a flat bar at the previous close "
            f"{c[r]:.4f}: no trade that session (or a bar the vendor filled in), so the close "
            "is not a trade price",
            rows=rows, severity=severity,
        )  # fmt: skip
    return out


def _traded(panel: Panel, rows: np.ndarray) -> np.ndarray:
    """The bars of mask ``rows`` that show a trade: all but those whose open, high, low and close
    equal the previous close (what a vendor prints for a session without a trade)."""
    at = np.flatnonzero(rows)
    o, h, low, c = (panel.col[name][at] for name in PRICE_COLUMNS)
    prev = panel.col["close"][at - 1]
    flat = (at > 0) & (o == c) & (h == c) & (low == c) & (prev == c)
    flat &= panel.code[np.maximum(at - 1, 0)] == panel.code[at]  # the same symbol's bar before
    out = rows.copy()
    out[at[flat]] = False
    return out


def _ohlc(col: dict[str, np.ndarray], row: int) -> str:
    return ", ".join(f"{name} {col[name][row]:.4f}" for name in PRICE_COLUMNS)


@dataclass
class _Jumps:
    """Total-return moves beyond the band, before the market-wide rule: each one's symbol code
    (of the symbols the judge is given), day, and what its finding shows."""

    code: np.ndarray
    day: np.ndarray
    ret: np.ndarray
    close: np.ndarray
    prev: np.ndarray
    split: np.ndarray
    dividend: np.ndarray
    confirmed: np.ndarray  # the secondary shows the same move between the same two dates

    @classmethod
    def concat(cls, parts: list[_Jumps]) -> _Jumps:
        names = [f.name for f in dataclasses.fields(cls)]
        return cls(**{n: np.concatenate([getattr(p, n) for p in parts]) for n in names})


def _jump_moves(
    panel: Panel, ret: np.ndarray, ctx: _Context, secondary: Panel | None, offset: int = 0
) -> _Jumps:
    """The moves of ``panel`` beyond the band, its codes shifted by ``offset``."""
    rows = np.flatnonzero(np.abs(np.nan_to_num(ret)) > ctx.settings.jump_band)
    close, split, dividend = panel.col["close"], panel.col["split"], panel.col["dividend"]
    return _Jumps(
        code=panel.code[rows] + offset, day=panel.day[rows], ret=ret[rows], close=close[rows],
        prev=panel.previous(close)[rows], split=split[rows], dividend=dividend[rows],
        confirmed=_confirmed(panel, rows, ret, secondary, ctx.settings.cross_return_tolerance),
    )  # fmt: skip


def _jumps(
    panel: Panel, ctx: _Context, secondary: Panel | None, peers: Panel | None = None
) -> list[Finding]:
    """Total-return jumps beyond the band that are not market-wide. Splits and dividends are in
    the total return, so a recorded split explains itself and an unrecorded one does not."""
    ret = total_return(panel)
    return _judge_jumps(_jump_moves(panel, ret, ctx, secondary), panel, ret, ctx, peers)


def _judge_jumps(
    moved: _Jumps, panel: Panel, ret: np.ndarray, ctx: _Context, peers: Panel | None
) -> list[Finding]:
    """The jumps of ``moved`` that are not market-wide, judged on every symbol's total returns
    ``ret`` (a row per bar of ``panel``, which names the symbols and finds their bars)."""
    band = ctx.settings.jump_band
    moves = _PeerMoves(panel, ret, moved.code, moved.day, moved.ret, ctx.settings, peers)
    keep = np.flatnonzero(~moves.market)
    others, same, need = moves.others[keep], moves.same[keep], moves.need[keep]
    place = {int(r): k for k, r in enumerate(keep)}

    def text(r: int) -> str:
        k, raw = place[r], moved.close[r] / moved.prev[r]
        split, dividend = moved.split[r], moved.dividend[r]
        words = (
            f"total return {moved.ret[r]:+.1%} beyond the {band:.0%} band (raw close "
            f"{moved.prev[r]:.4f} -> {moved.close[r]:.4f}, split {split:g}, dividend "
            f"{dividend:g}); not market-wide ({same[k]} of {others[k]} other symbols of its "
            f"class, {moves.describe(moved.code[r])}, moved that way by {need[k]:.1%} or more)"
        )
        ratio = _COMMON_SPLITS[np.argmin(np.abs(_COMMON_SPLITS * raw - 1))]
        if split == 1 and abs(ratio * raw - 1) < 0.05:
            words += f"; looks like an unrecorded split of ratio {ratio:g}"
        elif split != 1 and abs(raw - 1) < band:
            words += "; a split is recorded but the raw close did not move: pre-adjusted prices?"
        if moved.confirmed[r]:
            words += "; the secondary provider shows the same move"
        return words

    alone, seen = keep[~moved.confirmed[keep]], keep[moved.confirmed[keep]]
    out = ctx.emit(Check.JUMP, "jump", moved.code[alone], moved.day[alone], text, rows=alone)
    return out + ctx.emit(
        Check.JUMP, "confirmed-jump", moved.code[seen], moved.day[seen], text, rows=seen,
        severity=Severity.INFO,
    )  # fmt: skip


class _PeerMoves:
    """How each jump's peers moved that session: the other symbols of its asset class in the
    universe, and the class's reference symbol (from ``peers``, bars outside the universe)."""

    def __init__(
        self,
        panel: Panel,
        ret: np.ndarray,
        codes: np.ndarray,
        days: np.ndarray,
        jumps: np.ndarray,
        settings: QASettings,
        peers: Panel | None,
    ) -> None:
        self.classes = [settings.asset_class(s) for s in panel.symbols]
        members: dict[str, list[int]] = {}
        for code, name in enumerate(self.classes):
            members.setdefault(name, []).append(code)
        self.references: dict[str, list[int]] = {}
        if peers is not None:
            for name, symbol in settings.market_references.items():
                if symbol in peers.symbols:
                    self.references.setdefault(name, []).append(peers.symbols.index(symbol))
        peer_ret = total_return(peers) if peers is not None else np.empty(0)
        self.others = np.zeros(codes.size, dtype=np.int64)
        self.same = np.zeros(codes.size, dtype=np.int64)
        self.need = settings.market_move_ratio * np.abs(jumps)
        for k in range(codes.size):
            code, day = int(codes[k]), days[k]
            name = self.classes[code]
            others = np.array([c for c in members[name] if c != code], dtype=np.int64)
            found = panel.locate(others, np.full(others.size, day))
            moves = ret[found[found >= 0]]
            if peers is not None and name in self.references:
                refs = np.array(self.references[name], dtype=np.int64)
                at = peers.locate(refs, np.full(refs.size, day))
                moves = np.r_[moves, peer_ret[at[at >= 0]]]
            moves = moves[np.isfinite(moves)]
            self.others[k] = moves.size
            self.same[k] = int((moves * np.sign(jumps[k]) >= self.need[k]).sum())
        enough = self.others >= max(settings.market_min_others, 1)
        self.market = enough & (self.same >= settings.market_move_share * self.others)
        self._peers = peers

    def describe(self, code: int) -> str:
        """Name the class of symbol ``code`` and any reference counted among its peers."""
        name = self.classes[code]
        refs = self.references.get(name, [])
        if not refs or self._peers is None:
            return name
        return f"{name}, with reference {', '.join(self._peers.symbols[c] for c in refs)}"


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
    match = secondary.locate(primary.code, primary.day)
    return (
        _cross_closes(primary, secondary, ctx, match)
        + _cross_dividends(primary, secondary, ctx)
        + _cross_returns(primary, secondary, ctx)
        + _cross_dates(primary, secondary, ctx, match)
    )


def _cross_closes(
    primary: Panel, secondary: Panel, ctx: _Context, match: np.ndarray
) -> list[Finding]:
    """Closes compared on a split-invariant basis, on the sessions both providers have.

    g = log(primary close / secondary close), each split-adjusted through as_of by its own
    provider, is constant while they agree, whatever splits either has folded into its prices
    (Yahoo's are adjusted as of the download, so before a later split every bar is 2x or 3x a
    raw vendor's). A single bad close moves g away from both neighbours (a "close" finding); a
    level that moves and stays (an unrecorded split, a changed basis) is a "close-step" finding.
    """
    tol = ctx.settings.cross_close_tolerance
    p_close, s_close = split_adjusted_close(primary), split_adjusted_close(secondary)
    rows = np.flatnonzero(match >= 0)
    same = rows.size == match.size == s_close.size and bool((match == rows).all())
    with np.errstate(divide="ignore", invalid="ignore"):  # same bars in both: no gathering
        gap = np.log(p_close / s_close) if same else np.log(p_close[rows] / s_close[match[rows]])
    finite = np.isfinite(gap)
    if not finite.all():  # bad prices are the sanity check's findings
        rows, gap = rows[finite], gap[finite]
    code = primary.code[rows]
    first = np.ones(rows.size, dtype=bool)
    np.not_equal(code[1:], code[:-1], out=first[1:])
    into = np.zeros(rows.size)
    np.subtract(gap[1:], gap[:-1], out=into[1:])
    into[first] = 0.0
    limit = np.log1p(tol)
    # Only a session whose ratio moved can be either kind: the rest are never looked at again.
    moved = np.flatnonzero(np.abs(into) > limit)
    last = np.r_[first[1:], True]

    def before(k: np.ndarray) -> np.ndarray:
        return np.where(first[k], k, k - 1)

    def after(k: np.ndarray) -> np.ndarray:
        return np.where(last[k], k, k + 1)

    def is_spike(k: np.ndarray) -> np.ndarray:
        out_of = gap[k] - gap[after(k)]
        return (np.sign(into[k]) == np.sign(out_of)) & (
            np.minimum(np.abs(into[k]), np.abs(out_of)) > limit
        )

    spike = is_spike(moved)
    b = before(moved)
    step = (
        (np.abs(gap[moved] - gap[before(b)]) > limit)  # not a bad close on the session before
        & (np.abs(gap[after(moved)] - gap[b]) > limit)  # nor on this one alone
        & ~spike
        & ~(is_spike(b) & (b != moved))
    )
    day = primary.day

    def text(k: int, step: bool = False) -> str:
        r, q = rows[k], rows[int(before(np.array([k]))[0])]
        words = (
            f"close: primary {p_close[r]:.4f} vs secondary {s_close[match[r]]:.4f}, "
            f"{np.expm1(into[k]):+.2%} off their ratio on {to_date(day[q])} "
            f"({p_close[q]:.4f} vs {s_close[match[q]]:.4f}; > {tol:.2%})"
        )
        if last[k]:
            return words + ", on the last session both have: a bad close, or a new level"
        if step:
            return words + " and apart since: an unrecorded split or a changed basis in one"
        following = rows[int(after(np.array([k]))[0])]
        return words + f" and on {to_date(day[following])}: this close alone"

    out = []
    for what, hit, words in (
        ("close", moved[spike], text),
        ("close-step", moved[step], lambda k: text(k, step=True)),
    ):
        out += ctx.emit(
            Check.CROSS_PROVIDER, what, code[hit], day[rows[hit]], words, rows=hit
        )  # fmt: skip
    return out


# The same distribution dated differently by the two providers is paired up to this many
# sessions apart (monthly payers are about 20 apart), rather than reported missing from each.
_DIVIDEND_PAIRING_SESSIONS = 5


def _cross_dividends(primary: Panel, secondary: Panel, ctx: _Context) -> list[Finding]:
    """Distributions compared event by event where both providers have bars: the ex-date, and
    the amount as a share of the previous close (split-invariant, so a vendor's split-adjusted
    amounts compare with another's raw ones)."""
    tol, sessions = ctx.settings.cross_dividend_tolerance, ctx.settings.cross_dividend_sessions
    begun = np.maximum(first_days(primary), first_days(secondary))
    ended = np.minimum(last_days(primary), last_days(secondary))
    width = ctx.sessions.size + 4 * _DIVIDEND_PAIRING_SESSIONS
    events = []
    for panel in (primary, secondary):
        div, close, code, day = panel.col["dividend"], panel.col["close"], panel.code, panel.day
        rows = np.flatnonzero(div > 0)
        rows = rows[
            (rows > 0) & (day[rows] >= begun[code[rows]]) & (day[rows] <= ended[code[rows]])
        ]
        rows = rows[code[rows - 1] == code[rows]]  # a symbol's first bar has no close before it
        with np.errstate(divide="ignore", invalid="ignore"):  # per share before any split
            share = div[rows] * panel.col["split"][rows] / close[rows - 1]
        rows, share = rows[np.isfinite(share)], share[np.isfinite(share)]
        events.append((rows, code[rows] * width + np.searchsorted(ctx.sessions, day[rows]), share))
    (p_rows, p_key, p_share), (s_rows, s_key, s_share) = events
    p_near, s_near = _nearest(s_key, p_key), _nearest(p_key, s_key)
    paired = np.flatnonzero(p_near >= 0)
    paired = paired[s_near[p_near[paired]] == paired]  # each other's nearest: one event
    other = p_near[paired]
    differ = (np.abs(p_key[paired] - s_key[other]) > sessions) | (
        np.abs(p_share[paired] - s_share[other]) > tol
    )
    pe, se = paired[differ], other[differ]
    p_div, s_div = primary.col["dividend"], secondary.col["dividend"]

    def pair_text(j: int) -> str:
        (a, p), (b, s) = (p_share[pe[j]], p_rows[pe[j]]), (s_share[se[j]], s_rows[se[j]])
        words = (
            f"distribution: primary {a:.3%} vs secondary {b:.3%} of the previous close "
            f"({abs(a - b) * 100:.3f} points apart, tolerance {tol * 100:.3f}; "
            f"{p_div[p]:.6f} and {s_div[s]:.6f} per share as each provider states them)"
        )
        if primary.day[p] != secondary.day[s]:
            words += (
                f"; ex-date {to_date(primary.day[p])} in the primary, "
                f"{to_date(secondary.day[s])} in the secondary"
            )
        return words

    days = np.maximum(primary.day[p_rows[pe]], secondary.day[s_rows[se]])
    out = ctx.emit(
        Check.CROSS_PROVIDER, "dividend", primary.code[p_rows[pe]], days, pair_text
    )  # fmt: skip
    lone_p, lone_s = np.ones(p_rows.size, dtype=bool), np.ones(s_rows.size, dtype=bool)
    lone_p[paired], lone_s[other] = False, False
    for name, panel, rows, share, lone, absent in (
        ("primary", primary, p_rows, p_share, lone_p, "secondary"),
        ("secondary", secondary, s_rows, s_share, lone_s, "primary"),
    ):
        hit = np.flatnonzero(lone & (share > tol))  # an immaterial one is no finding
        div = panel.col["dividend"]

        def lone_text(e: int, name: str = name, absent: str = absent, share: np.ndarray = share,
                      div: np.ndarray = div, rows: np.ndarray = rows) -> str:  # fmt: skip
            return (
                f"distribution of {div[rows[e]]:.6f} ({share[e]:.3%} of the previous close) in "
                f"the {name} only: the {absent} has none within {_DIVIDEND_PAIRING_SESSIONS} "
                "sessions"
            )

        out += ctx.emit(
            Check.CROSS_PROVIDER, f"dividend-only-in-{name}", panel.code[rows[hit]],
            panel.day[rows[hit]], lone_text, rows=hit,
        )  # fmt: skip
    return out


def _nearest(keys: np.ndarray, wanted: np.ndarray) -> np.ndarray:
    """Index in sorted ``keys`` of the key nearest each of ``wanted``, -1 where none is within
    the pairing distance."""
    if not keys.size:
        return np.full(wanted.size, -1, dtype=np.int64)
    at = np.searchsorted(keys, wanted)
    lo, hi = np.clip(at - 1, 0, keys.size - 1), np.clip(at, 0, keys.size - 1)
    best = np.where(np.abs(keys[lo] - wanted) <= np.abs(keys[hi] - wanted), lo, hi)
    return np.where(np.abs(keys[best] - wanted) <= _DIVIDEND_PAIRING_SESSIONS, best, -1)


def _cross_dates(
    primary: Panel, secondary: Panel, ctx: _Context, match: np.ndarray
) -> list[Finding]:
    """Sessions only one provider has, where both have begun: a shorter history is no gap. A
    secondary that stopped updating is one finding per symbol, not one per bar it lacks; bars
    the primary lacks at its end are the freshness check's."""
    back = primary.locate(secondary.code, secondary.day)
    begun = np.maximum(first_days(primary), first_days(secondary))
    p_last, s_last = last_days(primary), last_days(secondary)
    rows = np.flatnonzero((primary.day >= begun[primary.code]) & (match < 0))
    late = primary.day[rows] > s_last[primary.code[rows]]
    gaps = rows[~late]
    out = ctx.emit(
        Check.CROSS_PROVIDER, "date-only-in-primary", primary.code[gaps], primary.day[gaps],
        lambda r: "bar in the primary, missing in the secondary", rows=gaps,
    )  # fmt: skip
    stale = rows[late]
    for code in np.unique(primary.code[stale]):
        days = primary.day[stale[primary.code[stale] == code]]
        out.append(Finding(
            primary.symbols[code], to_date(days[0]), Check.CROSS_PROVIDER,
            ctx.level(int(days[-1])),
            f"secondary stale since {to_date(s_last[code])}: no secondary bar for the "
            f"{days.size} primary bar{'s' if days.size != 1 else ''} from {to_date(days[0])} "
            f"to {to_date(days[-1])}, so they are not compared",
        ))  # fmt: skip
    code = secondary.code
    rows = np.flatnonzero(
        (secondary.day >= begun[code]) & (back < 0) & (secondary.day <= p_last[code])
    )
    return out + ctx.emit(
        Check.CROSS_PROVIDER, "date-only-in-secondary", code[rows], secondary.day[rows],
        lambda r: "bar in the secondary, missing in the primary", rows=rows,
    )  # fmt: skip


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
        for panel, end, start in ((primary, found[0], found[1]), (secondary, found[2], found[3]))
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
    return build_panel(secondary, ctx.symbols, ctx.as_of, None, _RETURN_COLUMNS), notes


# Only what total returns and split-adjusted closes need: a secondary and the reference symbols
# serve comparisons, they are not checked themselves.
_RETURN_COLUMNS = ("close", "dividend", "split")


def _peers(peers: Bars | None, ctx: _Context) -> Panel | None:
    """The reference symbols' bars outside the universe, for judging market-wide moves."""
    symbols = tuple(sorted(s for s in peers or {} if s not in ctx.symbols))
    return build_panel(peers or {}, symbols, ctx.as_of, None, _RETURN_COLUMNS) if symbols else None


def check_universe(
    bars_by_symbol: Bars,
    sessions: pd.DatetimeIndex,
    as_of: date,
    settings: QASettings = DEFAULT_SETTINGS,
    secondary: Bars | None = None,
    vendor_adjusted: Mapping[str, pd.Series] | None = None,
    peers: Bars | None = None,
) -> list[Finding]:
    """Return the findings of every pure check on the universe's bars dated <= as_of.

    ``sessions`` are the calendar's sessions over the bars through as_of; the as_of session is
    the last of them on or before ``as_of``. ``vendor_adjusted`` (symbol -> the vendor's adjusted
    close) feeds the corporate-action check; ``peers`` (the bars of ``market_references``
    symbols outside the universe) feed the market-wide rule of the jump check. Findings come
    blocking first. Raises DataError for a frame not in the store's shape, CalendarError when no
    session is on or before as_of.
    """
    ctx = _context(tuple(sorted(bars_by_symbol)), sessions, as_of, settings)
    findings: list[Finding] = []
    moved, returns = [], []
    for lo in range(0, len(ctx.symbols), QA_BLOCK):
        # A block of symbols at a time: the working arrays stay a block's size, so the first
        # call asks the system for no more fresh memory than a repeat reuses (500 symbols x 30
        # years in one go took 0.7 GB, and the first call ran 2-6x slower than the next).
        block = dataclasses.replace(ctx, symbols=ctx.symbols[lo : lo + QA_BLOCK])
        panel = build_panel(bars_by_symbol, block.symbols, ctx.as_of, vendor_adjusted)
        second, notes = (None, []) if secondary is None else _secondary(secondary, block)
        findings += _freshness(panel, block) + _completeness(panel, block) + _sanity(panel, block)
        findings += _corporate_actions(panel, block)
        if second is not None:
            findings += notes + _cross_provider(panel, second, block)
        ret = total_return(panel)
        moved.append(_jump_moves(panel, ret, block, second, offset=lo))
        returns.append((panel.code + lo, panel.day, ret))
        del panel, second
    # Whether a jump is market-wide asks its class's other symbols, in any block.
    code, day = (np.concatenate([r[k] for r in returns] or [_NONE[0]]) for k in (0, 1))
    ret = np.concatenate([r[2] for r in returns] or [np.empty(0)])
    every = Panel(ctx.symbols, np.r_[0, np.cumsum(np.bincount(code, minlength=len(ctx.symbols)))],
                  code, day, {}, None, _NONE, _NONE)  # fmt: skip
    if moved:
        findings += _judge_jumps(_Jumps.concat(moved), every, ret, ctx, _peers(peers, ctx))
    logger.info(
        "data QA as of %s: %d symbols, %d bars, %d findings, %d blocking",
        to_date(ctx.as_of), len(ctx.symbols), day.size, len(findings),
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
    peers: Bars | None = None,
) -> list[Finding]:  # fmt: skip
    """Return findings for daily total returns beyond the band that are not market-wide (most
    of the symbol's peers, its asset class and the class's reference in ``peers``, moved with
    it); a jump the secondary shows too between the same dates is INFO (a genuine move)."""
    panel, ctx = _prepare(bars_by_symbol, sessions, as_of, settings)
    second = None if secondary is None else _secondary(secondary, ctx)[0]
    return sort_findings(_jumps(panel, ctx, second, _peers(peers, ctx)))


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
    """Return findings where the providers disagree: closes (split-invariantly, so a split one
    provider has folded into its prices is never a finding), distributions event by event,
    trailing total returns at as_of and each month end in the window, and dates only one of
    them has (a secondary that stopped updating: one finding per symbol)."""
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
    freshness finding (one the secondary lacks is INFO), not an exception. The primary's vendor
    adjusted closes, where the store keeps them, feed the corporate-action check; the
    ``market_references`` of the universe's asset classes are read from the primary to judge
    market-wide moves. Raises CalendarCoverageError when as_of is outside the calendar's
    coverage.
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
    vendor = _load_vendor_adjusted(store, primary, loaded[primary])
    peers = _load_references(store, primary, symbols, session, settings)
    findings += check_universe(loaded[primary], sessions, session, settings, second, vendor, peers)
    return sort_findings(findings)


def _load_vendor_adjusted(
    store: PriceStore, source: str, loaded: Mapping[str, pd.DataFrame]
) -> dict[str, pd.Series] | None:
    """The vendor's own adjusted closes the store keeps beside ``loaded`` bars, if any. One the
    store cannot vouch for is left out: the provenance check already reports it."""
    kept = {}
    for symbol in loaded:
        try:
            series = store.load_vendor_adjusted(source, symbol)
        except DataError:
            continue
        if series is not None:
            kept[symbol] = series
    return kept or None


def _load_references(
    store: PriceStore, source: str, symbols: tuple[str, ...], session: date, settings: QASettings
) -> dict[str, pd.DataFrame] | None:
    """Bars of the reference symbols of the universe's asset classes that are not in it."""
    classes = {settings.asset_class(s) for s in symbols}
    wanted = {r for c, r in settings.market_references.items() if c in classes} - set(symbols)
    peers = {}
    for symbol in sorted(wanted):
        try:  # a reference the source lacks leaves the class's own symbols as the only peers
            frame = store.load_bars(source, symbol)
        except DataError:
            continue
        peers[symbol] = frame.loc[frame.index <= pd.Timestamp(session)]
    return peers or None


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
    calendar = open_calendar(cfg)
    session = calendar.session_on_or_before(as_of)
    primary, secondary = cfg.primary_source, cfg.data.secondary
    symbols = tuple(cfg.universe_symbols)
    found = check_store(
        open_store(cfg), calendar, symbols, session, primary, secondary, read_qa_settings(cfg)
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


def read_qa_settings(cfg: Config) -> QASettings:
    """Return the QA thresholds of config ``qa:`` (defaults for those it leaves out)."""
    return QASettings.from_config(cfg.values)
