"""The account between trades on the sample workbook: dividends, withholding, splits, interest
and fees put into the price store by hand, applied by the simulated broker, booked in the ledger
and audited. Every expected amount is worked out here from the broker's own books and the
stored bars, never read back from the bookkeeping under test."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml
from conftest import make_sample_workbook, ready_to_decide, run_clean_cycle

from ops_runner.brokers.sim import SimBroker
from ops_runner.core.events import EventKind, State
from ops_runner.execution.books import book_account
from ops_runner.execution.breaks import BreakKind
from ops_runner.execution.plan import read_plan
from ops_runner.execution.reconcile import ReconciliationStatus, reconcile
from ops_runner.execution.submission import SubmissionStatus, submit_plan
from ops_runner.ledger import open_ledger
from ops_runner.ledger.projections import (
    compute_account_cash,
    compute_cash,
    compute_open_incidents,
    compute_positions,
    compute_receivables,
)
from ops_runner.ledger.states import read_state
from ops_runner.market.prices import open_store
from ops_runner.ops.audit import AuditReport, AuditStatus, run_audit
from ops_runner.ops.decision import decide
from ops_runner.workbook.config import Config, load_config

# As in test_audit: the sample decides VEU on 2025-10-31, bought at the 2025-11-03 open, and AGG
# on 2025-11-28 (VEU sold, AGG bought at the 2025-12-01 open).
FIRST, SECOND = ("2025-10-31", "2025-11-03"), ("2025-11-28", "2025-12-01")
OPENING_CASH = Decimal("100000.00")  # research.initial_cash of the template
ODD_CASH = 100_100  # research.initial_cash that buys an odd number of VEU (1,359)
WINDOW = "2025-11-04"  # the store's own dividends and splits are cleared from here on

# Sessions of November 2025 (Veterans Day, 11-11, is a session; Thanksgiving, 11-27, is not).
EX = "2025-11-10"
PAY = "2025-11-13"  # dividend_pay_lag_sessions 3: 11-11, 11-12, 11-13
LATE_PAY = "2025-11-17"  # late_dividends 2 more sessions: 11-14, 11-17
LAST_IN_GRACE = "2025-11-20"  # pay_grace_sessions 5 after 11-13: 11-14, 17, 18, 19, 20
RATE = "0.4321"  # the chosen dividend per share
CENT = Decimal("0.01")
PRICES = ["open", "high", "low", "close"]


def cents(value: Decimal) -> Decimal:
    return value.quantize(CENT, rounding=ROUND_HALF_UP)


def utc(day: str, hhmm: str) -> datetime:
    return datetime.fromisoformat(f"{day}T{hhmm}:00+00:00").astimezone(UTC)


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def make_first_cycle(root: Path, initial_cash: int | None = None) -> Path:
    """A sample workbook after its first cycle: VEU bought at the 2025-11-03 open."""
    workbook = make_sample_workbook(root)
    if initial_cash is not None:
        write_config(workbook, {"research": {"initial_cash": initial_cash}})
    cfg = load_config(workbook)
    clock = Clock(utc(FIRST[0], "21:00"))
    with open_ledger(cfg) as ledger:
        run_clean_cycle(cfg, ledger, SimBroker(cfg, clock=clock), clock, *FIRST)
    return workbook


@pytest.fixture(scope="module")
def first_cycle(tmp_path_factory) -> Path:
    return make_first_cycle(tmp_path_factory.mktemp("books") / "wb")


@pytest.fixture(scope="module")
def odd_first_cycle(tmp_path_factory) -> Path:
    return make_first_cycle(tmp_path_factory.mktemp("books-odd") / "wb", ODD_CASH)


class World:
    """One test's copy of a workbook after its first cycle: config, ledger, broker and clock."""

    def __init__(self, workbook: Path, ledger: Any) -> None:
        self.workbook = workbook
        self.ledger = ledger
        self.clock = Clock(utc(FIRST[1], "15:00"))
        self.cfg = load_config(workbook)
        self.broker = SimBroker(self.cfg, clock=self.clock)

    def configure(self, changes: Mapping[str, Any]) -> None:
        """Edit config.yaml (sections merged) and reload; the broker reads the new config."""
        write_config(self.workbook, changes)
        self.cfg = load_config(self.workbook)
        self.broker = SimBroker(self.cfg, clock=self.clock)

    def audit(self, day: str, hhmm: str = "22:00") -> AuditReport:
        self.clock.now = utc(day, hhmm)
        return run_audit(self.cfg, self.ledger, self.broker, self.clock.now)

    def book(self) -> dict[str, Any]:
        return json.loads((self.cfg.path("broker") / "sim.json").read_text())

    def events(self, kind: EventKind) -> list[Any]:
        return list(self.ledger.events(kind=str(kind)))


