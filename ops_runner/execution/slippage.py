"""Slippage: each cycle's fills against the decision close and the opening print, in bands."""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, fields
from decimal import Decimal, InvalidOperation
from enum import StrEnum
from typing import TYPE_CHECKING, Any, cast

from ops_runner.core.canonical import compute_json_ready
from ops_runner.core.errors import OpsError
from ops_runner.core.events import EventKind
from ops_runner.execution.quotes import read_cycle_quotes
from ops_runner.execution.reconcile import (
    compute_cycle_orders,
    compute_record_closes,
    read_session_prices,
)
from ops_runner.ledger import LedgerConflict, open_ledger
from ops_runner.ledger.projections import OrderView, compute_fills
from ops_runner.market.calendar import open_calendar
from ops_runner.runtime.alerts import Alert, send_alert
from ops_runner.workbook.config import Config
from ops_runner.workbook.settings import CostsSettings

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.figure import Figure

log = logging.getLogger(__name__)

CHECK = "slippage_bands"
SPREAD_CHECK = "spread_bands"
JOB = "slippage_report"
TRAILING_CYCLES = 12
BPS = Decimal(10_000)
HUNDREDTH = Decimal("0.01")  # bps to 0.01, as reconciliation shows them
RATIO = Decimal("0.0001")
ZERO = Decimal(0)
BAND_COLORS = ("tab:purple", "tab:olive", "tab:cyan", "tab:brown", "tab:pink", "tab:gray")


class SlippageError(OpsError):
    """The slippage report cannot be made or recorded as asked (a bad band, a changed record)."""


class SlippageStatus(StrEnum):
    """What a cycle's report can say about its bands."""

    NO_FILLS = "NO_FILLS"  # no order of the cycle has filled yet: nothing to judge
    INCOMPLETE = "INCOMPLETE"  # a fill still lacks its opening print or commission
    WITHIN_BANDS = "WITHIN_BANDS"
    OUT_OF_BAND = "OUT_OF_BAND"


@dataclass(frozen=True)
class OrderSlippage:
    """One order of a cycle: ordered vs filled, its prices, slippage in bps and its cost.

    Slippage is a cost: positive when a buy paid more (a sell received less) than the reference.
    ``slippage_cost`` is the dollars lost against the opening print, with the same sign.
    """

    cycle_id: str
    session: str | None  # the order session
    client_ref: str
    symbol: str
    side: str
    ordered: int
    filled: int
    fill_ratio: Decimal | None
    decision_close: Decimal | None
    open_print: Decimal | None
    avg_price: Decimal | None
    vs_close_bps: Decimal | None
    vs_open_bps: Decimal | None
    slippage_cost: Decimal | None
    commission: Decimal | None  # None while a fill still lacks its commission
    band_bps: Decimal
    flagged: bool  # |vs_open_bps| beyond band_bps
    status: str  # filled, partial, else the ledger's order status (submitted, denied...)

    def describe(self) -> str:
        """Return one line: side, shares, symbol, slippage vs the open and the band."""
        return (f"{self.side} {self.filled} {self.symbol} at {self.avg_price} vs open "
                f"{self.open_print}: {self.vs_open_bps:+} bps (band {self.band_bps})")  # fmt: skip


@dataclass(frozen=True)
class CycleSlippage:
    """A cycle's (or several cycles', or one symbol's) orders in figures.

    Averages are over the measured orders (a fill and a reference price), each order's bps
    counted once as shown (to 0.01): signed averages say which way costs lean, |vs open| and
    the worst cases are what the bands judge. Dollars are against the opening print.
    """

    cycle_id: str
    session: str | None
    orders: int
    filled: int  # orders with at least one fill
    fill_ratio: Decimal | None  # shares filled / shares ordered, over every order
    worst_fill_ratio: Decimal | None  # the lowest order's
    avg_vs_open_bps: Decimal | None  # signed mean: + = paid more than the open on average
    avg_abs_bps: Decimal | None  # mean |vs open|
    worst_abs_bps: Decimal | None  # max |vs open|
    worst_symbol: str | None
    worst_band_bps: Decimal | None  # the worst order's own band
    avg_vs_close_bps: Decimal | None  # signed mean vs the decision close
    worst_vs_close_bps: Decimal | None  # max |vs the decision close|
    slippage_cost: Decimal
    commissions: Decimal
    total_cost: Decimal
    flagged: int


