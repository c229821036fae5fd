"""The account between trades: dividends, withholding, splits, interest and fees, booked in the
ledger with their evidence, so reconciliation and the weekly audit compare like with like.

What a broker does to an account between trades is recorded as its own events (see
``ops_runner.core.events``), each under a key that makes recording it twice a no-op:

- **Splits** (``SplitApplied:<symbol>:<effective>``): the shares held at the prior close times
  the ratio, the fraction paid as cash in lieu. Evidence: the broker's statement line, or the
  price store's split (source, symbol, the stored file's SHA-256).
- **Dividend entitlements** (``DividendEntitled:<symbol>:<ex_date>``): on the ex-date, the
  shares held at the prior close x the price store's amount, to the cent; the pay date expected
  ``books.dividend_pay_lag_sessions`` later, the tax ``books.withholding_rate``. Until paid it is
  a receivable, counted in the ledger's equity as a broker counts it in net liquidation.
- **Cash** (``DividendPaid``, ``TaxWithheld``, ``InterestBooked``, ``FeeCharged``): from the
  broker's statement, one event per line keyed by the line's id (``books.statements: broker``
  and a broker that gives statements: the simulated broker, IB with ``broker.flex``). Lines
  dated before the first fill's session are inside the opening balance adopted then, and are
  not booked again. A deposit or withdrawal line is a ``CashAdjusted`` (a flow, keyed
  ``CashAdjusted:<line id>``).
- **Without statements** (IB without Flex, or ``books.statements: price_store``) a dividend due
  by its expected pay date is booked as paid only when it explains the broker's cash: the
  difference between the broker's cash and the ledger's equals the net amount of the due
  dividends (all, or one combination of them) to the cent. Anything else stays a difference,
  and the audit's cash check reports it as a break exactly as before.

A dividend still unpaid ``books.pay_grace_sessions`` after its expected pay date is a break
(``payment_missing``) with the expected amount as its evidence.
"""

from __future__ import annotations

import itertools
import logging
import math
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime
from decimal import ROUND_HALF_UP, Decimal
from typing import Any, TypeVar

from ops_runner.brokers.base import AccountValues, Broker, CashKind, CashLine, Statement
from ops_runner.core.errors import DataError
from ops_runner.core.events import EventKind
from ops_runner.execution.breaks import Break, BreakKind
from ops_runner.ledger import Ledger
from ops_runner.ledger.projections import (
    compute_cash,
    compute_fills,
    compute_receivables,
    compute_splits,
)
from ops_runner.market.calendar import NY, open_calendar
from ops_runner.market.prices import compute_split_ratio, open_store
from ops_runner.workbook.config import Config

log = logging.getLogger(__name__)

CENT = Decimal("0.01")
_MAX_COMBINED = 12  # due dividends tried in combination when explaining a cash difference
K = TypeVar("K")  # the key of a due payment: (symbol, ex_date) in the books, any in tests
Item = tuple[str, str, dict[str, Any]]

_CASH_KINDS = {
    CashKind.DIVIDEND: EventKind.DIVIDEND_PAID,
    CashKind.IN_LIEU: EventKind.DIVIDEND_PAID,
    CashKind.WITHHOLDING: EventKind.TAX_WITHHELD,
    CashKind.INTEREST: EventKind.INTEREST_BOOKED,
    CashKind.FEE: EventKind.FEE_CHARGED,
}


def _cents(value: Decimal) -> Decimal:
    return value.quantize(CENT, rounding=ROUND_HALF_UP)


def _decimal(value: Any) -> Decimal:
    return Decimal(str(float(value)))


@dataclass(frozen=True)
class BooksReport:
    """What one booking pass did: the keys it recorded, the breaks it found (missing payments),
    where the cash lines came from ("statement" or "price store"), and notes for the reader."""

    recorded: tuple[str, ...] = ()
    breaks: tuple[Break, ...] = ()
    source: str = "price store"
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class StoreAction:
    """A dividend or split of one symbol on one session, as the price store has it."""

    symbol: str
    day: date
    dividend: Decimal
    split: Decimal
    evidence: str