def copy_world(source: Path, tmp_path: Path) -> Iterator[World]:
    workbook = tmp_path / "wb"
    shutil.copytree(source, workbook)
    with open_ledger(load_config(workbook)) as ledger:
        yield World(workbook, ledger)


@pytest.fixture
def world(first_cycle: Path, tmp_path: Path) -> Iterator[World]:
    """A copy of the sample workbook after its first cycle (1,358 VEU)."""
    yield from copy_world(first_cycle, tmp_path)


@pytest.fixture
def odd_world(odd_first_cycle: Path, tmp_path: Path) -> Iterator[World]:
    """A copy of the sample workbook funded with 100,100 after its first cycle (1,359 VEU)."""
    yield from copy_world(odd_first_cycle, tmp_path)


def write_config(workbook: Path, changes: Mapping[str, Any]) -> None:
    path = workbook / "config.yaml"
    raw = yaml.safe_load(path.read_text(encoding="utf-8"))

    def merge(into: dict[str, Any], change: Mapping[str, Any]) -> None:
        for name, value in change.items():
            if isinstance(value, Mapping) and value and isinstance(into.get(name), dict):
                merge(into[name], value)
            else:
                into[name] = value

    merge(raw, changes)
    path.write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")


def rewrite_bars(cfg: Config, symbol: str, change: Callable[[pd.DataFrame], None]) -> None:
    """Rewrite ``symbol``'s stored bars through the price store, its provenance kept."""
    store, source = open_store(cfg), cfg.primary_source
    manifest = store.read_manifest(source, symbol)
    bars = store.load_bars(source, symbol).copy()
    change(bars)
    provenance = {name: manifest[name] for name in ("layout", "source_file", "source_sha256")}
    provenance["synthetic"] = manifest["synthetic"]
    provenance["notes"] = f"{manifest['notes']}; dividends and splits set by test_books"
    store.write_bars(source, symbol, bars, provenance)


def actions(
    dividends: Mapping[str, str] | None = None, splits: Mapping[str, float] | None = None
) -> Callable[[pd.DataFrame], None]:
    """No dividend or split from WINDOW on but these; from a split's session on, prices over
    the ratio and volume times it, as raw bars show a split."""

    def change(bars: pd.DataFrame) -> None:
        window = bars.index >= pd.Timestamp(WINDOW)
        bars.loc[window, "dividend"] = 0.0
        bars.loc[window, "split"] = 1.0
        for day, amount in (dividends or {}).items():
            bars.loc[pd.Timestamp(day), "dividend"] = float(amount)
        for day, ratio in (splits or {}).items():
            bars.loc[pd.Timestamp(day), "split"] = ratio
            after = bars.index >= pd.Timestamp(day)
            bars.loc[after, PRICES] = bars.loc[after, PRICES] / ratio
            bars.loc[after, "volume"] = bars.loc[after, "volume"] * ratio

    return change


def split_flag(day: str, ratio: float) -> Callable[[pd.DataFrame], None]:
    """Only the split column of one session (the prices stay as they are)."""

    def change(bars: pd.DataFrame) -> None:
        bars.loc[pd.Timestamp(day), "split"] = ratio

    return change