class SpreadStatus(StrEnum):
    """What a cycle's report can say about its fills against the quotes."""

    NO_FILLS = "NO_FILLS"
    INCOMPLETE = "INCOMPLETE"  # a fill still lacks its opening print or commission
    NOT_QUOTED = "NOT_QUOTED"  # the broker quoted none of the filled orders: nothing to judge
    WITHIN_BANDS = "WITHIN_BANDS"
    OUT_OF_BAND = "OUT_OF_BAND"


@dataclass(frozen=True)
class OrderSpread:
    """One order of a cycle against the broker's quote: fill vs the quoted mid and the quoted
    half-spread, in bps, each against its band.

    The quote that judges an order is the one just after the open (nearest the opening
    auction), else the one at submission; ``quote`` says which, and None means the broker
    quoted neither (``note`` says why): such an order is shown, never judged. Fill vs mid is
    a cost like slippage: positive when a buy paid more (a sell received less) than the mid.
    """

    cycle_id: str
    client_ref: str
    symbol: str
    side: str
    avg_price: Decimal | None
    quote: str | None  # open, submission, or None: not quoted
    quoted_at: str | None  # the broker's instant of the quote (UTC)
    bid: Decimal | None
    ask: Decimal | None
    mid: Decimal | None
    vs_mid_bps: Decimal | None
    vs_mid_band_bps: Decimal
    half_spread_bps: Decimal | None
    half_spread_band_bps: Decimal
    submission_half_spread_bps: Decimal | None  # the quote at submission, shown for reference
    flagged: bool  # |vs_mid_bps| or half_spread_bps beyond its band
    note: str = ""

    def describe(self) -> str:
        """Return one line: the order, its quote, fill vs mid and half-spread with their bands."""
        return (f"{self.side} {self.symbol} at {self.avg_price} vs mid {self.mid} "
                f"({self.bid}/{self.ask}, {self.quote}): {self.vs_mid_bps:+} bps (band "
                f"{self.vs_mid_band_bps}), half-spread {self.half_spread_bps} bps (band "
                f"{self.half_spread_band_bps})")  # fmt: skip


def compute_mid(bid: Decimal, ask: Decimal) -> Decimal:
    """Return the mid of a quote: (bid + ask) / 2."""
    return (bid + ask) / 2


def compute_half_spread_bps(bid: Decimal, ask: Decimal) -> Decimal:
    """Return the quoted half-spread in bps of the mid (to 0.01): (ask - bid) / 2 / mid."""
    return ((ask - bid) / 2 / compute_mid(bid, ask) * BPS).quantize(HUNDREDTH)


def _quote_of(
    payload: Mapping[str, Any] | None, symbol: str
) -> tuple[Decimal, Decimal, str] | None:
    quote = ((payload or {}).get("quotes") or {}).get(symbol)
    if not quote:
        return None
    bid, ask = Decimal(str(quote["bid"])), Decimal(str(quote["ask"]))
    if bid <= 0 or ask < bid:  # a crossed or empty quote has no mid worth judging by
        return None
    return bid, ask, str(quote.get("at") or "")


def compute_order_spreads(
    rows: Sequence[OrderSlippage],
    quotes: Mapping[str, Mapping[str, Any]],
    costs: CostsSettings | Mapping[str, Any],
) -> list[OrderSpread]:
    """Return a row per filled order against its quote; ``quotes`` holds the cycle's
    ``QuotesRecorded`` payloads by moment ("open", "submission") and ``costs`` config's
    ``costs`` section (the vs_mid and half_spread bands)."""
    spreads = []
    for row in rows:
        if not row.filled:
            continue
        opening = _quote_of(quotes.get("open"), row.symbol)
        submitted = _quote_of(quotes.get("submission"), row.symbol)
        moment, found = ("open", opening) if opening else ("submission", submitted)
        mid_band = compute_band(costs, row.symbol, "vs_mid")
        half_band = compute_band(costs, row.symbol, "half_spread")
        early = compute_half_spread_bps(*submitted[:2]) if submitted else None
        if found is None or row.avg_price is None:
            why = [str((quotes.get(m) or {}).get("unquoted", {}).get(row.symbol) or "")
                   for m in ("open", "submission")]  # fmt: skip
            note = "; ".join(w for w in why if w) or "no quote recorded for this cycle"
            spreads.append(OrderSpread(row.cycle_id, row.client_ref, row.symbol, row.side,
                                       row.avg_price, None, None, None, None, None, None,
                                       mid_band, None, half_band, early, False,
                                       f"not quoted: {note}"))  # fmt: skip
            continue
        bid, ask, at = found
        mid = compute_mid(bid, ask)
        vs_mid = compute_slippage_bps(row.side, row.avg_price, mid)
        half = compute_half_spread_bps(bid, ask)
        wide, off = half > half_band, abs(vs_mid) > mid_band
        note = ", ".join(n for n, on in (("fill vs mid out of band", off),
                                         ("half-spread out of band", wide)) if on)  # fmt: skip
        spreads.append(OrderSpread(row.cycle_id, row.client_ref, row.symbol, row.side,
                                   row.avg_price, moment, at, bid, ask, mid, vs_mid, mid_band,
                                   half, half_band, early, wide or off, note))  # fmt: skip
    return spreads