# -- pure parts ----------------------------------------------------------------------------------


def compute_shares_at(events: Iterable[Any], symbol: str, day: date, *, splits: bool) -> int:
    """Return ``symbol``'s shares at ``day``'s open before its fills: fills of earlier sessions,
    plus the splits effective before ``day`` (and on it, when ``splits``)."""
    events = list(events)
    shares = 0
    for fill in compute_fills(events).values():
        if str(fill["symbol"]) == symbol and date.fromisoformat(str(fill["session"])) < day:
            quantity = int(fill["quantity"])
            shares += quantity if str(fill["side"]) == "BUY" else -quantity
    for split in compute_splits(events).values():
        effective = date.fromisoformat(str(split["effective"]))
        if str(split["symbol"]) == symbol and (effective < day or (splits and effective == day)):
            shares += int(split["shares_after"]) - int(split["shares_before"])
    return shares


def compute_split(before: int, ratio: Decimal, prior_close: Decimal) -> tuple[int, Decimal]:
    """Return (shares after, cash in lieu) of ``before`` shares split ``ratio`` new per old: the
    whole shares, and the fraction paid at the prior close over the ratio, to the cent."""
    exact = before * ratio
    after = math.floor(exact)
    return after, _cents((exact - after) * prior_close / ratio)


def compute_entitlement(
    shares: int, rate: Decimal, withholding_rate: Decimal
) -> tuple[Decimal, Decimal]:
    """Return (gross, withholding) of a dividend of ``rate`` on ``shares``: gross to the cent,
    withholding negative, to the cent."""
    gross = _cents(shares * rate)
    return gross, -_cents(gross * withholding_rate)


def compute_explained(due: list[tuple[K, Decimal]], difference: Decimal) -> list[K] | None:
    """Return the keys of the due payments whose net amounts sum to ``difference`` (to the
    cent): all of them if they do, else the first combination that does (largest first, in
    order), else None. Only the first ``_MAX_COMBINED`` due payments are combined."""
    if not due:
        return None
    if abs(sum(amount for _, amount in due) - difference) < CENT:
        return [key for key, _ in due]
    head = due[:_MAX_COMBINED]
    for size in range(min(len(head), len(due) - 1), 0, -1):  # all of due was tried above
        for combo in itertools.combinations(head, size):
            if abs(sum(amount for _, amount in combo) - difference) < CENT:
                return [key for key, _ in combo]
    return None


def _line_item(line: CashLine, statement: Statement, events: list[Any]) -> Item | None:
    """Return the event booking one statement cash line, or None for a kind never booked."""
    evidence = f"{statement.source} line {line.line_id}: {line.evidence or line.description}"
    if line.kind is CashKind.TRANSFER:  # a deposit or withdrawal: a flow
        key = f"{EventKind.CASH_ADJUSTED}:{line.line_id}"
        reason = "deposit" if line.amount > 0 else "withdrawal"
        return (str(EventKind.CASH_ADJUSTED), key, {
            "amount": str(line.amount), "reason": f"{reason} on the broker's statement",
            "session": line.on.isoformat(), "evidence": [evidence]})  # fmt: skip
    kind = _CASH_KINDS.get(line.kind)
    if kind is None:
        return None
    key = f"{kind}:{line.line_id}"
    ex_date = line.ex_date.isoformat() if line.ex_date else None
    if (
        ex_date is None
        and line.symbol
        and kind in (EventKind.DIVIDEND_PAID, EventKind.TAX_WITHHELD)
    ):
        ex_date = _latest_ex_date(events, line.symbol, line.on)
    payload: dict[str, Any] = {
        "id": key,
        "on": line.on.isoformat(),
        "amount": str(line.amount),
        "evidence": [evidence],
    }
    if line.symbol:
        payload["symbol"] = line.symbol
    if ex_date:
        payload["ex_date"] = ex_date
    if line.kind is CashKind.IN_LIEU:
        payload["in_lieu"] = True
    if kind == EventKind.FEE_CHARGED:
        payload["description"] = line.description
    return (str(kind), key, payload)