def stored_close(cfg: Config, symbol: str, day: str) -> Decimal:
    bars = open_store(cfg).load_bars(cfg.primary_source, symbol)
    return Decimal(str(bars.loc[pd.Timestamp(day), "close"]))


def held_and_cash(
    book: Mapping[str, Any], opening: Decimal = OPENING_CASH
) -> tuple[dict[str, int], Decimal]:
    """Positions and cash from the broker's executions and commissions alone."""
    held: dict[str, int] = {}
    cash = opening
    for ex in book["executions"]:
        sign = 1 if ex["side"] == "BUY" else -1
        held[ex["symbol"]] = held.get(ex["symbol"], 0) + sign * ex["quantity"]
        cash -= sign * ex["quantity"] * Decimal(ex["price"])
    cash -= sum((Decimal(c["amount"]) for c in book["commissions"]), Decimal(0))
    return {s: q for s, q in held.items() if q}, cash


def assert_clean(report: AuditReport) -> None:
    assert report.status is AuditStatus.CLEAN, report.summary()
    assert report.ledger_positions == report.broker_positions
    assert report.ledger_cash == report.broker_cash


# -- dividends -----------------------------------------------------------------------------------


@pytest.mark.parametrize("statements", ["broker", "price_store"])
@pytest.mark.parametrize(
    ("withholding", "withheld"),
    [("0.0", "0.00"), ("0.15", "-88.02")],  # 586.79 x 0.15 = 88.0185
)
def test_dividend_when_ex_then_paid_is_entitled_then_paid_and_audits_clean(
    world, statements, withholding, withheld
):
    world.configure({"broker": {"sim_account": {"withholding_rate": float(withholding)}},
                     "books": {"withholding_rate": float(withholding),
                               "statements": statements}})  # fmt: skip
    rewrite_bars(world.cfg, "VEU", actions(dividends={EX: RATE}))
    held, cash = held_and_cash(world.book())
    shares = held["VEU"]
    assert shares == 1358 and cash == Decimal("2094.99")  # 100000 - 1358 x 72.09 - 6.79
    gross = cents(shares * Decimal(RATE))
    tax = -cents(gross * Decimal(withholding))
    assert gross == Decimal("586.79") and tax == Decimal(withheld)  # 1358 x 0.4321 = 586.7918

    assert_clean(world.audit(EX))  # the evening of the ex-date
    (entitled,) = world.events(EventKind.DIVIDEND_ENTITLED)
    assert entitled.payload["symbol"] == "VEU" and entitled.payload["ex_date"] == EX
    assert entitled.payload["shares"] == shares and entitled.payload["pay_date"] == PAY
    assert Decimal(entitled.payload["amount"]) == gross
    assert Decimal(entitled.payload["withholding"]) == tax
    assert world.events(EventKind.DIVIDEND_PAID) == []
    assert compute_receivables(world.ledger.events()) == {("VEU", EX): gross + tax}
    account = world.broker.account_values()
    assert account.cash == cash
    close = stored_close(world.cfg, "VEU", EX)
    assert account.net_liquidation == cents(cash + shares * close + gross + tax)

    report = world.audit("2025-11-12")  # the session before the pay date: still owed
    assert_clean(report)
    assert world.events(EventKind.DIVIDEND_PAID) == []

    report = world.audit(PAY)
    assert_clean(report)
    (paid,) = world.events(EventKind.DIVIDEND_PAID)
    assert (paid.payload["symbol"], paid.payload["ex_date"]) == ("VEU", EX)
    assert Decimal(paid.payload["amount"]) == gross and paid.payload["on"] == PAY
    withheld = world.events(EventKind.TAX_WITHHELD)
    assert [Decimal(e.payload["amount"]) for e in withheld] == ([tax] if tax else [])
    assert report.ledger_cash == report.broker_cash == cash + gross + tax
    assert Decimal(world.book()["cash"]) == cash + gross + tax
    assert compute_receivables(world.ledger.events()) == {}
    assert read_state(world.ledger).state is State.RUN