# Each band's keys in config's costs section: (per symbol, default, default when unset).
BANDS = {
    "slippage": ("slippage_bands", "slippage_band_bps", 10.0),
    "vs_mid": ("vs_mid_bands", "vs_mid_band_bps", 10.0),
    "half_spread": ("half_spread_bands", "half_spread_band_bps", 5.0),
}


def compute_band(
    costs: CostsSettings | Mapping[str, Any], symbol: str | None = None, kind: str = "slippage"
) -> Decimal:
    """Return the band in bps of ``kind``: slippage (``slippage_bands[symbol]`` else
    ``slippage_band_bps``, 10.0), vs_mid (``vs_mid_bands`` / ``vs_mid_band_bps``, 10.0) or
    half_spread (``half_spread_bands`` / ``half_spread_band_bps``, 5.0).

    ``costs`` is config's ``costs`` section, typed or as a mapping of some of its keys. Raises
    SlippageError for a band that is not a number >= 0.
    """
    by_symbol, default_key, fallback = BANDS[kind]
    if isinstance(costs, CostsSettings):
        bands = cast(Mapping[Any, Any], getattr(costs, by_symbol))
        default = getattr(costs, default_key)
    else:
        bands, default = costs.get(by_symbol) or {}, costs.get(default_key, fallback)
    value = bands[symbol] if symbol in bands else default
    where = f"{by_symbol}.{symbol}" if symbol in bands else default_key
    try:
        band = Decimal(str(value))
    except InvalidOperation:
        band = Decimal(-1)
    if isinstance(value, bool) or not band.is_finite() or band < 0:
        raise SlippageError(f"costs.{where}: {value!r} is not a band in bps >= 0; fix config.yaml")
    return band


def compute_slippage_bps(side: str, price: Decimal, reference: Decimal) -> Decimal:
    """Return the cost of ``price`` against ``reference`` in bps (to 0.01): positive when a BUY
    paid more or a SELL received less."""
    cost = price - reference if side == "BUY" else reference - price
    return (cost / reference * BPS).quantize(HUNDREDTH)


def compute_order_rows(
    cycle_id: str,
    session: str | None,
    orders: Mapping[str, OrderView],
    fills: Iterable[Mapping[str, Any]],
    prices: tuple[Mapping[str, Decimal], Mapping[str, Decimal]],
    costs: CostsSettings | Mapping[str, Any],
) -> list[OrderSlippage]:
    """Return a row per order from its FillRecorded payloads (each exec_id once, as
    ``compute_fills`` gives them); ``prices`` is (decision closes, open prints) by symbol and
    ``costs`` config's ``costs`` section. Rows without a fill or a price have None slippage."""
    by_ref: dict[str, list[Mapping[str, Any]]] = {}
    for fill in fills:
        by_ref.setdefault(str(fill.get("client_ref")), []).append(fill)
    rows = []
    for ref, view in orders.items():
        symbol, side, mine = str(view.symbol), str(view.side), by_ref.get(ref, [])
        shares = sum(int(f["quantity"]) for f in mine)
        paid = sum((int(f["quantity"]) * Decimal(str(f["price"])) for f in mine), ZERO)
        fees = [f.get("commission") for f in mine]
        commission = sum((Decimal(str(c)) for c in fees), ZERO) if None not in fees else None
        close, opening = prices[0].get(symbol), prices[1].get(symbol)
        exact = paid / shares if shares else None
        vs_close = compute_slippage_bps(side, exact, close) if exact and close else None
        vs_open = compute_slippage_bps(side, exact, opening) if exact and opening else None
        lost = None
        if exact and opening:
            lost = (paid - opening * shares) * (1 if side == "BUY" else -1)
        band = compute_band(costs, symbol)
        rows.append(OrderSlippage(
            cycle_id, session, ref, symbol, side, view.quantity, shares,
            (Decimal(shares) / view.quantity).quantize(RATIO) if view.quantity else None,
            close, opening, exact.quantize(RATIO) if exact else None, vs_close, vs_open, lost,
            commission if mine else None, band, vs_open is not None and abs(vs_open) > band,
            view.status if not shares else "filled" if shares >= view.quantity else "partial",
        ))  # fmt: skip
    return rows