def _latest_ex_date(events: list[Any], symbol: str, on: date) -> str | None:
    """Return the ex-date of ``symbol``'s latest entitlement on or before ``on``."""
    found = [
        str(e.payload["ex_date"])
        for e in events
        if e.kind == EventKind.DIVIDEND_ENTITLED
        and e.payload.get("symbol") == symbol
        and str(e.payload["ex_date"]) <= on.isoformat()
    ]
    return max(found) if found else None


# -- the booking pass ----------------------------------------------------------------------------


def book_account(
    cfg: Config,
    ledger: Ledger,
    broker: Broker,
    now: datetime,
    *,
    account: AccountValues | None = None,
    run_id: str | None = None,
) -> BooksReport:
    """Book in the ledger what happened to the account up to ``now`` and return the report.

    Splits and entitlements up to the last session opened at ``now``; cash lines from the
    broker's statement, or (without one) the due dividends that explain ``account.cash``. Every
    event is keyed, so a second pass records nothing. Raises BrokerUnavailable (nothing
    written) and the ledger's errors.
    """

    calendar = open_calendar(cfg)
    local = now.astimezone(NY).date()
    today = local if calendar.is_session(local) else calendar.previous_session(local)
    if now < calendar.session_open(today).to_pydatetime():
        today = calendar.previous_session(today)
    books, statement = cfg.books, None
    if books.statements == "broker" and hasattr(broker, "statement"):
        statement = broker.statement()
    events = list(ledger.events())
    known = {e.key for e in events}  # what is booked already: every item is keyed
    held = sorted({str(f["symbol"]) for f in compute_fills(events).values()})
    if not held:
        return BooksReport(source="statement" if statement else "price store")
    first = min(date.fromisoformat(str(f["session"])) for f in compute_fills(events).values())
    items: list[Item] = []
    notes: list[str] = []

    # 1. Splits: the statement's, or the price store's.
    actions = _store_actions(cfg, held, first, today, notes)
    if statement is not None:
        for line in statement.actions:
            if line.effective < first or line.effective > today:
                continue
            key = f"{EventKind.SPLIT_APPLIED}:{line.symbol}:{line.effective.isoformat()}"
            if key not in known:
                pending = events + [_Pending(item) for item in items]  # earlier splits of this pass
                before = compute_shares_at(pending, line.symbol, line.effective, splits=False)
                items.append(_split_item(key, line.symbol, line.effective, line.ratio, before,
                                         before + line.quantity, line.cash,
                                         f"{statement.source} line {line.line_id}: "
                                         f"{line.evidence or line.description}"))  # fmt: skip
    else:
        for action in actions:
            if action.split == 1:
                continue
            key = f"{EventKind.SPLIT_APPLIED}:{action.symbol}:{action.day.isoformat()}"
            if key in known:
                continue
            pending = events + [_Pending(item) for item in items]
            before = compute_shares_at(pending, action.symbol, action.day, splits=False)
            if before <= 0:
                continue
            prior = _prior_close(cfg, action.symbol, calendar.previous_session(action.day))
            after, lieu = compute_split(before, action.split, prior)
            items.append(_split_item(key, action.symbol, action.day, action.split, before, after,
                                     lieu, action.evidence))  # fmt: skip
    if items:
        ledger.append_many(items, run_id=run_id)
        events = list(ledger.events())
    recorded = [key for _, key, _ in items]

    # 2. Entitlements on the ex-dates, from the price store.
    lag, grace = int(books.dividend_pay_lag_sessions), int(books.pay_grace_sessions)
    withholding_rate = _decimal(books.withholding_rate)
    items = []
    for action in actions:
        if action.dividend <= 0:
            continue
        key = f"{EventKind.DIVIDEND_ENTITLED}:{action.symbol}:{action.day.isoformat()}"
        if key in known:
            continue
        shares = compute_shares_at(events, action.symbol, action.day, splits=True)
        if shares <= 0:
            continue
        gross, withheld = compute_entitlement(shares, action.dividend, withholding_rate)
        pay = action.day
        for _ in range(lag):
            pay = calendar.next_session(pay)
        items.append((str(EventKind.DIVIDEND_ENTITLED), key, {
            "id": key, "symbol": action.symbol, "ex_date": action.day.isoformat(),
            "pay_date": pay.isoformat(), "shares": shares, "rate": str(action.dividend),
            "amount": str(gross), "withholding": str(withheld), "evidence": [action.evidence],
        }))  # fmt: skip

    # 3. Cash: the statement's lines, or the due dividends that explain the broker's cash.
    if statement is not None:
        for line in statement.cash:
            if line.on < first or line.on > local:
                continue
            item = _line_item(line, statement, events + [_Pending(i) for i in items])
            if item is None:
                notes.append(f"statement line {line.line_id} ({line.kind}, {line.amount}) is "
                             "not booked automatically")  # fmt: skip
            elif item[1] not in known:
                items.append(item)
    elif account is not None:
        pending = events + [_Pending(i) for i in items]
        items += _explained_payments(pending, account, today, notes)
    if items:
        ledger.append_many(items, run_id=run_id)
        events = list(ledger.events())
    recorded += [key for _, key, _ in items]

    breaks = _missing_payments(events, calendar, today, grace)
    source = "statement" if statement is not None else "price store"
    if recorded:
        log.info("books: recorded %d event(s) from the %s", len(recorded), source)
    return BooksReport(tuple(recorded), tuple(breaks), source, tuple(notes))