@pytest.mark.parametrize("statements", ["broker", "price_store"])
def test_book_account_when_run_twice_records_nothing_and_folds_count_each_event_once(
    world, statements
):
    world.configure({"books": {"statements": statements}})
    rewrite_bars(world.cfg, "VEU", actions(dividends={EX: RATE}))
    assert_clean(world.audit(EX))
    assert_clean(world.audit(PAY))
    gross = Decimal("586.79")  # 1358 x 0.4321, to the cent
    assert len(world.events(EventKind.DIVIDEND_ENTITLED)) == 1
    assert len(world.events(EventKind.DIVIDEND_PAID)) == 1

    head = world.ledger.head()
    account = world.broker.account_values()
    again = book_account(world.cfg, world.ledger, world.broker, world.clock.now, account=account)
    assert again.recorded == () and again.breaks == ()
    assert world.ledger.head() == head

    events = list(world.ledger.events())
    # Every event again, but the opening CashAdjusted: a deposit has no id of its own, and two
    # equal deposits are two deposits (its ledger key keeps it once in the ledger).
    twice = events + [e for e in events if e.kind != EventKind.CASH_ADJUSTED]
    assert compute_account_cash(events) == compute_account_cash(events + events) == gross
    assert compute_cash(events) == compute_cash(twice) == Decimal("2094.99") + gross
    assert compute_positions(events) == compute_positions(events + events) == {"VEU": 1358}
    assert compute_receivables(events + events) == {}


@pytest.mark.parametrize(
    ("statements", "evidence"),
    [("broker", "sim books line sim.div.VEU.2025-11-10"),
     ("price_store", "the broker's cash was 586.79 above the ledger's")],
)  # fmt: skip
def test_dividend_paid_when_booked_names_its_evidence(world, statements, evidence):
    world.configure({"books": {"statements": statements}})
    rewrite_bars(world.cfg, "VEU", actions(dividends={EX: RATE}))
    assert_clean(world.audit(EX))
    report = world.audit(PAY)
    assert_clean(report)
    (paid,) = world.events(EventKind.DIVIDEND_PAID)
    assert Decimal(paid.payload["amount"]) == Decimal("586.79")
    assert evidence in paid.payload["evidence"][0], paid.payload["evidence"]
    (entitled,) = world.events(EventKind.DIVIDEND_ENTITLED)
    assert entitled.payload["evidence"][0].startswith(f"price store sample/VEU {EX}: dividend")


def test_dividend_when_never_paid_breaks_only_after_the_grace(world):
    world.configure({"broker": {"sim_faults": {"missing_dividends": ["VEU"]}}})
    rewrite_bars(world.cfg, "VEU", actions(dividends={EX: RATE}))
    assert_clean(world.audit(EX))
    assert_clean(world.audit(PAY))
    report = world.audit(LAST_IN_GRACE)
    assert_clean(report)
    assert read_state(world.ledger).state is State.RUN

    report = world.audit("2025-11-21")
    assert report.status is AuditStatus.BREAK
    (missing,) = report.breaks
    assert (missing.what, missing.symbol) == (BreakKind.PAYMENT_MISSING, "VEU")
    assert missing.expected == Decimal("586.79") and missing.actual == 0
    assert "586.79" in missing.detail and PAY in missing.detail
    assert report.ledger_cash == report.broker_cash  # nothing arrived, nothing was booked
    assert report.state is State.SAFE_MODE and read_state(world.ledger).state is State.SAFE_MODE
    (incident,) = compute_open_incidents(world.ledger.events())
    assert incident["incident_id"] == "audit-2025-11-21"
    assert world.events(EventKind.DIVIDEND_PAID) == []
    again = world.audit("2025-11-21", "23:30")  # read back from the ledger, nothing written
    assert again.recorded == () and again.breaks == report.breaks