def _mean(values: Sequence[Decimal]) -> Decimal | None:
    return (sum(values, ZERO) / len(values)).quantize(HUNDREDTH) if values else None


def compute_cycle_summary(
    cycle_id: str, session: str | None, rows: Sequence[OrderSlippage]
) -> CycleSlippage:
    """Return the rows' figures: fill ratios; signed and absolute mean, and worst, slippage vs
    the open and vs the decision close over the measured orders; dollars lost against the open,
    commissions, their total, and how many orders were out of band."""
    measured = [(r.vs_open_bps, r) for r in rows if r.vs_open_bps is not None]
    vs_close = [r.vs_close_bps for r in rows if r.vs_close_bps is not None]
    worst = max(measured, key=lambda pair: abs(pair[0]), default=None)
    ordered = sum(r.ordered for r in rows)
    filled = Decimal(sum(r.filled for r in rows))
    ratios = [r.fill_ratio for r in rows if r.fill_ratio is not None]
    lost = sum((r.slippage_cost for r in rows if r.slippage_cost is not None), ZERO)
    fees = sum((r.commission for r in rows if r.commission is not None), ZERO)
    return CycleSlippage(
        cycle_id=cycle_id,
        session=session,
        orders=len(rows),
        filled=sum(1 for r in rows if r.filled),
        fill_ratio=(filled / ordered).quantize(RATIO) if ordered else None,
        worst_fill_ratio=min(ratios, default=None),
        avg_vs_open_bps=_mean([bps for bps, _ in measured]),
        avg_abs_bps=_mean([abs(bps) for bps, _ in measured]),
        worst_abs_bps=abs(worst[0]) if worst else None,
        worst_symbol=worst[1].symbol if worst else None,
        worst_band_bps=worst[1].band_bps if worst else None,
        avg_vs_close_bps=_mean(vs_close),
        worst_vs_close_bps=max((abs(bps) for bps in vs_close), default=None),
        slippage_cost=lost,
        commissions=fees,
        total_cost=lost + fees,
        flagged=sum(1 for r in rows if r.flagged),
    )


def _figures(c: CycleSlippage) -> str:
    if c.avg_abs_bps is None:
        return f"{c.filled} of {c.orders} order(s) filled, none measured against an open yet"
    return (f"{c.filled} of {c.orders} order(s) filled, |vs open| avg {c.avg_abs_bps} bps, "
            f"worst {c.worst_abs_bps} bps ({c.worst_symbol}), cost "
            f"${c.total_cost.quantize(HUNDREDTH)} incl. ${c.commissions} commissions")  # fmt: skip


def _frame(rows: Sequence[Any], kind: type, index: str) -> pd.DataFrame:
    import pandas as pd

    names = [f.name for f in fields(kind)]
    return pd.DataFrame([vars(r) for r in rows], columns=names).set_index(index)