class _Pending:
    """An item not yet in the ledger, shaped like an event for the folds."""

    seq = 1 << 62
    recorded_at = ""

    def __init__(self, item: Item) -> None:
        self.kind, _, self.payload = item


def _split_item(key: str, symbol: str, effective: date, ratio: Decimal, before: int,
                after: int, lieu: Decimal, evidence: str) -> Item:  # fmt: skip
    return (str(EventKind.SPLIT_APPLIED), key, {
        "id": key, "symbol": symbol, "effective": effective.isoformat(), "ratio": str(ratio),
        "shares_before": before, "shares_after": after, "cash_in_lieu": str(lieu),
        "evidence": [evidence],
    })  # fmt: skip


def _store_actions(
    cfg: Config, symbols: list[str], first: date, today: date, notes: list[str]
) -> list[StoreAction]:
    """Return the price store's dividends and splits of ``symbols`` after ``first`` through
    ``today``, oldest first (splits before dividends on one day)."""
    store, source = open_store(cfg), cfg.primary_source
    found: list[StoreAction] = []
    for symbol in symbols:
        try:
            sha = store.read_manifest(source, symbol).get("stored_sha256", "")
            bars = _load_bars(store, source, symbol, sha)
        except DataError as error:
            notes.append(f"{symbol}: no stored bars to book its dividends and splits ({error})")
            continue
        window = bars.loc[(bars.index.date > first) & (bars.index.date <= today)]
        window = window.loc[(window["dividend"] > 0) | (window["split"] != 1.0)]
        for day, row in window.iterrows():
            dividend, split = _decimal(row["dividend"]), compute_split_ratio(row["split"])
            what = f"dividend {dividend}" if dividend > 0 else f"split {split} for 1"
            if dividend > 0 and split != 1:
                what = f"split {split} for 1 and dividend {dividend}"
            evidence = f"price store {source}/{symbol} {day.date()}: {what} (bars sha256 {sha})"
            found.append(StoreAction(symbol, day.date(), dividend, split, evidence))
    return sorted(found, key=lambda a: (a.day, a.symbol))