def test_dividend_when_paid_late_within_the_grace_is_clean_and_paid_once(world):
    world.configure({"broker": {"sim_faults": {"late_dividends": {"VEU": 2}}}})
    rewrite_bars(world.cfg, "VEU", actions(dividends={EX: RATE}))
    for day in (EX, PAY, "2025-11-14", LATE_PAY, "2025-11-21", "2025-11-28"):
        assert_clean(world.audit(day))
        paid = world.events(EventKind.DIVIDEND_PAID)
        assert len(paid) == (1 if day >= LATE_PAY else 0), day
    assert paid[0].payload["on"] == LATE_PAY
    assert Decimal(paid[0].payload["amount"]) == Decimal("586.79")
    assert read_state(world.ledger).state is State.RUN


# -- interest and fees ---------------------------------------------------------------------------


def test_interest_and_fee_when_december_opens_are_booked_from_the_statement(world):
    world.configure({"broker": {"sim_account": {"interest_rate": 0.05, "monthly_fee": 10}}})
    held, cash = held_and_cash(world.book())
    assert held == {"VEU": 1358} and cash == Decimal("2094.99")
    interest = cents(cash * Decimal("0.05") / 12)
    assert interest == Decimal("8.73")  # 2094.99 x 0.05 / 12 = 8.7291...

    assert_clean(world.audit("2025-11-28", "21:30"))  # the month's last session: nothing yet
    assert world.events(EventKind.INTEREST_BOOKED) == []
    report = world.audit(SECOND[1])
    assert_clean(report)
    (booked,) = world.events(EventKind.INTEREST_BOOKED)
    (fee,) = world.events(EventKind.FEE_CHARGED)
    assert Decimal(booked.payload["amount"]) == interest and booked.payload["on"] == SECOND[1]
    assert Decimal(fee.payload["amount"]) == Decimal("-10.00") and fee.payload["on"] == SECOND[1]
    assert report.ledger_cash == report.broker_cash == cash + interest - Decimal("10.00")


# -- splits --------------------------------------------------------------------------------------

FORWARD, REVERSE = "2025-11-10", "2025-11-17"  # 3 for 1, then 1 for 2
PRIOR_CLOSE = 25.125  # the close before the reverse split: cash in lieu exactly on a half cent


def prior_close(bars: pd.DataFrame) -> None:
    day = pd.Timestamp("2025-11-14")
    bars.loc[day, "close"] = PRIOR_CLOSE
    bars.loc[day, "high"] = max(bars.loc[day, "high"], PRIOR_CLOSE)
    bars.loc[day, "low"] = min(bars.loc[day, "low"], PRIOR_CLOSE)


@pytest.mark.parametrize("statements", ["broker", "price_store"])
@pytest.mark.parametrize("audits", [(FORWARD, REVERSE), (REVERSE,)], ids=["each", "both-at-once"])
def test_split_when_forward_then_reverse_books_shares_and_cash_in_lieu(
    odd_world, statements, audits
):
    world = odd_world
    world.configure({"books": {"statements": statements}})
    change = actions(splits={FORWARD: 3.0, REVERSE: 0.5})
    rewrite_bars(world.cfg, "VEU", lambda bars: (change(bars), prior_close(bars)))
    held, cash = held_and_cash(world.book(), Decimal(ODD_CASH))
    assert held == {"VEU": 1359}  # odd, so the reverse split leaves half a share
    tripled = 3 * 1359  # 4077, odd
    halved = tripled // 2  # 2038, and half a new share paid in cash
    lieu = cents(Decimal("0.5") * Decimal(str(PRIOR_CLOSE)) / Decimal("0.5"))
    assert lieu == Decimal("25.13")  # 25.125, half-up

    for day in audits:
        assert_clean(world.audit(day))
    forward, reverse = world.events(EventKind.SPLIT_APPLIED)
    rows = [(e.payload["effective"], Decimal(e.payload["ratio"]), e.payload["shares_before"],
             e.payload["shares_after"], Decimal(e.payload["cash_in_lieu"]))
            for e in (forward, reverse)]  # fmt: skip
    assert rows == [
        (FORWARD, Decimal(3), 1359, tripled, Decimal(0)),
        (REVERSE, Decimal("0.5"), tripled, halved, lieu),
    ]
    assert world.broker.positions() == {"VEU": halved}
    assert compute_positions(world.ledger.events()) == {"VEU": halved}
    assert Decimal(world.book()["cash"]) == cash + lieu
    assert compute_cash(world.ledger.events()) == cash + lieu