@dataclass(frozen=True)
class SlippageReport:
    """One cycle's orders and the trailing cycles' figures (oldest first, this cycle last)."""

    cycle_id: str
    session: str | None
    rows: tuple[OrderSlippage, ...]
    history: tuple[OrderSlippage, ...]  # every order of the trailing cycles
    cycles: tuple[CycleSlippage, ...]
    trailing: CycleSlippage
    band_bps: Decimal  # the default band; rows carry their own
    spreads: tuple[OrderSpread, ...] = ()  # this cycle's filled orders against their quotes

    @property
    def flagged(self) -> list[OrderSlippage]:
        """This cycle's orders out of their band."""
        return [r for r in self.rows if r.flagged]

    @property
    def status(self) -> SlippageStatus:
        filled = [r for r in self.rows if r.filled]
        if not filled:
            return SlippageStatus.NO_FILLS
        if any(r.vs_open_bps is None or r.commission is None for r in filled):
            return SlippageStatus.INCOMPLETE
        return SlippageStatus.OUT_OF_BAND if self.flagged else SlippageStatus.WITHIN_BANDS

    def summary(self) -> str:
        """Return one line about this cycle only (the check records it, so it must not move)."""
        head = f"slippage {self.cycle_id} (session {self.session or 'unknown'})"
        if self.status is SlippageStatus.NO_FILLS:
            return f"{head}: no fills yet ({len(self.rows)} order(s) recorded)"
        text = f"{head}: {_figures(compute_cycle_summary(self.cycle_id, self.session, self.rows))}"
        if self.status is SlippageStatus.INCOMPLETE:
            return f"{text}; incomplete: a fill lacks its opening print or commission"
        if self.flagged:
            return f"{text}; {len(self.flagged)} out of band: {self.flagged[0].describe()}"
        return f"{text}; all within band"

    @property
    def spread_flagged(self) -> list[OrderSpread]:
        """This cycle's orders whose fill vs mid or quoted half-spread is out of its band."""
        return [r for r in self.spreads if r.flagged]

    @property
    def spread_status(self) -> SpreadStatus:
        if self.status in (SlippageStatus.NO_FILLS, SlippageStatus.INCOMPLETE):
            return SpreadStatus(str(self.status))
        if not any(r.quote for r in self.spreads):
            return SpreadStatus.NOT_QUOTED
        return SpreadStatus.OUT_OF_BAND if self.spread_flagged else SpreadStatus.WITHIN_BANDS

    def spread_summary(self) -> str:
        """Return one line about this cycle's fills against the quotes (the spread check
        records it)."""
        head = f"spread {self.cycle_id} (session {self.session or 'unknown'})"
        status = self.spread_status
        if status is SpreadStatus.NO_FILLS:
            return f"{head}: no fills yet"
        if status is SpreadStatus.INCOMPLETE:
            return f"{head}: incomplete: a fill lacks its opening print or commission"
        judged = [r for r in self.spreads if r.quote]
        if not judged:
            return f"{head}: not quoted ({self.spreads[0].note if self.spreads else 'no fills'})"
        worst = max(judged, key=lambda r: abs(r.vs_mid_bps or ZERO))
        widest = max(judged, key=lambda r: r.half_spread_bps or ZERO)
        text = (f"{head}: {len(judged)} of {len(self.spreads)} filled order(s) quoted, fill vs "
                f"mid worst {worst.vs_mid_bps:+} bps ({worst.symbol}), half-spread widest "
                f"{widest.half_spread_bps} bps ({widest.symbol})")  # fmt: skip
        if missing := [r.symbol for r in self.spreads if not r.quote]:
            text += f"; not quoted: {', '.join(missing)}"
        flagged = self.spread_flagged
        if flagged:
            return f"{text}; {len(flagged)} out of band: {flagged[0].describe()}"
        return f"{text}; all within band"

    def spreads_frame(self) -> pd.DataFrame:
        """Return this cycle's filled orders against their quotes, indexed by client reference."""
        return _frame(self.spreads, OrderSpread, "client_ref")

    def trailing_summary(self) -> str:
        """Return one line of figures over the trailing cycles, vs the open and the close."""
        t = self.trailing
        parts = [f"{t.cycle_id}: {_figures(t)}"]
        if t.avg_vs_open_bps is not None:
            parts.append(f"vs open avg {t.avg_vs_open_bps:+} bps signed")
        if t.avg_vs_close_bps is not None:
            parts.append(f"vs decision close avg {t.avg_vs_close_bps:+} bps, worst "
                         f"{t.worst_vs_close_bps} bps")  # fmt: skip
        return "; ".join([*parts, f"{t.flagged} order(s) out of band"])

    def orders_frame(self) -> pd.DataFrame:
        """Return this cycle's orders as a table indexed by client reference."""
        return _frame(self.rows, OrderSlippage, "client_ref")

    def cycles_frame(self) -> pd.DataFrame:
        """Return one row per trailing cycle (at most 12, oldest first)."""
        return _frame(self.cycles, CycleSlippage, "cycle_id")

    def symbols(self) -> list[CycleSlippage]:
        """Return the trailing cycles' figures per symbol (``cycle_id`` holds the symbol)."""
        by_symbol: dict[str, list[OrderSlippage]] = {}
        for row in self.history:
            by_symbol.setdefault(row.symbol, []).append(row)
        return [compute_cycle_summary(s, None, rows) for s, rows in sorted(by_symbol.items())]

    def symbols_frame(self) -> pd.DataFrame:
        """Return one row per symbol traded in the trailing cycles with its band and figures."""
        bands = {r.symbol: r.band_bps for r in self.history}
        frame = _frame(self.symbols(), CycleSlippage, "cycle_id").drop(columns="session")
        frame.insert(0, "band_bps", [bands[s] for s in frame.index])
        return frame.rename_axis("symbol")

    def flagged_frame(self) -> pd.DataFrame:
        """Return the trailing cycles' out-of-band orders, oldest first."""
        return _frame([r for r in self.history if r.flagged], OrderSlippage, "client_ref")

    def to_payload(self) -> dict[str, Any]:
        """Return the report JSON-safe: decimal strings, no floats."""
        extra = {"status": str(self.status), "summary": self.summary(),
                 "flagged": [r.client_ref for r in self.flagged],
                 "spread_status": str(self.spread_status),
                 "spread_summary": self.spread_summary(),
                 "spread_flagged": [r.client_ref for r in self.spread_flagged],
                 "symbols": compute_json_ready(self.symbols())}  # fmt: skip
        return {**compute_json_ready(self), **extra}