_BARS: dict[tuple[str, str, str], Any] = {}  # (store folder, source, symbol) -> (sha, bars)


def _load_bars(store: Any, source: str, symbol: str, sha: str) -> Any:
    """Return the stored bars, read once per stored file (its SHA-256) in this process."""
    key = (str(store.root), source, symbol)
    cached = _BARS.get(key)
    if cached is None or cached[0] != sha or not sha:
        cached = (sha, store.load_bars(source, symbol))
        _BARS[key] = cached
    return cached[1]


def _prior_close(cfg: Config, symbol: str, day: date) -> Decimal:
    import pandas as pd

    store, source = open_store(cfg), cfg.primary_source
    sha = store.read_manifest(source, symbol).get("stored_sha256", "")
    bars = _load_bars(store, source, symbol, sha)
    closes = bars["close"].loc[: pd.Timestamp(day)]
    return _decimal(closes.iloc[-1]) if len(closes) else Decimal(0)


def _explained_payments(
    events: list[Any], account: AccountValues, today: date, notes: list[str]
) -> list[Item]:
    """Return DividendPaid (and TaxWithheld) items for the due dividends that explain the
    difference between the broker's cash and the ledger's, or none."""
    entitled = {
        (str(e.payload["symbol"]), str(e.payload["ex_date"])): e.payload
        for e in events
        if e.kind == EventKind.DIVIDEND_ENTITLED
    }
    owed = compute_receivables(events)
    due = [
        (key, amount)
        for key, amount in owed.items()
        if date.fromisoformat(str(entitled[key]["pay_date"])) <= today
    ]
    difference = account.cash - compute_cash(events)
    chosen = compute_explained(due, difference)
    if not chosen:
        if due:
            notes.append(f"{len(due)} dividend(s) due; the broker's cash is off the ledger's by "
                         f"{difference}, which they do not explain")  # fmt: skip
        return []
    items: list[Item] = []
    for symbol, ex_date in chosen:
        payload = entitled[(symbol, ex_date)]
        why = (f"{payload['evidence'][0]}; the broker's cash was {difference} above the "
               f"ledger's, explained by the due dividend(s) net of withholding")  # fmt: skip
        key = f"{EventKind.DIVIDEND_PAID}:{symbol}:{ex_date}"
        items.append((str(EventKind.DIVIDEND_PAID), key, {
            "id": key, "symbol": symbol, "ex_date": ex_date, "on": today.isoformat(),
            "amount": str(payload["amount"]), "evidence": [why]}))  # fmt: skip
        if Decimal(str(payload["withholding"])):
            key = f"{EventKind.TAX_WITHHELD}:{symbol}:{ex_date}"
            items.append((str(EventKind.TAX_WITHHELD), key, {
                "id": key, "symbol": symbol, "ex_date": ex_date, "on": today.isoformat(),
                "amount": str(payload["withholding"]), "evidence": [why]}))  # fmt: skip
    return items


def _missing_payments(events: list[Any], calendar: Any, today: date, grace: int) -> list[Break]:
    """Return a break per dividend still unpaid ``grace`` sessions after its expected pay date."""
    entitled = {
        (str(e.payload["symbol"]), str(e.payload["ex_date"])): e.payload
        for e in events
        if e.kind == EventKind.DIVIDEND_ENTITLED
    }
    breaks = []
    for key, amount in compute_receivables(events).items():
        payload = entitled[key]
        late = date.fromisoformat(str(payload["pay_date"]))
        for _ in range(grace):
            late = calendar.next_session(late)
        if today > late:
            symbol, ex_date = key
            breaks.append(Break(
                BreakKind.PAYMENT_MISSING, symbol, amount, Decimal(0),
                f"dividend {symbol} ex {ex_date}: {amount} ({payload['shares']} shares x "
                f"{payload['rate']}, net of withholding) expected by {payload['pay_date']}, not "
                f"paid by {today} ({payload['evidence'][0]})"))  # fmt: skip
    return breaks