def test_split_when_the_broker_has_it_before_the_store_breaks_then_books_it(world):
    world.configure({"books": {"statements": "price_store"}})
    rewrite_bars(world.cfg, "VEU", actions(splits={FORWARD: 3.0}))
    world.clock.now = utc(FORWARD, "15:00")  # after the open: the sim splits the position
    assert world.broker.positions() == {"VEU": 3 * 1358}
    rewrite_bars(world.cfg, "VEU", split_flag(FORWARD, 1.0))  # the store does not know it yet

    report = world.audit(FORWARD)
    assert report.status is AuditStatus.BREAK
    (position,) = report.breaks
    assert (position.what, position.symbol) == (BreakKind.POSITION, "VEU")
    assert (position.expected, position.actual) == (1358, 3 * 1358)
    assert report.state is State.SAFE_MODE and read_state(world.ledger).state is State.SAFE_MODE
    assert world.events(EventKind.SPLIT_APPLIED) == []

    rewrite_bars(world.cfg, "VEU", split_flag(FORWARD, 3.0))  # the vendor's next download
    world.clock.now = utc("2025-11-11", "22:00")
    account = world.broker.account_values()
    books = book_account(world.cfg, world.ledger, world.broker, world.clock.now, account=account)
    assert books.recorded == (f"SplitApplied:VEU:{FORWARD}",) and books.breaks == ()
    (split,) = world.events(EventKind.SPLIT_APPLIED)
    assert (split.payload["shares_before"], split.payload["shares_after"]) == (1358, 4074)
    assert compute_positions(world.ledger.events()) == world.broker.positions() == {"VEU": 4074}
    assert compute_cash(world.ledger.events()) == account.cash


@pytest.mark.parametrize(("symbol", "ratio", "side"), [("VEU", 3.0, "SELL"), ("AGG", 2.0, "BUY")])
def test_split_when_on_a_working_orders_session_scales_its_quantity(world, symbol, ratio, side):
    cfg, ledger, broker, clock = world.cfg, world.ledger, world.broker, world.clock
    rewrite_bars(cfg, symbol, actions(splits={SECOND[1]: ratio}))
    ready_to_decide(cfg, SECOND[0])
    record = decide(cfg, SECOND[0]).record
    clock.now = utc(SECOND[0], "21:30")
    plan = read_plan(cfg, broker, record)
    clock.now = utc(SECOND[1], "13:30")  # before the open: the orders are working
    assert submit_plan(cfg, ledger, broker, plan, clock.now).status is SubmissionStatus.SUBMITTED
    (placed,) = [o for o in world.book()["orders"] if o["symbol"] == symbol and o["side"] == side]
    assert placed["status"] != "filled"
    if symbol == "VEU":
        assert placed["quantity"] == 1358  # the whole position is sold

    clock.now = utc(SECOND[1], "15:00")  # after the split at the open, then the fills
    broker.positions()
    orders = world.book()["orders"]
    (order,) = [o for o in orders if o["broker_order_id"] == placed["broker_order_id"]]
    assert order["quantity"] == int(placed["quantity"] * ratio)
    assert order["status"] == "filled" and order["filled"] == order["quantity"]
    if symbol == "VEU":
        assert "VEU" not in world.book()["positions"]  # 4074 after the split, all sold
    # Reconciliation judges the intent on the split's basis: whole shares, no overfill.
    report = reconcile(cfg, ledger, broker, record["cycle_id"], SECOND[1], clock.now)
    assert report.status is ReconciliationStatus.CLEAN, report.summary()