def read_slippage(cfg: Config, cycle_id: str, trailing: int = TRAILING_CYCLES) -> SlippageReport:
    """Return the slippage report of ``cycle_id`` and the ``trailing`` cycles up to it.

    The trailing cycles are the last ``trailing`` decided or planned cycles up to
    ``cycle_id``; one that traded nothing counts, with no orders and no cost.

    Decision closes are the raw closes execution sized with (OrdersPlanned), else the store's
    raw close of the decision session, else the Decision Record's ``prices_used``. Opening
    prints are the order session's raw open in the store. Raises LedgerMissing, LedgerError.
    """

    with open_ledger(cfg, create=False, readonly=True) as ledger:
        events = list(ledger.events())
    planned = {str(e.payload["cycle_id"]): e.payload for e in events
               if e.kind == EventKind.ORDERS_PLANNED}  # fmt: skip
    # A decided cycle that traded nothing is still a cycle: it counts, at no cost.
    decided_cycles = {str(e.payload["cycle_id"]) for e in events
                      if e.kind == EventKind.DECISION_RECORDED}  # fmt: skip
    fills = list(compute_fills(events).values())
    costs = cfg.costs
    by_cycle: dict[str, tuple[str | None, list[OrderSlippage]]] = {}
    known = {c for c in planned.keys() | decided_cycles if c <= cycle_id} | {cycle_id}
    for cycle in sorted(known)[-trailing:]:
        orders = compute_cycle_orders(events, cycle)
        plan = planned.get(cycle, {})
        decided, closes = compute_record_closes(events, cycle)
        session = plan.get("order_session") or (
            decided and open_calendar(cfg).next_session(decided).isoformat()
        )
        symbols = sorted({str(v.symbol) for v in orders.values() if v.symbol})
        closes.update(read_session_prices(cfg, symbols, "close", decided))
        closes.update({str(line["symbol"]): Decimal(str(line["price"]))
                       for line in plan.get("lines", ()) if line.get("side")})  # fmt: skip
        opens = read_session_prices(cfg, symbols, "open", session)
        rows = compute_order_rows(cycle, session, orders, fills, (closes, opens), costs)
        if rows or cycle in planned or cycle in decided_cycles:
            by_cycle[cycle] = (session, rows)
    session, rows = by_cycle.get(cycle_id, (None, []))
    quoted = {str(m): p for m, p in read_cycle_quotes(events, cycle_id).items()}
    spreads = compute_order_spreads(rows, quoted, costs)
    history = [r for _, cycle_rows in by_cycle.values() for r in cycle_rows]
    cycles = [compute_cycle_summary(c, s, r) for c, (s, r) in by_cycle.items()]
    label = f"trailing {len(cycles)} cycle(s)"
    return SlippageReport(cycle_id, session, tuple(rows), tuple(history), tuple(cycles),
                          compute_cycle_summary(label, None, history),
                          compute_band(costs), tuple(spreads))  # fmt: skip


def _record_check(
    cfg: Config,
    check: str,
    cycle: str,
    detail: str,
    evidence: list[str],
    hint: str,
    run_id: str | None,
) -> dict[str, Any]:
    """Record ``check`` of ``cycle`` once (failed when there is evidence) and alert on a
    failure, once; return what was recorded. Raises SlippageError when it was recorded with
    other figures."""
    key = f"{EventKind.CHECK_RECORDED}:{check}:{cycle}"
    payload: dict[str, Any] = {"check": check, "passed": not evidence, "detail": detail,
                               "evidence": evidence, "cycle": cycle}  # fmt: skip
    result: dict[str, Any] = {"check": check, "cycle": cycle, "alert": {}}
    with open_ledger(cfg) as ledger:
        try:
            event = ledger.append(str(EventKind.CHECK_RECORDED), key, payload, run_id=run_id,
                                  cycle_id=cycle)  # fmt: skip
        except LedgerConflict as exc:
            raise SlippageError(
                f"cycle {cycle}'s {check} check was recorded at event {exc.existing.seq} with "
                f"other figures ({exc.existing.payload.get('detail')}); the first record stands. "
                f"Compare {hint} and the fills with that record"
            ) from None
        result.update(key=key, seq=event.seq, passed=not evidence, detail=detail)
        if evidence:
            log.warning("%s", detail)
            what = "slippage" if check == CHECK else "spread"
            alert = Alert(f"{what} {cycle}: {len(evidence)} order(s) out of band",
                          "\n".join([detail, *evidence]), severity="warning")  # fmt: skip
            channels = send_alert(cfg, alert, ledger=ledger, key=f"{what}:{cycle}",
                                  events=(event.seq,))  # fmt: skip
            result["alert"] = dict(channels)
    return result


def write_slippage_check(
    cfg: Config, report: SlippageReport, run_id: str | None = None
) -> dict[str, Any]:
    """Record the cycle's ``CheckRecorded`` (check slippage_bands) once, and alert when an order
    is out of band; then the same for its fills against the quotes (check spread_bands, under
    ``spread`` in the result); return what was recorded (JSON-safe).

    Nothing is recorded while the cycle has no fills or a fill lacks its opening print or
    commission; no spread check while the broker quoted none of the fills. A re-run with the
    same figures records nothing new. Raises SlippageError when the cycle's check was recorded
    with other figures (e.g. after a band changed): the first record stands.
    """

    cycle = report.cycle_id
    result: dict[str, Any] = {"check": CHECK, "cycle": cycle, "key": None, "seq": None,
                              "passed": None, "alert": {}}  # fmt: skip
    spread: dict[str, Any] = {"check": SPREAD_CHECK, "cycle": cycle, "key": None, "seq": None,
                              "passed": None, "alert": {}}  # fmt: skip
    if report.status in (SlippageStatus.NO_FILLS, SlippageStatus.INCOMPLETE):
        spread["detail"] = f"{report.spread_summary()}; nothing recorded yet"
        return {**result, "detail": f"{report.summary()}; nothing recorded yet", "spread": spread}
    result = _record_check(cfg, CHECK, cycle, report.summary(),
                           [r.describe() for r in report.flagged],
                           "costs.slippage_band_bps/slippage_bands", run_id)  # fmt: skip
    if report.spread_status is SpreadStatus.NOT_QUOTED:
        spread["detail"] = f"{report.spread_summary()}; nothing to judge, nothing recorded"
    else:
        spread = _record_check(cfg, SPREAD_CHECK, cycle, report.spread_summary(),
                               [r.describe() for r in report.spread_flagged],
                               "costs.vs_mid_band_bps/vs_mid_bands/half_spread_band_bps/"
                               "half_spread_bands", run_id)  # fmt: skip
    return {**result, "spread": spread}


SIDE_OFFSET = {"BUY": -0.15, "SELL": 0.15}  # buys left of their cycle's tick, sells right


def plot_slippage(report: SlippageReport) -> Figure:
    """Return slippage vs the open per order over the trailing cycles, one category per cycle
    (oldest first) with buys left of its tick and sells right: the default band shaded, each
    symbol's own band as dashed lines, out-of-band orders in red with their symbol."""
    import matplotlib.pyplot as plt

    band = float(report.band_bps)
    measured = [(r, float(r.vs_open_bps)) for r in report.history
                if r.vs_open_bps is not None and r.session]  # fmt: skip
    names = [c.cycle_id for c in report.cycles]
    names += sorted({r.cycle_id for r, _ in measured} - set(names))
    where = {name: i for i, name in enumerate(names)}
    fig, ax = plt.subplots(figsize=(10, 3.6))
    ax.axhspan(-band, band, color="tab:green", alpha=0.12, lw=0, label=f"band ±{band:g} bps")
    own = sorted({(r.symbol, r.band_bps) for r in report.history if r.band_bps != report.band_bps})
    for (symbol, limit), color in zip(own, itertools.cycle(BAND_COLORS)):
        for level in (-float(limit), float(limit)):
            ax.axhline(level, color=color, ls="--", lw=0.9,
                       label=f"{symbol} band ±{float(limit):g}" if level > 0 else None)  # fmt: skip
    ax.axhline(0, color="black", lw=0.5)
    for side, marker in (("BUY", "^"), ("SELL", "v")):
        mine = [(r, bps) for r, bps in measured if r.side == side]
        if mine:
            ax.scatter([where[r.cycle_id] + SIDE_OFFSET[side] for r, _ in mine],
                       [bps for _, bps in mine], marker=marker, label=side.lower(),
                       c=["tab:red" if r.flagged else "tab:blue" for r, _ in mine])  # fmt: skip
    for r, bps in measured:
        if r.flagged:  # labelled beside its marker, buys above, sells below
            at = (where[r.cycle_id] + SIDE_OFFSET.get(r.side, 0.0), bps)
            offset = (5, 3 if r.side == "BUY" else -10)
            ax.annotate(r.symbol, at, fontsize=8, xytext=offset, textcoords="offset points")
    if not measured:
        ax.text(0.5, 0.5, "no fills yet", transform=ax.transAxes, ha="center", va="center")
    ax.set_xticks(range(len(names)), names)
    ax.set_xlim(-0.6, max(len(names) - 0.4, 0.6))
    ax.tick_params(axis="x", labelrotation=45 if len(names) > 6 else 0, labelsize=8)
    flagged = sum(1 for r, _ in measured if r.flagged)
    ax.set_xlabel("cycle (buys left, sells right)")
    ax.set_ylabel("slippage vs open (bps, + = cost)")
    ax.set_title(f"fills vs the opening print, {report.trailing.cycle_id}: {len(measured)} "
                 f"order(s), {flagged} out of band (red)", loc="left", fontsize=10)  # fmt: skip
    ax.legend(loc="upper left", fontsize=8, ncol=2)
    fig.tight_layout()
    return fig


def plot_costs(report: SlippageReport) -> Figure:
    """Return the dollar cost per cycle as stacked bars: slippage vs the open, commissions on
    top (a price improvement goes below zero), each cycle's total marked."""
    import matplotlib.pyplot as plt

    names = [c.cycle_id for c in report.cycles]
    lost = [float(c.slippage_cost) for c in report.cycles]
    fees = [float(c.commissions) for c in report.cycles]
    fig, ax = plt.subplots(figsize=(10, 3.2))
    ax.bar(names, lost, color="tab:blue", label="slippage vs open ($)")
    ax.bar(names, fees, bottom=[max(x, 0.0) for x in lost], color="tab:orange",
           label="commissions ($)")  # fmt: skip
    ax.scatter(names, [float(c.total_cost) for c in report.cycles], marker="_", s=300,
               color="black", zorder=3, label="total")  # fmt: skip
    if not names:
        ax.text(0.5, 0.5, "no cycles with orders yet", transform=ax.transAxes, ha="center")
    ax.axhline(0, color="black", lw=0.5)
    ax.set_ylabel("cost ($)")
    ax.tick_params(axis="x", labelrotation=45 if len(names) > 6 else 0, labelsize=8)
    total = report.trailing.total_cost.quantize(HUNDREDTH)
    ax.set_title(f"cost per cycle; {report.trailing.cycle_id}: ${total}", loc="left", fontsize=10)
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    return fig
